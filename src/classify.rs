//! Statement classifier: kind (select, insert, ...) and tables touched, computed
//! once per new fingerprint from the normalized SQL text.
//!
//! `sqlparser` (SQLite dialect) is tried first; when it cannot parse the text
//! (SQLite-only syntax, truncated text, huge text) a token scan derives the
//! kind from the leading keywords and the tables from the names that follow
//! FROM / JOIN / INTO / UPDATE / TABLE / VIEW and the ON of CREATE INDEX and
//! CREATE TRIGGER. Never panics.
//!
//! Tables are the relations a statement reads, writes, creates, alters or
//! drops (views included, CTE names and table-valued functions excluded),
//! written `schema.name` when qualified, quotes removed, sorted
//! case-insensitively and deduplicated case-insensitively (SQLite names are
//! case-insensitive; the first spelling in sort order is kept).

use sqlparser::ast::{
    ObjectName, ObjectType, Query, SetExpr, Statement, TableFactor, Visit, Visitor,
};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;

/// Longer texts skip sqlparser (parse time and AST size grow with the text);
/// the token scan is linear and iterative.
pub const MAX_PARSE_BYTES: usize = 64 * 1024;

/// Texts with more operator tokens skip sqlparser: a chain `a + b + ...` or
/// `x AND y AND ...` becomes a left-deep AST that sqlparser's visitor and drop
/// walk recursively (about 2.5 KiB of stack per operator in a debug build), and
/// a stack overflow aborts the host process; it cannot be caught.
pub const MAX_PARSE_OPERATORS: usize = 2048;

/// sqlparser runs on a short-lived helper thread with this much stack: its
/// recursive descent needs over 128 KiB in release builds for nested input
/// (several MiB in debug builds), more than some host threads have (musl
/// threads get 128 KiB). The memory is reserved, not touched.
pub const PARSE_STACK_BYTES: usize = 16 << 20;

thread_local! {
    static BIG_STACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Declare that the current thread was created with at least
/// [`PARSE_STACK_BYTES`] of stack: sqlparser then runs on it directly.
pub fn mark_big_stack_thread() {
    BIG_STACK.with(|b| b.set(true));
}

/// Statement kind, as exposed in `insights_queries.kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Select,
    Insert,
    Update,
    Delete,
    Ddl,
    Pragma,
    Transaction,
    Other,
}

impl Kind {
    /// Lowercase name: "select", "insert", "update", "delete", "ddl", "pragma",
    /// "transaction", "other".
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Select => "select",
            Kind::Insert => "insert",
            Kind::Update => "update",
            Kind::Delete => "delete",
            Kind::Ddl => "ddl",
            Kind::Pragma => "pragma",
            Kind::Transaction => "transaction",
            Kind::Other => "other",
        }
    }

    /// Inverse of [`Kind::as_str`] (exact lowercase match).
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(s: &str) -> Option<Kind> {
        Some(match s {
            "select" => Kind::Select,
            "insert" => Kind::Insert,
            "update" => Kind::Update,
            "delete" => Kind::Delete,
            "ddl" => Kind::Ddl,
            "pragma" => Kind::Pragma,
            "transaction" => Kind::Transaction,
            "other" => Kind::Other,
            _ => return None,
        })
    }

    /// Insert, update or delete.
    pub fn is_dml(self) -> bool {
        matches!(self, Kind::Insert | Kind::Update | Kind::Delete)
    }
}

/// Result of [`classify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classified {
    pub kind: Kind,
    /// Tables/views touched: sorted, deduped, as written minus quotes.
    pub tables: Vec<String>,
    /// True if sqlparser parsed the text (false: token-scan fallback).
    pub parsed: bool,
}

/// Classify one (normalized) statement. Never panics.
pub fn classify(normalized_sql: &str) -> Classified {
    let toks = tokenize(normalized_sql);
    let kw_kind = keyword_kind(&toks);
    let operators = toks.iter().filter(|t| is_operator(t)).count();
    if normalized_sql.len() <= MAX_PARSE_BYTES && operators <= MAX_PARSE_OPERATORS {
        if let Some((ast_kind, tables)) = parse_on_helper_thread(normalized_sql) {
            return Classified {
                kind: ast_kind.unwrap_or(kw_kind),
                tables: finish_tables(tables),
                parsed: true,
            };
        }
    }
    Classified {
        kind: kw_kind,
        tables: finish_tables(scan_tables(&toks)),
        parsed: false,
    }
}

/// Keyword kind and token-scan tables only (no sqlparser): cheap enough for
/// the user's thread at a fingerprint's first sight.
pub fn classify_fast(normalized_sql: &str) -> Classified {
    let toks = tokenize(normalized_sql);
    Classified {
        kind: keyword_kind(&toks),
        tables: finish_tables(scan_tables(&toks)),
        parsed: false,
    }
}

