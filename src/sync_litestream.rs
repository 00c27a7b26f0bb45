//! Litestream source (0.3.x layout): how far the replica is behind the WAL
//! that Litestream has taken from this database.
//!
//! Litestream's local state, next to the database (`.<db>-litestream/`):
//! - `generation`: the current generation name (16 hex digits);
//! - `generations/<gen>/wal/<index:08x>.wal`: shadow WAL files; the last one's
//!   size is the local position's offset. Position text as Litestream logs
//!   it: `<generation>/<index:08x>:<offset>`.
//!
//! A file replica (`insights_config('litestream_replica', '<replica dir>')`)
//! stores `generations/<gen>/wal/<index:08x>_<offset:08x>.wal.lz4`
//! segments; the replica's position is the last segment's offset plus its
//! decompressed length (read from the LZ4 frame). lag_positions is in WAL
//! bytes (across shadow WAL indexes while their files are still there).
//! Replicas in object storage are not read (use heartbeats restored from a
//! backup, or reports).

use crate::sync::{Kind, Obs, Pos};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// A position: generation, WAL index, byte offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LsPos {
    pub generation: String,
    pub index: u32,
    pub offset: u64,
}

impl LsPos {
    pub fn text(&self) -> String {
        format!("{}/{:08x}:{}", self.generation, self.index, self.offset)
    }
    /// Orderable within a generation.
    pub fn ord(&self) -> i64 {
        ((self.index as i64) << 32) | (self.offset.min(u32::MAX as u64) as i64)
    }
}

pub fn meta_dir(db: &str) -> Option<PathBuf> {
    let p = Path::new(db);
    let name = p.file_name()?.to_string_lossy().into_owned();
    let d = p.parent()?.join(format!(".{name}-litestream"));
    d.is_dir().then_some(d)
}

fn hex_index(name: &str) -> Option<u32> {
    (name.len() == 8)
        .then(|| u32::from_str_radix(name, 16).ok())
        .flatten()
}

/// Shadow WAL files of a generation: (index, size), sorted.
fn shadow_wals(meta: &Path, generation: &str) -> Vec<(u32, u64)> {
    let dir = meta.join("generations").join(generation).join("wal");
    let mut v: Vec<(u32, u64)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let idx = hex_index(n.strip_suffix(".wal")?)?;
            Some((idx, e.metadata().ok()?.len()))
        })
        .collect();
    v.sort();
    v
}

/// Shadow WAL files: (index, size in bytes).
pub type Wals = Vec<(u32, u64)>;

/// Litestream's local position (last shadow WAL file and its size).
pub fn local_pos(db: &str) -> Option<Result<(LsPos, Wals), String>> {
    let meta = meta_dir(db)?;
    let gen_file = meta.join("generation");
    let generation = match std::fs::read_to_string(&gen_file) {
        Ok(g) => g.trim().to_string(),
        Err(e) => return Some(Err(format!("{}: {e}", gen_file.display()))),
    };
    if generation.len() != 16 || !generation.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(Err(format!(
            "{}: not a generation name",
            gen_file.display()
        )));
    }
    let wals = shadow_wals(&meta, &generation);
    let (index, offset) = wals.last().copied().unwrap_or((0, 0));
    Some(Ok((
        LsPos {
            generation,
            index,
            offset,
        },
        wals,
    )))
}

fn mtime_ms(p: &Path) -> Option<i64> {
    let m = std::fs::metadata(p).ok()?.modified().ok()?;
    Some(m.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64)
}

