//! SQL normalizer: SQL text -> normalized text + stable 64-bit fingerprint + sqlcommenter tags.
//!
//! A hand-written, single-pass, allocation-light tokenizer for SQLite SQL
//! (token rules follow SQLite's own `tokenize.c`). It never panics, never
//! recurses and runs in linear time on any byte string.
//!
//! Rules (the normalized text is a contract: fingerprints are persisted):
//! - Literals become `?`: strings `'..'` (with `''` escapes), blobs `x'..'`/`X'..'`,
//!   numbers (`1`, `1.5`, `.5`, `1.`, `1e10`, `1.5E-3`, `0x1F`, `1_000`).
//! - A unary `-`/`+` before a number is folded into the literal (`a = -5` -> `a = ?`).
//!   A sign is unary when the previous token is not a value: identifier, literal,
//!   parameter, `)` or one of the keywords NULL, END, CURRENT_DATE, CURRENT_TIME,
//!   CURRENT_TIMESTAMP (`a - 5` -> `a - ?`). A unary sign before anything else is
//!   written without a following space (`-a`).
//! - The 147 SQLite keywords (<https://sqlite.org/lang_keywords.html>) are matched
//!   case-insensitively and written UPPERCASE -- also when used as a bare
//!   identifier (a column named `key` is written `KEY`). Everything else is kept
//!   exactly as written: identifiers (`名前`, `naïve`), quoted identifiers
//!   (`"x y"`, `[x]`, `` `x` ``; a double-quoted token is always an identifier),
//!   parameters (`?`, `?NNN`, `:name`, `@name`, `$name`, `#name`), operators.
//! - Comments (`-- ..` to end of line, `/* .. */`, unterminated ones) are removed.
//! - Canonical spacing, independent of the input's white space: one space
//!   between tokens, except none before `,` `)` `.` `;`, none after `(` `.` `~`
//!   or a unary sign, and none before `(` that follows an identifier or the
//!   function-like keywords CAST, RAISE, REPLACE (`count(*)`, `t(a, b)`,
//!   `IN (?)`, `VALUES (?, ?)`). List items are thus separated by `, `.
//! - Trailing `;` (and white space) removed. Inner `;` are kept.
//! - `IN (..)` / `NOT IN (..)` whose list holds only literals and anonymous `?`
//!   collapses to `IN (?)`. Lists with named/numbered parameters, columns,
//!   NULL, expressions or subqueries are normalized token by token.
//! - After `VALUES`, consecutive row groups whose normalized forms are identical
//!   collapse into one: `VALUES (1, 'a'), (2, 'b')` -> `VALUES (?, ?)`.
//!   Differing neighbours are kept (`(?, ?), (?, NULL)`).
//! - sqlcommenter comments (`/*key='value',k2='v2'*/`, keys and values
//!   URL-encoded, `\'` escapes) are lifted into `tags` (URL-decoded, sorted by
//!   key, last one wins on duplicate keys). Like every comment they never
//!   reach the text, so they never change the fingerprint.
//! - Bytes >= 0x80 are identifier characters (as in SQLite); ASCII control
//!   characters other than white space (NUL included) are ignored like white
//!   space; other unknown ASCII punctuation is kept as a one-byte token. The
//!   output is valid UTF-8 (invalid sequences replaced by U+FFFD).
//! - `fingerprint` = [`hash64`] (FNV-1a 64) of the full normalized text; `text`
//!   is cut to [`MAX_QUERY_TEXT_BYTES`] (at a char boundary, ending in `…`).

/// Normalized text stored at most this many bytes (including the trailing `…`
/// added when cut). The fingerprint is always over the full normalized text.
pub const MAX_QUERY_TEXT_BYTES: usize = 16 * 1024;

/// Result of [`normalize`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Normalized {
    /// Normalized SQL, at most [`MAX_QUERY_TEXT_BYTES`] bytes.
    pub text: String,
    /// `hash64` of the full (uncut) normalized text.
    pub fingerprint: u64,
    /// sqlcommenter tags, URL-decoded, sorted by key, keys unique.
    pub tags: Vec<(String, String)>,
}

// Implementation notes (speed; the rules above are the contract, and
// `tests::same_output_as_reference` checks this implementation against the
// previous, straightforward one kept under `#[cfg(test)] mod reference`):
// - One pass over the input, dispatching on a 256-entry byte-kind table; a
//   single space after a token is skipped without a dispatch.
// - Keywords: the word's first 16 bytes are loaded as one `u128` straight from
//   the input, masked to its length and upper-cased with one AND, and looked
//   up with a perfect hash (one probe, one compare); the uppercase spelling is
//   then written from that register.
// - The output buffer is zero-filled at twice the input length plus slack
//   (never grown: see `Writer`), so tokens of up to 16 bytes are written as
//   one fixed 16-byte store.
// - The FNV-1a fingerprint is computed incrementally, in batches of at least
//   `HASH_BATCH` bytes, behind the writer and never past a point the IN /
//   VALUES collapsing may still cut back to, so the CPU overlaps the serial
//   multiply chain with the tokenizing. The rare cases where hashed bytes
//   change afterwards (trailing `;` removal reaching into them, invalid
//   UTF-8 replacement) hash the text again from scratch.
// - sqlcommenter values without `\` escapes and keys/values without `%` are
//   decoded straight from the comment bytes.

/// SQLite's full keyword list (147 words), kept sorted (a test checks it).
const KEYWORDS: [&str; 147] = [
    "ABORT",
    "ACTION",
    "ADD",
    "AFTER",
    "ALL",
    "ALTER",
    "ALWAYS",
    "ANALYZE",
    "AND",
    "AS",
    "ASC",
    "ATTACH",
    "AUTOINCREMENT",
    "BEFORE",
    "BEGIN",
    "BETWEEN",
    "BY",
    "CASCADE",
    "CASE",
    "CAST",
    "CHECK",
    "COLLATE",
    "COLUMN",
    "COMMIT",
    "CONFLICT",
    "CONSTRAINT",
    "CREATE",
    "CROSS",
    "CURRENT",
    "CURRENT_DATE",
    "CURRENT_TIME",
    "CURRENT_TIMESTAMP",
    "DATABASE",
    "DEFAULT",
    "DEFERRABLE",
    "DEFERRED",
    "DELETE",
    "DESC",
    "DETACH",
    "DISTINCT",
    "DO",
    "DROP",
    "EACH",
    "ELSE",
    "END",
    "ESCAPE",
    "EXCEPT",
    "EXCLUDE",
    "EXCLUSIVE",
    "EXISTS",
    "EXPLAIN",
    "FAIL",
    "FILTER",
    "FIRST",
    "FOLLOWING",
    "FOR",
    "FOREIGN",
    "FROM",
    "FULL",
    "GENERATED",
    "GLOB",
    "GROUP",
    "GROUPS",
    "HAVING",
    "IF",
    "IGNORE",
    "IMMEDIATE",
    "IN",
    "INDEX",
    "INDEXED",
    "INITIALLY",
    "INNER",
    "INSERT",
    "INSTEAD",
    "INTERSECT",
    "INTO",
    "IS",
    "ISNULL",
    "JOIN",
    "KEY",
    "LAST",
    "LEFT",
    "LIKE",
    "LIMIT",
    "MATCH",
    "MATERIALIZED",
    "NATURAL",
    "NO",
    "NOT",
    "NOTHING",
    "NOTNULL",
    "NULL",
    "NULLS",
    "OF",
    "OFFSET",
    "ON",
    "OR",
    "ORDER",
    "OTHERS",
    "OUTER",
    "OVER",
    "PARTITION",
    "PLAN",
    "PRAGMA",
    "PRECEDING",
    "PRIMARY",
    "QUERY",
    "RAISE",
    "RANGE",
    "RECURSIVE",
    "REFERENCES",
    "REGEXP",
    "REINDEX",
    "RELEASE",
    "RENAME",
    "REPLACE",
    "RESTRICT",
    "RETURNING",
    "RIGHT",
    "ROLLBACK",
    "ROW",
    "ROWS",
    "SAVEPOINT",
    "SELECT",
    "SET",
    "TABLE",
    "TEMP",
    "TEMPORARY",
    "THEN",
    "TIES",
    "TO",
    "TRANSACTION",
    "TRIGGER",
    "UNBOUNDED",
    "UNION",
    "UNIQUE",
    "UPDATE",
    "USING",
    "VACUUM",
    "VALUES",
    "VIEW",
    "VIRTUAL",
    "WHEN",
    "WHERE",
    "WINDOW",
    "WITH",
    "WITHOUT",
];

/// Longest keyword (`CURRENT_TIMESTAMP`).
const MAX_KEYWORD_LEN: usize = 17;

/// Up to the first 16 bytes of a word, little-endian, as one integer key.
const fn pack(w: &[u8]) -> u128 {
    let mut k = 0u128;
    let mut i = 0;
    while i < w.len() && i < 16 {
        k |= (w[i] as u128) << (8 * i);
        i += 1;
    }
    k
}

// Keyword tables are indexed by `slot` = index in KEYWORDS + 1 (0: none) and
// have 256 entries, so that a `u8` slot needs no bounds check.

/// First 16 bytes of each keyword, packed; the other entries can never equal
/// a lookup key (those have bit 0x20 clear).
static KW_KEYS: [u128; 256] = {
    let mut t = [u128::MAX; 256];
    let mut i = 0;
    while i < KEYWORDS.len() {
        t[i + 1] = pack(KEYWORDS[i].as_bytes());
        i += 1;
    }
    t
};

/// Length of each keyword.
static KW_LEN: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < KEYWORDS.len() {
        t[i + 1] = KEYWORDS[i].len() as u8;
        i += 1;
    }
    t
};

/// Slots in the keyword hash table (a power of two).
const KW_TABLE_BITS: u32 = 10;

/// Perfect hash of the packed keywords into KW_TABLE (the multiplier was
/// searched for; building KW_TABLE fails to compile on any collision).
const fn kw_hash(key: u128) -> usize {
    let x = (key as u64) ^ ((key >> 64) as u64).rotate_left(29);
    (x.wrapping_mul(0x566f_709c_e966_a221) >> (64 - KW_TABLE_BITS)) as usize
}

/// Collision-free hash table: slot -> index into KEYWORDS + 1, 0 when empty.
static KW_TABLE: [u8; 1 << KW_TABLE_BITS] = {
    let mut t = [0u8; 1 << KW_TABLE_BITS];
    let mut i = 0;
    while i < KEYWORDS.len() {
        let w = KEYWORDS[i].as_bytes();
        // `keyword_at` relies on this.
        assert!(w.len() <= 16 || (w.len() == 17 && w[16] == b'P'));
        let slot = kw_hash(pack(w));
        assert!(t[slot] == 0, "keyword hash collision");
        t[slot] = i as u8 + 1;
        i += 1;
    }
    t
};

/// Index of an (uppercase) keyword in KEYWORDS; compile error if absent.
const fn kw_id(w: &str) -> u8 {
    let w = w.as_bytes();
    let mut i = 0;
    while i < KEYWORDS.len() {
        let k = KEYWORDS[i].as_bytes();
        if k.len() == w.len() {
            let mut j = 0;
            while j < k.len() && k[j] == w[j] {
                j += 1;
            }
            if j == k.len() {
                return i as u8;
            }
        }
        i += 1;
    }
    panic!("not a keyword")
}

// Properties of a token (`Writer::flags`: those of the previous one).
/// Ends a value: a following `-`/`+` is binary.
const F_VALUE: u8 = 1;
/// Identifier or function-like keyword: no space before a following `(`.
const F_CALLABLE: u8 = 2;
/// The keyword IN.
const F_IN: u8 = 4;
/// The keyword VALUES.
const F_VALUES: u8 = 8;
/// A literal or anonymous `?`: an item of a collapsible IN list.
const F_ITEM: u8 = 16;

/// `F_*` flags of each keyword.
static KW_FLAGS: [u8; 256] = {
    let mut t = [0u8; 256];
    t[kw_id("IN") as usize + 1] = F_IN;
    t[kw_id("VALUES") as usize + 1] = F_VALUES;
    t[kw_id("CAST") as usize + 1] = F_CALLABLE;
    t[kw_id("RAISE") as usize + 1] = F_CALLABLE;
    t[kw_id("REPLACE") as usize + 1] = F_CALLABLE;
    t[kw_id("NULL") as usize + 1] = F_VALUE;
    t[kw_id("END") as usize + 1] = F_VALUE;
    t[kw_id("CURRENT_DATE") as usize + 1] = F_VALUE;
    t[kw_id("CURRENT_TIME") as usize + 1] = F_VALUE;
    t[kw_id("CURRENT_TIMESTAMP") as usize + 1] = F_VALUE;
    t
};

/// The first 16 bytes of `s` as a little-endian integer (0 bytes past its end).
#[inline(always)]
fn load16(s: &[u8]) -> u128 {
    match s.first_chunk::<16>() {
        Some(a) => u128::from_le_bytes(*a),
        None => load_short(s),
    }
}

