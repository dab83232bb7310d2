"""Helpers for the SFU interop tests: start the sfu_dev runner, mint tokens, connect official SDK clients."""

import asyncio
import os
import pathlib
import subprocess
import threading
import time
import uuid

import numpy as np
import pytest
import requests
from livekit import api, rtc

from convene_server import wait_for  # noqa: F401  (re-exported for the SFU tests)

REPO = pathlib.Path(__file__).resolve().parents[3]
API_KEY = "devkey"
API_SECRET = "devsecret-for-interop-tests-0123456789abcdef"


def _dev_binary() -> str:
    """The dev runner: $CONVENE_SFU_DEV_BIN, else build it with cargo."""
    path = os.environ.get("CONVENE_SFU_DEV_BIN")
    if path:
        return path
    target = os.environ.get("CARGO_TARGET_DIR", str(REPO / "target-sfu"))
    subprocess.run(
        ["cargo", "build", "-p", "convene-sfu", "--example", "sfu_dev"],
        cwd=REPO,
        check=True,
        env={**os.environ, "CARGO_TARGET_DIR": target},
    )
    return str(pathlib.Path(target) / "debug" / "examples" / "sfu_dev")


class DevServer:
    def __init__(self, proc, http_addr, udp_addrs, tcp_addrs, log):
        self.proc = proc
        self.http = http_addr
        self.udp = udp_addrs
        self.tcp = tcp_addrs
        self.log = log

    @property
    def ws_url(self) -> str:
        return f"ws://{self.http}"

    @property
    def http_url(self) -> str:
        return f"http://{self.http}"

    def token(self, identity, room, **grants) -> str:
        video = api.VideoGrants(room_join=True, room=room, **grants)
        return (
            api.AccessToken(API_KEY, API_SECRET)
            .with_identity(identity)
            .with_name(identity)
            .with_grants(video)
            .to_jwt()
        )

    def control(self, route, **params):
        response = requests.post(f"{self.http_url}/dev/{route}", params=params, timeout=5)
        response.raise_for_status()
        return response

    def participants(self, room):
        response = requests.get(f"{self.http_url}/dev/participants", params={"room": room}, timeout=5)
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return response.json()

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_dev(extra_env: dict[str, str] | None = None) -> DevServer:
    """Starts an sfu_dev on free ports (with `extra_env` added to its environment); stop it with `stop_dev`."""
    binary = _dev_binary()
    proc = subprocess.Popen(
        [binary, "--http", "127.0.0.1:0", "--udp-port", "0", "--tcp-port", "0", "--key", API_KEY, "--secret", API_SECRET],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(extra_env or {})},
    )
    log: list[str] = []
    threading.Thread(target=lambda: [log.append(line) for line in proc.stderr], daemon=True).start()
    deadline = time.monotonic() + 60
    ready = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("SFU_DEV_READY"):
            ready = dict(part.split("=", 1) for part in line.split()[1:])
            break
    if ready is None:
        proc.kill()
        raise RuntimeError("sfu_dev did not start:\n" + "".join(log[-50:]))
    return DevServer(proc, ready["http"], ready["udp"].split(","), ready["tcp"].split(","), log)


def stop_dev(server: DevServer):
    server.proc.terminate()
    try:
        server.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.proc.kill()


@pytest.fixture(scope="session")
def sfu():
    server = start_dev()
    yield server
    stop_dev(server)


@pytest.fixture
def room_name():
    return f"room-{uuid.uuid4().hex[:8]}"


async def connect(sfu: DevServer, identity: str, room: str, **grants) -> rtc.Room:
    client = rtc.Room()
    await asyncio.wait_for(
        client.connect(sfu.ws_url, sfu.token(identity, room, **grants), rtc.RoomOptions(auto_subscribe=True)),
        timeout=20,
    )
    return client


async def publish_video(client: rtc.Room, width: int = 320, height: int = 240) -> asyncio.Task:
    """Publishes a camera track of moving synthetic frames at 30 fps; cancel the task to stop."""
    source = rtc.VideoSource(width, height)
    track = rtc.LocalVideoTrack.create_video_track("camera", source)
    await client.local_participant.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA))

    async def pump():
        n = 0
        while True:
            pixels = np.zeros((height, width, 4), dtype=np.uint8)
            pixels[:, :, 0] = (n * 4) % 256
            pixels[:, (n * 3) % width, 1] = 255
            pixels[:, :, 3] = 255
            source.capture_frame(rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, pixels.tobytes()))
            n += 1
            await asyncio.sleep(1 / 30)

    return asyncio.create_task(pump())


def count_video_frames(room: rtc.Room) -> tuple[dict, list]:
    """Counts the frames `room` decodes from every video track it subscribes to from now on:
    answers the count (`["video"]`) and the reader tasks, to cancel when done."""
    frames = {"video": 0}
    readers = []

    async def read_video(track):
        async for _event in rtc.VideoStream(track):
            frames["video"] += 1

    @room.on("track_subscribed")
    def on_track(track, publication, participant):
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            readers.append(asyncio.ensure_future(read_video(track)))

    return frames, readers
