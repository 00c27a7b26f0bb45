//! `insights_serve(addr)`: the in-process HTTP endpoint — `/metrics`
//! (Prometheus), the JSON API under `/api/` and the dashboard at `/`.
//!
//! SQL surface:
//! - `insights_serve('127.0.0.1:9187')` (also `':9187'`, `'9187'`,
//!   `'[::1]:0'`; port 0 picks a free port) starts serving on a background
//!   thread and returns the bound address (`127.0.0.1:40123`).
//! - Calling it again with the same address (or the same IP and port 0)
//!   returns the running address; another address is an error until the
//!   server is stopped.
//! - `insights_serve()` returns the running address or NULL.
//! - `insights_serve(NULL)` / `insights_serve('stop')` stops the server and
//!   returns the address it served on (NULL when none ran).
//!
//! Rules:
//! - One server per process (it shows the whole process, every database).
//! - Loopback by default; a non-loopback address is refused unless a bearer
//!   token is set (`insights_config('http_token', '<secret>')`), which every
//!   request must then carry. The token is read when the server starts.
//! - The server never touches a user's connection; the table endpoint opens
//!   its own read-only connection on a thread marked internal.

use crate::config::{self, Key};
use crate::exposition::{self, Point};
use crate::http::{self, Options, Request, Response, Server};
use crate::metrics;
use crate::registry::{lock, registry, Agg, DbStats, Meta};
use crate::store::{self, HistoryFilter};
use rusqlite::functions::FunctionFlags;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Error, OpenFlags, Result};
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Rows returned by one `/api/table/<name>` request at most.
pub const MAX_TABLE_ROWS: usize = 5000;
/// Width of the buckets of `/api/history?resolution=live`.
pub const LIVE_BUCKET_MS: i64 = 5_000;
/// Queries returned by `/api/queries` at most.
pub const MAX_QUERIES: usize = 1000;

static SERVER: Mutex<Option<Server>> = Mutex::new(None);

fn err(msg: String) -> Error {
    Error::UserFunctionError(msg.into())
}

pub fn register(conn: &Connection) -> Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DIRECTONLY;
    conn.create_scalar_function("insights_serve", -1, flags, |ctx| {
        if ctx.len() > 1 {
            return Err(err(format!(
                "insights_serve: takes 0 or 1 arguments, got {}",
                ctx.len()
            )));
        }
        if ctx.is_empty() {
            return Ok(lock(&SERVER).as_ref().map(|s| s.addr().to_string()));
        }
        let arg = match ctx.get_raw(0) {
            ValueRef::Null => None,
            ValueRef::Text(t) => Some(
                std::str::from_utf8(t)
                    .map_err(|_| err("insights_serve: addr is not valid UTF-8".into()))?
                    .trim()
                    .to_string(),
            ),
            ValueRef::Integer(p) => Some(p.to_string()),
            _ => {
                return Err(err(
                    "insights_serve: addr must be text like '127.0.0.1:9187', or NULL to stop"
                        .into(),
                ))
            }
        };
        match arg {
            None => Ok(stop()),
            Some(a) if a.eq_ignore_ascii_case("stop") => Ok(stop()),
            Some(a) => start(&a)
                .map(Some)
                .map_err(|m| err(format!("insights_serve: {m}"))),
        }
    })
}

/// Stop the server; the address it served on.
pub fn stop() -> Option<String> {
    let s = lock(&SERVER).take()?;
    let a = s.addr().to_string();
    s.stop();
    Some(a)
}

/// Start (or confirm) the server on `addr`; the bound address.
pub fn start(addr: &str) -> std::result::Result<String, String> {
    let want = http::parse_addr(addr)?;
    let mut slot = lock(&SERVER);
    if let Some(s) = slot.as_ref() {
        let have = s.addr();
        if have == want || (have.ip() == want.ip() && want.port() == 0) {
            return Ok(have.to_string());
        }
        return Err(format!(
            "already serving on {have}; stop it first with insights_serve(NULL)"
        ));
    }
    let token = config::secret();
    if !want.ip().is_loopback() && token.is_none() {
        return Err(format!(
            "binding {want} (not loopback) needs a bearer token: SELECT insights_config('http_token', '<secret>') first"
        ));
    }
    let opts = Options {
        max_connections: config::get(Key::HttpMaxConnections).max(1) as usize,
        timeout: Duration::from_millis(config::get(Key::HttpTimeoutMs).max(1) as u64),
        token,
    };
    let server = Server::start(want, opts, Arc::new(route))
        .map_err(|e| format!("cannot listen on {want}: {e}"))?;
    let bound = server.addr().to_string();
    *slot = Some(server);
    Ok(bound)
}

