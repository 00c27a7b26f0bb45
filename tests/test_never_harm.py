"""Never harm the host.

A corpus of varied statements runs in separate /usr/bin/python3 processes:
without the extension, with it loaded, with it loaded under LD_PRELOAD
(error log installed), and with LD_PRELOAD + SQLITE_INSIGHTS_AUTOLOAD=1.
Results, row counts, exception types, messages and SQLite error codes must be
identical, the database file must end up byte-identical, and the extension
must report no internal errors. Hostile input to insights_normalize must
return or fail cleanly and leave the connection working.
"""

import hashlib
import json

import pytest

from conftest import parse_result, run_snippet

BIG_IN = "SELECT count(*), sum(id) FROM users WHERE id IN (" + ", ".join(str(i) for i in range(10_000)) + ")"
BIG_LITERAL = "SELECT length('" + "x" * (1 << 20) + "'), 'tail'"
BIG_COMMENT = "/* " + "c" * (1 << 20) + " */ SELECT 'after a 1 MB comment'"
BIG_SELECT_LIST = "SELECT " + ", ".join(f"{i} AS c{i}" for i in range(1500))
DEEP_EXPR = "SELECT " + " + ".join(["1"] * 2000)
DEEP_PARENS = "SELECT " + "(" * 300 + "1" + ")" * 300

