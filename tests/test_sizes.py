"""Sizes: insights_tables, insights_db, insights_size_history,
insights_size_refresh().

Each check grows a real database in a fresh /usr/bin/python3 process with the
extension loaded (Debian's SQLite 3.40.1, which has dbstat) and compares the
extension's figures with independent truth: count(*), PRAGMA page_count and
freelist_count, and file sizes from the OS.
"""

import json
import os
import sqlite3
import time

import pytest


FAST = {"SQLITE_INSIGHTS_FLUSH_INTERVAL_MS": "200"}
# no background size samples: checks of the cache see only their own measurements
QUIET = {"SQLITE_INSIGHTS_SIZE_SAMPLE_INTERVAL_MS": "0"}

GROW = r"""
import random
db = ARGS["db"]
con = sqlite3.connect(db, isolation_level=None)
load(con)
if ARGS.get("wal"):
    con.execute("PRAGMA journal_mode=WAL")
rnd = random.Random(5)
con.execute("BEGIN")
con.execute("CREATE TABLE events(id INTEGER PRIMARY KEY, kind TEXT, body TEXT)")
con.execute("CREATE INDEX events_kind ON events(kind)")
con.executemany("INSERT INTO events(kind, body) VALUES (?, ?)",
                [("k%d" % (i % 17), "x" * rnd.randrange(10, 300)) for i in range(30000)])
con.execute("CREATE TABLE users(email TEXT PRIMARY KEY, name TEXT) WITHOUT ROWID")
con.executemany("INSERT INTO users VALUES (?, ?)", [("u%d@example.com" % i, "n" * (i % 50)) for i in range(12000)])
con.execute("CREATE TABLE big(id INTEGER PRIMARY KEY, blob BLOB)")  # overflow pages
con.executemany("INSERT INTO big(blob) VALUES (?)", [(os.urandom(9000),) for i in range(40)])
con.execute("CREATE INDEX gone ON events(body)")
con.execute("CREATE TABLE scratch(x)")
con.executemany("INSERT INTO scratch VALUES (?)", [(i,) for i in range(5000)])
con.execute("CREATE VIRTUAL TABLE docs USING fts5(body)")
con.executemany("INSERT INTO docs VALUES (?)", [("hello world %d" % i,) for i in range(300)])
con.execute("CREATE VIEW recent AS SELECT * FROM events WHERE id > 100")
con.execute("COMMIT")
con.execute("DROP INDEX gone")
con.execute("DROP TABLE scratch")
con.execute("DELETE FROM events WHERE id % 3 = 0")
if ARGS.get("vacuum"):
    con.execute("VACUUM")
aux = ARGS["db"] + ".aux"
con.execute("ATTACH ? AS aux", (aux,))
con.execute("CREATE TABLE aux.t(a INTEGER PRIMARY KEY, b)")
con.executemany("INSERT INTO aux.t(b) VALUES (?)", [(i,) for i in range(2500)])
con.execute("CREATE TEMP TABLE tmp(x)")
con.executemany("INSERT INTO tmp VALUES (?)", [(i,) for i in range(700)])
"""

TABLE_COLS = ["schema", "name", "type", "tbl_name", "without_rowid", "pages", "bytes",
              "payload_bytes", "unused_bytes", "rows", "rows_method", "measured_at"]
DB_COLS = ["schema", "path", "file_bytes", "wal_bytes", "shm_bytes", "page_size", "page_count",
           "freelist_count", "freelist_bytes", "journal_mode", "auto_vacuum", "schema_version",
           "user_version", "data_version", "read_only", "disk_free_bytes", "disk_total_bytes",
           "measured_at"]

