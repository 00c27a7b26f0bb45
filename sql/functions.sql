-- Functions: normalize, fingerprint, config validation, reset, version.
.load dist/insights0
.headers on
.mode list
SELECT insights_reset() >= 0 AS reset;
SELECT insights_normalize('select * from t where a = 1 and b in (1, 2, 3)') AS n;
SELECT insights_normalize('SELECT -1, a-1, x''ab'', 1.5e3, :p, ?2, @x, $y FROM "T" -- hi') AS n;
SELECT insights_normalize('INSERT INTO t(a,b) VALUES (1,''x''),(2,''y'');') AS n;
SELECT insights_normalize('SELECT 1 /*app=''web'',route=''%2Fusers''*/') AS n;
SELECT insights_fingerprint('SELECT 1') = insights_fingerprint('select   2 -- x') AS same_fp;
SELECT insights_fingerprint('SELECT a FROM t') = insights_fingerprint('SELECT b FROM t') AS diff_fp;
SELECT length(insights_fingerprint('SELECT 1')) AS fp_len;
SELECT insights_version() GLOB '[0-9]*.[0-9]*.[0-9]*' AS version_ok;
SELECT json_extract(insights_debug(), '$.capture_mode') AS capture_mode;
SELECT json_extract(insights_debug(), '$.sqlite_version') = sqlite_version() AS host_version_ok;
SELECT insights_config('max_queries') AS max_queries;
SELECT insights_config('max_queries', 100) AS set_max;
SELECT insights_config('MAX_QUERIES') AS case_insensitive;
SELECT insights_config('max_queries', 5000) AS restored;
SELECT insights_config('sample_raw_sql', 'off') AS sample;
SELECT insights_config('nope');
SELECT insights_config('max_queries', 'lots');
SELECT insights_config('max_queries', 1);
SELECT insights_config('max_queries', NULL);
SELECT insights_config('capture', 7);
SELECT insights_config(NULL);
SELECT insights_config('a', 'b', 'c');
SELECT insights_normalize(NULL);
SELECT insights_normalize(42);
SELECT insights_fingerprint();
SELECT insights_reset('xyz');
SELECT insights_reset(NULL);
SELECT insights_version(1);
SELECT insights_config('max_queries') AS unchanged;
SELECT 'read-only' AS section;
INSERT INTO insights_queries(database) VALUES ('x');
DELETE FROM insights_errors;
UPDATE insights_info SET evictions = 0;