# (label, kind, sql, params). kind: q (execute + fetchall), many (executemany),
# script (executescript).
CORPUS = [
    # DDL
    ("ddl users", "q", "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE,"
                       " age INTEGER CHECK (age >= 0), data BLOB)", []),
    ("ddl orders", "q", "CREATE TABLE orders(id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id),"
                        " amount REAL, note TEXT DEFAULT 'none')", []),
    ("ddl log", "q", "CREATE TABLE log(msg TEXT)", []),
    ("ddl strict", "q", "CREATE TABLE strict_t(a INTEGER, b TEXT) STRICT", []),
    ("ddl index", "q", "CREATE INDEX orders_user ON orders(user_id)", []),
    ("ddl view", "q", "CREATE VIEW v_totals AS SELECT u.name, count(o.id) AS n, total(o.amount) AS total"
                      " FROM users u LEFT JOIN orders o ON o.user_id = u.id GROUP BY u.id", []),
    ("ddl trigger", "q", "CREATE TRIGGER users_ai AFTER INSERT ON users BEGIN"
                         " INSERT INTO log VALUES ('new ' || new.name); END", []),
    ("ddl trigger raise", "q", "CREATE TRIGGER users_bd BEFORE DELETE ON users WHEN old.name = 'bob'"
                               " BEGIN SELECT RAISE(ABORT, 'cannot delete bob'); END", []),
    ("ddl duplicate", "q", "CREATE TABLE users(x)", []),
    ("pragma fk on", "q", "PRAGMA foreign_keys = ON", []),
    # DML
    ("insert multi", "q", "INSERT INTO users(name, email, age) VALUES ('alice', 'a@x', 30), ('bob', 'b@x', 25),"
                          " ('carol', NULL, 41)", []),
    ("insert blob", "q", "INSERT INTO users(name, email, age, data) VALUES (?, ?, ?, ?)",
     ["dave", "d@x", 22, {"hex": "00ff10deadbeef"}]),
    ("insert orders", "q", "INSERT INTO orders(user_id, amount) VALUES (1, 10.5), (1, 20.25), (2, 7), (3, 99.99)", []),
    ("executemany", "many", "INSERT INTO orders(user_id, amount, note) VALUES (?, ?, ?)",
     [[1, 1.5, "a"], [2, 2.5, "b"], [4, 3.5, None], [2, -1, "neg"]]),
    ("update", "q", "UPDATE users SET age = age + 1 WHERE name LIKE 'a%'", []),
    ("delete", "q", "DELETE FROM orders WHERE amount < 2", []),
    ("upsert", "q", "INSERT INTO users(id, name, email, age) VALUES (1, 'alice2', 'a2@x', 31)"
                    " ON CONFLICT(id) DO UPDATE SET name = excluded.name, age = excluded.age", []),
    ("insert returning", "q", "INSERT INTO users(name, email, age) VALUES ('erin', 'e@x', 50) RETURNING id, name, age", []),
    ("update returning", "q", "UPDATE users SET age = age * 2 WHERE id = 2 RETURNING id, age", []),
    ("delete returning none", "q", "DELETE FROM users WHERE name = 'nobody' RETURNING *", []),
    ("replace", "q", "REPLACE INTO log(rowid, msg) VALUES (1, 'replaced')", []),
    ("trigger raise fires", "q", "DELETE FROM users WHERE name = 'bob'", []),
    # selects
    ("join group", "q", "SELECT u.name, count(*), sum(o.amount) FROM users u JOIN orders o ON o.user_id = u.id"
                        " GROUP BY u.name ORDER BY u.name", []),
    ("left join null", "q", "SELECT name FROM users LEFT JOIN orders ON orders.user_id = users.id"
                            " WHERE orders.id IS NULL ORDER BY name", []),
    ("recursive cte", "q", "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)"
                           " SELECT sum(i), count(*), max(i) FROM n", []),
    ("window", "q", "SELECT name, age, rank() OVER (ORDER BY age DESC), sum(age) OVER (ORDER BY id"
                    " ROWS BETWEEN 1 PRECEDING AND CURRENT ROW), lag(name) OVER (ORDER BY id) FROM users ORDER BY id", []),
    ("view", "q", "SELECT * FROM v_totals ORDER BY name", []),
    ("aggregates", "q", "SELECT count(*), avg(age), min(age), max(age), group_concat(name, ',') FROM"
                        " (SELECT * FROM users ORDER BY id)", []),
    ("subquery exists", "q", "SELECT name FROM users u WHERE EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id"
                             " AND o.amount > 10) ORDER BY 1", []),
    ("union compound", "q", "SELECT name FROM users UNION SELECT note FROM orders ORDER BY 1", []),
    ("json", "q", "SELECT json_object('a', 1, 'b', json_array(1, 2, 3)), json_extract('{\"x\":[1,2]}', '$.x[1]'),"
                  " json_valid('{')", []),
    ("log rows", "q", "SELECT rowid, msg FROM log ORDER BY rowid", []),
    ("params named", "q", "SELECT :a + :b, :a || 'x'", {"a": 2, "b": 40}),
    ("explain qp", "q", "EXPLAIN QUERY PLAN SELECT * FROM orders WHERE user_id = 1", []),
    # pragmas
    ("pragma user_version set", "q", "PRAGMA user_version = 7", []),
    ("pragma user_version", "q", "PRAGMA user_version", []),
    ("pragma table_info", "q", "PRAGMA table_info(users)", []),
    ("pragma index_list", "q", "PRAGMA index_list(orders)", []),
    ("pragma integrity", "q", "PRAGMA integrity_check", []),
    ("pragma fk check", "q", "PRAGMA foreign_key_check", []),
    # transactions
    ("begin", "q", "BEGIN", []),
    ("tx insert", "q", "INSERT INTO log VALUES ('in tx')", []),
    ("savepoint", "q", "SAVEPOINT sp1", []),
    ("sp insert", "q", "INSERT INTO log VALUES ('in sp')", []),
    ("rollback to", "q", "ROLLBACK TO sp1", []),
    ("release", "q", "RELEASE sp1", []),
    ("nested begin", "q", "BEGIN", []),
    ("commit", "q", "COMMIT", []),
    ("rollback without tx", "q", "ROLLBACK", []),
    ("tx rollback", "script", "BEGIN; INSERT INTO log VALUES ('rolled back'); ROLLBACK;", []),
    # constraint failures
    ("unique", "q", "INSERT INTO users(name, email, age) VALUES ('x', 'a@x', 1)", []),
    ("not null", "q", "INSERT INTO users(name, age) VALUES (NULL, 1)", []),
    ("check", "q", "INSERT INTO users(name, age) VALUES ('neg', -5)", []),
    ("foreign key", "q", "INSERT INTO orders(user_id, amount) VALUES (999, 1)", []),
    ("primary key", "q", "INSERT INTO users(id, name) VALUES (1, 'dup')", []),
    ("strict type", "q", "INSERT INTO strict_t VALUES ('abc', 'x')", []),
    ("strict ok", "q", "INSERT INTO strict_t VALUES ('12', 'x') RETURNING a, typeof(a)", []),
    ("constraint in tx", "script", "BEGIN; INSERT INTO log VALUES ('kept'); INSERT INTO users(id, name) VALUES (1, 'dup'); COMMIT;", []),
    ("after failed script", "q", "SELECT count(*) FROM log WHERE msg = 'kept'", []),
    ("end tx left open", "q", "COMMIT", []),
    # syntax and name errors
    ("syntax", "q", "SELEC 1", []),
    ("no such table", "q", "SELECT * FROM nosuch", []),
    ("no such column", "q", "SELECT nosuchcol FROM users", []),
    ("unbalanced", "q", "SELECT (1", []),
    ("wrong values count", "q", "INSERT INTO users VALUES (1)", []),
    ("no such function", "q", "SELECT nosuchfn(1)", []),
    ("raise outside trigger", "q", "SELECT RAISE(ABORT, 'x')", []),
    ("two statements", "q", "SELECT 1; SELECT 2", []),
    ("empty", "q", "", []),
    ("only comment", "q", "-- nothing here", []),
    ("wrong param count", "q", "SELECT ?, ?", [1]),
    # types, arithmetic, blobs
    ("division", "q", "SELECT 1 / 0, 5 % 0, 1.0 / 0, 7 / 2, -7 / 2, 7.0 / 2, 7 % -3", []),
    ("types", "q", "SELECT typeof(1), typeof(1.5), typeof('x'), typeof(x'00'), typeof(NULL),"
                   " CAST('12abc' AS INTEGER), '3' + 4, 1e308 * 10, -0.0", []),
    ("overflow", "q", "SELECT abs(-9223372036854775808)", []),
    ("int to real", "q", "SELECT 9223372036854775807 + 1, 9223372036854775807", []),
    ("blobs", "q", "SELECT zeroblob(4), x'deadbeef', length(randomblob(16)), hex(data), length(data)"
                   " FROM users WHERE data IS NOT NULL", []),
    ("blob param", "q", "SELECT ?, length(?)", [{"hex": "00" * 100 + "ff"}, {"hex": "0102"}]),
    ("too big blob", "q", "SELECT zeroblob(2000000000)", []),
    ("bad json", "q", "SELECT json_extract('{', '$')", []),
    # unicode
    ("unicode insert", "q", "INSERT INTO users(name, email, age) VALUES ('名前 ünïcødé 🚀', 'u@x', 9)", []),
    ("unicode select", "q", "SELECT name, length(name), upper(name), hex(name) FROM users WHERE email = 'u@x'", []),
    ("unicode literals", "q", "SELECT '日本語' || '🚀', unicode('é'), char(128512), 'Ω' = 'Ω'", []),
    ("unicode identifiers", "q", "CREATE TABLE \"tåble ✓\"(\"kolumn 名\" TEXT)", []),
    ("unicode identifiers use", "q", "INSERT INTO \"tåble ✓\" VALUES ('ok') RETURNING \"kolumn 名\"", []),
    # big statements
    ("1 MB literal", "q", BIG_LITERAL, []),
    ("1 MB comment", "q", BIG_COMMENT, []),
    ("10k IN list", "q", BIG_IN, []),
    ("1500 columns", "q", BIG_SELECT_LIST, []),
    ("deep expression", "q", DEEP_EXPR, []),
    ("deep parens", "q", DEEP_PARENS, []),
    # misc
    ("attach", "q", "ATTACH ':memory:' AS aux", []),
    ("aux table", "script", "CREATE TABLE aux.t2(x); INSERT INTO aux.t2 VALUES (1), (2);", []),
    ("aux select", "q", "SELECT sum(x) FROM aux.t2", []),
    ("detach", "q", "DETACH aux", []),
    ("changes", "q", "SELECT changes(), total_changes(), last_insert_rowid()", []),
    ("analyze", "q", "ANALYZE", []),
    ("stat1", "q", "SELECT tbl, idx, stat FROM sqlite_stat1 ORDER BY 1, 2", []),
    ("vacuum", "q", "VACUUM", []),
    ("drop view", "q", "DROP VIEW v_totals", []),
    ("drop twice", "q", "DROP VIEW v_totals", []),
    ("final counts", "q", "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM orders),"
                          " (SELECT count(*) FROM log), (SELECT group_concat(msg, '|') FROM log)", []),
]

