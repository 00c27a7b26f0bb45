"""The capture path's newer parts, through the stdlib sqlite3 host (Debian's
3.40.1) and apsw (current SQLite):

- ``insights_capture([0|1])``: the per-connection switch (our hook removed,
  the connection costs nothing; put back), errors, and an application's own
  trace callback left alone;
- the deferred digest: the first run of a read-only statement text is
  normalized on the digest thread, and a read right after still sees every
  run exactly (rows, counters, sqlcommenter activity);
- what is never deferred (failures, events such as REINDEX, tagged
  connections) is recorded as before;
- counters of a statement prepared anew with the same text at the same
  address are not diffed against the finalized one's.
"""

import pytest


def test_capture_switch_per_connection(run_py):
    r = run_py("""
        con = sqlite3.connect(":memory:", isolation_level=None)
        load(con)
        other = sqlite3.connect(":memory:", isolation_level=None)   # instrumented too
        out = {"start": one(con, "SELECT insights_capture()")}
        con.execute("CREATE TABLE t(a)")
        for i in range(3):
            con.execute("INSERT INTO t VALUES (?)", (i,))
        out["off"] = one(con, "SELECT insights_capture(0)")
        out["off_again"] = one(con, "SELECT insights_capture(0)")
        for i in range(5):
            con.execute("INSERT INTO t VALUES (?)", (i,))
            other.execute("SELECT ?", (i,))
        out["state_off"] = one(con, "SELECT insights_capture()")
        out["other_state"] = one(other, "SELECT insights_capture()")
        out["on"] = one(con, "SELECT insights_capture(1)")
        out["on_again"] = one(con, "SELECT insights_capture(1)")
        for i in range(2):
            con.execute("INSERT INTO t VALUES (?)", (i,))
        out["q"] = {q["query"]: q["calls"] for q in queries(con)}
        out["bad"] = [attempt(con, s)[2] for s in (
            "SELECT insights_capture(2)", "SELECT insights_capture(NULL)",
            "SELECT insights_capture('1')", "SELECT insights_capture(1, 2)")]
        # an application's own trace callback replaces ours: turning capture
        # on refuses (it would remove theirs), off leaves theirs in place
        seen = []
        con.set_trace_callback(seen.append)
        out["app_on"] = attempt(con, "SELECT insights_capture(1)")
        out["app_off"] = one(con, "SELECT insights_capture(0)")
        con.execute("SELECT 'still traced'")
        out["app_saw"] = [s for s in seen if "still traced" in s]
        emit(out)
    """)
    assert (r["start"], r["off"], r["off_again"], r["state_off"]) == (1, 0, 0, 0)
    assert r["other_state"] == 1 and (r["on"], r["on_again"]) == (1, 1)
    # 3 before, none while off, 2 after; the switch statements themselves
    # are not counted on the side where the hook is gone
    assert r["q"]["INSERT INTO t VALUES (?)"] == 5
    assert r["q"]["SELECT ?"] == 5  # the other connection kept counting
    assert all(m.startswith("insights_capture: ") for m in r["bad"]), r["bad"]
    assert "enabled must be 0 (off) or 1 (on)" in r["bad"][0]
    assert r["app_on"][0] == "err" and "replaced this connection's trace hook" in r["app_on"][2]
    assert r["app_off"] == 0
    assert r["app_saw"] == ["SELECT 'still traced'"]


def test_adhoc_reads_are_exact_right_away(run_py):
    r = run_py("""
        con = sqlite3.connect(":memory:", isolation_level=None, cached_statements=0)
        load(con)
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        con.executemany("INSERT INTO t(id, v) VALUES (?, ?)", [(i, 'v%d' % i) for i in range(1, 201)])
        before = debug(con)["digest"]["deferred_runs"]
        n = 3000
        for i in range(n):
            con.execute("SELECT v FROM t WHERE id = %d" % (1 + i % 200)).fetchall()
            con.execute("SELECT v FROM t WHERE id > %d ORDER BY v LIMIT 3" % (i % 50)).fetchall()
        # read at once, from the same and from another connection
        q = queries(con, "query LIKE 'SELECT v FROM t WHERE id%'")
        other = sqlite3.connect(":memory:")
        q2 = {x["query"]: x["calls"] for x in queries(other, "query LIKE 'SELECT v FROM t WHERE id%'")}
        vm = rows(con, "SELECT query, vm_steps, sorts FROM insights_queries WHERE query LIKE 'SELECT v FROM t WHERE id%'")
        emit({"q": q, "q2": q2, "vm": vm, "deferred": debug(con)["digest"]["deferred_runs"] - before,
              "digest": debug(con)["digest"], "n": n})
    """)
    q = {x["query"]: x for x in r["q"]}
    point = q["SELECT v FROM t WHERE id = ?"]
    rng = q["SELECT v FROM t WHERE id > ? ORDER BY v LIMIT ?"]
    assert point["calls"] == r["n"] and point["rows_returned"] == r["n"]
    assert rng["calls"] == r["n"] and rng["rows_returned"] == 3 * r["n"]
    assert r["q2"] == {"SELECT v FROM t WHERE id = ?": r["n"],
                       "SELECT v FROM t WHERE id > ? ORDER BY v LIMIT ?": r["n"]}
    vm = {a: (b, c) for a, b, c in r["vm"]}
    assert vm["SELECT v FROM t WHERE id = ?"][0] > 0
    assert vm["SELECT v FROM t WHERE id > ? ORDER BY v LIMIT ?"][1] == r["n"]  # one sort per run
    # every first run of these texts went through the digest thread's queue
    assert r["deferred"] >= 2 * r["n"]
    assert r["digest"]["queued_words"] == 0 and r["digest"]["inline_runs"] == 0


