"""insights_metrics(): Prometheus text exposition of the process's counters.

Checks: `promtool check metrics` accepts it (names, HELP/TYPE, escaping,
histograms), per-kind counters are exact and stay monotonic through
evictions, histograms are cumulative with +Inf == _count, per-fingerprint
series are bounded by `metrics_top_queries` and chosen by total time.
"""

import subprocess

import pytest

from telemetry_util import parse_metrics, promtool

WORK = """
import os, time
os.makedirs(os.path.dirname(ARGS["db"]), exist_ok=True)
con = sqlite3.connect(ARGS["db"], isolation_level=None)
load(con)
for k, v in ARGS.get("config", {}).items():
    con.execute("SELECT insights_config(?, ?)", (k, v))
con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
for i in range(ARGS.get("inserts", 40)):
    con.execute("INSERT INTO t(v) VALUES (?)", (str(i),))
for i in range(ARGS.get("selects", 25)):
    con.execute("SELECT v FROM t WHERE id = ?", (i,)).fetchall()
for i in range(ARGS.get("distinct", 0)):
    con.execute("SELECT v" + ", v" * (i + 1) + " FROM t WHERE id = 1").fetchall()
    if ARGS.get("pause_every") and i % ARGS["pause_every"] == ARGS["pause_every"] - 1:
        time.sleep(0.3)  # let the background round fold the growth in
for i in range(ARGS.get("slow", 0)):
    con.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000) SELECT count(*) FROM c").fetchall()
errs = 0
for i in range(ARGS.get("errors", 3)):
    try:
        con.execute("INSERT INTO t(id, v) VALUES (1, 'dup')")
    except sqlite3.IntegrityError:
        errs += 1
    try:
        con.execute("SELEC broken")
    except sqlite3.OperationalError:
        errs += 1
emit({"text": one(con, "SELECT insights_metrics()"), "errs": errs})
"""


def metrics(run_py, preload_env, db, **args):
    args["db"] = db
    return run_py(WORK, env=preload_env, args=args)


def samples(text, name, **labels):
    return [(lb, v) for n, lb, v in parse_metrics(text)
            if n == name and all(lb.get(k) == val for k, val in labels.items())]