RUNNER = r"""
import hashlib

def dec(v):
    if isinstance(v, dict) and set(v) == {"hex"}:
        return bytes.fromhex(v["hex"])
    return v

def enc(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"hex": bytes(v).hex()}
    if isinstance(v, float):
        return {"float": repr(v)}
    return v

def decp(p):
    if isinstance(p, dict):
        return {k: dec(v) for k, v in p.items()}
    return [dec(v) for v in p]

mode = ARGS["mode"]
corpus = json.load(open(ARGS["corpus"]))
con = sqlite3.connect(ARGS["db"], isolation_level=None)
if mode in ("loaded", "preload"):
    load(con)
out = []
for label, kind, sql, params in corpus:
    try:
        if kind == "many":
            cur = con.executemany(sql, [decp(p) for p in params])
            res = ["ok", cur.rowcount]
        elif kind == "script":
            con.executescript(sql)
            res = ["ok"]
        else:
            cur = con.execute(sql, decp(params))
            rows_ = [[enc(v) for v in r] for r in cur.fetchall()]
            desc = [d[0] for d in cur.description] if cur.description else None
            res = ["ok", rows_, desc, cur.rowcount, cur.lastrowid]
    except Exception as e:  # noqa: BLE001
        res = ["err", type(e).__name__, str(e), getattr(e, "sqlite_errorcode", None),
               getattr(e, "sqlite_errorname", None)]
    out.append([label, res])
state = {"in_transaction": con.in_transaction, "total_changes": con.total_changes}
stats = None
if mode != "plain":
    d = debug(con)
    stats = {"internal_errors": d["internal_errors"], "mode": d["error_capture"]["mode"],
             "errors_total": d["errors_total"],
             "calls": one(con, "SELECT sum(calls) FROM insights_queries WHERE scope = 'process'"),
             "errors": one(con, "SELECT sum(errors) FROM insights_queries WHERE scope = 'process'"),
             "step_errors": one(con, "SELECT count(*) FROM insights_errors WHERE phase = 'step'"),
             "prepare_errors": one(con, "SELECT count(*) FROM insights_errors WHERE phase = 'prepare'"),
             "big_in": rows(con, "SELECT query, calls FROM insights_queries WHERE query LIKE '%IN (?)'"),
             "max_query_len": one(con, "SELECT max(length(query)) FROM insights_queries")}
con.close()
digest = hashlib.sha256(open(ARGS["db"], "rb").read()).hexdigest()
json.dump({"out": out, "state": state, "stats": stats, "digest": digest}, open(ARGS["out"], "w"))
emit("done")
"""

