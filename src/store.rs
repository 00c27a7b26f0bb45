//! Store: a sidecar SQLite database per monitored database, written by a
//! background thread (and by explicit `insights_flush()`), never the user's
//! connection or file.
//!
//! Rules:
//! - Location: `<database>.insights` next to the database by default;
//!   `SQLITE_INSIGHTS_STORE_DIR=<dir>` puts every store in one directory
//!   (`<dir>/<file name>-<hash>.insights`); `SQLITE_INSIGHTS_STORE=off`
//!   disables stores; `insights_config('store_path', ...)` sets it per
//!   database. In-memory databases have no store unless one is configured.
//! - The store connection is opened on a thread marked internal, so it is never
//!   instrumented; WAL mode, busy timeout, `schema_version` in `insights_meta`.
//! - Each flush writes this process's deltas since its last successful flush
//!   in one `BEGIN IMMEDIATE` transaction: totals per fingerprint, and
//!   minute/hour/day buckets per fingerprint and per kind. Histograms are
//!   merged bucket by bucket, so percentiles of any bucket are exact merges.
//!   Many processes can flush the same store; a failed flush keeps its deltas
//!   for the next one, and a crash loses at most one interval.
//! - The flusher wakes on wall-clock multiples of the interval (so a delta
//!   never straddles a minute), and a process flushes when its last
//!   connection to a database closes.
//! - Retention: old buckets are deleted (minute 2 days, hour 30 days, day 365
//!   days by default); totals are bounded by `max_queries` (least used go).
//! - A store that cannot be opened or written never fails a user statement:
//!   the error is kept for `insights_debug()` and the next flush retries.
//! - The store mutex of a database is taken before any entry lock; the hot
//!   path never takes it.

use crate::activity::ActEntry;
use crate::clock;
use crate::config::{self, Key};
use crate::errlog;
use crate::events::EventRecord;
use crate::histogram::{self, Histogram};
use crate::normalize;
use crate::registry::{self, lock, registry, Agg, DbStats, Entry, ErrorRecord, Meta};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// Store schema version; bump with a migration in `migrate`.
pub const SCHEMA_VERSION: i64 = 1;
/// How long a flush waits for another process's flush to finish.
pub const BUSY_TIMEOUT_MS: u64 = 5_000;
/// Suffix of the default store file next to the database.
pub const STORE_SUFFIX: &str = ".insights";
/// Environment: `off` disables stores for databases without an explicit path.
pub const ENV_STORE: &str = "SQLITE_INSIGHTS_STORE";
/// Environment: directory for all stores of the process.
pub const ENV_STORE_DIR: &str = "SQLITE_INSIGHTS_STORE_DIR";
/// Retention and bound housekeeping runs every this many flushes (cheap
/// indexed deletes, but no need to run them every 10 s).
pub const HOUSEKEEPING_EVERY: u64 = 30;
/// Events kept in the store's event log.
pub const MAX_STORED_EVENTS: i64 = 10_000;

/// History rows holding the totals of one statement kind use this prefix in
/// place of a fingerprint (shown as a NULL fingerprint).
pub const KIND_PREFIX: &str = "kind:";

pub const RESOLUTIONS: [(&str, i64); 3] =
    [("minute", 60_000), ("hour", 3_600_000), ("day", 86_400_000)];

/// Per-database store state; lives in `DbStats::store`.
#[derive(Default)]
pub struct StoreState {
    /// Explicit per-database path (`insights_config('store_path', ..)`):
    /// None = default rules, Some("") = disabled.
    pub configured: Option<String>,
    conn: Option<Connection>,
    conn_path: Option<PathBuf>,
    /// Per fingerprint: the entry and its counters at our last successful flush.
    last: HashMap<u64, (Arc<Entry>, Agg)>,
    /// Per (tag key, value): the entry and its counters at our last flush.
    act_last: HashMap<(String, String), (Arc<ActEntry>, Agg)>,
    pub error: Option<String>,
    pub flushes: u64,
    pub failures: u64,
    pub last_flush_ms: i64,
    pub last_flush_duration_ms: f64,
    pub last_flush_fingerprints: usize,
}

/// The store path for a database, per the rules above; None = memory only.
pub fn resolve_path(db_path: &str, configured: Option<&str>) -> Option<PathBuf> {
    if let Some(c) = configured {
        return (!c.is_empty()).then(|| PathBuf::from(c));
    }
    if db_path == ":memory:" || db_path == registry::UNKNOWN_DB || db_path.is_empty() {
        return None;
    }
    if db_path.ends_with(STORE_SUFFIX) {
        return None; // a store opened by a user: never a store of a store
    }
    if let Ok(v) = std::env::var(ENV_STORE) {
        if v.eq_ignore_ascii_case("off") || v == "0" {
            return None;
        }
    }
    if let Ok(dir) = std::env::var(ENV_STORE_DIR) {
        if !dir.is_empty() {
            let name = Path::new(db_path)
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "db".into());
            let h = normalize::hash64(db_path.as_bytes()) as u32;
            return Some(Path::new(&dir).join(format!("{name}-{h:08x}{STORE_SUFFIX}")));
        }
    }
    Some(PathBuf::from(format!("{db_path}{STORE_SUFFIX}")))
}

