"""A long-running test "node": one /usr/bin/python3 process holding one
connection to one database, with the sqlite-insights extension loaded (and
cr-sqlite too when --crsqlite is given). It runs JSON commands read from
stdin, one per line, and answers one JSON line each:

  {"sql": "...", "params": [...]}        -> {"rows": [[...], ...]}
  {"many": "...", "rows": [[...], ...]}  -> {"rows": []}   (executemany)
  {"close": true}                         -> exits

Blobs travel as {"$b": "<hex>"} both ways. Errors answer {"error": "..."}.
The connection is in autocommit mode (isolation_level=None): send BEGIN and
COMMIT as statements where a transaction is wanted.
"""
import argparse
import json
import sqlite3
import sys


def enc(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"$b": bytes(v).hex()}
    return v


def dec(v):
    if isinstance(v, dict) and "$b" in v:
        return bytes.fromhex(v["$b"])
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--ext", required=True)
    ap.add_argument("--crsqlite")
    a = ap.parse_args()
    con = sqlite3.connect(a.db, isolation_level=None, timeout=30, check_same_thread=False)
    con.enable_load_extension(True)
    if a.crsqlite:
        con.load_extension(a.crsqlite)
    con.load_extension(a.ext)
    # WAL, as replicated SQLite usually runs (and the extension's background
    # sync sampling reads WAL databases only)
    con.execute("PRAGMA journal_mode=WAL")
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            if cmd.get("close"):
                if a.crsqlite:
                    con.execute("SELECT crsql_finalize()")
                con.close()
                print(json.dumps({"rows": []}), flush=True)
                return
            if "many" in cmd:
                con.executemany(cmd["many"], [[dec(x) for x in r] for r in cmd["rows"]])
                out = []
            else:
                cur = con.execute(cmd["sql"], [dec(x) for x in cmd.get("params", [])])
                out = [[enc(x) for x in r] for r in cur.fetchall()]
            print(json.dumps({"rows": out}), flush=True)
        except Exception as e:  # noqa: BLE001 - reported to the test
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)


if __name__ == "__main__":
    main()
