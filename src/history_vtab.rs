//! `insights_history`: per time bucket (minute, hour, day) and fingerprint,
//! the counters flushed to the store of the calling connection's database;
//! rows with a NULL fingerprint are the totals per statement kind.
//!
//! Rules: read-only; reads the store only (call `insights_flush()` first to
//! include this process's last seconds); constraints on `bucket_start`
//! (=, <, <=, >, >=), `resolution` (=) and `fingerprint` (=) are pushed down
//! to the store's primary key / index, so a time-range query does not read
//! the whole store. `bucket_start` compares as an instant: ISO-8601 with `T`
//! and `Z`, SQLite's `datetime()` form and plain dates all work.

use crate::clock;
use crate::registry::registry;
use crate::store::{self, HistoryFilter};
use crate::vtab::{int, real_opt, register, text, text_opt, Op, Scan, Source, Tab};
use rusqlite::types::Value;
use rusqlite::vtab::Module;
use rusqlite::{Connection, Result};
use std::ffi::{c_int, CStr};

pub struct History;

const COL_BUCKET: c_int = 0;
const COL_RESOLUTION: c_int = 1;
const COL_FINGERPRINT: c_int = 2;

impl Source for History {
    const NAME: &'static str = "insights_history";
    const SCHEMA: &'static CStr = c"CREATE TABLE x(bucket_start TEXT, resolution TEXT, fingerprint TEXT, kind TEXT, query TEXT, calls INTEGER, errors INTEGER, busy INTEGER, total_ms REAL, mean_ms REAL, min_ms REAL, max_ms REAL, p50_ms REAL, p95_ms REAL, p99_ms REAL, rows_returned INTEGER, rows_affected INTEGER, vm_steps INTEGER, fullscan_steps INTEGER, sorts INTEGER, autoindexes INTEGER)";
    const PUSHDOWN: &'static [(c_int, bool)] = &[
        (COL_BUCKET, false),
        (COL_RESOLUTION, true),
        (COL_FINGERPRINT, true),
    ];

    fn rows(scan: &Scan) -> std::result::Result<Vec<Vec<Value>>, String> {
        let mut f = HistoryFilter::default();
        let mut empty = false;
        for (col, op, v) in &scan.constraints {
            let Value::Text(s) = v else {
                if matches!(v, Value::Null) {
                    empty = true; // comparisons with NULL match nothing
                    continue;
                }
                return Err(format!("{} must be compared with text", column_name(*col)));
            };
            match *col {
                COL_RESOLUTION => {
                    let r = s.to_ascii_lowercase();
                    if !store::RESOLUTIONS.iter().any(|(n, _)| *n == r) {
                        return Err(format!(
                            "resolution must be 'minute', 'hour' or 'day', got '{s}'"
                        ));
                    }
                    f.resolution = Some(r);
                }
                COL_FINGERPRINT => f.fingerprint = Some(s.to_ascii_lowercase()),
                COL_BUCKET => {
                    let canon = clock::parse_instant(s)
                        .map(clock::iso_ms)
                        .ok_or_else(|| format!("bucket_start must be compared with an instant like '2026-11-25T06:00:00Z', got '{s}'"))?;
                    f.bucket.push((op_sql(*op), canon));
                }
                _ => {}
            }
        }
        if empty {
            return Ok(Vec::new());
        }
        let db = registry().db(&scan.db_path);
        let rows = store::read_history(&db, &f)?;
        Ok(rows
            .into_iter()
            .map(|h| {
                let a = &h.agg;
                let timed = a.timed > 0;
                vec![
                    text(h.bucket_start),
                    text(h.resolution),
                    text_opt((!h.fingerprint.is_empty()).then_some(h.fingerprint)),
                    text(h.kind),
                    text_opt(h.query),
                    int(a.calls),
                    int(a.errors),
                    int(a.busy),
                    Value::Real(a.total_ns as f64 / 1e6),
                    real_opt(a.mean_ms()),
                    real_opt(timed.then(|| a.min_ns as f64 / 1e6)),
                    real_opt(timed.then(|| a.max_ns as f64 / 1e6)),
                    real_opt(a.quantile_ms(0.50)),
                    real_opt(a.quantile_ms(0.95)),
                    real_opt(a.quantile_ms(0.99)),
                    int(a.rows_returned),
                    int(a.rows_affected),
                    int(a.vm_steps),
                    int(a.fullscan_steps),
                    int(a.sorts),
                    int(a.autoindexes),
                ]
            })
            .collect())
    }
}

fn op_sql(op: Op) -> &'static str {
    op.sql()
}

fn column_name(col: c_int) -> &'static str {
    match col {
        COL_BUCKET => "bucket_start",
        COL_RESOLUTION => "resolution",
        _ => "fingerprint",
    }
}

pub fn load(conn: &Connection) -> Result<()> {
    const MODULE: Module<'static, Tab<History>> = Module::eponymous_only_module();
    register(conn, &MODULE)
}
