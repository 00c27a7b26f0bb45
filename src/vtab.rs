//! Shared machinery of the read-only, eponymous virtual tables.
//!
//! Rules:
//! - Every table is eponymous-only (usable by name, nothing to CREATE) and
//!   read-only: it has no xUpdate, so INSERT/UPDATE/DELETE fail with SQLite's
//!   own "may not be modified" error.
//! - A scan materializes its rows at xFilter from a snapshot taken under short
//!   locks; no lock is held while SQLite reads the rows.
//! - Every callback body runs under `catch_unwind`: a failure becomes an SQL
//!   error naming the table, never a panic across FFI.
//! - Tables are declared INNOCUOUS: they only read the process's own stats.
//! - `Scan::db` is the calling connection, kept from xConnect; it is used
//!   only inside xFilter, on the thread running that connection's statement,
//!   and statements a table runs on it go through `capture::without_capture`
//!   (or `store::internal`) so they are never captured or logged as user
//!   errors.

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

/// Comparison pushed down from a WHERE clause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    pub fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }
    fn code(self) -> char {
        match self {
            Op::Eq => 'e',
            Op::Gt => 'g',
            Op::Ge => 'G',
            Op::Lt => 'l',
            Op::Le => 'L',
        }
    }
    fn from_code(c: char) -> Option<Op> {
        Some(match c {
            'e' => Op::Eq,
            'g' => Op::Gt,
            'G' => Op::Ge,
            'l' => Op::Lt,
            'L' => Op::Le,
            _ => return None,
        })
    }
    fn from_index(op: IndexConstraintOp) -> Option<Op> {
        Some(match op {
            IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_EQ => Op::Eq,
            IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_GT => Op::Gt,
            IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_GE => Op::Ge,
            IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_LT => Op::Lt,
            IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_LE => Op::Le,
            _ => return None,
        })
    }
}

/// What a scan was asked for: the connection's main database and the
/// constraints pushed down (column index, operator, value).
pub struct Scan {
    pub db_path: String,
    /// The calling connection (for tables that read the user's database).
    pub db: *mut ffi::sqlite3,
    pub constraints: Vec<(c_int, Op, Value)>,
}

impl Scan {
    /// The value of an equality constraint on `col`, if any.
    pub fn eq(&self, col: c_int) -> Option<&Value> {
        self.constraints
            .iter()
            .find(|(c, op, _)| *c == col && *op == Op::Eq)
            .map(|(_, _, v)| v)
    }
}

/// One table's rows and shape.
pub trait Source: Sized + 'static {
    /// Table name, e.g. `insights_queries`.
    const NAME: &'static str;
    /// `CREATE TABLE x(...)` declaration.
    const SCHEMA: &'static CStr;
    /// Columns whose comparisons (=, <, <=, >, >=) are handed to `rows` and
    /// applied there exactly (SQLite does not check them again), with the
    /// operators allowed for each: `(column, equality_only)`.
    const PUSHDOWN: &'static [(c_int, bool)] = &[];
    /// All rows matching the scan, each with one value per declared column.
    fn rows(scan: &Scan) -> std::result::Result<Vec<Vec<Value>>, String>;
}

#[repr(C)]
pub struct Tab<S: Source> {
    base: ffi::sqlite3_vtab,
    db_path: String,
    db: *mut ffi::sqlite3,
    _p: PhantomData<S>,
}

#[repr(C)]
pub struct Cursor<S: Source> {
    base: ffi::sqlite3_vtab_cursor,
    db_path: String,
    db: *mut ffi::sqlite3,
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

unsafe impl<'vtab, S: Source> VTab<'vtab> for Tab<S> {
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
                    db_path,
                    db: handle,
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
                if !c.is_usable() {
                    continue;
                }
                let Some(&(col, eq_only)) = S::PUSHDOWN.iter().find(|(col, _)| *col == c.column())
                else {
                    continue;
                };
                let Some(op) = Op::from_index(c.operator()) else {
                    continue;
                };
                if eq_only && op != Op::Eq {
                    continue;
                }
                used.push(i);
                plan.push_str(&format!("{}{};", col, op.code()));
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
            db_path: self.db_path.clone(),
            db: self.db,
            rows: Vec::new(),
            i: 0,
            _p: PhantomData,
        })
    }
}

unsafe impl<S: Source> VTabCursor for Cursor<S> {
    fn filter(&mut self, _idx_num: c_int, idx_str: Option<&str>, args: &Filters<'_>) -> Result<()> {
        self.rows = guard(S::NAME, || {
            let mut constraints = Vec::new();
            for (n, part) in idx_str
                .unwrap_or("")
                .split(';')
                .filter(|p| !p.is_empty())
                .enumerate()
            {
                let (col, op) = part.split_at(part.len() - 1);
                let (Ok(col), Some(op)) = (
                    col.parse::<c_int>(),
                    op.chars().next().and_then(Op::from_code),
                ) else {
                    continue;
                };
                let v: Value = args.get(n)?;
                constraints.push((col, op, v));
            }
            let scan = Scan {
                db_path: self.db_path.clone(),
                db: self.db,
                constraints,
            };
            S::rows(&scan).map_err(|m| Error::ModuleError(format!("{}: {m}", S::NAME)))
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

/// Register table `S` on a connection.
pub fn register<S: Source>(
    conn: &Connection,
    module: &'static Module<'static, Tab<S>>,
) -> Result<()> {
    conn.create_module(S::NAME, module, None)
}

/// A hidden `resolution` argument: None when absent, Some(None) when NULL
/// (matches nothing), Some(Some(r)) for 'minute', 'hour' or 'day'.
pub fn resolution_arg(v: Option<&Value>) -> std::result::Result<Option<Option<String>>, String> {
    match v {
        None => Ok(None),
        Some(Value::Text(s)) => {
            let r = s.to_ascii_lowercase();
            if !crate::store::RESOLUTIONS.iter().any(|(n, _)| *n == r) {
                return Err(format!(
                    "resolution must be 'minute', 'hour' or 'day', got '{s}'"
                ));
            }
            Ok(Some(Some(r)))
        }
        Some(Value::Null) => Ok(Some(None)),
        Some(_) => Err("resolution must be 'minute', 'hour' or 'day'".into()),
    }
}

/// Helpers to build row values.
pub fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}
pub fn int(i: u64) -> Value {
    Value::Integer(i.min(i64::MAX as u64) as i64)
}
pub fn real_opt(v: Option<f64>) -> Value {
    v.map(Value::Real).unwrap_or(Value::Null)
}
pub fn text_opt(v: Option<String>) -> Value {
    v.map(Value::Text).unwrap_or(Value::Null)
}
