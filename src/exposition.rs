//! Exposition: the data model shared by the extension's exporters and the
//! standalone `sqlite-insights` exporter, and its two renderings: Prometheus
//! text format 0.0.4 and the JSON API.
//!
//! Rules:
//! - Pure std + serde_json + `crate::histogram`: the standalone exporter
//!   (exporter/) compiles this file as its own module, so nothing here may
//!   touch rusqlite, the registry or the store.
//! - Metric names start with `sqlite_insights_`; counters end in `_total`;
//!   durations are seconds; sizes are bytes; every family has HELP and TYPE
//!   lines and its samples are contiguous.
//! - Label values are escaped (`\\`, `\"`, `\n`); HELP text too (`\\`, `\n`).
//! - Latency histograms use the fixed `LE_BOUNDS` (seconds), aggregated from
//!   the fine log-linear histogram: a fine bucket counts under the first bound
//!   not below its midpoint (the value the fine histogram reports, <= 1.6%
//!   off), so `_bucket` series are cumulative and `le="+Inf"` equals `_count`.
//! - Per-fingerprint series exist only for the top-N fingerprints by total
//!   time (config `metrics_top_queries`); per-kind series are complete.

use crate::histogram::{self, Histogram};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Upper bounds (seconds) of the exported latency histogram buckets.
pub const LE_BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Coarse buckets: one per bound plus +Inf.
pub const N_COARSE: usize = LE_BOUNDS.len() + 1;
/// Longest query text put in the `query` label of `sqlite_insights_query_info`.
pub const MAX_QUERY_LABEL_BYTES: usize = 200;

/// Non-cumulative counts per coarse bucket (the last one is +Inf).
pub type Coarse = [u64; N_COARSE];

/// Index of the coarse bucket for a value in ns.
pub fn coarse_index(ns: f64) -> usize {
    let s = ns / 1e9;
    LE_BOUNDS
        .iter()
        .position(|b| s <= *b)
        .unwrap_or(LE_BOUNDS.len())
}

/// Fold a fine histogram into coarse buckets (added to `out`).
pub fn add_coarse(out: &mut Coarse, h: &Histogram) {
    for (idx, c) in h.buckets() {
        out[coarse_index(histogram::bucket_mid(idx))] += c as u64;
    }
}

/// Counters of one statement kind (or of a whole database).
#[derive(Clone, Debug, Default)]
pub struct KindStat {
    pub calls: u64,
    pub errors: u64,
    pub busy: u64,
    pub timed: u64,
    pub total_ns: u64,
    pub coarse: Coarse,
    pub rows_returned: u64,
    pub rows_affected: u64,
    pub fullscan_steps: u64,
}

impl KindStat {
    pub fn add(&mut self, o: &KindStat) {
        self.calls += o.calls;
        self.errors += o.errors;
        self.busy += o.busy;
        self.timed += o.timed;
        self.total_ns += o.total_ns;
        for (a, b) in self.coarse.iter_mut().zip(o.coarse.iter()) {
            *a += b;
        }
        self.rows_returned += o.rows_returned;
        self.rows_affected += o.rows_affected;
        self.fullscan_steps += o.fullscan_steps;
    }
}

/// One fingerprint's counters (cumulative), as both exporters see them.
#[derive(Clone, Debug, Default)]
pub struct QueryStat {
    pub fingerprint: String,
    pub query: String,
    pub kind: String,
    /// JSON array text.
    pub tables: String,
    pub calls: u64,
    pub errors: u64,
    pub busy: u64,
    pub timed: u64,
    pub total_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub hist: Histogram,
    pub rows_returned: u64,
    pub rows_affected: u64,
    pub vm_steps: u64,
    pub fullscan_steps: u64,
    pub sorts: u64,
    pub autoindexes: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub last_error: Option<String>,
}

impl QueryStat {
    /// Quantile in ms from the histogram, clamped to min/max.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let v = self.hist.quantile(q)?;
        let v = if self.max_ns >= self.min_ns && self.max_ns > 0 {
            v.clamp(self.min_ns as f64, self.max_ns as f64)
        } else {
            v
        };
        Some(v / 1e6)
    }

    pub fn mean_ms(&self) -> Option<f64> {
        (self.timed > 0).then(|| self.total_ns as f64 / 1e6 / self.timed as f64)
    }
}

