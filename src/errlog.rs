//! Error capture through SQLite's global error log (`SQLITE_CONFIG_LOG`).
//!
//! Rules:
//! - Failed statements are invisible to the profile hook, so the error log is
//!   the signal: prepare errors (`<msg> in "<sql>"`) are recorded at once;
//!   step errors (`abort at N in [<sql>]: <msg>`, `statement aborts at N:
//!   [<sql>] <msg>` and newer `statement aborts at N: <msg>; [<sql>]`) are left
//!   pending on the logging thread and taken by the next PROFILE on that thread
//!   when the SQL matches (log, rollback hook, PROFILE come in that order).
//! - The log slot is process-wide with no getter. Installed:
//!   * `preload`: our library in LD_PRELOAD installs it from an ELF
//!     constructor, before the host initialises SQLite (any version);
//!   * `runtime`: at first load on hosts with SQLite >= 3.42, which accept
//!     SQLITE_CONFIG_LOG at any time. `sqlite3_config` is not in the extension
//!     API table, so it is found in the host's own SQLite image (dladdr on an
//!     API function, dlopen RTLD_NOLOAD, dlsym) and used only if it lives in
//!     that same image.
//!   * otherwise `none`: only SQLITE_BUSY returns are seen (capture.rs).
//!
//!   `SQLITE_INSIGHTS_ERROR_LOG=off` keeps our hands off the slot entirely.
//! - The callback never calls into SQLite, ignores notices and warnings, and
//!   ignores messages logged on the extension's own threads.
//! - A probe (`sqlite3_log` of a marker) tells whether our callback is the one
//!   in force: a host may install its own later (the sqlite3 shell does).

use crate::registry::{self, DbStats};
use rusqlite::ffi;
use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

/// First SQLite version whose sqlite3_config(SQLITE_CONFIG_LOG) works after
/// initialisation.
pub const RUNTIME_LOG_MIN_VERSION: i32 = 3_042_000;
/// Marker logged by the probe.
const PROBE: &str = "sqlite-insights probe";
/// Environment variable: `off` never touches the log slot.
pub const ENV_ERROR_LOG: &str = "SQLITE_INSIGHTS_ERROR_LOG";
/// Environment variable: library to load in preload mode.
pub const ENV_LIBSQLITE: &str = "SQLITE_INSIGHTS_LIBSQLITE";
/// Environment variable: `1` also registers the extension for every
/// connection in preload mode (no `.load` needed).
pub const ENV_AUTOLOAD: &str = "SQLITE_INSIGHTS_AUTOLOAD";
/// Library tried in preload mode when the host has not loaded SQLite yet.
const DEFAULT_LIBSQLITE: &str = "libsqlite3.so.0";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Mode {
    None = 0,
    Preload = 1,
    Runtime = 2,
    Disabled = 3,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Preload => "preload",
            Mode::Runtime => "runtime",
            Mode::Disabled => "disabled",
        }
    }
}

static MODE: AtomicU8 = AtomicU8::new(Mode::None as u8);
static INSTALL_NOTE: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
static PROBE_SEEN: AtomicBool = AtomicBool::new(false);
pub static LOG_MESSAGES: AtomicU64 = AtomicU64::new(0);
pub static PREPARE_ERRORS: AtomicU64 = AtomicU64::new(0);
pub static STEP_ERRORS: AtomicU64 = AtomicU64::new(0);

pub fn mode() -> Mode {
    match MODE.load(Ordering::Relaxed) {
        1 => Mode::Preload,
        2 => Mode::Runtime,
        3 => Mode::Disabled,
        _ => Mode::None,
    }
}

pub fn install_note() -> String {
    registry::lock(&INSTALL_NOTE).clone()
}

fn set_note(s: String) {
    *registry::lock(&INSTALL_NOTE) = s;
}

/// A failed execution as seen by the capture path.
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn busy() -> Failure {
        Failure {
            code: ffi::SQLITE_BUSY,
            message: "database is locked".into(),
        }
    }
}