thread_local! {
    static BACKGROUND: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Is this the extension's background (flusher) thread?
pub fn on_background_thread() -> bool {
    BACKGROUND.with(|b| b.get())
}

/// May a background thread of ours read the user's database file now? Only
/// in WAL mode, where a reader never blocks a writer: in rollback-journal
/// mode our shared lock could make another connection's commit wait or fail
/// with SQLITE_BUSY (an app without a busy timeout would see an error we
/// caused). Decided from the file header (bytes 18-19 are 2 in WAL mode),
/// read without any SQLite lock.
pub fn background_read_ok(db_path: &str) -> bool {
    use std::io::Read;
    let mut h = [0u8; 20];
    std::fs::File::open(db_path)
        .and_then(|mut f| f.read_exact(&mut h))
        .map(|_| h[18] == 2 && h[19] == 2)
        .unwrap_or(false)
}

/// Set (Some path / Some("") = off) or clear (None) a database's store path.
pub fn configure(db: &DbStats, configured: Option<String>) {
    let mut st = lock(&db.store);
    st.configured = configured;
    st.drop_conn();
    st.last.clear(); // the new store gets this process's whole counts
    st.error = None;
    db.has_store.store(
        resolve_path(&db.path, st.configured.as_deref()).is_some(),
        Ordering::Relaxed,
    );
}

pub fn store_path(db: &DbStats) -> Option<PathBuf> {
    let st = lock(&db.store);
    resolve_path(&db.path, st.configured.as_deref())
}

/// Run `f` with this thread marked internal (store connections are never
/// instrumented, their log lines never counted as user errors).
pub fn internal<T>(f: impl FnOnce() -> T) -> T {
    let was = errlog::is_internal_thread();
    errlog::set_internal_thread(true);
    let r = f();
    errlog::set_internal_thread(was);
    r
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    internal(|| {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        let _ = mode;
        conn.execute_batch("PRAGMA synchronous=NORMAL")?;
        conn.create_scalar_function(
            "insights_hist_merge",
            2,
            rusqlite::functions::FunctionFlags::SQLITE_UTF8
                | rusqlite::functions::FunctionFlags::SQLITE_DETERMINISTIC,
            |ctx| {
                let get = |i: usize| -> Histogram {
                    match ctx.get_raw(i) {
                        rusqlite::types::ValueRef::Text(t) => std::str::from_utf8(t)
                            .ok()
                            .and_then(Histogram::decode)
                            .unwrap_or_default(),
                        _ => Histogram::default(),
                    }
                };
                let mut a = get(0);
                a.merge(&get(1));
                Ok(a.encode())
            },
        )?;
        migrate(&conn)?;
        Ok(conn)
    })
}

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "BEGIN IMMEDIATE;
         CREATE TABLE IF NOT EXISTS insights_meta(key TEXT PRIMARY KEY, value TEXT);
         CREATE TABLE IF NOT EXISTS totals(
           fingerprint TEXT PRIMARY KEY, query TEXT, kind TEXT, tables TEXT, tags TEXT,
           calls INTEGER, errors INTEGER, busy INTEGER, timed INTEGER, total_ns INTEGER,
           min_ns INTEGER, max_ns INTEGER, sumsq_ms REAL, hist TEXT,
           rows_returned INTEGER, rows_affected INTEGER, vm_steps INTEGER,
           fullscan_steps INTEGER, sorts INTEGER, autoindexes INTEGER,
           first_seen_ms INTEGER, last_seen_ms INTEGER, last_error TEXT);
         CREATE TABLE IF NOT EXISTS history(
           resolution TEXT, bucket_start TEXT, fingerprint TEXT, kind TEXT,
           calls INTEGER, errors INTEGER, busy INTEGER, timed INTEGER, total_ns INTEGER,
           min_ns INTEGER, max_ns INTEGER, sumsq_ms REAL, hist TEXT,
           rows_returned INTEGER, rows_affected INTEGER, vm_steps INTEGER,
           fullscan_steps INTEGER, sorts INTEGER, autoindexes INTEGER,
           PRIMARY KEY(resolution, bucket_start, fingerprint)) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS history_by_fingerprint ON history(fingerprint, resolution, bucket_start);
         CREATE TABLE IF NOT EXISTS events(
           id INTEGER PRIMARY KEY, at TEXT, kind TEXT, database TEXT, pid INTEGER,
           object TEXT, statement TEXT, schema_version_before INTEGER, schema_version_after INTEGER,
           user_version_before INTEGER, user_version_after INTEGER, tags TEXT, detail TEXT);
         CREATE INDEX IF NOT EXISTS events_by_time ON events(at);
         CREATE TABLE IF NOT EXISTS activity_totals(
           key TEXT, value TEXT,
           calls INTEGER, errors INTEGER, busy INTEGER, timed INTEGER, total_ns INTEGER,
           min_ns INTEGER, max_ns INTEGER, sumsq_ms REAL, hist TEXT,
           rows_returned INTEGER, rows_affected INTEGER, vm_steps INTEGER,
           fullscan_steps INTEGER, sorts INTEGER, autoindexes INTEGER,
           first_seen_ms INTEGER, last_seen_ms INTEGER,
           PRIMARY KEY(key, value)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS activity_history(
           resolution TEXT, bucket_start TEXT, key TEXT, value TEXT,
           calls INTEGER, errors INTEGER, busy INTEGER, timed INTEGER, total_ns INTEGER,
           min_ns INTEGER, max_ns INTEGER, sumsq_ms REAL, hist TEXT,
           rows_returned INTEGER, rows_affected INTEGER, vm_steps INTEGER,
           fullscan_steps INTEGER, sorts INTEGER, autoindexes INTEGER,
           PRIMARY KEY(resolution, bucket_start, key, value)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS errors(
           id INTEGER PRIMARY KEY, at TEXT, database TEXT, pid INTEGER, fingerprint TEXT, query TEXT,
           kind TEXT, phase TEXT, code INTEGER, extended_code INTEGER, message TEXT, sample TEXT);
         CREATE TABLE IF NOT EXISTS migrations_seen(
           tool TEXT, version TEXT, first_seen_ms INTEGER, PRIMARY KEY(tool, version)) WITHOUT ROWID;
         INSERT OR IGNORE INTO insights_meta VALUES ('schema_version', '1');
         INSERT OR IGNORE INTO insights_meta VALUES ('created_at', strftime('%Y-%m-%dT%H:%M:%fZ','now'));
         COMMIT;",
    )?;
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM insights_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    match v.as_deref().and_then(|s| s.parse::<i64>().ok()) {
        Some(SCHEMA_VERSION) => Ok(()),
        other => Err(rusqlite::Error::ModuleError(format!(
            "store schema version {other:?} is not {SCHEMA_VERSION}; a newer release wrote it"
        ))),
    }
}

impl StoreState {
    /// The open connection for `path`, (re)opening when needed.
    fn conn(&mut self, path: &Path) -> rusqlite::Result<&Connection> {
        if self.conn_path.as_deref() != Some(path) {
            self.conn = None;
            self.conn_path = None;
        }
        if self.conn.is_none() {
            let c = open(path)?;
            self.conn = Some(c);
            self.conn_path = Some(path.to_path_buf());
        }
        Ok(self.conn.as_ref().expect("just opened"))
    }

    fn drop_conn(&mut self) {
        if let Some(c) = self.conn.take() {
            internal(|| drop(c));
        }
        self.conn_path = None;
    }
}

/// Counters of `cur` not yet in `prev` (same entry, later snapshot).
fn delta(cur: &Agg, prev: &Agg) -> Agg {
    let mut d = cur.clone();
    d.calls -= prev.calls.min(d.calls);
    d.errors -= prev.errors.min(d.errors);
    d.busy -= prev.busy.min(d.busy);
    d.timed -= prev.timed.min(d.timed);
    d.total_ns -= prev.total_ns.min(d.total_ns);
    d.sumsq_ms = (d.sumsq_ms - prev.sumsq_ms).max(0.0);
    d.rows_returned -= prev.rows_returned.min(d.rows_returned);
    d.rows_affected -= prev.rows_affected.min(d.rows_affected);
    d.vm_steps -= prev.vm_steps.min(d.vm_steps);
    d.fullscan_steps -= prev.fullscan_steps.min(d.fullscan_steps);
    d.sorts -= prev.sorts.min(d.sorts);
    d.autoindexes -= prev.autoindexes.min(d.autoindexes);
    d.hist = cur.hist.minus(&prev.hist);
    if d.last_error == prev.last_error {
        d.last_error = None;
    }
    // min/max/first/last seen stay cumulative: merging them again is harmless.
    d
}

/// Bucket-local min/max from the bucket's own histogram.
fn hist_bounds(h: &Histogram) -> (u64, u64) {
    let mut it = h.buckets();
    let lo = it.next().map(|(i, _)| histogram::bucket_low(i));
    let hi = h
        .buckets()
        .last()
        .map(|(i, _)| histogram::bucket_high(i).saturating_sub(1));
    (lo.unwrap_or(0), hi.unwrap_or(0))
}

const AGG_COLS: &str = "calls, errors, busy, timed, total_ns, min_ns, max_ns, sumsq_ms, hist, rows_returned, rows_affected, vm_steps, fullscan_steps, sorts, autoindexes";

fn agg_from_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Agg> {
    let g = |i: usize| -> rusqlite::Result<u64> {
        Ok(r.get::<_, Option<i64>>(at + i)?.unwrap_or(0).max(0) as u64)
    };
    let hist: Option<String> = r.get(at + 8)?;
    Ok(Agg {
        calls: g(0)?,
        errors: g(1)?,
        busy: g(2)?,
        timed: g(3)?,
        total_ns: g(4)?,
        min_ns: g(5)?,
        max_ns: g(6)?,
        sumsq_ms: r.get::<_, Option<f64>>(at + 7)?.unwrap_or(0.0),
        hist: hist
            .as_deref()
            .and_then(Histogram::decode)
            .unwrap_or_default(),
        rows_returned: g(9)?,
        rows_affected: g(10)?,
        vm_steps: g(11)?,
        fullscan_steps: g(12)?,
        sorts: g(13)?,
        autoindexes: g(14)?,
        ..Default::default()
    })
}

fn i(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// One delta ready to write.
struct Pending {
    meta: Arc<Meta>,
    delta: Agg,
}

/// Flush one database's deltas. Returns fingerprints written.
pub fn flush_db(db: &Arc<DbStats>) -> Result<usize, String> {
    let mut st = lock(&db.store);
    let Some(path) = resolve_path(&db.path, st.configured.as_deref()) else {
        return Ok(0);
    };
    db.has_store.store(true, Ordering::Relaxed);
    let started = std::time::Instant::now();
    // collect deltas: live entries and evicted ones not yet written
    let live = db.live_entries();
    let grave = db.take_graveyard();
    let mut pending = Vec::new();
    let mut new_last: HashMap<u64, (Arc<Entry>, Agg)> = HashMap::with_capacity(live.len());
    for e in grave.iter().chain(live.iter()) {
        let cur = e.stats.lock().clone();
        let prev = match st.last.get(&e.meta.fingerprint) {
            Some((pe, pa)) if Arc::ptr_eq(pe, e) => pa.clone(),
            _ => Agg::default(),
        };
        let d = delta(&cur, &prev);
        if d.calls > 0 || d.errors > 0 {
            pending.push(Pending {
                meta: e.meta.clone(),
                delta: d,
            });
        }
        if !e.is_dead() {
            new_last.insert(e.meta.fingerprint, (e.clone(), cur));
        }
    }
    // tag activity deltas
    let acts = db.activity.entries();
    let mut act_pending = Vec::new();
    let mut new_act_last = HashMap::with_capacity(acts.len());
    for a in acts {
        let cur = lock(&a.stats).clone();
        let id = (a.key.clone(), a.value.clone());
        let prev = match st.act_last.get(&id) {
            Some((pa, pagg)) if Arc::ptr_eq(pa, &a) => pagg.clone(),
            _ => Agg::default(),
        };
        let d = delta(&cur, &prev);
        if d.calls > 0 || d.errors > 0 {
            act_pending.push((id.clone(), d));
        }
        new_act_last.insert(id, (a, cur));
    }
    let events = db.events.take();
    let errors: Vec<ErrorRecord> = lock(&db.errors_pending).drain(..).collect();
    let housekeeping = st.flushes.is_multiple_of(HOUSEKEEPING_EVERY);
    let result = internal(|| -> rusqlite::Result<()> {
        let conn = st.conn(&path)?;
        if pending.is_empty()
            && act_pending.is_empty()
            && events.is_empty()
            && errors.is_empty()
            && !housekeeping
        {
            return Ok(());
        }
        write(conn, &pending, &act_pending, &events, &errors, housekeeping)
    });
    match result {
        Ok(()) => {
            st.last = new_last;
            st.act_last = new_act_last;
            st.flushes += 1;
            st.last_flush_ms = clock::unix_ms_now();
            st.last_flush_duration_ms = started.elapsed().as_secs_f64() * 1e3;
            st.last_flush_fingerprints = pending.len();
            if st.error.take().is_some() {
                drop(st);
                crate::registry::note_event(db, "store_recovered", &path.display().to_string());
            }
            Ok(pending.len())
        }
        Err(e) => {
            db.return_graveyard(grave);
            db.events.give_back(events);
            {
                let mut q = lock(&db.errors_pending);
                for e in errors.into_iter().rev() {
                    q.push_front(e);
                }
                let max = config::get(Key::MaxErrors).max(1) as usize;
                while q.len() > max {
                    q.pop_front();
                }
            }
            st.failures += 1;
            let msg = format!("{}: {e}", path.display());
            let first = st.error.is_none();
            st.error = Some(msg.clone());
            st.drop_conn();
            if first {
                drop(st);
                crate::registry::note_event(db, "store_error", &msg);
            }
            Err(msg)
        }
    }
}

type ActDelta = ((String, String), Agg);

/// Column updates shared by every upsert of counters: the stored row is
/// merged with the delta (`excluded`); histograms merge bucket by bucket in
/// `insights_hist_merge`, registered on the store connection.
const MERGE_SET: &str = "calls = calls + excluded.calls, errors = errors + excluded.errors,
    busy = busy + excluded.busy, total_ns = total_ns + excluded.total_ns,
    min_ns = CASE WHEN timed = 0 THEN excluded.min_ns WHEN excluded.timed = 0 THEN min_ns ELSE min(min_ns, excluded.min_ns) END,
    max_ns = CASE WHEN timed = 0 THEN excluded.max_ns WHEN excluded.timed = 0 THEN max_ns ELSE max(max_ns, excluded.max_ns) END,
    timed = timed + excluded.timed, sumsq_ms = sumsq_ms + excluded.sumsq_ms,
    hist = insights_hist_merge(hist, excluded.hist),
    rows_returned = rows_returned + excluded.rows_returned, rows_affected = rows_affected + excluded.rows_affected,
    vm_steps = vm_steps + excluded.vm_steps, fullscan_steps = fullscan_steps + excluded.fullscan_steps,
    sorts = sorts + excluded.sorts, autoindexes = autoindexes + excluded.autoindexes";

/// Instants merge: earliest first sight, latest last sight (unix ms).
const SEEN_SET: &str = "first_seen_ms = CASE WHEN coalesce(first_seen_ms, 0) = 0
        OR (excluded.first_seen_ms > 0 AND excluded.first_seen_ms < first_seen_ms)
      THEN excluded.first_seen_ms ELSE first_seen_ms END,
    last_seen_ms = max(coalesce(last_seen_ms, 0), excluded.last_seen_ms)";

/// The 15 AGG_COLS values of a delta for a bucket row: min/max from the
/// delta's own histogram (cumulative min/max span other buckets).
fn bucket_values(d: &Agg) -> Vec<Box<dyn rusqlite::ToSql>> {
    let mut b = d.clone();
    let (lo, hi) = hist_bounds(&d.hist);
    b.min_ns = lo;
    b.max_ns = hi;
    agg_values(&b)
}

fn to_unix(d: &Agg) -> Agg {
    let mut local = d.clone();
    local.first_seen = unix_or_zero(d.first_seen);
    local.last_seen = unix_or_zero(d.last_seen);
    local
}

fn write(
    conn: &Connection,
    pending: &[Pending],
    acts: &[ActDelta],
    events: &[EventRecord],
    errors: &[ErrorRecord],
    housekeeping: bool,
) -> rusqlite::Result<()> {
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    for e in events {
        insert_event(&tx, e)?;
    }
    if !errors.is_empty() {
        let mut ins = tx.prepare(
            "INSERT INTO errors(at, database, pid, fingerprint, query, kind, phase, code, extended_code, message, sample)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        for e in errors {
            ins.execute(params![
                clock::iso_ms(e.at_unix_ms),
                e.database,
                std::process::id() as i64,
                e.fingerprint.map(normalize::fingerprint_hex),
                e.query,
                e.kind.map(|k| k.as_str()),
                e.phase,
                e.code,
                e.extended_code,
                e.message,
                e.sample
            ])?;
        }
        drop(ins);
        tx.execute(
            "DELETE FROM errors WHERE id <= (SELECT max(id) FROM errors) - ?1",
            params![config::get(Key::MaxErrors)],
        )?;
    }
    if !acts.is_empty() {
        write_activity(&tx, acts)?;
    }
    {
        let mut put_total = tx.prepare(&format!(
            "INSERT INTO totals(fingerprint, query, kind, tables, tags, {AGG_COLS}, first_seen_ms, last_seen_ms, last_error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)
             ON CONFLICT(fingerprint) DO UPDATE SET
               query = excluded.query, kind = excluded.kind, tables = excluded.tables,
               tags = coalesce(excluded.tags, tags), last_error = coalesce(excluded.last_error, last_error),
               {MERGE_SET}, {SEEN_SET}"
        ))?;
        let mut put_hist = tx.prepare(&format!(
            "INSERT INTO history(resolution, bucket_start, fingerprint, kind, {AGG_COLS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)
             ON CONFLICT(resolution, bucket_start, fingerprint) DO UPDATE SET kind = excluded.kind, {MERGE_SET}"
        ))?;
        // per-kind totals for each bucket, keyed (resolution, bucket, kind)
        let mut kinds: HashMap<(usize, String, &'static str), Agg> = HashMap::new();
        for p in pending {
            let fp = normalize::fingerprint_hex(p.meta.fingerprint);
            let d = &p.delta;
            // stored instants are unix ms; ours are monotonic stamps
            let local = to_unix(d);
            let tables = serde_json::to_string(p.meta.tables()).unwrap_or_else(|_| "[]".into());
            let kind = p.meta.kind().as_str();
            let mut vals: Vec<Box<dyn rusqlite::ToSql>> = vec![
                Box::new(fp.clone()),
                Box::new(p.meta.query.clone()),
                Box::new(kind),
                Box::new(tables),
                Box::new(d.tags.as_deref().map(str::to_string)),
            ];
            vals.extend(agg_values(&local));
            vals.push(Box::new(i(local.first_seen)));
            vals.push(Box::new(i(local.last_seen)));
            vals.push(Box::new(d.last_error.clone()));
            put_total.execute(rusqlite::params_from_iter(vals.iter()))?;
            // buckets: the execution time of the delta's last statement
            let at_ms = if local.last_seen > 0 {
                local.last_seen as i64
            } else {
                clock::unix_ms_now()
            };
            for (ri, (res, width)) in RESOLUTIONS.iter().enumerate() {
                let bucket = clock::iso_ms(at_ms - at_ms.rem_euclid(*width));
                let mut vals: Vec<Box<dyn rusqlite::ToSql>> = vec![
                    Box::new(*res),
                    Box::new(bucket.clone()),
                    Box::new(fp.clone()),
                    Box::new(kind),
                ];
                vals.extend(bucket_values(d));
                put_hist.execute(rusqlite::params_from_iter(vals.iter()))?;
                let k = kinds.entry((ri, bucket, kind)).or_default();
                k.merge_counts(d);
            }
        }
        for ((ri, bucket, kind), d) in &kinds {
            let mut vals: Vec<Box<dyn rusqlite::ToSql>> = vec![
                Box::new(RESOLUTIONS[*ri].0),
                Box::new(bucket.clone()),
                Box::new(format!("{KIND_PREFIX}{kind}")),
                Box::new(*kind),
            ];
            vals.extend(bucket_values(d));
            put_hist.execute(rusqlite::params_from_iter(vals.iter()))?;
        }
    }
    if housekeeping {
        retention(&tx)?;
    }
    tx.commit()
}

/// Merge a delta into stored totals (instants in unix ms on both sides).
fn merge_stored(total: &mut Agg, d: &Agg) {
    let had = total.timed > 0;
    total.merge_counts(d);
    if d.timed > 0 {
        if had {
            total.min_ns = total.min_ns.min(d.min_ns);
            total.max_ns = total.max_ns.max(d.max_ns);
        } else {
            total.min_ns = d.min_ns;
            total.max_ns = d.max_ns;
        }
    }
    if d.first_seen > 0 && (total.first_seen == 0 || d.first_seen < total.first_seen) {
        total.first_seen = d.first_seen;
    }
    total.last_seen = total.last_seen.max(d.last_seen);
}

fn retention(conn: &Connection) -> rusqlite::Result<()> {
    let now = clock::unix_ms_now();
    for (res, key) in [
        ("minute", Key::RetentionMinuteDays),
        ("hour", Key::RetentionHourDays),
        ("day", Key::RetentionDayDays),
    ] {
        let cutoff = clock::iso_ms(now - config::get(key) * 86_400_000);
        conn.execute(
            "DELETE FROM history WHERE resolution = ?1 AND bucket_start < ?2",
            params![res, cutoff],
        )?;
    }
    let max = config::get(Key::MaxQueries);
    conn.execute(
        "DELETE FROM totals WHERE fingerprint IN (
           SELECT fingerprint FROM totals ORDER BY calls DESC, last_seen_ms DESC LIMIT -1 OFFSET ?1)",
        params![max],
    )?;
    conn.execute(
        "DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?1",
        params![MAX_STORED_EVENTS],
    )?;
    Ok(())
}

/// Stored totals of every fingerprint, plus this process's unflushed deltas.
/// Returns None when the database has no usable store (caller shows local).
pub fn totals_with_pending(db: &Arc<DbStats>) -> Option<Vec<(Arc<Meta>, Agg)>> {
    let mut st = lock(&db.store);
    let path = resolve_path(&db.path, st.configured.as_deref())?;
    if !path.exists() && st.conn.is_none() {
        return None; // nothing flushed yet: local view is the whole view
    }
    let rows = internal(|| -> rusqlite::Result<Vec<(Arc<Meta>, Agg)>> {
        let conn = st.conn(&path)?;
        let mut stmt = conn.prepare(&format!(
            "SELECT fingerprint, query, kind, tables, tags, first_seen_ms, last_seen_ms, last_error, {AGG_COLS} FROM totals"
        ))?;
        let rows = stmt.query_map([], |r| {
            let fp: String = r.get(0)?;
            let mut a = agg_from_row(r, 8)?;
            a.first_seen = r.get::<_, Option<i64>>(5)?.unwrap_or(0).max(0) as u64;
            a.last_seen = r.get::<_, Option<i64>>(6)?.unwrap_or(0).max(0) as u64;
            a.last_error = r.get(7)?;
            a.tags = r.get::<_, Option<String>>(4)?.map(Arc::from);
            let tables: Option<String> = r.get(3)?;
            let meta = Meta::classified(
                u64::from_str_radix(&fp, 16).unwrap_or(0),
                r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                r.get::<_, Option<String>>(2)?
                    .as_deref()
                    .and_then(crate::classify::Kind::from_str)
                    .unwrap_or(crate::classify::Kind::Other),
                tables
                    .as_deref()
                    .and_then(|t| serde_json::from_str(t).ok())
                    .unwrap_or_default(),
            );
            Ok((Arc::new(meta), a))
        })?;
        rows.collect()
    });
    let stored = match rows {
        Ok(r) => r,
        Err(e) => {
            st.error = Some(format!("{}: {e}", path.display()));
            st.drop_conn();
            return None;
        }
    };
    // stored instants are unix ms; convert to the registry's monotonic stamps
    // by carrying unix ms in a separate merge below.
    let mut by_fp: HashMap<u64, (Arc<Meta>, Agg)> = stored
        .into_iter()
        .map(|(m, a)| (m.fingerprint, (m, a)))
        .collect();
    for e in db.live_entries() {
        let cur = e.stats.lock().clone();
        let prev = match st.last.get(&e.meta.fingerprint) {
            Some((pe, pa)) if Arc::ptr_eq(pe, &e) => pa.clone(),
            _ => Agg::default(),
        };
        let mut d = delta(&cur, &prev);
        if d.calls == 0 && d.errors == 0 {
            continue;
        }
        d.first_seen = clock::stamp_unix_ms(d.first_seen) as u64;
        d.last_seen = clock::stamp_unix_ms(d.last_seen) as u64;
        let slot = by_fp
            .entry(e.meta.fingerprint)
            .or_insert_with(|| (e.meta.clone(), Agg::default()));
        let last_error = d.last_error.clone();
        let tags = d.tags.clone();
        merge_stored(&mut slot.1, &d);
        if last_error.is_some() {
            slot.1.last_error = last_error;
        }
        if tags.is_some() {
            slot.1.tags = tags;
        }
    }
    Some(by_fp.into_values().collect())
}

/// Clear the store of a database (insights_reset) and record it.
pub fn reset_store(db: &Arc<DbStats>, fingerprint: Option<u64>) -> Result<(), String> {
    let mut st = lock(&db.store);
    match fingerprint {
        None => {
            st.last.clear();
            st.act_last.clear();
        }
        Some(fp) => {
            st.last.remove(&fp);
        }
    }
    let Some(path) = resolve_path(&db.path, st.configured.as_deref()) else {
        return Ok(());
    };
    if !path.exists() && st.conn.is_none() {
        return Ok(());
    }
    let r = internal(|| -> rusqlite::Result<()> {
        let conn = st.conn(&path)?;
        let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
        match fingerprint {
            None => {
                tx.execute("DELETE FROM totals", [])?;
                tx.execute("DELETE FROM history", [])?;
            }
            Some(fp) => {
                let fp = normalize::fingerprint_hex(fp);
                tx.execute("DELETE FROM totals WHERE fingerprint = ?1", params![fp])?;
                tx.execute("DELETE FROM history WHERE fingerprint = ?1", params![fp])?;
                tx.execute("DELETE FROM errors WHERE fingerprint = ?1", params![fp])?;
            }
        }
        if fingerprint.is_none() {
            tx.execute("DELETE FROM activity_totals", [])?;
            tx.execute("DELETE FROM activity_history", [])?;
            tx.execute("DELETE FROM errors", [])?;
        }
        insert_event(
            &tx,
            &EventRecord::new(
                &db.path,
                "reset",
                &fingerprint
                    .map(normalize::fingerprint_hex)
                    .unwrap_or_else(|| "all".into()),
            ),
        )?;
        tx.commit()
    });
    r.map_err(|e| format!("{}: {e}", path.display()))
}

fn insert_event(conn: &Connection, e: &EventRecord) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO events(at, kind, database, pid, object, statement, schema_version_before, schema_version_after, user_version_before, user_version_after, tags, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            clock::iso_ms(e.at_unix_ms),
            e.kind,
            e.database,
            e.pid as i64,
            e.object,
            e.statement,
            e.schema_version_before,
            e.schema_version_after,
            e.user_version_before,
            e.user_version_after,
            e.tags,
            e.detail
        ],
    )?;
    Ok(())
}

