//! sqlite-insights in a real Rust host: rusqlite with SQLite 3.53 bundled
//! (statically linked, its symbols exported with -rdynamic by build.rs).
//!
//! Every test shares one process, hence one registry and one process-wide
//! configuration. Each test therefore works on its own database file (the
//! registry keys stats by database path) and filters by it. Tests that
//! change process-wide state (`insights_reset()`, `insights_config`) take
//! the exclusive side of `GATE`; all others take the shared side.
//!
//! `env()` runs first in every test: it opens the baseline connection
//! BEFORE the extension is loaded anywhere in the process (so the
//! auto-extension never reaches it), then loads the extension with
//! `load_extension` into a second pre-existing connection.

use insights_host::{load_extension, run_raw, so_path, sqlite3_config_exported, Outcome};
use rusqlite::{ffi, params, Connection, OptionalExtension};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- set-up

struct Env {
    dir: PathBuf,
    /// Opened before the extension was loaded: never instrumented.
    baseline: Mutex<Connection>,
    baseline_path: PathBuf,
    /// Opened before the load as well: the uninstrumented side of the
    /// with/without comparison.
    diff_base: Mutex<Connection>,
    /// Opened before the load too; the extension was loaded into it with
    /// `load_extension`.
    loader: Mutex<Connection>,
    loader_path: PathBuf,
}

static ENV: OnceLock<Env> = OnceLock::new();
static GATE: RwLock<()> = RwLock::new(());

fn env() -> &'static Env {
    ENV.get_or_init(|| {
        let so = so_path();
        assert!(
            so.exists(),
            "{} does not exist: run `make loadable` in the repository root first",
            so.display()
        );
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(&root).unwrap();
        // remove directories of earlier runs whose process is gone
        if let Ok(rd) = std::fs::read_dir(&root) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("host-") {
                    if !Path::new("/proc").join(pid).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let dir = root.join(format!("host-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dir = std::fs::canonicalize(&dir).unwrap();

        let baseline_path = dir.join("baseline.db");
        let baseline = Connection::open(&baseline_path).unwrap();
        baseline.execute_batch("CREATE TABLE pre(x)").unwrap();
        let diff_base = Connection::open(dir.join("diff_base.db")).unwrap();

        let loader_path = dir.join("loader.db");
        let loader = Connection::open(&loader_path).unwrap();
        load_extension(&loader).expect("load_extension(dist/insights0.so)");
        Env {
            dir,
            baseline: Mutex::new(baseline),
            baseline_path,
            diff_base: Mutex::new(diff_base),
            loader: Mutex::new(loader),
            loader_path,
        }
    })
}

fn shared() -> RwLockReadGuard<'static, ()> {
    env();
    GATE.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    env();
    GATE.write().unwrap_or_else(|e| e.into_inner())
}

/// A fresh database file for one test; returns (connection, path as the
/// extension reports it).
fn open_new(name: &str) -> (Connection, String) {
    let p = env().dir.join(name);
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{}", p.display(), suffix));
    }
    let c = Connection::open(&p).unwrap();
    (c, p.display().to_string())
}

fn open(path: &str) -> Connection {
    Connection::open(path).unwrap()
}

fn debug(conn: &Connection) -> serde_json::Value {
    let s: String = conn
        .query_row("SELECT insights_debug()", [], |r| r.get(0))
        .unwrap();
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("insights_debug() is not JSON ({e}): {s}"))
}

fn internal_errors(conn: &Connection) -> i64 {
    debug(conn)["internal_errors"]
        .as_i64()
        .expect("internal_errors is a number")
}

fn fingerprint(conn: &Connection, sql: &str) -> String {
    conn.query_row("SELECT insights_fingerprint(?1)", [sql], |r| r.get(0))
        .unwrap()
}

/// One insights_queries row.
#[derive(Debug, Clone, Default)]
#[allow(dead_code)]
struct Q {
    query: String,
    kind: String,
    tables: String,
    calls: i64,
    errors: i64,
    busy: i64,
    total_ms: f64,
    min_ms: Option<f64>,
    max_ms: Option<f64>,
    mean_ms: Option<f64>,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
    rows_returned: i64,
    rows_affected: i64,
    first_seen: Option<String>,
    last_seen: Option<String>,
    last_error: Option<String>,
}

const Q_COLS: &str = "query, kind, tables, calls, errors, busy, total_ms, min_ms, max_ms, mean_ms, \
                      p50_ms, p95_ms, p99_ms, rows_returned, rows_affected, first_seen, last_seen, last_error";

fn q_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Q> {
    Ok(Q {
        query: r.get(0)?,
        kind: r.get(1)?,
        tables: r.get(2)?,
        calls: r.get(3)?,
        errors: r.get(4)?,
        busy: r.get(5)?,
        total_ms: r.get(6)?,
        min_ms: r.get(7)?,
        max_ms: r.get(8)?,
        mean_ms: r.get(9)?,
        p50_ms: r.get(10)?,
        p95_ms: r.get(11)?,
        p99_ms: r.get(12)?,
        rows_returned: r.get(13)?,
        rows_affected: r.get(14)?,
        first_seen: r.get(15)?,
        last_seen: r.get(16)?,
        last_error: r.get(17)?,
    })
}

/// Stats of the statement `sql` (by fingerprint) on database `db`.
fn stats(conn: &Connection, db: &str, sql: &str) -> Option<Q> {
    conn.query_row(
        &format!("SELECT {Q_COLS} FROM insights_queries WHERE database = ?1 AND fingerprint = insights_fingerprint(?2)"),
        params![db, sql],
        q_from_row,
    )
    .optional()
    .unwrap()
}

