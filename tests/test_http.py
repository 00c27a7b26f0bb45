"""insights_serve(): the in-process HTTP endpoint (/metrics, JSON API,
dashboard) — start/stop semantics, bearer token, bad requests, slow and
concurrent clients, the JSON API's shapes.
"""

import json
import socket
import threading
import time

import pytest

from telemetry_util import Workload, free_port, get_json, http, parse_metrics, wait_for


@pytest.fixture(scope="module")
def served(tmp_path_factory, ext_path):
    db = tmp_path_factory.mktemp("http") / "app.db"
    w = Workload(db, phases=[["mixed", 3]], config={"flush_interval_ms": 200, "http_timeout_ms": 1500,
                                                   "http_max_connections": 8})
    w.wait_line("WORK_DONE")
    yield w
    r = w.stop()
    assert r["serve"] == w.addr  # insights_serve(NULL) returned the address it stopped


def test_serve_semantics(run_py):
    port = free_port()
    r = run_py("""
con = sqlite3.connect(":memory:")
load(con)
out = {}
out["none"] = one(con, "SELECT insights_serve()")
out["stop_none"] = one(con, "SELECT insights_serve(NULL)")
out["start"] = one(con, "SELECT insights_serve(?)", "127.0.0.1:0")
out["again"] = one(con, "SELECT insights_serve(?)", "127.0.0.1:0")
out["status"] = one(con, "SELECT insights_serve()")
out["other"] = attempt(con, "SELECT insights_serve(?)", "127.0.0.1:%d" % ARGS["port"])
out["public"] = attempt(con, "SELECT insights_serve(?)", "0.0.0.0:0")
out["stop"] = one(con, "SELECT insights_serve('stop')")
out["after"] = one(con, "SELECT insights_serve()")
out["port_int"] = one(con, "SELECT insights_serve(?)", ARGS["port"])
out["stop2"] = one(con, "SELECT insights_serve(NULL)")
out["public_no_token"] = attempt(con, "SELECT insights_serve(?)", "0.0.0.0:0")
out["bad"] = attempt(con, "SELECT insights_serve(?)", "example.com:80")
out["blob"] = attempt(con, "SELECT insights_serve(x'00')")
out["args"] = attempt(con, "SELECT insights_serve(1, 2)")
out["in_use"] = None
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
out["in_use"] = attempt(con, "SELECT insights_serve(?)", "127.0.0.1:%d" % s.getsockname()[1])
emit(out)
""", args={"port": port})
    assert r["none"] is None and r["stop_none"] is None
    assert r["start"].startswith("127.0.0.1:") and not r["start"].endswith(":0")
    assert r["again"] == r["start"] == r["status"]
    assert r["other"][0] == "err" and "already serving" in r["other"][2]
    assert r["other"][2].startswith("insights_serve:")
    assert r["public"][0] == "err"
    assert "bearer token" in r["public_no_token"][2]
    assert r["stop"] == r["start"] and r["after"] is None
    assert r["port_int"] == f"127.0.0.1:{port}" and r["stop2"] == r["port_int"]
    for k in ("public_no_token", "bad", "blob", "args", "in_use"):
        assert r[k][0] == "err" and r[k][2].startswith("insights_serve:"), (k, r[k])


def test_stopped_server_refuses_connections(run_py):
    r = run_py("""
con = sqlite3.connect(":memory:")
load(con)
a = one(con, "SELECT insights_serve('127.0.0.1:0')")
one(con, "SELECT insights_serve(NULL)")
import socket
host, port = a.rsplit(":", 1)
try:
    socket.create_connection((host, int(port)), timeout=2).close()
    emit("connected")
except OSError:
    emit("refused")
""")
    assert r == "refused"


def test_endpoints(served):
    a = served.addr
    st, h, body = http(a, "/metrics")
    assert st == 200 and h["content-type"].startswith("text/plain; version=0.0.4")
    names = {n for n, _, _ in parse_metrics(body.decode())}
    assert "sqlite_insights_statements_total" in names and "sqlite_insights_query_calls_total" in names
    st, h, body = http(a, "/")
    assert st == 200 and h["content-type"].startswith("text/html")
    assert "default-src 'none'" in h["content-security-policy"]
    assert b"<title>sqlite-insights</title>" in body
    assert b"http://" not in body.replace(b"http://www.w3.org/2000/svg", b""), "the page must not load anything external"
    info = get_json(a, "/api/info")
    assert info["source"] == "extension" and info["databases"][0]["database"].endswith("app.db")
    assert "insights_queries" in info["tables"] and "insights_alerts" in info["tables"]
    q = get_json(a, "/api/queries?sort=calls&limit=3")
    assert len(q["queries"]) == 3 and q["total"] >= 5
    calls = [x["calls"] for x in q["queries"]]
    assert calls == sorted(calls, reverse=True)
    assert {"fingerprint", "query", "kind", "p99_ms", "total_ms", "errors"} <= set(q["queries"][0])
    for key in ("total", "calls", "p99", "errors", "rows", "mean", "last"):
        assert get_json(a, f"/api/queries?sort={key}")["sort"] == key
    e = get_json(a, "/api/errors")
    assert e["errors"] and e["errors"][0]["code_name"].startswith("SQLITE_")
    hist = get_json(a, "/api/history?resolution=live")
    assert hist["series"][0]["points"] and hist["series"][0]["source"] == "memory"
    wait_for(lambda: get_json(a, "/api/history?resolution=minute")["series"][0]["points"], what="minute history")
    hm = get_json(a, "/api/history?resolution=minute&since=2020-01-01T00:00:00Z")
    assert hm["series"][0]["source"] == "store"
    p = hm["series"][0]["points"][-1]
    assert {"t", "calls", "errors", "qps", "p50_ms", "p95_ms", "p99_ms", "error_rate"} <= set(p)
    fp = q["queries"][0]["fingerprint"]
    hf = get_json(a, f"/api/history?resolution=minute&fingerprint={fp}")
    assert hf["series"][0]["points"][0]["calls"] > 0
    assert get_json(a, "/api/events")["events"]
    assert get_json(a, "/api/alerts")["rules"] == []
    t = get_json(a, "/api/table/insights_queries")
    assert t["rows"] and "fingerprint" in t["columns"]
    st, h, body = http(a, "/metrics", method="HEAD")
    assert st == 200 and body == b"" and int(h["content-length"]) > 100
    assert http(a, "/healthz")[0] == 200


