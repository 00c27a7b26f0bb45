//! Sizes: how big each table and index of every schema is (`insights_tables`),
//! measured with `dbstat` when the host has it, cached so that asking never
//! stalls the user; background size samples into the store
//! (`insights_size_history`).
//!
//! Rules:
//! - What is measured: every table, index, virtual and shadow table of a
//!   schema (views and triggers have no storage). With dbstat: pages, bytes,
//!   payload and unused bytes per b-tree, and exact row counts from the cells
//!   (leaf cells of a rowid table; leaf + interior cells of an index or a
//!   WITHOUT ROWID table, whose entries live in both). Without dbstat (or with
//!   `size_dbstat` off): no page figures; rows by `count(*)` when the database
//!   is within the page budget or sized in the background, else the
//!   `sqlite_stat1` estimate of the last ANALYZE, else none. `rows_method`
//!   says which: `dbstat`, `count`, `stat1`, `none`, `pending` (not measured
//!   yet: a background measurement is on its way).
//! - Which connection measures: a file database is read through a separate
//!   read-only connection the extension opens itself (inside
//!   `store::internal`, so it is never instrumented): the user's connection
//!   runs no extra statements, its page cache and statement list stay as they
//!   were. The user's own connection is used only where nothing else can see
//!   the data or the lock: `:memory:` and temp schemas, a connection holding a
//!   write transaction or `locking_mode=EXCLUSIVE`, a non-default VFS, or when
//!   the separate connection fails. Statements run there are invisible to
//!   capture (`capture::without_capture`).
//! - Never stall the user: results are cached per database file. A cached
//!   result is served while the file is unchanged (size and mtime of the
//!   database and its WAL), or while younger than
//!   max(`size_refresh_ms`, 10 x the last measurement's duration)
//!   (`size_refresh_ms` = 0: re-measured whenever the files changed). A stale
//!   database of at most `size_page_budget` pages is re-measured at query time
//!   (one pass, one read transaction); a larger one is measured by the
//!   background sizing thread, one object per read transaction, at most half
//!   of the time (it sleeps as long as it worked), while queries serve the
//!   previous figures (`measured_at` says when) or `pending`.
//!   `insights_size_refresh([schema])` measures now, whatever the size.
//! - Samples: every `size_sample_interval_ms` (0 = off) one process per store
//!   (a claim row in the store decides which) measures each monitored file
//!   database in the background and writes a database row and one row per
//!   object to the store table `size_samples` (a database whose measurement
//!   takes more than a tenth of the interval is re-measured at most every
//!   10 x its measuring time; samples in between repeat its last table
//!   figures). Old samples are thinned like
//!   history buckets: all kept `retention_minute_days`, then the first of
//!   each hour until `retention_hour_days`, the first of each day until
//!   `retention_day_days`.

use crate::clock;
use crate::config::{self, Key};
use crate::registry::{lock, registry, DbStats};
use crate::store;
use rusqlite::{ffi, params, Connection, OpenFlags, OptionalExtension};
use std::collections::{HashMap, VecDeque};
use std::ffi::{c_int, c_void, CStr};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a query-time measurement waits for a lock on the separate
/// connection before falling back to the caller's connection.
pub const QUERY_BUSY_TIMEOUT_MS: u64 = 100;
/// How long the background thread and forced refreshes wait for a lock.
pub const BACKGROUND_BUSY_TIMEOUT_MS: u64 = 2_000;
/// A cached result is kept at least this many times its own measuring time,
/// so a busy dashboard cannot keep a big database measured all the time.
pub const COST_FACTOR: u32 = 10;
/// Caches of in-memory schemas kept (keyed by connection and schema).
pub const MAX_MEMORY_CACHES: usize = 64;
/// The background thread sleeps after each object for as long as it worked,
/// capped here (so it uses at most about half of one core).
pub const MAX_THROTTLE_SLEEP_MS: u64 = 1_000;

/// Size of one table or index.
#[derive(Clone, Debug)]
pub struct ObjSize {
    pub name: String,
    /// table, index, virtual, shadow
    pub typ: &'static str,
    pub tbl_name: String,
    pub without_rowid: bool,
    pub pages: Option<i64>,
    pub bytes: Option<i64>,
    pub payload: Option<i64>,
    pub unused: Option<i64>,
    pub rows: Option<i64>,
    pub rows_method: &'static str,
    pub measured_ms: Option<i64>,
}

impl ObjSize {
    fn unmeasured(l: &Listed) -> ObjSize {
        ObjSize {
            name: l.name.clone(),
            typ: l.typ,
            tbl_name: l.tbl_name.clone(),
            without_rowid: l.without_rowid,
            pages: None,
            bytes: None,
            payload: None,
            unused: None,
            rows: None,
            rows_method: "pending",
            measured_ms: None,
        }
    }
}

/// One storage object as listed from the schema.
#[derive(Clone, Debug)]
struct Listed {
    name: String,
    typ: &'static str,
    tbl_name: String,
    without_rowid: bool,
    /// The schema table itself (dbstat names it differently by version).
    is_schema_table: bool,
}

/// dbstat figures of one b-tree.
#[derive(Clone, Copy, Default, Debug)]
struct Measured {
    pages: i64,
    bytes: i64,
    payload: i64,
    unused: i64,
    leaf_cells: i64,
    all_cells: i64,
}

/// Database file and WAL size and mtime: unchanged = nothing to re-measure.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct FileSig {
    db: (u64, i128),
    wal: (u64, i128),
}

fn stat_sig(p: &str) -> (u64, i128) {
    match std::fs::metadata(p) {
        Ok(m) => {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos() as i128)
                .unwrap_or(0);
            (m.len(), t)
        }
        Err(_) => (0, -1),
    }
}