MODES = {
    "plain": {},
    "loaded": {},
    "preload": {"LD_PRELOAD": "<ext>"},
    "autoload": {"LD_PRELOAD": "<ext>", "SQLITE_INSIGHTS_AUTOLOAD": "1"},
}


@pytest.fixture(scope="module")
def corpus_runs(ext_path, tmp_path_factory):
    base = tmp_path_factory.mktemp("harm")
    corpus_file = base / "corpus.json"
    corpus_file.write_text(json.dumps(CORPUS))
    results = {}
    for mode, env in MODES.items():
        d = base / mode
        d.mkdir()
        out = d / "out.json"
        env = {k: (ext_path if v == "<ext>" else v) for k, v in env.items()}
        proc = run_snippet(RUNNER, env=env, timeout=120, args={
            "mode": mode, "corpus": str(corpus_file), "db": str(d / "app.db"), "out": str(out)})
        assert parse_result(proc) == "done"
        results[mode] = json.loads(out.read_text())
        results[mode]["stderr"] = proc.stderr
    return results


def test_corpus_is_varied(corpus_runs):
    """The baseline itself exercises successes and many kinds of failure."""
    out = corpus_runs["plain"]["out"]
    assert len(out) == len(CORPUS) >= 50
    errs = {res[1] for _, res in out if res[0] == "err"}
    assert {"IntegrityError", "OperationalError", "ProgrammingError"} <= errs
    n_err = sum(res[0] == "err" for _, res in out)
    assert 15 <= n_err <= len(out) - 40
    by_label = dict(out)
    assert by_label["10k IN list"][1] == [[6, 21]]  # every user id (1..6) is in the list
    assert by_label["unique"][1] == "IntegrityError"
    assert by_label["1 MB literal"][1] == [[1 << 20, "tail"]]
    assert by_label["deep expression"][2].startswith("Expression tree is too large")


