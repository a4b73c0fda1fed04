//! Values in PostgreSQL's text format, for their column type: what the wire's text format,
//! COPY TO and casts to text print, arrays included.

use tessera_shared::{PgType, Value};

fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else {
        format!("{f}")
    }
}

/// A value in Postgres' text format for its column type; `None` is NULL.
pub fn text(v: &Value, ty: PgType) -> Option<String> {
    Some(match (v, ty) {
        (Value::Null, _) => return None,
        (Value::Integer(i), PgType::Bool) => if *i != 0 { "t" } else { "f" }.into(),
        (Value::Text(s), PgType::Bool) => if matches!(s.as_str(), "t" | "true" | "1") {
            "t"
        } else {
            "f"
        }
        .into(),
        (Value::Real(f), t) if t.is_integer() => format!("{}", *f as i64),
        (Value::Text(s), PgType::BoolArray) => {
            let items: Vec<Option<String>> = array_elements(s)
                .into_iter()
                .map(|i| {
                    i.map(|x| {
                        if matches!(x.as_str(), "1" | "t" | "true") {
                            "t"
                        } else {
                            "f"
                        }
                        .to_string()
                    })
                })
                .collect();
            array_text(&items)
        }
        // Rows written before canonicalisation, or computed, print as `jsonb` does.
        (Value::Text(s), PgType::Jsonb) => {
            tessera_shared::jsonb::canonical(s).unwrap_or_else(|_| s.clone())
        }
        (Value::Integer(i), _) => i.to_string(),
        (Value::Real(f), _) => float_text(*f),
        (Value::Text(s), _) => s.clone(),
        (Value::Blob(b), _) => {
            let mut s = String::with_capacity(2 + b.len() * 2);
            s.push_str("\\x");
            for byte in b {
                s.push_str(&format!("{byte:02x}"));
            }
            s
        }
    })
}

/// Array text → elements (`None` for an unquoted `NULL`). Accepts `{a,"b c",NULL}` and the
/// space-separated `int2vector`/`oidvector` form `1 2`.
pub fn array_elements(s: &str) -> Vec<Option<String>> {
    let s = s.trim();
    let Some(inner) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) else {
        return s.split_whitespace().map(|x| Some(x.to_string())).collect();
    };
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    while chars.peek().is_some() {
        let mut item = String::new();
        let mut quoted = false;
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek() == Some(&'"') {
            quoted = true;
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => item.extend(chars.next()),
                    '"' => break,
                    c => item.push(c),
                }
            }
        }
        for c in chars.by_ref() {
            if c == ',' {
                break;
            }
            if !quoted {
                item.push(c);
            }
        }
        let item = if quoted {
            item
        } else {
            item.trim().to_string()
        };
        out.push((quoted || !item.eq_ignore_ascii_case("null")).then_some(item));
    }
    out
}

/// Elements → array text, quoting those that need it, as PostgreSQL prints arrays.
pub fn array_text(items: &[Option<String>]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|i| match i {
            None => "NULL".to_string(),
            Some(x)
                if x.is_empty()
                    || x.eq_ignore_ascii_case("null")
                    || x.contains(|c: char| {
                        matches!(c, ',' | '{' | '}' | '"' | '\\') || c.is_whitespace()
                    }) =>
            {
                format!("\"{}\"", x.replace('\\', "\\\\").replace('"', "\\\""))
            }
            Some(x) => x.clone(),
        })
        .collect();
    format!("{{{}}}", quoted.join(","))
}