fn must(conn: &Connection, db: &str, sql: &str) -> Q {
    stats(conn, db, sql).unwrap_or_else(|| {
        let all: Vec<String> = conn
            .prepare("SELECT query || ' calls=' || calls FROM insights_queries WHERE database = ?1")
            .unwrap()
            .query_map([db], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        panic!("no insights_queries row for {sql:?} on {db}; rows there: {all:#?}")
    })
}

/// One insights_errors row.
#[derive(Debug, Clone, PartialEq)]
struct ErrRow {
    at: String,
    fingerprint: Option<String>,
    query: Option<String>,
    phase: String,
    code: i64,
    extended_code: i64,
    code_name: String,
    message: String,
}

fn errors_of(conn: &Connection, db: &str) -> Vec<ErrRow> {
    conn.prepare(
        "SELECT at, fingerprint, query, phase, code, extended_code, code_name, message \
         FROM insights_errors WHERE database = ?1",
    )
    .unwrap()
    .query_map([db], |r| {
        Ok(ErrRow {
            at: r.get(0)?,
            fingerprint: r.get(1)?,
            query: r.get(2)?,
            phase: r.get(3)?,
            code: r.get(4)?,
            extended_code: r.get(5)?,
            code_name: r.get(6)?,
            message: r.get(7)?,
        })
    })
    .unwrap()
    .map(|r| r.unwrap())
    .collect()
}

struct Info {
    fingerprints: i64,
    max_queries: i64,
    evictions: i64,
    connections_open: i64,
    connections_peak: i64,
    connections_opened: i64,
    connections_closed: i64,
    stats_reset: Option<String>,
}

fn info(conn: &Connection, db: &str) -> Option<Info> {
    conn.query_row(
        "SELECT fingerprints, max_queries, evictions, connections_open, connections_peak, \
                connections_opened, connections_closed, stats_reset FROM insights_info WHERE database = ?1",
        [db],
        |r| {
            Ok(Info {
                fingerprints: r.get(0)?,
                max_queries: r.get(1)?,
                evictions: r.get(2)?,
                connections_open: r.get(3)?,
                connections_peak: r.get(4)?,
                connections_opened: r.get(5)?,
                connections_closed: r.get(6)?,
                stats_reset: r.get(7)?,
            })
        },
    )
    .optional()
    .unwrap()
}

/// `2026-11-25T06:35:39.123Z`
fn is_iso_utc_ms(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Seconds between now and an ISO instant (positive: the instant is past).
fn age_s(conn: &Connection, iso: &str) -> f64 {
    conn.query_row(
        "SELECT (julianday('now') - julianday(?1)) * 86400.0",
        [iso],
        |r| r.get(0),
    )
    .unwrap()
}

fn err_codes(e: &rusqlite::Error) -> (i32, String) {
    match e {
        rusqlite::Error::SqliteFailure(f, m) => (f.extended_code, m.clone().unwrap_or_default()),
        rusqlite::Error::SqlInputError { error, msg, .. } => (error.extended_code, msg.clone()),
        other => panic!("not an SQLite error: {other:?}"),
    }
}

// ---------------------------------------------------------------- loading

#[test]
fn executable_exports_sqlite3_config() {
    let _g = shared();
    // build.rs links with -rdynamic; without it the extension cannot find
    // the host's sqlite3_config and error capture is off.
    assert!(
        sqlite3_config_exported(),
        "sqlite3_config is not in the dynamic symbol table"
    );
}

#[test]
fn load_extension_into_connection_and_debug_fields() {
    let _g = shared();
    let e = env();
    let loader = e.loader.lock().unwrap();
    let loader_db = e.loader_path.display().to_string();

    // functions and tables exist on the connection we loaded into
    let v: String = loader
        .query_row("SELECT insights_version()", [], |r| r.get(0))
        .unwrap();
    assert!(
        !v.is_empty()
            && v.split('.').count() == 3
            && v.split('.').all(|p| p.parse::<u32>().is_ok()),
        "version {v:?}"
    );

    let d = debug(&loader);
    assert_eq!(d["version"], serde_json::json!(v));
    let commit = d["commit"].as_str().expect("commit is text");
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "commit {commit:?}"
    );
    assert_eq!(
        d["sqlite_version"].as_str(),
        Some(rusqlite::version()),
        "sqlite_version must be the host's"
    );
    assert!(
        rusqlite::version().starts_with("3.53."),
        "bundled SQLite is {}",
        rusqlite::version()
    );
    assert_eq!(d["capture_mode"], "trace_v2");
    assert_eq!(
        d["error_capture"]["mode"], "runtime",
        "error capture: {}",
        d["error_capture"]
    );
    assert_eq!(
        d["error_capture"]["active"], true,
        "error capture: {}",
        d["error_capture"]
    );
    assert!(d["connections_instrumented"].as_i64().unwrap() >= 1);
    assert_eq!(d["internal_errors"], 0);
    assert!(
        d["config"]["max_queries"].as_i64().is_some(),
        "{}",
        d["config"]
    );

    // the explicit load instrumented the pre-existing connection
    loader
        .execute_batch("CREATE TABLE IF NOT EXISTS l(x)")
        .unwrap();
    let sql = "SELECT count(*) FROM l WHERE x = ?1";
    let before = stats(&loader, &loader_db, sql)
        .map(|q| q.calls)
        .unwrap_or(0);
    for i in 0..7 {
        loader.query_row(sql, [i], |r| r.get::<_, i64>(0)).unwrap();
    }
    assert_eq!(must(&loader, &loader_db, sql).calls, before + 7);

    // second load into the same connection: harmless, no second hook
    load_extension(&loader).expect("second load_extension");
    load_extension(&loader).expect("third load_extension");
    for i in 0..5 {
        loader.query_row(sql, [i], |r| r.get::<_, i64>(0)).unwrap();
    }
    assert_eq!(
        must(&loader, &loader_db, sql).calls,
        before + 12,
        "a repeated load must not double count"
    );
    let d2 = debug(&loader);
    assert_eq!(d2["error_capture"]["mode"], "runtime");
    assert_eq!(d2["error_capture"]["active"], true);
    assert_eq!(d2["internal_errors"], 0);
}

#[test]
fn auto_extension_instruments_later_connections_only() {
    let _g = shared();
    let e = env();
    // a connection opened after the load: no load_extension call
    let (c, db) = open_new("auto.db");
    c.execute_batch("CREATE TABLE a(id INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    let v: String = c
        .query_row("SELECT insights_version()", [], |r| r.get(0))
        .unwrap();
    assert!(!v.is_empty());
    for i in 0..9 {
        c.execute("INSERT INTO a(v) VALUES (?1)", [format!("v{i}")])
            .unwrap();
    }
    let q = must(&c, &db, "INSERT INTO a(v) VALUES (?1)");
    assert_eq!((q.calls, q.rows_affected, q.errors), (9, 9, 0));
    assert_eq!(q.kind, "insert");
    assert_eq!(q.tables, r#"["a"]"#);

    // loading into an auto-instrumented connection does not add a second hook
    load_extension(&c).unwrap();
    c.execute("INSERT INTO a(v) VALUES (?1)", ["again"])
        .unwrap();
    assert_eq!(must(&c, &db, "INSERT INTO a(v) VALUES (?1)").calls, 10);

    // the baseline, opened before the first load, knows nothing of it
    let baseline = e.baseline.lock().unwrap();
    let err = baseline
        .query_row("SELECT insights_version()", [], |r| r.get::<_, String>(0))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no such function: insights_version"),
        "{err}"
    );
    baseline
        .query_row("SELECT count(*) FROM pre", [], |r| r.get::<_, i64>(0))
        .unwrap();
    let bdb = e.baseline_path.display().to_string();
    assert!(
        info(&c, &bdb).is_none(),
        "the baseline connection must not be instrumented"
    );
    let n: i64 = c
        .query_row(
            "SELECT count(*) FROM insights_queries WHERE database = ?1",
            [&bdb],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);
    let i = info(&c, &db).unwrap();
    assert_eq!((i.connections_open, i.connections_opened), (1, 1));
}

// ---------------------------------------------------------------- counting

#[test]
fn exact_counts_rows_and_latency_shape() {
    let _g = shared();
    let (c, db) = open_new("counts.db");
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, n INTEGER)")
        .unwrap();

    // inserts, one row each
    let ins = "INSERT INTO t(v, n) VALUES (?1, ?2)";
    {
        let mut st = c.prepare_cached(ins).unwrap();
        for i in 0..2000 {
            assert_eq!(st.execute(params![format!("v{i}"), i]).unwrap(), 1);
        }
    }
    // multi-row inserts collapse to one fingerprint
    for k in 0..5 {
        c.execute_batch(&format!(
            "INSERT INTO t(v, n) VALUES ('m{k}', 1), ('m{k}', 2), ('m{k}', 3)"
        ))
        .unwrap();
    }

    // N executions of a prepared point select
    let sel = "SELECT v FROM t WHERE id = ?1";
    let n = 1000;
    let t0 = Instant::now();
    {
        let mut st = c.prepare_cached(sel).unwrap();
        for i in 0..n {
            let v: String = st.query_row([1 + (i % 2000)], |r| r.get(0)).unwrap();
            assert!(v.starts_with('v'));
        }
    }
    let wall_ms = t0.elapsed().as_secs_f64() * 1e3;

    // several rows per run, zero rows per run, partial reads
    let range = "SELECT id FROM t WHERE id <= ?1 ORDER BY id";
    for _ in 0..3 {
        let mut st = c.prepare_cached(range).unwrap();
        let ids: Vec<i64> = st
            .query_map([10], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(ids.len(), 10);
    }
    let none = "SELECT v FROM t WHERE id = -1";
    for _ in 0..4 {
        assert!(c
            .query_row(none, [], |r| r.get::<_, String>(0))
            .optional()
            .unwrap()
            .is_none());
    }
    // query_row on a many-row select reads one row then resets early
    let partial = "SELECT id FROM t WHERE n >= ?1";
    for _ in 0..6 {
        c.query_row(partial, [0], |r| r.get::<_, i64>(0)).unwrap();
    }
    // updates and deletes: rows_affected from sqlite3_changes
    let upd = "UPDATE t SET n = n + 1 WHERE id <= ?1";
    assert_eq!(c.execute(upd, [10]).unwrap(), 10);
    assert_eq!(c.execute(upd, [25]).unwrap(), 25);
    let del = "DELETE FROM t WHERE v = ?1";
    assert_eq!(c.execute(del, ["m0"]).unwrap(), 3);
    assert_eq!(c.execute(del, ["nope"]).unwrap(), 0);
    // latency spread for the percentile checks
    let spread = "SELECT count(*) FROM t WHERE id <= ?1 AND v LIKE '%9%'";
    for i in 0..400 {
        c.query_row(spread, [1 + i * 5], |r| r.get::<_, i64>(0))
            .unwrap();
    }

    let q = must(&c, &db, ins);
    assert_eq!(
        (q.calls, q.errors, q.busy, q.rows_affected, q.rows_returned),
        (2000, 0, 0, 2000, 0),
        "{q:?}"
    );
    assert_eq!(q.kind, "insert");
    let q = must(
        &c,
        &db,
        "INSERT INTO t(v, n) VALUES ('x', 1), ('x', 2), ('x', 3)",
    );
    assert_eq!((q.calls, q.rows_affected), (5, 15), "{q:?}");
    assert_eq!(q.query, "INSERT INTO t(v, n) VALUES (?, ?)");

    let q = must(&c, &db, sel);
    assert_eq!(
        (q.calls, q.errors, q.busy, q.rows_returned, q.rows_affected),
        (n as i64, 0, 0, n as i64, 0),
        "{q:?}"
    );
    assert_eq!(q.kind, "select");
    assert_eq!(q.query, "SELECT v FROM t WHERE id = ?1");
    assert!(
        q.total_ms > 0.0 && q.total_ms <= wall_ms,
        "timed {} ms inside a {} ms loop",
        q.total_ms,
        wall_ms
    );

    let q = must(&c, &db, range);
    assert_eq!((q.calls, q.rows_returned), (3, 30), "{q:?}");
    let q = must(&c, &db, none);
    assert_eq!(
        (q.calls, q.rows_returned, q.errors, q.busy),
        (4, 0, 0, 0),
        "{q:?}"
    );
    let q = must(&c, &db, partial);
    assert_eq!(
        (q.calls, q.rows_returned, q.errors, q.busy),
        (6, 6, 0, 0),
        "{q:?}"
    );
    let q = must(&c, &db, upd);
    assert_eq!(
        (q.calls, q.rows_affected, q.kind.as_str()),
        (2, 35, "update"),
        "{q:?}"
    );
    let q = must(&c, &db, del);
    assert_eq!(
        (q.calls, q.rows_affected, q.kind.as_str()),
        (2, 3, "delete"),
        "{q:?}"
    );

    // latency shape on every fingerprint of this database
    let all: Vec<Q> = c
        .prepare(&format!(
            "SELECT {Q_COLS} FROM insights_queries WHERE database = ?1"
        ))
        .unwrap()
        .query_map([&db], q_from_row)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert!(all.len() >= 9);
    let eps = 1e-9;
    for q in &all {
        let (min, max, mean) = (q.min_ms.unwrap(), q.max_ms.unwrap(), q.mean_ms.unwrap());
        let (p50, p95, p99) = (q.p50_ms.unwrap(), q.p95_ms.unwrap(), q.p99_ms.unwrap());
        assert!(min > 0.0 && min <= max, "{q:?}");
        assert!(
            min <= p50 + eps && p50 <= p95 + eps && p95 <= p99 + eps && p99 <= max + eps,
            "{q:?}"
        );
        assert!(min <= mean + eps && mean <= max + eps, "{q:?}");
        let timed = q.calls - q.errors; // no errors here: every call timed
        assert!(
            (q.total_ms - mean * timed as f64).abs() <= 1e-6 * q.total_ms.max(1.0),
            "{q:?}"
        );
        let (fs, ls) = (
            q.first_seen.as_deref().unwrap(),
            q.last_seen.as_deref().unwrap(),
        );
        assert!(is_iso_utc_ms(fs) && is_iso_utc_ms(ls), "{fs} {ls}");
        assert!(fs <= ls, "{fs} > {ls}");
        let age = age_s(&c, fs);
        assert!(
            (-2.0..300.0).contains(&age),
            "first_seen {fs} is {age} s from now"
        );
    }
    let q = must(&c, &db, spread);
    assert!(q.max_ms.unwrap() > q.min_ms.unwrap(), "{q:?}");
    assert!(internal_errors(&c) == 0);
}

#[test]
fn schema_change_reprepare_counts_once() {
    let _g = shared();
    let (a, db) = open_new("reprepare.db");
    a.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('x');",
    )
    .unwrap();
    let b = open(&db);
    let sql = "SELECT v FROM t WHERE id = ?1";
    let mut st = a.prepare(sql).unwrap();
    assert_eq!(st.query_row([1], |r| r.get::<_, String>(0)).unwrap(), "x");
    b.execute_batch("CREATE TABLE other(y); ALTER TABLE t ADD COLUMN w;")
        .unwrap();
    // SQLite re-prepares (SQLITE_SCHEMA internally) and runs it once more
    assert_eq!(st.query_row([1], |r| r.get::<_, String>(0)).unwrap(), "x");
    assert_eq!(st.query_row([1], |r| r.get::<_, String>(0)).unwrap(), "x");
    drop(st);
    let q = must(&a, &db, sql);
    assert_eq!((q.calls, q.errors, q.rows_returned), (3, 0, 3), "{q:?}");
    assert!(errors_of(&a, &db).is_empty(), "{:?}", errors_of(&a, &db));
}

#[test]
fn databases_kept_apart_and_memory_named() {
    let _g = shared();
    let (a, dba) = open_new("apart_a.db");
    let (b, dbb) = open_new("apart_b.db");
    for c in [&a, &b] {
        c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            .unwrap();
    }
    let sql = "INSERT INTO t(v) VALUES (?1)";
    for i in 0..3 {
        a.execute(sql, [i]).unwrap();
    }
    for i in 0..8 {
        b.execute(sql, [i]).unwrap();
    }
    assert_eq!(a.path(), Some(dba.as_str()));
    assert_eq!(must(&a, &dba, sql).calls, 3);
    assert_eq!(must(&a, &dbb, sql).calls, 8);
    let dbs: Vec<String> = a
        .prepare("SELECT DISTINCT database FROM insights_queries WHERE fingerprint = insights_fingerprint(?1) AND database IN (?2, ?3) ORDER BY 1")
        .unwrap()
        .query_map(params![sql, dba, dbb], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(dbs, vec![dba.clone(), dbb.clone()]);

    // in-memory connections are all ':memory:'; a unique table keeps this test's rows apart
    let m = Connection::open_in_memory().unwrap();
    m.execute_batch("CREATE TABLE mem_apart_unique(x)").unwrap();
    let msql = "INSERT INTO mem_apart_unique VALUES (?1)";
    for i in 0..4 {
        m.execute(msql, [i]).unwrap();
    }
    assert_eq!(must(&m, ":memory:", msql).calls, 4);
    assert!(stats(&m, &dba, msql).is_none());
    // anonymous temp databases also report ':memory:'
    let tmp = Connection::open("").unwrap();
    tmp.execute_batch("CREATE TABLE tmp_apart_unique(x); INSERT INTO tmp_apart_unique VALUES (1);")
        .unwrap();
    assert_eq!(
        must(&m, ":memory:", "INSERT INTO tmp_apart_unique VALUES (1)").calls,
        1
    );
}

#[test]
fn triggers_not_double_counted() {
    let _g = shared();
    let (c, db) = open_new("triggers.db");
    c.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
         CREATE TABLE audit(id INTEGER, what TEXT);
         CREATE TRIGGER t_ai AFTER INSERT ON t BEGIN
           INSERT INTO audit VALUES (new.id, 'ins');
           UPDATE audit SET what = 'ins2' WHERE id = new.id;
         END;
         CREATE TRIGGER t_au AFTER UPDATE ON t BEGIN
           INSERT INTO audit SELECT new.id, 'upd' FROM (SELECT 1 UNION ALL SELECT 2);
         END;",
    )
    .unwrap();
    let ins = "INSERT INTO t(v) VALUES (?1)";
    for i in 0..7 {
        assert_eq!(c.execute(ins, [format!("r{i}")]).unwrap(), 1);
    }
    assert_eq!(
        c.execute("UPDATE t SET v = 'u' WHERE id <= ?1", [3])
            .unwrap(),
        3
    );
    // the app's own write to audit counts as its own statement
    c.execute("INSERT INTO audit VALUES (?1, ?2)", params![100, "app"])
        .unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 7 + 6 + 1);

    let q = must(&c, &db, ins);
    assert_eq!((q.calls, q.rows_affected, q.errors), (7, 7, 0), "{q:?}");
    let q = must(&c, &db, "UPDATE t SET v = 'u' WHERE id <= ?1");
    assert_eq!((q.calls, q.rows_affected), (1, 3), "{q:?}");
    assert_eq!(must(&c, &db, "INSERT INTO audit VALUES (?1, ?2)").calls, 1);
    // no fingerprint for the trigger bodies, nothing starting with a comment
    for body in [
        "INSERT INTO audit VALUES (new.id, 'ins')",
        "UPDATE audit SET what = 'ins2' WHERE id = new.id",
        "INSERT INTO audit SELECT new.id, 'upd' FROM (SELECT 1 UNION ALL SELECT 2)",
    ] {
        assert!(
            stats(&c, &db, body).is_none(),
            "trigger body counted: {body}"
        );
    }
    let texts: Vec<String> = c
        .prepare("SELECT query FROM insights_queries WHERE database = ?1")
        .unwrap()
        .query_map([&db], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert!(
        texts
            .iter()
            .all(|t| !t.starts_with("--") && !t.starts_with("TRIGGER")),
        "{texts:#?}"
    );
    let total: i64 = c
        .query_row(
            "SELECT sum(calls) FROM insights_queries WHERE database = ?1 AND query LIKE '%audit%' AND kind <> 'ddl' AND query NOT LIKE '%insights%'",
            [&db],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        total, 2,
        "only the app's INSERT INTO audit and its count(*) touch audit: {texts:#?}"
    );
}

#[test]
fn nested_and_interleaved_statements() {
    let _g = shared();
    let (c, db) = open_new("nested.db");
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER DEFAULT 0);")
        .unwrap();
    c.execute_batch("WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM s WHERE x < 50) INSERT INTO t(id) SELECT x FROM s").unwrap();

    // an UPDATE per row while the SELECT is still running on the same connection
    let sel = "SELECT id FROM t WHERE id <= 20 ORDER BY id";
    let upd = "UPDATE t SET n = n + 1 WHERE id = ?1";
    {
        let mut s = c.prepare(sel).unwrap();
        let mut u = c.prepare(upd).unwrap();
        let mut rows = s.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            let id: i64 = r.get(0).unwrap();
            assert_eq!(u.execute([id]).unwrap(), 1);
        }
    }
    // two statements with the same SQL, stepped alternately
    let same = "SELECT id FROM t WHERE id > ?1";
    for _ in 0..3 {
        let mut a = c.prepare(same).unwrap();
        let mut b = c.prepare(same).unwrap();
        let mut ra = a.query([40]).unwrap();
        let mut rb = b.query([45]).unwrap();
        let (mut na, mut nb) = (0, 0);
        loop {
            let x = ra.next().unwrap().is_some();
            let y = rb.next().unwrap().is_some();
            na += x as i32;
            nb += y as i32;
            if !x && !y {
                break;
            }
        }
        assert_eq!((na, nb), (10, 5));
    }
    // several statements in one batch
    c.execute_batch("UPDATE t SET n = 0 WHERE id = 1; UPDATE t SET n = 0 WHERE id = 2; UPDATE t SET n = 0 WHERE id = 3;").unwrap();

    let q = must(&c, &db, sel);
    assert_eq!((q.calls, q.rows_returned), (1, 20), "{q:?}");
    let q = must(&c, &db, upd);
    assert_eq!((q.calls, q.rows_affected), (20, 20), "{q:?}");
    let q = must(&c, &db, same);
    assert_eq!(
        (q.calls, q.rows_returned, q.errors, q.busy),
        (6, 45, 0, 0),
        "{q:?}"
    );
    let q = must(&c, &db, "UPDATE t SET n = 0 WHERE id = 1");
    assert_eq!((q.calls, q.rows_affected), (3, 3), "{q:?}");
}

