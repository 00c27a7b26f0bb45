//! Alerts inside the extension, for users without Prometheus: rules over the
//! process's own numbers, evaluated by the background thread after every
//! flush round; transitions recorded as events and POSTed to a webhook.
//!
//! SQL surface:
//! - `insights_alert_rule(name, metric, op, threshold[, for_seconds[,
//!   webhook[, window_seconds]]])` defines (or replaces) a rule and returns
//!   it as JSON. `insights_alert_rule(name)` returns the rule (NULL if none);
//!   `insights_alert_rule(name, NULL)` deletes it (returns 1, or 0 if none).
//! - `insights_alerts`: one row per rule and database it was evaluated for:
//!   state (inactive, pending, firing), last value, since when, last
//!   notification result.
//!
//! Rules:
//! - Metrics (per database): over the trailing window (default 60 s) of
//!   this process's statements — `error_rate` (errors / calls, 0..1),
//!   `errors`, `calls`, `qps`, `busy`, `mean_ms`, `p50_ms`, `p95_ms`,
//!   `p99_ms`; instant — `db_size_bytes`, `wal_size_bytes`,
//!   `disk_free_bytes`, `disk_free_ratio`, `store_error` (1 while the
//!   database's store fails). A window without statements has no value, and
//!   a rule without a value is not active (like an absent series in
//!   Prometheus).
//! - States as in Prometheus: inactive -> pending when the condition holds
//!   (straight to firing when `for_seconds` is 0) -> firing once it has held
//!   for `for_seconds` -> resolved (back to inactive) when it stops holding.
//!   Pending that stops holding goes back to inactive quietly (event only).
//! - Each transition is an event (`alert_pending`, `alert_firing`,
//!   `alert_resolved`, `alert_inactive`; registry events and the store's
//!   events table) and, for the first three, a webhook POST when the rule has
//!   one: Alertmanager's webhook payload (version 4) with `status` firing,
//!   resolved or pending. `http://` only; delivered by one background thread
//!   from a bounded queue, 2 s timeout, no retries (the next transition
//!   carries the truth).
//! - Rules live in the process (define them at start-up, like
//!   `insights_config`); they are not stored.

use crate::clock;
use crate::exposition::{self, Family};
use crate::metrics;
use crate::registry::{lock, registry, DbStats};
use crate::vtab::{int, register as register_vtab, text, text_opt, Scan, Source, Tab};
use rusqlite::functions::FunctionFlags;
use rusqlite::types::{Value, ValueRef};
use rusqlite::vtab::Module;
use rusqlite::{Connection, Error, Result};
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Rules a process may define.
pub const MAX_RULES: usize = 100;
/// Default trailing window of the windowed metrics.
pub const DEFAULT_WINDOW_SECONDS: f64 = 60.0;
/// Longest window (the round ring keeps an hour).
pub const MAX_WINDOW_SECONDS: f64 = 3600.0;
/// Webhook deliveries waiting at most (more are dropped and counted).
pub const WEBHOOK_QUEUE: usize = 256;
/// Timeout of one webhook delivery (connect, write and read each).
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(2);