struct Pending {
    code: i32,
    msg: String,
}

thread_local! {
    static HAS_PENDING: Cell<bool> = const { Cell::new(false) };
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
    static THREAD_DB: RefCell<Option<Arc<DbStats>>> = const { RefCell::new(None) };
    static THREAD_DB_PTR: Cell<usize> = const { Cell::new(0) };
    static INTERNAL: Cell<bool> = const { Cell::new(false) };
}

/// Mark the current thread as one of the extension's own (its logs ignored,
/// its connections not instrumented).
pub fn set_internal_thread(on: bool) {
    let _ = INTERNAL.try_with(|c| c.set(on));
}

pub fn is_internal_thread() -> bool {
    INTERNAL.try_with(|c| c.get()).unwrap_or(false)
}

/// Threads with a pending step error right now: lets the hot path skip the
/// thread-local lookup (a call into the dynamic linker's TLS in a cdylib)
/// when nobody has one.
static PENDING_THREADS: AtomicUsize = AtomicUsize::new(0);

fn set_pending_flag(on: bool) {
    let _ = HAS_PENDING.try_with(|c| {
        if c.get() != on {
            c.set(on);
            if on {
                PENDING_THREADS.fetch_add(1, Ordering::Relaxed);
            } else {
                PENDING_THREADS.fetch_sub(1, Ordering::Relaxed);
            }
        }
    });
}

/// Whether an error log of ours is installed (only then do prepare errors
/// need the thread's database).
#[inline]
pub fn capturing() -> bool {
    matches!(MODE.load(Ordering::Relaxed), 1 | 2)
}

/// Remember which database this thread last used (to place prepare errors).
/// `seen` is the caller's (connection's) memory of its last call: while the
/// connection runs on the same thread and no thread's database changed
/// since, nothing is to do and no thread-local is touched (a call into the
/// dynamic linker in a cdylib).
#[inline(always)]
pub fn set_thread_db(db: &Arc<DbStats>, seen: &mut ThreadDbSeen) {
    if !capturing() {
        return;
    }
    let me = thread_id();
    let gen = THREAD_DB_CHANGES.load(Ordering::Acquire);
    if seen.thread != me || seen.gen != gen {
        change_thread_db(db, seen, me);
    }
}

/// An id of the calling thread, cheap: the thread pointer (what
/// pthread_self returns on x86_64 glibc), read without a call.
#[inline(always)]
fn thread_id() -> usize {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        let tp: usize;
        // SAFETY: %fs:0 holds the thread control block's own address on
        // x86_64 Linux (glibc and musl alike); reading it has no effects.
        unsafe {
            std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags))
        };
        tp
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        // SAFETY: pthread_self has no preconditions.
        unsafe { libc::pthread_self() as usize }
    }
}

/// What a connection last told `set_thread_db`: on which thread, at which
/// count of thread-database changes.
#[derive(Default)]
pub struct ThreadDbSeen {
    thread: usize,
    gen: u64,
}

/// Changes of any thread's database (see `set_thread_db`).
static THREAD_DB_CHANGES: AtomicU64 = AtomicU64::new(1);

#[cold]
#[inline(never)]
fn change_thread_db(db: &Arc<DbStats>, seen: &mut ThreadDbSeen, me: usize) {
    let p = Arc::as_ptr(db) as usize;
    if THREAD_DB_PTR.try_with(|c| c.get() != p).unwrap_or(false) {
        let _ = THREAD_DB_PTR.try_with(|c| c.set(p));
        let _ = THREAD_DB.try_with(|c| *c.borrow_mut() = Some(db.clone()));
        THREAD_DB_CHANGES.fetch_add(1, Ordering::AcqRel);
    }
    seen.thread = me;
    seen.gen = THREAD_DB_CHANGES.load(Ordering::Acquire);
}