/// Merge tag activity deltas into activity_totals and activity_history.
fn write_activity(conn: &Connection, acts: &[ActDelta]) -> rusqlite::Result<()> {
    let mut put_total = conn.prepare(&format!(
        "INSERT INTO activity_totals(key, value, {AGG_COLS}, first_seen_ms, last_seen_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)
         ON CONFLICT(key, value) DO UPDATE SET {MERGE_SET}, {SEEN_SET}"
    ))?;
    let mut put_hist = conn.prepare(&format!(
        "INSERT INTO activity_history(resolution, bucket_start, key, value, {AGG_COLS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)
         ON CONFLICT(resolution, bucket_start, key, value) DO UPDATE SET {MERGE_SET}"
    ))?;
    for ((key, value), d) in acts {
        let local = to_unix(d);
        let mut vals: Vec<Box<dyn rusqlite::ToSql>> =
            vec![Box::new(key.clone()), Box::new(value.clone())];
        vals.extend(agg_values(&local));
        vals.push(Box::new(i(local.first_seen)));
        vals.push(Box::new(i(local.last_seen)));
        put_total.execute(rusqlite::params_from_iter(vals.iter()))?;
        let at_ms = if local.last_seen > 0 {
            local.last_seen as i64
        } else {
            clock::unix_ms_now()
        };
        for (res, width) in RESOLUTIONS.iter() {
            let bucket = clock::iso_ms(at_ms - at_ms.rem_euclid(*width));
            let mut vals: Vec<Box<dyn rusqlite::ToSql>> = vec![
                Box::new(res.to_string()),
                Box::new(bucket),
                Box::new(key.clone()),
                Box::new(value.clone()),
            ];
            vals.extend(bucket_values(d));
            put_hist.execute(rusqlite::params_from_iter(vals.iter()))?;
        }
    }
    Ok(())
}

