//! Sync: replication and sync status per database, peer and source
//! (`insights_sync`, `insights_sync_history`, `insights_heartbeat()`,
//! `insights_sync_report()`).
//!
//! Sources (each in its own module, each read from the engine's own state):
//! - `heartbeat` (here): pt-heartbeat style. `insights_heartbeat()` upserts this
//!   node's row (node, seq, beat time, interval, position) into the table
//!   `insights_heartbeat` of the calling connection's database — the only
//!   thing the extension ever writes into a user's database, and only when
//!   asked (the function, or `heartbeat_interval_ms` > 0). Every other node's
//!   row, as replicated here, gives lag = now - beat time and missed beats.
//! - `report` (here): `insights_sync_report(peer, local, remote[, pending[,
//!   source[, detail]]])` for home-grown replication; kept in memory and in
//!   the store (so every process of the node sees it).
//! - `crsqlite`, `libsql`, `litefs`, `litestream`: `sync_crsqlite.rs`,
//!   `sync_libsql.rs`, `sync_litefs.rs`, `sync_litestream.rs`.
//!
//! Rules:
//! - Reading never runs SQL on the user's connection: engine state is read
//!   from files next to the database and through a short-lived connection of
//!   our own (`internal`, never instrumented, opened without CREATE).
//!   `insights_heartbeat()` itself runs its two statements on the calling
//!   connection (so it joins the caller's transaction, fires cr-sqlite's
//!   triggers when the table is a CRR, and shows in `insights_queries` as the
//!   user-requested statements it is). Background beats use our own
//!   connection and skip tables that are cr-sqlite CRRs (their triggers need
//!   cr-sqlite loaded in the writing connection).
//! - Status (`finalize`): `unknown` when the source cannot compare positions
//!   (or failed: see detail.error); `stale` when the peer's side has not
//!   advanced for `sync_stale_ms` while behind (heartbeat: no new beat for
//!   `sync_stale_ms`, by the beat's time or by our own observation);
//!   `lagging` when behind by more than `sync_lag_positions` positions or
//!   `sync_lag_ms`; else `up_to_date`.
//! - lag_seconds of positional sources comes from a per-peer timeline of the
//!   leading side's positions as this process observed them (scans, flush
//!   rounds, beats): resolution = how often we look; `detail.lag_seconds_min`
//!   is true when the lag began before the first observation.
//! - For exporters: `sync_rows()` returns every database's rows (the same as
//!   `SELECT * FROM insights_sync`).

use crate::clock;
use crate::config::{self, Key};
use crate::registry::{lock, registry, DbStats};
use crate::store;
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, Error, OpenFlags, Result};
use serde_json::{json, Map, Value as Json};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

/// The heartbeat table in the user's database (documented in docs/sync.md).
pub const HEARTBEAT_TABLE: &str = "insights_heartbeat";
/// Its schema: every NOT NULL column has a default so cr-sqlite accepts it
/// as a CRR (`SELECT crsql_as_crr('insights_heartbeat')`).
pub const HEARTBEAT_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS insights_heartbeat(\
     node TEXT NOT NULL PRIMARY KEY, \
     seq INTEGER NOT NULL DEFAULT 0, \
     beat_at TEXT NOT NULL DEFAULT '', \
     beat_ms INTEGER NOT NULL DEFAULT 0, \
     interval_ms INTEGER NOT NULL DEFAULT 0, \
     position TEXT, \
     position_source TEXT)";
/// Longest node id, peer name or source name accepted.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest report detail kept.
pub const MAX_DETAIL_BYTES: usize = 4096;
/// Observations kept per peer timeline; beyond it every other one is dropped
/// (coarser, still bounded).
pub const MAX_TIMELINE: usize = 1024;
/// Background heartbeat intervals below this are raised to it.
pub const MIN_HEARTBEAT_INTERVAL_MS: i64 = 100;
/// How long a reading connection waits for a lock (it only reads).
pub const READ_BUSY_TIMEOUT_MS: u64 = 200;
/// Environment variable giving the node id at first load.
pub const ENV_NODE_ID: &str = "SQLITE_INSIGHTS_NODE_ID";
/// Sync history samples are deleted after `retention_minute_days`; pruning
/// runs every this many sampling rounds.
pub const PRUNE_EVERY: u64 = 30;

// ------------------------------------------------------------------ rows

/// A position as the engine gives it: a number (frames, versions, TXIDs,
/// beats) or text (Litestream's generation/index:offset).
#[derive(Clone, Debug, PartialEq)]
pub enum Pos {
    Int(i64),
    Text(String),
}

impl Pos {
    pub fn value(&self) -> Value {
        match self {
            Pos::Int(i) => Value::Integer(*i),
            Pos::Text(s) => Value::Text(s.clone()),
        }
    }
    pub fn json(&self) -> Json {
        match self {
            Pos::Int(i) => json!(i),
            Pos::Text(s) => json!(s),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    UpToDate,
    Lagging,
    Stale,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::UpToDate => "up_to_date",
            Status::Lagging => "lagging",
            Status::Stale => "stale",
            Status::Unknown => "unknown",
        }
    }
}

/// One row of `insights_sync` (also what exporters get from `sync_rows()`).
#[derive(Clone, Debug)]
pub struct SyncRow {
    pub database: String,
    pub node: String,
    pub peer: String,
    pub source: String,
    pub role: String,
    pub local_position: Option<Pos>,
    pub remote_position: Option<Pos>,
    pub lag_positions: Option<i64>,
    pub lag_seconds: Option<f64>,
    pub pending_changes: Option<i64>,
    pub status: Status,
    /// Unix ms of the peer's last sign of life (beat, report, applied frame...).
    pub last_seen_ms: Option<i64>,
    /// JSON object with source-specific facts.
    pub detail: Json,
}

impl SyncRow {
    pub fn last_seen(&self) -> Option<String> {
        self.last_seen_ms.map(clock::iso_ms)
    }

    /// Values in `insights_sync` column order.
    pub fn values(&self) -> Vec<Value> {
        let opt_i = |v: Option<i64>| v.map(Value::Integer).unwrap_or(Value::Null);
        vec![
            Value::Text(self.database.clone()),
            Value::Text(self.node.clone()),
            Value::Text(self.peer.clone()),
            Value::Text(self.source.clone()),
            Value::Text(self.role.clone()),
            self.local_position
                .as_ref()
                .map(Pos::value)
                .unwrap_or(Value::Null),
            self.remote_position
                .as_ref()
                .map(Pos::value)
                .unwrap_or(Value::Null),
            opt_i(self.lag_positions),
            self.lag_seconds.map(Value::Real).unwrap_or(Value::Null),
            opt_i(self.pending_changes),
            Value::Text(self.status.as_str().into()),
            self.last_seen().map(Value::Text).unwrap_or(Value::Null),
            Value::Text(self.detail.to_string()),
        ]
    }
}

