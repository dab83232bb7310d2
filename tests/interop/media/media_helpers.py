"""Helpers for the media tests: enter and join a meeting through convene's API, call it as a
participant, join the room with the official LiveKit Python SDK and publish a synthetic camera;
a server with an open metrics address, scraped with the Prometheus project's own parser."""

import asyncio

import numpy as np
import requests
from livekit import rtc
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from convene_server import Server, free_port


def metrics_server(extra_env=None):
    """A server with `/metrics` open on its own address (`server.metrics_addr`)."""
    metrics_addr = f"127.0.0.1:{free_port()}"
    server = Server(extra_env={**(extra_env or {}), "CONVENE_METRICS_ADDR": metrics_addr})
    server.metrics_addr = metrics_addr
    return server


def scrape(server):
    """Scrapes the unauthenticated metrics address; {(name, labels as a sorted tuple): value}."""
    response = requests.get(f"http://{server.metrics_addr}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def enter_and_join(server, meeting, role, identity):
    """Enter `meeting` with the `role`'s credential as `identity` and join: the join answer."""
    mid = meeting["meeting_id"]
    entered = server.post(f"/v1/meetings/{mid}/enter", json={"credential": meeting["credentials"][role], "name": identity, "identity": identity})
    assert entered.status_code == 200, entered.text
    joined = server.post(f"/v1/meetings/{mid}/join", headers={"Authorization": "Bearer " + entered.json()["token"]})
    assert joined.status_code == 200, joined.text
    return joined.json()


def call(server, mid, token, path, body=None):
    """POST `/v1/meetings/{mid}{path}` with a participant's token; expects 200, returns the body."""
    response = requests.post(f"{server.base}/v1/meetings/{mid}{path}", json=body, headers={"Authorization": "Bearer " + token}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


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
