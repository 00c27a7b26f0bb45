//! SQL functions: insights_version, insights_debug, insights_reset,
//! insights_config, insights_normalize, insights_fingerprint.
//!
//! Rules:
//! - Every error message starts with the function's name; arguments are
//!   checked for count, type and NULL by us (registered variadic) so the
//!   message is ours, not SQLite's generic one.
//! - Functions that change state (reset, config) and debug (it shows paths)
//!   are SQLITE_DIRECTONLY: a schema (trigger, view) in a database file cannot
//!   call them. Pure ones are DETERMINISTIC and INNOCUOUS.
//! - rusqlite catches panics in function bodies; a panic is an SQL error.

use crate::activity;
use crate::capture;
use crate::config::{self, Input};
use crate::errlog;
use crate::normalize;
use crate::registry::{lock, registry};
use crate::store;
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::ValueRef;
use rusqlite::{ffi, Connection, Error, Result};
use serde_json::json;
use std::sync::atomic::Ordering;

/// Version of the extension (Cargo package version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Commit the extension was built from (set by build.rs).
pub const COMMIT: &str = env!("INSIGHTS_COMMIT");
/// Capture mechanism for statements.
pub const CAPTURE_MODE: &str = "trace_v2";
/// Largest SQL text insights_normalize/insights_fingerprint accept (64 MiB);
/// SQLite's own default statement limit is 1 GB, but a monitoring helper has
/// no business normalizing more than this in one call.
pub const MAX_NORMALIZE_INPUT_BYTES: usize = 64 << 20;

static ENV_NOTES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Remember invalid SQLITE_INSIGHTS_* environment settings for insights_debug().
pub fn set_env_notes(v: Vec<String>) {
    *lock(&ENV_NOTES) = v;
}

/// Main database path of the connection running a function.
fn caller_db(ctx: &Context<'_>) -> Result<String> {
    let conn = unsafe { ctx.get_connection()? };
    Ok(unsafe { capture::main_path(conn.handle()) })
}

fn err(msg: String) -> Error {
    Error::UserFunctionError(msg.into())
}

fn check_args(ctx: &Context<'_>, name: &str, min: usize, max: usize) -> Result<()> {
    let n = ctx.len();
    if n < min || n > max {
        let want = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(err(format!(
            "{name}: takes {want} argument{}, got {n}",
            if max == 1 && min == 1 { "" } else { "s" }
        )));
    }
    Ok(())
}

fn text_arg<'a>(ctx: &'a Context<'_>, name: &str, i: usize, what: &str) -> Result<&'a str> {
    match ctx.get_raw(i) {
        ValueRef::Text(t) => {
            std::str::from_utf8(t).map_err(|_| err(format!("{name}: {what} is not valid UTF-8")))
        }
        ValueRef::Null => Err(err(format!("{name}: {what} must be text, got NULL"))),
        _ => Err(err(format!("{name}: {what} must be text"))),
    }
}