/// How a source's row is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// lag from a beat's time; stale when the beat stops advancing.
    Heartbeat,
    /// positions of an engine: lag when the trailing side is behind.
    Positional,
    /// positions reported by the user's replication layer.
    Report,
}

/// What a source observed for one peer, before status is judged.
#[derive(Clone, Debug)]
pub struct Obs {
    pub source: String,
    pub peer: String,
    pub kind: Kind,
    /// This node's role towards the peer, when the source knows better than
    /// the database's role.
    pub role: Option<String>,
    pub local: Option<Pos>,
    pub remote: Option<Pos>,
    pub lag_positions: Option<i64>,
    /// Lag in seconds when the source knows it (heartbeats, reports).
    pub lag_seconds: Option<f64>,
    pub pending: Option<i64>,
    /// Orderable positions of the side that leads and the side that trails
    /// (for the timeline and staleness); a change of `epoch` (generation)
    /// resets the timeline.
    pub lead_ord: Option<i64>,
    pub trail_ord: Option<i64>,
    pub epoch: Option<String>,
    /// The peer's progress marker (acknowledged version, applied frame, beat
    /// seq) when it differs from `trail_ord`; its last change is the peer's
    /// last sign of life when the engine keeps no time of its own.
    pub progress: Option<i64>,
    /// Whether this node and the peer differ, when neither lag_positions nor
    /// pending_changes alone says it (cr-sqlite: pending changes decide).
    pub behind: Option<bool>,
    /// Last sign of life from the engine's own state (beat time, file mtime).
    pub last_seen_ms: Option<i64>,
    /// Heartbeat: the beat is older than `sync_stale_ms` by its own time.
    pub beat_age_ms: Option<i64>,
    pub detail: Map<String, Json>,
    /// Reading failed: the row is `unknown` and detail.error says why.
    pub error: Option<String>,
}

impl Obs {
    pub fn new(source: &str, peer: &str, kind: Kind) -> Obs {
        Obs {
            source: source.into(),
            peer: peer.into(),
            kind,
            role: None,
            local: None,
            remote: None,
            lag_positions: None,
            lag_seconds: None,
            pending: None,
            lead_ord: None,
            trail_ord: None,
            epoch: None,
            progress: None,
            behind: None,
            last_seen_ms: None,
            beat_age_ms: None,
            detail: Map::new(),
            error: None,
        }
    }

    pub fn failed(source: &str, peer: &str, kind: Kind, error: String) -> Obs {
        let mut o = Obs::new(source, peer, kind);
        o.error = Some(error);
        o
    }
}

// --------------------------------------------------------- per-peer state

#[derive(Default)]
struct Track {
    /// (leading position, unix ms when first observed), increasing.
    timeline: VecDeque<(i64, i64)>,
    epoch: Option<String>,
    /// First observation of this peer by this process.
    first_seen_ms: i64,
    trail: Option<i64>,
    trail_changed_ms: i64,
    /// Heartbeats: beats skipped between two observations (seq jumps > 1).
    seq_gaps: i64,
}

impl Track {
    fn observe_lead(&mut self, epoch: &Option<String>, lead: i64, now: i64) {
        if &self.epoch != epoch {
            self.timeline.clear();
            self.epoch = epoch.clone();
        }
        match self.timeline.back() {
            Some(&(last, _)) if lead <= last => {
                if lead < last {
                    // the position went back (restore, new log): start again
                    self.timeline.clear();
                    self.timeline.push_back((lead, now));
                }
            }
            _ => self.timeline.push_back((lead, now)),
        }
        if self.timeline.len() > MAX_TIMELINE {
            let kept: VecDeque<(i64, i64)> = self
                .timeline
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 2 == 0 || *i == self.timeline.len() - 1)
                .map(|(_, v)| *v)
                .collect();
            self.timeline = kept;
        }
    }

    /// Seconds since the leading side first passed `trail`, and whether that
    /// is only a lower bound (it passed before our first observation).
    fn lag_seconds(&self, trail: i64, now: i64) -> Option<(f64, bool)> {
        let &(lead, _) = self.timeline.back()?;
        if trail >= lead {
            return Some((0.0, false));
        }
        let (i, &(_, at)) = self
            .timeline
            .iter()
            .enumerate()
            .find(|(_, (p, _))| *p > trail)?;
        Some((((now - at).max(0)) as f64 / 1000.0, i == 0))
    }

    fn observe_trail(&mut self, trail: i64, now: i64) -> bool {
        let changed = self.trail != Some(trail);
        if changed {
            if let Some(prev) = self.trail {
                if trail > prev + 1 {
                    self.seq_gaps += trail - prev - 1;
                }
            }
            self.trail = Some(trail);
            self.trail_changed_ms = now;
        }
        changed
    }
}

type TrackKey = (String, String, String);

fn tracks() -> &'static Mutex<HashMap<TrackKey, Track>> {
    static T: std::sync::OnceLock<Mutex<HashMap<TrackKey, Track>>> = std::sync::OnceLock::new();
    T.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Judge one observation: timeline lag, staleness, status.
