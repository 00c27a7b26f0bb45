//! Resources: what the process costs (CPU, resident memory, SQLite's own
//! memory) and how the page caches of its connections do, for
//! `insights_resources` and the store samples written by `connections`.
//!
//! Rules:
//! - Process figures come from the kernel (`getrusage`, `/proc/self/statm`)
//!   and SQLite's global status (`sqlite3_status64`, or `sqlite3_status` on
//!   hosts older than 3.10, which lack it). SQLite's memory figures read 0 when
//!   the host disabled memory statistics (SQLITE_DEFAULT_MEMSTATUS=0).
//! - Page-cache counters (`SQLITE_DBSTATUS_CACHE_HIT/MISS/WRITE/SPILL`) are
//!   per connection and may only be read on a thread that is using that
//!   connection (another thread could see it closed under it: the capture
//!   set of connections can hold a handle whose trace hook the app replaced,
//!   and whose close we therefore never see). So connections are sampled by
//!   the capture hook itself, on their own thread: `register_conn` at attach,
//!   `sample_due`/`sample_conn` after a statement (one relaxed load and a
//!   compare; a real read once per flush round per active connection),
//!   `conn_closed` at close (its final counters move to the closed totals).
//!   A live connection's figures are those of its first statement after the
//!   latest flush round it was active in (they lag by at most one flush
//!   interval of its own activity); the connection running the query is
//!   sampled at that moment, closed ones exactly at close. Until capture
//!   calls these, only the connection running the query is counted
//!   (`connections_sampled` says how many live ones were).

use crate::registry::{lock, DbStats};
use rusqlite::ffi;
use std::collections::HashMap;
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// Process-wide figures at one instant.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    pub at_ms: i64,
    pub cpu_user_s: f64,
    pub cpu_system_s: f64,
    pub rss_bytes: i64,
    pub rss_peak_bytes: i64,
    pub sqlite_memory_bytes: i64,
    pub sqlite_memory_highwater_bytes: i64,
}

fn tv_secs(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// Resident set size in bytes (`/proc/self/statm`, second field, in pages).
pub fn rss_bytes() -> Option<i64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = s.split_whitespace().nth(1)?.parse().ok()?;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(1) as i64)
}

/// SQLite's memory in use and its high-water mark (process-wide).
pub fn sqlite_memory() -> (i64, i64) {
    let (mut cur, mut hw) = (0i64, 0i64);
    unsafe {
        if ffi::sqlite3_libversion_number() >= 3_010_000 {
            ffi::sqlite3_status64(ffi::SQLITE_STATUS_MEMORY_USED, &mut cur, &mut hw, 0);
        } else {
            let (mut c, mut h): (c_int, c_int) = (0, 0);
            ffi::sqlite3_status(ffi::SQLITE_STATUS_MEMORY_USED, &mut c, &mut h, 0);
            cur = c as i64;
            hw = h as i64;
        }
    }
    (cur, hw)
}

/// The kernel's figures for this process (no SQLite call).
pub fn kernel_sample() -> ProcSample {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0;
    ProcSample {
        at_ms: crate::clock::unix_ms_now(),
        cpu_user_s: if ok { tv_secs(ru.ru_utime) } else { 0.0 },
        cpu_system_s: if ok { tv_secs(ru.ru_stime) } else { 0.0 },
        rss_bytes: rss_bytes().unwrap_or(0),
        rss_peak_bytes: if ok { ru.ru_maxrss * 1024 } else { 0 },
        ..Default::default()
    }
}

pub fn sample_process() -> ProcSample {
    let mut s = kernel_sample();
    (s.sqlite_memory_bytes, s.sqlite_memory_highwater_bytes) = sqlite_memory();
    s
}

/// The previous round's process sample (for CPU % over the last round).
fn prev() -> &'static Mutex<Option<ProcSample>> {
    static P: Mutex<Option<ProcSample>> = Mutex::new(None);
    &P
}

