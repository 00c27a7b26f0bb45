"""Host: /usr/bin/python3's stdlib sqlite3 (Debian, SQLite 3.40.1).

Loading, automatic instrumentation of later connections, counters, kinds,
tables, sqlcommenter tags, databases kept apart, reset/config/eviction,
argument validation, error capture in the three modes a 3.40 host can be in
(none, preload, disabled), and concurrency (threads, processes).

Every snippet runs in a fresh subprocess (see conftest.py), so counts are exact.
"""

import json
import re
import subprocess

import pytest

from conftest import SYSTEM_PYTHON, parse_result, run_snippet

# --------------------------------------------------------------------------
# Loading


def test_host_is_sqlite_3_40_and_debug_reports_it(run_py):
    r = run_py("""
        con = sqlite3.connect(":memory:")
        load(con)
        emit({"lib": sqlite3.sqlite_version, "sql": one(con, "SELECT sqlite_version()"),
              "debug": debug(con)})
    """)
    assert r["lib"].startswith("3.40."), "these tests target Debian's SQLite 3.40"
    assert r["debug"]["sqlite_version"] == r["sql"] == r["lib"]
    assert r["debug"]["capture_mode"] == "trace_v2"


def test_load_registers_functions_and_version(run_py):
    r = run_py("""
        con = sqlite3.connect(":memory:")
        before = attempt(con, "SELECT insights_version()")
        load(con)
        emit({"before": before, "version": one(con, "SELECT insights_version()"),
              "dbg": debug(con)})
    """)
    assert r["before"][0] == "err" and "no such function: insights_version" in r["before"][2]
    assert re.fullmatch(r"\d+\.\d+\.\d+", r["version"])
    assert r["dbg"]["version"] == r["version"]
    assert r["dbg"]["internal_errors"] == 0


def test_second_load_is_harmless(run_py, db_path):
    r = run_py("""
        con = sqlite3.connect(ARGS["db"], isolation_level=None)
        load(con)
        load(con)  # twice into the same connection
        con.execute("CREATE TABLE t(x)")
        for i in range(3):
            con.execute("INSERT INTO t VALUES (?)", (i,))
        later = sqlite3.connect(ARGS["db"], isolation_level=None)
        load(later)  # already instrumented by the auto-extension; load again
        for i in range(2):
            later.execute("SELECT count(*) FROM t").fetchall()
        emit({"ins": queries(con, "query = 'INSERT INTO t VALUES (?)'"),
              "sel": queries(con, "query = 'SELECT count(*) FROM t'"),
              "dbg": debug(con)})
    """, args={"db": db_path})
    assert [q["calls"] for q in r["ins"]] == [3]
    assert [q["rows_affected"] for q in r["ins"]] == [3]
    assert [q["calls"] for q in r["sel"]] == [2]
    assert [q["rows_returned"] for q in r["sel"]] == [2]
    assert r["dbg"]["connections_instrumented"] == 2
    assert r["dbg"]["internal_errors"] == 0


def test_connections_opened_later_are_instrumented(run_py, tmp_path):
    a, b = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    r = run_py("""
        first = sqlite3.connect(":memory:")
        load(first)
        later = sqlite3.connect(ARGS["b"], isolation_level=None)  # no load_extension
        later.execute("CREATE TABLE t(x)")
        later.execute("INSERT INTO t VALUES (1)")
        later.execute("INSERT INTO t VALUES (2)")
        emit({"version": one(later, "SELECT insights_version()"),
              "rows": queries(later, "database = ?", ARGS["b"]),
              "info": rows(later, "SELECT database, connections_open FROM insights_info WHERE database = ?", ARGS["b"])})
    """, args={"a": a, "b": b})
    assert r["version"]
    by_query = {q["query"]: q for q in r["rows"]}
    assert by_query["INSERT INTO t VALUES (?)"]["calls"] == 2
    assert by_query["CREATE TABLE t(x)"]["kind"] == "ddl"
    assert r["info"] == [[b, 1]]


def test_connection_counters_in_insights_info(run_py, db_path):
    r = run_py("""
        con = sqlite3.connect(ARGS["db"])
        load(con)
        others = [sqlite3.connect(ARGS["db"]) for _ in range(3)]
        for o in others:
            o.execute("SELECT 1").fetchall()
        peak = rows(con, "SELECT connections_open, connections_peak FROM insights_info WHERE database = ?", ARGS["db"])
        for o in others:
            o.close()
        after = rows(con, "SELECT connections_open, connections_peak, connections_opened, connections_closed"
                          " FROM insights_info WHERE database = ?", ARGS["db"])
        emit({"peak": peak, "after": after})
    """, args={"db": db_path})
    assert r["peak"] == [[4, 4]]
    assert r["after"] == [[1, 4, 4, 3]]


# --------------------------------------------------------------------------
# Counters, kinds, tables, tags


def test_calls_rows_returned_rows_affected(run_py, db_path):
    r = run_py("""
        con = sqlite3.connect(ARGS["db"], isolation_level=None)
        load(con)
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        for v in ["a", "b", "c", "d"]:
            con.execute("INSERT INTO t(v) VALUES (?)", (v,))
        con.execute("INSERT INTO t(v) VALUES ('e'), ('f'), ('g')")
        for _ in range(2):
            con.execute("SELECT id, v FROM t WHERE id > 2 ORDER BY id").fetchall()   # 5 rows each
        con.execute("SELECT id, v FROM t WHERE id > 6 ORDER BY id").fetchall()        # 1 row, same fingerprint
        con.execute("UPDATE t SET v = 'z' WHERE id <= 2")                           # 2 rows
        con.execute("DELETE FROM t WHERE id IN (6, 7, 99)")                          # 2 rows
        con.execute("UPDATE t SET v = 'never' WHERE id > 1000")                     # 0 rows
        emit(queries(con, "database = ?", ARGS["db"]))
    """, args={"db": db_path})
    q = {x["query"]: x for x in r}
    ins = q["INSERT INTO t(v) VALUES (?)"]
    assert (ins["calls"], ins["rows_affected"], ins["rows_returned"], ins["errors"]) == (5, 7, 0, 0)
    sel = q["SELECT id, v FROM t WHERE id > ? ORDER BY id"]
    assert (sel["calls"], sel["rows_returned"], sel["rows_affected"]) == (3, 11, 0)
    upd = q["UPDATE t SET v = ? WHERE id <= ?"]
    assert (upd["calls"], upd["rows_affected"]) == (1, 2)
    assert q["UPDATE t SET v = ? WHERE id > ?"]["rows_affected"] == 0
    dele = q["DELETE FROM t WHERE id IN (?)"]
    assert (dele["calls"], dele["rows_affected"]) == (1, 2)
    assert all(x["database"] == db_path for x in r)
    assert all(re.fullmatch(r"[0-9a-f]{16}", x["fingerprint"]) for x in r)


