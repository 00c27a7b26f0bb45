//! Events: the story of a database — schema changes, user_version changes,
//! VACUUM/ANALYZE/REINDEX, migrations written by migration tools, resets,
//! store errors and recoveries, alert transitions.
//!
//! Rules:
//! - Which statements make events is decided once per fingerprint
//!   (`classify_event`, from the normalized text); the hot path only checks
//!   `Meta::event`.
//! - An event is recorded in memory (a ring of `MAX_EVENTS`) and queued for
//!   the database's store; the flusher writes the queue in its transaction.
//!   Nothing here does I/O on the user's statement.
//! - The queue is bounded (`MAX_PENDING_EVENTS`): a store that stays down
//!   drops the oldest and counts them.

use crate::classify::{Classified, Kind};
use crate::clock;
use crate::registry::{lock, DbStats};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Events kept in memory per process (newest kept).
pub const MAX_EVENTS: usize = 1000;
/// Events waiting for the store per database; beyond it the oldest go.
pub const MAX_PENDING_EVENTS: usize = 10_000;

/// Tables written by migration tools, and the tool each belongs to.
/// `schema_migrations` is Rails or golang-migrate (told apart by a `dirty`
/// column when read).
pub const MIGRATION_TABLES: &[(&str, &str)] = &[
    ("schema_migrations", "rails"),
    ("django_migrations", "django"),
    ("alembic_version", "alembic"),
    ("_sqlx_migrations", "sqlx"),
    ("__diesel_schema_migrations", "diesel"),
    ("refinery_schema_history", "refinery"),
    ("_prisma_migrations", "prisma"),
    ("flyway_schema_history", "flyway"),
    ("knex_migrations", "knex"),
];

#[derive(Clone, Debug, Default)]
pub struct EventRecord {
    pub at_unix_ms: i64,
    pub kind: String,
    pub database: String,
    pub pid: u32,
    /// The object concerned (table/index/view/trigger name, tool name...).
    pub object: Option<String>,
    /// Normalized statement that caused it.
    pub statement: Option<String>,
    pub schema_version_before: Option<i64>,
    pub schema_version_after: Option<i64>,
    pub user_version_before: Option<i64>,
    pub user_version_after: Option<i64>,
    /// The actor's tags (connection tags overlaid with sqlcommenter tags).
    pub tags: Option<String>,
    pub detail: String,
}

impl EventRecord {
    pub fn new(database: &str, kind: &str, detail: &str) -> EventRecord {
        EventRecord {
            at_unix_ms: clock::unix_ms_now(),
            kind: kind.into(),
            database: database.into(),
            pid: std::process::id(),
            detail: detail.into(),
            ..Default::default()
        }
    }
}

/// What a statement's successful run records, decided per fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventClass {
    /// CREATE/ALTER/DROP of a table, index, view or trigger.
    SchemaChange {
        verb: &'static str,
        object_type: String,
        object: String,
        schema: Option<String>,
    },
    /// `PRAGMA [schema.]user_version = N`.
    UserVersion { schema: Option<String> },
    /// VACUUM, ANALYZE or REINDEX.
    Maintenance(&'static str),
    /// A write to a migration tool's table.
    MigrationWrite { tool: &'static str, table: String },
}

/// Decide once per fingerprint whether its runs are events.
pub fn classify_event(query: &str, fast: &Classified) -> Option<EventClass> {
    let words: Vec<&str> = query.split(' ').collect();
    let upper = |i: usize| {
        words
            .get(i)
            .map(|w| w.to_ascii_uppercase())
            .unwrap_or_default()
    };
    match fast.kind {
        Kind::Ddl => {
            let verb: &'static str = match upper(0).as_str() {
                "CREATE" => "create",
                "ALTER" => "alter",
                "DROP" => "drop",
                _ => return None,
            };
            let mut i = 1;
            while matches!(
                upper(i).as_str(),
                "UNIQUE" | "TEMP" | "TEMPORARY" | "VIRTUAL"
            ) {
                i += 1;
            }
            let object_type = upper(i).to_ascii_lowercase();
            if !matches!(object_type.as_str(), "table" | "index" | "view" | "trigger") {
                return None;
            }
            i += 1;
            if upper(i) == "IF" {
                i += if upper(i + 1) == "NOT" { 3 } else { 2 };
            }
            let raw = name_at(&words[i.min(words.len())..]);
            let (schema, object) = split_schema(&raw);
            Some(EventClass::SchemaChange {
                verb,
                object_type,
                object,
                schema,
            })
        }
        Kind::Pragma => {
            let name = words.get(1).copied().unwrap_or("");
            let (schema, pragma) = split_schema(name);
            let assigns = words.get(2) == Some(&"=") || pragma.contains('(');
            if pragma.eq_ignore_ascii_case("user_version") && assigns {
                Some(EventClass::UserVersion { schema })
            } else if let Some(p) = pragma.strip_prefix("user_version(") {
                let _ = p;
                Some(EventClass::UserVersion { schema })
            } else {
                None
            }
        }
        Kind::Other => match upper(0).as_str() {
            "VACUUM" => Some(EventClass::Maintenance("vacuum")),
            "ANALYZE" => Some(EventClass::Maintenance("analyze")),
            "REINDEX" => Some(EventClass::Maintenance("reindex")),
            _ => None,
        },
        Kind::Insert | Kind::Update | Kind::Delete => {
            for t in &fast.tables {
                let bare = t.rsplit('.').next().unwrap_or(t);
                if let Some((table, tool)) = MIGRATION_TABLES
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(bare))
                {
                    return Some(EventClass::MigrationWrite {
                        tool,
                        table: table.to_string(),
                    });
                }
            }
            None
        }
        _ => None,
    }
}

