//! `insights_size_history`: size samples of the calling connection's main
//! database (a row per sampling round for the database itself, `type =
//! 'database'` and NULL name, and a row per table/index) with growth.
//!
//! Rules:
//! - Without `window_days`: every stored sample, each with its growth since
//!   the previous sample of the same object (`baseline_at`, `bytes_delta`,
//!   `rows_delta`, `bytes_per_day`, `rows_per_day`; NULL for the first).
//! - With `WHERE window_days = N` (N > 0, fractions allowed): one row per
//!   object still present in the latest sample, its latest sample and its
//!   growth since its first sample within the last N days — "which tables
//!   grow fastest this week" is `window_days = 7 ORDER BY bytes_per_day DESC`.
//! - `at` comparisons (=, <, <=, >, >=) and `name =` are pushed down; `at`
//!   compares as an instant (ISO-8601, `datetime()` text or a date).
//! - Samples are taken in the background every `size_sample_interval_ms`
//!   (see `sizes.rs`); databases without a store have no history.

use crate::clock;
use crate::registry::registry;
use crate::sizes::{self, Sample};
use crate::vtab::{register, text, Op, Scan, Source, Tab};
use rusqlite::types::Value;
use rusqlite::vtab::Module;
use rusqlite::{Connection, Result};
use std::collections::HashMap;
use std::ffi::{c_int, CStr};

pub struct SizeHistory;

const COL_AT: c_int = 0;
const COL_NAME: c_int = 3;
const COL_WINDOW: c_int = 16;
const DAY_MS: f64 = 86_400_000.0;

fn opt(v: Option<i64>) -> Value {
    v.map(Value::Integer).unwrap_or(Value::Null)
}

fn row(s: &Sample, base: Option<&Sample>, db: &str, window: Option<f64>) -> Vec<Value> {
    let elapsed = base.map(|b| (s.at_ms - b.at_ms) as f64);
    let delta = |a: Option<i64>, b: Option<i64>| match (a, b) {
        (Some(a), Some(b)) => Some(a - b),
        _ => None,
    };
    let bytes_d = base.and_then(|b| delta(s.bytes, b.bytes));
    let rows_d = base.and_then(|b| delta(s.rows, b.rows));
    let per_day = |d: Option<i64>| -> Value {
        match (d, elapsed) {
            (Some(d), Some(e)) if e > 0.0 => Value::Real(d as f64 * DAY_MS / e),
            _ => Value::Null,
        }
    };
    vec![
        text(clock::iso_ms(s.at_ms)),
        text(db),
        text(s.typ.clone()),
        if s.name.is_empty() {
            Value::Null
        } else {
            text(s.name.clone())
        },
        s.tbl_name.clone().map(text).unwrap_or(Value::Null),
        opt(s.pages),
        opt(s.bytes),
        opt(s.rows),
        opt(s.file_bytes),
        opt(s.wal_bytes),
        opt(s.freelist_bytes),
        base.map(|b| text(clock::iso_ms(b.at_ms)))
            .unwrap_or(Value::Null),
        opt(bytes_d),
        opt(rows_d),
        per_day(bytes_d),
        per_day(rows_d),
        window.map(Value::Real).unwrap_or(Value::Null),
    ]
}

impl Source for SizeHistory {
    const NAME: &'static str = "insights_size_history";
    const SCHEMA: &'static CStr = c"CREATE TABLE x(at TEXT, database TEXT, type TEXT, name TEXT, tbl_name TEXT, pages INTEGER, bytes INTEGER, rows INTEGER, file_bytes INTEGER, wal_bytes INTEGER, freelist_bytes INTEGER, baseline_at TEXT, bytes_delta INTEGER, rows_delta INTEGER, bytes_per_day REAL, rows_per_day REAL, window_days HIDDEN)";
    const PUSHDOWN: &'static [(c_int, bool)] =
        &[(COL_AT, false), (COL_NAME, true), (COL_WINDOW, true)];

    fn rows(scan: &Scan) -> std::result::Result<Vec<Vec<Value>>, String> {
        let mut window = None;
        let mut name = None;
        let mut at: Vec<(Op, i64)> = Vec::new();
        for (col, op, v) in &scan.constraints {
            if matches!(v, Value::Null) {
                return Ok(Vec::new()); // comparisons with NULL match nothing
            }
            match *col {
                COL_WINDOW => {
                    let d = match v {
                        Value::Integer(i) => *i as f64,
                        Value::Real(f) => *f,
                        Value::Text(t) => t.trim().parse::<f64>().map_err(|_| {
                            format!("window_days must be a number of days, got '{t}'")
                        })?,
                        _ => return Err("window_days must be a number of days".into()),
                    };
                    if !(d > 0.0 && d <= 36_500.0) {
                        return Err(format!("window_days must be > 0 and <= 36500, got {d}"));
                    }
                    window = Some(d);
                }
                COL_NAME => match v {
                    Value::Text(t) => name = Some(t.clone()),
                    _ => return Ok(Vec::new()),
                },
                COL_AT => {
                    let Value::Text(t) = v else {
                        return Err(
                            "at must be compared with an instant like '2026-11-25T06:00:00Z'"
                                .into(),
                        );
                    };
                    let ms = clock::parse_instant(t).ok_or_else(|| {
                        format!("at must be compared with an instant like '2026-11-25T06:00:00Z', got '{t}'")
                    })?;
                    at.push((*op, ms));
                }
                _ => {}
            }
        }
        let db = registry().db(&scan.db_path);
        let now = clock::unix_ms_now();
        let since = window.map(|d| now - (d * DAY_MS) as i64);
        let samples = sizes::read_samples(&db, since, None, name.as_deref())?;
        let keep = |ms: i64| {
            at.iter().all(|(op, v)| match op {
                Op::Eq => ms == *v,
                Op::Gt => ms > *v,
                Op::Ge => ms >= *v,
                Op::Lt => ms < *v,
                Op::Le => ms <= *v,
            })
        };
        let mut by_name: HashMap<&str, Vec<&Sample>> = HashMap::new();
        let mut order = Vec::new();
        for s in &samples {
            let e = by_name.entry(s.name.as_str()).or_default();
            if e.is_empty() {
                order.push(s.name.as_str());
            }
            e.push(s);
        }
        let mut out = Vec::new();
        match window {
            None => {
                for n in order {
                    let v = &by_name[n];
                    for (i, s) in v.iter().enumerate() {
                        if keep(s.at_ms) {
                            out.push(row(s, i.checked_sub(1).map(|j| v[j]), &db.path, None));
                        }
                    }
                }
                out.sort_by(|a, b| match (&a[0], &b[0]) {
                    (Value::Text(x), Value::Text(y)) => x.cmp(y),
                    _ => std::cmp::Ordering::Equal,
                });
            }
            Some(d) => {
                // objects still there: sampled in the latest round
                let latest = samples.iter().map(|s| s.at_ms).max().unwrap_or(0);
                for n in order {
                    let v = &by_name[n];
                    let (first, last) = (v[0], v[v.len() - 1]);
                    if last.at_ms != latest || !keep(last.at_ms) {
                        continue;
                    }
                    let base = (first.at_ms < last.at_ms).then_some(first);
                    let mut r = row(last, base, &db.path, Some(d));
                    if base.is_none() {
                        // one sample in the window: no growth measurable yet
                        r[11] = Value::Null;
                    }
                    out.push(r);
                }
            }
        }
        Ok(out)
    }
}

pub fn load(conn: &Connection) -> Result<()> {
    const MODULE: Module<'static, Tab<SizeHistory>> = Module::eponymous_only_module();
    register(conn, &MODULE)
}