/// Address of the running server, if any.
pub fn running() -> Option<SocketAddr> {
    lock(&SERVER).as_ref().map(|s| s.addr())
}

// ---------------------------------------------------------------- routes

fn route(req: &Request) -> Response {
    let q = exposition::parse_query(&req.query);
    match req.path.as_str() {
        "/" | "/index.html" => exposition::dashboard_response(),
        "/metrics" => exposition::metrics_response(metrics::render()),
        "/healthz" => Response::text(200, "ok"),
        "/api/info" => Response::json(&info_json()),
        "/api/queries" => queries(&q),
        "/api/errors" => errors(&q),
        "/api/history" => history(&q),
        "/api/events" => Response::json(&events_json()),
        "/api/alerts" => Response::json(&crate::alerts::json()),
        p if p.starts_with("/api/table/") => table(&p["/api/table/".len()..], &q),
        _ => Response::json_error(404, "not found"),
    }
}

fn qs<'a>(q: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    q.get(k).and_then(|v| v.as_str()).filter(|s| !s.is_empty())
}

fn limit(
    q: &Map<String, Value>,
    default: usize,
    max: usize,
) -> std::result::Result<usize, Response> {
    match qs(q, "limit") {
        None => Ok(default),
        Some(s) => s
            .parse::<usize>()
            .map(|n| n.min(max))
            .map_err(|_| Response::json_error(400, "limit must be a non-negative integer")),
    }
}

fn pick_dbs(q: &Map<String, Value>) -> Vec<Arc<DbStats>> {
    let all = registry().databases();
    match qs(q, "database") {
        Some(d) => all.into_iter().filter(|x| x.path == d).collect(),
        None => all,
    }
}

/// Tables of the SQL surface the API can read.
pub fn table_names() -> Vec<&'static str> {
    crate::REGISTRATIONS
        .iter()
        .filter_map(|r| match r {
            crate::Registration::Table(n) => Some(*n),
            _ => None,
        })
        .collect()
}

fn info_json() -> Value {
    let dbs: Vec<Value> = registry()
        .databases()
        .iter()
        .map(|d| {
            let st = lock(&d.store);
            let store = json!({
                "error": st.error,
                "flushes": st.flushes,
                "failures": st.failures,
                "last_flush": (st.last_flush_ms > 0).then(|| exposition::iso_ms(st.last_flush_ms)),
            });
            drop(st);
            let (file, wal, free, size) = exposition::file_facts(&d.path);
            json!({
                "database": d.path,
                "fingerprints": d.len(),
                "evictions": d.evictions.load(Ordering::Relaxed),
                "connections_open": d.connections_open.load(Ordering::Relaxed),
                "connections_peak": d.connections_peak.load(Ordering::Relaxed),
                "connections_opened": d.connections_opened.load(Ordering::Relaxed),
                "store_path": store::store_path(d).map(|p| p.display().to_string()),
                "store": store,
                "file_bytes": file,
                "wal_bytes": wal,
                "fs_free_bytes": free,
                "fs_size_bytes": size,
            })
        })
        .collect();
    json!({
        "source": "extension",
        "version": crate::functions::VERSION,
        "commit": crate::functions::COMMIT,
        "sqlite_version": unsafe {
            let p = rusqlite::ffi::sqlite3_libversion();
            if p.is_null() { String::new() } else { std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned() }
        },
        "pid": std::process::id(),
        "now": exposition::iso_ms(crate::clock::unix_ms_now()),
        "flush_interval_ms": config::get(Key::FlushIntervalMs),
        "errors_total": registry().errors_total.load(Ordering::Relaxed),
        "databases": dbs,
        "tables": table_names(),
        "endpoints": ["/metrics", "/api/info", "/api/queries", "/api/errors", "/api/history", "/api/events", "/api/alerts", "/api/table/<name>"],
    })
}

