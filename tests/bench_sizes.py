#!/usr/bin/env python3
"""Bench: what sizing a database of several hundred MB costs, and what users
see while it runs.

    .venv/bin/python tests/bench_sizes.py [--mb 300] [--db PATH] [--keep]

Builds (once, then reuses) a database of about --mb MB: a rowid table with an
index and a WITHOUT ROWID table. For each journal mode (WAL, rollback) it
reports, from a /usr/bin/python3 process with dist/insights0.so loaded:

- forced refresh: `SELECT insights_size_refresh()` (one dbstat pass through
  the separate read-only connection), first run with the file dropped from
  the OS page cache (posix_fadvise DONTNEED), then two warm runs;
- background refresh: `SELECT * FROM insights_tables` on the over-budget
  database answers at once ('pending'); time until the background thread
  has measured every object (one object per read transaction, sleeping as
  long as it worked);
- user-visible latency of another connection's statements (point SELECT by
  primary key, one-row INSERT + COMMIT, 2 ms apart) at rest, during the
  forced refresh and during the background refresh: p50 / p99 / max in ms.

In rollback-journal mode a reader's SHARED lock delays writers' commits:
the forced refresh holds one for its whole pass, the background one only
for one object at a time.
"""

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXT = ROOT / "dist" / "insights0.so"


