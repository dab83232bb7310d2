"""Seeds 004 (mesibo conferencing backend) and 002 (LiveKit room-join function) against the real
`convene` binary.

The one-time login codes travel over real SMTP: each test starts an `aiosmtpd` server on
loopback, points `CONVENE_SMTP_URL` at it, and reads the code out of the received message.
Tokens are checked with the official LiveKit `TokenVerifier`: seed 004's grant `canPublish` for
`pin` and not for `spin`; seed 002's name `room` = `roomName` and identity = `uid`."""

import email
import email.policy
import os
import re
import sys
import threading
import time

import pytest
import requests
from aiosmtpd.controller import Controller
from livekit import api

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from convene_server import API_KEY, API_SECRET, Server, free_port  # noqa: E402

MESIBO = "/compat/mesibo/api"
JOIN = "/compat/livekit-join/"
SENDER = "convene <noreply@example.com>"


class Inbox:
    """An aiosmtpd handler that keeps every message it receives."""

    def __init__(self):
        self.messages = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), envelope.mail_from, message))
        return "250 Message accepted for delivery"

    def count(self):
        with self.lock:
            return len(self.messages)

    def code_for(self, address):
        """The code in the last message to `address` (its body, which the subject repeats)."""
        with self.lock:
            for rcpt_tos, _, message in reversed(self.messages):
                if address in rcpt_tos:
                    body = message.get_body(preferencelist=("plain",)).get_content()
                    found = re.search(r"\b(\d{6})\b", body)
                    assert found, body
                    assert found.group(1) in message["Subject"]
                    return found.group(1)
        raise AssertionError(f"no mail to {address}")


@pytest.fixture
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


@pytest.fixture
def server(smtp):
    controller, _ = smtp
    server = Server(extra_env={
        "CONVENE_SMTP_URL": f"smtp://127.0.0.1:{controller.port}",
        "CONVENE_SMTP_FROM": SENDER,
        "MEETING_ID_DIGITS": "9",
    })
    yield server
    server.stop()


@pytest.fixture
def inbox(smtp):
    return smtp[1]


def mesibo(server, params, via="query"):
    if via == "query":
        return requests.get(server.base + MESIBO, params=params, timeout=10)
    return requests.post(server.base + MESIBO, data=params, timeout=10)


def fail(reply, op, error):
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["result"] == "FAIL" and body["error"] == error and body["op"] == op, body
    assert isinstance(body["ts"], int) and body["message"]
    return body


def login(server, inbox, address, name, via="query"):
    params = {"op": "login", "appid": "com.example.conf", "name": name, "email": address}
    sent = mesibo(server, params, via)
    assert sent.status_code == 200, sent.text
    sent = sent.json()
    assert sent == {"op": "login", "ts": sent["ts"], "result": "OK"}
    assert abs(sent["ts"] - time.time()) < 60
    code = inbox.code_for(address.lower())
    ok = mesibo(server, {**params, "code": code}, via).json()
    assert set(ok) == {"op", "ts", "token", "uid", "name", "result"}, ok
    assert ok["op"] == "login" and ok["result"] == "OK" and ok["name"] == name
    assert isinstance(ok["uid"], int)
    return ok["token"], ok["uid"], code


def verify(token, key=API_KEY, secret=API_SECRET):
    return api.TokenVerifier(key, secret).verify(token)


# ----- seed 004 ----------------------------------------------------------------------------------

def test_no_or_unknown_op_is_noop(server):
    for reply in [
        requests.get(server.base + MESIBO, timeout=10),
        requests.get(server.base + MESIBO, params={"op": "nonsense"}, timeout=10),
        requests.post(server.base + MESIBO, data={"name": "x"}, timeout=10),
    ]:
        assert reply.status_code == 200
        assert reply.json() == {"code": "NOOP", "result": "FAIL"}


@pytest.mark.parametrize("via", ["query", "form"])
def test_login_mails_a_code_that_works_once(server, inbox, via):
    token, uid, code = login(server, inbox, "ann@example.com", "Ann Lee", via)
    rcpt_tos, mail_from, message = inbox.messages[-1]
    assert rcpt_tos == ["ann@example.com"] and mail_from == "noreply@example.com"
    assert "Ann Lee" in message["To"]
    # With SMTP configured, the code never reaches the server's log.
    assert code not in open(server.log.name).read()
    reused = mesibo(server, {"op": "login", "appid": "a", "name": "Ann Lee", "email": "ann@example.com", "code": code}, via)
    assert "used" in fail(reused, "login", "BADCODE")["message"]
    # Signing in again is the same user.
    _, again, _ = login(server, inbox, "ANN@example.com", "Ann Lee", via)
    assert again == uid
    assert token


