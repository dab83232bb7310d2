"""Seeds 000 and 001 against the real `convene` binary: the compatibility surfaces'
tokens verify with the official LiveKit `TokenVerifier` (room, identity, canPublish), and the
documented requests work as JSON and as forms."""

import os
import sys

import pytest
import requests
from livekit import api

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from convene_server import API_KEY, API_SECRET, Server  # noqa: E402

PASSCODE = "interop-live-passcode"
WAITING = "/compat/waiting-room"
LIVE = "/compat/live-stream"


@pytest.fixture
def server():
    server = Server(extra_env={"CONVENE_COMPAT_LIVE_PASSCODE": PASSCODE, "MEETING_ID_DIGITS": "9"})
    yield server
    server.stop()


def verify(token):
    return api.TokenVerifier(API_KEY, API_SECRET).verify(token)


def post(server, path, params, encoding, **kwargs):
    body = {"json": params} if encoding == "json" else {"data": params}
    return requests.post(server.base + path, timeout=10, **body, **kwargs)


@pytest.mark.parametrize("encoding", ["json", "form"])
def test_waiting_room_tokens_verify(server, encoding):
    admin = (API_KEY, API_SECRET)
    created = post(server, WAITING + "/admin/create", {"n_digits": 12}, encoding, auth=admin)
    assert created.status_code == 200, created.text
    meeting_id = created.json()["meeting_id"]
    assert isinstance(meeting_id, int) and len(str(meeting_id)) == 12
    # The server's MEETING_ID_DIGITS (9) is brought up to the surface's minimum of 10.
    default = post(server, WAITING + "/admin/create", {}, encoding, auth=admin)
    assert len(str(default.json()["meeting_id"])) == 10
    short = post(server, WAITING + "/admin/create", {"n_digits": 9}, encoding, auth=admin)
    assert short.status_code == 400 and "n_digits" in short.json()

    guest = post(server, WAITING + "/user/enter-waiting-room", {"meeting_id": str(meeting_id)}, encoding)
    assert guest.status_code == 200, guest.text
    guest = guest.json()
    assert guest["document"] == f"waiting-room.{meeting_id}"
    assert guest["state"]["room_open"] is False
    waiting = verify(guest["token"])
    assert waiting.identity == guest["identity"]
    assert not waiting.video.room_join

    early = post(server, WAITING + "/user/join",
                 {"meeting_id": str(meeting_id), "room_id": str(meeting_id), "identity": guest["identity"]}, encoding)
    assert early.status_code == 403
    assert early.json().startswith("Error: ")

    host = post(server, WAITING + "/admin/join", {"meeting_id": str(meeting_id)}, encoding, auth=admin)
    assert host.status_code == 200, host.text
    host = host.json()
    host_claims = verify(host["token"])
    assert host["api_token"] == host["token"]  # the embedded engine's token is a convene token
    assert host_claims.identity == host["identity"]
    assert host_claims.video.room == host["room_id"]
    assert host_claims.video.can_publish is True

    # The guest's document opened: read on the event channel with the guest's own token.
    assert guest["events_url"].endswith(f"/v1/meetings/{meeting_id}/events")
    events = requests.get(f"{server.base}/v1/meetings/{meeting_id}/events",
                          headers={"Authorization": f"Bearer {guest['token']}"}, timeout=10)
    assert events.status_code == 200, events.text
    types = [(e["type"], e["data"].get("identity")) for e in events.json()["events"]]
    assert ("participant.admitted", guest["identity"]) in types

    joined = post(server, WAITING + "/user/join",
                  {"meeting_id": str(meeting_id), "room_id": host["room_id"], "identity": guest["identity"]}, encoding)
    assert joined.status_code == 200, joined.text
    joined = joined.json()
    claims = verify(joined["token"])
    assert claims.identity == guest["identity"] == joined["identity"]
    assert claims.video.room == host["room_id"] == joined["room_id"]
    assert claims.video.room_join is True
    assert claims.video.can_publish is True

    wrong = post(server, WAITING + "/user/join",
                 {"meeting_id": str(meeting_id), "room_id": host["room_id"], "identity": "guest-nobody12345"}, encoding)
    assert wrong.status_code == 403 and wrong.json().startswith("Error: ")


@pytest.mark.parametrize("encoding", ["json", "form"])
def test_live_stream_tokens_verify(server, encoding):
    auth = {"Authorization": PASSCODE}
    assert post(server, LIVE + "/verify-passcode", {}, encoding, headers=auth).json() == {"verified": True}
    wrong = post(server, LIVE + "/verify-passcode", {}, encoding, headers={"Authorization": "nope"})
    assert wrong.status_code == 401
    assert set(wrong.json()["error"]) == {"message", "explanation"}

    stream = f"demo-{encoding}"
    host = post(server, LIVE + "/create-stream", {"user_identity": "Bob", "stream_name": stream}, encoding, headers=auth)
    assert host.status_code == 200, host.text
    host = host.json()
    claims = verify(host["token"])
    assert (claims.identity, claims.video.room, claims.video.can_publish) == ("Bob", stream, True)
    assert host["api_token"] == host["token"]  # the embedded engine's token is a convene token

    viewer = post(server, LIVE + "/join-stream-as-viewer", {"user_identity": "Alice", "stream_name": stream},
                  encoding, headers=auth).json()
    claims = verify(viewer["token"])
    assert (claims.identity, claims.video.room, claims.video.can_publish) == ("Alice", stream, False)
    assert claims.video.can_subscribe is True

    raised = post(server, LIVE + "/raise-hand", {"user_identity": "Alice", "stream_name": stream, "hand_raised": True},
                  encoding, headers=auth)
    assert raised.json() == {"sent": True}
    invited = post(server, LIVE + "/send-speaker-invite", {"user_identity": "Alice", "room_sid": host["room_sid"]},
                   encoding, headers=auth)
    assert invited.json() == {"sent": True}

    speaker = post(server, LIVE + "/join-stream-as-speaker", {"user_identity": "Alice", "stream_name": stream},
                   encoding, headers=auth).json()
    claims = verify(speaker["token"])
    assert (claims.identity, claims.video.room, claims.video.can_publish) == ("Alice", stream, True)

    removed = post(server, LIVE + "/remove-speaker", {"user_identity": "Alice", "room_name": stream}, encoding, headers=auth)
    assert removed.json() == {"removed": True}
    state = post(server, LIVE + "/stream-state", {"stream_name": stream}, encoding, headers=auth).json()
    assert set(state["speakers"]) == {"Bob"}
    assert post(server, LIVE + "/delete-stream", {"stream_name": stream}, encoding, headers=auth).json() == {"deleted": True}
    gone = post(server, LIVE + "/join-stream-as-viewer", {"user_identity": "Alice", "stream_name": stream},
                encoding, headers=auth)
    assert gone.status_code == 404
