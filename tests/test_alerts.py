"""In-extension alerts: insights_alert_rule / insights_alerts, evaluation on
the background thread, events, and webhook POSTs (Alertmanager webhook
payload) to a local receiver: an error burst fires, then resolves.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from telemetry_util import Workload, get_json, parse_metrics, wait_for, http


class Receiver:
    """A webhook receiver on 127.0.0.1 recording every POST body."""

    def __init__(self):
        got = self.got = []

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                got.append({"path": self.path, "ctype": self.headers.get("Content-Type"),
                            "body": json.loads(self.rfile.read(n))})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = HTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/hook"
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()

    def statuses(self):
        return [g["body"]["status"] for g in self.got]

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_rule_definition(run_py):
    r = run_py("""
con = sqlite3.connect(":memory:")
load(con)
out = {}
out["def"] = json.loads(one(con, "SELECT insights_alert_rule('errors', 'error_rate', '>', 0.05, 300, 'http://127.0.0.1:9/x', 120)"))
out["get"] = json.loads(one(con, "SELECT insights_alert_rule('errors')"))
out["none"] = one(con, "SELECT insights_alert_rule('nope')")
out["minimal"] = json.loads(one(con, "SELECT insights_alert_rule('slow', 'p99_ms', '>=', 250)"))
out["rows"] = rows(con, "SELECT name, database, metric, op, threshold, for_seconds, window_seconds, webhook, state FROM insights_alerts ORDER BY name")
bad = {}
for args in ["'x'", "'x', 'error_rate', '>'", "'bad name!', 'error_rate', '>', 1",
             "'x', 'cpu', '>', 1", "'x', 'error_rate', '=>', 1", "'x', 'error_rate', '>', 'lots'",
             "'x', 'error_rate', '>', 1, -5", "'x', 'error_rate', '>', 1, 0, 'https://a/'",
             "'x', 'error_rate', '>', 1, 0, 'http://u@a/'", "'x', 'error_rate', '>', 1, 0, NULL, 0",
             "'x', 'errors'", "NULL, NULL"]:
    bad[args] = attempt(con, "SELECT insights_alert_rule(%s)" % args)
out["bad"] = bad
out["del"] = one(con, "SELECT insights_alert_rule('errors', NULL)")
out["del2"] = one(con, "SELECT insights_alert_rule('errors', NULL)")
out["left"] = rows(con, "SELECT name FROM insights_alerts")
out["write"] = attempt(con, "DELETE FROM insights_alerts")
emit(out)
""")
    assert r["def"] == {"name": "errors", "metric": "error_rate", "op": ">", "threshold": 0.05,
                        "for_seconds": 300.0, "window_seconds": 120.0, "webhook": "http://127.0.0.1:9/x"}
    assert r["get"] == r["def"] and r["none"] is None
    assert r["minimal"]["for_seconds"] == 0 and r["minimal"]["window_seconds"] == 60
    assert r["rows"][0][:9] == ["errors", None, "error_rate", ">", 0.05, 300.0, 120.0, "http://127.0.0.1:9/x", "inactive"]
    # the 'x' read (1 argument) is no error: it returns NULL
    for args, res in r["bad"].items():
        if args == "'x'":
            assert res == ["ok", [[None]]]
            continue
        assert res[0] == "err" and res[2].startswith("insights_alert_rule:"), (args, res)
    assert "unknown metric 'cpu'" in r["bad"]["'x', 'cpu', '>', 1"][2]
    assert "https" in r["bad"]["'x', 'error_rate', '>', 1, 0, 'https://a/'"][2]
    assert r["del"] == "1" and r["del2"] == "0" and r["left"] == [["slow"]]
    assert r["write"][0] == "err"


def test_error_burst_fires_then_resolves(tmp_path, receiver, ext_path):
    # rule: more than 20% errors over a 1 s window, held 1 s
    rule = ["burst", "error_rate", ">", 0.2, 1, receiver.url, 1]
    quiet = ["quiet", "p99_ms", ">", 60000, 0, receiver.url]
    w = Workload(tmp_path / "alerts.db", phases=[["ok", 1.5], ["errors", 3], ["ok", 4]],
                 config={"flush_interval_ms": 200}, rules=[rule, quiet], announce_phases=True)
    try:
        w.wait_line("PHASE_DONE ok")
        w.wait_line("PHASE_DONE errors")
        wait_for(lambda: "firing" in receiver.statuses(), timeout=10, what="firing webhook")
        # the burst is over: the rule resolves
        wait_for(lambda: "resolved" in receiver.statuses(), timeout=15, what="resolved webhook")
        st = receiver.statuses()
        assert st.index("pending") < st.index("firing") < st.index("resolved"), st
        assert all(g["path"] == "/hook" and g["ctype"] == "application/json" for g in receiver.got)
        fire = next(g["body"] for g in receiver.got if g["body"]["status"] == "firing")
        assert fire["version"] == "4" and fire["receiver"] == "sqlite-insights"
        a = fire["alerts"][0]
        assert a["status"] == "firing" and a["labels"]["alertname"] == "burst"
        assert a["labels"]["database"].endswith("alerts.db") and a["labels"]["metric"] == "error_rate"
        assert float(a["annotations"]["value"]) > 0.2 and a["endsAt"].startswith("0001-")
        assert fire["groupLabels"] == {"alertname": "burst"} and fire["commonLabels"] == a["labels"]
        res = next(g["body"] for g in receiver.got if g["body"]["status"] == "resolved")
        assert res["alerts"][0]["endsAt"] > res["alerts"][0]["startsAt"]
        assert res["alerts"][0]["fingerprint"] == a["fingerprint"]
        # the never-holding rule sent nothing
        assert all(g["body"]["groupLabels"]["alertname"] == "burst" for g in receiver.got)
        # state, events and metrics, through the HTTP API
        alerts = get_json(w.addr, "/api/alerts")["rules"]
        burst = next(x for x in alerts if x["name"] == "burst")
        s0 = burst["states"][0]
        assert s0["state"] == "inactive" and s0["transitions"] >= 3
        assert s0["last_notification"] and " 200" in s0["last_notification"]
        kinds = [e["kind"] for e in get_json(w.addr, "/api/events")["events"]]
        for k in ("alert_pending", "alert_firing", "alert_resolved"):
            assert k in kinds
        text = http(w.addr, "/metrics")[2].decode()
        firing = [(lb, v) for n, lb, v in parse_metrics(text) if n == "sqlite_insights_alert_firing" and lb["alert"] == "burst"]
        assert firing and firing[0][1] == 0
        table = get_json(w.addr, "/api/table/insights_alerts")["rows"]
        assert {r["name"] for r in table} == {"burst", "quiet"}
    finally:
        w.stop()


def test_unreachable_webhook_is_recorded_not_fatal(tmp_path, ext_path):
    # nothing listens on the port: the delivery error is kept on the rule
    from telemetry_util import free_port
    url = f"http://127.0.0.1:{free_port()}/hook"
    w = Workload(tmp_path / "dead.db", phases=[["errors", 2]], config={"flush_interval_ms": 200},
                 rules=[["always", "calls", ">=", 0, 0, url, 1]])
    try:
        w.wait_line("WORK_DONE")

        def note():
            rules = get_json(w.addr, "/api/alerts")["rules"]
            st = rules[0]["states"]
            return st and st[0]["last_notification"]

        n = wait_for(note, timeout=15, what="delivery note")
        assert "error" in n
        assert get_json(w.addr, "/api/alerts")["rules"][0]["states"][0]["state"] == "firing"
    finally:
        w.stop()
