"""convene driving an external LiveKit deployment through LiveKit's server API.

Server A is a plain convene (embedded SFU, RoomService) standing in for the LiveKit deployment,
with the key pair K/S. Server B runs with CONVENE_LIVEKIT_URL pointing at A and K/S as its LiveKit
key pair: B hands out A's signalling URL and LiveKit tokens signed with K/S, its moderation acts
on A through RoomService, and its recordings are LiveKit Egress on A (convene speaks LiveKit's
Egress API, backed by its own recording). Clients are the official LiveKit Python SDK; webhooks are
signed as LiveKit signs them (a HS256 JWT whose sha256 claim is the body's digest). A sends no
LiveKit-format egress webhooks, so the tests post B the `egress_ended` LiveKit would, carrying the
EgressInfo A answers."""

import asyncio
import base64
import hashlib
import json
import os
import shutil
import subprocess
import time

import jwt
import pytest
import requests
from google.protobuf.json_format import MessageToDict
from livekit import api, rtc

from convene_server import API_KEY, API_SECRET, Server, wait_for, wait_until
from media_helpers import call, connect, enter_and_join
from media_helpers import publish_video as camera

LK_KEY = "APIlivekitdeploy"
LK_SECRET = "livekit-deployment-secret-0123456789-abcdef"
PASSCODE = "external-live-passcode"
WIDTH, HEIGHT = 160, 120


@pytest.fixture
def pair():
    a = Server(extra_env={"CONVENE_API_KEY": LK_KEY, "CONVENE_API_SECRET": LK_SECRET})
    try:
        b = Server(extra_env={"CONVENE_LIVEKIT_URL": a.base, "CONVENE_LIVEKIT_API_KEY": LK_KEY, "CONVENE_LIVEKIT_API_SECRET": LK_SECRET,
                              "CONVENE_COMPAT_LIVE_PASSCODE": PASSCODE})
    except Exception:
        a.stop()
        raise
    yield a, b
    b.stop()
    a.stop()


async def publish_video(room):
    return await camera(room, WIDTH, HEIGHT, channel=1)


def sign_webhook(body: str, key=LK_KEY, secret=LK_SECRET) -> str:
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    now = int(time.time())
    return jwt.encode({"iss": key, "nbf": now, "exp": now + 300, "sha256": digest}, secret, algorithm="HS256")


def post_webhook(server, event: dict, token=None, raw=None):
    body = raw if raw is not None else json.dumps(event)
    token = token if token is not None else sign_webhook(body)
    return requests.post(f"{server.base}/livekit/webhook", data=body, headers={"Authorization": token, "Content-Type": "application/webhook+json"}, timeout=10)


def test_clients_get_the_external_signalling_url_and_short_lived_livekit_tokens(pair):
    a, b = pair
    meeting = b.admin("POST", "/v1/meetings", json={"name": "Ext", "policy": "open"}).json()
    joined = enter_and_join(b, meeting, "host", "host")
    assert joined["url"] == a.base.replace("http://", "ws://")
    claims = jwt.decode(joined["access_token"], LK_SECRET, algorithms=["HS256"])
    assert claims["iss"] == LK_KEY and claims["sub"] == "host"
    assert claims["video"]["roomJoin"] and claims["video"]["room"] == joined["room_name"]
    assert "convene" not in claims, "a plain LiveKit token"
    assert claims["exp"] - claims["nbf"] <= 600
    # The convene token for convene's own API still works there; the media token does not.
    me = requests.get(f"{b.base}/v1/meetings/{meeting['meeting_id']}/me", headers={"Authorization": "Bearer " + joined["api_token"]}, timeout=10)
    assert me.status_code == 200, me.text
    assert requests.get(f"{b.base}/v1/meetings/{meeting['meeting_id']}/me", headers={"Authorization": "Bearer " + joined["access_token"]}, timeout=10).status_code == 401
    # B runs no signalling and no RoomService of its own.
    assert requests.get(f"{b.base}/rtc/validate", params={"access_token": joined["access_token"]}, timeout=5).status_code == 404
    assert requests.post(f"{b.base}/twirp/livekit.RoomService/ListRooms", json={}, timeout=5).status_code == 404


