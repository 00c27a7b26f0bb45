//! Capture: the hot path, one `sqlite3_trace_v2` hook per connection.
//!
//! Rules:
//! - STMT stamps the start with our monotonic clock; PROFILE stamps the end
//!   (SQLite's own PROFILE time has millisecond resolution, so it is unused).
//! - Each connection keeps a cache keyed by stmt pointer and validated against
//!   the SQL text, so a statement is normalized once per distinct text, never
//!   per execution. A cache hit does no allocation and takes one short lock
//!   (the fingerprint's counters). No I/O, no lock held while calling SQLite.
//! - A STMT event whose SQL starts with `--` on a statement that is already
//!   running is a trigger body line: not counted again. A statement run from
//!   inside another (a user function's query) has its own stmt pointer and
//!   arrives as `-- <sql>`: it is counted as itself, under its own text.
//! - PROFILE with no STMT seen (or ROW for an unknown stmt) is ignored.
//! - Errors: the error log (see `errlog`) leaves a pending step error on the
//!   thread; the next PROFILE on that thread takes it if it names the same SQL.
//!   A PROFILE where the statement is still running and returned no row is a
//!   SQLITE_BUSY return. SQLITE_SCHEMA runs are retried by SQLite itself and
//!   are not counted.
//! - Every callback but an unsuppressed ROW is wrapped in `catch_unwind`; a
//!   failure is counted in `internal_errors` and never reaches the user's
//!   statement. ROW (a map lookup and a wrapping add) cannot panic and runs
//!   in a leaf without the guard. The callback always returns 0.
//! - No thread-local on the common path: in a cdylib each access is a call
//!   into the dynamic linker; they sit behind global checks in out-of-line
//!   functions.
//! - The per-connection state is freed on TRACE_CLOSE after the hook is
//!   removed. An app that replaces the trace hook (one slot per connection)
//!   turns capture off for that connection; its state is then never freed
//!   (a few KiB per such connection).

use crate::activity::{self, ActEntry, ConnTags};
use crate::config::{self, Key};
use crate::errlog;
use crate::events::{EventClass, EventRecord};
use crate::normalize;
use crate::registry::{self, DbStats, Entry, ErrorRecord, Exec};
use rusqlite::ffi;
use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::hash::BuildHasherDefault;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

/// Statements cached per connection; beyond it idle entries are dropped.
/// Python's statement cache holds 128 by default; apps rarely keep more live.
pub const MAX_CACHED_STMTS: usize = 1024;

const TRACE_MASK: c_uint = ffi::SQLITE_TRACE_STMT
    | ffi::SQLITE_TRACE_PROFILE
    | ffi::SQLITE_TRACE_ROW
    | ffi::SQLITE_TRACE_CLOSE;

const STATUS_OPS: [c_int; 4] = [
    ffi::SQLITE_STMTSTATUS_VM_STEP,
    ffi::SQLITE_STMTSTATUS_FULLSCAN_STEP,
    ffi::SQLITE_STMTSTATUS_SORT,
    ffi::SQLITE_STMTSTATUS_AUTOINDEX,
];

/// Stmt pointer → slot.
type PtrMap<V> = HashMap<usize, V, BuildHasherDefault<registry::KeyHasher>>;

struct Slot {
    /// The statement's text (the buffer is reused when the stmt pointer is
    /// reused for another text).
    sql: Vec<u8>,
    /// The fingerprint's entry; None while the text's first run is being
    /// digested in the background (see `digest`): a second run of the same
    /// statement normalizes it in place.
    entry: Option<Arc<Entry>>,
    /// The entry's statements are events (schema change, user_version...).
    event: bool,
    /// sqlcommenter tags of this statement text (JSON, and as pairs).
    tags: Option<Arc<str>>,
    stmt_tags: Vec<(String, String)>,
    /// Ticks at the start of the current run (clock::ticks), None when idle.
    start: Option<u64>,
    rows: u64,
    prev: [u32; 4],
    /// SQLITE_STMTSTATUS_RUN expected at this stmt's next STMT event (the
    /// stmt-object check of the fast path).
    runs: u32,
    /// The entry's statements are INSERT/UPDATE/DELETE (rows affected).
    dml: bool,
    /// Activity entries this statement feeds, for connection tag generation
    /// `act_gen` (u64::MAX: not resolved yet).
    act: Vec<Arc<ActEntry>>,
    act_gen: u64,
    /// schema_version / user_version read when an event statement started.
    before: (Option<i64>, Option<i64>),
    /// Entry resolved, not an event, no tags, no activity entries: a
    /// successful run only updates the entry (`on_profile`'s fast path).
    plain: bool,
}

impl Slot {
    fn empty() -> Slot {
        Slot {
            sql: Vec::new(),
            entry: None,
            event: false,
            tags: None,
            stmt_tags: Vec::new(),
            start: None,
            rows: 0,
            prev: [0; 4],
            runs: 0,
            dml: false,
            act: Vec::new(),
            act_gen: u64::MAX,
            before: (None, None),
            plain: false,
        }
    }

    /// Recompute `plain` after `entry`, `event`, `tags` or `act` changed.
    fn update_plain(&mut self) {
        self.plain =
            self.entry.is_some() && !self.event && self.tags.is_none() && self.act.is_empty();
    }

