//! `insights_db`: one row per database attached to the calling connection
//! (main, temp, attached): files and their sizes, page figures, freelist
//! (and the bytes VACUUM could give back), journal mode, auto-vacuum,
//! versions, and the free space of the file system holding it.
//!
//! Rules: read-only; the PRAGMAs run on the caller's connection (its own
//! journal mode and data_version are per connection), marked internal;
//! `file_bytes` is the main file as the OS sees it (in WAL mode the newest
//! pages may still be in the WAL: `page_count * page_size` is the logical
//! size); WAL/SHM bytes are 0 when the file does not exist; in-memory and
//! temp databases have NULL path and file figures.

use crate::clock;
use crate::sizes;
use crate::vtab::text;
use crate::vtab::{register, Scan, Source, Tab};
use rusqlite::types::Value;
use rusqlite::vtab::Module;
use rusqlite::{Connection, Result};
use std::ffi::CStr;

pub struct Db;

fn opt(v: Option<i64>) -> Value {
    v.map(Value::Integer).unwrap_or(Value::Null)
}

impl Source for Db {
    const NAME: &'static str = "insights_db";
    const SCHEMA: &'static CStr = c"CREATE TABLE x(schema TEXT, path TEXT, file_bytes INTEGER, wal_bytes INTEGER, shm_bytes INTEGER, page_size INTEGER, page_count INTEGER, freelist_count INTEGER, freelist_bytes INTEGER, journal_mode TEXT, auto_vacuum TEXT, schema_version INTEGER, user_version INTEGER, data_version INTEGER, read_only INTEGER, disk_free_bytes INTEGER, disk_total_bytes INTEGER, measured_at TEXT)";

    fn rows(call: &Scan) -> std::result::Result<Vec<Vec<Value>>, String> {
        let now = text(clock::iso_ms(clock::unix_ms_now()));
        Ok(unsafe { sizes::db_rows(call.db)? }
            .into_iter()
            .map(|r| {
                vec![
                    text(r.schema),
                    r.path.map(text).unwrap_or(Value::Null),
                    opt(r.file_bytes),
                    opt(r.wal_bytes),
                    opt(r.shm_bytes),
                    Value::Integer(r.page_size),
                    Value::Integer(r.page_count),
                    Value::Integer(r.freelist_count),
                    Value::Integer(r.freelist_count * r.page_size),
                    text(r.journal_mode),
                    text(r.auto_vacuum),
                    Value::Integer(r.schema_version),
                    Value::Integer(r.user_version),
                    Value::Integer(r.data_version),
                    Value::Integer(r.read_only as i64),
                    opt(r.disk_free_bytes),
                    opt(r.disk_total_bytes),
                    now.clone(),
                ]
            })
            .collect())
    }
}

pub fn load(conn: &Connection) -> Result<()> {
    const MODULE: Module<'static, Tab<Db>> = Module::eponymous_only_module();
    register(conn, &MODULE)
}