def test_moderation_on_convene_acts_on_the_livekit_deployment(pair):
    a, b = pair
    meeting = b.admin("POST", "/v1/meetings", json={"name": "Stage", "mode": "stream", "policy": "open"}).json()
    mid = meeting["meeting_id"]
    host_join = enter_and_join(b, meeting, "host", "host")
    viewer_join = enter_and_join(b, meeting, "viewer", "viewer")
    guest_join = enter_and_join(b, meeting, "viewer", "guest")
    host_api = host_join["api_token"]

    async def main():
        host = await connect(host_join)
        viewer = await connect(viewer_join)
        guest = await connect(guest_join)
        gone = {name: asyncio.Event() for name in ("host", "viewer", "guest")}
        for name, room in (("host", host), ("viewer", viewer), ("guest", guest)):
            room.on("disconnected", lambda *_, name=name: gone[name].set())
        pumps = []
        try:
            assert not viewer.local_participant.permissions.can_publish

            # Promotion on B: the same connection on A may publish, without rejoining.
            call(b, mid, host_api, "/participants/viewer/role", {"role": "speaker"})
            await wait_for(lambda: viewer.local_participant.permissions.can_publish, 5, "publish permission granted live")
            publication, pump = await publish_video(viewer)
            pumps.append(pump)

            def host_sees():
                remote = host.remote_participants.get("viewer")
                return remote and remote.track_publications.get(publication.sid)

            await wait_for(host_sees, 10, "host sees the promoted viewer's track")

            # A host mute on B mutes the track on A; the host sees it muted.
            call(b, mid, host_api, "/participants/viewer/mute", {"track": "video"})
            await wait_for(lambda: host_sees().muted, 5, "the remote side sees the track muted")

            # Remove on B: disconnected from A within 2 s.
            call(b, mid, host_api, "/participants/viewer/remove")
            await asyncio.wait_for(gone["viewer"].wait(), timeout=2)

            # Ban on B: disconnected within 2 s, and B refuses it a fresh token.
            call(b, mid, host_api, "/participants/guest/ban", {})
            await asyncio.wait_for(gone["guest"].wait(), timeout=2)
            again = b.post(f"/v1/meetings/{mid}/enter", json={"credential": meeting["credentials"]["viewer"], "name": "guest", "identity": "guest"})
            assert again.status_code == 403 and again.json()["error"]["code"] == "banned", again.text

            # A LiveKit server takes the old token again until it expires (A, standing in for one,
            # does too); when LiveKit reports that join, B disconnects the banned person at once.
            guest = await connect(guest_join)
            regone = asyncio.Event()
            guest.on("disconnected", lambda *_: regone.set())
            joined = post_webhook(b, {"event": "participant_joined", "room": {"name": meeting["room_name"]}, "participant": {"identity": "guest"}})
            assert joined.status_code == 200 and joined.json()["recorded"] is False, joined.text
            await asyncio.wait_for(regone.wait(), timeout=2)

            # Ending the meeting on B disconnects everyone on A.
            call(b, mid, host_api, "/end")
            await asyncio.wait_for(gone["host"].wait(), timeout=2)
        finally:
            for pump in pumps:
                pump.cancel()
            for room in (host, viewer, guest):
                await room.disconnect()

    asyncio.run(main())


