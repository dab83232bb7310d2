"""Seed 003 (the BigBlueButton interface) against the real `convene` binary: every documented
request and response field of `/create` and `/join`, the `302` and its `Location`, the one-time
join link exchanged once through the native API, roles decided by the password (tokens checked
with the official LiveKit `TokenVerifier`), guests through the waiting room, and the unhappy
paths: missing parameters, wrong passwords, mismatched `create_time`, full meetings, reused links,
missing or wrong `Authorization`."""

import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from livekit import api

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from convene_server import API_KEY, API_SECRET, Server, wait_until  # noqa: E402

TOKEN = "interop-bbb-token"
BBB = "/compat/bbb"
SEED_CREATE = {
    "name": "meeting01",
    "attendee_pass": "password-for-attende",
    "moderator_pass": "password-for-moderator",
    "max_participant": 100,
    "redirect_at_logout": "https://maybe-back-to-lms.com/dashboard",
}


@pytest.fixture(scope="module")
def server():
    server = Server(extra_env={"CONVENE_COMPAT_BBB_TOKEN": TOKEN, "CONVENE_PUBLIC_URL": "http://convene.example:8080"})
    yield server
    server.stop()


def verify(token):
    return api.TokenVerifier(API_KEY, API_SECRET).verify(token)


def post(server, route, params, encoding="json", token=TOKEN):
    body = {"json": params} if encoding == "json" else {"data": params}
    headers = {} if token is None else {"Authorization": token}
    return requests.post(server.base + BBB + route, headers=headers, allow_redirects=False, timeout=10, **body)


def create(server, params=None, encoding="json"):
    reply = post(server, "/create", SEED_CREATE if params is None else params, encoding)
    assert reply.status_code == 200, reply.text
    return reply.json()


def join_params(created, name, password, **extra):
    params = {"name": name, "meeting_id": created["meeting_id"], "password": password,
              "create_time": created["create_time"]}
    params.update(extra)
    return params


def join_link(server, params, encoding="json"):
    reply = post(server, "/join", params, encoding)
    assert reply.status_code == 302, reply.text
    location = urlsplit(reply.headers["Location"])
    assert (location.scheme, location.netloc, location.path) == ("http", "convene.example:8080", "/meet")
    assert reply.headers["Cache-Control"] == "no-store"
    return parse_qs(location.query)


def exchange(server, link):
    return requests.post(server.base + "/v1/join-links/exchange", json={"join_link": link}, timeout=10)


def assert_error(reply, status, says):
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert list(body) == ["message"], body
    assert says in body["message"], body


@pytest.mark.parametrize("encoding", ["json", "form"])
def test_create_answers_every_documented_field(server, encoding):
    before = int(time.time() * 1000)
    created = create(server, encoding=encoding)
    after = int(time.time() * 1000)
    assert sorted(created) == ["attendee_pass", "create_time", "created_at", "meeting_id", "moderator_pass"]
    assert isinstance(created["meeting_id"], str) and created["meeting_id"]
    assert created["attendee_pass"] == "password-for-attende"
    assert created["moderator_pass"] == "password-for-moderator"
    assert isinstance(created["create_time"], str) and created["create_time"].isdigit()
    assert before <= int(created["create_time"]) <= after
    # "Mon Jul 09 17:03:29 UTC 2040": the same instant, to the second.
    assert re.fullmatch(r"[A-Z][a-z]{2} [A-Z][a-z]{2} \d{2} \d{2}:\d{2}:\d{2} UTC \d{4}", created["created_at"])
    parsed = datetime.strptime(created["created_at"], "%a %b %d %H:%M:%S UTC %Y").replace(tzinfo=timezone.utc)
    assert int(parsed.timestamp()) == int(created["create_time"]) // 1000
    # The meeting behind it, as the native API sees it.
    meeting = server.admin("GET", f"/v1/meetings/{created['meeting_id']}").json()
    assert meeting["capacity"] == 100
    assert meeting["logout_url"] == "https://maybe-back-to-lms.com/dashboard"
    assert meeting["status"] == "live"


def test_generated_passwords(server):
    created = create(server, {"name": "just a name"})
    assert len(created["attendee_pass"]) >= 16 and len(created["moderator_pass"]) >= 16
    assert created["attendee_pass"] != created["moderator_pass"]


@pytest.mark.parametrize("encoding", ["json", "form"])
def test_the_password_decides_the_role_and_links_work_once(server, encoding):
    created = create(server, encoding=encoding)
    seed_join = join_params(created, "namaMahasiswaAtauDosen", "password-for-moderator", user_id="dosen01",
                            avatar="https://maybe-back-to-lms.com/assets/avatar/mhs01.png", is_guest=False)
    query = join_link(server, seed_join, encoding)
    assert query["avatar"] == ["https://maybe-back-to-lms.com/assets/avatar/mhs01.png"]
    link = query["join"][0]

    answer = exchange(server, link)
    assert answer.status_code == 200, answer.text
    answer = answer.json()
    assert (answer["identity"], answer["role"], answer["state"]) == ("dosen01", "host", "joined")
    assert answer["meeting"]["logout_url"] == "https://maybe-back-to-lms.com/dashboard"
    host = verify(answer["join"]["access_token"])
    assert host.identity == "dosen01"
    assert host.name == "namaMahasiswaAtauDosen"
    assert host.video.room == answer["join"]["room_name"]
    assert host.video.room_admin is True and host.video.can_publish is True

    again = exchange(server, link)
    assert again.status_code == 409, again.text
    assert again.json()["error"]["code"] == "join_link_used"

    query = join_link(server, join_params(created, "mhs01", "password-for-attende", user_id="mhs01"), encoding)
    answer = exchange(server, query["join"][0]).json()
    assert answer["role"] == "speaker"
    attendee = verify(answer["join"]["access_token"])
    assert attendee.identity == "mhs01"
    assert attendee.video.can_publish is True and not attendee.video.room_admin