def test_fingerprint_column_matches_insights_fingerprint(run_py):
    r = run_py("""
        con = sqlite3.connect(":memory:")
        load(con)
        con.execute("SELECT 1 + 2, 'x'").fetchall()
        emit({"row": rows(con, "SELECT fingerprint, query FROM insights_queries WHERE query LIKE 'SELECT ? + ?%'"),
              "fp": one(con, "SELECT insights_fingerprint('select 7 + 8,  ''y''')"),
              "norm": one(con, "SELECT insights_normalize('select 7 + 8,  ''y''')")})
    """)
    assert r["row"] == [[r["fp"], r["norm"]]]
    assert r["norm"] == "SELECT ? + ?, ?"


@pytest.mark.parametrize("sql, kind, tables", [
    ("SELECT u.name, sum(o.amount) FROM users u JOIN orders o ON o.user_id = u.id GROUP BY u.name",
     "select", ["orders", "users"]),
    ("WITH big AS (SELECT * FROM orders WHERE amount > 5) SELECT count(*) FROM big", "select", ["orders"]),
    ("INSERT INTO orders(user_id, amount) VALUES (1, 2.5)", "insert", ["orders"]),
    ("UPDATE users SET name = 'x' WHERE id = 1", "update", ["users"]),
    ("DELETE FROM orders WHERE id = 42", "delete", ["orders"]),
    ("CREATE INDEX orders_user ON orders(user_id)", "ddl", ["orders"]),
    ("CREATE TABLE extra(a, b)", "ddl", ["extra"]),
    ("PRAGMA user_version", "pragma", []),
    ("BEGIN", "transaction", []),
])
def test_kind_and_tables(run_py, sql, kind, tables):
    r = run_py("""
        con = sqlite3.connect(":memory:", isolation_level=None)
        load(con)
        con.execute("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT)")
        con.execute("CREATE TABLE orders(id INTEGER PRIMARY KEY, user_id INTEGER, amount REAL)")
        con.execute(ARGS["sql"]).fetchall()
        fp = one(con, "SELECT insights_fingerprint(?)", ARGS["sql"])
        emit(rows(con, "SELECT kind, tables, calls FROM insights_queries WHERE fingerprint = ?", fp))
    """, args={"sql": sql})
    assert len(r) == 1
    got_kind, got_tables, calls = r[0]
    assert got_kind == kind
    assert json.loads(got_tables) == tables
    assert calls == 1


def test_sqlcommenter_tags(run_py):
    r = run_py("""
        con = sqlite3.connect(":memory:")
        load(con)
        con.execute("CREATE TABLE t(x)")
        con.execute("SELECT * FROM t /*app='x',route='%2Fy'*/").fetchall()
        con.execute("SELECT * FROM t /*app='x',route='%2Fy'*/").fetchall()
        con.execute("SELECT x FROM t").fetchall()
        emit({"tagged": rows(con, "SELECT query, tags, calls, fingerprint FROM insights_queries WHERE query = 'SELECT * FROM t'"),
              "plain": rows(con, "SELECT tags FROM insights_queries WHERE query = 'SELECT x FROM t'"),
              "fp_plain": one(con, "SELECT insights_fingerprint('SELECT * FROM t')")})
    """)
    assert len(r["tagged"]) == 1
    query, tags, calls, fp = r["tagged"][0]
    assert json.loads(tags) == {"app": "x", "route": "/y"}
    assert calls == 2
    assert fp == r["fp_plain"], "a sqlcommenter comment must not change the fingerprint"
    assert json.loads(r["plain"][0][0]) == {}


def test_executemany_counts_each_execution(run_py):
    r = run_py("""
        con = sqlite3.connect(":memory:")
        load(con)
        con.execute("CREATE TABLE t(a, b)")
        con.executemany("INSERT INTO t VALUES (?, ?)", [(i, str(i)) for i in range(10)])
        con.executemany("UPDATE t SET b = ? WHERE a % 2 = ?", [("even", 0), ("odd", 1), ("none", 5)])
        con.commit()
        emit({"q": queries(con, "kind IN ('insert', 'update')"), "n": one(con, "SELECT count(*) FROM t")})
    """)
    q = {x["query"]: x for x in r["q"]}
    assert r["n"] == 10
    assert (q["INSERT INTO t VALUES (?, ?)"]["calls"], q["INSERT INTO t VALUES (?, ?)"]["rows_affected"]) == (10, 10)
    upd = q["UPDATE t SET b = ? WHERE a % ? = ?"]
    assert (upd["calls"], upd["rows_affected"]) == (3, 10)


def test_database_column_file_path_and_memory(run_py, db_path):
    r = run_py("""
        f = sqlite3.connect(ARGS["db"])
        load(f)
        m = sqlite3.connect(":memory:")
        tmp = sqlite3.connect("")  # temporary on-disk database
        f.execute("SELECT 'file'").fetchall()
        m.execute("SELECT 'mem', 1").fetchall()
        tmp.execute("SELECT 'tmp', 1, 2").fetchall()
        emit({"q": rows(f, "SELECT database, query FROM insights_queries WHERE query LIKE 'SELECT ?%'"),
              "info": rows(f, "SELECT database FROM insights_info ORDER BY database")})
    """, args={"db": db_path})
    got = {query: database for database, query in r["q"]}
    assert got["SELECT ?"] == db_path
    assert got["SELECT ?, ?"] == ":memory:"
    assert got["SELECT ?, ?, ?"] == ":memory:"
    assert r["info"] == sorted([[":memory:"], [db_path]])


