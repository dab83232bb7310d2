"""Webhooks: every event reaches the deployment-wide and the meeting's own URL, in order, signed
so that LiveKit's own `WebhookReceiver` (official Python `livekit-api`) verifies it; failures are
retried with backoff and given up after the configured number of attempts; a hanging endpoint
holds back nobody else; pending deliveries survive `kill -9` and a restart."""

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from livekit import api

from convene_server import API_KEY, API_SECRET, Server, convene_binary, wait_until


class Receiver:
    """A webhook endpoint on loopback. Per path: a script of statuses to answer (then 200), or
    `hang` (never answers) or `close` (drops the connection)."""

    def __init__(self):
        self.received = []  # (path, authorization, body) of requests answered 2xx
        self.attempts = []  # every request's path
        self.scripts = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                with receiver.lock:
                    script = receiver.scripts.get(self.path, [])
                    action = script.pop(0) if script else 200
                    receiver.attempts.append(self.path)
                    if action == 200:
                        receiver.received.append((self.path, self.headers.get("Authorization"), body))
                if action == "hang":
                    time.sleep(60)
                    return
                if action == "close":
                    self.close_connection = True
                    self.connection.close()
                    return
                self.send_response(action)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def at(self, path):
        with self.lock:
            return [r for r in self.received if r[0] == path]

    def events(self, path):
        return [json.loads(body) for _, _, body in self.at(path)]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def seqs(events, meeting_id):
    return [e["convene"]["seq"] for e in events if e["convene"]["meeting_id"] == meeting_id]


def deliveries(server, **params):
    r = server.admin("GET", "/v1/webhooks/deliveries", params=params)
    assert r.status_code == 200, r.text
    return r.json()["deliveries"]


def make_events(server, meeting):
    """Start the meeting with a host, let a guest in and out, chat: a handful of events."""
    mid = meeting["meeting_id"]
    host = server.post(f"/v1/meetings/{mid}/enter", json={"credential": meeting["credentials"]["host"], "name": "Host", "identity": "host-1"})
    assert host.status_code == 200, host.text
    token = host.json()["token"]
    assert server.post(f"/v1/meetings/{mid}/join", headers={"Authorization": "Bearer " + token}).status_code == 200
    guest = server.post(f"/v1/meetings/{mid}/enter", json={"credential": meeting["credentials"]["participant"], "name": "Guest", "identity": "guest-1"})
    assert guest.status_code == 200, guest.text
    last = server.admin("GET", f"/v1/meetings/{mid}").json()["last_seq"]
    return last


def test_a_mass_admission_is_one_signed_delivery_listing_everyone(receiver):
    server = Server(extra_env={"CONVENE_WEBHOOK_URLS": receiver.url + "/bulk"})
    try:
        meeting = server.admin("POST", "/v1/meetings", json={"name": "Webinar", "policy": "wait_for_host"}).json()
        mid = meeting["meeting_id"]
        guests = ["guest-c", "guest-a", "guest-b"]
        for identity in guests:
            r = server.post(f"/v1/meetings/{mid}/enter", json={"credential": meeting["credentials"]["participant"], "name": identity, "identity": identity})
            assert r.status_code == 200 and r.json()["state"] == "waiting", r.text
        host = server.post(f"/v1/meetings/{mid}/enter", json={"credential": meeting["credentials"]["host"], "name": "Host", "identity": "host-1"})
        assert server.post(f"/v1/meetings/{mid}/join", headers={"Authorization": "Bearer " + host.json()["token"]}).status_code == 200
        last = server.admin("GET", f"/v1/meetings/{mid}").json()["last_seq"]
        wait_until(lambda: len(seqs(receiver.events("/bulk"), mid)) >= last, 10, f"{last} events")

        hooks = api.WebhookReceiver(api.TokenVerifier(API_KEY, API_SECRET))
        admitted = []
        for _, authorization, body in receiver.at("/bulk"):
            event = hooks.receive(body, authorization)  # raises unless signed as LiveKit signs
            if event.event in ("participant.admitted", "participants.admitted"):
                admitted.append(json.loads(body)["convene"])
        # The host is let in alone when it enters; the three waiting guests together, once.
        assert [(a["type"], a["data"].get("identity")) for a in admitted][0] == ("participant.admitted", "host-1")
        bulk = [a for a in admitted if a["type"] == "participants.admitted"]
        assert len(bulk) == 1 and len(admitted) == 2, admitted
        assert bulk[0]["data"]["identities"] == sorted(guests)
        assert bulk[0]["data"]["status"] == "live"
    finally:
        server.stop()


