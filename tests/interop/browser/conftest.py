"""Fixtures for the browser tests: Node dependencies (playwright-core, from the npm registry via
`npm ci`) and Debian's Chromium. No tool here ever downloads a browser."""

import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
APT_LINE = "apt-get update && apt-get install -y chromium chromium-driver"


def require_chromium() -> str:
    """The Chromium binary, or a test failure saying how to install it."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's with `{APT_LINE}` (or set CHROMIUM)")
    return CHROMIUM


@pytest.fixture(scope="session")
def node_script_env():
    """`npm ci` once per session when node_modules is missing or older than the lock file."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the browser tests: `apt-get install -y nodejs npm`")
    marker = os.path.join(HERE, "node_modules", ".package-lock.json")
    lock = os.path.join(HERE, "package-lock.json")
    if not os.path.exists(marker) or os.path.getmtime(marker) < os.path.getmtime(lock):
        env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1")
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, env=env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            pytest.fail(f"npm ci failed in {HERE}:\n{done.stdout}\n{done.stderr}")
    return dict(os.environ, CHROMIUM=CHROMIUM, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1")