fn thread_db() -> Arc<DbStats> {
    if let Ok(Some(d)) = THREAD_DB.try_with(|c| c.borrow().clone()) {
        return d;
    }
    let dbs = registry::registry().databases();
    if dbs.len() == 1 {
        return dbs[0].clone();
    }
    registry::registry().db(registry::UNKNOWN_DB)
}

/// Forget a pending step error (it belongs to no statement we track).
#[inline]
pub fn drop_pending() {
    if has_pending() {
        set_pending_flag(false);
        let _ = PENDING.try_with(|c| c.borrow_mut().take());
    }
}

#[inline]
pub fn has_pending() -> bool {
    PENDING_THREADS.load(Ordering::Relaxed) != 0 && thread_has_pending()
}

/// The thread-local half of `has_pending`, out of line so that the hot path
/// does not compute the thread-local address while no thread has one.
#[inline(never)]
fn thread_has_pending() -> bool {
    HAS_PENDING.try_with(|c| c.get()).unwrap_or(false)
}

/// Take the pending step error if it names `sql`; a non-matching one is
/// dropped (it belonged to a statement we do not see).
pub fn take_pending_for(sql: &[u8]) -> Option<Failure> {
    set_pending_flag(false);
    let p = PENDING.try_with(|c| c.borrow_mut().take()).ok()??;
    let sql = String::from_utf8_lossy(sql);
    let message = step_error_message(&p.msg, &sql)?;
    Some(Failure {
        code: p.code,
        message,
    })
}

/// SQLite's log lines are cut at 209 bytes (3.40) or 699 (3.53+); a line
/// this long may have lost the SQL that identifies its statement.
pub const TRUNCATED_LINE_BYTES: usize = 200;

/// What follows `sql` at the start of `text`, if `text` starts with it, or
/// "" if `text` is a prefix of `sql` (the log line was cut). SQLite 3.53+
/// puts `/* TRIGGER name */ ` before the SQL of an error raised in a trigger.
fn match_sql<'a>(text: &'a str, sql: &str) -> Option<&'a str> {
    let text = match text.strip_prefix("/* ") {
        Some(rest) => rest.find(" */ ").map(|p| &rest[p + 4..]).unwrap_or(text),
        None => text,
    };
    if let Some(rest) = text.strip_prefix(sql) {
        return Some(rest);
    }
    let t = text.trim_end_matches(']');
    if !t.is_empty() && sql.starts_with(t) {
        return Some("");
    }
    None
}

/// The error message of a step-error log line about `sql`, or None when the
/// line is about another statement. A line cut so short that its SQL is
/// gone is taken as this statement's (the log comes right before the
/// PROFILE of the failing statement, and a pending error is dropped at every
/// statement start).
pub fn step_error_message(line: &str, sql: &str) -> Option<String> {
    let truncated = line.len() >= TRUNCATED_LINE_BYTES;
    // 3.40: "abort at 12 in [INSERT ...]: UNIQUE constraint failed: t.v"
    if let Some(rest) = line.strip_prefix("abort at ") {
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
        let rest = rest.strip_prefix(" in [")?;
        let Some(after) = match_sql(rest, sql) else {
            return truncated.then(|| "constraint failed (message cut by SQLite's log)".into());
        };
        let msg = after.strip_prefix("]: ").unwrap_or(after);
        return Some(if msg.is_empty() {
            "constraint failed".into()
        } else {
            msg.to_string()
        });
    }
    let rest = line.strip_prefix("statement aborts at ")?;
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix(": ")?;
    // 3.40 form: "[SQL] message"
    if let Some(r) = rest.strip_prefix('[') {
        if let Some(after) = match_sql(r, sql) {
            let msg = after.strip_prefix("] ").unwrap_or(after);
            return Some(msg.trim_start_matches(']').trim().to_string());
        }
    }
    // newer form: "message; [SQL]" -- the message itself may contain "; ["
    for (pos, _) in rest.match_indices("; [") {
        if match_sql(&rest[pos + 3..], sql).is_some() {
            return Some(rest[..pos].to_string());
        }
    }
    if truncated && !rest.starts_with('[') {
        let msg = rest.rfind("; [").map(|p| &rest[..p]).unwrap_or(rest);
        return Some(msg.to_string());
    }
    None
}