TRUTH = r"""
def truth(con):
    t = {}
    for schema in ("main", "aux", "temp"):
        t[schema] = {
            "page_count": one(con, 'PRAGMA "%s".page_count' % schema),
            "page_size": one(con, 'PRAGMA "%s".page_size' % schema),
            "freelist_count": one(con, 'PRAGMA "%s".freelist_count' % schema),
        }
    t["counts"] = {
        "events": one(con, "SELECT count(*) FROM events"),
        "users": one(con, "SELECT count(*) FROM users"),
        "big": one(con, "SELECT count(*) FROM big"),
        "aux.t": one(con, "SELECT count(*) FROM aux.t"),
        "tmp": one(con, "SELECT count(*) FROM tmp"),
        "docs_content": one(con, "SELECT count(*) FROM docs_content"),
    }
    return t
"""


def grow_and_read(run_py, db, **opts):
    code = GROW + TRUTH + """
tables = dicts(con, ARGS["tcols"], "insights_tables")
dbs = dicts(con, ARGS["dcols"], "insights_db")
emit({"tables": tables, "dbs": dbs, "truth": truth(con),
      "stat": {p: os.stat(p).st_size for p in [db, db + "-wal", db + ".aux"] if os.path.exists(p)},
      "statvfs": [os.statvfs(db).f_bavail * os.statvfs(db).f_frsize]})
"""
    args = {"db": db, "tcols": TABLE_COLS, "dcols": DB_COLS}
    args.update(opts)
    return run_py(code, env=QUIET, args=args)


def iso_ms(s):
    """Unix ms of an ISO-8601 UTC instant as the extension writes them."""
    from datetime import datetime, timezone
    d = datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return int(round(d.timestamp() * 1000))


def by_name(tables, schema="main"):
    return {t["name"]: t for t in tables if t["schema"] == schema}


@pytest.mark.parametrize("vacuum", [False, True], ids=["freelist", "vacuumed"])
def test_sizes_match_independent_truth(run_py, tmp_path, vacuum):
    db = str(tmp_path / "grow.db")
    r = grow_and_read(run_py, db, vacuum=vacuum)
    truth, tables = r["truth"], r["tables"]
    main = by_name(tables)
    # every storage object listed, views and dropped objects not
    assert {"sqlite_schema", "events", "events_kind", "users", "big", "docs", "docs_data",
            "docs_idx", "docs_content", "docs_docsize", "docs_config"} <= set(main)
    assert "recent" not in main and "gone" not in main and "scratch" not in main
    # exact rows from dbstat leaf cells (rowid) / all cells (WITHOUT ROWID, index)
    c = truth["counts"]
    assert main["events"]["rows"] == c["events"]
    assert main["events_kind"]["rows"] == c["events"]  # one entry per row
    assert main["users"]["rows"] == c["users"] and main["users"]["without_rowid"] == 1
    assert main["big"]["rows"] == c["big"]
    assert main["docs_content"]["rows"] == c["docs_content"]
    assert all(t["rows_method"] == "dbstat" for n, t in main.items() if n != "docs")
    # kinds and owners
    assert main["events_kind"]["type"] == "index" and main["events_kind"]["tbl_name"] == "events"
    assert main["docs"]["type"] == "virtual" and main["docs"]["pages"] == 0
    assert main["docs"]["rows"] is None and main["docs"]["rows_method"] == "none"
    for shadow in ("docs_data", "docs_idx", "docs_content", "docs_docsize", "docs_config"):
        assert main[shadow]["type"] == "shadow" and main[shadow]["tbl_name"] == "docs", shadow
    assert main["sqlite_schema"]["type"] == "table"
    # pages: every page of the file is an object's page or a free page
    m = truth["main"]
    assert sum(t["pages"] for t in main.values()) + m["freelist_count"] == m["page_count"]
    assert all(t["bytes"] == t["pages"] * m["page_size"] for t in main.values())
    assert all(t["payload_bytes"] + t["unused_bytes"] <= t["bytes"] for t in main.values())
    # the blob table spills to overflow pages: far more pages than rows
    assert main["big"]["pages"] >= 40 * 2
    if vacuum:
        assert m["freelist_count"] == 0
    else:
        assert m["freelist_count"] > 0  # the dropped index and table
    # attached and temp schemas
    aux = by_name(tables, "aux")
    assert aux["t"]["rows"] == c["aux.t"]
    a = truth["aux"]
    assert sum(t["pages"] for t in aux.values()) + a["freelist_count"] == a["page_count"]
    tmp = by_name(tables, "temp")
    assert tmp["tmp"]["rows"] == c["tmp"] and "sqlite_temp_schema" in tmp
    # measured_at is an ISO-8601 UTC instant
    assert all(len(t["measured_at"]) == 24 and t["measured_at"].endswith("Z") for t in tables)
    # insights_db against PRAGMAs and the OS
    dbs = {d["schema"]: d for d in r["dbs"]}
    assert set(dbs) == {"main", "temp", "aux"}
    d = dbs["main"]
    assert d["path"] == db and d["page_count"] == m["page_count"]
    assert d["freelist_count"] == m["freelist_count"]
    assert d["freelist_bytes"] == m["freelist_count"] * m["page_size"]
    assert d["file_bytes"] == r["stat"][db] == m["page_count"] * m["page_size"]  # rollback journal
    assert d["wal_bytes"] == 0 and d["journal_mode"] == "delete" and d["auto_vacuum"] == "none"
    assert abs(d["disk_free_bytes"] - r["statvfs"][0]) < 64 << 20
    assert d["disk_total_bytes"] >= d["disk_free_bytes"] > 0
    assert dbs["aux"]["file_bytes"] == r["stat"][db + ".aux"]
    assert dbs["temp"]["path"] is None and dbs["temp"]["file_bytes"] is None