/// `load16` of fewer than 16 bytes, with overlapping 8- or 4-byte loads.
#[inline(never)]
fn load_short(s: &[u8]) -> u128 {
    let n = s.len();
    let word = |b: Option<&[u8; 8]>| u64::from_le_bytes(b.copied().unwrap_or_default());
    let half = |b: Option<&[u8; 4]>| u32::from_le_bytes(b.copied().unwrap_or_default());
    if n >= 8 {
        // Bytes 8.. come from the last 8, shifted down.
        let lo = word(s.first_chunk::<8>());
        let hi = word(s.last_chunk::<8>())
            .checked_shr(8 * (16 - n as u32))
            .unwrap_or(0);
        lo as u128 | (hi as u128) << 64
    } else if n >= 4 {
        let lo = half(s.first_chunk::<4>());
        let hi = half(s.last_chunk::<4>())
            .checked_shr(8 * (8 - n as u32))
            .unwrap_or(0);
        (lo as u64 | (hi as u64) << 32) as u128
    } else {
        let mut k = 0u128;
        for (j, &b) in s.iter().enumerate() {
            k |= (b as u128) << (8 * j);
        }
        k
    }
}

/// `KEY_MASK[n]` keeps the first `n` bytes of a loaded word and clears bit
/// 0x20 of each: that upper-cases letters and keeps `_`, and maps digits and
/// `$` to bytes no keyword has, so they still cannot match.
static KEY_MASK: [u128; 17] = {
    let mut t = [0u128; 17];
    let mut n = 0;
    while n <= 16 {
        let keep = if n == 16 {
            u128::MAX
        } else {
            (1u128 << (8 * n)) - 1
        };
        t[n] = keep & u128::from_le_bytes([0xDF; 16]);
        n += 1;
    }
    t
};

/// The keyword spelled (case-insensitively) by the `len`-byte word at the start
/// of `s` (`w` = its first 16 bytes, as loaded by `load16`): its index in
/// KEYWORDS + 1 (its `slot` in the keyword tables) and its first 16 bytes in
/// uppercase.
#[inline(always)]
fn keyword_at(s: &[u8], w: u128, len: usize) -> Option<(u8, u128)> {
    if !(2..=MAX_KEYWORD_LEN).contains(&len) {
        return None;
    }
    let key = w & KEY_MASK[len.min(16)];
    let slot = KW_TABLE[kw_hash(key)];
    if KW_KEYS[slot as usize] != key || KW_LEN[slot as usize] as usize != len {
        return None;
    }
    // Only CURRENT_TIMESTAMP is longer than 16 bytes.
    if len > 16 && s.get(16).map(u8::to_ascii_uppercase) != Some(b'P') {
        return None;
    }
    Some((slot, key))
}

/// The index in KEYWORDS of the keyword `word` spells (case-insensitive), if any.
fn keyword(word: &[u8]) -> Option<u8> {
    keyword_at(word, load16(word), word.len()).map(|(slot, _)| slot - 1)
}

/// Is `word` one of SQLite's keywords (case-insensitive)? Shared with the
/// classifier's token scan.
pub fn is_keyword(word: &str) -> bool {
    keyword(word.as_bytes()).is_some()
}

// Byte classes.
const C_SPACE: u8 = 1; // white space and ignored control bytes
const C_ID_START: u8 = 2; // letters, '_', bytes >= 0x80
const C_ID: u8 = 4; // identifier continuation: C_ID_START, digits, '$'
const C_DIGIT: u8 = 8;
const C_HEX: u8 = 16;
const C_NUM: u8 = 32; // digits and '_'
const C_HEX_NUM: u8 = 64; // hex digits and '_'

static CLASS: [u8; 256] = build_classes();

const fn build_classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0usize;
    while i < 256 {
        let b = i as u8;
        let mut c = 0u8;
        if b < 0x20 || b == 0x7f {
            c |= C_SPACE;
        }
        if b == b' ' {
            c |= C_SPACE;
        }
        if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 {
            c |= C_ID_START | C_ID;
        }
        if b.is_ascii_digit() {
            c |= C_DIGIT | C_ID | C_HEX;
        }
        if b == b'$' {
            c |= C_ID;
        }
        if matches!(b, b'a'..=b'f' | b'A'..=b'F') {
            c |= C_HEX;
        }
        if c & C_HEX != 0 || b == b'_' {
            c |= C_HEX_NUM;
        }
        if c & C_DIGIT != 0 || b == b'_' {
            c |= C_NUM;
        }
        t[i] = c;
        i += 1;
    }
    t
}

#[inline(always)]
fn class(b: u8) -> u8 {
    CLASS[b as usize]
}

#[inline(always)]
fn is_id(b: u8) -> bool {
    class(b) & C_ID != 0
}

#[inline(always)]
fn is_digit(b: u8) -> bool {
    class(b) & C_DIGIT != 0
}

#[inline(always)]
fn at(s: &[u8], i: usize) -> u8 {
    // 0 past the end: no class bit set and matches no punctuation below.
    match s.get(i) {
        Some(&b) => b,
        None => 0,
    }
}

// What the first byte of a token says (`KIND`).
const K_PUNCT: u8 = 0;
const K_SPACE: u8 = 1;
const K_IDENT: u8 = 2; // identifier start other than x / X
const K_X: u8 = 3; // x / X: blob literal or identifier
const K_DIGIT: u8 = 4;
const K_QUOTE: u8 = 5; // '
const K_DQUOTE: u8 = 6; // " and `
const K_BRACKET: u8 = 7; // [
const K_QMARK: u8 = 8; // ?
const K_VAR: u8 = 9; // : @ $ #
const K_MINUS: u8 = 10;
const K_SLASH: u8 = 11;
const K_DOT: u8 = 12;
const K_OPEN: u8 = 13; // (
const K_CLOSE: u8 = 14; // )
const K_COMMA: u8 = 15; // ,

static KIND: [u8; 256] = {
    let mut t = [K_PUNCT; 256];
    let mut i = 0usize;
    while i < 256 {
        let c = CLASS[i];
        t[i] = if c & C_SPACE != 0 {
            K_SPACE
        } else if c & C_ID_START != 0 {
            K_IDENT
        } else if c & C_DIGIT != 0 {
            K_DIGIT
        } else {
            K_PUNCT
        };
        i += 1;
    }
    t[b'x' as usize] = K_X;
    t[b'X' as usize] = K_X;
    t[b'\'' as usize] = K_QUOTE;
    t[b'"' as usize] = K_DQUOTE;
    t[b'`' as usize] = K_DQUOTE;
    t[b'[' as usize] = K_BRACKET;
    t[b'?' as usize] = K_QMARK;
    t[b':' as usize] = K_VAR;
    t[b'@' as usize] = K_VAR;
    t[b'$' as usize] = K_VAR;
    t[b'#' as usize] = K_VAR;
    t[b'-' as usize] = K_MINUS;
    t[b'/' as usize] = K_SLASH;
    t[b'.' as usize] = K_DOT;
    t[b'(' as usize] = K_OPEN;
    t[b')' as usize] = K_CLOSE;
    t[b',' as usize] = K_COMMA;
    t
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Values {
    Off,
    /// Expect `(` opening a row group.
    Expect,
    /// Inside a row group at this paren depth.
    Group(u32),
    /// After a row group: expect `,` or leave.
    After,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[inline(always)]
fn fnv_update(mut h: u64, bytes: &[u8]) -> u64 {
    let mut quads = bytes.chunks_exact(4);
    for q in &mut quads {
        for &b in q {
            h = (h ^ b as u64).wrapping_mul(FNV_PRIME);
        }
    }
    for &b in quads.remainder() {
        h = (h ^ b as u64).wrapping_mul(FNV_PRIME);
    }
    h
}

/// The IN-list and VALUES collapsing state (see the module documentation).
struct Collapse {
    /// Position of the `(` of an IN list that is still collapsible.
    in_start: Option<usize>,
    in_items: u32,
    values: Values,
    values_prev: Option<(usize, usize)>,
    values_cur: usize,
}

impl Collapse {
    /// Advance the state machines over a token just written at `pos`
    /// (`buf[..len]` is the output): `p` is its byte when it is one-byte
    /// punctuation, else 0, `flags` its `F_*` flags, `prev` those of the
    /// token before. Returns the new output length (collapsing cuts it back)
    /// and whether output past some point may still be cut back.
    #[inline(never)]
    fn step(
        &mut self,
        buf: &mut [u8],
        mut len: usize,
        pos: usize,
        p: u8,
        flags: u8,
        prev: u8,
    ) -> (usize, bool) {
        let is_open = p == b'(';
        let is_close = p == b')';
        let is_comma = p == b',';

        // IN-list collapse.
        if let Some(start) = self.in_start {
            if flags & F_ITEM != 0 {
                self.in_items = self.in_items.saturating_add(1);
            } else if is_comma {
            } else if is_close {
                if self.in_items > 0 {
                    // The list was at least `(?)`, so this fits.
                    if let Some(dst) = buf.get_mut(start..start + 3) {
                        dst.copy_from_slice(b"(?)");
                        len = start + 3;
                    }
                }
                self.in_start = None;
            } else {
                self.in_start = None;
            }
        } else if is_open && prev & F_IN != 0 {
            self.in_start = Some(pos);
            self.in_items = 0;
        }

        // Multi-row VALUES collapse.
        match self.values {
            Values::Off => {
                if flags & F_VALUES != 0 {
                    self.values = Values::Expect;
                    self.values_prev = None;
                }
            }
            Values::Expect => {
                if is_open {
                    self.values_cur = pos;
                    self.values = Values::Group(1);
                } else {
                    self.values = Values::Off;
                }
            }
            Values::Group(depth) => {
                if is_open {
                    self.values = Values::Group(depth.saturating_add(1));
                } else if is_close {
                    if depth > 1 {
                        self.values = Values::Group(depth - 1);
                    } else {
                        let cur = (self.values_cur, len);
                        match self.values_prev {
                            Some(prev) if buf.get(prev.0..prev.1) == buf.get(cur.0..cur.1) => {
                                len = prev.1;
                            }
                            _ => self.values_prev = Some(cur),
                        }
                        self.values = Values::After;
                    }
                }
            }
            Values::After => {
                self.values = if is_comma {
                    Values::Expect
                } else {
                    Values::Off
                };
            }
        }
        (len, self.in_start.is_some() || self.values != Values::Off)
    }
}

const P_NO_SPACE_BEFORE: u8 = 1;
const P_NO_SPACE_AFTER: u8 = 2;
/// `(`: no space before it after an identifier or function-like keyword.
const P_OPEN: u8 = 4;
/// `-` / `+`: may be a unary sign.
const P_SIGN: u8 = 8;

/// Spacing and roles of one-byte punctuation.
static PUNCT: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b')' as usize] = P_NO_SPACE_BEFORE;
    t[b',' as usize] = P_NO_SPACE_BEFORE;
    t[b';' as usize] = P_NO_SPACE_BEFORE;
    t[b'.' as usize] = P_NO_SPACE_BEFORE | P_NO_SPACE_AFTER;
    t[b'(' as usize] = P_NO_SPACE_AFTER | P_OPEN;
    t[b'~' as usize] = P_NO_SPACE_AFTER;
    t[b'-' as usize] = P_SIGN;
    t[b'+' as usize] = P_SIGN;
    t
};

/// End of a quoted run starting at `i` (the opening quote) closed by `close`;
/// a doubled closing quote is an escape when `doubled`. Unterminated: `s.len()`.
#[inline]
fn scan_quoted(s: &[u8], i: usize, close: u8, doubled: bool) -> usize {
    let mut j = i + 1;
    loop {
        match s.get(j..).and_then(|t| t.iter().position(|&b| b == close)) {
            None => return s.len(),
            Some(k) => {
                j += k + 1;
                if doubled && at(s, j) == close {
                    j += 1;
                } else {
                    return j;
                }
            }
        }
    }
}

/// Length of the run of bytes of class `class_bit` at the start of `s`.
#[inline(always)]
fn span(s: &[u8], class_bit: u8) -> usize {
    // Four bytes per bounds check.
    let mut quads = s.chunks_exact(4);
    let mut j = 0;
    for q in &mut quads {
        for (k, &b) in q.iter().enumerate() {
            if class(b) & class_bit == 0 {
                return j + k;
            }
        }
        j += 4;
    }
    j + quads
        .remainder()
        .iter()
        .position(|&b| class(b) & class_bit == 0)
        .unwrap_or(quads.remainder().len())
}

/// Length of the numeric literal at the start of `s` (a digit, or `.` before
/// a digit).
#[inline]
fn number_len(s: &[u8]) -> usize {
    let mut j;
    if at(s, 0) == b'0' && (at(s, 1) | 0x20) == b'x' && class(at(s, 2)) & C_HEX != 0 {
        j = 2 + span(s.get(2..).unwrap_or(&[]), C_HEX_NUM);
    } else {
        j = span(s, C_NUM);
        if at(s, j) == b'.' {
            j += 1;
            j += span(s.get(j..).unwrap_or(&[]), C_NUM);
        }
        if (at(s, j) | 0x20) == b'e'
            && (is_digit(at(s, j + 1))
                || (matches!(at(s, j + 1), b'+' | b'-') && is_digit(at(s, j + 2))))
        {
            j += 2;
            j += span(s.get(j..).unwrap_or(&[]), C_DIGIT);
        }
    }
    // SQLite makes a number glued to identifier characters one (illegal) token.
    j + span(s.get(j..).unwrap_or(&[]), C_ID)
}

