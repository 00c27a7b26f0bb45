"""Helpers for the telemetry tests (metrics, HTTP, alerts, Prometheus,
dashboard): long-running workload processes with the extension loaded and
`insights_serve` on a free loopback port, and a raw HTTP client.

A workload process is /usr/bin/python3 with the extension in LD_PRELOAD (so
error capture works on Debian's SQLite 3.40.1) running `WORKLOAD` below. It
prints `ADDR <host:port>` once serving, then runs its phases and stays up
until its stdin closes (or `linger` seconds pass), so tests can read it.
"""

import json
import os
import socket
import subprocess
import time
from pathlib import Path

from conftest import EXT, PRELUDE, RESULT_MARK, ROOT, SYSTEM_PYTHON, make_env

EXPORTER = ROOT / "exporter" / "target" / "release" / "sqlite-insights"

WORKLOAD = r'''
import random, select, threading, time
A = ARGS
con = sqlite3.connect(A["db"], check_same_thread=False, timeout=30, isolation_level=None)
load(con)
for k, v in A.get("config", {}).items():
    con.execute("SELECT insights_config(?, ?)", (k, v))
for r in A.get("rules", []):
    con.execute("SELECT insights_alert_rule(" + ",".join("?" * len(r)) + ")", r)
addr = one(con, "SELECT insights_serve(?)", A.get("listen", "127.0.0.1:0"))
con.execute("CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)")
con.execute("CREATE TABLE IF NOT EXISTS orders(id INTEGER PRIMARY KEY, item INTEGER, at TEXT)")
con.execute("CREATE INDEX IF NOT EXISTS orders_item ON orders(item)")
print("ADDR", addr, flush=True)

def stdin_closed():
    r, _, _ = select.select([sys.stdin], [], [], 0)
    return bool(r) and sys.stdin.read(1) == ""

n = 0
stopped = False
for phase in A.get("phases", [["mixed", 5]]):
    if stopped:
        break
    kind, secs = phase[0], phase[1]
    rate = phase[2] if len(phase) > 2 else 150
    end = time.time() + secs
    while time.time() < end:
        n += 1
        if n % 20 == 0 and stdin_closed():
            stopped = True
            n -= 1  # this iteration did not run
            break
        if kind in ("mixed", "errors"):
            con.execute("INSERT INTO items(name, qty) VALUES (?, ?)", ("item%d" % n, n % 7))
            con.execute("SELECT name, qty FROM items WHERE id = ?", (random.randint(1, n),)).fetchall()
            con.execute("INSERT INTO orders(item, at) VALUES (?, datetime('now'))", (n,))
            if n % 5 == 0:
                con.execute("SELECT count(*) FROM orders o JOIN items i ON i.id = o.item WHERE i.qty > ?", (3,)).fetchall()
            if n % 13 == 0:
                con.execute("UPDATE items SET qty = qty + 1 WHERE id = ?", (n // 2,))
        elif kind == "ok":
            con.execute("SELECT name FROM items WHERE id = ?", (random.randint(1, max(n, 1)),)).fetchall()
        if kind == "errors" or (kind == "mixed" and n % A.get("error_every", 10) == 0):
            try:
                con.execute("SELECT * FROM missing_table WHERE x = ?", (n,))
            except sqlite3.Error:
                pass
            try:
                con.execute("INSERT INTO items(id, name) VALUES (1, 'dup')")
            except sqlite3.Error:
                pass
        if A.get("sync") and n % 25 == 0:
            con.execute("SELECT insights_sync_report('replica-1', ?, ?, ?)", (n, max(0, n - 40), 40)).fetchall()
        if kind == "idle":
            time.sleep(0.05)
        else:
            time.sleep(1.0 / rate)
    if A.get("announce_phases"):
        print("PHASE_DONE", kind, flush=True)
print("WORK_DONE", n, flush=True)
deadline = time.time() + A.get("linger", 120)
while not stopped and time.time() < deadline and not stdin_closed():
    time.sleep(0.1)
emit({"n": n, "serve": one(con, "SELECT insights_serve(NULL)")})
'''


