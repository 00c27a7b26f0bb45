//! libSQL embedded replica source: the replica's committed frame number from
//! the metadata file libSQL keeps next to the database, against the
//! primary's frame number.
//!
//! Metadata files (both written by libSQL itself):
//! - `<db>-client_wal_index` (replication from sqld/Turso over its
//!   replication protocol): 32 bytes, little-endian: log id (u128, the
//!   primary's log/generation), committed frame number (u64; u64::MAX = none
//!   yet), 8 bytes of padding. Rewritten after every injected transaction.
//! - `<db>-info` (the newer sync protocol): JSON `{"hash", "version",
//!   "durable_frame_num", "generation"}`.
//!
//! The primary's position: `insights_config('libsql_primary_url',
//! 'http://host:port/metrics')` points at the primary's metrics endpoint
//! (sqld's admin `/metrics`, gauge `libsql_server_current_frame_no
//! {namespace="default"}`); fetched at most once a second, 1 s timeouts,
//! plain HTTP only. Else the latest `insights_sync_report(peer, local,
//! remote, NULL, 'libsql')` gives it. lag_positions = primary frame -
//! replica frame.

use crate::registry::lock;
use crate::sync::{Kind, Obs, Pos, Report};
use serde_json::json;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

pub const WAL_INDEX_SUFFIX: &str = "-client_wal_index";
pub const INFO_SUFFIX: &str = "-info";
/// The primary's gauge of its current frame number.
pub const FRAME_METRIC: &str = "libsql_server_current_frame_no";
/// Namespace whose gauge is used when the endpoint serves several.
pub const DEFAULT_NAMESPACE: &str = "default";
/// A fetched primary position is reused this long.
pub const FETCH_CACHE_MS: i64 = 1_000;
/// Connect/read timeout of a fetch.
pub const FETCH_TIMEOUT_MS: u64 = 1_000;
/// Largest metrics page read.
pub const MAX_METRICS_BYTES: u64 = 8 << 20;

/// The replica's position as libSQL stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct Meta {
    pub frame: Option<i64>,
    /// log id (hex) or generation number: changes when the primary starts a
    /// new log, which restarts frame numbers.
    pub epoch: String,
    pub file: PathBuf,
    pub mtime_ms: Option<i64>,
}

/// Parse a `-client_wal_index` file's bytes.
pub fn parse_wal_index(b: &[u8]) -> Option<(u128, Option<u64>)> {
    if b.len() < 24 {
        return None;
    }
    let log_id = u128::from_le_bytes(b[0..16].try_into().ok()?);
    let frame = u64::from_le_bytes(b[16..24].try_into().ok()?);
    Some((log_id, (frame != u64::MAX).then_some(frame)))
}

fn mtime_ms(p: &std::path::Path) -> Option<i64> {
    let m = std::fs::metadata(p).ok()?.modified().ok()?;
    Some(m.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64)
}

/// Read the replica's metadata next to `db`, if it is a libSQL replica.
pub fn read_meta(db: &str) -> Option<Result<Meta, String>> {
    let wi = PathBuf::from(format!("{db}{WAL_INDEX_SUFFIX}"));
    if wi.is_file() {
        return Some(match std::fs::read(&wi) {
            Ok(b) => match parse_wal_index(&b) {
                Some((log, frame)) => Ok(Meta {
                    frame: frame.map(|f| f.min(i64::MAX as u64) as i64),
                    epoch: format!("{log:032x}"),
                    mtime_ms: mtime_ms(&wi),
                    file: wi,
                }),
                None if b.is_empty() => Ok(Meta {
                    frame: None,
                    epoch: String::new(),
                    mtime_ms: mtime_ms(&wi),
                    file: wi,
                }),
                None => Err(format!("{}: not a libSQL wal index", wi.display())),
            },
            Err(e) => Err(format!("{}: {e}", wi.display())),
        });
    }
    let info = PathBuf::from(format!("{db}{INFO_SUFFIX}"));
    if info.is_file() {
        return Some(
            std::fs::read_to_string(&info)
                .map_err(|e| format!("{}: {e}", info.display()))
                .and_then(|t| {
                    let v: serde_json::Value =
                        serde_json::from_str(&t).map_err(|e| format!("{}: {e}", info.display()))?;
                    let frame = v.get("durable_frame_num").and_then(|x| x.as_i64());
                    if frame.is_none() {
                        return Err(format!("{}: no durable_frame_num", info.display()));
                    }
                    Ok(Meta {
                        frame,
                        epoch: v
                            .get("generation")
                            .map(|g| g.to_string())
                            .unwrap_or_default(),
                        mtime_ms: mtime_ms(&info),
                        file: info,
                    })
                }),
        );
    }
    None
}