pub fn finalize(db: &str, node: &str, db_role: &str, mut o: Obs, now: i64) -> SyncRow {
    let lag_ms_limit = config::get(Key::SyncLagMs);
    let stale_ms = config::get(Key::SyncStaleMs);
    let pos_limit = config::get(Key::SyncLagPositions);
    let mut t = lock(tracks());
    let tr = t
        .entry((db.to_string(), o.source.clone(), o.peer.clone()))
        .or_default();
    if tr.first_seen_ms == 0 {
        tr.first_seen_ms = now;
        tr.trail_changed_ms = now;
    }
    if let Some(lead) = o.lead_ord {
        tr.observe_lead(&o.epoch, lead, now);
    }
    if let Some(p) = o.progress.or(o.trail_ord) {
        tr.observe_trail(p, now);
    }
    if o.lag_seconds.is_none() {
        if let Some(trail) = o.trail_ord {
            if let Some((s, lower_bound)) = tr.lag_seconds(trail, now) {
                o.lag_seconds = Some(s);
                if lower_bound && s > 0.0 {
                    o.detail.insert("lag_seconds_min".into(), json!(true));
                }
            }
        }
    }
    let last_progress = o.last_seen_ms.unwrap_or(tr.trail_changed_ms);
    let last_seen = o
        .last_seen_ms
        .or((o.progress.or(o.trail_ord).is_some() && tr.trail.is_some())
            .then_some(tr.trail_changed_ms));
    let status = if o.error.is_some() {
        Status::Unknown
    } else {
        match o.kind {
            Kind::Heartbeat => {
                if o.lag_seconds.is_none() {
                    Status::Unknown
                } else if o.beat_age_ms.is_some_and(|a| a > stale_ms)
                    || now - tr.trail_changed_ms > stale_ms
                {
                    Status::Stale
                } else if o
                    .lag_seconds
                    .is_some_and(|s| s * 1000.0 > lag_ms_limit as f64)
                {
                    Status::Lagging
                } else {
                    Status::UpToDate
                }
            }
            Kind::Positional | Kind::Report => {
                let behind = o
                    .behind
                    .or(o.lag_positions.map(|l| l > 0))
                    .or(o.pending.map(|p| p > 0));
                let report_stale = o.kind == Kind::Report && now - last_progress > stale_ms;
                // behind and neither side moved for the stale window: the
                // trailing side made no progress since the lead passed it
                let no_progress = (now - last_progress)
                    .min(o.lag_seconds.map_or(i64::MAX, |s| (s * 1000.0) as i64));
                match behind {
                    _ if report_stale => Status::Stale,
                    None => Status::Unknown,
                    Some(false) => Status::UpToDate,
                    Some(true) if no_progress > stale_ms => Status::Stale,
                    Some(true) => {
                        let by = if o.behind.is_some() {
                            o.pending.or(o.lag_positions)
                        } else {
                            o.lag_positions.or(o.pending)
                        };
                        if by.is_some_and(|l| l > pos_limit)
                            || o.lag_seconds
                                .is_some_and(|s| s * 1000.0 > lag_ms_limit as f64)
                        {
                            Status::Lagging
                        } else {
                            Status::UpToDate
                        }
                    }
                }
            }
        }
    };
    if o.kind == Kind::Heartbeat && tr.seq_gaps > 0 {
        o.detail.insert("seq_gaps".into(), json!(tr.seq_gaps));
    }
    drop(t);
    if let Some(e) = &o.error {
        o.detail.insert("error".into(), json!(e));
    }
    SyncRow {
        database: db.to_string(),
        node: node.to_string(),
        peer: o.peer,
        source: o.source,
        role: o.role.unwrap_or_else(|| db_role.to_string()),
        local_position: o.local,
        remote_position: o.remote,
        lag_positions: o.lag_positions,
        lag_seconds: o.lag_seconds.map(|s| (s * 1000.0).round() / 1000.0),
        pending_changes: o.pending,
        status,
        last_seen_ms: last_seen,
        detail: Json::Object(o.detail),
    }
}

// -------------------------------------------------------- node id, roles

static NODE_ID: Mutex<Option<String>> = Mutex::new(None);

fn hostname() -> String {
    let mut buf = [0u8; 256];
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let s = String::from_utf8_lossy(&buf[..n]).into_owned();
    if s.is_empty() {
        "localhost".into()
    } else {
        s
    }
}

/// This node's id for a database: the configured one (process-wide), else
/// `<hostname>:<8 hex digits of the database path's hash>`: stable across
/// restarts (a pid would leave a dead row behind at every restart) and
/// distinct for two copies of one database on the same host (a two-node
/// test, or a replica next to its primary).
pub fn node_id(db_path: &str) -> String {
    if let Some(n) = lock(&NODE_ID).clone() {
        return n;
    }
    let h = crate::normalize::hash64(db_path.as_bytes()) as u32;
    format!("{}:{h:08x}", hostname())
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_BYTES
        && s.chars().all(|c| !c.is_control())
        && s.trim() == s
}

/// Per-database settings (in this process's memory, like `store_path`).
#[derive(Default, Clone)]
struct DbConf {
    role: Option<String>,
    libsql_primary_url: Option<String>,
    litestream_replica: Option<String>,
}

fn confs() -> &'static Mutex<HashMap<String, DbConf>> {
    static C: std::sync::OnceLock<Mutex<HashMap<String, DbConf>>> = std::sync::OnceLock::new();
    C.get_or_init(|| Mutex::new(HashMap::new()))
}

fn conf(db: &str) -> DbConf {
    lock(confs()).get(db).cloned().unwrap_or_default()
}

/// The libSQL primary's metrics URL configured for a database.
pub fn libsql_primary_url(db: &str) -> Option<String> {
    conf(db).libsql_primary_url
}

/// The Litestream file replica directory configured for a database.
pub fn litestream_replica(db: &str) -> Option<String> {
    conf(db).litestream_replica
}

/// This node's role for a database: configured (`sync_role`), else detected:
/// `replica` for a libSQL embedded replica, a LiteFS replica (`.primary`
/// present) or a file we cannot write; `peer` for a cr-sqlite database
/// (every node writes); `writer` otherwise.
pub fn role(db: &str, crsqlite: bool) -> String {
    if let Some(r) = conf(db).role {
        return r;
    }
    if crate::sync_libsql::is_replica(db) || crate::sync_litefs::is_replica(db) {
        return "replica".into();
    }
    if crsqlite {
        return "peer".into();
    }
    if is_file_db(db) && !writable(db) {
        return "replica".into();
    }
    "writer".into()
}

fn writable(path: &str) -> bool {
    match std::ffi::CString::new(path) {
        Ok(c) => unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 },
        Err(_) => false,
    }
}

/// A database we can read with a connection of our own.
pub fn is_file_db(db: &str) -> bool {
    db != ":memory:"
        && db != crate::registry::UNKNOWN_DB
        && !db.is_empty()
        && !db.ends_with(store::STORE_SUFFIX)
        && Path::new(db).is_file()
}

// ----------------------------------------------------- reading connection

/// Run `f` on a short-lived connection of our own to `db` (never
/// instrumented; opened read-write without CREATE so WAL databases open even
/// when their -shm is missing, read-only when the file is not writable).
pub fn with_db<T>(db: &str, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    if store::on_background_thread() && !store::background_read_ok(db) {
        // rollback-journal databases are read only when a user asks
        return Err(rusqlite::Error::ModuleError(
            "not read in the background: not in WAL mode".into(),
        ));
    }
    store::internal(|| {
        let base = OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(db, base | OpenFlags::SQLITE_OPEN_READ_WRITE)
            .or_else(|_| {
                Connection::open_with_flags(db, base | OpenFlags::SQLITE_OPEN_READ_ONLY)
            })?;
        conn.busy_timeout(Duration::from_millis(READ_BUSY_TIMEOUT_MS))?;
        let r = f(&conn);
        drop(conn);
        r
    })
}

/// Which sync-relevant tables a database has.
#[derive(Default, Debug, Clone, Copy)]
pub struct Tables {
    pub heartbeat: bool,
    pub heartbeat_is_crr: bool,
    pub crsqlite: bool,
}

pub fn tables(conn: &Connection) -> Result<Tables> {
    let mut t = Tables::default();
    let mut st = conn.prepare(
        "SELECT name FROM sqlite_master WHERE name IN \
         ('insights_heartbeat', 'crsql_tracked_peers', 'crsql_site_id', \
          'insights_heartbeat__crsql_clock')",
    )?;
    let mut rows = st.query([])?;
    let mut peers = false;
    let mut site = false;
    while let Some(r) = rows.next()? {
        let n: String = r.get(0)?;
        match n.as_str() {
            "insights_heartbeat" => t.heartbeat = true,
            "crsql_tracked_peers" => peers = true,
            "crsql_site_id" => site = true,
            "insights_heartbeat__crsql_clock" => t.heartbeat_is_crr = true,
            _ => {}
        }
    }
    t.crsqlite = peers && site;
    Ok(t)
}

