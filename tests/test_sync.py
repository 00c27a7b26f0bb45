"""insights_sync without an engine: heartbeats (function, table, background
beats, lag and stale), reports from a home-grown replication layer, roles,
LiteFS position files (documented format), the sampled history, and the
errors of each function. Each check runs in fresh /usr/bin/python3
processes with the extension loaded (see conftest.py)."""
import json
import os
import socket
import sqlite3
import time

import pytest

PRE = """
import time
SYNC_COLS = ["database", "node", "peer", "source", "role", "local_position", "remote_position",
             "lag_positions", "lag_seconds", "pending_changes", "status", "last_seen", "detail"]
def sync_rows(con, where="1", *params):
    out = []
    for r in con.execute("SELECT " + ", ".join(SYNC_COLS) + " FROM insights_sync WHERE " + where, params):
        d = dict(zip(SYNC_COLS, r))
        d["detail"] = json.loads(d["detail"])
        out.append(d)
    return out
def connect(path):
    con = sqlite3.connect(path, isolation_level=None)
    load(con)
    return con
"""


def test_heartbeat_writes_the_documented_table(run_py, db_path):
    r = run_py(PRE + """
con = connect(ARGS["db"])
default_node = one(con, "SELECT insights_config('node_id')")
seqs = [one(con, "SELECT insights_heartbeat()") for _ in range(3)]
cols = [list(c[1:4]) + [c[5]] for c in con.execute("PRAGMA table_info(insights_heartbeat)")]
row = rows(con, "SELECT node, seq, beat_at, interval_ms, position, position_source FROM insights_heartbeat")
ms = one(con, "SELECT beat_ms FROM insights_heartbeat")
one(con, "SELECT insights_config('node_id', 'writer-1')")
one(con, "SELECT insights_heartbeat('pos-42')")
second = rows(con, "SELECT node, seq, position, position_source FROM insights_heartbeat ORDER BY node")
# the beat joins the caller's transaction
con.execute("BEGIN")
one(con, "SELECT insights_heartbeat()")
con.execute("ROLLBACK")
after = one(con, "SELECT seq FROM insights_heartbeat WHERE node = 'writer-1'")
emit({"default": default_node, "seqs": seqs, "cols": cols, "row": row, "ms": ms, "second": second,
      "after": after, "host": os.uname().nodename,
      "queries": [q for (q,) in con.execute("SELECT query FROM insights_queries WHERE query LIKE '%insights_heartbeat%'")]})
""", args={"db": db_path})
    host, suffix = r["default"].rsplit(":", 1)
    assert host == r["host"] and len(suffix) == 8
    assert r["seqs"] == [1, 2, 3]
    assert r["cols"] == [
        ["node", "TEXT", 1, 1], ["seq", "INTEGER", 1, 0], ["beat_at", "TEXT", 1, 0],
        ["beat_ms", "INTEGER", 1, 0], ["interval_ms", "INTEGER", 1, 0], ["position", "TEXT", 0, 0],
        ["position_source", "TEXT", 0, 0]]
    node, seq, beat_at, interval, pos, src = r["row"][0]
    assert node == r["default"] and seq == 3 and interval == 0 and pos is None and src is None
    assert beat_at.endswith("Z") and abs(r["ms"] / 1000 - time.time()) < 30
    assert r["second"] == [[r["default"], 3, None, None], ["writer-1", 1, "pos-42", "reported"]]
    assert r["after"] == 1
    # the user-requested statements show as the queries they are
    assert any(q.startswith("UPDATE insights_heartbeat") for q in r["queries"])