pub const METRICS: &[(&str, &str)] = &[
    ("error_rate", "failed / all statements in the window (0..1)"),
    ("errors", "failed statements in the window"),
    ("calls", "statements in the window"),
    ("qps", "statements per second over the window"),
    ("busy", "statements that returned SQLITE_BUSY in the window"),
    ("mean_ms", "mean statement time in the window"),
    ("p50_ms", "median statement time in the window"),
    ("p95_ms", "95th percentile statement time in the window"),
    ("p99_ms", "99th percentile statement time in the window"),
    ("db_size_bytes", "size of the database file"),
    ("wal_size_bytes", "size of the WAL file"),
    ("disk_free_bytes", "free bytes on the database's filesystem"),
    (
        "disk_free_ratio",
        "free / total bytes of the database's filesystem (0..1)",
    ),
    (
        "store_error",
        "1 while the database's sidecar store fails, else 0",
    ),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Cmp {
    fn parse(s: &str) -> Option<Cmp> {
        Some(match s.trim() {
            ">" => Cmp::Gt,
            ">=" => Cmp::Ge,
            "<" => Cmp::Lt,
            "<=" => Cmp::Le,
            "=" | "==" => Cmp::Eq,
            "!=" | "<>" => Cmp::Ne,
            _ => return None,
        })
    }
    fn as_str(self) -> &'static str {
        match self {
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
        }
    }
    fn holds(self, v: f64, t: f64) -> bool {
        match self {
            Cmp::Gt => v > t,
            Cmp::Ge => v >= t,
            Cmp::Lt => v < t,
            Cmp::Le => v <= t,
            Cmp::Eq => v == t,
            Cmp::Ne => v != t,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub metric: String,
    pub op: Cmp,
    pub threshold: f64,
    pub for_ms: i64,
    pub window_ms: i64,
    pub webhook: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum State {
    Inactive,
    Pending,
    Firing,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Inactive => "inactive",
            State::Pending => "pending",
            State::Firing => "firing",
        }
    }
}

#[derive(Clone, Debug)]
pub struct DbState {
    pub state: State,
    /// When the condition started to hold (unix ms), 0 when it does not.
    pub active_at: i64,
    /// When the current state began (unix ms).
    pub since: i64,
    pub value: Option<f64>,
    pub last_eval: i64,
    pub transitions: u64,
    pub last_notification: Option<String>,
}

impl Default for DbState {
    fn default() -> Self {
        DbState {
            state: State::Inactive,
            active_at: 0,
            since: clock::unix_ms_now(),
            value: None,
            last_eval: 0,
            transitions: 0,
            last_notification: None,
        }
    }
}

struct Slot {
    rule: Rule,
    /// Per database path.
    states: BTreeMap<String, DbState>,
    /// Rule generation, so a late webhook result does not land on a new rule.
    gen: u64,
}

#[derive(Default)]
struct Rules {
    list: Vec<Slot>,
    gen: u64,
}

fn rules() -> &'static Mutex<Rules> {
    static R: OnceLock<Mutex<Rules>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Rules::default()))
}

/// Webhook deliveries dropped because the queue was full.
pub static WEBHOOK_DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn err(msg: String) -> Error {
    Error::UserFunctionError(msg.into())
}

// -------------------------------------------------------------- evaluation

/// Value of `metric` for a database now (None = no data).
pub fn metric_value(db: &DbStats, metric: &str, window_ms: i64) -> Option<f64> {
    let windowed = |f: &dyn Fn(&exposition::Point) -> Option<f64>| {
        metrics::window(&db.path, window_ms).and_then(|p| f(&p))
    };
    match metric {
        "error_rate" => windowed(&|p| (p.calls > 0).then(|| p.errors as f64 / p.calls as f64)),
        "errors" => windowed(&|p| Some(p.errors as f64)),
        "calls" => windowed(&|p| Some(p.calls as f64)),
        "busy" => windowed(&|p| Some(p.busy as f64)),
        "qps" => windowed(&|p| (p.width_ms > 0).then(|| p.calls as f64 * 1e3 / p.width_ms as f64)),
        "mean_ms" => windowed(&|p| (p.timed > 0).then(|| p.total_ns as f64 / 1e6 / p.timed as f64)),
        "p50_ms" => windowed(&|p| p.hist.quantile(0.50).map(|v| v / 1e6)),
        "p95_ms" => windowed(&|p| p.hist.quantile(0.95).map(|v| v / 1e6)),
        "p99_ms" => windowed(&|p| p.hist.quantile(0.99).map(|v| v / 1e6)),
        "db_size_bytes" => exposition::file_facts(&db.path).0.map(|v| v as f64),
        "wal_size_bytes" => exposition::file_facts(&db.path).1.map(|v| v as f64),
        "disk_free_bytes" => exposition::file_facts(&db.path).2.map(|v| v as f64),
        "disk_free_ratio" => {
            let (_, _, free, size) = exposition::file_facts(&db.path);
            match (free, size) {
                (Some(f), Some(s)) if s > 0 => Some(f as f64 / s as f64),
                _ => None,
            }
        }
        "store_error" => Some(lock(&db.store).error.is_some() as u8 as f64),
        _ => None,
    }
}

