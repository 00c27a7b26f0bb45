-- Bounds: max_queries evicts the least used in batches and counts it; reset.
.load dist/insights0
.headers on
.mode list
SELECT insights_reset() >= 0 AS reset;
SELECT insights_config('max_queries', 20) AS max_queries;
CREATE TABLE t(id INTEGER PRIMARY KEY, v);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5)
SELECT count(*) FROM n;
SELECT count(*) FROM t;
SELECT count(*) FROM t;
SELECT count(*) FROM t;
SELECT 1 AS c1; SELECT 1 AS c2; SELECT 1 AS c3; SELECT 1 AS c4; SELECT 1 AS c5;
SELECT 1 AS c6; SELECT 1 AS c7; SELECT 1 AS c8; SELECT 1 AS c9; SELECT 1 AS c10;
SELECT 1 AS c11; SELECT 1 AS c12; SELECT 1 AS c13; SELECT 1 AS c14; SELECT 1 AS c15;
SELECT 1 AS c16; SELECT 1 AS c17; SELECT 1 AS c18; SELECT 1 AS c19; SELECT 1 AS c20;
SELECT 1 AS c21; SELECT 1 AS c22; SELECT 1 AS c23; SELECT 1 AS c24; SELECT 1 AS c25;
SELECT 'bounded' AS section, fingerprints <= 20 AS ok, evictions > 0 AS evicted FROM insights_info WHERE database = ':memory:';
SELECT 'hot survived' AS section, calls FROM insights_queries WHERE query = 'SELECT count(*) FROM t';
SELECT 'reset one' AS section, insights_reset(insights_fingerprint('SELECT count(*) FROM t')) AS removed;
SELECT 'after reset one' AS section, count(*) AS n FROM insights_queries WHERE query = 'SELECT count(*) FROM t';
SELECT count(*) FROM t;
SELECT 'counted again' AS section, calls FROM insights_queries WHERE query = 'SELECT count(*) FROM t';
SELECT insights_config('max_queries', 5000) AS restored;
SELECT 'reset all' AS section, insights_reset() > 0 AS removed;
SELECT 'empty' AS section, count(*) AS n FROM insights_queries WHERE query NOT LIKE '%insights%';
SELECT 'evictions cleared' AS section, evictions FROM insights_info WHERE database = ':memory:';
