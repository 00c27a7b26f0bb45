//! `make bench`: the cost of sqlite-insights in one process.
//!
//! Baseline connections are opened BEFORE the extension is loaded (once
//! loaded, its auto-extension instruments every connection opened later),
//! then the extension is loaded and the instrumented connections are
//! opened. Each workload runs in alternating rounds (baseline first on even
//! rounds, instrumented first on odd ones) so that machine noise hits both
//! sides alike; the median round is reported.
//!
//! Workloads (totals per side, split over the rounds):
//!  a) prepared point select by primary key, 1M executions (rusqlite cached
//!     statement: bind, step, reset);
//!  b) prepared INSERT in transactions of 1000 rows into a file database
//!     (WAL, synchronous=NORMAL), 200k rows;
//!  c) ad-hoc: `SELECT v FROM t WHERE id = <literal>` with a new literal in
//!     every statement, prepare + step + finalize, 200k statements.
//!
//!  d) the store: p50/p99 latency of a prepared point select while another
//!     thread keeps 5000 fingerprints changing and flushes them to the store
//!     (`insights_flush()`), against the same load without flushing; and the
//!     time of one 5000-fingerprint flush.
//!
//! Environment: BENCH_ROUNDS (default 10), BENCH_SCALE (default 1.0),
//! BENCH_STRICT=1 (exit 1 when a target is missed), INSIGHTS_SO.

use insights_host::{load_extension, median, repo_root, so_path, sqlite3_config_exported};
use rusqlite::{ffi, params, Connection};
use serde_json::json;
use std::ffi::{c_int, c_uint, c_void};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

const TABLE_ROWS: i64 = 20_000;
const TXN_ROWS: usize = 1000;
/// Target: added nanoseconds per prepared execution.
const TARGET_ADDED_NS: f64 = 100.0;
/// Target: ad-hoc workload at most this much slower.
const TARGET_ADHOC_RATIO: f64 = 1.05;

fn env_num(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn build_kind(so: &Path) -> &'static str {
    let Ok(bytes) = std::fs::read(so) else {
        return "unknown";
    };
    let root = repo_root();
    for (kind, p) in [
        ("release", "target/release/libsqlite_insights.so"),
        ("debug", "target/debug/libsqlite_insights.so"),
    ] {
        if std::fs::read(root.join(p))
            .map(|b| b == bytes)
            .unwrap_or(false)
        {
            return kind;
        }
    }
    "unknown"
}

fn setup_select_db(c: &Connection) {
    c.execute_batch(&format!(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);
         WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < {TABLE_ROWS})
         INSERT INTO t(id, v) SELECT x, printf('value-%08d', x) FROM s;"
    ))
    .expect("set up t");
}

fn open_insert_db(path: &Path) -> Connection {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{}", path.display(), suffix));
    }
    let c = Connection::open(path).expect("open insert db");
    c.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA cache_size = -65536;
         PRAGMA synchronous = NORMAL;
         CREATE TABLE ins(id INTEGER PRIMARY KEY, a INTEGER NOT NULL, b TEXT NOT NULL);",
    )
    .expect("set up ins");
    c
}

/// A deterministic id sequence, identical for both sides.
#[inline]
fn next_id(state: &mut u64) -> i64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    1 + ((*state >> 33) % TABLE_ROWS as u64) as i64
}

const POINT_SQL: &str = "SELECT v FROM t WHERE id = ?1";
const INSERT_SQL: &str = "INSERT INTO ins(a, b) VALUES (?1, ?2)";

/// (a) n executions of a cached point select; ns/op.
fn run_point(c: &Connection, n: usize, seed: u64) -> f64 {
    let mut st = c.prepare_cached(POINT_SQL).expect("prepare point select");
    let mut s = seed;
    let mut sink = 0usize;
    let t0 = Instant::now();
    for _ in 0..n {
        let id = next_id(&mut s);
        sink += st
            .query_row([id], |r| {
                Ok(r.get_ref(0)?.as_bytes().map(|b| b.len()).unwrap_or(0))
            })
            .expect("point select");
    }
    let ns = t0.elapsed().as_nanos() as f64 / n as f64;
    black_box(sink);
    ns
}