pub fn register(conn: &Connection) -> Result<()> {
    let pure = FunctionFlags::SQLITE_UTF8
        | FunctionFlags::SQLITE_DETERMINISTIC
        | FunctionFlags::SQLITE_INNOCUOUS;
    let direct = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DIRECTONLY;

    conn.create_scalar_function("insights_version", -1, pure, |ctx| {
        check_args(ctx, "insights_version", 0, 0)?;
        Ok(VERSION)
    })?;

    conn.create_scalar_function("insights_debug", -1, direct, |ctx| {
        check_args(ctx, "insights_debug", 0, 0)?;
        Ok(debug_json(&caller_db(ctx)?))
    })?;

    conn.create_scalar_function("insights_normalize", -1, pure, |ctx| {
        check_args(ctx, "insights_normalize", 1, 1)?;
        let sql = text_arg(ctx, "insights_normalize", 0, "sql")?;
        if sql.len() > MAX_NORMALIZE_INPUT_BYTES {
            return Err(err(format!(
                "insights_normalize: sql is longer than {MAX_NORMALIZE_INPUT_BYTES} bytes"
            )));
        }
        Ok(normalize::normalize(sql.as_bytes()).text)
    })?;

    conn.create_scalar_function("insights_fingerprint", -1, pure, |ctx| {
        check_args(ctx, "insights_fingerprint", 1, 1)?;
        let sql = text_arg(ctx, "insights_fingerprint", 0, "sql")?;
        if sql.len() > MAX_NORMALIZE_INPUT_BYTES {
            return Err(err(format!(
                "insights_fingerprint: sql is longer than {MAX_NORMALIZE_INPUT_BYTES} bytes"
            )));
        }
        Ok(normalize::fingerprint_hex(
            normalize::normalize(sql.as_bytes()).fingerprint,
        ))
    })?;

    conn.create_scalar_function("insights_reset", -1, direct, |ctx| {
        check_args(ctx, "insights_reset", 0, 1)?;
        let fp = if ctx.len() == 1 {
            let s = text_arg(ctx, "insights_reset", 0, "fingerprint")?;
            Some(parse_fingerprint(s).ok_or_else(|| {
                err(format!(
                    "insights_reset: fingerprint must be 16 hex digits (as in insights_queries), got '{}'",
                    crate::registry::truncate(s, 64)
                ))
            })?)
        } else {
            None
        };
        Ok(registry().reset(fp) as i64)
    })?;

    conn.create_scalar_function("insights_flush", -1, direct, |ctx| {
        check_args(ctx, "insights_flush", 0, 0)?;
        let mut n = 0;
        for db in registry().databases() {
            n += store::flush_db(&db).map_err(|e| err(format!("insights_flush: {e}")))?;
        }
        Ok(n as i64)
    })?;

    conn.create_scalar_function("insights_tag", -1, direct, |ctx| {
        check_args(ctx, "insights_tag", 0, 2)?;
        let handle = unsafe { ctx.get_connection()?.handle() };
        let tags = capture::conn_tags(handle).ok_or_else(|| {
            err("insights_tag: this connection is not instrumented (its trace hook was replaced or capture never attached)".into())
        })?;
        if ctx.is_empty() {
            return Ok(Some(normalize::tags_json(&tags.get())));
        }
        let key = text_arg(ctx, "insights_tag", 0, "key")?;
        if !activity::valid_key(key) {
            return Err(err(format!(
                "insights_tag: key must be 1 to {} characters of A-Z a-z 0-9 _ . -, got '{}'",
                activity::MAX_TAG_KEY_BYTES,
                crate::registry::truncate(key, 80)
            )));
        }
        if ctx.len() == 2 {
            let value: Option<String> = match ctx.get_raw(1) {
                ValueRef::Null => None,
                ValueRef::Text(t) => Some(
                    std::str::from_utf8(t)
                        .map_err(|_| err("insights_tag: value is not valid UTF-8".into()))?
                        .to_string(),
                ),
                ValueRef::Integer(i) => Some(i.to_string()),
                ValueRef::Real(f) => Some(f.to_string()),
                ValueRef::Blob(_) => return Err(err("insights_tag: value must be text, a number or NULL".into())),
            };
            if let Some(v) = &value {
                if v.len() > activity::MAX_TAG_VALUE_BYTES {
                    return Err(err(format!(
                        "insights_tag: value is longer than {} bytes",
                        activity::MAX_TAG_VALUE_BYTES
                    )));
                }
            }
            tags.put(key, value.as_deref())
                .map_err(|m| err(format!("insights_tag: {m}")))?;
        }
        Ok(tags.get().into_iter().find(|(k, _)| k == key).map(|(_, v)| v))
    })?;

    conn.create_scalar_function("insights_capture", -1, direct, |ctx| {
        check_args(ctx, "insights_capture", 0, 1)?;
        let db = unsafe { ctx.get_connection()?.handle() };
        if ctx.is_empty() {
            return Ok(unsafe { capture::hook_active(db) } as i64);
        }
        let on = match ctx.get_raw(0) {
            ValueRef::Integer(i @ (0 | 1)) => i == 1,
            _ => {
                return Err(err(
                    "insights_capture: enabled must be 0 (off) or 1 (on) for this connection"
                        .into(),
                ))
            }
        };
        if !on {
            unsafe { capture::detach(db) };
            return Ok(0);
        }
        if capture::conn_tags(db).is_none() {
            unsafe { capture::attach(db, false) };
            return Ok(unsafe { capture::hook_active(db) } as i64);
        }
        if unsafe { capture::hook_active(db) } {
            Ok(1)
        } else {
            Err(err("insights_capture: the application replaced this connection's trace hook (one per connection); capture stays off".into()))
        }
    })?;

    conn.create_scalar_function("insights_config", -1, direct, |ctx| {
        check_args(ctx, "insights_config", 0, 2)?;
        if ctx.is_empty() {
            return Ok(config_json().to_string());
        }
        let name = text_arg(ctx, "insights_config", 0, "key")?;
        if name.eq_ignore_ascii_case(STORE_PATH_KEY) {
            return store_path_config(ctx);
        }
        // text keys of the sync module (node_id, sync_role, ...)
        if let Some(r) = crate::sync::config_key(ctx, name) {
            return r;
        }
        let def = config::lookup(name).ok_or_else(|| {
            err(format!(
                "insights_config: unknown key '{}' (known: {}, {STORE_PATH_KEY}, {})",
                crate::registry::truncate(name, 64),
                config::known_names(),
                crate::sync::TEXT_KEYS.join(", ")
            ))
        })?;
        if ctx.len() == 2 {
            let input = match ctx.get_raw(1) {
                ValueRef::Integer(i) => Input::Int(i),
                ValueRef::Real(f) => Input::Real(f),
                ValueRef::Text(t) => Input::Text(std::str::from_utf8(t).unwrap_or("\u{fffd}")),
                ValueRef::Null => Input::Null,
                ValueRef::Blob(_) => Input::Blob,
            };
            let v = config::parse(def, input).map_err(|m| err(format!("insights_config: {m}")))?;
            config::set(def.key, v);
            apply(def.key);
        }
        Ok(config::get(def.key).to_string())
    })?;
    Ok(())
}