// ---------------------------------------------------------------- errors

#[test]
fn errors_step_prepare_and_busy() {
    let _g = shared();
    let (c, db) = open_new("errors.db");
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT UNIQUE)")
        .unwrap();

    // UNIQUE constraint at step
    let ins = "INSERT INTO t(v) VALUES (?1)";
    c.execute(ins, ["a"]).unwrap();
    c.execute(ins, ["b"]).unwrap();
    let e = c.execute(ins, ["a"]).unwrap_err();
    assert_eq!(
        err_codes(&e),
        (2067, "UNIQUE constraint failed: t.v".to_string())
    );
    let q = must(&c, &db, ins);
    assert_eq!(
        (q.calls, q.errors, q.busy, q.rows_affected),
        (3, 1, 0, 2),
        "{q:?}"
    );
    assert_eq!(
        q.last_error.as_deref(),
        Some("UNIQUE constraint failed: t.v")
    );
    let fp = fingerprint(&c, ins);
    let errs = errors_of(&c, &db);
    let uniq: Vec<&ErrRow> = errs
        .iter()
        .filter(|r| r.fingerprint.as_deref() == Some(&fp))
        .collect();
    assert_eq!(uniq.len(), 1, "{errs:#?}");
    let r = uniq[0];
    assert_eq!((r.code, r.extended_code), (19, 2067));
    assert_eq!(r.message, "UNIQUE constraint failed: t.v");
    assert_eq!(r.phase, "step");
    assert_eq!(r.query.as_deref(), Some("INSERT INTO t(v) VALUES (?1)"));
    assert_eq!(r.code_name, "SQLITE_CONSTRAINT_UNIQUE");
    assert!(is_iso_utc_ms(&r.at), "{}", r.at);

    // syntax error at prepare
    let bad = "SELEC 1";
    let e = c.prepare(bad).unwrap_err();
    assert_eq!(
        err_codes(&e),
        (1, "near \"SELEC\": syntax error".to_string())
    );
    let q = must(&c, &db, bad);
    assert_eq!((q.calls, q.errors), (1, 1), "{q:?}");
    let fp = fingerprint(&c, bad);
    let errs = errors_of(&c, &db);
    let r = errs
        .iter()
        .find(|r| r.fingerprint.as_deref() == Some(&fp))
        .unwrap_or_else(|| panic!("{errs:#?}"));
    assert_eq!(
        (r.phase.as_str(), r.code, r.extended_code),
        ("prepare", 1, 1)
    );
    assert_eq!(r.message, "near \"SELEC\": syntax error");

    // no such table at prepare
    let nst = "SELECT * FROM nosuch_table WHERE x = 1";
    let e = c.prepare(nst).unwrap_err();
    assert_eq!(err_codes(&e).1, "no such table: nosuch_table");
    let q = must(&c, &db, nst);
    assert_eq!((q.calls, q.errors), (1, 1), "{q:?}");
    assert_eq!(q.last_error.as_deref(), Some("no such table: nosuch_table"));
    let fp = fingerprint(&c, nst);
    let r = errors_of(&c, &db)
        .into_iter()
        .find(|r| r.fingerprint.as_deref() == Some(&fp))
        .unwrap();
    assert_eq!(
        (r.phase.as_str(), r.code, r.message.as_str()),
        ("prepare", 1, "no such table: nosuch_table")
    );

    // SQLITE_BUSY: another connection holds the write lock, busy_timeout 0
    let holder = open(&db);
    let waiter = open(&db);
    waiter.busy_timeout(Duration::ZERO).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let wsql = "INSERT INTO t(v) VALUES ('waiter')";
    let e = waiter.execute(wsql, []).unwrap_err();
    assert_eq!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy),
        "{e:?}"
    );
    let q = must(&c, &db, wsql);
    assert_eq!(
        (q.calls, q.errors, q.busy, q.rows_affected),
        (1, 1, 1, 0),
        "{q:?}"
    );
    holder.execute_batch("COMMIT").unwrap();
    assert_eq!(waiter.execute(wsql, []).unwrap(), 1);
    let q = must(&c, &db, wsql);
    assert_eq!(
        (q.calls, q.errors, q.busy, q.rows_affected),
        (2, 1, 1, 1),
        "{q:?}"
    );
    let fp = fingerprint(&c, wsql);
    let r = errors_of(&c, &db)
        .into_iter()
        .find(|r| r.fingerprint.as_deref() == Some(&fp))
        .unwrap();
    assert_eq!((r.phase.as_str(), r.code), ("step", 5));
    assert_eq!(r.message, "database is locked");
    assert_eq!(internal_errors(&c), 0);
}