def test_two_files_kept_apart(run_py, tmp_path):
    a, b = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    r = run_py("""
        ca = sqlite3.connect(ARGS["a"], isolation_level=None)
        load(ca)
        cb = sqlite3.connect(ARGS["b"], isolation_level=None)
        for c in (ca, cb):
            c.execute("CREATE TABLE t(x)")
        for i in range(2):
            ca.execute("INSERT INTO t VALUES (?)", (i,))
        for i in range(5):
            cb.execute("INSERT INTO t VALUES (?)", (i,))
        ca.execute("SELECT * FROM t").fetchall()
        emit({"q": rows(ca, "SELECT database, query, calls, rows_affected, rows_returned FROM insights_queries"
                            " WHERE query IN ('INSERT INTO t VALUES (?)', 'SELECT * FROM t') ORDER BY database, query"),
              "info": rows(cb, "SELECT database, fingerprints FROM insights_info ORDER BY database")})
    """, args={"a": a, "b": b})
    assert r["q"] == [
        [a, "INSERT INTO t VALUES (?)", 2, 2, 0],
        [a, "SELECT * FROM t", 1, 0, 2],
        [b, "INSERT INTO t VALUES (?)", 5, 5, 0],
    ]
    assert [row[0] for row in r["info"]] == [a, b]
    assert all(row[1] >= 2 for row in r["info"])


def test_timing_columns_are_sane(run_py):
    r = run_py("""
        con = sqlite3.connect(":memory:")
        load(con)
        for i in range(50):
            con.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) SELECT sum(i) FROM n", (i * 20,)).fetchall()
        emit(rows(con, "SELECT calls, total_ms, min_ms, max_ms, mean_ms, stddev_ms, p50_ms, p95_ms, p99_ms, first_seen, last_seen,"
                       " vm_steps FROM insights_queries WHERE query LIKE 'WITH RECURSIVE%'"))
    """)
    assert len(r) == 1
    calls, total, mn, mx, mean, sd, p50, p95, p99, first, last, vm = r[0]
    assert calls == 50
    assert 0 < mn <= mean <= mx
    assert abs(total - mean * calls) <= 1e-6 * max(total, 1)
    assert sd >= 0
    assert mn <= p50 <= p95 <= p99 <= mx
    iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(iso, first) and re.fullmatch(iso, last) and first <= last
    assert vm > 50 * 20  # the recursive CTE runs many VM steps


# --------------------------------------------------------------------------
# reset, config, eviction


def test_reset_one_fingerprint_and_all(run_py):
    r = run_py("""
        con = sqlite3.connect(":memory:")
        load(con)
        con.execute("CREATE TABLE t(x)")
        for _ in range(3):
            con.execute("SELECT count(*) FROM t").fetchall()
        con.execute("SELECT x FROM t").fetchall()
        fp = one(con, "SELECT insights_fingerprint('SELECT count(*) FROM t')")
        removed_one = one(con, "SELECT insights_reset(?)", fp)
        gone = rows(con, "SELECT calls FROM insights_queries WHERE fingerprint = ?", fp)
        still = rows(con, "SELECT calls FROM insights_queries WHERE query = 'SELECT x FROM t'")
        removed_unknown = one(con, "SELECT insights_reset('00000000000000ff')")
        con.execute("SELECT count(*) FROM t").fetchall()
        again = rows(con, "SELECT calls FROM insights_queries WHERE fingerprint = ?", fp)
        removed_all = one(con, "SELECT insights_reset()")
        left = rows(con, "SELECT query, calls FROM insights_queries")
        emit({"removed_one": removed_one, "gone": gone, "still": still, "removed_unknown": removed_unknown,
              "again": again, "removed_all": removed_all, "left": left})
    """)
    assert r["removed_one"] == 1
    assert r["gone"] == []
    assert r["still"] == [[1]]
    assert r["removed_unknown"] == 0
    assert r["again"] == [[1]], "executions after a reset are counted from zero"
    assert r["removed_all"] >= 3
    # the only statement counted since the full reset is the reset itself
    assert r["left"] == [["SELECT insights_reset()", 1]]


def test_config_get_set_and_forms(run_py):
    r = run_py("""
        con = sqlite3.connect(":memory:")
        load(con)
        out = {}
        out["all"] = json.loads(one(con, "SELECT insights_config()"))
        out["get"] = one(con, "SELECT insights_config('max_queries')")
        out["set_int"] = one(con, "SELECT insights_config('max_queries', 100)")
        out["set_text"] = one(con, "SELECT insights_config('MAX_QUERIES', ' 250 ')")
        out["set_real"] = one(con, "SELECT insights_config('max_queries', 300.0)")
        out["bool_on"] = one(con, "SELECT insights_config('sample_raw_sql', 'on')")
        out["bool_false"] = one(con, "SELECT insights_config('sample_raw_sql', 'false')")
        out["max_errors"] = one(con, "SELECT insights_config('max_errors', 5)")
        out["after"] = json.loads(one(con, "SELECT insights_config()"))
        out["debug_cfg"] = debug(con)["config"]
        out["info_max"] = rows(con, "SELECT DISTINCT max_queries FROM insights_info")
        emit(out)
    """)
    # keys may grow; these four and their defaults are the contract
    base = {"max_queries": 5000, "max_errors": 1000, "sample_raw_sql": 0, "capture": 1}
    assert {k: r["all"][k] for k in base} == base
    assert str(r["get"]) == "5000"
    assert str(r["set_int"]) == "100"
    assert str(r["set_text"]) == "250"
    assert str(r["set_real"]) == "300"
    assert str(r["bool_on"]) == "1" and str(r["bool_false"]) == "0"
    assert str(r["max_errors"]) == "5"
    assert r["after"] == {**r["all"], "max_queries": 300, "max_errors": 5, "sample_raw_sql": 0, "capture": 1}
    assert r["debug_cfg"] == r["after"]
    assert r["info_max"] == [[300]]


def test_capture_off_pauses_counting(run_py):
    r = run_py("""
        con = sqlite3.connect(":memory:")
        load(con)
        con.execute("CREATE TABLE t(x)")
        con.execute("SELECT insights_config('capture', 0)")
        for _ in range(5):
            con.execute("SELECT x FROM t").fetchall()
        paused = rows(con, "SELECT calls FROM insights_queries WHERE query = 'SELECT x FROM t'")
        con.execute("SELECT insights_config('capture', 'on')")
        for _ in range(2):
            con.execute("SELECT x FROM t").fetchall()
        emit({"paused": paused, "resumed": rows(con, "SELECT calls FROM insights_queries WHERE query = 'SELECT x FROM t'")})
    """)
    assert r["paused"] == []
    assert r["resumed"] == [[2]]