def test_deferred_runs_keep_sqlcommenter_activity(run_py):
    r = run_py("""
        con = sqlite3.connect(":memory:", isolation_level=None, cached_statements=0)
        load(con)
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY)")
        for i in range(40):
            route = "/a" if i % 4 else "/b"
            con.execute("SELECT id FROM t WHERE id = %d /*route='%s'*/" % (i, route.replace('/', '%2F'))).fetchall()
        emit(rows(con, "SELECT key, value, calls FROM insights_activity WHERE key = 'route' ORDER BY value"))
    """)
    assert r == [["route", "/a", 30], ["route", "/b", 10]]


def test_not_deferred_failures_events_tagged(run_py):
    r = run_py("""
        con = sqlite3.connect(":memory:", isolation_level=None, cached_statements=0)
        load(con)
        con.execute("CREATE TABLE t(a)")
        con.execute("CREATE INDEX ta ON t(a)")
        # read-only and failing in its first (and only) run: integer overflow
        e = attempt(con, "SELECT abs(-9223372036854775807 - 1)")
        con.execute("REINDEX ta")   # read-only per SQLite, yet an event
        con.execute("SELECT insights_tag('job', 'nightly')")
        for i in range(3):
            con.execute("SELECT a FROM t WHERE a = %d" % i).fetchall()
        emit({"e": e,
              "err": rows(con, "SELECT query, calls, errors FROM insights_queries WHERE errors > 0"),
              "ev": rows(con, "SELECT kind FROM insights_events WHERE kind = 'reindex'"),
              "act": rows(con, "SELECT key, value, calls FROM insights_activity WHERE key = 'job'"),
              "mode": debug(con)["error_capture"]["active"]})
    """)
    assert r["e"][0] == "err" and "integer overflow" in r["e"][2]
    if r["mode"]:
        assert ["SELECT abs(? - ?)", 1, 1] in r["err"]
    assert r["ev"] == [["reindex"]]
    # everything after the tag: the tag call itself, the 3 selects (first
    # runs on a tagged connection, normalized in place), the 2 reads before
    assert r["act"] == [["job", "nightly", 6]]


def test_same_text_reprepared_counts_each_run_apsw(run_py, venv_python):
    """Go's database/sql, the shell and many ORMs prepare the same text anew
    for every execution: the new stmt often lands at the finalized one's
    address. Its counters start from zero and must not be diffed against the
    old stmt's."""
    r = run_py("""
        import apsw
        con = apsw.Connection(":memory:")
        load(con)
        con.execute("CREATE TABLE t(a); WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 50) INSERT INTO t SELECT x FROM s")
        def fresh(n):
            for _ in range(n):
                list(con.execute("SELECT count(*) FROM t WHERE a % 7 = 0", can_cache=False))
        def cached(n):
            for _ in range(n):
                list(con.execute("SELECT count(*) AS n FROM t WHERE a % 7 = 0"))
        fresh(40); cached(40)
        emit(rows(con, "SELECT query, calls, vm_steps, fullscan_steps FROM insights_queries "
                       "WHERE query LIKE 'SELECT count(*)%' ORDER BY query"))
    """, python=venv_python)
    (q1, calls1, vm1, fs1), (q2, calls2, vm2, fs2) = r
    assert calls1 == calls2 == 40
    # the same plan per run: every run counted in full, reprepared or not
    assert vm1 == vm2 and vm1 >= 40 * 50
    assert fs1 == fs2 == 40 * 49


def test_adhoc_writes_deferred_exact_and_migrations_still_events(run_py, db_path):
    r = run_py("""
        con = sqlite3.connect(ARGS["db"], isolation_level=None, cached_statements=0)
        load(con)
        con.execute("CREATE TABLE log(id INTEGER PRIMARY KEY, msg TEXT, n INT)")
        con.execute("CREATE TABLE alembic_version(version_num TEXT)")
        before = debug(con)["digest"]["deferred_runs"]
        for i in range(500):
            con.execute("INSERT INTO log(msg, n) VALUES ('m%d', %d)" % (i, i))
        for i in range(0, 500, 50):
            con.execute("UPDATE log SET n = n + 1 WHERE n BETWEEN %d AND %d" % (i, i + 9))
        con.execute("DELETE FROM log WHERE n > 480")
        con.execute("INSERT INTO alembic_version VALUES ('ae1027a6acf')")
        q = {x["query"]: x for x in queries(con, "query LIKE '% log%'")}
        emit({"q": q, "deferred": debug(con)["digest"]["deferred_runs"] - before,
              "ev": rows(con, "SELECT kind, object, detail FROM insights_events WHERE kind = 'migration'")})
    """, args={"db": db_path})
    q = r["q"]
    ins = q["INSERT INTO log(msg, n) VALUES (?, ?)"]
    assert (ins["calls"], ins["rows_affected"], ins["errors"]) == (500, 500, 0)
    upd = q["UPDATE log SET n = n + ? WHERE n BETWEEN ? AND ?"]
    assert (upd["calls"], upd["rows_affected"]) == (10, 100)
    assert q["DELETE FROM log WHERE n > ?"]["rows_affected"] == 19
    assert r["deferred"] >= 511
    # the write to the migration tool's table was not deferred: still an event
    assert r["ev"] == [["migration", "alembic", "ae1027a6acf"]]