def test_livekit_webhooks_come_back_into_the_meetings_event_log(pair):
    _, b = pair
    meeting = b.admin("POST", "/v1/meetings", json={"name": "Hooks", "policy": "open"}).json()
    mid = meeting["meeting_id"]
    enter_and_join(b, meeting, "host", "host")
    room = {"name": meeting["room_name"], "sid": "RM_x"}
    track = {"sid": "TR_hook1", "type": "VIDEO", "source": "CAMERA"}

    for event in (
        {"event": "participant_joined", "room": room, "participant": {"identity": "host"}},
        {"event": "track_published", "room": room, "participant": {"identity": "host"}, "track": track},
        {"event": "track_unpublished", "room": room, "participant": {"identity": "host"}, "track": track},
        {"event": "participant_left", "room": room, "participant": {"identity": "host"}},
    ):
        r = post_webhook(b, event)
        assert r.status_code == 200 and r.json()["recorded"] is True, r.text

    events = b.admin("GET", f"/v1/meetings/{mid}/events?limit=1000").json()["events"]
    media = [(e["type"], e["data"]) for e in events if e["type"].startswith("media.")]
    assert media == [
        ("media.connected", {"identity": "host"}),
        ("media.track_published", {"identity": "host", "track_sid": "TR_hook1", "kind": "video"}),
        ("media.track_unpublished", {"identity": "host", "track_sid": "TR_hook1"}),
        ("media.disconnected", {"identity": "host"}),
    ], media

    # Someone B never admitted is not recorded (and is told to leave).
    r = post_webhook(b, {"event": "participant_joined", "room": room, "participant": {"identity": "intruder"}})
    assert r.status_code == 200 and r.json()["recorded"] is False

    # Bad signatures are 401, malformed bodies 400, in the native error shape.
    body = json.dumps({"event": "participant_joined", "room": room, "participant": {"identity": "host"}})
    for token in (sign_webhook(body, secret="another-secret-0123456789-0123456789-abc"), sign_webhook("{}"), "garbage"):
        r = post_webhook(b, {}, token=token, raw=body)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated", r.text
    r = requests.post(f"{b.base}/livekit/webhook", data=body, timeout=10)
    assert r.status_code == 401
    r = post_webhook(b, {}, raw='{"event": 5')
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", r.text


def test_capacity_holds_at_the_livekit_join_too(pair):
    """Capacity is checked when B hands out a LiveKit token (join) and again when LiveKit
    reports the connection: someone who left and comes back with a token that has not expired
    yet is disconnected if the room is full by then."""
    _, b = pair
    meeting = b.admin("POST", "/v1/meetings", json={"name": "Small", "policy": "open", "capacity": 2}).json()
    mid, room = meeting["meeting_id"], {"name": meeting["room_name"]}
    enter_and_join(b, meeting, "host", "host")
    first = enter_and_join(b, meeting, "participant", "first")

    def joined_webhook(identity):
        r = post_webhook(b, {"event": "participant_joined", "room": room, "participant": {"identity": identity}})
        assert r.status_code == 200, r.text
        return r.json()["recorded"]

    assert joined_webhook("host") is True
    assert joined_webhook("first") is True

    # Full (host + first): a third person gets no LiveKit token.
    entered = b.post(f"/v1/meetings/{mid}/enter", json={"credential": meeting["credentials"]["participant"], "name": "second", "identity": "second"})
    assert entered.status_code == 200, entered.text
    second_token = entered.json()["token"]
    refused = b.post(f"/v1/meetings/{mid}/join", headers={"Authorization": "Bearer " + second_token})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "meeting_full", refused.text

    # "first" leaves (convene, then LiveKit reports it); "second" now gets a place.
    call(b, mid, first["api_token"], "/leave")
    r = post_webhook(b, {"event": "participant_left", "room": room, "participant": {"identity": "first"}})
    assert r.status_code == 200 and r.json()["recorded"] is True, r.text
    joined = b.post(f"/v1/meetings/{mid}/join", headers={"Authorization": "Bearer " + second_token})
    assert joined.status_code == 200, joined.text
    assert joined_webhook("second") is True

    # "first" reconnects to LiveKit with its old, unexpired token: the room is full, so B does not
    # record it and removes the connection; through B's API it is refused as well.
    assert joined_webhook("first") is False
    again = b.post(f"/v1/meetings/{mid}/join", headers={"Authorization": "Bearer " + first["api_token"]})
    assert again.status_code == 409 and again.json()["error"]["code"] == "meeting_full", again.text
    events = b.admin("GET", f"/v1/meetings/{mid}/events?limit=1000").json()["events"]
    connected = [e["data"]["identity"] for e in events if e["type"] == "media.connected"]
    assert connected == ["host", "first", "second"], connected