fn unix_or_zero(stamp: u64) -> u64 {
    if stamp > 0 {
        clock::stamp_unix_ms(stamp) as u64
    } else {
        0
    }
}

/// The AGG_COLS values of an Agg, in order.
fn agg_values(a: &Agg) -> Vec<Box<dyn rusqlite::ToSql>> {
    vec![
        Box::new(i(a.calls)),
        Box::new(i(a.errors)),
        Box::new(i(a.busy)),
        Box::new(i(a.timed)),
        Box::new(i(a.total_ns)),
        Box::new(i(a.min_ns)),
        Box::new(i(a.max_ns)),
        Box::new(a.sumsq_ms),
        Box::new(a.hist.encode()),
        Box::new(i(a.rows_returned)),
        Box::new(i(a.rows_affected)),
        Box::new(i(a.vm_steps)),
        Box::new(i(a.fullscan_steps)),
        Box::new(i(a.sorts)),
        Box::new(i(a.autoindexes)),
    ]
}

/// One row of `insights_history`.
pub struct HistoryRow {
    pub resolution: String,
    pub bucket_start: String,
    pub fingerprint: String,
    pub kind: String,
    pub query: Option<String>,
    pub agg: Agg,
}

/// Filters pushed down from `insights_history`.
#[derive(Default, Debug, Clone)]
pub struct HistoryFilter {
    pub resolution: Option<String>,
    pub fingerprint: Option<String>,
    /// (operator, ISO text) pairs: ">", ">=", "<", "<=", "="
    pub bucket: Vec<(&'static str, String)>,
}

pub fn read_history(db: &Arc<DbStats>, f: &HistoryFilter) -> Result<Vec<HistoryRow>, String> {
    let mut st = lock(&db.store);
    let Some(path) = resolve_path(&db.path, st.configured.as_deref()) else {
        return Ok(Vec::new());
    };
    if !path.exists() && st.conn.is_none() {
        return Ok(Vec::new());
    }
    let r = internal(|| -> rusqlite::Result<Vec<HistoryRow>> {
        let conn = st.conn(&path)?;
        let mut sql = format!(
            "SELECT h.resolution, h.bucket_start, h.fingerprint, h.kind, t.query, {} FROM history h LEFT JOIN totals t ON t.fingerprint = h.fingerprint WHERE 1",
            AGG_COLS.split(", ").map(|c| format!("h.{c}")).collect::<Vec<_>>().join(", ")
        );
        let mut args: Vec<String> = Vec::new();
        if let Some(r) = &f.resolution {
            args.push(r.clone());
            sql.push_str(&format!(" AND h.resolution = ?{}", args.len()));
        }
        if let Some(fp) = &f.fingerprint {
            args.push(fp.clone());
            sql.push_str(&format!(" AND h.fingerprint = ?{}", args.len()));
        }
        for (op, v) in &f.bucket {
            args.push(v.clone());
            sql.push_str(&format!(" AND h.bucket_start {op} ?{}", args.len()));
        }
        sql.push_str(" ORDER BY h.bucket_start, h.resolution, h.fingerprint");
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
            Ok(HistoryRow {
                resolution: r.get(0)?,
                bucket_start: r.get(1)?,
                fingerprint: {
                    let f: String = r.get(2)?;
                    if f.starts_with(KIND_PREFIX) {
                        String::new()
                    } else {
                        f
                    }
                },
                kind: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                query: r.get(4)?,
                agg: agg_from_row(r, 5)?,
            })
        })?;
        rows.collect()
    });
    r.map_err(|e| {
        let msg = format!("{}: {e}", path.display());
        st.error = Some(msg.clone());
        st.drop_conn();
        msg
    })
}