/// A transition to record and announce.
struct Transition {
    rule: Rule,
    gen: u64,
    db: Arc<DbStats>,
    status: &'static str,
    value: Option<f64>,
    starts_at: i64,
    ends_at: i64,
}

/// Evaluate every rule for every database (background thread, after each
/// flush round and the metrics round).
pub fn evaluate() {
    let now = clock::unix_ms_now();
    let dbs = registry().databases();
    let mut out: Vec<Transition> = Vec::new();
    {
        let mut r = lock(rules());
        for slot in r.list.iter_mut() {
            for db in &dbs {
                let v = metric_value(db, &slot.rule.metric, slot.rule.window_ms);
                let st = slot.states.entry(db.path.clone()).or_default();
                st.value = v;
                st.last_eval = now;
                let holds = v.is_some_and(|x| slot.rule.op.holds(x, slot.rule.threshold));
                let mut emit = |status: &'static str, st: &DbState, ends_at: i64| {
                    out.push(Transition {
                        rule: slot.rule.clone(),
                        gen: slot.gen,
                        db: db.clone(),
                        status,
                        value: v,
                        starts_at: st.active_at,
                        ends_at,
                    })
                };
                match (st.state, holds) {
                    (State::Inactive, true) => {
                        st.active_at = now;
                        st.since = now;
                        st.transitions += 1;
                        if slot.rule.for_ms <= 0 {
                            st.state = State::Firing;
                            emit("firing", st, 0);
                        } else {
                            st.state = State::Pending;
                            emit("pending", st, 0);
                        }
                    }
                    (State::Pending, true) if now - st.active_at >= slot.rule.for_ms => {
                        st.state = State::Firing;
                        st.since = now;
                        st.transitions += 1;
                        emit("firing", st, 0);
                    }
                    (State::Pending, false) => {
                        st.state = State::Inactive;
                        st.since = now;
                        st.transitions += 1;
                        emit("inactive", st, now);
                        st.active_at = 0;
                    }
                    (State::Firing, false) => {
                        st.state = State::Inactive;
                        st.since = now;
                        st.transitions += 1;
                        emit("resolved", st, now);
                        st.active_at = 0;
                    }
                    _ => {}
                }
            }
        }
    }
    for t in out {
        let detail = json!({
            "alert": t.rule.name,
            "metric": t.rule.metric,
            "op": t.rule.op.as_str(),
            "threshold": t.rule.threshold,
            "value": t.value,
            "for_seconds": t.rule.for_ms as f64 / 1e3,
        })
        .to_string();
        crate::registry::note_event(&t.db, &format!("alert_{}", t.status), &detail);
        if t.status != "inactive" {
            if let Some(url) = &t.rule.webhook {
                enqueue(
                    url.clone(),
                    payload(&t),
                    t.rule.name.clone(),
                    t.gen,
                    t.db.path.clone(),
                );
            }
        }
    }
}

fn labels(rule: &Rule, db: &str) -> Json {
    json!({
        "alertname": rule.name,
        "database": db,
        "metric": rule.metric,
        "source": "sqlite-insights",
    })
}