def test_eviction_is_bounded_and_counted(run_py, db_path):
    r = run_py("""
        con = sqlite3.connect(ARGS["db"])
        load(con)
        assert one(con, "SELECT insights_config('max_queries', 10)") in ("10", 10)
        for _ in range(20):
            con.execute("SELECT 'hot'").fetchall()
        for i in range(60):
            con.execute(f"SELECT {i} AS c{i}").fetchall()
        info = rows(con, "SELECT fingerprints, max_queries, evictions FROM insights_info WHERE database = ?", ARGS["db"])
        dbg = [d for d in debug(con)["databases"] if d["path"] == ARGS["db"]]
        hot = rows(con, "SELECT calls FROM insights_queries WHERE query = 'SELECT ?' AND database = ?", ARGS["db"])
        n = one(con, "SELECT count(*) FROM insights_queries WHERE database = ?", ARGS["db"])
        one(con, "SELECT insights_config('max_queries', 20)")
        one(con, "SELECT insights_reset()")
        cleared = rows(con, "SELECT evictions FROM insights_info WHERE database = ?", ARGS["db"])
        emit({"info": info, "dbg": dbg, "hot": hot, "n": n, "cleared": cleared})
    """, args={"db": db_path})
    fingerprints, max_queries, evictions = r["info"][0]
    assert max_queries == 10
    assert fingerprints <= 10
    assert evictions >= 60 + 1 - 10
    assert r["n"] <= 10
    assert r["dbg"][0]["evictions"] >= evictions  # debug ran later: it may have evicted more
    assert r["hot"] == [[20]], "the most used fingerprint survives eviction"
    assert r["cleared"] == [[0]], "a full reset clears evictions"


def test_lowering_max_queries_trims_at_once(run_py):
    r = run_py("""
        con = sqlite3.connect(":memory:")
        load(con)
        for i in range(40):
            con.execute(f"SELECT {i} AS c{i}").fetchall()
        before = one(con, "SELECT fingerprints FROM insights_info WHERE database = ':memory:'")
        one(con, "SELECT insights_config('max_queries', 10)")
        after = rows(con, "SELECT fingerprints, evictions FROM insights_info WHERE database = ':memory:'")
        emit({"before": before, "after": after})
    """)
    assert r["before"] >= 40
    fingerprints, evictions = r["after"][0]
    assert fingerprints <= 11  # <= max, plus the insights_info query itself may be registered
    assert evictions >= r["before"] - 10


def test_max_errors_bounds_the_error_ring(run_py, db_path):
    r = run_py("""
        con = sqlite3.connect(ARGS["db"], isolation_level=None)
        load(con)
        blocker = sqlite3.connect(ARGS["db"], isolation_level=None)
        victim = sqlite3.connect(ARGS["db"], timeout=0, isolation_level=None)
        con.execute("CREATE TABLE t(x)")
        victim.execute("SELECT * FROM t").fetchall()
        one(con, "SELECT insights_config('max_errors', 3)")
        blocker.execute("BEGIN IMMEDIATE")
        failures = 0
        for i in range(7):
            try:
                victim.execute(f"INSERT INTO t VALUES ({i})")
            except sqlite3.OperationalError:
                failures += 1
        blocker.execute("COMMIT")
        emit({"failures": failures, "n": one(con, "SELECT count(*) FROM insights_errors"),
              "total": debug(con)["errors_total"],
              "errs": rows(con, "SELECT errors, busy FROM insights_queries WHERE query = 'INSERT INTO t VALUES (?)'")})
    """, args={"db": db_path})
    assert r["failures"] == 7
    assert r["n"] == 3
    assert r["total"] == 7
    assert r["errs"] == [[7, 7]]


def test_virtual_tables_are_read_only(run_py):
    r = run_py("""
        con = sqlite3.connect(":memory:")
        load(con)
        emit([attempt(con, s) for s in [
            "INSERT INTO insights_queries(database) VALUES ('x')",
            "DELETE FROM insights_errors",
            "UPDATE insights_info SET evictions = 0"]])
    """)
    names = ["insights_queries", "insights_errors", "insights_info"]
    for res, name in zip(r, names):
        assert res[0] == "err"
        assert res[2] == f"table {name} may not be modified"


def test_state_changing_functions_are_direct_only(run_py, db_path):
    r = run_py("""
        con = sqlite3.connect(ARGS["db"], isolation_level=None)
        load(con)
        con.execute("CREATE VIEW v_reset AS SELECT insights_reset() AS n")
        con.execute("CREATE VIEW v_norm AS SELECT insights_normalize('select 1') AS n")
        emit({"reset": attempt(con, "SELECT * FROM v_reset"), "norm": attempt(con, "SELECT * FROM v_norm")})
    """, args={"db": db_path})
    assert r["reset"] == ["err", "OperationalError", "unsafe use of insights_reset()"]
    assert r["norm"] == ["ok", [["SELECT ?"]]]


# --------------------------------------------------------------------------
# Bad input: every message starts with the function's name, nothing changes

BAD_CALLS = [
    ("SELECT insights_config('nope')", "insights_config", "unknown key 'nope'"),
    ("SELECT insights_config('nope', 1)", "insights_config", "unknown key 'nope'"),
    ("SELECT insights_config('max_queries', 'lots')", "insights_config", "between 10 and 1000000"),
    ("SELECT insights_config('max_queries', 1)", "insights_config", "between 10 and 1000000"),
    ("SELECT insights_config('max_queries', 1000001)", "insights_config", "between 10 and 1000000"),
    ("SELECT insights_config('max_queries', -5)", "insights_config", "between 10 and 1000000"),
    ("SELECT insights_config('max_queries', 1.5)", "insights_config", "between 10 and 1000000"),
    ("SELECT insights_config('max_queries', NULL)", "insights_config", "between 10 and 1000000"),
    ("SELECT insights_config('max_queries', x'0a')", "insights_config", "between 10 and 1000000"),
    ("SELECT insights_config('max_errors', 0)", "insights_config", "max_errors"),
    ("SELECT insights_config('capture', 7)", "insights_config", "capture must be 0/1"),
    ("SELECT insights_config('sample_raw_sql', 'maybe')", "insights_config", "sample_raw_sql must be 0/1"),
    ("SELECT insights_config(NULL)", "insights_config", "key must be text, got NULL"),
    ("SELECT insights_config(42)", "insights_config", "key must be text"),
    ("SELECT insights_config('a', 'b', 'c')", "insights_config", "takes 0 to 2 arguments, got 3"),
    ("SELECT insights_normalize(NULL)", "insights_normalize", "got NULL"),
    ("SELECT insights_normalize(42)", "insights_normalize", "must be text"),
    ("SELECT insights_normalize(x'00ff')", "insights_normalize", "must be text"),
    ("SELECT insights_normalize()", "insights_normalize", "takes 1 argument, got 0"),
    ("SELECT insights_normalize('a', 'b')", "insights_normalize", "takes 1 argument, got 2"),
    ("SELECT insights_fingerprint(NULL)", "insights_fingerprint", "got NULL"),
    ("SELECT insights_fingerprint(1.5)", "insights_fingerprint", "must be text"),
    ("SELECT insights_fingerprint()", "insights_fingerprint", "takes 1 argument, got 0"),
    ("SELECT insights_reset('xyz')", "insights_reset", "16 hex digits"),
    ("SELECT insights_reset('zzzzzzzzzzzzzzzz')", "insights_reset", "16 hex digits"),
    ("SELECT insights_reset(NULL)", "insights_reset", "got NULL"),
    ("SELECT insights_reset(12)", "insights_reset", "must be text"),
    ("SELECT insights_reset('a', 'b')", "insights_reset", "got 2"),
    ("SELECT insights_version(1)", "insights_version", "takes 0 arguments, got 1"),
    ("SELECT insights_debug(1)", "insights_debug", "takes 0 arguments, got 1"),
]


