"""LiveKit's server SDK (Python `livekit-api` RoomService) against convene's embedded engine, with
tokens minted by the app itself as it would for a LiveKit server."""

import asyncio

import pytest
import requests
from livekit import api, rtc

from convene_server import API_KEY, API_SECRET, Server, wait_for


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


def app_token(identity, room, **grants):
    return (
        api.AccessToken(API_KEY, API_SECRET)
        .with_identity(identity)
        .with_name(identity.title())
        .with_grants(api.VideoGrants(room_join=True, room=room, **grants))
        .to_jwt()
    )


async def connect(server, identity, room, **grants):
    client = rtc.Room()
    await asyncio.wait_for(client.connect(server.base.replace("http", "ws"), app_token(identity, room, **grants)), timeout=20)
    return client


def test_room_service_lists_mutes_updates_and_removes(server):
    async def main():
        lk = api.LiveKitAPI(server.base, API_KEY, API_SECRET)
        try:
            created = await lk.room.create_room(api.CreateRoomRequest(name="lk-room", max_participants=10))
            assert created.name == "lk-room" and created.sid.startswith("RM_") and created.max_participants == 10
            rooms = await lk.room.list_rooms(api.ListRoomsRequest())
            assert "lk-room" in [r.name for r in rooms.rooms]

            alice = await connect(server, "alice", "lk-room")
            bob = await connect(server, "bob", "lk-room", can_publish=False)
            source = rtc.AudioSource(48000, 1)
            track = rtc.LocalAudioTrack.create_audio_track("mic", source)
            publication = await alice.local_participant.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))

            listed = await lk.room.list_participants(api.ListParticipantsRequest(room="lk-room"))
            assert sorted(p.identity for p in listed.participants) == ["alice", "bob"]
            got = await lk.room.get_participant(api.RoomParticipantIdentity(room="lk-room", identity="bob"))
            assert got.identity == "bob" and not got.permission.can_publish

            async def server_sees_track():
                info = await lk.room.get_participant(api.RoomParticipantIdentity(room="lk-room", identity="alice"))
                return publication.sid in [t.sid for t in info.tracks]

            await wait_for(server_sees_track, 10, "the server lists alice's published track")
            muted = await lk.room.mute_published_track(api.MuteRoomTrackRequest(room="lk-room", identity="alice", track_sid=publication.sid, muted=True))
            assert muted.track.sid == publication.sid and muted.track.muted
            await wait_for(lambda: publication.muted, 5, "alice sees her track muted by the server")

            updated = await lk.room.update_participant(api.UpdateParticipantRequest(
                room="lk-room", identity="bob", metadata='{"seat": 7}',
                permission=api.ParticipantPermission(can_publish=True, can_subscribe=True, can_publish_data=True)))
            assert updated.metadata == '{"seat": 7}' and updated.permission.can_publish
            await wait_for(lambda: bob.local_participant.permissions.can_publish, 5, "bob may publish, live")

            await lk.room.send_data(api.SendDataRequest(room="lk-room", data=b"hello from the server", kind=api.DataPacket.Kind.RELIABLE, destination_identities=["bob"]))

            gone = asyncio.Event()
            bob.on("disconnected", lambda *_: gone.set())
            await lk.room.remove_participant(api.RoomParticipantIdentity(room="lk-room", identity="bob"))
            await asyncio.wait_for(gone.wait(), timeout=2)
            listed = await lk.room.list_participants(api.ListParticipantsRequest(room="lk-room"))
            assert [p.identity for p in listed.participants] == ["alice"]

            # The moderation is convene's: it is in the meeting's log.
            meetings = server.admin("GET", "/v1/meetings").json()["meetings"]
            mid = [m for m in meetings if m["room_name"] == "lk-room"][0]["meeting_id"]
            kinds = [e["type"] for e in server.admin("GET", f"/v1/meetings/{mid}/events?limit=1000").json()["events"]]
            for expected in ["participant.muted", "participant.role_changed", "participant.removed"]:
                assert expected in kinds, kinds

            await lk.room.delete_room(api.DeleteRoomRequest(room="lk-room"))
            await alice.disconnect()
        finally:
            await lk.aclose()

    asyncio.run(main())


def test_room_service_refuses_bad_credentials_and_speaks_json(server):
    def call(method, body, token=None, content_type="application/json"):
        headers = {"Content-Type": content_type}
        if token:
            headers["Authorization"] = "Bearer " + token
        return requests.post(f"{server.base}/twirp/livekit.RoomService/{method}", data=body, headers=headers, timeout=5)

    admin = api.AccessToken(API_KEY, API_SECRET).with_grants(api.VideoGrants(room_create=True, room_list=True)).to_jwt()
    r = call("CreateRoom", '{"name": "json-room"}', admin)
    assert r.status_code == 200 and r.json()["name"] == "json-room", r.text
    r = call("ListRooms", "{}", admin)
    assert "json-room" in [room["name"] for room in r.json()["rooms"]]
    # No token, a wrong secret, a join-only token, garbage: Twirp errors.
    assert call("ListRooms", "{}").json()["code"] == "unauthenticated"
    wrong = api.AccessToken(API_KEY, "x" * 40).with_grants(api.VideoGrants(room_list=True)).to_jwt()
    assert call("ListRooms", "{}", wrong).status_code == 401
    joiner = app_token("eve", "json-room")
    r = call("ListRooms", "{}", joiner)
    assert r.status_code == 401, r.text
    roomadmin_other = api.AccessToken(API_KEY, API_SECRET).with_grants(api.VideoGrants(room_admin=True, room="another")).to_jwt()
    r = call("ListParticipants", '{"room": "json-room"}', roomadmin_other)
    assert r.status_code == 403 and r.json()["code"] == "permission_denied"
    r = call("CreateRoom", "not json", admin)
    assert r.status_code == 400 and r.json()["code"] == "malformed"
    r = call("CreateRoom", b"\xff\xff\xff", admin, content_type="application/protobuf")
    assert r.status_code == 400
    r = call("NoSuchMethod", "{}", admin)
    assert r.status_code == 404 and r.json()["code"] == "bad_route"


def test_app_minted_tokens_respect_bans(server):
    async def main():
        lk = api.LiveKitAPI(server.base, API_KEY, API_SECRET)
        try:
            host = await connect(server, "host", "banroom", room_admin=True)
            await connect(server, "mallory", "banroom")
            meetings = server.admin("GET", "/v1/meetings").json()["meetings"]
            mid = [m for m in meetings if m["room_name"] == "banroom"][0]["meeting_id"]
            r = server.admin("POST", f"/v1/meetings/{mid}/participants/mallory/ban", json={})
            assert r.status_code == 200, r.text
            # A fresh app-minted token does not bring a banned person back.
            with pytest.raises(Exception):
                await connect(server, "mallory", "banroom")
            await host.disconnect()
        finally:
            await lk.aclose()

    asyncio.run(main())
