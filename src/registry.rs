//! Registry: the in-memory aggregates, per database and per fingerprint.
//!
//! Rules:
//! - One `DbStats` per monitored database file (`:memory:` for in-memory ones),
//!   holding at most `max_queries` fingerprints. When full, the least used
//!   5% (by calls, then last use) are evicted in one batch, like
//!   pg_stat_statements, and `evictions` counts them.
//! - An `Entry` is shared (`Arc`) with the per-connection statement caches; its
//!   counters sit behind their own small mutex that is held only for the few
//!   additions of one statement (never while calling into SQLite).
//! - Evicting or resetting an entry marks it `dead`; a connection that still
//!   holds it re-registers the fingerprint on its next update, so no
//!   execution after a reset is lost and none before it is counted again.
//! - Locks are taken in one order: registry map -> db map -> entry; the error
//!   ring is taken alone.

use crate::classify::{self, Classified, Kind};
use crate::clock;
use crate::config::{self, Key};
use crate::histogram::Histogram;
use crate::normalize;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Share of `max_queries` evicted in one batch (pg_stat_statements uses 5%).
pub const EVICT_FRACTION: f64 = 0.05;
/// Bytes of a failed statement's raw SQL kept as a sample when sampling is on.
pub const MAX_SAMPLE_BYTES: usize = 4096;
/// Bytes of an error message kept (SQLite's own log lines are < 210 bytes).
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;
/// Name used when an error cannot be tied to a database.
pub const UNKNOWN_DB: &str = "unknown";

/// Lock a mutex, recovering from poisoning (a panic elsewhere must not stop
/// monitoring: the data is plain counters).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Spins before yielding the CPU to a preempted holder.
const SPIN_LIMIT: u32 = 100;

/// A spinlock for one fingerprint's counters, as pg_stat_statements keeps
/// per entry: the hot path holds it for a few dozen instructions, readers
/// for one copy. Unlocking is a plain release store, so an execution pays
/// one locked instruction instead of std `Mutex`'s two. No poisoning: a
/// panic inside leaves the counters as far as they got.
pub struct SpinMutex<T> {
    locked: AtomicBool,
    value: std::cell::UnsafeCell<T>,
}

// SAFETY: the value is only reached through a guard, and one guard exists
// at a time (acquire/release on `locked`).
unsafe impl<T: Send> Sync for SpinMutex<T> {}
unsafe impl<T: Send> Send for SpinMutex<T> {}

pub struct SpinGuard<'a, T> {
    m: &'a SpinMutex<T>,
}

impl<T> SpinMutex<T> {
    pub fn new(value: T) -> Self {
        SpinMutex {
            locked: AtomicBool::new(false),
            value: std::cell::UnsafeCell::new(value),
        }
    }

    #[inline]
    pub fn lock(&self) -> SpinGuard<'_, T> {
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        SpinGuard { m: self }
    }

    #[cold]
    fn lock_contended(&self) {
        let mut spins = 0u32;
        loop {
            while self.locked.load(Ordering::Relaxed) {
                if spins < SPIN_LIMIT {
                    std::hint::spin_loop();
                    spins += 1;
                } else {
                    std::thread::yield_now();
                }
            }
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }
}

impl<T> std::ops::Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.m.value.get() }
    }
}

impl<T> std::ops::DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock.
        unsafe { &mut *self.m.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.m.locked.store(false, Ordering::Release);
    }
}

/// What a fingerprint is: fixed at first sight.
///
/// At first sight (on the user's thread) only the cheap keyword/token scan
/// runs (`fast`); the sqlparser classification (`full`, ~0.1 ms because it
/// parses on a thread with a large stack) runs once, later, off the hot path:
/// when a reader or the flusher first asks for `kind()`/`tables()`.
#[derive(Debug)]
pub struct Meta {
    pub fingerprint: u64,
    pub query: String,
    pub fast: Classified,
    full: OnceLock<Classified>,
    /// Whether runs of this statement are events (schema change...).
    pub event: Option<crate::events::EventClass>,
}