/// (b) n rows inserted by a prepared INSERT, TXN_ROWS per transaction; ns/row.
fn run_insert(c: &Connection, n: usize, round: usize) -> f64 {
    let mut begin = c.prepare_cached("BEGIN").unwrap();
    let mut commit = c.prepare_cached("COMMIT").unwrap();
    let mut ins = c.prepare_cached(INSERT_SQL).unwrap();
    let payload = "x".repeat(24);
    let t0 = Instant::now();
    let mut done = 0;
    while done < n {
        begin.execute([]).expect("BEGIN");
        let k = TXN_ROWS.min(n - done);
        for i in 0..k {
            ins.execute(params![(round * n + done + i) as i64, payload])
                .expect("INSERT");
        }
        commit.execute([]).expect("COMMIT");
        done += k;
    }
    t0.elapsed().as_nanos() as f64 / n as f64
}

/// (c) n ad-hoc statements, each with a literal not used before in the
/// round: prepare + step + finalize; ns/statement.
fn run_adhoc(c: &Connection, sqls: &[String]) -> f64 {
    let mut sink = 0usize;
    let t0 = Instant::now();
    for sql in sqls {
        let mut st = c.prepare(sql).expect("prepare ad-hoc");
        sink += st
            .query_row([], |r| {
                Ok(r.get_ref(0)?.as_bytes().map(|b| b.len()).unwrap_or(0))
            })
            .expect("ad-hoc select");
        drop(st); // finalize
    }
    let ns = t0.elapsed().as_nanos() as f64 / sqls.len() as f64;
    black_box(sink);
    ns
}

struct Side {
    point: Connection,
    insert: Connection,
    adhoc: Connection,
}

/// A do-nothing trace_v2 callback with the extension's event mask: the cost
/// SQLite itself charges for having a hook at all (SQLite reads the wall
/// clock twice per statement for PROFILE, calls us per event).
unsafe extern "C" fn noop_trace(
    _: c_uint,
    _: *mut c_void,
    _: *mut c_void,
    _: *mut c_void,
) -> c_int {
    0
}

fn install_noop_hook(c: &Connection) {
    let mask = (ffi::SQLITE_TRACE_STMT
        | ffi::SQLITE_TRACE_PROFILE
        | ffi::SQLITE_TRACE_ROW
        | ffi::SQLITE_TRACE_CLOSE) as c_uint;
    let rc =
        unsafe { ffi::sqlite3_trace_v2(c.handle(), mask, Some(noop_trace), std::ptr::null_mut()) };
    assert_eq!(rc, ffi::SQLITE_OK);
}

fn open_side(tmp: &Path, name: &str) -> Side {
    let s = Side {
        point: Connection::open_in_memory().unwrap(),
        insert: open_insert_db(&tmp.join(format!("{name}.db"))),
        adhoc: Connection::open_in_memory().unwrap(),
    };
    setup_select_db(&s.point);
    setup_select_db(&s.adhoc);
    s
}

fn cache_hit_miss(c: &Connection) -> (i32, i32) {
    let (mut hit, mut miss, mut hi) = (0, 0, 0);
    unsafe {
        ffi::sqlite3_db_status(
            c.handle(),
            ffi::SQLITE_DBSTATUS_CACHE_HIT,
            &mut hit,
            &mut hi,
            0,
        );
        ffi::sqlite3_db_status(
            c.handle(),
            ffi::SQLITE_DBSTATUS_CACHE_MISS,
            &mut miss,
            &mut hi,
            0,
        );
    }
    (hit, miss)
}

/// Sides, in the order of their sample slots.
const WITHOUT: usize = 0;
const FLOOR: usize = 1;
const WITH: usize = 2;