def test_wal_database_and_db_versions(run_py, tmp_path):
    db = str(tmp_path / "wal.db")
    r = run_py("""
con = sqlite3.connect(ARGS["db"], isolation_level=None)
load(con)
con.execute("PRAGMA journal_mode=WAL")
con.execute("PRAGMA user_version=42")
con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
con.execute("BEGIN")
con.executemany("INSERT INTO t(v) VALUES (?)", [("v" * 100,) for i in range(5000)])
con.execute("COMMIT")
other = sqlite3.connect(ARGS["db"], isolation_level=None)
before = one(con, "SELECT data_version FROM insights_db WHERE schema = 'main'")
other.execute("INSERT INTO t(v) VALUES ('x')")
row = dicts(con, ARGS["dcols"], "insights_db", "schema = 'main'")[0]
t = dicts(con, ["rows", "rows_method"], "insights_tables", "name = 't'")[0]
emit({"row": row, "before": before, "t": t, "count": one(con, "SELECT count(*) FROM t"),
      "wal": os.stat(ARGS["db"] + "-wal").st_size, "shm": os.stat(ARGS["db"] + "-shm").st_size,
      "schema_version": one(con, "PRAGMA schema_version")})
""", env=QUIET, args={"db": db, "dcols": DB_COLS})
    row = r["row"]
    assert row["journal_mode"] == "wal" and row["user_version"] == 42
    assert row["wal_bytes"] == r["wal"] > 0 and row["shm_bytes"] == r["shm"] > 0
    assert row["data_version"] > r["before"]  # another connection committed
    assert row["schema_version"] == r["schema_version"]
    # the separate connection reads the WAL: rows committed there are counted
    assert r["t"] == {"rows": r["count"], "rows_method": "dbstat"}