#[test]
fn step_error_with_sql_longer_than_the_log_line() {
    let _g = shared();
    let (c, db) = open_new("err_longsql.db");
    c.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT UNIQUE); INSERT INTO t(v) VALUES ('a');",
    )
    .unwrap();
    // SQLite cuts log lines at SQLITE_MAX_LOG_MESSAGE (700 bytes in 3.53,
    // 210 in 3.40): here inside the SQL
    let long_sql = format!("INSERT INTO t(v) /* {} */ VALUES (?1)", "c".repeat(1000));
    let e = c.execute(&long_sql, ["a"]).unwrap_err();
    assert_eq!(
        err_codes(&e),
        (2067, "UNIQUE constraint failed: t.v".into())
    );
    let q = must(&c, &db, &long_sql);
    assert_eq!((q.calls, q.errors, q.rows_affected), (1, 1, 0), "{q:?}");
    assert_eq!(
        q.last_error.as_deref(),
        Some("UNIQUE constraint failed: t.v")
    );
}

#[test]
fn step_error_with_message_longer_than_the_log_line() {
    let _g = shared();
    let (c, db) = open_new("err_longmsg.db");
    // the message alone fills the log line: the SQL never appears in it
    let name = format!("positive_{}", "n".repeat(800));
    c.execute_batch(&format!(
        "CREATE TABLE s(x INTEGER, CONSTRAINT {name} CHECK (x >= 0))"
    ))
    .unwrap();
    let ins = "INSERT INTO s(x) VALUES (?1)";
    c.execute(ins, [1]).unwrap();
    let e = c.execute(ins, [-1]).unwrap_err();
    let msg = format!("CHECK constraint failed: {name}");
    assert_eq!(err_codes(&e), (275, msg.clone()));
    let q = must(&c, &db, ins);
    assert_eq!((q.calls, q.errors, q.rows_affected), (2, 1, 1), "{q:?}");
    // SQLite's log line was cut inside the message: we keep what it gave
    let got = q.last_error.as_deref().unwrap_or("");
    assert!(got.len() >= 150 && msg.starts_with(got), "{got:?}");
    let fp = fingerprint(&c, ins);
    assert!(
        errors_of(&c, &db)
            .iter()
            .any(|r| r.fingerprint.as_deref() == Some(&fp) && r.extended_code == 275),
        "{:#?}",
        errors_of(&c, &db)
    );
}