    /// Point the slot at a new statement text (keeps the text buffer).
    fn reset_to(&mut self, text: &[u8]) {
        self.sql.clear();
        self.sql.extend_from_slice(text);
        self.entry = None;
        self.event = false;
        self.dml = false;
        self.tags = None;
        self.stmt_tags.clear();
        self.act.clear();
        self.act_gen = u64::MAX;
        self.before = (None, None);
        self.plain = false;
    }
}

pub struct ConnState {
    db: *mut ffi::sqlite3,
    stats: Arc<DbStats>,
    /// Page-cache counters sampled for insights_resources.
    cache: Arc<crate::resources::ConnCache>,
    slots: PtrMap<Slot>,
    tags: Arc<ConnTags>,
    /// The slot of the statement seen last (STMT, ROW and PROFILE of one run
    /// usually follow each other): skips the hash lookup. Valid until
    /// `slots` is changed (whoever changes it clears this).
    last_key: usize,
    last_slot: *mut Slot,
    /// Queue of first runs digested in the background (created at the first
    /// deferral).
    ring: Option<Arc<crate::digest::Ring>>,
    /// Capture was switched off (insights_config('capture', 0)) since the
    /// last STMT: slots are dropped when it comes back.
    paused: bool,
    /// Where `errlog::set_thread_db` last saw this connection.
    thread_db: errlog::ThreadDbSeen,
}