@pytest.mark.parametrize("path,status", [
    ("/nope", 404),
    ("/api/table/insights_nope", 404),
    ("/api/table/sqlite_master", 404),
    ("/api/queries?sort=bogus", 400),
    ("/api/queries?limit=-1", 400),
    ("/api/queries?scope=everything", 400),
    ("/api/history?resolution=week", 400),
    ("/api/history?since=yesterday", 400),
    ("/api/history?fingerprint=xyz", 400),
])
def test_api_refuses_bad_parameters(served, path, status):
    st, h, body = http(served.addr, path)
    assert st == status, body
    assert "error" in json.loads(body)


@pytest.mark.parametrize("raw,status", [
    (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
    (b"DELETE / HTTP/1.1\r\n\r\n", 405),
    (b"GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 413),
    (b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
    (b"HELLO\r\n\r\n", 400),
    (b"GET metrics HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"GET /\xff\xfe HTTP/1.1\r\n\r\n", 400),
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"b" * 20000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(100)) + b"\r\n", 431),
])
def test_bad_requests_are_refused(served, raw, status):
    st, h, body = http(served.addr, raw=raw)
    assert st == status, body
    assert h.get("connection") == "close"


def test_slow_client_times_out(served):
    # http_timeout_ms is 1500: a client that sends half a request line is cut off
    host, port = served.addr.rsplit(":", 1)
    t0 = time.time()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /met")
        data = s.recv(4096)
    took = time.time() - t0
    assert data.startswith(b"HTTP/1.1 408"), data
    assert 1.0 < took < 6, took
    # an idle connection that sends nothing is closed too
    with socket.create_connection((host, int(port)), timeout=10) as s:
        data = s.recv(4096)
    assert data == b"" or data.startswith(b"HTTP/1.1 408")
    assert http(served.addr, "/healthz")[0] == 200


def test_connection_limit_and_concurrent_clients(served):
    host, port = served.addr.rsplit(":", 1)
    # hold all 8 slots with silent clients: the next one gets 503 at once
    held = [socket.create_connection((host, int(port)), timeout=10) for _ in range(8)]
    time.sleep(0.3)
    st, h, _ = http(served.addr, "/healthz")
    assert st == 503 and h.get("retry-after") == "1"
    for s in held:
        s.close()
    wait_for(lambda: http(served.addr, "/healthz")[0] == 200, timeout=10, what="slots freed")
    # 24 concurrent clients x 5 requests: every answer is complete, either a
    # whole /metrics or an immediate 503 (then the client retries)
    results = []
    lock = threading.Lock()

    def client():
        for _ in range(5):
            for _attempt in range(100):
                st, h, body = http(served.addr, "/metrics")
                ok = st == 503 or (st == 200 and len(body) == int(h["content-length"]) and b"sqlite_insights_build_info" in body)
                with lock:
                    results.append((st, ok))
                if st != 503:
                    break
                time.sleep(0.05)

    threads = [threading.Thread(target=client) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(ok for _, ok in results)
    assert sum(1 for st, _ in results if st == 200) == 120
    assert http(served.addr, "/healthz")[0] == 200


def test_token_on_a_non_loopback_address(tmp_path, ext_path):
    token = "t0k3n-for-tests"
    w = Workload(tmp_path / "tok.db", phases=[["mixed", 1]], listen="0.0.0.0:0",
                 config={"http_token": token})
    try:
        w.wait_line("WORK_DONE")
        a = f"127.0.0.1:{w.port}"
        assert w.addr.startswith("0.0.0.0:")
        assert http(a, "/metrics")[0] == 401
        st, h, _ = http(a, "/metrics", headers={"Authorization": "Bearer wrong"})
        assert st == 401 and h["www-authenticate"].startswith("Bearer")
        assert http(a, "/metrics", headers={"Authorization": "Basic " + token})[0] == 401
        assert http(a, "/metrics", headers={"Authorization": "Bearer " + token + "x"})[0] == 401
        assert http(a, "/metrics", headers={"Authorization": "Bearer " + token})[0] == 200
        assert http(a, "/api/info?token=" + token)[0] == 200
        assert http(a, "/api/info?token=nope")[0] == 401
    finally:
        w.stop()
