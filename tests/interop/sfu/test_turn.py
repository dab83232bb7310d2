"""TURN through Debian's coturn: the SFU hands out coturn's servers in the JoinResponse with credentials in the
use-auth-secret scheme; coturn takes them and refuses expired ones; a client forced to relay (the official
Python SDK) receives video through coturn, and one given expired credentials does not connect."""

import asyncio
import base64
import hashlib
import hmac
import time

import pytest
import websockets
from livekit import rtc
from livekit.protocol import rtc as signal
from livekit.rtc._proto.stats_pb2 import IceCandidateType  # not re-exported by livekit.rtc

from coturn import Coturn, rest_credential, turn_allocate
from sfu_helpers import count_video_frames, publish_video, start_dev, stop_dev, wait_for

SECRET = "coturn-shared-secret-for-interop-0123"
TTL = 3600


@pytest.fixture(scope="module")
def coturn(tmp_path_factory):
    server = Coturn(tmp_path_factory.mktemp("coturn"), SECRET)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def turn_sfu(coturn):
    server = start_dev(
        {
            "CONVENE_TURN_URLS": f"{coturn.url('udp')},{coturn.url('tcp')}",
            "CONVENE_TURN_SECRET": SECRET,
            "CONVENE_TURN_TTL_SECONDS": str(TTL),
        }
    )
    yield server
    stop_dev(server)


def relay_only(ice_servers=()) -> rtc.RoomOptions:
    """Room options that let the SDK use relay candidates only (an empty `ice_servers` takes the server's)."""
    return rtc.RoomOptions(
        auto_subscribe=True,
        rtc_config=rtc.RtcConfiguration(
            ice_transport_type=rtc.IceTransportType.TRANSPORT_RELAY,
            continual_gathering_policy=rtc.ContinualGatheringPolicy.GATHER_CONTINUALLY,
            ice_servers=list(ice_servers),
        ),
    )


async def _join_response(sfu, identity, room) -> signal.JoinResponse:
    async with websockets.connect(f"{sfu.ws_url}/rtc?access_token={sfu.token(identity, room)}") as ws:
        first = await asyncio.wait_for(ws.recv(), timeout=5)
    response = signal.SignalResponse.FromString(first)
    assert response.WhichOneof("message") == "join", response
    return response.join


def test_the_join_response_carries_coturn_credentials_that_coturn_takes_until_they_expire(turn_sfu, coturn, room_name):
    before = int(time.time())
    join = asyncio.run(_join_response(turn_sfu, "carol", room_name))
    after = int(time.time())

    assert len(join.ice_servers) == 1
    server = join.ice_servers[0]
    assert list(server.urls) == [coturn.url("udp"), coturn.url("tcp")]
    expiry, identity = server.username.split(":", 1)
    assert identity == "carol"
    assert before + TTL <= int(expiry) <= after + TTL
    # The password is coturn's rule over the username, computed here independently.
    expected = base64.b64encode(hmac.new(SECRET.encode(), server.username.encode(), hashlib.sha1).digest()).decode()
    assert server.credential == expected

    # coturn grants a relay with the credential convene issued...
    assert turn_allocate(coturn.address, server.username, server.credential) == 200
    # ...and refuses the same rule's credential once its expiry has passed, as it refuses a wrong password.
    expired = rest_credential(SECRET, "carol", int(time.time()) - 1)
    assert turn_allocate(coturn.address, *expired) == 401
    wrong = (server.username, rest_credential("another-secret-0123456789", "carol", int(expiry))[1])
    assert turn_allocate(coturn.address, *wrong) == 401
    log = coturn.log()
    assert f"user <{server.username}>: incoming packet ALLOCATE processed, success" in log
    assert f"user <{expired[0]}>: incoming packet message processed, error 401" in log


def _relayed_bytes(stats: list) -> int:
    """Bytes received on the selected candidate pairs whose local candidate is a TURN relay; fails if any
    local candidate is not a relay (the client was told to use relays only)."""
    local = {}
    for s in stats:
        if s.WhichOneof("stats") == "local_candidate":
            local[s.local_candidate.rtc.id] = s.local_candidate.candidate
    assert local, "the SDK reported no local candidates"
    assert all(c.candidate_type == IceCandidateType.RELAY for c in local.values()), local
    total = 0
    for s in stats:
        if s.WhichOneof("stats") == "candidate_pair":
            pair = s.candidate_pair.candidate_pair
            if pair.nominated and pair.local_candidate_id in local:
                total += pair.bytes_received
    return total


def test_a_relay_only_subscriber_receives_video_through_coturn(turn_sfu, coturn, room_name):
    async def main():
        publisher = rtc.Room()
        await asyncio.wait_for(
            publisher.connect(turn_sfu.ws_url, turn_sfu.token("pub", room_name), rtc.RoomOptions()), timeout=20
        )
        subscriber = rtc.Room()
        await asyncio.wait_for(
            subscriber.connect(turn_sfu.ws_url, turn_sfu.token("relayed-sub", room_name), relay_only()), timeout=30
        )
        frames, readers = count_video_frames(subscriber)
        pump = await publish_video(publisher)
        try:
            await wait_for(lambda: frames["video"] >= 30, 20, f"relayed video frames {frames}")
            stats = (await subscriber.get_rtc_stats()).subscriber_stats
            relayed = _relayed_bytes(stats)
            video = [
                s.inbound_rtp.inbound
                for s in stats
                if s.WhichOneof("stats") == "inbound_rtp" and s.inbound_rtp.stream.kind == "video"
            ]
            assert video and video[0].frames_decoded > 0 and video[0].bytes_received > 0, video
            # Every video byte the subscriber decoded came over the relayed candidate pair (whose count
            # also holds the RTP headers, SRTP and RTCP).
            assert relayed >= sum(v.bytes_received for v in video), (relayed, video)
        finally:
            pump.cancel()
            for reader in readers:
                reader.cancel()
            await publisher.disconnect()
            await subscriber.disconnect()

    asyncio.run(main())
    # coturn allocated the relays with the credentials convene issued to this identity.
    log = coturn.log()
    assert ":relayed-sub>: incoming packet ALLOCATE processed, success" in log, log[-3000:]


def test_a_relay_only_client_with_expired_credentials_does_not_connect(turn_sfu, coturn, room_name):
    username, password = rest_credential(SECRET, "late", int(time.time()) - 60)
    expired = rtc.IceServer(urls=[coturn.url("udp")], username=username, password=password)

    async def main():
        client = rtc.Room()
        # The SDK gives up by itself (three attempts, about a minute): its own verdict, not a timeout of ours.
        with pytest.raises(rtc.ConnectError):
            await asyncio.wait_for(
                client.connect(turn_sfu.ws_url, turn_sfu.token("late", room_name), relay_only([expired])), timeout=120
            )
        assert client.connection_state != rtc.ConnectionState.CONN_CONNECTED
        await client.disconnect()

    asyncio.run(main())
    assert f"user <{username}>: incoming packet message processed, error 401" in coturn.log()
