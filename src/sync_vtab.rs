//! `insights_sync` (one row per database, peer and source, judged now) and
//! `insights_sync_history` (the samples the flusher stored for the calling
//! connection's database, one per flush round and peer).
//!
//! Rules: read-only; instants UTC ISO-8601; `insights_sync_history.at`
//! comparisons (=, <, <=, >, >=) are pushed down to the store's time index
//! and compare as instants (ISO-8601, SQLite's `datetime()` form, dates).

use crate::clock;
use crate::registry::registry;
use crate::sync;
use crate::vtab::{register, text, Op, Scan, Source, Tab};
use rusqlite::types::Value;
use rusqlite::vtab::Module;
use rusqlite::{Connection, Result};
use std::ffi::{c_int, CStr};

pub struct Sync;

impl Source for Sync {
    const NAME: &'static str = "insights_sync";
    const SCHEMA: &'static CStr = c"CREATE TABLE x(database TEXT, node TEXT, peer TEXT, source TEXT, role TEXT, local_position, remote_position, lag_positions INTEGER, lag_seconds REAL, pending_changes INTEGER, status TEXT, last_seen TEXT, detail TEXT)";

    fn rows(_scan: &Scan) -> std::result::Result<Vec<Vec<Value>>, String> {
        Ok(sync::sync_rows().iter().map(|r| r.values()).collect())
    }
}

pub struct SyncHistory;

const COL_AT: c_int = 1;

impl Source for SyncHistory {
    const NAME: &'static str = "insights_sync_history";
    const SCHEMA: &'static CStr = c"CREATE TABLE x(database TEXT, at TEXT, node TEXT, peer TEXT, source TEXT, role TEXT, local_position, remote_position, lag_positions INTEGER, lag_seconds REAL, pending_changes INTEGER, status TEXT, last_seen TEXT)";
    const PUSHDOWN: &'static [(c_int, bool)] = &[(COL_AT, false)];

    fn rows(scan: &Scan) -> std::result::Result<Vec<Vec<Value>>, String> {
        let mut from = i64::MIN;
        let mut to = i64::MAX;
        for (col, op, v) in &scan.constraints {
            if *col != COL_AT {
                continue;
            }
            let ms = match v {
                Value::Null => return Ok(Vec::new()), // comparisons with NULL match nothing
                Value::Text(s) => {
                    clock::parse_instant(s).ok_or_else(|| format!("at: not an instant: '{s}'"))?
                }
                _ => return Err("at must be compared with text (an ISO-8601 instant)".into()),
            };
            match op {
                Op::Eq => {
                    from = from.max(ms);
                    to = to.min(ms);
                }
                Op::Gt => from = from.max(ms.saturating_add(1)),
                Op::Ge => from = from.max(ms),
                Op::Lt => to = to.min(ms.saturating_sub(1)),
                Op::Le => to = to.min(ms),
            }
        }
        if from > to {
            return Ok(Vec::new());
        }
        let db = registry().db(&scan.db_path);
        let samples = sync::history(
            &db,
            (from != i64::MIN).then_some(from),
            (to != i64::MAX).then_some(to),
        )?;
        Ok(samples
            .into_iter()
            .map(|s| {
                let mut row = Vec::with_capacity(13);
                row.push(text(db.path.clone()));
                row.extend(s.values);
                row
            })
            .collect())
    }
}

pub fn load(conn: &Connection) -> Result<()> {
    const SYNC: Module<'static, Tab<Sync>> = Module::eponymous_only_module();
    const HISTORY: Module<'static, Tab<SyncHistory>> = Module::eponymous_only_module();
    register(conn, &SYNC)?;
    register(conn, &HISTORY)
}
