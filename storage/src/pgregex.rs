//! PostgreSQL's regular expressions on SQLite: `~`, `~*`, `!~`, `!~*` (rewritten to
//! `tessera_regex`) and `regexp_replace`. Patterns compile with the `regex` crate, whose
//! matching time is linear in the input (no pattern can make a shard spin), and a thread keeps
//! its last patterns compiled. Registered on every shard and scratch connection.

use regex::{Regex, RegexBuilder};
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use std::cell::RefCell;
use std::collections::HashMap;

/// Compiled patterns a thread keeps; beyond this many, it starts over.
const KEPT_PATTERNS: usize = 64;

/// Largest compiled pattern, in bytes (the `regex` crate's own default is 10 MiB).
const MAX_PATTERN_BYTES: usize = 1 << 20;

thread_local! {
    static PATTERNS: RefCell<HashMap<(String, bool), Regex>> = RefCell::new(HashMap::new());
}

/// `pattern` compiled, case-insensitive or not; PostgreSQL's message when it is not valid.
pub fn compiled(pattern: &str, case_insensitive: bool) -> Result<Regex, String> {
    let key = (pattern.to_string(), case_insensitive);
    if let Some(re) = PATTERNS.with(|p| p.borrow().get(&key).cloned()) {
        return Ok(re);
    }
    let re = RegexBuilder::new(pattern)
        .case_insensitive(case_insensitive)
        .size_limit(MAX_PATTERN_BYTES)
        .build()
        .map_err(|e| {
            let why = e.to_string();
            let why = why.lines().last().unwrap_or("").trim().to_string();
            format!("invalid regular expression: {why}")
        })?;
    PATTERNS.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() >= KEPT_PATTERNS {
            p.clear();
        }
        p.insert(key, re.clone());
    });
    Ok(re)
}

fn text(ctx: &Context<'_>, i: usize) -> Option<String> {
    match ctx.get_raw(i) {
        ValueRef::Null => None,
        ValueRef::Integer(n) => Some(n.to_string()),
        ValueRef::Real(r) => Some(r.to_string()),
        ValueRef::Text(b) | ValueRef::Blob(b) => Some(String::from_utf8_lossy(b).into_owned()),
    }
}

fn fail(m: String) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(m.into())
}

/// Registers the functions on `conn`.
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    let pure = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    // tessera_regex(text, pattern, case_insensitive): `~` (0) and `~*` (1).
    conn.create_scalar_function("tessera_regex", 3, pure, |ctx| {
        let (Some(s), Some(p)) = (text(ctx, 0), text(ctx, 1)) else {
            return Ok(None);
        };
        let ci = matches!(ctx.get_raw(2), ValueRef::Integer(1));
        Ok(Some(compiled(&p, ci).map_err(fail)?.is_match(&s)))
    })?;
    for n in [3, 4] {
        conn.create_scalar_function("regexp_replace", n, pure, |ctx| {
            let (Some(s), Some(p), Some(r)) = (text(ctx, 0), text(ctx, 1), text(ctx, 2)) else {
                return Ok(None);
            };
            let flags = match ctx.len() {
                4 => match text(ctx, 3) {
                    Some(f) => f,
                    None => return Ok(None),
                },
                _ => String::new(),
            };
            replace(&s, &p, &r, &flags).map(Some).map_err(fail)
        })?;
    }
    Ok(())
}

/// `regexp_replace(s, pattern, replacement, flags)`: the first match replaced, every match
/// with `g`; `i` ignores case. `\1` … `\9` in the replacement are groups, `&` and `\&` the
/// whole match and a literal `&`.
fn replace(s: &str, pattern: &str, replacement: &str, flags: &str) -> Result<String, String> {
    let mut global = false;
    let mut ci = false;
    for f in flags.chars() {
        match f {
            'g' => global = true,
            'i' => ci = true,
            'c' => ci = false,
            other => return Err(format!("invalid regular expression option: \"{other}\"")),
        }
    }
    let re = compiled(pattern, ci)?;
    let template = template(replacement);
    Ok(match global {
        true => re.replace_all(s, template.as_str()).into_owned(),
        false => re.replace(s, template.as_str()).into_owned(),
    })
}

/// PostgreSQL's replacement syntax in the `regex` crate's.
fn template(replacement: &str) -> String {
    let mut out = String::with_capacity(replacement.len());
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(d @ '0'..='9') => out.push_str(&format!("${{{d}}}")),
                Some('&') => out.push('&'),
                Some('$') => out.push_str("$$"),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            '&' => out.push_str("${0}"),
            '$' => out.push_str("$$"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(sql: &str) -> rusqlite::Result<String> {
        let c = Connection::open_in_memory().expect("open");
        register(&c).expect("register");
        c.query_row(sql, [], |r| r.get::<_, String>(0))
    }

    #[test]
    fn regular_expressions_answer_as_postgresql() {
        let cases = [
            ("SELECT tessera_regex('abc', 'b', 0) || tessera_regex('abc', '^b', 0) || tessera_regex('ABC', 'b', 1)", "101"),
            ("SELECT regexp_replace('hello world', 'o', '0', 'g')", "hell0 w0rld"),
            ("SELECT regexp_replace('hello world', 'o', '0')", "hell0 world"),
            ("SELECT regexp_replace('John Smith', '(\\w+) (\\w+)', '\\2, \\1')", "Smith, John"),
            ("SELECT regexp_replace('abc', 'B', '[&]', 'i')", "a[b]c"),
            ("SELECT regexp_replace('a$b', '\\$', '\\&$')", "a&$b"),
        ];
        for (sql, want) in cases {
            assert_eq!(q(sql).expect(sql), want, "{sql}");
        }
        let e = q("SELECT tessera_regex('a', '(', 0)").expect_err("bad pattern");
        assert!(e.to_string().contains("invalid regular expression"), "{e}");
        let e = q("SELECT regexp_replace('a', 'a', 'b', 'z')").expect_err("bad flag");
        assert!(
            e.to_string().contains("invalid regular expression option"),
            "{e}"
        );
    }
}