/// Run `f` on the store connection of `db` (opened on demand, thread marked
/// internal, store mutex held). For modules that keep their own tables in the
/// store (create them with `CREATE TABLE IF NOT EXISTS` in `f`). Returns None
/// when the database has no store.
pub fn with_store_conn<T>(
    db: &DbStats,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> Option<Result<T, String>> {
    let mut st = lock(&db.store);
    let path = resolve_path(&db.path, st.configured.as_deref())?;
    let r = internal(|| -> rusqlite::Result<T> {
        let conn = st.conn(&path)?;
        f(conn)
    });
    Some(r.map_err(|e| format!("{}: {e}", path.display())))
}

/// Hooks run by the background thread after each flush round (sampling of
/// sizes, resources, sync status...). Each runs under catch_unwind.
static ROUND_HOOKS: Mutex<Vec<fn()>> = Mutex::new(Vec::new());

/// Register a function the flusher calls after every flush round.
pub fn on_flush_round(f: fn()) {
    let mut v = lock(&ROUND_HOOKS);
    if !v.iter().any(|g| std::ptr::fn_addr_eq(*g, f)) {
        v.push(f);
    }
}

fn run_round_hooks() {
    let hooks: Vec<fn()> = lock(&ROUND_HOOKS).clone();
    for h in hooks {
        let _ = std::panic::catch_unwind(h);
    }
}

/// Events of a database: the store's (all processes) plus this process's
/// not yet flushed. None when the database has no store yet.
pub fn read_events(db: &Arc<DbStats>) -> Option<Result<Vec<EventRecord>, String>> {
    let mut st = lock(&db.store);
    let path = resolve_path(&db.path, st.configured.as_deref())?;
    if !path.exists() && st.conn.is_none() {
        return None;
    }
    let r = internal(|| -> rusqlite::Result<Vec<EventRecord>> {
        let conn = st.conn(&path)?;
        let mut stmt = conn.prepare(
            "SELECT at, kind, database, pid, object, statement, schema_version_before, schema_version_after,
                    user_version_before, user_version_after, tags, detail FROM events ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            let at: String = r.get(0)?;
            Ok(EventRecord {
                at_unix_ms: clock::parse_instant(&at).unwrap_or(0),
                kind: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                database: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                pid: r.get::<_, Option<i64>>(3)?.unwrap_or(0) as u32,
                object: r.get(4)?,
                statement: r.get(5)?,
                schema_version_before: r.get(6)?,
                schema_version_after: r.get(7)?,
                user_version_before: r.get(8)?,
                user_version_after: r.get(9)?,
                tags: r.get(10)?,
                detail: r.get::<_, Option<String>>(11)?.unwrap_or_default(),
            })
        })?;
        rows.collect()
    });
    let mut v = match r {
        Ok(v) => v,
        Err(e) => return Some(Err(format!("{}: {e}", path.display()))),
    };
    v.extend(db.events.peek());
    Some(Ok(v))
}

