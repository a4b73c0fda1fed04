//! PostgreSQL `jsonb` semantics: parsing, canonical output, containment, existence, paths and `jsonb_set`.
//!
//! Shards store JSON as text; these functions give it PostgreSQL's meaning wherever it is
//! evaluated (the storage nodes register them as SQLite functions, the coordinator's scratch
//! database too). Output follows `jsonb`'s canonical form: object keys ordered by length then
//! bytes, duplicate keys resolved to the last, `": "` and `", "` separators.

use std::cmp::Ordering;
use std::fmt::Write;

/// A parsed JSON value. Numbers keep their text, so `1.50` prints as `1.50` (as `numeric` does).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number, as written (exponent forms are expanded).
    Number(String),
    /// A string, unescaped.
    String(String),
    /// An array.
    Array(Vec<Json>),
    /// An object in `jsonb` key order, without duplicate keys.
    Object(Vec<(String, Json)>),
}

/// Input that is not JSON (SQLSTATE 22P02).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid input syntax for type json: {0}")]
pub struct JsonError(pub String);

/// Parses JSON text into `jsonb` form.
pub fn parse(text: &str) -> Result<Json, JsonError> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        depth: 0,
    };
    p.ws();
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("unexpected trailing characters"));
    }
    Ok(v)
}

/// `doc -> key` without building the whole document: the value of the object field `key`
/// (the last one, as `jsonb` keeps the last of duplicate keys), parsed; `None` when `text` is
/// not an object or has no such field. Only the field's value is parsed in full; the rest is
/// skipped over (checked for balance, not for every rule: text that is not JSON may give
/// `None` here where a full parse errs).
pub fn field(text: &str, key: &str) -> Result<Option<Json>, JsonError> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        depth: 0,
    };
    p.ws();
    if !p.eat("{") {
        // Not an object: arrays and scalars have no fields (a full parse still checks them).
        parse(text)?;
        return Ok(None);
    }
    let mut found = None;
    p.ws();
    if p.eat("}") {
        return Ok(None);
    }
    loop {
        p.ws();
        if p.s.get(p.i) != Some(&b'"') {
            return Err(p.err("expected a string key"));
        }
        let k = p.string()?;
        p.ws();
        if !p.eat(":") {
            return Err(p.err("expected \":\""));
        }
        p.ws();
        if k == key {
            found = Some(p.value()?);
        } else {
            p.skip_value()?;
        }
        p.ws();
        if p.eat(",") {
            continue;
        }
        if p.eat("}") {
            p.ws();
            if p.i != p.s.len() {
                return Err(p.err("unexpected trailing characters"));
            }
            return Ok(found);
        }
        return Err(p.err("expected \",\" or \"}\""));
    }
}

/// An object from fields in any order (`jsonb` order; the last of duplicate keys wins).
pub fn object(fields: Vec<(String, Json)>) -> Json {
    Json::Object(into_jsonb_object(fields))
}

/// `text::jsonb`: the canonical text of `text`, or 22P02.
pub fn canonical(text: &str) -> Result<String, JsonError> {
    Ok(parse(text)?.to_string())
}

/// PostgreSQL's order of `jsonb` object keys: shorter first, then bytewise.
fn key_order(a: &str, b: &str) -> Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

/// Nesting deeper than this is refused (PostgreSQL's stack limit gives a similar error).
const MAX_DEPTH: usize = 512;