// -------------------------------------------------------------- heartbeat

/// A beat as stored in `insights_heartbeat`.
#[derive(Clone, Debug)]
pub struct Beat {
    pub node: String,
    pub seq: i64,
    pub beat_at: String,
    pub beat_ms: i64,
    pub interval_ms: i64,
    pub position: Option<String>,
    pub position_source: Option<String>,
}

fn read_beats(conn: &Connection) -> Result<Vec<Beat>> {
    let mut st = conn.prepare(
        "SELECT node, seq, beat_at, beat_ms, interval_ms, position, position_source \
         FROM insights_heartbeat",
    )?;
    let rows = st.query_map([], |r| {
        Ok(Beat {
            node: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
            seq: r.get::<_, Option<i64>>(1)?.unwrap_or(0),
            beat_at: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
            beat_ms: r.get::<_, Option<i64>>(3)?.unwrap_or(0),
            interval_ms: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
            position: r.get::<_, Option<Value>>(5)?.and_then(|v| match v {
                Value::Text(s) => Some(s),
                Value::Integer(i) => Some(i.to_string()),
                Value::Real(f) => Some(f.to_string()),
                _ => None,
            }),
            position_source: r.get(6)?,
        })
    })?;
    rows.collect()
}

/// Observations of the other nodes' beats.
pub fn heartbeat_obs(beats: &[Beat], me: &str, now: i64) -> Vec<Obs> {
    beats
        .iter()
        .filter(|b| b.node != me && !b.node.is_empty())
        .map(|b| {
            let mut o = Obs::new("heartbeat", &b.node, Kind::Heartbeat);
            let age = now - b.beat_ms;
            o.local = Some(Pos::Int(b.seq));
            o.trail_ord = Some(b.seq);
            o.lag_seconds = Some(age.max(0) as f64 / 1000.0);
            o.beat_age_ms = Some(age);
            o.last_seen_ms = Some(b.beat_ms);
            if b.interval_ms > 0 {
                let missed = (age.max(0) / b.interval_ms).max(0);
                o.remote = Some(Pos::Int(b.seq + missed));
                o.lag_positions = Some(missed);
            }
            o.detail.insert("seq".into(), json!(b.seq));
            o.detail.insert("beat_at".into(), json!(b.beat_at));
            o.detail.insert("interval_ms".into(), json!(b.interval_ms));
            if age < 0 {
                o.detail.insert("clock_skew_ms".into(), json!(-age));
            }
            if let Some(p) = &b.position {
                o.detail.insert("position".into(), json!(p));
            }
            if let Some(s) = &b.position_source {
                o.detail.insert("position_source".into(), json!(s));
            }
            o
        })
        .collect()
}

/// This node's own replication position to record with a beat, when an
/// engine with a position is detected (no SQL on the user's connection).
fn own_position(db: &str) -> Option<(String, &'static str)> {
    if let Some(p) = crate::sync_litefs::local_txid(db) {
        return Some((p.to_string(), "litefs"));
    }
    if let Some(p) = crate::sync_libsql::local_frame(db) {
        return Some((p.to_string(), "libsql"));
    }
    if is_file_db(db) {
        if let Ok(Some(v)) = with_db(db, |c| {
            if tables(c)?.crsqlite {
                crate::sync_crsqlite::db_version(c).map(Some)
            } else {
                Ok(None)
            }
        }) {
            return Some((v.to_string(), "crsqlite"));
        }
    }
    None
}

fn is_busy(e: &Error) -> bool {
    matches!(e, Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DatabaseBusy)
}

/// Write one beat with `conn`; returns the new sequence number.
pub fn write_beat(
    conn: &Connection,
    node: &str,
    interval_ms: i64,
    position: Option<(String, String)>,
) -> Result<i64> {
    conn.execute_batch(HEARTBEAT_SCHEMA)?;
    let now = clock::unix_ms_now();
    let at = clock::iso_ms(now);
    let (pos, src) = match position {
        Some((p, s)) => (Some(p), Some(s)),
        None => (None, None),
    };
    let n = conn.execute(
        "UPDATE insights_heartbeat SET seq = seq + 1, beat_at = ?2, beat_ms = ?3, \
         interval_ms = ?4, position = ?5, position_source = ?6 WHERE node = ?1",
        rusqlite::params![node, at, now, interval_ms, pos, src],
    )?;
    if n == 0 {
        conn.execute(
            "INSERT INTO insights_heartbeat(node, seq, beat_at, beat_ms, interval_ms, position, \
             position_source) VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![node, at, now, interval_ms, pos, src],
        )?;
    }
    conn.query_row(
        "SELECT seq FROM insights_heartbeat WHERE node = ?1",
        [node],
        |r| r.get(0),
    )
}

/// Last background-beat failure per database (shown once as an event).
fn beat_errors() -> &'static Mutex<HashMap<String, String>> {
    static E: std::sync::OnceLock<Mutex<HashMap<String, String>>> = std::sync::OnceLock::new();
    E.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Background beats written by this process.
pub static BACKGROUND_BEATS: AtomicU64 = AtomicU64::new(0);

/// One background beat into every writer database this process has open.
pub fn beat_all() {
    let interval = config::get(Key::HeartbeatIntervalMs);
    for db in registry().databases() {
        if db.connections_open.load(Ordering::Relaxed) == 0 || !is_file_db(&db.path) {
            continue;
        }
        let r = with_db(&db.path, |c| {
            let t = tables(c)?;
            let role = role(&db.path, t.crsqlite);
            if role != "writer" && role != "peer" {
                return Ok(None);
            }
            if t.heartbeat_is_crr {
                return Err(Error::ModuleError(
                    "insights_heartbeat is a cr-sqlite CRR: its triggers need cr-sqlite in the \
                     writing connection; call insights_heartbeat() from the application instead"
                        .into(),
                ));
            }
            let pos = own_position(&db.path).map(|(p, s)| (p, s.to_string()));
            write_beat(c, &node_id(&db.path), interval, pos).map(Some)
        });
        let mut errs = lock(beat_errors());
        match r {
            Ok(Some(_)) => {
                BACKGROUND_BEATS.fetch_add(1, Ordering::Relaxed);
                errs.remove(&db.path);
            }
            Ok(None) => {}
            Err(e) => {
                let msg = e.to_string();
                if errs.get(&db.path) != Some(&msg) {
                    errs.insert(db.path.clone(), msg.clone());
                    drop(errs);
                    crate::registry::note_event(&db, "heartbeat_error", &msg);
                }
            }
        }
    }
}

static HEARTBEAT_STARTED: AtomicBool = AtomicBool::new(false);

