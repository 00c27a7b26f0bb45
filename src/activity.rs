//! Activity per tag: who (application, user, route, tenant) runs what.
//!
//! Rules:
//! - Tags come from `insights_tag(key, value)` on a connection and from
//!   sqlcommenter comments on a statement; a statement's own tag wins over the
//!   connection's for the same key.
//! - Every captured statement adds its cost (calls, errors, time, rows) to one
//!   entry per effective (key, value). The entries a statement feeds are
//!   resolved once per (statement, connection tag generation) and cached in
//!   the connection's statement cache: an untagged connection pays one atomic
//!   load per statement, a tagged one a short lock per tag.
//! - Cardinality is bounded: at most `max_tag_values` values per key and
//!   database; further values are counted under `(other)` and in `overflow`.

use crate::config::{self, Key};
use crate::registry::{lock, Agg};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Tags one connection may carry (insights_tag refuses more).
pub const MAX_CONN_TAGS: usize = 16;
/// Longest tag key, bytes.
pub const MAX_TAG_KEY_BYTES: usize = 64;
/// Longest tag value, bytes.
pub const MAX_TAG_VALUE_BYTES: usize = 256;
/// Value under which values beyond `max_tag_values` are counted.
pub const OVERFLOW_VALUE: &str = "(other)";

/// The tags of one connection; `gen` changes whenever they change.
#[derive(Default)]
pub struct ConnTags {
    pub gen: AtomicU64,
    pub set: Mutex<Vec<(String, String)>>,
}

impl ConnTags {
    pub fn get(&self) -> Vec<(String, String)> {
        lock(&self.set).clone()
    }

    /// Set (Some) or remove (None) one tag. Err when the connection already
    /// has MAX_CONN_TAGS tags.
    pub fn put(&self, key: &str, value: Option<&str>) -> Result<(), String> {
        let mut s = lock(&self.set);
        let pos = s.iter().position(|(k, _)| k == key);
        match (pos, value) {
            (Some(i), Some(v)) => s[i].1 = v.to_string(),
            (Some(i), None) => {
                s.remove(i);
            }
            (None, Some(v)) => {
                if s.len() >= MAX_CONN_TAGS {
                    return Err(format!("a connection carries at most {MAX_CONN_TAGS} tags"));
                }
                s.push((key.to_string(), v.to_string()));
                s.sort();
            }
            (None, None) => {}
        }
        drop(s);
        self.gen.fetch_add(1, Ordering::Release);
        Ok(())
    }
}

/// Counters of one (key, value) in one database.
pub struct ActEntry {
    pub key: String,
    pub value: String,
    pub stats: Mutex<Agg>,
}

/// All tag activity of one database.
#[derive(Default)]
pub struct ActRegistry {
    map: Mutex<HashMap<(String, String), Arc<ActEntry>>>,
    per_key: Mutex<HashMap<String, usize>>,
    pub overflow: AtomicU64,
}

impl ActRegistry {
    /// The entries fed by a statement with these effective tags.
    pub fn resolve(&self, tags: &[(String, String)]) -> Vec<Arc<ActEntry>> {
        let max = config::get(Key::MaxTagValues).max(1) as usize;
        let mut out = Vec::with_capacity(tags.len());
        let mut map = lock(&self.map);
        let mut per_key = lock(&self.per_key);
        for (k, v) in tags {
            let id = (k.clone(), v.clone());
            if let Some(e) = map.get(&id) {
                out.push(e.clone());
                continue;
            }
            let n = per_key.entry(k.clone()).or_insert(0);
            let id = if *n >= max {
                self.overflow.fetch_add(1, Ordering::Relaxed);
                (k.clone(), OVERFLOW_VALUE.to_string())
            } else {
                *n += 1;
                id
            };
            let e = map
                .entry(id.clone())
                .or_insert_with(|| {
                    Arc::new(ActEntry {
                        key: id.0.clone(),
                        value: id.1.clone(),
                        stats: Mutex::new(Agg::default()),
                    })
                })
                .clone();
            out.push(e);
        }
        out
    }

    pub fn entries(&self) -> Vec<Arc<ActEntry>> {
        crate::digest::drain();
        let mut v: Vec<_> = lock(&self.map).values().cloned().collect();
        v.sort_by(|a, b| (&a.key, &a.value).cmp(&(&b.key, &b.value)));
        v
    }

    pub fn clear(&self) {
        lock(&self.map).clear();
        lock(&self.per_key).clear();
        self.overflow.store(0, Ordering::Relaxed);
    }
}

/// Effective tags: the connection's, overlaid with the statement's.
pub fn effective(conn: &[(String, String)], stmt: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = conn
        .iter()
        .filter(|(k, _)| !stmt.iter().any(|(sk, _)| sk == k))
        .cloned()
        .collect();
    out.extend(stmt.iter().cloned());
    out.sort();
    out
}

/// Validate a tag key: 1..=64 bytes of [A-Za-z0-9_.-].
pub fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= MAX_TAG_KEY_BYTES
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn statement_tags_override_connection_tags() {
        let e = effective(
            &[t("app", "web"), t("user", "7")],
            &[t("user", "9"), t("route", "/x")],
        );
        assert_eq!(e, vec![t("app", "web"), t("route", "/x"), t("user", "9")]);
    }

    #[test]
    fn cardinality_is_bounded_per_key() {
        let r = ActRegistry::default();
        let max = config::get(Key::MaxTagValues) as usize;
        for i in 0..max + 50 {
            let e = r.resolve(&[t("user", &i.to_string()), t("app", "web")]);
            assert_eq!(e.len(), 2);
        }
        let users = r.entries().into_iter().filter(|e| e.key == "user").count();
        assert_eq!(users, max + 1); // max values + "(other)"
        assert_eq!(r.overflow.load(Ordering::Relaxed), 50);
        // a known value still resolves to itself
        assert_eq!(r.resolve(&[t("user", "3")])[0].value, "3");
    }

    #[test]
    fn conn_tags_put_and_remove() {
        let c = ConnTags::default();
        c.put("user", Some("1")).unwrap();
        c.put("app", Some("x")).unwrap();
        c.put("user", Some("2")).unwrap();
        assert_eq!(c.get(), vec![t("app", "x"), t("user", "2")]);
        c.put("app", None).unwrap();
        assert_eq!(c.get(), vec![t("user", "2")]);
        assert_eq!(c.gen.load(Ordering::Relaxed), 4);
        for i in 0..MAX_CONN_TAGS - 1 {
            c.put(&format!("k{i}"), Some("v")).unwrap();
        }
        assert!(c.put("one_too_many", Some("v")).is_err());
        assert!(valid_key("route.v2-x_y"));
        assert!(!valid_key("bad key"));
        assert!(!valid_key(""));
    }
}