pub fn file_sig(path: &str) -> FileSig {
    FileSig {
        db: stat_sig(path),
        wal: stat_sig(&format!("{path}-wal")),
    }
}

/// Cached sizes of one schema of one database.
#[derive(Default)]
struct Cache {
    objects: Vec<ObjSize>,
    /// When the last complete measurement finished (unix ms).
    complete_ms: Option<i64>,
    /// File signature taken when that measurement started.
    sig: Option<FileSig>,
    last_duration_ms: f64,
    last_pages: i64,
    last_error: Option<String>,
    /// A background measurement is queued or running.
    queued: bool,
    used_ms: i64,
}

impl Cache {
    /// Take a new listing, keeping the measurements of objects still there.
    fn relist(&mut self, listed: &[Listed]) {
        let mut old: HashMap<String, ObjSize> = std::mem::take(&mut self.objects)
            .into_iter()
            .map(|o| (o.name.clone(), o))
            .collect();
        self.objects = listed
            .iter()
            .map(|l| match old.remove(&l.name) {
                Some(mut o) if o.typ == l.typ => {
                    o.tbl_name = l.tbl_name.clone();
                    o.without_rowid = l.without_rowid;
                    o
                }
                _ => ObjSize::unmeasured(l),
            })
            .collect();
    }

    fn put(&mut self, o: ObjSize) {
        match self.objects.iter_mut().find(|x| x.name == o.name) {
            Some(x) => *x = o,
            None => self.objects.push(o),
        }
    }

    fn fresh(&self, sig: Option<FileSig>, now: i64) -> bool {
        let Some(done) = self.complete_ms else {
            return false;
        };
        if sig.is_some() && sig == self.sig {
            return true;
        }
        let refresh = config::get(Key::SizeRefreshMs);
        if refresh == 0 {
            return false; // 0: re-measure whenever the files changed
        }
        let min_age = (refresh as f64).max(self.last_duration_ms * COST_FACTOR as f64);
        ((now - done) as f64) < min_age
    }
}

type CacheRef = Arc<Mutex<Cache>>;

fn caches() -> &'static Mutex<HashMap<String, CacheRef>> {
    static C: OnceLock<Mutex<HashMap<String, CacheRef>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Cache key: the file path for file databases (shared by every connection
/// and alias), connection + schema for in-memory ones.
fn cache_key(file: &str, db: *mut ffi::sqlite3, schema: &str) -> String {
    if file.is_empty() {
        format!("mem:{:x}:{schema}", db as usize)
    } else {
        file.to_string()
    }
}

fn cache(key: &str) -> CacheRef {
    let mut m = lock(caches());
    if let Some(c) = m.get(key) {
        return c.clone();
    }
    if key.starts_with("mem:") {
        let mem: Vec<(String, i64)> = m
            .iter()
            .filter(|(k, _)| k.starts_with("mem:"))
            .map(|(k, c)| (k.clone(), lock(c).used_ms))
            .collect();
        if mem.len() >= MAX_MEMORY_CACHES {
            if let Some((k, _)) = mem.iter().min_by_key(|(_, t)| *t) {
                m.remove(k);
            }
        }
    }
    let c: CacheRef = Arc::default();
    m.insert(key.to_string(), c.clone());
    c
}

// ------------------------------------------------------------ SQL helpers

/// Quote an identifier for SQL text.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Run `f` with a non-owning `Connection` on the caller's handle, capture
/// off on this thread (these statements are not the user's: they stay out of
/// insights_queries, their log lines are not user errors).
///
/// # Safety
/// `db` must be a valid connection used by the current thread (xFilter or a
/// function body of that connection).
pub unsafe fn on_user_conn<T>(
    db: *mut ffi::sqlite3,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    crate::capture::without_capture(|| {
        let conn = Connection::from_handle(db)?;
        let r = f(&conn);
        drop(conn);
        r
    })
}

/// `(schema, file)` of every database attached to a connection; file is ""
/// for in-memory and temp databases.
pub fn database_list(conn: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut st = conn.prepare("PRAGMA database_list")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?.unwrap_or_default(),
        ))
    })?;
    rows.collect()
}

/// Whether the host has dbstat and sizes should use it.
pub fn use_dbstat() -> bool {
    if config::get(Key::SizeDbstat) == 0 {
        return false;
    }
    unsafe {
        // sqlite3_compileoption_used is in every API table we load into
        ffi::sqlite3_compileoption_used(c"ENABLE_DBSTAT_VTAB".as_ptr()) != 0
    }
}

fn host_version() -> c_int {
    unsafe { ffi::sqlite3_libversion_number() }
}

/// The VFS name of a schema of a connection ("unix" by default).
unsafe fn vfs_name(db: *mut ffi::sqlite3, schema: &str) -> Option<String> {
    let s = std::ffi::CString::new(schema).ok()?;
    let mut p: *mut std::ffi::c_char = std::ptr::null_mut();
    let rc = ffi::sqlite3_file_control(
        db,
        s.as_ptr(),
        ffi::SQLITE_FCNTL_VFSNAME,
        &mut p as *mut _ as *mut c_void,
    );
    if rc != ffi::SQLITE_OK || p.is_null() {
        return None;
    }
    let name = CStr::from_ptr(p).to_string_lossy().into_owned();
    ffi::sqlite3_free(p as *mut c_void);
    Some(name)
}

/// Does the caller's connection hold a write transaction on `schema`?
unsafe fn in_write_txn(db: *mut ffi::sqlite3, schema: &str) -> bool {
    if host_version() < 3_034_000 {
        return ffi::sqlite3_get_autocommit(db) == 0; // conservative
    }
    let Ok(s) = std::ffi::CString::new(schema) else {
        return false;
    };
    ffi::sqlite3_txn_state(db, s.as_ptr()) == ffi::SQLITE_TXN_WRITE
}

