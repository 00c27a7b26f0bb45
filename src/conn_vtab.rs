//! Read-only eponymous virtual tables that need the calling connection
//! itself (not only its database path): `insights_tables` and `insights_db`
//! read the schemas attached to that connection.
//!
//! Rules:
//! - Same contract as `vtab.rs` (eponymous-only, read-only, rows materialized
//!   at xFilter, every callback under `catch_unwind`, INNOCUOUS), plus the
//!   connection handle kept from xConnect. The handle is only used on the
//!   thread that is running a statement of that connection (xFilter), where
//!   it is valid by construction.
//! - Only equality constraints on the columns in `EQ_PUSHDOWN` are handed to
//!   `rows` (hidden parameters such as `schema`); they are applied there
//!   exactly and SQLite does not check them again.
//! - Statements a source runs on the caller's connection must run inside
//!   `store::internal` (their log lines are not user errors) — see
//!   `sizes::on_user_conn`.

use rusqlite::types::Value;
use rusqlite::vtab::{
    Context, Filters, IndexConstraintOp, IndexInfo, Module, VTab, VTabConfig, VTabConnection,
    VTabCursor,
};
use rusqlite::{ffi, Connection, Error, Result};
use std::borrow::Cow;
use std::ffi::{c_int, CStr};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a scan was asked for.
pub struct Call {
    /// The calling connection (valid for the duration of `rows`).
    pub db: *mut ffi::sqlite3,
    /// Its main database path (`:memory:` for in-memory databases).
    pub db_path: String,
    /// Equality constraints (column, value) from `EQ_PUSHDOWN`.
    pub eq: Vec<(c_int, Value)>,
}

impl Call {
    pub fn eq(&self, col: c_int) -> Option<&Value> {
        self.eq.iter().find(|(c, _)| *c == col).map(|(_, v)| v)
    }
}

pub trait ConnSource: Sized + 'static {
    const NAME: &'static str;
    const SCHEMA: &'static CStr;
    const EQ_PUSHDOWN: &'static [c_int] = &[];
    fn rows(call: &Call) -> std::result::Result<Vec<Vec<Value>>, String>;
}

#[repr(C)]
pub struct Tab<S: ConnSource> {
    base: ffi::sqlite3_vtab,
    db: *mut ffi::sqlite3,
    db_path: String,
    _p: PhantomData<S>,
}

#[repr(C)]
pub struct Cursor<S: ConnSource> {
    base: ffi::sqlite3_vtab_cursor,
    db: *mut ffi::sqlite3,
    db_path: String,
    rows: Vec<Vec<Value>>,
    i: usize,
    _p: PhantomData<S>,
}

fn guard<T>(table: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            crate::registry::registry()
                .internal_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(Error::ModuleError(format!("{table}: internal error")))
        }
    }
}

unsafe impl<'vtab, S: ConnSource> VTab<'vtab> for Tab<S> {
    type Aux = ();
    type Cursor = Cursor<S>;

    fn connect(
        db: &mut VTabConnection,
        _aux: Option<&()>,
        _module_name: &[u8],
        _database_name: &[u8],
        _table_name: &[u8],
        _args: &[&[u8]],
    ) -> Result<(Cow<'static, CStr>, Self)> {
        guard(S::NAME, || {
            db.config(VTabConfig::Innocuous)?;
            let handle = unsafe { db.handle() };
            let db_path = unsafe { crate::capture::main_path(handle) };
            Ok((
                Cow::Borrowed(S::SCHEMA),
                Tab {
                    base: ffi::sqlite3_vtab::default(),
                    db: handle,
                    db_path,
                    _p: PhantomData,
                },
            ))
        })
    }

    fn best_index(&self, info: &mut IndexInfo) -> Result<bool> {
        guard(S::NAME, || {
            let mut plan = String::new();
            let mut used = Vec::new();
            for (i, c) in info.constraints().enumerate() {
                if c.is_usable()
                    && c.operator() == IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_EQ
                    && S::EQ_PUSHDOWN.contains(&c.column())
                {
                    used.push(i);
                    plan.push_str(&format!("{};", c.column()));
                }
            }
            for (n, i) in used.iter().enumerate() {
                let mut u = info.constraint_usage(*i);
                u.set_argv_index(n as c_int + 1);
                u.set_omit(true);
            }
            info.set_idx_str(&plan);
            info.set_estimated_cost(1_000.0 / (1.0 + 10.0 * used.len() as f64));
            Ok(true)
        })
    }

    fn open(&'vtab mut self) -> Result<Cursor<S>> {
        Ok(Cursor {
            base: ffi::sqlite3_vtab_cursor::default(),
            db: self.db,
            db_path: self.db_path.clone(),
            rows: Vec::new(),
            i: 0,
            _p: PhantomData,
        })
    }
}

unsafe impl<S: ConnSource> VTabCursor for Cursor<S> {
    fn filter(&mut self, _idx_num: c_int, idx_str: Option<&str>, args: &Filters<'_>) -> Result<()> {
        self.rows = guard(S::NAME, || {
            let mut eq = Vec::new();
            for (n, part) in idx_str
                .unwrap_or("")
                .split(';')
                .filter(|p| !p.is_empty())
                .enumerate()
            {
                if let Ok(col) = part.parse::<c_int>() {
                    eq.push((col, args.get::<Value>(n)?));
                }
            }
            let call = Call {
                db: self.db,
                db_path: self.db_path.clone(),
                eq,
            };
            S::rows(&call).map_err(|m| Error::ModuleError(format!("{}: {m}", S::NAME)))
        })?;
        self.i = 0;
        Ok(())
    }

    fn next(&mut self) -> Result<()> {
        self.i += 1;
        Ok(())
    }

    fn eof(&self) -> bool {
        self.i >= self.rows.len()
    }

    fn column(&self, ctx: &mut Context, i: c_int) -> Result<()> {
        guard(S::NAME, || {
            let v = self
                .rows
                .get(self.i)
                .and_then(|r| r.get(i as usize))
                .unwrap_or(&Value::Null);
            ctx.set_result(v)
        })
    }

    fn rowid(&self) -> Result<i64> {
        Ok(self.i as i64 + 1)
    }
}

pub fn register<S: ConnSource>(
    conn: &Connection,
    module: &'static Module<'static, Tab<S>>,
) -> Result<()> {
    conn.create_module(S::NAME, module, None)
}
