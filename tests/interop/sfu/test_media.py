"""Media through the SFU with the official Python SDK: video and audio published by one participant are decoded by another."""

import asyncio

import numpy as np
from livekit import rtc

from sfu_helpers import connect, wait_for

WIDTH, HEIGHT = 320, 240


async def _publish_av(client: rtc.Room):
    video_source = rtc.VideoSource(WIDTH, HEIGHT)
    video = rtc.LocalVideoTrack.create_video_track("camera", video_source)
    await client.local_participant.publish_track(video, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA))
    audio_source = rtc.AudioSource(48000, 1)
    audio = rtc.LocalAudioTrack.create_audio_track("microphone", audio_source)
    await client.local_participant.publish_track(audio, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))

    async def pump():
        n = 0
        t = np.arange(480, dtype=np.float32)
        while True:
            pixels = np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint8)
            pixels[:, :, 0] = (n * 4) % 256
            pixels[:, (n * 3) % WIDTH, 1] = 255
            pixels[:, :, 3] = 255
            video_source.capture_frame(rtc.VideoFrame(WIDTH, HEIGHT, rtc.VideoBufferType.RGBA, pixels.tobytes()))
            for k in range(3):  # ~30 ms of audio per video frame
                tone = (np.sin(2 * np.pi * 440 * (t + (n * 3 + k) * 480) / 48000) * 8000).astype(np.int16)
                frame = rtc.AudioFrame(tone.tobytes(), 48000, 1, 480)
                await audio_source.capture_frame(frame)
            n += 1
            await asyncio.sleep(1 / 30)

    return asyncio.create_task(pump())


def test_video_and_audio_reach_the_subscriber(sfu, room_name):
    async def main():
        publisher = await connect(sfu, "pub", room_name)
        subscriber = await connect(sfu, "sub", room_name)
        counts = {"video": 0, "audio": 0}
        readers = []

        async def read_video(track):
            async for _event in rtc.VideoStream(track):
                counts["video"] += 1

        async def read_audio(track):
            async for _event in rtc.AudioStream(track, sample_rate=48000, num_channels=1):
                counts["audio"] += 1

        @subscriber.on("track_subscribed")
        def on_track(track, publication, participant):
            if track.kind == rtc.TrackKind.KIND_VIDEO:
                readers.append(asyncio.ensure_future(read_video(track)))
            elif track.kind == rtc.TrackKind.KIND_AUDIO:
                readers.append(asyncio.ensure_future(read_audio(track)))

        pump = await _publish_av(publisher)
        try:
            await wait_for(lambda: counts["video"] >= 30 and counts["audio"] >= 30, 15, f"media frames {counts}")
            # The server sees both tracks published.
            info = [p for p in sfu.participants(room_name) if p["identity"] == "pub"][0]
            assert len(info["tracks"]) == 2
        finally:
            pump.cancel()
            for r in readers:
                r.cancel()
            await publisher.disconnect()
            await subscriber.disconnect()

    asyncio.run(main())


def test_unpublish_removes_the_track_for_the_subscriber(sfu, room_name):
    async def main():
        publisher = await connect(sfu, "pub", room_name)
        subscriber = await connect(sfu, "sub", room_name)
        source = rtc.VideoSource(WIDTH, HEIGHT)
        track = rtc.LocalVideoTrack.create_video_track("camera", source)
        publication = await publisher.local_participant.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA))

        def remote_tracks():
            p = subscriber.remote_participants.get("pub")
            return p.track_publications if p else {}

        await wait_for(lambda: publication.sid in remote_tracks(), 10, "subscriber sees the track")
        await publisher.local_participant.unpublish_track(publication.sid)
        await wait_for(lambda: publication.sid not in remote_tracks(), 10, "track gone for the subscriber")
        await publisher.disconnect()
        await subscriber.disconnect()

    asyncio.run(main())
