//! Deferred digest: the first run of a new statement text is normalized off
//! the user's thread.
//!
//! Rules:
//! - Producer: a connection's trace hook (one writer per connection: SQLite
//!   serializes a connection's calls). At the end of the first run of a
//!   statement text that cannot be an event (read-only, or a plain write
//!   naming no migration table) it copies the raw text and the run's figures
//!   into the connection's own single-producer ring: no lock, no allocation
//!   (the ring is allocated once, at the connection's first deferral), no
//!   system call except one wake-up of the digest thread per quarter ring.
//! - Consumer: whoever holds `DIGEST`: the digest thread, any reader of the
//!   statistics (`drain` runs before every read, so a query sees every
//!   statement that finished before it) or a producer whose ring is full
//!   (back-pressure: it digests synchronously rather than drop a run).
//! - Digesting a record normalizes the text, finds or creates the
//!   fingerprint's entry and adds the run to it and to its sqlcommenter
//!   activity, exactly as the hot path would have. It never calls SQLite.
//! - Lock order: DIGEST, then the ring list, then registry locks. `drain`
//!   must not be called while holding a registry lock.
//! - A record that does not fit an empty ring (text longer than
//!   MAX_DEFERRED_TEXT_BYTES) is never deferred: the hot path digests it
//!   in place.

use crate::activity;
use crate::normalize;
use crate::registry::{self, DbStats, Exec};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Ring size per connection, in 8-byte words (64 KiB): ~1000 short
/// statements, a few hundred microseconds of the fastest ad-hoc workload
/// between two wake-ups of the digest thread.
pub const RING_WORDS: usize = 8192;

/// Longest text deferred; longer ones are normalized in place (rare, and
/// cheap relative to what such a statement costs SQLite to prepare).
pub const MAX_DEFERRED_TEXT_BYTES: usize = 4096;

/// The digest thread also wakes this often when no ring asks for it, so
/// queued runs never wait long for a reader.
const IDLE_WAKE_MS: u64 = 50;

/// Header words of a record: len|text_len, start, end, rows, vm|fullscan,
/// sorts|autoindexes, rows affected.
const HEADER_WORDS: usize = 7;

/// Marker in the first word: the rest of the ring up to its end is unused.
const SKIP: u64 = u64::MAX;

/// A value alone on its cache line (the producer's and the consumer's
/// fields must not share one: each write would pull the line across cores).
#[repr(align(64))]
struct Line<T>(T);

/// The producer's line: its position and its last view of the consumer's.
struct Producer {
    head: AtomicU64,
    tail_seen: UnsafeCell<u64>,
}

/// One connection's queue of deferred runs.
pub struct Ring {
    stats: Arc<DbStats>,
    buf: Box<[UnsafeCell<u64>]>,
    /// Words written (producer), words consumed (consumer); both only grow.
    prod: Line<Producer>,
    tail: Line<AtomicU64>,
    /// The digest thread was asked to wake for this ring and has not yet.
    signaled: Line<AtomicBool>,
}

// SAFETY: `buf` words between tail and head are written only by the
// producer before it publishes `head` (Release) and read only by the
// consumer (under DIGEST) after it reads `head` (Acquire); words between
// head and tail + capacity are the producer's alone until it publishes.
unsafe impl Sync for Ring {}
unsafe impl Send for Ring {}

/// What the hot path hands over for one run.
pub struct Run<'a> {
    pub text: &'a [u8],
    pub start: u64,
    pub end: u64,
    pub rows: u64,
    /// sqlite3_changes() after a write's run (0 for reads).
    pub rows_affected: u64,
    pub counters: [u64; 4],
}

static DIGEST: Mutex<()> = Mutex::new(());
static RINGS: Mutex<Vec<Arc<Ring>>> = Mutex::new(Vec::new());
/// Records digested, records digested in place by a producer (full ring or
/// too long), wake-ups requested.
pub static DEFERRED: AtomicU64 = AtomicU64::new(0);
pub static INLINE: AtomicU64 = AtomicU64::new(0);
pub static WAKEUPS: AtomicU64 = AtomicU64::new(0);