def test_events_arrive_in_order_signed_for_livekits_webhook_receiver(receiver):
    server = Server(extra_env={"CONVENE_WEBHOOK_URLS": receiver.url + "/all"})
    try:
        meeting = server.admin("POST", "/v1/meetings", json={"name": "Hooks", "policy": "open", "webhook_url": receiver.url + "/own"}).json()
        assert meeting["webhook_url"] == receiver.url + "/own"
        mid = meeting["meeting_id"]
        last = make_events(server, meeting)
        assert last >= 4
        for path in ("/all", "/own"):
            wait_until(lambda: len(seqs(receiver.events(path), mid)) >= last, 10, f"{last} events at {path}")
            assert seqs(receiver.events(path), mid) == list(range(1, last + 1)), "in order, each once"

        verifier = api.TokenVerifier(API_KEY, API_SECRET)
        hooks = api.WebhookReceiver(verifier)
        names = []
        for _, authorization, body in receiver.at("/all"):
            event = hooks.receive(body, authorization)  # raises unless signature and sha256 match
            assert event.room.name == meeting["room_name"]
            assert event.id.startswith(f"EV_{mid}_")
            names.append(event.event)
        assert names[0] == "meeting.created"
        assert "room_started" in names, names
        assert "participant.admitted" in names or "participant.entered" in names
        # A body changed in transit, or signed with another secret, does not verify.
        _, authorization, body = receiver.at("/all")[0]
        with pytest.raises(Exception):
            hooks.receive(body.replace("Hooks", "Hacks"), authorization)
        with pytest.raises(Exception):
            api.WebhookReceiver(api.TokenVerifier(API_KEY, "another-secret-another-secret-0123456789")).receive(body, authorization)

        listed = deliveries(server, meeting_id=mid)
        assert len(listed) == 2 * last
        assert all(d["status"] == "delivered" and d["attempts"] == 1 and d["last_status"] == 200 for d in listed)
        assert {d["scope"] for d in listed} == {"deployment", "meeting"}

        # Removing the meeting's URL stops deliveries there; the deployment's go on.
        r = server.admin("PATCH", f"/v1/meetings/{mid}", json={"webhook_url": None})
        assert r.status_code == 200 and r.json()["webhook_url"] is None
        wait_until(lambda: len(seqs(receiver.events("/all"), mid)) == last + 1, 10, "the update event at /all")
        # The outbox holds no delivery of the update to the removed URL: nothing more can go there.
        update = [d for d in deliveries(server, meeting_id=mid) if d["seq"] == last + 1]
        assert [d["scope"] for d in update] == ["deployment"]
        assert len(seqs(receiver.events("/own"), mid)) == last
    finally:
        server.stop()


