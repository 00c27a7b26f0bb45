//! Connections and processes: who uses each database, across processes,
//! with lock contention and open failures over time; and the per-round
//! sampling of process resources into the store.
//!
//! Rules:
//! - After every flush round (`on_flush_round`, registered in lib.rs) each
//!   process writes, per database with a store and open connections, one row
//!   in the store table `processes` (pid, host, start, last seen, its
//!   connection counters, lock contention, open failures and its latest
//!   resource sample), and adds its deltas since the last round to
//!   `connection_history` and `resource_history` (minute/hour/day buckets,
//!   kept like query history). A process whose last connection to a database
//!   closed removes its row at its next round.
//! - Processes age out: on the same host (same host name, boot id and pid
//!   namespace) a row whose pid is gone, or now belongs to a process started
//!   at another time (pid reuse), is dead at once; rows of other hosts are
//!   dead when not refreshed for 3 of their flush intervals plus 5 s. Every
//!   writer deletes dead rows; readers skip them.
//! - `connection_history.connections_max` is the largest total of open
//!   connections over all live processes seen by any process's round in the
//!   bucket (each writer adds its own count to the others' last reported
//!   ones): a sampled peak, exact at round instants.
//! - Lock contention: `busy` counts statements that returned SQLITE_BUSY
//!   (the sum of the per-fingerprint `busy` counters); `locked` counts
//!   SQLITE_LOCKED, and `open_failures` failed opens (SQLITE_CANTOPEN in the
//!   error log, so only when error capture is active) — both fed by the
//!   capture/errlog error paths through `note_failure`/`note_open_failure`.
//! - Nothing here runs on the user's statement path except those two cold
//!   error-path calls (a map lookup under a short lock).

use crate::clock;
use crate::config::{self, Key};
use crate::registry::{lock, registry, DbStats};
use crate::resources::{self, CacheCounters, ProcSample};
use crate::store;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::ffi::c_int;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Other hosts' rows are dead after this many of their flush intervals...
pub const STALE_INTERVALS: i64 = 3;
/// ... plus this grace.
pub const STALE_GRACE_MS: i64 = 5_000;
/// History retention runs every this many rounds.
pub const RETENTION_EVERY: u64 = 30;

// ------------------------------------------------------------ identity

pub fn hostname() -> String {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| {
        let mut buf = [0u8; 256];
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
        if rc != 0 {
            return "unknown".into();
        }
        let n = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .clone()
}

/// Host name + boot id + pid namespace: rows with the same key can be
/// checked by pid.
pub fn host_key() -> &'static str {
    static K: OnceLock<String> = OnceLock::new();
    K.get_or_init(|| {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let ns = std::fs::read_link("/proc/self/ns/pid")
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        format!("{}|{boot}|{ns}", hostname())
    })
}

/// Start time of a process in clock ticks since boot (field 22 of
/// /proc/<pid>/stat); None when it does not exist or /proc is unreadable.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn own_start_ticks() -> i64 {
    static T: OnceLock<i64> = OnceLock::new();
    *T.get_or_init(|| {
        start_ticks(std::process::id())
            .map(|t| t as i64)
            .unwrap_or(-1)
    })
}

/// Process start as unix ms (from /proc boot time and start ticks; falls
/// back to the extension's first load).
pub fn own_started_ms() -> i64 {
    static S: OnceLock<i64> = OnceLock::new();
    *S.get_or_init(|| {
        let btime = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<i64>().ok())
        });
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        match (btime, own_start_ticks()) {
            (Some(b), t) if t >= 0 && hz > 0 => b * 1000 + t * 1000 / hz as i64,
            _ => clock::unix_ms_now(),
        }
    })
}

/// Is process `pid` (started at `ticks`) alive on this host?
pub fn pid_alive(pid: i64, ticks: i64) -> bool {
    if pid <= 0 || pid > u32::MAX as i64 {
        return false;
    }
    if pid as u32 == std::process::id() {
        return ticks == own_start_ticks();
    }
    match start_ticks(pid as u32) {
        Some(t) => ticks < 0 || t as i64 == ticks,
        None => {
            if std::path::Path::new("/proc/self/stat").exists() {
                return false; // /proc works and the pid is not there
            }
            let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
            rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        }
    }
}

// ---------------------------------------------------- contention counters

