"""Fixtures for the SFU interop tests (helpers live in sfu_helpers.py)."""

from sfu_helpers import room_name, sfu  # noqa: F401  (pytest fixtures)