impl Meta {
    pub fn new(fingerprint: u64, query: String) -> Meta {
        let fast = classify::classify_fast(&query);
        let event = crate::events::classify_event(&query, &fast);
        Meta {
            fingerprint,
            query,
            fast,
            full: OnceLock::new(),
            event,
        }
    }

    /// A meta read back from the store, already classified.
    pub fn classified(fingerprint: u64, query: String, kind: Kind, tables: Vec<String>) -> Meta {
        let c = Classified {
            kind,
            tables,
            parsed: true,
        };
        Meta {
            fingerprint,
            query,
            fast: c.clone(),
            full: OnceLock::from(c),
            event: None,
        }
    }

    fn full(&self) -> &Classified {
        self.full.get_or_init(|| classify::classify(&self.query))
    }

    /// Statement kind (sqlparser's when it parses).
    pub fn kind(&self) -> Kind {
        self.full().kind
    }

    /// Tables touched (sqlparser's when it parses).
    pub fn tables(&self) -> &[String] {
        &self.full().tables
    }
}

/// Counters of one fingerprint.
#[derive(Clone, Debug, Default)]
pub struct Agg {
    pub calls: u64,
    pub errors: u64,
    /// Executions with a measured duration (prepare failures have none).
    pub timed: u64,
    pub total_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    /// Sum of squared durations in ms^2, for the standard deviation.
    pub sumsq_ms: f64,
    pub hist: Histogram,
    pub rows_returned: u64,
    pub rows_affected: u64,
    pub vm_steps: u64,
    pub fullscan_steps: u64,
    pub sorts: u64,
    pub autoindexes: u64,
    pub busy: u64,
    pub first_seen: u64,
    pub last_seen: u64,
    pub last_error: Option<String>,
    pub tags: Option<Arc<str>>,
}

impl Agg {
    /// Add the additive counters and the histogram of `o` (not min/max,
    /// instants, last_error or tags).
    pub fn merge_counts(&mut self, o: &Agg) {
        self.calls += o.calls;
        self.errors += o.errors;
        self.timed += o.timed;
        self.total_ns += o.total_ns;
        self.sumsq_ms += o.sumsq_ms;
        self.hist.merge(&o.hist);
        self.rows_returned += o.rows_returned;
        self.rows_affected += o.rows_affected;
        self.vm_steps += o.vm_steps;
        self.fullscan_steps += o.fullscan_steps;
        self.sorts += o.sorts;
        self.autoindexes += o.autoindexes;
        self.busy += o.busy;
    }

    pub fn merge(&mut self, o: &Agg) {
        if o.calls == 0 && o.errors == 0 {
            return;
        }
        if self.timed == 0 {
            self.min_ns = o.min_ns;
            self.max_ns = o.max_ns;
        } else if o.timed > 0 {
            self.min_ns = self.min_ns.min(o.min_ns);
            self.max_ns = self.max_ns.max(o.max_ns);
        }
        if self.first_seen == 0 || (o.first_seen != 0 && o.first_seen < self.first_seen) {
            self.first_seen = o.first_seen;
        }
        if o.last_seen >= self.last_seen {
            self.last_seen = o.last_seen;
            if o.last_error.is_some() {
                self.last_error = o.last_error.clone();
            }
            if o.tags.is_some() {
                self.tags = o.tags.clone();
            }
        }
        self.merge_counts(o);
    }

    /// Add one timed execution.
    #[inline(always)]
    pub fn add_exec(&mut self, e: &Exec) {
        if self.timed == 0 {
            self.min_ns = e.duration_ns;
            self.max_ns = e.duration_ns;
        } else {
            self.min_ns = self.min_ns.min(e.duration_ns);
            self.max_ns = self.max_ns.max(e.duration_ns);
        }
        // runs can arrive out of order (first runs digested in the
        // background land after later runs recorded in place)
        let at = e.at.max(1);
        // first_seen 0 (never) wraps to the largest value: one compare
        if at <= self.first_seen.wrapping_sub(1) {
            self.first_seen = at;
        }
        self.last_seen = self.last_seen.max(at);
        self.calls += 1;
        self.timed += 1;
        self.total_ns += e.duration_ns;
        // through i64: one conversion instruction (durations are < 2^63 ns)
        let ms = (e.duration_ns as i64) as f64 * 1e-6;
        self.sumsq_ms += ms * ms;
        self.hist.record(e.duration_ns);
        self.rows_returned += e.rows_returned;
        self.rows_affected += e.rows_affected;
        self.vm_steps += e.vm_steps;
        self.fullscan_steps += e.fullscan_steps;
        self.sorts += e.sorts;
        self.autoindexes += e.autoindexes;
    }