/// A read-only connection of our own to a database file (never instrumented).
pub fn open_internal(path: &str, busy_ms: u64) -> rusqlite::Result<Connection> {
    store::internal(|| {
        let c = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        c.busy_timeout(Duration::from_millis(busy_ms))?;
        Ok(c)
    })
}

/// Close a connection of ours with the thread marked internal.
pub fn close_internal(c: Connection) {
    store::internal(|| drop(c));
}

fn pragma_i64(conn: &Connection, schema: &str, name: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("PRAGMA {}.{name}", ident(schema)), [], |r| {
        r.get(0)
    })
}

fn pragma_text(conn: &Connection, schema: &str, name: &str) -> rusqlite::Result<String> {
    conn.query_row(&format!("PRAGMA {}.{name}", ident(schema)), [], |r| {
        r.get(0)
    })
}

/// The storage objects of a schema, the schema table first.
fn list_objects(conn: &Connection, schema: &str) -> rusqlite::Result<Vec<Listed>> {
    let q = ident(schema);
    // PRAGMA table_list (3.37+) knows shadow and virtual tables and WITHOUT ROWID
    let mut kinds: HashMap<String, (String, bool)> = HashMap::new();
    let have_table_list = host_version() >= 3_037_000;
    if have_table_list {
        let mut st = conn.prepare(&format!("PRAGMA {q}.table_list"))?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(4)? != 0,
            ))
        })?;
        for row in rows {
            let (name, typ, wr) = row?;
            kinds.insert(name, (typ, wr));
        }
    }
    let schema_table = if schema.eq_ignore_ascii_case("temp") {
        "sqlite_temp_schema"
    } else {
        "sqlite_schema"
    };
    let mut out = vec![Listed {
        name: schema_table.into(),
        typ: "table",
        tbl_name: schema_table.into(),
        without_rowid: false,
        is_schema_table: true,
    }];
    let mut st = conn.prepare(&format!(
        "SELECT type, name, tbl_name, coalesce(sql, '') FROM {q}.sqlite_master WHERE type IN ('table', 'index') ORDER BY rowid"
    ))?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut raw = Vec::new();
    for row in rows {
        raw.push(row?);
    }
    let virtuals: Vec<String> = raw
        .iter()
        .filter(|(t, n, _, sql)| {
            t == "table"
                && match kinds.get(n) {
                    Some((k, _)) => k == "virtual",
                    None => sql
                        .trim_start()
                        .get(..20)
                        .is_some_and(|p| p.eq_ignore_ascii_case("CREATE VIRTUAL TABLE")),
                }
        })
        .map(|(_, n, _, _)| n.clone())
        .collect();
    for (typ, name, tbl_name, sql) in raw {
        let (typ, wr, owner): (&'static str, bool, String) = if typ == "index" {
            ("index", false, tbl_name)
        } else if virtuals.contains(&name) {
            ("virtual", false, name.clone())
        } else {
            // the virtual table a shadow table belongs to: longest prefix "<vt>_"
            let owner = virtuals
                .iter()
                .filter(|v| name.len() > v.len() + 1 && name.starts_with(&format!("{v}_")))
                .max_by_key(|v| v.len())
                .cloned();
            let shadow = match kinds.get(&name) {
                Some((k, _)) => k == "shadow",
                None => owner.is_some(),
            };
            let wr = match kinds.get(&name) {
                Some((_, wr)) => *wr,
                None => {
                    let s = sql.to_ascii_uppercase();
                    s.trim_end()
                        .trim_end_matches(';')
                        .trim_end()
                        .ends_with("ROWID")
                        && s.contains("WITHOUT")
                }
            };
            match (shadow, owner) {
                (true, Some(o)) => ("shadow", wr, o),
                (true, None) => ("shadow", wr, name.clone()),
                _ => ("table", wr, name.clone()),
            }
        };
        out.push(Listed {
            name,
            typ,
            tbl_name: owner,
            without_rowid: wr,
            is_schema_table: false,
        });
    }
    Ok(out)
}

const DBSTAT_COLS: &str = "count(*), coalesce(sum(pgsize), 0), coalesce(sum(payload), 0), coalesce(sum(unused), 0), coalesce(sum(CASE WHEN pagetype = 'leaf' THEN ncell ELSE 0 END), 0), coalesce(sum(CASE WHEN pagetype IN ('leaf', 'internal') THEN ncell ELSE 0 END), 0)";

