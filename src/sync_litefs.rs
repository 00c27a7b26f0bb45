//! LiteFS source: the replication position LiteFS exposes next to each
//! database in its FUSE mount, and whether this node is the primary.
//!
//! Documented formats (LiteFS docs, "Tracking replication position" and
//! "Primary"):
//! - `<mount>/<db>-pos`: `TXID/CHECKSUM\n`, each a 16-digit hex `uint64`
//!   (e.g. `00000000002df417/ce552e44f23fbbdd`). `.<db>-pos` is accepted too.
//! - `<mount>/.primary`: present only on replicas; holds the primary's
//!   hostname.
//!
//! A replica's row: peer = the primary's hostname, local_position = its
//! TXID; the primary's TXID (remote_position, lag in transactions) comes
//! from `insights_sync_report(primary, local, primary_txid, NULL, 'litefs')`
//! (or read the lag in seconds from heartbeats, which replicate through
//! LiteFS like any write). The primary shows its own TXID (peer = itself)
//! and, per replica that reported its TXID to it, one row with the lag.

use crate::sync::{Kind, Obs, Pos, Report};
use serde_json::json;
use std::path::{Path, PathBuf};

/// A parsed position file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LitefsPos {
    pub txid: u64,
    pub checksum: u64,
}

pub fn parse_pos(text: &str) -> Option<LitefsPos> {
    let t = text.trim();
    let (a, b) = t.split_once('/')?;
    if a.len() != 16 || b.len() != 16 {
        return None;
    }
    Some(LitefsPos {
        txid: u64::from_str_radix(a, 16).ok()?,
        checksum: u64::from_str_radix(b, 16).ok()?,
    })
}

fn split(db: &str) -> Option<(PathBuf, String)> {
    let p = Path::new(db);
    let dir = p.parent()?.to_path_buf();
    let name = p.file_name()?.to_string_lossy().into_owned();
    Some((dir, name))
}

/// The position file of `db`, if LiteFS serves it.
pub fn pos_file(db: &str) -> Option<PathBuf> {
    let (dir, name) = split(db)?;
    [format!("{name}-pos"), format!(".{name}-pos")]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

pub fn read_pos(db: &str) -> Option<Result<LitefsPos, String>> {
    let f = pos_file(db)?;
    Some(
        std::fs::read_to_string(&f)
            .map_err(|e| format!("{}: {e}", f.display()))
            .and_then(|t| {
                parse_pos(&t).ok_or_else(|| format!("{}: not TXID/CHECKSUM", f.display()))
            }),
    )
}

/// The primary's hostname when this node is a LiteFS replica.
pub fn primary_of(db: &str) -> Option<String> {
    let (dir, _) = split(db)?;
    let f = dir.join(".primary");
    f.is_file().then(|| {
        std::fs::read_to_string(&f)
            .unwrap_or_default()
            .trim()
            .to_string()
    })
}

pub fn is_replica(db: &str) -> bool {
    pos_file(db).is_some() && primary_of(db).is_some()
}

pub fn local_txid(db: &str) -> Option<u64> {
    read_pos(db)?.ok().map(|p| p.txid)
}

fn as_i64(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// Rows for a database in a LiteFS mount (none elsewhere).
pub fn observe(db: &str, node: &str, reports: &[Report]) -> Vec<Obs> {
    let Some(pos) = read_pos(db) else {
        return Vec::new();
    };
    let primary = primary_of(db);
    let pos = match pos {
        Ok(p) => p,
        Err(e) => {
            let peer = primary.unwrap_or_else(|| node.to_string());
            return vec![Obs::failed("litefs", &peer, Kind::Positional, e)];
        }
    };
    let txid = as_i64(pos.txid);
    let base = |peer: &str, role: &str| {
        let mut o = Obs::new("litefs", peer, Kind::Positional);
        o.role = Some(role.into());
        o.local = Some(Pos::Int(txid));
        o.detail
            .insert("txid".into(), json!(format!("{:016x}", pos.txid)));
        o.detail
            .insert("checksum".into(), json!(format!("{:016x}", pos.checksum)));
        o
    };
    match primary {
        Some(host) => {
            let peer = if host.is_empty() {
                "primary".into()
            } else {
                host
            };
            let mut o = base(&peer, "replica");
            o.trail_ord = Some(txid);
            match reports.iter().max_by_key(|r| r.at_ms) {
                Some(r) if r.remote.is_some() => {
                    let remote = r.remote.unwrap_or(0);
                    o.remote = Some(Pos::Int(remote));
                    o.lead_ord = Some(remote);
                    o.lag_positions = Some((remote - txid).max(0));
                    o.detail.insert("remote_from".into(), json!("report"));
                    o.detail
                        .insert("reported_at".into(), json!(crate::clock::iso_ms(r.at_ms)));
                }
                _ => {
                    o.detail.insert(
                        "note".into(),
                        json!("primary TXID unknown: report it with insights_sync_report(primary, local, primary_txid, NULL, 'litefs') or use heartbeats"),
                    );
                }
            }
            vec![o]
        }
        None => {
            // this node is the primary
            let replicas: Vec<&Report> = reports.iter().filter(|r| r.remote.is_some()).collect();
            if replicas.is_empty() {
                let mut o = base(node, "writer");
                o.remote = Some(Pos::Int(txid));
                o.lag_positions = Some(0);
                o.lead_ord = Some(txid);
                o.trail_ord = Some(txid);
                o.detail
                    .insert("note".into(), json!("this node is the LiteFS primary"));
                return vec![o];
            }
            replicas
                .into_iter()
                .map(|r| {
                    let remote = r.remote.unwrap_or(0);
                    let mut o = base(&r.peer, "writer");
                    o.remote = Some(Pos::Int(remote));
                    o.lead_ord = Some(txid);
                    o.trail_ord = Some(remote);
                    o.lag_positions = Some((txid - remote).max(0));
                    o.last_seen_ms = Some(r.at_ms);
                    o.detail.insert("remote_from".into(), json!("report"));
                    o
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example() {
        let p = parse_pos("00000000002df417/ce552e44f23fbbdd\n").unwrap();
        assert_eq!(p.txid, 0x2df417);
        assert_eq!(p.checksum, 0xce552e44f23fbbdd);
        assert!(parse_pos("2df417/ce552e44f23fbbdd").is_none());
        assert!(parse_pos("").is_none());
        assert!(parse_pos("000000000000000g/0000000000000000").is_none());
    }

    #[test]
    fn replica_and_primary_rows() {
        let dir = std::env::temp_dir().join(format!("insights-litefs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("app.db");
        std::fs::write(&db, b"").unwrap();
        std::fs::write(
            dir.join("app.db-pos"),
            "0000000000000005/00000000000000aa\n",
        )
        .unwrap();
        let dbs = db.to_str().unwrap();
        // primary: no .primary file
        let rows = observe(dbs, "me", &[]);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].local, Some(Pos::Int(5)));
        assert_eq!(rows[0].role.as_deref(), Some("writer"));
        std::fs::write(dir.join(".primary"), "host-a\n").unwrap();
        assert!(is_replica(dbs));
        let rep = Report {
            peer: "host-a".into(),
            source: "litefs".into(),
            local: Some(5),
            remote: Some(9),
            pending: None,
            detail: None,
            at_ms: 1,
        };
        let rows = observe(dbs, "me", &[rep]);
        assert_eq!(rows[0].peer, "host-a");
        assert_eq!(rows[0].lag_positions, Some(4));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
