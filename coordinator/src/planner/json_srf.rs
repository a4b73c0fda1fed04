//! JSON set-returning functions in a select list (`SELECT jsonb_array_elements(doc->'tags')
//! FROM events`), moved into FROM, where SQLite runs them as table-valued functions (see
//! `tessera_storage::jsonsrf`).
//!
//! One such call in a select list is, in PostgreSQL, a lateral join: each row of the FROM
//! clause gives one output row per element, and a row whose call returns nothing gives none.
//! That is exactly `FROM …, jsonb_array_elements(doc->'tags') AS s` with `s.value` selected.

use crate::error::CoordError;
use crate::sql::names::function_name;
use sqlparser::ast::*;

/// Functions that return rows, and the column holding their value.
const FUNCTIONS: [(&str, &str); 8] = [
    ("jsonb_array_elements", "value"),
    ("json_array_elements", "value"),
    ("jsonb_array_elements_text", "value"),
    ("json_array_elements_text", "value"),
    ("jsonb_object_keys", "jsonb_object_keys"),
    ("json_object_keys", "json_object_keys"),
    ("jsonb_each", ""),
    ("jsonb_each_text", ""),
];

/// Whether `name` is one of the JSON set-returning functions (not a table, in FROM).
pub fn is_function(name: &str) -> bool {
    FUNCTIONS.iter().any(|(f, _)| *f == name) || name == "json_each_text"
}

/// Moves the select list's one JSON set-returning call into FROM. Several, or one inside an
/// expression, are refused with 0A000 rather than answered differently from PostgreSQL.
pub fn lift(q: &mut Query) -> Result<(), CoordError> {
    let SetExpr::Select(select) = q.body.as_mut() else {
        return Ok(());
    };
    let calls: Vec<usize> = select
        .projection
        .iter()
        .enumerate()
        .filter(|(_, item)| item_call(item).is_some())
        .map(|(i, _)| i)
        .collect();
    let nested = select.projection.iter().any(|item| {
        let e = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => return false,
        };
        item_call(item).is_none() && contains_call(e)
    });
    if nested || calls.len() > 1 {
        return Err(CoordError::unsupported(
            "a JSON set-returning function inside an expression, or several in one select list (call it in FROM)",
        ));
    }
    let Some(&i) = calls.first() else {
        return Ok(());
    };
    // With grouping the call would run before it instead of after: not the same query.
    let grouped = !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty())
        || select.having.is_some()
        || crate::planner::aggregate::has_aggregates(select);
    if grouped {
        return Err(CoordError::unsupported(
            "a JSON set-returning function in a select list with GROUP BY or aggregates (call it in FROM)",
        ));
    }
    let (f, column) =
        item_call(&select.projection[i]).ok_or_else(|| CoordError::Internal("srf".into()))?;
    if column.is_empty() {
        return Err(CoordError::unsupported(
            "jsonb_each in a select list (it returns a record); call it in FROM",
        ));
    }
    let alias = match &select.projection[i] {
        SelectItem::ExprWithAlias { alias, .. } => alias.clone(),
        _ => Ident::new(function_name(&f.name)),
    };
    let sql = format!("SELECT 1 FROM {f} AS \"__srf\"");
    let Some(Statement::Query(shell)) = crate::sql::parse::parse(&sql)?.pop() else {
        return Err(CoordError::Internal(format!("cannot build {sql}")));
    };
    let SetExpr::Select(shell) = *shell.body else {
        return Err(CoordError::Internal(format!("cannot build {sql}")));
    };
    select.from.extend(shell.from);
    select.projection[i] = SelectItem::ExprWithAlias {
        expr: Expr::CompoundIdentifier(vec![
            Ident::with_quote('"', "__srf"),
            Ident::with_quote('"', column),
        ]),
        alias,
    };
    Ok(())
}

fn item_call(item: &SelectItem) -> Option<(&Function, &'static str)> {
    let e = match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
        _ => return None,
    };
    let Expr::Function(f) = e else { return None };
    let name = function_name(&f.name);
    FUNCTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| (f, *c))
}

fn contains_call(e: &Expr) -> bool {
    let mut found = false;
    let _ = visit_expressions(e, |x| {
        if let Expr::Function(f) = x {
            if FUNCTIONS.iter().any(|(n, _)| *n == function_name(&f.name)) {
                found = true;
                return std::ops::ControlFlow::Break(());
            }
        }
        std::ops::ControlFlow::Continue(())
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lifted(sql: &str) -> Result<String, CoordError> {
        let Some(Statement::Query(mut q)) = crate::sql::parse::parse(sql).expect("parse").pop()
        else {
            panic!("not a query")
        };
        lift(&mut q)?;
        Ok(q.to_string())
    }

    #[test]
    fn one_call_moves_into_from() {
        assert_eq!(
            lifted("SELECT id, jsonb_array_elements(doc->'tags') FROM events WHERE id > 1").expect("lift"),
            "SELECT id, \"__srf\".\"value\" AS jsonb_array_elements FROM events, jsonb_array_elements(doc -> 'tags') AS \"__srf\" WHERE id > 1"
        );
        assert_eq!(
            lifted("SELECT jsonb_object_keys(doc) AS k FROM events").expect("lift"),
            "SELECT \"__srf\".\"jsonb_object_keys\" AS k FROM events, jsonb_object_keys(doc) AS \"__srf\""
        );
        assert_eq!(
            lifted("SELECT id FROM events").expect("none"),
            "SELECT id FROM events"
        );
        assert!(lifted("SELECT jsonb_array_elements(a), jsonb_array_elements(b) FROM t").is_err());
        assert!(lifted("SELECT 1 + jsonb_array_elements(a)::int FROM t").is_err());
        assert!(lifted("SELECT id, jsonb_array_elements(doc) FROM t GROUP BY id").is_err());
        assert!(lifted("SELECT count(*), jsonb_array_elements(doc) FROM t").is_err());
    }
}