// ---------------------------------------------------------------- sqlparser

/// [`parse`] on its own thread ([`PARSE_STACK_BYTES`]), panics caught. `None`
/// when sqlparser fails, panics, or the thread cannot be started.
fn parse_on_helper_thread(sql: &str) -> Option<(Option<Kind>, Vec<String>)> {
    if BIG_STACK.with(|b| b.get()) {
        // this thread was made with PARSE_STACK_BYTES (the flusher): no
        // thread per statement needed
        return std::panic::catch_unwind(|| parse(sql)).ok().flatten();
    }
    if let Some(r) = parse_on_service_thread(sql) {
        return r;
    }
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("insights-classify".into())
            .stack_size(PARSE_STACK_BYTES)
            .spawn_scoped(scope, || {
                std::panic::catch_unwind(|| parse(sql)).ok().flatten()
            })
            .ok()?;
        handle.join().ok().flatten()
    })
}

type ParseResult = Option<(Option<Kind>, Vec<String>)>;
type Request = (String, std::sync::mpsc::SyncSender<ParseResult>);

/// One long-lived parser thread with a big stack, shared by every thread
/// that classifies (starting a thread per statement costs ~100 us). None
/// when the service cannot be reached (the caller then starts a thread).
fn parse_on_service_thread(sql: &str) -> Option<ParseResult> {
    use std::sync::mpsc::{sync_channel, SyncSender};
    use std::sync::{Mutex, OnceLock};
    static SVC: OnceLock<Mutex<Option<SyncSender<Request>>>> = OnceLock::new();
    let svc = SVC.get_or_init(|| {
        let (tx, rx) = sync_channel::<Request>(64);
        let started = std::thread::Builder::new()
            .name("insights-parse".into())
            .stack_size(PARSE_STACK_BYTES)
            .spawn(move || {
                while let Ok((sql, reply)) = rx.recv() {
                    let r = std::panic::catch_unwind(|| parse(&sql)).ok().flatten();
                    let _ = reply.send(r);
                }
            });
        Mutex::new(started.ok().map(|_| tx))
    });
    let tx = svc.lock().ok()?.clone()?;
    let (reply_tx, reply_rx) = sync_channel(1);
    tx.send((sql.to_string(), reply_tx)).ok()?;
    reply_rx.recv().ok()
}

/// Kind (None: not mapped, use the keyword kind) and raw table names.
fn parse(sql: &str) -> Option<(Option<Kind>, Vec<String>)> {
    let stmts = Parser::parse_sql(&SQLiteDialect {}, sql).ok()?;
    let first = stmts.first()?;
    let kind = stmt_kind(first);
    let mut v = Relations::default();
    for s in &stmts {
        let _ = s.visit(&mut v);
    }
    let Relations {
        mut tables,
        ctes,
        funcs,
    } = v;
    tables.retain(|t| !is_cte(t, &ctes) && !funcs.iter().any(|f| f.eq_ignore_ascii_case(t)));
    Some((kind, tables))
}

fn stmt_kind(s: &Statement) -> Option<Kind> {
    use Statement as S;
    Some(match s {
        S::Query(q) => query_kind(q),
        S::Insert(_) => Kind::Insert,
        S::Update(_) => Kind::Update,
        S::Delete(_) => Kind::Delete,
        S::Pragma { .. } => Kind::Pragma,
        S::StartTransaction { .. }
        | S::Commit { .. }
        | S::Rollback { .. }
        | S::Savepoint { .. }
        | S::ReleaseSavepoint { .. } => Kind::Transaction,
        S::CreateTable(_)
        | S::CreateView(_)
        | S::CreateVirtualTable { .. }
        | S::CreateIndex(_)
        | S::CreateTrigger(_)
        | S::AlterTable(_)
        | S::AlterView(_)
        | S::AlterIndex { .. }
        | S::Drop { .. }
        | S::DropTrigger(_) => Kind::Ddl,
        S::Explain { .. }
        | S::ExplainTable { .. }
        | S::Analyze(_)
        | S::Vacuum(_)
        | S::AttachDatabase { .. } => Kind::Other,
        _ => return None,
    })
}

fn query_kind(q: &Query) -> Kind {
    match q.body.as_ref() {
        SetExpr::Insert(_) => Kind::Insert,
        SetExpr::Update(_) => Kind::Update,
        SetExpr::Delete(_) => Kind::Delete,
        SetExpr::Merge(_) => Kind::Other,
        _ => Kind::Select,
    }
}

#[derive(Default)]
struct Relations {
    tables: Vec<String>,
    ctes: Vec<String>,
    funcs: Vec<String>,
}