/// Start the background heartbeat thread once (idle while the interval is 0).
pub fn ensure_heartbeat_thread() {
    if HEARTBEAT_STARTED.swap(true, Ordering::SeqCst) {
        return;
    }
    let r = std::thread::Builder::new()
        .name("insights-heartbeat".into())
        .spawn(|| {
            crate::errlog::set_internal_thread(true);
            loop {
                let iv = config::get(Key::HeartbeatIntervalMs);
                if iv <= 0 {
                    std::thread::sleep(Duration::from_millis(250));
                    continue;
                }
                let iv = iv.max(MIN_HEARTBEAT_INTERVAL_MS);
                let _ = std::panic::catch_unwind(beat_all);
                let now = clock::unix_ms_now();
                let wait = (iv - now.rem_euclid(iv)).max(1) as u64;
                // sleep in slices so a shorter interval or 0 takes effect soon
                let mut left = wait;
                while left > 0 {
                    let step = left.min(250);
                    std::thread::sleep(Duration::from_millis(step));
                    left -= step;
                    if config::get(Key::HeartbeatIntervalMs) != iv {
                        break;
                    }
                }
            }
        });
    if r.is_err() {
        HEARTBEAT_STARTED.store(false, Ordering::SeqCst);
    }
}

// ----------------------------------------------------------------- reports

#[derive(Clone, Debug)]
pub struct Report {
    pub peer: String,
    pub source: String,
    pub local: Option<i64>,
    pub remote: Option<i64>,
    pub pending: Option<i64>,
    pub detail: Option<String>,
    pub at_ms: i64,
}

fn reports_mem() -> &'static Mutex<HashMap<String, Vec<Report>>> {
    static R: std::sync::OnceLock<Mutex<HashMap<String, Vec<Report>>>> = std::sync::OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

const STORE_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS sync_reports(
       peer TEXT NOT NULL, source TEXT NOT NULL, local_position INTEGER, remote_position INTEGER,
       pending_changes INTEGER, detail TEXT, at_ms INTEGER NOT NULL, pid INTEGER,
       PRIMARY KEY(peer, source));
     CREATE TABLE IF NOT EXISTS sync_history(
       at TEXT NOT NULL, at_ms INTEGER NOT NULL, node TEXT, peer TEXT, source TEXT, role TEXT,
       local_position, remote_position, lag_positions INTEGER, lag_seconds REAL,
       pending_changes INTEGER, status TEXT, last_seen TEXT);
     CREATE INDEX IF NOT EXISTS sync_history_by_time ON sync_history(at_ms);
     CREATE INDEX IF NOT EXISTS sync_history_by_peer ON sync_history(peer, source, at_ms);";

fn store_tables(c: &Connection) -> Result<()> {
    c.execute_batch(STORE_SCHEMA)
}

