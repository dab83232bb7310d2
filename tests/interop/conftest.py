"""Fixtures for interop tests."""

import os
import sys

import pytest

from convene_server import Server


@pytest.fixture
def convene():
    server = Server()
    yield server
    server.stop()


_exit_status = None


def pytest_sessionfinish(session, exitstatus):
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """End the process as soon as pytest is done, with pytest's own status.

    The LiveKit Python SDK runs a tokio runtime in its native library. Once in a while,
    after every test had passed and pytest had printed its summary, that runtime panicked
    while the interpreter was shutting down ("panic in a function that cannot unwind") and
    the process aborted, failing a green run. Each test still connects and disconnects its
    clients itself; only the interpreter's own shutdown is skipped here.
    """
    if _exit_status is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)