@pytest.fixture(scope="module")
def bad_call_results(ext_path):
    proc = run_snippet("""
        con = sqlite3.connect(":memory:")
        load(con)
        con.execute("CREATE TABLE t(x)")
        con.execute("SELECT x FROM t").fetchall()
        one(con, "SELECT insights_config('max_queries', 123)")
        before = one(con, "SELECT insights_config()")
        n_before = one(con, "SELECT count(*) FROM insights_queries WHERE query = 'SELECT x FROM t'")
        res = {sql: attempt(con, sql) for sql in ARGS}
        emit({"res": res, "before": before, "after": one(con, "SELECT insights_config()"),
              "n_before": n_before,
              "n_after": one(con, "SELECT count(*) FROM insights_queries WHERE query = 'SELECT x FROM t'"),
              "works": one(con, "SELECT insights_normalize('select 1')"),
              "internal_errors": debug(con)["internal_errors"]})
    """, args=[c[0] for c in BAD_CALLS])
    return parse_result(proc)


@pytest.mark.parametrize("sql, fname, fragment", BAD_CALLS, ids=[c[0][7:] for c in BAD_CALLS])
def test_bad_input_errors_name_the_function(bad_call_results, sql, fname, fragment):
    res = bad_call_results["res"][sql]
    assert res[0] == "err", f"{sql} should fail, got {res}"
    assert res[1] == "OperationalError"
    assert res[2].startswith(fname + ": "), res[2]
    assert fragment in res[2]


def test_bad_input_changes_nothing(bad_call_results):
    r = bad_call_results
    assert json.loads(r["before"])["max_queries"] == 123
    assert json.loads(r["after"]) == json.loads(r["before"])
    assert r["n_before"] == r["n_after"] == 1, "no reset happened"
    assert r["works"] == "SELECT ?"
    assert r["internal_errors"] == 0


# --------------------------------------------------------------------------
# Error capture: mode none (plain load on 3.40)


def test_plain_load_on_340_has_error_capture_mode_none(run_py):
    r = run_py("""
        con = sqlite3.connect(":memory:")
        load(con)
        emit({"mode": one(con, "SELECT json_extract(insights_debug(), '$.error_capture.mode')"),
              "ec": debug(con)["error_capture"]})
    """)
    assert r["mode"] == "none"
    assert r["ec"]["active"] is False
    assert "LD_PRELOAD" in r["ec"]["note"]


def _busy_snippet():
    return """
        con = sqlite3.connect(ARGS["db"], isolation_level=None)
        load(con)
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
        other = sqlite3.connect(ARGS["db"], timeout=0, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        res = attempt(other, "INSERT INTO t(v) VALUES (5)")
        con.execute("COMMIT")
        ok = attempt(other, "INSERT INTO t(v) VALUES (6)")
        emit({"res": res, "ok": ok, "mode": debug(con)["error_capture"]["mode"],
              "q": queries(con, "query = 'INSERT INTO t(v) VALUES (?)'"),
              "e": errors(con)})
    """


@pytest.mark.parametrize("preload", [False, True], ids=["none", "preload"])
def test_busy_is_counted(run_py, db_path, preload_env, preload):
    r = run_py(_busy_snippet(), args={"db": db_path}, env=preload_env if preload else None)
    assert r["mode"] == ("preload" if preload else "none")
    assert r["res"] == ["err", "OperationalError", "database is locked"]
    assert r["ok"] == ["ok", []]
    assert len(r["q"]) == 1
    q = r["q"][0]
    assert (q["calls"], q["errors"], q["busy"], q["rows_affected"]) == (2, 1, 1, 1)
    assert q["last_error"] == "database is locked"
    assert len(r["e"]) == 1
    e = r["e"][0]
    assert (e["code"], e["code_name"], e["phase"], e["message"]) == (5, "SQLITE_BUSY", "step", "database is locked")
    assert e["database"] == db_path
    assert e["query"] == "INSERT INTO t(v) VALUES (?)"
    assert e["fingerprint"] == q["fingerprint"]
    assert e["sample"] is None


# --------------------------------------------------------------------------
# Error capture: preload mode (LD_PRELOAD=<abs path>/insights0.so)

ERROR_CASES_SNIPPET = """
    con = sqlite3.connect(ARGS["db"], isolation_level=None)
    load(con)
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v UNIQUE)")
    con.execute("INSERT INTO t(v) VALUES (1)")
    out = {"ec": debug(con)["error_capture"]}
    out["unique"] = attempt(con, "INSERT INTO t(v) VALUES (1)")
    out["syntax"] = attempt(con, "SELEC 1")
    out["nosuch"] = attempt(con, "SELECT * FROM nosuch")
    out["q"] = queries(con)
    out["e"] = errors(con)
    out["fp_insert"] = one(con, "SELECT insights_fingerprint('insert into t(v) values (2)')")
    out["ec_after"] = debug(con)["error_capture"]
    out["internal_errors"] = debug(con)["internal_errors"]
    emit(out)
"""


@pytest.fixture
def preload_errors(run_py, db_path, preload_env):
    return run_py(ERROR_CASES_SNIPPET, args={"db": db_path}, env=preload_env)


