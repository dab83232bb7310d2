"""Hostile input: bad tokens, garbage and oversized signalling frames, random UDP. The server and other peers go on."""

import asyncio
import os
import socket

import pytest
import requests
import websockets
import websockets.exceptions
from livekit import api, rtc

from sfu_helpers import API_KEY, connect, wait_for


def test_validate_and_bad_tokens_are_refused_before_upgrade(sfu, room_name):
    good = sfu.token("v", room_name)
    assert requests.get(f"{sfu.http_url}/rtc/validate", params={"access_token": good}, timeout=5).status_code == 200
    assert requests.get(f"{sfu.http_url}/rtc/validate", headers={"Authorization": f"Bearer {good}"}, timeout=5).status_code == 200
    wrong = api.AccessToken(API_KEY, "another-secret-another-secret-another").with_identity("x").with_grants(
        api.VideoGrants(room_join=True, room=room_name)).to_jwt()
    assert requests.get(f"{sfu.http_url}/rtc/validate", params={"access_token": wrong}, timeout=5).status_code == 401
    assert requests.get(f"{sfu.http_url}/rtc/validate", timeout=5).status_code == 401
    v1 = requests.get(f"{sfu.http_url}/rtc/v1", timeout=5)
    assert v1.status_code == 404 and v1.headers.get("access-control-allow-origin") == "*"

    async def main():
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.connect(f"{sfu.ws_url}/rtc?access_token={wrong}"):
                pass
        assert refused.value.response.status_code == 401
        expired = api.AccessToken(API_KEY, "devsecret-for-interop-tests-0123456789abcdef").with_identity("x").with_grants(
            api.VideoGrants(room_join=True, room=room_name)).with_ttl(__import__("datetime").timedelta(seconds=-600)).to_jwt()
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.connect(f"{sfu.ws_url}/rtc?access_token={expired}"):
                pass
        assert refused.value.response.status_code == 401

    asyncio.run(main())


def test_garbage_oversized_frames_and_random_udp_do_not_disturb_others(sfu, room_name):
    async def main():
        alice = await connect(sfu, "alice", room_name)
        bob = await connect(sfu, "bob", room_name)
        await wait_for(lambda: "bob" in alice.remote_participants, 10, "alice sees bob")

        # A raw client sends garbage protobuf, then an oversized frame.
        token = sfu.token("mallory", room_name)
        async with websockets.connect(f"{sfu.ws_url}/rtc?access_token={token}", max_size=None) as ws:
            first = await asyncio.wait_for(ws.recv(), timeout=5)
            assert isinstance(first, bytes) and len(first) > 0
            for _ in range(20):
                await ws.send(os.urandom(200))
            await ws.send(b"\xff" * 64)
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                await ws.send(b"\x00" * (2 * 1024 * 1024))
                while True:
                    await asyncio.wait_for(ws.recv(), timeout=5)

        # Random datagrams at every media address.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for addr in sfu.udp:
                host, port = addr.rsplit(":", 1)
                for i in range(300):
                    payload = os.urandom(1 + i % 1200)
                    if i % 3 == 0:
                        payload = bytes([0x80 | (i & 0x3F), 96]) + payload  # RTP-looking
                    elif i % 3 == 1:
                        payload = bytes([22, 254, 253]) + payload  # DTLS-looking
                    udp.sendto(payload, (host, int(port)))

        # Everyone else is fine: data still flows and the server still answers.
        inbox = []
        bob.on("data_received", lambda p: inbox.append(p.data))
        await alice.local_participant.publish_data(b"still here", reliable=True)
        await wait_for(lambda: b"still here" in inbox, 10, "data after the attack")
        assert sfu.alive()
        assert alice.connection_state == rtc.ConnectionState.CONN_CONNECTED
        assert requests.get(f"{sfu.http_url}/rtc/validate", params={"access_token": sfu.token("z", room_name)}, timeout=5).status_code == 200
        await alice.disconnect()
        await bob.disconnect()

    asyncio.run(main())


def test_reconnect_is_answered_with_leave_reconnect(sfu, room_name):
    from livekit.protocol.rtc import SignalResponse

    async def main():
        token = sfu.token("re", room_name)
        async with websockets.connect(f"{sfu.ws_url}/rtc?access_token={token}&reconnect=1&sid=PA_x") as ws:
            frame = await asyncio.wait_for(ws.recv(), timeout=5)
        response = SignalResponse()
        response.ParseFromString(frame)
        assert response.WhichOneof("message") == "leave"
        assert response.leave.action == 2  # RECONNECT

    asyncio.run(main())


def test_a_connect_loop_is_refused_and_the_official_client_says_why(sfu, room_name):
    """An identity's connects beyond its budget (10 at once) are refused before the upgrade with
    429; LiveKit's client asks /rtc/validate why and reports the server's message."""

    async def main():
        token = sfu.token("looper", room_name)
        for _ in range(10):
            async with websockets.connect(f"{sfu.ws_url}/rtc?access_token={token}") as ws:
                await asyncio.wait_for(ws.recv(), timeout=5)
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.connect(f"{sfu.ws_url}/rtc?access_token={token}"):
                pass
        assert refused.value.response.status_code == 429
        assert 1 <= int(refused.value.response.headers["Retry-After"]) <= 6
        validate = requests.get(f"{sfu.http_url}/rtc/validate", params={"access_token": token}, timeout=5)
        assert validate.status_code == 429 and validate.text.startswith("too many connections for this identity"), validate.text

        client = rtc.Room()
        with pytest.raises(rtc.ConnectError) as error:
            await asyncio.wait_for(client.connect(sfu.ws_url, token), timeout=20)
        assert "429" in str(error.value) and "too many connections for this identity in this room" in str(error.value)

        # Another identity in the room is not affected.
        other = await connect(sfu, "other", room_name)
        assert other.connection_state == rtc.ConnectionState.CONN_CONNECTED
        await other.disconnect()

    asyncio.run(main())