def test_forced_refresh_and_cache(run_py, tmp_path):
    """Cached figures are served while fresh; a changed file is re-measured
    after size_refresh_ms; insights_size_refresh() measures at once."""
    db = str(tmp_path / "cache.db")
    r = run_py("""
import time
con = sqlite3.connect(ARGS["db"], isolation_level=None)
load(con)
con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
con.executemany("INSERT INTO t(v) VALUES (?)", [(i,) for i in range(1000)])
def t():
    return dicts(con, ["rows", "measured_at"], "insights_tables", "schema = 'main' AND name = 't'")[0]
out = {}
one(con, "SELECT insights_config('size_refresh_ms', 3600000)")
out["first"] = t()
time.sleep(0.01)
out["unchanged"] = t()                      # same file: cached
con.executemany("INSERT INTO t(v) VALUES (?)", [(i,) for i in range(500)])
out["stale"] = t()                          # changed, but younger than size_refresh_ms
out["forced"] = json.loads(one(con, "SELECT insights_size_refresh('main')"))
out["after_force"] = t()
one(con, "SELECT insights_config('size_refresh_ms', 0)")
con.executemany("INSERT INTO t(v) VALUES (?)", [(i,) for i in range(250)])
out["refreshed"] = t()                      # changed and stale: re-measured at query time
out["errors"] = [attempt(con, "SELECT insights_size_refresh('nope')"),
                 attempt(con, "SELECT insights_size_refresh(1)"),
                 attempt(con, "SELECT insights_size_refresh('main', 2)")]
out["all"] = json.loads(one(con, "SELECT insights_size_refresh()"))
emit(out)
""", env=QUIET, args={"db": db})
    assert r["first"]["rows"] == 1000
    assert r["unchanged"] == r["first"]
    assert r["stale"] == r["first"]
    f = r["forced"]
    assert f["schemas"] == 1 and f["objects"] == 2 and f["dbstat"] is True and f["via"] == ["main:separate"]
    assert f["pages"] >= 3 and f["ms"] >= 0
    assert r["after_force"]["rows"] == 1500 and r["after_force"]["measured_at"] >= r["first"]["measured_at"]
    assert r["refreshed"]["rows"] == 1750
    e = r["errors"]
    assert e[0][0] == "err" and "insights_size_refresh: no such schema: nope" in e[0][2]
    assert e[1][0] == "err" and "schema must be text" in e[1][2]
    assert e[2][0] == "err" and "takes 0 to 1 arguments" in e[2][2]
    assert r["all"]["schemas"] == 1  # an unused temp schema is not attached yet


def test_over_budget_database_is_measured_in_the_background(run_py, tmp_path):
    """With a page budget smaller than the database, a query never measures
    it: it answers at once ('pending'), the background thread measures."""
    db = str(tmp_path / "budget.db")
    env = {"SQLITE_INSIGHTS_SIZE_SAMPLE_INTERVAL_MS": "0"}  # no background samples
    r = run_py("""
import time
con = sqlite3.connect(ARGS["db"], isolation_level=None)
load(con)
con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
con.execute("BEGIN")
con.executemany("INSERT INTO t(v) VALUES (?)", [("x" * 200,) for i in range(20000)])
con.execute("COMMIT")
one(con, "SELECT insights_config('size_page_budget', 10)")
t0 = time.monotonic()
first = rows(con, "SELECT name, rows, rows_method FROM insights_tables WHERE schema = 'main' ORDER BY name")
first_ms = (time.monotonic() - t0) * 1e3
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    later = rows(con, "SELECT name, rows, rows_method FROM insights_tables WHERE schema = 'main' ORDER BY name")
    if all(r[2] == "dbstat" for r in later):
        break
    time.sleep(0.05)
# an over-budget in-memory schema: only a forced refresh measures it
m = sqlite3.connect(":memory:", isolation_level=None)
m.execute("CREATE TABLE big(x)")
m.executemany("INSERT INTO big VALUES (?)", [("y" * 500,) for i in range(2000)])
mem_first = rows(m, "SELECT rows_method FROM insights_tables WHERE schema = 'main' AND name = 'big'")
one(m, "SELECT insights_size_refresh()")
mem_forced = rows(m, "SELECT rows, rows_method FROM insights_tables WHERE schema = 'main' AND name = 'big'")
emit({"first": first, "first_ms": first_ms, "later": later, "count": one(con, "SELECT count(*) FROM t"),
      "mem_first": mem_first, "mem_forced": mem_forced})
""", env=env, args={"db": db})
    assert r["first"] == [["sqlite_schema", None, "pending"], ["t", None, "pending"]]
    assert r["later"] == [["sqlite_schema", 1, "dbstat"], ["t", r["count"], "dbstat"]]
    assert r["first_ms"] < 500
    assert r["mem_first"] == [["pending"]]
    assert r["mem_forced"] == [[2000, "dbstat"]]