/// End of a `:name`/`@name`/`$name`/`#name` variable starting at `i`, following
/// SQLite (TCL-style `::` and `(..)` suffixes). `None` when no name follows.
fn scan_variable(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    let mut n = 0usize;
    while j < s.len() {
        let c = s[j];
        if is_id(c) {
            n += 1;
            j += 1;
        } else if c == b'(' && n > 0 {
            j += 1;
            while j < s.len() && class(s[j]) & C_SPACE == 0 && s[j] != b')' {
                j += 1;
            }
            if at(s, j) == b')' {
                j += 1;
            }
            break;
        } else if c == b':' && at(s, j + 1) == b':' {
            j += 2;
        } else {
            break;
        }
    }
    if n == 0 {
        None
    } else {
        Some(j)
    }
}

/// Output builder: spacing, collapsing, incremental fingerprint.
///
/// `buf` is zero-filled and never grows: it holds `2 * input length + SLACK`
/// bytes. Each token writes at most a space plus as many bytes as it consumed
/// from the input, so the output never exceeds twice the input, and a token
/// can be written as one fixed 16-byte block (of which only its length
/// counts). Writes are still bounds-checked (`get_mut`), so a broken bound
/// could only lose output, never panic (the differential test would notice).
struct Writer {
    buf: Vec<u8>,
    /// `buf[..len]` is the output.
    len: usize,
    /// No space before the next token (start of text, after `(` `.` `~` or a
    /// unary sign).
    no_space: bool,
    /// `F_*` flags of the previous token.
    flags: u8,
    /// An IN list or VALUES rows are being collapsed: output may be cut back.
    special: bool,
    /// FNV-1a over `buf[..hashed]`: caught up at the start of a token once
    /// `HASH_BATCH` bytes are pending, and not while `special` (so the CPU
    /// overlaps the serial multiply chain with the tokenizing).
    hash: u64,
    hashed: usize,
    collapse: Collapse,
}

/// Output bytes hashed at a time (fewer, longer hash loops).
const HASH_BATCH: usize = 16;

/// Bytes of `Writer::buf` past twice the input length.
const SLACK: usize = 32;

impl Writer {
    /// Hash the output so far and write the separating space; returns the
    /// token's position.
    #[inline(always)]
    fn begin(&mut self, no_space_before: bool) -> usize {
        if !self.special && self.len.saturating_sub(self.hashed) >= HASH_BATCH {
            if let Some(done) = self.buf.get(self.hashed..self.len) {
                self.hash = fnv_update(self.hash, done);
            }
            self.hashed = self.len;
        }
        if let Some(b) = self.buf.get_mut(self.len) {
            *b = b' ';
        }
        self.len += !(self.no_space | no_space_before) as usize;
        self.len
    }

    /// Finish the token written at `pos` (`p`: its byte when it is one-byte
    /// punctuation, else 0).
    #[inline(always)]
    fn end(&mut self, pos: usize, p: u8, flags: u8) {
        if self.special || (flags & F_VALUES) | (self.flags & F_IN) != 0 {
            (self.len, self.special) =
                self.collapse
                    .step(&mut self.buf, self.len, pos, p, flags, self.flags);
        }
        self.flags = flags;
    }

    /// Write the first `len` (<= 16) bytes of `block`.
    #[inline(always)]
    fn put16(&mut self, block: u128, len: usize) {
        let at = self.len;
        if let Some(dst) = self
            .buf
            .get_mut(at..)
            .and_then(|b| b.first_chunk_mut::<16>())
        {
            *dst = block.to_le_bytes();
        }
        self.len = at + len;
    }

    /// A word: identifier, keyword, parameter, quoted identifier or
    /// multi-byte operator of at most 16 bytes.
    #[inline(always)]
    fn word(&mut self, block: u128, len: usize, flags: u8) {
        let pos = self.begin(false);
        self.put16(block, len);
        self.no_space = false;
        self.end(pos, 0, flags);
    }

    /// A literal or anonymous `?`, written `?`.
    #[inline(always)]
    fn literal(&mut self, flags: u8) {
        let pos = self.begin(false);
        if let Some(b) = self.buf.get_mut(pos) {
            *b = b'?';
        }
        self.len = pos + 1;
        self.no_space = false;
        self.end(pos, 0, flags);
    }

    /// One-byte punctuation (`sign`: a unary sign, no space after it).
    #[inline(always)]
    fn punct(&mut self, p: u8, sign: bool) {
        let info = PUNCT[p as usize];
        let pos = self.begin(
            info & P_NO_SPACE_BEFORE != 0 || (info & P_OPEN != 0 && self.flags & F_CALLABLE != 0),
        );
        if let Some(b) = self.buf.get_mut(pos) {
            *b = p;
        }
        self.len = pos + 1;
        self.no_space = sign || info & P_NO_SPACE_AFTER != 0;
        self.end(pos, p, if p == b')' { F_VALUE } else { 0 });
    }

    /// A pending unary sign.
    #[inline(never)]
    fn sign(&mut self, p: u8) {
        self.punct(p, true);
    }

    /// A token of any length (in uppercase when `upper`).
    #[inline(never)]
    fn long(&mut self, text: &[u8], upper: bool, flags: u8) {
        let pos = self.begin(false);
        if let Some(dst) = self.buf.get_mut(pos..pos + text.len()) {
            dst.copy_from_slice(text);
            if upper {
                dst.make_ascii_uppercase();
            }
        }
        self.len = pos + text.len();
        self.no_space = false;
        self.end(pos, 0, flags);
    }

    /// The `len`-byte token at the start of `text`, as written.
    #[inline(always)]
    fn verbatim(&mut self, text: &[u8], len: usize, flags: u8) {
        if len <= 16 {
            self.word(load16(text), len, flags);
        } else {
            self.long(text.get(..len).unwrap_or(text), false, flags);
        }
    }
}

/// Normalize one SQL statement (bytes may be invalid UTF-8: treat bytes >= 0x80
/// as identifier chars like SQLite does; output is valid UTF-8, invalid
/// sequences replaced). See the module documentation for the rules.
pub fn normalize(sql: &[u8]) -> Normalized {
    let s = sql;
    let cap = s.len().saturating_mul(2).saturating_add(SLACK);
    // Zero-filled. (`vec![0; cap]`, i.e. calloc, is slower for small sizes;
    // for big ones it maps fresh pages, of which only the output written is
    // ever touched.)
    #[allow(clippy::slow_vector_initialization)]
    let buf = if cap <= 1 << 16 {
        let mut b = Vec::with_capacity(cap);
        b.resize(cap, 0);
        b
    } else {
        vec![0u8; cap]
    };
    let mut w = Writer {
        buf,
        len: 0,
        no_space: true,
        flags: 0,
        special: false,
        hash: FNV_OFFSET,
        hashed: 0,
        collapse: Collapse {
            in_start: None,
            in_items: 0,
            values: Values::Off,
            values_prev: None,
            values_cur: 0,
        },
    };
    let mut tags: Vec<(String, String)> = Vec::new();
    // A unary sign waits for the next token: folded into a number, else
    // written (0: none).
    let mut pending_sign = 0u8;
    // The input not consumed yet.
    let mut rest = s;

    while let Some(&c) = rest.first() {
        // (`& 15`: all kinds have arms, no range check.)
        let used = match KIND[c as usize] & 15 {
            K_SPACE => {
                rest = rest.get(1..).unwrap_or(&[]);
                span(rest, C_SPACE)
            }
            K_QUOTE | K_X if c == b'\'' || at(rest, 1) == b'\'' => {
                // '..' string or x'..' blob.
                let len = if c == b'\'' {
                    scan_quoted(rest, 0, b'\'', true)
                } else {
                    scan_quoted(rest, 1, b'\'', false)
                };
                if pending_sign != 0 {
                    w.sign(pending_sign);
                    pending_sign = 0;
                }
                w.literal(F_VALUE | F_ITEM);
                len
            }
            K_IDENT | K_X => {
                let len = span(rest, C_ID);
                if pending_sign != 0 {
                    w.sign(pending_sign);
                    pending_sign = 0;
                }
                let block = load16(rest);
                match keyword_at(rest, block, len) {
                    Some((slot, key)) => {
                        let flags = KW_FLAGS[slot as usize];
                        if len <= 16 {
                            w.word(key, len, flags);
                        } else {
                            w.long(rest.get(..len).unwrap_or(rest), true, flags);
                        }
                    }
                    None => {
                        if len <= 16 {
                            w.word(block, len, F_VALUE | F_CALLABLE);
                        } else {
                            w.long(rest.get(..len).unwrap_or(rest), false, F_VALUE | F_CALLABLE);
                        }
                    }
                }
                len
            }
            K_DIGIT => {
                // A pending sign folds into the number.
                pending_sign = 0;
                w.literal(F_VALUE | F_ITEM);
                number_len(rest)
            }
            K_DOT if is_digit(at(rest, 1)) => {
                pending_sign = 0;
                w.literal(F_VALUE | F_ITEM);
                number_len(rest)
            }
            K_OPEN | K_CLOSE | K_COMMA => {
                if pending_sign != 0 {
                    w.sign(pending_sign);
                    pending_sign = 0;
                }
                w.punct(c, false);
                1
            }
            K_DQUOTE | K_BRACKET => {
                let close = if c == b'[' { b']' } else { c };
                let len = scan_quoted(rest, 0, close, c != b'[');
                if pending_sign != 0 {
                    w.sign(pending_sign);
                    pending_sign = 0;
                }
                w.verbatim(rest, len, F_VALUE | F_CALLABLE);
                len
            }
            K_QMARK => {
                let len = 1 + span(rest.get(1..).unwrap_or(&[]), C_DIGIT);
                if pending_sign != 0 {
                    w.sign(pending_sign);
                    pending_sign = 0;
                }
                if len == 1 {
                    // Anonymous parameter: an IN-list item, written as is.
                    w.literal(F_VALUE | F_ITEM);
                } else {
                    w.verbatim(rest, len, F_VALUE);
                }
                len
            }
            K_VAR if scan_variable(rest, 0).is_some() => {
                let len = scan_variable(rest, 0).unwrap_or(rest.len());
                if pending_sign != 0 {
                    w.sign(pending_sign);
                    pending_sign = 0;
                }
                w.verbatim(rest, len, F_VALUE);
                len
            }
            K_MINUS if at(rest, 1) == b'-' => match rest.iter().position(|&b| b == b'\n') {
                Some(k) => k + 1,
                None => rest.len(),
            },
            K_SLASH if at(rest, 1) == b'*' => skip_block_comment(rest, &mut tags),
            _ => {
                // Operators and other punctuation.
                let c1 = at(rest, 1);
                let len = match (c, c1) {
                    (b'-', b'>') if at(rest, 2) == b'>' => 3,
                    (b'-', b'>')
                    | (b'<', b'=' | b'>' | b'<')
                    | (b'>', b'=' | b'>')
                    | (b'=', b'=')
                    | (b'!', b'=')
                    | (b'|', b'|') => 2,
                    _ => 1,
                };
                let unary = len == 1 && PUNCT[c as usize] & P_SIGN != 0 && w.flags & F_VALUE == 0;
                if pending_sign != 0 {
                    w.sign(pending_sign);
                    pending_sign = 0;
                }
                if unary {
                    // A unary sign: wait for the next token.
                    pending_sign = c;
                } else if len == 1 {
                    w.punct(c, false);
                } else {
                    w.word(load16(rest), len, 0);
                }
                len
            }
        };
        rest = rest.get(used..).unwrap_or(&[]);
        // Most tokens are followed by one space.
        if let [b' ', after @ ..] = rest {
            rest = after;
        }
    }
    if pending_sign != 0 {
        w.sign(pending_sign);
    }

    let Writer {
        mut buf,
        len,
        mut hash,
        hashed,
        ..
    } = w;
    buf.truncate(len);
    while matches!(buf.last(), Some(b';' | b' ')) {
        buf.pop();
    }
    match buf.get(hashed..) {
        Some(rest) => hash = fnv_update(hash, rest),
        // Trailing `;` removal reached into the hashed part.
        None => hash = hash64(&buf),
    }
    let (mut text, fingerprint) = match String::from_utf8(buf) {
        Ok(t) => (t, hash),
        Err(e) => {
            let t = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let h = hash64(t.as_bytes());
            (t, h)
        }
    };
    if text.len() > MAX_QUERY_TEXT_BYTES {
        let mut cut = MAX_QUERY_TEXT_BYTES - '…'.len_utf8();
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    if tags.len() > 1 {
        tags.sort_by(|a, b| a.0.cmp(&b.0)); // stable: equal keys keep input order
        tags.reverse();
        tags.dedup_by(|later, kept| later.0 == kept.0); // keeps the last occurrence
        tags.reverse();
    }
    Normalized {
        text,
        fingerprint,
        tags,
    }
}

/// Length of the `/* .. */` comment at the start of `s` (all of `s` when
/// unterminated); lifts sqlcommenter tags.
#[inline(never)]
fn skip_block_comment(s: &[u8], tags: &mut Vec<(String, String)>) -> usize {
    let mut j = 2;
    while let Some(k) = s.get(j..).and_then(|t| t.iter().position(|&b| b == b'*')) {
        j += k + 1;
        if at(s, j) == b'/' {
            if let Some(body) = s.get(2..j - 1) {
                parse_sqlcommenter(body, tags);
            }
            return j + 1;
        }
    }
    s.len()
}

/// Lift `key='value'` pairs from a comment body into `tags` when the whole body
/// is a sqlcommenter comment; otherwise leave `tags` untouched.
fn parse_sqlcommenter(body: &[u8], tags: &mut Vec<(String, String)>) {
    let is_ws = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c);
    let mut i = 0usize;
    let n = body.len();
    let before = tags.len();
    let fail = |tags: &mut Vec<(String, String)>| tags.truncate(before);
    loop {
        while i < n && is_ws(body[i]) {
            i += 1;
        }
        let k0 = i;
        while i < n && !matches!(body[i], b'=' | b',' | b'\'') && !is_ws(body[i]) {
            i += 1;
        }
        let key = &body[k0..i];
        while i < n && is_ws(body[i]) {
            i += 1;
        }
        if key.is_empty() || at(body, i) != b'=' {
            return fail(tags);
        }
        i += 1;
        while i < n && is_ws(body[i]) {
            i += 1;
        }
        if at(body, i) != b'\'' {
            return fail(tags);
        }
        let Some((value, end)) = quoted_value(body, i + 1) else {
            return fail(tags);
        };
        i = end;
        tags.push((url_decode(key), url_decode(&value)));
        while i < n && is_ws(body[i]) {
            i += 1;
        }
        if i == n {
            return;
        }
        if body[i] != b',' {
            return fail(tags);
        }
        i += 1;
    }
}