fn queries(q: &Map<String, Value>) -> Response {
    let sort = qs(q, "sort").unwrap_or("total");
    let n = match limit(q, 100, MAX_QUERIES) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let scope = qs(q, "scope").unwrap_or("all");
    if scope != "all" && scope != "process" {
        return Response::json_error(400, "scope must be 'all' or 'process'");
    }
    let mut rows: Vec<(String, exposition::QueryStat)> = Vec::new();
    for db in pick_dbs(q) {
        let stored = if scope == "all" {
            store::totals_with_pending(&db)
        } else {
            None
        };
        let (snap, unix): (Vec<(Arc<Meta>, Agg)>, bool) = match stored {
            Some(r) => (r, true),
            None => (db.snapshot(), false),
        };
        for (m, a) in snap {
            rows.push((db.path.clone(), metrics::query_stat(&m, &a, unix)));
        }
    }
    exposition::queries_response(&mut rows, sort, n, scope)
}

fn errors(q: &Map<String, Value>) -> Response {
    let n = match limit(q, 200, 10_000) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let want_db = qs(q, "database");
    let list: Vec<Value> = registry()
        .errors()
        .into_iter()
        .rev()
        .filter(|e| want_db.is_none_or(|d| d == e.database))
        .take(n)
        .map(|e| {
            json!({
                "at": exposition::iso_ms(e.at_unix_ms),
                "database": e.database,
                "fingerprint": e.fingerprint.map(crate::normalize::fingerprint_hex),
                "query": e.query,
                "kind": e.kind.map(|k| k.as_str()),
                "phase": e.phase,
                "code": e.code,
                "extended_code": e.extended_code,
                "code_name": crate::errors_vtab::code_name(e.extended_code),
                "message": e.message,
            })
        })
        .collect();
    Response::json(&json!({ "errors": list }))
}

fn events_json() -> Value {
    let list: Vec<Value> = crate::events::memory()
        .into_iter()
        .rev()
        .map(|e| {
            json!({
                "at": exposition::iso_ms(e.at_unix_ms),
                "kind": e.kind,
                "database": e.database,
                "object": e.object,
                "statement": e.statement,
                "detail": e.detail,
            })
        })
        .collect();
    json!({ "events": list })
}

/// Width and default look-back of each resolution.
fn resolution(r: &str) -> Option<(i64, i64)> {
    Some(match r {
        "live" => (0, 15 * 60_000),
        "minute" => (60_000, 3_600_000),
        "hour" => (3_600_000, 48 * 3_600_000),
        "day" => (86_400_000, 90 * 86_400_000),
        _ => return None,
    })
}

fn history(q: &Map<String, Value>) -> Response {
    let res = qs(q, "resolution").unwrap_or("minute");
    let Some((width, back)) = resolution(res) else {
        return Response::json_error(400, "resolution must be live, minute, hour or day");
    };
    let now = crate::clock::unix_ms_now();
    let since = match qs(q, "since") {
        None => now - back,
        Some(s) => match exposition::parse_since(s) {
            Some(v) => v,
            None => {
                return Response::json_error(
                    400,
                    "since must be an instant like 2026-11-25T06:00:00Z or unix seconds",
                )
            }
        },
    };
    let fp = qs(q, "fingerprint").map(|s| s.to_ascii_lowercase());
    if let Some(f) = &fp {
        if crate::functions::parse_fingerprint(f).is_none() {
            return Response::json_error(400, "fingerprint must be 16 hex digits");
        }
    }
    let mut series = Vec::new();
    for db in pick_dbs(q) {
        let (pts, source, r) = db_history(&db, res, width, since, fp.as_deref());
        series.push(exposition::history_json(&db.path, r, source, &pts));
    }
    Response::json(&json!({ "since": exposition::iso_ms(since), "series": series }))
}