fn measured_from(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Measured> {
    Ok(Measured {
        pages: r.get(at)?,
        bytes: r.get(at + 1)?,
        payload: r.get(at + 2)?,
        unused: r.get(at + 3)?,
        leaf_cells: r.get(at + 4)?,
        all_cells: r.get(at + 5)?,
    })
}

const SCHEMA_TABLE_NAMES: [&str; 4] = [
    "sqlite_schema",
    "sqlite_master",
    "sqlite_temp_schema",
    "sqlite_temp_master",
];

/// dbstat over a whole schema in one statement (one read transaction).
fn dbstat_all(conn: &Connection, schema: &str) -> rusqlite::Result<HashMap<String, Measured>> {
    let mut st = conn.prepare(&format!(
        "SELECT name, {DBSTAT_COLS} FROM dbstat(?1) GROUP BY name"
    ))?;
    let rows = st.query_map(params![schema], |r| {
        Ok((r.get::<_, String>(0)?, measured_from(r, 1)?))
    })?;
    let mut m = HashMap::new();
    for row in rows {
        let (mut name, v) = row?;
        if SCHEMA_TABLE_NAMES.contains(&name.as_str()) {
            name = "\u{0}schema".into();
        }
        m.insert(name, v);
    }
    Ok(m)
}

/// dbstat over one b-tree (its own read transaction).
fn dbstat_one(conn: &Connection, schema: &str, l: &Listed) -> rusqlite::Result<Measured> {
    if l.is_schema_table {
        conn.query_row(
            &format!("SELECT {DBSTAT_COLS} FROM dbstat(?1) WHERE name IN ('sqlite_schema', 'sqlite_master', 'sqlite_temp_schema', 'sqlite_temp_master')"),
            params![schema],
            |r| measured_from(r, 0),
        )
    } else {
        conn.query_row(
            &format!("SELECT {DBSTAT_COLS} FROM dbstat(?1) WHERE name = ?2"),
            params![schema, l.name],
            |r| measured_from(r, 0),
        )
    }
}

fn from_dbstat(l: &Listed, m: Option<Measured>, now: i64) -> ObjSize {
    let mut o = ObjSize::unmeasured(l);
    o.measured_ms = Some(now);
    if l.typ == "virtual" {
        // no b-tree of its own: its data is in its shadow tables
        o.pages = Some(0);
        o.bytes = Some(0);
        o.payload = Some(0);
        o.unused = Some(0);
        o.rows_method = "none";
        return o;
    }
    let m = m.unwrap_or_default();
    o.pages = Some(m.pages);
    o.bytes = Some(m.bytes);
    o.payload = Some(m.payload);
    o.unused = Some(m.unused);
    o.rows = Some(if l.typ == "index" || l.without_rowid {
        m.all_cells
    } else {
        m.leaf_cells
    });
    o.rows_method = "dbstat";
    o
}

/// sqlite_stat1 row-count estimates (table or index name -> rows).
fn stat1(conn: &Connection, schema: &str) -> HashMap<String, i64> {
    let mut m = HashMap::new();
    let q = ident(schema);
    let has: bool = conn
        .query_row(
            &format!("SELECT count(*) FROM {q}.sqlite_master WHERE name = 'sqlite_stat1'"),
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
        .unwrap_or(false);
    if !has {
        return m;
    }
    let Ok(mut st) = conn.prepare(&format!("SELECT tbl, idx, stat FROM {q}.sqlite_stat1")) else {
        return m;
    };
    let Ok(rows) = st.query_map([], |r| {
        Ok((
            r.get::<_, Option<String>>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    }) else {
        return m;
    };
    for (tbl, idx, stat) in rows.flatten() {
        let n = stat
            .as_deref()
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse::<i64>().ok());
        if let Some(n) = n {
            if let Some(t) = tbl {
                m.entry(t).or_insert(n);
            }
            if let Some(i) = idx {
                m.insert(i, n);
            }
        }
    }
    m
}

/// Without dbstat: exact count(*) for tables when allowed, else the stat1
/// estimate, else nothing.
fn fallback_one(
    conn: &Connection,
    schema: &str,
    l: &Listed,
    allow_count: bool,
    stats: &HashMap<String, i64>,
    now: i64,
) -> ObjSize {
    let mut o = ObjSize::unmeasured(l);
    o.measured_ms = Some(now);
    o.rows_method = "none";
    if allow_count && (l.typ == "table" || l.typ == "shadow") {
        let q = if l.is_schema_table {
            format!("SELECT count(*) FROM {}.sqlite_master", ident(schema))
        } else {
            format!("SELECT count(*) FROM {}.{}", ident(schema), ident(&l.name))
        };
        if let Ok(n) = conn.query_row(&q, [], |r| r.get::<_, i64>(0)) {
            o.rows = Some(n);
            o.rows_method = "count";
            return o;
        }
    }
    if let Some(n) = stats.get(&l.name) {
        o.rows = Some(*n);
        o.rows_method = "stat1";
    }
    o
}

/// What one measurement did.
#[derive(Default, Debug, Clone)]
pub struct RefreshStats {
    pub objects: usize,
    pub pages: i64,
    pub ms: f64,
    pub via: &'static str,
}

/// Measure a whole schema in one pass (query-time and forced refresh).
fn measure_now(
    conn: &Connection,
    schema: &str,
    cache: &CacheRef,
    sig: Option<FileSig>,
) -> rusqlite::Result<RefreshStats> {
    let started = Instant::now();
    let listed = list_objects(conn, schema)?;
    let now = clock::unix_ms_now();
    let mut objs = Vec::with_capacity(listed.len());
    let mut pages = 0;
    if use_dbstat() {
        let mut m = dbstat_all(conn, schema)?;
        for l in &listed {
            let key = if l.is_schema_table {
                "\u{0}schema".to_string()
            } else {
                l.name.clone()
            };
            let o = from_dbstat(l, m.remove(&key), now);
            pages += o.pages.unwrap_or(0);
            objs.push(o);
        }
    } else {
        let stats = stat1(conn, schema);
        for l in &listed {
            objs.push(fallback_one(conn, schema, l, true, &stats, now));
        }
    }
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let mut c = lock(cache);
    c.objects = objs;
    c.complete_ms = Some(clock::unix_ms_now());
    c.sig = sig;
    c.last_duration_ms = ms;
    c.last_pages = pages;
    c.last_error = None;
    Ok(RefreshStats {
        objects: c.objects.len(),
        pages,
        ms,
        via: "",
    })
}

/// Measure a schema object by object, each in its own read transaction,
/// sleeping as long as it worked after each one (background).
fn measure_incremental(
    conn: &Connection,
    schema: &str,
    cache: &CacheRef,
    sig: Option<FileSig>,
) -> rusqlite::Result<RefreshStats> {
    let started = Instant::now();
    let mut busy = Duration::ZERO;
    let listed = list_objects(conn, schema)?;
    lock(cache).relist(&listed);
    let dbstat = use_dbstat();
    let stats = if dbstat {
        HashMap::new()
    } else {
        stat1(conn, schema)
    };
    let mut pages = 0;
    for l in &listed {
        let t = Instant::now();
        let now = clock::unix_ms_now();
        let o = if dbstat {
            let m = if l.typ == "virtual" {
                None
            } else {
                Some(dbstat_one(conn, schema, l)?)
            };
            from_dbstat(l, m, now)
        } else {
            fallback_one(conn, schema, l, true, &stats, now)
        };
        pages += o.pages.unwrap_or(0);
        lock(cache).put(o);
        let worked = t.elapsed();
        busy += worked;
        std::thread::sleep(worked.min(Duration::from_millis(MAX_THROTTLE_SLEEP_MS)));
    }
    let mut c = lock(cache);
    c.complete_ms = Some(clock::unix_ms_now());
    c.sig = sig;
    c.last_duration_ms = busy.as_secs_f64() * 1e3;
    c.last_pages = pages;
    c.last_error = None;
    Ok(RefreshStats {
        objects: listed.len(),
        pages,
        ms: started.elapsed().as_secs_f64() * 1e3,
        via: "background",
    })
}

/// Can the separate connection read this schema of the caller's database?
unsafe fn separate_ok(db: *mut ffi::sqlite3, conn: &Connection, schema: &str) -> bool {
    if in_write_txn(db, schema) {
        return false;
    }
    if vfs_name(db, schema).is_some_and(|v| v != "unix") {
        return false;
    }
    !pragma_text(conn, schema, "locking_mode").is_ok_and(|m| m.eq_ignore_ascii_case("exclusive"))
}

/// Measure `schema` of the caller's connection now, through the separate
/// connection when possible (into the shared cache `cache`), else on the
/// caller's connection. Figures taken on the caller's connection of a file
/// database may include its uncommitted changes: they go to a private cache
/// for this answer only, never to the shared one. Returns the cache written.
unsafe fn measure_sync(
    db: *mut ffi::sqlite3,
    user: &Connection,
    schema: &str,
    file: &str,
    cache: &CacheRef,
    busy_ms: u64,
) -> Result<(RefreshStats, CacheRef), String> {
    if !file.is_empty() && separate_ok(db, user, schema) {
        let sig = file_sig(file);
        let r = open_internal(file, busy_ms).and_then(|c| {
            let r = store::internal(|| measure_now(&c, "main", cache, Some(sig)));
            close_internal(c);
            r
        });
        if let Ok(mut s) = r {
            s.via = "separate";
            return Ok((s, cache.clone()));
        }
    }
    let target = if file.is_empty() {
        cache.clone()
    } else {
        CacheRef::default()
    };
    store::internal(|| measure_now(user, schema, &target, None))
        .map(|mut s| {
            s.via = "caller";
            (s, target)
        })
        .map_err(|e| {
            lock(cache).last_error = Some(e.to_string());
            e.to_string()
        })
}

/// Sizes of every (or one) schema of the caller's connection, per the
/// caching rules above. Returns (schema, objects).
///
/// # Safety
/// `db` must be the caller's valid connection, on its own thread.
pub unsafe fn tables_for(
    db: *mut ffi::sqlite3,
    only: Option<&str>,
) -> Result<Vec<(String, Vec<ObjSize>)>, String> {
    on_user_conn(db, |user| {
        let mut out = Vec::new();
        for (schema, file) in database_list(user)? {
            if only.is_some_and(|s| s != schema) {
                continue;
            }
            let key = cache_key(&file, db, &schema);
            let c = cache(&key);
            let now = clock::unix_ms_now();
            lock(&c).used_ms = now;
            let sig = (!file.is_empty()).then(|| file_sig(&file));
            let mut answer = c.clone();
            if !lock(&c).fresh(sig, now) {
                let pages = pragma_i64(user, &schema, "page_count").unwrap_or(i64::MAX);
                let budget = config::get(Key::SizePageBudget);
                if pages <= budget {
                    if let Ok((_, written)) =
                        measure_sync(db, user, &schema, &file, &c, QUERY_BUSY_TIMEOUT_MS)
                    {
                        answer = written;
                    }
                } else if file.is_empty() {
                    // an over-budget in-memory schema: nothing else can read
                    // it; serve the last figures until a forced refresh
                } else {
                    // list now (cheap) so new objects show as pending; the
                    // background thread measures
                    if let Ok(listed) = list_objects(user, &schema) {
                        lock(&c).relist(&listed);
                    }
                    request(Job::Refresh(file.clone()));
                }
            }
            if lock(&c).complete_ms.is_none() && lock(&c).objects.is_empty() {
                // never measured (an over-budget in-memory schema): list it
                if let Ok(listed) = list_objects(user, &schema) {
                    lock(&c).relist(&listed);
                }
            }
            let objs = lock(&answer).objects.clone();
            out.push((schema, objs));
        }
        Ok(out)
    })
    .map_err(|e| e.to_string())
}

/// `insights_size_refresh([schema])`: measure now, whatever the size.
///
/// # Safety
/// `db` must be the caller's valid connection, on its own thread.
pub unsafe fn refresh_now(db: *mut ffi::sqlite3, only: Option<&str>) -> Result<String, String> {
    let started = Instant::now();
    let (mut schemas, mut objects, mut pages) = (0, 0, 0i64);
    let mut vias = Vec::new();
    let list = on_user_conn(db, database_list).map_err(|e| e.to_string())?;
    if let Some(s) = only {
        if !list.iter().any(|(n, _)| n == s) {
            return Err(format!("no such schema: {s}"));
        }
    }
    for (schema, file) in list {
        if only.is_some_and(|s| s != schema) {
            continue;
        }
        let c = cache(&cache_key(&file, db, &schema));
        let r = on_user_conn(db, |user| {
            Ok(measure_sync(
                db,
                user,
                &schema,
                &file,
                &c,
                BACKGROUND_BUSY_TIMEOUT_MS,
            ))
        })
        .map_err(|e| e.to_string())?;
        let (s, _) = r.map_err(|e| format!("{schema}: {e}"))?;
        schemas += 1;
        objects += s.objects;
        pages += s.pages;
        vias.push(format!("{schema}:{}", s.via));
    }
    Ok(serde_json::json!({
        "schemas": schemas,
        "objects": objects,
        "pages": pages,
        "ms": (started.elapsed().as_secs_f64() * 1e3 * 1000.0).round() / 1000.0,
        "dbstat": use_dbstat(),
        "via": vias,
    })
    .to_string())
}

/// Debug/bench view of a file's cache: (complete, last_duration_ms, pages).
pub fn cache_state(file: &str) -> Option<(Option<i64>, f64, i64, bool)> {
    let m = lock(caches());
    let c = m.get(file)?;
    let c = lock(c);
    Some((c.complete_ms, c.last_duration_ms, c.last_pages, c.queued))
}

// --------------------------------------------------------------- database

/// One row of `insights_db`.
pub struct DbRow {
    pub schema: String,
    pub path: Option<String>,
    pub file_bytes: Option<i64>,
    pub wal_bytes: Option<i64>,
    pub shm_bytes: Option<i64>,
    pub page_size: i64,
    pub page_count: i64,
    pub freelist_count: i64,
    pub journal_mode: String,
    pub auto_vacuum: &'static str,
    pub schema_version: i64,
    pub user_version: i64,
    pub data_version: i64,
    pub disk_free_bytes: Option<i64>,
    pub disk_total_bytes: Option<i64>,
    pub read_only: bool,
}

pub fn file_len(p: &str) -> Option<i64> {
    std::fs::metadata(p).ok().map(|m| m.len() as i64)
}

/// Bytes of a file, 0 when it does not exist (a WAL or SHM file that is not
/// there takes no space).
pub fn file_len0(p: &str) -> i64 {
    file_len(p).unwrap_or(0)
}

/// (free bytes for unprivileged users, total bytes) of the file system
/// holding `path`.
pub fn disk_space(path: &str) -> Option<(i64, i64)> {
    let p = std::path::Path::new(path);
    let dir = if p.is_dir() {
        p
    } else {
        p.parent().filter(|d| !d.as_os_str().is_empty())?
    };
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let f = s.f_frsize as i64;
    Some((s.f_bavail as i64 * f, s.f_blocks as i64 * f))
}

/// `insights_db` rows for the caller's connection.
///
/// # Safety
/// `db` must be the caller's valid connection, on its own thread.
pub unsafe fn db_rows(db: *mut ffi::sqlite3) -> Result<Vec<DbRow>, String> {
    on_user_conn(db, |c| {
        let mut out = Vec::new();
        for (schema, file) in database_list(c)? {
            let av = pragma_i64(c, &schema, "auto_vacuum").unwrap_or(0);
            let ro = std::ffi::CString::new(schema.clone())
                .map(|s| ffi::sqlite3_db_readonly(db, s.as_ptr()) == 1)
                .unwrap_or(false);
            let path = (!file.is_empty()).then(|| file.clone());
            let disk = path.as_deref().and_then(disk_space);
            out.push(DbRow {
                page_size: pragma_i64(c, &schema, "page_size")?,
                page_count: pragma_i64(c, &schema, "page_count")?,
                freelist_count: pragma_i64(c, &schema, "freelist_count")?,
                journal_mode: pragma_text(c, &schema, "journal_mode")?,
                auto_vacuum: match av {
                    1 => "full",
                    2 => "incremental",
                    _ => "none",
                },
                schema_version: pragma_i64(c, &schema, "schema_version")?,
                user_version: pragma_i64(c, &schema, "user_version")?,
                data_version: pragma_i64(c, &schema, "data_version")?,
                file_bytes: path.as_deref().and_then(file_len),
                wal_bytes: path.as_deref().map(|p| file_len0(&format!("{p}-wal"))),
                shm_bytes: path.as_deref().map(|p| file_len0(&format!("{p}-shm"))),
                disk_free_bytes: disk.map(|d| d.0),
                disk_total_bytes: disk.map(|d| d.1),
                read_only: ro,
                path,
                schema,
            });
        }
        Ok(out)
    })
    .map_err(|e| e.to_string())
}

// ------------------------------------------------------ background thread

#[derive(Clone, PartialEq, Eq, Debug)]
enum Job {
    /// Measure a database file (main schema) in the background.
    Refresh(String),
    /// Measure it if needed and write a size sample into its store.
    Sample(String),
}

struct Worker {
    jobs: Mutex<VecDeque<Job>>,
    wake: Condvar,
    started: Mutex<bool>,
}

fn worker() -> &'static Worker {
    static W: OnceLock<Worker> = OnceLock::new();
    W.get_or_init(|| Worker {
        jobs: Mutex::new(VecDeque::new()),
        wake: Condvar::new(),
        started: Mutex::new(false),
    })
}

fn request(job: Job) {
    let w = worker();
    if let Job::Refresh(p) = &job {
        let c = cache(p);
        let mut g = lock(&c);
        if g.queued {
            return;
        }
        g.queued = true;
    }
    {
        let mut q = lock(&w.jobs);
        if q.contains(&job) {
            return;
        }
        q.push_back(job);
    }
    let mut started = lock(&w.started);
    if !*started {
        let r = std::thread::Builder::new()
            .name("insights-size".into())
            .spawn(|| {
                crate::errlog::set_internal_thread(true);
                loop {
                    let job = {
                        let w = worker();
                        let mut q = lock(&w.jobs);
                        loop {
                            if let Some(j) = q.pop_front() {
                                break j;
                            }
                            q = w.wake.wait(q).unwrap_or_else(|e| e.into_inner());
                        }
                    };
                    let _ = std::panic::catch_unwind(|| run_job(&job));
                }
            });
        *started = r.is_ok();
    }
    w.wake.notify_all();
}

/// Measure a database file in the background if its cache is stale; with
/// `exact` (samples, refreshes queued by queries) whenever its files changed
/// since the last measurement, unless that was less than 10 x its own
/// measuring time ago.
fn background_refresh(path: &str, exact: bool) -> Result<(), String> {
    let c = cache(path);
    let sig = file_sig(path);
    let fresh = {
        let g = lock(&c);
        if exact {
            // unchanged files, or measured less than 10x its own measuring
            // time ago (a huge database is not re-read continuously)
            g.complete_ms.is_some_and(|done| {
                g.sig == Some(sig)
                    || ((clock::unix_ms_now() - done) as f64)
                        < g.last_duration_ms * COST_FACTOR as f64
            })
        } else {
            g.fresh(Some(sig), clock::unix_ms_now())
        }
    };
    let r = if fresh {
        Ok(())
    } else {
        match open_internal(path, BACKGROUND_BUSY_TIMEOUT_MS) {
            Ok(conn) => {
                let r = measure_incremental(&conn, "main", &c, Some(sig))
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                close_internal(conn);
                r
            }
            Err(e) => Err(e.to_string()),
        }
    };
    let mut g = lock(&c);
    g.queued = false;
    if let Err(e) = &r {
        g.last_error = Some(e.clone());
    }
    r
}

fn run_job(job: &Job) {
    match job {
        Job::Refresh(p) => {
            // queued because a query found it stale: measure unless the
            // files are unchanged since the last complete measurement
            let _ = background_refresh(p, true);
        }
        Job::Sample(p) => {
            // periodic samples read the file on their own: WAL databases only
            if store::background_read_ok(p) && background_refresh(p, true).is_ok() {
                let db = registry().db(p);
                let _ = write_sample(&db);
            }
        }
    }
}

// ---------------------------------------------------------------- samples

const SAMPLE_DDL: &str = "
CREATE TABLE IF NOT EXISTS size_samples(
  at_ms INTEGER NOT NULL, name TEXT NOT NULL, type TEXT, tbl_name TEXT,
  pages INTEGER, bytes INTEGER, rows INTEGER, rows_method TEXT,
  file_bytes INTEGER, wal_bytes INTEGER, freelist_bytes INTEGER,
  PRIMARY KEY(name, at_ms)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS size_samples_by_time ON size_samples(at_ms);
CREATE TABLE IF NOT EXISTS size_sampler(
  id INTEGER PRIMARY KEY CHECK (id = 1), claimed_ms INTEGER, pid INTEGER, host TEXT);";

/// Create the size tables in a store (idempotent).
pub fn ensure_tables(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SAMPLE_DDL)
}

/// Per database: when this process last asked for a sample (unix ms).
fn last_sampled() -> &'static Mutex<HashMap<String, i64>> {
    static M: OnceLock<Mutex<HashMap<String, i64>>> = OnceLock::new();
    M.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Called by the flusher after each round: queue a sample for every file
/// database of this process whose interval has passed, if this process wins
/// the store's claim for this interval.
pub fn on_round(now: i64) {
    let interval = config::get(Key::SizeSampleIntervalMs);
    if interval <= 0 {
        return;
    }
    for db in registry().databases() {
        if db
            .connections_open
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
            || db.path.starts_with(':')
            || db.path == crate::registry::UNKNOWN_DB
            || !std::path::Path::new(&db.path).is_file()
        {
            continue;
        }
        {
            let m = lock(last_sampled());
            if m.get(&db.path).is_some_and(|t| now - t < interval) {
                continue;
            }
        }
        let claimed = store::with_store_conn(&db, |conn| {
            ensure_tables(conn)?;
            let tx = rusqlite::Transaction::new_unchecked(
                conn,
                rusqlite::TransactionBehavior::Immediate,
            )?;
            let now = clock::unix_ms_now(); // after taking the store's write lock
            let last: Option<i64> = tx
                .query_row(
                    "SELECT claimed_ms FROM size_sampler WHERE id = 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            // 5% slack: processes whose rounds fall a little apart share one claim
            // (a claim far in the future is a clock that went back: take it)
            let won =
                last.is_none_or(|t| now - t >= interval - interval / 20 || t > now + interval);
            if won {
                tx.execute(
                    "INSERT OR REPLACE INTO size_sampler(id, claimed_ms, pid, host) VALUES (1, ?1, ?2, ?3)",
                    params![now, std::process::id() as i64, crate::connections::hostname()],
                )?;
            }
            tx.commit()?;
            Ok(won)
        });
        lock(last_sampled()).insert(db.path.clone(), now);
        if let Some(Ok(true)) = claimed {
            request(Job::Sample(db.path.clone()));
        }
    }
}

/// Write a sample of `db` (database row + cached objects) into its store.
pub fn write_sample(db: &Arc<DbStats>) -> Result<usize, String> {
    let path = db.path.clone();
    let objs = lock(&cache(&path)).objects.clone();
    let conn = open_internal(&path, BACKGROUND_BUSY_TIMEOUT_MS).map_err(|e| e.to_string())?;
    let dbinfo = store::internal(|| -> rusqlite::Result<(i64, i64, i64)> {
        Ok((
            pragma_i64(&conn, "main", "page_size")?,
            pragma_i64(&conn, "main", "page_count")?,
            pragma_i64(&conn, "main", "freelist_count")?,
        ))
    });
    close_internal(conn);
    let (page_size, page_count, freelist) = dbinfo.map_err(|e| e.to_string())?;
    let now = clock::unix_ms_now();
    let r = store::with_store_conn(db, |conn| {
        ensure_tables(conn)?;
        let tx =
            rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
        let mut n = 0;
        {
            let mut put = tx.prepare(
                "INSERT OR REPLACE INTO size_samples(at_ms, name, type, tbl_name, pages, bytes, rows, rows_method, file_bytes, wal_bytes, freelist_bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            put.execute(params![
                now,
                "",
                "database",
                Option::<String>::None,
                page_count,
                page_count * page_size,
                Option::<i64>::None,
                Option::<String>::None,
                file_len(&path),
                file_len0(&format!("{path}-wal")),
                freelist * page_size,
            ])?;
            n += 1;
            for o in objs.iter().filter(|o| o.rows_method != "pending") {
                put.execute(params![
                    now,
                    o.name,
                    o.typ,
                    o.tbl_name,
                    o.pages,
                    o.bytes,
                    o.rows,
                    o.rows_method,
                    Option::<i64>::None,
                    Option::<i64>::None,
                    Option::<i64>::None,
                ])?;
                n += 1;
            }
        }
        thin_samples(&tx, now)?;
        tx.commit()?;
        Ok(n)
    });
    match r {
        None => Ok(0),
        Some(r) => r,
    }
}

/// Thin old samples (see the rules at the top).
fn thin_samples(conn: &Connection, now: i64) -> rusqlite::Result<()> {
    let day = 86_400_000i64;
    let fine = now - config::get(Key::RetentionMinuteDays) * day;
    let hourly = now - config::get(Key::RetentionHourDays) * day;
    let daily = now - config::get(Key::RetentionDayDays) * day;
    conn.execute("DELETE FROM size_samples WHERE at_ms < ?1", params![daily])?;
    for (cut, width) in [(fine, 3_600_000i64), (hourly, day)] {
        conn.execute(
            "DELETE FROM size_samples WHERE at_ms < ?1 AND at_ms NOT IN (
               SELECT min(at_ms) FROM size_samples WHERE name = '' AND at_ms < ?1 GROUP BY at_ms / ?2)",
            params![cut, width],
        )?;
    }
    Ok(())
}

/// One stored sample.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at_ms: i64,
    pub name: String,
    pub typ: String,
    pub tbl_name: Option<String>,
    pub pages: Option<i64>,
    pub bytes: Option<i64>,
    pub rows: Option<i64>,
    pub file_bytes: Option<i64>,
    pub wal_bytes: Option<i64>,
    pub freelist_bytes: Option<i64>,
}

