"""insights_sync against cr-sqlite: two real nodes (two processes, two
database files, cr-sqlite 0.16.3 and the extension loaded in each) synced
through crsql_changes the way vlcn's sync layers do it (changes since the
version last sent to the peer, minus the peer's own; SEND/RECEIVE rows in
crsql_tracked_peers). Numbers are checked against cr-sqlite's own view
(crsql_db_version(), crsql_changes), and heartbeats replicate through it.

Needs target/sync-engines/crsqlite/crsqlite.so: `make sync-engines`.
"""
import math
import sys
import time
from pathlib import Path

import pytest

from conftest import make_env

sys.path.insert(0, str(Path(__file__).resolve().parent / "sync"))
from nodes import CRSQLITE, SETUP_HINT, Node, wait_for  # noqa: E402

pytestmark = pytest.mark.skipif(
    not CRSQLITE.is_file(), reason=f"cr-sqlite is not built ({CRSQLITE} missing): {SETUP_HINT}")


def blob(hexstr):
    return {"$b": hexstr}


def crsql_sync(src, dst):
    """Send dst the changes of src it has not seen; record the SEND on src
    (our db_version sent) and the RECEIVE on dst (src's version received)."""
    src_site = src.one("SELECT crsql_site_id()")
    dst_site = dst.one("SELECT crsql_site_id()")
    sent = src.one("SELECT version FROM crsql_tracked_peers WHERE site_id = ? AND tag = 0 AND event = 1",
                   dst_site) or 0
    upto = src.one("SELECT crsql_db_version()")
    changes = src.sql('SELECT "table", pk, cid, val, col_version, db_version, site_id, cl, seq '
                      'FROM crsql_changes WHERE db_version > ? AND site_id IS NOT ?', sent, dst_site)
    if changes:
        dst.sql("BEGIN")
        dst.many("INSERT INTO crsql_changes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", changes)
        dst.sql("INSERT OR REPLACE INTO crsql_tracked_peers(site_id, version, seq, tag, event) "
                "VALUES (?, ?, 0, 0, 0)", src_site, max(c[5] for c in changes))
        dst.sql("COMMIT")
    src.sql("INSERT OR REPLACE INTO crsql_tracked_peers(site_id, version, seq, tag, event) "
            "VALUES (?, ?, 0, 0, 1)", dst_site, upto)
    return len(changes)


@pytest.fixture
def pair(tmp_path, ext_path):
    nodes = []
    try:
        for name in ("a", "b"):
            n = Node(tmp_path / f"{name}.db", ext_path, make_env(), crsqlite=CRSQLITE)
            nodes.append(n)
            n.sql("SELECT insights_config('node_id', ?)", f"node-{name}")
            n.sql("CREATE TABLE items(id INTEGER PRIMARY KEY NOT NULL, v TEXT)")
            n.sql("SELECT crsql_as_crr('items')")
        yield nodes
    finally:
        for n in nodes:
            n.close()


def site(n):
    return n.one("SELECT crsql_site_id()")["$b"]


def test_pending_changes_and_versions_match_crsqlite(pair):
    a, b = pair
    a.many("INSERT INTO items VALUES (?, ?)", [[i, f"a{i}"] for i in range(5)])
    # no tracked peer yet: nothing to compare
    assert a.row("crsqlite") is None
    crsql_sync(a, b)
    crsql_sync(b, a)
    bsite, asite = site(b), site(a)
    r = a.row("crsqlite", bsite)
    assert r["role"] == "peer"
    assert r["pending_changes"] == 0 and r["status"] == "up_to_date" and r["lag_seconds"] == 0
    assert r["local_position"] == a.one("SELECT crsql_db_version()") == r["remote_position"]

    # lag happens: local writes not yet sent
    a.many("INSERT INTO items VALUES (?, ?)", [[i, f"a{i}"] for i in range(5, 12)])
    a.sql("UPDATE items SET v = 'changed' WHERE id < 3")
    a.sql("DELETE FROM items WHERE id = 4")
    sent = a.one("SELECT version FROM crsql_tracked_peers WHERE site_id = ? AND event = 1", blob(bsite))
    engine_pending = a.one("SELECT count(*) FROM crsql_changes WHERE db_version > ? AND site_id IS NOT ?",
                           sent, blob(bsite))
    version = a.one("SELECT crsql_db_version()")
    r = a.row("crsqlite", bsite)
    assert engine_pending > 0
    assert r["pending_changes"] == engine_pending
    assert r["local_position"] == version
    assert r["remote_position"] == sent
    assert r["lag_positions"] == version - sent
    assert r["status"] == "lagging"
    assert r["detail"]["sent_version"] == sent
    assert r["detail"]["local_site_id"] == asite
    time.sleep(1.2)
    r = a.row("crsqlite", bsite)
    assert r["lag_seconds"] >= 1.0

    # and goes away
    assert crsql_sync(a, b) == engine_pending
    r = a.row("crsqlite", bsite)
    assert r["pending_changes"] == 0 and r["lag_positions"] == 0
    assert r["status"] == "up_to_date" and r["lag_seconds"] == 0
    assert r["last_seen"] is not None

    # b received a's changes (their versions are b's now): nothing of its own
    # to send back, so b is up to date towards a although its version moved
    rb = b.row("crsqlite", asite)
    assert rb["pending_changes"] == 0 and rb["status"] == "up_to_date"
    assert rb["lag_positions"] == b.one("SELECT crsql_db_version()") - rb["remote_position"] > 0
    assert rb["detail"]["received_version"] == version
    b.sql("INSERT INTO items VALUES (100, 'from b')")
    rb = b.row("crsqlite", asite)
    assert rb["pending_changes"] == b.one(
        "SELECT count(*) FROM crsql_changes WHERE db_version > ? AND site_id IS NOT ?",
        rb["remote_position"], blob(asite)) == 1
    assert rb["status"] == "lagging"
    crsql_sync(b, a)
    assert b.row("crsqlite", asite)["status"] == "up_to_date"
    assert a.one("SELECT v FROM items WHERE id = 100") == "from b"


