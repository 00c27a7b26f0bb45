//! `insights_events`: what happened to the calling connection's database —
//! schema changes, user_version changes, VACUUM/ANALYZE/REINDEX, migrations,
//! resets, store errors/recoveries, alert transitions — oldest first.
//!
//! Rules: read-only; with a store it shows every process's events (the
//! store) plus this process's not yet flushed; without a store, this
//! process's recent events in memory. Instants UTC ISO-8601.

use crate::clock;
use crate::events::{self, EventRecord};
use crate::registry::registry;
use crate::store;
use crate::vtab::{register, text, text_opt, Scan, Source, Tab};
use rusqlite::types::Value;
use rusqlite::vtab::Module;
use rusqlite::{Connection, Result};
use std::ffi::CStr;

pub struct Events;

fn int_opt(v: Option<i64>) -> Value {
    v.map(Value::Integer).unwrap_or(Value::Null)
}

/// Events of one database (store + pending, or memory).
pub fn events_of(db_path: &str) -> std::result::Result<Vec<EventRecord>, String> {
    let db = registry().db(db_path);
    match store::read_events(&db) {
        Some(r) => r,
        None => Ok(events::memory()
            .into_iter()
            .filter(|e| e.database == db_path)
            .collect()),
    }
}

impl Source for Events {
    const NAME: &'static str = "insights_events";
    const SCHEMA: &'static CStr = c"CREATE TABLE x(at TEXT, database TEXT, kind TEXT, object TEXT, statement TEXT, schema_version_before INTEGER, schema_version_after INTEGER, user_version_before INTEGER, user_version_after INTEGER, pid INTEGER, tags TEXT, detail TEXT)";

    fn rows(scan: &Scan) -> std::result::Result<Vec<Vec<Value>>, String> {
        let mut v = events_of(&scan.db_path)?;
        v.sort_by_key(|e| e.at_unix_ms);
        Ok(v.into_iter()
            .map(|e| {
                vec![
                    text(clock::iso_ms(e.at_unix_ms)),
                    text(e.database),
                    text(e.kind),
                    text_opt(e.object),
                    text_opt(e.statement),
                    int_opt(e.schema_version_before),
                    int_opt(e.schema_version_after),
                    int_opt(e.user_version_before),
                    int_opt(e.user_version_after),
                    Value::Integer(e.pid as i64),
                    text_opt(e.tags),
                    text(e.detail),
                ]
            })
            .collect())
    }
}

pub fn load(conn: &Connection) -> Result<()> {
    const MODULE: Module<'static, Tab<Events>> = Module::eponymous_only_module();
    register(conn, &MODULE)
}
