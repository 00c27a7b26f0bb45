"""The standalone exporter `sqlite-insights` (exporter/): metrics and JSON from
the stores of databases written by short-lived processes."""

import signal
import subprocess

import pytest

from telemetry_util import Workload, ensure_exporter, get_json, http, parse_metrics, promtool


@pytest.fixture(scope="module")
def batch(tmp_path_factory, ext_path):
    db = tmp_path_factory.mktemp("exp") / "jobs.db"
    runs = [Workload(db, phases=[["mixed", 1]], config={"flush_interval_ms": 200}, linger=0).stop()
            for _ in range(2)]
    return db, runs


def test_once_sums_every_process(batch):
    db, runs = batch
    exe = ensure_exporter()
    p = subprocess.run([str(exe), "--once", str(db)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    m = parse_metrics(p.stdout)
    ins = [v for n, lb, v in m if n == "sqlite_insights_query_calls_total" and lb["database"] == str(db)
           and "fingerprint" in lb]
    assert ins
    info = [lb for n, lb, v in m if n == "sqlite_insights_query_info" and lb["query"].startswith("INSERT INTO items(name, qty)")]
    fp = info[0]["fingerprint"]
    calls = next(v for n, lb, v in m if n == "sqlite_insights_query_calls_total" and lb["fingerprint"] == fp)
    assert calls == sum(r["n"] for r in runs)  # one such INSERT per iteration, both processes
    assert next(v for n, lb, v in m if n == "sqlite_insights_store_up") == 1
    if promtool():
        c = subprocess.run([promtool(), "check", "metrics"], input=p.stdout, capture_output=True, text=True)
        assert c.returncode == 0 and not (c.stdout + c.stderr).strip(), c.stdout + c.stderr
    # a missing store is reported, not fatal
    p2 = subprocess.run([str(exe), "--once", str(db) + "-missing.db"], capture_output=True, text=True, timeout=60)
    assert p2.returncode == 0 and 'sqlite_insights_store_up{database="' in p2.stdout and "} 0" in p2.stdout


def test_serves_and_stops_cleanly(batch):
    db, _ = batch
    exe = ensure_exporter()
    proc = subprocess.Popen([str(exe), "--listen", "127.0.0.1:0", str(db)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        addr = proc.stdout.readline().strip().split("http://")[1]
        assert http(addr, "/metrics")[0] == 200
        q = get_json(addr, "/api/queries?sort=calls&limit=5")["queries"]
        assert q and q[0]["calls"] >= q[-1]["calls"]
        assert get_json(addr, "/api/history?resolution=minute")["series"][0]["points"]
        assert get_json(addr, "/api/errors")["errors"]
        assert http(addr, "/api/table/insights_queries")[0] == 404
        assert http(addr, "/", method="POST")[0] == 405
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_refuses_bad_usage(tmp_path):
    exe = ensure_exporter()
    for args in ([], ["--bogus", "x.db"], ["--listen", "0.0.0.0:0", "x.db"], ["--listen", "nowhere", "x.db"]):
        p = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=30,
                           env={"PATH": "/usr/bin:/bin"})
        assert p.returncode == 2, (args, p.stderr)
        assert p.stderr.startswith("sqlite-insights:")
    tok = tmp_path / "token"
    tok.write_text("s3cret\n")
    proc = subprocess.Popen([str(exe), "--listen", "0.0.0.0:0", "--token-file", str(tok), str(tmp_path / "x.db")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = proc.stdout.readline().strip().rsplit(":", 1)[1]
        a = f"127.0.0.1:{port}"
        assert http(a, "/metrics")[0] == 401
        assert http(a, "/metrics", headers={"Authorization": "Bearer s3cret"})[0] == 200
    finally:
        proc.terminate()
        proc.wait(10)