def test_compatibility_answers_carry_a_convene_token_for_events_and_chat(pair):
    """With media on LiveKit, the seeds' `token` is a LiveKit token, which convene does not take
    for its own API; the answers' `api_token` reads `events_url` and sends to `chat_url`."""
    _, b = pair
    live = "/compat/live-stream"
    host = requests.post(f"{b.base}{live}/create-stream", json={"user_identity": "Bob", "stream_name": "talk"},
                         headers={"Authorization": PASSCODE}, timeout=10)
    assert host.status_code == 200, host.text
    host = host.json()
    claims = api.TokenVerifier(LK_KEY, LK_SECRET).verify(host["token"])
    assert (claims.identity, claims.video.room, claims.video.can_publish) == ("Bob", "talk", True)
    assert host["api_token"] != host["token"]

    def bearer(token):
        return {"Authorization": "Bearer " + token}

    sent = requests.post(host["chat_url"], json={"text": "hello"}, headers=bearer(host["api_token"]), timeout=10)
    assert sent.status_code == 200, sent.text
    events = requests.get(host["events_url"], headers=bearer(host["api_token"]), timeout=10)
    assert events.status_code == 200, events.text
    assert "chat.message" in [e["type"] for e in events.json()["events"]]
    refused = requests.get(host["events_url"], headers=bearer(host["token"]), timeout=10)
    assert refused.status_code == 401, refused.text

    waiting = "/compat/waiting-room"
    created = requests.post(f"{b.base}{waiting}/admin/create", json={}, auth=(API_KEY, API_SECRET), timeout=10)
    assert created.status_code == 200, created.text
    joined = requests.post(f"{b.base}{waiting}/admin/join", json={"meeting_id": str(created.json()["meeting_id"])},
                           auth=(API_KEY, API_SECRET), timeout=10)
    assert joined.status_code == 200, joined.text
    joined = joined.json()
    assert api.TokenVerifier(LK_KEY, LK_SECRET).verify(joined["token"]).identity == joined["identity"]
    events = requests.get(joined["events_url"], headers=bearer(joined["api_token"]), timeout=10)
    assert events.status_code == 200, events.text



def egress_path(mid, rid):
    """Where B asks LiveKit to write a recording's room composite."""
    return f"convene/{mid}/{rid}/composite.mp4"


async def list_egress(server, **filters):
    """ListEgress with LiveKit's Python server SDK."""
    lk = api.LiveKitAPI(server.base, LK_KEY, LK_SECRET)
    try:
        return list((await lk.egress.list_egress(api.ListEgressRequest(**filters))).items)
    finally:
        await lk.aclose()


async def egress_of(server, room, mid, rid):
    """The room's egress writing B's recording `rid`, if any."""
    for info in await list_egress(server, room_name=room):
        if any(f.filepath == egress_path(mid, rid) for f in info.room_composite.file_outputs):
            return info
    return None


def ended(server, room, mid, rid):
    """A predicate for `wait_for`: the egress of `rid` once it has ended."""

    async def check():
        info = await egress_of(server, room, mid, rid)
        running = (api.EgressStatus.EGRESS_STARTING, api.EgressStatus.EGRESS_ACTIVE, api.EgressStatus.EGRESS_ENDING)
        return info if info is not None and info.status not in running else None

    return check


def egress_event(event, info):
    """A LiveKit webhook event about an egress, as LiveKit's JSON (protojson) writes it."""
    return {"event": event, "id": f"EV_{event}", "createdAt": str(int(time.time())), "egressInfo": MessageToDict(info)}


