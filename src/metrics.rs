//! `insights_metrics()`: this process's counters as Prometheus text, and the
//! per-round sampler that feeds it, the alerts and the live history.
//!
//! Rules:
//! - Scope is the process (each process exports what it ran; Prometheus sums
//!   instances). The standalone exporter (exporter/) exports the stores
//!   instead; scrape one or the other for a database, not both.
//! - Per-kind counters are monotonic even when fingerprints are evicted:
//!   `round()` (run by the background thread after every flush round) folds
//!   each entry's growth since the previous round into per-kind totals, the
//!   way the store computes deltas; a scrape adds the growth since the last
//!   round. `insights_reset()` (a new `reset_at`) starts them from zero, which
//!   Prometheus reads as a counter reset.
//! - Per-fingerprint series: the top `metrics_top_queries` fingerprints by
//!   total time, from the process's in-memory counters.
//! - Each round's growth (all kinds of a database together) is kept for
//!   `RING_MAX_AGE_MS` in a bounded ring: alerts read windows from it and the
//!   JSON history falls back to it for databases without a store.
//! - Nothing here runs on the statement hot path.

use crate::clock;
use crate::config::{self, Key};
use crate::exposition::{self, DbMetrics, Globals, KindStat, Point, QueryStat, StoreStat};
use crate::registry::{lock, registry, Agg, DbStats, Entry, Meta};
use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, Error, Result};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// Round deltas kept per database (age bound).
pub const RING_MAX_AGE_MS: i64 = 3_600_000;
/// Round deltas kept per database (count bound, for short flush intervals).
pub const RING_MAX_LEN: usize = 7_200;

#[derive(Default)]
struct Track {
    reset_at: u64,
    /// Per fingerprint: the entry and its counters at the last round.
    last: HashMap<u64, (Arc<Entry>, Agg)>,
    /// Per kind: growth folded in up to the last round.
    cum: BTreeMap<String, KindStat>,
    /// Per round: growth of all kinds (start = previous round's time).
    ring: VecDeque<Point>,
    last_round_ms: i64,
}

fn tracks() -> &'static Mutex<HashMap<String, Track>> {
    static T: std::sync::OnceLock<Mutex<HashMap<String, Track>>> = std::sync::OnceLock::new();
    T.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Growth of `cur` over `prev` (same entry): counters, histogram.
fn growth(cur: &Agg, prev: &Agg) -> Agg {
    Agg {
        calls: cur.calls.saturating_sub(prev.calls),
        errors: cur.errors.saturating_sub(prev.errors),
        busy: cur.busy.saturating_sub(prev.busy),
        timed: cur.timed.saturating_sub(prev.timed),
        total_ns: cur.total_ns.saturating_sub(prev.total_ns),
        hist: cur.hist.minus(&prev.hist),
        rows_returned: cur.rows_returned.saturating_sub(prev.rows_returned),
        rows_affected: cur.rows_affected.saturating_sub(prev.rows_affected),
        fullscan_steps: cur.fullscan_steps.saturating_sub(prev.fullscan_steps),
        ..Default::default()
    }
}

fn kind_stat(g: &Agg) -> KindStat {
    let mut k = KindStat {
        calls: g.calls,
        errors: g.errors,
        busy: g.busy,
        timed: g.timed,
        total_ns: g.total_ns,
        rows_returned: g.rows_returned,
        rows_affected: g.rows_affected,
        fullscan_steps: g.fullscan_steps,
        ..Default::default()
    };
    exposition::add_coarse(&mut k.coarse, &g.hist);
    k
}

fn point_of(g: &Agg) -> Point {
    Point {
        calls: g.calls,
        errors: g.errors,
        busy: g.busy,
        timed: g.timed,
        total_ns: g.total_ns,
        hist: g.hist.clone(),
        rows_returned: g.rows_returned,
        rows_affected: g.rows_affected,
        ..Default::default()
    }
}

/// Growth of every live entry since the track's last round: per kind, and in
/// total; with the new `last` map.
#[allow(clippy::type_complexity)]
fn pending(
    db: &DbStats,
    t: &Track,
) -> (
    BTreeMap<String, KindStat>,
    Point,
    HashMap<u64, (Arc<Entry>, Agg)>,
) {
    let mut kinds: BTreeMap<String, KindStat> = BTreeMap::new();
    let mut total = Point::default();
    let live = db.live_entries();
    let mut last = HashMap::with_capacity(live.len());
    for e in live {
        let cur = e.stats.lock().clone();
        let g = match t.last.get(&e.meta.fingerprint) {
            Some((pe, pa)) if Arc::ptr_eq(pe, &e) => growth(&cur, pa),
            _ => growth(&cur, &Agg::default()),
        };
        if g.calls > 0 || g.errors > 0 {
            kinds
                .entry(e.meta.kind().as_str().to_string())
                .or_default()
                .add(&kind_stat(&g));
            total.add(&point_of(&g));
        }
        last.insert(e.meta.fingerprint, (e.clone(), cur));
    }
    (kinds, total, last)
}