def test_without_dbstat_counts_and_estimates(run_py, tmp_path):
    db = str(tmp_path / "nodbstat.db")
    r = run_py("""
con = sqlite3.connect(ARGS["db"], isolation_level=None)
load(con)
one(con, "SELECT insights_config('size_dbstat', 0)")
one(con, "SELECT insights_config('size_refresh_ms', 0)")
con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, k)")
con.execute("CREATE INDEX t_k ON t(k)")
con.execute("BEGIN")
con.executemany("INSERT INTO t(k) VALUES (?)", [(i % 10,) for i in range(3000)])
con.execute("COMMIT")
before = dicts(con, ["name", "pages", "rows", "rows_method"], "insights_tables", "schema = 'main'")
con.execute("ANALYZE")
one(con, "SELECT insights_size_refresh()")
after = dicts(con, ["name", "pages", "rows", "rows_method"], "insights_tables", "schema = 'main'")
emit({"before": before, "after": after, "forced": json.loads(one(con, "SELECT insights_size_refresh()"))})
""", env=QUIET, args={"db": db})
    before = {t["name"]: t for t in r["before"]}
    assert before["t"] == {"name": "t", "pages": None, "rows": 3000, "rows_method": "count"}
    assert before["t_k"]["rows_method"] == "none"
    after = {t["name"]: t for t in r["after"]}
    assert after["t_k"] == {"name": "t_k", "pages": None, "rows": 3000, "rows_method": "stat1"}
    assert after["sqlite_stat1"]["rows_method"] == "count"
    assert r["forced"]["dbstat"] is False


def test_read_only_and_untouched_user_connection(run_py, tmp_path):
    """Sizing reads through a separate connection: the user's open
    transaction, changes() and last_insert_rowid() are untouched; a
    connection holding a write transaction sees its own uncommitted rows."""
    db = str(tmp_path / "ro.db")
    r = run_py("""
con = sqlite3.connect(ARGS["db"], isolation_level=None)
load(con)
con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
con.execute("BEGIN")
con.executemany("INSERT INTO t(v) VALUES (?)", [(i,) for i in range(300)])
con.execute("INSERT INTO t(v) VALUES ('last')")
changes, rowid = one(con, "SELECT changes()"), one(con, "SELECT last_insert_rowid()")
inside = one(con, "SELECT rows FROM insights_tables WHERE schema = 'main' AND name = 't'")
after = [one(con, "SELECT changes()"), one(con, "SELECT last_insert_rowid()"), con.in_transaction]
con.execute("ROLLBACK")
ro = sqlite3.connect("file:" + ARGS["db"] + "?mode=ro", uri=True)
ro_rows = dicts(ro, ["name", "rows"], "insights_tables", "schema = 'main'")
emit({"inside": inside, "changes": [changes, rowid], "after": after, "ro": ro_rows})
""", env=QUIET, args={"db": db})
    assert r["inside"] == 301  # its own uncommitted rows: measured on its own connection
    assert r["after"] == r["changes"] + [True]
    assert {"name": "t", "rows": 0} in r["ro"]