def b_recording(b, mid, rid):
    r = b.admin("GET", f"/v1/meetings/{mid}/recordings/{rid}")
    assert r.status_code == 200, r.text
    return r.json()


def recording_events(server, mid):
    events = server.admin("GET", f"/v1/meetings/{mid}/events?limit=1000").json()["events"]
    return [(e["type"], e["data"]) for e in events if e["type"].startswith("recording.")]


FFMPEG, FFPROBE = shutil.which("ffmpeg"), shutil.which("ffprobe")


@pytest.mark.skipif(not (FFMPEG and FFPROBE) and os.environ.get("CONVENE_SKIP_FFMPEG_TESTS") == "1",
                    reason="ffmpeg is not installed (CONVENE_SKIP_FFMPEG_TESTS=1)")
def test_recording_on_convene_drives_livekit_egress_and_its_webhooks_finish_it(pair, tmp_path):
    """B's recording API starts a room composite egress on A and stops it; A (convene's own
    recording behind LiveKit's Egress API) writes the MP4 from real media; the `egress_ended`
    webhook carrying A's EgressInfo makes B's recording ready with the file, or failed with
    LiveKit's error."""
    assert FFMPEG and FFPROBE, "ffmpeg and ffprobe are needed: A composes the MP4 (apt-get install ffmpeg)"
    a, b = pair
    meeting = b.admin("POST", "/v1/meetings", json={"name": "Recorded", "policy": "open"}).json()
    mid, room = meeting["meeting_id"], meeting["room_name"]
    host_join = enter_and_join(b, meeting, "host", "host")

    async def main():
        host = await connect(host_join)
        _, pump = await publish_video(host)
        try:
            # Recording on B starts a room composite egress on A, its file named after the recording.
            r = b.admin("POST", f"/v1/meetings/{mid}/recordings")
            assert r.status_code == 201, r.text
            rid = r.json()["recording_id"]
            started = await wait_for(lambda: egress_of(a, room, mid, rid), 10, "the egress running on A")
            assert started.status == api.EgressStatus.EGRESS_ACTIVE, started
            assert started.room_name == room and started.room_composite.layout == "grid"
            outputs = [(f.file_type, f.filepath) for f in started.room_composite.file_outputs]
            assert outputs == [(api.EncodedFileType.MP4, egress_path(mid, rid))], outputs
            # An event about a running egress changes nothing.
            r = post_webhook(b, egress_event("egress_started", started))
            assert r.status_code == 200 and r.json()["recorded"] is False, r.text
            assert b_recording(b, mid, rid)["state"] == "recording"

            await asyncio.sleep(3)  # media to record
            # Stopping on B stops the egress on A, which then finishes its file.
            stopped = b.admin("POST", f"/v1/meetings/{mid}/recordings/{rid}/stop")
            assert stopped.status_code == 200 and stopped.json()["state"] == "processing", stopped.text
            done = await wait_for(ended(a, room, mid, rid), 90, "the egress ended on A")
            assert done.status == api.EgressStatus.EGRESS_COMPLETE, done
            [written] = done.file_results
            assert written.filename == egress_path(mid, rid) and written.size > 0, written
            assert 2000 < written.duration / 1e6 < 10000, written

            # LiveKit tells B; B's recording is ready with the file as LiveKit describes it.
            r = post_webhook(b, egress_event("egress_ended", done))
            assert r.status_code == 200 and r.json()["recorded"] is True, r.text
            ready = b_recording(b, mid, rid)
            assert ready["state"] == "ready", ready
            [file] = ready["files"]
            assert (file["name"], file["kind"], file["codec"], file["bytes"]) == ("composite.mp4", "composite", "mp4", written.size), file
            assert file["duration_ms"] == written.duration // 1_000_000 == ready["duration_ms"], (file, ready)
            assert file["start_ms"] < 5000, file
            # The same webhook again (LiveKit retries): nothing changes.
            r = post_webhook(b, egress_event("egress_ended", done))
            assert r.status_code == 200, r.text
            assert b_recording(b, mid, rid) == ready
            # The file is in the deployment's storage (here A's recording store), not B's.
            r = b.admin("GET", f"/v1/meetings/{mid}/recordings/{rid}/files/composite.mp4")
            assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable", r.text
            assert written.location.startswith(a.base + "/v1/"), written.location
            assert file["location"] == written.location, file
            got = a.admin("GET", written.location[len(a.base):])
            assert got.status_code == 200 and len(got.content) == written.size, got.status_code
            path = tmp_path / "composite.mp4"
            path.write_bytes(got.content)
            probe = [FFPROBE, "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", str(path)]
            streams = subprocess.run(probe, capture_output=True, text=True, check=True).stdout.split()
            assert "h264" in streams, streams

            # A second recording, whose egress LiveKit reports failed: B's recording fails with
            # LiveKit's error and stops, and B stops the egress on A.
            r = b.admin("POST", f"/v1/meetings/{mid}/recordings")
            assert r.status_code == 201, r.text
            rid2 = r.json()["recording_id"]
            running = await wait_for(lambda: egress_of(a, room, mid, rid2), 10, "the second egress running on A")
            running.status = api.EgressStatus.EGRESS_FAILED
            running.error = "egress worker lost: pipeline frozen"
            r = post_webhook(b, egress_event("egress_ended", running))
            assert r.status_code == 200 and r.json()["recorded"] is True, r.text
            failed = b_recording(b, mid, rid2)
            assert (failed["state"], failed["error"], failed["stop_reason"]) == ("failed", "egress worker lost: pipeline frozen", "failed"), failed
            await wait_for(ended(a, room, mid, rid2), 90, "B stopped the failed recording's egress on A")
            return rid, rid2
        finally:
            pump.cancel()
            await host.disconnect()

    rid, rid2 = asyncio.run(main())
    events = [(kind, data["recording_id"]) for kind, data in recording_events(b, mid)]
    assert events == [
        ("recording.started", rid),
        ("recording.stopped", rid),
        ("recording.ready", rid),
        ("recording.started", rid2),
        ("recording.stopped", rid2),
        ("recording.failed", rid2),
    ], events


