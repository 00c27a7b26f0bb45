"""insights_connections: connections per database in this process and across
processes sharing the store, dead processes ageing out, lock contention.

Several real /usr/bin/python3 processes hold connections at once; flush
rounds every 200 ms so that each registers itself quickly.
"""

import json
import os
import signal
import sqlite3
import subprocess
import textwrap
import time

import pytest

from conftest import EXT, PRELUDE, RESULT_MARK, ROOT, make_env

FAST = {"SQLITE_INSIGHTS_FLUSH_INTERVAL_MS": "200"}

COLS = ["database", "scope", "pid", "host", "status", "started_at", "last_seen", "processes",
        "connections_open", "connections_peak", "connections_opened", "connections_closed",
        "busy", "locked", "open_failures", "bucket_start"]


def src(code, args):
    return (PRELUDE.format(ext=str(EXT), mark=RESULT_MARK)
            + f"\nARGS = json.loads({json.dumps(json.dumps(args))})\n"
            + textwrap.dedent(code))


HOLDER = """
import time
cons = []
for i in range(ARGS["n"]):
    c = sqlite3.connect(ARGS["db"], isolation_level=None)
    if i == 0:
        load(c)  # later connections are instrumented by the auto-extension
    c.execute("SELECT count(*) FROM sqlite_schema").fetchall()
    cons.append(c)
print("ready", flush=True)
sys.stdin.readline()   # hold until told (or killed)
for c in cons:
    c.close()
"""


