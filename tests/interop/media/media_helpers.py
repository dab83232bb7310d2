"""Helpers for the media tests: join a room with the official LiveKit Python SDK and publish a
synthetic camera."""

import asyncio

import numpy as np
from livekit import rtc


async def connect(join):
    """Joins with a join answer's `url` and `access_token`, subscribing to everything."""
    room = rtc.Room()
    await asyncio.wait_for(room.connect(join["url"], join["access_token"], rtc.RoomOptions(auto_subscribe=True)), timeout=20)
    return room


async def publish_video(room, width, height, channel=0):
    """Publishes a camera track whose frames change colour (in `channel`) at 30 fps; returns the
    publication and the task pumping the frames."""
    source = rtc.VideoSource(width, height)
    track = rtc.LocalVideoTrack.create_video_track("camera", source)
    publication = await asyncio.wait_for(
        room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA)), timeout=15
    )

    async def pump():
        n = 0
        while True:
            pixels = np.zeros((height, width, 4), dtype=np.uint8)
            pixels[:, :, channel] = (n * 4) % 256
            pixels[:, :, 3] = 255
            source.capture_frame(rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, pixels.tobytes()))
            n += 1
            await asyncio.sleep(1 / 30)

    return publication, asyncio.create_task(pump())