#[test]
fn step_error_whose_message_contains_semicolon_bracket() {
    let _g = shared();
    let (c, db) = open_new("err_semi.db");
    c.execute_batch(r#"CREATE TABLE s(x INTEGER, CONSTRAINT "bad; [value]" CHECK (x >= 0))"#)
        .unwrap();
    let ins = "INSERT INTO s(x) VALUES (?1)";
    let e = c.execute(ins, [-1]).unwrap_err();
    assert_eq!(
        err_codes(&e),
        (275, "CHECK constraint failed: bad; [value]".into())
    );
    let q = must(&c, &db, ins);
    assert_eq!((q.calls, q.errors), (1, 1), "{q:?}");
    assert_eq!(
        q.last_error.as_deref(),
        Some("CHECK constraint failed: bad; [value]")
    );
}

#[test]
fn step_errors_raised_inside_triggers() {
    let _g = shared();
    let (c, db) = open_new("err_trigger.db");
    c.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER);
         CREATE TABLE u(v TEXT UNIQUE);
         CREATE TRIGGER t_guard BEFORE INSERT ON t WHEN new.n > 100 BEGIN SELECT RAISE(ABORT, 'n too large'); END;
         CREATE TRIGGER t_copy AFTER INSERT ON t WHEN new.n < 0 BEGIN INSERT INTO u VALUES ('neg'); END;",
    )
    .unwrap();
    let ins = "INSERT INTO t(n) VALUES (?1)";
    c.execute(ins, [1]).unwrap();
    // RAISE(ABORT) in a trigger body
    let e = c.execute(ins, [500]).unwrap_err();
    assert_eq!(err_codes(&e), (1811, "n too large".into()));
    // a constraint failing inside a trigger body (second negative insert)
    c.execute(ins, [-1]).unwrap();
    let e = c.execute(ins, [-2]).unwrap_err();
    assert_eq!(
        err_codes(&e),
        (2067, "UNIQUE constraint failed: u.v".into())
    );
    let q = must(&c, &db, ins);
    assert_eq!((q.calls, q.errors, q.rows_affected), (4, 2, 2), "{q:?}");
    assert_eq!(
        q.last_error.as_deref(),
        Some("UNIQUE constraint failed: u.v")
    );
    let fp = fingerprint(&c, ins);
    let mut got: Vec<(i64, String)> = errors_of(&c, &db)
        .into_iter()
        .filter(|r| r.fingerprint.as_deref() == Some(&fp))
        .map(|r| (r.extended_code, r.message))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (1811, "n too large".to_string()),
            (2067, "UNIQUE constraint failed: u.v".to_string())
        ]
    );
}

/// The corpus for the with/without comparison: DDL, DML, constraint
/// failures, runtime errors, prepare errors, transactions, pragmas.
fn corpus() -> Vec<String> {
    let long_comment = "k".repeat(300);
    let mut v: Vec<String> = [
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT UNIQUE, n INTEGER NOT NULL DEFAULT 0, CHECK (n >= 0))",
        "CREATE TABLE s(id INTEGER PRIMARY KEY, x INTEGER, y TEXT) STRICT",
        "CREATE TABLE child(id INTEGER PRIMARY KEY, pid INTEGER REFERENCES t(id))",
        "CREATE TABLE audit(id INTEGER, what TEXT)",
        "PRAGMA foreign_keys = ON",
        "CREATE TRIGGER t_guard BEFORE UPDATE OF n ON t WHEN new.n > 1000 BEGIN SELECT RAISE(ABORT, 'n too large'); END",
        "CREATE TRIGGER t_ai AFTER INSERT ON t BEGIN INSERT INTO audit VALUES (new.id, 'ins'); END",
        "INSERT INTO t(v, n) VALUES ('a', 1), ('b', 2), ('c', 3)",
        "INSERT INTO t(v, n) VALUES ('a', 9)",
        "INSERT INTO t(v) VALUES (NULL)",
        "INSERT INTO t(v, n) VALUES ('d', NULL)",
        "INSERT INTO t(v, n) VALUES ('e', -1)",
        "UPDATE t SET n = 2000 WHERE id = 1",
        "UPDATE t SET n = n + 10 WHERE id >= 2",
        "INSERT INTO child(pid) VALUES (999)",
        "INSERT INTO child(pid) VALUES (1)",
        "DELETE FROM t WHERE id = 1",
        "INSERT INTO s(x, y) VALUES ('abc', 'x')",
        "INSERT INTO s(x, y) VALUES (1, 'x'), (2, 'y')",
        "INSERT INTO t(id, v) VALUES ('abc', 'z')",
        "SELECT * FROM t ORDER BY id",
        "SELECT v, n * 2.5, typeof(v), quote(v) FROM t ORDER BY id DESC",
        "SELECT count(*), sum(n), avg(n), total(n), group_concat(v, '|') FROM t",
        "SELECT abs(-9223372036854775808)",
        "SELECT 1/0, 1.0/0, 5 % 0, -0.0, 1e308 * 10, 9223372036854775807 + 1",
        "SELECT json_extract('{\"a\":[1,2,3]}', '$.a[1]')",
        "SELECT json('{bad')",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50) SELECT sum(x), max(x) FROM c",
        "SELECT id, v, row_number() OVER (ORDER BY v DESC), sum(n) OVER (ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM t ORDER BY id",
        "SELEC 1",
        "SELECT * FROM nosuch",
        "SELECT nosuchcol FROM t",
        "SELECT * FROM t WHERE id IN (1, 2, 3) AND v LIKE 'b%'",
        "SELECT changes(), total_changes(), last_insert_rowid()",
        "BEGIN",
        "BEGIN",
        "INSERT INTO t(v, n) VALUES ('tx', 5)",
        "SAVEPOINT sp1",
        "UPDATE t SET n = n + 1",
        "ROLLBACK TO sp1",
        "RELEASE sp1",
        "COMMIT",
        "COMMIT",
        "ROLLBACK",
        "SELECT x'00ff', zeroblob(4), printf('%.3f', 3.14159), upper('é'), length('héllo'), hex('x'), unicode('é')",
        "SELECT CAST('12abc' AS INTEGER), CAST(1.9 AS INTEGER), '10' + 5, 'a' || NULL",
        "SELECT zeroblob(1000000001)",
        "SELECT substr(?1, 1), ?2",
        "INSERT INTO t(v) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200) SELECT 'bulk' || x FROM c",
        "SELECT count(*), max(id) FROM audit",
        "PRAGMA table_info(t)",
        "PRAGMA user_version = 7",
        "PRAGMA user_version",
        "CREATE INDEX t_n ON t(n)",
        "EXPLAIN QUERY PLAN SELECT * FROM t WHERE n = 3",
        "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY name",
        "VALUES (1, 'x'), (2, 'y')",
        "DROP TABLE nosuch",
        "SELECT 1; SELECT 2",
        "",
        "-- only a comment",
        "ANALYZE",
        "SELECT tbl, idx, stat FROM sqlite_stat1 ORDER BY tbl, idx",
        "DROP TRIGGER t_ai",
        "DELETE FROM t WHERE v LIKE 'bulk1%'",
        "VACUUM",
        "SELECT count(*), sum(length(v)) FROM t",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(format!(
        "INSERT INTO t(v, n) /* {long_comment} */ VALUES ('b', 1)"
    ));
    v
}

fn failed(o: &Outcome) -> bool {
    o.prepare_rc != ffi::SQLITE_OK
        || (o.step_rc != ffi::SQLITE_ROW && o.step_rc != ffi::SQLITE_DONE && o.step_rc != 0)
}

