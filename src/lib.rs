//! sqlite-insights: query, error and size insights for SQLite, as one loadable
//! extension (`sqlite3_insights_init`).
//!
//! Rules:
//! - `REGISTRATIONS` is the one list of what the extension registers on a
//!   connection; the inventory test checks the host sees exactly these names.
//! - Loading returns SQLITE_OK_LOAD_PERMANENTLY and registers an
//!   auto-extension (`auto_entry`, which returns SQLITE_OK as auto-extensions
//!   must), so every connection the process opens later is instrumented.
//!   Loading twice, or into several connections, is harmless.
//! - Nothing here may panic across FFI: every entry point is under
//!   `catch_unwind`.

pub mod activity;
pub mod activity_vtab;
pub mod alerts;
pub mod capture;
pub mod classify;
pub mod clock;
pub mod config;
pub mod connections;
pub mod connections_vtab;
pub mod db_vtab;
pub mod digest;
pub mod errlog;
pub mod errors_vtab;
pub mod events;
pub mod events_vtab;
pub mod exposition;
pub mod functions;
pub mod histogram;
pub mod history_vtab;
pub mod http;
pub mod info_vtab;
pub mod metrics;
pub mod migrations;
pub mod migrations_vtab;
pub mod normalize;
pub mod queries_vtab;
pub mod registry;
pub mod resources;
pub mod resources_vtab;
pub mod serve;
pub mod size_history_vtab;
pub mod sizes;
pub mod store;
pub mod sync;
pub mod sync_crsqlite;
pub mod sync_libsql;
pub mod sync_litefs;
pub mod sync_litestream;
pub mod sync_vtab;
pub mod tables_vtab;
pub mod vtab;

use rusqlite::{ffi, Connection};
use std::ffi::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Once;