    pub fn mean_ms(&self) -> Option<f64> {
        (self.timed > 0).then(|| self.total_ns as f64 / 1e6 / self.timed as f64)
    }

    pub fn stddev_ms(&self) -> Option<f64> {
        let n = self.timed as f64;
        let mean = self.mean_ms()?;
        Some((self.sumsq_ms / n - mean * mean).max(0.0).sqrt())
    }

    /// Quantile in ms, clamped to the observed min/max.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let v = self.hist.quantile(q)?;
        let v = v.clamp(self.min_ns as f64, self.max_ns as f64);
        Some(v / 1e6)
    }
}

/// One execution's measurements, as the capture hot path hands them over.
#[derive(Clone, Copy, Default)]
pub struct Exec {
    pub duration_ns: u64,
    pub at: u64,
    pub rows_returned: u64,
    pub rows_affected: u64,
    pub vm_steps: u64,
    pub fullscan_steps: u64,
    pub sorts: u64,
    pub autoindexes: u64,
}

impl Exec {
    /// A run between TSC ticks `start` and `end` with its rows returned and
    /// counter deltas (VM steps, full-scan steps, sorts, automatic indexes);
    /// rows affected are the caller's to set.
    #[inline]
    pub fn of_run(start: u64, end: u64, rows: u64, counters: [u64; 4]) -> Exec {
        let (duration_ns, at) = clock::run_span(start, end);
        Exec {
            duration_ns,
            at,
            rows_returned: rows,
            rows_affected: 0,
            vm_steps: counters[0],
            fullscan_steps: counters[1],
            sorts: counters[2],
            autoindexes: counters[3],
        }
    }
}