/// Failed statements of every process (the store) plus this process's not
/// yet flushed, oldest first. None when the database has no store yet.
pub fn read_errors(db: &Arc<DbStats>) -> Option<Result<Vec<ErrorRecord>, String>> {
    let mut st = lock(&db.store);
    let path = resolve_path(&db.path, st.configured.as_deref())?;
    if !path.exists() && st.conn.is_none() {
        return None;
    }
    let r = internal(|| -> rusqlite::Result<Vec<ErrorRecord>> {
        let conn = st.conn(&path)?;
        let mut stmt = conn.prepare(
            "SELECT at, database, fingerprint, query, kind, phase, code, extended_code, message, sample
               FROM errors ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            let at: String = r.get(0)?;
            let phase: Option<String> = r.get(5)?;
            Ok(ErrorRecord {
                at_unix_ms: clock::parse_instant(&at).unwrap_or(0),
                database: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                fingerprint: r
                    .get::<_, Option<String>>(2)?
                    .and_then(|f| u64::from_str_radix(&f, 16).ok()),
                query: r.get(3)?,
                kind: r
                    .get::<_, Option<String>>(4)?
                    .as_deref()
                    .and_then(crate::classify::Kind::from_str),
                phase: if phase.as_deref() == Some("prepare") {
                    "prepare"
                } else {
                    "step"
                },
                code: r.get::<_, Option<i64>>(6)?.unwrap_or(0) as i32,
                extended_code: r.get::<_, Option<i64>>(7)?.unwrap_or(0) as i32,
                message: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
                sample: r.get(9)?,
            })
        })?;
        rows.collect()
    });
    let mut v = match r {
        Ok(v) => v,
        Err(e) => return Some(Err(format!("{}: {e}", path.display()))),
    };
    v.extend(lock(&db.errors_pending).iter().cloned());
    Some(Ok(v))
}