/// Split a prepare-error line `<msg> in "<sql>"` into (msg, sql).
pub fn parse_prepare_error(line: &str) -> Option<(&str, &str)> {
    let pos = line.find(" in \"")?;
    let msg = &line[..pos];
    let sql = &line[pos + 5..];
    let sql = sql.strip_suffix('"').unwrap_or(sql);
    Some((msg, sql))
}

unsafe extern "C" fn log_cb(_arg: *mut c_void, code: c_int, msg: *const c_char) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if msg.is_null() {
            return;
        }
        let line = CStr::from_ptr(msg).to_string_lossy();
        if line.starts_with(PROBE) {
            PROBE_SEEN.store(true, Ordering::Relaxed);
            return;
        }
        on_log(code, &line);
    }));
}

fn on_log(code: c_int, line: &str) {
    let prim = code & 0xff;
    if prim == ffi::SQLITE_NOTICE || prim == ffi::SQLITE_WARNING || prim == ffi::SQLITE_OK {
        return;
    }
    if is_internal_thread() {
        return;
    }
    LOG_MESSAGES.fetch_add(1, Ordering::Relaxed);
    if prim == ffi::SQLITE_CANTOPEN {
        crate::connections::note_open_failure(line);
    }
    if line.starts_with("abort at ") || line.starts_with("statement aborts at ") {
        STEP_ERRORS.fetch_add(1, Ordering::Relaxed);
        let _ = PENDING.try_with(|c| {
            *c.borrow_mut() = Some(Pending {
                code,
                msg: line.to_string(),
            })
        });
        set_pending_flag(true);
        return;
    }
    if let Some((message, sql)) = parse_prepare_error(line) {
        if prim == ffi::SQLITE_SCHEMA {
            return;
        }
        PREPARE_ERRORS.fetch_add(1, Ordering::Relaxed);
        let db = thread_db();
        registry::record_prepare_error(&db, sql, code, message);
    }
}

type ConfigFn = unsafe extern "C" fn(c_int, ...) -> c_int;
type LogFn = unsafe extern "C" fn(*mut c_void, c_int, *const c_char);

fn env_off() -> bool {
    std::env::var(ENV_ERROR_LOG)
        .map(|v| v.eq_ignore_ascii_case("off") || v == "0")
        .unwrap_or(false)
}

unsafe fn image_base(addr: *const c_void) -> Option<(usize, String)> {
    let mut info: libc::Dl_info = std::mem::zeroed();
    if libc::dladdr(addr, &mut info) == 0 {
        return None;
    }
    let name = if info.dli_fname.is_null() {
        String::new()
    } else {
        CStr::from_ptr(info.dli_fname)
            .to_string_lossy()
            .into_owned()
    };
    Some((info.dli_fbase as usize, name))
}