fn thread() -> &'static OnceLock<std::thread::Thread> {
    static T: OnceLock<std::thread::Thread> = OnceLock::new();
    &T
}

/// Ring words a run's record takes: the header and the text, padded.
fn record_words(run: &Run) -> usize {
    HEADER_WORDS + run.text.len().div_ceil(8)
}

impl Ring {
    /// A new ring for a connection of `stats`' database, registered with the
    /// consumers.
    pub fn new(stats: Arc<DbStats>) -> Arc<Ring> {
        let buf: Box<[UnsafeCell<u64>]> = (0..RING_WORDS).map(|_| UnsafeCell::new(0)).collect();
        let r = Arc::new(Ring {
            stats,
            buf,
            prod: Line(Producer {
                head: AtomicU64::new(0),
                tail_seen: UnsafeCell::new(0),
            }),
            tail: Line(AtomicU64::new(0)),
            signaled: Line(AtomicBool::new(false)),
        });
        registry::lock(&RINGS).push(r.clone());
        r
    }

    #[inline]
    fn word(&self, i: u64) -> *mut u64 {
        self.buf[(i as usize) & (RING_WORDS - 1)].get()
    }

    /// Producer: queue one run. False when it does not fit right now.
    ///
    /// # Safety
    /// Only the connection owning the ring may call this (single producer).
    #[inline]
    pub unsafe fn push(&self, run: &Run) -> bool {
        let words = record_words(run);
        let head = self.prod.0.head.load(Ordering::Relaxed);
        let at = (head as usize) & (RING_WORDS - 1);
        // a record never wraps: skip the end of the ring when it would
        let skip = if at + words > RING_WORDS {
            RING_WORDS - at
        } else {
            0
        };
        // the consumer's position is read only when the last one seen
        // leaves too little room
        let seen = self.prod.0.tail_seen.get();
        let mut tail = *seen;
        if (head - tail) as usize + skip + words > RING_WORDS {
            tail = self.tail.0.load(Ordering::Acquire);
            *seen = tail;
            if (head - tail) as usize + skip + words > RING_WORDS {
                return false;
            }
        }
        if skip > 0 {
            *self.word(head) = SKIP;
        }
        let h = head + skip as u64;
        *self.word(h) = (words as u64) | ((run.text.len() as u64) << 32);
        *self.word(h + 1) = run.start;
        *self.word(h + 2) = run.end;
        *self.word(h + 3) = run.rows;
        *self.word(h + 4) =
            run.counters[0].min(u32::MAX as u64) | (run.counters[1].min(u32::MAX as u64) << 32);
        *self.word(h + 5) =
            run.counters[2].min(u32::MAX as u64) | (run.counters[3].min(u32::MAX as u64) << 32);
        *self.word(h + 6) = run.rows_affected;
        std::ptr::copy_nonoverlapping(
            run.text.as_ptr(),
            self.word(h + HEADER_WORDS as u64) as *mut u8,
            run.text.len(),
        );
        let new_head = h + words as u64;
        self.prod.0.head.store(new_head, Ordering::Release);
        if (new_head - tail) as usize > RING_WORDS / 4 {
            self.wake();
        }
        true
    }

    /// Ask the digest thread to empty this ring (once until it has).
    #[cold]
    fn wake(&self) {
        // refresh the consumer's position first: it may have emptied the
        // ring since we last looked
        let tail = self.tail.0.load(Ordering::Acquire);
        // SAFETY: producer-only field (see push).
        unsafe { *self.prod.0.tail_seen.get() = tail };
        let head = self.prod.0.head.load(Ordering::Relaxed);
        if (head - tail) as usize > RING_WORDS / 4 && !self.signaled.0.load(Ordering::Relaxed) {
            self.signaled.0.store(true, Ordering::Relaxed);
            if let Some(t) = thread().get() {
                WAKEUPS.fetch_add(1, Ordering::Relaxed);
                t.unpark();
            }
        }
    }

