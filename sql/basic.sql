-- Capture basics: calls, rows, kinds, fingerprints, triggers not double-counted.
.load dist/insights0
.headers on
.mode list
SELECT insights_reset() >= 0 AS reset;
CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
CREATE TABLE audit(n INTEGER);
CREATE TRIGGER t_ai AFTER INSERT ON t BEGIN INSERT INTO audit VALUES (new.id); UPDATE audit SET n = n WHERE n = new.id; END;
INSERT INTO t(v) VALUES ('a');
INSERT INTO t(v) VALUES ('b');
insert   into t(v) values ('c') ;
INSERT INTO t(v) VALUES ('d'), ('e'), ('f');
SELECT count(*) FROM t WHERE id > 1;
SELECT count(*) FROM t WHERE id > 2;
SELECT v FROM t WHERE id IN (1, 2, 3) ORDER BY v;
SELECT v FROM t WHERE id IN (4,5) ORDER BY v;
UPDATE t SET v = 'z' WHERE id <= 2;
DELETE FROM t WHERE id = 6;
SELECT 'queries' AS section;
SELECT kind, query, calls, errors, rows_returned, rows_affected, tables
  FROM insights_queries
 WHERE query NOT LIKE '%insights%'
 ORDER BY query;
SELECT 'audit rows' AS section, count(*) AS n FROM audit;
SELECT 'timing sane' AS section,
       sum(total_ms >= 0 AND min_ms <= max_ms AND p50_ms <= p99_ms + 1e-9 AND mean_ms >= 0) = count(*) AS ok
  FROM insights_queries WHERE query NOT LIKE '%insights%';
SELECT 'iso instants' AS section,
       sum(first_seen GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9]Z') = count(*) AS ok
  FROM insights_queries;
SELECT 'database' AS section, database FROM insights_queries GROUP BY database;