def test_sizing_statements_stay_out_of_insights_queries(run_py, tmp_path):
    db = str(tmp_path / "clean.db")
    r = run_py("""
con = sqlite3.connect(ARGS["db"], isolation_level=None)
load(con)
con.execute("CREATE TABLE t(x)")
con.execute("CREATE TEMP TABLE tt(x)")
rows(con, "SELECT * FROM insights_tables")
rows(con, "SELECT * FROM insights_db")
one(con, "SELECT insights_size_refresh()")
emit([q for q, in rows(con, "SELECT query FROM insights_queries")])
""", env=QUIET, args={"db": db})
    ours = [q for q in r if "insights" not in q and not q.startswith("CREATE")]
    assert ours == []


def test_size_history_samples_and_growth(run_py, tmp_path):
    db = str(tmp_path / "hist.db")
    env = dict(FAST, SQLITE_INSIGHTS_SIZE_SAMPLE_INTERVAL_MS="400")
    r = run_py("""
import time
con = sqlite3.connect(ARGS["db"], isolation_level=None)
load(con)
con.execute("PRAGMA journal_mode=WAL")  # background samples read WAL databases only
con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
def wait_samples(n):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        k = one(con, "SELECT count(*) FROM insights_size_history WHERE type = 'database'")
        if k >= n:
            return k
        time.sleep(0.05)
    return k
seen = []
for step in range(3):
    con.execute("BEGIN")  # committed states are multiples of 2000 rows
    con.executemany("INSERT INTO t(v) VALUES (?)", [("x" * 100,) for i in range(2000)])
    con.execute("COMMIT")
    seen.append([one(con, "SELECT count(*) FROM t"), one(con, "PRAGMA page_count")])
    wait_samples(step + 1)
    time.sleep(0.45)
cols = ["at", "database", "type", "name", "tbl_name", "pages", "bytes", "rows", "file_bytes",
        "wal_bytes", "freelist_bytes", "baseline_at", "bytes_delta", "rows_delta",
        "bytes_per_day", "rows_per_day"]
raw = dicts(con, cols, "insights_size_history")
win = dicts(con, cols + ["window_days"], "insights_size_history", "window_days = 7")
one_t = dicts(con, ["name"], "insights_size_history", "name = 't'")
future = dicts(con, ["name"], "insights_size_history", "at > '2999-01-01'")
errs = [attempt(con, "SELECT * FROM insights_size_history WHERE window_days = 0"),
        attempt(con, "SELECT * FROM insights_size_history WHERE window_days = 'week'"),
        attempt(con, "SELECT * FROM insights_size_history WHERE at > 'yesterday'")]
emit({"seen": seen, "raw": raw, "win": win, "one_t": len(one_t), "future": future, "errs": errs,
      "page_size": one(con, "PRAGMA page_size"), "count": one(con, "SELECT count(*) FROM t")})
""", env=env, args={"db": db})
    raw = r["raw"]
    dbrows = [x for x in raw if x["type"] == "database"]
    trows = [x for x in raw if x["name"] == "t"]
    assert len(dbrows) >= 3 and len(trows) >= 3
    assert all(x["name"] is None and x["database"] == db for x in dbrows)
    # every sample is a real measurement: page_count x page_size, rows = a count seen
    counts = {c for c, _ in r["seen"]}
    assert {x["rows"] for x in trows} <= counts | {0}
    assert all(x["bytes"] == x["pages"] * r["page_size"] for x in dbrows)
    assert all(x["file_bytes"] is not None and x["freelist_bytes"] == 0 for x in dbrows)
    # growth between consecutive samples
    assert trows[0]["baseline_at"] is None and trows[0]["bytes_delta"] is None
    for a, b in zip(trows, trows[1:]):
        assert b["baseline_at"] == a["at"]
        assert b["rows_delta"] == b["rows"] - a["rows"]
        assert b["bytes_delta"] == b["bytes"] - a["bytes"]
    assert trows[-1]["rows"] > trows[0]["rows"]
    # window: one row per object, growth since the first sample in the window
    win = {x["name"]: x for x in r["win"]}
    assert set(win) == {None, "t", "sqlite_schema"}
    w = win["t"]
    assert w["window_days"] == 7 and w["baseline_at"] == trows[0]["at"] and w["at"] == trows[-1]["at"]
    assert w["rows_delta"] == trows[-1]["rows"] - trows[0]["rows"] > 0
    assert w["rows_per_day"] > 0 and w["bytes_per_day"] > 0
    assert r["one_t"] == len(trows) and r["future"] == []
    assert "window_days must be > 0" in r["errs"][0][2]
    assert "window_days must be a number of days" in r["errs"][1][2]
    assert "at must be compared with an instant" in r["errs"][2][2]