    /// Consumer (DIGEST held): digest everything queued.
    fn consume(&self) {
        let head = self.prod.0.head.load(Ordering::Acquire);
        let mut tail = self.tail.0.load(Ordering::Relaxed);
        while tail < head {
            // SAFETY: words in [tail, head) were published by the producer.
            let w0 = unsafe { *self.word(tail) };
            if w0 == SKIP {
                tail += (RING_WORDS - (tail as usize & (RING_WORDS - 1))) as u64;
                continue;
            }
            let words = (w0 & 0xffff_ffff) as usize;
            let text_len = (w0 >> 32) as usize;
            let (start, end, rows, c01, c23, affected) = unsafe {
                (
                    *self.word(tail + 1),
                    *self.word(tail + 2),
                    *self.word(tail + 3),
                    *self.word(tail + 4),
                    *self.word(tail + 5),
                    *self.word(tail + 6),
                )
            };
            let text = unsafe {
                std::slice::from_raw_parts(
                    self.word(tail + HEADER_WORDS as u64) as *const u8,
                    text_len,
                )
            };
            let run = Run {
                text,
                start,
                end,
                rows,
                rows_affected: affected,
                counters: [c01 & 0xffff_ffff, c01 >> 32, c23 & 0xffff_ffff, c23 >> 32],
            };
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                digest(&self.stats, &run)
            }));
            DEFERRED.fetch_add(1, Ordering::Relaxed);
            tail += words as u64;
        }
        self.tail.0.store(tail, Ordering::Release);
        self.signaled.0.store(false, Ordering::Relaxed);
    }
}

/// Normalize one run's text and add the run to its fingerprint (and to the
/// activity of its sqlcommenter tags), as the hot path does for known texts.
pub fn digest(stats: &DbStats, run: &Run) {
    let n = normalize::normalize(run.text);
    let entry = stats.entry_for(n.fingerprint, &n.text);
    let mut exec = Exec::of_run(run.start, run.end, run.rows, run.counters);
    if entry.meta.fast.kind.is_dml() {
        exec.rows_affected = run.rows_affected;
    }
    if n.tags.is_empty() {
        entry.record(&exec, None);
    } else {
        let json: Arc<str> = Arc::from(normalize::tags_json(&n.tags));
        entry.record(&exec, Some(&json));
        let eff = activity::effective(&[], &n.tags);
        for a in stats.activity.resolve(&eff) {
            registry::lock(&a.stats).add_exec(&exec);
        }
    }
}

/// Producer side when `push` failed: digest every ring now (back-pressure),
/// then retry; a run that can never fit is digested in place.
///
/// # Safety
/// As `Ring::push`.
#[cold]
pub unsafe fn push_slow(ring: &Ring, run: &Run) {
    if record_words(run) <= RING_WORDS {
        drain();
        if ring.push(run) {
            return;
        }
    }
    INLINE.fetch_add(1, Ordering::Relaxed);
    digest(&ring.stats, run);
}

/// Digest everything queued on every connection (readers call this first).
pub fn drain() {
    let _g = registry::lock(&DIGEST);
    let rings: Vec<Arc<Ring>> = registry::lock(&RINGS).clone();
    for r in rings {
        r.consume();
    }
}

/// A connection is going away: digest its ring and forget it.
pub fn retire(ring: &Arc<Ring>) {
    let _g = registry::lock(&DIGEST);
    ring.consume();
    registry::lock(&RINGS).retain(|r| !Arc::ptr_eq(r, ring));
}

/// Runs queued right now (for insights_debug).
pub fn queued() -> u64 {
    registry::lock(&RINGS)
        .iter()
        .map(|r| {
            r.prod
                .0
                .head
                .load(Ordering::Acquire)
                .saturating_sub(r.tail.0.load(Ordering::Acquire))
        })
        .sum()
}