/// Points of one database: from the store when it has one, else (or for
/// `live`) from the in-memory round ring.
fn db_history(
    db: &Arc<DbStats>,
    res: &str,
    width: i64,
    since: i64,
    fp: Option<&str>,
) -> (Vec<Point>, &'static str, &'static str) {
    let has_store = store::store_path(db).is_some_and(|p| p.exists());
    if res != "live" && has_store {
        let f = HistoryFilter {
            resolution: Some(res.to_string()),
            fingerprint: fp.map(str::to_string),
            bucket: vec![(">=", crate::clock::iso_ms(since - since.rem_euclid(width)))],
        };
        if let Ok(rows) = store::read_history(db, &f) {
            let mut pts: Vec<Point> = Vec::new();
            for h in rows {
                // per-kind rows hold the database totals; fingerprint rows one query
                if fp.is_none() && !h.fingerprint.is_empty() {
                    continue;
                }
                let Some(t) = exposition::parse_since(&h.bucket_start) else {
                    continue;
                };
                let a = &h.agg;
                let p = Point {
                    start_ms: t,
                    width_ms: width,
                    calls: a.calls,
                    errors: a.errors,
                    busy: a.busy,
                    timed: a.timed,
                    total_ns: a.total_ns,
                    hist: a.hist.clone(),
                    rows_returned: a.rows_returned,
                    rows_affected: a.rows_affected,
                };
                match pts.last_mut() {
                    Some(l) if l.start_ms == t => l.add(&p),
                    _ => pts.push(p),
                }
            }
            let r = match res {
                "hour" => "hour",
                "day" => "day",
                _ => "minute",
            };
            return (pts, "store", r);
        }
    }
    if fp.is_some() {
        return (Vec::new(), "memory", "live");
    }
    // memory: minute buckets, or per-round points for "live"
    let w = if res == "live" { 0 } else { width };
    let pts = if w == 0 {
        live_rounds(&db.path, since)
    } else {
        metrics::live_history(&db.path, w, since)
    };
    let r = match res {
        "hour" => "hour",
        "day" => "day",
        "live" => "live",
        _ => "minute",
    };
    (pts, "memory", r)
}

fn live_rounds(path: &str, since: i64) -> Vec<Point> {
    // 5-second buckets make a readable live chart whatever the flush interval
    metrics::live_history(path, LIVE_BUCKET_MS, since)
}

// ---------------------------------------------------------- table endpoint

fn value_json(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => json!(i),
        ValueRef::Real(f) => {
            if f.is_finite() {
                json!(f)
            } else {
                Value::Null
            }
        }
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => json!({ "blob_bytes": b.len() }),
    }
}

/// Rows of one `insights_*` table, read on a private connection to the
/// database (read-only) so that per-database tables see the right file.
pub fn read_table(name: &str, db: Option<&str>) -> std::result::Result<Value, (u16, String)> {
    if !table_names().contains(&name) {
        return Err((404, format!("no table {name}")));
    }
    let path = db.map(str::to_string).or_else(|| {
        registry()
            .databases()
            .into_iter()
            .map(|d| d.path.clone())
            .find(|p| std::path::Path::new(p).is_file())
    });
    let r = store::internal(|| -> rusqlite::Result<Value> {
        let conn = match path.as_deref() {
            Some(p) if std::path::Path::new(p).is_file() => Connection::open_with_flags(
                p,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?,
            _ => Connection::open_in_memory()?,
        };
        conn.busy_timeout(Duration::from_millis(1000))?;
        crate::register_all(&conn)?;
        let out = {
            let mut stmt = conn.prepare(&format!("SELECT * FROM {name}"))?;
            let cols: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
            let mut rows = stmt.query([])?;
            let mut list = Vec::new();
            while let Some(r) = rows.next()? {
                if list.len() >= MAX_TABLE_ROWS {
                    break;
                }
                let mut m = Map::new();
                for (i, c) in cols.iter().enumerate() {
                    m.insert(c.clone(), value_json(r.get_ref(i)?));
                }
                list.push(Value::Object(m));
            }
            json!({ "table": name, "database": path, "columns": cols, "rows": list })
        };
        drop(conn);
        Ok(out)
    });
    r.map_err(|e| (500, format!("{name}: {e}")))
}

fn table(name: &str, q: &Map<String, Value>) -> Response {
    match read_table(name, qs(q, "database")) {
        Ok(v) => Response::json(&v),
        Err((code, m)) => Response::json_error(code, &m),
    }
}