/// Store (sidecar) state of a database, for the flush metrics.
#[derive(Clone, Debug, Default)]
pub struct StoreStat {
    pub up: bool,
    pub flushes: u64,
    pub failures: u64,
    pub last_flush_ms: i64,
    pub last_flush_duration_ms: f64,
}

/// Everything exported about one database.
#[derive(Clone, Debug, Default)]
pub struct DbMetrics {
    pub database: String,
    /// Per statement kind, complete (monotonic counters).
    pub kinds: BTreeMap<String, KindStat>,
    /// Top-N fingerprints by total time.
    pub top: Vec<QueryStat>,
    pub fingerprints: Option<u64>,
    pub evictions: Option<u64>,
    pub connections_open: Option<u64>,
    pub connections_peak: Option<u64>,
    pub connections_opened: Option<u64>,
    pub connections_closed: Option<u64>,
    pub store: Option<StoreStat>,
    pub file_bytes: Option<u64>,
    pub wal_bytes: Option<u64>,
    pub fs_free_bytes: Option<u64>,
    pub fs_size_bytes: Option<u64>,
}

/// One sample: name suffix (`_bucket`...), labels, value.
pub type Sample = (&'static str, Vec<(String, String)>, f64);

/// A metric family being built: name, type, help and samples.
pub struct Family {
    pub name: String,
    pub kind: &'static str,
    pub help: String,
    /// (name suffix, labels, value)
    pub samples: Vec<Sample>,
}

impl Family {
    pub fn new(name: &str, kind: &'static str, help: &str) -> Family {
        Family {
            name: name.to_string(),
            kind,
            help: help.to_string(),
            samples: Vec::new(),
        }
    }

    pub fn push(&mut self, labels: &[(&str, &str)], v: f64) {
        self.push_suffix("", labels, v);
    }

    pub fn push_suffix(&mut self, suffix: &'static str, labels: &[(&str, &str)], v: f64) {
        self.samples.push((
            suffix,
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            v,
        ));
    }

    /// Histogram samples (`_bucket` cumulative, `_sum`, `_count`).
    pub fn push_hist(&mut self, labels: &[(&str, &str)], coarse: &Coarse, sum_seconds: f64) {
        let mut cum = 0u64;
        for (i, c) in coarse.iter().enumerate() {
            cum += c;
            let le = if i < LE_BOUNDS.len() {
                fmt_f64(LE_BOUNDS[i])
            } else {
                "+Inf".to_string()
            };
            let mut l: Vec<(String, String)> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            l.push(("le".into(), le));
            self.samples.push(("_bucket", l, cum as f64));
        }
        self.push_suffix("_sum", labels, sum_seconds);
        self.push_suffix("_count", labels, cum as f64);
    }
}

/// Escape a label value.
pub fn escape_label(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as Prometheus text.
pub fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Render families; families with the same name are merged (first HELP/TYPE
/// wins); families without samples are left out.
pub fn render(families: Vec<Family>) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut by: BTreeMap<String, Family> = BTreeMap::new();
    for f in families {
        match by.get_mut(&f.name) {
            Some(g) => g.samples.extend(f.samples),
            None => {
                order.push(f.name.clone());
                by.insert(f.name.clone(), f);
            }
        }
    }
    let mut out = String::new();
    for name in order {
        let f = &by[&name];
        if f.samples.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (suffix, labels, v) in &f.samples {
            out.push_str(&f.name);
            out.push_str(suffix);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, val)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(val));
                }
                out.push('}');
            }
            out.push(' ');
            out.push_str(&fmt_f64(*v));
            out.push('\n');
        }
    }
    out
}

/// Process-wide facts for `sqlite_insights_build_info` and friends.
pub struct Globals {
    pub version: String,
    pub commit: String,
    pub sqlite_version: String,
    /// "extension" or "exporter".
    pub source: &'static str,
    pub max_queries: Option<u64>,
    pub errors_captured: Option<u64>,
    pub internal_errors: Option<u64>,
}

