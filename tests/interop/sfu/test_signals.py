"""Active speakers and connection quality with the official Python SDK (issue 20, items 3 and 4):
the SDK's `active_speakers_changed` names who is loud, not who is silent, and empties when the
loud one stops; `connection_quality_changed` fires, and goes down on a lossy link (nftables drops
5% of the UDP datagrams to the SFU on loopback)."""

import asyncio
import shutil
import subprocess
import uuid

import numpy as np
import pytest
from livekit import rtc

from sfu_helpers import connect, wait_for

RATE = 48000
SAMPLES = 480  # 10 ms


async def _publish_audio(client: rtc.Room, loud: bool):
    """Publish a microphone track: a 440 Hz sine at about -15 dBov, or digital silence."""
    source = rtc.AudioSource(RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
    await client.local_participant.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))

    async def pump():
        t = np.arange(SAMPLES, dtype=np.float32)
        n = 0
        while True:
            if loud:
                samples = (np.sin(2 * np.pi * 440 * (t + n * SAMPLES) / RATE) * 8000).astype(np.int16)
            else:
                samples = np.zeros(SAMPLES, dtype=np.int16)
            await source.capture_frame(rtc.AudioFrame(samples.tobytes(), RATE, 1, SAMPLES))
            n += 1

    return asyncio.create_task(pump())


def test_active_speakers_name_the_loud_one_then_empty(sfu, room_name):
    async def main():
        loud = await connect(sfu, "loud", room_name)
        quiet = await connect(sfu, "quiet", room_name)
        listener = await connect(sfu, "listener", room_name)
        seen: list[list[str]] = []

        @listener.on("active_speakers_changed")
        def on_speakers(speakers):
            seen.append(sorted(p.identity for p in speakers))

        pumps = [await _publish_audio(loud, True), await _publish_audio(quiet, False)]
        try:
            await wait_for(lambda: seen and seen[-1] == ["loud"], 20, f"the loud one speaking: {seen}")
            # Let a few more windows pass: the silent one never speaks.
            await asyncio.sleep(2)
            assert all("quiet" not in names for names in seen), seen
            assert seen[-1] == ["loud"], seen

            # The loud one stops sending: the list empties within a few windows.
            pumps[0].cancel()
            await loud.local_participant.unpublish_track(
                next(iter(loud.local_participant.track_publications.values())).sid
            )
            await wait_for(lambda: seen[-1] == [], 10, f"the list to empty: {seen}")
        finally:
            for pump in pumps:
                pump.cancel()
            for client in (loud, quiet, listener):
                await client.disconnect()

    asyncio.run(main())


NFT = shutil.which("nft")


def _nft(*args):
    subprocess.run([NFT, *args], check=True, capture_output=True, text=True)


def test_connection_quality_fires_and_drops_on_a_lossy_link(sfu, room_name):
    if NFT is None:
        pytest.fail("nftables is needed to make a lossy link: `apt-get install -y nftables` (.ci/run installs it)")
    ports = sorted({int(addr.rsplit(":", 1)[1]) for addr in sfu.udp})
    table = f"convene_loss_{uuid.uuid4().hex[:8]}"

    async def main():
        speaker = await connect(sfu, "speaker", room_name)
        listener = await connect(sfu, "listener", room_name)
        heard: dict[str, list] = {}

        @listener.on("connection_quality_changed")
        def on_quality(participant, quality):
            heard.setdefault(participant.identity, []).append(quality)

        pump = await _publish_audio(speaker, True)
        try:
            # Clean loopback: the speaker is rated, excellent.
            await wait_for(lambda: heard.get("speaker"), 15, f"a quality for the speaker: {heard}")
            assert heard["speaker"][-1] == rtc.ConnectionQuality.QUALITY_EXCELLENT, heard
            # Each participant is told its own quality too.
            await wait_for(lambda: heard.get("listener"), 10, f"the listener's own quality: {heard}")

            # Drop 5% of the datagrams to the SFU: the speaker's rating goes down.
            _nft("add", "table", "inet", table)
            _nft("add", "chain", "inet", table, "input", "{ type filter hook input priority 0 ; }")
            for port in ports:
                _nft("add", "rule", "inet", table, "input", "iif", "lo", "udp", "dport", str(port),
                     "numgen", "random", "mod", "100", "<", "5", "drop")
            await wait_for(
                lambda: heard["speaker"][-1] in (rtc.ConnectionQuality.QUALITY_GOOD, rtc.ConnectionQuality.QUALITY_POOR),
                30,
                f"the speaker's quality to go down: {heard}",
            )
        finally:
            subprocess.run([NFT, "delete", "table", "inet", table], capture_output=True)
            pump.cancel()
            await speaker.disconnect()
            await listener.disconnect()

    asyncio.run(main())