@pytest.mark.skipif(promtool() is None, reason="promtool is not installed (Debian package prometheus)")
def test_promtool_accepts_the_exposition(run_py, preload_env, tmp_path):
    # a path with a quote, a backslash and a space exercises label escaping
    db = str(tmp_path / 'we"ird \\dir' / "app.db")
    r = metrics(run_py, preload_env, db, slow=2)
    proc = subprocess.run([promtool(), "check", "metrics"], input=r["text"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", "promtool lint findings: " + proc.stdout + proc.stderr
    # the escaped label round-trips
    assert samples(r["text"], "sqlite_insights_statements_total", database=db, kind="insert")


def test_counters_are_exact_per_kind(run_py, preload_env, tmp_path):
    db = str(tmp_path / "a.db")
    r = metrics(run_py, preload_env, db, inserts=40, selects=25, errors=3)
    t = r["text"]
    calls = {lb["kind"]: v for lb, v in samples(t, "sqlite_insights_statements_total", database=db)}
    errors = {lb["kind"]: v for lb, v in samples(t, "sqlite_insights_statement_errors_total", database=db)}
    assert calls["insert"] == 40 + 3  # 3 duplicate-key failures are inserts too
    assert errors["insert"] == 3
    assert errors.get("other", 0) + errors.get("select", 0) == 3  # "SELEC broken"
    assert calls["select"] >= 25
    # every family has HELP and TYPE, counters end in _total
    for line in t.splitlines():
        if line.startswith("# TYPE ") and line.endswith(" counter"):
            assert line.split()[2].endswith("_total"), line
    names = {n for n, _, _ in parse_metrics(t)}
    for n in names:
        base = n
        for suf in ("_bucket", "_sum", "_count"):
            if n.endswith(suf) and f"# TYPE {n[: -len(suf)]} histogram" in t:
                base = n[: -len(suf)]
        assert f"# HELP {base} " in t and f"# TYPE {base} " in t, n
        assert n.startswith("sqlite_insights_")
    # database facts
    assert samples(t, "sqlite_insights_database_size_bytes", database=db)[0][1] > 0
    assert samples(t, "sqlite_insights_filesystem_free_bytes", database=db)[0][1] > 0
    assert samples(t, "sqlite_insights_connections_open", database=db)[0][1] == 1
    assert samples(t, "sqlite_insights_build_info")[0][0]["source"] == "extension"


def test_histograms_are_cumulative(run_py, preload_env, tmp_path):
    db = str(tmp_path / "h.db")
    t = metrics(run_py, preload_env, db, slow=3)["text"]
    for kind in ("insert", "select"):
        b = samples(t, "sqlite_insights_statement_duration_seconds_bucket", database=db, kind=kind)
        les = [lb["le"] for lb, _ in b]
        assert les[-1] == "+Inf" and len(les) == 17
        bounds = [float(x) for x in les[:-1]]
        assert bounds == sorted(bounds) and bounds[0] == 0.0001 and bounds[-1] == 10
        vals = [v for _, v in b]
        assert vals == sorted(vals), "buckets must be cumulative"
        count = samples(t, "sqlite_insights_statement_duration_seconds_count", database=db, kind=kind)[0][1]
        total = samples(t, "sqlite_insights_statement_duration_seconds_sum", database=db, kind=kind)[0][1]
        assert vals[-1] == count and count > 0 and total > 0
    # the recursive CTE is slow enough to sit above the first bucket
    sel = samples(t, "sqlite_insights_statement_duration_seconds_bucket", database=db, kind="select")
    assert sel[0][1] < sel[-1][1]


def test_top_n_fingerprints_by_total_time(run_py, preload_env, tmp_path):
    db = str(tmp_path / "top.db")
    t = metrics(run_py, preload_env, db, distinct=12, slow=2, config={"metrics_top_queries": 3})["text"]
    fps = {lb["fingerprint"] for lb, _ in samples(t, "sqlite_insights_query_calls_total", database=db)}
    assert len(fps) == 3
    info = samples(t, "sqlite_insights_query_info", database=db)
    assert len(info) == 3
    # the slow recursive CTE has the most total time: it is in the top 3
    assert any("RECURSIVE" in lb["query"] for lb, _ in info)
    # per-kind totals still count every fingerprint
    sel = samples(t, "sqlite_insights_statements_total", database=db, kind="select")[0][1]
    assert sel >= 25 + 12 + 2


def test_top_n_zero_keeps_only_kind_series(run_py, preload_env, tmp_path):
    db = str(tmp_path / "zero.db")
    t = metrics(run_py, preload_env, db, config={"metrics_top_queries": 0})["text"]
    assert "sqlite_insights_query_" not in t
    assert samples(t, "sqlite_insights_statements_total", database=db)


def test_kind_counters_survive_evictions(run_py, preload_env, tmp_path):
    db = str(tmp_path / "ev.db")
    # max_queries 10 and 60 distinct SELECTs run in batches of 5 with a
    # background round between batches: most fingerprints are evicted, and the
    # per-kind counter still counts every statement exactly once (growth is
    # folded in each round; only growth of a fingerprint evicted before the
    # next round could be missed, and the counter never goes down).
    r = metrics(run_py, preload_env, db, inserts=5, selects=0, errors=0, distinct=60,
                pause_every=5, config={"max_queries": 10, "flush_interval_ms": 100})
    t = r["text"]
    ev = samples(t, "sqlite_insights_evictions_total", database=db)[0][1]
    assert ev >= 40
    sel = samples(t, "sqlite_insights_statements_total", database=db, kind="select")[0][1]
    # 60 distinct SELECTs + 2 "SELECT insights_config(...)" calls
    assert sel == 62
    held = samples(t, "sqlite_insights_fingerprints", database=db)[0][1]
    assert held <= 10


def test_metrics_function_errors_and_token_secrecy(run_py):
    r = run_py("""
con = sqlite3.connect(":memory:")
load(con)
out = {"args": attempt(con, "SELECT insights_metrics(1)")}
out["set"] = one(con, "SELECT insights_config('http_token', 's3cret-token')")
out["get"] = one(con, "SELECT insights_config('http_token')")
out["all"] = json.loads(one(con, "SELECT insights_config()"))["http_token"]
out["bad"] = attempt(con, "SELECT insights_config('http_token', 'has space')")
out["clear"] = one(con, "SELECT insights_config('http_token', NULL)")
out["top"] = attempt(con, "SELECT insights_config('metrics_top_queries', -1)")
out["text"] = one(con, "SELECT insights_metrics()")
emit(out)
""")
    assert r["args"][0] == "err" and r["args"][2].startswith("insights_metrics:")
    assert r["set"] == "1" and r["get"] == "1" and r["all"] == 1
    assert "s3cret" not in r["text"]
    assert r["bad"][0] == "err" and r["bad"][2].startswith("insights_config:")
    assert r["clear"] == "0"
    assert r["top"][0] == "err"
    assert "sqlite_insights_build_info" in r["text"]
