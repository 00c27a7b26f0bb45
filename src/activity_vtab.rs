//! `insights_activity`: calls, errors, time and rows per tag value (from
//! `insights_tag()` and sqlcommenter comments) of the calling connection's
//! database — "which user/app/route runs the expensive queries".
//!
//! Rules: read-only. The hidden column `resolution` selects what is shown:
//! 'total' (default: every process's totals from the store plus this
//! process's unflushed deltas, or this process's alone without a store), or
//! 'minute'/'hour'/'day' (flushed buckets, `bucket_start` set), e.g.
//! `SELECT * FROM insights_activity('hour')`.

use crate::clock;
use crate::registry::{lock, registry, Agg};
use crate::store;
use crate::vtab::{int, real_opt, register, text, text_opt, Scan, Source, Tab};
use rusqlite::types::Value;
use rusqlite::vtab::Module;
use rusqlite::{Connection, Result};
use std::ffi::{c_int, CStr};

pub struct Activity;

const COL_RESOLUTION: c_int = 13;

fn row(db: &str, bucket: Option<String>, key: &str, value: &str, a: &Agg, res: &str) -> Vec<Value> {
    vec![
        text(db),
        text_opt(bucket),
        text(key),
        text(value),
        int(a.calls),
        int(a.errors),
        Value::Real(a.total_ns as f64 / 1e6),
        real_opt(a.mean_ms()),
        real_opt(a.quantile_ms(0.95)),
        int(a.rows_returned),
        int(a.rows_affected),
        text_opt((a.first_seen > 0).then(|| clock::iso_ms(a.first_seen as i64))),
        text_opt((a.last_seen > 0).then(|| clock::iso_ms(a.last_seen as i64))),
        text(res),
    ]
}

impl Source for Activity {
    const NAME: &'static str = "insights_activity";
    const SCHEMA: &'static CStr = c"CREATE TABLE x(database TEXT, bucket_start TEXT, key TEXT, value TEXT, calls INTEGER, errors INTEGER, total_ms REAL, mean_ms REAL, p95_ms REAL, rows_returned INTEGER, rows_affected INTEGER, first_seen TEXT, last_seen TEXT, resolution HIDDEN)";
    const PUSHDOWN: &'static [(c_int, bool)] = &[(COL_RESOLUTION, true)];

    fn rows(scan: &Scan) -> std::result::Result<Vec<Vec<Value>>, String> {
        let res = match scan.eq(COL_RESOLUTION) {
            None => "total".to_string(),
            Some(Value::Text(s)) => s.to_ascii_lowercase(),
            Some(_) => return Err("resolution must be 'total', 'minute', 'hour' or 'day'".into()),
        };
        let db = registry().db(&scan.db_path);
        let mut out = Vec::new();
        match res.as_str() {
            "total" => {
                let mut all: Vec<((String, String), Agg)> = match store::activity_with_pending(&db)
                {
                    Some(v) => v,
                    None => db
                        .activity
                        .entries()
                        .into_iter()
                        .map(|e| {
                            let mut a = lock(&e.stats).clone();
                            for t in [&mut a.first_seen, &mut a.last_seen] {
                                if *t > 0 {
                                    *t = clock::stamp_unix_ms(*t) as u64;
                                }
                            }
                            ((e.key.clone(), e.value.clone()), a)
                        })
                        .collect(),
                };
                all.sort_by(|a, b| a.0.cmp(&b.0));
                for ((k, v), a) in all {
                    if a.calls > 0 || a.errors > 0 {
                        out.push(row(&db.path, None, &k, &v, &a, "total"));
                    }
                }
            }
            "minute" | "hour" | "day" => {
                for b in store::read_activity_history(&db, &res)? {
                    out.push(row(
                        &db.path,
                        Some(b.bucket_start),
                        &b.key,
                        &b.value,
                        &b.agg,
                        &b.resolution,
                    ));
                }
            }
            other => {
                return Err(format!(
                    "resolution must be 'total', 'minute', 'hour' or 'day', got '{other}'"
                ))
            }
        }
        Ok(out)
    }
}

pub fn load(conn: &Connection) -> Result<()> {
    const MODULE: Module<'static, Tab<Activity>> = Module::eponymous_only_module();
    register(conn, &MODULE)
}