/// Per database: SQLITE_LOCKED statements and failed opens seen.
#[derive(Default)]
pub struct Failures {
    pub locked: AtomicU64,
    pub busy: AtomicU64,
    pub open_failures: AtomicU64,
}

fn failures() -> &'static Mutex<HashMap<String, Arc<Failures>>> {
    static F: OnceLock<Mutex<HashMap<String, Arc<Failures>>>> = OnceLock::new();
    F.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Paths with their own failure counters; failed opens of more distinct
/// paths than this (an app probing many files) share the `(other)` row.
pub const MAX_FAILURE_PATHS: usize = 1000;

fn failures_of(path: &str) -> Arc<Failures> {
    let mut m = lock(failures());
    if let Some(f) = m.get(path) {
        return f.clone();
    }
    let key = if m.len() >= MAX_FAILURE_PATHS {
        "(other)"
    } else {
        path
    };
    m.entry(key.to_string()).or_default().clone()
}

/// Error path of capture: a statement of `db` failed with `code` (extended
/// or primary). Counts SQLITE_BUSY and SQLITE_LOCKED; cold path only.
pub fn note_failure(db: &DbStats, code: c_int) {
    match code & 0xff {
        rusqlite::ffi::SQLITE_LOCKED => {
            failures_of(&db.path).locked.fetch_add(1, Ordering::Relaxed);
        }
        rusqlite::ffi::SQLITE_BUSY => {
            failures_of(&db.path).busy.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// Error log: a SQLITE_CANTOPEN line (call only for lines logged on a
/// user's thread; the caller keeps processing the line). SQLite logs two
/// lines per failed open on unix: `cannot open file at line N of [...]` and
/// `os_unix.c:N: (errno) open(<path>) - <reason>`; only the second is
/// counted, for `<path>` (a `-journal`, `-wal` or `-shm` file counts for its
/// database). Other lines (e.g. the statement abort of a failed ATTACH) are
/// ignored: they repeat a failure the unix line already counted.
pub fn note_open_failure(line: &str) {
    let Some(at) = line.find(") open(") else {
        return;
    };
    let rest = &line[at + 7..];
    let path = rest
        .rfind(") - ")
        .or_else(|| rest.rfind(')'))
        .map(|j| &rest[..j])
        .filter(|p| !p.is_empty());
    if let Some(p) = path {
        let db = ["-journal", "-wal", "-shm"]
            .iter()
            .find_map(|s| p.strip_suffix(s))
            .unwrap_or(p);
        failures_of(db)
            .open_failures
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// Paths with failed opens that are not monitored databases (never opened
/// successfully in this process), with their counts.
pub fn unmonitored_open_failures() -> Vec<(String, u64)> {
    let known: std::collections::HashSet<String> = registry()
        .databases()
        .iter()
        .map(|d| d.path.clone())
        .collect();
    let mut v: Vec<(String, u64)> = lock(failures())
        .iter()
        .filter(|(p, _)| !known.contains(*p))
        .map(|(p, f)| (p.clone(), f.open_failures.load(Ordering::Relaxed)))
        .filter(|(_, n)| *n > 0)
        .collect();
    v.sort();
    v
}

/// Process counters of a database now: (busy, locked, open_failures).
pub fn contention(db: &DbStats) -> (u64, u64, u64) {
    let f = failures_of(&db.path);
    let agg_busy: u64 = db.live_entries().iter().map(|e| e.stats.lock().busy).sum();
    // the fingerprint counters are authoritative for BUSY (kept since the
    // last reset); the error-path counter covers evicted fingerprints
    let busy = agg_busy.max(f.busy.load(Ordering::Relaxed));
    (
        busy,
        f.locked.load(Ordering::Relaxed),
        f.open_failures.load(Ordering::Relaxed),
    )
}

// ----------------------------------------------------------------- store

const DDL: &str = "
CREATE TABLE IF NOT EXISTS processes(
  host_key TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT, start_ticks INTEGER,
  started_ms INTEGER, last_seen_ms INTEGER, interval_ms INTEGER,
  connections_open INTEGER, connections_peak INTEGER, connections_opened INTEGER,
  connections_closed INTEGER, busy INTEGER, locked INTEGER, open_failures INTEGER,
  cpu_user_s REAL, cpu_system_s REAL, cpu_percent REAL, rss_bytes INTEGER,
  rss_peak_bytes INTEGER, sqlite_memory_bytes INTEGER, sqlite_memory_highwater_bytes INTEGER,
  cache_hits INTEGER, cache_misses INTEGER, cache_writes INTEGER, cache_spills INTEGER,
  connections_sampled INTEGER, file_bytes INTEGER, wal_bytes INTEGER, shm_bytes INTEGER,
  disk_free_bytes INTEGER,
  PRIMARY KEY(host_key, pid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS connection_history(
  resolution TEXT NOT NULL, bucket_start TEXT NOT NULL,
  connections_max INTEGER, processes_max INTEGER, opened INTEGER, closed INTEGER,
  busy INTEGER, locked INTEGER, open_failures INTEGER,
  PRIMARY KEY(resolution, bucket_start)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS resource_history(
  resolution TEXT NOT NULL, bucket_start TEXT NOT NULL, host_key TEXT NOT NULL,
  pid INTEGER NOT NULL, host TEXT, samples INTEGER, covered_ms INTEGER,
  cpu_user_s REAL, cpu_system_s REAL, rss_max INTEGER, sqlite_memory_max INTEGER,
  cache_hits INTEGER, cache_misses INTEGER, cache_writes INTEGER, cache_spills INTEGER,
  file_bytes INTEGER, wal_bytes_max INTEGER, shm_bytes INTEGER, disk_free_min INTEGER,
  PRIMARY KEY(resolution, bucket_start, host_key, pid)) WITHOUT ROWID;";

pub fn ensure_tables(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(DDL)
}

/// What this process last wrote to a database's store (for deltas).
#[derive(Clone, Default)]
struct Sent {
    opened: u64,
    closed: u64,
    busy: u64,
    locked: u64,
    open_failures: u64,
    cpu: Option<ProcSample>,
    cache: CacheCounters,
    registered: bool,
}

fn sent() -> &'static Mutex<HashMap<String, Sent>> {
    static S: OnceLock<Mutex<HashMap<String, Sent>>> = OnceLock::new();
    S.get_or_init(|| Mutex::new(HashMap::new()))
}

static ROUNDS: AtomicU64 = AtomicU64::new(0);

/// Live figures of this process for one database.
pub struct Live {
    pub open: u64,
    pub peak: u64,
    pub opened: u64,
    pub closed: u64,
    pub busy: u64,
    pub locked: u64,
    pub open_failures: u64,
    pub cache: CacheCounters,
    pub sampled: usize,
    pub file_bytes: Option<i64>,
    pub wal_bytes: Option<i64>,
    pub shm_bytes: Option<i64>,
    pub disk_free_bytes: Option<i64>,
}

pub fn live(db: &DbStats) -> Live {
    let (busy, locked, open_failures) = contention(db);
    let (cache, sampled) = resources::cache_totals(&db.path);
    let file = !db.path.starts_with(':') && db.path != crate::registry::UNKNOWN_DB;
    Live {
        open: db.connections_open.load(Ordering::Relaxed),
        peak: db.connections_peak.load(Ordering::Relaxed),
        opened: db.connections_opened.load(Ordering::Relaxed),
        closed: db.connections_closed.load(Ordering::Relaxed),
        busy,
        locked,
        open_failures,
        cache,
        sampled,
        file_bytes: file.then(|| crate::sizes::file_len(&db.path)).flatten(),
        wal_bytes: file.then(|| crate::sizes::file_len0(&format!("{}-wal", db.path))),
        shm_bytes: file.then(|| crate::sizes::file_len0(&format!("{}-shm", db.path))),
        disk_free_bytes: file
            .then(|| crate::sizes::disk_space(&db.path).map(|d| d.0))
            .flatten(),
    }
}

/// A resource bucket as read back: samples, covered ms, cpu user/system s,
/// rss max, sqlite memory max, cache counters, WAL max, disk free min.
type ResCur = (i64, i64, f64, f64, i64, i64, [i64; 4], i64, i64);

fn i(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// Run after every flush round by the background thread.
pub fn on_flush_round() {
    let (proc, pct) = resources::round_sample();
    let now = proc.at_ms;
    let round = ROUNDS.fetch_add(1, Ordering::Relaxed);
    for db in registry().databases() {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            round_db(&db, &proc, pct, now, round.is_multiple_of(RETENTION_EVERY))
        }));
    }
    crate::sizes::on_round(now);
}

fn round_db(db: &Arc<DbStats>, proc: &ProcSample, pct: Option<f64>, now: i64, retention: bool) {
    let l = live(db);
    let prev = lock(sent()).get(&db.path).cloned().unwrap_or_default();
    let d_opened = l.opened.saturating_sub(prev.opened);
    let d_closed = l.closed.saturating_sub(prev.closed);
    let d_busy = l.busy.saturating_sub(prev.busy);
    let d_locked = l.locked.saturating_sub(prev.locked);
    let d_fail = l.open_failures.saturating_sub(prev.open_failures);
    let quiet =
        l.open == 0 && !prev.registered && d_opened + d_closed + d_busy + d_locked + d_fail == 0;
    if quiet {
        return;
    }
    let interval = config::get(Key::FlushIntervalMs);
    let (cpu_u, cpu_s, covered) = match prev.cpu {
        Some(p) => (
            (proc.cpu_user_s - p.cpu_user_s).max(0.0),
            (proc.cpu_system_s - p.cpu_system_s).max(0.0),
            (now - p.at_ms).max(0),
        ),
        None => (0.0, 0.0, 0),
    };
    let d_cache = l.cache.minus(&prev.cache);
    let r = store::with_store_conn(db, |conn| {
        ensure_tables(conn)?;
        let tx =
            rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
        if l.open > 0 {
            tx.execute(
                "INSERT OR REPLACE INTO processes VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30)",
                params![
                    host_key(),
                    std::process::id() as i64,
                    hostname(),
                    own_start_ticks(),
                    own_started_ms(),
                    now,
                    interval,
                    i(l.open),
                    i(l.peak),
                    i(l.opened),
                    i(l.closed),
                    i(l.busy),
                    i(l.locked),
                    i(l.open_failures),
                    proc.cpu_user_s,
                    proc.cpu_system_s,
                    pct,
                    proc.rss_bytes,
                    proc.rss_peak_bytes,
                    proc.sqlite_memory_bytes,
                    proc.sqlite_memory_highwater_bytes,
                    l.cache.hits,
                    l.cache.misses,
                    l.cache.writes,
                    l.cache.spills,
                    l.sampled as i64,
                    l.file_bytes,
                    l.wal_bytes,
                    l.shm_bytes,
                    l.disk_free_bytes,
                ],
            )?;
        } else {
            tx.execute(
                "DELETE FROM processes WHERE host_key = ?1 AND pid = ?2",
                params![host_key(), std::process::id() as i64],
            )?;
        }
        let others = read_processes(&tx, now, true)?;
        let total: i64 = others.iter().map(|p| p.connections_open).sum();
        let nproc = others.len() as i64;
        for (res, width) in store::RESOLUTIONS {
            let bucket = clock::iso_ms(now - now.rem_euclid(width));
            let cur: Option<[i64; 7]> = tx
                .query_row(
                    "SELECT connections_max, processes_max, opened, closed, busy, locked, open_failures FROM connection_history WHERE resolution = ?1 AND bucket_start = ?2",
                    params![res, bucket],
                    |r| {
                        let g = |k| r.get::<_, Option<i64>>(k).map(|v| v.unwrap_or(0));
                        Ok([g(0)?, g(1)?, g(2)?, g(3)?, g(4)?, g(5)?, g(6)?])
                    },
                )
                .optional()?;
            let c = cur.unwrap_or_default();
            tx.execute(
                "INSERT OR REPLACE INTO connection_history VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    res,
                    bucket,
                    c[0].max(total),
                    c[1].max(nproc),
                    c[2] + i(d_opened),
                    c[3] + i(d_closed),
                    c[4] + i(d_busy),
                    c[5] + i(d_locked),
                    c[6] + i(d_fail),
                ],
            )?;
            if prev.cpu.is_some() || l.open > 0 {
                let key = params![res, bucket, host_key(), std::process::id() as i64];
                let cur: Option<ResCur> = tx
                    .query_row(
                        "SELECT samples, covered_ms, cpu_user_s, cpu_system_s, rss_max, sqlite_memory_max, cache_hits, cache_misses, cache_writes, cache_spills, wal_bytes_max, disk_free_min
                         FROM resource_history WHERE resolution = ?1 AND bucket_start = ?2 AND host_key = ?3 AND pid = ?4",
                        key,
                        |r| {
                            let g = |k| r.get::<_, Option<i64>>(k).map(|v| v.unwrap_or(0));
                            Ok((
                                g(0)?,
                                g(1)?,
                                r.get::<_, Option<f64>>(2)?.unwrap_or(0.0),
                                r.get::<_, Option<f64>>(3)?.unwrap_or(0.0),
                                g(4)?,
                                g(5)?,
                                [g(6)?, g(7)?, g(8)?, g(9)?],
                                g(10)?,
                                r.get::<_, Option<i64>>(11)?.unwrap_or(i64::MAX),
                            ))
                        },
                    )
                    .optional()?;
                let (n, cov, u, s, rss, mem, cc, walmax, freemin) =
                    cur.unwrap_or((0, 0, 0.0, 0.0, 0, 0, [0; 4], 0, i64::MAX));
                let free = l.disk_free_bytes.map(|f| f.min(freemin));
                tx.execute(
                    "INSERT OR REPLACE INTO resource_history VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
                    params![
                        res,
                        bucket,
                        host_key(),
                        std::process::id() as i64,
                        hostname(),
                        n + 1,
                        cov + covered,
                        u + cpu_u,
                        s + cpu_s,
                        rss.max(proc.rss_bytes),
                        mem.max(proc.sqlite_memory_bytes),
                        cc[0] + d_cache.hits,
                        cc[1] + d_cache.misses,
                        cc[2] + d_cache.writes,
                        cc[3] + d_cache.spills,
                        l.file_bytes,
                        l.wal_bytes.map(|w| w.max(walmax)),
                        l.shm_bytes,
                        free,
                    ],
                )?;
            }
        }
        if retention {
            let day = 86_400_000i64;
            for (res, key) in [
                ("minute", Key::RetentionMinuteDays),
                ("hour", Key::RetentionHourDays),
                ("day", Key::RetentionDayDays),
            ] {
                let cutoff = clock::iso_ms(now - config::get(key) * day);
                for t in ["connection_history", "resource_history"] {
                    tx.execute(
                        &format!("DELETE FROM {t} WHERE resolution = ?1 AND bucket_start < ?2"),
                        params![res, cutoff],
                    )?;
                }
            }
        }
        tx.commit()
    });
    if let Some(Ok(())) = r {
        lock(sent()).insert(
            db.path.clone(),
            Sent {
                opened: l.opened,
                closed: l.closed,
                busy: l.busy,
                locked: l.locked,
                open_failures: l.open_failures,
                cpu: Some(*proc),
                cache: l.cache,
                registered: l.open > 0,
            },
        );
    }
}

/// Unsent deltas of this process for a database: (opened, closed, busy,
/// locked, open_failures).
pub fn unsent(db: &DbStats) -> [i64; 5] {
    let l = live(db);
    let p = lock(sent()).get(&db.path).cloned().unwrap_or_default();
    [
        i(l.opened.saturating_sub(p.opened)),
        i(l.closed.saturating_sub(p.closed)),
        i(l.busy.saturating_sub(p.busy)),
        i(l.locked.saturating_sub(p.locked)),
        i(l.open_failures.saturating_sub(p.open_failures)),
    ]
}

/// A process row from the store.
#[derive(Clone, Debug, Default)]
pub struct ProcRow {
    pub host_key: String,
    pub pid: i64,
    pub host: String,
    pub started_ms: i64,
    pub last_seen_ms: i64,
    pub status: &'static str,
    pub connections_open: i64,
    pub connections_peak: i64,
    pub connections_opened: i64,
    pub connections_closed: i64,
    pub busy: i64,
    pub locked: i64,
    pub open_failures: i64,
    pub cpu_user_s: Option<f64>,
    pub cpu_system_s: Option<f64>,
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<i64>,
    pub rss_peak_bytes: Option<i64>,
    pub sqlite_memory_bytes: Option<i64>,
    pub sqlite_memory_highwater_bytes: Option<i64>,
    pub cache: CacheCounters,
    pub connections_sampled: Option<i64>,
    pub file_bytes: Option<i64>,
    pub wal_bytes: Option<i64>,
    pub shm_bytes: Option<i64>,
    pub disk_free_bytes: Option<i64>,
}

/// Live process rows of a store (this process's own row included); dead
/// ones are deleted when `delete_dead`.
fn read_processes(
    conn: &Connection,
    now: i64,
    delete_dead: bool,
) -> rusqlite::Result<Vec<ProcRow>> {
    let mut st = conn.prepare(
        "SELECT host_key, pid, host, start_ticks, started_ms, last_seen_ms, interval_ms,
                connections_open, connections_peak, connections_opened, connections_closed,
                busy, locked, open_failures, cpu_user_s, cpu_system_s, cpu_percent, rss_bytes,
                rss_peak_bytes, sqlite_memory_bytes, sqlite_memory_highwater_bytes,
                cache_hits, cache_misses, cache_writes, cache_spills, connections_sampled,
                file_bytes, wal_bytes, shm_bytes, disk_free_bytes
         FROM processes ORDER BY host, pid",
    )?;
    let rows = st.query_map([], |r| {
        let g = |k| r.get::<_, Option<i64>>(k).map(|v| v.unwrap_or(0));
        Ok((
            r.get::<_, Option<i64>>(3)?.unwrap_or(-1),
            r.get::<_, Option<i64>>(6)?.unwrap_or(0),
            ProcRow {
                host_key: r.get(0)?,
                pid: r.get(1)?,
                host: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                started_ms: g(4)?,
                last_seen_ms: g(5)?,
                status: "",
                connections_open: g(7)?,
                connections_peak: g(8)?,
                connections_opened: g(9)?,
                connections_closed: g(10)?,
                busy: g(11)?,
                locked: g(12)?,
                open_failures: g(13)?,
                cpu_user_s: r.get(14)?,
                cpu_system_s: r.get(15)?,
                cpu_percent: r.get(16)?,
                rss_bytes: r.get(17)?,
                rss_peak_bytes: r.get(18)?,
                sqlite_memory_bytes: r.get(19)?,
                sqlite_memory_highwater_bytes: r.get(20)?,
                cache: CacheCounters {
                    hits: g(21)?,
                    misses: g(22)?,
                    writes: g(23)?,
                    spills: g(24)?,
                },
                connections_sampled: r.get(25)?,
                file_bytes: r.get(26)?,
                wal_bytes: r.get(27)?,
                shm_bytes: r.get(28)?,
                disk_free_bytes: r.get(29)?,
            },
        ))
    })?;
    let mut alive = Vec::new();
    let mut dead = Vec::new();
    let me = std::process::id() as i64;
    for row in rows {
        let (ticks, interval, mut p) = row?;
        let same_host = p.host_key == host_key();
        let ok = if same_host {
            pid_alive(p.pid, ticks)
        } else {
            now - p.last_seen_ms <= STALE_INTERVALS * interval.max(100) + STALE_GRACE_MS
        };
        if ok {
            p.status = if same_host && p.pid == me {
                "self"
            } else if same_host {
                "alive"
            } else {
                "recent"
            };
            alive.push(p);
        } else {
            dead.push((p.host_key, p.pid));
        }
    }
    drop(st);
    if delete_dead {
        for (k, pid) in dead {
            conn.execute(
                "DELETE FROM processes WHERE host_key = ?1 AND pid = ?2",
                params![k, pid],
            )?;
        }
    }
    Ok(alive)
}

/// Live processes of a database's store (None: no store or none yet).
pub fn processes(db: &DbStats) -> Option<Result<Vec<ProcRow>, String>> {
    if store::store_path(db).is_none_or(|p| !p.exists()) {
        return None;
    }
    store::with_store_conn(db, |conn| {
        ensure_tables(conn)?;
        read_processes(conn, clock::unix_ms_now(), false)
    })
}

/// One bucket of `connection_history`.
pub struct ConnBucket {
    pub bucket_start: String,
    pub connections_max: i64,
    pub processes_max: i64,
    pub opened: i64,
    pub closed: i64,
    pub busy: i64,
    pub locked: i64,
    pub open_failures: i64,
}

pub fn connection_history(db: &DbStats, resolution: &str) -> Result<Vec<ConnBucket>, String> {
    if store::store_path(db).is_none_or(|p| !p.exists()) {
        return Ok(Vec::new());
    }
    let r = store::with_store_conn(db, |conn| {
        ensure_tables(conn)?;
        let mut st = conn.prepare(
            "SELECT bucket_start, connections_max, processes_max, opened, closed, busy, locked, open_failures
             FROM connection_history WHERE resolution = ?1 ORDER BY bucket_start",
        )?;
        let rows = st.query_map(params![resolution], |r| {
            let g = |k| r.get::<_, Option<i64>>(k).map(|v| v.unwrap_or(0));
            Ok(ConnBucket {
                bucket_start: r.get(0)?,
                connections_max: g(1)?,
                processes_max: g(2)?,
                opened: g(3)?,
                closed: g(4)?,
                busy: g(5)?,
                locked: g(6)?,
                open_failures: g(7)?,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
    });
    r.unwrap_or(Ok(Vec::new()))
}

/// One bucket of `resource_history` for one process.
pub struct ResBucket {
    pub bucket_start: String,
    pub host: String,
    pub pid: i64,
    pub samples: i64,
    pub covered_ms: i64,
    pub cpu_user_s: f64,
    pub cpu_system_s: f64,
    pub rss_max: i64,
    pub sqlite_memory_max: i64,
    pub cache: CacheCounters,
    pub file_bytes: Option<i64>,
    pub wal_bytes_max: Option<i64>,
    pub shm_bytes: Option<i64>,
    pub disk_free_min: Option<i64>,
}

pub fn resource_history(db: &DbStats, resolution: &str) -> Result<Vec<ResBucket>, String> {
    if store::store_path(db).is_none_or(|p| !p.exists()) {
        return Ok(Vec::new());
    }
    let r = store::with_store_conn(db, |conn| {
        ensure_tables(conn)?;
        let mut st = conn.prepare(
            "SELECT bucket_start, host, pid, samples, covered_ms, cpu_user_s, cpu_system_s, rss_max,
                    sqlite_memory_max, cache_hits, cache_misses, cache_writes, cache_spills,
                    file_bytes, wal_bytes_max, shm_bytes, disk_free_min
             FROM resource_history WHERE resolution = ?1 ORDER BY bucket_start, host, pid",
        )?;
        let rows = st.query_map(params![resolution], |r| {
            let g = |k| r.get::<_, Option<i64>>(k).map(|v| v.unwrap_or(0));
            Ok(ResBucket {
                bucket_start: r.get(0)?,
                host: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                pid: r.get(2)?,
                samples: g(3)?,
                covered_ms: g(4)?,
                cpu_user_s: r.get::<_, Option<f64>>(5)?.unwrap_or(0.0),
                cpu_system_s: r.get::<_, Option<f64>>(6)?.unwrap_or(0.0),
                rss_max: g(7)?,
                sqlite_memory_max: g(8)?,
                cache: CacheCounters {
                    hits: g(9)?,
                    misses: g(10)?,
                    writes: g(11)?,
                    spills: g(12)?,
                },
                file_bytes: r.get(13)?,
                wal_bytes_max: r.get(14)?,
                shm_bytes: r.get(15)?,
                disk_free_min: r.get(16)?,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
    });
    r.unwrap_or(Ok(Vec::new()))
}

/// All-time totals of a database across processes from its day buckets:
/// (connections_max, opened, closed, busy, locked, open_failures).
pub fn totals(db: &DbStats) -> Option<[i64; 6]> {
    if store::store_path(db).is_none_or(|p| !p.exists()) {
        return None;
    }
    let r = store::with_store_conn(db, |conn| {
        ensure_tables(conn)?;
        conn.query_row(
            "SELECT coalesce(max(connections_max), 0), coalesce(sum(opened), 0), coalesce(sum(closed), 0),
                    coalesce(sum(busy), 0), coalesce(sum(locked), 0), coalesce(sum(open_failures), 0)
             FROM connection_history WHERE resolution = 'day'",
            [],
            |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?]),
        )
    });
    r.and_then(|x| x.ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_pid_reuse_is_not() {
        let me = std::process::id() as i64;
        let t = own_start_ticks();
        assert!(pid_alive(me, t));
        if t >= 0 {
            assert!(!pid_alive(me, t + 1));
        }
        assert!(!pid_alive(0, -1));
        assert!(!host_key().is_empty());
    }

    #[test]
    fn open_failure_path_parsing() {
        note_open_failure("cannot open file at line 1 of [abc]");
        note_open_failure("os_unix.c:45000: (2) open(/nope/x.db) - No such file or directory");
        note_open_failure("os_unix.c:45000: (13) open(/nope/x.db-journal) - Permission denied");
        note_open_failure("os_unix.c:45000: (2) open(/a (b)/y.db) - ");
        note_open_failure(
            "statement aborts at 4: [ATTACH ? AS x] unable to open database: /nope/x.db",
        );
        let n = |p: &str| failures_of(p).open_failures.load(Ordering::Relaxed);
        assert_eq!(n("/nope/x.db"), 2);
        assert_eq!(n("/a (b)/y.db"), 1);
    }
}
