//! Clocks and instants.
//!
//! Rules:
//! - The hot path reads only the monotonic clock (`Instant::now`, a vDSO call).
//!   Wall-clock instants are derived from one anchor (monotonic, wall) pair taken
//!   once per process, so no statement pays for a second clock read.
//! - Instants shown to users are UTC ISO-8601 with milliseconds:
//!   `2026-11-25T06:35:39.123Z`.
//! - Statement durations use `ticks()`: the CPU's time-stamp counter where it
//!   is invariant (x86_64 with constant_tsc and nonstop_tsc: ~7 ns a read
//!   instead of ~25 ns for clock_gettime), else the monotonic clock in ns.
//!   The tick rate is calibrated at start-up against the monotonic clock and
//!   refined by the background thread over ever longer spans.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

struct Anchor {
    mono: Instant,
    unix_ns: i128,
    /// TSC value at `mono` (0 when the TSC is not used).
    tsc0: u64,
}

fn anchor() -> &'static Anchor {
    static A: OnceLock<Anchor> = OnceLock::new();
    A.get_or_init(|| {
        let use_tsc = tsc_usable();
        let tsc0 = if use_tsc { rdtsc() } else { 0 };
        let a = Anchor {
            mono: Instant::now(),
            unix_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as i128)
                .unwrap_or(0),
            tsc0,
        };
        if use_tsc {
            TSC0.store(tsc0, Ordering::Relaxed);
            USE_TSC.store(true, Ordering::Release);
        }
        a
    })
}

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static USE_TSC: AtomicBool = AtomicBool::new(false);
/// The anchor's TSC value (set before USE_TSC).
static TSC0: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds per tick in 32.32 fixed point (1.0 without the TSC): an
/// integer multiply on the hot path instead of u64<->f64 conversions.
static NS_PER_TICK_Q32: AtomicU64 = AtomicU64::new(1 << 32);

/// Set the tick rate (ns per tick).
fn set_rate(ns_per_tick: f64) {
    NS_PER_TICK_Q32.store((ns_per_tick * 4294967296.0) as u64, Ordering::Relaxed);
}

/// `ticks` at the 32.32 rate `q32`, in ns.
#[inline]
fn q32_ns(ticks: u64, q32: u64) -> u64 {
    ((ticks as u128 * q32 as u128) >> 32) as u64
}
/// Calibration spin at start-up; 2 ms bounds the rate error near 1e-5.
pub const TSC_CALIBRATION_MS: u64 = 2;

#[cfg(target_arch = "x86_64")]
#[inline]
fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn rdtsc() -> u64 {
    0
}

/// An invariant TSC (same rate on every core, in every power state).
fn tsc_usable() -> bool {
    if !cfg!(target_arch = "x86_64") || std::env::var_os("SQLITE_INSIGHTS_NO_TSC").is_some() {
        return false;
    }
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return false;
    };
    let Some(flags) = info.lines().find(|l| l.starts_with("flags")) else {
        return false;
    };
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    has("constant_tsc") && has("nonstop_tsc")
}

/// Make sure the anchor exists and the tick rate is calibrated before the
/// first statement is timed.
pub fn init() {
    let a = anchor();
    if USE_TSC.load(Ordering::Relaxed) && a.tsc0 != 0 {
        let start = Instant::now();
        let t0 = rdtsc();
        while start.elapsed() < std::time::Duration::from_millis(TSC_CALIBRATION_MS) {
            std::hint::spin_loop();
        }
        let ns = start.elapsed().as_nanos() as f64;
        let t1 = rdtsc();
        if t1 > t0 {
            set_rate(ns / (t1 - t0) as f64);
        } else {
            USE_TSC.store(false, Ordering::Relaxed);
        }
    }
}

/// Refine the tick rate over the whole span since start-up (background).
pub fn recalibrate() {
    let a = anchor();
    if !USE_TSC.load(Ordering::Relaxed) {
        return;
    }
    let t = rdtsc();
    let ns = a.mono.elapsed().as_nanos() as f64;
    if t > a.tsc0 && ns > 1e8 {
        set_rate(ns / (t - a.tsc0) as f64);
    }
}

/// Fast monotonic ticks (see the module rules); never 0.
#[inline]
pub fn ticks() -> u64 {
    if USE_TSC.load(Ordering::Relaxed) {
        rdtsc()
    } else {
        now_stamp().max(1)
    }
}

/// Nanoseconds between two ticks.
#[inline]
pub fn ticks_to_ns(d: u64) -> u64 {
    run_span(0, d).0
}

/// The monotonic stamp (ns since the anchor) of a tick value.
#[inline]
pub fn stamp_of_ticks(t: u64) -> u64 {
    run_span(t, t).1
}

/// A run between ticks `start` and `end`: its duration in ns and the
/// monotonic stamp of its end, with one read of the rate (the hot path).
#[inline]
pub fn run_span(start: u64, end: u64) -> (u64, u64) {
    if USE_TSC.load(Ordering::Acquire) {
        let r = NS_PER_TICK_Q32.load(Ordering::Relaxed);
        let tsc0 = TSC0.load(Ordering::Relaxed);
        (
            q32_ns(end.saturating_sub(start), r),
            q32_ns(end.saturating_sub(tsc0), r),
        )
    } else {
        (end.saturating_sub(start), end)
    }
}