def ensure_exporter():
    """The standalone exporter binary, built with cargo when missing (`make exporter`)."""
    if not EXPORTER.exists():
        r = subprocess.run(["cargo", "build", "--release", "-q", "--manifest-path",
                            str(ROOT / "exporter" / "Cargo.toml")], capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
    return EXPORTER


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Workload:
    """A workload process; `addr` is where it serves."""

    def __init__(self, db, phases=None, config=None, rules=None, listen="127.0.0.1:0",
                 error_every=10, linger=120, env=None, announce_phases=False, sync=False):
        args = {"db": str(db), "phases": phases or [["mixed", 5]], "config": config or {},
                "rules": rules or [], "listen": listen, "error_every": error_every,
                "linger": linger, "announce_phases": announce_phases, "sync": sync}
        src = (PRELUDE.format(ext=str(EXT), mark=RESULT_MARK)
               + f"\nARGS = json.loads({json.dumps(json.dumps(args))})\n" + WORKLOAD)
        e = {"LD_PRELOAD": str(EXT)}
        e.update(env or {})
        self.proc = subprocess.Popen([SYSTEM_PYTHON, "-c", src], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=make_env(e))
        line = self.proc.stdout.readline()
        if not line.startswith("ADDR "):
            self.proc.kill()
            out, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"workload did not start: {line}{out}\n{err[-3000:]}")
        self.addr = line.split()[1]
        self.host, self.port = self.addr.rsplit(":", 1)
        self.port = int(self.port)

    def wait_line(self, prefix, timeout=60):
        end = time.time() + timeout
        while time.time() < end:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith(prefix):
                return line
        raise AssertionError(f"workload never printed {prefix!r}")

    def stop(self, timeout=30):
        """Close stdin; the process stops its server and exits. Returns its result."""
        # communicate() closes stdin (the workload's signal to finish)
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"workload failed rc={self.proc.returncode}\n{err[-3000:]}"
        lines = [ln for ln in out.splitlines() if ln.startswith(RESULT_MARK)]
        return json.loads(lines[-1][len(RESULT_MARK):]) if lines else None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)


def http(addr, path="/", method="GET", headers=None, raw=None, timeout=10, body=b""):
    """One raw HTTP/1.1 exchange. Returns (status, headers dict, body bytes).

    `raw` (bytes) is sent as is instead of a request built from the rest."""
    host, port = addr.rsplit(":", 1)
    host = host.strip("[]")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        if raw is None:
            h = {"Host": addr, "Connection": "close"}
            h.update(headers or {})
            if body:
                h["Content-Length"] = str(len(body))
            raw = (f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
                   + "\r\n").encode() + body
        s.sendall(raw)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines or not lines[0].startswith("HTTP/1.1 "):
        return None, {}, data
    status = int(lines[0].split()[1])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, rest


def get_json(addr, path, headers=None):
    st, _, body = http(addr, path, headers=headers)
    assert st == 200, (path, st, body[:500])
    return json.loads(body)


def wait_for(fn, timeout=30, every=0.2, what="condition"):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def parse_metrics(text):
    """Prometheus text -> list of (name, labels dict, value)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        if "{" in name_labels:
            name, _, rest = name_labels.partition("{")
            labels = {}
            rest = rest[:-1]
            i = 0
            while i < len(rest):
                eq = rest.index("=", i)
                key = rest[i:eq]
                j = eq + 2
                val = []
                while rest[j] != '"':
                    if rest[j] == "\\":
                        nxt = rest[j + 1]
                        val.append({"n": "\n", "\\": "\\", '"': '"'}[nxt])
                        j += 2
                    else:
                        val.append(rest[j])
                        j += 1
                labels[key] = "".join(val)
                i = j + 2  # skip quote and comma
            out.append((name, labels, float(value)))
        else:
            out.append((name_labels, {}, float(value)))
    return out


def promtool():
    for p in ("/usr/bin/promtool", "/usr/local/bin/promtool"):
        if os.path.exists(p):
            return p
    return None