/// CPU use in percent of one core between two samples.
pub fn cpu_percent(a: &ProcSample, b: &ProcSample) -> Option<f64> {
    let wall = (b.at_ms - a.at_ms) as f64 / 1e3;
    (wall > 0.0).then(|| {
        ((b.cpu_user_s + b.cpu_system_s - a.cpu_user_s - a.cpu_system_s) / wall * 100.0).max(0.0)
    })
}

/// Record this round's sample; returns (sample, CPU % since the last round).
pub fn round_sample() -> (ProcSample, Option<f64>) {
    let s = sample_process();
    let mut p = lock(prev());
    let pct = p.as_ref().and_then(|a| cpu_percent(a, &s));
    *p = Some(s);
    GEN.fetch_add(1, Ordering::Relaxed);
    (s, pct)
}

/// CPU % over the last round for the live view (None before two samples).
pub fn live_cpu_percent(now: &ProcSample) -> Option<f64> {
    lock(prev()).as_ref().and_then(|a| cpu_percent(a, now))
}

// ------------------------------------------------------- page-cache stats

/// Page-cache counters of one or more connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounters {
    pub hits: i64,
    pub misses: i64,
    pub writes: i64,
    pub spills: i64,
}

impl CacheCounters {
    pub fn add(&mut self, o: &CacheCounters) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.writes += o.writes;
        self.spills += o.spills;
    }
    pub fn minus(&self, o: &CacheCounters) -> CacheCounters {
        CacheCounters {
            hits: (self.hits - o.hits).max(0),
            misses: (self.misses - o.misses).max(0),
            writes: (self.writes - o.writes).max(0),
            spills: (self.spills - o.spills).max(0),
        }
    }
    pub fn hit_ratio(&self) -> Option<f64> {
        let n = self.hits + self.misses;
        (n > 0).then(|| self.hits as f64 / n as f64)
    }
}

/// Read a connection's page-cache counters (cumulative since it opened).
///
/// # Safety
/// `db` must be a valid connection used by the current thread.
pub unsafe fn read_db_cache(db: *mut ffi::sqlite3) -> CacheCounters {
    let get = |op: c_int| -> i64 {
        let (mut cur, mut hw): (c_int, c_int) = (0, 0);
        if ffi::sqlite3_db_status(db, op, &mut cur, &mut hw, 0) == ffi::SQLITE_OK {
            cur as i64
        } else {
            0
        }
    };
    let v = ffi::sqlite3_libversion_number();
    CacheCounters {
        hits: get(ffi::SQLITE_DBSTATUS_CACHE_HIT),
        misses: get(ffi::SQLITE_DBSTATUS_CACHE_MISS),
        writes: get(ffi::SQLITE_DBSTATUS_CACHE_WRITE),
        spills: if v >= 3_023_000 {
            get(ffi::SQLITE_DBSTATUS_CACHE_SPILL)
        } else {
            0
        },
    }
}

/// Sampled counters of one instrumented connection (owned by capture's
/// per-connection state).
pub struct ConnCache {
    db: usize,
    db_path: String,
    gen: AtomicU64,
    hits: AtomicI64,
    misses: AtomicI64,
    writes: AtomicI64,
    spills: AtomicI64,
    closed: AtomicBool,
}

impl ConnCache {
    fn load(&self) -> CacheCounters {
        CacheCounters {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            spills: self.spills.load(Ordering::Relaxed),
        }
    }
    fn store(&self, c: &CacheCounters) {
        self.hits.store(c.hits, Ordering::Relaxed);
        self.misses.store(c.misses, Ordering::Relaxed);
        self.writes.store(c.writes, Ordering::Relaxed);
        self.spills.store(c.spills, Ordering::Relaxed);
    }
}

/// Bumped once per flush round: connections re-sample when it moved.
static GEN: AtomicU64 = AtomicU64::new(1);
/// Connections ever registered (0 = capture does not feed us).
static REGISTERED: AtomicU64 = AtomicU64::new(0);

struct Conns {
    live: Vec<Weak<ConnCache>>,
    closed: HashMap<String, CacheCounters>,
}

