"""The embedded SFU behind convene's own admission, driven by the official LiveKit Python SDK:
tokens from convene's API, roles and moderation from the core acting on live media."""

import asyncio

import pytest
import requests
from livekit import rtc

from convene_server import Server, wait_for
from media_helpers import call, connect, enter_and_join
from media_helpers import publish_video as camera

WIDTH, HEIGHT = 320, 240


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


async def publish_video(room):
    return await camera(room, WIDTH, HEIGHT)


def test_stage_flow_on_live_media(server):
    meeting = server.admin("POST", "/v1/meetings", json={"name": "Stage", "mode": "stream", "policy": "open"}).json()
    mid = meeting["meeting_id"]
    host_join = enter_and_join(server, meeting, "host", "host")
    viewer_join = enter_and_join(server, meeting, "viewer", "viewer")

    async def main():
        host = await connect(host_join)
        viewer = await connect(viewer_join)
        frames = {"n": 0}
        readers = []

        async def read(track):
            async for _ in rtc.VideoStream(track):
                frames["n"] += 1

        @viewer.on("track_subscribed")
        def on_track(track, publication, participant):
            if track.kind == rtc.TrackKind.KIND_VIDEO:
                readers.append(asyncio.ensure_future(read(track)))

        _, pump = await publish_video(host)
        try:
            # The viewer watches the host.
            await wait_for(lambda: frames["n"] >= 30, 15, f"30 decoded frames (got {frames})")

            # A viewer may not publish.
            with pytest.raises(Exception):
                await publish_video(viewer)

            # Stage: raise hand, invite, accept -> the same connection may publish, live.
            viewer_token = viewer_join["access_token"]
            assert requests.post(f"{server.base}/v1/meetings/{mid}/hand", json={"raised": True}, headers={"Authorization": "Bearer " + viewer_token}, timeout=10).ok
            call(server, mid, host_join["access_token"], "/participants/viewer/invite")
            assert requests.post(f"{server.base}/v1/meetings/{mid}/invitation/accept", headers={"Authorization": "Bearer " + viewer_token}, timeout=10).ok
            await wait_for(lambda: viewer.local_participant.permissions.can_publish, 5, "publish permission granted live")
            publication, viewer_pump = await publish_video(viewer)
            await wait_for(lambda: any(publication.sid in p.track_publications for p in host.remote_participants.values()), 10, "host sees the new speaker's track")
            viewer_pump.cancel()

            # The media side came back into the meeting's log.
            events = server.admin("GET", f"/v1/meetings/{mid}/events?limit=1000").json()["events"]
            kinds = [e["type"] for e in events]
            assert "media.connected" in kinds and "media.track_published" in kinds, kinds
        finally:
            pump.cancel()
            for r in readers:
                r.cancel()
            await viewer.disconnect()
            await host.disconnect()

    asyncio.run(main())


def test_remove_ban_and_end_act_on_media(server):
    meeting = server.admin("POST", "/v1/meetings", json={"name": "Class", "policy": "open"}).json()
    mid = meeting["meeting_id"]
    host_join = enter_and_join(server, meeting, "host", "teacher")
    student_join = enter_and_join(server, meeting, "participant", "student")
    other_join = enter_and_join(server, meeting, "participant", "other")

    async def main():
        host = await connect(host_join)
        student = await connect(student_join)
        other = await connect(other_join)
        gone = {"student": asyncio.Event(), "other": asyncio.Event(), "host": asyncio.Event()}
        student.on("disconnected", lambda *_: gone["student"].set())
        other.on("disconnected", lambda *_: gone["other"].set())
        host.on("disconnected", lambda *_: gone["host"].set())

        # Remove: disconnected within 2 s.
        call(server, mid, host_join["access_token"], "/participants/student/remove")
        await asyncio.wait_for(gone["student"].wait(), timeout=2)
        # Its old token no longer opens the room.
        with pytest.raises(Exception):
            await connect(student_join)

        # Ban: disconnected, and no fresh token either.
        call(server, mid, host_join["access_token"], "/participants/other/ban", {})
        await asyncio.wait_for(gone["other"].wait(), timeout=2)
        again = server.post(f"/v1/meetings/{mid}/enter", json={"credential": meeting["credentials"]["participant"], "name": "other", "identity": "other"})
        assert again.status_code == 403 and again.json()["error"]["code"] == "banned"
        with pytest.raises(Exception):
            await connect(other_join)

        # End: everyone is disconnected, nothing joins until a restart.
        call(server, mid, host_join["access_token"], "/end")
        await asyncio.wait_for(gone["host"].wait(), timeout=2)
        with pytest.raises(Exception):
            await connect(host_join)

    asyncio.run(main())


def test_tokens_are_checked_before_the_upgrade(server):
    meeting = server.admin("POST", "/v1/meetings", json={"name": "Gate", "policy": "wait_for_host"}).json()
    mid = meeting["meeting_id"]
    entered = server.post(f"/v1/meetings/{mid}/enter", json={"credential": meeting["credentials"]["participant"], "name": "g"}).json()
    # A waiting-room token is not a media token.
    r = requests.get(f"{server.base}/rtc/validate", params={"access_token": entered["token"]}, timeout=5)
    assert r.status_code == 401, r.text
    r = requests.get(f"{server.base}/rtc/validate", params={"access_token": "garbage"}, timeout=5)
    assert r.status_code == 401
    host_join = enter_and_join(server, meeting, "host", "h")
    r = requests.get(f"{server.base}/rtc/validate", params={"access_token": host_join["access_token"]}, timeout=5)
    assert r.status_code == 200, r.text
    r = requests.get(f"{server.base}/rtc/v1/validate", timeout=5)
    assert r.status_code == 404 and r.headers.get("access-control-allow-origin") == "*"
