//! `insights_connections`: who holds connections to each monitored database,
//! in this process and in every other process using the same store, with
//! lock contention and open failures; and the same counts over time.
//!
//! Rules:
//! - Without `resolution`: per database, one `scope = 'process'` row per live
//!   process (this one from its live counters, `status = 'self'`; others from
//!   their last round in the store, `status` 'alive' when their pid was
//!   checked on this host, 'recent' for other hosts, seen within 3 flush
//!   intervals) and one `scope = 'all'` row: processes alive, connections
//!   open now (sum), the highest total seen (`connections_peak`, sampled at
//!   flush rounds, or the current sum if higher), and opened/closed/busy/
//!   locked/open_failures over the store's retention (day buckets) plus this
//!   process's counts not yet written. Process rows' counters are that
//!   process's lifetime counters.
//! - With `WHERE resolution = 'minute' | 'hour' | 'day'`: one `scope = 'all'`
//!   row per bucket and database: `connections_peak` = highest total seen in
//!   the bucket, `processes` = most processes, counters = amounts within it.
//! - Databases without a store show this process only.
//! - Failed opens (seen through the error log) of paths that never opened
//!   in this process get a `scope = 'all'` row of their own.

use crate::clock;
use crate::connections::{self, ProcRow};
use crate::registry::registry;
use crate::vtab::{register, text, Scan, Source, Tab};
use rusqlite::types::Value;
use rusqlite::vtab::Module;
use rusqlite::{Connection, Result};
use std::ffi::{c_int, CStr};
use std::sync::atomic::Ordering;

pub struct Connections;

const COL_RESOLUTION: c_int = 16;

fn i(v: i64) -> Value {
    Value::Integer(v)
}

fn ts(ms: i64) -> Value {
    if ms > 0 {
        text(clock::iso_ms(ms))
    } else {
        Value::Null
    }
}

fn proc_row(db: &str, p: &ProcRow) -> Vec<Value> {
    vec![
        text(db),
        text("process"),
        i(p.pid),
        text(p.host.clone()),
        text(p.status),
        ts(p.started_ms),
        ts(p.last_seen_ms),
        i(1),
        i(p.connections_open),
        i(p.connections_peak),
        i(p.connections_opened),
        i(p.connections_closed),
        i(p.busy),
        i(p.locked),
        i(p.open_failures),
        Value::Null,
        Value::Null,
    ]
}

impl Source for Connections {
    const NAME: &'static str = "insights_connections";
    const SCHEMA: &'static CStr = c"CREATE TABLE x(database TEXT, scope TEXT, pid INTEGER, host TEXT, status TEXT, started_at TEXT, last_seen TEXT, processes INTEGER, connections_open INTEGER, connections_peak INTEGER, connections_opened INTEGER, connections_closed INTEGER, busy INTEGER, locked INTEGER, open_failures INTEGER, bucket_start TEXT, resolution HIDDEN)";
    const PUSHDOWN: &'static [(c_int, bool)] = &[(COL_RESOLUTION, true)];

    fn rows(scan: &Scan) -> std::result::Result<Vec<Vec<Value>>, String> {
        let resolution = match crate::vtab::resolution_arg(scan.eq(COL_RESOLUTION))? {
            Some(None) => return Ok(Vec::new()), // = NULL matches nothing
            Some(r) => r,
            None => None,
        };
        let mut out = Vec::new();
        for db in registry().databases() {
            if db.connections_opened.load(Ordering::Relaxed) == 0 {
                continue;
            }
            if let Some(res) = &resolution {
                for b in connections::connection_history(&db, res)? {
                    out.push(vec![
                        text(db.path.clone()),
                        text("all"),
                        Value::Null,
                        Value::Null,
                        Value::Null,
                        Value::Null,
                        Value::Null,
                        i(b.processes_max),
                        Value::Null,
                        i(b.connections_max),
                        i(b.opened),
                        i(b.closed),
                        i(b.busy),
                        i(b.locked),
                        i(b.open_failures),
                        text(b.bucket_start),
                        text(res.clone()),
                    ]);
                }
                continue;
            }
            let l = connections::live(&db);
            let me = ProcRow {
                pid: std::process::id() as i64,
                host: connections::hostname(),
                started_ms: connections::own_started_ms(),
                last_seen_ms: clock::unix_ms_now(),
                status: "self",
                connections_open: l.open as i64,
                connections_peak: l.peak as i64,
                connections_opened: l.opened as i64,
                connections_closed: l.closed as i64,
                busy: l.busy as i64,
                locked: l.locked as i64,
                open_failures: l.open_failures as i64,
                ..Default::default()
            };
            let others: Vec<ProcRow> = match connections::processes(&db) {
                Some(r) => r?.into_iter().filter(|p| p.status != "self").collect(),
                None => Vec::new(),
            };
            let mut rows = vec![proc_row(&db.path, &me)];
            rows.extend(others.iter().map(|p| proc_row(&db.path, p)));
            let open_now: i64 =
                me.connections_open + others.iter().map(|p| p.connections_open).sum::<i64>();
            let nproc = (me.connections_open > 0) as i64 + others.len() as i64;
            let u = connections::unsent(&db);
            let all = match connections::totals(&db) {
                Some(t) => [
                    t[0].max(open_now).max(me.connections_peak),
                    t[1] + u[0],
                    t[2] + u[1],
                    t[3] + u[2],
                    t[4] + u[3],
                    t[5] + u[4],
                ],
                None => [
                    me.connections_peak.max(open_now),
                    me.connections_opened,
                    me.connections_closed,
                    me.busy,
                    me.locked,
                    me.open_failures,
                ],
            };
            rows.push(vec![
                text(db.path.clone()),
                text("all"),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                i(nproc),
                i(open_now),
                i(all[0]),
                i(all[1]),
                i(all[2]),
                i(all[3]),
                i(all[4]),
                i(all[5]),
                Value::Null,
                Value::Null,
            ]);
            out.extend(rows);
        }
        if resolution.is_none() {
            // failed opens of paths that never opened here: visible too
            for (path, n) in connections::unmonitored_open_failures() {
                let mut r = vec![text(path), text("all")];
                r.extend(std::iter::repeat_n(Value::Null, 5));
                r.extend([i(0), i(0), i(0), i(0), i(0), i(0), i(0), i(n as i64)]);
                r.extend([Value::Null, Value::Null]);
                out.push(r);
            }
        }
        Ok(out)
    }
}

pub fn load(conn: &Connection) -> Result<()> {
    const MODULE: Module<'static, Tab<Connections>> = Module::eponymous_only_module();
    register(conn, &MODULE)
}