def test_growth_per_day_over_a_week_and_thinning(run_py, tmp_path):
    """Older samples written straight into the store: the growth rate over a
    window is (latest - first in window) / days between them, and old
    samples are thinned to one per hour, then one per day."""
    db = str(tmp_path / "week.db")
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")  # background samples: WAL databases only
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    con.executemany("INSERT INTO t(v) VALUES (?)", [(i,) for i in range(1000)])
    con.commit()
    con.close()
    # a first run creates the store and one real sample
    env = dict(FAST, SQLITE_INSIGHTS_SIZE_SAMPLE_INTERVAL_MS="300")
    take = """
import time
con = sqlite3.connect(ARGS["db"], isolation_level=None)
load(con)
n0 = one(con, "SELECT count(*) FROM insights_size_history WHERE type = 'database'")
deadline = time.monotonic() + 30
while time.monotonic() < deadline and one(con, "SELECT count(*) FROM insights_size_history WHERE type = 'database'") <= n0:
    time.sleep(0.05)
emit(dicts(con, ["name", "at", "bytes", "rows", "baseline_at", "bytes_per_day", "rows_per_day"],
           "insights_size_history", "window_days = ARGS_W".replace("ARGS_W", str(ARGS["w"]))))
"""
    run_py(take, env=env, args={"db": db, "w": 7})
    store = sqlite3.connect(db + ".insights")
    (latest,) = store.execute("SELECT max(at_ms) FROM size_samples").fetchone()
    (tbytes, trows) = store.execute("SELECT bytes, rows FROM size_samples WHERE name = 't' AND at_ms = ?", (latest,)).fetchone()
    day = 86_400_000
    # three days ago the table was 1 MiB smaller and had 600 rows fewer;
    # ten days ago (outside a 7-day window) much smaller still
    rows_ = [
        (latest - 3 * day, "t", "table", "t", 1, tbytes - (1 << 20), trows - 600, "dbstat"),
        (latest - 3 * day, "", "database", None, 1, 4096, None, None),
        (latest - 10 * day, "t", "table", "t", 1, 4096, 1, "dbstat"),
        (latest - 10 * day, "", "database", None, 1, 4096, None, None),
    ]
    # 30 fine samples four days ago within one hour, 5 within one day 40 days ago
    base = latest - 4 * day - (latest - 4 * day) % 3_600_000
    for k in range(1, 31):
        rows_.append((base + k * 60_000, "", "database", None, 1, 4096, None, None))
    old = latest - 40 * day - (latest - 40 * day) % day
    for k in range(5):
        rows_.append((old + k * 3_600_000, "", "database", None, 1, 4096, None, None))
    store.executemany(
        "INSERT OR REPLACE INTO size_samples(at_ms, name, type, tbl_name, pages, bytes, rows, rows_method) VALUES (?,?,?,?,?,?,?,?)",
        rows_)
    store.commit()
    r = run_py(take, env=env, args={"db": db, "w": 7})
    t = next(x for x in r if x["name"] == "t")
    now_latest = iso_ms(t["at"])
    (now_bytes, now_rows) = store.execute(
        "SELECT bytes, rows FROM size_samples WHERE name = 't' AND at_ms = ?", (now_latest,)).fetchone()
    assert iso_ms(t["baseline_at"]) == latest - 3 * day
    days = (now_latest - (latest - 3 * day)) / day
    assert t["bytes_per_day"] == pytest.approx((now_bytes - (tbytes - (1 << 20))) / days, rel=1e-9)
    assert t["rows_per_day"] == pytest.approx((now_rows - (trows - 600)) / days, rel=1e-9)
    # a 30-day window reaches the 10-day-old sample
    r30 = run_py(take, env=env, args={"db": db, "w": 30})
    t30 = next(x for x in r30 if x["name"] == "t")
    at30 = iso_ms(t30["at"])
    (rows30,) = store.execute("SELECT rows FROM size_samples WHERE name = 't' AND at_ms = ?", (at30,)).fetchone()
    assert iso_ms(t30["baseline_at"]) == latest - 10 * day
    assert t30["rows_per_day"] == pytest.approx((rows30 - 1) / ((at30 - (latest - 10 * day)) / day), rel=1e-9)
    # thinning: older than 2 days keeps the first sample of each hour, older
    # than 30 days the first of each day
    fine = store.execute("SELECT count(*) FROM size_samples WHERE name = '' AND at_ms > ? AND at_ms < ?",
                         (base, base + 3_600_000)).fetchone()[0]
    daily = store.execute("SELECT count(*) FROM size_samples WHERE name = '' AND at_ms >= ? AND at_ms < ?",
                          (old, old + day)).fetchone()[0]
    assert fine == 1 and daily == 1
    store.close()