impl Parser<'_> {
    fn err(&self, what: &str) -> JsonError {
        JsonError(format!("{what} at character {}", self.i + 1))
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<Json, JsonError> {
        match self.s.get(self.i) {
            None => Err(self.err("unexpected end of input")),
            Some(b'{') => self.nested(|p| p.object()),
            Some(b'[') => self.nested(|p| p.array()),
            Some(b'"') => Ok(Json::String(self.string()?)),
            Some(b't') if self.eat("true") => Ok(Json::Bool(true)),
            Some(b'f') if self.eat("false") => Ok(Json::Bool(false)),
            Some(b'n') if self.eat("null") => Ok(Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn nested(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<Json, JsonError>,
    ) -> Result<Json, JsonError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        let v = f(self);
        self.depth -= 1;
        v
    }

    /// Moves past one value without building it.
    fn skip_value(&mut self) -> Result<(), JsonError> {
        match self.s.get(self.i) {
            Some(b'"') => self.skip_string(),
            Some(b'{' | b'[') => {
                let mut depth = 0usize;
                while let Some(&c) = self.s.get(self.i) {
                    match c {
                        b'"' => {
                            self.skip_string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Ok(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
                Err(self.err("unexpected end of input"))
            }
            Some(_) => {
                while self.i < self.s.len()
                    && !matches!(
                        self.s[self.i],
                        b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'
                    )
                {
                    self.i += 1;
                }
                Ok(())
            }
            None => Err(self.err("unexpected end of input")),
        }
    }

    fn skip_string(&mut self) -> Result<(), JsonError> {
        self.i += 1;
        while let Some(&c) = self.s.get(self.i) {
            match c {
                b'"' => {
                    self.i += 1;
                    return Ok(());
                }
                b'\\' => self.i += 2,
                _ => self.i += 1,
            }
        }
        Err(self.err("unterminated string"))
    }

    fn object(&mut self) -> Result<Json, JsonError> {
        self.i += 1;
        let mut fields: Vec<(String, Json)> = Vec::new();
        self.ws();
        if self.eat("}") {
            return Ok(Json::Object(fields));
        }
        loop {
            self.ws();
            if self.s.get(self.i) != Some(&b'"') {
                return Err(self.err("expected a string key"));
            }
            let k = self.string()?;
            self.ws();
            if !self.eat(":") {
                return Err(self.err("expected \":\""));
            }
            self.ws();
            let v = self.value()?;
            fields.push((k, v));
            self.ws();
            if self.eat(",") {
                continue;
            }
            if self.eat("}") {
                break;
            }
            return Err(self.err("expected \",\" or \"}\""));
        }
        Ok(Json::Object(into_jsonb_object(fields)))
    }

    fn array(&mut self) -> Result<Json, JsonError> {
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.eat("]") {
            return Ok(Json::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value()?);
            self.ws();
            if self.eat(",") {
                continue;
            }
            if self.eat("]") {
                break;
            }
            return Err(self.err("expected \",\" or \"]\""));
        }
        Ok(Json::Array(items))
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.i += 1;
        let mut out = String::new();
        let mut start = self.i;
        loop {
            let Some(&c) = self.s.get(self.i) else {
                return Err(self.err("unterminated string"));
            };
            match c {
                b'"' => {
                    out.push_str(self.chunk(start)?);
                    self.i += 1;
                    return Ok(out);
                }
                b'\\' => {
                    out.push_str(self.chunk(start)?);
                    self.i += 1;
                    let e = *self
                        .s
                        .get(self.i)
                        .ok_or_else(|| self.err("unterminated string"))?;
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape()?),
                        _ => return Err(self.err("invalid escape")),
                    }
                    start = self.i;
                }
                0..=0x1f => return Err(self.err("control character in string")),
                _ => self.i += 1,
            }
        }
    }

    fn chunk(&self, start: usize) -> Result<&str, JsonError> {
        std::str::from_utf8(&self.s[start..self.i]).map_err(|_| self.err("invalid UTF-8"))
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| self.err("invalid \\u escape"))?;
        self.i += 4;
        Ok(h)
    }

    fn unicode_escape(&mut self) -> Result<char, JsonError> {
        let hi = self.hex4()?;
        if hi == 0 {
            return Err(self.err("\\u0000 cannot be converted to text"));
        }
        let code = if (0xD800..0xDC00).contains(&hi) {
            if !self.eat("\\u") {
                return Err(self.err("unpaired Unicode high surrogate"));
            }
            let lo = self.hex4()?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(self.err("invalid Unicode low surrogate"));
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else {
            hi
        };
        char::from_u32(code).ok_or_else(|| self.err("invalid Unicode escape"))
    }

    fn number(&mut self) -> Result<Json, JsonError> {
        let start = self.i;
        self.eat("-");
        let digits = |p: &mut Self| {
            let s = p.i;
            while p.i < p.s.len() && p.s[p.i].is_ascii_digit() {
                p.i += 1;
            }
            p.i - s
        };
        let int_start = self.i;
        let n = digits(self);
        if n == 0 || (n > 1 && self.s[int_start] == b'0') {
            return Err(self.err("invalid number"));
        }
        if self.eat(".") && digits(self) == 0 {
            return Err(self.err("invalid number"));
        }
        let mut exponent = false;
        if matches!(self.s.get(self.i), Some(b'e' | b'E')) {
            exponent = true;
            self.i += 1;
            if matches!(self.s.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err(self.err("invalid number"));
            }
        }
        let text =
            std::str::from_utf8(&self.s[start..self.i]).map_err(|_| self.err("invalid number"))?;
        if exponent {
            let e: i64 = text
                .split_once(['e', 'E'])
                .and_then(|(_, e)| e.parse().ok())
                .unwrap_or(i64::MAX);
            if e.abs() > MAX_EXPONENT {
                return Err(self.err("number out of range"));
            }
        }
        Ok(Json::Number(if exponent {
            expand_exponent(text)
        } else {
            text.to_string()
        }))
    }
}

/// A number's value as text, for exact comparison: no sign on zero, no leading zeros, no
/// trailing fractional zeros (`1.50` and `1.5`, `-0` and `0` are equal, as in `numeric`).
fn number_key(n: &str) -> String {
    let (negative, digits) = match n.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, n),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    if int.is_empty() && frac.is_empty() {
        return "0".into();
    }
    format!("{}{}.{}", if negative { "-" } else { "" }, int, frac)
}

/// Largest exponent accepted in a JSON number (PostgreSQL's `numeric` allows about 131 072
/// digits before the point); larger ones are refused rather than expanded.
const MAX_EXPONENT: i64 = 100_000;

/// `1.5e2` as `numeric` prints it: `150`.
fn expand_exponent(text: &str) -> String {
    let (mantissa, exp) = text.split_once(['e', 'E']).unwrap_or((text, "0"));
    let exp: i64 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let mantissa = mantissa.trim_start_matches('-');
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = format!("{int}{frac}");
    let point = int.len() as i64 + exp;
    let mut out = if point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        format!(
            "{}.{}",
            &digits[..point as usize],
            &digits[point as usize..]
        )
    };
    let trimmed = out.trim_start_matches('0');
    out = if trimmed.is_empty() || trimmed.starts_with('.') {
        format!("0{trimmed}")
    } else {
        trimmed.to_string()
    };
    if negative && out.chars().any(|c| c.is_ascii_digit() && c != '0') {
        out.insert(0, '-');
    }
    out
}

/// Orders an object's fields as `jsonb` does; the last of duplicate keys wins.
fn into_jsonb_object(mut fields: Vec<(String, Json)>) -> Vec<(String, Json)> {
    // A stable sort keeps duplicates in input order, so the last one is the one to keep.
    fields.sort_by(|a, b| key_order(&a.0, &b.0));
    let mut out: Vec<(String, Json)> = Vec::with_capacity(fields.len());
    for (k, v) in fields {
        match out.last_mut() {
            Some(last) if last.0 == k => last.1 = v,
            _ => out.push((k, v)),
        }
    }
    out
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Json {
    fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => out.push_str(n),
            Json::String(s) => write_string(out, s),
            Json::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Json::Object(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_string(out, k);
                    out.push_str(": ");
                    v.write(out);
                }
                out.push('}');
            }
        }
    }

    /// `jsonb_typeof`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "boolean",
            Json::Number(_) => "number",
            Json::String(_) => "string",
            Json::Array(_) => "array",
            Json::Object(_) => "object",
        }
    }

    /// The value as `->>` returns it: strings unquoted, JSON null as SQL NULL, the rest as
    /// `jsonb` text.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Json::Null => None,
            Json::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    /// `->` with a key: an object's field (for a key) or an array's element (for an integer,
    /// negative counting from the end).
    pub fn get(&self, key: &Key) -> Option<&Json> {
        match (self, key) {
            (Json::Object(fields), Key::Name(k)) => {
                fields.iter().find(|(f, _)| f == k).map(|(_, v)| v)
            }
            (Json::Array(items), Key::Index(i)) => {
                let i = if *i < 0 { items.len() as i64 + i } else { *i };
                usize::try_from(i).ok().and_then(|i| items.get(i))
            }
            _ => None,
        }
    }

    /// `#>`: follows a text path; array steps must be integers.
    pub fn get_path(&self, path: &[String]) -> Option<&Json> {
        let mut at = self;
        for step in path {
            at = match at {
                Json::Object(_) => at.get(&Key::Name(step.clone()))?,
                Json::Array(_) => at.get(&Key::Index(step.trim().parse().ok()?))?,
                _ => return None,
            };
        }
        Some(at)
    }

    /// `@>`: whether `self` contains `other`.
    pub fn contains(&self, other: &Json) -> bool {
        self.contains_at(other, true)
    }

    fn contains_at(&self, other: &Json, top: bool) -> bool {
        match (self, other) {
            (Json::Object(a), Json::Object(b)) => b.iter().all(|(k, bv)| {
                a.iter()
                    .find(|(ak, _)| ak == k)
                    .is_some_and(|(_, av)| av.contains_at(bv, false))
            }),
            (Json::Array(a), Json::Array(b)) => b.iter().all(|bv| {
                a.iter().any(|av| match (av, bv) {
                    (Json::Array(_) | Json::Object(_), _)
                    | (_, Json::Array(_) | Json::Object(_)) => {
                        std::mem::discriminant(av) == std::mem::discriminant(bv)
                            && av.contains_at(bv, false)
                    }
                    _ => scalar_eq(av, bv),
                })
            }),
            // A top-level array contains a primitive it holds (PostgreSQL's one exception).
            (Json::Array(a), b) if top && !matches!(b, Json::Object(_)) => {
                a.iter().any(|av| scalar_eq(av, b))
            }
            (a, b) => scalar_eq(a, b),
        }
    }

    /// `?`: whether the string is a top-level key, or a string element of a top-level array.
    pub fn has_key(&self, key: &str) -> bool {
        match self {
            Json::Object(fields) => fields.iter().any(|(k, _)| k == key),
            Json::Array(items) => items
                .iter()
                .any(|v| matches!(v, Json::String(s) if s == key)),
            Json::String(s) => s == key,
            _ => false,
        }
    }

    /// `jsonb_set(self, path, new, create_missing)`.
    pub fn set(&mut self, path: &[String], new: Json, create_missing: bool) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        let mut at = self;
        for step in parents {
            let next = match at {
                Json::Object(fields) => fields.iter_mut().find(|(k, _)| k == step).map(|(_, v)| v),
                Json::Array(items) => match step.trim().parse::<i64>() {
                    Ok(i) => {
                        let i = if i < 0 { items.len() as i64 + i } else { i };
                        usize::try_from(i).ok().and_then(|i| items.get_mut(i))
                    }
                    Err(_) => None,
                },
                _ => None,
            };
            match next {
                Some(n) => at = n,
                None => return,
            }
        }
        match at {
            Json::Object(fields) => match fields.iter_mut().find(|(k, _)| k == last) {
                Some((_, v)) => *v = new,
                None if create_missing => {
                    fields.push((last.clone(), new));
                    fields.sort_by(|a, b| key_order(&a.0, &b.0));
                }
                None => {}
            },
            Json::Array(items) => {
                let Ok(i) = last.trim().parse::<i64>() else {
                    return;
                };
                let len = items.len() as i64;
                let at_index = if i < 0 { len + i } else { i };
                if (0..len).contains(&at_index) {
                    items[at_index as usize] = new;
                } else if create_missing {
                    if at_index < 0 {
                        items.insert(0, new);
                    } else {
                        items.push(new);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Equality of scalars; numbers compare by value (`1` equals `1.0`).
fn scalar_eq(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x == y || number_key(x) == number_key(y),
        _ if std::mem::discriminant(a) != std::mem::discriminant(b) => false,
        (Json::Array(_), _) | (Json::Object(_), _) => {
            a.contains_at(b, false) && b.contains_at(a, false)
        }
        _ => a == b,
    }
}

impl std::fmt::Display for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::new();
        self.write(&mut s);
        f.write_str(&s)
    }
}

/// The right operand of `->` / `->>`.
#[derive(Debug, Clone, PartialEq)]
pub enum Key {
    /// An object key.
    Name(String),
    /// An array position.
    Index(i64),
}

/// A PostgreSQL `text[]` literal (`{a,b,"c d"}`) as its elements; also accepts a JSON array
/// of strings (what the coordinator makes of `ARRAY['a','b']`).
pub fn text_array(s: &str) -> Result<Vec<String>, JsonError> {
    let t = s.trim();
    if t.starts_with('[') {
        return match parse(t)? {
            Json::Array(items) => Ok(items
                .into_iter()
                .map(|v| v.as_text().unwrap_or_default())
                .collect()),
            _ => Err(JsonError(format!("malformed array literal: \"{s}\""))),
        };
    }
    let inner = t
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| JsonError(format!("malformed array literal: \"{s}\"")))?;
    let mut out = Vec::new();
    if inner.trim().is_empty() {
        return Ok(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut item = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => item.extend(chars.next()),
                    Some(c) => item.push(c),
                    None => return Err(JsonError(format!("malformed array literal: \"{s}\""))),
                }
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                item.push(c);
                chars.next();
            }
            item = item.trim().to_string();
        }
        out.push(item);
        match chars.next() {
            Some(',') => continue,
            None => return Ok(out),
            Some(_) => return Err(JsonError(format!("malformed array literal: \"{s}\""))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(s: &str) -> Json {
        parse(s).expect(s)
    }

    /// Expected outputs are PostgreSQL 15's (`SELECT '...'::jsonb`).
    #[test]
    fn canonical_form_is_postgres() {
        assert_eq!(
            canonical(r#"{"b":1,"a":2,"aa":[1,2,{"z":null}]}"#).expect("test value"),
            r#"{"a": 2, "b": 1, "aa": [1, 2, {"z": null}]}"#
        );
        assert_eq!(
            canonical(r#"{"a":1,"a":2}"#).expect("test value"),
            r#"{"a": 2}"#
        );
        assert_eq!(canonical("1.50").expect("test value"), "1.50");
        assert_eq!(canonical("1.5e2").expect("test value"), "150");
        assert_eq!(canonical("-2E-3").expect("test value"), "-0.002");
        assert_eq!(
            canonical(r#""a\u00e9\n""#).expect("test value"),
            "\"aé\\n\""
        );
        assert_eq!(canonical(" [ ] ").expect("test value"), "[]");
        for bad in [
            "",
            "{",
            "[1,]",
            "01",
            "1.",
            "tru",
            "{\"a\" 1}",
            "\"\\u0000\"",
            "[1] x",
            "\"\u{1}\"",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(
            parse("1e2000000000").is_err(),
            "a huge exponent is refused, not expanded"
        );
        assert!(parse("1e9223372036854775807").is_err());
        let deep = "[".repeat(10_000);
        assert!(parse(&deep).is_err());
    }

    /// The containment and existence examples of PostgreSQL's documentation (section 8.14.3).
    #[test]
    fn containment_matches_the_documentation() {
        let yes = [
            (r#""foo""#, r#""foo""#),
            ("[1, 2, 3]", "[1, 3]"),
            ("[1, 2, [1, 3]]", "[[1, 3]]"),
            (
                r#"{"product": "PostgreSQL", "version": 9.4, "jsonb": true}"#,
                r#"{"version": 9.4}"#,
            ),
            (r#"{"foo": {"bar": "baz"}}"#, r#"{"foo": {}}"#),
            (r#"["foo", "bar"]"#, r#""foo""#),
            ("[1, 2, 3]", "[3, 1]"),
            ("[1, 2, 3]", "[1, 1]"),
            ("[-0, 1.50]", "[0, 1.5]"),
            (r#"{"a": 1}"#, r#"{"a": 1.0}"#),
        ];
        for (a, b) in yes {
            assert!(j(a).contains(&j(b)), "{a} @> {b}");
        }
        let no = [
            ("[1, 2, [1, 3]]", "[1, 3]"),
            (r#"{"foo": {"bar": "baz"}}"#, r#"{"bar": "baz"}"#),
            (r#"{"a": [1]}"#, r#"{"a": 1}"#),
            (r#""foo""#, r#"["foo"]"#),
            (r#"{"a": 1}"#, "[]"),
            (
                r#"{"id": 1234567890123456789}"#,
                r#"{"id": 1234567890123456788}"#,
            ),
        ];
        for (a, b) in no {
            assert!(!j(a).contains(&j(b)), "{a} @> {b}");
        }
        assert!(j(r#"["foo", "bar", "baz"]"#).has_key("bar"));
        assert!(j(r#"{"foo": "bar"}"#).has_key("foo"));
        assert!(!j(r#"{"foo": "bar"}"#).has_key("bar"));
        assert!(!j(r#"{"foo": {"bar": "baz"}}"#).has_key("bar"));
        assert!(j(r#""foo""#).has_key("foo"));
    }

    #[test]
    fn paths_and_set_match_the_documentation() {
        let v = j(r#"{"a": {"b": ["x", {"c": "foo"}]}}"#);
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            v.get_path(&path(&["a", "b", "1", "c"]))
                .and_then(Json::as_text)
                .as_deref(),
            Some("foo")
        );
        assert_eq!(
            v.get_path(&path(&["a", "b", "-2"]))
                .map(|j| j.to_string())
                .as_deref(),
            Some(r#""x""#)
        );
        assert_eq!(v.get_path(&path(&["a", "z"])), None);
        assert_eq!(
            j("[1,2]").get(&Key::Index(-1)),
            Some(&Json::Number("2".into()))
        );
        assert_eq!(
            j(r#"{"a":null}"#)
                .get(&Key::Name("a".into()))
                .and_then(Json::as_text),
            None
        );

        let mut t = j(r#"[{"f1":1,"f2":null},2,null,3]"#);
        t.set(&path(&["0", "f1"]), j(r#"[2,3,4]"#), false);
        assert_eq!(
            t.to_string(),
            r#"[{"f1": [2, 3, 4], "f2": null}, 2, null, 3]"#
        );
        let mut t = j(r#"[{"f1":1,"f2":null},2]"#);
        t.set(&path(&["0", "f3"]), j(r#"[2,3,4]"#), true);
        assert_eq!(
            t.to_string(),
            r#"[{"f1": 1, "f2": null, "f3": [2, 3, 4]}, 2]"#
        );
        let mut t = j(r#"[{"f1":1,"f2":null},2]"#);
        t.set(&path(&["0", "f3"]), j(r#"[2,3,4]"#), false);
        assert_eq!(t.to_string(), r#"[{"f1": 1, "f2": null}, 2]"#);
        let mut t = j("[1,2]");
        t.set(&path(&["9"]), j("3"), true);
        t.set(&path(&["-9"]), j("0"), true);
        assert_eq!(t.to_string(), "[0, 1, 2, 3]");
    }

    #[test]
    fn field_lookup_matches_a_full_parse() {
        let docs = [
            r#"{"a": 1, "b": {"c": [1, "x\"}", {"d": null}]}, "e": "f", "a": 2.50}"#,
            r#"{"user": "ada", "tags": ["x", "y"], "geo": {"city": "Paris"}}"#,
            r#"[1, 2]"#,
            r#""s""#,
            r#"{}"#,
        ];
        for d in docs {
            let full = parse(d).expect(d);
            for k in ["a", "b", "e", "user", "tags", "geo", "zz"] {
                assert_eq!(
                    field(d, k).expect(d).as_ref(),
                    full.get(&Key::Name(k.into())),
                    "{d} -> {k}"
                );
            }
        }
        assert!(field("{\"a\": 1", "a").is_err());
        assert!(field("{\"a\": 1} x", "a").is_err());
        assert!(field("nope", "a").is_err());
    }

    /// Random JSON round-trips through the canonical form unchanged (parsing canonical text
    /// gives the same value and the same text), `field` agrees with a full parse, and random
    /// bytes never panic the parser.
    #[test]
    fn fuzzed_documents_round_trip_and_garbage_never_panics() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        fn gen(next: &mut dyn FnMut() -> u64, depth: u32) -> String {
            let pick = next() % if depth > 3 { 5 } else { 7 };
            match pick {
                0 => "null".into(),
                1 => if next().is_multiple_of(2) {
                    "true"
                } else {
                    "false"
                }
                .into(),
                2 => format!(
                    "{}{}.{}",
                    if next().is_multiple_of(3) { "-" } else { "" },
                    next() % 1000,
                    next() % 100
                ),
                3 => format!("{}e{}", next() % 50, next() % 5),
                4 => {
                    let chars = [
                        "a",
                        "\\\"",
                        "\\n",
                        "é",
                        "\\u00e9",
                        "\\ud83d\\ude00",
                        " ",
                        "\\\\",
                    ];
                    let n = next() % 4;
                    let body: String = (0..n)
                        .map(|_| chars[(next() % chars.len() as u64) as usize])
                        .collect();
                    format!("\"{body}\"")
                }
                5 => {
                    let n = next() % 4;
                    let items: Vec<String> = (0..n).map(|_| gen(next, depth + 1)).collect();
                    format!("[{}]", items.join(" , "))
                }
                _ => {
                    let n = next() % 4;
                    let fields: Vec<String> = (0..n)
                        .map(|_| format!("\"k{}\" :{}", next() % 5, gen(next, depth + 1)))
                        .collect();
                    format!("{{{}}}", fields.join(","))
                }
            }
        }
        for _ in 0..2000 {
            let text = gen(&mut next, 0);
            let v = parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let canon = v.to_string();
            let again = parse(&canon).unwrap_or_else(|e| panic!("{canon}: {e}"));
            assert_eq!(again, v, "{text}");
            assert_eq!(again.to_string(), canon, "{text}");
            for k in ["k0", "k1", "k4"] {
                assert_eq!(
                    field(&text, k).expect("field").as_ref(),
                    v.get(&Key::Name(k.into())),
                    "{text}"
                );
            }
            let bytes = text.as_bytes();
            for cut in [1, bytes.len() / 2, bytes.len().saturating_sub(1)] {
                if let Ok(s) = std::str::from_utf8(&bytes[..cut.min(bytes.len())]) {
                    let _ = parse(s);
                    let _ = field(s, "k0");
                }
            }
        }
        for _ in 0..2000 {
            let n = (next() % 24) as usize;
            let garbage: String = (0..n)
                .map(|_| {
                    [
                        '{', '}', '[', ']', '"', '\\', ':', ',', '1', 'e', '-', 'u', ' ',
                    ][(next() % 13) as usize]
                })
                .collect();
            let _ = parse(&garbage);
            let _ = field(&garbage, "a");
            let _ = text_array(&garbage);
        }
    }

    #[test]
    fn text_arrays() {
        assert_eq!(text_array("{a,b}").expect("test value"), ["a", "b"]);
        assert_eq!(
            text_array(r#"{"a b", c , "d\"e"}"#).expect("test value"),
            ["a b", "c", "d\"e"]
        );
        assert_eq!(text_array("{}").expect("test value"), Vec::<String>::new());
        assert_eq!(text_array(r#"["x","y"]"#).expect("test value"), ["x", "y"]);
        assert!(text_array("a,b").is_err());
    }
}
