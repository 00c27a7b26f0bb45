//! A small, defensive HTTP/1.1 server on std::net for the metrics endpoint,
//! the JSON API and the dashboard (used by `insights_serve()` and by the
//! standalone exporter, which compiles this file as its own module).
//!
//! Rules:
//! - One request per connection (`Connection: close`); GET and HEAD only
//!   (405 with `Allow` otherwise); no request bodies (413 when one is
//!   announced, 400 for chunked ones).
//! - Bounds: request line + headers at most `MAX_HEAD_BYTES` (431), at most
//!   `MAX_HEADERS` headers (431), a target of at most `MAX_TARGET_BYTES`
//!   (414); a client has `timeout` in all to send its request (408) and to
//!   read the answer; at most `max_connections` are served at once, more get
//!   503 at once.
//! - When a token is set every request must carry `Authorization: Bearer
//!   <token>` (or `?token=<token>`, for a browser opening the dashboard);
//!   otherwise 401, compared in constant time.
//! - The handler runs under catch_unwind: a panic is a 500, never a crash.
//! - `stop()` closes the listener, waits for the accept thread, and lets
//!   in-flight requests finish within their timeout.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Request line plus headers.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Headers per request.
pub const MAX_HEADERS: usize = 64;
/// Length of the request target (path + query).
pub const MAX_TARGET_BYTES: usize = 4096;