/// Find `sqlite3_config` in the same image as the host's API function `api_fn`.
unsafe fn find_config(api_fn: *const c_void) -> Result<ConfigFn, String> {
    let (base, fname) = image_base(api_fn).ok_or("dladdr failed on the host's SQLite")?;
    let mut candidates = Vec::new();
    if !fname.is_empty() {
        if let Ok(c) = std::ffi::CString::new(fname.clone()) {
            let h = libc::dlopen(c.as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY);
            if !h.is_null() {
                candidates.push(libc::dlsym(h, c"sqlite3_config".as_ptr()));
                libc::dlclose(h);
            }
        }
    }
    let main = libc::dlopen(std::ptr::null(), libc::RTLD_LAZY);
    if !main.is_null() {
        candidates.push(libc::dlsym(main, c"sqlite3_config".as_ptr()));
    }
    candidates.push(libc::dlsym(libc::RTLD_DEFAULT, c"sqlite3_config".as_ptr()));
    for f in candidates.into_iter().filter(|f| !f.is_null()) {
        if image_base(f).map(|(b, _)| b) == Some(base) {
            return Ok(std::mem::transmute::<*mut c_void, ConfigFn>(f));
        }
    }
    // Not exported (SQLite compiled into apsw, better-sqlite3, Go or Rust
    // binaries): look the symbol up in the image's ELF symbol table.
    if let Some(f) = symtab_lookup(&fname, api_fn as usize) {
        if image_base(f as *const c_void).map(|(b, _)| b) == Some(base) {
            return Ok(std::mem::transmute::<*mut c_void, ConfigFn>(f));
        }
    }
    Err(format!(
        "sqlite3_config is neither exported nor in the symbol table of the host's SQLite image ({fname})"
    ))
}

/// Largest symbol table read from a host image (a stripped or huge binary
/// is not worth more start-up time).
const MAX_SYMTAB_BYTES: u64 = 64 << 20;

/// Find `sqlite3_config` in the (non-dynamic) ELF symbol table of `path`.
/// The load bias is derived from `sqlite3_libversion_number`, whose run-time
/// address we know (`libversion_addr`); both symbols must be present, which
/// also proves the table describes this image. ELF64 little-endian only.
fn symtab_lookup(path: &str, libversion_addr: usize) -> Option<*mut c_void> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let mut eh = [0u8; 64];
    f.read_exact(&mut eh).ok()?;
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return None;
    }
    let u16at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let u32at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as u64;
    let u64at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let shoff = u64at(&eh, 0x28);
    let shentsize = u16at(&eh, 0x3A);
    let shnum = u16at(&eh, 0x3C);
    if shentsize < 64 || shnum == 0 || shnum > 4096 {
        return None;
    }
    let mut sh = vec![0u8; (shentsize * shnum) as usize];
    f.seek(SeekFrom::Start(shoff)).ok()?;
    f.read_exact(&mut sh).ok()?;
    let sec = |i: u64| &sh[(i * shentsize) as usize..((i + 1) * shentsize) as usize];
    let symtab = (0..shnum).find(|i| u32at(sec(*i), 4) == 2)?; // SHT_SYMTAB
    let s = sec(symtab);
    let (sym_off, sym_size, link, entsize) = (
        u64at(s, 0x18),
        u64at(s, 0x20),
        u32at(s, 0x28),
        u64at(s, 0x38),
    );
    if entsize < 24 || link >= shnum || sym_size > MAX_SYMTAB_BYTES {
        return None;
    }
    let st = sec(link);
    let (str_off, str_size) = (u64at(st, 0x18), u64at(st, 0x20));
    if str_size > MAX_SYMTAB_BYTES {
        return None;
    }
    let mut syms = vec![0u8; sym_size as usize];
    f.seek(SeekFrom::Start(sym_off)).ok()?;
    f.read_exact(&mut syms).ok()?;
    let mut strs = vec![0u8; str_size as usize];
    f.seek(SeekFrom::Start(str_off)).ok()?;
    f.read_exact(&mut strs).ok()?;
    let name_at = |o: usize| -> &[u8] {
        let tail = strs.get(o..).unwrap_or(&[]);
        &tail[..tail.iter().position(|b| *b == 0).unwrap_or(tail.len())]
    };
    let (mut config, mut libver) = (None, None);
    for e in syms.chunks_exact(entsize as usize) {
        let info = e[4];
        if info & 0xf != 2 || u16at(e, 6) == 0 {
            continue; // not a defined function
        }
        match name_at(u32at(e, 0) as usize) {
            b"sqlite3_config" => config = Some(u64at(e, 8)),
            b"sqlite3_libversion_number" => libver = Some(u64at(e, 8)),
            _ => {}
        }
    }
    let (config, libver) = (config?, libver?);
    let bias = (libversion_addr as u64).checked_sub(libver)?;
    Some(bias.checked_add(config)? as usize as *mut c_void)
}