def test_preload_mode_is_active(preload_errors):
    ec = preload_errors["ec"]
    assert ec["mode"] == "preload"
    assert ec["active"] is True
    assert preload_errors["internal_errors"] == 0


def test_preload_unique_failure_at_step(preload_errors, db_path):
    r = preload_errors
    assert r["unique"] == ["err", "IntegrityError", "UNIQUE constraint failed: t.v"]
    step = [e for e in r["e"] if e["phase"] == "step"]
    assert len(step) == 1
    e = step[0]
    assert (e["code"], e["extended_code"], e["code_name"]) == (19, 2067, "SQLITE_CONSTRAINT_UNIQUE")
    assert e["message"] == "UNIQUE constraint failed: t.v"
    assert e["query"] == "INSERT INTO t(v) VALUES (?)"
    assert e["kind"] == "insert"
    assert e["database"] == db_path
    assert e["fingerprint"] == r["fp_insert"]
    assert e["sample"] is None, "raw SQL is not kept unless sample_raw_sql is on"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["at"])
    q = [x for x in r["q"] if x["fingerprint"] == r["fp_insert"]][0]
    assert (q["calls"], q["errors"], q["busy"]) == (2, 1, 0), "calls include the failed execution"
    assert q["rows_affected"] == 1, "the failed insert changed nothing"
    assert q["last_error"] == "UNIQUE constraint failed: t.v"
    assert r["ec_after"]["step_errors"] == 1


def test_preload_syntax_error_at_prepare(preload_errors):
    r = preload_errors
    assert r["syntax"] == ["err", "OperationalError", 'near "SELEC": syntax error']
    e = [e for e in r["e"] if e["query"] == "SELEC ?"]
    assert len(e) == 1
    assert e[0]["phase"] == "prepare"
    assert "syntax error" in e[0]["message"]
    assert e[0]["code"] == 1 and e[0]["code_name"] == "SQLITE_ERROR"
    q = [x for x in r["q"] if x["query"] == "SELEC ?"]
    assert [(x["calls"], x["errors"]) for x in q] == [(1, 1)]
    assert "syntax error" in q[0]["last_error"]


def test_preload_no_such_table(preload_errors):
    r = preload_errors
    assert r["nosuch"] == ["err", "OperationalError", "no such table: nosuch"]
    e = [e for e in r["e"] if e["query"] == "SELECT * FROM nosuch"]
    assert len(e) == 1
    assert (e[0]["phase"], e[0]["code"], e[0]["message"]) == ("prepare", 1, "no such table: nosuch")
    q = [x for x in r["q"] if x["query"] == "SELECT * FROM nosuch"]
    assert [(x["calls"], x["errors"], x["last_error"]) for x in q] == [(1, 1, "no such table: nosuch")]
    assert r["ec_after"]["prepare_errors"] == 2


@pytest.mark.parametrize("setup, sql, code, ext, message", [
    ("CREATE TABLE t(a NOT NULL)", "INSERT INTO t VALUES (NULL)", 19, 1299, "NOT NULL constraint failed: t.a"),
    ("CREATE TABLE t(a CHECK (a > 0))", "INSERT INTO t VALUES (-1)", 19, 275, "CHECK constraint failed: a > 0"),
    ("CREATE TABLE t(a INTEGER PRIMARY KEY); INSERT INTO t(a) VALUES (1)", "INSERT INTO t VALUES (1)",
     19, 1555, "UNIQUE constraint failed: t.a"),
    ("PRAGMA foreign_keys = ON; CREATE TABLE p(id INTEGER PRIMARY KEY); CREATE TABLE c(p REFERENCES p(id))",
     "INSERT INTO c VALUES (9)", 19, 787, "FOREIGN KEY constraint failed"),
    ("CREATE TABLE t(a INTEGER) STRICT", "INSERT INTO t VALUES ('abc')", 19, 3091,
     "cannot store TEXT value in INTEGER column t.a"),
    ("CREATE TABLE t(a)", "SELECT abs(-9223372036854775808)", 1, 1, "integer overflow"),
])
def test_preload_other_step_errors(run_py, preload_env, setup, sql, code, ext, message):
    r = run_py("""
        con = sqlite3.connect(":memory:", isolation_level=None)
        load(con)
        con.executescript(ARGS["setup"])
        res = attempt(con, ARGS["sql"])
        fp = one(con, "SELECT insights_fingerprint(?)", ARGS["sql"])
        emit({"res": res, "e": errors(con), "q": queries(con, "fingerprint = ?", fp)})
    """, args={"setup": setup, "sql": sql}, env=preload_env)
    assert r["res"][0] == "err" and r["res"][2] == message
    assert len(r["e"]) == 1
    e = r["e"][0]
    assert (e["phase"], e["code"], e["extended_code"], e["message"]) == ("step", code, ext, message)
    assert [(q["calls"], q["errors"], q["last_error"]) for q in r["q"]] == [(1, 1, message)]


def test_preload_errors_and_successes_are_counted_exactly(run_py, preload_env):
    r = run_py("""
        con = sqlite3.connect(":memory:", isolation_level=None)
        load(con)
        con.execute("CREATE TABLE t(v UNIQUE)")
        fails = 0
        for i in range(30):
            try:
                con.execute("INSERT INTO t VALUES (?)", (i % 10,))
            except sqlite3.IntegrityError:
                fails += 1
        emit({"fails": fails, "q": queries(con, "query = 'INSERT INTO t VALUES (?)'"),
              "n_err": one(con, "SELECT count(*) FROM insights_errors")})
    """, env=preload_env)
    assert r["fails"] == 20
    q = r["q"][0]
    assert (q["calls"], q["errors"], q["rows_affected"]) == (30, 20, 10)
    assert r["n_err"] == 20


def test_sample_raw_sql_is_opt_in(run_py, preload_env):
    r = run_py("""
        con = sqlite3.connect(":memory:", isolation_level=None)
        load(con)
        con.execute("CREATE TABLE t(v UNIQUE)")
        con.execute("INSERT INTO t VALUES ('secret-1')")
        attempt(con, "INSERT INTO t VALUES ('secret-1')")
        attempt(con, "SELEC 'secret-2'")
        off = rows(con, "SELECT phase, sample FROM insights_errors ORDER BY phase")
        one(con, "SELECT insights_config('sample_raw_sql', 1)")
        attempt(con, "INSERT INTO t VALUES ('secret-1')")
        attempt(con, "SELEC 'secret-2'")
        on = rows(con, "SELECT phase, sample, query FROM insights_errors WHERE sample IS NOT NULL ORDER BY phase")
        everything = json.dumps(rows(con, "SELECT * FROM insights_queries"))
        emit({"off": off, "on": on, "leak_in_queries": "secret" in everything})
    """, env=preload_env)
    assert r["off"] == [["prepare", None], ["step", None]]
    assert r["on"] == [
        ["prepare", "SELEC 'secret-2'", "SELEC ?"],
        ["step", "INSERT INTO t VALUES ('secret-1')", "INSERT INTO t VALUES (?)"],
    ]
    assert r["leak_in_queries"] is False, "insights_queries never holds literals"