/// Alertmanager webhook payload (version 4) for one transition.
fn payload(t: &Transition) -> String {
    let l = labels(&t.rule, &t.db.path);
    let value = t
        .value
        .map(exposition::fmt_f64)
        .unwrap_or_else(|| "none".into());
    let ann = json!({
        "summary": format!(
            "{} {} {} {} for {}s on {}",
            t.rule.name,
            t.rule.metric,
            t.rule.op.as_str(),
            exposition::fmt_f64(t.rule.threshold),
            t.rule.for_ms / 1000,
            t.db.path
        ),
        "value": value,
        "threshold": exposition::fmt_f64(t.rule.threshold),
        "state": t.status,
    });
    let fp = format!(
        "{:016x}",
        crate::normalize::hash64(format!("{}\u{0}{}", t.rule.name, t.db.path).as_bytes())
    );
    let ends = if t.ends_at > 0 {
        exposition::iso_ms(t.ends_at)
    } else {
        "0001-01-01T00:00:00Z".into()
    };
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{}\"}}", t.rule.name),
        "truncatedAlerts": 0,
        "status": t.status,
        "receiver": "sqlite-insights",
        "groupLabels": { "alertname": t.rule.name },
        "commonLabels": l,
        "commonAnnotations": ann,
        "externalURL": "",
        "alerts": [{
            "status": t.status,
            "labels": l,
            "annotations": ann,
            "startsAt": exposition::iso_ms(t.starts_at.max(1)),
            "endsAt": ends,
            "generatorURL": "",
            "fingerprint": fp,
        }],
    })
    .to_string()
}

// ----------------------------------------------------------------- webhook

struct Delivery {
    url: String,
    body: String,
    rule: String,
    gen: u64,
    db: String,
}

fn sender() -> Option<&'static SyncSender<Delivery>> {
    static S: OnceLock<Option<SyncSender<Delivery>>> = OnceLock::new();
    S.get_or_init(|| {
        let (tx, rx) = sync_channel::<Delivery>(WEBHOOK_QUEUE);
        std::thread::Builder::new()
            .name("insights-webhook".into())
            .spawn(move || {
                crate::errlog::set_internal_thread(true);
                while let Ok(d) = rx.recv() {
                    let r = std::panic::catch_unwind(|| post(&d.url, &d.body))
                        .unwrap_or_else(|_| Err("internal error".into()));
                    let note = match r {
                        Ok(code) => format!("{} {code}", exposition::iso_ms(clock::unix_ms_now())),
                        Err(e) => {
                            format!("{} error: {e}", exposition::iso_ms(clock::unix_ms_now()))
                        }
                    };
                    let mut rs = lock(rules());
                    if let Some(s) = rs
                        .list
                        .iter_mut()
                        .find(|s| s.rule.name == d.rule && s.gen == d.gen)
                    {
                        if let Some(st) = s.states.get_mut(&d.db) {
                            st.last_notification = Some(note);
                        }
                    }
                }
            })
            .ok()
            .map(|_| tx)
    })
    .as_ref()
}

fn enqueue(url: String, body: String, rule: String, gen: u64, db: String) {
    let Some(tx) = sender() else {
        WEBHOOK_DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return;
    };
    if tx
        .try_send(Delivery {
            url,
            body,
            rule,
            gen,
            db,
        })
        .is_err()
    {
        WEBHOOK_DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `http://host[:port][/path]` -> (host header, host, port, path).
pub fn parse_url(url: &str) -> std::result::Result<(String, String, u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        "webhook must be an http:// URL (https is not supported: use a local relay)".to_string()
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err("webhook URL needs a host (and no user info)".into());
    }
    if path.bytes().any(|c| c <= b' ' || c == 0x7f) {
        return Err("webhook URL path has spaces or control characters".into());
    }
    let (host, port) = if let Some(h) = authority.strip_prefix('[') {
        let (h, p) = h.split_once(']').ok_or("bad IPv6 host in webhook URL")?;
        let port = match p.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| "bad port in webhook URL")?,
            None if p.is_empty() => 80,
            None => return Err("bad webhook URL".into()),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse()
                    .map_err(|_| "bad port in webhook URL".to_string())?,
            ),
            None => (authority.to_string(), 80),
        }
    };
    if host.is_empty() {
        return Err("webhook URL needs a host".into());
    }
    Ok((authority.to_string(), host, port, path.to_string()))
}

