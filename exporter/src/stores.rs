//! Reading sqlite-insights stores (schema: src/store.rs `migrate`) into the
//! shared exposition model.
//!
//! Rules: read-only connections, opened per request and closed after it;
//! a store that cannot be read makes `sqlite_insights_store_up` 0 for its
//! database and an `error` in `/api/info`, never a failed scrape.

use crate::exposition::{self, DbMetrics, Family, Globals, KindStat, Point, QueryStat};
use crate::histogram::Histogram;
use crate::http::Response;
use rusqlite::{params, Connection, OpenFlags};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SUFFIX: &str = ".insights";

/// FNV-1a 64, as src/normalize.rs `hash64` (store file names in a store dir).
fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A database and where its store is.
pub struct DbSpec {
    pub database: String,
    pub store: PathBuf,
}

impl DbSpec {
    pub fn new(arg: &str, store_dir: Option<&str>) -> DbSpec {
        let abs = |p: &str| -> String {
            let pb = Path::new(p);
            if pb.is_absolute() {
                p.to_string()
            } else {
                std::env::current_dir()
                    .map(|d| d.join(pb).display().to_string())
                    .unwrap_or_else(|_| p.to_string())
            }
        };
        if let Some(db) = arg.strip_suffix(SUFFIX) {
            return DbSpec {
                database: abs(db),
                store: PathBuf::from(abs(arg)),
            };
        }
        let database = abs(arg);
        let store = match store_dir {
            Some(dir) => {
                let name = Path::new(&database)
                    .file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "db".into());
                let h = hash64(database.as_bytes()) as u32;
                Path::new(dir).join(format!("{name}-{h:08x}{SUFFIX}"))
            }
            None => PathBuf::from(format!("{database}{SUFFIX}")),
        };
        DbSpec { database, store }
    }

    fn open(&self) -> Result<Connection, String> {
        if !self.store.is_file() {
            return Err(format!("{}: no such store", self.store.display()));
        }
        let c = Connection::open_with_flags(
            &self.store,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| format!("{}: {e}", self.store.display()))?;
        let _ = c.busy_timeout(Duration::from_millis(2000));
        Ok(c)
    }
}

pub struct Exporter {
    pub dbs: Vec<DbSpec>,
    pub top: usize,
}

fn u(v: Option<i64>) -> u64 {
    v.unwrap_or(0).max(0) as u64
}

fn hist(s: Option<String>) -> Histogram {
    s.as_deref().and_then(Histogram::decode).unwrap_or_default()
}

fn read_totals(c: &Connection) -> rusqlite::Result<Vec<QueryStat>> {
    let mut st = c.prepare(
        "SELECT fingerprint, query, kind, tables, calls, errors, busy, timed, total_ns, min_ns, max_ns, hist,
                rows_returned, rows_affected, vm_steps, fullscan_steps, sorts, autoindexes,
                first_seen_ms, last_seen_ms, last_error FROM totals",
    )?;
    let rows = st.query_map([], |r| {
        Ok(QueryStat {
            fingerprint: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
            query: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            kind: r
                .get::<_, Option<String>>(2)?
                .unwrap_or_else(|| "other".into()),
            tables: r
                .get::<_, Option<String>>(3)?
                .unwrap_or_else(|| "[]".into()),
            calls: u(r.get(4)?),
            errors: u(r.get(5)?),
            busy: u(r.get(6)?),
            timed: u(r.get(7)?),
            total_ns: u(r.get(8)?),
            min_ns: u(r.get(9)?),
            max_ns: u(r.get(10)?),
            hist: hist(r.get(11)?),
            rows_returned: u(r.get(12)?),
            rows_affected: u(r.get(13)?),
            vm_steps: u(r.get(14)?),
            fullscan_steps: u(r.get(15)?),
            sorts: u(r.get(16)?),
            autoindexes: u(r.get(17)?),
            first_seen_ms: r.get::<_, Option<i64>>(18)?.unwrap_or(0),
            last_seen_ms: r.get::<_, Option<i64>>(19)?.unwrap_or(0),
            last_error: r.get(20)?,
        })
    })?;
    rows.collect()
}