/// Record a report (memory, and the store when the database has one).
pub fn record_report(db: &Arc<DbStats>, r: Report) -> std::result::Result<(), String> {
    {
        let mut m = lock(reports_mem());
        let v = m.entry(db.path.clone()).or_default();
        v.retain(|x| !(x.peer == r.peer && x.source == r.source));
        v.push(r.clone());
    }
    let res = store::with_store_conn(db, |c| {
        store_tables(c)?;
        c.execute(
            "INSERT OR REPLACE INTO sync_reports(peer, source, local_position, remote_position, \
             pending_changes, detail, at_ms, pid) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            rusqlite::params![
                r.peer,
                r.source,
                r.local,
                r.remote,
                r.pending,
                r.detail,
                r.at_ms,
                std::process::id()
            ],
        )?;
        Ok(())
    });
    match res {
        Some(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// Latest report per (peer, source): this process's and the store's.
pub fn reports(db: &DbStats) -> Vec<Report> {
    let mut by: HashMap<(String, String), Report> = HashMap::new();
    let mut add = |r: Report| {
        let k = (r.peer.clone(), r.source.clone());
        match by.get(&k) {
            Some(old) if old.at_ms >= r.at_ms => {}
            _ => {
                by.insert(k, r);
            }
        }
    };
    if let Some(v) = lock(reports_mem()).get(&db.path) {
        for r in v {
            add(r.clone());
        }
    }
    if db.has_store.load(Ordering::Relaxed) || store::store_path(db).is_some() {
        let stored = store::with_store_conn(db, |c| {
            store_tables(c)?;
            let mut st = c.prepare(
                "SELECT peer, source, local_position, remote_position, pending_changes, detail, \
                 at_ms FROM sync_reports",
            )?;
            let rows = st.query_map([], |r| {
                Ok(Report {
                    peer: r.get(0)?,
                    source: r.get(1)?,
                    local: r.get(2)?,
                    remote: r.get(3)?,
                    pending: r.get(4)?,
                    detail: r.get(5)?,
                    at_ms: r.get(6)?,
                })
            })?;
            rows.collect::<Result<Vec<_>>>()
        });
        if let Some(Ok(v)) = stored {
            for r in v {
                add(r);
            }
        }
    }
    let mut v: Vec<Report> = by.into_values().collect();
    v.sort_by(|a, b| (&a.source, &a.peer).cmp(&(&b.source, &b.peer)));
    v
}

/// Sources whose rows an engine reader produces; a report for one of them
/// gives that engine's peer position (see `engine_remote`) instead of a row
/// of its own.
pub const ENGINE_SOURCES: &[&str] = &["libsql", "litefs"];
/// Sources a report may not use.
pub const RESERVED_SOURCES: &[&str] = &["heartbeat", "crsqlite"];

/// The latest report for an engine source (its remote position).
pub fn engine_remote(reports: &[Report], source: &str) -> Option<Report> {
    reports
        .iter()
        .filter(|r| r.source == source)
        .max_by_key(|r| r.at_ms)
        .cloned()
}

fn report_obs(r: &Report) -> Obs {
    let mut o = Obs::new(&r.source, &r.peer, Kind::Report);
    o.local = r.local.map(Pos::Int);
    o.remote = r.remote.map(Pos::Int);
    o.pending = r.pending;
    o.last_seen_ms = Some(r.at_ms);
    if let (Some(l), Some(m)) = (r.local, r.remote) {
        o.lag_positions = Some((l - m).abs());
        o.lead_ord = Some(l.max(m));
        o.trail_ord = Some(l.min(m));
        o.detail.insert(
            "ahead".into(),
            json!(match l.cmp(&m) {
                std::cmp::Ordering::Greater => "local",
                std::cmp::Ordering::Less => "remote",
                std::cmp::Ordering::Equal => "none",
            }),
        );
    }
    o.detail
        .insert("reported_at".into(), json!(clock::iso_ms(r.at_ms)));
    if let Some(d) = &r.detail {
        match serde_json::from_str::<Json>(d) {
            Ok(Json::Object(m)) => {
                if let Some(s) = m.get("lag_seconds").and_then(Json::as_f64) {
                    o.lag_seconds = Some(s.max(0.0));
                }
                if let Some(role) = m.get("role").and_then(Json::as_str) {
                    o.role = Some(role.to_string());
                }
                o.detail.insert("reported".into(), Json::Object(m));
            }
            _ => {
                o.detail.insert("reported".into(), json!(d));
            }
        }
    }
    o
}

// --------------------------------------------------------------- collect

/// Every row of one database.
pub fn rows_for(db: &Arc<DbStats>, now: i64) -> Vec<SyncRow> {
    let path = db.path.clone();
    let node = node_id(&path);
    let reports = reports(db);
    let mut obs: Vec<Obs> = Vec::new();
    let mut crsqlite = false;
    if is_file_db(&path) {
        let r = with_db(&path, |c| {
            let t = tables(c)?;
            let mut o = Vec::new();
            if t.heartbeat {
                match read_beats(c) {
                    Ok(b) => o.extend(heartbeat_obs(&b, &node, now)),
                    Err(e) => o.push(Obs::failed("heartbeat", "", Kind::Heartbeat, e.to_string())),
                }
            }
            if t.crsqlite {
                o.extend(crate::sync_crsqlite::observe(c));
            }
            Ok((t, o))
        });
        match r {
            Ok((t, o)) => {
                crsqlite = t.crsqlite;
                obs.extend(o);
            }
            Err(e) => {
                // a database we cannot read (locked, gone): say so once
                obs.push(Obs::failed("heartbeat", "", Kind::Heartbeat, e.to_string()));
            }
        }
        obs.extend(crate::sync_libsql::observe(
            &path,
            engine_remote(&reports, "libsql"),
        ));
        let litefs: Vec<Report> = reports
            .iter()
            .filter(|r| r.source == "litefs")
            .cloned()
            .collect();
        obs.extend(crate::sync_litefs::observe(&path, &node, &litefs));
        obs.extend(crate::sync_litestream::observe(&path));
    }
    for r in &reports {
        if !ENGINE_SOURCES.contains(&r.source.as_str()) {
            obs.push(report_obs(r));
        }
    }
    let db_role = role(&path, crsqlite);
    obs.into_iter()
        .map(|o| finalize(&path, &node, &db_role, o, now))
        .collect()
}

/// Databases whose sync status is read: those this process has open (a
/// closed database's files are never touched by a scan or the sampler).
fn watched(db: &DbStats) -> bool {
    !db.path.ends_with(store::STORE_SUFFIX) && db.connections_open.load(Ordering::Relaxed) > 0
}

/// Every open database's rows: what `insights_sync` shows, and what
/// exporters use (`crate::sync::sync_rows()`; it reads files next to each
/// database, opens a short-lived connection per database and may fetch a
/// libSQL primary's metrics page, cached for a second).
pub fn sync_rows() -> Vec<SyncRow> {
    let now = clock::unix_ms_now();
    let mut out = Vec::new();
    for db in registry().databases() {
        if !watched(&db) {
            continue;
        }
        out.extend(rows_for(&db, now));
    }
    out
}

// ---------------------------------------------------------------- history

static SAMPLE_ROUNDS: AtomicU64 = AtomicU64::new(0);

/// Flush-round hook: sample every database's rows into its store. A sample
/// for (node, peer, source) is skipped when another process of the node
/// wrote one less than half a flush interval ago.
pub fn sample_round() {
    let now = clock::unix_ms_now();
    let half = config::get(Key::FlushIntervalMs) / 2;
    let round = SAMPLE_ROUNDS.fetch_add(1, Ordering::Relaxed);
    let keep_ms = config::get(Key::RetentionMinuteDays) * 86_400_000;
    for db in registry().databases() {
        if !watched(&db) || store::store_path(&db).is_none() {
            continue;
        }
        let rows = rows_for(&db, now);
        if rows.is_empty() && !round.is_multiple_of(PRUNE_EVERY) {
            continue;
        }
        let r = store::with_store_conn(&db, |c| {
            store_tables(c)?;
            let tx = c.unchecked_transaction()?;
            {
                let mut ins = tx.prepare(
                    "INSERT INTO sync_history(at, at_ms, node, peer, source, role, local_position, \
                     remote_position, lag_positions, lag_seconds, pending_changes, status, last_seen) \
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13 WHERE NOT EXISTS \
                     (SELECT 1 FROM sync_history WHERE peer = ?4 AND source = ?5 AND node = ?3 \
                      AND at_ms > ?14)",
                )?;
                for row in &rows {
                    let v = row.values();
                    ins.execute(rusqlite::params![
                        clock::iso_ms(now),
                        now,
                        row.node,
                        row.peer,
                        row.source,
                        row.role,
                        v[5],
                        v[6],
                        row.lag_positions,
                        row.lag_seconds,
                        row.pending_changes,
                        row.status.as_str(),
                        row.last_seen(),
                        now - half,
                    ])?;
                }
            }
            if round.is_multiple_of(PRUNE_EVERY) {
                tx.execute("DELETE FROM sync_history WHERE at_ms < ?1", [now - keep_ms])?;
            }
            tx.commit()
        });
        let _ = r;
    }
    if config::get(Key::HeartbeatIntervalMs) > 0 {
        ensure_heartbeat_thread();
    }
}

/// One stored sample.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at_ms: i64,
    pub values: Vec<Value>,
}

/// Samples of a database's store, optionally bounded in time (unix ms).
pub fn history(
    db: &DbStats,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
) -> std::result::Result<Vec<Sample>, String> {
    let r = store::with_store_conn(db, |c| {
        store_tables(c)?;
        let mut st = c.prepare(
            "SELECT at, node, peer, source, role, local_position, remote_position, lag_positions, \
             lag_seconds, pending_changes, status, last_seen, at_ms FROM sync_history \
             WHERE at_ms >= ?1 AND at_ms <= ?2 ORDER BY at_ms, peer, source",
        )?;
        let rows = st.query_map(
            [from_ms.unwrap_or(i64::MIN), to_ms.unwrap_or(i64::MAX)],
            |r| {
                let mut values = Vec::with_capacity(12);
                for i in 0..12 {
                    values.push(r.get::<_, Value>(i)?);
                }
                Ok(Sample {
                    at_ms: r.get(12)?,
                    values,
                })
            },
        )?;
        rows.collect::<Result<Vec<_>>>()
    });
    match r {
        None => Ok(Vec::new()),
        Some(r) => r,
    }
}

// -------------------------------------------------------------- functions

fn err(msg: String) -> Error {
    Error::UserFunctionError(msg.into())
}

fn caller_db(ctx: &Context<'_>) -> Result<String> {
    let conn = unsafe { ctx.get_connection()? };
    Ok(unsafe { crate::capture::main_path(conn.handle()) })
}

fn check_args(ctx: &Context<'_>, name: &str, min: usize, max: usize) -> Result<()> {
    let n = ctx.len();
    if n < min || n > max {
        let want = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(err(format!("{name}: takes {want} arguments, got {n}")));
    }
    Ok(())
}

/// An integer argument (integer-valued reals and numeric text accepted);
/// NULL = None.
fn int_arg(ctx: &Context<'_>, name: &str, i: usize, what: &str) -> Result<Option<i64>> {
    let bad = || err(format!("{name}: {what} must be an integer or NULL"));
    match ctx.get_raw(i) {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(v) => Ok(Some(v)),
        ValueRef::Real(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .map(Some)
            .ok_or_else(bad),
        _ => Err(bad()),
    }
}

fn text_arg_opt(ctx: &Context<'_>, name: &str, i: usize, what: &str) -> Result<Option<String>> {
    match ctx.get_raw(i) {
        ValueRef::Null => Ok(None),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .map(|s| Some(s.to_string()))
            .map_err(|_| err(format!("{name}: {what} is not valid UTF-8"))),
        ValueRef::Integer(v) => Ok(Some(v.to_string())),
        _ => Err(err(format!("{name}: {what} must be text"))),
    }
}

/// Register the sync functions and start the sampling hook (once).
pub fn register(conn: &Connection) -> Result<()> {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if let Ok(v) = std::env::var(ENV_NODE_ID) {
            if valid_name(&v) {
                *lock(&NODE_ID) = Some(v);
            }
        }
        store::on_flush_round(sample_round);
        if config::get(Key::HeartbeatIntervalMs) > 0 {
            ensure_heartbeat_thread();
        }
    });
    let direct = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DIRECTONLY;

    conn.create_scalar_function("insights_heartbeat", -1, direct, |ctx| {
        check_args(ctx, "insights_heartbeat", 0, 1)?;
        let db = caller_db(ctx)?;
        let position = if ctx.len() == 1 {
            text_arg_opt(ctx, "insights_heartbeat", 0, "position")?
                .map(|p| (p, "reported".to_string()))
        } else {
            own_position(&db).map(|(p, s)| (p, s.to_string()))
        };
        if let Some((p, _)) = &position {
            if p.len() > MAX_NAME_BYTES {
                return Err(err(format!(
                    "insights_heartbeat: position is longer than {MAX_NAME_BYTES} bytes"
                )));
            }
        }
        let conn = unsafe { ctx.get_connection()? };
        let interval = config::get(Key::HeartbeatIntervalMs);
        let node = node_id(&db);
        match write_beat(&conn, &node, interval, position.clone()) {
            // In WAL mode the caller's own statement holds a read snapshot;
            // when the background beat committed after it began, writing in
            // that snapshot fails at once with SQLITE_BUSY(_SNAPSHOT) and no
            // busy handler can help. A connection of our own is not bound
            // to that snapshot.
            Err(e) if is_busy(&e) => with_db(&db, |c| write_beat(c, &node, interval, position)),
            r => r,
        }
        .map_err(|e| err(format!("insights_heartbeat: {e}")))
    })?;

    conn.create_scalar_function("insights_sync_report", -1, direct, |ctx| {
        const F: &str = "insights_sync_report";
        check_args(ctx, F, 3, 6)?;
        let peer = match ctx.get_raw(0) {
            ValueRef::Text(t) => std::str::from_utf8(t)
                .map_err(|_| err(format!("{F}: peer is not valid UTF-8")))?
                .to_string(),
            _ => return Err(err(format!("{F}: peer must be text"))),
        };
        if !valid_name(&peer) {
            return Err(err(format!(
                "{F}: peer must be 1 to {MAX_NAME_BYTES} bytes of text without control characters or surrounding spaces"
            )));
        }
        let local = int_arg(ctx, F, 1, "local_position")?;
        let remote = int_arg(ctx, F, 2, "remote_position")?;
        let pending = if ctx.len() > 3 {
            int_arg(ctx, F, 3, "pending_changes")?
        } else {
            None
        };
        if pending.is_some_and(|p| p < 0) {
            return Err(err(format!("{F}: pending_changes must not be negative")));
        }
        let source = if ctx.len() > 4 {
            text_arg_opt(ctx, F, 4, "source")?.unwrap_or_else(|| "report".into())
        } else {
            "report".into()
        };
        let source = source.to_ascii_lowercase();
        if !valid_name(&source) || source.len() > 64 {
            return Err(err(format!(
                "{F}: source must be 1 to 64 bytes of text without control characters"
            )));
        }
        if RESERVED_SOURCES.contains(&source.as_str()) {
            return Err(err(format!(
                "{F}: source '{source}' is read from the engine itself and cannot be reported"
            )));
        }
        let detail = if ctx.len() > 5 {
            text_arg_opt(ctx, F, 5, "detail")?
        } else {
            None
        };
        if let Some(d) = &detail {
            if d.len() > MAX_DETAIL_BYTES {
                return Err(err(format!(
                    "{F}: detail is longer than {MAX_DETAIL_BYTES} bytes"
                )));
            }
        }
        if local.is_none() && remote.is_none() && pending.is_none() {
            return Err(err(format!(
                "{F}: give at least one of local_position, remote_position, pending_changes"
            )));
        }
        let db = registry().db(&caller_db(ctx)?);
        let now = clock::unix_ms_now();
        record_report(
            &db,
            Report {
                peer: peer.clone(),
                source: source.clone(),
                local,
                remote,
                pending,
                detail,
                at_ms: now,
            },
        )
        .map_err(|e| err(format!("{F}: stored in memory only; the store failed: {e}")))?;
        // the status as judged now
        let row = rows_for(&db, now)
            .into_iter()
            .find(|r| r.peer == peer && r.source == source);
        Ok(row
            .map(|r| r.status.as_str().to_string())
            .unwrap_or_else(|| "unknown".into()))
    })?;
    Ok(())
}