/// POST `body` as JSON; the HTTP status code.
fn post(url: &str, body: &str) -> std::result::Result<u16, String> {
    let (authority, host, port, path) = parse_url(url)?;
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("resolve {host}: {e}"))?
        .collect();
    let mut last = String::from("no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, WEBHOOK_TIMEOUT) {
            Ok(mut s) => {
                let _ = s.set_write_timeout(Some(WEBHOOK_TIMEOUT));
                let _ = s.set_read_timeout(Some(WEBHOOK_TIMEOUT));
                let req = format!(
                    "POST {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: sqlite-insights/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    crate::functions::VERSION,
                    body.len()
                );
                s.write_all(req.as_bytes())
                    .and_then(|_| s.write_all(body.as_bytes()))
                    .map_err(|e| format!("send: {e}"))?;
                let mut buf = [0u8; 512];
                let mut got = Vec::new();
                while got.len() < 512 {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            got.extend_from_slice(&buf[..n]);
                            if got.windows(2).any(|w| w == b"\r\n") {
                                break;
                            }
                        }
                        Err(e) => return Err(format!("read: {e}")),
                    }
                }
                let line = String::from_utf8_lossy(&got);
                let code = line
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.get(..3))
                    .and_then(|c| c.parse::<u16>().ok())
                    .ok_or_else(|| "no HTTP status in reply".to_string())?;
                return Ok(code);
            }
            Err(e) => last = format!("connect {a}: {e}"),
        }
    }
    Err(last)
}

// --------------------------------------------------------------- SQL side

fn rule_json(r: &Rule) -> Json {
    json!({
        "name": r.name,
        "metric": r.metric,
        "op": r.op.as_str(),
        "threshold": r.threshold,
        "for_seconds": r.for_ms as f64 / 1e3,
        "window_seconds": r.window_ms as f64 / 1e3,
        "webhook": r.webhook,
    })
}

fn num_arg(v: ValueRef<'_>, what: &str) -> std::result::Result<f64, String> {
    match v {
        ValueRef::Integer(i) => Ok(i as f64),
        ValueRef::Real(f) if f.is_finite() => Ok(f),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|f| f.is_finite())
            .ok_or_else(|| format!("{what} must be a number")),
        _ => Err(format!("{what} must be a number")),
    }
}

fn text_of(v: ValueRef<'_>) -> Option<&str> {
    match v {
        ValueRef::Text(t) => std::str::from_utf8(t).ok(),
        _ => None,
    }
}

