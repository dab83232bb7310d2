"""Recording on the embedded SFU, driven by the official LiveKit Python SDK and checked with
Debian's ffmpeg: every track written as it arrived (WebM: Opus, VP8) and a composite MP4, the
index from the event log, the SDK told (`room_updated`, `is_recording`), webhooks, who may download
(with range requests), `kill -9` while recording, and a bucket (moto's S3 server) as the store."""

import asyncio
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import numpy as np
import pytest
import requests
from livekit import rtc

from convene_server import Server, free_port, wait_for, wait_until
from media_helpers import call, connect, enter_and_join
from test_webhooks import Receiver

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
pytestmark = pytest.mark.skipif(
    not (FFMPEG and FFPROBE) and os.environ.get("CONVENE_SKIP_FFMPEG_TESTS") == "1",
    reason="ffmpeg is not installed (CONVENE_SKIP_FFMPEG_TESTS=1)",
)


def require_ffmpeg():
    assert FFMPEG and FFPROBE, "ffmpeg and ffprobe are needed (apt-get install ffmpeg; .ci/run installs them)"


async def publish_camera(room, width=320, height=240, level=170):
    """A bright camera (a grey field with a moving bar) at 30 fps; the task pumping it."""
    source = rtc.VideoSource(width, height)
    track = rtc.LocalVideoTrack.create_video_track("camera", source)
    await asyncio.wait_for(room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA)), timeout=15)

    async def pump():
        n = 0
        while True:
            pixels = np.full((height, width, 4), level, dtype=np.uint8)
            x = (n * 4) % width
            pixels[:, x : x + 16, :3] = 255
            pixels[:, :, 3] = 255
            source.capture_frame(rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, pixels.tobytes()))
            n += 1
            await asyncio.sleep(1 / 30)

    return asyncio.create_task(pump())


# How many 10 ms frames each tone task has handed to its source (the SDK's `capture_frame` returns
# once a frame is queued, so a task stuck in it stops counting).
TONE_FRAMES = {}


async def publish_tone(room, frequency):
    """A microphone playing a sine tone, 10 ms frames; the task pumping it (see `TONE_FRAMES`)."""
    rate = 48000
    source = rtc.AudioSource(rate, 1)
    track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
    await asyncio.wait_for(room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)), timeout=15)

    async def pump():
        n = 0
        samples = rate // 100
        while True:
            t = (np.arange(samples) + n * samples) / rate
            wave = (np.sin(2 * math.pi * frequency * t) * 12000).astype(np.int16)
            frame = rtc.AudioFrame.create(rate, 1, samples)
            np.copyto(np.frombuffer(frame.data, dtype=np.int16), wave)
            await source.capture_frame(frame)
            n += 1
            TONE_FRAMES[asyncio.current_task()] = n

    return asyncio.create_task(pump())


def probe(path):
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-show_entries", "format=duration:stream=codec_name,codec_type", "-of", "json", path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data = json.loads(out)
    return [s["codec_name"] for s in data["streams"]], float(data["format"].get("duration", "nan"))


def decode_errors(path):
    """What ffmpeg says decoding the whole file (empty: every frame decoded). A track is kept at
    the times its frames were captured (variable frame rate, as a camera over WebRTC sends), so
    the frames are passed on at their own times (`-fps_mode vfr`): at ffmpeg's default constant
    rate two frames closer than its guessed interval would collide in its null output."""
    command = [FFMPEG, "-v", "error", "-i", path, "-fps_mode", "vfr", "-f", "null", "-"]
    return subprocess.run(command, capture_output=True, text=True).stderr.strip()


def mean_volume(path):
    err = subprocess.run([FFMPEG, "-i", path, "-af", "volumedetect", "-f", "null", "-"], capture_output=True, text=True).stderr
    return float(re.search(r"mean_volume: (-?[\d.]+) dB", err).group(1))