fn sync_reset(db: &DbStats, t: &mut Track) {
    let r = db.reset_at.load(Ordering::Relaxed);
    if r != t.reset_at {
        *t = Track {
            reset_at: r,
            ..Default::default()
        };
    }
}

/// One sampling round over every database (background thread).
pub fn round() {
    let now = clock::unix_ms_now();
    let dbs = registry().databases();
    let mut all = lock(tracks());
    for db in &dbs {
        let t = all.entry(db.path.clone()).or_default();
        sync_reset(db, t);
        let (kinds, mut total, last) = pending(db, t);
        for (k, s) in kinds {
            t.cum.entry(k).or_default().add(&s);
        }
        t.last = last;
        let start = if t.last_round_ms > 0 {
            t.last_round_ms
        } else {
            now
        };
        total.start_ms = start;
        total.width_ms = (now - start).max(0);
        t.last_round_ms = now;
        t.ring.push_back(total);
        while t.ring.len() > RING_MAX_LEN
            || t.ring
                .front()
                .is_some_and(|p| now - p.start_ms > RING_MAX_AGE_MS)
        {
            t.ring.pop_front();
        }
    }
}

/// Growth of a database over the last `window_ms` (whole rounds), with the
/// time actually covered in `width_ms`; None when no round covers it yet.
pub fn window(db_path: &str, window_ms: i64) -> Option<Point> {
    let all = lock(tracks());
    let t = all.get(db_path)?;
    let end = t.last_round_ms;
    let mut p = Point::default();
    let mut first = None;
    for r in t.ring.iter().rev() {
        if end - r.start_ms > window_ms + 1 {
            break;
        }
        p.add(r);
        first = Some(r.start_ms);
    }
    let first = first?;
    p.start_ms = first;
    p.width_ms = end - first;
    Some(p)
}

/// The in-memory history of a database bucketed by `width_ms`, from `since_ms`.
pub fn live_history(db_path: &str, width_ms: i64, since_ms: i64) -> Vec<Point> {
    let all = lock(tracks());
    let Some(t) = all.get(db_path) else {
        return Vec::new();
    };
    let mut out: Vec<Point> = Vec::new();
    for r in &t.ring {
        let at = r.start_ms + r.width_ms; // the growth happened before `at`
        let b = at - at.rem_euclid(width_ms);
        if b + width_ms <= since_ms || (r.calls == 0 && r.errors == 0) {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.start_ms == b => last.add(r),
            _ => {
                let mut p = r.clone();
                p.start_ms = b;
                p.width_ms = width_ms;
                out.push(p);
            }
        }
    }
    out
}

/// QueryStat of an in-memory or stored aggregate; `unix` says whether
/// `first_seen`/`last_seen` are unix ms already (store) or stamps (memory).
pub fn query_stat(m: &Meta, a: &Agg, unix: bool) -> QueryStat {
    let conv = |v: u64| -> i64 {
        if v == 0 {
            0
        } else if unix {
            v as i64
        } else {
            clock::stamp_unix_ms(v)
        }
    };
    QueryStat {
        fingerprint: crate::normalize::fingerprint_hex(m.fingerprint),
        query: m.query.clone(),
        kind: m.kind().as_str().to_string(),
        tables: serde_json::to_string(m.tables()).unwrap_or_else(|_| "[]".into()),
        calls: a.calls,
        errors: a.errors,
        busy: a.busy,
        timed: a.timed,
        total_ns: a.total_ns,
        min_ns: a.min_ns,
        max_ns: a.max_ns,
        hist: a.hist.clone(),
        rows_returned: a.rows_returned,
        rows_affected: a.rows_affected,
        vm_steps: a.vm_steps,
        fullscan_steps: a.fullscan_steps,
        sorts: a.sorts,
        autoindexes: a.autoindexes,
        first_seen_ms: conv(a.first_seen),
        last_seen_ms: conv(a.last_seen),
        last_error: a.last_error.clone(),
    }
}