def test_concurrent_exchanges_let_exactly_one_through(server):
    created = create(server)
    link = join_link(server, join_params(created, "racer", "password-for-attende"))["join"][0]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: exchange(server, link), range(8)))
    codes = sorted(r.status_code for r in replies)
    assert codes == [200] + [409] * 7, [r.text for r in replies]


def test_guests_wait_for_a_host(server):
    created = create(server)
    query = join_link(server, join_params(created, "A guest", "password-for-attende", user_id="guest1", is_guest="true"), "form")
    answer = exchange(server, query["join"][0])
    assert answer.status_code == 200, answer.text
    answer = answer.json()
    assert answer["state"] == "waiting" and answer["join"] is None
    waiting = verify(answer["token"])
    assert waiting.identity == "guest1" and not waiting.video.room_join
    mid = created["meeting_id"]
    early = requests.post(f"{server.base}/v1/meetings/{mid}/join", headers={"Authorization": f"Bearer {answer['token']}"}, timeout=10)
    assert early.status_code == 403 and early.json()["error"]["code"] == "not_admitted"
    assert server.admin("POST", f"/v1/meetings/{mid}/participants/guest1/admit").status_code == 200
    joined = requests.post(f"{server.base}/v1/meetings/{mid}/join", headers={"Authorization": f"Bearer {answer['token']}"}, timeout=10)
    assert joined.status_code == 200, joined.text
    assert verify(joined.json()["access_token"]).video.room_join


@pytest.mark.parametrize("encoding", ["json", "form"])
def test_missing_parameters_and_wrong_passwords(server, encoding):
    assert_error(post(server, "/create", {}, encoding), 400, "missing name")
    created = create(server)
    for missing in ["name", "meeting_id", "password", "create_time"]:
        params = join_params(created, "someone", "password-for-attende")
        del params[missing]
        assert_error(post(server, "/join", params, encoding), 400, f"missing {missing}")
    wrong = post(server, "/join", join_params(created, "someone", "nope"), encoding)
    assert_error(wrong, 403, "wrong password")
    assert "Location" not in wrong.headers
    assert_error(post(server, "/join", join_params(created, "someone", "password-for-attende", meeting_id="123456789"), encoding), 404, "meeting not found")


def test_mismatched_create_time_and_ended_meetings(server):
    created = create(server)
    assert_error(post(server, "/join", join_params(created, "someone", "password-for-attende", create_time="1531155809613")), 409, "create_time")
    stale = join_link(server, join_params(created, "early", "password-for-attende"))["join"][0]
    mid = created["meeting_id"]
    assert server.admin("POST", f"/v1/meetings/{mid}/end").status_code == 200
    assert_error(post(server, "/join", join_params(created, "late", "password-for-attende")), 409, "ended")
    # The new run must open at a later millisecond than the old create_time.
    wait_until(lambda: time.time() * 1000 > int(created["create_time"]), 1, "the clock to pass create_time")
    assert server.admin("POST", f"/v1/meetings/{mid}/start").status_code == 200
    # A new run: the old create_time and the old link no longer work.
    assert_error(post(server, "/join", join_params(created, "late", "password-for-attende")), 409, "create_time")
    old = exchange(server, stale)
    assert old.status_code == 401 and old.json()["error"]["code"] == "invalid_token", old.text


def test_full_meetings_refuse_joins(server):
    created = create(server, dict(SEED_CREATE, max_participant=1))
    first = join_link(server, join_params(created, "a", "password-for-attende", user_id="a"))["join"][0]
    assert exchange(server, first).status_code == 200
    assert_error(post(server, "/join", join_params(created, "b", "password-for-attende", user_id="b")), 409, "full")
    teacher = join_link(server, join_params(created, "t", "password-for-moderator"))["join"][0]
    assert exchange(server, teacher).json()["role"] == "host"


def test_authorization_is_required(server):
    for route in ["/create", "/join"]:
        assert_error(post(server, route, SEED_CREATE, token=None), 401, "Authorization")
        assert_error(post(server, route, SEED_CREATE, token="wrong"), 401, "Authorization")
        assert_error(post(server, route, SEED_CREATE, token=f"Bearer {TOKEN}"), 401, "Authorization")


def test_the_surface_is_off_without_a_token():
    server = Server()
    try:
        reply = requests.post(server.base + BBB + "/create", json=SEED_CREATE, headers={"Authorization": TOKEN}, timeout=10)
        assert reply.status_code == 404
    finally:
        server.stop()