/// Start the digest thread (once per process).
pub fn start() {
    static STARTED: AtomicBool = AtomicBool::new(false);
    if STARTED.swap(true, Ordering::SeqCst) {
        return;
    }
    let r = std::thread::Builder::new()
        .name("insights-digest".into())
        .spawn(|| {
            crate::errlog::set_internal_thread(true);
            loop {
                std::thread::park_timeout(Duration::from_millis(IDLE_WAKE_MS));
                let _ = std::panic::catch_unwind(drain);
            }
        });
    if let Ok(h) = r {
        let _ = thread().set(h.thread().clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &[u8], rows: u64) -> Run<'_> {
        Run {
            text,
            start: 10,
            end: 20,
            rows,
            rows_affected: 3,
            counters: [7, 1, 0, 0],
        }
    }

    #[test]
    fn ring_round_trip_wraps_and_fills() {
        let stats = registry::registry().db(":digest-test:");
        let ring = Ring::new(stats.clone());
        let text = b"SELECT v FROM t WHERE id = 12345 AND name = 'abcdefgh'";
        let mut pushed = 0u64;
        // fill it: pushes fail once full, never overwrite
        while unsafe { ring.push(&run(text, 1)) } {
            pushed += 1;
        }
        assert!(pushed > 100 && pushed < RING_WORDS as u64);
        retire(&ring);
        let snap = stats.snapshot();
        let calls: u64 = snap.iter().map(|(_, a)| a.calls).sum();
        assert_eq!(calls, pushed);
        // after the ring wrapped many times every record still round-trips
        let ring = Ring::new(stats.clone());
        for i in 0..20_000u64 {
            let t = format!("SELECT {} FROM t{}", "x".repeat((i % 37) as usize), i % 3);
            assert!(unsafe { ring.push(&run(t.as_bytes(), i % 5)) });
            if i % 50 == 0 {
                drain();
            }
        }
        retire(&ring);
        let snap = stats.snapshot();
        let calls: u64 = snap.iter().map(|(_, a)| a.calls).sum();
        assert_eq!(calls, pushed + 20_000);
        let rows: u64 = snap.iter().map(|(_, a)| a.rows_returned).sum();
        assert_eq!(rows, pushed + (0..20_000u64).map(|i| i % 5).sum::<u64>());
        let vm: u64 = snap.iter().map(|(_, a)| a.vm_steps).sum();
        assert_eq!(vm, 7 * (pushed + 20_000));
        // rows affected count only for writes (these are SELECTs)
        assert!(snap.iter().all(|(_, a)| a.rows_affected == 0));
        let ring = Ring::new(stats.clone());
        for i in 0..1000u64 {
            let t = format!("INSERT INTO t VALUES ({i})");
            assert!(unsafe { ring.push(&run(t.as_bytes(), 0)) });
            if i % 100 == 99 {
                drain();
            }
        }
        retire(&ring);
        let ins: u64 = stats
            .snapshot()
            .iter()
            .filter(|(m, _)| m.query.starts_with("INSERT"))
            .map(|(_, a)| a.rows_affected)
            .sum();
        assert_eq!(ins, 3000);
    }

    #[test]
    fn too_long_is_digested_in_place() {
        let stats = registry::registry().db(":digest-test-long:");
        let ring = Ring::new(stats.clone());
        let long = format!("SELECT '{}'", "y".repeat(RING_WORDS * 8));
        let before = INLINE.load(Ordering::Relaxed);
        let r = run(long.as_bytes(), 1);
        assert!(!unsafe { ring.push(&r) });
        unsafe { push_slow(&ring, &r) };
        assert!(INLINE.load(Ordering::Relaxed) > before);
        retire(&ring);
        assert_eq!(stats.snapshot().len(), 1);
    }
}
