"""Fixtures for interop tests."""

import pytest

from convene_server import Server


@pytest.fixture
def convene():
    server = Server()
    yield server
    server.stop()