def build(path, mb):
    want = mb << 20
    if os.path.exists(path) and abs(os.path.getsize(path) - want) < want * 0.15:
        return False
    for suffix in ("", "-wal", "-shm", "-journal", ".insights", ".insights-wal", ".insights-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("CREATE TABLE events(id INTEGER PRIMARY KEY, ts INTEGER, kind TEXT, body TEXT)")
    con.execute("CREATE TABLE users(email TEXT PRIMARY KEY, name TEXT, bio TEXT) WITHOUT ROWID")
    i = 0
    while os.path.getsize(path) < want * 0.93:  # the index adds the rest
        con.execute("BEGIN")
        con.executemany("INSERT INTO events(ts, kind, body) VALUES (?, ?, ?)",
                        [((i + k) * 7919 % 1000003, "k%d" % (k % 23), "x" * (150 + (i + k) % 100))
                         for k in range(20000)])
        con.executemany("INSERT INTO users VALUES (?, ?, ?)",
                        [("u%08d@example.com" % (i + k), "n", "b" * (40 + k % 60)) for k in range(0, 20000, 10)])
        con.execute("COMMIT")
        i += 20000
    con.execute("CREATE INDEX events_ts ON events(ts)")
    con.execute("PRAGMA journal_mode=DELETE")
    con.close()
    return True


CHILD = r"""
import json, os, sqlite3, sys, threading, time
EXT, DB, MODE = sys.argv[1], sys.argv[2], sys.argv[3]

def connect():
    c = sqlite3.connect(DB, isolation_level=None, timeout=60, check_same_thread=False)
    return c

main = connect()
main.enable_load_extension(True)
main.load_extension(EXT)
main.execute("PRAGMA journal_mode=%s" % MODE).fetchall()
main.execute("SELECT insights_config('size_sample_interval_ms', 0)").fetchall()
maxid = main.execute("SELECT max(id) FROM events").fetchone()[0]
pages = main.execute("PRAGMA page_count").fetchone()[0]

lat = {"read": [], "write": []}
phase = ["rest"]
stop = threading.Event()

def worker():
    c = connect()  # instrumented by the auto-extension
    c.execute("CREATE TABLE IF NOT EXISTS bench_w(id INTEGER PRIMARY KEY, at REAL, phase TEXT)")
    k = 0
    while not stop.is_set():
        k += 1
        t = time.perf_counter()
        c.execute("SELECT body FROM events WHERE id = ?", (1 + (k * 104729) % maxid,)).fetchall()
        lat["read"].append((phase[0], (time.perf_counter() - t) * 1e3))
        t = time.perf_counter()
        c.execute("INSERT INTO bench_w(at, phase) VALUES (?, ?)", (t, phase[0]))
        lat["write"].append((phase[0], (time.perf_counter() - t) * 1e3))
        time.sleep(0.002)
    c.close()

th = threading.Thread(target=worker)
th.start()
time.sleep(2.0)
out = {"pages": pages, "bytes": os.path.getsize(DB)}
phase[0] = "forced"
runs = []
for r in range(3):
    if r == 0:
        # first run cold: drop the database file from the OS page cache
        fd = os.open(DB, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    t = time.perf_counter()
    j = json.loads(main.execute("SELECT insights_size_refresh('main')").fetchone()[0])
    runs.append({"wall_ms": (time.perf_counter() - t) * 1e3, "ms": j["ms"], "pages": j["pages"], "via": j["via"]})
out["forced"] = runs
phase[0] = "rest2"
# a background refresh skips a database measured less than 10x its own
# measuring time ago (so a huge one is not re-read continuously): wait that out
time.sleep(max(1.0, 11 * max(r["ms"] for r in runs) / 1000))
# background: make the cache stale (a write), then ask with the default budget
main.execute("INSERT INTO bench_w(at, phase) VALUES (0, 'poke')")
main.execute("SELECT insights_config('size_refresh_ms', 0)").fetchall()
phase[0] = "background"
t0 = time.perf_counter()
first = main.execute("SELECT count(*), sum(rows_method = 'pending') FROM insights_tables WHERE schema = 'main'").fetchone()
first_ms = (time.perf_counter() - t0) * 1e3
main.execute("SELECT insights_config('size_refresh_ms', 3600000)").fetchall()
deadline = time.perf_counter() + 600
while time.perf_counter() < deadline:
    r = main.execute("SELECT count(*), sum(measured_at >= strftime('%Y-%m-%dT%H:%M:%fZ', ?, 'unixepoch')) FROM insights_tables WHERE schema = 'main' AND rows_method = 'dbstat'",
                     (time.time() - (time.perf_counter() - t0),)).fetchone()
    if r[0] and r[1] == r[0] and r[0] >= first[0]:
        break
    time.sleep(0.05)
bg_ms = (time.perf_counter() - t0) * 1e3
phase[0] = "done"
stop.set()
th.join()
out["background"] = {"first_query_ms": first_ms, "first": first, "total_ms": bg_ms}

def stats(kind, ph):
    v = sorted(x for p, x in lat[kind] if p == ph)
    if not v:
        return None
    q = lambda f: v[min(len(v) - 1, int(f * len(v)))]
    return {"n": len(v), "p50": q(0.5), "p99": q(0.99), "max": v[-1]}

out["latency"] = {ph: {k: stats(k, ph) for k in ("read", "write")} for ph in ("rest", "forced", "background")}
main.execute("DROP TABLE IF EXISTS bench_w")
print("@@" + json.dumps(out))
"""


def fmt(s):
    if not s:
        return "-"
    return "%5.2f / %6.2f / %7.2f  (n=%d)" % (s["p50"], s["p99"], s["max"], s["n"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=300)
    ap.add_argument("--db", default="/tmp/sqlite-insights-bench/sizes.db")
    ap.add_argument("--modes", default="wal,delete")
    args = ap.parse_args()
    if not EXT.is_file():
        sys.exit(f"{EXT} is missing: run `make loadable-release` first")
    os.makedirs(os.path.dirname(args.db), exist_ok=True)
    t = time.time()
    built = build(args.db, args.mb)
    print(f"database: {args.db}, {os.path.getsize(args.db) / 2**20:.0f} MiB"
          + (f" (built in {time.time() - t:.0f} s)" if built else " (reused)"))
    for mode in args.modes.split(","):
        p = subprocess.run(["/usr/bin/python3", "-c", CHILD, str(EXT), args.db, mode],
                           capture_output=True, text=True, timeout=900)
        line = [x for x in p.stdout.splitlines() if x.startswith("@@")]
        if p.returncode != 0 or not line:
            print(p.stdout[-2000:], p.stderr[-4000:])
            sys.exit(f"bench child failed ({mode})")
        r = json.loads(line[0][2:])
        print(f"\n== journal_mode={mode}: {r['pages']} pages, {r['bytes'] / 2**20:.0f} MiB")
        for i, f in enumerate(r["forced"]):
            print(f"forced refresh #{i + 1} ({'cold' if i == 0 else 'warm'}): {f['wall_ms']:8.1f} ms"
                  f"  ({f['pages']} pages, via {f['via'][0]})")
        b = r["background"]
        print(f"background: first query {b['first_query_ms']:.1f} ms ({b['first'][1]} of {b['first'][0]} objects pending), "
              f"all measured after {b['total_ms']:.0f} ms")
        print("latency of another connection, ms: p50 / p99 / max")
        for ph in ("rest", "forced", "background"):
            lat = r["latency"][ph]
            print(f"  {ph:10s} read  {fmt(lat['read'])}")
            print(f"  {'':10s} write {fmt(lat['write'])}")


if __name__ == "__main__":
    main()