fn truncate_chars(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// All the families for a set of databases (before `render`).
pub fn families(g: &Globals, dbs: &[DbMetrics]) -> Vec<Family> {
    let mut out = Vec::new();
    let mut info = Family::new(
        "sqlite_insights_build_info",
        "gauge",
        "sqlite-insights build and host SQLite version (always 1)",
    );
    info.push(
        &[
            ("version", &g.version),
            ("commit", &g.commit),
            ("sqlite_version", &g.sqlite_version),
            ("source", g.source),
        ],
        1.0,
    );
    out.push(info);
    if let Some(m) = g.max_queries {
        let mut f = Family::new(
            "sqlite_insights_fingerprints_max",
            "gauge",
            "Fingerprints kept per database before the least used are evicted (max_queries)",
        );
        f.push(&[], m as f64);
        out.push(f);
    }
    if let Some(n) = g.errors_captured {
        let mut f = Family::new(
            "sqlite_insights_errors_captured_total",
            "counter",
            "Failed statements captured by this process (all databases)",
        );
        f.push(&[], n as f64);
        out.push(f);
    }
    if let Some(n) = g.internal_errors {
        let mut f = Family::new(
            "sqlite_insights_internal_errors_total",
            "counter",
            "Internal failures of the extension that were caught (never raised into statements)",
        );
        f.push(&[], n as f64);
        out.push(f);
    }

    // per kind
    let mut calls = Family::new(
        "sqlite_insights_statements_total",
        "counter",
        "Statement executions per database and statement kind",
    );
    let mut errors = Family::new(
        "sqlite_insights_statement_errors_total",
        "counter",
        "Failed statement executions per database and statement kind",
    );
    let mut busy = Family::new(
        "sqlite_insights_statement_busy_total",
        "counter",
        "Statement executions that returned SQLITE_BUSY, per database and kind",
    );
    let mut dur = Family::new(
        "sqlite_insights_statement_duration_seconds",
        "histogram",
        "Statement execution time per database and statement kind",
    );
    let mut rr = Family::new(
        "sqlite_insights_statement_rows_returned_total",
        "counter",
        "Rows returned by statements per database and kind",
    );
    let mut ra = Family::new(
        "sqlite_insights_statement_rows_affected_total",
        "counter",
        "Rows changed by statements per database and kind",
    );
    let mut fs = Family::new(
        "sqlite_insights_statement_fullscan_steps_total",
        "counter",
        "Full table scan steps per database and kind (rows read without an index)",
    );
    for d in dbs {
        for (kind, k) in &d.kinds {
            let l = [("database", d.database.as_str()), ("kind", kind.as_str())];
            calls.push(&l, k.calls as f64);
            errors.push(&l, k.errors as f64);
            busy.push(&l, k.busy as f64);
            dur.push_hist(&l, &k.coarse, k.total_ns as f64 / 1e9);
            rr.push(&l, k.rows_returned as f64);
            ra.push(&l, k.rows_affected as f64);
            fs.push(&l, k.fullscan_steps as f64);
        }
    }
    out.extend([calls, errors, busy, dur, rr, ra, fs]);

    // per fingerprint (top N)
    let mut qinfo = Family::new(
        "sqlite_insights_query_info",
        "gauge",
        "Normalized text of each exported fingerprint (always 1)",
    );
    let mut qcalls = Family::new(
        "sqlite_insights_query_calls_total",
        "counter",
        "Executions of a fingerprint (top fingerprints by total time)",
    );
    let mut qerr = Family::new(
        "sqlite_insights_query_errors_total",
        "counter",
        "Failed executions of a fingerprint",
    );
    let mut qdur = Family::new(
        "sqlite_insights_query_duration_seconds",
        "histogram",
        "Execution time of a fingerprint",
    );
    let mut qrr = Family::new(
        "sqlite_insights_query_rows_returned_total",
        "counter",
        "Rows returned by a fingerprint",
    );
    let mut qra = Family::new(
        "sqlite_insights_query_rows_affected_total",
        "counter",
        "Rows changed by a fingerprint",
    );
    let mut qfs = Family::new(
        "sqlite_insights_query_fullscan_steps_total",
        "counter",
        "Full table scan steps of a fingerprint",
    );
    let mut qvm = Family::new(
        "sqlite_insights_query_vm_steps_total",
        "counter",
        "Virtual machine steps of a fingerprint (work done)",
    );
    let mut qsort = Family::new(
        "sqlite_insights_query_sorts_total",
        "counter",
        "Sort operations of a fingerprint",
    );
    let mut qai = Family::new(
        "sqlite_insights_query_autoindexes_total",
        "counter",
        "Automatic (temporary) indexes built by a fingerprint",
    );
    for d in dbs {
        for q in &d.top {
            let l = [
                ("database", d.database.as_str()),
                ("fingerprint", q.fingerprint.as_str()),
                ("kind", q.kind.as_str()),
            ];
            let text = truncate_chars(&q.query, MAX_QUERY_LABEL_BYTES);
            qinfo.push(
                &[
                    ("database", d.database.as_str()),
                    ("fingerprint", q.fingerprint.as_str()),
                    ("kind", q.kind.as_str()),
                    ("query", text.as_str()),
                ],
                1.0,
            );
            qcalls.push(&l, q.calls as f64);
            qerr.push(&l, q.errors as f64);
            let mut c = [0u64; N_COARSE];
            add_coarse(&mut c, &q.hist);
            qdur.push_hist(&l, &c, q.total_ns as f64 / 1e9);
            qrr.push(&l, q.rows_returned as f64);
            qra.push(&l, q.rows_affected as f64);
            qfs.push(&l, q.fullscan_steps as f64);
            qvm.push(&l, q.vm_steps as f64);
            qsort.push(&l, q.sorts as f64);
            qai.push(&l, q.autoindexes as f64);
        }
    }
    out.extend([qinfo, qcalls, qerr, qdur, qrr, qra, qfs, qvm, qsort, qai]);

    // per database
    type Get = fn(&DbMetrics) -> Option<f64>;
    let per_db: [(&str, &'static str, &str, Get); 15] = [
        (
            "sqlite_insights_fingerprints",
            "gauge",
            "Distinct fingerprints held in memory for the database",
            |d| d.fingerprints.map(|v| v as f64),
        ),
        (
            "sqlite_insights_evictions_total",
            "counter",
            "Fingerprints evicted from memory because max_queries was reached",
            |d| d.evictions.map(|v| v as f64),
        ),
        (
            "sqlite_insights_connections_open",
            "gauge",
            "Connections to the database open in this process",
            |d| d.connections_open.map(|v| v as f64),
        ),
        (
            "sqlite_insights_connections_peak",
            "gauge",
            "Most connections to the database open at once in this process",
            |d| d.connections_peak.map(|v| v as f64),
        ),
        (
            "sqlite_insights_connections_opened_total",
            "counter",
            "Connections to the database opened in this process",
            |d| d.connections_opened.map(|v| v as f64),
        ),
        (
            "sqlite_insights_connections_closed_total",
            "counter",
            "Connections to the database closed in this process",
            |d| d.connections_closed.map(|v| v as f64),
        ),
        (
            "sqlite_insights_store_up",
            "gauge",
            "1 when the database's sidecar store was written or read without error",
            |d| d.store.as_ref().map(|s| s.up as u8 as f64),
        ),
        (
            "sqlite_insights_store_flushes_total",
            "counter",
            "Successful flushes of this process's counters to the sidecar store",
            |d| d.store.as_ref().map(|s| s.flushes as f64),
        ),
        (
            "sqlite_insights_store_flush_failures_total",
            "counter",
            "Failed flushes to the sidecar store (retried at the next interval)",
            |d| d.store.as_ref().map(|s| s.failures as f64),
        ),
        (
            "sqlite_insights_store_last_flush_timestamp_seconds",
            "gauge",
            "Unix time of the last successful flush to the sidecar store",
            |d| {
                d.store
                    .as_ref()
                    .filter(|s| s.last_flush_ms > 0)
                    .map(|s| s.last_flush_ms as f64 / 1e3)
            },
        ),
        (
            "sqlite_insights_store_last_flush_duration_seconds",
            "gauge",
            "How long the last flush to the sidecar store took",
            |d| {
                d.store
                    .as_ref()
                    .filter(|s| s.last_flush_ms > 0)
                    .map(|s| s.last_flush_duration_ms / 1e3)
            },
        ),
        (
            "sqlite_insights_database_size_bytes",
            "gauge",
            "Size of the database file",
            |d| d.file_bytes.map(|v| v as f64),
        ),
        (
            "sqlite_insights_wal_size_bytes",
            "gauge",
            "Size of the database's write-ahead log (0 without one)",
            |d| d.wal_bytes.map(|v| v as f64),
        ),
        (
            "sqlite_insights_filesystem_free_bytes",
            "gauge",
            "Free bytes (for unprivileged users) on the filesystem holding the database",
            |d| d.fs_free_bytes.map(|v| v as f64),
        ),
        (
            "sqlite_insights_filesystem_size_bytes",
            "gauge",
            "Size of the filesystem holding the database",
            |d| d.fs_size_bytes.map(|v| v as f64),
        ),
    ];
    for (name, kind, help, get) in per_db {
        let mut f = Family::new(name, kind, help);
        for d in dbs {
            if let Some(v) = get(d) {
                f.push(&[("database", d.database.as_str())], v);
            }
        }
        out.push(f);
    }
    out
}

/// File sizes and free space for a database path (None for `:memory:`).
pub fn file_facts(db_path: &str) -> (Option<u64>, Option<u64>, Option<u64>, Option<u64>) {
    let p = std::path::Path::new(db_path);
    if db_path.is_empty() || db_path.starts_with(':') || !p.is_absolute() && !p.exists() {
        return (None, None, None, None);
    }
    let file = std::fs::metadata(p).ok().map(|m| m.len());
    if file.is_none() {
        return (None, None, None, None);
    }
    let wal = std::fs::metadata(format!("{db_path}-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    let (free, size) = statvfs(p.parent().unwrap_or(p));
    (file, Some(wal), free, size)
}

#[cfg(unix)]
fn statvfs(dir: &std::path::Path) -> (Option<u64>, Option<u64>) {
    use std::os::unix::ffi::OsStrExt;
    let dir = if dir.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        dir
    };
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return (None, None);
    };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return (None, None);
    }
    let frag = st.f_frsize as u64;
    (
        Some(st.f_bavail as u64 * frag),
        Some(st.f_blocks as u64 * frag),
    )
}

#[cfg(not(unix))]
fn statvfs(_dir: &std::path::Path) -> (Option<u64>, Option<u64>) {
    (None, None)
}

// ------------------------------------------------------------------ JSON

fn iso(ms: i64) -> Value {
    if ms <= 0 {
        return Value::Null;
    }
    Value::String(iso_ms(ms))
}

/// UTC ISO-8601 with milliseconds (same form as the SQL surface).
pub fn iso_ms(unix_ms: i64) -> String {
    crate::clock::iso_ms(unix_ms)
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn opt_ms(v: Option<f64>) -> Value {
    v.map(|x| json!(round3(x))).unwrap_or(Value::Null)
}

/// One query as the JSON API shows it.
pub fn query_json(database: &str, q: &QueryStat) -> Value {
    let timed = q.timed > 0;
    json!({
        "database": database,
        "fingerprint": q.fingerprint,
        "query": q.query,
        "kind": q.kind,
        "tables": serde_json::from_str::<Value>(&q.tables).unwrap_or(json!([])),
        "calls": q.calls,
        "errors": q.errors,
        "busy": q.busy,
        "total_ms": round3(q.total_ns as f64 / 1e6),
        "mean_ms": opt_ms(q.mean_ms()),
        "min_ms": opt_ms(timed.then(|| q.min_ns as f64 / 1e6)),
        "max_ms": opt_ms(timed.then(|| q.max_ns as f64 / 1e6)),
        "p50_ms": opt_ms(q.quantile_ms(0.50)),
        "p95_ms": opt_ms(q.quantile_ms(0.95)),
        "p99_ms": opt_ms(q.quantile_ms(0.99)),
        "rows_returned": q.rows_returned,
        "rows_affected": q.rows_affected,
        "vm_steps": q.vm_steps,
        "fullscan_steps": q.fullscan_steps,
        "sorts": q.sorts,
        "autoindexes": q.autoindexes,
        "first_seen": iso(q.first_seen_ms),
        "last_seen": iso(q.last_seen_ms),
        "last_error": q.last_error,
    })
}

/// Sort keys accepted by `/api/queries?sort=`.
/// The built-in dashboard page (served by the extension and the exporter).
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");
/// Its Content-Security-Policy: self-contained, talks only to its own origin.
pub const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `/` and `/index.html`.
pub fn dashboard_response() -> crate::http::Response {
    crate::http::Response::new(200, "text/html; charset=utf-8", DASHBOARD_HTML)
        .with_header("Content-Security-Policy", DASHBOARD_CSP)
        .with_header("Referrer-Policy", "no-referrer")
}

/// `/metrics` with a rendered exposition.
pub fn metrics_response(body: String) -> crate::http::Response {
    crate::http::Response::new(200, "text/plain; version=0.0.4; charset=utf-8", body)
}

/// `/api/queries`: sort, cut to `limit`, answer (400 on an unknown sort key).
pub fn queries_response(
    rows: &mut [(String, QueryStat)],
    sort: &str,
    limit: usize,
    scope: &str,
) -> crate::http::Response {
    if !sort_queries(rows, sort) {
        return crate::http::Response::json_error(
            400,
            &format!("sort must be one of {}", SORT_KEYS.join(", ")),
        );
    }
    let total = rows.len();
    let list: Vec<Value> = rows
        .iter()
        .take(limit)
        .map(|(d, s)| query_json(d, s))
        .collect();
    crate::http::Response::json(
        &json!({ "sort": sort, "scope": scope, "total": total, "queries": list }),
    )
}

pub const SORT_KEYS: [&str; 7] = ["total", "calls", "p99", "errors", "rows", "mean", "last"];

/// Sort queries (descending) by one of `SORT_KEYS`; false for an unknown key.
pub fn sort_queries(v: &mut [(String, QueryStat)], key: &str) -> bool {
    let f: fn(&QueryStat) -> f64 = match key {
        "total" => |q| q.total_ns as f64,
        "calls" => |q| q.calls as f64,
        "p99" => |q| q.quantile_ms(0.99).unwrap_or(-1.0),
        "errors" => |q| q.errors as f64,
        "rows" => |q| (q.rows_returned + q.rows_affected) as f64,
        "mean" => |q| q.mean_ms().unwrap_or(-1.0),
        "last" => |q| q.last_seen_ms as f64,
        _ => return false,
    };
    v.sort_by(|a, b| {
        f(&b.1)
            .partial_cmp(&f(&a.1))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.1.fingerprint.cmp(&b.1.fingerprint))
    });
    true
}

/// One time bucket of counters (all kinds of a database, or one fingerprint).
#[derive(Clone, Debug, Default)]
pub struct Point {
    pub start_ms: i64,
    pub width_ms: i64,
    pub calls: u64,
    pub errors: u64,
    pub busy: u64,
    pub timed: u64,
    pub total_ns: u64,
    pub hist: Histogram,
    pub rows_returned: u64,
    pub rows_affected: u64,
}

impl Point {
    pub fn add(&mut self, o: &Point) {
        self.calls += o.calls;
        self.errors += o.errors;
        self.busy += o.busy;
        self.timed += o.timed;
        self.total_ns += o.total_ns;
        self.hist.merge(&o.hist);
        self.rows_returned += o.rows_returned;
        self.rows_affected += o.rows_affected;
    }
}

fn q_ms(h: &Histogram, q: f64) -> Value {
    h.quantile(q)
        .map(|v| json!(round3(v / 1e6)))
        .unwrap_or(Value::Null)
}

/// A series of points as the JSON API shows it.
pub fn history_json(database: &str, resolution: &str, source: &str, pts: &[Point]) -> Value {
    let points: Vec<Value> = pts
        .iter()
        .map(|p| {
            let secs = (p.width_ms.max(1)) as f64 / 1e3;
            json!({
                "t": iso_ms(p.start_ms),
                "t_ms": p.start_ms,
                "calls": p.calls,
                "errors": p.errors,
                "busy": p.busy,
                "qps": round3(p.calls as f64 / secs),
                "error_rate": if p.calls > 0 { json!(round3(p.errors as f64 / p.calls as f64 * 1e3) / 1e3) } else { Value::Null },
                "mean_ms": if p.timed > 0 { json!(round3(p.total_ns as f64 / 1e6 / p.timed as f64)) } else { Value::Null },
                "p50_ms": q_ms(&p.hist, 0.50),
                "p95_ms": q_ms(&p.hist, 0.95),
                "p99_ms": q_ms(&p.hist, 0.99),
                "rows_returned": p.rows_returned,
                "rows_affected": p.rows_affected,
            })
        })
        .collect();
    json!({
        "database": database,
        "resolution": resolution,
        "source": source,
        "points": points,
    })
}

/// Query string parameters (percent-decoded; `+` is a space).
pub fn parse_query(q: &str) -> Map<String, Value> {
    let mut m = Map::new();
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        if let (Some(k), Some(v)) = (percent_decode(k), percent_decode(v)) {
            m.insert(k, Value::String(v));
        }
    }
    m
}

