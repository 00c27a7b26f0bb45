//! `insights_tables`: one row per table, index, virtual and shadow table of
//! every schema of the calling connection (main, temp, attached), with its
//! pages, bytes, payload/unused bytes and rows, and how and when they were
//! measured. See `sizes.rs` for how (dbstat, fallbacks) and when (cache,
//! page budget, background thread) sizes are measured.
//!
//! Rules: read-only; `WHERE schema = '...'` is pushed down (only that schema
//! is measured); `rows_method` is one of `dbstat` (exact, from the b-tree
//! cells), `count` (exact, count(*)), `stat1` (estimate of the last ANALYZE),
//! `none`, `pending` (background measurement on its way); `measured_at` is
//! when the object's figures were taken.

use crate::clock;
use crate::sizes;
use crate::vtab::text;
use crate::vtab::{register, Scan, Source, Tab};
use rusqlite::functions::FunctionFlags;
use rusqlite::types::{Value, ValueRef};
use rusqlite::vtab::Module;
use rusqlite::{Connection, Error, Result};
use std::ffi::{c_int, CStr};

pub struct Tables;

const COL_SCHEMA: c_int = 0;

fn opt(v: Option<i64>) -> Value {
    v.map(Value::Integer).unwrap_or(Value::Null)
}

impl Source for Tables {
    const NAME: &'static str = "insights_tables";
    const SCHEMA: &'static CStr = c"CREATE TABLE x(schema TEXT, name TEXT, type TEXT, tbl_name TEXT, without_rowid INTEGER, pages INTEGER, bytes INTEGER, payload_bytes INTEGER, unused_bytes INTEGER, rows INTEGER, rows_method TEXT, measured_at TEXT)";
    const PUSHDOWN: &'static [(c_int, bool)] = &[(COL_SCHEMA, true)];

    fn rows(call: &Scan) -> std::result::Result<Vec<Vec<Value>>, String> {
        let only = match call.eq(COL_SCHEMA) {
            None => None,
            Some(Value::Text(s)) => Some(s.as_str()),
            Some(_) => return Ok(Vec::new()), // NULL or non-text matches no schema name
        };
        let schemas = unsafe { sizes::tables_for(call.db, only)? };
        let mut out = Vec::new();
        for (schema, objs) in schemas {
            for o in objs {
                out.push(vec![
                    text(schema.clone()),
                    text(o.name),
                    text(o.typ),
                    text(o.tbl_name),
                    Value::Integer(o.without_rowid as i64),
                    opt(o.pages),
                    opt(o.bytes),
                    opt(o.payload),
                    opt(o.unused),
                    opt(o.rows),
                    text(o.rows_method),
                    o.measured_ms
                        .map(|t| text(clock::iso_ms(t)))
                        .unwrap_or(Value::Null),
                ]);
            }
        }
        Ok(out)
    }
}

pub fn load(conn: &Connection) -> Result<()> {
    const MODULE: Module<'static, Tab<Tables>> = Module::eponymous_only_module();
    register(conn, &MODULE)?;
    // insights_size_refresh([schema]): measure now, whatever the size; JSON
    // summary. Direct-only: a schema object must not start heavy work.
    let direct = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DIRECTONLY;
    conn.create_scalar_function("insights_size_refresh", -1, direct, |ctx| {
        let name = "insights_size_refresh";
        if ctx.len() > 1 {
            return Err(Error::UserFunctionError(
                format!("{name}: takes 0 to 1 arguments, got {}", ctx.len()).into(),
            ));
        }
        let only = if ctx.len() == 1 {
            match ctx.get_raw(0) {
                ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                _ => {
                    return Err(Error::UserFunctionError(
                        format!("{name}: schema must be text").into(),
                    ))
                }
            }
        } else {
            None
        };
        let db = unsafe { ctx.get_connection()?.handle() };
        unsafe { sizes::refresh_now(db, only.as_deref()) }
            .map_err(|e| Error::UserFunctionError(format!("{name}: {e}").into()))
    })
}