// ------------------------------------------------------- text config keys

/// Text-valued `insights_config` keys handled here: `node_id`
/// (process-wide), `sync_role`, `libsql_primary_url`, `litestream_replica`
/// (per database, for the calling connection's database). Returns None for
/// other keys. Called by `insights_config` before the numeric keys.
pub fn config_key(ctx: &Context<'_>, name: &str) -> Option<Result<String>> {
    let key = name.to_ascii_lowercase();
    if key == "heartbeat_interval_ms" && ctx.len() == 2 {
        ensure_heartbeat_thread();
        return None;
    }
    if !TEXT_KEYS.contains(&key.as_str()) {
        return None;
    }
    Some(config_text(ctx, &key))
}

/// The text keys `config_key` handles.
pub const TEXT_KEYS: &[&str] = &[
    "node_id",
    "sync_role",
    "libsql_primary_url",
    "litestream_replica",
];

fn config_text(ctx: &Context<'_>, key: &str) -> Result<String> {
    const F: &str = "insights_config";
    let db = caller_db(ctx)?;
    if ctx.len() == 2 {
        let v = text_arg_opt(ctx, F, 1, key)?;
        let v = v.map(|s| s.trim().to_string());
        let reset = v
            .as_deref()
            .is_none_or(|s| s.is_empty() || s.eq_ignore_ascii_case("default"));
        match key {
            "node_id" => {
                let v = if reset {
                    None
                } else {
                    let s = v.unwrap_or_default();
                    if !valid_name(&s) {
                        return Err(err(format!(
                            "{F}: node_id must be 1 to {MAX_NAME_BYTES} bytes of text without control characters"
                        )));
                    }
                    Some(s)
                };
                *lock(&NODE_ID) = v;
            }
            "sync_role" => {
                let r = if reset {
                    None
                } else {
                    let s = v.unwrap_or_default().to_ascii_lowercase();
                    if s == "auto" {
                        None
                    } else if ["writer", "replica", "peer"].contains(&s.as_str()) {
                        Some(s)
                    } else {
                        return Err(err(format!(
                            "{F}: sync_role must be 'auto', 'writer', 'replica' or 'peer'"
                        )));
                    }
                };
                lock(confs()).entry(db.clone()).or_default().role = r;
            }
            "libsql_primary_url" => {
                let u = if reset || v.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("off")) {
                    None
                } else {
                    let s = v.unwrap_or_default();
                    if crate::sync_libsql::parse_http_url(&s).is_none() {
                        return Err(err(format!(
                            "{F}: libsql_primary_url must be http://host:port/path of the primary's metrics endpoint"
                        )));
                    }
                    Some(s)
                };
                lock(confs())
                    .entry(db.clone())
                    .or_default()
                    .libsql_primary_url = u;
            }
            "litestream_replica" => {
                let p = if reset || v.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("off")) {
                    None
                } else {
                    let s = v.unwrap_or_default();
                    let s = s.strip_prefix("file://").unwrap_or(&s).to_string();
                    if !Path::new(&s).is_dir() {
                        return Err(err(format!(
                            "{F}: litestream_replica must be an existing directory (a file replica's path)"
                        )));
                    }
                    Some(s)
                };
                lock(confs())
                    .entry(db.clone())
                    .or_default()
                    .litestream_replica = p;
            }
            _ => {}
        }
    }
    Ok(match key {
        "node_id" => node_id(&db),
        "sync_role" => {
            let crsqlite =
                is_file_db(&db) && with_db(&db, |c| tables(c).map(|t| t.crsqlite)).unwrap_or(false);
            role(&db, crsqlite)
        }
        "libsql_primary_url" => libsql_primary_url(&db).unwrap_or_else(|| "off".into()),
        "litestream_replica" => litestream_replica(&db).unwrap_or_else(|| "off".into()),
        _ => String::new(),
    })
}