/// A parsed request.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub peer: Option<SocketAddr>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Response {
        let mut b: String = body.into();
        if !b.ends_with('\n') {
            b.push('\n');
        }
        Response::new(status, "text/plain; charset=utf-8", b)
    }

    pub fn json(v: &serde_json::Value) -> Response {
        Response::new(200, "application/json", v.to_string())
    }

    pub fn json_error(status: u16, msg: &str) -> Response {
        Response::new(
            status,
            "application/json",
            serde_json::json!({ "error": msg }).to_string(),
        )
    }

    pub fn with_header(mut self, k: &'static str, v: impl Into<String>) -> Response {
        self.headers.push((k, v.into()));
        self
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Server settings.
#[derive(Clone)]
pub struct Options {
    pub max_connections: usize,
    pub timeout: Duration,
    pub token: Option<String>,
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub active: Arc<AtomicUsize>,
}

impl Server {
    /// Bind `addr` and serve on a background thread.
    pub fn start(addr: SocketAddr, opts: Options, handler: Handler) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let bound = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let (s2, a2) = (stop.clone(), active.clone());
        let thread = std::thread::Builder::new()
            .name("insights-http".into())
            .spawn(move || accept_loop(listener, s2, a2, opts, handler))?;
        Ok(Server {
            addr: bound,
            stop,
            thread: Some(thread),
            active,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting; wait for the accept thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // wake the blocking accept
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_millis(500));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
    opts: Options,
    handler: Handler,
) {
    let opts = Arc::new(opts);
    loop {
        let conn = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let (stream, peer) = match conn {
            Ok(c) => c,
            Err(_) => {
                // e.g. EMFILE: back off instead of spinning
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= opts.max_connections {
            active.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
            let mut s = stream;
            let _ = write_response(
                &mut s,
                &Response::text(503, "too many connections").with_header("Retry-After", "1"),
                false,
            );
            let _ = s.shutdown(Shutdown::Both);
            continue;
        }
        let (a, o, h) = (active.clone(), opts.clone(), handler.clone());
        let spawned = std::thread::Builder::new()
            .name("insights-http-conn".into())
            .spawn(move || {
                let _ = catch_unwind(AssertUnwindSafe(|| serve_one(stream, peer, &o, &h)));
                a.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Why a request could not be read.
enum ReadFail {
    Status(u16, &'static str),
    Gone,
}

fn read_head(s: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, ReadFail> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadFail::Status(408, "request not received in time"));
        }
        let _ = s.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match s.read(&mut chunk) {
            Ok(0) => {
                return Err(if buf.is_empty() {
                    ReadFail::Gone
                } else {
                    ReadFail::Status(400, "incomplete request")
                })
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = find_head_end(&buf) {
                    buf.truncate(end);
                    return Ok(buf);
                }
                if buf.len() > MAX_HEAD_BYTES {
                    return Err(ReadFail::Status(431, "request head too large"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                return Err(ReadFail::Status(408, "request not received in time"))
            }
            Err(_) => return Err(ReadFail::Gone),
        }
    }
}

fn find_head_end(b: &[u8]) -> Option<usize> {
    if let Some(i) = b.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some(i);
    }
    // tolerate bare LF line ends
    b.windows(2).position(|w| w == b"\n\n")
}

fn parse_head(head: &[u8], peer: Option<SocketAddr>) -> Result<Request, (u16, &'static str)> {
    if head.len() > MAX_HEAD_BYTES {
        return Err((431, "request head too large"));
    }
    let text = std::str::from_utf8(head).map_err(|_| (400, "request head is not UTF-8"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err((400, "malformed request line"));
    };
    if method.is_empty() || !method.bytes().all(|c| c.is_ascii_uppercase()) {
        return Err((400, "malformed method"));
    }
    if !version.starts_with("HTTP/1.") {
        if version.starts_with("HTTP/") {
            return Err((505, "only HTTP/1.x is served"));
        }
        return Err((400, "malformed request line"));
    }
    if target.len() > MAX_TARGET_BYTES {
        return Err((414, "request target too long"));
    }
    if !target.starts_with('/') || target.bytes().any(|c| c <= b' ' || c == 0x7f) {
        return Err((400, "request target must be an origin path"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    for l in lines {
        if l.is_empty() {
            continue;
        }
        if headers.len() >= MAX_HEADERS {
            return Err((431, "too many headers"));
        }
        let Some((k, v)) = l.split_once(':') else {
            return Err((400, "malformed header"));
        };
        if k.is_empty() || k.bytes().any(|c| c <= b' ' || c >= 0x7f) {
            return Err((400, "malformed header name"));
        }
        headers.push((k.to_string(), v.trim().to_string()));
    }
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        peer,
    })
}

/// Constant-time comparison.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

fn authorized(req: &Request, token: &str) -> bool {
    if let Some(h) = req.header("authorization") {
        let h = h.trim();
        if h.len() > 7 && h[..7].eq_ignore_ascii_case("bearer ") {
            return same_secret(h[7..].trim(), token);
        }
        return false;
    }
    for part in req.query.split('&') {
        if let Some(v) = part.strip_prefix("token=") {
            let v = crate::exposition::percent_decode(v).unwrap_or_default();
            return same_secret(&v, token);
        }
    }
    false
}

fn check(req: &Request, opts: &Options) -> Option<Response> {
    if req.method != "GET" && req.method != "HEAD" {
        return Some(
            Response::text(405, "only GET and HEAD are allowed").with_header("Allow", "GET, HEAD"),
        );
    }
    if req
        .header("transfer-encoding")
        .is_some_and(|v| !v.eq_ignore_ascii_case("identity"))
    {
        return Some(Response::text(400, "request bodies are not accepted"));
    }
    if let Some(cl) = req.header("content-length") {
        match cl.trim().parse::<u64>() {
            Ok(0) => {}
            Ok(_) => return Some(Response::text(413, "request bodies are not accepted")),
            Err(_) => return Some(Response::text(400, "malformed Content-Length")),
        }
    }
    if let Some(t) = &opts.token {
        if !authorized(req, t) {
            return Some(
                Response::text(
                    401,
                    "a bearer token is required: Authorization: Bearer <token>",
                )
                .with_header("WWW-Authenticate", "Bearer realm=\"sqlite-insights\""),
            );
        }
    }
    None
}

fn serve_one(mut s: TcpStream, peer: SocketAddr, opts: &Options, handler: &Handler) {
    let deadline = Instant::now() + opts.timeout;
    let _ = s.set_write_timeout(Some(opts.timeout));
    let _ = s.set_nodelay(true);
    let head = match read_head(&mut s, deadline) {
        Ok(h) => h,
        Err(ReadFail::Gone) => return,
        Err(ReadFail::Status(code, msg)) => {
            let _ = write_response(&mut s, &Response::text(code, msg), false);
            finish(s);
            return;
        }
    };
    let (resp, head_only) = match parse_head(&head, Some(peer)) {
        Err((code, msg)) => (Response::text(code, msg), false),
        Ok(req) => {
            let head_only = req.method == "HEAD";
            match check(&req, opts) {
                Some(r) => (r, head_only),
                None => match catch_unwind(AssertUnwindSafe(|| handler(&req))) {
                    Ok(r) => (r, head_only),
                    Err(_) => (Response::text(500, "internal error"), head_only),
                },
            }
        }
    };
    let _ = write_response(&mut s, &resp, head_only);
    finish(s);
}

/// Close politely: stop writing, drain a little of what the client still
/// sends (so it sees our answer rather than a reset), then close.
fn finish(mut s: TcpStream) {
    let _ = s.flush();
    let _ = s.shutdown(Shutdown::Write);
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < 64 * 1024 {
        match s.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

pub fn write_response(s: &mut TcpStream, r: &Response, head_only: bool) -> io::Result<()> {
    let mut h = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    for (k, v) in &r.headers {
        h.push_str(k);
        h.push_str(": ");
        h.push_str(v);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    s.write_all(h.as_bytes())?;
    if !head_only {
        s.write_all(&r.body)?;
    }
    s.flush()
}

/// Parse `addr` as given to insights_serve / the exporter: `host:port`,
/// `[v6]:port`, `:port` or `port` (127.0.0.1), `localhost:port`.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("address is empty".into());
    }
    if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
        let port: u16 = s.parse().map_err(|_| format!("bad port '{s}'"))?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Some(p) = s.strip_prefix(':') {
        let port: u16 = p.parse().map_err(|_| format!("bad port '{p}'"))?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some(p) = s.strip_prefix("localhost:") {
        let port: u16 = p.parse().map_err(|_| format!("bad port '{p}'"))?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    Err(format!(
        "address must be 'host:port' with a numeric IP (e.g. '127.0.0.1:9187', '[::1]:0', ':9187'), got '{s}'"
    ))
}

/// Shared slot for one server per process.
pub type Slot = Mutex<Option<Server>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads() {
        let r = parse_head(
            b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t",
            None,
        )
        .ok()
        .unwrap();
        assert_eq!(r.path, "/a");
        assert_eq!(r.query, "b=1");
        assert_eq!(r.header("host"), Some("x"));
        assert!(authorized(&r, "t"));
        assert!(!authorized(&r, "u"));
        assert_eq!(parse_head(b"GET / HTTP/2.0", None).err().unwrap().0, 505);
        assert_eq!(
            parse_head(b"GET http://x/ HTTP/1.1", None).err().unwrap().0,
            400
        );
        assert_eq!(parse_head(b"get / HTTP/1.1", None).err().unwrap().0, 400);
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nnocolon", None)
                .err()
                .unwrap()
                .0,
            400
        );
        assert_eq!(parse_head(b"GET  / HTTP/1.1", None).err().unwrap().0, 400);
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("9187").unwrap().to_string(), "127.0.0.1:9187");
        assert_eq!(parse_addr(":0").unwrap().to_string(), "127.0.0.1:0");
        assert_eq!(parse_addr("[::1]:80").unwrap().to_string(), "[::1]:80");
        assert!(parse_addr("example.com:80").is_err());
        assert!(parse_addr("1.2.3.4:99999").is_err());
    }

    #[test]
    fn secrets() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}
