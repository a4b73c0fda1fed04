//! Identifier handling: Postgres folds unquoted identifiers to lower case.

use crate::error::CoordError;
use sqlparser::ast::{Expr, Ident, ObjectName};

/// An identifier as Postgres resolves it: unquoted ones fold to lower case.
pub fn ident(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// A table name: the last part, with an optional `public.` schema.
pub fn table_name(name: &ObjectName) -> Result<String, CoordError> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident())
        .map(ident)
        .collect();
    match parts.as_slice() {
        [t] => Ok(t.clone()),
        [s, t] if s == "public" => Ok(t.clone()),
        [s, t] => Err(CoordError::UndefinedTable(format!("{s}.{t}"))),
        _ => Err(CoordError::unsupported(format!(
            "cross-database reference: {name}"
        ))),
    }
}

/// The last part of a (column) name, folded.
pub fn last_ident(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(ident)
        .unwrap_or_default()
}

/// The target columns of an INSERT: its column list, or every column of the table.
pub fn insert_columns(ins: &sqlparser::ast::Insert, table: &crate::catalog::Table) -> Vec<String> {
    if ins.columns.is_empty() {
        table.columns.iter().map(|c| c.name.clone()).collect()
    } else {
        ins.columns.iter().map(last_ident).collect()
    }
}

/// The plain name of a function.
pub fn function_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .filter_map(|p| p.as_ident())
        .map(ident)
        .collect::<Vec<_>>()
        .join(".")
}

/// `(qualifier, column)` if `e` is a column reference.
pub fn column_ref(e: &Expr) -> Option<(Option<String>, String)> {
    match e {
        Expr::Identifier(i) => Some((None, ident(i))),
        Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
            let n = parts.len();
            Some((Some(ident(&parts[n - 2])), ident(&parts[n - 1])))
        }
        Expr::Nested(inner) => column_ref(inner),
        _ => None,
    }
}

/// Quotes an identifier for generated SQL.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
