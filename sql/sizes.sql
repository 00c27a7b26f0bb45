-- Sizes and resources: insights_tables, insights_db, insights_size_refresh,
-- insights_size_history, insights_connections, insights_resources (shapes,
-- exact figures of a small database, errors).
.load dist/insights0
.open sizes.db
.headers on
.mode list
SELECT insights_config('size_sample_interval_ms', 0) AS no_samples;
SELECT insights_config('size_refresh_ms', 0) AS always_fresh;
PRAGMA page_size = 4096;
CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
CREATE INDEX t_v ON t(v);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 5000)
  INSERT INTO t(v) SELECT printf('value-%05d', i) FROM c;
CREATE TABLE kv(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
INSERT INTO kv SELECT 'k' || id, id FROM t WHERE id <= 1000;
CREATE TABLE gone(x);
INSERT INTO gone SELECT v FROM t;
DROP TABLE gone;
CREATE VIRTUAL TABLE docs USING fts5(body);
INSERT INTO docs VALUES ('one'), ('two');
CREATE VIEW recent AS SELECT * FROM t WHERE id > 4000;
ATTACH 'sizes-aux.db' AS aux;
CREATE TABLE aux.a(x);
INSERT INTO aux.a VALUES (1), (2), (3);
CREATE TEMP TABLE tmp(x);
INSERT INTO tmp VALUES (1);
SELECT schema, name, type, tbl_name, without_rowid, pages, rows, rows_method FROM insights_tables ORDER BY schema, name;
SELECT (SELECT sum(pages) FROM insights_tables WHERE schema = 'main') + freelist_count = page_count AS pages_add_up,
       freelist_count > 0 AS has_free_pages
  FROM insights_db WHERE schema = 'main';
SELECT (SELECT rows FROM insights_tables WHERE name = 't') = (SELECT count(*) FROM t) AS rows_exact,
       (SELECT rows FROM insights_tables WHERE name = 'kv') = (SELECT count(*) FROM kv) AS without_rowid_exact;
SELECT schema, path, page_size, page_count, freelist_count, freelist_bytes, journal_mode, auto_vacuum,
       user_version, file_bytes = page_count * page_size AS file_ok, wal_bytes, disk_free_bytes > 0 AS disk_ok
  FROM insights_db ORDER BY schema;
VACUUM;
SELECT freelist_count, page_count = (SELECT sum(pages) FROM insights_tables WHERE schema = 'main') AS pages_add_up
  FROM insights_db WHERE schema = 'main';
SELECT name, rows FROM insights_tables WHERE schema = 'aux' ORDER BY name;
SELECT json_extract(insights_size_refresh('aux'), '$.objects') AS aux_objects;
SELECT insights_size_refresh('nope');
SELECT insights_size_refresh(1);
SELECT count(*) AS history_rows FROM insights_size_history;
SELECT * FROM insights_size_history WHERE window_days = 0;
SELECT * FROM insights_size_history WHERE at > 'soon';
SELECT scope, processes, connections_open FROM insights_connections WHERE database LIKE '%sizes.db' ORDER BY scope;
SELECT * FROM insights_connections WHERE resolution = 'week';
SELECT status, connections_sampled >= 1 AS sampled, cpu_user_s >= 0 AS cpu_ok, rss_bytes > 0 AS rss_ok
  FROM insights_resources WHERE database LIKE '%sizes.db';
SELECT * FROM insights_resources WHERE resolution = 'year';
SELECT 'read-only' AS section;
INSERT INTO insights_tables(name) VALUES ('x');
DELETE FROM insights_db;