def test_a_recording_started_before_anyone_connects_records_the_room_livekit_creates(pair):
    """LiveKit records no room it does not have: B creates it first (RoomService), so a recording
    started before anyone's media connects (or a meeting that records itself) runs; stopped, its
    egress ends."""
    a, b = pair
    meeting = b.admin("POST", "/v1/meetings", json={"name": "Early", "policy": "open"}).json()
    mid, room = meeting["meeting_id"], meeting["room_name"]
    enter_and_join(b, meeting, "host", "host")
    r = b.admin("POST", f"/v1/meetings/{mid}/recordings")
    assert r.status_code == 201 and r.json()["state"] == "recording", r.text
    rid = r.json()["recording_id"]

    async def main():
        started = await wait_for(lambda: egress_of(a, room, mid, rid), 10, "the egress running on A")
        assert started.status == api.EgressStatus.EGRESS_ACTIVE, started
        r = b.admin("POST", f"/v1/meetings/{mid}/recordings/{rid}/stop")
        assert r.status_code == 200, r.text
        await wait_for(ended(a, room, mid, rid), 60, "the egress ended on A")

    asyncio.run(main())
    assert b_recording(b, mid, rid)["state"] == "processing", "until LiveKit's webhook says how it ended"


def test_a_recording_livekit_will_not_start_fails_at_once_with_why(pair):
    """B's LiveKit credentials are refused (here: a key A does not know): B's recording fails at
    once, saying why, and another may be started."""
    a, _ = pair
    c = Server(extra_env={"CONVENE_LIVEKIT_URL": a.base, "CONVENE_LIVEKIT_API_KEY": "APIunknownkey",
                          "CONVENE_LIVEKIT_API_SECRET": "a-secret-the-deployment-does-not-know-0123"})
    try:
        meeting = c.admin("POST", "/v1/meetings", json={"name": "Refused", "policy": "open"}).json()
        mid = meeting["meeting_id"]
        enter_and_join(c, meeting, "host", "host")
        r = c.admin("POST", f"/v1/meetings/{mid}/recordings")
        assert r.status_code == 201 and r.json()["state"] == "recording", r.text
        rid = r.json()["recording_id"]
        failed = wait_until(lambda: (lambda rec: rec if rec["state"] == "failed" else None)(b_recording(c, mid, rid)), 10, "the recording failed")
        assert failed["error"].startswith("LiveKit Egress did not start: ") and "unauthenticated" in failed["error"], failed
        assert failed["stop_reason"] == "failed" and failed["files"] == [], failed
        again = c.admin("POST", f"/v1/meetings/{mid}/recordings")
        assert again.status_code == 201, again.text
    finally:
        c.stop()