/// Percent-decode; None for malformed escapes or non-UTF-8 results.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = b.get(i + 1..i + 3)?;
                let h = std::str::from_utf8(h).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Parse an instant for `since=`: unix ms / seconds digits, or ISO-8601
/// (`2026-11-25T06:35:39.123Z`, `2026-11-25 06:35`, `2026-11-25`), UTC.
pub fn parse_since(s: &str) -> Option<i64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
        let n: i64 = s.parse().ok()?;
        // seconds before year 2286 have at most 10 digits
        return Some(if s.len() <= 10 { n * 1000 } else { n });
    }
    crate::clock::parse_instant(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_formats() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(fmt_f64(3.0), "3");
        assert_eq!(fmt_f64(0.25), "0.25");
        assert_eq!(fmt_f64(f64::INFINITY), "+Inf");
        assert_eq!(fmt_f64(0.0001), "0.0001");
    }

    #[test]
    fn histogram_is_cumulative_and_counts_match() {
        let mut h = Histogram::new();
        for ns in [50_000u64, 2_000_000, 2_000_000, 30_000_000_000] {
            h.record(ns);
        }
        let mut c = [0u64; N_COARSE];
        add_coarse(&mut c, &h);
        let mut f = Family::new("x_seconds", "histogram", "h");
        f.push_hist(&[("database", "d")], &c, 1.0);
        let text = render(vec![f]);
        assert!(text.contains("x_seconds_bucket{database=\"d\",le=\"0.0001\"} 1\n"));
        assert!(text.contains("x_seconds_bucket{database=\"d\",le=\"0.0025\"} 3\n"));
        assert!(text.contains("x_seconds_bucket{database=\"d\",le=\"10\"} 3\n"));
        assert!(text.contains("x_seconds_bucket{database=\"d\",le=\"+Inf\"} 4\n"));
        assert!(text.contains("x_seconds_count{database=\"d\"} 4\n"));
    }

    #[test]
    fn instants_round_trip() {
        let ms = 1_795_000_000_123;
        let s = iso_ms(ms);
        assert_eq!(parse_since(&s), Some(ms));
        assert_eq!(parse_since("1795000000"), Some(1_795_000_000_000));
        assert_eq!(
            parse_since("2026-11-25"),
            parse_since("2026-11-25T00:00:00Z")
        );
        assert_eq!(parse_since("2026-13-25"), None);
        assert_eq!(parse_since("yesterday"), None);
    }

    #[test]
    fn query_strings() {
        let m = parse_query("a=1&b=x%20y+z&c&bad=%zz");
        assert_eq!(m["a"], "1");
        assert_eq!(m["b"], "x y z");
        assert_eq!(m["c"], "");
        assert!(!m.contains_key("bad"));
    }
}