def test_login_refuses_missing_parameters_wrong_codes_and_five_tries(server, inbox):
    base = {"op": "login", "appid": "a", "name": "Bo", "email": "bo@example.com"}
    for missing, error in [("email", "MISSINGEMAIL"), ("appid", "MISSINGAPPID"), ("name", "MISSINGNAME")]:
        fail(mesibo(server, {k: v for k, v in base.items() if k != missing}), "login", error)
    fail(mesibo(server, {**base, "email": "not-an-address"}), "login", "BADEMAIL")
    assert inbox.count() == 0
    fail(mesibo(server, {**base, "code": "123456"}), "login", "BADCODE")

    assert mesibo(server, base).json()["result"] == "OK"
    code = inbox.code_for("bo@example.com")
    wrong = f"{(int(code) + 1) % 1000000:06d}"
    for left in [4, 3, 2, 1]:
        assert f"{left} tries left" in fail(mesibo(server, {**base, "code": wrong}, "form"), "login", "BADCODE")["message"]
    assert "last try" in fail(mesibo(server, {**base, "code": wrong}), "login", "BADCODE")["message"]
    assert "too many" in fail(mesibo(server, {**base, "code": code}), "login", "BADCODE")["message"]
    # A new code works; the old one stays dead.
    token, _, new_code = login(server, inbox, "bo@example.com", "Bo")
    assert token


def test_sends_are_capped_per_address(server, inbox):
    params = {"op": "login", "appid": "a", "name": "Cy", "email": "cy@example.com"}
    for _ in range(5):
        assert mesibo(server, params).json()["result"] == "OK"
    assert "to this address" in fail(mesibo(server, params), "login", "RATELIMITED")["message"]
    assert inbox.count() == 5


def test_sends_are_capped_per_client(server, inbox):
    for n in range(20):
        reply = mesibo(server, {"op": "login", "appid": "a", "name": "U", "email": f"u{n}@example.com"})
        assert reply.json()["result"] == "OK", reply.text
    blocked = mesibo(server, {"op": "login", "appid": "a", "name": "U", "email": "late@example.com"})
    assert "from this client" in fail(blocked, "login", "RATELIMITED")["message"]
    assert inbox.count() == 20


@pytest.mark.parametrize("via", ["query", "form"])
def test_setgroup_and_joingroup_replay_the_documented_exchange(server, inbox, via):
    owner_token, owner_uid, _ = login(server, inbox, "host@example.com", "Host")
    guest_token, guest_uid, _ = login(server, inbox, "guest@example.com", "Guest")

    created = mesibo(server, {"token": owner_token, "op": "setgroup", "name": "newroom", "resolution": "0"}, via)
    assert created.status_code == 200
    group = created.json()
    assert set(group) == {"op", "ts", "gid", "name", "type", "resolution", "publish", "pin", "spin", "result"}, group
    assert group["op"] == "setgroup" and group["result"] == "OK"
    assert isinstance(group["ts"], int) and isinstance(group["gid"], int)
    assert group["name"] == "newroom" and group["type"] == 0 and group["resolution"] == "0" and group["publish"] == 1
    assert isinstance(group["pin"], str) and isinstance(group["spin"], str) and group["pin"] != group["spin"]

    joined = mesibo(server, {"token": guest_token, "op": "joingroup", "gid": group["gid"], "pin": group["pin"]}, via).json()
    assert joined["result"] == "OK" and joined["op"] == "joingroup" and joined["publish"] == 1, joined
    assert joined["gid"] == group["gid"] and joined["name"] == "newroom"
    assert joined["url"] == server.base.replace("http", "ws", 1)
    claims = verify(joined["access_token"])
    assert claims.identity == str(guest_uid)
    assert claims.video.room == str(group["gid"])
    assert claims.video.can_publish is True

    viewer = mesibo(server, {"token": guest_token, "op": "joingroup", "gid": group["gid"], "pin": group["spin"]}, via).json()
    assert viewer["result"] == "OK" and viewer["publish"] == 0, viewer
    assert verify(viewer["access_token"]).video.can_publish is False

    host = mesibo(server, {"token": owner_token, "op": "joingroup", "gid": group["gid"]}, via).json()
    assert host["publish"] == 1 and host["pin"] == group["pin"] and host["spin"] == group["spin"], host
    assert verify(host["access_token"]).identity == str(owner_uid)

    hd = mesibo(server, {"token": owner_token, "op": "setgroup", "name": "hd room", "resolution": "3"}, via).json()
    assert hd["resolution"] == "3"
    fail(mesibo(server, {"token": owner_token, "op": "setgroup", "name": "x", "resolution": "7"}, via), "setgroup", "BADPARA")
    fail(mesibo(server, {"op": "setgroup", "name": "x"}, via), "setgroup", "AUTHFAIL")
    fail(mesibo(server, {"token": joined["access_token"], "op": "setgroup", "name": "x"}, via), "setgroup", "AUTHFAIL")


