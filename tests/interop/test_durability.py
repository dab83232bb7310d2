"""kill -9 under write load, repeated: after every restart each write acknowledged with a 2xx is
there, and the SQLite database passes PRAGMA integrity_check (docs/security-reliability.md)."""

import os
import shutil
import signal
import sqlite3
import threading
import time

import requests

from convene_server import API_KEY, API_SECRET, Server


def test_acknowledged_writes_survive_kill_9(tmp_path):
    data_dir = str(tmp_path / "data")
    acknowledged = []
    for round_number in range(3):
        server = Server(extra_env={"CONVENE_DATA_DIR": data_dir})
        stop = threading.Event()
        errors = []

        def writer(worker):
            session = requests.Session()
            n = 0
            while not stop.is_set():
                try:
                    r = session.post(server.base + "/v1/meetings", auth=(API_KEY, API_SECRET),
                                     json={"name": f"r{round_number}-w{worker}-{n}"}, timeout=5)
                except requests.RequestException:
                    return  # the server died mid-request: that write was never acknowledged
                if r.status_code == 201:
                    acknowledged.append(r.json()["meeting_id"])
                elif r.status_code >= 500:
                    errors.append(r.text)
                n += 1

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        # Let the writers get going (bounded by count, not by a sleep), then kill -9 mid-load.
        target = len(acknowledged) + 40
        deadline = time.monotonic() + 30
        while len(acknowledged) < target and time.monotonic() < deadline:
            stop.wait(0.01)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        stop.set()
        for t in threads:
            t.join()
        server.log.close()
        shutil.rmtree(server.data_dir, ignore_errors=True)
        assert not errors, errors[:3]
        assert len(acknowledged) >= target, "writers made progress before the kill"

        db = sqlite3.connect(os.path.join(data_dir, "convene.db"))
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {row[0] for row in db.execute("SELECT id FROM meetings")}
        db.close()
        missing = [m for m in acknowledged if m not in stored]
        assert not missing, f"{len(missing)} acknowledged writes lost after kill -9 (round {round_number})"

    # And the restarted server serves them.
    server = Server(extra_env={"CONVENE_DATA_DIR": data_dir})
    try:
        for meeting_id in acknowledged[-5:]:
            assert server.admin("GET", f"/v1/meetings/{meeting_id}").status_code == 200
    finally:
        server.stop()