def test_one_sample_per_interval_across_processes(tmp_path):
    """Several processes sampling one database share the claim: one sample per
    interval, whichever process takes it."""
    import subprocess
    from conftest import PRELUDE, RESULT_MARK, EXT, make_env
    import textwrap

    db = str(tmp_path / "claim.db")
    pre = sqlite3.connect(db)
    pre.execute("PRAGMA journal_mode=WAL")  # background samples: WAL databases only
    pre.execute("CREATE TABLE t(x)")
    pre.close()
    code = textwrap.dedent("""
    import time
    con = sqlite3.connect(ARGS["db"], isolation_level=None)
    load(con)
    time.sleep(3.0)
    emit("ok")
    """)
    src = PRELUDE.format(ext=str(EXT), mark=RESULT_MARK) + f"\nARGS = json.loads({json.dumps(json.dumps({'db': db}))})\n" + code
    env = make_env(dict(FAST, SQLITE_INSIGHTS_SIZE_SAMPLE_INTERVAL_MS="1000"))
    procs = [subprocess.Popen(["/usr/bin/python3", "-c", src], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    store = sqlite3.connect(db + ".insights")
    ats = [a for (a,) in store.execute("SELECT at_ms FROM size_samples WHERE name = '' ORDER BY at_ms")]
    store.close()
    assert 2 <= len(ats) <= 4, ats
    assert all(b - a >= 900 for a, b in zip(ats, ats[1:])), ats


def test_rollback_journal_databases_are_not_read_in_the_background(run_py, tmp_path):
    """In rollback-journal mode our reader's shared lock could make another
    connection's commit fail with SQLITE_BUSY: no background size samples
    there (a query of insights_tables still measures on demand)."""
    db = str(tmp_path / "rj.db")
    env = dict(FAST, SQLITE_INSIGHTS_SIZE_SAMPLE_INTERVAL_MS="200")
    r = run_py("""
import time
con = sqlite3.connect(ARGS["db"], isolation_level=None)
load(con)
con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
con.execute("INSERT INTO t(v) VALUES ('x')")
time.sleep(1.5)
emit({"samples": one(con, "SELECT count(*) FROM insights_size_history"),
      "mode": one(con, "PRAGMA journal_mode"),
      "on_demand": one(con, "SELECT rows FROM insights_tables WHERE name = 't'")})
""", env=env, args={"db": db})
    assert r == {"samples": 0, "mode": "delete", "on_demand": 1}