thread_local! {
    /// Set while the extension runs its own statements on a user's
    /// connection (nested reads): their trace events are ignored.
    static SUPPRESS: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` with capture off on this thread (the extension's own nested
/// statements on a user's connection are never captured).
pub fn without_capture<T>(f: impl FnOnce() -> T) -> T {
    SUPPRESSING.fetch_add(1, Ordering::Relaxed);
    let prev = SUPPRESS.with(|s| s.replace(true));
    let was_internal = errlog::is_internal_thread();
    errlog::set_internal_thread(true); // their log lines are not user errors
    let r = f();
    errlog::set_internal_thread(was_internal);
    SUPPRESS.with(|s| s.set(prev));
    SUPPRESSING.fetch_sub(1, Ordering::Relaxed);
    r
}

/// Threads inside `without_capture` right now: the hot path reads the
/// thread-local flag only when this is non-zero.
static SUPPRESSING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// An instrumented connection: its tag set and its state (a `*mut ConnState`
/// owned by the hook until TRACE_CLOSE or `detach`).
struct Attached {
    tags: Arc<ConnTags>,
    state: usize,
}

fn attached() -> &'static Mutex<HashMap<usize, Attached>> {
    static S: OnceLock<Mutex<HashMap<usize, Attached>>> = OnceLock::new();
    S.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The tag set of an instrumented connection (for insights_tag).
pub fn conn_tags(db: *mut ffi::sqlite3) -> Option<Arc<ConnTags>> {
    registry::lock(attached())
        .get(&(db as usize))
        .map(|a| a.tags.clone())
}

/// Number of connections with our hook installed.
pub fn attached_count() -> usize {
    registry::lock(attached()).len()
}

thread_local! {
    /// The state pointer of the last hook call suppressed on this thread
    /// (see `hook_active`).
    static SUPPRESSED_SEEN: Cell<usize> = const { Cell::new(0) };
}

/// Whether our hook is the one installed on `db` right now: runs a nested
/// constant SELECT with capture off and looks whether our callback saw it (an
/// application that installs its own trace callback replaces ours).
///
/// # Safety
/// `db` must be a valid connection used by this thread right now.
pub unsafe fn hook_active(db: *mut ffi::sqlite3) -> bool {
    let Some(state) = registry::lock(attached())
        .get(&(db as usize))
        .map(|a| a.state)
    else {
        return false;
    };
    SUPPRESSED_SEEN.with(|c| c.set(0));
    let _ = query_rows(
        db,
        "SELECT 'insights_capture: is our trace hook installed?'",
        1,
    );
    SUPPRESSED_SEEN.with(|c| c.get()) == state
}

/// `insights_capture(0)`: remove our hook from `db` and free its state (the
/// connection then costs nothing). Statistics already recorded stay. When the
/// application replaced our hook, its hook is left alone.
///
/// # Safety
/// `db` must be a valid connection used by this thread right now (a SQL
/// function running on it), not from inside our trace callback.
pub unsafe fn detach(db: *mut ffi::sqlite3) -> bool {
    let ours = hook_active(db);
    let Some(state) = registry::lock(attached())
        .get(&(db as usize))
        .map(|a| a.state)
    else {
        return false;
    };
    if ours {
        ffi::sqlite3_trace_v2(db, 0, None, std::ptr::null_mut());
    }
    release(state as *mut ConnState, db);
    true
}

/// Our hook is off `db`: account the connection as no longer open, take its
/// last page-cache counters, digest what it queued and free its state.
/// Returns its database and the connections to it still open.
unsafe fn release(state: *mut ConnState, db: *mut ffi::sqlite3) -> (Arc<DbStats>, u64) {
    let mut state = Box::from_raw(state);
    let left = state.stats.connections_open.fetch_sub(1, Ordering::Relaxed) - 1;
    registry::lock(attached()).remove(&(db as usize));
    crate::resources::conn_closed(db, &state.cache);
    state.retire_ring();
    (state.stats.clone(), left)
}

/// The main database path of a connection; `:memory:` for in-memory/temp.
///
/// # Safety
/// `db` must be a valid open connection.
pub unsafe fn main_path(db: *mut ffi::sqlite3) -> String {
    let p = ffi::sqlite3_db_filename(db, c"main".as_ptr());
    if p.is_null() {
        return ":memory:".into();
    }
    let s = CStr::from_ptr(p).to_string_lossy();
    if s.is_empty() {
        ":memory:".into()
    } else {
        s.into_owned()
    }
}

/// Install the hook on `db`. `fresh` is true when SQLite is opening the
/// connection (auto-extension): it cannot already carry our hook.
///
/// # Safety
/// `db` must be a valid open connection and the API table initialised.
pub unsafe fn attach(db: *mut ffi::sqlite3, fresh: bool) {
    let tags = Arc::new(ConnTags::default());
    {
        let set = registry::lock(attached());
        if set.contains_key(&(db as usize)) && !fresh {
            return; // loaded twice into one connection: one hook is enough
        }
    }
    let stats = registry::registry().db(&main_path(db));
    let open = stats.connections_open.fetch_add(1, Ordering::Relaxed) + 1;
    stats.connections_opened.fetch_add(1, Ordering::Relaxed);
    stats.connections_peak.fetch_max(open, Ordering::Relaxed);
    errlog::set_thread_db(&stats, &mut errlog::ThreadDbSeen::default());
    let cache = crate::resources::register_conn(db, &stats);
    let state = Box::new(ConnState {
        db,
        stats,
        cache,
        slots: PtrMap::default(),
        tags,
        last_key: 0,
        last_slot: std::ptr::null_mut(),
        ring: None,
        paused: false,
        thread_db: Default::default(),
    });
    let raw = Box::into_raw(state);
    registry::lock(attached()).insert(
        db as usize,
        Attached {
            tags: (*raw).tags.clone(),
            state: raw as usize,
        },
    );
    let rc = ffi::sqlite3_trace_v2(db, TRACE_MASK, Some(trace_cb), raw as *mut c_void);
    if rc != ffi::SQLITE_OK {
        let state = Box::from_raw(raw);
        state.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
        registry::lock(attached()).remove(&(db as usize));
    }
}

/// Whether this thread runs the extension's own nested statements now (and
/// note which connection saw one). Out of line: the thread-local lookup is a
/// call into the dynamic linker in a cdylib, which the hot path must not pay
/// while nobody suppresses.
#[cold]
#[inline(never)]
fn suppressed_here(ctx: *mut c_void) -> bool {
    let on = SUPPRESS.with(|s| s.get());
    if on {
        SUPPRESSED_SEEN.with(|c| c.set(ctx as usize));
    }
    on
}

unsafe extern "C" fn trace_cb(
    mask: c_uint,
    ctx: *mut c_void,
    p: *mut c_void,
    x: *mut c_void,
) -> c_int {
    if SUPPRESSING.load(Ordering::Relaxed) != 0 {
        return trace_while_suppressing(mask, ctx, p, x);
    }
    dispatch(mask, ctx, p, x)
}

/// One event to its handler. One event per call, so its bit alone tells
/// which. Bit tests, not `==`: LLVM turns a chain of `==` into a jump
/// table, which costs more than these few tests on this path.
#[inline(always)]
unsafe fn dispatch(mask: c_uint, ctx: *mut c_void, p: *mut c_void, x: *mut c_void) -> c_int {
    if mask & ffi::SQLITE_TRACE_ROW != 0 {
        // the most frequent event, in a leaf: a lookup and an add, nothing
        // that can panic, so no unwind guard
        (*(ctx as *mut ConnState)).on_row(p as usize);
        return 0;
    }
    // the others each behind their own unwind guard
    if mask & ffi::SQLITE_TRACE_PROFILE != 0 {
        return profile_guarded(ctx, p);
    }
    if mask & ffi::SQLITE_TRACE_STMT != 0 {
        return stmt_guarded(ctx, p, x);
    }
    if mask & ffi::SQLITE_TRACE_CLOSE != 0 {
        return close_guarded(ctx, p);
    }
    0
}

/// Run a callback's work; a panic is counted, never passed on.
#[inline(always)]
fn guarded(f: impl FnOnce()) -> c_int {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        registry::registry()
            .internal_errors
            .fetch_add(1, Ordering::Relaxed);
    }
    0
}

#[inline(never)]
unsafe fn stmt_guarded(ctx: *mut c_void, p: *mut c_void, x: *mut c_void) -> c_int {
    guarded(|| (*(ctx as *mut ConnState)).on_stmt(p as *mut ffi::sqlite3_stmt, x as *const c_char))
}

#[inline(never)]
unsafe fn profile_guarded(ctx: *mut c_void, p: *mut c_void) -> c_int {
    guarded(|| (*(ctx as *mut ConnState)).on_profile(p as *mut ffi::sqlite3_stmt))
}

#[cold]
#[inline(never)]
unsafe fn close_guarded(ctx: *mut c_void, p: *mut c_void) -> c_int {
    guarded(|| close(ctx as *mut ConnState, p as *mut ffi::sqlite3))
}

/// `trace_cb` while some thread runs the extension's own nested statements:
/// this thread's are ignored (CLOSE never is).
#[cold]
#[inline(never)]
unsafe fn trace_while_suppressing(
    mask: c_uint,
    ctx: *mut c_void,
    p: *mut c_void,
    x: *mut c_void,
) -> c_int {
    if mask != ffi::SQLITE_TRACE_CLOSE && suppressed_here(ctx) {
        return 0; // the extension's own nested statement
    }
    dispatch(mask, ctx, p, x)
}

#[cold]
#[inline(never)]
unsafe fn close(state: *mut ConnState, db: *mut ffi::sqlite3) {
    // Remove the hook first: sqlite3_close can still fail with SQLITE_BUSY
    // after this event, and the connection must not call into freed state.
    ffi::sqlite3_trace_v2(db, 0, None, std::ptr::null_mut());
    let (stats, left) = release(state, db);
    stats.connections_closed.fetch_add(1, Ordering::Relaxed);
    // last connection of this database in the process: flush now, so short
    // processes (CLI jobs) leave their counts in the store
    if left == 0 && stats.has_store.load(Ordering::Relaxed) {
        let _ = crate::store::flush_db(&stats);
    }
}

/// Values an event statement needs from before it runs: schema_version for
/// schema changes, user_version for user_version changes.
unsafe fn read_before(
    db: *mut ffi::sqlite3,
    class: &Option<EventClass>,
) -> (Option<i64>, Option<i64>) {
    match class {
        Some(EventClass::SchemaChange { schema, .. }) => (
            read_pragma_int(db, schema.as_deref(), "schema_version"),
            None,
        ),
        Some(EventClass::UserVersion { schema }) => {
            (None, read_pragma_int(db, schema.as_deref(), "user_version"))
        }
        _ => (None, None),
    }
}

/// `PRAGMA [schema.]name` on the user's connection, not captured.
///
/// # Safety
/// `db` must be a valid connection used by this thread right now.
pub unsafe fn read_pragma_int(
    db: *mut ffi::sqlite3,
    schema: Option<&str>,
    name: &str,
) -> Option<i64> {
    let sql = match schema {
        Some(s) => format!("PRAGMA \"{}\".{name}", s.replace('"', "\"\"")),
        None => format!("PRAGMA {name}"),
    };
    query_strings(db, &sql).first().and_then(|v| v.parse().ok())
}

/// Run a read-only query on the user's connection with capture off and return
/// the first column of each row as text (at most 100 rows). Errors give an
/// empty list.
///
/// # Safety
/// `db` must be a valid connection used by this thread right now.
pub unsafe fn query_strings(db: *mut ffi::sqlite3, sql: &str) -> Vec<String> {
    query_rows(db, sql, 100)
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.into_iter().next().flatten().unwrap_or_default())
        .collect()
}

/// Rows that the extension's own nested queries return at most.
pub const MAX_NESTED_ROWS: usize = 100_000;

/// Run a read-only query on the user's connection with capture off; every
/// column as text (NULL as None). None when it cannot be prepared (e.g. the
/// table does not exist).
///
/// # Safety
/// `db` must be a valid connection used by this thread right now.
pub unsafe fn query_rows(
    db: *mut ffi::sqlite3,
    sql: &str,
    max_rows: usize,
) -> Option<Vec<Vec<Option<String>>>> {
    let c = std::ffi::CString::new(sql).ok()?;
    without_capture(|| {
        let mut stmt: *mut ffi::sqlite3_stmt = std::ptr::null_mut();
        if ffi::sqlite3_prepare_v2(db, c.as_ptr(), -1, &mut stmt, std::ptr::null_mut())
            != ffi::SQLITE_OK
            || stmt.is_null()
        {
            return None;
        }
        let n = ffi::sqlite3_column_count(stmt);
        let mut out = Vec::new();
        while out.len() < max_rows.min(MAX_NESTED_ROWS)
            && ffi::sqlite3_step(stmt) == ffi::SQLITE_ROW
        {
            let mut row = Vec::with_capacity(n as usize);
            for i in 0..n {
                let p = ffi::sqlite3_column_text(stmt, i);
                row.push((!p.is_null()).then(|| {
                    CStr::from_ptr(p as *const c_char)
                        .to_string_lossy()
                        .into_owned()
                }));
            }
            out.push(row);
        }
        ffi::sqlite3_finalize(stmt);
        Some(out)
    })
}

/// Compare a NUL-terminated C string with cached bytes (strlen and memcmp
/// are vectorised in libc: a few ns for a typical statement).
#[inline]
unsafe fn same_sql(cached: &[u8], x: *const u8) -> bool {
    let n = libc::strlen(x as *const c_char);
    n == cached.len() && std::slice::from_raw_parts(x, n) == cached
}

/// Whether a read-only statement's first run may be digested in the
/// background: not when it starts with a comment or with R (REINDEX can be
/// read-only yet is a maintenance event; ROLLBACK and RELEASE are rare).
#[inline]
fn deferrable_text(sql: &[u8]) -> bool {
    let first = sql
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .copied()
        .unwrap_or(b'-');
    !matches!(first, b'-' | b'/' | b'R' | b'r')
}

/// Tables of the migration tools (`events::MIGRATION_TABLES`) all contain
/// one of these: a write naming one may be a migration event.
const MIGRATION_MARKERS: [&[u8]; 3] = [b"migrations", b"alembic_version", b"schema_history"];

/// Whether a write's first run may be digested in the background: a plain
/// INSERT/UPDATE/DELETE/REPLACE (no leading comment or WITH) that names no
/// migration tool's table (those writes are events).
fn deferrable_write(sql: &[u8]) -> bool {
    let start = sql
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(sql.len());
    let rest = &sql[start..];
    let verb = [&b"INSERT"[..], b"UPDATE", b"DELETE", b"REPLACE"]
        .iter()
        .any(|v| {
            rest.len() > v.len()
                && rest[..v.len()].eq_ignore_ascii_case(v)
                && !(rest[v.len()].is_ascii_alphanumeric() || rest[v.len()] == b'_')
        });
    verb && !MIGRATION_MARKERS
        .iter()
        .any(|m| sql.windows(m.len()).any(|w| w.eq_ignore_ascii_case(m)))
}

/// Where a stmt's cumulative counters stand before its run number `run`
/// (SQLITE_STMTSTATUS_RUN at STMT): a stmt that never ran is at zero.
#[inline]
unsafe fn counters_before(stmt: *mut ffi::sqlite3_stmt, run: u32) -> [u32; 4] {
    if run == 0 {
        [0; 4]
    } else {
        stmt_counters(stmt)
    }
}

#[inline]
unsafe fn starts_with_comment(x: *const u8) -> bool {
    *x == b'-' && *x.add(1) == b'-'
}

#[inline]
unsafe fn stmt_counters(stmt: *mut ffi::sqlite3_stmt) -> [u32; 4] {
    let mut v = [0u32; 4];
    for (i, op) in STATUS_OPS.iter().enumerate() {
        v[i] = ffi::sqlite3_stmt_status(stmt, *op, 0) as u32;
    }
    v
}

impl Drop for ConnState {
    fn drop(&mut self) {
        self.retire_ring();
    }
}

impl ConnState {
    /// Digest what this connection queued and stop queueing.
    fn retire_ring(&mut self) {
        if let Some(r) = self.ring.take() {
            crate::digest::retire(&r);
        }
    }

    /// The slot of `key`, through the one-entry cache. The returned reference
    /// is not tied to `self`: callers must not change `slots` while using it.
    #[inline(always)]
    fn slot<'a>(&mut self, key: usize) -> Option<&'a mut Slot> {
        if key == self.last_key && !self.last_slot.is_null() {
            // SAFETY: last_slot points into `slots`, unchanged since it was
            // taken (miss clears it before changing the map).
            return Some(unsafe { &mut *self.last_slot });
        }
        self.slot_lookup(key)
    }

    /// `slot` past the one-entry cache (out of line: the hash probe is
    /// bulky and the hot callbacks mostly hit the cache).
    #[inline(never)]
    fn slot_lookup<'a>(&mut self, key: usize) -> Option<&'a mut Slot> {
        let s: *mut Slot = self.slots.get_mut(&key)?;
        self.last_key = key;
        self.last_slot = s;
        // SAFETY: as above.
        Some(unsafe { &mut *s })
    }

    #[inline(never)]
    unsafe fn on_stmt(&mut self, stmt: *mut ffi::sqlite3_stmt, x: *const c_char) {
        if x.is_null() {
            return;
        }
        if config::get(Key::Capture) == 0 {
            // runs while paused are not seen: the run counters in our slots
            // cannot be trusted afterwards
            self.paused = true;
            return;
        }
        if self.paused {
            self.paused = false;
            self.last_slot = std::ptr::null_mut();
            self.slots.clear();
        }
        // first: the TSC read's latency overlaps the lookup below
        let now = crate::clock::ticks();
        // a step error logged before this statement started is not its own
        errlog::drop_pending();
        let xb = x as *const u8;
        let key = stmt as usize;
        // runs of this stmt before this one (SQLite counts it up after STMT)
        let run = ffi::sqlite3_stmt_status(stmt, ffi::SQLITE_STMTSTATUS_RUN, 0) as u32;
        if let Some(slot) = self.slot(key) {
            if slot.start.is_some() && starts_with_comment(xb) {
                return; // a trigger body line of this running statement
            }
            // Same stmt object as the slot's: every run of a stmt on this
            // connection passes through here, so its run count is the one
            // we left (a new stmt at a reused address starts from 0, the
            // slot from 1).
            if run == slot.runs && !slot.event && slot.entry.is_some() {
                slot.runs = run.wrapping_add(1);
                slot.start = Some(now);
                slot.rows = 0;
                errlog::set_thread_db(&self.stats, &mut self.thread_db);
                return;
            }
        }
        // The statement's own text. X is that text for top-level statements;
        // a statement run from inside another one (e.g. by a user function)
        // arrives as "-- <sql>" on its own stmt pointer.
        let own = ffi::sqlite3_sql(stmt) as *const u8;
        let sqlp = if own.is_null() { xb } else { own };
        if let Some(slot) = self.slot(key) {
            if same_sql(&slot.sql, sqlp) {
                if run != slot.runs {
                    // a new stmt with the same text, or runs we did not see
                    // (a SQLITE_SCHEMA retry counts twice): restart the diff
                    slot.prev = counters_before(stmt, run);
                }
                slot.runs = run.wrapping_add(1);
                if slot.entry.is_none() {
                    // second run of a text digested in the background:
                    // it is reused, normalize it now
                    self.resolve(key);
                    // the run starts after our normalization
                    return self.start_run(key, crate::clock::ticks());
                }
                return self.start_run(key, now);
            }
        } else if starts_with_comment(xb) && sqlp != xb {
            // "-- <sql>" of a nested statement is a run; any other "-- ..."
            // line is a trigger body of a statement we never saw start
            let xs = CStr::from_ptr(x).to_bytes();
            let ss = CStr::from_ptr(sqlp as *const c_char).to_bytes();
            if !(xs.len() == ss.len() + 3 && &xs[3..] == ss) {
                return;
            }
        }
        self.miss(stmt, sqlp as *const c_char, now, run);
    }

    /// Start a run of a statement whose slot is resolved (event statements
    /// read what their event needs from before the run).
    #[cold]
    #[inline(never)]
    unsafe fn start_run(&mut self, key: usize, now: u64) {
        let db = self.db;
        let Some(slot) = self.slot(key) else {
            return;
        };
        if let Some(e) = slot.entry.as_ref().filter(|_| slot.event) {
            slot.before = read_before(db, &e.meta.event);
            // the run starts after our own reads
            slot.start = Some(crate::clock::ticks());
        } else {
            slot.start = Some(now);
        }
        slot.rows = 0;
        errlog::set_thread_db(&self.stats, &mut self.thread_db);
    }

    /// A statement text this connection has not run under this stmt pointer.
    /// Read-only statements (never events) and plain INSERT/UPDATE/DELETE/
    /// REPLACE not naming a migration table (never events either) on an
    /// untagged connection are digested in the background at the end of
    /// their first run; the rest are normalized here.
    #[inline(never)]
    unsafe fn miss(&mut self, stmt: *mut ffi::sqlite3_stmt, x: *const c_char, now: u64, run: u32) {
        let bytes = CStr::from_ptr(x).to_bytes();
        let key = stmt as usize;
        let mut write = false;
        let defer = bytes.len() <= crate::digest::MAX_DEFERRED_TEXT_BYTES
            && self.tags.gen.load(Ordering::Relaxed) == 0
            && if ffi::sqlite3_stmt_readonly(stmt) != 0 {
                deferrable_text(bytes)
            } else {
                write = deferrable_write(bytes);
                write
            };
        // counters this stmt ran up before we saw it (none when it is new)
        let prev = counters_before(stmt, run);
        let slot = match self.slot(key) {
            Some(slot) => {
                slot.reset_to(bytes);
                slot
            }
            None => {
                self.last_slot = std::ptr::null_mut();
                if self.slots.len() >= MAX_CACHED_STMTS {
                    self.slots.retain(|_, s| s.start.is_some());
                }
                let mut slot = Slot::empty();
                slot.sql.extend_from_slice(bytes);
                self.slots.insert(key, slot);
                match self.slot(key) {
                    Some(slot) => slot,
                    None => return,
                }
            }
        };
        slot.prev = prev;
        slot.runs = run.wrapping_add(1);
        if defer {
            // a pending write reads its rows affected at the end
            slot.dml = write;
            slot.start = Some(now);
            slot.rows = 0;
            errlog::set_thread_db(&self.stats, &mut self.thread_db);
        } else {
            self.resolve(key);
            self.start_run(key, crate::clock::ticks());
        }
    }

    /// Queue a first run for the digest thread.
    #[inline(never)]
    unsafe fn defer(&mut self, run: &crate::digest::Run) {
        let ring = self
            .ring
            .get_or_insert_with(|| crate::digest::Ring::new(self.stats.clone()));
        if !ring.push(run) {
            crate::digest::push_slow(ring, run);
        }
        self.sample_resources();
    }

    /// Rows the statement that just ended changed, for INSERT/UPDATE/DELETE
    /// (`dml`); 0 for the rest.
    #[inline]
    unsafe fn rows_affected(&self, dml: bool) -> u64 {
        if dml {
            ffi::sqlite3_changes(self.db).max(0) as u64
        } else {
            0
        }
    }

    /// After a statement: a page-cache sample when the sampler wants one.
    #[inline]
    unsafe fn sample_resources(&self) {
        if crate::resources::sample_due(&self.cache) {
            crate::resources::sample_conn(self.db, &self.cache);
        }
    }

    /// Normalize the slot's text and attach it to its fingerprint.
    #[cold]
    #[inline(never)]
    unsafe fn resolve(&mut self, key: usize) {
        let stats = self.stats.clone();
        let Some(slot) = self.slot(key) else {
            return;
        };
        let n = normalize::normalize(&slot.sql);
        let entry = stats.entry_for(n.fingerprint, &n.text);
        slot.tags = (!n.tags.is_empty()).then(|| Arc::from(normalize::tags_json(&n.tags)));
        slot.stmt_tags = n.tags;
        slot.event = entry.meta.event.is_some();
        slot.dml = entry.meta.fast.kind.is_dml();
        slot.act.clear();
        slot.act_gen = u64::MAX;
        slot.entry = Some(entry);
        slot.update_plain();
    }

    #[inline(always)]
    fn on_row(&mut self, stmt: usize) {
        if let Some(slot) = self.slot(stmt) {
            if slot.start.is_some() {
                slot.rows = slot.rows.wrapping_add(1);
            }
        }
    }

    /// End of a run. The common case (a resolved, untagged, non-event
    /// statement that did not fail) is handled here; the rest in
    /// `profile_slow`.
    #[inline(never)]
    unsafe fn on_profile(&mut self, stmt: *mut ffi::sqlite3_stmt) {
        let end = crate::clock::ticks();
        let Some(slot) = self.slot(stmt as usize) else {
            errlog::drop_pending(); // a step error of a statement we do not track
            return;
        };
        let Some(start) = slot.start.take() else {
            errlog::drop_pending();
            return;
        };
        // counters are cumulative per stmt; `prev` is where this run began
        // (restarted by on_stmt for a new stmt at a reused address)
        let cur = stmt_counters(stmt);
        let mut d = [0u64; 4];
        for i in 0..4 {
            d[i] = if cur[i] < slot.prev[i] {
                cur[i] as u64 // the application reset the counter
            } else {
                (cur[i] - slot.prev[i]) as u64
            };
        }
        slot.prev = cur;
        if slot.plain
            && !errlog::has_pending()
            && slot.act_gen == self.tags.gen.load(Ordering::Acquire)
            && (slot.rows != 0 || ffi::sqlite3_stmt_busy(stmt) == 0)
        {
            if let Some(entry) = slot.entry.as_ref().filter(|e| !e.is_dead()) {
                let mut exec = Exec::of_run(start, end, slot.rows, d);
                exec.rows_affected = self.rows_affected(slot.dml);
                entry.record_plain(&exec);
                return self.sample_resources();
            }
        }
        self.profile_slow(stmt, start, end, d)
    }

    /// End of a run that is a first run, failed, tagged, an event, or whose
    /// entry was evicted.
    #[cold]
    #[inline(never)]
    unsafe fn profile_slow(
        &mut self,
        stmt: *mut ffi::sqlite3_stmt,
        start: u64,
        end: u64,
        d: [u64; 4],
    ) {
        let Some(slot) = self.slot(stmt as usize) else {
            return;
        };
        let mut exec = Exec::of_run(start, end, slot.rows, d);
        // error path: a step error logged on this thread for this statement
        let failure = if errlog::has_pending() {
            errlog::take_pending_for(&slot.sql)
        } else {
            None
        };
        let failure = match failure {
            Some(f) if f.code & 0xff == ffi::SQLITE_SCHEMA => {
                // SQLite re-prepares and re-runs this statement in the same
                // sqlite3_step call; the run ends at the next PROFILE
                slot.start = Some(start);
                return;
            }
            Some(f) => Some(f),
            None if slot.rows == 0 && ffi::sqlite3_stmt_busy(stmt) != 0 => {
                Some(errlog::Failure::busy())
            }
            None => None,
        };
        if let Some(e) = slot.entry.as_ref().filter(|e| e.is_dead()) {
            let meta = e.meta.clone();
            slot.entry = Some(self.stats.revive(&meta));
        }
        if slot.entry.is_none() {
            if failure.is_none() && self.tags.gen.load(Ordering::Relaxed) == 0 {
                // first run of a text: digest it in the background
                let run = crate::digest::Run {
                    text: &slot.sql,
                    start,
                    end,
                    rows: slot.rows,
                    rows_affected: self.rows_affected(slot.dml),
                    counters: d,
                };
                return self.defer(&run);
            }
            // a failed (or tagged) first run: normalize it now
            self.resolve(stmt as usize);
        }
        let Some(slot) = self.slot(stmt as usize) else {
            return;
        };
        if slot.act_gen != self.tags.gen.load(Ordering::Acquire) {
            Self::resolve_activity(&self.stats, &self.tags, slot);
        }
        let Some(entry) = slot.entry.as_ref() else {
            return;
        };
        match failure {
            None => {
                exec.rows_affected = self.rows_affected(slot.dml);
                entry.record(&exec, slot.tags.as_ref());
                for a in &slot.act {
                    registry::lock(&a.stats).add_exec(&exec);
                }
                if slot.event {
                    self.record_event(stmt as usize, &exec);
                }
            }
            Some(f) => self.record_failure(stmt as usize, &exec, f),
        }
        self.sample_resources();
    }

    #[cold]
    #[inline(never)]
    fn resolve_activity(stats: &DbStats, tags: &ConnTags, slot: &mut Slot) {
        let gen = tags.gen.load(Ordering::Acquire);
        if gen == 0 && slot.stmt_tags.is_empty() {
            // never tagged, no sqlcommenter tags: nothing to resolve
            slot.act.clear();
            slot.act_gen = gen;
            return;
        }
        let eff = activity::effective(&tags.get(), &slot.stmt_tags);
        slot.act = if eff.is_empty() {
            Vec::new()
        } else {
            stats.activity.resolve(&eff)
        };
        slot.act_gen = gen;
        slot.update_plain();
    }

    /// A successful run of an event statement (schema change, user_version,
    /// maintenance, migration write): record it. Rare; may read the
    /// connection's own pragmas (nested, not captured).
    #[cold]
    #[inline(never)]
    unsafe fn record_event(&mut self, key: usize, exec: &Exec) {
        let Some(slot) = self.slots.get(&key) else {
            return;
        };
        let Some(entry) = slot.entry.as_ref() else {
            return;
        };
        let Some(class) = entry.meta.event.clone() else {
            return;
        };
        let conn_tags = self.tags.get();
        let eff = activity::effective(&conn_tags, &slot.stmt_tags);
        let mut e = EventRecord::new(&self.stats.path, "", "");
        e.at_unix_ms = crate::clock::stamp_unix_ms(exec.at);
        e.statement = Some(entry.meta.query.clone());
        e.tags = (!eff.is_empty()).then(|| normalize::tags_json(&eff));
        match &class {
            EventClass::SchemaChange {
                verb,
                object_type,
                object,
                schema,
            } => {
                e.kind = "schema_change".into();
                e.object = Some(object.clone());
                e.detail = format!("{verb} {object_type}");
                e.schema_version_before = slot.before.0;
                e.schema_version_after =
                    read_pragma_int(self.db, schema.as_deref(), "schema_version");
            }
            EventClass::UserVersion { schema } => {
                e.kind = "user_version".into();
                e.user_version_before = slot.before.1;
                e.user_version_after = read_pragma_int(self.db, schema.as_deref(), "user_version");
                e.detail = format!(
                    "{} -> {}",
                    e.user_version_before
                        .map(|v| v.to_string())
                        .unwrap_or("?".into()),
                    e.user_version_after
                        .map(|v| v.to_string())
                        .unwrap_or("?".into())
                );
            }
            EventClass::Maintenance(what) => {
                e.kind = (*what).into();
                e.object = entry.meta.fast.tables.first().cloned();
            }
            EventClass::MigrationWrite { tool, table } => {
                e.kind = "migration".into();
                e.object = Some((*tool).into());
                e.detail =
                    crate::migrations::latest_version(self.db, tool, table).unwrap_or_default();
            }
        }
        crate::events::record(&self.stats, e);
    }

    #[cold]
    #[inline(never)]
    fn record_failure(&mut self, key: usize, exec: &Exec, f: errlog::Failure) {
        let Some(slot) = self.slots.get(&key) else {
            return;
        };
        for a in &slot.act {
            let mut s = registry::lock(&a.stats);
            s.add_exec(exec);
            s.errors += 1;
        }
        let Some(entry) = slot.entry.as_ref() else {
            return;
        };
        let busy = f.code & 0xff == ffi::SQLITE_BUSY;
        crate::connections::note_failure(&self.stats, f.code);
        entry.record_error(Some(exec), &f.message, busy);
        let sample = (config::get(Key::SampleRawSql) != 0).then(|| {
            registry::truncate(
                &String::from_utf8_lossy(&slot.sql),
                registry::MAX_SAMPLE_BYTES,
            )
            .to_string()
        });
        registry::registry().push_error(ErrorRecord {
            at_unix_ms: crate::clock::stamp_unix_ms(exec.at),
            database: self.stats.path.clone(),
            fingerprint: Some(entry.meta.fingerprint),
            query: Some(entry.meta.query.clone()),
            kind: Some(entry.meta.fast.kind),
            code: f.code & 0xff,
            extended_code: f.code,
            message: f.message,
            phase: "step",
            sample,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_first_runs_are_deferred() {
        for sql in [
            "SELECT 1",
            "  select v from t where id = 3",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "VALUES (1)",
        ] {
            assert!(deferrable_text(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "-- c\nSELECT 1",
            "/* c */ SELECT 1",
            "REINDEX",
            "rollback",
            "",
        ] {
            assert!(!deferrable_text(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "INSERT INTO log(msg) VALUES ('x')",
            "  update t set a = 1 where id = 2",
            "DELETE FROM t WHERE id = 9",
            "REPLACE INTO t VALUES (1)",
            "insert or ignore into t values (1)",
        ] {
            assert!(deferrable_write(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "INSERT INTO alembic_version (version_num) VALUES ('ae1027a6acf')",
            "UPDATE \"Alembic_Version\" SET version_num='x'",
            "INSERT INTO django_migrations (app, name, applied) VALUES ('a', 'b', 'c')",
            "INSERT INTO flyway_schema_history VALUES (1)",
            "DELETE FROM knex_migrations",
            "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
            "CREATE TABLE t(a)",
            "/* app='x' */ INSERT INTO t VALUES (1)",
            "INSERTX",
        ] {
            assert!(!deferrable_write(sql.as_bytes()), "{sql}");
        }
        // every migration tool's table carries a marker
        for (table, _) in crate::events::MIGRATION_TABLES {
            let sql = format!("INSERT INTO {table} VALUES (1)");
            assert!(!deferrable_write(sql.as_bytes()), "{sql}");
        }
    }
}
