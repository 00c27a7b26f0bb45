//! Process-wide settings behind `insights_config(key[, value])`.
//!
//! Rules:
//! - Every key is declared once in `KEYS` with its type, range, default and a
//!   one-line reason; unknown keys, wrong types and out-of-range values are
//!   rejected with an error naming the function, and nothing changes.
//! - Values live in atomics: the hot path reads them with relaxed loads and no
//!   lock.
//! - Settings are per process; they apply to every database the process
//!   monitors.

use std::sync::atomic::{AtomicI64, Ordering};

/// Default fingerprints kept per database; pg_stat_statements' default max.
pub const DEFAULT_MAX_QUERIES: i64 = 5000;
/// Default failed statements kept in `insights_errors` (a ring, newest kept).
pub const DEFAULT_MAX_ERRORS: i64 = 1000;
/// Default raw SQL samples off: literals stay in the process only as `?`.
pub const DEFAULT_SAMPLE_RAW_SQL: i64 = 0;
/// Default distinct values per tag key: enough for routes and apps; user ids
/// beyond it are counted together, keeping memory bounded.
pub const DEFAULT_MAX_TAG_VALUES: i64 = 1000;
/// Default capture on: loading the extension is the opt-in.
pub const DEFAULT_CAPTURE: i64 = 1;
/// Default flush interval: 10 s bounds the loss on a crash (issue: <= 10 s).
pub const DEFAULT_FLUSH_INTERVAL_MS: i64 = 10_000;
/// Minute buckets kept 2 days: enough to compare today with yesterday.
pub const DEFAULT_RETENTION_MINUTE_DAYS: i64 = 2;
/// Hour buckets kept 30 days: a month of trends.
pub const DEFAULT_RETENTION_HOUR_DAYS: i64 = 30;
/// Day buckets kept a year: seasonal comparisons.
pub const DEFAULT_RETENTION_DAY_DAYS: i64 = 365;

/// Default per-fingerprint metric series per database: enough for a top-queries
/// panel while keeping a Prometheus scrape bounded (labels x buckets).
pub const DEFAULT_METRICS_TOP_QUERIES: i64 = 50;
/// Default concurrent HTTP connections: a scraper, a dashboard and a few API
/// clients; beyond it new ones get 503 instead of another thread each.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: i64 = 16;
/// Default time a client has to send its whole request: slow clients must not
/// hold a connection slot.
pub const DEFAULT_HTTP_TIMEOUT_MS: i64 = 5_000;

/// Cached table sizes are re-measured when older than this (and than 10x the
/// last measurement's time) and the database files changed: a second keeps a
/// dashboard polling a busy database from re-measuring it on every refresh.
pub const DEFAULT_SIZE_REFRESH_MS: i64 = 1_000;
/// Largest database (pages) sized at query time: 25k 4-KiB pages take about
/// 60 ms with dbstat on this machine; larger ones are sized in the background.
pub const DEFAULT_SIZE_PAGE_BUDGET: i64 = 25_000;
/// Size samples every 5 minutes: growth per day/week without store bloat.
pub const DEFAULT_SIZE_SAMPLE_INTERVAL_MS: i64 = 300_000;
/// Use dbstat for sizes when the host has it (exact pages and row counts).
pub const DEFAULT_SIZE_DBSTAT: i64 = 1;

/// Default background heartbeat off: beats are written into the user's
/// database, so only when asked.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: i64 = 0;
/// Default lag beyond which a peer is `lagging`: 5 s, a common replica-lag
/// alert threshold (pt-heartbeat users alert at seconds).
pub const DEFAULT_SYNC_LAG_MS: i64 = 5_000;
/// Default time without progress (or without a new beat) before `stale`:
/// 60 s, several beats and flush rounds.
pub const DEFAULT_SYNC_STALE_MS: i64 = 60_000;
/// Default positions behind tolerated before `lagging`: 0, any unsent change.
pub const DEFAULT_SYNC_LAG_POSITIONS: i64 = 0;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Key {
    MaxQueries,
    MaxErrors,
    SampleRawSql,
    Capture,
    FlushIntervalMs,
    RetentionMinuteDays,
    RetentionHourDays,
    RetentionDayDays,
    MetricsTopQueries,
    HttpMaxConnections,
    HttpTimeoutMs,
    HttpToken,
    MaxTagValues,
    SizeRefreshMs,
    SizePageBudget,
    SizeSampleIntervalMs,
    SizeDbstat,
    HeartbeatIntervalMs,
    SyncLagMs,
    SyncStaleMs,
    SyncLagPositions,
}

