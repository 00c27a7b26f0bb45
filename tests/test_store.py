"""The sidecar store: many processes, crashes, unwritable stores, history.

Each process below is a real host (Debian's sqlite3 shell or /usr/bin/python3)
with the extension loaded; the store is `<db>.insights` next to the database.
"""

import json
import os
import random
import signal
import sqlite3
import subprocess
import time

import pytest

from conftest import EXT, make_env, run_snippet, parse_result


def read_store(path, sql, *params):
    """Read the store file with a plain connection of this process (pytest's
    own process never loads the extension)."""
    con = sqlite3.connect(path)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def shell(db, script, env=None):
    proc = subprocess.run(
        ["sqlite3", "-batch", db],
        input=f".load {EXT}\n" + script,
        capture_output=True,
        text=True,
        env=make_env(env),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


WORKLOAD_PY = """
con = sqlite3.connect(ARGS["db"], timeout=30)
load(con)
con.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
for i in range(ARGS["inserts"]):
    con.execute("INSERT INTO t(v) VALUES (?)", (str(i),))
    con.commit()
for i in range(ARGS["selects"]):
    con.execute("SELECT v FROM t WHERE id = ?", (i + 1,)).fetchall()
con.close()
emit("done")
"""


def test_processes_of_different_hosts_sum_exactly(run_py, tmp_path):
    db = str(tmp_path / "shared.db")
    # two Python processes and one shell process, each with a known workload
    for inserts, selects in [(30, 50), (20, 7)]:
        run_py(WORKLOAD_PY, args={"db": db, "inserts": inserts, "selects": selects})
    script = "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT);\n"
    script += "".join(f"INSERT INTO t(v) VALUES ('s{i}');\n" for i in range(11))
    script += "".join(f"SELECT v FROM t WHERE id = {i + 1};\n" for i in range(13))
    shell(db, script)
    got = run_py(
        """
con = sqlite3.connect(ARGS["db"])
load(con)
rows = {q: [c, r] for q, c, r in rows(con, "SELECT query, calls, rows_affected FROM insights_queries")}
local = one(con, "SELECT count(*) FROM insights_queries WHERE scope = 'process' AND query LIKE 'INSERT%'")
emit({"rows": rows, "local_inserts": local})
""",
        args={"db": db},
    )
    rows = got["rows"]
    assert rows["INSERT INTO t(v) VALUES (?)"] == [30 + 20 + 11, 61]
    assert rows["SELECT v FROM t WHERE id = ?"][0] == 50 + 7 + 13
    # the reading process itself ran no INSERT: its own scope has none
    assert got["local_inserts"] == 0
    st = read_store(db + ".insights", "SELECT value FROM insights_meta WHERE key = 'schema_version'")
    assert st == [("1",)]
    assert read_store(db + ".insights", "PRAGMA journal_mode") == [("wal",)]


def test_concurrent_flushes_lose_nothing(tmp_path):
    db = str(tmp_path / "race.db")
    sqlite3.connect(db).execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)").connection.close()
    code = """
con = sqlite3.connect(ARGS["db"], timeout=60)
load(con)
for i in range(ARGS["n"]):
    con.execute("SELECT count(*) FROM t WHERE id > ?", (i,)).fetchall()
    if i % 50 == 0:
        con.execute("SELECT insights_flush()").fetchall()
con.close()
emit("ok")
"""
    env = {"SQLITE_INSIGHTS_FLUSH_INTERVAL_MS": "100"}
    procs = [
        subprocess.Popen(
            ["/usr/bin/python3", "-c", _src(code, {"db": db, "n": 400 + 100 * k})],
            env=make_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(4)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    calls = read_store(
        db + ".insights",
        "SELECT calls FROM totals WHERE query = 'SELECT count(*) FROM t WHERE id > ?'",
    )
    assert calls == [(400 + 500 + 600 + 700,)]
    hist = read_store(
        db + ".insights",
        "SELECT resolution, sum(h.calls) FROM history h JOIN totals t USING (fingerprint) "
        "WHERE t.query = 'SELECT count(*) FROM t WHERE id > ?' GROUP BY resolution ORDER BY 1",
    )
    assert hist == [("day", 2200), ("hour", 2200), ("minute", 2200)]


def _src(code, args):
    from conftest import PRELUDE, RESULT_MARK
    import textwrap

    return (
        PRELUDE.format(ext=str(EXT), mark=RESULT_MARK)
        + f"\nARGS = json.loads({json.dumps(json.dumps(args))})\n"
        + textwrap.dedent(code)
    )


KILL_CHILD = """
import time
con = sqlite3.connect(ARGS["db"], timeout=30)
load(con)
n = 0
while True:
    for j in range(50):
        # 500 distinct fingerprints keep every flush busy
        con.execute("SELECT %d AS c%d" % (n, n % 500)).fetchall()
        n += 1
    sys.stdout.write("%d %.6f\\n" % (n, time.monotonic()))
    sys.stdout.flush()
"""


def test_sigkill_while_flushing_loses_at_most_one_interval(tmp_path):
    db = str(tmp_path / "kill.db")
    sqlite3.connect(db).close()
    interval_s = 0.2
    env = {"SQLITE_INSIGHTS_FLUSH_INTERVAL_MS": str(int(interval_s * 1000))}
    rng = random.Random(7)
    stored_before = 0
    for round_ in range(5):
        p = subprocess.Popen(
            ["/usr/bin/python3", "-c", _src(KILL_CHILD, {"db": db})],
            env=make_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        progress = []
        deadline = time.monotonic() + 1.0 + rng.random() * 1.5
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            n, t = line.split()
            progress.append((int(n), float(t)))
        killed_at = time.monotonic()
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        assert progress, p.stderr.read()
        # the store opens and is intact
        assert read_store(db + ".insights", "PRAGMA integrity_check") == [("ok",)]
        stored = read_store(db + ".insights", "SELECT coalesce(sum(calls), 0) FROM totals WHERE query LIKE 'SELECT ? AS c%'")[0][0]
        this_round = stored - stored_before
        ran_at_least = progress[-1][0]
        ran_at_most = ran_at_least + 50
        assert this_round <= ran_at_most, (round_, this_round, ran_at_most)
        # everything that ran more than one interval before the kill is in the
        # store; slack covers the flush's own duration (a debug build writing
        # 500 fingerprints) and scheduling on a shared 2-core machine
        slack = 2.0
        old_enough = [n for n, t in progress if t <= killed_at - interval_s - slack]
        if old_enough:
            assert this_round >= old_enough[-1], (round_, this_round, old_enough[-1])
        stored_before = stored


def test_unwritable_store_never_fails_statements_and_recovers(run_py, tmp_path):
    db = str(tmp_path / "bad.db")
    store = db + ".insights"
    with open(store, "wb") as f:
        f.write(b"this is not a database" * 100)
    got = run_py(
        """
con = sqlite3.connect(ARGS["db"])
load(con)
con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
res = []
for i in range(20):
    con.execute("INSERT INTO t(v) VALUES (?)", (i,))
res.append(rows(con, "SELECT count(*), sum(v) FROM t"))
flush1 = attempt(con, "SELECT insights_flush()")
err1 = debug(con)["store"]["error"]
mem = one(con, "SELECT calls FROM insights_queries WHERE query = 'INSERT INTO t(v) VALUES (?)'")
os.remove(ARGS["store"])
flush2 = attempt(con, "SELECT insights_flush()")
err2 = debug(con)["store"]["error"]
con.commit()
emit({"res": res, "flush1": flush1, "err1": err1, "mem": mem, "flush2": flush2, "err2": err2})
""",
        args={"db": db, "store": store},
    )
    assert got["res"] == [[[20, 190]]]
    assert got["flush1"][0] == "err" and got["flush1"][2].startswith("insights_flush: ")
    assert "not a database" in got["err1"]
    assert got["mem"] == 20  # insights go on in memory
    assert got["flush2"][0] == "ok"
    assert got["err2"] is None
    assert read_store(store, "SELECT calls FROM totals WHERE query = 'INSERT INTO t(v) VALUES (?)'") == [(20,)]
    kinds = [k for (k,) in read_store(store, "SELECT kind FROM events ORDER BY id")]
    assert "store_recovered" in kinds


def test_store_dir_that_cannot_be_created(run_py, tmp_path):
    db = str(tmp_path / "ro.db")
    got = run_py(
        """
con = sqlite3.connect(ARGS["db"])
load(con)
con.execute("CREATE TABLE t(x)")
con.execute("INSERT INTO t VALUES (1)")
r = rows(con, "SELECT x FROM t")
f = attempt(con, "SELECT insights_flush()")
emit({"r": r, "f": f, "err": debug(con)["store"]["error"], "path": debug(con)["store_path"]})
""",
        env={"SQLITE_INSIGHTS_STORE_DIR": "/proc/self/fdinfo"},
        args={"db": db},
    )
    assert got["r"] == [[1]]
    assert got["path"].startswith("/proc/self/fdinfo/ro.db-")
    assert got["f"][0] == "err"
    assert got["err"]


def test_history_survives_restart_and_rollups_agree(run_py, tmp_path):
    db = str(tmp_path / "hist.db")
    run_py(WORKLOAD_PY, args={"db": db, "inserts": 25, "selects": 40})
    run_py(WORKLOAD_PY, args={"db": db, "inserts": 5, "selects": 3})
    got = run_py(
        """
con = sqlite3.connect(ARGS["db"])
load(con)
fp = one(con, "SELECT insights_fingerprint('SELECT v FROM t WHERE id = ?')")
h = rows(con, "SELECT resolution, bucket_start, calls, p50_ms, p99_ms, mean_ms FROM insights_history WHERE fingerprint = ? ORDER BY 1, 2", fp)
kinds = rows(con, "SELECT resolution, kind, sum(calls) FROM insights_history WHERE fingerprint IS NULL GROUP BY 1, 2 ORDER BY 1, 2")
plan = rows(con, "EXPLAIN QUERY PLAN SELECT * FROM insights_history WHERE bucket_start >= '2026-01-01' AND resolution = 'hour' AND fingerprint = 'x'")
since = rows(con, "SELECT count(*) FROM insights_history WHERE bucket_start >= datetime('now', '+1 day')")
bad = attempt(con, "SELECT * FROM insights_history WHERE resolution = 'week'")
emit({"fp": fp, "h": h, "kinds": kinds, "plan": plan, "since": since, "bad": bad})
""",
        args={"db": db},
    )
    h = got["h"]
    by_res = {}
    for res, start, calls, p50, p99, mean in h:
        by_res.setdefault(res, []).append((start, calls, p50, p99, mean))
    assert set(by_res) == {"minute", "hour", "day"}
    total = {res: sum(c for _, c, *_ in v) for res, v in by_res.items()}
    assert total == {"minute": 43, "hour": 43, "day": 43}
    # each hour equals the sum of its minutes; each day the sum of its hours
    for start, calls, *_ in by_res["hour"]:
        assert calls == sum(c for s, c, *_ in by_res["minute"] if s[:13] == start[:13])
    for start, calls, *_ in by_res["day"]:
        assert calls == sum(c for s, c, *_ in by_res["hour"] if s[:10] == start[:10])
    for res, rows_ in by_res.items():
        for _, _, p50, p99, mean in rows_:
            assert 0 < p50 <= p99
    kinds = {(r, k): c for r, k, c in got["kinds"]}
    assert kinds[("minute", "insert")] == 30
    assert kinds[("day", "insert")] == 30
    plan = " ".join(str(r[-1]) for r in got["plan"])
    assert "VIRTUAL TABLE INDEX" in plan and "0G;" in plan and "1e;" in plan and "2e;" in plan, plan
    assert got["since"] == [[0]]
    assert got["bad"][0] == "err" and "resolution must be" in got["bad"][2]


def test_reset_clears_store_and_is_recorded(run_py, tmp_path):
    db = str(tmp_path / "reset.db")
    run_py(WORKLOAD_PY, args={"db": db, "inserts": 3, "selects": 3})
    got = run_py(
        """
con = sqlite3.connect(ARGS["db"])
load(con)
before = one(con, "SELECT sum(calls) FROM insights_queries")
one(con, "SELECT insights_reset()")
after = one(con, "SELECT count(*) FROM insights_queries WHERE query NOT LIKE '%insights%'")
hist = one(con, "SELECT count(*) FROM insights_history")
emit({"before": before, "after": after, "hist": hist})
""",
        args={"db": db},
    )
    assert got["before"] >= 7
    assert got["after"] == 0
    assert got["hist"] == 0
    ev = read_store(db + ".insights", "SELECT kind, detail FROM events WHERE kind = 'reset'")
    assert ev == [("reset", "all")]


def test_retention_compacts_old_buckets(run_py, tmp_path):
    db = str(tmp_path / "ret.db")
    run_py(WORKLOAD_PY, args={"db": db, "inserts": 2, "selects": 2})
    store = db + ".insights"
    con = sqlite3.connect(store)
    for res, age_days in [("minute", 3), ("hour", 31), ("day", 400), ("minute", 1)]:
        start = time.strftime("%Y-%m-%dT%H:%M:00.000Z", time.gmtime(time.time() - age_days * 86400))
        con.execute(
            "INSERT INTO history(resolution, bucket_start, fingerprint, kind, calls) VALUES (?, ?, 'old', 'select', 1)",
            (res, start),
        )
    con.commit()
    con.close()
    # a new process: its first flush runs the housekeeping
    run_py(WORKLOAD_PY, args={"db": db, "inserts": 1, "selects": 1})
    left = read_store(store, "SELECT resolution FROM history WHERE fingerprint = 'old'")
    assert left == [("minute",)]  # only the 1-day-old minute bucket is kept


def test_store_location_rules(run_py, tmp_path):
    db = str(tmp_path / "loc.db")
    other = str(tmp_path / "elsewhere.insights")
    got = run_py(
        """
con = sqlite3.connect(ARGS["db"])
load(con)
default = one(con, "SELECT insights_config('store_path')")
mem = sqlite3.connect(":memory:")
mem_path = one(mem, "SELECT insights_config('store_path')")
set_ = one(con, "SELECT insights_config('store_path', ?)", ARGS["other"])
con.execute("CREATE TABLE t(x)")
one(con, "SELECT insights_flush()")
own = attempt(con, "SELECT insights_config('store_path', ?)", ARGS["db"])
nodir = attempt(con, "SELECT insights_config('store_path', '/nonexistent/dir/x.insights')")
off = one(con, "SELECT insights_config('store_path', 'off')")
emit({"default": default, "mem": mem_path, "set": set_, "own": own, "nodir": nodir, "off": off})
""",
        args={"db": db, "other": other},
    )
    assert got["default"] == db + ".insights"
    assert got["mem"] == "off"
    assert got["set"] == other
    assert os.path.exists(other)
    assert got["own"][0] == "err" and "must not be the database's own file" in got["own"][2]
    assert got["nodir"][0] == "err" and got["nodir"][2].startswith("insights_config: store_path directory")
    assert got["off"] == "off"
    got = run_py(
        """
con = sqlite3.connect(ARGS["db"])
load(con)
emit(one(con, "SELECT insights_config('store_path')"))
""",
        env={"SQLITE_INSIGHTS_STORE": "off"},
        args={"db": db},
    )
    assert got == "off"


def test_failures_of_other_processes_are_in_insights_errors(run_py, preload_env, tmp_path):
    db = str(tmp_path / "errs.db")
    run_py(
        """
con = sqlite3.connect(ARGS["db"], isolation_level=None)
load(con)
con.execute("CREATE TABLE t(v UNIQUE)")
con.execute("INSERT INTO t VALUES (1)")
for _ in range(2):
    try:
        con.execute("INSERT INTO t VALUES (1)")
    except sqlite3.IntegrityError:
        pass
con.close()
emit("ok")
""",
        env=preload_env,
        args={"db": db},
    )
    got = run_py(
        """
con = sqlite3.connect(ARGS["db"])
load(con)
emit({"all": rows(con, "SELECT query, phase, extended_code, message FROM insights_errors"),
      "mine": rows(con, "SELECT count(*) FROM insights_errors WHERE scope = 'process'"),
      "q": rows(con, "SELECT calls, errors, last_error FROM insights_queries WHERE query = 'INSERT INTO t VALUES (?)'")})
""",
        args={"db": db},
    )
    assert got["all"] == [["INSERT INTO t VALUES (?)", "step", 2067, "UNIQUE constraint failed: t.v"]] * 2
    assert got["mine"] == [[0]]
    assert got["q"] == [[3, 2, "UNIQUE constraint failed: t.v"]]