/// Per-kind all-time counters: the day buckets of the per-kind rows.
fn read_kinds(c: &Connection) -> rusqlite::Result<Vec<(String, KindStat)>> {
    let mut st = c.prepare(
        "SELECT kind, calls, errors, busy, timed, total_ns, hist, rows_returned, rows_affected, fullscan_steps
         FROM history WHERE resolution = 'day' AND fingerprint LIKE 'kind:%'",
    )?;
    let rows = st.query_map([], |r| {
        let mut k = KindStat {
            calls: u(r.get(1)?),
            errors: u(r.get(2)?),
            busy: u(r.get(3)?),
            timed: u(r.get(4)?),
            total_ns: u(r.get(5)?),
            rows_returned: u(r.get(7)?),
            rows_affected: u(r.get(8)?),
            fullscan_steps: u(r.get(9)?),
            ..Default::default()
        };
        exposition::add_coarse(&mut k.coarse, &hist(r.get(6)?));
        Ok((
            r.get::<_, Option<String>>(0)?
                .unwrap_or_else(|| "other".into()),
            k,
        ))
    })?;
    rows.collect()
}

impl Exporter {
    fn load(&self, d: &DbSpec) -> (DbMetrics, Result<(), String>) {
        let (file, wal, free, size) = exposition::file_facts(&d.database);
        let mut m = DbMetrics {
            database: d.database.clone(),
            file_bytes: file,
            wal_bytes: wal,
            fs_free_bytes: free,
            fs_size_bytes: size,
            ..Default::default()
        };
        let r = d.open().and_then(|c| {
            let kinds = read_kinds(&c).map_err(|e| e.to_string())?;
            for (k, s) in kinds {
                m.kinds.entry(k).or_default().add(&s);
            }
            if self.top > 0 {
                let mut t = read_totals(&c).map_err(|e| e.to_string())?;
                t.sort_by(|a, b| {
                    b.total_ns
                        .cmp(&a.total_ns)
                        .then(b.calls.cmp(&a.calls))
                        .then(a.fingerprint.cmp(&b.fingerprint))
                });
                t.truncate(self.top);
                m.top = t;
            }
            Ok(())
        });
        (m, r)
    }

    pub fn metrics(&self) -> String {
        let mut dbs = Vec::new();
        let mut up = Family::new(
            "sqlite_insights_store_up",
            "gauge",
            "1 when the database's sidecar store was written or read without error",
        );
        for d in &self.dbs {
            let (m, r) = self.load(d);
            up.push(&[("database", d.database.as_str())], r.is_ok() as u8 as f64);
            dbs.push(m);
        }
        let g = Globals {
            version: env!("CARGO_PKG_VERSION").into(),
            commit: "exporter".into(),
            sqlite_version: rusqlite::version().into(),
            source: "exporter",
            max_queries: None,
            errors_captured: None,
            internal_errors: None,
        };
        let mut fams = exposition::families(&g, &dbs);
        fams.push(up);
        exposition::render(fams)
    }

    fn pick(&self, q: &Map<String, Value>) -> Vec<&DbSpec> {
        match q
            .get("database")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
        {
            Some(d) => self.dbs.iter().filter(|x| x.database == d).collect(),
            None => self.dbs.iter().collect(),
        }
    }

    pub fn info(&self) -> Value {
        let dbs: Vec<Value> = self
            .dbs
            .iter()
            .map(|d| {
                let (file, wal, free, size) = exposition::file_facts(&d.database);
                let err = d.open().err();
                json!({
                    "database": d.database,
                    "store_path": d.store.display().to_string(),
                    "store": { "error": err },
                    "file_bytes": file,
                    "wal_bytes": wal,
                    "fs_free_bytes": free,
                    "fs_size_bytes": size,
                })
            })
            .collect();
        json!({
            "source": "exporter",
            "version": env!("CARGO_PKG_VERSION"),
            "sqlite_version": rusqlite::version(),
            "pid": std::process::id(),
            "now": exposition::iso_ms(now_ms()),
            "databases": dbs,
            "tables": [],
            "endpoints": ["/metrics", "/api/info", "/api/queries", "/api/errors", "/api/history", "/api/events", "/api/alerts"],
        })
    }

    pub fn queries(&self, q: &Map<String, Value>) -> Response {
        let sort = q.get("sort").and_then(|v| v.as_str()).unwrap_or("total");
        let limit = match q.get("limit").and_then(|v| v.as_str()) {
            None | Some("") => 100,
            Some(s) => match s.parse::<usize>() {
                Ok(n) => n.min(1000),
                Err(_) => return Response::json_error(400, "limit must be a non-negative integer"),
            },
        };
        let mut rows = Vec::new();
        for d in self.pick(q) {
            if let Ok(t) = d
                .open()
                .and_then(|c| read_totals(&c).map_err(|e| e.to_string()))
            {
                rows.extend(t.into_iter().map(|s| (d.database.clone(), s)));
            }
        }
        exposition::queries_response(&mut rows, sort, limit, "all")
    }

