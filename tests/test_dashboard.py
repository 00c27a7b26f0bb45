"""The built-in dashboard in headless Chromium (Debian `chromium`, driven by
`playwright-core` from tests/dashboard): it loads with no console errors,
shows the workload's queries and non-empty charts, sorts and expands rows.
The screenshot is kept as out/dashboard.png.

Skipped (with the reason) only when Chromium or node/playwright-core is
missing: .ci/run installs them.
"""

import json
import os
import shutil
import subprocess

import pytest

from conftest import ROOT
from telemetry_util import Workload, ensure_exporter, get_json

DASH = ROOT / "tests" / "dashboard"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
NODE = shutil.which("node")
OUT = ROOT / "out"

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"),
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
    pytest.mark.skipif(not (DASH / "node_modules" / "playwright-core").is_dir(),
                       reason="playwright-core is not installed (cd tests/dashboard && npm ci)"),
]


def shoot(url, out):
    p = subprocess.run([NODE, str(DASH / "shot.mjs"), url, str(out)], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, CHROMIUM=CHROMIUM))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_dashboard_in_chromium(tmp_path, ext_path):
    OUT.mkdir(exist_ok=True)
    w = Workload(tmp_path / "shop.db", phases=[["mixed", 22, 90]], config={"flush_interval_ms": 250},
                 rules=[["errors_high", "error_rate", ">", 0.05, 2, None, 5]], error_every=6)
    try:
        w.wait_line("WORK_DONE", timeout=90)
        r = shoot(f"http://{w.addr}/", OUT / "dashboard.png")
    finally:
        w.stop()
    assert r["title"] == "sqlite-insights"
    assert r["console"] == [] and r["pageErrors"] == [], r["console"] + r["pageErrors"]
    assert r["banner"] == "none"
    # nothing outside the endpoint was requested
    assert all(u.startswith(f"http://{w.addr}/") for u in r["requests"]), r["requests"]
    queries = " | ".join(r["queries"])
    assert "INSERT INTO items(name, qty) VALUES (?, ?)" in queries
    assert "SELECT name, qty FROM items WHERE id = ?" in queries
    for h in ("Total time", "Calls", "p99", "Errors", "Rows"):
        assert any(x.startswith(h) for x in r["headers"]), h
    assert r["charts"]["qps"] >= 2 and r["charts"]["latency"] >= 3 and r["charts"]["errors"] >= 1, r["charts"]
    assert r["errors"] > 1  # recent errors table has rows
    assert "database" in r["sizes"]
    assert r["sortedByCalls"] == "calls" and r["detailOpen"]
    assert not any(n and ("Queries per second" in n or "Latency" in n or "Top queries" in n) for n in r["nodata"]), r["nodata"]
    assert (OUT / "dashboard.png").stat().st_size > 20_000


def test_dashboard_from_the_exporter(tmp_path, ext_path):
    """The exporter serves the same page over the stores of short-lived processes."""
    exporter = ensure_exporter()
    db = tmp_path / "batch.db"
    Workload(db, phases=[["mixed", 2]], config={"flush_interval_ms": 200}, linger=0).stop()
    exp = subprocess.Popen([str(exporter), "--listen", "127.0.0.1:0", str(db)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        addr = exp.stdout.readline().strip().split("http://")[1]
        assert get_json(addr, "/api/info")["source"] == "exporter"
        r = shoot(f"http://{addr}/", OUT / "dashboard-exporter.png")
    finally:
        exp.terminate()
        exp.wait(10)
    assert r["console"] == [] and r["pageErrors"] == [], r["console"] + r["pageErrors"]
    assert any("INSERT INTO items" in q for q in r["queries"])
    assert r["charts"]["qps"] >= 1