/// At first load: install the log callback on hosts that allow it.
///
/// # Safety
/// `api` must be the host's API table.
pub unsafe fn install_runtime(api: *mut ffi::sqlite3_api_routines) {
    if mode() == Mode::Preload {
        return;
    }
    if env_off() {
        MODE.store(Mode::Disabled as u8, Ordering::Relaxed);
        set_note(format!("{ENV_ERROR_LOG}=off"));
        return;
    }
    let version = ffi::sqlite3_libversion_number();
    if version < RUNTIME_LOG_MIN_VERSION {
        set_note(format!(
            "host SQLite {version} < 3.42 cannot take an error log after start-up; \
             run the host with LD_PRELOAD=<path>/insights0.so for error capture"
        ));
        return;
    }
    let Some(api_fn) = (*api).libversion_number else {
        set_note("host API table has no libversion_number".into());
        return;
    };
    match find_config(api_fn as *const c_void) {
        Ok(config) => {
            let cb: LogFn = log_cb;
            let rc = config(ffi::SQLITE_CONFIG_LOG, cb, std::ptr::null_mut::<c_void>());
            if rc == ffi::SQLITE_OK {
                MODE.store(Mode::Runtime as u8, Ordering::Relaxed);
                set_note("installed at load (SQLite >= 3.42)".into());
            } else {
                set_note(format!("sqlite3_config(SQLITE_CONFIG_LOG) returned {rc}"));
            }
        }
        Err(e) => set_note(e),
    }
}

/// Is our log callback the one in force? Logs a marker notice and checks.
pub fn probe() -> bool {
    if matches!(mode(), Mode::None | Mode::Disabled) {
        return false;
    }
    PROBE_SEEN.store(false, Ordering::Relaxed);
    unsafe {
        ffi::sqlite3_log(
            ffi::SQLITE_NOTICE,
            c"%s".as_ptr(),
            c"sqlite-insights probe".as_ptr(),
        );
    }
    PROBE_SEEN.load(Ordering::Relaxed)
}

/// Preload mode: when this library is in LD_PRELOAD, install the log before
/// the host initialises SQLite. Runs from the ELF constructor.
extern "C" fn preload_ctor() {
    let _ = catch_unwind(|| unsafe { preload() });
}

#[used]
#[link_section = ".init_array"]
static PRELOAD_CTOR: extern "C" fn() = preload_ctor;