/// The sqlcommenter value starting at `start` (after its opening quote) up to
/// its closing quote, with `\x` escapes resolved, and the position after the
/// closing quote; `None` when unterminated.
fn quoted_value(body: &[u8], start: usize) -> Option<(std::borrow::Cow<'_, [u8]>, usize)> {
    let rest = body.get(start..)?;
    let k = rest.iter().position(|&b| b == b'\'' || b == b'\\')?;
    if rest[k] == b'\'' {
        // No escapes: borrow it.
        return Some((std::borrow::Cow::Borrowed(&rest[..k]), start + k + 1));
    }
    let mut value = rest[..k].to_vec();
    let n = rest.len();
    let mut i = k;
    while i < n {
        match rest[i] {
            b'\\' if i + 1 < n => {
                value.push(rest[i + 1]);
                i += 2;
            }
            b'\'' => return Some((std::borrow::Cow::Owned(value), start + i + 1)),
            b => {
                value.push(b);
                i += 1;
            }
        }
    }
    None
}

/// Percent-decode (`%XX`); malformed escapes are kept as written. `+` is kept.
fn url_decode(b: &[u8]) -> String {
    let hex = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    if !b.contains(&b'%') {
        return String::from_utf8_lossy(b).into_owned();
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (hex(at(b, i + 1)), hex(at(b, i + 2))) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Stable 64-bit hash: FNV-1a 64 (offset basis 0xcbf29ce484222325, prime
/// 0x100000001b3). Fingerprints are persisted: never change this function.
pub fn hash64(bytes: &[u8]) -> u64 {
    fnv_update(FNV_OFFSET, bytes)
}

/// 16 lowercase hex digits.
pub fn fingerprint_hex(fp: u64) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(16);
    for shift in (0..16).rev() {
        s.push(char::from(HEX[((fp >> (4 * shift)) & 0xf) as usize]));
    }
    s
}

/// Tags as a JSON object text, keys sorted (last value wins on duplicate
/// keys), e.g. `{"app":"x","route":"/y"}`; `{}` when none.
pub fn tags_json(tags: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = tags.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::with_capacity(2 + tags.len() * 16);
    out.push('{');
    let mut first = true;
    for (idx, (k, v)) in sorted.iter().map(|t| (&t.0, &t.1)).enumerate() {
        if sorted.get(idx + 1).is_some_and(|next| &next.0 == k) {
            continue; // a later duplicate wins
        }
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&serde_json::Value::from(k.as_str()).to_string());
        out.push(':');
        out.push_str(&serde_json::Value::from(v.as_str()).to_string());
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn norm(s: &str) -> String {
        normalize(s.as_bytes()).text
    }

    fn fp(s: &str) -> u64 {
        normalize(s.as_bytes()).fingerprint
    }

    #[test]
    fn keyword_list_is_sorted_and_complete() {
        assert_eq!(KEYWORDS.len(), 147);
        for w in KEYWORDS.windows(2) {
            assert!(w[0] < w[1], "{} !< {}", w[0], w[1]);
        }
        assert!(KEYWORDS.iter().all(|k| k.len() <= MAX_KEYWORD_LEN));
        for (i, k) in KEYWORDS.iter().enumerate() {
            assert_eq!(keyword(k.as_bytes()), Some(i as u8), "{k}");
            assert_eq!(
                keyword(k.to_ascii_lowercase().as_bytes()),
                Some(i as u8),
                "{k}"
            );
            let longer = format!("{k}X");
            assert_eq!(keyword(longer.as_bytes()), None, "{longer}");
            assert_eq!(
                keyword(&k.as_bytes()[..k.len() - 1])
                    .map(|i| KEYWORDS[i as usize])
                    .filter(|w| w.len() == k.len()),
                None
            );
        }
        let kw = |w: &[u8]| keyword(w).map(|i| KEYWORDS[i as usize]);
        assert_eq!(kw(b"select"), Some("SELECT"));
        assert_eq!(kw(b"Current_Timestamp"), Some("CURRENT_TIMESTAMP"));
        assert_eq!(kw(b"Current_TimestamX"), None);
        assert_eq!(kw(b"Current_Timestam"), None);
        assert_eq!(keyword(b"selec"), None);
        assert_eq!(keyword(b"true"), None);
        assert_eq!(keyword(b"rowid"), None);
    }

    /// Inputs and expected outputs of the `table` test (the differential test
    /// uses the inputs too).
    const TABLE_CASES: &[(&str, &str)] = &[
        // basics, keywords upper-cased, identifiers kept
        ("select 1", "SELECT ?"),
        ("SeLeCt MyCol FROM MyTable", "SELECT MyCol FROM MyTable"),
        ("select a,b , c from t", "SELECT a, b, c FROM t"),
        ("select\n\t a\r\n from   t", "SELECT a FROM t"),
        ("select * from t;", "SELECT * FROM t"),
        ("select * from t ; ; ", "SELECT * FROM t"),
        ("  ;  ", ""),
        ("", ""),
        ("select 1; select 2;", "SELECT ?; SELECT ?"),
        (
            "select t.a, t . b, t.* from main.t",
            "SELECT t.a, t.b, t.* FROM main.t",
        ),
        ("select count(*) from t", "SELECT count(*) FROM t"),
        ("select count ( * ) from t", "SELECT count(*) FROM t"),
        ("select cast(a as integer)", "SELECT CAST(a AS integer)"),
        (
            "select a||b, a->'$.x', a->>'$.y'",
            "SELECT a || b, a -> ?, a ->> ?",
        ),
        (
            "select a<=b, a<>b, a!=b, a==b, a<<1, ~a",
            "SELECT a <= b, a <> b, a != b, a == b, a << ?, ~a",
        ),
        (
            "select a from t where exists (select 1)",
            "SELECT a FROM t WHERE EXISTS (SELECT ?)",
        ),
        // strings
        ("select 'abc'", "SELECT ?"),
        ("select 'it''s', 'a\"b'", "SELECT ?, ?"),
        (
            "select 'x -- not a comment', 'y /* nor this */' from t",
            "SELECT ?, ? FROM t",
        ),
        (
            "select 'x' /* it's 'a' comment */ from t",
            "SELECT ? FROM t",
        ),
        ("select 'x' -- it's \n from t", "SELECT ? FROM t"),
        ("select 'unterminated", "SELECT ?"),
        ("select '' ,''''", "SELECT ?, ?"),
        // blobs
        ("select x'ABCD', X'00'", "SELECT ?, ?"),
        ("select x, X from t", "SELECT x, X FROM t"),
        ("select x'unterminated", "SELECT ?"),
        // numbers
        (
            "select 1, 1.5, .5, 1., 1e10, 1.5E-3, 2e+4",
            "SELECT ?, ?, ?, ?, ?, ?, ?",
        ),
        ("select 0x1F, 0XABcd, 1_000_000", "SELECT ?, ?, ?"),
        ("select 12abc", "SELECT ?"),
        // signs
        (
            "select * from t where a = -5",
            "SELECT * FROM t WHERE a = ?",
        ),
        (
            "select a - 5, a-5, a -5, a - -5",
            "SELECT a - ?, a - ?, a - ?, a - ?",
        ),
        ("select -1, +2, - 3", "SELECT ?, ?, ?"),
        (
            "select (a) - 1, ? - 1, :p - 1",
            "SELECT (a) - ?, ? - ?, :p - ?",
        ),
        ("select -a, - b, +c", "SELECT -a, -b, +c"),
        (
            "select null - 1, current_timestamp - 1",
            "SELECT NULL - ?, CURRENT_TIMESTAMP - ?",
        ),
        (
            "select case when a then -1 else -2 end - 1",
            "SELECT CASE WHEN a THEN ? ELSE ? END - ?",
        ),
        ("select a limit -1", "SELECT a LIMIT ?"),
        ("select - -5", "SELECT -?"),
        ("select -", "SELECT -"),
        // identifiers
        (
            "SELECT \"naïve\", 名前 FROM t",
            "SELECT \"naïve\", 名前 FROM t",
        ),
        (
            "select \"x y\", [x z], `w v` from \"T\"",
            "SELECT \"x y\", [x z], `w v` FROM \"T\"",
        ),
        (
            "select \"a\"\"b\", `a``b` from t",
            "SELECT \"a\"\"b\", `a``b` FROM t",
        ),
        (
            "select \"select\" from [from]",
            "SELECT \"select\" FROM [from]",
        ),
        ("select a$b, _x1 from t", "SELECT a$b, _x1 FROM t"),
        ("select \"unterminated", "SELECT \"unterminated"),
        // parameters
        (
            "select ?, ?1, ?23, :name, @name, $name, $a::b, :x(y), #n",
            "SELECT ?, ?1, ?23, :name, @name, $name, $a::b, :x(y), #n",
        ),
        (
            "select * from t where a = :a and b = @b and c = $c",
            "SELECT * FROM t WHERE a = :a AND b = @b AND c = $c",
        ),
        // comments
        ("select 1 -- trailing", "SELECT ?"),
        ("select /* c */ 1 /* unterminated", "SELECT ?"),
        ("select a/**/from t", "SELECT a FROM t"),
        ("-- leading\nselect 1", "SELECT ?"),
        ("select 1 /* multi\nline */ + 2", "SELECT ? + ?"),
        // IN lists
        (
            "select * from t where a in (1, 2, 3)",
            "SELECT * FROM t WHERE a IN (?)",
        ),
        (
            "select * from t where a in (1)",
            "SELECT * FROM t WHERE a IN (?)",
        ),
        (
            "select * from t where a IN(?,?,?)",
            "SELECT * FROM t WHERE a IN (?)",
        ),
        (
            "select * from t where a not in ('x', -2, x'00', 1.5)",
            "SELECT * FROM t WHERE a NOT IN (?)",
        ),
        (
            "select * from t where a in (?1, ?2)",
            "SELECT * FROM t WHERE a IN (?1, ?2)",
        ),
        (
            "select * from t where a in (:a, :b)",
            "SELECT * FROM t WHERE a IN (:a, :b)",
        ),
        (
            "select * from t where a in (1, b)",
            "SELECT * FROM t WHERE a IN (?, b)",
        ),
        (
            "select * from t where a in (1, null)",
            "SELECT * FROM t WHERE a IN (?, NULL)",
        ),
        (
            "select * from t where a in (1 + 2)",
            "SELECT * FROM t WHERE a IN (? + ?)",
        ),
        (
            "select * from t where a in ()",
            "SELECT * FROM t WHERE a IN ()",
        ),
        (
            "select * from t where a in (select b from u where c in (1,2))",
            "SELECT * FROM t WHERE a IN (SELECT b FROM u WHERE c IN (?))",
        ),
        (
            "select * from t where a in t2",
            "SELECT * FROM t WHERE a IN t2",
        ),
        (
            "select * from t where a in ((1), 2)",
            "SELECT * FROM t WHERE a IN ((?), ?)",
        ),
        // VALUES
        (
            "insert into t(a,b) values (1,'a'),(2,'b')",
            "INSERT INTO t(a, b) VALUES (?, ?)",
        ),
        (
            "insert into t values (1),(2),(3),(4)",
            "INSERT INTO t VALUES (?)",
        ),
        (
            "insert into t values (1, 2), (3, null)",
            "INSERT INTO t VALUES (?, ?), (?, NULL)",
        ),
        (
            "insert into t values (1,null),(1,2),(3,4)",
            "INSERT INTO t VALUES (?, NULL), (?, ?)",
        ),
        (
            "insert into t values (?1, ?2), (?3, ?4)",
            "INSERT INTO t VALUES (?1, ?2), (?3, ?4)",
        ),
        (
            "insert into t values (?, ?), (?, ?)",
            "INSERT INTO t VALUES (?, ?)",
        ),
        (
            "insert into t values (-1, abs(-2)), (3, abs(4))",
            "INSERT INTO t VALUES (?, abs(?))",
        ),
        (
            "insert into t values (1, (select 2)), (3, (select 4))",
            "INSERT INTO t VALUES (?, (SELECT ?))",
        ),
        (
            "insert into t values (1) on conflict (a) do nothing",
            "INSERT INTO t VALUES (?) ON CONFLICT (a) DO NOTHING",
        ),
        (
            "insert into t values (1), (2) returning *",
            "INSERT INTO t VALUES (?) RETURNING *",
        ),
        (
            "insert into t default values",
            "INSERT INTO t DEFAULT VALUES",
        ),
        ("values (1, 2), (3, 4)", "VALUES (?, ?)"),
        (
            "insert into t values (1 in (1,2)), (3 in (4))",
            "INSERT INTO t VALUES (? IN (?))",
        ),
        (
            "select * from (values (1), (2)) join u",
            "SELECT * FROM (VALUES (?)) JOIN u",
        ),
        ("insert into t values (1), (", "INSERT INTO t VALUES (?), ("),
        // statements
        ("BEGIN IMMEDIATE", "BEGIN IMMEDIATE"),
        ("pragma journal_mode = wal", "PRAGMA journal_mode = wal"),
        ("pragma table_info('t')", "PRAGMA table_info(?)"),
        (
            "update t set a = a + 1 where id = 7",
            "UPDATE t SET a = a + ? WHERE id = ?",
        ),
        (
            "insert or replace into t values (1)",
            "INSERT OR REPLACE INTO t VALUES (?)",
        ),
        (
            "select replace(a, 'x', 'y') from t",
            "SELECT REPLACE(a, ?, ?) FROM t",
        ),
        // odd bytes
        ("select a\0b", "SELECT a b"),
        ("select { } ^ \\", "SELECT { } ^ \\"),
        ("select ! a", "SELECT ! a"),
        ("select : @ $", "SELECT : @ $"),
    ];

    #[test]
    fn table() {
        let mut bad = Vec::new();
        for (input, want) in TABLE_CASES {
            let got = norm(input);
            if got != *want {
                bad.push(format!("{input:?}\n   got  {got:?}\n   want {want:?}"));
            }
        }
        assert!(bad.is_empty(), "mismatches:\n{}", bad.join("\n"));
    }

    #[test]
    fn idempotent_on_well_formed_sql() {
        for s in [
            "select a, b from t where a in (1,2) and b = -3 order by a desc limit 10",
            "insert into t(a,b) values (1,'a'),(2,'b') on conflict(a) do update set b=excluded.b",
            "SELECT \"naïve\", 名前, count(*) FROM t GROUP BY 1",
            "with c as (select 1) select * from c",
            "select a - -1, -b, ~c, x'00', :p, ?3 from t",
        ] {
            let once = norm(s);
            assert_eq!(norm(&once), once, "{s}");
        }
    }

    #[test]
    fn fingerprints() {
        let same = [
            "select * from t where a = 1 and b = 'x'",
            "SELECT * FROM t WHERE a = 42 AND b = 'yy'",
            "select  *\nfrom t\twhere a=-7 and b='it''s' -- comment",
            "/* hi */ Select * From t Where a = 1.5e3 And b = x'00';",
        ];
        let f0 = fp(same[0]);
        for s in same {
            assert_eq!(fp(s), f0, "{s}");
        }
        assert_eq!(
            fp("select * from t where a in (1,2,3)"),
            fp("select * from t where a in (4)")
        );
        assert_eq!(
            fp("insert into t values (1),(2)"),
            fp("insert into t values (3)")
        );
        // different identifiers, quoting and case of identifiers matter
        assert_ne!(fp("select a from t"), fp("select b from t"));
        assert_ne!(fp("select a from t"), fp("select a from u"));
        assert_ne!(fp("select a from t"), fp("select A from t"));
        assert_ne!(fp("select a from t"), fp("select \"a\" from t"));
        assert_ne!(
            fp("select a from t where a = ?1"),
            fp("select a from t where a = ?2")
        );
        let n = normalize(b"select 1");
        assert_eq!(n.fingerprint, hash64(n.text.as_bytes()));
    }

    #[test]
    fn hash_is_fnv1a64() {
        assert_eq!(hash64(b""), 0xcbf29ce484222325);
        assert_eq!(hash64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(hash64(b"foobar"), 0x85944171f73967e8);
        // Persisted fingerprints: pin one full normalization.
        assert_eq!(
            fingerprint_hex(fp("SELECT 1")),
            fingerprint_hex(hash64(b"SELECT ?"))
        );
        assert_eq!(fingerprint_hex(0xab), "00000000000000ab");
        assert_eq!(fingerprint_hex(u64::MAX), "ffffffffffffffff");
    }

    #[test]
    fn sqlcommenter_tags() {
        let a = normalize(b"select * from t where a = 1 /*app='x',route='%2Fy'*/");
        assert_eq!(a.text, "SELECT * FROM t WHERE a = ?");
        assert_eq!(
            a.tags,
            vec![("app".into(), "x".into()), ("route".into(), "/y".into())]
        );
        assert_eq!(a.fingerprint, fp("select * from t where a = 1"));
        assert_eq!(tags_json(&a.tags), r#"{"app":"x","route":"/y"}"#);

        let b = normalize(
            b"/* route='%2Fusers%2F%3Aid', db_driver='sqlite3%3A3.40', framework='x%20y', action='it\\'s' */ select 1",
        );
        assert_eq!(b.text, "SELECT ?");
        assert_eq!(
            b.tags,
            vec![
                ("action".into(), "it's".into()),
                ("db_driver".into(), "sqlite3:3.40".into()),
                ("framework".into(), "x y".into()),
                ("route".into(), "/users/:id".into()),
            ]
        );
        // URL-encoded key, duplicate key (last wins), two comments.
        let c = normalize(b"select 1 /*k%20ey='1',z='a'*/ /*z='b'*/");
        assert_eq!(
            c.tags,
            vec![("k ey".into(), "1".into()), ("z".into(), "b".into())]
        );
        // Not sqlcommenter: ordinary comments, malformed pairs, unterminated.
        for s in [
            "select 1 /* just a comment */",
            "select 1 /* a='x' b='y' */",
            "select 1 /* a=x */",
            "select 1 /* a='x', */",
            "select 1 /* a='x */",
            "select 1 /* ='x' */",
            "select 1 /**/",
            "select 1 /* app='x'",
            "select 1 -- app='x'",
            "select '/*app=''x''*/'",
        ] {
            let n = normalize(s.as_bytes());
            assert!(n.tags.is_empty(), "{s}: {:?}", n.tags);
        }
        assert_eq!(tags_json(&[]), "{}");
        assert_eq!(
            tags_json(&[
                ("b".into(), "2".into()),
                ("a".into(), "q\"\\\n".into()),
                ("b".into(), "3".into())
            ]),
            r#"{"a":"q\"\\\n","b":"3"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&tags_json(&b.tags)).unwrap();
        assert_eq!(v["route"], "/users/:id");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let n = normalize(b"select \xff\xfe, 'caf\xe9' from t\xc3");
        assert_eq!(n.text, "SELECT \u{fffd}\u{fffd}, ? FROM t\u{fffd}");
        assert_eq!(n.fingerprint, hash64(n.text.as_bytes()));
        // A bare lone byte.
        assert_eq!(norm_bytes(b"\x80"), "\u{fffd}");
    }

    fn norm_bytes(b: &[u8]) -> String {
        normalize(b).text
    }

    #[test]
    fn truncation_keeps_full_fingerprint() {
        let mut sql = String::from("select ");
        let mut full = String::from("SELECT ");
        for i in 0..5000 {
            sql.push_str(&format!("col_名{i} ,"));
            full.push_str(&format!("col_名{i}, "));
        }
        sql.push_str("z from t");
        full.push_str("z FROM t");
        assert!(full.len() > MAX_QUERY_TEXT_BYTES);
        let n = normalize(sql.as_bytes());
        assert!(n.text.len() <= MAX_QUERY_TEXT_BYTES);
        assert!(n.text.len() > MAX_QUERY_TEXT_BYTES - 8);
        assert!(n.text.ends_with('…'));
        assert!(full.starts_with(n.text.trim_end_matches('…')));
        assert_eq!(n.fingerprint, hash64(full.as_bytes()));
        // Changing only the tail still changes the fingerprint.
        let sql2 = sql.replace("z from t", "y from t");
        assert_ne!(normalize(sql2.as_bytes()).fingerprint, n.fingerprint);
    }

    #[test]
    fn huge_values_linear() {
        let rows = 1_000_000;
        let mut sql = String::with_capacity(rows * 16);
        sql.push_str("INSERT INTO t(a, b) VALUES ");
        for i in 0..rows {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("({i},'v{i}')"));
        }
        sql.push(';');
        let t = Instant::now();
        let n = normalize(sql.as_bytes());
        let el = t.elapsed();
        assert_eq!(n.text, "INSERT INTO t(a, b) VALUES (?, ?)");
        assert!(el.as_secs() < 20, "took {el:?}");
    }

    #[test]
    fn huge_inputs_no_blowup() {
        // 10 MB of assorted tokens, an IN list with 1M items, deep parens,
        // unterminated constructs at 10 MB.
        let mut big = String::from("select * from t where a in (");
        for i in 0..1_000_000 {
            big.push_str(&format!("{i},"));
        }
        big.push_str("0)");
        assert_eq!(norm(&big), "SELECT * FROM t WHERE a IN (?)");

        let deep = format!("select {}1{}", "(".repeat(200_000), ")".repeat(200_000));
        let n = normalize(deep.as_bytes());
        assert!(n.text.starts_with("SELECT (((("));

        let ten = 10 * 1024 * 1024;
        for prefix in [
            "select '",
            "select \"",
            "select [",
            "select /*",
            "select --",
            "select x'",
        ] {
            let mut s = prefix.as_bytes().to_vec();
            s.resize(ten, b'a');
            let t = Instant::now();
            let n = normalize(&s);
            assert!(n.text.len() <= MAX_QUERY_TEXT_BYTES, "{prefix}");
            assert!(n.text.starts_with("SELECT"), "{prefix}");
            assert!(t.elapsed().as_secs() < 20);
        }
        let mut s = Vec::with_capacity(ten);
        while s.len() < ten {
            s.extend_from_slice(b"a + -1 * (b) - 'x' || ");
        }
        let n = normalize(&s);
        assert!(n.text.len() <= MAX_QUERY_TEXT_BYTES);
    }

    #[test]
    fn fuzz_never_panics() {
        let alphabet: &[u8] = b"'\"`[]()xX0123456789.eE+-*/;,?:@$#_ \n\tabcINVALUESinvalues=<>!|&~\\\x00\x80\xc3\xa9\xff%";
        let mut state: u64 = 0x9e3779b97f4a7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut buf = Vec::with_capacity(256);
        for round in 0..50_000 {
            buf.clear();
            let len = (next() % 120) as usize;
            for _ in 0..len {
                let r = next();
                if round % 7 == 0 {
                    buf.push(r as u8);
                } else {
                    buf.push(alphabet[(r % alphabet.len() as u64) as usize]);
                }
            }
            let n = normalize(&buf);
            assert_eq!(n.fingerprint, hash64(n.text.as_bytes()));
            assert!(!n.text.starts_with(' ') && !n.text.ends_with(' '));
            assert!(!n.text.ends_with(';'));
            let _ = tags_json(&n.tags);
        }
        // Keyword soup with comments, for IN / VALUES state machines.
        let words = [
            "IN",
            "(",
            ")",
            ",",
            "VALUES",
            "1",
            "?",
            "?1",
            "a",
            "-",
            "/*a='b'*/",
            "'s'",
            "NOT",
            "SELECT",
            ";",
            "x'0'",
            "--c\n",
        ];
        for _ in 0..50_000 {
            let mut s = String::new();
            for _ in 0..(next() % 30) {
                s.push_str(words[(next() % words.len() as u64) as usize]);
                if next() % 2 == 0 {
                    s.push(' ');
                }
            }
            let n = normalize(s.as_bytes());
            assert_eq!(n.fingerprint, hash64(n.text.as_bytes()));
        }
    }

    #[test]
    #[ignore]
    fn bench_short_statement() {
        let sql = b"SELECT id, name, email FROM users WHERE id = 42 AND status IN ('a', 'b') ORDER BY name LIMIT 10";
        let iters = 1_000_000;
        let t = Instant::now();
        let mut acc = 0u64;
        for _ in 0..iters {
            acc ^= normalize(std::hint::black_box(sql)).fingerprint;
        }
        let el = t.elapsed();
        eprintln!("{:?} per call ({} bytes) {acc}", el / iters, sql.len());
    }

    // ---- Differential test against the previous implementation (`reference`).

    /// xorshift64*: a small seeded PRNG.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }
    }

    /// Token soup vocabulary (keywords come from KEYWORDS as well).
    #[rustfmt::skip]
    const SOUP: &[&[u8]] = &[
        // identifiers, near-keywords
        b"a", b"b", b"t", b"x", b"X", b"xy", b"_x1", b"a$b", b"id", b"users", b"key",
        b"selec", b"selects", b"in_", b"values2", b"current_timestampx", b"Current_Timestamp",
        b"CURRENT_TIMESTAM", b"rowid", b"true", b"count", b"abs", b"replace", b"cast", b"raise",
        "名前".as_bytes(), "naïve".as_bytes(), "col_名".as_bytes(), "ä".as_bytes(),
        "😀".as_bytes(), "…".as_bytes(), b"\xff", b"\xc3", b"\xe9", b"\x80", b"caf\xe9",
        b"abcdefghijklmnop", b"abcdefghijklmnopq", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789",
        // literals
        b"1", b"0", b"42", b"123456", b"1.5", b".5", b"1.", b"1e10", b"1.5E-3", b"2e+4", b"0x1F",
        b"0XAB", b"1_000", b"12abc", b"0x", b"1e", b"1e+", b"1e-x", b"0x_1", b"9.9.9",
        b"'a'", b"'it''s'", b"''", b"'NL'", b"'2026-11-25'", b"'unterminated", b"x'00'",
        b"X'AB'", b"x'", b"'caf\xe9'", b"'a -- b'", b"'/*app=''x''*/'", b"x''",
        // quoted identifiers
        b"\"x y\"", b"\"a\"\"b\"", b"[x]", b"[x", b"`w`", b"`a``b`", b"\"unterminated",
        b"\"abc ;", b"\"select\"", b"[from]", b"\"na\xc3\xafve\"", b"\"\"", b"[]",
        // parameters
        b"?", b"?1", b"?23", b":name", b"@n", b"$a", b"$a::b", b":x(y)", b":x(y", b":x( y)",
        b"#n", b":", b"@", b"$", b"#", b"::", b":a::", b"$1", b"?0",
        // operators and punctuation
        b"(", b"(", b")", b")", b",", b",", b";", b".", b"*", b"=", b"==", b"<", b"<=", b"<>",
        b"<<", b">", b">=", b">>", b"!=", b"!", b"||", b"|", b"&", b"~", b"-", b"-", b"+",
        b"/", b"%", b"->", b"->>", b"{", b"}", b"^", b"\\", b"]", b"- -", b"-+",
        // comments
        b"/*c*/", b"/**/", b"/*app='web',route='%2Fprofile'*/", b"/* a='x' */",
        b"/*k%20ey='1',z='a'*/", b"/*z='b'*/", b"/* a='it\\'s' */", b"/*a='%zz%4'*/",
        b"/*a='%C3%A9'*/", b"/*a='%ff'*/", b"/*a='x',*/", b"/*a=x*/", b"/*='x'*/",
        b"/*a='x' b='y'*/", b"/* a = 'x' ,\n b='y\\\\'*/", b"/* unterminated", b"--c\n", b"-- c",
        b"/*", b"*/", b"--", b"/*a='\xff'*/", b"/*a\xff='1'*/",
        // white space and ignored bytes
        b" ", b"\n", b"\t", b"\r\n", b"\0", b"\x01", b"\x7f", b"\x0c",
        // fragments
        b"IN", b"in", b"NOT IN", b"not in", b"VALUES", b"values", b"IN (", b"in(", b"VALUES (",
        b"(1, 2, 3)", b"(?, ?)", b"(?1)", b"(1,'a'),(2,'b')", b"(NULL)", b"END", b"null",
        b"CURRENT_DATE", b"current_time",
    ];

    #[rustfmt::skip]
    const ITEMS: &[&[u8]] = &[
        b"1", b"-1", b"+2", b"'x'", b"?", b"?1", b":a", b"NULL", b"b", b"x'00'", b"1.5", b"(1)",
        b"select 1", b"1 + 2", b"- 3", b"abs(-2)", b"''", b"'a,b'", b"/*c*/ 4", b"5 --c\n",
    ];

    const SEPS: &[&[u8]] = &[b"", b" ", b" ", b" ", b"\n", b"\t", b"  "];

    /// Append `tok`, sometimes with letters in random case.
    fn push_cased(r: &mut Rng, buf: &mut Vec<u8>, tok: &[u8]) {
        if r.below(3) == 0 {
            for &b in tok {
                let flip = b.is_ascii_alphabetic() && r.below(2) == 0;
                buf.push(if flip { b ^ 0x20 } else { b });
            }
        } else {
            buf.extend_from_slice(tok);
        }
    }

    fn push_list(r: &mut Rng, buf: &mut Vec<u8>, items: usize) {
        buf.push(b'(');
        for k in 0..items {
            if k > 0 {
                buf.push(b',');
                buf.extend_from_slice(r.pick(SEPS));
            }
            let item = r.pick(ITEMS);
            push_cased(r, buf, item);
        }
        if r.below(10) != 0 {
            buf.push(b')');
        }
    }

    /// One generated input.
    fn gen_case(r: &mut Rng, buf: &mut Vec<u8>) {
        buf.clear();
        match r.below(12) {
            0 => {
                for _ in 0..r.below(80) {
                    buf.push(r.next() as u8);
                }
            }
            1 => {
                let alphabet: &[u8] = b"'\"`[]()xX0123456789.eE+-*/;,?:@$#_ \n\tabcINVALUESinvalues=<>!|&~\\\x00\x80\xc3\xa9\xff%";
                for _ in 0..r.below(120) {
                    buf.push(r.pick(alphabet));
                }
            }
            2..=7 => {
                for _ in 0..r.below(40) {
                    if r.below(4) == 0 {
                        let kw = KEYWORDS[r.below(KEYWORDS.len())].as_bytes();
                        push_cased(r, buf, kw);
                    } else {
                        let tok = r.pick(SOUP);
                        push_cased(r, buf, tok);
                    }
                    let sep = r.pick(SEPS);
                    buf.extend_from_slice(sep);
                }
            }
            8 => {
                buf.extend_from_slice(b"select * from t where a ");
                if r.below(3) == 0 {
                    buf.extend_from_slice(b"not ");
                }
                buf.extend_from_slice(if r.below(2) == 0 { b"in " } else { b"IN" });
                let items = r.below(8);
                push_list(r, buf, items);
                if r.below(2) == 0 {
                    buf.extend_from_slice(b" and b in (1, 2) /*app='x'*/;");
                }
            }
            9 => {
                buf.extend_from_slice(b"insert into t(a, b) values ");
                let rows = r.below(6);
                let width = 1 + r.below(3);
                for k in 0..rows {
                    if k > 0 {
                        buf.extend_from_slice(r.pick(&[&b","[..], b", ", b" , ", b" "][..]));
                    }
                    let items = if r.below(8) == 0 { width + 1 } else { width };
                    push_list(r, buf, items);
                }
                if r.below(3) == 0 {
                    buf.extend_from_slice(
                        b" on conflict (a) do update set b = excluded.b returning *;",
                    );
                }
            }
            _ => {
                let templates: &[&str] = &[
                    "SELECT v FROM t WHERE id = {}",
                    "INSERT INTO orders(user_id, total_cents, created_at) VALUES ({}, {}, '{}')",
                    "UPDATE users SET country = '{}' WHERE id IN ({}, {}, {})",
                    "SELECT email FROM users WHERE id = {} /*app='{}',route='%2F{}'*/",
                    "select a - {} , -{} , - {} from t where x = ?{} and y in (select {})",
                ];
                let t = r.pick(templates);
                for (k, part) in t.split("{}").enumerate() {
                    if k > 0 {
                        let lit = r.pick(ITEMS);
                        buf.extend_from_slice(lit);
                    }
                    buf.extend_from_slice(part.as_bytes());
                }
            }
        }
        // Sometimes cut anywhere (unterminated strings, comments, lists).
        if r.below(5) == 0 && !buf.is_empty() {
            let cut = r.below(buf.len());
            buf.truncate(cut);
        }
    }

    /// Long and special inputs: big IN lists and VALUES, texts around the
    /// 16 KiB cut with multi-byte characters at every alignment.
    fn special_cases() -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = Vec::new();
        let mut big_in = b"select * from t where a in (".to_vec();
        for i in 0..10_000 {
            big_in.extend_from_slice(format!("{i}, ").as_bytes());
        }
        big_in.extend_from_slice(b"'z') and b not in (1, :x)");
        v.push(big_in.clone());
        big_in.truncate(big_in.len() - 30);
        v.push(big_in);
        let mut big_values = b"insert into t values ".to_vec();
        for i in 0..10_000 {
            let row = if i % 1000 == 999 {
                format!("({i}, NULL), ")
            } else {
                format!("({i}, 'v{i}'), ")
            };
            big_values.extend_from_slice(row.as_bytes());
        }
        big_values.extend_from_slice(b"(1, 2);");
        v.push(big_values);
        for pad in 0..4 {
            for extra in [0usize, 1, 2, 3, 10] {
                for word in ["名", "é", "😀", "a"] {
                    let mut s = format!("select {}", "a".repeat(pad));
                    while s.len() < MAX_QUERY_TEXT_BYTES - 8 + extra {
                        s.push_str(word);
                    }
                    s.push_str(" from t;");
                    v.push(s.clone().into_bytes());
                    let mut bad = s.into_bytes();
                    bad.push(0xff);
                    v.push(bad);
                }
            }
        }
        let mut invalid = b"select 'x' /*app='y'*/ from t where a = \xc3 and b = ".to_vec();
        invalid.extend_from_slice(&[b'z'; 20_000]);
        v.push(invalid);
        v.push(BENCH_STATEMENTS.concat().into_bytes());
        v.extend(BENCH_STATEMENTS.iter().map(|s| s.as_bytes().to_vec()));
        v.push(join_query().into_bytes());
        v
    }

    /// Compare `normalize` with `reference::normalize` on the table inputs,
    /// the special cases and `cases` generated inputs: the number of inputs
    /// and of differences, and the first few differences.
    fn differential(cases: usize, seed: u64) -> (usize, usize, Vec<String>) {
        let mut bad = Vec::new();
        let mut count = 0usize;
        let mut differences = 0usize;
        let mut check = |input: &[u8]| {
            count += 1;
            let got = normalize(input);
            let want = reference::normalize(input);
            let differs = got.text != want.text
                || got.fingerprint != want.fingerprint
                || got.tags != want.tags;
            differences += differs as usize;
            if differs && bad.len() < 20 {
                bad.push(format!(
                    "{:?}\n   got  {:?} {:016x} {:?}\n   want {:?} {:016x} {:?}",
                    String::from_utf8_lossy(input),
                    got.text,
                    got.fingerprint,
                    got.tags,
                    want.text,
                    want.fingerprint,
                    want.tags
                ));
            }
        };
        for (input, _) in TABLE_CASES {
            check(input.as_bytes());
        }
        for s in special_cases() {
            check(&s);
        }
        let mut r = Rng(seed | 1);
        let mut buf = Vec::new();
        for _ in 0..cases {
            gen_case(&mut r, &mut buf);
            check(&buf);
        }
        (count, differences, bad)
    }

    #[test]
    fn same_output_as_reference() {
        let (count, differences, bad) = differential(5_000, 0x5eed);
        assert_eq!(differences, 0, "first ones:\n{}", bad.join("\n"));
        assert!(count > 5_000);
        eprintln!("{count} inputs, 0 differences");
    }

    /// The long differential run: `NORMALIZE_DIFF_CASES` (default 2,000,000)
    /// generated inputs: `cargo test --release -- --ignored same_output_as_reference_long`.
    #[test]
    #[ignore]
    fn same_output_as_reference_long() {
        let cases = std::env::var("NORMALIZE_DIFF_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000_000);
        let mut total = 0;
        for seed in [1u64, 0xdead_beef, 0x1234_5678_9abc] {
            let (count, differences, bad) = differential(cases / 3, seed);
            assert_eq!(differences, 0, "first ones:\n{}", bad.join("\n"));
            total += count;
        }
        eprintln!("{total} inputs, 0 differences");
    }

    const BENCH_STATEMENTS: [&str; 5] = [
        "SELECT v FROM t WHERE id = 123456",
        "INSERT INTO orders(user_id, total_cents, created_at) VALUES (42, 1999, '2026-11-25')",
        "UPDATE users SET country = 'NL' WHERE id IN (1, 2, 3)",
        "SELECT email FROM users WHERE id = 77 /*app='web',route='%2Fprofile'*/",
        "SELECT id, name, email FROM users WHERE id = 42 AND status IN ('a', 'b') ORDER BY name LIMIT 10",
    ];

    /// A ~1 KB query with joins.
    fn join_query() -> String {
        let mut s = String::from(
            "SELECT u.id, u.name, u.email, o.id AS order_id, o.total_cents, o.created_at, \
             p.title, p.price_cents, c.name AS category FROM users u \
             JOIN orders o ON o.user_id = u.id LEFT JOIN order_items oi ON oi.order_id = o.id \
             INNER JOIN products p ON p.id = oi.product_id \
             LEFT OUTER JOIN categories c ON c.id = p.category_id \
             WHERE u.country = 'NL' AND o.created_at >= '2026-01-01' \
             AND o.status IN ('paid', 'shipped', 'delivered') \
             AND p.price_cents BETWEEN 100 AND 99999 \
             AND (u.email LIKE '%@example.com' OR u.name = 'Jane Doe') \
             AND NOT EXISTS (SELECT 1 FROM refunds r WHERE r.order_id = o.id AND r.amount_cents > 0) \
             GROUP BY u.id, o.id, p.id HAVING count(*) > 1 AND sum(oi.quantity * p.price_cents) > 5000 \
             ORDER BY o.created_at DESC, u.name ASC LIMIT 50 OFFSET 100",
        );
        while s.len() < 1000 {
            s.push(' ');
        }
        s
    }

    /// ns/op of `normalize` and of the previous implementation:
    /// `cargo test --release -- --ignored --nocapture bench_statements`.
    #[test]
    #[ignore]
    fn bench_statements() {
        let join = join_query();
        let mut all: Vec<&str> = BENCH_STATEMENTS.to_vec();
        all.push(&join);
        let time = |f: &dyn Fn(&[u8]) -> u64, sql: &[u8]| {
            let iters = 200_000_000 / (sql.len() as u32 * 20 + 200);
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                let mut acc = 0u64;
                for _ in 0..iters {
                    acc ^= f(std::hint::black_box(sql));
                }
                std::hint::black_box(acc);
                best = best.min(t.elapsed().as_nanos() as f64 / iters as f64);
            }
            best
        };
        for sql in all {
            let new = time(&|s| normalize(s).fingerprint, sql.as_bytes());
            let old = time(&|s| reference::normalize(s).fingerprint, sql.as_bytes());
            let head: String = sql.chars().take(40).collect();
            eprintln!(
                "{:5} B  old {old:7.1} ns  new {new:7.1} ns  x{:.1}  {head}",
                sql.len(),
                old / new
            );
        }
    }
}

/// The previous implementation, kept verbatim as the oracle of the
/// differential test (`tests::same_output_as_reference`).
#[cfg(test)]
mod reference {
    #![allow(dead_code)]

    pub const MAX_QUERY_TEXT_BYTES: usize = 16 * 1024;

    /// Result of [`normalize`].
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Normalized {
        /// Normalized SQL, at most [`MAX_QUERY_TEXT_BYTES`] bytes.
        pub text: String,
        /// `hash64` of the full (uncut) normalized text.
        pub fingerprint: u64,
        /// sqlcommenter tags, URL-decoded, sorted by key, keys unique.
        pub tags: Vec<(String, String)>,
    }

    /// SQLite's full keyword list (147 words), kept sorted (a test checks it).
    const KEYWORDS: [&str; 147] = [
        "ABORT",
        "ACTION",
        "ADD",
        "AFTER",
        "ALL",
        "ALTER",
        "ALWAYS",
        "ANALYZE",
        "AND",
        "AS",
        "ASC",
        "ATTACH",
        "AUTOINCREMENT",
        "BEFORE",
        "BEGIN",
        "BETWEEN",
        "BY",
        "CASCADE",
        "CASE",
        "CAST",
        "CHECK",
        "COLLATE",
        "COLUMN",
        "COMMIT",
        "CONFLICT",
        "CONSTRAINT",
        "CREATE",
        "CROSS",
        "CURRENT",
        "CURRENT_DATE",
        "CURRENT_TIME",
        "CURRENT_TIMESTAMP",
        "DATABASE",
        "DEFAULT",
        "DEFERRABLE",
        "DEFERRED",
        "DELETE",
        "DESC",
        "DETACH",
        "DISTINCT",
        "DO",
        "DROP",
        "EACH",
        "ELSE",
        "END",
        "ESCAPE",
        "EXCEPT",
        "EXCLUDE",
        "EXCLUSIVE",
        "EXISTS",
        "EXPLAIN",
        "FAIL",
        "FILTER",
        "FIRST",
        "FOLLOWING",
        "FOR",
        "FOREIGN",
        "FROM",
        "FULL",
        "GENERATED",
        "GLOB",
        "GROUP",
        "GROUPS",
        "HAVING",
        "IF",
        "IGNORE",
        "IMMEDIATE",
        "IN",
        "INDEX",
        "INDEXED",
        "INITIALLY",
        "INNER",
        "INSERT",
        "INSTEAD",
        "INTERSECT",
        "INTO",
        "IS",
        "ISNULL",
        "JOIN",
        "KEY",
        "LAST",
        "LEFT",
        "LIKE",
        "LIMIT",
        "MATCH",
        "MATERIALIZED",
        "NATURAL",
        "NO",
        "NOT",
        "NOTHING",
        "NOTNULL",
        "NULL",
        "NULLS",
        "OF",
        "OFFSET",
        "ON",
        "OR",
        "ORDER",
        "OTHERS",
        "OUTER",
        "OVER",
        "PARTITION",
        "PLAN",
        "PRAGMA",
        "PRECEDING",
        "PRIMARY",
        "QUERY",
        "RAISE",
        "RANGE",
        "RECURSIVE",
        "REFERENCES",
        "REGEXP",
        "REINDEX",
        "RELEASE",
        "RENAME",
        "REPLACE",
        "RESTRICT",
        "RETURNING",
        "RIGHT",
        "ROLLBACK",
        "ROW",
        "ROWS",
        "SAVEPOINT",
        "SELECT",
        "SET",
        "TABLE",
        "TEMP",
        "TEMPORARY",
        "THEN",
        "TIES",
        "TO",
        "TRANSACTION",
        "TRIGGER",
        "UNBOUNDED",
        "UNION",
        "UNIQUE",
        "UPDATE",
        "USING",
        "VACUUM",
        "VALUES",
        "VIEW",
        "VIRTUAL",
        "WHEN",
        "WHERE",
        "WINDOW",
        "WITH",
        "WITHOUT",
    ];

    /// Longest keyword (`CURRENT_TIMESTAMP`).
    const MAX_KEYWORD_LEN: usize = 17;

    /// Up to the first 16 bytes of a word, little-endian, as one integer key.
    const fn pack(w: &[u8]) -> u128 {
        let mut k = 0u128;
        let mut i = 0;
        while i < w.len() && i < 16 {
            k |= (w[i] as u128) << (8 * i);
            i += 1;
        }
        k
    }

    /// Slots in the keyword hash table (a power of two, load factor ~0.3).
    const KW_TABLE_BITS: u32 = 9;

    const fn kw_hash(key: u128) -> usize {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        let lo = key as u64;
        let hi = (key >> 64) as u64;
        ((lo ^ hi.wrapping_mul(K)).wrapping_mul(K) >> (64 - KW_TABLE_BITS)) as usize
    }

    /// Open-addressing hash table (linear probing) of (packed key, index into
    /// KEYWORDS + 1); 0 marks an empty slot. Built at compile time.
    static KW_TABLE: [(u128, u8); 1 << KW_TABLE_BITS] = {
        let mut t = [(0u128, 0u8); 1 << KW_TABLE_BITS];
        let mut i = 0;
        while i < KEYWORDS.len() {
            let key = pack(KEYWORDS[i].as_bytes());
            let mut slot = kw_hash(key);
            while t[slot].1 != 0 {
                slot = (slot + 1) & ((1 << KW_TABLE_BITS) - 1);
            }
            t[slot] = (key, i as u8 + 1);
            i += 1;
        }
        t
    };

    /// Index of an (uppercase) keyword in KEYWORDS; compile error if absent.
    const fn kw_id(w: &str) -> u8 {
        let w = w.as_bytes();
        let mut i = 0;
        while i < KEYWORDS.len() {
            let k = KEYWORDS[i].as_bytes();
            if k.len() == w.len() {
                let mut j = 0;
                while j < k.len() && k[j] == w[j] {
                    j += 1;
                }
                if j == k.len() {
                    return i as u8;
                }
            }
            i += 1;
        }
        panic!("not a keyword")
    }

    const KW_IN: u8 = kw_id("IN");
    const KW_VALUES: u8 = kw_id("VALUES");
    const KW_CAST: u8 = kw_id("CAST");
    const KW_RAISE: u8 = kw_id("RAISE");
    const KW_REPLACE: u8 = kw_id("REPLACE");
    const KW_NULL: u8 = kw_id("NULL");
    const KW_END: u8 = kw_id("END");
    const KW_CURRENT_DATE: u8 = kw_id("CURRENT_DATE");
    const KW_CURRENT_TIME: u8 = kw_id("CURRENT_TIME");
    const KW_CURRENT_TIMESTAMP: u8 = kw_id("CURRENT_TIMESTAMP");

    /// The index in KEYWORDS of the keyword `word` spells (case-insensitive), if any.
    #[inline]
    fn keyword(word: &[u8]) -> Option<u8> {
        let n = word.len();
        if !(2..=MAX_KEYWORD_LEN).contains(&n) {
            return None;
        }
        let mut buf = [0u8; 16];
        let m = n.min(16);
        buf[..m].copy_from_slice(&word[..m]);
        // Clearing bit 0x20 upper-cases letters and keeps `_`; it maps digits and
        // `$` to bytes no keyword has, so they still cannot match.
        let key = u128::from_le_bytes(buf) & u128::from_le_bytes([0xDF; 16]);
        let mut slot = kw_hash(key);
        let id = loop {
            let (k, id) = KW_TABLE[slot];
            if id == 0 {
                return None;
            }
            if k == key {
                break id - 1;
            }
            slot = (slot + 1) & ((1 << KW_TABLE_BITS) - 1);
        };
        let kw = KEYWORDS[id as usize].as_bytes();
        (kw.len() == n && (n <= 16 || kw[16] == word[16].to_ascii_uppercase())).then_some(id)
    }

    // Byte classes.
    const C_SPACE: u8 = 1; // white space and ignored control bytes
    const C_ID_START: u8 = 2; // letters, '_', bytes >= 0x80
    const C_ID: u8 = 4; // identifier continuation: C_ID_START, digits, '$'
    const C_DIGIT: u8 = 8;
    const C_HEX: u8 = 16;

    static CLASS: [u8; 256] = build_classes();

    const fn build_classes() -> [u8; 256] {
        let mut t = [0u8; 256];
        let mut i = 0usize;
        while i < 256 {
            let b = i as u8;
            let mut c = 0u8;
            if b < 0x20 || b == 0x7f {
                c |= C_SPACE;
            }
            if b == b' ' {
                c |= C_SPACE;
            }
            if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 {
                c |= C_ID_START | C_ID;
            }
            if b.is_ascii_digit() {
                c |= C_DIGIT | C_ID | C_HEX;
            }
            if b == b'$' {
                c |= C_ID;
            }
            if matches!(b, b'a'..=b'f' | b'A'..=b'F') {
                c |= C_HEX;
            }
            t[i] = c;
            i += 1;
        }
        t
    }

    #[inline]
    fn class(b: u8) -> u8 {
        CLASS[b as usize]
    }

    #[inline]
    fn is_id(b: u8) -> bool {
        class(b) & C_ID != 0
    }

    #[inline]
    fn is_digit(b: u8) -> bool {
        class(b) & C_DIGIT != 0
    }

    #[inline]
    fn at(s: &[u8], i: usize) -> u8 {
        // 0 past the end: no class bit set and matches no punctuation below.
        if i < s.len() {
            s[i]
        } else {
            0
        }
    }

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Tok {
        /// Keyword (index into KEYWORDS); the text is its uppercase spelling.
        Keyword(u8),
        /// Unquoted identifier that is not a keyword.
        Ident,
        /// `"x"`, `[x]`, `` `x` ``.
        QuotedIdent,
        /// String or blob literal.
        Literal,
        /// Numeric literal (separate from `Literal` for sign folding).
        Number,
        /// Bare `?`.
        AnonParam,
        /// `?NNN`, `:name`, `@name`, `$name`, `#name`.
        Param,
        /// Operators and punctuation.
        Punct,
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Values {
        Off,
        /// Expect `(` opening a row group.
        Expect,
        /// Inside a row group at this paren depth.
        Group(u32),
        /// After a row group: expect `,` or leave.
        After,
    }

    /// Output builder: spacing rules and the IN / VALUES collapsing state.
    struct Out {
        buf: Vec<u8>,
        no_space_after: bool,
        /// Previous token ends a value (binary sign after it).
        prev_value: bool,
        /// Previous token is an identifier or function-like keyword (no space before `(`).
        prev_callable: bool,
        /// Previous token is the keyword IN.
        prev_in: bool,
        /// Position of the `(` of an IN list that is still collapsible.
        in_start: Option<usize>,
        in_items: u32,
        values: Values,
        values_prev: Option<(usize, usize)>,
        values_cur: usize,
    }

    impl Out {
        fn new(cap: usize) -> Out {
            Out {
                buf: Vec::with_capacity(cap),
                no_space_after: false,
                prev_value: false,
                prev_callable: false,
                prev_in: false,
                in_start: None,
                in_items: 0,
                values: Values::Off,
                values_prev: None,
                values_cur: 0,
            }
        }

        /// Write a unary sign that is not folded into a number.
        fn unary_sign(&mut self, sign: u8) {
            self.emit(Tok::Punct, &[sign]);
            self.no_space_after = true;
            self.prev_value = false;
        }

        fn emit(&mut self, tok: Tok, text: &[u8]) {
            // One-byte punctuation, 0 for anything else.
            let p = if matches!(tok, Tok::Punct) && text.len() == 1 {
                text[0]
            } else {
                0
            };
            let is_open = p == b'(';
            let is_close = p == b')';
            let is_comma = p == b',';
            let no_space_before =
                matches!(p, b')' | b',' | b'.' | b';') || (is_open && self.prev_callable);
            if !self.buf.is_empty() && !self.no_space_after && !no_space_before {
                self.buf.push(b' ');
            }
            let pos = self.buf.len();
            match tok {
                Tok::Literal | Tok::Number => self.buf.push(b'?'),
                _ if text.len() == 1 => self.buf.push(text[0]),
                _ => self.buf.extend_from_slice(text),
            }
            self.no_space_after = matches!(p, b'(' | b'.' | b'~');

            // IN-list collapse.
            if let Some(start) = self.in_start {
                match tok {
                    Tok::Literal | Tok::Number | Tok::AnonParam => self.in_items += 1,
                    _ if is_comma => {}
                    _ if is_close => {
                        if self.in_items > 0 {
                            self.buf.truncate(start);
                            self.buf.extend_from_slice(b"(?)");
                        }
                        self.in_start = None;
                    }
                    _ => self.in_start = None,
                }
            } else if is_open && self.prev_in {
                self.in_start = Some(pos);
                self.in_items = 0;
            }

            // Multi-row VALUES collapse.
            match self.values {
                Values::Off => {
                    if matches!(tok, Tok::Keyword(KW_VALUES)) {
                        self.values = Values::Expect;
                        self.values_prev = None;
                    }
                }
                Values::Expect => {
                    if is_open {
                        self.values_cur = pos;
                        self.values = Values::Group(1);
                    } else {
                        self.values = Values::Off;
                    }
                }
                Values::Group(depth) => {
                    if is_open {
                        self.values = Values::Group(depth.saturating_add(1));
                    } else if is_close {
                        if depth > 1 {
                            self.values = Values::Group(depth - 1);
                        } else {
                            let cur = (self.values_cur, self.buf.len());
                            match self.values_prev {
                                Some(prev)
                                    if self.buf[prev.0..prev.1] == self.buf[cur.0..cur.1] =>
                                {
                                    self.buf.truncate(prev.1);
                                }
                                _ => self.values_prev = Some(cur),
                            }
                            self.values = Values::After;
                        }
                    }
                }
                Values::After => {
                    self.values = if is_comma {
                        Values::Expect
                    } else {
                        Values::Off
                    };
                }
            }

            self.prev_in = matches!(tok, Tok::Keyword(KW_IN));
            self.prev_callable = match tok {
                Tok::Ident | Tok::QuotedIdent => true,
                Tok::Keyword(k) => matches!(k, KW_CAST | KW_RAISE | KW_REPLACE),
                _ => false,
            };
            self.prev_value = match tok {
                Tok::Ident
                | Tok::QuotedIdent
                | Tok::Literal
                | Tok::Number
                | Tok::AnonParam
                | Tok::Param => true,
                Tok::Keyword(k) => matches!(
                    k,
                    KW_NULL | KW_END | KW_CURRENT_DATE | KW_CURRENT_TIME | KW_CURRENT_TIMESTAMP
                ),
                Tok::Punct => is_close,
            };
        }
    }

    /// End of a quoted run starting at `i` (the opening quote) closed by `close`;
    /// a doubled closing quote is an escape when `doubled`. Unterminated: `s.len()`.
    fn scan_quoted(s: &[u8], i: usize, close: u8, doubled: bool) -> usize {
        let mut j = i + 1;
        loop {
            match s[j.min(s.len())..].iter().position(|&b| b == close) {
                None => return s.len(),
                Some(k) => {
                    j += k + 1;
                    if doubled && at(s, j) == close {
                        j += 1;
                    } else {
                        return j;
                    }
                }
            }
        }
    }

    /// End of a numeric literal starting at `i` (a digit, or `.` before a digit).
    fn scan_number(s: &[u8], i: usize) -> usize {
        let mut j = i;
        if s[i] == b'0' && (at(s, i + 1) | 0x20) == b'x' && class(at(s, i + 2)) & C_HEX != 0 {
            j += 2;
            while class(at(s, j)) & C_HEX != 0 || at(s, j) == b'_' {
                j += 1;
            }
        } else {
            while is_digit(at(s, j)) || at(s, j) == b'_' {
                j += 1;
            }
            if at(s, j) == b'.' {
                j += 1;
                while is_digit(at(s, j)) || at(s, j) == b'_' {
                    j += 1;
                }
            }
            if (at(s, j) | 0x20) == b'e'
                && (is_digit(at(s, j + 1))
                    || (matches!(at(s, j + 1), b'+' | b'-') && is_digit(at(s, j + 2))))
            {
                j += 2;
                while is_digit(at(s, j)) {
                    j += 1;
                }
            }
        }
        // SQLite makes a number glued to identifier characters one (illegal) token.
        while is_id(at(s, j)) {
            j += 1;
        }
        j
    }

    /// End of a `:name`/`@name`/`$name`/`#name` variable starting at `i`, following
    /// SQLite (TCL-style `::` and `(..)` suffixes). `None` when no name follows.
    fn scan_variable(s: &[u8], i: usize) -> Option<usize> {
        let mut j = i + 1;
        let mut n = 0usize;
        while j < s.len() {
            let c = s[j];
            if is_id(c) {
                n += 1;
                j += 1;
            } else if c == b'(' && n > 0 {
                j += 1;
                while j < s.len() && class(s[j]) & C_SPACE == 0 && s[j] != b')' {
                    j += 1;
                }
                if at(s, j) == b')' {
                    j += 1;
                }
                break;
            } else if c == b':' && at(s, j + 1) == b':' {
                j += 2;
            } else {
                break;
            }
        }
        if n == 0 {
            None
        } else {
            Some(j)
        }
    }

    /// Normalize one SQL statement (bytes may be invalid UTF-8: treat bytes >= 0x80
    /// as identifier chars like SQLite does; output is valid UTF-8, invalid
    /// sequences replaced). See the module documentation for the rules.
    pub fn normalize(sql: &[u8]) -> Normalized {
        let s = sql;
        let n = s.len();
        // The output is at most ~2x the input (one space per token); big inputs
        // grow the buffer as needed instead of reserving it all up front.
        let mut out = Out::new((2 * n).min(1 << 20) + 16);
        let mut tags: Vec<(String, String)> = Vec::new();
        let mut pending_sign: Option<u8> = None;
        let mut i = 0usize;

        while i < n {
            let c = s[i];
            let start = i;
            let tok: Tok;
            match c {
                b'-' if at(s, i + 1) == b'-' => {
                    i = match s[i..].iter().position(|&b| b == b'\n') {
                        Some(k) => i + k + 1,
                        None => n,
                    };
                    continue;
                }
                b'/' if at(s, i + 1) == b'*' => {
                    let body = i + 2;
                    let mut j = body;
                    let mut close = None;
                    while let Some(k) = s[j.min(n)..].iter().position(|&b| b == b'*') {
                        j += k + 1;
                        if at(s, j) == b'/' {
                            close = Some(j - 1);
                            break;
                        }
                    }
                    match close {
                        Some(end) => {
                            parse_sqlcommenter(&s[body..end], &mut tags);
                            i = end + 2;
                        }
                        None => i = n,
                    }
                    continue;
                }
                b'\'' => {
                    i = scan_quoted(s, i, b'\'', true);
                    tok = Tok::Literal;
                }
                b'"' | b'`' => {
                    i = scan_quoted(s, i, c, true);
                    tok = Tok::QuotedIdent;
                }
                b'[' => {
                    i = scan_quoted(s, i, b']', false);
                    tok = Tok::QuotedIdent;
                }
                b'x' | b'X' if at(s, i + 1) == b'\'' => {
                    i = scan_quoted(s, i + 1, b'\'', false);
                    tok = Tok::Literal;
                }
                b'0'..=b'9' => {
                    i = scan_number(s, i);
                    tok = Tok::Number;
                }
                b'.' if is_digit(at(s, i + 1)) => {
                    i = scan_number(s, i);
                    tok = Tok::Number;
                }
                b'?' => {
                    i += 1;
                    while is_digit(at(s, i)) {
                        i += 1;
                    }
                    tok = if i - start == 1 {
                        Tok::AnonParam
                    } else {
                        Tok::Param
                    };
                }
                b':' | b'@' | b'$' | b'#' => match scan_variable(s, i) {
                    Some(end) => {
                        i = end;
                        tok = Tok::Param;
                    }
                    None => {
                        i += 1;
                        tok = Tok::Punct;
                    }
                },
                _ if class(c) & C_SPACE != 0 => {
                    i += 1;
                    while i < n && class(s[i]) & C_SPACE != 0 {
                        i += 1;
                    }
                    continue;
                }
                _ if class(c) & C_ID_START != 0 => {
                    i += 1;
                    i += s[i..].iter().position(|&b| !is_id(b)).unwrap_or(n - i);
                    tok = Tok::Ident;
                }
                _ => {
                    let c1 = at(s, i + 1);
                    i += match (c, c1) {
                        (b'-', b'>') if at(s, i + 2) == b'>' => 3,
                        (b'-', b'>')
                        | (b'<', b'=' | b'>' | b'<')
                        | (b'>', b'=' | b'>')
                        | (b'=', b'=')
                        | (b'!', b'=')
                        | (b'|', b'|') => 2,
                        _ => 1,
                    };
                    tok = Tok::Punct;
                }
            }

            let mut text = &s[start..i];
            let mut tok = tok;
            if matches!(tok, Tok::Ident) {
                if let Some(kw) = keyword(text) {
                    tok = Tok::Keyword(kw);
                    text = KEYWORDS[kw as usize].as_bytes();
                }
            }

            // Sign folding: a unary sign waits for the next token.
            if matches!(tok, Tok::Punct) && matches!(text, [b'-' | b'+']) && !out.prev_value {
                if let Some(p) = pending_sign.take() {
                    out.unary_sign(p);
                }
                pending_sign = Some(text[0]);
                continue;
            }
            if let Some(p) = pending_sign.take() {
                if matches!(tok, Tok::Number) {
                    out.emit(Tok::Number, b"?");
                    continue;
                }
                out.unary_sign(p);
            }
            out.emit(tok, text);
        }
        if let Some(p) = pending_sign {
            out.unary_sign(p);
        }

        let mut buf = out.buf;
        while matches!(buf.last(), Some(b';' | b' ')) {
            buf.pop();
        }
        let mut text = match String::from_utf8(buf) {
            Ok(t) => t,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        let fingerprint = hash64(text.as_bytes());
        if text.len() > MAX_QUERY_TEXT_BYTES {
            let mut cut = MAX_QUERY_TEXT_BYTES - '…'.len_utf8();
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        if tags.len() > 1 {
            tags.sort_by(|a, b| a.0.cmp(&b.0)); // stable: equal keys keep input order
            tags.reverse();
            tags.dedup_by(|later, kept| later.0 == kept.0); // keeps the last occurrence
            tags.reverse();
        }
        Normalized {
            text,
            fingerprint,
            tags,
        }
    }

    /// Lift `key='value'` pairs from a comment body into `tags` when the whole body
    /// is a sqlcommenter comment; otherwise leave `tags` untouched.
    fn parse_sqlcommenter(body: &[u8], tags: &mut Vec<(String, String)>) {
        let is_ws = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c);
        let mut i = 0usize;
        let n = body.len();
        let before = tags.len();
        let mut value = Vec::new();
        let fail = |tags: &mut Vec<(String, String)>| tags.truncate(before);
        loop {
            while i < n && is_ws(body[i]) {
                i += 1;
            }
            let k0 = i;
            while i < n && !matches!(body[i], b'=' | b',' | b'\'') && !is_ws(body[i]) {
                i += 1;
            }
            let key = &body[k0..i];
            while i < n && is_ws(body[i]) {
                i += 1;
            }
            if key.is_empty() || at(body, i) != b'=' {
                return fail(tags);
            }
            i += 1;
            while i < n && is_ws(body[i]) {
                i += 1;
            }
            if at(body, i) != b'\'' {
                return fail(tags);
            }
            i += 1;
            value.clear();
            let mut closed = false;
            while i < n {
                match body[i] {
                    b'\\' if i + 1 < n => {
                        value.push(body[i + 1]);
                        i += 2;
                    }
                    b'\'' => {
                        closed = true;
                        i += 1;
                        break;
                    }
                    b => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
            if !closed {
                return fail(tags);
            }
            tags.push((url_decode(key), url_decode(&value)));
            while i < n && is_ws(body[i]) {
                i += 1;
            }
            if i == n {
                return;
            }
            if body[i] != b',' {
                return fail(tags);
            }
            i += 1;
        }
    }

    /// Percent-decode (`%XX`); malformed escapes are kept as written. `+` is kept.
    fn url_decode(b: &[u8]) -> String {
        let hex = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                if let (Some(h), Some(l)) = (hex(at(b, i + 1)), hex(at(b, i + 2))) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        match String::from_utf8(out) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// Stable 64-bit hash: FNV-1a 64 (offset basis 0xcbf29ce484222325, prime
    /// 0x100000001b3). Fingerprints are persisted: never change this function.
    pub fn hash64(bytes: &[u8]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }
}
