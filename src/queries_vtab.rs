//! `insights_queries`: one row per (database, fingerprint) with its counters.
//!
//! Rules: read-only; times in ms (REAL); instants UTC ISO-8601; percentiles
//! from the merged latency histogram (<= 2% relative error), clamped to the
//! observed min/max; NULL where nothing was timed.
//! Hidden column `scope`: 'all' (default) shows every process's totals from
//! the database's store plus this process's unflushed deltas; 'process'
//! shows this process's in-memory counters alone. Databases without a store
//! show the process's counters either way.

use crate::clock;
use crate::registry::{registry, Agg, Meta};
use crate::store;
use crate::vtab::{int, real_opt, register, text, text_opt, Scan, Source, Tab};
use rusqlite::types::Value;
use rusqlite::vtab::Module;
use rusqlite::{Connection, Result};
use std::ffi::{c_int, CStr};

pub struct Queries;

/// Index of the hidden `scope` column.
const COL_SCOPE: c_int = 26;

impl Source for Queries {
    const NAME: &'static str = "insights_queries";
    const SCHEMA: &'static CStr = c"CREATE TABLE x(database TEXT, fingerprint TEXT, query TEXT, kind TEXT, tables TEXT, tags TEXT, calls INTEGER, errors INTEGER, busy INTEGER, total_ms REAL, min_ms REAL, max_ms REAL, mean_ms REAL, stddev_ms REAL, p50_ms REAL, p95_ms REAL, p99_ms REAL, rows_returned INTEGER, rows_affected INTEGER, vm_steps INTEGER, fullscan_steps INTEGER, sorts INTEGER, autoindexes INTEGER, first_seen TEXT, last_seen TEXT, last_error TEXT, scope HIDDEN)";
    const PUSHDOWN: &'static [(c_int, bool)] = &[(COL_SCOPE, true)];

    fn rows(scan: &Scan) -> std::result::Result<Vec<Vec<Value>>, String> {
        let scope = match scan.eq(COL_SCOPE) {
            None => "all",
            Some(Value::Text(s)) if s.eq_ignore_ascii_case("all") => "all",
            Some(Value::Text(s)) if s.eq_ignore_ascii_case("process") => "process",
            Some(_) => return Err("scope must be 'all' or 'process'".into()),
        };
        let mut out = Vec::new();
        for db in registry().databases() {
            let stored = if scope == "all" {
                store::totals_with_pending(&db)
            } else {
                None
            };
            let mut snap: Vec<(std::sync::Arc<Meta>, Agg)> = match stored {
                Some(rows) => rows,
                None => db
                    .snapshot()
                    .into_iter()
                    .map(|(m, mut a)| {
                        a.first_seen = unix_of(a.first_seen);
                        a.last_seen = unix_of(a.last_seen);
                        (m, a)
                    })
                    .collect(),
            };
            snap.sort_by_key(|(m, _)| m.fingerprint);
            for (m, a) in snap {
                let mut r = row(&db.path, &m, &a);
                r.push(text(scope));
                out.push(r);
            }
        }
        Ok(out)
    }
}

fn unix_of(stamp: u64) -> u64 {
    if stamp == 0 {
        0
    } else {
        clock::stamp_unix_ms(stamp).max(1) as u64
    }
}

/// A row; `a.first_seen`/`a.last_seen` are unix milliseconds here.
pub fn row(database: &str, m: &Meta, a: &Agg) -> Vec<Value> {
    let timed = a.timed > 0;
    vec![
        text(database),
        text(crate::normalize::fingerprint_hex(m.fingerprint)),
        text(m.query.clone()),
        text(m.kind().as_str()),
        text(serde_json::to_string(m.tables()).unwrap_or_else(|_| "[]".into())),
        text(a.tags.as_deref().unwrap_or("{}").to_string()),
        int(a.calls),
        int(a.errors),
        int(a.busy),
        Value::Real(a.total_ns as f64 / 1e6),
        real_opt(timed.then(|| a.min_ns as f64 / 1e6)),
        real_opt(timed.then(|| a.max_ns as f64 / 1e6)),
        real_opt(a.mean_ms()),
        real_opt(a.stddev_ms()),
        real_opt(a.quantile_ms(0.50)),
        real_opt(a.quantile_ms(0.95)),
        real_opt(a.quantile_ms(0.99)),
        int(a.rows_returned),
        int(a.rows_affected),
        int(a.vm_steps),
        int(a.fullscan_steps),
        int(a.sorts),
        int(a.autoindexes),
        text_opt((a.first_seen > 0).then(|| clock::iso_ms(a.first_seen as i64))),
        text_opt((a.last_seen > 0).then(|| clock::iso_ms(a.last_seen as i64))),
        text_opt(a.last_error.clone()),
    ]
}

pub fn load(conn: &Connection) -> Result<()> {
    const MODULE: Module<'static, Tab<Queries>> = Module::eponymous_only_module();
    register(conn, &MODULE)
}
