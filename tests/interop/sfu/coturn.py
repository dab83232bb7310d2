"""Debian's coturn for the TURN tests: started on free loopback ports with a temporary configuration, plus a
raw TURN Allocate (RFC 5389 long-term credentials, RFC 5766) to ask coturn directly whether it takes a credential."""

import base64
import hashlib
import hmac
import os
import pathlib
import shutil
import socket
import struct
import subprocess
import time

import pytest

REALM = "convene.test"
MAGIC_COOKIE = 0x2112A442

BINDING_REQUEST, BINDING_SUCCESS = 0x0001, 0x0101
ALLOCATE_REQUEST, ALLOCATE_SUCCESS, ALLOCATE_ERROR = 0x0003, 0x0103, 0x0113
REFRESH_REQUEST = 0x0004
USERNAME, MESSAGE_INTEGRITY, ERROR_CODE, LIFETIME = 0x0006, 0x0008, 0x0009, 0x000D
REALM_ATTR, NONCE, REQUESTED_TRANSPORT = 0x0014, 0x0015, 0x0019


def rest_credential(secret: str, identity: str, expires_unix: int) -> tuple[str, str]:
    """coturn's use-auth-secret rule, written here apart from convene's: (username, password)."""
    username = f"{expires_unix}:{identity}"
    password = base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()
    return username, password


def _attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def _message(kind: int, attributes: bytes, integrity_key: bytes | None = None) -> bytes:
    transaction = os.urandom(12)
    if integrity_key is None:
        return struct.pack("!HHI12s", kind, len(attributes), MAGIC_COOKIE, transaction) + attributes
    # MESSAGE-INTEGRITY covers the message with its length already counting the attribute (24 bytes).
    header = struct.pack("!HHI12s", kind, len(attributes) + 24, MAGIC_COOKIE, transaction)
    digest = hmac.new(integrity_key, header + attributes, hashlib.sha1).digest()
    return header + attributes + _attribute(MESSAGE_INTEGRITY, digest)


def _parse(data: bytes) -> tuple[int, dict[int, bytes]]:
    kind, length, cookie = struct.unpack("!HHI", data[:8])
    assert cookie == MAGIC_COOKIE, "not a STUN message"
    attributes, offset = {}, 20
    while offset < 20 + length:
        attr_kind, attr_length = struct.unpack("!HH", data[offset : offset + 4])
        attributes.setdefault(attr_kind, data[offset + 4 : offset + 4 + attr_length])
        offset += 4 + attr_length + (-attr_length % 4)
    return kind, attributes


def _exchange(address: tuple[str, int], message: bytes) -> tuple[int, dict[int, bytes]]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(message, address)
        data, _ = sock.recvfrom(2048)
    return _parse(data)


def turn_allocate(address: tuple[str, int], username: str, password: str) -> int:
    """A UDP relay Allocate with long-term credentials: 200 when coturn grants it (then released again),
    else the ERROR-CODE of its answer to the authenticated request (401: credentials refused)."""
    transport = _attribute(REQUESTED_TRANSPORT, bytes([17, 0, 0, 0]))
    # One socket throughout: coturn's nonce belongs to the 5-tuple it was given to.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(_message(ALLOCATE_REQUEST, transport), address)
        kind, attributes = _parse(sock.recvfrom(2048)[0])
        assert kind == ALLOCATE_ERROR and _error_code(attributes) == 401, "an unauthenticated Allocate is challenged"
        realm, nonce = attributes[REALM_ATTR], attributes[NONCE]
        key = hashlib.md5(f"{username}:{realm.decode()}:{password}".encode()).digest()
        signed = _attribute(USERNAME, username.encode()) + _attribute(REALM_ATTR, realm) + _attribute(NONCE, nonce)
        sock.sendto(_message(ALLOCATE_REQUEST, transport + signed, key), address)
        kind, attributes = _parse(sock.recvfrom(2048)[0])
        if kind == ALLOCATE_SUCCESS:
            # Give the allocation back (a Refresh with lifetime 0, from the same 5-tuple).
            release = _attribute(LIFETIME, struct.pack("!I", 0)) + signed
            sock.sendto(_message(REFRESH_REQUEST, release, key), address)
            sock.recvfrom(2048)
            return 200
    assert kind == ALLOCATE_ERROR, f"unexpected STUN message type {kind:#06x}"
    return _error_code(attributes)


def _error_code(attributes: dict[int, bytes]) -> int:
    value = attributes[ERROR_CODE]
    return (value[2] & 0x7) * 100 + value[3]


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (coturn listens on both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


class Coturn:
    """A coturn started with `use-auth-secret` on 127.0.0.1 (loopback peers allowed, as the SFU is on loopback)."""

    def __init__(self, directory: pathlib.Path, secret: str):
        binary = shutil.which("turnserver")
        if binary is None:
            # Not a skip: CI installs coturn (.ci/run), and a missing TURN server must not pass quietly.
            pytest.fail("turnserver (Debian's coturn) is not installed: apt-get install coturn")
        self.port = _free_port()
        self.address = ("127.0.0.1", self.port)
        self.log_path = directory / "turn.log"
        config = directory / "turnserver.conf"
        config.write_text(
            "\n".join(
                [
                    "listening-ip=127.0.0.1",
                    f"listening-port={self.port}",
                    "relay-ip=127.0.0.1",
                    f"realm={REALM}",
                    "use-auth-secret",
                    f"static-auth-secret={secret}",
                    # The SFU listens on loopback here; in production, deny private ranges instead (docs/deployment.md).
                    "allow-loopback-peers",
                    "no-tls",
                    "no-dtls",
                    "no-cli",
                    f"log-file={self.log_path}",
                    "simple-log",
                    "verbose",
                    f"pidfile={directory / 'turnserver.pid'}",
                    f"userdb={directory / 'turndb'}",
                ]
            )
            + "\n"
        )
        self.proc = subprocess.Popen(
            [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"turnserver exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                kind, _ = _exchange(self.address, _message(BINDING_REQUEST, b""))
                if kind == BINDING_SUCCESS:
                    break
            except (TimeoutError, ConnectionRefusedError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"turnserver did not answer a STUN binding request:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def url(self, transport: str = "udp") -> str:
        return f"turn:127.0.0.1:{self.port}?transport={transport}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