/// What is exported about one database (process scope).
pub fn db_metrics(db: &Arc<DbStats>, top_n: usize) -> DbMetrics {
    let kinds = {
        let mut all = lock(tracks());
        let t = all.entry(db.path.clone()).or_default();
        sync_reset(db, t);
        let (pend, _, _) = pending(db, t);
        let mut k = t.cum.clone();
        for (name, s) in pend {
            k.entry(name).or_default().add(&s);
        }
        k
    };
    let mut top: Vec<(Arc<Meta>, Agg)> = if top_n > 0 { db.snapshot() } else { Vec::new() };
    top.sort_by(|a, b| {
        b.1.total_ns
            .cmp(&a.1.total_ns)
            .then(b.1.calls.cmp(&a.1.calls))
            .then(a.0.fingerprint.cmp(&b.0.fingerprint))
    });
    top.truncate(top_n);
    let st = {
        let s = lock(&db.store);
        s.flushes > 0 || s.failures > 0 || s.error.is_some()
    }
    .then(|| {
        let s = lock(&db.store);
        StoreStat {
            up: s.error.is_none(),
            flushes: s.flushes,
            failures: s.failures,
            last_flush_ms: s.last_flush_ms,
            last_flush_duration_ms: s.last_flush_duration_ms,
        }
    });
    let (file, wal, free, size) = exposition::file_facts(&db.path);
    DbMetrics {
        database: db.path.clone(),
        kinds,
        top: top.iter().map(|(m, a)| query_stat(m, a, false)).collect(),
        fingerprints: Some(db.len() as u64),
        evictions: Some(db.evictions.load(Ordering::Relaxed)),
        connections_open: Some(db.connections_open.load(Ordering::Relaxed)),
        connections_peak: Some(db.connections_peak.load(Ordering::Relaxed)),
        connections_opened: Some(db.connections_opened.load(Ordering::Relaxed)),
        connections_closed: Some(db.connections_closed.load(Ordering::Relaxed)),
        store: st,
        file_bytes: file,
        wal_bytes: wal,
        fs_free_bytes: free,
        fs_size_bytes: size,
    }
}