#[test]
fn results_identical_with_and_without_extension() {
    let _g = shared();
    let e = env();
    let corpus = corpus();
    assert!(corpus.len() >= 40);

    // the uninstrumented side: a fresh file on a connection opened before
    // the first load, run on a thread that never touched an instrumented
    // connection (the error log is process-wide and a prepare error is
    // attributed to the database the logging thread last used)
    let base_outcomes: Vec<Outcome> = std::thread::scope(|s| {
        s.spawn(|| {
            let guard = e.diff_base.lock().unwrap();
            let db = unsafe { guard.handle() };
            corpus
                .iter()
                .map(|sql| unsafe { run_raw(db, sql) })
                .collect()
        })
        .join()
        .unwrap()
    });

    let (c, db) = open_new("diff_inst.db");
    let h = unsafe { c.handle() };
    let inst_outcomes: Vec<Outcome> = corpus
        .iter()
        .map(|sql| unsafe { run_raw(h, sql) })
        .collect();

    let mut mismatches = vec![];
    for (i, sql) in corpus.iter().enumerate() {
        if base_outcomes[i] != inst_outcomes[i] {
            mismatches.push(format!(
                "#{i} {sql:?}\n  without: {:?}\n  with:    {:?}",
                base_outcomes[i], inst_outcomes[i]
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "results differ:\n{}",
        mismatches.join("\n")
    );
    let n_failed = base_outcomes.iter().filter(|o| failed(o)).count();
    assert!(
        n_failed >= 15,
        "the corpus must exercise errors ({n_failed})"
    );

    // and the instrumented side counted each statement once, each failure as an error
    let mut want: BTreeMap<String, (i64, i64, String)> = BTreeMap::new();
    let mut want_errors: Vec<(String, String, i64, String)> = vec![];
    for (sql, o) in corpus.iter().zip(&inst_outcomes) {
        let runs = o.prepare_rc != ffi::SQLITE_OK || o.step_rc != 0; // a statement was prepared and run
        if !runs {
            continue;
        }
        if sql.starts_with("EXPLAIN") {
            continue; // EXPLAIN runs fire PROFILE but no TRACE_STMT: not captured
        }
        // only the first statement of a multi-statement text runs
        let ran = if o.prepare_rc == ffi::SQLITE_OK {
            &sql[..o.tail_offset]
        } else {
            sql.as_str()
        };
        let fp = fingerprint(&c, ran);
        let w = want.entry(fp.clone()).or_insert((0, 0, sql.clone()));
        w.0 += 1;
        // Known blind spot (README): an immediate FOREIGN KEY violation found
        // when a statement ends is returned without any log line, so it is
        // counted as a run without an error.
        let fk_at_end = o.extended_errcode == 787 && !sql.starts_with("INSERT");
        if failed(o) && !fk_at_end {
            w.1 += 1;
            let (phase, code, msg) = if o.prepare_rc != ffi::SQLITE_OK {
                ("prepare", o.prepare_errcode, o.prepare_errmsg.clone())
            } else {
                ("step", o.extended_errcode, o.errmsg.clone())
            };
            want_errors.push((fp, phase.to_string(), code as i64, msg));
        }
    }
    let mut problems = vec![];
    for (fp, (calls, errors, sql)) in &want {
        let got: Option<(i64, i64)> = c
            .query_row(
                "SELECT calls, errors FROM insights_queries WHERE database = ?1 AND fingerprint = ?2",
                params![db, fp],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .unwrap();
        if got != Some((*calls, *errors)) {
            problems.push(format!(
                "{sql:?}: want calls/errors {:?}, got {got:?}",
                (calls, errors)
            ));
        }
    }
    let mut got_errors: Vec<(String, String, i64, String)> = errors_of(&c, &db)
        .into_iter()
        .map(|r| {
            (
                r.fingerprint.unwrap_or_default(),
                r.phase,
                r.extended_code,
                r.message,
            )
        })
        .collect();
    got_errors.sort();
    want_errors.sort();
    for w in &want_errors {
        if !got_errors.contains(w) {
            problems.push(format!("missing insights_errors row {w:?}"));
        }
    }
    for g in &got_errors {
        if !want_errors.contains(g) {
            problems.push(format!("unexpected insights_errors row {g:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "capture problems:\n{}",
        problems.join("\n")
    );
    assert_eq!(internal_errors(&c), 0);
}

#[test]
fn prepare_errors_go_to_the_database_last_used_on_the_thread() {
    let _g = shared();
    // Documented limitation (README): SQLite's error log names no
    // connection, so a prepare error is placed under the database this
    // thread last ran a statement on. One thread, two databases: B's error
    // lands under A. With one database per thread (the common shape) the
    // placement is exact (errors_step_prepare_and_busy).
    let (a, dba) = open_new("attr_a.db");
    let (b, dbb) = open_new("attr_b.db");
    a.execute_batch("CREATE TABLE ta(x)").unwrap();
    b.execute_batch("CREATE TABLE tb(x)").unwrap();
    a.query_row("SELECT count(*) FROM ta", [], |r| r.get::<_, i64>(0))
        .unwrap();
    // the last statement on this thread ran on A; now B fails at prepare
    let bad = "SELECT * FROM no_such_table_in_b";
    b.prepare(bad).unwrap_err();
    let q = must(&a, &dba, bad);
    assert_eq!((q.calls, q.errors), (1, 1), "{q:?}");
    assert!(stats(&a, &dbb, bad).is_none());
    // after B runs a statement, B's next prepare error goes to B
    b.query_row("SELECT count(*) FROM tb", [], |r| r.get::<_, i64>(0))
        .unwrap();
    let bad2 = "SELECT * FROM no_such_table_either";
    b.prepare(bad2).unwrap_err();
    let q = must(&a, &dbb, bad2);
    assert_eq!((q.calls, q.errors), (1, 1), "{q:?}");
}

#[test]
fn foreign_key_violation_counted_as_error_at_insert_blind_at_statement_end() {
    let _g = shared();
    let (c, db) = open_new("err_fk.db");
    c.execute_batch(
        "PRAGMA foreign_keys = ON;
         CREATE TABLE p(id INTEGER PRIMARY KEY);
         CREATE TABLE ch(id INTEGER PRIMARY KEY, pid INTEGER REFERENCES p(id));
         INSERT INTO p VALUES (1);",
    )
    .unwrap();
    let ins = "INSERT INTO ch(pid) VALUES (?1)";
    c.execute(ins, [1]).unwrap();
    let e = c.execute(ins, [99]).unwrap_err();
    assert_eq!(err_codes(&e), (787, "FOREIGN KEY constraint failed".into()));
    let del = "DELETE FROM p WHERE id = ?1";
    let e = c.execute(del, [1]).unwrap_err();
    assert_eq!(err_codes(&e), (787, "FOREIGN KEY constraint failed".into()));
    let q = must(&c, &db, ins);
    assert_eq!((q.calls, q.errors, q.rows_affected), (2, 1, 1), "{q:?}");
    assert_eq!(
        q.last_error.as_deref(),
        Some("FOREIGN KEY constraint failed")
    );
    // Known blind spot (README): the parent DELETE's violation is found when
    // the statement ends and SQLite logs nothing, so it shows as a run
    // without an error. If SQLite ever logs it, this fails: update README.
    let q = must(&c, &db, del);
    assert_eq!((q.calls, q.errors, q.rows_affected), (1, 0, 0), "{q:?}");
}

// ---------------------------------------------------------------- reset, config

#[test]
fn reset_all_and_one_fingerprint() {
    let _g = exclusive();
    let (c, db) = open_new("reset.db");
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    let a = "INSERT INTO t(v) VALUES (?1)";
    let b = "SELECT count(*) FROM t WHERE v = ?1";
    for i in 0..5 {
        c.execute(a, [i]).unwrap();
        c.query_row(b, [i], |r| r.get::<_, i64>(0)).unwrap();
    }
    c.prepare("SELEC oops").unwrap_err();
    assert_eq!(must(&c, &db, a).calls, 5);
    assert!(!errors_of(&c, &db).is_empty());

    // one fingerprint
    // reset(fp) removes the fingerprint from every database that holds it
    let fa = fingerprint(&c, a);
    let holders: i64 = c
        .query_row(
            "SELECT count(*) FROM insights_queries WHERE fingerprint = ?1",
            [&fa],
            |r| r.get(0),
        )
        .unwrap();
    assert!(holders >= 1);
    let n: i64 = c
        .query_row("SELECT insights_reset(?1)", [&fa], |r| r.get(0))
        .unwrap();
    assert_eq!(n, holders);
    let left: i64 = c
        .query_row(
            "SELECT count(*) FROM insights_queries WHERE fingerprint = ?1",
            [&fa],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
    assert!(stats(&c, &db, a).is_none());
    assert_eq!(must(&c, &db, b).calls, 5, "other fingerprints untouched");
    let n: i64 = c
        .query_row("SELECT insights_reset('00000000deadbeef')", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(n, 0);
    let e = c
        .query_row("SELECT insights_reset('xyz')", [], |r| r.get::<_, i64>(0))
        .unwrap_err();
    assert!(e.to_string().starts_with("insights_reset:"), "{e}");
    c.execute(a, ["after"]).unwrap();
    assert_eq!(
        must(&c, &db, a).calls,
        1,
        "counted again from zero after reset(fp)"
    );

    // everything
    let n: i64 = c
        .query_row("SELECT insights_reset()", [], |r| r.get(0))
        .unwrap();
    assert!(n >= 3, "{n}");
    assert!(stats(&c, &db, a).is_none() && stats(&c, &db, b).is_none());
    assert!(errors_of(&c, &db).is_empty(), "insights_errors cleared");
    let i = info(&c, &db).unwrap();
    assert_eq!(i.evictions, 0);
    let reset_at = i.stats_reset.expect("stats_reset set");
    assert!(
        is_iso_utc_ms(&reset_at) && age_s(&c, &reset_at).abs() < 60.0,
        "{reset_at}"
    );
    // cached statements keep counting, from zero
    for i in 0..3 {
        c.query_row(b, [i], |r| r.get::<_, i64>(0)).unwrap();
    }
    assert_eq!(must(&c, &db, b).calls, 3);
    assert_eq!(internal_errors(&c), 0);
}

struct RestoreMaxQueries<'a>(&'a Connection, i64);
impl Drop for RestoreMaxQueries<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .query_row("SELECT insights_config('max_queries', ?1)", [self.1], |r| {
                r.get::<_, String>(0)
            });
    }
}

#[test]
fn max_queries_bounds_fingerprints_and_counts_evictions() {
    let _g = exclusive();
    let (c, db) = open_new("evict.db");
    let old: i64 = c
        .query_row("SELECT insights_config('max_queries')", [], |r| {
            r.get::<_, String>(0)
        })
        .unwrap()
        .parse()
        .unwrap();
    let _restore = RestoreMaxQueries(&c, old);
    // out of range: rejected, nothing changes
    let e = c
        .query_row("SELECT insights_config('max_queries', 5)", [], |r| {
            r.get::<_, String>(0)
        })
        .unwrap_err();
    assert!(e.to_string().starts_with("insights_config:"), "{e}");
    let v: String = c
        .query_row("SELECT insights_config('max_queries', 50)", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(v, "50");

    c.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('x');",
    )
    .unwrap();
    let hot = "SELECT v FROM t WHERE id = ?1";
    let distinct = 600;
    for i in 0..distinct {
        for _ in 0..2 {
            c.query_row(hot, [1], |r| r.get::<_, String>(0)).unwrap();
        }
        // a distinct fingerprint each time (a literal alone would normalize away)
        c.query_row(
            &format!("SELECT {i} AS c{i} FROM t WHERE id = 1"),
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap();
        if i % 50 == 0 {
            let i = info(&c, &db).unwrap();
            assert!(
                i.fingerprints <= 50,
                "fingerprints {} > max_queries 50",
                i.fingerprints
            );
        }
    }
    let i = info(&c, &db).unwrap();
    assert_eq!(i.max_queries, 50);
    assert!(
        i.fingerprints <= 50 && i.fingerprints >= 40,
        "fingerprints {}",
        i.fingerprints
    );
    assert!(
        i.evictions >= distinct as i64 - 50,
        "evictions {}",
        i.evictions
    );
    let rows: i64 = c
        .query_row(
            "SELECT count(*) FROM insights_queries WHERE database = ?1",
            [&db],
            |r| r.get(0),
        )
        .unwrap();
    assert!(rows <= 50, "{rows}");
    // the most used statement survives every eviction batch
    assert_eq!(must(&c, &db, hot).calls, 2 * distinct as i64);
    let d = debug(&c);
    assert_eq!(d["config"]["max_queries"], 50);
    assert_eq!(d["internal_errors"], 0);
}

// ---------------------------------------------------------------- concurrency

#[test]
fn concurrency_stress_exact_totals() {
    let _g = shared();
    const THREADS: usize = 8;
    const ITERS: usize = 300;
    const SEED: i64 = 1000;
    let (setup, db) = open_new("stress.db");
    setup
        .execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE kv(id INTEGER PRIMARY KEY, tid INTEGER, v INTEGER);
             WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < {SEED})
             INSERT INTO kv(id, tid, v) SELECT x, -1, 0 FROM s;"
        ))
        .unwrap();
    let mode: String = setup
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");

    const S_POINT: &str = "SELECT v FROM kv WHERE id = ?1";
    const S_INS: &str = "INSERT INTO kv(tid, v) VALUES (?1, ?2)";
    const S_UPD: &str = "UPDATE kv SET v = v + 1 WHERE id = ?1";
    const S_COUNT: &str = "SELECT count(*) FROM kv WHERE tid = ?1";
    const S_ADHOC: &str = "SELECT v FROM kv WHERE id = 1"; // literal varies per run
    let fps = [S_POINT, S_INS, S_UPD, S_COUNT, S_ADHOC];
    let attempts: Arc<Vec<AtomicU64>> =
        Arc::new((0..fps.len()).map(|_| AtomicU64::new(0)).collect());
    let failures: Arc<Vec<AtomicU64>> =
        Arc::new((0..fps.len()).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Result<(), String>>();
    let barrier = Arc::new(Barrier::new(THREADS));

    for t in 0..THREADS {
        let (db, attempts, failures, tx, barrier) = (
            db.clone(),
            attempts.clone(),
            failures.clone(),
            tx.clone(),
            barrier.clone(),
        );
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let nconn = if t % 2 == 0 { 2 } else { 1 };
                let conns: Vec<Connection> = (0..nconn)
                    .map(|_| {
                        let c = open(&db);
                        c.busy_timeout(Duration::from_secs(30)).unwrap();
                        c
                    })
                    .collect();
                barrier.wait(); // every worker connection is open before any work
                let count = |k: usize, r: rusqlite::Result<()>| {
                    attempts[k].fetch_add(1, Ordering::Relaxed);
                    if r.is_err() {
                        failures[k].fetch_add(1, Ordering::Relaxed);
                    }
                };
                for i in 0..ITERS {
                    let c = &conns[i % nconn];
                    let id = 1 + ((t * 131 + i * 7) as i64 % SEED);
                    for _ in 0..3 {
                        let r = c
                            .prepare_cached(S_POINT)
                            .and_then(|mut s| s.query_row([id], |r| r.get::<_, i64>(0)))
                            .map(|_| ());
                        count(0, r);
                    }
                    let r = c
                        .prepare_cached(S_INS)
                        .and_then(|mut s| s.execute(params![t as i64, i as i64]))
                        .map(|_| ());
                    count(1, r);
                    let r = c
                        .prepare_cached(S_UPD)
                        .and_then(|mut s| s.execute([id]))
                        .map(|_| ());
                    count(2, r);
                    let r = c
                        .prepare_cached(S_COUNT)
                        .and_then(|mut s| s.query_row([t as i64], |r| r.get::<_, i64>(0)))
                        .map(|_| ());
                    count(3, r);
                    let r = c
                        .query_row(&format!("SELECT v FROM kv WHERE id = {id}"), [], |r| {
                            r.get::<_, i64>(0)
                        })
                        .map(|_| ());
                    count(4, r);
                }
            }));
            let _ = tx.send(r.map_err(|e| {
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            }));
        });
    }
    // a monitoring thread reads the stats while the workers run
    let reads = Arc::new(AtomicUsize::new(0));
    {
        let (db, done, tx, reads) = (db.clone(), done.clone(), tx.clone(), reads.clone());
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let c = open(&db);
                let mut last = 0i64;
                while !done.load(Ordering::Relaxed) {
                    let s: i64 = c
                        .query_row(
                            "SELECT coalesce(sum(calls), 0) FROM insights_queries WHERE database = ?1 AND fingerprint = insights_fingerprint(?2)",
                            params![db, S_POINT],
                            |r| r.get(0),
                        )
                        .unwrap();
                    assert!(s >= last, "calls went backwards: {last} -> {s}");
                    last = s;
                    let _: i64 = c
                        .query_row("SELECT count(*) FROM insights_queries", [], |r| r.get(0))
                        .unwrap();
                    let _: i64 = c
                        .query_row("SELECT count(*) FROM insights_info", [], |r| r.get(0))
                        .unwrap();
                    let _: i64 = c
                        .query_row("SELECT count(*) FROM insights_errors", [], |r| r.get(0))
                        .unwrap();
                    let _: String = c
                        .query_row("SELECT insights_debug()", [], |r| r.get(0))
                        .unwrap();
                    reads.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            }));
            let _ = tx.send(r.map_err(|e| {
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            }));
        });
    }
    drop(tx);

    let deadline = Instant::now() + Duration::from_secs(180);
    let mut finished = 0;
    while finished < THREADS {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(())) => finished += 1,
            Ok(Err(m)) => panic!("a thread failed: {m}"),
            Err(_) => {
                panic!("workers did not finish in time: deadlock? ({finished}/{THREADS} done)")
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(())) => {}
        Ok(Err(m)) => panic!("the monitoring thread failed: {m}"),
        Err(_) => panic!("monitoring thread stuck"),
    }
    assert!(reads.load(Ordering::Relaxed) > 0);

    let per_thread = [3 * ITERS, ITERS, ITERS, ITERS, ITERS];
    for (k, sql) in fps.iter().enumerate() {
        let ran = attempts[k].load(Ordering::Relaxed) as i64;
        assert_eq!(ran, (per_thread[k] * THREADS) as i64);
        let q = must(&setup, &db, sql);
        let failed = failures[k].load(Ordering::Relaxed) as i64;
        assert_eq!((q.calls, q.errors), (ran, failed), "{sql}: {q:?}");
    }
    let (p, i, u, n) = (
        must(&setup, &db, S_POINT),
        must(&setup, &db, S_INS),
        must(&setup, &db, S_UPD),
        must(&setup, &db, S_COUNT),
    );
    assert_eq!(p.rows_returned, (3 * ITERS * THREADS) as i64);
    assert_eq!(
        i.rows_affected,
        (ITERS * THREADS) as i64 - failures[1].load(Ordering::Relaxed) as i64
    );
    assert_eq!(
        u.rows_affected,
        (ITERS * THREADS) as i64 - failures[2].load(Ordering::Relaxed) as i64
    );
    assert_eq!(
        n.rows_returned,
        (ITERS * THREADS) as i64 - failures[3].load(Ordering::Relaxed) as i64
    );
    let inf = info(&setup, &db).unwrap();
    // set-up + 12 worker connections open at once (the barrier)
    let workers = (THREADS + THREADS / 2) as i64;
    assert!(
        inf.connections_peak > workers,
        "peak {} < set-up + {workers}",
        inf.connections_peak
    );
    assert_eq!(
        inf.connections_opened - inf.connections_closed,
        inf.connections_open
    );
    assert_eq!(
        inf.connections_open, 1,
        "only the set-up connection is still open"
    );
    assert_eq!(internal_errors(&setup), 0);
}