/// Tag activity totals of all processes plus this process's unflushed
/// deltas (instants in unix ms). None when the database has no store yet.
pub fn activity_with_pending(db: &Arc<DbStats>) -> Option<Vec<((String, String), Agg)>> {
    let mut st = lock(&db.store);
    let path = resolve_path(&db.path, st.configured.as_deref())?;
    if !path.exists() && st.conn.is_none() {
        return None;
    }
    let stored = internal(|| -> rusqlite::Result<Vec<((String, String), Agg)>> {
        let conn = st.conn(&path)?;
        let mut stmt = conn.prepare(&format!(
            "SELECT key, value, first_seen_ms, last_seen_ms, {AGG_COLS} FROM activity_totals"
        ))?;
        let rows = stmt.query_map([], |r| {
            let mut a = agg_from_row(r, 4)?;
            a.first_seen = r.get::<_, Option<i64>>(2)?.unwrap_or(0).max(0) as u64;
            a.last_seen = r.get::<_, Option<i64>>(3)?.unwrap_or(0).max(0) as u64;
            Ok(((r.get(0)?, r.get(1)?), a))
        })?;
        rows.collect()
    });
    let stored = match stored {
        Ok(s) => s,
        Err(e) => {
            st.error = Some(format!("{}: {e}", path.display()));
            st.drop_conn();
            return None;
        }
    };
    let mut by: HashMap<(String, String), Agg> = stored.into_iter().collect();
    for a in db.activity.entries() {
        let id = (a.key.clone(), a.value.clone());
        let cur = lock(&a.stats).clone();
        let prev = match st.act_last.get(&id) {
            Some((pa, pagg)) if Arc::ptr_eq(pa, &a) => pagg.clone(),
            _ => Agg::default(),
        };
        let mut d = delta(&cur, &prev);
        if d.calls == 0 && d.errors == 0 {
            continue;
        }
        d.first_seen = unix_or_zero(d.first_seen);
        d.last_seen = unix_or_zero(d.last_seen);
        merge_stored(by.entry(id).or_default(), &d);
    }
    Some(by.into_iter().collect())
}