@pytest.mark.parametrize("mode", ["loaded", "preload", "autoload"])
def test_results_identical_with_extension(corpus_runs, mode):
    base, other = corpus_runs["plain"]["out"], corpus_runs[mode]["out"]
    assert len(base) == len(other)
    for (label, a), (label2, b) in zip(base, other):
        assert label == label2
        assert a == b, f"statement {label!r} differs in mode {mode}:\n without: {a}\n with:    {b}"
    assert corpus_runs[mode]["state"] == corpus_runs["plain"]["state"]


@pytest.mark.parametrize("mode", ["loaded", "preload", "autoload"])
def test_database_file_byte_identical(corpus_runs, mode):
    assert corpus_runs[mode]["digest"] == corpus_runs["plain"]["digest"]


@pytest.mark.parametrize("mode", ["loaded", "preload", "autoload"])
def test_extension_captured_and_reported_no_internal_errors(corpus_runs, mode):
    s = corpus_runs[mode]["stats"]
    assert s["internal_errors"] == 0
    assert s["mode"] == ("none" if mode == "loaded" else "preload")
    assert s["calls"] >= 70, "the comparison is not vacuous: statements were captured"
    assert s["big_in"] == [["SELECT count(*), sum(id) FROM users WHERE id IN (?)", 1]]
    assert s["max_query_len"] <= 16 * 1024 + 3, "stored query text is bounded"
    if mode != "loaded":
        # constraint failures at step, syntax/name errors at prepare
        assert s["step_errors"] >= 8
        assert s["prepare_errors"] >= 6
    assert "panicked" not in corpus_runs[mode]["stderr"]


HOSTILE = r"""
out = {}
con = sqlite3.connect(":memory:")
load(con)
def check(label, sql, *params):
    out[label] = attempt(con, sql, *params)
    out[label + " / alive"] = one(con, "SELECT 40 + 2")
ten_mb = "SELECT '" + "y" * (10 << 20) + "'"
check("10 MB literal", "SELECT insights_normalize(?)", ten_mb)
check("10 MB tokens", "SELECT length(insights_normalize(?)), length(insights_fingerprint(?))",
      "SELECT " + "a, " * (1 << 20) + "b", "SELECT " + "a, " * (1 << 20) + "b")
check("over the limit", "SELECT insights_normalize(CAST(zeroblob(70000000) AS TEXT))")
check("fingerprint over the limit", "SELECT insights_fingerprint(CAST(zeroblob(70000000) AS TEXT))")
for i in range(5):
    check(f"randomblob {i}", "SELECT insights_normalize(CAST(randomblob(5000) AS TEXT))")
check("all NULs", "SELECT insights_normalize(CAST(zeroblob(1000) AS TEXT))")
check("invalid utf8 tail", "SELECT insights_normalize(CAST(x'53454c45435420ff' AS TEXT))")
for s in ["SELECT 'abc", "SELECT /* abc", 'SELECT "abc', "SELECT [abc", "SELECT `abc", "SELECT x'4",
          "/*app='", "/*app='x',route='%ZZ%'*/ SELECT 1", "-- only", "", " \t\n ", "'", "/*", "*/",
          "SELECT ?999999999999999999999", "SELECT 1e999999", "SELECT " + "(" * 100000,
          "SELECT 0x" + "f" * 10000, "\u2028\u00a0\ufeffSELECT 1", "SELECT $" + "a" * 100000]:
    check("unterminated " + repr(s[:40]), "SELECT insights_normalize(?), insights_fingerprint(?)", s, s)
out["debug"] = debug(con)["internal_errors"]
out["still counting"] = one(con, "SELECT calls FROM insights_queries WHERE query = 'SELECT ? + ?'")
emit(out)
"""


@pytest.fixture(scope="module")
def hostile(ext_path):
    return parse_result(run_snippet(HOSTILE, timeout=120))


def test_normalize_huge_inputs(hostile):
    assert hostile["10 MB literal"] == ["ok", [["SELECT ?"]]]
    ok, [[n_len, fp_len]] = hostile["10 MB tokens"]
    assert ok == "ok" and 0 < n_len <= 16 * 1024 + 3 and fp_len == 16
    for label in ("over the limit", "fingerprint over the limit"):
        res = hostile[label]
        fname = "insights_fingerprint" if label.startswith("fingerprint") else "insights_normalize"
        assert res[0] == "err" and res[2].startswith(fname + ": ") and "longer than" in res[2]


