//! `insights_errors`: the most recent failed statements (a bounded ring,
//! `max_errors`, newest kept).
//!
//! Rules: read-only; `query` is the normalized text (no literals); `sample`
//! holds raw SQL only when `sample_raw_sql` is on; `phase` says whether the
//! statement failed at prepare or at step. Hidden column `scope`: 'all'
//! (default) shows every process's failures from each database's store plus
//! this process's not yet flushed; 'process' this process's ring alone.

use crate::clock;
use crate::registry::{registry, ErrorRecord};
use crate::vtab::{register, text, text_opt, Scan, Source, Tab};
use rusqlite::types::Value;
use rusqlite::vtab::Module;
use rusqlite::{Connection, Result};
use std::ffi::{c_int, CStr};

/// Index of the hidden `scope` column.
const COL_SCOPE: c_int = 11;

pub struct Errors;

impl Source for Errors {
    const NAME: &'static str = "insights_errors";
    const SCHEMA: &'static CStr = c"CREATE TABLE x(at TEXT, database TEXT, fingerprint TEXT, query TEXT, kind TEXT, phase TEXT, code INTEGER, extended_code INTEGER, code_name TEXT, message TEXT, sample TEXT, scope HIDDEN)";
    const PUSHDOWN: &'static [(c_int, bool)] = &[(COL_SCOPE, true)];

    fn rows(scan: &Scan) -> Result<Vec<Vec<Value>>, String> {
        let scope = match scan.eq(COL_SCOPE) {
            None => "all",
            Some(Value::Text(s)) if s.eq_ignore_ascii_case("all") => "all",
            Some(Value::Text(s)) if s.eq_ignore_ascii_case("process") => "process",
            Some(_) => return Err("scope must be 'all' or 'process'".into()),
        };
        let mut all: Vec<ErrorRecord> = Vec::new();
        let local = registry().errors();
        if scope == "process" {
            all = local;
        } else {
            for db in registry().databases() {
                match crate::store::read_errors(&db) {
                    Some(Ok(v)) => all.extend(v),
                    _ => all.extend(local.iter().filter(|e| e.database == db.path).cloned()),
                }
            }
            all.sort_by_key(|e| e.at_unix_ms);
        }
        Ok(all
            .into_iter()
            .map(|e| {
                vec![
                    text(clock::iso_ms(e.at_unix_ms)),
                    text(e.database),
                    text_opt(e.fingerprint.map(crate::normalize::fingerprint_hex)),
                    text_opt(e.query),
                    text_opt(e.kind.map(|k| k.as_str().to_string())),
                    text(e.phase),
                    Value::Integer(e.code as i64),
                    Value::Integer(e.extended_code as i64),
                    text(code_name(e.extended_code)),
                    text(e.message),
                    text_opt(e.sample),
                    text(scope),
                ]
            })
            .collect())
    }
}

/// SQLite's symbolic name of a (primary or extended) result code.
pub fn code_name(code: i32) -> String {
    let prim = match code & 0xff {
        1 => "SQLITE_ERROR",
        2 => "SQLITE_INTERNAL",
        3 => "SQLITE_PERM",
        4 => "SQLITE_ABORT",
        5 => "SQLITE_BUSY",
        6 => "SQLITE_LOCKED",
        7 => "SQLITE_NOMEM",
        8 => "SQLITE_READONLY",
        9 => "SQLITE_INTERRUPT",
        10 => "SQLITE_IOERR",
        11 => "SQLITE_CORRUPT",
        12 => "SQLITE_NOTFOUND",
        13 => "SQLITE_FULL",
        14 => "SQLITE_CANTOPEN",
        15 => "SQLITE_PROTOCOL",
        16 => "SQLITE_EMPTY",
        17 => "SQLITE_SCHEMA",
        18 => "SQLITE_TOOBIG",
        19 => "SQLITE_CONSTRAINT",
        20 => "SQLITE_MISMATCH",
        21 => "SQLITE_MISUSE",
        22 => "SQLITE_NOLFS",
        23 => "SQLITE_AUTH",
        24 => "SQLITE_FORMAT",
        25 => "SQLITE_RANGE",
        26 => "SQLITE_NOTADB",
        _ => return format!("SQLITE_{code}"),
    };
    let ext = match code {
        275 => "_CHECK",
        531 => "_COMMITHOOK",
        787 => "_FOREIGNKEY",
        1043 => "_FUNCTION",
        1299 => "_NOTNULL",
        1555 => "_PRIMARYKEY",
        1811 => "_TRIGGER",
        2067 => "_UNIQUE",
        2323 => "_VTAB",
        2579 => "_ROWID",
        2835 => "_PINNED",
        3091 => "_DATATYPE",
        261 => "_RECOVERY",
        517 => "_SNAPSHOT",
        773 => "_TIMEOUT",
        262 => "_SHAREDCACHE",
        518 => "_VTAB",
        _ => "",
    };
    format!("{prim}{ext}")
}

pub fn load(conn: &Connection) -> Result<()> {
    const MODULE: Module<'static, Tab<Errors>> = Module::eponymous_only_module();
    register(conn, &MODULE)
}