def test_autoload_instruments_without_load_extension(run_py, db_path, preload_env):
    r = run_py("""
        con = sqlite3.connect(ARGS["db"], isolation_level=None)  # no load_extension at all
        con.execute("CREATE TABLE t(v UNIQUE)")
        con.execute("INSERT INTO t VALUES (1)")
        res = attempt(con, "INSERT INTO t VALUES (1)")
        emit({"res": res, "ec": debug(con)["error_capture"],
              "q": queries(con, "query = 'INSERT INTO t VALUES (?)'"),
              "e": rows(con, "SELECT code, extended_code, phase FROM insights_errors")})
    """, args={"db": db_path}, env={**preload_env, "SQLITE_INSIGHTS_AUTOLOAD": "1"})
    assert r["ec"]["mode"] == "preload" and r["ec"]["active"] is True
    assert r["res"] == ["err", "IntegrityError", "UNIQUE constraint failed: t.v"]
    assert [(q["database"], q["calls"], q["errors"]) for q in r["q"]] == [(db_path, 2, 1)]
    assert r["e"] == [[19, 2067, "step"]]


def test_preload_alone_registers_nothing(run_py, preload_env):
    r = run_py("""
        con = sqlite3.connect(":memory:")
        emit({"f": attempt(con, "SELECT insights_version()"), "ok": attempt(con, "SELECT 1 + 1")})
    """, env=preload_env)
    assert r["f"] == ["err", "OperationalError", "no such function: insights_version"]
    assert r["ok"] == ["ok", [[2]]]


@pytest.mark.parametrize("preload", [False, True], ids=["plain", "preload"])
def test_error_log_off_gives_mode_disabled(run_py, preload_env, preload):
    env = {"SQLITE_INSIGHTS_ERROR_LOG": "off"}
    if preload:
        env.update(preload_env)
    r = run_py("""
        con = sqlite3.connect(":memory:", isolation_level=None)
        load(con)
        con.execute("CREATE TABLE t(v UNIQUE)")
        con.execute("INSERT INTO t VALUES (1)")
        res = attempt(con, "INSERT INTO t VALUES (1)")
        syn = attempt(con, "SELEC 1")
        emit({"res": res, "syn": syn, "ec": debug(con)["error_capture"],
              "n": one(con, "SELECT count(*) FROM insights_errors")})
    """, env=env)
    assert r["ec"]["mode"] == "disabled"
    assert r["ec"]["active"] is False
    assert r["res"] == ["err", "IntegrityError", "UNIQUE constraint failed: t.v"]
    assert r["syn"][0] == "err"
    assert r["n"] == 0


def test_pending_step_error_is_not_pinned_on_a_later_success(run_py, preload_env):
    r = run_py("""
        con = sqlite3.connect(":memory:", isolation_level=None)
        load(con)
        con.execute("CREATE TABLE t(v UNIQUE)")
        con.execute("INSERT INTO t(v) VALUES (?)", (1,))
        con.execute("SELECT insights_config('capture', 0)")
        res = attempt(con, "INSERT INTO t(v) VALUES (?)", 1)      # fails while capture is paused
        con.execute("SELECT insights_config('capture', 1)")
        con.execute("INSERT INTO t(v) VALUES (?)", (2,))            # succeeds
        emit({"res": res, "q": queries(con, "query = 'INSERT INTO t(v) VALUES (?)'"),
              "n_err": one(con, "SELECT count(*) FROM insights_errors")})
    """, env=preload_env)
    assert r["res"][0] == "err"
    assert [(q["calls"], q["errors"], q["last_error"]) for q in r["q"]] == [(2, 0, None)]
    assert r["n_err"] == 0


def test_error_on_uninstrumented_connection_not_pinned_elsewhere(run_py, tmp_path, preload_env):
    r = run_py("""
        c0 = sqlite3.connect(ARGS["a"], isolation_level=None)       # opened before the load
        c0.execute("CREATE TABLE t(v UNIQUE)")
        c0.execute("INSERT INTO t(v) VALUES (1)")
        c1 = sqlite3.connect(ARGS["b"], isolation_level=None)
        load(c1)
        c1.execute("CREATE TABLE t(v UNIQUE)")
        res = attempt(c0, "INSERT INTO t(v) VALUES (?)", 1)          # fails on a.db
        c1.execute("INSERT INTO t(v) VALUES (?)", (1,))              # succeeds on b.db
        emit({"res": res, "q": queries(c1, "database = ? AND query = 'INSERT INTO t(v) VALUES (?)'", ARGS["b"])})
    """, args={"a": str(tmp_path / "a.db"), "b": str(tmp_path / "b.db")}, env=preload_env)
    assert r["res"][0] == "err"
    assert [(q["calls"], q["errors"]) for q in r["q"]] == [(1, 0)]


# --------------------------------------------------------------------------
# Statements run inside another statement (UDF callbacks, ANALYZE)


def test_statement_nested_in_a_udf_is_recorded_under_its_own_sql(run_py):
    r = run_py("""
        con = sqlite3.connect(":memory:", isolation_level=None)
        load(con)
        con.execute("CREATE TABLE audit(n)")
        con.create_function("nested", 0, lambda: con.execute("SELECT count(*) FROM audit").fetchone()[0])
        res = one(con, "SELECT nested()")
        emit({"res": res, "q": rows(con, "SELECT query, kind, calls FROM insights_queries ORDER BY query")})
    """)
    assert r["res"] == 0
    assert ["", "other", 1] not in r["q"]
    assert ["SELECT count(*) FROM audit", "select", 1] in r["q"]