fn sqlite_version() -> String {
    unsafe {
        let p = rusqlite::ffi::sqlite3_libversion();
        if p.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

/// The whole exposition of this process.
pub fn render() -> String {
    let top_n = config::get(Key::MetricsTopQueries).max(0) as usize;
    let dbs: Vec<DbMetrics> = registry()
        .databases()
        .iter()
        .map(|d| db_metrics(d, top_n))
        .collect();
    let r = registry();
    let g = Globals {
        version: crate::functions::VERSION.into(),
        commit: crate::functions::COMMIT.into(),
        sqlite_version: sqlite_version(),
        source: "extension",
        max_queries: Some(config::get(Key::MaxQueries) as u64),
        errors_captured: Some(r.errors_total.load(Ordering::Relaxed)),
        internal_errors: Some(r.internal_errors.load(Ordering::Relaxed)),
    };
    let mut fams = exposition::families(&g, &dbs);
    fams.extend(crate::alerts::families());
    fams.extend(module_families(&dbs));
    exposition::render(fams)
}

/// Rows of an `insights_*` table for one database (empty when the table is
/// not in this build or cannot be read: a scrape never fails for it).
fn rows_of(table: &str, db: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    match crate::serve::read_table(table, Some(db)) {
        Ok(v) => v["rows"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r.as_object().cloned()).collect())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

fn num(r: &serde_json::Map<String, serde_json::Value>, k: &str) -> Option<f64> {
    r.get(k).and_then(|v| v.as_f64())
}

fn txt<'a>(r: &'a serde_json::Map<String, serde_json::Value>, k: &str) -> &'a str {
    r.get(k).and_then(|v| v.as_str()).unwrap_or("")
}

/// Most tables/indexes given their own size series per database.
pub const MAX_TABLE_SERIES: usize = 100;

/// Families from the other modules' tables (sizes, sync, resources), read
/// through the SQL surface so that each module keeps its own rules.
fn module_families(dbs: &[DbMetrics]) -> Vec<exposition::Family> {
    use exposition::Family;
    let mut lag = Family::new(
        "sqlite_insights_sync_lag_seconds",
        "gauge",
        "Replication lag of a peer in seconds (insights_sync.lag_seconds)",
    );
    let mut stale = Family::new(
        "sqlite_insights_sync_stale",
        "gauge",
        "1 when a peer's status is stale (no progress or heartbeat within its limit)",
    );
    let mut lagpos = Family::new(
        "sqlite_insights_sync_lag_positions",
        "gauge",
        "Replication lag of a peer in positions (frames, transactions, versions)",
    );
    let mut pend = Family::new(
        "sqlite_insights_sync_pending_changes",
        "gauge",
        "Changes not yet sent to or applied by a peer",
    );
    let mut tbytes = Family::new(
        "sqlite_insights_table_size_bytes",
        "gauge",
        "Bytes used by a table or index (insights_tables; largest first, bounded)",
    );
    let mut trows = Family::new(
        "sqlite_insights_table_rows",
        "gauge",
        "Rows of a table as insights_tables last counted them",
    );
    let mut free = Family::new(
        "sqlite_insights_freelist_bytes",
        "gauge",
        "Unused pages in the database file (reclaimable by VACUUM)",
    );
    let mut cpu = Family::new(
        "sqlite_insights_process_cpu_seconds_total",
        "counter",
        "CPU time of this process (insights_resources)",
    );
    let mut rss = Family::new(
        "sqlite_insights_process_resident_memory_bytes",
        "gauge",
        "Resident memory of this process (insights_resources)",
    );
    let mut smem = Family::new(
        "sqlite_insights_sqlite_memory_bytes",
        "gauge",
        "Memory SQLite has allocated in this process (insights_resources)",
    );
    let mut hit = Family::new(
        "sqlite_insights_page_cache_hit_ratio",
        "gauge",
        "Page cache hits / lookups of this process's connections to the database",
    );
    let pid = std::process::id() as f64;
    let mut process_done = false;
    for d in dbs.iter().filter(|d| d.file_bytes.is_some()) {
        let db = d.database.as_str();
        for r in rows_of("insights_sync", db) {
            let peer = txt(&r, "peer");
            let l = [("database", db), ("peer", peer)];
            if let Some(v) = num(&r, "lag_seconds") {
                lag.push(&l, v);
            }
            if let Some(v) = num(&r, "lag_positions") {
                lagpos.push(&l, v);
            }
            if let Some(v) = num(&r, "pending_changes") {
                pend.push(&l, v);
            }
            stale.push(&l, (txt(&r, "status") == "stale") as u8 as f64);
        }
        let mut tables = rows_of("insights_tables", db);
        tables.retain(|r| txt(r, "schema").is_empty() || txt(r, "schema") == "main");
        tables.sort_by(|a, b| {
            num(b, "bytes")
                .unwrap_or(0.0)
                .partial_cmp(&num(a, "bytes").unwrap_or(0.0))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        for r in tables.iter().take(MAX_TABLE_SERIES) {
            let l = [
                ("database", db),
                ("table", txt(r, "name")),
                ("type", txt(r, "type")),
            ];
            if let Some(v) = num(r, "bytes") {
                tbytes.push(&l, v);
            }
            if let Some(v) = num(r, "rows") {
                trows.push(&[("database", db), ("table", txt(r, "name"))], v);
            }
        }
        for r in rows_of("insights_db", db) {
            if txt(&r, "schema") == "main" {
                if let Some(v) = num(&r, "freelist_bytes") {
                    free.push(&[("database", db)], v);
                }
            }
        }
        for r in rows_of("insights_resources", db) {
            if num(&r, "pid") != Some(pid) {
                continue;
            }
            if let Some(v) = num(&r, "cache_hit_ratio") {
                hit.push(&[("database", db)], v);
            }
            if !process_done {
                process_done = true;
                if let Some(v) = num(&r, "cpu_user_s") {
                    cpu.push(&[("mode", "user")], v);
                }
                if let Some(v) = num(&r, "cpu_system_s") {
                    cpu.push(&[("mode", "system")], v);
                }
                if let Some(v) = num(&r, "rss_bytes") {
                    rss.push(&[], v);
                }
                if let Some(v) = num(&r, "sqlite_memory_bytes") {
                    smem.push(&[], v);
                }
            }
        }
    }
    vec![
        lag, stale, lagpos, pend, tbytes, trows, free, cpu, rss, smem, hit,
    ]
}

pub fn register(conn: &Connection) -> Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DIRECTONLY;
    conn.create_scalar_function("insights_metrics", -1, flags, |ctx| {
        if !ctx.is_empty() {
            return Err(Error::UserFunctionError(
                format!("insights_metrics: takes 0 arguments, got {}", ctx.len()).into(),
            ));
        }
        Ok(render())
    })
}