/// Forget per-peer observations (tests; `insights_reset()` does not call it:
/// lag timelines are not statistics).
pub fn clear_tracks() {
    lock(tracks()).clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_lag_and_lower_bound() {
        let mut t = Track::default();
        t.observe_lead(&None, 10, 1_000);
        t.observe_lead(&None, 12, 2_000);
        t.observe_lead(&None, 15, 3_000);
        assert_eq!(t.lag_seconds(15, 4_000), Some((0.0, false)));
        assert_eq!(t.lag_seconds(12, 4_000), Some((1.0, false)));
        assert_eq!(t.lag_seconds(11, 4_000), Some((2.0, false)));
        // behind the first observation: a lower bound
        assert_eq!(t.lag_seconds(5, 4_000), Some((3.0, true)));
        // a new epoch starts again
        t.observe_lead(&Some("g2".into()), 3, 5_000);
        assert_eq!(t.timeline.len(), 1);
    }

    #[test]
    fn timeline_is_bounded() {
        let mut t = Track::default();
        for i in 0..5_000 {
            t.observe_lead(&None, i, i);
        }
        assert!(t.timeline.len() <= MAX_TIMELINE);
        assert_eq!(t.timeline.back(), Some(&(4_999, 4_999)));
        assert_eq!(t.timeline.front(), Some(&(0, 0)));
    }

    #[test]
    fn seq_gaps_counted() {
        let mut t = Track::default();
        t.observe_trail(1, 0);
        t.observe_trail(2, 1);
        t.observe_trail(5, 2);
        assert_eq!(t.seq_gaps, 2);
    }

    fn beat(node: &str, seq: i64, ms: i64, iv: i64) -> Beat {
        Beat {
            node: node.into(),
            seq,
            beat_at: clock::iso_ms(ms),
            beat_ms: ms,
            interval_ms: iv,
            position: None,
            position_source: None,
        }
    }

    #[test]
    fn heartbeat_status() {
        clear_tracks();
        let now = 1_000_000;
        let beats = [beat("a", 7, now - 2_500, 1_000), beat("me", 3, now, 1_000)];
        let obs = heartbeat_obs(&beats, "me", now);
        assert_eq!(obs.len(), 1);
        assert_eq!(obs[0].lag_positions, Some(2));
        let row = finalize("db-hb", "me", "replica", obs[0].clone(), now);
        assert_eq!(row.lag_seconds, Some(2.5));
        assert_eq!(row.status, Status::UpToDate); // default lag limit 5 s
        let old = heartbeat_obs(&[beat("a", 7, now - 600_000, 1_000)], "me", now);
        let row = finalize("db-hb", "me", "replica", old[0].clone(), now);
        assert_eq!(row.status, Status::Stale);
    }

    #[test]
    fn report_lag_direction() {
        clear_tracks();
        let now = 5_000_000;
        let r = Report {
            peer: "p".into(),
            source: "report".into(),
            local: Some(10),
            remote: Some(4),
            pending: Some(6),
            detail: Some(r#"{"lag_seconds": 1.5}"#.into()),
            at_ms: now - 10,
        };
        let row = finalize("db-r", "me", "writer", report_obs(&r), now);
        assert_eq!(row.lag_positions, Some(6));
        assert_eq!(row.lag_seconds, Some(1.5));
        assert_eq!(row.status, Status::Lagging);
        assert_eq!(row.detail["ahead"], "local");
        let old = Report {
            at_ms: now - 10_000_000,
            ..r
        };
        let row = finalize("db-r2", "me", "writer", report_obs(&old), now);
        assert_eq!(row.status, Status::Stale);
    }

    #[test]
    fn positional_up_to_date_when_caught_up() {
        clear_tracks();
        let mut o = Obs::new("libsql", "primary", Kind::Positional);
        o.local = Some(Pos::Int(10));
        o.remote = Some(Pos::Int(10));
        o.lag_positions = Some(0);
        o.lead_ord = Some(10);
        o.trail_ord = Some(10);
        let row = finalize("db-p", "me", "replica", o.clone(), 1_000);
        assert_eq!(row.status, Status::UpToDate);
        assert_eq!(row.lag_seconds, Some(0.0));
        o.remote = Some(Pos::Int(13));
        o.lead_ord = Some(13);
        o.lag_positions = Some(3);
        let row = finalize("db-p", "me", "replica", o.clone(), 3_000);
        assert_eq!(row.status, Status::Lagging);
        assert_eq!(row.lag_seconds, Some(0.0)); // first seen ahead just now
        let row = finalize("db-p", "me", "replica", o, 4_500);
        assert_eq!(row.lag_seconds, Some(1.5));
    }
}
