//! Shared helpers of the Rust host: where the extension is, how it is loaded,
//! and raw-FFI statement runs used to compare instrumented and plain
//! connections byte for byte.

use rusqlite::{ffi, Connection, LoadExtensionGuard};
use std::ffi::{c_int, CStr, CString};
use std::path::PathBuf;

/// Environment variable naming the extension to load.
pub const ENV_SO: &str = "INSIGHTS_SO";

/// The extension: `$INSIGHTS_SO`, else `<repo>/dist/insights0.so`.
pub fn so_path() -> PathBuf {
    match std::env::var_os(ENV_SO) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../dist/insights0.so"),
    }
}

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Load the extension into `conn` the way an application does: enable
/// loading, `sqlite3_load_extension(path, NULL)` (SQLite derives the entry
/// point `sqlite3_insights_init` from the file name), disable loading.
pub fn load_extension(conn: &Connection) -> rusqlite::Result<()> {
    let path = so_path();
    // Safety: we trust the extension under test; no other SQL runs while
    // loading is enabled.
    unsafe {
        let _guard = LoadExtensionGuard::new(conn)?;
        conn.load_extension(&path, None::<&str>)
    }
}

/// Is `sqlite3_config` in this executable's dynamic symbol table (what the
/// extension's runtime error-log install needs)?
pub fn sqlite3_config_exported() -> bool {
    extern "C" {
        fn dlopen(filename: *const std::ffi::c_char, flag: c_int) -> *mut std::ffi::c_void;
        fn dlsym(
            handle: *mut std::ffi::c_void,
            symbol: *const std::ffi::c_char,
        ) -> *mut std::ffi::c_void;
    }
    const RTLD_LAZY: c_int = 1;
    unsafe {
        let h = dlopen(std::ptr::null(), RTLD_LAZY);
        !h.is_null() && !dlsym(h, c"sqlite3_config".as_ptr()).is_null()
    }
}

/// One column value as returned by SQLite, compared exactly.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    /// Bit pattern of the double, so NaN and -0.0 compare exactly.
    Real(u64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

/// Everything an application can observe from running one statement.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub prepare_rc: c_int,
    pub prepare_errcode: c_int,
    pub prepare_errmsg: String,
    /// Bytes of the input the prepare consumed (the tail offset).
    pub tail_offset: usize,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Val>>,
    /// Return code of the last sqlite3_step.
    pub step_rc: c_int,
    pub errcode: c_int,
    pub extended_errcode: c_int,
    pub errmsg: String,
    pub error_offset: c_int,
    pub changes: i64,
    pub total_changes: i64,
    pub last_insert_rowid: i64,
    pub autocommit: c_int,
    pub finalize_rc: c_int,
    pub errmsg_after_finalize: String,
}

unsafe fn errmsg(db: *mut ffi::sqlite3) -> String {
    let p = ffi::sqlite3_errmsg(db);
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// Prepare, step to the end (or the first error) and finalize one statement
/// on a raw handle, recording every observable result.
///
/// # Safety
/// `db` must be a valid open connection used by this thread only.
pub unsafe fn run_raw(db: *mut ffi::sqlite3, sql: &str) -> Outcome {
    let c = CString::new(sql).expect("no NUL in corpus SQL");
    let mut stmt: *mut ffi::sqlite3_stmt = std::ptr::null_mut();
    let mut tail: *const std::ffi::c_char = std::ptr::null();
    let prepare_rc = ffi::sqlite3_prepare_v2(db, c.as_ptr(), -1, &mut stmt, &mut tail);
    let mut o = Outcome {
        prepare_rc,
        prepare_errcode: ffi::sqlite3_extended_errcode(db),
        prepare_errmsg: errmsg(db),
        tail_offset: if tail.is_null() {
            0
        } else {
            tail.offset_from(c.as_ptr()) as usize
        },
        columns: vec![],
        rows: vec![],
        step_rc: 0,
        errcode: 0,
        extended_errcode: 0,
        errmsg: String::new(),
        error_offset: ffi::sqlite3_error_offset(db),
        changes: 0,
        total_changes: 0,
        last_insert_rowid: 0,
        autocommit: 0,
        finalize_rc: 0,
        errmsg_after_finalize: String::new(),
    };
    if prepare_rc == ffi::SQLITE_OK && !stmt.is_null() {
        let n = ffi::sqlite3_column_count(stmt);
        for i in 0..n {
            let p = ffi::sqlite3_column_name(stmt, i);
            o.columns.push(if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            });
        }
        loop {
            let rc = ffi::sqlite3_step(stmt);
            o.step_rc = rc;
            if rc != ffi::SQLITE_ROW {
                break;
            }
            let mut row = Vec::with_capacity(n as usize);
            for i in 0..n {
                row.push(match ffi::sqlite3_column_type(stmt, i) {
                    ffi::SQLITE_INTEGER => Val::Int(ffi::sqlite3_column_int64(stmt, i)),
                    ffi::SQLITE_FLOAT => Val::Real(ffi::sqlite3_column_double(stmt, i).to_bits()),
                    ffi::SQLITE_TEXT => {
                        let p = ffi::sqlite3_column_text(stmt, i);
                        let len = ffi::sqlite3_column_bytes(stmt, i) as usize;
                        Val::Text(if p.is_null() {
                            vec![]
                        } else {
                            std::slice::from_raw_parts(p, len).to_vec()
                        })
                    }
                    ffi::SQLITE_BLOB => {
                        let p = ffi::sqlite3_column_blob(stmt, i) as *const u8;
                        let len = ffi::sqlite3_column_bytes(stmt, i) as usize;
                        Val::Blob(if p.is_null() {
                            vec![]
                        } else {
                            std::slice::from_raw_parts(p, len).to_vec()
                        })
                    }
                    _ => Val::Null,
                });
            }
            o.rows.push(row);
            if o.rows.len() > 100_000 {
                break;
            }
        }
        o.errcode = ffi::sqlite3_errcode(db);
        o.extended_errcode = ffi::sqlite3_extended_errcode(db);
        o.errmsg = errmsg(db);
        o.error_offset = ffi::sqlite3_error_offset(db);
    }
    o.changes = ffi::sqlite3_changes64(db);
    o.total_changes = ffi::sqlite3_total_changes64(db);
    o.last_insert_rowid = ffi::sqlite3_last_insert_rowid(db);
    o.autocommit = ffi::sqlite3_get_autocommit(db);
    o.finalize_rc = ffi::sqlite3_finalize(stmt);
    o.errmsg_after_finalize = errmsg(db);
    o
}

/// Median of a list of samples (the list is sorted in place).
pub fn median(v: &mut [f64]) -> f64 {
    assert!(!v.is_empty());
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