pub fn is_replica(db: &str) -> bool {
    std::path::Path::new(&format!("{db}{WAL_INDEX_SUFFIX}")).is_file()
        || std::path::Path::new(&format!("{db}{INFO_SUFFIX}")).is_file()
}

pub fn local_frame(db: &str) -> Option<i64> {
    read_meta(db)?.ok()?.frame
}

/// `http://host:port/path` -> (host, port, path).
pub fn parse_http_url(url: &str) -> Option<(String, u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (auth, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/metrics".to_string()),
    };
    if auth.is_empty() || auth.contains('@') {
        return None;
    }
    let (host, port) = match auth.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse().ok()?),
        _ => (auth, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || path.contains(char::is_whitespace) {
        return None;
    }
    Some((host.to_string(), port, path))
}

/// GET a plain-HTTP page (the body of a 200 answer).
pub fn http_get(url: &str) -> Result<String, String> {
    let (host, port, path) = parse_http_url(url).ok_or_else(|| format!("bad URL {url}"))?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("{host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}: no address"))?;
    let t = Duration::from_millis(FETCH_TIMEOUT_MS);
    let mut s = TcpStream::connect_timeout(&addr, t).map_err(|e| format!("{url}: {e}"))?;
    s.set_read_timeout(Some(t)).ok();
    s.set_write_timeout(Some(t)).ok();
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: sqlite-insights\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("{url}: {e}"))?;
    let mut buf = Vec::new();
    s.take(MAX_METRICS_BYTES)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{url}: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{url}: not an HTTP answer"))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{url}: {status}"));
    }
    Ok(body.to_string())
}

/// The primary's frame number from Prometheus text: the series of
/// `namespace` (or the only series).
pub fn parse_frame_metric(text: &str, namespace: &str) -> Option<i64> {
    let mut found: Vec<(Option<String>, i64)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix(FRAME_METRIC) else {
            continue;
        };
        let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
            let end = r.find('}')?;
            (&r[..end], r[end + 1..].trim())
        } else if rest.starts_with(' ') {
            ("", rest.trim())
        } else {
            continue;
        };
        let ns = labels.split(',').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k.trim() == "namespace").then(|| v.trim().trim_matches('"').to_string())
        });
        let v = value.split_whitespace().next()?.parse::<f64>().ok()?;
        found.push((ns, v as i64));
    }
    if let Some((_, v)) = found
        .iter()
        .find(|(ns, _)| ns.as_deref() == Some(namespace))
    {
        return Some(*v);
    }
    (found.len() == 1).then(|| found[0].1)
}

type Cached = (i64, Result<i64, String>);

fn cache() -> &'static Mutex<HashMap<String, Cached>> {
    static C: OnceLock<Mutex<HashMap<String, Cached>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The primary's frame from its metrics endpoint (cached for a second).
pub fn primary_frame(url: &str, now: i64) -> Result<i64, String> {
    if let Some((at, r)) = lock(cache()).get(url) {
        if now - at < FETCH_CACHE_MS && now >= *at {
            return r.clone();
        }
    }
    let r = http_get(url).and_then(|body| {
        parse_frame_metric(&body, DEFAULT_NAMESPACE)
            .ok_or_else(|| format!("{url}: no {FRAME_METRIC} series"))
    });
    lock(cache()).insert(url.to_string(), (now, r.clone()));
    r
}

