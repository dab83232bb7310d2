"""Helpers for interop tests: the real `convene` binary on a free port with a fresh data dir."""

import os
import shutil
import socket
import subprocess
import tempfile
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
API_KEY = "APIinterop"
API_SECRET = "interop-secret-0123456789-0123456789-abcdef"


def convene_binary() -> str:
    path = os.environ.get("CONVENE_BIN") or os.path.join(ROOT, "target", "debug", "convene")
    if not os.path.exists(path):
        subprocess.run(["cargo", "build", "-p", "convene"], cwd=ROOT, check=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running convene server."""

    def __init__(self, extra_env=None):
        self.port = free_port()
        self.data_dir = tempfile.mkdtemp(prefix="convene-interop-")
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update(
            CONVENE_HTTP_ADDR=f"127.0.0.1:{self.port}",
            CONVENE_RTC_UDP_PORT="0",
            CONVENE_RTC_TCP_PORT="0",
            CONVENE_DATA_DIR=self.data_dir,
            CONVENE_API_KEY=API_KEY,
            CONVENE_API_SECRET=API_SECRET,
            RUST_LOG=os.environ.get("RUST_LOG", "warn"),
        )
        env.pop("CONVENE_DATABASE_URL", None)
        env.update(extra_env or {})
        self.api_key, self.api_secret = env["CONVENE_API_KEY"], env["CONVENE_API_SECRET"]
        self.log = open(os.path.join(self.data_dir, "server.log"), "w")
        self.process = subprocess.Popen([convene_binary()], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"convene exited early: {open(self.log.name).read()}")
            try:
                if requests.get(self.base + "/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("convene did not answer /healthz within 30 s")
            time.sleep(0.05)

    def admin(self, method, path, **kwargs):
        return requests.request(method, self.base + path, auth=(self.api_key, self.api_secret), timeout=10, **kwargs)

    def post(self, path, **kwargs):
        return requests.post(self.base + path, timeout=10, **kwargs)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)



async def wait_for(predicate, timeout: float, what: str):
    """Poll `predicate` (sync or async) until true, or fail after `timeout` seconds."""
    import asyncio
    import inspect
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def wait_until(predicate, timeout: float, what: str):
    """Poll `predicate` until it returns something true (and return that), or fail after
    `timeout` seconds: the blocking twin of `wait_for`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