unsafe fn preload() {
    let Ok(pre) = std::env::var("LD_PRELOAD") else {
        return;
    };
    let Some((_, me)) = image_base(preload_ctor as *const c_void) else {
        return;
    };
    let my_name = std::path::Path::new(&me)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let listed = pre.split([':', ' ']).any(|p| {
        !p.is_empty()
            && std::path::Path::new(p)
                .file_name()
                .map(|f| f.to_string_lossy() == my_name)
                .unwrap_or(false)
    });
    if !listed || env_off() {
        return;
    }
    let mut config = libc::dlsym(libc::RTLD_DEFAULT, c"sqlite3_config".as_ptr());
    let mut handle = std::ptr::null_mut();
    if config.is_null() {
        let lib = std::env::var(ENV_LIBSQLITE).unwrap_or_else(|_| DEFAULT_LIBSQLITE.into());
        let Ok(c) = std::ffi::CString::new(lib) else {
            return;
        };
        handle = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
        if handle.is_null() {
            return;
        }
        config = libc::dlsym(handle, c"sqlite3_config".as_ptr());
        if config.is_null() {
            return;
        }
    }
    let config: ConfigFn = std::mem::transmute::<*mut c_void, ConfigFn>(config);
    let cb: LogFn = log_cb;
    if config(ffi::SQLITE_CONFIG_LOG, cb, std::ptr::null_mut::<c_void>()) == ffi::SQLITE_OK {
        MODE.store(Mode::Preload as u8, Ordering::Relaxed);
        set_note("installed by LD_PRELOAD before SQLite started".into());
    }
    let autoload = std::env::var(ENV_AUTOLOAD)
        .map(|v| v == "1")
        .unwrap_or(false);
    if autoload {
        let f = if handle.is_null() {
            libc::dlsym(libc::RTLD_DEFAULT, c"sqlite3_auto_extension".as_ptr())
        } else {
            libc::dlsym(handle, c"sqlite3_auto_extension".as_ptr())
        };
        if !f.is_null() {
            let auto: unsafe extern "C" fn(Option<unsafe extern "C" fn()>) -> c_int =
                std::mem::transmute::<*mut c_void, _>(f);
            auto(Some(
                std::mem::transmute::<*const (), unsafe extern "C" fn()>(
                    crate::auto_entry as *const (),
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_messages_3_40() {
        let sql = "INSERT INTO t(v) VALUES(1)";
        assert_eq!(
            step_error_message(
                "abort at 12 in [INSERT INTO t(v) VALUES(1)]: UNIQUE constraint failed: t.v",
                sql
            )
            .as_deref(),
            Some("UNIQUE constraint failed: t.v")
        );
        assert_eq!(
            step_error_message(
                "statement aborts at 3: [INSERT INTO t(v) VALUES(1)] integer overflow",
                sql
            )
            .as_deref(),
            Some("integer overflow")
        );
        assert_eq!(
            step_error_message("abort at 12 in [SELECT 2]: x", sql),
            None
        );
    }

    #[test]
    fn step_messages_newer_and_truncated() {
        let sql = "UPDATE t SET v = v + 1 WHERE id = 5";
        assert_eq!(
            step_error_message("statement aborts at 9: UNIQUE constraint failed: t.v; [UPDATE t SET v = v + 1 WHERE id = 5]", sql).as_deref(),
            Some("UNIQUE constraint failed: t.v")
        );
        // truncated log line: SQL cut short
        assert!(step_error_message("statement aborts at 9: [UPDATE t SET v = v", sql).is_some());
        assert_eq!(step_error_message("misuse at line 5", sql), None);
        // 3.53+: error raised in a trigger
        assert_eq!(
            step_error_message("statement aborts at 6: n too large; [/* TRIGGER t_guard */ UPDATE t SET v = v + 1 WHERE id = 5]", sql).as_deref(),
            Some("n too large")
        );
        // a message containing "; ["
        assert_eq!(
            step_error_message("statement aborts at 6: CHECK constraint failed: bad; [value]; [UPDATE t SET v = v + 1 WHERE id = 5]", sql).as_deref(),
            Some("CHECK constraint failed: bad; [value]")
        );
        // a message so long that the SQL was cut off
        let long = format!(
            "statement aborts at 6: CHECK constraint failed: {}",
            "x".repeat(700)
        );
        assert!(step_error_message(&long, sql)
            .unwrap()
            .starts_with("CHECK constraint failed: xxx"));
        // a short line about another statement is not ours
        assert_eq!(
            step_error_message("statement aborts at 6: boom; [SELECT 1]", sql),
            None
        );
    }

    #[test]
    fn prepare_lines() {
        assert_eq!(
            parse_prepare_error("near \"SELEC\": syntax error in \"SELEC 1\""),
            Some(("near \"SELEC\": syntax error", "SELEC 1"))
        );
        assert_eq!(
            parse_prepare_error("no such table: nosuch in \"SELECT * FROM nosuch\""),
            Some(("no such table: nosuch", "SELECT * FROM nosuch"))
        );
        assert_eq!(parse_prepare_error("cannot open file at line 1"), None);
    }
}
