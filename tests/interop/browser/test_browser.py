"""The meeting page in a real browser: two headless Chromium pages join one meeting through
`/meet` (the official livekit-client, bundled) and each decodes the other's video. Plus the
content types of the pages and the bundle."""

import json
import os
import subprocess

import pytest

from conftest import HERE, require_chromium
from convene_server import Server

TIMEOUT_SECONDS = 90


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


def test_landing_page_and_bundle_are_served(server):
    import requests

    landing = requests.get(server.base + "/", timeout=10)
    assert landing.status_code == 200
    assert landing.headers["content-type"].startswith("text/html")
    assert 'href="/meet"' in landing.text and 'href="/v1/docs"' in landing.text

    meet = requests.get(server.base + "/meet?meeting=123", timeout=10)
    assert meet.status_code == 200
    assert meet.headers["content-type"].startswith("text/html")
    assert 'src="/assets/meeting.js"' in meet.text

    script = requests.get(server.base + "/assets/meeting.js", timeout=10)
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "LiveKit" in script.text or "livekit" in script.text
    etag = script.headers["etag"]
    assert "cache-control" in script.headers
    again = requests.get(server.base + "/assets/meeting.js", headers={"if-none-match": etag}, timeout=10)
    assert again.status_code == 304 and again.content == b""

    # The API keeps its own JSON 404 beside the pages.
    missing = requests.get(server.base + "/v1/nothing-here", timeout=10)
    assert missing.status_code == 404


@pytest.mark.parametrize(
    "policy, order",
    [
        ("open", "host-first"),
        # The guest waits in the waiting room (the page polls /me) until the host starts the meeting.
        ("wait_for_host", "guest-first"),
    ],
)
def test_two_browser_pages_decode_each_others_video(server, node_script_env, policy, order):
    require_chromium()
    created = server.admin("POST", "/v1/meetings", json={"name": "Browser interop", "policy": policy})
    assert created.status_code in (200, 201), created.text
    meeting = created.json()
    pins = meeting["credentials"]
    done = subprocess.run(
        ["node", os.path.join(HERE, "two_pages.mjs"), server.base, meeting["meeting_id"], pins["host"], pins["participant"], str(TIMEOUT_SECONDS), order],
        cwd=HERE, env=node_script_env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS + 60,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result from the browser script (exit {done.returncode}):\n{done.stdout}\n{done.stderr}\nserver log:\n{open(server.log.name).read()[-4000:]}"
    result = json.loads(lines[-1])
    assert result["ok"], json.dumps(result, indent=1) + "\nserver log:\n" + open(server.log.name).read()[-4000:]

    host, guest = result["pages"]["host"], result["pages"]["guest"]
    assert host["role"] == "host" and guest["role"] == "speaker"
    for me, other in ((host, guest), (guest, host)):
        seen = [v for v in me["video"] if v["identity"] == other["identity"]]
        assert seen, f"{me['identity']} has no video from {other['identity']}: {me['video']}"
        assert seen[0]["videoWidth"] > 0 and seen[0]["framesDecoded"] > 0, seen
