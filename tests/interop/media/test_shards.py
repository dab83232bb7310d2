"""The embedded SFU on two media threads (`CONVENE_RTC_THREADS=2`), driven by the official
LiveKit Python SDK: two meetings go to the two threads, media flows in both, moderation reaches
the thread a room is on, and the threads' loads (`/metrics`) follow people joining and leaving."""

import asyncio

import pytest
from livekit import rtc

from convene_server import wait_for
from media_helpers import call, connect, enter_and_join, metrics_server, publish_video, scrape


@pytest.fixture
def server():
    s = metrics_server({"CONVENE_RTC_THREADS": "2"})
    yield s
    s.stop()


def shard_loads(server):
    """{shard: (sessions, rooms)} from the unauthenticated metrics address."""
    samples = scrape(server)
    shards = {dict(labels)["shard"] for (name, labels) in samples if name == "convene_sfu_shard_sessions"}
    return {
        shard: tuple(int(samples[(name, (("shard", shard),))]) for name in ("convene_sfu_shard_sessions", "convene_sfu_shard_rooms"))
        for shard in shards
    }


def test_two_meetings_on_two_media_threads(server):
    assert shard_loads(server) == {"0": (0, 0), "1": (0, 0)}
    meetings = [server.admin("POST", "/v1/meetings", json={"name": name, "policy": "open"}).json() for name in ("Maths", "Music")]
    joins = [
        (enter_and_join(server, m, "host", f"host-{i}"), enter_and_join(server, m, "participant", f"student-{i}"))
        for i, m in enumerate(meetings)
    ]

    async def main():
        rooms = []
        frames = [0, 0]
        readers = []
        pumps = []
        try:
            for i, (host_join, student_join) in enumerate(joins):
                host = await connect(host_join)
                student = await connect(student_join)
                rooms.append((host, student))

                def on_track(track, publication, participant, i=i):
                    async def read():
                        async for _ in rtc.VideoStream(track):
                            frames[i] += 1

                    if track.kind == rtc.TrackKind.KIND_VIDEO:
                        readers.append(asyncio.ensure_future(read()))

                student.on("track_subscribed", on_track)
                _, pump = await publish_video(host, 320, 240)
                pumps.append(pump)

            # One room on each thread: the second room went to the thread without anyone.
            assert shard_loads(server) == {"0": (2, 1), "1": (2, 1)}
            await wait_for(lambda: min(frames) >= 30, 20, f"30 decoded frames in each meeting (got {frames})")
            # Each student sees only its own meeting's host.
            for i, (_, student) in enumerate(rooms):
                assert [p.identity for p in student.remote_participants.values()] == [f"host-{i}"]

            # Moderation in the meeting on the second thread reaches it.
            gone = asyncio.Event()
            rooms[1][1].on("disconnected", lambda *_: gone.set())
            mid = meetings[1]["meeting_id"]
            call(server, mid, joins[1][0]["access_token"], "/participants/student-1/remove")
            await asyncio.wait_for(gone.wait(), timeout=5)
            await wait_for(lambda: shard_loads(server) == {"0": (2, 1), "1": (1, 1)}, 10, "the removed student's session gone from its thread")
            # The other meeting's media is untouched.
            before = frames[0]
            await wait_for(lambda: frames[0] >= before + 15, 10, "media still flowing in the first meeting")
        finally:
            for task in pumps + readers:
                task.cancel()
            for host, student in rooms:
                await student.disconnect()
                await host.disconnect()

        await wait_for(lambda: shard_loads(server) == {"0": (0, 0), "1": (0, 0)}, 15, "both threads empty after everyone left")

    asyncio.run(main())