def lit_regions(path, at, width=1280, height=720):
    """How many cells of the composite's 2x2 grid (and its centred last row) are not black at
    `at` seconds."""
    raw = subprocess.run(
        [FFMPEG, "-v", "error", "-ss", str(at), "-i", path, "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True,
        check=True,
    ).stdout
    frame = np.frombuffer(raw, dtype=np.uint8).reshape(height, width)
    hw, hh = width // 2, height // 2
    cells = [frame[:hh, :hw], frame[:hh, hw:], frame[hh:, :hw], frame[hh:, hw:], frame[hh:, hw // 2 : hw // 2 + hw]]
    return sum(1 for cell in cells[:4] if cell.mean() > 40)


def recording(server, mid, rid):
    r = server.admin("GET", f"/v1/meetings/{mid}/recordings/{rid}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_finished(server, mid, rid, timeout=90):
    return wait_until(
        lambda: (lambda r: r if r["state"] in ("ready", "failed") else None)(recording(server, mid, rid)),
        timeout,
        "the recording finished",
    )


def download(server, url, dest, **kwargs):
    r = requests.get(server.base + url, timeout=30, **kwargs)
    assert r.status_code == 200, r.text
    with open(dest, "wb") as f:
        f.write(r.content)
    return r


def published(server, mid):
    """How many tracks the meeting's log says were published."""
    r = server.admin("GET", f"/v1/meetings/{mid}/events", params={"after": 0, "limit": 1000})
    assert r.status_code == 200, r.text
    return sum(1 for e in r.json()["events"] if e["type"] == "media.track_published")


def event_types(server, mid):
    r = server.admin("GET", f"/v1/meetings/{mid}/events", params={"after": 0, "limit": 1000})
    assert r.status_code == 200, r.text
    return [e for e in r.json()["events"] if e["type"].startswith("recording.")]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_a_recorded_meeting_gives_playable_tracks_a_composite_and_an_index(receiver, tmp_path):
    require_ffmpeg()
    server = Server(extra_env={"CONVENE_WEBHOOK_URLS": receiver.url + "/hooks"})
    try:
        meeting = server.admin("POST", "/v1/meetings", json={"name": "Seminar", "policy": "open"}).json()
        mid = meeting["meeting_id"]
        other = server.admin("POST", "/v1/meetings", json={"name": "Elsewhere", "policy": "open"}).json()
        host_join = enter_and_join(server, meeting, "host", "host")
        amy_join = enter_and_join(server, meeting, "participant", "amy")
        other_host = enter_and_join(server, other, "host", "other-host")

        async def main():
            host = await connect(host_join)
            amy = await connect(amy_join)
            told = []
            # The Python SDK's form of livekit-client's RecordingStatusChanged: the room's info
            # changed, and `is_recording` says how.
            amy.on("room_updated", lambda: told.append(amy.is_recording) if not told or told[-1] != amy.is_recording else None)
            assert not amy.is_recording
            pumps = [await publish_camera(host, level=170), await publish_tone(host, 440)]
            pumps += [await publish_camera(amy, level=120), await publish_tone(amy, 660)]
            ben = None
            try:
                await wait_for(lambda: published(server, mid) >= 4, 15, "every track published")
                # A participant may not start a recording; the host may.
                r = requests.post(f"{server.base}/v1/meetings/{mid}/recordings", headers={"Authorization": "Bearer " + amy_join["access_token"]}, timeout=10)
                assert r.status_code == 403, r.text
                r = requests.post(f"{server.base}/v1/meetings/{mid}/recordings", headers={"Authorization": "Bearer " + host_join["access_token"]}, timeout=10)
                assert r.status_code == 201, r.text
                started = r.json()
                rid = started["recording_id"]
                assert started["state"] == "recording" and started["started_by"] == "host"
                # One at a time.
                again = server.admin("POST", f"/v1/meetings/{mid}/recordings")
                assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_state", again.text
                t0 = time.monotonic()
                tones_at_start = {task: TONE_FRAMES.get(task, 0) for task in pumps}
                await wait_for(lambda: told == [True], 5, "the SDK told the recording started")
                # Ben joins late; Amy is muted half-way.
                await asyncio.sleep(4 - (time.monotonic() - t0))
                ben_join = enter_and_join(server, meeting, "participant", "ben")
                ben = await connect(ben_join)
                pumps.append(await publish_camera(ben, level=200))
                await asyncio.sleep(6 - (time.monotonic() - t0))
                call(server, mid, host_join["access_token"], "/participants/amy/mute", {"track": "audio", "muted": True})
                await asyncio.sleep(8 - (time.monotonic() - t0))
                await ben.disconnect()
                ben = None
                call(server, mid, ben_join["access_token"], "/leave")
                await asyncio.sleep(10 - (time.monotonic() - t0))
                stopped = call(server, mid, host_join["access_token"], f"/recordings/{rid}/stop")
                assert stopped["state"] in ("processing", "ready", "failed"), stopped
                await wait_for(lambda: told == [True, False], 5, "the SDK told the recording stopped")
                # A pump that died left its track sending silence: say so rather than let the
                # file's volume report it (CI once found the host's audio file silent).
                dead = [t for t in pumps if t.done() and not t.cancelled() and t.exception() is not None]
                assert not dead, ("a publishing task died", [repr(t.exception()) for t in dead])
                # A tone task that stopped handing frames over leaves its track silent too: each
                # handed over at least half of the recording's ten seconds.
                handed = [TONE_FRAMES[t] - tones_at_start[t] for t in pumps if t in TONE_FRAMES]
                assert len(handed) == 2 and min(handed) >= 500, ("a tone stopped: 10 ms frames handed over while recording", handed)
                return rid
            finally:
                for task in pumps:
                    task.cancel()
                for room in (host, amy, ben):
                    if room is not None:
                        await room.disconnect()

        rid = asyncio.run(main())
        done = wait_finished(server, mid, rid)
        assert done["state"] == "ready", done
        duration = done["duration_ms"] / 1000
        assert 9.5 < duration < 11.5, duration
        files = {f["name"]: f for f in done["files"]}
        tracks = [f for f in done["files"] if f["kind"] in ("audio", "video")]
        by_person = {(f["identity"], f["kind"]) for f in tracks}
        assert {("host", "audio"), ("host", "video"), ("amy", "audio"), ("amy", "video"), ("ben", "video")} <= by_person, by_person
        volumes = {}
        for f in tracks:
            path = str(tmp_path / f["name"])
            download(server, f["url"], path, auth=(server.api_key, server.api_secret))
            codecs, seconds = probe(path)
            assert codecs == (["opus"] if f["kind"] == "audio" else ["vp8"]), (f, codecs)
            assert decode_errors(path) == "", f
            assert os.path.getsize(path) == f["bytes"]
            if f["identity"] == "host":
                # Published from before the start to after the stop: the whole recording, from
                # the track's first frame on (a video track opens at the keyframe the recorder
                # asks for at the start; on a loaded machine that takes a few hundred ms).
                start = f["start_ms"] / 1000
                assert start < 1.5, f
                assert abs(seconds - (duration - start)) < 0.5, (f, seconds, duration)
                assert abs(f["duration_ms"] / 1000 - (duration - start)) < 0.5, (f, duration)
            if f["identity"] == "ben":
                assert 2.5 < f["start_ms"] / 1000 < 5.5 and 2.0 < seconds < 5.0, (f, seconds)
            if f["kind"] == "audio":
                volumes[f["identity"]] = (mean_volume(path), f)
        # Every audio file measured first, so that a silent one says what the others held (CI
        # once found the host's file silent throughout, -91 dB, and the run did not show why).
        assert volumes["host"][0] > -40, ("the host's tone is in the file", volumes)
        composite = files["composite.mp4"]
        path = str(tmp_path / "composite.mp4")
        download(server, composite["url"], path, auth=(server.api_key, server.api_secret))
        codecs, seconds = probe(path)
        assert sorted(codecs) == ["aac", "h264"] and abs(seconds - duration) < 0.5, (codecs, seconds)
        assert decode_errors(path) == ""
        assert mean_volume(path) > -40
        # Both people on screen from start to end (Ben too while he was there).
        for at in (0.5, duration / 2, duration - 0.7):
            assert lit_regions(path, at) >= 2, at
        assert lit_regions(path, 5.5) >= 3

        # The index, from the event log.
        index = done["index"]
        present = {e["identity"] for e in index if e["change"] == "present"}
        assert {"host", "amy"} <= present
        joined = [e for e in index if e["identity"] == "ben" and e["change"] == "joined"]
        assert len(joined) == 1 and 3000 <= joined[0]["offset_ms"] <= 5500, joined
        muted = [e for e in index if e["identity"] == "amy" and e["change"] == "muted"]
        assert len(muted) == 1 and muted[0]["muted"] and 5000 <= muted[0]["offset_ms"] <= 7500, muted
        left = [e for e in index if e["identity"] == "ben" and e["change"] == "left"]
        assert len(left) == 1 and left[0]["offset_ms"] > joined[0]["offset_ms"], left

        # The log and the webhooks carry the same story.
        types = [e["type"] for e in event_types(server, mid)]
        assert types == ["recording.started", "recording.stopped", "recording.ready"], types
        ready = [e for e in event_types(server, mid) if e["type"] == "recording.ready"][0]["data"]
        assert ready["bytes"] == sum(f["bytes"] for f in done["files"]) and ready["duration_ms"] == done["duration_ms"]
        # Signed as LiveKit signs webhooks: `event` names it, `convene` holds the log's entry.
        wait_until(
            lambda: {"recording.started", "recording.stopped", "recording.ready"} <= {e["event"] for e in receiver.events("/hooks")},
            20,
            "the recording's webhooks",
        )
        hooked = [json.loads(body)["convene"] for _, _, body in receiver.at("/hooks")]
        assert [h["data"] for h in hooked if h["type"] == "recording.ready"] == [ready]

        # Listing, and who may download: admins and the meeting's hosts only.
        listed = server.admin("GET", f"/v1/meetings/{mid}/recordings").json()["recordings"]
        assert [r["recording_id"] for r in listed] == [rid]
        url = server.base + composite["url"]
        assert requests.get(url, timeout=10).status_code == 401
        r = requests.get(url, headers={"Authorization": "Bearer " + amy_join["access_token"]}, timeout=10)
        assert r.status_code == 403, r.text
        r = requests.get(url, headers={"Authorization": "Bearer " + other_host["access_token"]}, timeout=10)
        assert r.status_code in (401, 403), r.text
        r = requests.get(url, headers={"Authorization": "Bearer " + host_join["access_token"], "Range": "bytes=10-109"}, timeout=10)
        assert r.status_code == 206 and len(r.content) == 100, r.text
        assert r.headers["content-range"] == f"bytes 10-109/{composite['bytes']}"
        with open(path, "rb") as f:
            assert r.content == f.read()[10:110]
        r = requests.get(url, auth=(server.api_key, server.api_secret), headers={"Range": f"bytes={composite['bytes']}-"}, timeout=10)
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{composite['bytes']}", r.text
        bad = server.admin("GET", f"/v1/meetings/{mid}/recordings/{rid}/files/..%2F..%2Fconvene.db")
        assert bad.status_code == 404, bad.text
        assert server.admin("GET", f"/v1/meetings/{mid}/recordings/rec_nope").status_code == 400

        # Deleting: the files go too.
        assert requests.delete(f"{server.base}/v1/meetings/{mid}/recordings/{rid}", headers={"Authorization": "Bearer " + amy_join["access_token"]}, timeout=10).status_code == 403
        assert server.admin("DELETE", f"/v1/meetings/{mid}/recordings/{rid}").status_code == 204
        assert server.admin("GET", f"/v1/meetings/{mid}/recordings/{rid}").status_code == 404
        assert not os.path.exists(os.path.join(server.data_dir, "recordings", mid, rid))
    finally:
        server.stop()


def test_a_meeting_that_records_itself_and_a_recording_cut_by_kill_9(tmp_path):
    require_ffmpeg()
    data_dir = str(tmp_path / "data")
    server = Server(extra_env={"CONVENE_DATA_DIR": data_dir})
    try:
        meeting = server.admin("POST", "/v1/meetings", json={"name": "Always on", "policy": "open", "auto_record": True}).json()
        assert meeting["auto_record"] is True
        mid = meeting["meeting_id"]
        join = enter_and_join(server, meeting, "host", "host")  # the meeting goes live
        listed = server.admin("GET", f"/v1/meetings/{mid}/recordings").json()["recordings"]
        assert len(listed) == 1 and listed[0]["state"] == "recording" and listed[0]["started_by"] is None, listed
        rid = listed[0]["recording_id"]

        async def main():
            room = await connect(join)
            pumps = [await publish_camera(room), await publish_tone(room, 440)]
            try:
                await wait_until_size(os.path.join(data_dir, "recordings", mid, rid), 2)
                await asyncio.sleep(3)
            finally:
                server.process.send_signal(signal.SIGKILL)
                server.process.wait()
                for task in pumps:
                    task.cancel()
                await room.disconnect()

        asyncio.run(main())
    finally:
        server.log.close()
    again = Server(extra_env={"CONVENE_DATA_DIR": data_dir})
    try:
        done = wait_finished(again, mid, rid, timeout=30)
        assert done["state"] == "failed" and "server stopped" in done["error"], done
        assert done["stop_reason"] == "server_stopped"
        kinds = sorted(f["kind"] for f in done["files"])
        assert kinds == ["audio", "video"], done["files"]
        for f in done["files"]:
            path = str(tmp_path / f["name"])
            download(again, f["url"], path, auth=(again.api_key, again.api_secret))
            codecs, _ = probe(path)
            assert codecs == (["opus"] if f["kind"] == "audio" else ["vp8"])
            frames = subprocess.run(
                [FFPROBE, "-v", "error", "-count_packets", "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", path],
                capture_output=True,
                text=True,
            ).stdout.strip()
            assert int(frames) > 30, (f, frames)
        types = [e["type"] for e in event_types(again, mid)]
        assert types == ["recording.started", "recording.stopped", "recording.failed"], types
        assert "composite.mp4" not in {f["name"] for f in done["files"]}
    finally:
        again.stop()


async def wait_until_size(folder, count):
    """Until `folder` holds `count` non-empty files."""

    def enough():
        try:
            return sum(1 for name in os.listdir(folder) if os.path.getsize(os.path.join(folder, name)) > 0) >= count
        except FileNotFoundError:
            return False

    await wait_for(enough, 20, f"{count} files written in {folder}")


def start_moto():
    moto = shutil.which("moto_server") or os.path.join(os.path.dirname(os.__file__), "..", "..", "bin", "moto_server")
    venv_moto = os.path.join(os.path.dirname(os.path.abspath(os.sys.executable)), "moto_server")
    program = venv_moto if os.path.exists(venv_moto) else moto
    port = free_port()
    process = subprocess.Popen([program, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _answers(url), 20, "moto's S3 server")
    return process, url


def _answers(url):
    try:
        requests.get(url, timeout=1)
        return True
    except requests.ConnectionError:
        return False


def test_recordings_kept_in_an_s3_bucket():
    require_ffmpeg()
    import boto3

    moto, endpoint = start_moto()
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    s3.create_bucket(Bucket="meetings")
    env = {
        "CONVENE_RECORDING_URL": "s3://meetings/convene",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
    }
    server = Server(extra_env=env)
    try:
        meeting = server.admin("POST", "/v1/meetings", json={"name": "Bucket", "policy": "open"}).json()
        mid = meeting["meeting_id"]
        join = enter_and_join(server, meeting, "host", "host")

        async def main():
            room = await connect(join)
            pumps = [await publish_camera(room), await publish_tone(room, 440)]
            try:
                await wait_for(lambda: published(server, mid) >= 2, 15, "both tracks published")
                rid = server.admin("POST", f"/v1/meetings/{mid}/recordings").json()["recording_id"]
                await asyncio.sleep(4)
                r = server.admin("POST", f"/v1/meetings/{mid}/recordings/{rid}/stop")
                assert r.status_code == 200, r.text
                return rid
            finally:
                for task in pumps:
                    task.cancel()
                await room.disconnect()

        rid = asyncio.run(main())
        done = wait_finished(server, mid, rid)
        assert done["state"] == "ready", done
        names = sorted(f["name"] for f in done["files"])
        stored = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket="meetings", Prefix=f"convene/{mid}/{rid}/")["Contents"]}
        assert sorted(k.rsplit("/", 1)[1] for k in stored) == names
        for f in done["files"]:
            assert stored[f"convene/{mid}/{rid}/{f['name']}"] == f["bytes"]
        # Served from the bucket, whole and in part.
        composite = next(f for f in done["files"] if f["name"] == "composite.mp4")
        body = s3.get_object(Bucket="meetings", Key=f"convene/{mid}/{rid}/composite.mp4")["Body"].read()
        r = requests.get(server.base + composite["url"], auth=(server.api_key, server.api_secret), timeout=30)
        assert r.status_code == 200 and r.content == body
        r = requests.get(server.base + composite["url"], auth=(server.api_key, server.api_secret), headers={"Range": "bytes=-64"}, timeout=30)
        assert r.status_code == 206 and r.content == body[-64:]
        # Nothing is left on the node once it is in the bucket.
        folder = os.path.join(server.data_dir, "recordings", mid, rid)
        assert not os.path.exists(folder) or os.listdir(folder) == [], os.listdir(folder)
        assert server.admin("DELETE", f"/v1/meetings/{mid}/recordings/{rid}").status_code == 204
        assert "Contents" not in s3.list_objects_v2(Bucket="meetings", Prefix=f"convene/{mid}/{rid}/")
    finally:
        server.stop()
        moto.terminate()
        moto.wait(timeout=10)