/// What the extension registers, by kind and name.
pub enum Registration {
    Function(&'static str),
    Table(&'static str),
}

/// The one registration list (functions and virtual tables).
pub const REGISTRATIONS: &[Registration] = &[
    Registration::Function("insights_version"),
    Registration::Function("insights_debug"),
    Registration::Function("insights_reset"),
    Registration::Function("insights_config"),
    Registration::Function("insights_normalize"),
    Registration::Function("insights_fingerprint"),
    Registration::Function("insights_flush"),
    Registration::Function("insights_tag"),
    Registration::Function("insights_capture"),
    Registration::Table("insights_queries"),
    Registration::Table("insights_errors"),
    Registration::Table("insights_info"),
    Registration::Table("insights_history"),
    Registration::Table("insights_events"),
    Registration::Table("insights_migrations"),
    Registration::Table("insights_activity"),
    Registration::Function("insights_metrics"),
    Registration::Function("insights_serve"),
    Registration::Function("insights_alert_rule"),
    Registration::Table("insights_alerts"),
    Registration::Table("insights_tables"),
    Registration::Table("insights_db"),
    Registration::Table("insights_size_history"),
    Registration::Table("insights_connections"),
    Registration::Table("insights_resources"),
    Registration::Function("insights_size_refresh"),
    Registration::Function("insights_heartbeat"),
    Registration::Function("insights_sync_report"),
    Registration::Table("insights_sync"),
    Registration::Table("insights_sync_history"),
];

fn register_all(conn: &Connection) -> rusqlite::Result<()> {
    functions::register(conn)?;
    queries_vtab::load(conn)?;
    errors_vtab::load(conn)?;
    info_vtab::load(conn)?;
    history_vtab::load(conn)?;
    events_vtab::load(conn)?;
    migrations_vtab::load(conn)?;
    activity_vtab::load(conn)?;
    metrics::register(conn)?;
    serve::register(conn)?;
    alerts::register(conn)?;
    tables_vtab::load(conn)?;
    db_vtab::load(conn)?;
    size_history_vtab::load(conn)?;
    connections_vtab::load(conn)?;
    resources_vtab::load(conn)?;
    sync::register(conn)?;
    sync_vtab::load(conn)?;
    Ok(())
}

static ONCE: Once = Once::new();
static FIRST_API: AtomicPtr<ffi::sqlite3_api_routines> = AtomicPtr::new(std::ptr::null_mut());

unsafe fn init(
    db: *mut ffi::sqlite3,
    pz_err_msg: *mut *mut c_char,
    p_api: *mut ffi::sqlite3_api_routines,
    fresh: bool,
) -> c_int {
    if p_api.is_null() || db.is_null() {
        return ffi::SQLITE_ERROR;
    }
    // One process, one SQLite library: the API table is process-global in the
    // extension, so a second library (stdlib sqlite3 and apsw in one Python)
    // would redirect the hooks already installed on the first one's
    // connections. Refuse it instead.
    match FIRST_API.compare_exchange(
        std::ptr::null_mut(),
        p_api,
        Ordering::SeqCst,
        Ordering::SeqCst,
    ) {
        Ok(_) => {}
        Err(first) if first == p_api => {}
        Err(_) => {
            return set_error(
                p_api,
                pz_err_msg,
                "sqlite-insights: already loaded into another SQLite library in this process; \
                 one process can be monitored through one SQLite library",
            )
        }
    }
    if let Err(e) = ffi::rusqlite_extension_init2(p_api) {
        return set_error(p_api, pz_err_msg, &format!("sqlite-insights: {e}"));
    }
    if errlog::is_internal_thread() {
        // the extension's own connections (store writer) are never instrumented
        return ffi::SQLITE_OK;
    }
    ONCE.call_once(|| {
        clock::init();
        functions::set_env_notes(config::load_env());
        store::on_flush_round(metrics::round);
        store::on_flush_round(alerts::evaluate);
        store::on_flush_round(connections::on_flush_round);
        store::start_flusher();
        digest::start();
        errlog::install_runtime(p_api);
        let f: unsafe extern "C" fn() =
            std::mem::transmute::<*const (), unsafe extern "C" fn()>(auto_entry as *const ());
        ffi::sqlite3_auto_extension(Some(f));
    });
    let conn = match Connection::from_handle(db) {
        Ok(c) => c,
        Err(e) => return set_error(p_api, pz_err_msg, &format!("sqlite-insights: {e}")),
    };
    if let Err(e) = register_all(&conn) {
        return set_error(p_api, pz_err_msg, &format!("sqlite-insights: {e}"));
    }
    drop(conn);
    capture::attach(db, fresh);
    ffi::SQLITE_OK
}

unsafe fn set_error(
    p_api: *mut ffi::sqlite3_api_routines,
    pz_err_msg: *mut *mut c_char,
    msg: &str,
) -> c_int {
    if !pz_err_msg.is_null() {
        if let (Ok(c), Some(malloc)) = (std::ffi::CString::new(msg), (*p_api).malloc) {
            // SQLite frees this with its own sqlite3_free: allocate with the
            // calling library's sqlite3_malloc
            let p = malloc((c.as_bytes().len() + 1) as c_int) as *mut c_char;
            if !p.is_null() {
                std::ptr::copy_nonoverlapping(c.as_ptr(), p, c.as_bytes().len() + 1);
                *pz_err_msg = p;
            }
        }
    }
    ffi::SQLITE_ERROR
}

/// Entry point for `load_extension` / `.load dist/insights0`.
///
/// # Safety
/// Called by SQLite with a valid connection and API table.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_insights_init(
    db: *mut ffi::sqlite3,
    pz_err_msg: *mut *mut c_char,
    p_api: *mut ffi::sqlite3_api_routines,
) -> c_int {
    match catch_unwind(AssertUnwindSafe(|| init(db, pz_err_msg, p_api, false))) {
        Ok(ffi::SQLITE_OK) => ffi::SQLITE_OK_LOAD_PERMANENTLY,
        Ok(rc) => rc,
        Err(_) => ffi::SQLITE_ERROR,
    }
}

/// Auto-extension entry: runs for every connection opened after the first
/// load. Must return SQLITE_OK (any other value fails the open).
///
/// # Safety
/// Called by SQLite with a valid connection and API table.
pub unsafe extern "C" fn auto_entry(
    db: *mut ffi::sqlite3,
    pz_err_msg: *mut *mut c_char,
    p_api: *mut ffi::sqlite3_api_routines,
) -> c_int {
    match catch_unwind(AssertUnwindSafe(|| init(db, pz_err_msg, p_api, true))) {
        Ok(_) => ffi::SQLITE_OK, // never fail the user's open because of us
        Err(_) => ffi::SQLITE_OK,
    }
}