def test_heartbeat_lag_missed_beats_and_stale(run_py, db_path):
    # a writer process beats; a reader process (another node id) sees its lag
    run_py(PRE + """
con = connect(ARGS["db"])
one(con, "SELECT insights_config('node_id', 'w')")
one(con, "SELECT insights_config('heartbeat_interval_ms', 200)")
one(con, "SELECT insights_heartbeat()")
emit(1)
""", args={"db": db_path})
    r = run_py(PRE + """
con = connect(ARGS["db"])
one(con, "SELECT insights_config('node_id', 'r')")
one(con, "SELECT insights_config('sync_lag_ms', 500)")
one(con, "SELECT insights_config('sync_stale_ms', 1500)")
seen = []
for wait in (0, 0.7, 1.0):
    time.sleep(wait)
    seen.append(sync_rows(con, "source = 'heartbeat'"))
emit([seen, one(con, "SELECT seq FROM insights_heartbeat WHERE node = 'w'")])
""", args={"db": db_path})
    seen, seq = r
    first, second, third = (x[0] for x in seen)
    assert first["peer"] == "w" and first["node"] == "r" and first["role"] == "writer"
    # (the writer's background thread may have beaten once more before exit)
    assert first["status"] == "up_to_date" and first["local_position"] == seq
    assert second["status"] == "lagging" and second["lag_seconds"] >= 0.5
    assert second["lag_positions"] == int(second["lag_seconds"] * 1000 // 200)
    assert second["remote_position"] == seq + second["lag_positions"]
    assert third["status"] == "stale" and third["lag_seconds"] > 1.5
    assert third["last_seen"] == first["detail"]["beat_at"] == first["last_seen"]


def test_background_heartbeat_on_writers_only(run_py, tmp_path):
    w, rep = str(tmp_path / "w.db"), str(tmp_path / "r.db")
    r = run_py(PRE + """
w = connect(ARGS["w"]); r = connect(ARGS["r"])
one(r, "SELECT insights_config('sync_role', 'replica')")
one(w, "SELECT insights_config('heartbeat_interval_ms', 100)")
time.sleep(1.0)
seq = one(w, "SELECT seq FROM insights_heartbeat")
interval = one(w, "SELECT interval_ms FROM insights_heartbeat")
has_r = one(r, "SELECT count(*) FROM sqlite_master WHERE name = 'insights_heartbeat'")
one(w, "SELECT insights_config('heartbeat_interval_ms', 0)")
time.sleep(0.4)
stopped = one(w, "SELECT seq FROM insights_heartbeat")
time.sleep(0.5)
emit({"seq": seq, "interval": interval, "has_r": has_r, "stopped": stopped,
      "still": one(w, "SELECT seq FROM insights_heartbeat"),
      "roles": [one(w, "SELECT insights_config('sync_role')"), one(r, "SELECT insights_config('sync_role')")]})
""", args={"w": w, "r": rep})
    assert r["seq"] >= 5 and r["interval"] == 100
    assert r["has_r"] == 0  # nothing written into a replica's database
    assert r["still"] == r["stopped"]
    assert r["roles"] == ["writer", "replica"]


def test_report_lag_status_and_other_processes(run_py, db_path):
    r = run_py(PRE + """
con = connect(ARGS["db"])
st = [one(con, "SELECT insights_sync_report('replica-1', 120, 100, 20)")]
row = sync_rows(con, "source = 'report'")[0]
st.append(one(con, "SELECT insights_sync_report('replica-1', 130, 130, 0)"))
st.append(one(con, "SELECT insights_sync_report('replica-2', 5, 9, NULL, 'mylayer', '{\\"lag_seconds\\": 7.5, \\"role\\": \\"replica\\", \\"region\\": \\"eu\\"}')"))
rows2 = sync_rows(con, "peer = 'replica-2'")
emit({"st": st, "row": row, "rows2": rows2})
""", args={"db": db_path})
    assert r["st"] == ["lagging", "up_to_date", "lagging"]
    row = r["row"]
    assert row["peer"] == "replica-1" and row["local_position"] == 120 and row["remote_position"] == 100
    assert row["lag_positions"] == 20 and row["pending_changes"] == 20
    assert row["detail"]["ahead"] == "local"
    r2 = r["rows2"][0]
    assert r2["source"] == "mylayer" and r2["role"] == "replica" and r2["lag_seconds"] == 7.5
    assert r2["detail"]["ahead"] == "remote" and r2["detail"]["reported"]["region"] == "eu"
    # another process of the node sees the reports (kept in the store) and
    # judges them by their age
    r = run_py(PRE + """
con = connect(ARGS["db"])
a = {(x["peer"], x["source"]): x["status"] for x in sync_rows(con)}
one(con, "SELECT insights_config('sync_stale_ms', 100)")
time.sleep(0.2)
b = {(x["peer"], x["source"]): x["status"] for x in sync_rows(con)}
emit([sorted(a.items()), sorted(b.items())])
""", args={"db": db_path})
    assert r[0] == [[["replica-1", "report"], "up_to_date"], [["replica-2", "mylayer"], "lagging"]]
    assert r[1] == [[["replica-1", "report"], "stale"], [["replica-2", "mylayer"], "stale"]]


def test_function_errors(run_py, db_path):
    r = run_py(PRE + """
con = connect(ARGS["db"])
cases = [
  "SELECT insights_heartbeat(1, 2)",
  "SELECT insights_heartbeat(?)",
  "SELECT insights_sync_report('p', 1)",
  "SELECT insights_sync_report(NULL, 1, 2)",
  "SELECT insights_sync_report(' p', 1, 2)",
  "SELECT insights_sync_report('p', 'x', 2)",
  "SELECT insights_sync_report('p', 1.5, 2)",
  "SELECT insights_sync_report('p', NULL, NULL)",
  "SELECT insights_sync_report('p', 1, 2, -1)",
  "SELECT insights_sync_report('p', 1, 2, 0, 'heartbeat')",
  "SELECT insights_sync_report('p', 1, 2, 0, 'crsqlite')",
  "SELECT insights_sync_report('p', 1, 2, 0, 'r', 1, 2)",
  "SELECT insights_config('node_id', 'a' || char(10) || 'b')",
  "SELECT insights_config('sync_role', 'boss')",
  "SELECT insights_config('libsql_primary_url', 'https://x/metrics')",
  "SELECT insights_config('litestream_replica', '/nonexistent/dir')",
  "SELECT insights_config('heartbeat_interval_ms', -1)",
  "SELECT * FROM insights_sync_history WHERE at > 'yesterday'",
  "SELECT * FROM insights_sync_history WHERE at > 5",
]
out = [attempt(con, c, "p" * 300) if "?" in c else attempt(con, c) for c in cases]
# reset to default works and is not an error
out.append(attempt(con, "SELECT insights_config('node_id', NULL) = insights_config('node_id', 'default')"))
# a schema cannot call them (DIRECTONLY)
con.execute("CREATE VIEW v AS SELECT insights_heartbeat() AS x")
out.append(attempt(con, "SELECT * FROM v"))
out.append(attempt(con, "INSERT INTO insights_sync(peer) VALUES ('x')"))
emit(out)
""", args={"db": db_path})
    msgs = [x[2] if x[0] == "err" else x for x in r]
    expect_prefix = ["insights_heartbeat: takes 0 to 1 arguments",
                     "insights_heartbeat: position is longer than 256 bytes",
                     "insights_sync_report: takes 3 to 6 arguments",
                     "insights_sync_report: peer must be text",
                     "insights_sync_report: peer must be 1 to 256 bytes",
                     "insights_sync_report: local_position must be an integer",
                     "insights_sync_report: local_position must be an integer",
                     "insights_sync_report: give at least one of",
                     "insights_sync_report: pending_changes must not be negative",
                     "insights_sync_report: source 'heartbeat' is read from the engine",
                     "insights_sync_report: source 'crsqlite' is read from the engine",
                     "insights_sync_report: takes 3 to 6 arguments",
                     "insights_config: node_id must be 1 to 256 bytes",
                     "insights_config: sync_role must be",
                     "insights_config: libsql_primary_url must be http://",
                     "insights_config: litestream_replica must be an existing directory",
                     "insights_config: heartbeat_interval_ms must be an integer",
                     "insights_sync_history: at: not an instant",
                     "insights_sync_history: at must be compared with text"]
    for m, want in zip(msgs, expect_prefix):
        assert isinstance(m, str) and m.startswith(want), (m, want)
    assert r[len(expect_prefix)] == ["ok", [[1]]]
    assert r[-2][0] == "err" and "unsafe use of insights_heartbeat" in r[-2][2]
    assert r[-1][0] == "err" and "may not be modified" in r[-1][2]


def test_litefs_position_files(run_py, tmp_path):
    # a LiteFS mount as its docs describe it: <db>-pos and, on replicas, .primary
    mount = tmp_path / "litefs"
    mount.mkdir()
    db = mount / "app.db"
    sqlite3.connect(db).close()
    (mount / "app.db-pos").write_text("00000000000000a0/ce552e44f23fbbdd\n")
    r = run_py(PRE + """
con = connect(ARGS["db"])
primary = sync_rows(con, "source = 'litefs'")
open(ARGS["primary_file"], "w").write("node-1\\n")
replica = sync_rows(con, "source = 'litefs'")
role = one(con, "SELECT insights_config('sync_role')")
one(con, "SELECT insights_sync_report('node-1', 160, 170, NULL, 'litefs')")
reported = sync_rows(con, "source = 'litefs'")
one(con, "SELECT insights_heartbeat()")
pos = rows(con, "SELECT position, position_source FROM insights_heartbeat")
emit({"primary": primary, "replica": replica, "reported": reported, "role": role, "pos": pos})
""", args={"db": str(db), "primary_file": str(mount / ".primary")})
    p = r["primary"][0]
    assert p["role"] == "writer" and p["local_position"] == 0xa0 and p["status"] == "up_to_date"
    assert p["detail"]["checksum"] == "ce552e44f23fbbdd"
    rep = r["replica"][0]
    assert rep["role"] == "replica" and rep["peer"] == "node-1" and rep["status"] == "unknown"
    assert r["role"] == "replica"
    rr = r["reported"][0]
    assert rr["remote_position"] == 170 and rr["lag_positions"] == 170 - 0xa0 and rr["status"] == "lagging"
    assert r["pos"] == [[str(0xa0), "litefs"]]


def test_sync_history_is_sampled_and_filtered(run_py, db_path):
    r = run_py(PRE + """
con = connect(ARGS["db"])
one(con, "SELECT insights_config('flush_interval_ms', 100)")
one(con, "SELECT insights_sync_report('p1', 10, 5)")
time.sleep(0.5)
mid = one(con, "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')")
one(con, "SELECT insights_sync_report('p1', 10, 10)")
time.sleep(0.5)
allrows = rows(con, "SELECT at, peer, source, status, lag_positions, database FROM insights_sync_history ORDER BY at")
after = rows(con, "SELECT status FROM insights_sync_history WHERE at > ? AND peer = 'p1'", mid)
none = rows(con, "SELECT * FROM insights_sync_history WHERE at < '2000-01-01'")
emit({"all": allrows, "after": after, "none": none})
""", args={"db": db_path})
    statuses = [x[3] for x in r["all"] if x[1] == "p1"]
    assert "lagging" in statuses and "up_to_date" in statuses
    assert statuses.index("lagging") < len(statuses) - 1 - statuses[::-1].index("up_to_date")
    assert all(x[5] == db_path for x in r["all"])
    assert r["after"] and {s for (s,) in r["after"]} == {"up_to_date"}
    assert r["none"] == []
    # the store holds them for any reader
    con = sqlite3.connect(db_path + ".insights")
    n = con.execute("SELECT count(*) FROM sync_history WHERE peer = 'p1'").fetchone()[0]
    con.close()
    assert n >= len(statuses)  # (the exiting process may sample once more)


def test_memory_databases_and_no_engines_show_nothing(run_py):
    r = run_py(PRE + """
con = connect(":memory:")
one(con, "SELECT insights_heartbeat()")
emit([rows(con, "SELECT count(*) FROM insights_sync"), one(con, "SELECT seq FROM insights_heartbeat")])
""")
    assert r == [[[0]], 1]
