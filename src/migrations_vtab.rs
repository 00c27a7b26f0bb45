//! `insights_migrations`: one unified migration history for the calling
//! connection's database, read from the migration tools' own tables
//! (Rails/golang-migrate, Django, Alembic, sqlx, Diesel, refinery, Prisma,
//! Flyway, Knex), with when the extension first saw each migration and the
//! schema changes that came with it. Versions the extension saw being
//! written that the tool's table no longer holds (Alembic keeps only its
//! head) are listed too, with detail 'superseded'.
//!
//! Rules: read-only; the tools' tables are read on the calling connection
//! with capture off; first_seen is kept in the store (`migrations_seen`);
//! `schema_changes` is a JSON array of the schema-change events in the
//! migration's window (see migrations.rs).

use crate::clock;
use crate::events_vtab::events_of;
use crate::migrations::{self, TIE_SLACK_MS};
use crate::registry::registry;
use crate::store;
use crate::vtab::{register, text, text_opt, Scan, Source, Tab};
use rusqlite::types::Value;
use rusqlite::vtab::Module;
use rusqlite::{Connection, Result};
use serde_json::json;
use std::ffi::CStr;

pub struct Migrations;

impl Source for Migrations {
    const NAME: &'static str = "insights_migrations";
    const SCHEMA: &'static CStr = c"CREATE TABLE x(database TEXT, tool TEXT, version TEXT, name TEXT, applied_at TEXT, first_seen TEXT, schema_changes TEXT, detail TEXT)";

    fn rows(scan: &Scan) -> std::result::Result<Vec<Vec<Value>>, String> {
        let mut found = unsafe { migrations::read_all(scan.db) };
        let db = registry().db(&scan.db_path);
        let events = events_of(&scan.db_path).unwrap_or_default();
        // versions we saw being written that the tool's table no longer holds
        // (Alembic keeps only the current head): history from our events
        for e in events.iter().filter(|e| e.kind == "migration") {
            let Some(tool) = e.object.as_deref() else {
                continue;
            };
            for v in e.detail.split(',').filter(|v| !v.is_empty()) {
                if !found.iter().any(|m| m.tool == tool && m.version == v) {
                    found.push(migrations::Migration {
                        tool: tool.to_string(),
                        version: v.to_string(),
                        name: None,
                        applied_at_ms: None,
                        detail: Some("superseded".into()),
                    });
                }
            }
        }
        // when we saw each migration being written (captured 'migration' events)
        let written = |tool: &str, version: &str| -> Option<i64> {
            events
                .iter()
                .filter(|e| {
                    e.kind == "migration"
                        && e.object.as_deref() == Some(tool)
                        && e.detail.split(',').any(|v| v == version)
                })
                .map(|e| e.at_unix_ms)
                .min()
        };
        let keys: Vec<(String, String)> = found
            .iter()
            .map(|m| (m.tool.clone(), m.version.clone()))
            .collect();
        let seen = match store::migrations_seen(&db, &keys) {
            Some(Ok(m)) => m,
            _ => Default::default(),
        };
        let now = clock::unix_ms_now();
        // (time, exact, migration, first_seen): exact when the time is our own
        // capture of the write, else the tool's (possibly coarse) record
        let mut rows: Vec<(i64, bool, migrations::Migration, i64)> = found
            .into_iter()
            .map(|m| {
                let w = written(&m.tool, &m.version);
                let s = seen.get(&(m.tool.clone(), m.version.clone())).copied();
                let first_seen = [w, s].into_iter().flatten().min().unwrap_or(now);
                let t = w.or(m.applied_at_ms).unwrap_or(first_seen);
                (t, w.is_some(), m, first_seen)
            })
            .collect();
        rows.sort_by_key(|r| r.0);
        let times: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let mut out = Vec::new();
        let mut prev_end = i64::MIN;
        for (k, (t, exact, m, first_seen)) in rows.into_iter().enumerate() {
            // a migration's schema changes come before its version is recorded
            let end = if exact {
                t
            } else {
                (t + TIE_SLACK_MS).min(times.get(k + 1).copied().unwrap_or(i64::MAX))
            };
            let changes: Vec<_> = events
                .iter()
                .filter(|e| {
                    e.kind == "schema_change" && e.at_unix_ms > prev_end && e.at_unix_ms <= end
                })
                .map(|e| {
                    json!({
                        "at": clock::iso_ms(e.at_unix_ms),
                        "change": e.detail,
                        "object": e.object,
                        "schema_version_after": e.schema_version_after,
                    })
                })
                .collect();
            prev_end = prev_end.max(end);
            out.push(vec![
                text(scan.db_path.clone()),
                text(m.tool),
                text(m.version),
                text_opt(m.name),
                text_opt(m.applied_at_ms.map(clock::iso_ms)),
                text(clock::iso_ms(first_seen)),
                text(serde_json::Value::Array(changes).to_string()),
                text_opt(m.detail),
            ]);
        }
        Ok(out)
    }
}

pub fn load(conn: &Connection) -> Result<()> {
    const MODULE: Module<'static, Tab<Migrations>> = Module::eponymous_only_module();
    register(conn, &MODULE)
}
