"""Fixtures for the browser tests: Node dependencies (playwright-core and axe-core, from the npm
registry via `npm ci`), Debian's Chromium, and a convene server that can be restarted on the same
port and data. No tool here ever downloads a browser."""

import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest
import requests

from convene_server import API_KEY, API_SECRET, convene_binary, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
APT_LINE = "apt-get update && apt-get install -y chromium chromium-driver"
LIVE_PASSCODE = "browser-live-passcode"
BBB_TOKEN = "browser-bbb-token"


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
    require_chromium()
    marker = os.path.join(HERE, "node_modules", ".package-lock.json")
    lock = os.path.join(HERE, "package-lock.json")
    if not os.path.exists(marker) or os.path.getmtime(marker) < os.path.getmtime(lock):
        env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1")
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, env=env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            pytest.fail(f"npm ci failed in {HERE}:\n{done.stdout}\n{done.stderr}")
    return dict(os.environ, CHROMIUM=CHROMIUM, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1")


class WebServer:
    """The convene binary with the live-stream and BigBlueButton surfaces on; restartable on the same
    port and data."""

    def __init__(self, **env):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = tempfile.mkdtemp(prefix="convene-web-")
        self.env = dict(
            os.environ,
            CONVENE_HTTP_ADDR=f"127.0.0.1:{self.port}",
            CONVENE_RTC_UDP_PORT="0",
            CONVENE_RTC_TCP_PORT="0",
            CONVENE_DATA_DIR=self.data_dir,
            CONVENE_API_KEY=API_KEY,
            CONVENE_API_SECRET=API_SECRET,
            CONVENE_COMPAT_LIVE_PASSCODE=LIVE_PASSCODE,
            CONVENE_COMPAT_BBB_TOKEN=BBB_TOKEN,
            RUST_LOG=os.environ.get("RUST_LOG", "warn"),
        )
        self.env.update(env)
        self.env.pop("CONVENE_DATABASE_URL", None)
        self.log_path = os.path.join(self.data_dir, "server.log")
        self.process = None
        self.start()

    def start(self):
        log = open(self.log_path, "a")
        self.process = subprocess.Popen([convene_binary()], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"convene exited early: {self.log()}")
            try:
                if requests.get(self.base + "/healthz", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("convene did not answer /healthz within 30 s")
            time.sleep(0.05)

    def stop_process(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self):
        self.stop_process()
        self.start()

    def log(self, tail=4000):
        with open(self.log_path) as f:
            return f.read()[-tail:]

    def close(self):
        self.stop_process()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def run_scenario(script, server, env, *extra, timeout=300, on_line=None):
    """Runs a scenario script against `server` and returns its result; on a line that is not the
    result, `on_line(line, process)` may answer it (the reconnect scenario asks for a restart)."""
    process = subprocess.Popen(
        ["node", os.path.join(HERE, script), server.base, API_KEY, API_SECRET, *extra],
        cwd=HERE, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    result = None
    deadline = time.monotonic() + timeout
    try:
        for line in process.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            message = json.loads(line)
            if "ok" in message:
                result = message
            elif on_line:
                on_line(message, process)
            if time.monotonic() > deadline:
                break
        process.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read()
    assert result is not None, f"{script} gave no result (exit {process.returncode}):\n{stderr[-3000:]}\nserver log:\n{server.log()}"
    assert result["ok"], json.dumps({k: v for k, v in result.items() if k != "console"}, indent=1)[:12000] + "\nconsole:\n" + json.dumps(result.get("console"), indent=1)[:6000] + "\nserver log:\n" + server.log()
    return result