fn conns() -> &'static Mutex<Conns> {
    static C: OnceLock<Mutex<Conns>> = OnceLock::new();
    C.get_or_init(|| {
        Mutex::new(Conns {
            live: Vec::new(),
            closed: HashMap::new(),
        })
    })
}

/// At attach: a connection's counters slot (keep it in the connection state).
pub fn register_conn(db: *mut ffi::sqlite3, stats: &DbStats) -> Arc<ConnCache> {
    let c = Arc::new(ConnCache {
        db: db as usize,
        db_path: stats.path.clone(),
        gen: AtomicU64::new(0),
        hits: AtomicI64::new(0),
        misses: AtomicI64::new(0),
        writes: AtomicI64::new(0),
        spills: AtomicI64::new(0),
        closed: AtomicBool::new(false),
    });
    let mut g = lock(conns());
    g.live.retain(|w| w.strong_count() > 0);
    g.live.push(Arc::downgrade(&c));
    REGISTERED.fetch_add(1, Ordering::Relaxed);
    c
}

/// After a statement: is a new sample wanted? (one relaxed load + compare)
#[inline]
pub fn sample_due(c: &ConnCache) -> bool {
    c.gen.load(Ordering::Relaxed) != GEN.load(Ordering::Relaxed)
}

/// Sample a connection's counters (cold; on the connection's own thread).
///
/// # Safety
/// `db` must be the valid connection `c` belongs to, used by this thread.
#[cold]
pub unsafe fn sample_conn(db: *mut ffi::sqlite3, c: &ConnCache) {
    c.gen.store(GEN.load(Ordering::Relaxed), Ordering::Relaxed);
    c.store(&read_db_cache(db));
}

/// At close (TRACE_CLOSE, the connection still valid): its final counters
/// move to the closed totals of its database.
///
/// # Safety
/// `db` must be the valid connection `c` belongs to, used by this thread.
pub unsafe fn conn_closed(db: *mut ffi::sqlite3, c: &ConnCache) {
    let last = read_db_cache(db);
    let mut g = lock(conns());
    if c.closed.swap(true, Ordering::Relaxed) {
        return;
    }
    g.closed.entry(c.db_path.clone()).or_default().add(&last);
    c.store(&CacheCounters::default());
}

/// Sample the connection running a query of ours now (its own thread, so
/// its handle is valid): the caller's own figures are then exact.
///
/// # Safety
/// `db` must be a valid connection used by this thread right now.
pub unsafe fn sample_current(db: *mut ffi::sqlite3) {
    let found: Vec<Arc<ConnCache>> = lock(conns())
        .live
        .iter()
        .filter_map(|w| w.upgrade())
        .filter(|c| c.db == db as usize && !c.closed.load(Ordering::Relaxed))
        .collect();
    for c in found {
        sample_conn(db, &c);
    }
}

/// Whether capture feeds the per-connection samples.
pub fn conns_fed() -> bool {
    REGISTERED.load(Ordering::Relaxed) > 0
}

/// Sum over the process's connections to `db_path` (closed ones included:
/// the totals are counters) and how many live connections were sampled.
pub fn cache_totals(db_path: &str) -> (CacheCounters, usize) {
    let g = lock(conns());
    let mut t = g.closed.get(db_path).copied().unwrap_or_default();
    let mut n = 0;
    for w in &g.live {
        if let Some(c) = w.upgrade() {
            if c.db_path == db_path && !c.closed.load(Ordering::Relaxed) {
                t.add(&c.load());
                n += 1;
            }
        }
    }
    (t, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_sample_is_sane() {
        let a = kernel_sample();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = kernel_sample();
        assert!(b.cpu_user_s >= a.cpu_user_s);
        assert!(b.rss_bytes > 0, "{b:?}");
        assert!(b.rss_peak_bytes >= b.rss_bytes / 2);
    }

    #[test]
    fn counters_math() {
        let a = CacheCounters {
            hits: 9,
            misses: 1,
            writes: 2,
            spills: 0,
        };
        assert_eq!(a.hit_ratio(), Some(0.9));
        assert_eq!(a.minus(&a), CacheCounters::default());
        assert_eq!(CacheCounters::default().hit_ratio(), None);
    }
}
