"""The web app in a real browser (Debian's Chromium through playwright-core, fake media devices):
the pages are served as promised, and each scenario script drives whole screens through their
accessible names, with axe-core on every screen and screenshots under target/screenshots."""

import gzip
import shutil
import socket
import subprocess
import uuid

import pytest
import requests

from conftest import BBB_TOKEN, LIVE_PASSCODE, WebServer, run_scenario


@pytest.fixture(scope="module")
def server():
    s = WebServer()
    yield s
    s.close()


def test_pages_and_assets_are_served_compressed_and_cached(server):
    landing = requests.get(server.base + "/", timeout=10)
    assert landing.status_code == 200 and landing.headers["content-type"].startswith("text/html")
    assert 'href="/meet"' in landing.text and 'href="/admin"' in landing.text and 'href="/v1/docs"' in landing.text

    for path in ("/meet?meeting=123", "/admin"):
        page = requests.get(server.base + path, timeout=10)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-cache"
        assert "default-src 'self'" in page.headers["content-security-policy"]
    admin_csp = requests.get(server.base + "/admin", timeout=10).headers["content-security-policy"]
    assert "frame-ancestors 'none'" in admin_csp

    meet = requests.get(server.base + "/meet", timeout=10).text
    script = meet.split('<script type="module" src="')[1].split('"')[0]
    assert script.startswith("/assets/meeting-") and script.endswith(".js")
    # requests asks for gzip: the precompressed file, cached for a year.
    js = requests.get(server.base + script, timeout=10)
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert js.headers["content-encoding"] == "gzip" and "accept-encoding" in js.headers["vary"]
    assert js.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert b"livekit" in js.content.lower()
    raw = requests.get(server.base + script, headers={"accept-encoding": "identity"}, stream=True, timeout=10)
    body = raw.raw.read()
    assert "content-encoding" not in raw.headers and body == js.content
    again = requests.get(server.base + script, headers={"if-none-match": js.headers["etag"]}, timeout=10)
    assert again.status_code == 304 and again.content == b""
    zipped = requests.get(server.base + script, stream=True, timeout=10).raw.read()
    print(f"meeting script: {len(body)} bytes, {len(zipped)} gzip")
    assert gzip.decompress(zipped) == body

    assert requests.get(server.base + "/assets/nothing-here.js", timeout=10).status_code == 404
    # The API keeps its own JSON 404 beside the pages.
    missing = requests.get(server.base + "/v1/nothing-here", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_four_people_toggles_device_switch_screen_share_and_chat(server, node_script_env):
    run_scenario("scenario_meeting.mjs", server, node_script_env)


def test_waiting_room_deny_admit_all_send_back_remove_ban_and_chat(server, node_script_env):
    run_scenario("scenario_waiting.mjs", server, node_script_env)


def test_stage_hands_invitation_publishing_and_seed_001_viewers(server, node_script_env):
    run_scenario("scenario_stage.mjs", server, node_script_env, LIVE_PASSCODE)


def test_admin_console_creates_links_and_ends_the_meeting(server, node_script_env):
    run_scenario("scenario_admin.mjs", server, node_script_env)


def test_recording_indicator_for_everyone_host_start_stop_and_admin_recordings(server, node_script_env):
    """The host starts and stops recording from the meeting page; host and guest both see the
    indicator while it runs; the guest has no button; the recording finishes (ready, or failed
    with a reason); the admin console turns on automatic recording, downloads a file, deletes it."""
    result = run_scenario("scenario_recording.mjs", server, node_script_env)
    print("recording:", result["details"], result["steps"])


def test_one_time_join_links_from_the_bigbluebutton_surface(server, node_script_env):
    run_scenario("scenario_links.mjs", server, node_script_env, BBB_TOKEN)


def test_denied_camera_and_microphone_still_join(server, node_script_env):
    run_scenario("scenario_denied.mjs", server, node_script_env)


def test_adaptive_stream_layers_pause_and_dynacast_with_livekit_client(server, node_script_env):
    """livekit-client's own calls: a low quality gives a narrower layer that keeps decoding, the
    publisher pauses the layer nobody needs (dynacast), a disabled track stops its bytes."""
    result = run_scenario("scenario_adaptive.mjs", server, node_script_env)
    details = result["details"]
    print("adaptive:", details, result["steps"])
    assert details["low"]["width"] < details["high"]["width"]
    assert details["highAgain"]["width"] > details["low"]["width"]


def test_pages_recover_after_a_server_restart(node_script_env):
    server = WebServer()
    try:
        def restart(message, process):
            if message.get("restart"):
                server.restart()
                process.stdin.write("go\n")
                process.stdin.flush()

        result = run_scenario("scenario_reconnect.mjs", server, node_script_env, on_line=restart)
        assert all(d["media"] > 0 and d["events"] > 0 for d in result["details"]["drops"].values())
    finally:
        server.close()


def test_active_speakers_name_the_one_speaking_not_the_muted_one(server, node_script_env):
    result = run_scenario("scenario_speakers.mjs", server, node_script_env)
    print("speaker changes seen by the muted person's page:", result["details"]["speakerEvents"])


def test_two_pages_meet_over_tcp_when_udp_is_dropped(node_script_env):
    """Issue 20's own test: the media UDP port dropped on loopback by an nftables rule of this
    test's own table (removed after), two pages on /meet see each other's video over ICE-TCP."""
    nft = shutil.which("nft")
    if nft is None:
        pytest.fail("nftables is needed to block UDP: `apt-get install -y nftables` (.ci/run installs it)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        udp_port = probe.getsockname()[1]
    server = WebServer(CONVENE_RTC_UDP_PORT=str(udp_port))
    table = f"convene_tcp_{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run([nft, "add", "table", "inet", table], check=True, capture_output=True)
        subprocess.run([nft, "add", "chain", "inet", table, "input", "{ type filter hook input priority 0 ; }"],
                       check=True, capture_output=True)
        subprocess.run([nft, "add", "rule", "inet", table, "input", "iif", "lo", "udp", "dport", str(udp_port), "drop"],
                       check=True, capture_output=True)
        result = run_scenario("scenario_tcp.mjs", server, node_script_env)
        for who in ("ann", "bob"):
            assert result["details"][who] and all(p["local"] == "tcp" for p in result["details"][who]), result["details"]
    finally:
        subprocess.run([nft, "delete", "table", "inet", table], capture_output=True)
        server.close()
