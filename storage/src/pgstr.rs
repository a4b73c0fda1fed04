//! PostgreSQL's string functions SQLite lacks or answers differently: Unicode-aware `upper`
//! and `lower`, `initcap`, `lpad`/`rpad`, `repeat`, `reverse`, `translate`, `split_part`,
//! `md5`, `ascii`/`chr`, `to_hex`, `quote_literal`/`quote_ident`, `starts_with`, and `left` /
//! `right` with a negative count. Strict as PostgreSQL's are: a NULL argument gives NULL.
//! Registered on every shard and scratch connection.

use md5::{Digest, Md5};
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::{Value, ValueRef};
use rusqlite::Connection;

type Fx = fn(&[Arg]) -> Result<Value, String>;

/// One argument, as text or as an integer as the function needs it.
enum Arg {
    Null,
    Text(String),
    Int(i64),
}

impl Arg {
    fn text(&self) -> &str {
        match self {
            Arg::Text(s) => s,
            _ => "",
        }
    }

    fn int(&self) -> Result<i64, String> {
        match self {
            Arg::Int(i) => Ok(*i),
            Arg::Text(t) => t
                .trim()
                .parse()
                .map_err(|_| format!("invalid input syntax for type integer: \"{t}\"")),
            Arg::Null => Ok(0),
        }
    }
}

fn arg(v: ValueRef<'_>) -> Arg {
    match v {
        ValueRef::Null => Arg::Null,
        ValueRef::Integer(i) => Arg::Int(i),
        ValueRef::Real(r) => Arg::Text(r.to_string()),
        ValueRef::Text(b) | ValueRef::Blob(b) => Arg::Text(String::from_utf8_lossy(b).into_owned()),
    }
}

/// Registers the functions on `conn`.
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    let pure = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    let functions: [(&str, i32, Fx); 20] = [
        ("upper", 1, |a| text(a[0].text().to_uppercase())),
        ("lower", 1, |a| text(a[0].text().to_lowercase())),
        ("initcap", 1, |a| text(initcap(a[0].text()))),
        ("lpad", 2, |a| pad(a[0].text(), a[1].int()?, " ", true)),
        ("lpad", 3, |a| {
            pad(a[0].text(), a[1].int()?, a[2].text(), true)
        }),
        ("rpad", 2, |a| pad(a[0].text(), a[1].int()?, " ", false)),
        ("rpad", 3, |a| {
            pad(a[0].text(), a[1].int()?, a[2].text(), false)
        }),
        ("repeat", 2, |a| repeat(a[0].text(), a[1].int()?)),
        ("reverse", 1, |a| text(a[0].text().chars().rev().collect())),
        ("translate", 3, |a| {
            text(translate(a[0].text(), a[1].text(), a[2].text()))
        }),
        ("split_part", 3, |a| {
            split_part(a[0].text(), a[1].text(), a[2].int()?)
        }),
        ("md5", 1, |a| {
            text(hex(&Md5::digest(a[0].text().as_bytes())))
        }),
        ("ascii", 1, |a| {
            Ok(Value::Integer(
                a[0].text().chars().next().map_or(0, |c| c as i64),
            ))
        }),
        ("chr", 1, |a| chr(a[0].int()?)),
        ("to_hex", 1, |a| text(format!("{:x}", a[0].int()?))),
        ("quote_literal", 1, |a| text(quote_literal(a[0].text()))),
        ("quote_ident", 1, |a| text(quote_ident(a[0].text()))),
        ("starts_with", 2, |a| {
            Ok(Value::Integer(a[0].text().starts_with(a[1].text()).into()))
        }),
        ("tessera_left", 2, |a| text(left(a[0].text(), a[1].int()?))),
        ("tessera_right", 2, |a| {
            text(right(a[0].text(), a[1].int()?))
        }),
    ];
    for (name, n, f) in functions {
        conn.create_scalar_function(name, n, pure, move |ctx| call(ctx, f))?;
    }
    conn.create_scalar_function("tessera_max_chars", 3, pure, |ctx| {
        call(ctx, |a| max_chars(a[0].text(), a[1].int()?, a[2].text()))
    })
}

/// A `varchar(n)` / `char(n)` column's check: at most `n` characters, except spaces past
/// them (PostgreSQL cuts those off rather than fail).
fn max_chars(s: &str, n: i64, ty: &str) -> Result<Value, String> {
    let n = usize::try_from(n).unwrap_or(0);
    match s.chars().skip(n).all(|c| c == ' ') {
        true => Ok(Value::Integer(1)),
        false => Err(format!("value too long for type {ty}")),
    }
}

/// Calls `f` over the context's arguments; NULL if any is NULL (strict).
fn call(ctx: &Context<'_>, f: Fx) -> rusqlite::Result<Value> {
    let args: Vec<Arg> = (0..ctx.len()).map(|i| arg(ctx.get_raw(i))).collect();
    if args.iter().any(|a| matches!(a, Arg::Null)) {
        return Ok(Value::Null);
    }
    f(&args).map_err(|m| rusqlite::Error::UserFunctionError(m.into()))
}

fn text(s: String) -> Result<Value, String> {
    Ok(Value::Text(s))
}

fn initcap(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_word = false;
    for c in s.chars() {
        if c.is_alphanumeric() {
            match in_word {
                true => out.extend(c.to_lowercase()),
                false => out.extend(c.to_uppercase()),
            }
            in_word = true;
        } else {
            out.push(c);
            in_word = false;
        }
    }
    out
}