/// Hasher for keys that are already spread out (fingerprints are FNV-1a 64,
/// stmt pointers are heap addresses): one multiply instead of SipHash.
#[derive(Default)]
pub struct KeyHasher(u64);
impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ *b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ (v >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

/// Fingerprint → entry.
pub type EntryMap = HashMap<u64, Arc<Entry>, std::hash::BuildHasherDefault<KeyHasher>>;

pub struct Entry {
    pub meta: Arc<Meta>,
    pub stats: SpinMutex<Agg>,
    dead: AtomicBool,
}

impl Entry {
    fn new(meta: Arc<Meta>) -> Self {
        Entry {
            meta,
            stats: SpinMutex::new(Agg::default()),
            dead: AtomicBool::new(false),
        }
    }

    #[inline]
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    /// `record` without tags (the hot path's common case).
    #[inline(always)]
    pub fn record_plain(&self, e: &Exec) {
        self.stats.lock().add_exec(e);
    }

    /// Record a completed execution (hot path: no allocation, one short lock).
    #[inline]
    pub fn record(&self, e: &Exec, tags: Option<&Arc<str>>) {
        let mut s = self.stats.lock();
        s.add_exec(e);
        if let Some(t) = tags {
            if s.tags.as_ref().is_none_or(|old| !Arc::ptr_eq(old, t)) {
                s.tags = Some(t.clone());
            }
        }
    }

    /// Record a failed execution. `timed` is None for prepare failures.
    pub fn record_error(&self, e: Option<&Exec>, message: &str, busy: bool) {
        if let Some(e) = e {
            self.record(e, None);
        }
        let mut s = self.stats.lock();
        if e.is_none() {
            let now = clock::now_stamp().max(1);
            s.calls += 1;
            if s.first_seen == 0 {
                s.first_seen = now;
            }
            s.last_seen = s.last_seen.max(now);
        }
        s.errors += 1;
        if busy {
            s.busy += 1;
        }
        s.last_error = Some(truncate(message, MAX_ERROR_MESSAGE_BYTES).to_string());
    }
}

pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Aggregates of one database file.
pub struct DbStats {
    pub path: String,
    entries: Mutex<EntryMap>,
    pub evictions: AtomicU64,
    pub connections_open: AtomicU64,
    pub connections_opened: AtomicU64,
    pub connections_closed: AtomicU64,
    pub connections_peak: AtomicU64,
    pub reset_at: AtomicU64,
    /// Sidecar store state (see store.rs); never taken on the hot path.
    pub store: Mutex<crate::store::StoreState>,
    /// True when this database has (or may have) a store: evicted entries
    /// then wait in `graveyard` until their last delta is flushed.
    pub has_store: AtomicBool,
    graveyard: Mutex<Vec<Arc<Entry>>>,
    /// Events waiting for the store.
    pub events: crate::events::EventQueue,
    /// Failed statements waiting for the store (bounded by max_errors).
    pub errors_pending: Mutex<VecDeque<ErrorRecord>>,
    /// Tag activity of this database.
    pub activity: crate::activity::ActRegistry,
}

impl DbStats {
    fn new(path: String) -> Self {
        DbStats {
            entries: Mutex::new(EntryMap::default()),
            evictions: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            connections_opened: AtomicU64::new(0),
            connections_closed: AtomicU64::new(0),
            connections_peak: AtomicU64::new(0),
            reset_at: AtomicU64::new(0),
            has_store: AtomicBool::new(crate::store::resolve_path(&path, None).is_some()),
            store: Mutex::new(crate::store::StoreState::default()),
            graveyard: Mutex::new(Vec::new()),
            events: Default::default(),
            errors_pending: Mutex::new(VecDeque::new()),
            activity: Default::default(),
            path,
        }
    }

    /// The live entry for a normalized statement, creating it (and classifying
    /// the statement once) when new. Evicts a batch first when full.
    pub fn entry_for(&self, fingerprint: u64, normalized: &str) -> Arc<Entry> {
        if let Some(e) = lock(&self.entries).get(&fingerprint) {
            return e.clone();
        }
        let meta = Arc::new(Meta::new(fingerprint, truncate_query(normalized)));
        self.insert_meta(meta)
    }

    /// Re-register a fingerprint whose entry died (eviction or reset).
    pub fn revive(&self, meta: &Arc<Meta>) -> Arc<Entry> {
        if let Some(e) = lock(&self.entries).get(&meta.fingerprint) {
            return e.clone();
        }
        self.insert_meta(meta.clone())
    }

    fn insert_meta(&self, meta: Arc<Meta>) -> Arc<Entry> {
        let max = config::get(Key::MaxQueries).max(1) as usize;
        let mut map = lock(&self.entries);
        if let Some(e) = map.get(&meta.fingerprint) {
            return e.clone();
        }
        if map.len() >= max {
            let gone = evict_batch(&mut map, max);
            self.evicted(gone);
        }
        let e = Arc::new(Entry::new(meta.clone()));
        map.insert(meta.fingerprint, e.clone());
        e
    }

    pub fn len(&self) -> usize {
        crate::digest::drain();
        lock(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A consistent copy of every entry's meta and counters.
    pub fn snapshot(&self) -> Vec<(Arc<Meta>, Agg)> {
        crate::digest::drain();
        let entries: Vec<Arc<Entry>> = lock(&self.entries).values().cloned().collect();
        entries
            .into_iter()
            .map(|e| {
                let a = e.stats.lock().clone();
                (e.meta.clone(), a)
            })
            .filter(|(_, a)| a.calls > 0 || a.errors > 0)
            .collect()
    }

    /// Remove every entry (or one fingerprint); returns how many were removed.
    pub fn reset(&self, fingerprint: Option<u64>) -> usize {
        // runs that finished before the reset are digested before it
        crate::digest::drain();
        let mut map = lock(&self.entries);
        let removed: Vec<Arc<Entry>> = match fingerprint {
            None => map.drain().map(|(_, e)| e).collect(),
            Some(fp) => map.remove(&fp).into_iter().collect(),
        };
        drop(map);
        for e in &removed {
            e.dead.store(true, Ordering::Relaxed);
        }
        if fingerprint.is_none() {
            self.evictions.store(0, Ordering::Relaxed);
            self.reset_at.store(clock::now_stamp(), Ordering::Relaxed);
        }
        removed.len()
    }

    /// Enforce a lowered max_queries now.
    pub fn trim(&self) {
        let max = config::get(Key::MaxQueries).max(1) as usize;
        let mut map = lock(&self.entries);
        while map.len() > max {
            let gone = evict_batch(&mut map, max);
            if gone.is_empty() {
                break;
            }
            self.evicted(gone);
        }
    }

    fn evicted(&self, gone: Vec<Arc<Entry>>) {
        self.evictions
            .fetch_add(gone.len() as u64, Ordering::Relaxed);
        if self.has_store.load(Ordering::Relaxed) {
            lock(&self.graveyard).extend(gone);
        }
    }

    /// Live entries (for the flusher and readers).
    pub fn live_entries(&self) -> Vec<Arc<Entry>> {
        crate::digest::drain();
        lock(&self.entries).values().cloned().collect()
    }

    /// Evicted entries whose last delta is not yet flushed.
    pub fn take_graveyard(&self) -> Vec<Arc<Entry>> {
        std::mem::take(&mut *lock(&self.graveyard))
    }

    /// Give back evicted entries after a failed flush.
    pub fn return_graveyard(&self, mut v: Vec<Arc<Entry>>) {
        let max = config::get(Key::MaxQueries).max(1) as usize;
        let mut g = lock(&self.graveyard);
        g.append(&mut v);
        // bounded: a store down for long keeps at most max_queries of them
        let excess = g.len().saturating_sub(max);
        g.drain(..excess);
    }
}

fn truncate_query(normalized: &str) -> String {
    if normalized.len() <= normalize::MAX_QUERY_TEXT_BYTES {
        return normalized.to_string();
    }
    let mut s = truncate(normalized, normalize::MAX_QUERY_TEXT_BYTES).to_string();
    s.push('…');
    s
}

/// Evict the least used entries so that at most `max` remain after one more
/// insertion; always at least EVICT_FRACTION of max. Returns them.
fn evict_batch(map: &mut EntryMap, max: usize) -> Vec<Arc<Entry>> {
    let batch = ((max as f64 * EVICT_FRACTION).ceil() as usize).max(1);
    let want = (map.len() + 1)
        .saturating_sub(max)
        .max(batch)
        .min(map.len());
    if want == 0 {
        return Vec::new();
    }
    let mut usage: Vec<(u64, u64, u64)> = map
        .iter()
        .map(|(fp, e)| {
            let s = e.stats.lock();
            (s.calls, s.last_seen, *fp)
        })
        .collect();
    usage.select_nth_unstable(want - 1);
    let mut gone = Vec::with_capacity(want);
    for (_, _, fp) in &usage[..want] {
        if let Some(e) = map.remove(fp) {
            e.dead.store(true, Ordering::Relaxed);
            gone.push(e);
        }
    }
    gone
}

/// One failed statement, for `insights_errors`.
#[derive(Clone, Debug)]
pub struct ErrorRecord {
    pub at_unix_ms: i64,
    pub database: String,
    pub fingerprint: Option<u64>,
    pub query: Option<String>,
    pub kind: Option<Kind>,
    pub code: i32,
    pub extended_code: i32,
    pub message: String,
    pub phase: &'static str,
    pub sample: Option<String>,
}

pub struct Registry {
    dbs: Mutex<HashMap<String, Arc<DbStats>>>,
    errors: Mutex<VecDeque<ErrorRecord>>,
    pub errors_total: AtomicU64,
    /// Panics caught inside the extension (never raised into statements).
    pub internal_errors: AtomicU64,
}

pub fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Registry {
        dbs: Mutex::new(HashMap::new()),
        errors: Mutex::new(VecDeque::new()),
        errors_total: AtomicU64::new(0),
        internal_errors: AtomicU64::new(0),
    })
}

impl Registry {
    pub fn db(&self, path: &str) -> Arc<DbStats> {
        let mut m = lock(&self.dbs);
        if let Some(d) = m.get(path) {
            return d.clone();
        }
        let d = Arc::new(DbStats::new(path.to_string()));
        m.insert(path.to_string(), d.clone());
        d
    }

    pub fn databases(&self) -> Vec<Arc<DbStats>> {
        let mut v: Vec<_> = lock(&self.dbs).values().cloned().collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }

    pub fn push_error(&self, rec: ErrorRecord) {
        self.errors_total.fetch_add(1, Ordering::Relaxed);
        let max = config::get(Key::MaxErrors).max(1) as usize;
        let db = self.db(&rec.database);
        if db.has_store.load(Ordering::Relaxed) {
            let mut q = lock(&db.errors_pending);
            while q.len() >= max {
                q.pop_front();
            }
            q.push_back(rec.clone());
        }
        let mut q = lock(&self.errors);
        while q.len() >= max {
            q.pop_front();
        }
        q.push_back(rec);
    }

    pub fn errors(&self) -> Vec<ErrorRecord> {
        lock(&self.errors).iter().cloned().collect()
    }

    pub fn trim_errors(&self) {
        let max = config::get(Key::MaxErrors).max(1) as usize;
        let mut q = lock(&self.errors);
        while q.len() > max {
            q.pop_front();
        }
    }

    /// Reset everything, or one fingerprint everywhere, in memory and in the
    /// stores. Returns entries removed from memory; store errors are noted.
    pub fn reset(&self, fingerprint: Option<u64>) -> usize {
        let mut n = 0;
        for d in self.databases() {
            n += d.reset(fingerprint);
            let detail = fingerprint
                .map(normalize::fingerprint_hex)
                .unwrap_or_else(|| "all".into());
            if fingerprint.is_none() {
                d.activity.clear();
            }
            match fingerprint {
                None => lock(&d.errors_pending).clear(),
                Some(fp) => lock(&d.errors_pending).retain(|e| e.fingerprint != Some(fp)),
            }
            crate::events::record_memory(crate::events::EventRecord::new(
                &d.path, "reset", &detail,
            ));
            if let Err(e) = crate::store::reset_store(&d, fingerprint) {
                let mut st = lock(&d.store);
                st.error = Some(e);
            }
        }
        let mut q = lock(&self.errors);
        match fingerprint {
            None => q.clear(),
            Some(fp) => q.retain(|e| e.fingerprint != Some(fp)),
        }
        n
    }
}

/// Normalize + register + count a statement that failed before it ran
/// (prepare errors seen only through the error log).
pub fn record_prepare_error(db: &DbStats, sql: &str, code: i32, message: &str) {
    let n = normalize::normalize(sql.as_bytes());
    let e = db.entry_for(n.fingerprint, &n.text);
    e.record_error(None, message, false);
    registry().push_error(ErrorRecord {
        at_unix_ms: clock::unix_ms_now(),
        database: db.path.clone(),
        fingerprint: Some(n.fingerprint),
        query: Some(e.meta.query.clone()),
        kind: Some(e.meta.fast.kind),
        code: code & 0xff,
        extended_code: code,
        message: truncate(message, MAX_ERROR_MESSAGE_BYTES).to_string(),
        phase: "prepare",
        sample: (config::get(Key::SampleRawSql) != 0)
            .then(|| truncate(sql, MAX_SAMPLE_BYTES).to_string()),
    });
}

/// Record an event in memory and in the database's store (at its next flush).
pub fn note_event(db: &Arc<DbStats>, kind: &str, detail: &str) {
    crate::events::record(db, crate::events::EventRecord::new(&db.path, kind, detail));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(ns: u64) -> Exec {
        Exec {
            duration_ns: ns,
            at: 10,
            rows_returned: 1,
            ..Default::default()
        }
    }

    #[test]
    fn eviction_is_bounded_and_counted() {
        // own DbStats so that the global config default (5000) applies
        let d = DbStats::new("t".into());
        let hot = d.entry_for(1, "SELECT hot");
        for _ in 0..10 {
            hot.record(&exec(1000), None);
        }
        for fp in 2..20_000u64 {
            let e = d.entry_for(fp, "SELECT ?");
            e.record(&exec(500), None);
            assert!(d.len() <= DEFAULT_MAX);
        }
        assert!(d.evictions.load(Ordering::Relaxed) >= 20_000 - DEFAULT_MAX as u64 - 1);
        // the hot entry survived: it is used more than everything else
        assert!(!hot.is_dead());
        assert!(lock(&d.entries).contains_key(&1));
    }
    const DEFAULT_MAX: usize = config::DEFAULT_MAX_QUERIES as usize;

    #[test]
    fn evict_batch_takes_five_percent_least_used() {
        let mut map = EntryMap::default();
        for fp in 0..100u64 {
            let e = Arc::new(Entry::new(Arc::new(Meta::new(fp, "SELECT 1".into()))));
            for _ in 0..fp {
                e.record(&exec(1), None);
            }
            map.insert(fp, e);
        }
        let n = evict_batch(&mut map, 100).len();
        assert_eq!(n, 5);
        for fp in 0..5 {
            assert!(!map.contains_key(&fp), "fp {fp} should be evicted");
        }
        assert_eq!(map.len(), 95);
    }

    #[test]
    fn runs_arriving_out_of_order_keep_first_and_last_seen() {
        // a first run digested in the background lands after later runs
        let mut a = Agg::default();
        for at in [200, 300, 100, 250] {
            let mut e = exec(1_000);
            e.at = at;
            a.add_exec(&e);
        }
        assert_eq!((a.first_seen, a.last_seen, a.calls), (100, 300, 4));
    }

    #[test]
    fn spin_mutex_is_exclusive_under_contention() {
        // 4 threads x 50k increments of two fields that must stay equal:
        // a lost update or a torn pair would show
        let m = Arc::new(SpinMutex::new((0u64, 0u64)));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..50_000 {
                        let mut g = m.lock();
                        assert_eq!(g.0, g.1);
                        g.0 += 1;
                        g.1 += 1;
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(*m.lock(), (200_000, 200_000));
        // a panic while holding it releases it
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock();
            panic!("inside");
        })
        .join();
        assert_eq!(m.lock().0, 200_000);
    }

    #[test]
    fn reset_marks_dead_and_revive_works() {
        let d = DbStats::new("t2".into());
        let e = d.entry_for(7, "SELECT 1");
        e.record(&exec(10), None);
        assert_eq!(d.reset(None), 1);
        assert!(e.is_dead());
        let e2 = d.revive(&e.meta);
        assert!(!e2.is_dead());
        assert_eq!(e2.stats.lock().calls, 0);
    }

    #[test]
    fn agg_math() {
        let mut a = Agg::default();
        let d = DbStats::new("t3".into());
        let e = d.entry_for(9, "SELECT 1");
        for ns in [1_000_000u64, 2_000_000, 3_000_000] {
            e.record(&exec(ns), None);
        }
        a.merge(&e.stats.lock());
        assert_eq!(a.calls, 3);
        assert!((a.mean_ms().unwrap() - 2.0).abs() < 1e-9);
        assert!((a.stddev_ms().unwrap() - (2.0f64 / 3.0).sqrt()).abs() < 1e-9);
        assert_eq!(a.min_ns, 1_000_000);
        assert_eq!(a.max_ns, 3_000_000);
        let p50 = a.quantile_ms(0.5).unwrap();
        assert!((p50 - 2.0).abs() / 2.0 < 0.02, "{p50}");
        e.record_error(None, "boom", false);
        assert_eq!(e.stats.lock().errors, 1);
        assert_eq!(e.stats.lock().calls, 4);
    }
}