/// The (possibly quoted) name starting at words[0], without a trailing
/// column list.
fn name_at(words: &[&str]) -> String {
    let Some(first) = words.first() else {
        return String::new();
    };
    let mut s = String::new();
    if first.starts_with('"') || first.starts_with('[') || first.starts_with('`') {
        let close = match first.as_bytes()[0] {
            b'"' => '"',
            b'[' => ']',
            _ => '`',
        };
        for (k, w) in words.iter().enumerate() {
            if k > 0 {
                s.push(' ');
            }
            s.push_str(w);
            if (k > 0 || w.len() > 1) && w.trim_end_matches(['(', ',', ';']).ends_with(close) {
                break;
            }
        }
    } else {
        s.push_str(first);
    }
    let cut = s.find('(').unwrap_or(s.len());
    s.truncate(cut);
    s.trim_end_matches([',', ';']).to_string()
}

/// "main.t" -> (Some("main"), "t"), quotes removed.
fn split_schema(name: &str) -> (Option<String>, String) {
    let unq = |s: &str| {
        s.trim_matches(|c| c == '"' || c == '`' || c == '[' || c == ']')
            .to_string()
    };
    match name.split_once('.') {
        Some((a, b)) if !a.starts_with('"') || a.ends_with('"') => (Some(unq(a)), unq(b)),
        _ => (None, unq(name)),
    }
}

/// Per-database queue of events not yet written to the store.
#[derive(Default)]
pub struct EventQueue {
    q: Mutex<VecDeque<EventRecord>>,
    pub dropped: AtomicU64,
}

impl EventQueue {
    pub fn push(&self, e: EventRecord) {
        let mut q = lock(&self.q);
        while q.len() >= MAX_PENDING_EVENTS {
            q.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        q.push_back(e);
    }

    pub fn take(&self) -> Vec<EventRecord> {
        lock(&self.q).drain(..).collect()
    }

    pub fn peek(&self) -> Vec<EventRecord> {
        lock(&self.q).iter().cloned().collect()
    }

    /// Put back events a failed flush could not write (before newer ones).
    pub fn give_back(&self, v: Vec<EventRecord>) {
        let mut q = lock(&self.q);
        for e in v.into_iter().rev() {
            q.push_front(e);
        }
        while q.len() > MAX_PENDING_EVENTS {
            q.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

static MEMORY: Mutex<VecDeque<EventRecord>> = Mutex::new(VecDeque::new());

/// Record an event: memory ring, and the store queue when the database has
/// a store.
pub fn record(db: &DbStats, e: EventRecord) {
    {
        let mut m = lock(&MEMORY);
        while m.len() >= MAX_EVENTS {
            m.pop_front();
        }
        m.push_back(e.clone());
    }
    if db.has_store.load(Ordering::Relaxed) {
        db.events.push(e);
    }
}

/// Record in memory only (the caller writes the store itself).
pub fn record_memory(e: EventRecord) {
    let mut m = lock(&MEMORY);
    while m.len() >= MAX_EVENTS {
        m.pop_front();
    }
    m.push_back(e);
}

/// This process's recent events.
pub fn memory() -> Vec<EventRecord> {
    lock(&MEMORY).iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify_fast;

    fn ev(q: &str) -> Option<EventClass> {
        classify_event(q, &classify_fast(q))
    }

    #[test]
    fn schema_changes() {
        assert_eq!(
            ev("CREATE TABLE IF NOT EXISTS main.t(a, b)"),
            Some(EventClass::SchemaChange {
                verb: "create",
                object_type: "table".into(),
                object: "t".into(),
                schema: Some("main".into())
            })
        );
        assert_eq!(
            ev("CREATE UNIQUE INDEX i ON t(a)"),
            Some(EventClass::SchemaChange {
                verb: "create",
                object_type: "index".into(),
                object: "i".into(),
                schema: None
            })
        );
        assert_eq!(
            ev("DROP VIEW IF EXISTS \"my view\""),
            Some(EventClass::SchemaChange {
                verb: "drop",
                object_type: "view".into(),
                object: "my view".into(),
                schema: None
            })
        );
        assert!(matches!(
            ev("ALTER TABLE t ADD COLUMN c"),
            Some(EventClass::SchemaChange { verb: "alter", .. })
        ));
        assert!(matches!(
            ev("CREATE VIRTUAL TABLE f USING fts5(x)"),
            Some(EventClass::SchemaChange { ref object, .. }) if object == "f"
        ));
    }

    #[test]
    fn pragmas_maintenance_migrations() {
        assert_eq!(
            ev("PRAGMA user_version = ?"),
            Some(EventClass::UserVersion { schema: None })
        );
        assert_eq!(ev("PRAGMA user_version"), None);
        assert_eq!(ev("PRAGMA journal_mode = ?"), None);
        assert_eq!(ev("VACUUM"), Some(EventClass::Maintenance("vacuum")));
        assert_eq!(ev("ANALYZE t"), Some(EventClass::Maintenance("analyze")));
        assert_eq!(
            ev("UPDATE alembic_version SET version_num = ? WHERE alembic_version.version_num = ?"),
            Some(EventClass::MigrationWrite {
                tool: "alembic",
                table: "alembic_version".into()
            })
        );
        assert!(matches!(
            ev("INSERT INTO \"django_migrations\" (\"app\", \"name\", \"applied\") VALUES (?, ?, ?)"),
            Some(EventClass::MigrationWrite { tool: "django", .. })
        ));
        assert_eq!(ev("SELECT * FROM alembic_version"), None);
        assert_eq!(ev("INSERT INTO t VALUES (?)"), None);
    }
}
