"""convene driving an external LiveKit deployment through LiveKit's server API.

Server A is a plain convene (embedded SFU, RoomService) standing in for the LiveKit deployment,
with the key pair K/S. Server B runs with CONVENE_LIVEKIT_URL pointing at A and K/S as its LiveKit
key pair: B hands out A's signalling URL and LiveKit tokens signed with K/S, and its moderation acts
on A through RoomService. Clients are the official LiveKit Python SDK; webhooks are signed as
LiveKit signs them (a HS256 JWT whose sha256 claim is the body's digest)."""

import asyncio
import base64
import hashlib
import json
import time

import jwt
import pytest
import requests
from livekit import api, rtc

from convene_server import API_KEY, API_SECRET, Server, wait_for
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