def spawn_holder(db, n, env=FAST):
    p = subprocess.Popen(["/usr/bin/python3", "-c", src(HOLDER, {"db": db, "n": n})],
                         env=make_env(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready", p.stderr.read()
    return p


READ = """
import time
con = sqlite3.connect(ARGS["db"], isolation_level=None)
load(con)
deadline = time.monotonic() + ARGS.get("wait", 10)
want = ARGS.get("want")
while True:
    procs = dicts(con, ARGS["cols"], "insights_connections", "scope = 'process'")
    total = dicts(con, ARGS["cols"], "insights_connections", "scope = 'all'")
    pids = sorted(p["pid"] for p in procs if p["status"] != "self")
    if want is None or pids == sorted(want) or time.monotonic() > deadline:
        break
    time.sleep(0.1)
time.sleep(ARGS.get("linger", 0))  # let a flush round run before leaving
emit({"procs": procs, "total": total, "me": os.getpid()})
"""


def read(run_py, db, want=None, wait=10, linger=0):
    return run_py(READ, env=FAST, args={"db": db, "cols": COLS, "want": want, "wait": wait,
                                        "linger": linger})


def test_cross_process_counts_and_sigkill_ages_out(run_py, tmp_path):
    db = str(tmp_path / "many.db")
    sqlite3.connect(db).execute("CREATE TABLE t(x)").connection.close()
    holders = [spawn_holder(db, n) for n in (2, 3, 4)]
    try:
        want = {p.pid: n for p, n in zip(holders, (2, 3, 4))}
        time.sleep(0.6)  # a few rounds: every holder has registered
        r = read(run_py, db, want=list(want))
        procs = {p["pid"]: p for p in r["procs"]}
        assert set(procs) == set(want) | {r["me"]}
        for pid, n in want.items():
            p = procs[pid]
            assert p["connections_open"] == n and p["connections_opened"] == n
            assert p["connections_peak"] == n and p["status"] == "alive"
            assert p["host"] == os.uname().nodename and p["started_at"].endswith("Z")
        me = procs[r["me"]]
        assert me["status"] == "self" and me["connections_open"] == 1
        (total,) = r["total"]
        assert total["processes"] == 4 and total["connections_open"] == 2 + 3 + 4 + 1
        assert total["connections_peak"] >= 9
        # SIGKILL one holder: it can say nothing, its pid check drops it at once
        victim = holders[1]
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        del want[victim.pid]
        r = read(run_py, db, want=list(want))
        procs = {p["pid"]: p for p in r["procs"]}
        assert victim.pid not in procs
        (total,) = r["total"]
        assert total["processes"] == 3 and total["connections_open"] == 2 + 4 + 1
        # and the next round of any live process deletes its row from the store
        time.sleep(0.6)
        store = sqlite3.connect(db + ".insights")
        pids = {p for (p,) in store.execute("SELECT pid FROM processes")}
        store.close()
        assert victim.pid not in pids and set(want) <= pids
    finally:
        for p in holders:
            if p.poll() is None:
                p.stdin.close()
                p.wait(timeout=30)
    # holders that closed their connections and exited leave no live rows
    r = read(run_py, db, want=[])
    assert {p["status"] for p in r["procs"]} == {"self"}
    assert r["total"][0]["connections_opened"] >= 2 + 3 + 4 + 1


def test_other_hosts_age_out_by_time(run_py, tmp_path):
    """Rows of another host cannot be checked by pid: they count while they
    were refreshed within 3 flush intervals (+5 s), then age out."""
    db = str(tmp_path / "hosts.db")
    run_py("""
con = sqlite3.connect(ARGS["db"]); load(con); con.execute("CREATE TABLE t(x)"); con.commit()
one(con, "SELECT insights_flush()")
import time; time.sleep(0.5)
emit(1)
""", env=FAST, args={"db": db})
    store = sqlite3.connect(db + ".insights")
    now = int(time.time() * 1000)
    rows = [("far|boot|ns", 4242, "far", -1, now - 60_000, now, 10_000, 5, 7, 9, 4),
            ("gone|boot|ns", 4343, "gone", -1, now - 90_000, now - 60_000, 10_000, 3, 3, 3, 0)]
    store.executemany(
        "INSERT OR REPLACE INTO processes(host_key, pid, host, start_ticks, started_ms, last_seen_ms, interval_ms,"
        " connections_open, connections_peak, connections_opened, connections_closed) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        rows)
    store.commit()
    r = read(run_py, db, want=[4242], wait=3, linger=0.6)
    procs = {p["pid"]: p for p in r["procs"]}
    assert 4343 not in procs
    assert procs[4242]["status"] == "recent" and procs[4242]["host"] == "far"
    assert procs[4242]["connections_open"] == 5
    assert r["total"][0]["connections_open"] == 5 + 1 and r["total"][0]["processes"] == 2
    (left,) = store.execute("SELECT count(*) FROM processes WHERE pid = 4343").fetchone()
    store.close()
    assert left == 0  # deleted by the reader process's round


CONTENTION = """
import time
db = ARGS["db"]
holder = sqlite3.connect(db, isolation_level=None)
load(holder)
holder.execute("CREATE TABLE IF NOT EXISTS t(x)")
writer = sqlite3.connect(db, isolation_level=None, timeout=0)
holder.execute("BEGIN IMMEDIATE")
holder.execute("INSERT INTO t VALUES (1)")
busy = 0
for i in range(ARGS["n"]):
    try:
        writer.execute("INSERT INTO t VALUES (2)")
    except sqlite3.OperationalError as e:
        assert "locked" in str(e), e
        busy += 1
holder.execute("COMMIT")
writer.execute("INSERT INTO t VALUES (3)")  # fine again
# SQLITE_LOCKED: dropping a table a running statement of the same connection reads
cur = writer.execute("SELECT x FROM t")
cur.fetchone()
try:
    writer.execute("DROP TABLE t")
    locked = 0
except sqlite3.OperationalError as e:
    locked = 1 if "locked" in str(e) else 0
cur.close()
one(writer, "SELECT insights_flush()")
time.sleep(0.5)
me = dicts(writer, ARGS["cols"], "insights_connections", "scope = 'process' AND status = 'self'")
allrow = dicts(writer, ARGS["cols"], "insights_connections", "scope = 'all'")
minute = dicts(writer, ARGS["cols"] + ["resolution"], "insights_connections", "resolution = 'minute'")
hour = dicts(writer, ARGS["cols"], "insights_connections", "resolution = 'hour'")
qbusy = one(writer, "SELECT sum(busy) FROM insights_queries WHERE scope = 'process'")
err = attempt(writer, "SELECT * FROM insights_connections WHERE resolution = 'week'")
emit({"busy": busy, "locked": locked, "me": me, "all": allrow, "minute": minute, "hour": hour,
      "qbusy": qbusy, "err": err})
"""


def test_lock_contention_is_counted(run_py, tmp_path):
    db = str(tmp_path / "busy.db")
    # preloaded: the error log is ours from the start, so SQLITE_LOCKED (an
    # error only the log reveals on SQLite 3.40) is seen too
    env = dict(FAST, LD_PRELOAD=str(EXT))
    r = run_py(CONTENTION, env=env, args={"db": db, "n": 7, "cols": COLS})
    assert r["busy"] == 7
    (me,) = r["me"]
    assert me["busy"] == 7 == r["qbusy"]
    (a,) = r["all"]
    assert a["busy"] == 7
    # counts over time: the minute and hour buckets hold the same contention
    assert sum(b["busy"] for b in r["minute"]) == 7 and sum(b["busy"] for b in r["hour"]) == 7
    assert all(b["scope"] == "all" and b["resolution"] == "minute" for b in r["minute"])
    assert max(b["connections_peak"] for b in r["minute"]) >= 2
    assert sum(b["connections_opened"] for b in r["minute"]) >= 2
    assert r["err"][0] == "err" and "resolution must be 'minute', 'hour' or 'day'" in r["err"][2]
    assert r["locked"] == 1
    if "note_failure" not in (ROOT / "src" / "capture.rs").read_text():
        pytest.xfail("SQLITE_LOCKED needs capture.rs to call connections::note_failure")
    assert me["locked"] == 1 and a["locked"] == 1
    assert sum(b["locked"] for b in r["minute"]) == 1


def test_contention_from_another_process(run_py, tmp_path):
    """The lock is held by another process; this process's failed writes
    show up in its own row and in the database's totals."""
    db = str(tmp_path / "busy2.db")
    sqlite3.connect(db).execute("CREATE TABLE t(x)").connection.close()
    code = """
holder = sqlite3.connect(ARGS["db"], isolation_level=None)
holder.execute("BEGIN IMMEDIATE")
holder.execute("INSERT INTO t VALUES (1)")
print("ready", flush=True)
sys.stdin.readline()
holder.execute("COMMIT")
"""
    p = subprocess.Popen(["/usr/bin/python3", "-c", src(code, {"db": db})], env=make_env(FAST),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        r = run_py("""
import time
con = sqlite3.connect(ARGS["db"], isolation_level=None, timeout=0)
load(con)
n = 0
for i in range(5):
    try:
        con.execute("INSERT INTO t VALUES (2)")
    except sqlite3.OperationalError:
        n += 1
emit({"n": n, "me": dicts(con, ["busy"], "insights_connections", "status = 'self'"),
      "all": dicts(con, ["busy"], "insights_connections", "scope = 'all'")})
""", env=FAST, args={"db": db})
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    assert r["n"] == 5 and r["me"] == [{"busy": 5}] and r["all"] == [{"busy": 5}]


def test_open_failures_when_error_log_is_active(run_py, tmp_path, venv_python):
    """A failed open is seen only through the error log (apsw's SQLite is
    recent enough to take our log callback at load)."""
    if "note_open_failure" not in (ROOT / "src" / "errlog.rs").read_text():
        pytest.xfail("open failures need errlog.rs to call connections::note_open_failure")
    db = str(tmp_path / "ok.db")
    missing = str(tmp_path / "no" / "such" / "dir" / "x.db")
    r = run_py("""
import apsw
con = apsw.Connection(ARGS["db"])
load(con)
for i in range(3):
    try:
        apsw.Connection(ARGS["missing"])
    except apsw.CantOpenError:
        pass
emit(dicts(con, ["database", "open_failures"], "insights_connections", "scope = 'all'"))
""", python=venv_python, env=FAST, args={"db": db, "missing": missing})
    got = {x["database"]: x["open_failures"] for x in r}
    assert got == {db: 0, missing: 3}
