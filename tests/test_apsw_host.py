"""Host: apsw from PyPI, which bundles a current SQLite (>= 3.42).

On such a host the extension is meant to install its error log at load time
(error capture mode 'runtime'), so failed statements are captured without
LD_PRELOAD. Every snippet runs in a fresh subprocess of the venv interpreter
(it has apsw); pytest's own process never loads the extension.
"""

import textwrap

import pytest

from conftest import parse_result

APSW_PRELUDE = """
import apsw
def acon(path=":memory:"):
    con = apsw.Connection(path)
    load(con)
    return con
"""


@pytest.fixture
def run_apsw(run_py, venv_python):
    def run(code, env=None, args=None):
        return run_py(APSW_PRELUDE + textwrap.dedent(code), env=env, python=venv_python, args=args)

    return run


def test_apsw_bundles_sqlite_at_least_3_42(run_apsw):
    r = run_apsw("""
        con = acon()
        emit({"lib": apsw.sqlite_lib_version(), "num": one(con, "SELECT sqlite_version()"),
              "dbg": debug(con)["sqlite_version"]})
    """)
    major, minor = (int(x) for x in r["lib"].split(".")[:2])
    assert (major, minor) >= (3, 42)
    assert r["dbg"] == r["num"] == r["lib"]


def test_apsw_load_and_capture(run_apsw, db_path):
    r = run_apsw("""
        con = acon(ARGS["db"])
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
        for i in range(4):
            con.execute("INSERT INTO t(v) VALUES (?)", (i,))
        for _ in range(3):
            con.execute("SELECT v FROM t WHERE id > ?", (1,)).fetchall()
        later = apsw.Connection(":memory:")  # opened after the load: instrumented automatically
        later.execute("SELECT 1, 2").fetchall()
        emit({"version": one(con, "SELECT insights_version()"),
              "q": queries(con, "kind IN ('insert', 'select') AND query NOT LIKE '%insights%'"),
              "dbg": debug(con)})
    """, args={"db": db_path})
    q = {(x["database"], x["query"]): x for x in r["q"]}
    ins = q[(db_path, "INSERT INTO t(v) VALUES (?)")]
    assert (ins["calls"], ins["rows_affected"]) == (4, 4)
    sel = q[(db_path, "SELECT v FROM t WHERE id > ?")]
    assert (sel["calls"], sel["rows_returned"]) == (3, 9)
    assert q[(":memory:", "SELECT ?, ?")]["calls"] == 1
    assert r["dbg"]["connections_instrumented"] == 2
    assert r["dbg"]["internal_errors"] == 0


def test_apsw_second_load_is_harmless(run_apsw):
    r = run_apsw("""
        con = acon()
        load(con)
        con.execute("SELECT 42").fetchall()
        emit(rows(con, "SELECT calls FROM insights_queries WHERE query = 'SELECT ?'"))
    """)
    assert r == [[1]]


def test_apsw_multiple_statements_in_one_execute(run_apsw):
    r = run_apsw("""
        con = acon()
        con.execute("CREATE TABLE t(x); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); SELECT * FROM t;").fetchall()
        emit(rows(con, "SELECT query, calls, rows_returned, rows_affected FROM insights_queries"
                       " WHERE query NOT LIKE '%insights%' ORDER BY query"))
    """)
    assert r == [
        ["CREATE TABLE t(x)", 1, 0, 0],
        ["INSERT INTO t VALUES (?)", 2, 0, 2],
        ["SELECT * FROM t", 1, 2, 0],
    ]


def test_apsw_busy_is_counted(run_apsw, db_path):
    r = run_apsw("""
        con = acon(ARGS["db"])
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
        other = apsw.Connection(ARGS["db"])  # no busy timeout
        con.execute("BEGIN IMMEDIATE")
        res = attempt(other, "INSERT INTO t(v) VALUES (5)")
        con.execute("COMMIT")
        emit({"res": res, "q": queries(con, "query = 'INSERT INTO t(v) VALUES (?)'"),
              "e": rows(con, "SELECT code, phase, message FROM insights_errors WHERE code = 5")})
    """, args={"db": db_path})
    assert r["res"] == ["err", "BusyError", "database is locked"]
    assert [(q["calls"], q["errors"], q["busy"]) for q in r["q"]] == [(1, 1, 1)]
    assert r["e"] == [[5, "step", "database is locked"]]