def test_heartbeat_replicates_through_crsqlite_and_a_stopped_replica_turns_stale(pair):
    a, b = pair
    for n in (a, b):
        n.sql("SELECT insights_heartbeat()")
        n.sql("SELECT crsql_as_crr('insights_heartbeat')")
    interval = 200
    a.sql("SELECT insights_config('heartbeat_interval_ms', ?)", interval)
    b.sql("SELECT insights_config('sync_stale_ms', 1500)")
    b.sql("SELECT insights_config('flush_interval_ms', 100)")

    def beat(sync=True):
        a.sql("SELECT insights_heartbeat()")
        if sync:
            crsql_sync(a, b)

    for _ in range(6):
        beat()
        time.sleep(interval / 1000)
    r = b.row("heartbeat", "node-a")
    seq, beat_ms = a.sql("SELECT seq, beat_ms FROM insights_heartbeat WHERE node = 'node-a'")[0]
    assert r["local_position"] == seq >= 7
    assert r["status"] == "up_to_date", r
    assert r["detail"]["interval_ms"] == interval
    assert 0 <= r["lag_seconds"] < 1.0
    assert abs(r["lag_seconds"] - (time.time() * 1000 - beat_ms) / 1000) < 0.5

    # the replica stops receiving; the writer keeps beating
    stop = time.monotonic()
    while time.monotonic() - stop < 2.5:
        beat(sync=False)
        time.sleep(interval / 1000)
    r = b.row("heartbeat", "node-a")
    assert r["status"] == "stale", r
    assert r["lag_seconds"] > 1.5
    assert r["local_position"] == seq
    a_seq = a.one("SELECT seq FROM insights_heartbeat WHERE node = 'node-a'")
    # missed beats: by the beat's interval, as many as the writer wrote since
    assert r["lag_positions"] == math.floor(r["lag_seconds"] * 1000 / interval)
    assert abs(r["lag_positions"] - (a_seq - seq)) <= 3

    # replication resumes: lag goes away
    for _ in range(3):
        beat()
        time.sleep(interval / 1000)
    r = b.row("heartbeat", "node-a")
    assert r["status"] == "up_to_date", r
    assert r["local_position"] == a.one("SELECT seq FROM insights_heartbeat WHERE node = 'node-a'")
    assert r["lag_seconds"] < 1.0
    assert r["detail"]["seq_gaps"] >= a_seq - seq - 1

    # the flusher sampled all three phases into b's store
    wait_for(lambda: b.one("SELECT count(*) FROM insights_sync_history WHERE peer = 'node-a' "
                           "AND source = 'heartbeat' AND status = 'up_to_date' AND at > ?",
                           r["last_seen"]), what="a sample after recovery")
    statuses = {s for (s,) in b.sql("SELECT status FROM insights_sync_history "
                                     "WHERE peer = 'node-a' AND source = 'heartbeat'")}
    assert {"up_to_date", "stale"} <= statuses

    # background beats cannot write a CRR table (no cr-sqlite in our own
    # connection): the writer says so once, in its events
    wait_for(lambda: a.one("SELECT count(*) FROM insights_events WHERE kind = 'heartbeat_error'"),
             timeout=5, what="heartbeat_error event")
