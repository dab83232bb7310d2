"""Data packets, permissions and removal through the SFU with the official Python SDK."""

import asyncio

from livekit import rtc

from sfu_helpers import connect, wait_for


def _collect(client: rtc.Room, inbox: list):
    @client.on("data_received")
    def on_data(packet: rtc.DataPacket):
        inbox.append((packet.participant.identity if packet.participant else None, packet.data, packet.topic))


def test_reliable_data_both_ways_and_to_a_named_destination(sfu, room_name):
    async def main():
        alice = await connect(sfu, "alice", room_name)
        bob = await connect(sfu, "bob", room_name)
        carol = await connect(sfu, "carol", room_name)
        inbox = {"alice": [], "bob": [], "carol": []}
        for name, client in (("alice", alice), ("bob", bob), ("carol", carol)):
            _collect(client, inbox[name])
        await wait_for(lambda: len(alice.remote_participants) == 2, 10, "alice sees both")

        await alice.local_participant.publish_data(b"hello all", reliable=True, topic="t")
        await bob.local_participant.publish_data(b"hi alice", reliable=True, destination_identities=["alice"])
        await wait_for(lambda: ("alice", b"hello all", "t") in inbox["bob"], 10, "bob gets alice's broadcast")
        await wait_for(lambda: ("alice", b"hello all", "t") in inbox["carol"], 10, "carol gets alice's broadcast")
        await wait_for(lambda: any(m[:2] == ("bob", b"hi alice") for m in inbox["alice"]), 10, "alice gets bob's message")
        # A marker broadcast after the directed message: once carol has it, she would have had bob's too.
        await bob.local_participant.publish_data(b"marker", reliable=True)
        await wait_for(lambda: any(m[1] == b"marker" for m in inbox["carol"]), 10, "carol gets the marker")
        assert not any(m[1] == b"hi alice" for m in inbox["carol"]), inbox["carol"]
        assert not any(m[1] == b"hello all" for m in inbox["alice"]), "sender must not get its own packet"
        for client in (alice, bob, carol):
            await client.disconnect()

    asyncio.run(main())


def test_publish_refused_then_granted_live(sfu, room_name):
    async def main():
        viewer = await connect(sfu, "viewer", room_name)
        speaker = await connect(sfu, "speaker", room_name, can_publish=False)
        source = rtc.AudioSource(48000, 1)
        track = rtc.LocalAudioTrack.create_audio_track("mic", source)
        try:
            await asyncio.wait_for(
                speaker.local_participant.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)),
                timeout=20,
            )
            raise AssertionError("publishing without permission must fail")
        except AssertionError:
            raise
        except Exception:
            pass
        assert all(not p["tracks"] for p in sfu.participants(room_name))

        # Promotion: same connection, no rejoin.
        sfu.control("permission", room=room_name, identity="speaker", can_publish="1")
        await wait_for(lambda: speaker.local_participant.permissions.can_publish, 10, "client learns it may publish")
        track2 = rtc.LocalAudioTrack.create_audio_track("mic2", source)
        publication = await asyncio.wait_for(
            speaker.local_participant.publish_track(track2, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)),
            timeout=15,
        )

        def viewer_sees():
            p = viewer.remote_participants.get("speaker")
            return p is not None and publication.sid in p.track_publications

        await wait_for(viewer_sees, 10, "viewer sees the promoted speaker's track")

        # Demotion revokes and unpublishes.
        sfu.control("permission", room=room_name, identity="speaker", can_publish="0")
        await wait_for(lambda: not viewer_sees(), 10, "track unpublished after demotion")
        await viewer.disconnect()
        await speaker.disconnect()

    asyncio.run(main())


def test_remove_disconnects_within_two_seconds(sfu, room_name):
    async def main():
        stay = await connect(sfu, "stay", room_name)
        kicked = await connect(sfu, "kicked", room_name)
        gone = asyncio.Event()
        kicked.on("disconnected", lambda *args: gone.set())
        await wait_for(lambda: "kicked" in stay.remote_participants, 10, "stay sees kicked")
        sfu.control("remove", room=room_name, identity="kicked")
        await asyncio.wait_for(gone.wait(), timeout=2)
        await wait_for(lambda: "kicked" not in stay.remote_participants, 2, "stay sees kicked leave")
        assert stay.connection_state == rtc.ConnectionState.CONN_CONNECTED
        await stay.disconnect()
        await kicked.disconnect()

    asyncio.run(main())
