"""ICE over TCP with the official Python SDK (issue 20, items 1 and 6): with the SFU's UDP port
dropped by an nftables rule on loopback, a publisher and a subscriber exchange video over the SFU's
TCP port, with nothing configured on their side; hostile TCP connections (garbage, an oversized
length, one that only waits, more than the cap) are closed while a real client still gets media."""

import asyncio
import contextlib
import select
import shutil
import socket
import struct
import subprocess
import time
import uuid

import pytest
from livekit import rtc

from sfu_helpers import connect, count_video_frames, publish_video, wait_for

NFT = shutil.which("nft")


def _nft(*args):
    subprocess.run([NFT, *args], check=True, capture_output=True, text=True)


@contextlib.contextmanager
def udp_dropped(ports):
    """Drops every UDP datagram to `ports` on loopback, in a table of its own, removed after."""
    if NFT is None:
        pytest.fail("nftables is needed to block UDP: `apt-get install -y nftables` (.ci/run installs it)")
    table = f"convene_tcp_{uuid.uuid4().hex[:8]}"
    _nft("add", "table", "inet", table)
    try:
        _nft("add", "chain", "inet", table, "input", "{ type filter hook input priority 0 ; }")
        for port in ports:
            _nft("add", "rule", "inet", table, "input", "iif", "lo", "udp", "dport", str(port), "counter", "drop")
        yield table
    finally:
        subprocess.run([NFT, "delete", "table", "inet", table], capture_output=True)


def _dropped_packets(table) -> int:
    listing = subprocess.run([NFT, "list", "table", "inet", table], check=True, capture_output=True, text=True).stdout
    return sum(int(word) for line in listing.splitlines() if "counter packets" in line
               for word in [line.split("counter packets")[1].split()[0]])


def _ports(addrs):
    return sorted({int(addr.rsplit(":", 1)[1]) for addr in addrs})


async def _selected_protocols(client: rtc.Room) -> set[str]:
    """The transport protocol of every selected (nominated, succeeded) candidate pair of the client's
    two peer connections, from libwebrtc's own stats."""
    stats = await client.get_rtc_stats()
    protocols = set()
    for report in (stats.publisher_stats, stats.subscriber_stats):
        local = {s.local_candidate.rtc.id: s.local_candidate.candidate.protocol
                 for s in report if s.WhichOneof("stats") == "local_candidate"}
        for s in report:
            if s.WhichOneof("stats") == "candidate_pair":
                pair = s.candidate_pair.candidate_pair
                if pair.nominated and pair.bytes_received > 0:
                    protocols.add(local.get(pair.local_candidate_id, "?"))
    return protocols


async def _exchange_video(sfu, room_name, frames_wanted=30):
    """A publisher and a subscriber meet; returns once the subscriber decoded `frames_wanted` video
    frames, with the protocols of both clients' selected candidate pairs."""
    publisher = await connect(sfu, f"pub-{uuid.uuid4().hex[:4]}", room_name)
    subscriber = await connect(sfu, f"sub-{uuid.uuid4().hex[:4]}", room_name)
    frames, readers = count_video_frames(subscriber)
    pump = await publish_video(publisher)
    try:
        await wait_for(lambda: frames["video"] >= frames_wanted, 30, f"decoded video frames {frames}")
        return await _selected_protocols(publisher) | await _selected_protocols(subscriber)
    finally:
        pump.cancel()
        for reader in readers:
            reader.cancel()
        await publisher.disconnect()
        await subscriber.disconnect()


def test_video_flows_over_tcp_when_udp_is_dropped(sfu, room_name):
    assert sfu.tcp and all(addr.rsplit(":", 1)[1] != "0" for addr in sfu.tcp), sfu.tcp

    async def main():
        with udp_dropped(_ports(sfu.udp)) as table:
            protocols = await _exchange_video(sfu, room_name)
            # The clients tried UDP first (their checks were dropped), then TCP carried everything.
            assert _dropped_packets(table) > 0
        assert protocols == {"tcp"}, protocols

    asyncio.run(main())


def _tcp_addrs(sfu):
    return [(addr.rsplit(":", 1)[0].strip("[]"), int(addr.rsplit(":", 1)[1])) for addr in sfu.tcp]


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes `sock` (EOF or reset) within `within` seconds; reads what comes."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def _closed_within(socks, window: float) -> set:
    """The sockets the server closes within `window` seconds (all of them watched at once)."""
    closed = set()
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        open_now = [s for s in socks if s not in closed]
        readable, _, _ = select.select(open_now, [], [], max(0.0, deadline - time.monotonic()))
        for sock in readable:
            try:
                if sock.recv(65536) == b"":
                    closed.add(sock)
            except OSError:
                closed.add(sock)
    return closed


def _binding_request() -> bytes:
    # A well-formed STUN binding request whose username no peer knows: passes the first-frame
    # check, is never accepted by str0m.
    return struct.pack("!HHI12s", 0x0001, 0, 0x2112A442, uuid.uuid4().bytes[:12])


def _framed(packet: bytes) -> bytes:
    return struct.pack("!H", len(packet)) + packet


def test_hostile_tcp_connections_are_closed_and_others_keep_their_media(sfu, room_name):
    host, port = _tcp_addrs(sfu)[0]

    def open_connection():
        return socket.create_connection((host, port), timeout=5)

    async def main():
        # A real meeting over TCP runs while the attacks go on.
        with udp_dropped(_ports(sfu.udp)):
            exchange = asyncio.ensure_future(_exchange_video(sfu, room_name, frames_wanted=60))

            def attacks():
                # Garbage: a first frame that is no STUN binding request.
                with open_connection() as garbage:
                    garbage.sendall(_framed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
                    assert _closed_by_server(garbage, 5), "garbage first frame"
                # A good first frame, then a frame that is no STUN, DTLS, RTP or RTCP.
                with open_connection() as later_garbage:
                    later_garbage.sendall(_framed(_binding_request()) + _framed(b"\x47" * 40))
                    assert _closed_by_server(later_garbage, 5), "garbage after a binding request"
                # An oversized length: refused from the two length bytes alone.
                with open_connection() as oversized:
                    oversized.sendall(struct.pack("!H", 65535) + b"\x00" * 100)
                    assert _closed_by_server(oversized, 5), "oversized frame"
                # A zero-length frame.
                with open_connection() as empty:
                    empty.sendall(b"\x00\x00")
                    assert _closed_by_server(empty, 5), "empty frame"
                # Opens and waits (a STUN request nobody accepts, so ICE never completes): closed
                # at the ICE deadline (10 s).
                started = time.monotonic()
                with open_connection() as waiting, open_connection() as silent:
                    waiting.sendall(_framed(_binding_request()))
                    assert _closed_by_server(waiting, 15), "a connection that never completes ICE"
                    assert _closed_by_server(silent, 2), "a connection that sends nothing"
                assert time.monotonic() - started >= 9, "closed at the deadline, not before"
                # Over the per-address cap (32 unauthenticated connections): of 36 opened at
                # once, whatever order the server accepts them in, exactly 4 are closed at accept
                # and the rest stay open.
                held = [open_connection() for _ in range(36)]
                try:
                    closed = _closed_within(held, 4)
                    assert len(closed) == 4, f"{len(closed)} of 36 closed"
                finally:
                    for sock in held:
                        sock.close()

            await asyncio.get_running_loop().run_in_executor(None, attacks)
            protocols = await asyncio.wait_for(exchange, 60)
        assert protocols == {"tcp"}, protocols
        assert sfu.alive()

    asyncio.run(main())