/// Parse and validate a rule from SQL arguments.
fn rule_from_args(args: &[ValueRef<'_>]) -> std::result::Result<Rule, String> {
    let name = text_of(args[0])
        .ok_or("name must be text")?
        .trim()
        .to_string();
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_-.:".contains(&c))
    {
        return Err(
            "name must be 1 to 64 characters of letters, digits, '_', '-', '.', ':'".into(),
        );
    }
    let metric = text_of(args[1])
        .ok_or("metric must be text")?
        .trim()
        .to_ascii_lowercase();
    if !METRICS.iter().any(|(m, _)| *m == metric) {
        return Err(format!(
            "unknown metric '{}' (known: {})",
            crate::registry::truncate(&metric, 64),
            METRICS
                .iter()
                .map(|(m, _)| *m)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let op = text_of(args[2])
        .and_then(Cmp::parse)
        .ok_or("op must be one of >, >=, <, <=, ==, !=")?;
    let threshold = num_arg(args[3], "threshold")?;
    let for_s = match args.get(4) {
        None | Some(ValueRef::Null) => 0.0,
        Some(v) => num_arg(*v, "for_seconds")?,
    };
    if !(0.0..=7.0 * 86400.0).contains(&for_s) {
        return Err("for_seconds must be between 0 and 604800".into());
    }
    let webhook = match args.get(5) {
        None | Some(ValueRef::Null) => None,
        Some(v) => {
            let u = text_of(*v)
                .ok_or("webhook must be text (an http:// URL) or NULL")?
                .trim();
            if u.is_empty() {
                None
            } else {
                parse_url(u)?;
                Some(u.to_string())
            }
        }
    };
    let window_s = match args.get(6) {
        None | Some(ValueRef::Null) => DEFAULT_WINDOW_SECONDS,
        Some(v) => num_arg(*v, "window_seconds")?,
    };
    if !(0.1..=MAX_WINDOW_SECONDS).contains(&window_s) {
        return Err(format!(
            "window_seconds must be between 0.1 and {MAX_WINDOW_SECONDS}"
        ));
    }
    Ok(Rule {
        name,
        metric,
        op,
        threshold,
        for_ms: (for_s * 1e3).round() as i64,
        window_ms: (window_s * 1e3).round() as i64,
        webhook,
    })
}

pub fn register(conn: &Connection) -> Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DIRECTONLY;
    conn.create_scalar_function("insights_alert_rule", -1, flags, |ctx| {
        const F: &str = "insights_alert_rule";
        let n = ctx.len();
        if !(1..=7).contains(&n) || n == 3 {
            return Err(err(format!(
                "{F}: takes (name), (name, NULL) or (name, metric, op, threshold[, for_seconds[, webhook[, window_seconds]]]), got {n} arguments"
            )));
        }
        let args: Vec<ValueRef<'_>> = (0..n).map(|i| ctx.get_raw(i)).collect();
        let name = text_of(args[0])
            .ok_or_else(|| err(format!("{F}: name must be text")))?
            .trim()
            .to_string();
        if n == 1 {
            let r = lock(rules());
            return Ok(r
                .list
                .iter()
                .find(|s| s.rule.name == name)
                .map(|s| rule_json(&s.rule).to_string()));
        }
        if n == 2 {
            if !matches!(args[1], ValueRef::Null) {
                return Err(err(format!(
                    "{F}: with 2 arguments the second must be NULL (delete the rule)"
                )));
            }
            let mut r = lock(rules());
            let before = r.list.len();
            r.list.retain(|s| s.rule.name != name);
            return Ok(Some((before - r.list.len()).to_string()));
        }
        let rule = rule_from_args(&args).map_err(|m| err(format!("{F}: {m}")))?;
        let mut r = lock(rules());
        r.gen += 1;
        let gen = r.gen;
        let json = rule_json(&rule).to_string();
        if let Some(s) = r.list.iter_mut().find(|s| s.rule.name == rule.name) {
            *s = Slot {
                rule,
                states: BTreeMap::new(),
                gen,
            };
        } else {
            if r.list.len() >= MAX_RULES {
                return Err(err(format!("{F}: at most {MAX_RULES} rules")));
            }
            r.list.push(Slot {
                rule,
                states: BTreeMap::new(),
                gen,
            });
        }
        Ok(Some(json))
    })?;
    const MODULE: Module<'static, Tab<Alerts>> = Module::eponymous_only_module();
    register_vtab(conn, &MODULE)
}

/// Alert states as metric families (for insights_metrics()).
pub fn families() -> Vec<Family> {
    let mut firing = Family::new(
        "sqlite_insights_alert_firing",
        "gauge",
        "1 while an in-extension alert rule fires for a database",
    );
    let mut pending = Family::new(
        "sqlite_insights_alert_pending",
        "gauge",
        "1 while an in-extension alert rule is pending for a database",
    );
    let r = lock(rules());
    for s in &r.list {
        for (db, st) in &s.states {
            let l = [("alert", s.rule.name.as_str()), ("database", db.as_str())];
            firing.push(&l, (st.state == State::Firing) as u8 as f64);
            pending.push(&l, (st.state == State::Pending) as u8 as f64);
        }
    }
    vec![firing, pending]
}

/// Rules and states for `/api/alerts`.
pub fn json() -> Json {
    let r = lock(rules());
    let list: Vec<Json> = r
        .list
        .iter()
        .map(|s| {
            let states: Vec<Json> = s
                .states
                .iter()
                .map(|(db, st)| {
                    json!({
                        "database": db,
                        "state": st.state.as_str(),
                        "value": st.value,
                        "since": exposition::iso_ms(st.since),
                        "active_since": (st.active_at > 0).then(|| exposition::iso_ms(st.active_at)),
                        "last_eval": (st.last_eval > 0).then(|| exposition::iso_ms(st.last_eval)),
                        "transitions": st.transitions,
                        "last_notification": st.last_notification,
                    })
                })
                .collect();
            let mut j = rule_json(&s.rule);
            j["states"] = Json::Array(states);
            j
        })
        .collect();
    json!({ "rules": list, "webhook_dropped": WEBHOOK_DROPPED.load(std::sync::atomic::Ordering::Relaxed) })
}

pub struct Alerts;

impl Source for Alerts {
    const NAME: &'static str = "insights_alerts";
    const SCHEMA: &'static std::ffi::CStr = c"CREATE TABLE x(name TEXT, database TEXT, metric TEXT, op TEXT, threshold REAL, for_seconds REAL, window_seconds REAL, webhook TEXT, state TEXT, value REAL, since TEXT, active_since TEXT, last_eval TEXT, transitions INTEGER, last_notification TEXT)";

    fn rows(_scan: &Scan) -> std::result::Result<Vec<Vec<Value>>, String> {
        let r = lock(rules());
        let mut out = Vec::new();
        for s in &r.list {
            let base = |db: Option<&str>| {
                vec![
                    text(s.rule.name.clone()),
                    text_opt(db.map(str::to_string)),
                    text(s.rule.metric.clone()),
                    text(s.rule.op.as_str()),
                    Value::Real(s.rule.threshold),
                    Value::Real(s.rule.for_ms as f64 / 1e3),
                    Value::Real(s.rule.window_ms as f64 / 1e3),
                    text_opt(s.rule.webhook.clone()),
                ]
            };
            if s.states.is_empty() {
                let mut row = base(None);
                row.extend([
                    text("inactive"),
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    int(0),
                    Value::Null,
                ]);
                out.push(row);
            }
            for (db, st) in &s.states {
                let mut row = base(Some(db));
                row.extend([
                    text(st.state.as_str()),
                    st.value.map(Value::Real).unwrap_or(Value::Null),
                    text(exposition::iso_ms(st.since)),
                    text_opt((st.active_at > 0).then(|| exposition::iso_ms(st.active_at))),
                    text_opt((st.last_eval > 0).then(|| exposition::iso_ms(st.last_eval))),
                    int(st.transitions),
                    text_opt(st.last_notification.clone()),
                ]);
                out.push(row);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let (a, h, p, path) = parse_url("http://127.0.0.1:9000/hook?x=1").unwrap();
        assert_eq!(
            (a.as_str(), h.as_str(), p, path.as_str()),
            ("127.0.0.1:9000", "127.0.0.1", 9000, "/hook?x=1")
        );
        let (_, h, p, path) = parse_url("http://[::1]/").unwrap();
        assert_eq!((h.as_str(), p, path.as_str()), ("::1", 80, "/"));
        assert!(parse_url("https://x/").is_err());
        assert!(parse_url("http://u@x/").is_err());
        assert!(parse_url("http://x:notaport/").is_err());
    }

    #[test]
    fn comparisons() {
        assert!(Cmp::parse(">").unwrap().holds(2.0, 1.0));
        assert!(!Cmp::parse(">=").unwrap().holds(0.5, 1.0));
        assert!(Cmp::parse("!=").unwrap().holds(0.5, 1.0));
        assert!(Cmp::parse("=>").is_none());
    }
}