def test_bad_webhook_input_gets_a_clear_400():
    server = Server()
    try:
        r = server.admin("POST", "/v1/meetings", json={"name": "x", "webhook_url": "ftp://example/"})
        assert r.status_code == 400 and "webhook_url" in r.text
        for params in ({"status": "lost"}, {"limit": "0"}, {"after": "-1"}, {"meeting_id": "12"}):
            r = server.admin("GET", "/v1/webhooks/deliveries", params=params)
            assert r.status_code == 400, (params, r.text)
            assert r.json()["error"]["code"]
        assert server.admin("GET", "/v1/webhooks/deliveries", params={"meeting_id": "999999"}).status_code == 404
        assert requests.get(server.base + "/v1/webhooks/deliveries", timeout=5).status_code == 401
    finally:
        server.stop()
    # A bad deployment URL stops the server at start with a message naming the variable.
    env = dict(os.environ, CONVENE_WEBHOOK_URLS="not a url", CONVENE_HTTP_ADDR="127.0.0.1:0", CONVENE_RTC_UDP_PORT="0", CONVENE_RTC_TCP_PORT="0",
               CONVENE_DATA_DIR=tempfile.mkdtemp(prefix="convene-bad-webhook-"))
    done = subprocess.run([convene_binary()], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "CONVENE_WEBHOOK_URLS" in done.stderr + done.stdout


def test_failures_are_retried_with_backoff_then_given_up_in_order(receiver):
    receiver.scripts["/flaky"] = [500, 503]
    receiver.scripts["/down"] = [500] * 100
    server = Server(extra_env={"CONVENE_WEBHOOK_MAX_ATTEMPTS": "3", "CONVENE_WEBHOOK_FIRST_RETRY_MS": "200"})
    try:
        flaky = server.admin("POST", "/v1/meetings", json={"name": "Flaky", "webhook_url": receiver.url + "/flaky"}).json()
        down = server.admin("POST", "/v1/meetings", json={"name": "Down", "webhook_url": receiver.url + "/down"}).json()
        # Event 1 fails twice, then succeeds; event 2 only goes after it.
        server.admin("PATCH", f"/v1/meetings/{flaky['meeting_id']}", json={"name": "Flaky 2"})
        wait_until(lambda: len(receiver.at("/flaky")) >= 2, 10, "both events at /flaky")
        assert seqs(receiver.events("/flaky"), flaky["meeting_id"]) == [1, 2]
        first = deliveries(server, meeting_id=flaky["meeting_id"])[0]
        assert first["status"] == "delivered" and first["attempts"] == 3

        # Every attempt fails: given up after 3, with the last status and error kept; the
        # meeting's later events are then tried (a failed delivery does not block its lane forever).
        server.admin("PATCH", f"/v1/meetings/{down['meeting_id']}", json={"name": "Down 2"})
        def given_up():
            failed = [d for d in deliveries(server, meeting_id=down["meeting_id"]) if d["status"] == "failed"]
            return failed if len(failed) == 2 else None

        failed = wait_until(given_up, 15, "both deliveries to /down given up")
        assert receiver.attempts.count("/down") == 6
        assert all(d["attempts"] == 3 and d["last_status"] == 500 and "500" in d["last_error"] for d in failed)
        listed = deliveries(server, status="failed")
        assert {d["meeting_id"] for d in listed} == {down["meeting_id"]}
    finally:
        server.stop()


def test_a_hanging_endpoint_holds_back_no_one(receiver):
    receiver.scripts["/hang"] = ["hang"] * 10
    receiver.scripts["/close"] = ["close"] * 10
    server = Server(extra_env={
        "CONVENE_WEBHOOK_URLS": receiver.url + "/all",
        "CONVENE_WEBHOOK_TIMEOUT_MS": "20000",
        "CONVENE_WEBHOOK_FIRST_RETRY_MS": "60000",
    })
    try:
        hanging = server.admin("POST", "/v1/meetings", json={"name": "Hang", "policy": "open", "webhook_url": receiver.url + "/hang"}).json()
        closing = server.admin("POST", "/v1/meetings", json={"name": "Close", "policy": "open", "webhook_url": receiver.url + "/close"}).json()
        started = time.monotonic()
        for n in range(5):
            r = server.admin("PATCH", f"/v1/meetings/{hanging['meeting_id']}", json={"name": f"Hang {n}"})
            assert r.status_code == 200
        assert time.monotonic() - started < 5, "API calls do not wait on webhooks"
        # The deployment endpoint gets all of the hanging meeting's events meanwhile.
        wait_until(lambda: seqs(receiver.events("/all"), hanging["meeting_id"]) == list(range(1, 7)), 10, "events at /all")
        # A connection closed without an answer is a failed attempt with its cause recorded.
        failed = wait_until(
            lambda: [d for d in deliveries(server, meeting_id=closing["meeting_id"]) if d["url"].endswith("/close") and d["attempts"] >= 1],
            10, "the attempt at /close")
        assert failed[0]["status"] == "pending" and failed[0]["last_error"]
        assert failed[0]["next_attempt_at"]
        # The hanging one is still in flight, not failed yet.
        hang = [d for d in deliveries(server, meeting_id=hanging["meeting_id"]) if d["url"].endswith("/hang")]
        assert hang[0]["status"] == "pending" and hang[0]["attempts"] == 0
    finally:
        server.stop()


def test_pending_deliveries_survive_kill_9_and_restart(receiver, tmp_path):
    data_dir = str(tmp_path / "data")
    receiver.scripts["/later"] = [503] * 3
    env = {"CONVENE_DATA_DIR": data_dir, "CONVENE_WEBHOOK_URLS": receiver.url + "/later", "CONVENE_WEBHOOK_FIRST_RETRY_MS": "4000"}
    server = Server(extra_env=env)
    meeting = server.admin("POST", "/v1/meetings", json={"name": "Restart", "policy": "open"}).json()
    mid = meeting["meeting_id"]
    last = make_events(server, meeting)
    wait_until(lambda: any(d["attempts"] >= 1 for d in deliveries(server, meeting_id=mid)), 10, "a failed first attempt")
    assert receiver.at("/later") == []
    assert all(d["status"] == "pending" for d in deliveries(server, meeting_id=mid))
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    receiver.scripts["/later"] = []  # the endpoint is back
    again = Server(extra_env=env)
    try:
        wait_until(lambda: len(seqs(receiver.events("/later"), mid)) >= last, 20, "every event after the restart")
        assert seqs(receiver.events("/later"), mid) == list(range(1, last + 1))
        assert all(d["status"] == "delivered" for d in deliveries(again, meeting_id=mid))
    finally:
        again.stop()
        server.log.close()