/// Samples of a database's store, oldest first per object. `since_ms`,
/// `until_ms` bound `at_ms` (inclusive), `name` selects one object ("" =
/// the database row).
pub fn read_samples(
    db: &DbStats,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    name: Option<&str>,
) -> Result<Vec<Sample>, String> {
    if store::store_path(db).is_none_or(|p| !p.exists()) {
        return Ok(Vec::new());
    }
    let r = store::with_store_conn(db, |conn| {
        ensure_tables(conn)?;
        let mut st = conn.prepare(
            "SELECT at_ms, name, type, tbl_name, pages, bytes, rows, file_bytes, wal_bytes, freelist_bytes
             FROM size_samples WHERE at_ms >= ?1 AND at_ms <= ?2 AND (?3 IS NULL OR name = ?3)
             ORDER BY name, at_ms",
        )?;
        let rows = st.query_map(
            params![
                since_ms.unwrap_or(i64::MIN),
                until_ms.unwrap_or(i64::MAX),
                name
            ],
            |r| {
                Ok(Sample {
                    at_ms: r.get(0)?,
                    name: r.get(1)?,
                    typ: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    tbl_name: r.get(3)?,
                    pages: r.get(4)?,
                    bytes: r.get(5)?,
                    rows: r.get(6)?,
                    file_bytes: r.get(7)?,
                    wal_bytes: r.get(8)?,
                    freelist_bytes: r.get(9)?,
                })
            },
        )?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
    });
    match r {
        None => Ok(Vec::new()),
        Some(r) => r,
    }
}