/// The replica's row (none when `db` is not a libSQL replica).
pub fn observe(db: &str, report: Option<Report>) -> Vec<Obs> {
    let Some(meta) = read_meta(db) else {
        return Vec::new();
    };
    let url = crate::sync::libsql_primary_url(db);
    let peer = url
        .as_deref()
        .and_then(parse_http_url)
        .map(|(h, p, _)| format!("{h}:{p}"))
        .or_else(|| report.as_ref().map(|r| r.peer.clone()))
        .unwrap_or_else(|| "primary".into());
    let meta = match meta {
        Ok(m) => m,
        Err(e) => return vec![Obs::failed("libsql", &peer, Kind::Positional, e)],
    };
    let mut o = Obs::new("libsql", &peer, Kind::Positional);
    o.role = Some("replica".into());
    o.local = meta.frame.map(Pos::Int);
    o.trail_ord = meta.frame;
    o.epoch = Some(meta.epoch.clone());
    o.last_seen_ms = meta.mtime_ms;
    o.detail
        .insert("meta_file".into(), json!(meta.file.display().to_string()));
    o.detail.insert("log_id".into(), json!(meta.epoch));
    let now = crate::clock::unix_ms_now();
    let mut remote = None;
    if let Some(u) = &url {
        o.detail.insert("primary_url".into(), json!(u));
        match primary_frame(u, now) {
            Ok(f) => {
                remote = Some(f);
                o.detail.insert("remote_from".into(), json!("metrics"));
            }
            Err(e) => {
                o.detail.insert("primary_error".into(), json!(e));
            }
        }
    }
    if remote.is_none() {
        if let Some(r) = &report {
            if let Some(f) = r.remote {
                remote = Some(f);
                o.detail.insert("remote_from".into(), json!("report"));
                o.detail
                    .insert("reported_at".into(), json!(crate::clock::iso_ms(r.at_ms)));
            }
        }
    }
    if let Some(f) = remote {
        o.remote = Some(Pos::Int(f));
        o.lead_ord = Some(f);
        let local = meta.frame.unwrap_or(0);
        o.lag_positions = Some((f - local).max(0));
    } else {
        o.detail.insert(
            "note".into(),
            json!("primary position unknown: set insights_config('libsql_primary_url', 'http://<primary admin>/metrics') or report it with insights_sync_report(..., 'libsql')"),
        );
    }
    vec![o]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_index_layout() {
        let mut b = vec![0u8; 32];
        b[0] = 0x0a;
        b[16] = 10;
        let (log, frame) = parse_wal_index(&b).unwrap();
        assert_eq!(log, 0x0a);
        assert_eq!(frame, Some(10));
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(parse_wal_index(&b).unwrap().1, None);
        assert!(parse_wal_index(&b[..10]).is_none());
    }

    #[test]
    fn metrics_text() {
        let t = "# TYPE libsql_server_current_frame_no gauge\n\
                 libsql_server_current_frame_no{namespace=\"other\"} 3\n\
                 libsql_server_current_frame_no{namespace=\"default\"} 42\n\
                 libsql_server_current_frame_no_total 9\n";
        assert_eq!(parse_frame_metric(t, "default"), Some(42));
        assert_eq!(parse_frame_metric(t, "other"), Some(3));
        assert_eq!(
            parse_frame_metric("libsql_server_current_frame_no 7\n", "default"),
            Some(7)
        );
        assert_eq!(parse_frame_metric("nothing 1\n", "default"), None);
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:9090/metrics"),
            Some(("127.0.0.1".into(), 9090, "/metrics".into()))
        );
        assert_eq!(
            parse_http_url("http://host"),
            Some(("host".into(), 80, "/metrics".into()))
        );
        assert_eq!(
            parse_http_url("http://[::1]:8080/m"),
            Some(("::1".into(), 8080, "/m".into()))
        );
        assert!(parse_http_url("https://x/metrics").is_none());
        assert!(parse_http_url("http://u:p@x/").is_none());
    }
}