/// One bucket of tag activity.
pub struct ActivityBucket {
    pub resolution: String,
    pub bucket_start: String,
    pub key: String,
    pub value: String,
    pub agg: Agg,
}

/// Tag activity per time bucket of one resolution, oldest first.
pub fn read_activity_history(
    db: &Arc<DbStats>,
    resolution: &str,
) -> Result<Vec<ActivityBucket>, String> {
    let mut st = lock(&db.store);
    let Some(path) = resolve_path(&db.path, st.configured.as_deref()) else {
        return Ok(Vec::new());
    };
    if !path.exists() && st.conn.is_none() {
        return Ok(Vec::new());
    }
    let r = internal(|| -> rusqlite::Result<Vec<ActivityBucket>> {
        let conn = st.conn(&path)?;
        let mut stmt = conn.prepare(&format!(
            "SELECT resolution, bucket_start, key, value, {AGG_COLS} FROM activity_history
              WHERE resolution = ?1 ORDER BY bucket_start, key, value"
        ))?;
        let rows = stmt.query_map(params![resolution], |r| {
            Ok(ActivityBucket {
                resolution: r.get(0)?,
                bucket_start: r.get(1)?,
                key: r.get(2)?,
                value: r.get(3)?,
                agg: agg_from_row(r, 4)?,
            })
        })?;
        rows.collect()
    });
    r.map_err(|e| format!("{}: {e}", path.display()))
}

/// Record migration versions seen now; returns first_seen (unix ms) of each
/// (tool, version) from the store. None when the database has no store.
/// First sight (unix ms) per (tool, version).
pub type FirstSeen = HashMap<(String, String), i64>;

pub fn migrations_seen(
    db: &Arc<DbStats>,
    seen: &[(String, String)],
) -> Option<Result<FirstSeen, String>> {
    let mut st = lock(&db.store);
    let path = resolve_path(&db.path, st.configured.as_deref())?;
    let now = clock::unix_ms_now();
    let r = internal(|| -> rusqlite::Result<FirstSeen> {
        let conn = st.conn(&path)?;
        let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
        {
            let mut ins = tx.prepare(
                "INSERT OR IGNORE INTO migrations_seen(tool, version, first_seen_ms) VALUES (?1, ?2, ?3)",
            )?;
            for (tool, version) in seen {
                ins.execute(params![tool, version, now])?;
            }
        }
        let mut out = HashMap::new();
        {
            let mut q = tx.prepare("SELECT tool, version, first_seen_ms FROM migrations_seen")?;
            let rows = q.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?;
            for row in rows {
                let (k, v) = row?;
                out.insert(k, v);
            }
        }
        tx.commit()?;
        Ok(out)
    });
    Some(r.map_err(|e| format!("{}: {e}", path.display())))
}

// ---------------------------------------------------------------- flusher

struct Flusher {
    wake: Condvar,
    stop: Mutex<bool>,
}

fn flusher() -> &'static Flusher {
    static F: OnceLock<Flusher> = OnceLock::new();
    F.get_or_init(|| Flusher {
        wake: Condvar::new(),
        stop: Mutex::new(false),
    })
}

static STARTED: AtomicBool = AtomicBool::new(false);
pub static FLUSH_ROUNDS: AtomicU64 = AtomicU64::new(0);

/// Start the background flusher once per process.
pub fn start_flusher() {
    if STARTED.swap(true, Ordering::SeqCst) {
        return;
    }
    let r = std::thread::Builder::new()
        .name("insights-flush".into())
        .stack_size(crate::classify::PARSE_STACK_BYTES)
        .spawn(|| {
            errlog::set_internal_thread(true);
            crate::classify::mark_big_stack_thread();
            BACKGROUND.with(|b| b.set(true));
            loop {
                let interval = config::get(Key::FlushIntervalMs).max(1);
                let now = clock::unix_ms_now();
                // wake on wall-clock multiples of the interval
                let wait = (interval - now.rem_euclid(interval)).max(1) as u64;
                let f = flusher();
                let guard = lock(&f.stop);
                let (guard, _) = f
                    .wake
                    .wait_timeout(guard, Duration::from_millis(wait))
                    .unwrap_or_else(|e| e.into_inner());
                if *guard {
                    return;
                }
                drop(guard);
                let _ = std::panic::catch_unwind(flush_all);
                clock::recalibrate();
                run_round_hooks();
                FLUSH_ROUNDS.fetch_add(1, Ordering::Relaxed);
            }
        });
    if r.is_err() {
        STARTED.store(false, Ordering::SeqCst);
    }
}

/// Wake the flusher so a changed interval takes effect.
pub fn nudge() {
    flusher().wake.notify_all();
}

/// Flush every database with a store. Returns fingerprints written.
pub fn flush_all() -> usize {
    let mut n = 0;
    for db in registry().databases() {
        if let Ok(k) = flush_db(&db) {
            n += k;
        }
    }
    n
}