def test_egress_webhooks_for_recordings_b_does_not_know_are_ignored(pair):
    """Another app's egress, a recording B never had, a meeting of another deployment: 200 and
    `recorded: false`, as LiveKit's events for rooms that are no convene meeting's."""
    _, b = pair
    meeting = b.admin("POST", "/v1/meetings", json={"name": "Other", "policy": "open"}).json()
    mid, room = meeting["meeting_id"], meeting["room_name"]

    def info(filepath, room_name=room):
        return api.EgressInfo(
            egress_id="EG_other", room_name=room_name, status=api.EgressStatus.EGRESS_COMPLETE,
            room_composite=api.RoomCompositeEgressRequest(room_name=room_name, file_outputs=[api.EncodedFileOutput(filepath=filepath)]),
            file_results=[api.FileInfo(filename=filepath, size=10, duration=1_000_000_000)],
        )

    unknown = "rec_" + "f" * 24
    for egress in (
        info("recordings/standup.mp4"),
        info(egress_path(mid, unknown)),
        info(egress_path("98765432109", unknown)),
    ):
        r = post_webhook(b, egress_event("egress_ended", egress))
        assert r.status_code == 200 and r.json() == {"ok": True, "recorded": False}, r.text
    # A real recording's path, but the egress is of another room: not trusted.
    enter_and_join(b, meeting, "host", "host")
    rid = b.admin("POST", f"/v1/meetings/{mid}/recordings").json()["recording_id"]
    r = post_webhook(b, egress_event("egress_ended", info(egress_path(mid, rid), room_name="elsewhere")))
    assert r.status_code == 200 and r.json()["recorded"] is False, r.text
    assert b_recording(b, mid, rid)["state"] == "recording"


def test_convenes_egress_api_needs_the_room_record_grant(pair):
    """convene's own LiveKit Egress service (A) is authorised as LiveKit's: `roomRecord`."""
    a, _ = pair
    now = int(time.time())

    def token(video):
        return jwt.encode({"iss": LK_KEY, "sub": "app", "nbf": now, "exp": now + 300, "video": video}, LK_SECRET, algorithm="HS256")

    def list_with(video):
        return requests.post(f"{a.base}/twirp/livekit.Egress/ListEgress", json={}, headers={"Authorization": "Bearer " + token(video)}, timeout=10)

    r = list_with({"roomRecord": True})
    assert r.status_code == 200 and r.json().get("items", []) == [], r.text
    for video in ({"roomAdmin": True, "room": "x"}, {"roomJoin": True, "room": "x"}, {"roomList": True}):
        r = list_with(video)
        assert r.status_code == 403 and r.json()["code"] == "permission_denied", (video, r.text)
    r = requests.post(f"{a.base}/twirp/livekit.Egress/ListEgress", json={}, headers={"Authorization": "Bearer garbage"}, timeout=10)
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated", r.text
    r = requests.post(f"{a.base}/twirp/livekit.Egress/StartTrackEgress", json={}, headers={"Authorization": "Bearer " + token({"roomRecord": True})}, timeout=10)
    assert r.status_code == 501 and r.json()["code"] == "unimplemented", r.text