/// `lpad`/`rpad`: to `n` characters, cut if longer, filled with `fill` repeated.
fn pad(s: &str, n: i64, fill: &str, left: bool) -> Result<Value, String> {
    let n = usize::try_from(n).unwrap_or(0);
    let chars: Vec<char> = s.chars().collect();
    if chars.len() >= n || fill.is_empty() {
        return text(chars.into_iter().take(n).collect());
    }
    let filling: String = fill.chars().cycle().take(n - chars.len()).collect();
    text(match left {
        true => filling + s,
        false => s.to_string() + &filling,
    })
}

/// Past this many bytes, `repeat` fails as PostgreSQL's does past its 1 GB limit.
const MAX_STRING_BYTES: usize = 1 << 28;

fn repeat(s: &str, n: i64) -> Result<Value, String> {
    let n = usize::try_from(n).unwrap_or(0);
    if s.len().saturating_mul(n) > MAX_STRING_BYTES {
        return Err("requested length too large".into());
    }
    text(s.repeat(n))
}

fn translate(s: &str, from: &str, to: &str) -> String {
    let from: Vec<char> = from.chars().collect();
    let to: Vec<char> = to.chars().collect();
    s.chars()
        .filter_map(|c| match from.iter().position(|f| *f == c) {
            Some(i) => to.get(i).copied(),
            None => Some(c),
        })
        .collect()
}

fn split_part(s: &str, delimiter: &str, n: i64) -> Result<Value, String> {
    if n == 0 {
        return Err("field position must not be zero".into());
    }
    let parts: Vec<&str> = match delimiter.is_empty() {
        true => vec![s],
        false => s.split(delimiter).collect(),
    };
    let i = match n > 0 {
        true => usize::try_from(n - 1).ok(),
        false => usize::try_from(-n)
            .ok()
            .and_then(|back| parts.len().checked_sub(back)),
    };
    text(i.and_then(|i| parts.get(i)).unwrap_or(&"").to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn chr(code: i64) -> Result<Value, String> {
    if code == 0 {
        return Err("null character not permitted".into());
    }
    match u32::try_from(code).ok().and_then(char::from_u32) {
        Some(c) => text(c.to_string()),
        None => Err("requested character too large for encoding".into()),
    }
}

fn quote_literal(s: &str) -> String {
    let quoted = s.replace('\'', "''");
    match s.contains('\\') {
        true => format!("E'{}'", quoted.replace('\\', "\\\\")),
        false => format!("'{quoted}'"),
    }
}

/// An identifier as PostgreSQL's `quote_ident` writes it: quoted unless plain lower case.
pub fn quote_ident(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    match plain {
        true => s.to_string(),
        false => format!("\"{}\"", s.replace('"', "\"\"")),
    }
}

/// `left(s, n)`: the first `n` characters; a negative `n` drops that many from the end.
fn left(s: &str, n: i64) -> String {
    let len = s.chars().count() as i64;
    let keep = if n >= 0 { n.min(len) } else { (len + n).max(0) };
    s.chars().take(keep as usize).collect()
}

/// `right(s, n)`: the last `n` characters; a negative `n` drops that many from the start.
fn right(s: &str, n: i64) -> String {
    let len = s.chars().count() as i64;
    let skip = if n >= 0 {
        (len - n).max(0)
    } else {
        (-n).min(len)
    };
    s.chars().skip(skip as usize).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(sql: &str) -> Result<Value, rusqlite::Error> {
        let c = Connection::open_in_memory().expect("open");
        register(&c).expect("register");
        c.query_row(sql, [], |r| r.get::<_, Value>(0))
    }

    fn t(sql: &str) -> String {
        match q(sql).expect(sql) {
            Value::Text(s) => s,
            Value::Integer(i) => i.to_string(),
            v => format!("{v:?}"),
        }
    }

    #[test]
    fn strings_answer_as_postgresql() {
        let cases = [
            ("SELECT upper('é') || lower('ÉA')", "Ééa"),
            ("SELECT initcap('hello wORLD-x')", "Hello World-X"),
            ("SELECT lpad('7', 3, '0') || rpad('ab', 5, '-') || lpad('hello', 2)", "007ab---he"),
            ("SELECT lpad('x', 4, 'ab')", "abax"),
            ("SELECT repeat('ab', 3) || reverse('abc') || repeat('x', -1)", "abababcba"),
            ("SELECT translate('hello', 'el', 'ip')", "hippo"),
            ("SELECT translate('abc', 'ab', 'x')", "xc"),
            ("SELECT split_part('a,b,c', ',', 2) || split_part('a,b,c', ',', 5) || split_part('a,b,c', ',', -1)", "bc"),
            ("SELECT md5('abc')", "900150983cd24fb0d6963f7d28e17f72"),
            ("SELECT ascii('A') || chr(65) || to_hex(255)", "65Aff"),
            ("SELECT quote_literal('it''s') || quote_ident('a b') || quote_ident('ab')", "'it''s'\"a b\"ab"),
            ("SELECT starts_with('hello', 'he') || starts_with('hello', 'x')", "10"),
            ("SELECT tessera_left('hello', -1) || tessera_right('hello', -1) || tessera_left('hi', 5)", "hellellohi"),
        ];
        for (sql, want) in cases {
            assert_eq!(t(sql), want, "{sql}");
        }
        assert_eq!(q("SELECT lpad(NULL, 3)").expect("null"), Value::Null);
        assert_eq!(
            t("SELECT tessera_max_chars('abc  ', 3, 'character(3)')"),
            "1"
        );
        let e = q("SELECT tessera_max_chars('abcd', 3, 'character varying(3)')").expect_err("long");
        assert!(
            e.to_string()
                .contains("value too long for type character varying(3)"),
            "{e}"
        );
        let e = q("SELECT split_part('a', ',', 0)").expect_err("zero field");
        assert!(
            e.to_string().contains("field position must not be zero"),
            "{e}"
        );
    }
}