fn main() {
    let so = so_path();
    if !so.exists() {
        eprintln!(
            "bench: {} not found.\nBuild the optimised extension first: run `make loadable-release` \
             in the repository root (or `make bench`, which does it).",
            so.display()
        );
        std::process::exit(2);
    }
    let so = std::fs::canonicalize(&so).unwrap_or(so);
    let kind = build_kind(&so);
    let rounds = (env_num("BENCH_ROUNDS", 10.0) as usize).max(3);
    let scale = env_num("BENCH_SCALE", 1.0).max(0.001);
    let strict = std::env::var("BENCH_STRICT")
        .map(|v| v == "1")
        .unwrap_or(false);
    let point_total = (1_000_000.0 * scale) as usize;
    let insert_total = (200_000.0 * scale) as usize;
    let adhoc_total = (200_000.0 * scale) as usize;
    let point_n = (point_total / rounds).max(1);
    let insert_n = (insert_total / rounds).max(1);
    let adhoc_n = (adhoc_total / rounds).max(1);

    let out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let tmp = out_dir.join("bench-tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("create target/bench-tmp");

    println!("sqlite-insights bench");
    println!(
        "  host      rusqlite 0.40.2, SQLite {} (bundled, static)",
        rusqlite::version()
    );
    println!("  extension {} ({kind} build)", so.display());
    if kind == "debug" {
        println!("  WARNING: this is the debug build; run `make loadable-release` for meaningful figures");
    }
    println!(
        "  rounds    {rounds} (alternating order), per side: {point_total} point selects, \
         {insert_total} inserts, {adhoc_total} ad-hoc statements"
    );

    // 1. the uninstrumented sides, opened before anything is loaded: plain,
    //    and with a do-nothing trace hook (the floor any trace_v2 hook pays)
    let without = open_side(&tmp, "without");
    let floor = open_side(&tmp, "floor");
    for c in [&floor.point, &floor.insert, &floor.adhoc] {
        install_noop_hook(c);
    }

    // 2. load the extension (this also registers the auto-extension)
    let loader = Connection::open_in_memory().unwrap();
    if let Err(e) = load_extension(&loader) {
        eprintln!("bench: cannot load {}: {e}", so.display());
        std::process::exit(2);
    }

    // 3. the instrumented side
    let with = open_side(&tmp, "with");

    for c in [
        &without.point,
        &without.insert,
        &without.adhoc,
        &floor.point,
        &floor.insert,
        &floor.adhoc,
    ] {
        if c.query_row("SELECT insights_version()", [], |r| r.get::<_, String>(0))
            .is_ok()
        {
            eprintln!("bench: a baseline connection is instrumented; the comparison would be void");
            std::process::exit(1);
        }
    }
    for c in [&with.point, &with.insert, &with.adhoc] {
        c.query_row("SELECT insights_version()", [], |r| r.get::<_, String>(0))
            .expect("instrumented connection has the extension");
    }
    let debug: serde_json::Value = serde_json::from_str(
        &loader
            .query_row("SELECT insights_debug()", [], |r| r.get::<_, String>(0))
            .unwrap(),
    )
    .unwrap();
    println!(
        "  capture   {} / error capture {} (active: {}), sqlite3_config exported: {}",
        debug["capture_mode"],
        debug["error_capture"]["mode"],
        debug["error_capture"]["active"],
        sqlite3_config_exported()
    );

    // ad-hoc statement texts: a distinct literal in each statement of a round
    let adhoc_sqls: Vec<String> = (0..adhoc_n)
        .map(|i| format!("SELECT v FROM t WHERE id = {}", 1 + (i as i64 % TABLE_ROWS)))
        .collect();

    // warm-up (caches, page cache, branch predictors, allocator)
    let sides = [&without, &floor, &with];
    let warm_point = 20_000usize;
    let warm_adhoc = 2_000usize.min(adhoc_sqls.len());
    for side in sides {
        run_point(&side.point, warm_point, 7);
        run_adhoc(&side.adhoc, &adhoc_sqls[..warm_adhoc]);
        run_insert(&side.insert, 2 * TXN_ROWS, 1_000_000);
    }

    // samples[workload][side]: ns/op of each round
    let mut samples: [[Vec<f64>; 3]; 3] = Default::default();
    let t_all = Instant::now();
    for round in 0..rounds {
        // rotate the order every round: each side runs first, middle, last
        let order: Vec<usize> = (0..3).map(|k| (k + round) % 3).collect();
        for &w in &order {
            samples[0][w].push(run_point(&sides[w].point, point_n, 1000 + round as u64));
        }
        for &w in &order {
            samples[1][w].push(run_insert(&sides[w].insert, insert_n, round));
        }
        for &w in &order {
            samples[2][w].push(run_adhoc(&sides[w].adhoc, &adhoc_sqls));
        }
    }
    let elapsed = t_all.elapsed().as_secs_f64();
    let cache = [
        cache_hit_miss(&without.insert),
        cache_hit_miss(&floor.insert),
        cache_hit_miss(&with.insert),
    ];

    // the instrumented side really counted every execution
    let calls = |c: &Connection, db: &str, sql: &str| -> i64 {
        c.query_row(
            "SELECT coalesce(sum(calls), 0) FROM insights_queries WHERE database = ?1 AND fingerprint = insights_fingerprint(?2)",
            params![db, sql],
            |r| r.get(0),
        )
        .unwrap()
    };
    let with_db = with.insert.path().unwrap_or("").to_string();
    let checks = [
        (
            "point select",
            calls(&loader, ":memory:", POINT_SQL),
            (warm_point + point_n * rounds) as i64,
        ),
        (
            "insert",
            calls(&loader, &with_db, INSERT_SQL),
            (2 * TXN_ROWS + insert_n * rounds) as i64,
        ),
        (
            "ad-hoc",
            calls(&loader, ":memory:", "SELECT v FROM t WHERE id = 1"),
            (warm_adhoc + adhoc_n * rounds) as i64,
        ),
    ];
    let mut counted_ok = true;
    for (name, got, want) in checks {
        if got != want {
            counted_ok = false;
            println!(
                "  CHECK FAILED: instrumented side counted {got} {name} executions, ran {want}"
            );
        }
    }
    let internal_errors = serde_json::from_str::<serde_json::Value>(
        &loader
            .query_row("SELECT insights_debug()", [], |r| r.get::<_, String>(0))
            .unwrap(),
    )
    .unwrap()["internal_errors"]
        .as_i64()
        .unwrap_or(-1);

    let names = [
        "point select (prepared)",
        "insert (prepared, 1000/txn)",
        "ad-hoc (new literal each)",
    ];
    let keys = ["point_select", "insert", "adhoc"];
    let ops = [point_n, insert_n, adhoc_n];
    println!();
    println!(
        "{:<28} {:>10} {:>10} {:>9} {:>7}  {:<17} {:<7} {:>10}",
        "workload",
        "ns/op w/o",
        "ns/op with",
        "added ns",
        "ratio",
        "target",
        "verdict",
        "hook floor"
    );
    let mut results = vec![];
    let mut all_pass = counted_ok && internal_errors == 0;
    for i in 0..3 {
        let med = |w: usize| median(&mut samples[i][w].clone());
        let (m_without, m_floor, m_with) = (med(WITHOUT), med(FLOOR), med(WITH));
        let paired = median(
            &mut samples[i][WITH]
                .iter()
                .zip(&samples[i][WITHOUT])
                .map(|(a, b)| a - b)
                .collect::<Vec<_>>(),
        );
        let added = m_with - m_without;
        let ratio = m_with / m_without;
        let (target, pass) = if i == 2 {
            (
                format!("ratio <= {TARGET_ADHOC_RATIO:.2}"),
                ratio <= TARGET_ADHOC_RATIO,
            )
        } else {
            (
                format!("added <= {TARGET_ADDED_NS:.0} ns"),
                added <= TARGET_ADDED_NS,
            )
        };
        all_pass &= pass;
        println!(
            "{:<28} {:>10.1} {:>10.1} {:>9.1} {:>7.3}  {:<17} {:<7} {:>+10.1}",
            names[i],
            m_without,
            m_with,
            added,
            ratio,
            target,
            if pass { "PASS" } else { "MISS" },
            m_floor - m_without,
        );
        results.push(json!({
            "workload": keys[i],
            "description": names[i],
            "ops_per_round": ops[i],
            "rounds": rounds,
            "ns_per_op_without": m_without,
            "ns_per_op_with": m_with,
            "added_ns_per_op": added,
            "added_ns_per_op_paired_median": paired,
            "ratio": ratio,
            "target": target,
            "pass": pass,
            "ns_per_op_noop_hook": m_floor,
            "hook_floor_added_ns": m_floor - m_without,
            "extension_added_over_floor_ns": m_with - m_floor,
            "rounds_without_ns": samples[i][WITHOUT],
            "rounds_noop_hook_ns": samples[i][FLOOR],
            "rounds_with_ns": samples[i][WITH],
        }));
    }
    println!("  (hook floor: ns/op added by a do-nothing trace_v2 hook with the same event mask, SQLite's own share)");
    println!();
    println!(
        "measured in {elapsed:.1} s; instrumented side counted every execution: {}; internal_errors: {internal_errors}",
        if counted_ok { "yes" } else { "NO" }
    );
    println!(
        "verdict: {} (targets: <= {TARGET_ADDED_NS:.0} ns added per prepared execution; ad-hoc <= {:.0}% slower)",
        if all_pass { "PASS" } else { "MISS" },
        (TARGET_ADHOC_RATIO - 1.0) * 100.0
    );

    let flush = flush_bench(&tmp, scale);

    let report = json!({
        "store_flush": flush,
        "sqlite_version": rusqlite::version(),
        "host": "rusqlite 0.40.2 bundled",
        "extension": so.display().to_string(),
        "extension_build": kind,
        "extension_version": debug["version"],
        "extension_commit": debug["commit"],
        "error_capture": debug["error_capture"],
        "rounds": rounds,
        "scale": scale,
        "elapsed_s": elapsed,
        "counted_every_execution": counted_ok,
        "internal_errors": internal_errors,
        "targets": { "added_ns_per_prepared_execution": TARGET_ADDED_NS, "adhoc_max_ratio": TARGET_ADHOC_RATIO },
        "verdict": if all_pass { "pass" } else { "miss" },
        "insert_page_cache_hit_miss": { "without": cache[WITHOUT], "noop_hook": cache[FLOOR], "with": cache[WITH] },
        "results": results,
    });
    let json_path = out_dir.join("bench.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report).unwrap())
        .expect("write bench.json");
    println!("results: {}", json_path.display());
    drop(with);
    drop(floor);
    drop(without);
    let _ = std::fs::remove_dir_all(&tmp);
    if !counted_ok || (strict && !all_pass) {
        std::process::exit(1);
    }
}

/// Fingerprints changed before every flush in the store benchmark (the
/// default max_queries: the largest flush one database can have).
const FLUSH_FINGERPRINTS: usize = 5000;

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}

/// d) hot-path latency while a large flush runs, and the flush time.
fn flush_bench(tmp: &Path, scale: f64) -> serde_json::Value {
    let path = tmp.join("flush.db");
    let setup = Connection::open(&path).unwrap();
    setup
        .execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
             INSERT INTO t SELECT i, 'v' || i FROM n;",
        )
        .unwrap();
    let samples_per_phase = ((200_000.0 * scale) as usize).max(2000);
    let mut report = serde_json::Map::new();
    let mut flush_ms: Vec<f64> = vec![];
    for flushing in [false, true] {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let p2 = path.clone();
        let writer = std::thread::spawn(move || {
            let c = Connection::open(&p2).unwrap();
            let mut times = vec![];
            let mut round = 0u64;
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                // 5000 distinct fingerprints, each run once: every flush has
                // 5000 deltas to merge
                for k in 0..FLUSH_FINGERPRINTS {
                    let sql = format!(
                        "SELECT v AS c{k} FROM t WHERE id = {}",
                        1 + (k as u64 + round) % 1000
                    );
                    let _ = c.query_row(&sql, [], |r| r.get::<_, String>(0));
                    if stop2.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                }
                if flushing {
                    let t = Instant::now();
                    c.query_row("SELECT insights_flush()", [], |r| r.get::<_, i64>(0))
                        .unwrap();
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                }
                round += 1;
            }
            times
        });
        let c = Connection::open(&path).unwrap();
        let mut st = c.prepare_cached(POINT_SQL).unwrap();
        let mut lat = Vec::with_capacity(samples_per_phase);
        let mut seed = 99u64;
        // let the writer get going
        std::thread::sleep(std::time::Duration::from_millis(200));
        for _ in 0..samples_per_phase {
            let id = 1 + (next_id(&mut seed) % 1000);
            let t = Instant::now();
            let v: String = st.query_row([id], |r| r.get(0)).unwrap();
            lat.push(t.elapsed().as_nanos() as f64);
            black_box(v);
        }
        drop(st);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let times = writer.join().unwrap();
        if flushing {
            flush_ms = times;
        }
        let p50 = percentile(&mut lat, 0.50);
        let p99 = percentile(&mut lat, 0.99);
        report.insert(
            if flushing {
                "while_flushing"
            } else {
                "without_flushing"
            }
            .into(),
            json!({ "p50_ns": p50, "p99_ns": p99, "samples": lat.len() }),
        );
    }
    let flushes = flush_ms.len();
    let med_flush = if flushes > 0 {
        median(&mut flush_ms.clone())
    } else {
        f64::NAN
    };
    let (a, b) = (
        report["without_flushing"]["p99_ns"].as_f64().unwrap_or(0.0),
        report["while_flushing"]["p99_ns"].as_f64().unwrap_or(0.0),
    );
    println!();
    println!("store flush ({FLUSH_FINGERPRINTS} fingerprints changed per flush, another thread)");
    println!(
        "  point select p50/p99 ns: without flushing {:.0}/{:.0}, while flushing {:.0}/{:.0} (p99 ratio {:.2})",
        report["without_flushing"]["p50_ns"].as_f64().unwrap_or(0.0),
        a,
        report["while_flushing"]["p50_ns"].as_f64().unwrap_or(0.0),
        b,
        b / a
    );
    println!("  flush of {FLUSH_FINGERPRINTS} fingerprints: median {med_flush:.1} ms over {flushes} flushes");
    report.insert("fingerprints_per_flush".into(), json!(FLUSH_FINGERPRINTS));
    report.insert("flush_ms_median".into(), json!(med_flush));
    report.insert("flushes".into(), json!(flushes));
    report.insert("p99_ratio".into(), json!(b / a));
    serde_json::Value::Object(report)
}