ERRORS_SNIPPET = """
    con = acon(ARGS["db"])
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v UNIQUE)")
    con.execute("INSERT INTO t(v) VALUES (1)")
    out = {"ec": debug(con)["error_capture"]}
    out["unique"] = attempt(con, "INSERT INTO t(v) VALUES (1)")
    out["syntax"] = attempt(con, "SELEC 1")
    out["nosuch"] = attempt(con, "SELECT * FROM nosuch")
    out["e"] = errors(con)
    out["q"] = queries(con, "query IN ('INSERT INTO t(v) VALUES (?)', 'SELEC ?', 'SELECT * FROM nosuch')")
    emit(out)
"""


@pytest.fixture
def apsw_errors(run_apsw, db_path):
    return run_apsw(ERRORS_SNIPPET, args={"db": db_path})


def test_apsw_errors_reach_the_host_unchanged(apsw_errors):
    r = apsw_errors
    assert r["unique"] == ["err", "ConstraintError", "UNIQUE constraint failed: t.v"]
    assert r["syntax"] == ["err", "SQLError", 'near "SELEC": syntax error']
    assert r["nosuch"] == ["err", "SQLError", "no such table: nosuch"]


def test_apsw_debug_active_flag_tells_the_truth(apsw_errors):
    """Whatever the mode, `active` is true exactly when failures are captured."""
    r = apsw_errors
    captured = any(e["message"] == "UNIQUE constraint failed: t.v" for e in r["e"])
    assert r["ec"]["active"] is captured
    assert (r["ec"]["mode"] in ("runtime", "preload")) or not captured


def test_apsw_error_capture_mode_runtime(apsw_errors):
    ec = apsw_errors["ec"]
    assert (ec["mode"], ec["active"]) == ("runtime", True), ec


def test_apsw_unique_failure_captured_without_preload(apsw_errors, db_path):
    e = [x for x in apsw_errors["e"] if x["phase"] == "step"]
    assert [(x["code"], x["extended_code"], x["message"], x["database"]) for x in e] == [
        (19, 2067, "UNIQUE constraint failed: t.v", db_path)]
    q = [x for x in apsw_errors["q"] if x["query"] == "INSERT INTO t(v) VALUES (?)"][0]
    assert (q["calls"], q["errors"], q["last_error"]) == (2, 1, "UNIQUE constraint failed: t.v")


def test_apsw_prepare_errors_captured_without_preload(apsw_errors):
    e = {x["query"]: x for x in apsw_errors["e"] if x["phase"] == "prepare"}
    assert "syntax error" in e["SELEC ?"]["message"]
    assert e["SELECT * FROM nosuch"]["message"] == "no such table: nosuch"


def test_apsw_under_ld_preload_still_works(run_apsw, preload_env, db_path):
    """LD_PRELOAD configures the system libsqlite3, not apsw's bundled copy:
    the host must keep working and debug must not claim capture it lacks."""
    r = run_apsw(ERRORS_SNIPPET, env=preload_env, args={"db": db_path})
    assert r["unique"] == ["err", "ConstraintError", "UNIQUE constraint failed: t.v"]
    captured = any(e["message"] == "UNIQUE constraint failed: t.v" for e in r["e"])
    assert r["ec"]["active"] is captured


def test_stdlib_and_apsw_in_one_process_do_not_crash(run_py_raw, venv_python):
    proc = run_py_raw(APSW_PRELUDE + textwrap.dedent("""
        c = sqlite3.connect(":memory:")
        load(c)
        a = apsw.Connection(":memory:")
        try:  # refusing the second load with an error would be fine too
            load(a)
            second = "loaded"
        except Exception as e:
            second = str(e)
        emit({"second": second,
              "stdlib": attempt(c, "SELECT count(*) >= 0 FROM insights_info"),
              "apsw": attempt(a, "SELECT 6 * 7"),
              "apsw_info": attempt(a, "SELECT count(*) >= 0 FROM insights_info")})
    """), python=venv_python)
    assert proc.returncode == 0, f"host crashed: rc={proc.returncode} stderr={proc.stderr[-500:]}"
    r = parse_result(proc)
    assert r["stdlib"] == ["ok", [[1]]]
    assert r["apsw"] == ["ok", [[42]]]
    if r["second"] == "loaded":
        assert r["apsw_info"] == ["ok", [[1]]]