def test_wrong_pins_fail_and_guessing_is_limited(server, inbox):
    owner, _, _ = login(server, inbox, "host@example.com", "Host")
    guest, _, _ = login(server, inbox, "guest@example.com", "Guest")
    group = mesibo(server, {"token": owner, "op": "setgroup", "name": "room", "resolution": "0"}).json()
    wrong = fail(mesibo(server, {"token": guest, "op": "joingroup", "gid": group["gid"], "pin": "00000000"}), "joingroup", "BADGROUP")
    unknown = fail(mesibo(server, {"token": guest, "op": "joingroup", "gid": "987654321", "pin": "00000000"}), "joingroup", "BADGROUP")
    assert wrong["message"] == unknown["message"]
    fail(mesibo(server, {"token": guest, "op": "joingroup", "pin": "1"}), "joingroup", "MISSINGPARA")
    # 30 failures per client address in 10 minutes; the two above count.
    for _ in range(28):
        fail(mesibo(server, {"token": guest, "op": "joingroup", "gid": group["gid"], "pin": "11111111"}, "form"), "joingroup", "BADGROUP")
    limited = fail(mesibo(server, {"token": guest, "op": "joingroup", "gid": group["gid"], "pin": group["pin"]}), "joingroup", "RATELIMITED")
    assert "retry in" in limited["message"]


# ----- seed 002 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["json", "form"])
def test_livekit_join_with_the_email_login_session(server, inbox, encoding):
    token, uid, _ = login(server, inbox, "dee@example.com", "Dee")
    bearer = {"Authorization": f"Bearer {token}"}

    def post(params, headers=bearer, path=JOIN):
        body = {"json": params} if encoding == "json" else {"data": params}
        return requests.post(server.base + path, headers=headers, timeout=10, **body)

    reply = post({"roomName": "jcbd-kdsn", "uid": str(uid)})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"msg", "livekit_socket_url", "access_token"}
    assert body["msg"] == "Success"
    assert body["livekit_socket_url"] == server.base.replace("http", "ws", 1)
    claims = verify(body["access_token"])
    assert claims.video.room == "jcbd-kdsn"
    assert claims.identity == str(uid)
    assert claims.video.room_join is True
    assert claims.name == "Dee"

    assert post({"uid": str(uid)}).json() == {"msg": "Missing required parameter: roomName"}
    assert post({"uid": str(uid)}).status_code == 400
    missing_uid = post({"roomName": "r"})
    assert (missing_uid.status_code, missing_uid.json()) == (400, {"msg": "Missing required parameter: uid"})

    anonymous = post({"roomName": "r", "uid": str(uid)}, headers={})
    assert anonymous.status_code == 401 and anonymous.json()["msg"].startswith("Unauthorized")
    someone_else = post({"roomName": "r", "uid": "100000000001"})
    assert (someone_else.status_code, someone_else.json()) == (403, {"msg": "uid is not the signed-in user"})

    admin = requests.post(server.base + JOIN, auth=(API_KEY, API_SECRET), timeout=10,
                          **({"json": {"roomName": "ops", "uid": "backend-bot"}} if encoding == "json" else {"data": {"roomName": "ops", "uid": "backend-bot"}}))
    assert admin.status_code == 200, admin.text
    claims = verify(admin.json()["access_token"])
    assert (claims.identity, claims.video.room) == ("backend-bot", "ops")


def test_livekit_join_for_an_external_livekit_and_development_mode_codes():
    """No SMTP: the code is in the log (development mode). LIVEKIT_*: tokens for that LiveKit."""
    key, secret, url = "APIexternal", "external-livekit-secret-0123456789-abcdef", "wss://media.example.com"
    server = Server(extra_env={"LIVEKIT_API_KEY": key, "LIVEKIT_API_SECRET": secret, "LIVEKIT_SOCKET_URL": url,
                               "RUST_LOG": "info"})
    try:
        params = {"op": "login", "appid": "a", "name": "Eve", "email": "eve@example.com"}
        assert mesibo(server, params).json()["result"] == "OK"
        log = open(server.log.name).read()
        assert "development mode" in log
        found = re.search(r"no SMTP configured; development mode: code for eve@example.com is (\d{6})", log)
        assert found, log
        ok = mesibo(server, {**params, "code": found.group(1)}).json()
        assert ok["result"] == "OK", ok
        reply = requests.post(server.base + JOIN, json={"roomName": "ext", "uid": str(ok["uid"])},
                              headers={"Authorization": f"Bearer {ok['token']}"}, timeout=10)
        assert reply.status_code == 200, reply.text
        assert reply.json()["livekit_socket_url"] == url
        claims = verify(reply.json()["access_token"], key, secret)
        assert (claims.identity, claims.video.room) == (str(ok["uid"]), "ext")
        with pytest.raises(Exception):
            verify(reply.json()["access_token"])  # not signed with convene's own key
    finally:
        server.stop()