/// Whether durations use the TSC (for insights_debug()).
pub fn tsc_in_use() -> bool {
    USE_TSC.load(Ordering::Relaxed)
}

/// A monotonic stamp: nanoseconds since the process anchor.
#[inline]
pub fn stamp(at: Instant) -> u64 {
    at.saturating_duration_since(anchor().mono).as_nanos() as u64
}

/// Monotonic stamp of now.
#[inline]
pub fn now_stamp() -> u64 {
    stamp(Instant::now())
}

/// Unix milliseconds of a monotonic stamp.
pub fn stamp_unix_ms(stamp: u64) -> i64 {
    ((anchor().unix_ns + stamp as i128) / 1_000_000) as i64
}

/// Unix milliseconds now (wall clock).
pub fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// ISO-8601 UTC text of a monotonic stamp.
pub fn stamp_iso(stamp: u64) -> String {
    iso_ms(stamp_unix_ms(stamp))
}

/// UTC ISO-8601 with milliseconds for unix milliseconds.
pub fn iso_ms(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let ms = unix_ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        y,
        m,
        d,
        sod / 3600,
        (sod / 60) % 60,
        sod % 60,
        ms
    )
}

/// Parse an instant as users write it: `2026-11-25T06:35:39.123Z`,
/// `2026-11-25 06:35:39` (SQLite's datetime()), `2026-11-25T06:35`,
/// `2026-11-25`; always UTC. Returns unix milliseconds.
pub fn parse_instant(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = s.strip_suffix('Z').unwrap_or(s);
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let t = s.get(from..from + len)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let (mut h, mut mi, mut sec, mut ms) = (0, 0, 0, 0);
    if b.len() > 10 {
        if b[10] != b'T' && b[10] != b' ' {
            return None;
        }
        h = num(11, 2)?;
        if b.get(13) != Some(&b':') {
            return None;
        }
        mi = num(14, 2)?;
        if b.len() > 16 {
            if b[16] != b':' {
                return None;
            }
            sec = num(17, 2)?;
            if b.len() > 19 {
                if b[19] != b'.' {
                    return None;
                }
                let frac = &s[20..];
                if frac.is_empty() || !frac.bytes().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                let f3: String = frac.chars().chain("000".chars()).take(3).collect();
                ms = f3.parse().ok()?;
            }
        }
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(y, mo as u32, d as u32);
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) * 1000) + ms)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_formatting() {
        assert_eq!(iso_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_ms(1_795_588_539_123), "2026-11-25T06:35:39.123Z");
        assert_eq!(iso_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn ticks_measure_time() {
        init();
        let t0 = ticks();
        let i0 = Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let ns = ticks_to_ns(ticks() - t0) as f64;
        let real = i0.elapsed().as_nanos() as f64;
        assert!((ns - real).abs() / real < 0.05, "ticks {ns} vs {real}");
        let s = stamp_of_ticks(ticks());
        let n = now_stamp();
        assert!((s as f64 - n as f64).abs() < 5e6, "stamp {s} vs {n}");
        // the fixed-point rate agrees with the f64 division it came from
        let (a, b) = (ticks(), ticks() + 123_456_789);
        let (d, at) = run_span(a, b);
        let r = NS_PER_TICK_Q32.load(Ordering::Relaxed) as f64 / 4294967296.0;
        let d2 = ((b - a) as f64 * if tsc_in_use() { r } else { 1.0 }) as u64;
        assert!(d.abs_diff(d2) <= 1 + d2 / 1_000_000, "{d} vs {d2}");
        assert_eq!((d, at), (ticks_to_ns(b - a), stamp_of_ticks(b)));
    }

    #[test]
    fn parse_instants() {
        let t = 1_795_588_539_123;
        assert_eq!(parse_instant("2026-11-25T06:35:39.123Z"), Some(t));
        assert_eq!(parse_instant(&iso_ms(t)), Some(t));
        assert_eq!(parse_instant("2026-11-25 06:35:39"), Some(t - 123));
        assert_eq!(parse_instant("2026-11-25T06:35"), Some(t - 39_123));
        assert_eq!(
            parse_instant("2026-11-25"),
            Some(t - (6 * 3600 + 35 * 60 + 39) * 1000 - 123)
        );
        assert_eq!(parse_instant("2000-02-29"), Some(951_782_400_000));
        for bad in [
            "",
            "2026",
            "2026-13-01",
            "2026-11-25X06",
            "yesterday",
            "2026-11-25T06:35:39.Z",
        ] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
    }

    #[test]
    fn stamps_are_monotonic_and_near_wall() {
        init();
        let a = now_stamp();
        let b = now_stamp();
        assert!(b >= a);
        let drift = (stamp_unix_ms(b) - unix_ms_now()).abs();
        assert!(drift < 5_000, "drift {drift}");
    }
}