def test_normalize_binary_garbage(hostile):
    for i in range(5):
        res = hostile[f"randomblob {i}"]
        if res[0] == "err":
            assert res[2].startswith("insights_normalize: "), res
        else:
            assert isinstance(res[1][0][0], str)
    assert hostile["all NULs"] == ["ok", [[""]]]
    res = hostile["invalid utf8 tail"]
    assert res[0] == "ok" or res[2].startswith("insights_normalize: ")


def test_normalize_unterminated_and_odd_input(hostile):
    odd = {k: v for k, v in hostile.items() if k.startswith("unterminated ") and not k.endswith("/ alive")}
    assert len(odd) == 20
    for label, res in odd.items():
        assert res[0] == "ok", f"{label}: {res}"
        text, fp = res[1][0]
        assert isinstance(text, str) and len(text.encode()) <= 16 * 1024 + 3
        assert len(fp) == 16 and int(fp, 16) >= 0
    assert hostile["unterminated \"SELECT 'abc\""][1] == [["SELECT ?", hostile["unterminated \"SELECT 'abc\""][1][0][1]]]


def test_connection_keeps_working_after_hostile_input(hostile):
    alive = [v for k, v in hostile.items() if k.endswith("/ alive")]
    assert len(alive) > 25 and all(v == 42 for v in alive)
    assert hostile["debug"] == 0
    assert hostile["still counting"] >= 25


HOST_HOOKS = r"""
con = sqlite3.connect(":memory:", isolation_level=None)
if ARGS["load"]:
    load(con)
out = {}
seen = []
con.set_trace_callback(seen.append)
con.execute("CREATE TABLE t(x)")
con.execute("INSERT INTO t VALUES (1)")
con.execute("SELECT * FROM t").fetchall()
con.set_trace_callback(None)
con.execute("SELECT 'untraced'").fetchall()
out["trace"] = seen
calls = []
def auth(action, a1, a2, db, src):
    calls.append([action, a1, a2])
    return sqlite3.SQLITE_DENY if a1 == "secret" else sqlite3.SQLITE_OK
con.execute("CREATE TABLE secret(y)")
con.set_authorizer(auth)
out["denied"] = attempt(con, "SELECT * FROM secret")
out["allowed"] = attempt(con, "SELECT x FROM t")
con.set_authorizer(None)
out["auth_calls"] = calls
con.create_function("twice", 1, lambda v: v * 2)
con.create_function("boom", 0, lambda: 1 / 0)
out["udf"] = attempt(con, "SELECT twice(21)")
out["udf_error"] = attempt(con, "SELECT boom()")
class Agg:
    def __init__(self): self.n = 0
    def step(self, v): self.n += v
    def finalize(self): return self.n
con.create_aggregate("mysum", 1, Agg)
out["agg"] = attempt(con, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) SELECT mysum(i) FROM n")
n = [0]
def progress():
    n[0] += 1
    return 1 if n[0] > 3 else 0
con.set_progress_handler(progress, 100)
out["interrupted"] = attempt(con, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n")
con.set_progress_handler(None, 0)
out["after_interrupt"] = attempt(con, "SELECT count(*) FROM t")
out["nested_udf"] = []
con.create_function("nested", 0, lambda: con.execute("SELECT count(*) FROM t").fetchone()[0])
out["nested_udf"] = attempt(con, "SELECT nested(), nested()")
con.close()
if ARGS["load"]:
    c2 = sqlite3.connect(":memory:")
    out["internal_errors"] = debug(c2)["internal_errors"]
emit(out)
"""


def test_host_callbacks_unaffected(run_py):
    """Trace callback, authorizer, UDFs, aggregates, progress-handler interrupts
    and nested statements behave the same with and without the extension."""
    without = run_py(HOST_HOOKS, args={"load": False})
    with_ext = run_py(HOST_HOOKS, args={"load": True})
    assert with_ext.pop("internal_errors") == 0
    assert with_ext == without
    assert without["trace"] == ["CREATE TABLE t(x)", "INSERT INTO t VALUES (1)", "SELECT * FROM t"]
    assert without["denied"][0] == "err" and "prohibited" in without["denied"][2]
    assert without["interrupted"] == ["err", "OperationalError", "interrupted"]
    assert without["udf"] == ["ok", [[42]]] and without["agg"] == ["ok", [[5050]]]