fn object_name(n: &ObjectName) -> String {
    let mut s = String::new();
    for (i, part) in n.0.iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        match part.as_ident() {
            Some(id) => s.push_str(&id.value),
            None => s.push_str(&part.to_string()),
        }
    }
    s
}

impl Visitor for Relations {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if let Some(w) = &q.with {
            for cte in &w.cte_tables {
                self.ctes.push(cte.alias.name.value.clone());
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            args: Some(_),
            ..
        } = tf
        {
            self.funcs.push(object_name(name));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, r: &ObjectName) -> ControlFlow<()> {
        self.tables.push(object_name(r));
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        // Names the visitor does not report as relations.
        match s {
            Statement::Drop {
                object_type: ObjectType::Table | ObjectType::View,
                names,
                ..
            } => self.tables.extend(names.iter().map(object_name)),
            Statement::CreateTrigger(t) => self.tables.push(object_name(&t.table_name)),
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// An unqualified name that matches a CTE name.
fn is_cte(table: &str, ctes: &[String]) -> bool {
    !table.contains('.') && ctes.iter().any(|c| c.eq_ignore_ascii_case(table))
}

fn finish_tables(mut t: Vec<String>) -> Vec<String> {
    t.retain(|s| !s.is_empty());
    t.sort_by(|a, b| {
        let la = a.bytes().map(|c| c.to_ascii_lowercase());
        let lb = b.bytes().map(|c| c.to_ascii_lowercase());
        la.cmp(lb).then_with(|| a.cmp(b))
    });
    t.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    t
}

// --------------------------------------------------------------- token scan

#[derive(Debug, PartialEq, Eq)]
enum T<'a> {
    /// Unquoted word (keyword or identifier).
    Word(&'a str),
    /// Quoted identifier, quotes removed.
    Quoted(String),
    /// Punctuation that matters to the scan.
    P(u8),
    /// Operator punctuation (one per byte).
    Op,
    /// Literals, parameters, other punctuation.
    Other,
}

/// Binary/unary operator token (bounds the depth of sqlparser's AST).
fn is_operator(t: &T<'_>) -> bool {
    match t {
        T::Op => true,
        T::Word(w) => [
            "AND",
            "OR",
            "NOT",
            "IS",
            "IN",
            "LIKE",
            "GLOB",
            "MATCH",
            "REGEXP",
            "BETWEEN",
            "COLLATE",
            "ESCAPE",
            "UNION",
            "EXCEPT",
            "INTERSECT",
            "ISNULL",
            "NOTNULL",
        ]
        .iter()
        .any(|k| w.eq_ignore_ascii_case(k)),
        _ => false,
    }
}

fn is_keyword(w: &str) -> bool {
    crate::normalize::is_keyword(w)
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Same lexical rules as the normalizer, reduced to what the scan needs.
fn tokenize(sql: &str) -> Vec<T<'_>> {
    let s = sql.as_bytes();
    let n = s.len();
    let mut out = Vec::with_capacity(n / 4 + 4);
    let mut i = 0usize;
    // Position of the closing `close` byte at or after `j` (doubled = escape).
    let find_close = |mut j: usize, close: u8, doubled: bool| -> usize {
        while j < n {
            if s[j] == close {
                if doubled && j + 1 < n && s[j + 1] == close {
                    j += 2;
                    continue;
                }
                return j;
            }
            j += 1;
        }
        n
    };
    while i < n {
        let c = s[i];
        match c {
            b'-' if i + 1 < n && s[i + 1] == b'-' => {
                while i < n && s[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if i + 1 < n && s[i + 1] == b'*' => {
                i += 2;
                while i < n && !(s[i] == b'*' && i + 1 < n && s[i + 1] == b'/') {
                    i += 1;
                }
                i = (i + 2).min(n);
            }
            b'\'' => {
                i = (find_close(i + 1, b'\'', true) + 1).min(n);
                out.push(T::Other);
            }
            b'"' | b'`' | b'[' => {
                let close = if c == b'[' { b']' } else { c };
                let end = find_close(i + 1, close, c != b'[');
                let raw = &sql.get(i + 1..end).unwrap_or("");
                let name = if c == b'[' {
                    raw.to_string()
                } else {
                    let q = c as char;
                    raw.replace(&format!("{q}{q}"), &q.to_string())
                };
                out.push(T::Quoted(name));
                i = (end + 1).min(n);
            }
            b'(' | b')' | b',' | b'.' | b';' => {
                if c == b'.' && i + 1 < n && s[i + 1].is_ascii_digit() {
                    i += 1;
                    while i < n && is_word_byte(s[i]) {
                        i += 1;
                    }
                    out.push(T::Other);
                } else {
                    out.push(T::P(c));
                    i += 1;
                }
            }
            _ if c.is_ascii_whitespace() => i += 1,
            _ if c.is_ascii_digit() => {
                while i < n && (is_word_byte(s[i]) || s[i] == b'.') {
                    i += 1;
                }
                out.push(T::Other);
            }
            b'x' | b'X' if i + 1 < n && s[i + 1] == b'\'' => {
                i = (find_close(i + 2, b'\'', false) + 1).min(n);
                out.push(T::Other);
            }
            _ if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let st = i;
                while i < n && is_word_byte(s[i]) {
                    i += 1;
                }
                // Word boundaries are ASCII bytes, hence char boundaries.
                out.push(T::Word(sql.get(st..i).unwrap_or("")));
            }
            b'?' | b':' | b'@' | b'$' | b'#' => {
                i += 1;
                while i < n && is_word_byte(s[i]) {
                    i += 1;
                }
                out.push(T::Other);
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'<' | b'>' | b'=' | b'!' | b'|' | b'&' | b'~' => {
                i += 1;
                out.push(T::Op);
            }
            _ => {
                i += 1;
                out.push(T::Other);
            }
        }
    }
    out
}

fn kw(t: Option<&T<'_>>, k: &str) -> bool {
    matches!(t, Some(T::Word(w)) if w.eq_ignore_ascii_case(k))
}

fn word_upper(t: Option<&T<'_>>) -> String {
    match t {
        Some(T::Word(w)) => w.to_ascii_uppercase(),
        _ => String::new(),
    }
}

/// Kind from the leading keywords.
fn keyword_kind(toks: &[T<'_>]) -> Kind {
    let mut i = 0;
    while matches!(toks.get(i), Some(T::P(b';'))) {
        i += 1;
    }
    let first = word_upper(toks.get(i));
    match first.as_str() {
        "SELECT" | "VALUES" => Kind::Select,
        "INSERT" | "REPLACE" => Kind::Insert,
        "UPDATE" => Kind::Update,
        "DELETE" => Kind::Delete,
        "CREATE" | "ALTER" | "DROP" => Kind::Ddl,
        "PRAGMA" => Kind::Pragma,
        "BEGIN" | "COMMIT" | "END" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" => Kind::Transaction,
        "WITH" => {
            // The main verb is the first one outside the CTE bodies.
            let mut depth = 0i64;
            for t in &toks[i + 1..] {
                match t {
                    T::P(b'(') => depth += 1,
                    T::P(b')') => depth -= 1,
                    T::P(b';') if depth <= 0 => break,
                    T::Word(w) if depth <= 0 => match w.to_ascii_uppercase().as_str() {
                        "SELECT" | "VALUES" => return Kind::Select,
                        "INSERT" | "REPLACE" => return Kind::Insert,
                        "UPDATE" => return Kind::Update,
                        "DELETE" => return Kind::Delete,
                        _ => {}
                    },
                    _ => {}
                }
            }
            Kind::Other
        }
        _ => Kind::Other,
    }
}

/// A name part: a quoted identifier, a non-keyword word, or any word
/// directly followed by `.` (schema such as `temp.`).
fn name_part(toks: &[T<'_>], i: usize) -> Option<String> {
    match toks.get(i)? {
        T::Quoted(q) => Some(q.clone()),
        T::Word(w) if !is_keyword(w) || matches!(toks.get(i + 1), Some(T::P(b'.'))) => {
            Some((*w).to_string())
        }
        _ => None,
    }
}

/// Possibly qualified name at `i`: (name, index after it).
fn read_name(toks: &[T<'_>], mut i: usize) -> Option<(String, usize)> {
    let mut name = name_part(toks, i)?;
    i += 1;
    while matches!(toks.get(i), Some(T::P(b'.'))) {
        match name_part(toks, i + 1) {
            Some(p) => {
                name.push('.');
                name.push_str(&p);
                i += 2;
            }
            None => break,
        }
    }
    Some((name, i))
}

/// Skip `IF [NOT] EXISTS` at `i`.
fn skip_if_exists(toks: &[T<'_>], mut i: usize) -> usize {
    if kw(toks.get(i), "IF") {
        i += 1;
        if kw(toks.get(i), "NOT") {
            i += 1;
        }
        if kw(toks.get(i), "EXISTS") {
            i += 1;
        }
    }
    i
}

/// Tables from a linear token scan (fallback when sqlparser fails).
fn scan_tables(toks: &[T<'_>]) -> Vec<String> {
    let mut tables = Vec::new();
    let mut ctes: Vec<String> = Vec::new();
    let mut depth = 0i64;
    // FROM-list state: paren depth of the FROM, and whether a table name is expected.
    let mut from_depth: Option<i64> = None;
    // A table name is expected next; in FROM lists `name(` is a table-valued function.
    let mut expect_table = false;
    let mut in_from_list = false;
    // After CREATE INDEX / CREATE TRIGGER: the next ON names the table.
    let mut on_names_table = false;
    let mut i = 0usize;
    while i < toks.len() {
        let t = &toks[i];
        if expect_table {
            expect_table = false;
            if let Some((name, next)) = read_name(toks, i) {
                if !(in_from_list && matches!(toks.get(next), Some(T::P(b'(')))) {
                    tables.push(name);
                }
                i = next;
                continue;
            }
        }
        match t {
            T::P(b'(') => depth += 1,
            T::P(b')') => {
                depth -= 1;
                if from_depth.is_some_and(|d| depth < d) {
                    from_depth = None;
                }
            }
            T::P(b',') if from_depth == Some(depth) => {
                expect_table = true;
                in_from_list = true;
            }
            T::P(b';') => {
                from_depth = None;
                on_names_table = false;
            }
            T::Word(w) => {
                let up = w.to_ascii_uppercase();
                match up.as_str() {
                    "FROM" => {
                        from_depth = Some(depth);
                        expect_table = true;
                        in_from_list = true;
                    }
                    "JOIN" => {
                        expect_table = true;
                        in_from_list = true;
                    }
                    "ANALYZE" | "REINDEX" if i == 0 => {
                        expect_table = true;
                        in_from_list = false;
                    }
                    "WHERE" | "GROUP" | "ORDER" | "LIMIT" | "HAVING" | "WINDOW" | "UNION"
                    | "EXCEPT" | "INTERSECT" | "RETURNING" | "SELECT" | "VALUES" | "SET"
                        if from_depth == Some(depth) =>
                    {
                        from_depth = None;
                    }
                    "INTO" => {
                        if let Some((name, next)) = read_name(toks, i + 1) {
                            tables.push(name);
                            i = next;
                            continue;
                        }
                    }
                    "UPDATE" => {
                        let mut j = i + 1;
                        if kw(toks.get(j), "OR") {
                            j += 2;
                        }
                        if let Some((name, next)) = read_name(toks, j) {
                            tables.push(name);
                            i = next;
                            continue;
                        }
                    }
                    "TABLE" | "VIEW" => {
                        let j = skip_if_exists(toks, i + 1);
                        if let Some((name, next)) = read_name(toks, j) {
                            tables.push(name);
                            i = next;
                            continue;
                        }
                    }
                    "INDEX" | "TRIGGER" => on_names_table = kw(toks.first(), "CREATE"),
                    "ON" if on_names_table => {
                        on_names_table = false;
                        expect_table = true;
                        in_from_list = false;
                    }
                    "AS" => {
                        // `name [(cols)] AS [NOT] [MATERIALIZED] (` defines a CTE.
                        let mut j = i + 1;
                        if kw(toks.get(j), "NOT") {
                            j += 1;
                        }
                        if kw(toks.get(j), "MATERIALIZED") {
                            j += 1;
                        }
                        if matches!(toks.get(j), Some(T::P(b'('))) && i > 0 {
                            let mut k = i - 1;
                            if matches!(toks[k], T::P(b')')) {
                                // skip back over the column list
                                while k > 0 && !matches!(toks[k], T::P(b'(')) {
                                    k -= 1;
                                }
                                k = k.saturating_sub(1);
                            }
                            if let Some(n) = name_part(toks, k) {
                                ctes.push(n);
                            }
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        i += 1;
    }
    tables.retain(|t| !is_cte(t, &ctes));
    tables
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(sql: &str) -> Classified {
        classify(sql)
    }

    #[test]
    fn keywords_come_from_the_normalizer() {
        assert!(is_keyword("select") && is_keyword("Current_Timestamp"));
        assert!(!is_keyword("users") && !is_keyword("rowid") && !is_keyword(""));
    }

    #[test]
    fn kind_strings_round_trip() {
        for k in [
            Kind::Select,
            Kind::Insert,
            Kind::Update,
            Kind::Delete,
            Kind::Ddl,
            Kind::Pragma,
            Kind::Transaction,
            Kind::Other,
        ] {
            assert_eq!(Kind::from_str(k.as_str()), Some(k));
        }
        assert_eq!(Kind::from_str("SELECT"), None);
        assert_eq!(Kind::from_str(""), None);
        assert!(Kind::Insert.is_dml() && Kind::Update.is_dml() && Kind::Delete.is_dml());
        assert!(!Kind::Select.is_dml() && !Kind::Ddl.is_dml() && !Kind::Other.is_dml());
    }

    /// (sql, kind, tables, parsed by sqlparser?) -- `None` for "don't care".
    #[test]
    fn table() {
        use Kind::*;
        let cases: &[(&str, Kind, &[&str], Option<bool>)] = &[
            ("SELECT ?", Select, &[], Some(true)),
            ("SELECT * FROM t WHERE a = ?", Select, &["t"], Some(true)),
            ("SELECT a FROM t JOIN u ON t.id = u.id LEFT JOIN main.v ON ?", Select, &["main.v", "t", "u"], Some(true)),
            ("SELECT * FROM a, b AS x, \"C d\" WHERE a.x IN (SELECT y FROM e)", Select, &["a", "b", "C d", "e"], Some(true)),
            ("SELECT * FROM t WHERE a IN (?) UNION ALL SELECT * FROM t", Select, &["t"], Some(true)),
            ("SELECT count(*) FROM [my table] WHERE EXISTS (SELECT ? FROM `u`)", Select, &["my table", "u"], Some(true)),
            ("VALUES (?, ?)", Select, &[], None),
            ("SELECT * FROM T JOIN t ON ?", Select, &["T"], Some(true)),
            ("SELECT * FROM json_each(?) JOIN t ON ?", Select, &["t"], None),
            // CTEs
            ("WITH c AS (SELECT * FROM t) SELECT * FROM c", Select, &["t"], Some(true)),
            ("WITH RECURSIVE r(n) AS (SELECT ? UNION ALL SELECT n + ? FROM r WHERE n < ?) SELECT n FROM r", Select, &[], Some(true)),
            ("WITH c AS (SELECT id FROM t) INSERT INTO u SELECT * FROM c", Insert, &["t", "u"], None),
            ("WITH c AS (SELECT id FROM t) UPDATE u SET a = ? WHERE id IN (SELECT id FROM c)", Update, &["t", "u"], None),
            ("WITH c AS (SELECT id FROM t) DELETE FROM u WHERE id IN c", Delete, &["t", "u"], None),
            ("WITH c AS MATERIALIZED (SELECT id FROM t) SELECT * FROM c", Select, &["t"], None),
            // DML
            ("INSERT INTO t(a, b) VALUES (?, ?)", Insert, &["t"], Some(true)),
            ("INSERT INTO main.t SELECT * FROM u", Insert, &["main.t", "u"], Some(true)),
            ("REPLACE INTO t VALUES (?)", Insert, &["t"], None),
            ("INSERT OR REPLACE INTO t VALUES (?)", Insert, &["t"], None),
            ("INSERT OR IGNORE INTO t(a) VALUES (?)", Insert, &["t"], None),
            ("INSERT INTO t(a) VALUES (?) ON CONFLICT(a) DO NOTHING", Insert, &["t"], None),
            ("INSERT INTO t(a) VALUES (?) ON CONFLICT(a) DO UPDATE SET b = excluded.b", Insert, &["t"], None),
            ("INSERT INTO t(a) VALUES (?) RETURNING id", Insert, &["t"], None),
            ("INSERT INTO t DEFAULT VALUES", Insert, &["t"], None),
            ("UPDATE t SET a = ? WHERE id = ?", Update, &["t"], Some(true)),
            ("UPDATE OR IGNORE t SET a = ?", Update, &["t"], None),
            ("UPDATE t SET a = u.b FROM u WHERE t.id = u.id", Update, &["t", "u"], None),
            ("UPDATE t SET a = ? RETURNING *", Update, &["t"], None),
            ("DELETE FROM t WHERE id = ?", Delete, &["t"], Some(true)),
            ("DELETE FROM t WHERE id IN (SELECT id FROM u) RETURNING id", Delete, &["t", "u"], None),
            // DDL
            ("CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT)", Ddl, &["t"], Some(true)),
            ("CREATE TABLE IF NOT EXISTS \"x y\"(a)", Ddl, &["x y"], None),
            ("CREATE TEMP TABLE t AS SELECT * FROM u", Ddl, &["t", "u"], None),
            ("CREATE TABLE t(a) STRICT", Ddl, &["t"], None),
            ("CREATE VIRTUAL TABLE docs USING fts5(title, body)", Ddl, &["docs"], None),
            ("CREATE VIRTUAL TABLE IF NOT EXISTS docs USING fts5(title, body, tokenize = ?)", Ddl, &["docs"], None),
            ("CREATE INDEX idx ON t(a)", Ddl, &["t"], Some(true)),
            ("CREATE UNIQUE INDEX IF NOT EXISTS idx ON t(a, b) WHERE a IS NOT NULL", Ddl, &["t"], None),
            ("CREATE VIEW v AS SELECT * FROM t", Ddl, &["t", "v"], Some(true)),
            ("CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO log VALUES (?); END", Ddl, &["log", "t"], None),
            ("CREATE TRIGGER tr AFTER UPDATE OF a ON t BEGIN UPDATE u SET b = ?; END", Ddl, &["t", "u"], None),
            ("ALTER TABLE t ADD COLUMN c TEXT", Ddl, &["t"], None),
            ("ALTER TABLE t RENAME TO u", Ddl, &["t"], None),
            ("DROP TABLE t", Ddl, &["t"], Some(true)),
            ("DROP TABLE IF EXISTS main.t", Ddl, &["main.t"], None),
            ("DROP VIEW v", Ddl, &["v"], None),
            ("DROP INDEX idx", Ddl, &[], None),
            ("DROP TRIGGER IF EXISTS tr", Ddl, &[], None),
            // PRAGMA
            ("PRAGMA journal_mode = wal", Pragma, &[], None),
            ("PRAGMA main.journal_mode", Pragma, &[], None),
            ("PRAGMA table_info(t)", Pragma, &[], None),
            ("PRAGMA foreign_keys = ?", Pragma, &[], None),
            // transactions
            ("BEGIN", Transaction, &[], None),
            ("BEGIN IMMEDIATE", Transaction, &[], None),
            ("BEGIN EXCLUSIVE TRANSACTION", Transaction, &[], None),
            ("COMMIT", Transaction, &[], None),
            ("END", Transaction, &[], None),
            ("END TRANSACTION", Transaction, &[], None),
            ("ROLLBACK", Transaction, &[], None),
            ("ROLLBACK TO SAVEPOINT sp", Transaction, &[], None),
            ("SAVEPOINT sp", Transaction, &[], None),
            ("RELEASE sp", Transaction, &[], None),
            ("RELEASE SAVEPOINT sp", Transaction, &[], None),
            // other
            ("VACUUM", Other, &[], None),
            ("VACUUM INTO ?", Other, &[], None),
            ("ANALYZE", Other, &[], None),
            ("ANALYZE t", Other, &["t"], None),
            ("REINDEX", Other, &[], None),
            ("ATTACH DATABASE ? AS aux", Other, &[], None),
            ("ATTACH ? AS aux", Other, &[], None),
            ("DETACH aux", Other, &[], None),
            ("EXPLAIN SELECT * FROM t", Other, &["t"], None),
            ("EXPLAIN QUERY PLAN SELECT * FROM t WHERE a = ?", Other, &["t"], None),
            ("", Other, &[], Some(false)),
            ("garbage words here", Other, &[], Some(false)),
            // truncated / malformed
            ("SELECT * FROM t WHERE a IN (SELECT b FROM u WHERE c = …", Select, &["t", "u"], Some(false)),
            ("INSERT INTO t(a, b) VALUES (?, …", Insert, &["t"], Some(false)),
            ("UPDATE t SET", Update, &["t"], Some(false)),
            ("SELECT FROM WHERE", Select, &[], None),
        ];
        let mut bad = Vec::new();
        for (sql, kind, tables, parsed) in cases {
            let got = classify(sql);
            let want_tables: Vec<String> = tables.iter().map(|s| s.to_string()).collect();
            if got.kind != *kind
                || got.tables != want_tables
                || parsed.is_some_and(|p| p != got.parsed)
            {
                bad.push(format!(
                    "{sql}\n   got  {:?} {:?} parsed={}\n   want {:?} {:?} parsed={:?}",
                    got.kind, got.tables, got.parsed, kind, want_tables, parsed
                ));
            }
            // The fallback must agree with the parser on kind and tables.
            let toks = tokenize(sql);
            if keyword_kind(&toks) != *kind {
                bad.push(format!("{sql}: keyword kind {:?}", keyword_kind(&toks)));
            }
            let scanned = finish_tables(scan_tables(&toks));
            if scanned != want_tables {
                bad.push(format!("{sql}: scanned tables {scanned:?}"));
            }
        }
        assert!(bad.is_empty(), "mismatches:\n{}", bad.join("\n"));
    }

    /// The token scan alone, on statements sqlparser may also parse.
    #[test]
    fn fallback_scan_tables() {
        let cases: &[(&str, &[&str])] = &[
            ("SELECT * FROM t WHERE a = ?", &["t"]),
            ("SELECT * FROM a, b AS x, \"C d\" WHERE a.x IN (SELECT y FROM e)", &["a", "b", "C d", "e"]),
            ("SELECT * FROM a JOIN b ON a.x = b.y, c", &["a", "b", "c"]),
            ("SELECT * FROM (SELECT * FROM t) AS s JOIN u USING (id)", &["t", "u"]),
            ("SELECT * FROM temp.t, main.\"u\"", &["main.u", "temp.t"]),
            ("SELECT * FROM t INDEXED BY i WHERE ?", &["t"]),
            ("SELECT f(a, b) FROM t WHERE x IN (?, ?) ORDER BY a, b", &["t"]),
            ("WITH c(x) AS (SELECT * FROM t), d AS NOT MATERIALIZED (SELECT ?) SELECT * FROM c, d", &["t"]),
            ("SELECT * FROM json_each(?) AS j, t", &["t"]),
            ("INSERT OR REPLACE INTO t SELECT * FROM u", &["t", "u"]),
            ("SELECT CAST(a AS TEXT) FROM t", &["t"]),
            ("CREATE VIEW v(a) AS SELECT a FROM t", &["t", "v"]),
            ("SELECT 'FROM x' FROM t", &["t"]),
            ("SELECT * FROM [a]]b]", &["a"]),
            ("SELECT * FROM \"a\"\"b\"", &["a\"b"]),
            ("CREATE VIRTUAL TABLE docs USING fts5(title, body)", &["docs"]),
            ("INSERT OR REPLACE INTO t(a, b) VALUES (?, ?) ON CONFLICT(a) DO UPDATE SET b = ?", &["t"]),
            ("CREATE TRIGGER tr BEFORE DELETE ON main.t BEGIN DELETE FROM u WHERE id = old.id; END", &["main.t", "u"]),
            ("CREATE INDEX i ON t(a)", &["t"]),
            ("DROP TABLE IF EXISTS [x]", &["x"]),
            ("REINDEX t", &["t"]),
            ("ANALYZE", &[]),
            ("PRAGMA table_info(t)", &[]),
            ("SELECT * FROM", &[]),
            ("SELECT * FROM t.", &["t"]),
        ];
        for (sql, want) in cases {
            let got = finish_tables(scan_tables(&tokenize(sql)));
            assert_eq!(got, *want, "{sql}");
        }
    }

    #[test]
    fn tables_sorted_and_deduped_case_insensitively() {
        let got = c("SELECT * FROM b JOIN A ON ? JOIN a ON ? JOIN B ON ? JOIN c ON ?");
        assert_eq!(got.tables, vec!["A", "B", "c"]);
    }

    #[test]
    fn oversize_skips_parser() {
        let mut sql = String::from("SELECT * FROM t WHERE a = ?");
        while sql.len() <= MAX_PARSE_BYTES {
            sql.push_str(" AND a = ?");
        }
        let got = c(&sql);
        assert!(!got.parsed);
        assert_eq!(got.kind, Kind::Select);
        assert_eq!(got.tables, vec!["t"]);
    }

    #[test]
    fn deep_nesting_and_long_chains_do_not_crash() {
        // Run everything on a small caller stack: sqlparser gets its own.
        let h = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(|| {
                let deep = format!("SELECT {}?{} FROM t", "(".repeat(5000), ")".repeat(5000));
                let got = classify(&deep);
                assert_eq!(
                    (got.kind, got.tables),
                    (Kind::Select, vec!["t".to_string()])
                );

                let nested = format!("SELECT {}?{} FROM t", "(".repeat(20), ")".repeat(20));
                assert!(classify(&nested).parsed);

                // Longest chains still given to sqlparser.
                let mut plus = String::from("SELECT a");
                for _ in 0..MAX_PARSE_OPERATORS - 1 {
                    plus.push_str(" + a");
                }
                plus.push_str(" FROM t");
                let got = classify(&plus);
                assert!(got.parsed);
                assert_eq!(got.tables, vec!["t"]);

                let mut and = String::from("SELECT * FROM t WHERE a = ?");
                while and.len() < MAX_PARSE_BYTES - 16 {
                    and.push_str(" AND a = ?");
                }
                let got = classify(&and);
                assert!(!got.parsed);
                assert_eq!(
                    (got.kind, got.tables),
                    (Kind::Select, vec!["t".to_string()])
                );
            })
            .unwrap();
        h.join().expect("no panic, no stack overflow");
    }

    #[test]
    fn fuzz_never_panics() {
        let words = [
            "SELECT", "FROM", "WITH", "AS", "(", ")", ",", ".", ";", "t", "\"q", "[b", "'s",
            "INSERT", "INTO", "UPDATE", "OR", "TABLE", "IF", "NOT", "EXISTS", "CREATE", "INDEX",
            "ON", "JOIN", "?", "VALUES", "x'", "--", "/*", "*/", "é", "…", "DELETE",
        ];
        let mut state: u64 = 0x2545f4914f6cdd1d;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let mut s = String::new();
            for _ in 0..(next() % 25) {
                s.push_str(words[(next() % words.len() as u64) as usize]);
                if next() % 3 != 0 {
                    s.push(' ');
                }
            }
            let got = classify(&s);
            assert!(got.tables.windows(2).all(|w| w[0] != w[1]));
        }
    }
}