pub struct KeyDef {
    pub key: Key,
    pub name: &'static str,
    pub kind: ValueKind,
    pub min: i64,
    pub max: i64,
    pub default: i64,
    pub help: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ValueKind {
    Int,
    Bool,
    /// A secret text (e.g. a bearer token): the text is kept in `secret()`
    /// and never shown; the key's value reads 1 when set, 0 when not.
    Secret,
}

pub const KEYS: &[KeyDef] = &[
    KeyDef {
        key: Key::MaxQueries,
        name: "max_queries",
        kind: ValueKind::Int,
        min: 10,
        max: 1_000_000,
        default: DEFAULT_MAX_QUERIES,
        help: "fingerprints kept per database; the least used are evicted in batches beyond it",
    },
    KeyDef {
        key: Key::MaxErrors,
        name: "max_errors",
        kind: ValueKind::Int,
        min: 1,
        max: 1_000_000,
        default: DEFAULT_MAX_ERRORS,
        help: "failed statements kept in insights_errors (newest kept)",
    },
    KeyDef {
        key: Key::SampleRawSql,
        name: "sample_raw_sql",
        kind: ValueKind::Bool,
        min: 0,
        max: 1,
        default: DEFAULT_SAMPLE_RAW_SQL,
        help:
            "keep the raw SQL text (with literals) of failed statements in insights_errors.sample",
    },
    KeyDef {
        key: Key::Capture,
        name: "capture",
        kind: ValueKind::Bool,
        min: 0,
        max: 1,
        default: DEFAULT_CAPTURE,
        help: "capture statements at all; 0 pauses capture in every connection of the process",
    },
    KeyDef {
        key: Key::FlushIntervalMs,
        name: "flush_interval_ms",
        kind: ValueKind::Int,
        min: 100,
        max: 3_600_000,
        default: DEFAULT_FLUSH_INTERVAL_MS,
        help: "how often the background thread writes this process's deltas to the store",
    },
    KeyDef {
        key: Key::RetentionMinuteDays,
        name: "retention_minute_days",
        kind: ValueKind::Int,
        min: 1,
        max: 3650,
        default: DEFAULT_RETENTION_MINUTE_DAYS,
        help: "days of minute buckets kept in the store",
    },
    KeyDef {
        key: Key::RetentionHourDays,
        name: "retention_hour_days",
        kind: ValueKind::Int,
        min: 1,
        max: 3650,
        default: DEFAULT_RETENTION_HOUR_DAYS,
        help: "days of hour buckets kept in the store",
    },
    KeyDef {
        key: Key::RetentionDayDays,
        name: "retention_day_days",
        kind: ValueKind::Int,
        min: 1,
        max: 36500,
        default: DEFAULT_RETENTION_DAY_DAYS,
        help: "days of day buckets kept in the store",
    },
    KeyDef {
        key: Key::MetricsTopQueries,
        name: "metrics_top_queries",
        kind: ValueKind::Int,
        min: 0,
        max: 10_000,
        default: DEFAULT_METRICS_TOP_QUERIES,
        help: "fingerprints per database (by total time) given their own series in insights_metrics(); 0 = per-kind series only",
    },
    KeyDef {
        key: Key::HttpMaxConnections,
        name: "http_max_connections",
        kind: ValueKind::Int,
        min: 1,
        max: 1024,
        default: DEFAULT_HTTP_MAX_CONNECTIONS,
        help: "concurrent connections the insights_serve() endpoint handles; more get 503",
    },
    KeyDef {
        key: Key::HttpTimeoutMs,
        name: "http_timeout_ms",
        kind: ValueKind::Int,
        min: 100,
        max: 600_000,
        default: DEFAULT_HTTP_TIMEOUT_MS,
        help: "time a client of insights_serve() has to send its request (and to read the answer)",
    },
    KeyDef {
        key: Key::HttpToken,
        name: "http_token",
        kind: ValueKind::Secret,
        min: 0,
        max: 1,
        default: 0,
        help: "bearer token the insights_serve() endpoint requires (needed to bind a non-loopback address); reads 1 when set; NULL or '' clears it",
    },
    KeyDef {
        key: Key::MaxTagValues,
        name: "max_tag_values",
        kind: ValueKind::Int,
        min: 1,
        max: 1_000_000,
        default: DEFAULT_MAX_TAG_VALUES,
        help: "distinct values kept per tag key and database in insights_activity; more go to '(other)'",
    },
    KeyDef {
        key: Key::SizeRefreshMs,
        name: "size_refresh_ms",
        kind: ValueKind::Int,
        min: 0,
        max: 86_400_000,
        default: DEFAULT_SIZE_REFRESH_MS,
        help: "insights_tables re-measures a changed database when its cached sizes are older than this (and than 10x the last measurement's time)",
    },
    KeyDef {
        key: Key::SizePageBudget,
        name: "size_page_budget",
        kind: ValueKind::Int,
        min: 0,
        max: 1_000_000_000,
        default: DEFAULT_SIZE_PAGE_BUDGET,
        help: "largest database (in pages) insights_tables measures while the query waits; larger ones are measured in the background",
    },
    KeyDef {
        key: Key::SizeSampleIntervalMs,
        name: "size_sample_interval_ms",
        kind: ValueKind::Int,
        min: 0,
        max: 604_800_000,
        default: DEFAULT_SIZE_SAMPLE_INTERVAL_MS,
        help: "how often database and table sizes are sampled into the store for insights_size_history; 0 = never",
    },
    KeyDef {
        key: Key::SizeDbstat,
        name: "size_dbstat",
        kind: ValueKind::Bool,
        min: 0,
        max: 1,
        default: DEFAULT_SIZE_DBSTAT,
        help: "measure sizes with dbstat when the host has it; 0 = row counts and sqlite_stat1 estimates only",
    },
    KeyDef {
        key: Key::HeartbeatIntervalMs,
        name: "heartbeat_interval_ms",
        kind: ValueKind::Int,
        min: 0,
        max: 3_600_000,
        default: DEFAULT_HEARTBEAT_INTERVAL_MS,
        help: "background insights_heartbeat() into every writer database the process has open (0 = off; at least 100)",
    },
    KeyDef {
        key: Key::SyncLagMs,
        name: "sync_lag_ms",
        kind: ValueKind::Int,
        min: 0,
        max: 86_400_000,
        default: DEFAULT_SYNC_LAG_MS,
        help: "insights_sync: a peer further behind than this (seconds of lag) is 'lagging'",
    },
    KeyDef {
        key: Key::SyncStaleMs,
        name: "sync_stale_ms",
        kind: ValueKind::Int,
        min: 100,
        max: 604_800_000,
        default: DEFAULT_SYNC_STALE_MS,
        help: "insights_sync: a peer behind with no progress (or no new beat/report) for this long is 'stale'",
    },
    KeyDef {
        key: Key::SyncLagPositions,
        name: "sync_lag_positions",
        kind: ValueKind::Int,
        min: 0,
        max: i64::MAX,
        default: DEFAULT_SYNC_LAG_POSITIONS,
        help: "insights_sync: a peer more positions (or pending changes) behind than this is 'lagging'",
    },
];

static VALUES: [AtomicI64; 21] = [
    AtomicI64::new(DEFAULT_MAX_QUERIES),
    AtomicI64::new(DEFAULT_MAX_ERRORS),
    AtomicI64::new(DEFAULT_SAMPLE_RAW_SQL),
    AtomicI64::new(DEFAULT_CAPTURE),
    AtomicI64::new(DEFAULT_FLUSH_INTERVAL_MS),
    AtomicI64::new(DEFAULT_RETENTION_MINUTE_DAYS),
    AtomicI64::new(DEFAULT_RETENTION_HOUR_DAYS),
    AtomicI64::new(DEFAULT_RETENTION_DAY_DAYS),
    AtomicI64::new(DEFAULT_METRICS_TOP_QUERIES),
    AtomicI64::new(DEFAULT_HTTP_MAX_CONNECTIONS),
    AtomicI64::new(DEFAULT_HTTP_TIMEOUT_MS),
    AtomicI64::new(0),
    AtomicI64::new(DEFAULT_MAX_TAG_VALUES),
    AtomicI64::new(DEFAULT_SIZE_REFRESH_MS),
    AtomicI64::new(DEFAULT_SIZE_PAGE_BUDGET),
    AtomicI64::new(DEFAULT_SIZE_SAMPLE_INTERVAL_MS),
    AtomicI64::new(DEFAULT_SIZE_DBSTAT),
    AtomicI64::new(DEFAULT_HEARTBEAT_INTERVAL_MS),
    AtomicI64::new(DEFAULT_SYNC_LAG_MS),
    AtomicI64::new(DEFAULT_SYNC_STALE_MS),
    AtomicI64::new(DEFAULT_SYNC_LAG_POSITIONS),
];

/// Text of the `Secret` keys (only `http_token` so far); None = not set.
static SECRET: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Longest secret accepted (a bearer token is a line of an HTTP header).
pub const MAX_SECRET_BYTES: usize = 256;

/// The current bearer token of the HTTP endpoint, if one is set.
pub fn secret() -> Option<String> {
    SECRET.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

#[inline]
pub fn get(key: Key) -> i64 {
    VALUES[key as usize].load(Ordering::Relaxed)
}

pub fn set(key: Key, v: i64) {
    VALUES[key as usize].store(v, Ordering::Relaxed);
}

pub fn lookup(name: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|k| k.name.eq_ignore_ascii_case(name))
}

pub fn known_names() -> String {
    KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// A value as given in SQL.
pub enum Input<'a> {
    Int(i64),
    Real(f64),
    Text(&'a str),
    Null,
    Blob,
}

/// Validate and convert a SQL value for `def`; Err is the message tail.
pub fn parse(def: &KeyDef, v: Input<'_>) -> Result<i64, String> {
    let bad = || {
        match def.kind {
        ValueKind::Int => format!(
            "{} must be an integer between {} and {}",
            def.name, def.min, def.max
        ),
        ValueKind::Bool => format!("{} must be 0/1, true/false or on/off", def.name),
        ValueKind::Secret => format!(
            "{} must be text of printable ASCII without spaces, at most {MAX_SECRET_BYTES} bytes (NULL or '' clears it)",
            def.name
        ),
    }
    };
    if def.kind == ValueKind::Secret {
        // the text is kept aside; the key's value only says whether it is set
        let t = match v {
            Input::Null => None,
            Input::Text("") => None,
            Input::Text(s)
                if s.len() <= MAX_SECRET_BYTES && s.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                Some(s.to_string())
            }
            _ => return Err(bad()),
        };
        let set = t.is_some();
        *SECRET.lock().unwrap_or_else(|e| e.into_inner()) = t;
        return Ok(set as i64);
    }
    let n = match (def.kind, v) {
        (_, Input::Int(i)) => i,
        (ValueKind::Int, Input::Real(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => f as i64,
        (ValueKind::Int, Input::Text(s)) => s.trim().parse::<i64>().map_err(|_| bad())?,
        (ValueKind::Bool, Input::Text(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "on" | "yes" => 1,
            "0" | "false" | "off" | "no" => 0,
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    if n < def.min || n > def.max {
        return Err(bad());
    }
    Ok(n)
}

/// Environment prefix: `SQLITE_INSIGHTS_MAX_QUERIES=100` etc. set a key at
/// first load (for processes that cannot run SQL first, e.g. CLI jobs).
pub const ENV_PREFIX: &str = "SQLITE_INSIGHTS_";

/// Apply `SQLITE_INSIGHTS_<KEY>` environment variables; invalid ones are
/// ignored and returned as messages (shown by insights_debug()).
pub fn load_env() -> Vec<String> {
    let mut bad = Vec::new();
    for d in KEYS {
        let var = format!("{ENV_PREFIX}{}", d.name.to_ascii_uppercase());
        if let Ok(v) = std::env::var(&var) {
            match parse(d, Input::Text(&v)) {
                Ok(n) => set(d.key, n),
                Err(m) => bad.push(format!("{var}: {m}")),
            }
        }
    }
    bad
}

pub fn reset_defaults() {
    for d in KEYS {
        set(d.key, d.default);
    }
    *SECRET.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_indexed_in_order() {
        for (i, d) in KEYS.iter().enumerate() {
            assert_eq!(d.key as usize, i, "{}", d.name);
            assert_eq!(VALUES[i].load(Ordering::Relaxed), d.default);
        }
    }

    #[test]
    fn parse_validates() {
        let mq = lookup("MAX_QUERIES").unwrap();
        assert_eq!(parse(mq, Input::Int(100)), Ok(100));
        assert_eq!(parse(mq, Input::Text(" 250 ")), Ok(250));
        assert_eq!(parse(mq, Input::Real(300.0)), Ok(300));
        assert!(parse(mq, Input::Int(1)).is_err());
        assert!(parse(mq, Input::Real(1.5)).is_err());
        assert!(parse(mq, Input::Null).is_err());
        assert!(parse(mq, Input::Blob).is_err());
        assert!(parse(mq, Input::Text("lots")).is_err());
        let cap = lookup("capture").unwrap();
        assert_eq!(parse(cap, Input::Text("off")), Ok(0));
        assert_eq!(parse(cap, Input::Int(1)), Ok(1));
        assert!(parse(cap, Input::Int(2)).is_err());
        assert!(lookup("nope").is_none());
    }
}