def test_trigger_bodies_are_not_counted_as_statements(run_py):
    r = run_py("""
        con = sqlite3.connect(":memory:", isolation_level=None)
        load(con)
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
        con.execute("CREATE TABLE audit(n)")
        con.execute("CREATE TRIGGER t_ai AFTER INSERT ON t BEGIN INSERT INTO audit VALUES (new.id); END")
        for i in range(3):
            con.execute("-- leading comment\\nINSERT INTO t(v) VALUES (?)", (i,))
        con.execute("INSERT INTO t(v) VALUES (9), (10) RETURNING id").fetchall()
        emit({"q": rows(con, "SELECT query, calls, rows_affected, rows_returned FROM insights_queries"
                             " WHERE kind = 'insert' ORDER BY query"),
              "audit": one(con, "SELECT count(*) FROM audit")})
    """)
    assert r["audit"] == 5
    assert r["q"] == [
        ["INSERT INTO t(v) VALUES (?)", 3, 3, 0],
        ["INSERT INTO t(v) VALUES (?) RETURNING id", 1, 2, 2],
    ]


# --------------------------------------------------------------------------
# Concurrency


def test_threads_with_own_connections_count_exactly(run_py, db_path):
    r = run_py("""
        import threading
        N_THREADS, N = 4, 150
        setup = sqlite3.connect(ARGS["db"], isolation_level=None)
        load(setup)
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, who INTEGER, i INTEGER)")
        problems = []
        def work(who):
            try:
                con = sqlite3.connect(ARGS["db"], timeout=30, isolation_level=None)
                for i in range(N):
                    con.execute("INSERT INTO t(who, i) VALUES (?, ?)", (who, i))
                    con.execute("SELECT count(*) FROM t WHERE who = ?", (who,)).fetchall()
                con.close()
            except Exception as e:
                problems.append(repr(e))
        threads = [threading.Thread(target=work, args=(w,)) for w in range(N_THREADS)]
        for t in threads: t.start()
        for t in threads: t.join()
        emit({"problems": problems, "n": one(setup, "SELECT count(*) FROM t"),
              "q": rows(setup, "SELECT query, sum(calls), sum(errors), sum(rows_affected), sum(rows_returned)"
                               " FROM insights_queries WHERE database = ? GROUP BY query", ARGS["db"]),
              "info": rows(setup, "SELECT connections_open, connections_opened FROM insights_info WHERE database = ?", ARGS["db"]),
              "internal_errors": debug(setup)["internal_errors"]})
    """, args={"db": db_path})
    assert r["problems"] == []
    assert r["n"] == 600
    q = {row[0]: row[1:] for row in r["q"]}
    assert q["INSERT INTO t(who, i) VALUES (?, ?)"] == [600, 0, 600, 0]
    assert q["SELECT count(*) FROM t WHERE who = ?"] == [600, 0, 0, 600]
    assert r["info"] == [[1, 5]]
    assert r["internal_errors"] == 0


def test_processes_do_not_interfere(ext_path, db_path):
    """Each process has its own in-memory registry: it sees only its own calls
    (scope 'process'; the default scope 'all' adds the sidecar store's totals)."""
    code = """
        import time
        con = sqlite3.connect(ARGS["db"], timeout=30, isolation_level=None)
        load(con)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("CREATE TABLE IF NOT EXISTS t(who, i)")
        for i in range(ARGS["n"]):
            con.execute("INSERT INTO t VALUES (?, ?)", (ARGS["who"], i))
        emit(rows(con, "SELECT calls, rows_affected FROM insights_queries"
                       " WHERE scope = 'process' AND query = 'INSERT INTO t VALUES (?, ?)'"))
    """
    from conftest import PRELUDE, RESULT_MARK, EXT, make_env
    import textwrap
    import sqlite3 as _sqlite3
    # WAL from the start: three processes switching the journal mode at once
    # can fail with "database is locked" (SQLite itself, not the extension)
    pre = _sqlite3.connect(db_path)
    pre.execute("PRAGMA journal_mode=WAL")
    pre.execute("CREATE TABLE t(who, i)")
    pre.close()
    counts = [40, 70, 110]
    procs = []
    for who, n in enumerate(counts):
        src = (PRELUDE.format(ext=str(EXT), mark=RESULT_MARK)
               + f"\nARGS = json.loads({json.dumps({'db': db_path, 'n': n, 'who': who})!r})\n"
               + textwrap.dedent(code))
        procs.append(subprocess.Popen([SYSTEM_PYTHON, "-c", src], env=make_env(), text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = []
    for p in procs:
        out, err = p.communicate(timeout=90)
        results.append(parse_result(subprocess.CompletedProcess(p.args, p.returncode, out, err)))
    assert results == [[[n, n]] for n in counts]
    import sqlite3
    con = sqlite3.connect(db_path)
    assert con.execute("SELECT who, count(*) FROM t GROUP BY who ORDER BY who").fetchall() == list(enumerate(counts))
    con.close()


def test_threads_step_errors_attributed_exactly_in_preload(run_py, db_path, preload_env):
    """Step errors travel through a thread-local slot: with several threads
    failing at once, each failure lands on its own statement, none is lost."""
    r = run_py("""
        import threading
        setup = sqlite3.connect(ARGS["db"], isolation_level=None)
        load(setup)
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE t(v UNIQUE)")
        fails = [0] * 4
        problems = []
        def work(k):
            con = sqlite3.connect(ARGS["db"], timeout=30, isolation_level=None)
            for i in range(100):
                try:
                    con.execute("INSERT INTO t VALUES (?)", (i % 50,))
                except sqlite3.IntegrityError:
                    fails[k] += 1
                except Exception as e:
                    problems.append(repr(e))
                con.execute("SELECT count(*) FROM t").fetchall()
            con.close()
        ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in ts: t.start()
        for t in ts: t.join()
        emit({"fails": sum(fails), "problems": problems,
              "q": rows(setup, "SELECT query, calls, errors, rows_affected FROM insights_queries WHERE scope = 'process'"
                               " AND database = ? AND query IN ('INSERT INTO t VALUES (?)', 'SELECT count(*) FROM t')"
                               " ORDER BY query", ARGS["db"]),
              "e": rows(setup, "SELECT count(*), min(extended_code), max(extended_code) FROM insights_errors WHERE database = ?", ARGS["db"])})
    """, args={"db": db_path}, env=preload_env)
    assert r["problems"] == []
    assert r["fails"] == 350
    assert r["q"] == [["INSERT INTO t VALUES (?)", 400, 350, 50], ["SELECT count(*) FROM t", 400, 0, 0]]
    assert r["e"] == [[350, 2067, 2067]]
