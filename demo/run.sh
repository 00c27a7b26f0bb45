#!/usr/bin/env bash
# Demo: load the extension into Debian's sqlite3 shell against a sample
# database, run a small shop workload, print the insights.
set -euo pipefail
cd "$(dirname "$0")/.."
SQLITE3=${SQLITE3:-sqlite3}
out=${DEMO_DIR:-out}
mkdir -p "$out"
db="$out/demo.db"
# a fresh sample database and a fresh store (the sidecar keeps history
# across runs otherwise: a second demo would show the first one's events)
rm -f "$db" "$db-wal" "$db-shm" "$db.insights" "$db.insights-wal" "$db.insights-shm"
sql="$out/workload.sql"

{
  echo ".load dist/insights0"
  echo ".output /dev/null"  # the workload's own rows are not the point
  echo "PRAGMA journal_mode=WAL;"
  cat <<'SQL'
CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT UNIQUE NOT NULL, country TEXT);
CREATE TABLE orders(id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), total_cents INTEGER, created_at TEXT);
CREATE INDEX orders_user ON orders(user_id);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
INSERT INTO users(email, country) SELECT 'user' || i || '@example.com', CASE i % 4 WHEN 0 THEN 'DE' WHEN 1 THEN 'US' WHEN 2 THEN 'ID' ELSE 'BR' END FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000)
INSERT INTO orders(user_id, total_cents, created_at) SELECT 1 + (i * 7919) % 5000, (i * 31) % 20000, datetime('2026-01-01', '+' || (i % 300) || ' days') FROM n;
SQL
  for i in $(seq 1 300); do
    echo "SELECT email FROM users WHERE id = $(( (i * 37) % 5000 + 1 )) /*app='web',route='%2Fprofile'*/;"
    echo "SELECT count(*), sum(total_cents) FROM orders WHERE user_id = $(( (i * 13) % 5000 + 1 ));"
  done
  for i in $(seq 1 40); do
    echo "INSERT INTO orders(user_id, total_cents, created_at) VALUES ($i, $((i * 100)), '2026-11-25');"
    echo "UPDATE users SET country = 'NL' WHERE id IN ($i, $((i + 1)), $((i + 2)));"
  done
  for i in $(seq 1 10); do
    # full scan + sort: the slow query of the demo
    echo "SELECT country, count(*), avg(total_cents) FROM orders JOIN users ON users.id = orders.user_id WHERE created_at LIKE '2026-0$((i % 9 + 1))%' GROUP BY country ORDER BY 3 DESC;"
  done
  echo "DELETE FROM orders WHERE total_cents < 5;"
  cat <<'SQL'
.output stdout
.headers on
.mode box
SELECT '== top queries by total time ==' AS insights;
SELECT kind, substr(query, 1, 60) AS query, calls, round(total_ms, 2) AS total_ms,
       round(p50_ms, 3) AS p50_ms, round(p99_ms, 3) AS p99_ms, rows_returned, rows_affected, fullscan_steps
  FROM insights_queries WHERE query NOT LIKE '%insights%'
 ORDER BY total_ms DESC LIMIT 8;
SELECT '== queries by kind ==' AS insights;
SELECT kind, count(*) AS fingerprints, sum(calls) AS calls, round(sum(total_ms), 2) AS total_ms
  FROM insights_queries GROUP BY kind ORDER BY calls DESC;
SELECT '== tagged traffic (sqlcommenter) ==' AS insights;
SELECT tags, calls FROM insights_queries WHERE tags <> '{}';
SELECT '== registry ==' AS insights;
SELECT database, fingerprints, max_queries, evictions, connections_open FROM insights_info;
SELECT '== capture ==' AS insights;
SELECT json_extract(insights_debug(), '$.version') AS version,
       json_extract(insights_debug(), '$.sqlite_version') AS sqlite,
       json_extract(insights_debug(), '$.capture_mode') AS capture,
       json_extract(insights_debug(), '$.error_capture.mode') AS error_capture;
SQL
} > "$sql"

echo "workload: $(grep -c ';' "$sql") statements against $db (sqlite3 shell)"
"$SQLITE3" "$db" < "$sql"

# A second host on the same database: Debian's python3 with the extension
# preloaded (zero-code mode, which also captures failed statements). Its
# counts and failures reach the store next to the database, so the shell
# below sees both processes.
LD_PRELOAD="$PWD/dist/insights0.so" SQLITE_INSIGHTS_AUTOLOAD=1 /usr/bin/python3 - "$db" <<'PY'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("SELECT insights_tag('app', 'billing-worker')")
for i in range(200):
    con.execute("SELECT total_cents FROM orders WHERE id = ?", (i + 1,)).fetchall()
for i in range(5):
    try:  # duplicate e-mail: a UNIQUE violation the worker retries
        con.execute("INSERT INTO users(email, country) VALUES ('user1@example.com', 'DE')")
    except sqlite3.IntegrityError:
        pass
try:
    con.execute("SELEC broken")
except sqlite3.OperationalError:
    pass
con.execute("PRAGMA user_version = 2")
con.close()
print("python worker: 200 selects, 5 failed inserts, 1 syntax error (LD_PRELOAD)")
PY

"$SQLITE3" "$db" <<'SQL'
.load dist/insights0
.headers on
.mode box
SELECT '== all processes: top queries by total time ==' AS insights;
SELECT kind, substr(query, 1, 58) AS query, calls, errors, round(total_ms, 2) AS total_ms,
       round(p50_ms, 3) AS p50_ms, round(p99_ms, 3) AS p99_ms, rows_returned, fullscan_steps
  FROM insights_queries WHERE query NOT LIKE '%insights%'
 ORDER BY total_ms DESC LIMIT 8;
SELECT '== failures (any process) ==' AS insights;
SELECT phase, code_name, message, substr(query, 1, 50) AS query, count(*) AS n
  FROM insights_errors GROUP BY 1, 2, 3, 4 ORDER BY n DESC;
SELECT '== queries per minute (history) ==' AS insights;
SELECT bucket_start, kind, calls, round(p99_ms, 3) AS p99_ms FROM insights_history
 WHERE resolution = 'minute' AND fingerprint IS NULL ORDER BY bucket_start, kind;
SELECT '== activity by tag ==' AS insights;
SELECT key, value, calls, errors, round(total_ms, 2) AS total_ms FROM insights_activity ORDER BY total_ms DESC;
SELECT '== events ==' AS insights;
SELECT at, kind, object, detail, schema_version_after FROM insights_events ORDER BY at;
SQL
