//! cr-sqlite source: per tracked peer, this database's `crsql_db_version()`
//! against the version last sent to (acknowledged by) that peer, and the
//! exact number of changes not yet sent.
//!
//! Read from cr-sqlite's own tables through our own connection (cr-sqlite
//! need not be loaded there, so the background sampler can read it too):
//! - `crsql_tracked_peers(site_id, version, seq, tag, event)`: event 1 =
//!   SEND (version = our db_version last sent to that peer), event 0 =
//!   RECEIVE (the peer's db_version we last received); tag 0 = whole
//!   database (other tags are subsets and are shown in detail only).
//! - `crsql_db_version()` = the largest `db_version` of every
//!   `<table>__crsql_clock` table and `crsql_master.pre_compact_dbversion`
//!   (cr-sqlite 0.16 computes it exactly so).
//! - Changes not yet sent to peer P with sent version V = the rows of
//!   `crsql_changes WHERE db_version > V AND site_id IS NOT P` (a sync layer
//!   does not echo a peer's own changes back to it); `crsql_changes` is the
//!   union of the clock tables joined to their `__crsql_pks` tables and to
//!   `crsql_site_id`, which is what is counted here.
//!
//! A peer with only a RECEIVE row has no sent version: its row shows the
//! local version, no remote position and status `unknown`.

use crate::sync::{Kind, Obs, Pos};
use rusqlite::{Connection, OptionalExtension, Result};
use serde_json::json;
use std::collections::BTreeMap;

/// Names of the clock tables (as cr-sqlite's own CLOCK_TABLES_SELECT).
fn clock_tables(c: &Connection) -> Result<Vec<String>> {
    let mut st = c.prepare(
        "SELECT tbl_name FROM sqlite_master WHERE type='table' AND tbl_name LIKE '%__crsql_clock'",
    )?;
    let rows = st.query_map([], |r| r.get::<_, String>(0))?;
    rows.collect()
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `crsql_db_version()` read from storage.
pub fn db_version(c: &Connection) -> Result<i64> {
    let mut v: i64 = 0;
    for t in clock_tables(c)? {
        let m: Option<i64> = c.query_row(
            &format!("SELECT max(db_version) FROM {}", quote(&t)),
            [],
            |r| r.get(0),
        )?;
        v = v.max(m.unwrap_or(0));
    }
    let pre: Option<i64> = c
        .query_row(
            "SELECT CAST(value AS INTEGER) FROM crsql_master WHERE key = 'pre_compact_dbversion'",
            [],
            |r| r.get(0),
        )
        .optional()
        .unwrap_or(None);
    Ok(v.max(pre.unwrap_or(0)))
}

/// Changes with db_version > `after` not originating at `peer`: (count, min
/// db_version) — exactly `SELECT count(*), min(db_version) FROM crsql_changes
/// WHERE db_version > ?after AND site_id IS NOT ?peer`.
pub fn pending(c: &Connection, after: i64, peer: &[u8]) -> Result<(i64, Option<i64>)> {
    let mut n = 0;
    let mut first: Option<i64> = None;
    for t in clock_tables(c)? {
        let base = &t[..t.len() - "__crsql_clock".len()];
        let pks = format!("{base}__crsql_pks");
        let sql = format!(
            "SELECT count(*), min(c.db_version) FROM {} AS c JOIN {} AS p ON c.key = p.__crsql_key \
             LEFT JOIN crsql_site_id AS s ON c.site_id = s.ordinal \
             WHERE c.db_version > ?1 AND s.site_id IS NOT ?2",
            quote(&t),
            quote(&pks)
        );
        let (k, m): (i64, Option<i64>) =
            c.query_row(&sql, rusqlite::params![after, peer], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        n += k;
        if let Some(m) = m {
            first = Some(first.map_or(m, |f: i64| f.min(m)));
        }
    }
    Ok((n, first))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Default)]
struct Peer {
    sent: Option<(i64, i64)>,
    received: Option<(i64, i64)>,
    other_tags: Vec<serde_json::Value>,
}

/// One observation per tracked peer.
pub fn observe(c: &Connection) -> Vec<Obs> {
    match observe_inner(c) {
        Ok(v) => v,
        Err(e) => vec![Obs::failed("crsqlite", "", Kind::Positional, e.to_string())],
    }
}

fn observe_inner(c: &Connection) -> Result<Vec<Obs>> {
    let local_site: Option<Vec<u8>> = c
        .query_row(
            "SELECT site_id FROM crsql_site_id WHERE ordinal = 0",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let version = db_version(c)?;
    let mut peers: BTreeMap<Vec<u8>, Peer> = BTreeMap::new();
    {
        let mut st = c.prepare(
            "SELECT site_id, version, seq, tag, event FROM crsql_tracked_peers ORDER BY site_id",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let site: Vec<u8> = r.get(0)?;
            let v: i64 = r.get(1)?;
            let seq: i64 = r.get::<_, Option<i64>>(2)?.unwrap_or(0);
            let tag: Option<i64> = r.get(3)?;
            let event: Option<i64> = r.get(4)?;
            let p = peers.entry(site).or_default();
            match (tag.unwrap_or(0), event) {
                (0, Some(1)) => p.sent = Some((v, seq)),
                (0, Some(0)) => p.received = Some((v, seq)),
                (tag, event) => p
                    .other_tags
                    .push(json!({"tag": tag, "event": event, "version": v, "seq": seq})),
            }
        }
    }
    let mut out = Vec::new();
    for (site, p) in peers {
        if local_site.as_deref() == Some(site.as_slice()) {
            continue;
        }
        let mut o = Obs::new("crsqlite", &hex(&site), Kind::Positional);
        o.role = Some("peer".into());
        o.local = Some(Pos::Int(version));
        o.lead_ord = Some(version);
        if let Some(s) = &local_site {
            o.detail.insert("local_site_id".into(), json!(hex(s)));
        }
        o.detail.insert("db_version".into(), json!(version));
        if let Some((v, seq)) = p.received {
            o.detail.insert("received_version".into(), json!(v));
            o.detail.insert("received_seq".into(), json!(seq));
        }
        if !p.other_tags.is_empty() {
            o.detail.insert("other_tags".into(), json!(p.other_tags));
        }
        if let Some((sent, seq)) = p.sent {
            let (n, first) = pending(c, sent, &site)?;
            o.remote = Some(Pos::Int(sent));
            o.lag_positions = Some((version - sent).max(0));
            o.pending = Some(n);
            o.behind = Some(n > 0);
            o.progress = Some(sent);
            // lag runs from when the first unsent change's version appeared
            o.trail_ord = Some(match first {
                Some(f) if n > 0 => f - 1,
                _ => version,
            });
            o.detail.insert("sent_version".into(), json!(sent));
            o.detail.insert("sent_seq".into(), json!(seq));
        } else {
            o.detail.insert(
                "note".into(),
                json!("no SEND row for this peer in crsql_tracked_peers: nothing sent yet"),
            );
        }
        out.push(o);
    }
    Ok(out)
}
