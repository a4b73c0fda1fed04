//! Bound parameters: counting `$n` placeholders and turning client values into storage values.

use crate::error::CoordError;
use sqlparser::ast::{visit_expressions, Expr, Statement, Value as AstValue};
use std::ops::ControlFlow;
use tessera_shared::{PgType, Value};

/// The number `n` of a `$n` (or rewritten `?n`) placeholder.
pub fn placeholder_index(p: &str) -> Option<usize> {
    p.strip_prefix('$')
        .or_else(|| p.strip_prefix('?'))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n >= 1)
}

/// The highest `$n` in a statement (the number of parameters it takes).
pub fn count(stmt: &Statement) -> usize {
    let mut max = 0;
    let _ = visit_expressions(stmt, |e| {
        if let Expr::Value(v) = e {
            if let AstValue::Placeholder(p) = &v.value {
                max = max.max(placeholder_index(p).unwrap_or(0));
            }
        }
        ControlFlow::<()>::Continue(())
    });
    max
}

/// Reads a parameter sent as text into the storage value for `ty`.
pub fn from_text(s: &str, ty: PgType) -> Result<Value, CoordError> {
    let bad = || {
        CoordError::InvalidValue(format!(
            "invalid input syntax for type {}: \"{s}\"",
            ty.name()
        ))
    };
    Ok(match ty {
        t if t.is_integer() => Value::Integer(s.trim().parse().map_err(|_| bad())?),
        PgType::Float4 | PgType::Float8 | PgType::Numeric => {
            Value::Real(s.trim().parse().map_err(|_| bad())?)
        }
        PgType::Bool => Value::Integer(match s.trim().to_ascii_lowercase().as_str() {
            "t" | "true" | "yes" | "y" | "on" | "1" => 1,
            "f" | "false" | "no" | "n" | "off" | "0" => 0,
            _ => return Err(bad()),
        }),
        PgType::Bytea => match s.strip_prefix("\\x") {
            Some(hex) => Value::Blob(decode_hex(hex).ok_or_else(bad)?),
            None => Value::Blob(s.as_bytes().to_vec()),
        },
        PgType::Date | PgType::Timestamp | PgType::Timestamptz => {
            Value::Text(crate::sql::datetime::canonical(s, ty)?)
        }
        PgType::Jsonb => Value::Text(
            tessera_shared::jsonb::canonical(s)
                .map_err(|e| CoordError::InvalidValue(e.to_string()))?,
        ),
        PgType::Json => {
            tessera_shared::jsonb::parse(s).map_err(|e| CoordError::InvalidValue(e.to_string()))?;
            Value::Text(s.to_string())
        }
        _ => Value::Text(s.to_string()),
    })
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    #[test]
    fn counts_placeholders() {
        let s = Parser::parse_sql(
            &PostgreSqlDialect {},
            "SELECT * FROM t WHERE a = $2 AND b IN (SELECT c FROM u WHERE d = $3)",
        )
        .expect("parse");
        assert_eq!(count(&s[0]), 3);
    }

    #[test]
    fn text_values() {
        assert_eq!(
            from_text("42", PgType::Int8).expect("int"),
            Value::Integer(42)
        );
        assert_eq!(
            from_text("true", PgType::Bool).expect("bool"),
            Value::Integer(1)
        );
        assert_eq!(
            from_text("\\x00ff", PgType::Bytea).expect("bytea"),
            Value::Blob(vec![0, 255])
        );
        assert_eq!(
            from_text("x", PgType::Int4).expect_err("bad").sqlstate(),
            "22P02"
        );
    }
}