/// The per-database config key for the store location.
pub const STORE_PATH_KEY: &str = "store_path";

/// insights_config('store_path'[, path | 'off' | 'default']) for the calling
/// connection's database.
fn store_path_config(ctx: &Context<'_>) -> Result<String> {
    let db = registry().db(&caller_db(ctx)?);
    if ctx.len() == 2 {
        let v = text_arg(ctx, "insights_config", 1, "store_path")?
            .trim()
            .to_string();
        let configured = if v.eq_ignore_ascii_case("default") {
            None
        } else if v.is_empty() || v.eq_ignore_ascii_case("off") {
            Some(String::new())
        } else {
            let p = std::path::Path::new(&v);
            let same = |suffix: &str| format!("{}{suffix}", db.path) == v;
            if ["", "-wal", "-shm", "-journal"].iter().any(|s| same(s)) {
                return Err(err(format!(
                    "insights_config: store_path must not be the database's own file ({v})"
                )));
            }
            let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
            if let Some(dir) = parent {
                if !dir.is_dir() {
                    return Err(err(format!(
                        "insights_config: store_path directory does not exist: {}",
                        dir.display()
                    )));
                }
            }
            Some(v)
        };
        store::configure(&db, configured);
    }
    Ok(store::store_path(&db)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "off".into()))
}

/// Make a changed setting take effect at once.
fn apply(key: config::Key) {
    match key {
        config::Key::MaxQueries => {
            for d in registry().databases() {
                d.trim();
            }
        }
        config::Key::MaxErrors => registry().trim_errors(),
        config::Key::FlushIntervalMs => store::nudge(),
        _ => {}
    }
}

pub fn parse_fingerprint(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.len() != 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

fn config_json() -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for d in config::KEYS {
        m.insert(d.name.to_string(), json!(config::get(d.key)));
    }
    serde_json::Value::Object(m)
}

pub fn debug_json(caller_db: &str) -> String {
    let r = registry();
    let host_version = unsafe {
        let p = ffi::sqlite3_libversion();
        if p.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    let active = errlog::probe();
    let dbs: Vec<_> = r.databases().iter().map(|d| db_json(d)).collect();
    let caller = registry().db(caller_db);
    json!({
        "version": VERSION,
        "commit": COMMIT,
        "sqlite_version": host_version,
        "capture_mode": CAPTURE_MODE,
        "clock": if crate::clock::tsc_in_use() { "tsc" } else { "monotonic" },
        "error_capture": {
            "mode": errlog::mode().as_str(),
            "active": active,
            "note": errlog::install_note(),
            "log_messages": errlog::LOG_MESSAGES.load(Ordering::Relaxed),
            "prepare_errors": errlog::PREPARE_ERRORS.load(Ordering::Relaxed),
            "step_errors": errlog::STEP_ERRORS.load(Ordering::Relaxed),
        },
        "database": caller.path,
        "store_path": store::store_path(&caller).map(|p| p.display().to_string()),
        "store": store_json(&caller),
        "env_notes": lock(&ENV_NOTES).clone(),
        "connections_instrumented": capture::attached_count(),
        "digest": {
            "deferred_runs": crate::digest::DEFERRED.load(Ordering::Relaxed),
            "inline_runs": crate::digest::INLINE.load(Ordering::Relaxed),
            "wakeups": crate::digest::WAKEUPS.load(Ordering::Relaxed),
            "queued_words": crate::digest::queued(),
        },
        "databases": dbs,
        "errors_total": r.errors_total.load(Ordering::Relaxed),
        "internal_errors": r.internal_errors.load(Ordering::Relaxed),
        "config": config_json(),
    })
    .to_string()
}

fn store_json(d: &crate::registry::DbStats) -> serde_json::Value {
    let st = lock(&d.store);
    json!({
        "error": st.error,
        "flushes": st.flushes,
        "failures": st.failures,
        "last_flush": (st.last_flush_ms > 0).then(|| crate::clock::iso_ms(st.last_flush_ms)),
        "last_flush_ms": st.last_flush_duration_ms,
        "last_flush_fingerprints": st.last_flush_fingerprints,
        "flush_interval_ms": config::get(config::Key::FlushIntervalMs),
    })
}

fn db_json(d: &crate::registry::DbStats) -> serde_json::Value {
    json!({
        "path": d.path,
        "fingerprints": d.len(),
        "evictions": d.evictions.load(Ordering::Relaxed),
        "connections_open": d.connections_open.load(Ordering::Relaxed),
        "store_path": store::store_path(d).map(|p| p.display().to_string()),
        "store": store_json(d),
    })
}
