//! `insights_resources`: what each process using a monitored database costs
//! (CPU, resident memory, SQLite memory and its high-water mark), how the
//! page caches of its connections to that database do (hits, misses, writes,
//! spills: cumulative counters), and the database's file sizes and free
//! disk; and the same over time.
//!
//! Rules:
//! - Without `resolution`: per database with open connections (and the
//!   caller's database), a row for this process (live, `status = 'self'`)
//!   and one per other live process using the same store (its last flush
//!   round, `at` says when; see `insights_connections` for liveness).
//!   `cpu_percent` is over the last flush round (100 = one core).
//! - With `WHERE resolution = 'minute' | 'hour' | 'day'`: one row per bucket,
//!   database and process: CPU seconds and cache counters used within the
//!   bucket, `cpu_percent` over the time covered by its samples, memory and
//!   WAL bytes at their highest, free disk at its lowest.
//! - Page-cache counters cover the connections capture samples for us (see
//!   `resources.rs`); `connections_sampled` says how many live ones.

use crate::clock;
use crate::connections;
use crate::registry::registry;
use crate::resources::{self, CacheCounters};
use crate::vtab::text;
use crate::vtab::{register, Scan, Source, Tab};
use rusqlite::types::Value;
use rusqlite::vtab::Module;
use rusqlite::{Connection, Result};
use std::ffi::{c_int, CStr};
use std::sync::atomic::Ordering;

pub struct Resources;

const COL_RESOLUTION: c_int = 23;

fn i(v: i64) -> Value {
    Value::Integer(v)
}
fn oi(v: Option<i64>) -> Value {
    v.map(Value::Integer).unwrap_or(Value::Null)
}
fn of(v: Option<f64>) -> Value {
    v.map(Value::Real).unwrap_or(Value::Null)
}

fn cache_cols(c: &CacheCounters) -> [Value; 5] {
    [
        i(c.hits),
        i(c.misses),
        i(c.writes),
        i(c.spills),
        of(c.hit_ratio()),
    ]
}

impl Source for Resources {
    const NAME: &'static str = "insights_resources";
    const SCHEMA: &'static CStr = c"CREATE TABLE x(database TEXT, pid INTEGER, host TEXT, status TEXT, at TEXT, cpu_user_s REAL, cpu_system_s REAL, cpu_percent REAL, rss_bytes INTEGER, rss_peak_bytes INTEGER, sqlite_memory_bytes INTEGER, sqlite_memory_highwater_bytes INTEGER, cache_hits INTEGER, cache_misses INTEGER, cache_writes INTEGER, cache_spills INTEGER, cache_hit_ratio REAL, connections_sampled INTEGER, file_bytes INTEGER, wal_bytes INTEGER, shm_bytes INTEGER, disk_free_bytes INTEGER, bucket_start TEXT, resolution HIDDEN)";
    const PUSHDOWN: &'static [(c_int, bool)] = &[(COL_RESOLUTION, true)];

    fn rows(call: &Scan) -> std::result::Result<Vec<Vec<Value>>, String> {
        let resolution = match crate::vtab::resolution_arg(call.eq(COL_RESOLUTION))? {
            Some(None) => return Ok(Vec::new()), // = NULL matches nothing
            Some(r) => r,
            None => None,
        };
        let mut out = Vec::new();
        let now = resources::sample_process();
        let pct = resources::live_cpu_percent(&now);
        for db in registry().databases() {
            let mine = db.path == call.db_path;
            if !mine && db.connections_open.load(Ordering::Relaxed) == 0 {
                continue;
            }
            if let Some(res) = &resolution {
                for b in connections::resource_history(&db, res)? {
                    let cpu = b.cpu_user_s + b.cpu_system_s;
                    let mut r = vec![
                        text(db.path.clone()),
                        i(b.pid),
                        text(b.host),
                        Value::Null,
                        Value::Null,
                        Value::Real(b.cpu_user_s),
                        Value::Real(b.cpu_system_s),
                        of((b.covered_ms > 0).then(|| cpu * 1e5 / b.covered_ms as f64)),
                        i(b.rss_max),
                        Value::Null,
                        i(b.sqlite_memory_max),
                        Value::Null,
                    ];
                    r.extend(cache_cols(&b.cache));
                    r.extend([
                        Value::Null,
                        oi(b.file_bytes),
                        oi(b.wal_bytes_max),
                        oi(b.shm_bytes),
                        oi(b.disk_free_min),
                        text(b.bucket_start),
                        text(res.clone()),
                    ]);
                    out.push(r);
                }
                continue;
            }
            if mine {
                unsafe { resources::sample_current(call.db) };
            }
            let l = connections::live(&db);
            let (cache, sampled) = if resources::conns_fed() {
                (l.cache, l.sampled)
            } else if mine {
                (unsafe { resources::read_db_cache(call.db) }, 1)
            } else {
                (CacheCounters::default(), 0)
            };
            let mut r = vec![
                text(db.path.clone()),
                i(std::process::id() as i64),
                text(connections::hostname()),
                text("self"),
                text(clock::iso_ms(now.at_ms)),
                Value::Real(now.cpu_user_s),
                Value::Real(now.cpu_system_s),
                of(pct),
                i(now.rss_bytes),
                i(now.rss_peak_bytes),
                i(now.sqlite_memory_bytes),
                i(now.sqlite_memory_highwater_bytes),
            ];
            r.extend(cache_cols(&cache));
            r.extend([
                i(sampled as i64),
                oi(l.file_bytes),
                oi(l.wal_bytes),
                oi(l.shm_bytes),
                oi(l.disk_free_bytes),
                Value::Null,
                Value::Null,
            ]);
            out.push(r);
            if let Some(procs) = connections::processes(&db) {
                for p in procs?.into_iter().filter(|p| p.status != "self") {
                    let mut r = vec![
                        text(db.path.clone()),
                        i(p.pid),
                        text(p.host.clone()),
                        text(p.status),
                        text(clock::iso_ms(p.last_seen_ms)),
                        of(p.cpu_user_s),
                        of(p.cpu_system_s),
                        of(p.cpu_percent),
                        oi(p.rss_bytes),
                        oi(p.rss_peak_bytes),
                        oi(p.sqlite_memory_bytes),
                        oi(p.sqlite_memory_highwater_bytes),
                    ];
                    r.extend(cache_cols(&p.cache));
                    r.extend([
                        oi(p.connections_sampled),
                        oi(p.file_bytes),
                        oi(p.wal_bytes),
                        oi(p.shm_bytes),
                        oi(p.disk_free_bytes),
                        Value::Null,
                        Value::Null,
                    ]);
                    out.push(r);
                }
            }
        }
        Ok(out)
    }
}

pub fn load(conn: &Connection) -> Result<()> {
    const MODULE: Module<'static, Tab<Resources>> = Module::eponymous_only_module();
    register(conn, &MODULE)
}