/// A file replica's position for `generation` and the time its last segment
/// was written; None when the replica has nothing of that generation.
pub fn replica_pos(
    replica: &Path,
    generation: &str,
) -> Result<Option<(LsPos, Option<i64>)>, String> {
    let gdir = replica.join("generations").join(generation);
    if !gdir.is_dir() {
        return Ok(None);
    }
    let mut best: Option<(u32, u64, PathBuf)> = None;
    for e in std::fs::read_dir(gdir.join("wal"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = n.strip_suffix(".wal.lz4") else {
            continue;
        };
        let Some((i, o)) = stem.split_once('_') else {
            continue;
        };
        let (Some(i), Ok(o)) = (hex_index(i), u64::from_str_radix(o, 16)) else {
            continue;
        };
        if best.as_ref().is_none_or(|(bi, bo, _)| (i, o) > (*bi, *bo)) {
            best = Some((i, o, e.path()));
        }
    }
    if let Some((index, off, path)) = best {
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let len = lz4_decoded_len(&bytes)
            .ok_or_else(|| format!("{}: not an LZ4 frame", path.display()))?;
        return Ok(Some((
            LsPos {
                generation: generation.into(),
                index,
                offset: off + len,
            },
            mtime_ms(&path),
        )));
    }
    // only a snapshot so far: position = start of its index
    let mut snap: Option<(u32, PathBuf)> = None;
    for e in std::fs::read_dir(gdir.join("snapshots"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let n = e.file_name().to_string_lossy().into_owned();
        if let Some(i) = n.strip_suffix(".snapshot.lz4").and_then(hex_index) {
            if snap.as_ref().is_none_or(|(b, _)| i > *b) {
                snap = Some((i, e.path()));
            }
        }
    }
    Ok(snap.map(|(index, p)| {
        (
            LsPos {
                generation: generation.into(),
                index,
                offset: 0,
            },
            mtime_ms(&p),
        )
    }))
}

/// Decompressed length of LZ4 frame(s) without decompressing: the content
/// size field when present, else the sum of literal and match lengths of
/// every block.
pub fn lz4_decoded_len(b: &[u8]) -> Option<u64> {
    let mut p = 0usize;
    let mut total = 0u64;
    let rd32 = |b: &[u8], p: usize| -> Option<u32> {
        Some(u32::from_le_bytes(b.get(p..p + 4)?.try_into().ok()?))
    };
    let mut frames = 0;
    while p < b.len() {
        let magic = rd32(b, p)?;
        p += 4;
        if (0x184D2A50..=0x184D2A5F).contains(&magic) {
            // skippable frame
            let n = rd32(b, p)? as usize;
            p += 4 + n;
            continue;
        }
        if magic != 0x184D2204 {
            return None;
        }
        frames += 1;
        let flg = *b.get(p)?;
        p += 2; // FLG, BD
        if flg >> 6 != 1 {
            return None;
        }
        let block_checksum = flg & 0x10 != 0;
        let content_size = flg & 0x08 != 0;
        let content_checksum = flg & 0x04 != 0;
        let dict = flg & 0x01 != 0;
        let mut declared = None;
        if content_size {
            declared = Some(u64::from_le_bytes(b.get(p..p + 8)?.try_into().ok()?));
            p += 8;
        }
        if dict {
            p += 4;
        }
        p += 1; // header checksum
        let mut counted = 0u64;
        loop {
            let sz = rd32(b, p)?;
            p += 4;
            if sz == 0 {
                break;
            }
            let n = (sz & 0x7FFF_FFFF) as usize;
            let block = b.get(p..p + n)?;
            counted += if sz & 0x8000_0000 != 0 {
                n as u64
            } else {
                lz4_block_len(block)?
            };
            p += n;
            if block_checksum {
                p += 4;
            }
        }
        if content_checksum {
            p += 4;
        }
        total += declared.unwrap_or(counted);
    }
    (frames > 0).then_some(total)
}

/// Decompressed length of one LZ4 block (sequences: token, literals,
/// offset, match length; the last sequence has literals only).
fn lz4_block_len(b: &[u8]) -> Option<u64> {
    let mut p = 0usize;
    let mut n = 0u64;
    while p < b.len() {
        let token = b[p];
        p += 1;
        let mut lit = (token >> 4) as u64;
        if lit == 15 {
            loop {
                let x = *b.get(p)?;
                p += 1;
                lit += x as u64;
                if x != 255 {
                    break;
                }
            }
        }
        p = p.checked_add(lit as usize)?;
        if p > b.len() {
            return None;
        }
        n += lit;
        if p == b.len() {
            break; // last sequence
        }
        p += 2; // match offset
        let mut ml = (token & 15) as u64;
        if ml == 15 {
            loop {
                let x = *b.get(p)?;
                p += 1;
                ml += x as u64;
                if x != 255 {
                    break;
                }
            }
        }
        n += ml + 4;
    }
    Some(n)
}

/// WAL bytes between the replica and the local position; None when a
/// shadow WAL file in between is gone.
pub fn lag_bytes(local: &LsPos, replica: &LsPos, wals: &[(u32, u64)]) -> Option<i64> {
    if replica.index > local.index
        || (replica.index == local.index && replica.offset >= local.offset)
    {
        return Some(0);
    }
    if replica.index == local.index {
        return Some((local.offset - replica.offset) as i64);
    }
    let mut n: i64 = 0;
    for idx in replica.index..local.index {
        let size = wals.iter().find(|(i, _)| *i == idx)?.1 as i64;
        n += if idx == replica.index {
            (size - replica.offset as i64).max(0)
        } else {
            size
        };
    }
    Some(n + local.offset as i64)
}

/// The row for a database Litestream replicates (none otherwise).
pub fn observe(db: &str) -> Vec<Obs> {
    let Some(local) = local_pos(db) else {
        return Vec::new();
    };
    let replica = crate::sync::litestream_replica(db);
    let peer = replica.clone().unwrap_or_else(|| "replica".into());
    let (local, wals) = match local {
        Ok(l) => l,
        Err(e) => return vec![Obs::failed("litestream", &peer, Kind::Positional, e)],
    };
    let mut o = Obs::new("litestream", &peer, Kind::Positional);
    o.role = Some("writer".into());
    o.local = Some(Pos::Text(local.text()));
    o.lead_ord = Some(local.ord());
    o.epoch = Some(local.generation.clone());
    o.detail
        .insert("generation".into(), json!(local.generation.clone()));
    o.detail.insert("wal_index".into(), json!(local.index));
    o.detail.insert("wal_offset".into(), json!(local.offset));
    let Some(rdir) = replica else {
        o.detail.insert(
            "note".into(),
            json!("replica position unknown: set insights_config('litestream_replica', '<file replica directory>')"),
        );
        return vec![o];
    };
    match replica_pos(Path::new(&rdir), &local.generation) {
        Err(e) => {
            o.error = Some(e);
        }
        Ok(None) => {
            // nothing of this generation replicated yet: everything is behind
            o.trail_ord = Some(0);
            o.lag_positions = lag_bytes(
                &local,
                &LsPos {
                    generation: local.generation.clone(),
                    index: wals.first().map(|w| w.0).unwrap_or(0),
                    offset: 0,
                },
                &wals,
            );
            o.behind = Some(true);
            o.detail.insert(
                "note".into(),
                json!("the replica has no segment of this generation yet"),
            );
        }
        Ok(Some((rp, mtime))) => {
            o.remote = Some(Pos::Text(rp.text()));
            o.trail_ord = Some(rp.ord());
            o.last_seen_ms = mtime;
            o.lag_positions = lag_bytes(&local, &rp, &wals);
            if o.lag_positions.is_none() {
                o.behind = Some(rp.ord() < local.ord());
            }
            o.detail.insert("replica_index".into(), json!(rp.index));
            o.detail.insert("replica_offset".into(), json!(rp.offset));
        }
    }
    vec![o]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lz4_lengths() {
        // frame with one uncompressed block of 5 bytes, no content size
        let mut f = vec![0x04, 0x22, 0x4D, 0x18, 0x40, 0x40, 0x00];
        f.extend_from_slice(&(0x8000_0005u32).to_le_bytes());
        f.extend_from_slice(b"hello");
        f.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(lz4_decoded_len(&f), Some(5));
        // compressed block: "aaaaaaaa" = literal 'a' + match(offset 1, len 7)
        // token: lit 1, match 7-4=3 -> 0x13; then 'a', offset 1; final
        // sequence needs >= 5 literals: token 0x50 "bbbbb"
        let block = [0x13, b'a', 0x01, 0x00, 0x50, b'b', b'b', b'b', b'b', b'b'];
        assert_eq!(lz4_block_len(&block), Some(13));
        let mut f2 = vec![0x04, 0x22, 0x4D, 0x18, 0x40, 0x40, 0x00];
        f2.extend_from_slice(&(block.len() as u32).to_le_bytes());
        f2.extend_from_slice(&block);
        f2.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(lz4_decoded_len(&f2), Some(13));
        // declared content size wins
        let mut f3 = vec![0x04, 0x22, 0x4D, 0x18, 0x48, 0x40];
        f3.extend_from_slice(&99u64.to_le_bytes());
        f3.push(0);
        f3.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(lz4_decoded_len(&f3), Some(99));
        assert_eq!(lz4_decoded_len(b"nope"), None);
    }

    #[test]
    fn lag_across_indexes() {
        let g = "0123456789abcdef".to_string();
        let p = |index, offset| LsPos {
            generation: g.clone(),
            index,
            offset,
        };
        let wals = [(0u32, 1000u64), (1, 500), (2, 300)];
        assert_eq!(lag_bytes(&p(2, 300), &p(2, 100), &wals), Some(200));
        assert_eq!(
            lag_bytes(&p(2, 300), &p(0, 400), &wals),
            Some(600 + 500 + 300)
        );
        assert_eq!(lag_bytes(&p(2, 300), &p(2, 300), &wals), Some(0));
        assert_eq!(lag_bytes(&p(2, 300), &p(0, 400), &wals[1..]), None);
        assert_eq!(p(1, 32).text(), "0123456789abcdef/00000001:32");
    }
}
