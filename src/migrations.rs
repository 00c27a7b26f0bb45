//! Migration history read from the tables of the migration tools people use
//! with SQLite.
//!
//! Rules:
//! - Read-only, on the user's connection, with capture off (the extension's
//!   own reads never appear in insights_queries or the error log).
//! - One row per applied migration: tool, version, name, applied_at (UTC
//!   ISO-8601 when the tool records it), first_seen (when the extension first
//!   saw it: the captured write of the migration, else the first read).
//! - Schema-change events are tied to the migration whose time window they
//!   fall in: after the previous migration, up to this one's recorded time
//!   (exactly, when the extension captured the version write; + `TIE_SLACK_MS`
//!   but never past the next migration, when the time is the tool's own).

use crate::capture::query_rows;
use crate::clock;
use rusqlite::ffi;

/// A schema change up to this long after a migration's time as recorded by
/// the tool still belongs to it (tools with whole-second timestamps).
pub const TIE_SLACK_MS: i64 = 1_000;
/// Rows read from one tool's table at most.
pub const MAX_MIGRATION_ROWS: usize = 10_000;

/// (tool, table, SQL giving version, name, applied_at, detail)
const READERS: &[(&str, &str, &str)] = &[
    ("golang-migrate", "schema_migrations", "SELECT version, NULL, NULL, CASE WHEN dirty THEN 'dirty' END FROM schema_migrations"),
    ("rails", "schema_migrations", "SELECT version, NULL, NULL, NULL FROM schema_migrations ORDER BY version"),
    ("django", "django_migrations", "SELECT app || '.' || name, name, applied, NULL FROM django_migrations ORDER BY id"),
    ("alembic", "alembic_version", "SELECT version_num, NULL, NULL, 'head' FROM alembic_version"),
    ("sqlx", "_sqlx_migrations", "SELECT version, description, installed_on, CASE WHEN success THEN NULL ELSE 'failed' END FROM _sqlx_migrations ORDER BY version"),
    ("diesel", "__diesel_schema_migrations", "SELECT version, NULL, run_on, NULL FROM __diesel_schema_migrations ORDER BY version"),
    ("refinery", "refinery_schema_history", "SELECT version, name, applied_on, NULL FROM refinery_schema_history ORDER BY version"),
    ("prisma", "_prisma_migrations", "SELECT migration_name, migration_name, finished_at, CASE WHEN rolled_back_at IS NOT NULL THEN 'rolled back' WHEN finished_at IS NULL THEN 'unfinished' END FROM _prisma_migrations ORDER BY started_at"),
    ("flyway", "flyway_schema_history", "SELECT coalesce(version, script), description, installed_on, CASE WHEN NOT success THEN 'failed' END FROM flyway_schema_history ORDER BY installed_rank"),
    ("knex", "knex_migrations", "SELECT name, name, migration_time, 'batch ' || batch FROM knex_migrations ORDER BY id"),
];

#[derive(Clone, Debug)]
pub struct Migration {
    pub tool: String,
    pub version: String,
    pub name: Option<String>,
    pub applied_at_ms: Option<i64>,
    pub detail: Option<String>,
}

/// A tool's timestamp as unix ms: ISO/SQLite text, or epoch s/ms numbers.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Some(ms) = clock::parse_instant(s) {
        return Some(ms);
    }
    // "2026-11-25 07:30:00.123456" (Django) has more than 3 fraction digits,
    // "+00:00" suffixes are UTC offsets we accept when zero
    let t = s.trim().trim_end_matches("+00:00").trim_end_matches(" UTC");
    if let Some(dot) = t.find('.') {
        let (a, b) = t.split_at(dot);
        let frac: String = b[1..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .take(3)
            .collect();
        if let Some(ms) = clock::parse_instant(&format!("{a}.{frac}")) {
            return Some(ms);
        }
    }
    if let Some(ms) = clock::parse_instant(t) {
        return Some(ms);
    }
    let n: f64 = t.parse().ok()?;
    if n > 1e11 {
        Some(n as i64) // epoch milliseconds (knex, prisma)
    } else if n > 1e8 {
        Some((n * 1000.0) as i64) // epoch seconds
    } else {
        None
    }
}

unsafe fn table_exists(db: *mut ffi::sqlite3, table: &str) -> bool {
    let sql = format!(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '{}'",
        table.replace('\'', "''")
    );
    query_rows(db, &sql, 1).is_some_and(|r| !r.is_empty())
}

unsafe fn has_column(db: *mut ffi::sqlite3, table: &str, column: &str) -> bool {
    let sql = format!(
        "SELECT 1 FROM pragma_table_info('{}') WHERE name = '{}'",
        table.replace('\'', "''"),
        column.replace('\'', "''")
    );
    query_rows(db, &sql, 1).is_some_and(|r| !r.is_empty())
}

/// Which reader applies to `table` (schema_migrations: golang-migrate has a
/// `dirty` column, Rails does not).
unsafe fn readers_for(
    db: *mut ffi::sqlite3,
) -> Vec<&'static (&'static str, &'static str, &'static str)> {
    let mut out = Vec::new();
    for r in READERS {
        if !table_exists(db, r.1) {
            continue;
        }
        if r.1 == "schema_migrations" {
            let dirty = has_column(db, r.1, "dirty");
            if (r.0 == "golang-migrate") != dirty {
                continue;
            }
        }
        out.push(r);
    }
    out
}

/// Every migration recorded in the database of connection `db`.
///
/// # Safety
/// `db` must be a valid connection used by this thread right now.
pub unsafe fn read_all(db: *mut ffi::sqlite3) -> Vec<Migration> {
    let mut out = Vec::new();
    for (tool, _, sql) in readers_for(db) {
        let Some(rows) = query_rows(db, sql, MAX_MIGRATION_ROWS) else {
            continue;
        };
        for r in rows {
            let mut it = r.into_iter();
            let version = it.next().flatten().unwrap_or_default();
            let name = it.next().flatten();
            let applied = it.next().flatten();
            let detail = it.next().flatten();
            out.push(Migration {
                tool: tool.to_string(),
                version,
                name,
                applied_at_ms: applied.as_deref().and_then(parse_time),
                detail,
            });
        }
    }
    out
}

/// The version a tool's table holds now, after a captured write to it (for
/// the `migration` event). Alembic heads are joined with ','.
///
/// # Safety
/// `db` must be the valid connection that ran the write.
pub unsafe fn latest_version(db: *mut ffi::sqlite3, tool: &str, _table: &str) -> Option<String> {
    let migrations: Vec<Migration> = read_all(db)
        .into_iter()
        .filter(|m| m.tool == tool || (tool == "rails" && m.tool == "golang-migrate"))
        .collect();
    if tool == "alembic" {
        let heads: Vec<String> = migrations.into_iter().map(|m| m.version).collect();
        return (!heads.is_empty()).then(|| heads.join(","));
    }
    migrations.last().map(|m| m.version.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_timestamps() {
        let t = clock::parse_instant("2026-11-25T07:30:00.123Z").unwrap();
        assert_eq!(parse_time("2026-11-25 07:30:00.123456"), Some(t));
        assert_eq!(parse_time("2026-11-25 07:30:00.123456+00:00"), Some(t));
        assert_eq!(parse_time("2026-11-25T07:30:00.123Z"), Some(t));
        assert_eq!(parse_time("1795591800123"), Some(t));
        assert_eq!(parse_time("1795591800"), Some(t - 123));
        assert_eq!(parse_time("soon"), None);
    }
}
