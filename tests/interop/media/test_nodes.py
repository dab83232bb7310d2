"""Three convene nodes on one PostgreSQL database, each running its embedded SFU, driven by the
official LiveKit Python SDK: people of one meeting who ask three different nodes meet in one media
room and see each other; a removal issued on a node that does not hold the room disconnects the
person; after `kill -9` of the node holding the room, the people ask a running node for a join
again and meet on another node."""

import asyncio
import os
import secrets
import signal
import subprocess

import pytest
import requests
from livekit import rtc

from convene_server import Server, wait_for
from media_helpers import call, connect, enter_and_join, publish_video

ADMIN_URL = os.environ.get("CONVENE_TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
WIDTH, HEIGHT = 160, 120


def psql(sql):
    """Runs `sql` as the admin; answers its output, unaligned and without headers."""
    done = subprocess.run(["psql", ADMIN_URL, "-v", "ON_ERROR_STOP=1", "-qtAc", sql], check=True, capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


@pytest.fixture
def database():
    """A fresh database and one login role per node (so a test can keep one node out)."""
    suffix = secrets.token_hex(6)
    name = "convene_interop_" + suffix
    roles = [f"convene_node_{suffix}_{i}" for i in range(3)]
    try:
        psql(f"CREATE DATABASE {name}")
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"PostgreSQL is not reachable at {ADMIN_URL}: {e}")
    for role in roles:
        psql(f"CREATE ROLE {role} LOGIN SUPERUSER")
    server = ADMIN_URL.split("://", 1)[1].split("@", 1)[1].rsplit("/", 1)[0]
    yield {"name": name, "roles": roles, "urls": [f"postgresql://{role}@{server}/{name}" for role in roles]}
    psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    for role in roles:
        psql(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture
def nodes(database):
    started = []
    try:
        for url in database["urls"]:
            started.append(Server({"CONVENE_DATABASE_URL": url}))
        yield started
    finally:
        for node in started:
            node.stop()


def rtc_url(node):
    return node.base.replace("http", "ws", 1)


class Person:
    """One person's media: the room, their camera, and the video frames received per publisher."""

    def __init__(self, name):
        self.name = name
        self.room = None
        self.pump = None
        self.frames = {}
        self.readers = []
        self.gone = asyncio.Event()

    async def connect(self, join, channel):
        self.room = rtc.Room()
        self.gone = asyncio.Event()

        @self.room.on("track_subscribed")
        def on_track(track, publication, participant):
            if track.kind == rtc.TrackKind.KIND_VIDEO:
                self.readers.append(asyncio.ensure_future(self.read(track, participant.identity)))

        self.room.on("disconnected", lambda *_: self.gone.set())
        await asyncio.wait_for(self.room.connect(join["url"], join["access_token"], rtc.RoomOptions(auto_subscribe=True)), timeout=20)
        _, self.pump = await publish_video(self.room, WIDTH, HEIGHT, channel)

    async def read(self, track, identity):
        async for _ in rtc.VideoStream(track):
            self.frames[identity] = self.frames.get(identity, 0) + 1

    def sees(self, others, at_least):
        return all(self.frames.get(o, 0) >= at_least for o in others)

    async def close(self):
        if self.pump:
            self.pump.cancel()
        for reader in self.readers:
            reader.cancel()
        self.readers = []
        if self.room:
            try:
                await asyncio.wait_for(self.room.disconnect(), timeout=5)
            except (asyncio.TimeoutError, Exception):
                pass


def test_people_asking_three_nodes_meet_in_one_room_and_a_removal_elsewhere_disconnects(nodes):
    meeting = nodes[0].admin("POST", "/v1/meetings", json={"name": "Ward round", "policy": "open"}).json()
    mid = meeting["meeting_id"]
    names = ["doctor", "nurse", "patient"]
    joins = [enter_and_join(nodes[i], meeting, "host" if i == 0 else "participant", name) for i, name in enumerate(names)]
    urls = {j["url"] for j in joins}
    assert len(urls) == 1, f"three nodes named different rooms: {urls}"
    (url,) = urls
    holder = [rtc_url(n) for n in nodes].index(url)

    async def main():
        people = [Person(name) for name in names]
        try:
            for channel, (person, join) in enumerate(zip(people, joins)):
                await person.connect(join, channel)
            for person in people:
                others = [n for n in names if n != person.name]
                await wait_for(lambda: person.sees(others, 15), 20, f"{person.name} decoding {others} (got {person.frames})")

            # The host removes the patient through a node that does not hold the room.
            elsewhere = nodes[(holder + 1) % 3]
            call(elsewhere, mid, joins[0]["access_token"], "/participants/patient/remove")
            await asyncio.wait_for(people[2].gone.wait(), timeout=5)
            assert not people[0].gone.is_set() and not people[1].gone.is_set()
        finally:
            for person in people:
                await person.close()

    asyncio.run(main())


def join_again(nodes, alive, mid, api_token, dead_url):
    """Asks each running node for a join: the first answer naming a running node, or None."""
    for i in alive:
        answer = requests.post(f"{nodes[i].base}/v1/meetings/{mid}/join", headers={"Authorization": "Bearer " + api_token}, timeout=10)
        assert answer.status_code == 200, answer.text
        if answer.json()["url"] != dead_url:
            return answer.json()
    return None


def test_kill_9_of_the_node_holding_the_room_and_the_meeting_goes_on_on_another(nodes):
    meeting = nodes[0].admin("POST", "/v1/meetings", json={"name": "Lecture", "policy": "open"}).json()
    mid = meeting["meeting_id"]
    joins = [enter_and_join(nodes[0], meeting, "host", "lecturer"), enter_and_join(nodes[1], meeting, "participant", "student")]
    url = joins[0]["url"]
    assert joins[1]["url"] == url
    holder = [rtc_url(n) for n in nodes].index(url)
    alive = [i for i in range(3) if i != holder]

    async def main():
        people = [Person("lecturer"), Person("student")]
        try:
            for channel, (person, join) in enumerate(zip(people, joins)):
                await person.connect(join, channel)
            await wait_for(lambda: people[0].sees(["student"], 10) and people[1].sees(["lecturer"], 10), 20, "both decoding each other")

            os.kill(nodes[holder].process.pid, signal.SIGKILL)
            nodes[holder].process.wait(timeout=10)
            # The SDK's own reconnect goes to the dead node; each person asks a running node for a
            # join again (as the web app does when its media connection is lost) until the answer
            # names a running node (the dead node's lease runs out within seconds).
            loop = asyncio.get_event_loop()
            started = loop.time()
            for person in people:
                await person.close()
            rejoined = []
            for join in joins:
                while True:
                    answer = await loop.run_in_executor(None, lambda: join_again(nodes, alive, mid, join["api_token"], url))
                    if answer:
                        rejoined.append(answer)
                        break
                    assert loop.time() - started < 30, "joins still name the killed node after 30 s"
                    await asyncio.sleep(0.5)
            moved = {a["url"] for a in rejoined}
            assert len(moved) == 1 and url not in moved, moved
            people = [Person("lecturer"), Person("student")]
            for channel, (person, join) in enumerate(zip(people, rejoined)):
                await person.connect(join, channel)
            await wait_for(lambda: people[0].sees(["student"], 10) and people[1].sees(["lecturer"], 10), 20, "both decoding each other again")
            print(f"media back on another node {loop.time() - started:.1f} s after kill -9")
        finally:
            for person in people:
                await person.close()

    asyncio.run(main())


def test_commands_missed_while_a_node_was_not_listening_are_caught_up(nodes, database):
    """The node holding the room loses its notification connection and cannot reconnect for a
    while; a removal issued meanwhile on another node is lost in transit, and the node, once
    listening again, checks everyone connected to it against the store and disconnects the
    removed person."""
    meeting = nodes[0].admin("POST", "/v1/meetings", json={"name": "Seminar", "policy": "open"}).json()
    mid = meeting["meeting_id"]
    joins = [enter_and_join(nodes[0], meeting, "host", "chair"), enter_and_join(nodes[1], meeting, "participant", "guest")]
    holder = [rtc_url(n) for n in nodes].index(joins[0]["url"])
    role = database["roles"][holder]

    async def main():
        people = [Person("chair"), Person("guest")]
        try:
            for channel, (person, join) in enumerate(zip(people, joins)):
                await person.connect(join, channel)
            await wait_for(lambda: people[0].sees(["guest"], 5), 20, "the chair decoding the guest")
            # The holder's listening connection ends, and its role may not log in again.
            psql(f"ALTER ROLE {role} NOLOGIN")
            listening = f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}' AND application_name = 'convene-listen'"
            psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}' AND application_name = 'convene-listen'")
            await wait_for(lambda: psql(listening) == "0", 10, "the holder's listening connection gone")
            elsewhere = nodes[(holder + 1) % 3]
            call(elsewhere, mid, joins[0]["access_token"], "/participants/guest/remove")
            # Nothing must happen here: a removal that got through would show within 2 s.
            try:
                await asyncio.wait_for(people[1].gone.wait(), timeout=2)
                pytest.fail("the removal reached the node without its listener")
            except asyncio.TimeoutError:
                pass
            psql(f"ALTER ROLE {role} LOGIN")
            # Reconnection backs off up to 5 s; then the check.
            await asyncio.wait_for(people[1].gone.wait(), timeout=15)
            assert not people[0].gone.is_set()
        finally:
            psql(f"ALTER ROLE {role} LOGIN")
            for person in people:
                await person.close()

    asyncio.run(main())