    /// The stores keep each fingerprint's last error, not every failure.
    pub fn errors(&self, q: &Map<String, Value>) -> Response {
        let mut list = Vec::new();
        for d in self.pick(q) {
            if let Ok(t) = d
                .open()
                .and_then(|c| read_totals(&c).map_err(|e| e.to_string()))
            {
                for s in t.into_iter().filter(|s| s.last_error.is_some()) {
                    list.push((
                        s.last_seen_ms,
                        json!({
                            "at": exposition::iso_ms(s.last_seen_ms),
                            "database": d.database,
                            "fingerprint": s.fingerprint,
                            "query": s.query,
                            "kind": s.kind,
                            "phase": null,
                            "code": null,
                            "extended_code": null,
                            "code_name": format!("{} errors", s.errors),
                            "message": s.last_error,
                        }),
                    ));
                }
            }
        }
        list.sort_by_key(|x| std::cmp::Reverse(x.0));
        Response::json(&json!({ "errors": list.into_iter().map(|x| x.1).collect::<Vec<_>>() }))
    }

    pub fn events(&self, q: &Map<String, Value>) -> Value {
        let mut list = Vec::new();
        for d in self.pick(q) {
            let Ok(c) = d.open() else { continue };
            let Ok(mut st) = c.prepare(
                "SELECT at, kind, database, detail FROM events ORDER BY id DESC LIMIT 500",
            ) else {
                continue;
            };
            let rows = st.query_map([], |r| {
                Ok(json!({
                    "at": r.get::<_, Option<String>>(0)?,
                    "kind": r.get::<_, Option<String>>(1)?,
                    "database": r.get::<_, Option<String>>(2)?,
                    "detail": r.get::<_, Option<String>>(3)?,
                }))
            });
            if let Ok(rows) = rows {
                list.extend(rows.flatten());
            }
        }
        list.sort_by(|a, b| b["at"].as_str().cmp(&a["at"].as_str()));
        json!({ "events": list })
    }

    pub fn history(&self, q: &Map<String, Value>) -> Response {
        let res = q
            .get("resolution")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or("minute");
        let (res, width, back) = match res {
            "minute" | "live" => ("minute", 60_000i64, 3_600_000i64),
            "hour" => ("hour", 3_600_000, 48 * 3_600_000),
            "day" => ("day", 86_400_000, 90 * 86_400_000),
            _ => return Response::json_error(400, "resolution must be live, minute, hour or day"),
        };
        let now = now_ms();
        let since = match q
            .get("since")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
        {
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
        let fp = q
            .get("fingerprint")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(|s| s.to_ascii_lowercase());
        if let Some(f) = &fp {
            if f.len() != 16 || !f.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Response::json_error(400, "fingerprint must be 16 hex digits");
            }
        }
        let from = exposition::iso_ms(since - since.rem_euclid(width));
        let mut series = Vec::new();
        for d in self.pick(q) {
            let mut pts: Vec<Point> = Vec::new();
            if let Ok(c) = d.open() {
                let sql = if fp.is_some() {
                    "SELECT bucket_start, calls, errors, busy, timed, total_ns, hist, rows_returned, rows_affected
                     FROM history WHERE resolution = ?1 AND bucket_start >= ?2 AND fingerprint = ?3 ORDER BY bucket_start"
                } else {
                    "SELECT bucket_start, calls, errors, busy, timed, total_ns, hist, rows_returned, rows_affected
                     FROM history WHERE resolution = ?1 AND bucket_start >= ?2 AND fingerprint LIKE 'kind:%' AND ?3 IS NULL ORDER BY bucket_start"
                };
                if let Ok(mut st) = c.prepare(sql) {
                    let rows = st.query_map(params![res, from, fp], |r| {
                        Ok(Point {
                            start_ms: exposition::parse_since(&r.get::<_, String>(0)?).unwrap_or(0),
                            width_ms: width,
                            calls: u(r.get(1)?),
                            errors: u(r.get(2)?),
                            busy: u(r.get(3)?),
                            timed: u(r.get(4)?),
                            total_ns: u(r.get(5)?),
                            hist: hist(r.get(6)?),
                            rows_returned: u(r.get(7)?),
                            rows_affected: u(r.get(8)?),
                        })
                    });
                    if let Ok(rows) = rows {
                        for p in rows.flatten() {
                            match pts.last_mut() {
                                Some(l) if l.start_ms == p.start_ms => l.add(&p),
                                _ => pts.push(p),
                            }
                        }
                    }
                }
            }
            series.push(exposition::history_json(&d.database, res, "store", &pts));
        }
        Response::json(&json!({ "since": exposition::iso_ms(since), "series": series }))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