// ---------------------------------------------------------------- host safety

#[test]
fn close_with_unfinalized_statements_never_crashes() {
    let _g = shared();
    let path = env().dir.join("close_busy.db");
    let _ = std::fs::remove_file(&path);
    let cpath = std::ffi::CString::new(path.display().to_string()).unwrap();
    unsafe {
        let mut db: *mut ffi::sqlite3 = std::ptr::null_mut();
        let flags =
            ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE | ffi::SQLITE_OPEN_FULLMUTEX;
        assert_eq!(
            ffi::sqlite3_open_v2(cpath.as_ptr(), &mut db, flags, std::ptr::null()),
            ffi::SQLITE_OK
        );
        let o = run_raw(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
        assert_eq!(o.step_rc, ffi::SQLITE_DONE);
        for i in 0..5 {
            assert_eq!(
                run_raw(db, &format!("INSERT INTO t(v) VALUES ('v{i}')")).step_rc,
                ffi::SQLITE_DONE
            );
        }
        // a statement left in the middle of its rows
        let mut st: *mut ffi::sqlite3_stmt = std::ptr::null_mut();
        let sql = c"SELECT id FROM t ORDER BY id";
        assert_eq!(
            ffi::sqlite3_prepare_v2(db, sql.as_ptr(), -1, &mut st, std::ptr::null_mut()),
            ffi::SQLITE_OK
        );
        assert_eq!(ffi::sqlite3_step(st), ffi::SQLITE_ROW);
        // close fails with SQLITE_BUSY; the connection stays usable
        assert_eq!(ffi::sqlite3_close(db), ffi::SQLITE_BUSY);
        assert_eq!(ffi::sqlite3_close(db), ffi::SQLITE_BUSY);
        let o = run_raw(db, "SELECT count(*), insights_version() IS NOT NULL FROM t");
        assert_eq!(o.step_rc, ffi::SQLITE_DONE, "{o:?}");
        assert_eq!(
            o.rows,
            vec![vec![insights_host::Val::Int(5), insights_host::Val::Int(1)]]
        );
        let o = run_raw(db, "INSERT INTO t(v) VALUES ('after-close-busy')");
        assert_eq!(o.step_rc, ffi::SQLITE_DONE, "{o:?}");
        let o = run_raw(db, "SELECT count(*) FROM insights_queries");
        assert_eq!(o.step_rc, ffi::SQLITE_DONE, "{o:?}");
        let o = run_raw(db, "SELEC broken");
        assert_eq!(o.prepare_rc, ffi::SQLITE_ERROR);
        let mut n = 1;
        while ffi::sqlite3_step(st) == ffi::SQLITE_ROW {
            n += 1;
        }
        assert_eq!(n, 6);
        assert_eq!(ffi::sqlite3_finalize(st), ffi::SQLITE_OK);
        assert_eq!(ffi::sqlite3_close(db), ffi::SQLITE_OK);

        // close_v2 with a live statement: a zombie until the statement goes
        let mut db2: *mut ffi::sqlite3 = std::ptr::null_mut();
        assert_eq!(
            ffi::sqlite3_open_v2(cpath.as_ptr(), &mut db2, flags, std::ptr::null()),
            ffi::SQLITE_OK
        );
        let mut st2: *mut ffi::sqlite3_stmt = std::ptr::null_mut();
        assert_eq!(
            ffi::sqlite3_prepare_v2(db2, sql.as_ptr(), -1, &mut st2, std::ptr::null_mut()),
            ffi::SQLITE_OK
        );
        assert_eq!(ffi::sqlite3_step(st2), ffi::SQLITE_ROW);
        extern "C" {
            // in the bundled library, not in rusqlite's bindings
            fn sqlite3_close_v2(db: *mut ffi::sqlite3) -> std::ffi::c_int;
        }
        assert_eq!(sqlite3_close_v2(db2), ffi::SQLITE_OK);
        let mut n = 1;
        while ffi::sqlite3_step(st2) == ffi::SQLITE_ROW {
            n += 1;
        }
        assert_eq!(n, 6);
        assert_eq!(ffi::sqlite3_reset(st2), ffi::SQLITE_OK);
        assert_eq!(ffi::sqlite3_step(st2), ffi::SQLITE_ROW);
        assert_eq!(ffi::sqlite3_finalize(st2), ffi::SQLITE_OK); // the real close happens here
    }
    // the process is alive and the registry is consistent
    let c = Connection::open_in_memory().unwrap();
    let db = path.display().to_string();
    let i = info(&c, &db).unwrap();
    assert_eq!(i.connections_open, 0, "both connections are gone");
    assert_eq!((i.connections_opened, i.connections_closed), (2, 2));
    assert_eq!(internal_errors(&c), 0);
}

#[test]
fn connections_dropped_in_other_threads() {
    let _g = shared();
    let (first, db) = open_new("threads_drop.db");
    first.execute_batch("CREATE TABLE t(x)").unwrap();
    drop(first);
    // opened here, used and dropped in other threads
    let conns: Vec<Connection> = (0..6).map(|_| open(&db)).collect();
    let hs: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            std::thread::spawn(move || {
                c.busy_timeout(Duration::from_secs(30)).unwrap();
                c.execute("INSERT INTO t VALUES (?1)", [i as i64]).unwrap();
                drop(c);
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    // opened in other threads, dropped here (some with live cached statements)
    let (tx, rx) = mpsc::channel();
    for i in 0..6 {
        let (tx, db) = (tx.clone(), db.clone());
        std::thread::spawn(move || {
            let c = open(&db);
            c.busy_timeout(Duration::from_secs(30)).unwrap();
            c.execute("INSERT INTO t VALUES (?1)", [100 + i as i64])
                .unwrap();
            c.prepare_cached("SELECT count(*) FROM t")
                .unwrap()
                .query_row([], |r| r.get::<_, i64>(0))
                .unwrap();
            tx.send(c).unwrap();
        });
    }
    drop(tx);
    let back: Vec<Connection> = rx.iter().collect();
    assert_eq!(back.len(), 6);
    drop(back);

    let c = Connection::open_in_memory().unwrap();
    let i = info(&c, &db).unwrap();
    assert_eq!(
        (
            i.connections_opened,
            i.connections_closed,
            i.connections_open
        ),
        (13, 13, 0)
    );
    assert_eq!(must(&c, &db, "INSERT INTO t VALUES (?1)").calls, 12);
    assert_eq!(internal_errors(&c), 0);
}

static APP_TRACE_EVENTS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn app_replacing_the_trace_hook_is_safe() {
    let _g = shared();
    let (c, db) = open_new("apptrace.db");
    c.execute_batch("CREATE TABLE t(x)").unwrap();
    c.execute("INSERT INTO t VALUES (?1)", [1]).unwrap();
    // the app takes the one trace_v2 slot
    fn app_trace(_: rusqlite::trace::TraceEvent<'_>) {
        APP_TRACE_EVENTS.fetch_add(1, Ordering::Relaxed);
    }
    c.trace_v2(
        rusqlite::trace::TraceEventCodes::SQLITE_TRACE_STMT,
        Some(app_trace),
    );
    for i in 0..3 {
        c.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
    }
    assert!(
        APP_TRACE_EVENTS.load(Ordering::Relaxed) >= 3,
        "the app's own hook must run"
    );
    let n: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 4);
    drop(c);
    let m = Connection::open_in_memory().unwrap();
    assert!(stats(&m, &db, "INSERT INTO t VALUES (?1)").is_some());
    assert_eq!(internal_errors(&m), 0);
}