/// Take a sample of the caller's main database now (measuring it first if
/// its cached sizes are stale); for tests and operators who want a baseline.
pub fn sample_now(path: &str) -> Result<usize, String> {
    background_refresh(path, true)?;
    let db = registry().db(path);
    write_sample(&db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ident_quotes() {
        assert_eq!(ident("main"), "\"main\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn relist_keeps_measurements_of_same_objects() {
        let mut c = Cache::default();
        let l = |n: &str, t: &'static str| Listed {
            name: n.into(),
            typ: t,
            tbl_name: n.into(),
            without_rowid: false,
            is_schema_table: false,
        };
        c.relist(&[l("a", "table"), l("b", "index")]);
        c.put(from_dbstat(
            &l("a", "table"),
            Some(Measured {
                pages: 3,
                leaf_cells: 10,
                all_cells: 12,
                ..Default::default()
            }),
            5,
        ));
        assert_eq!(c.objects[0].rows, Some(10));
        c.relist(&[l("a", "table"), l("c", "table")]);
        assert_eq!(c.objects.len(), 2);
        assert_eq!(c.objects[0].pages, Some(3));
        assert_eq!(c.objects[1].rows_method, "pending");
    }

    #[test]
    fn index_and_without_rowid_count_all_cells() {
        let m = Measured {
            pages: 2,
            leaf_cells: 7,
            all_cells: 9,
            ..Default::default()
        };
        let mut l = Listed {
            name: "i".into(),
            typ: "index",
            tbl_name: "t".into(),
            without_rowid: false,
            is_schema_table: false,
        };
        assert_eq!(from_dbstat(&l, Some(m), 0).rows, Some(9));
        l.typ = "table";
        assert_eq!(from_dbstat(&l, Some(m), 0).rows, Some(7));
        l.without_rowid = true;
        assert_eq!(from_dbstat(&l, Some(m), 0).rows, Some(9));
        l.typ = "virtual";
        assert_eq!(from_dbstat(&l, Some(m), 0).pages, Some(0));
    }
}
