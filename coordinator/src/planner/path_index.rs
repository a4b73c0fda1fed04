//! Path indexes of document tables: which JSON paths they cover, and the rewrite that lets
//! a shard use them.
//!
//! A document table's shard exposes each path index as a hidden column `__ix<slot>` holding
//! every row's text at that path. A filter written on the path (`doc->>'user' = 'ada'`) is
//! rewritten into one on the hidden column (`__ix0 = 'ada'`), which the shard's virtual
//! table answers with an index scan instead of reading every document. Both give the same
//! value for every row, so the rewrite changes speed, never results.

use crate::catalog::{Storage, Table};
use crate::error::CoordError;
use crate::sql::names::ident;
use sqlparser::ast::*;
use std::ops::ControlFlow;

/// An expression's form for matching: no parentheses, no table qualifiers.
pub fn expr_key(e: &Expr) -> String {
    let mut e = e.clone();
    let _ = visit_expressions_mut(&mut e, |x| {
        match x {
            Expr::Nested(inner) => *x = (**inner).clone(),
            Expr::CompoundIdentifier(parts) if parts.len() > 1 => {
                *x = Expr::Identifier(parts[parts.len() - 1].clone())
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    // Nested nodes are replaced after their children were visited: strip the outer ones too.
    while let Expr::Nested(inner) = e {
        e = *inner;
    }
    e.to_string()
}

/// The JSON column and keys of a path expression: `doc->>'a'`, `doc->'a'->>'b'`,
/// `doc #>> '{a,b}'`.
pub fn json_path(e: &Expr) -> Result<(String, Vec<String>), CoordError> {
    let bad = || {
        CoordError::unsupported(format!(
            "a document table's index is on a text path such as (doc->>'key') or (doc #>> '{{a,b}}'), not {e}"
        ))
    };
    let literal = |x: &Expr| match x {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            Value::Number(n, _) => Some(n.clone()),
            _ => None,
        },
        _ => None,
    };
    fn steps(x: &Expr, literal: &dyn Fn(&Expr) -> Option<String>) -> Option<(String, Vec<String>)> {
        match x {
            Expr::Nested(inner) => steps(inner, literal),
            Expr::Identifier(i) => Some((ident(i), vec![])),
            Expr::CompoundIdentifier(p) => p.last().map(|i| (ident(i), vec![])),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Arrow,
                right,
            } => {
                let (c, mut keys) = steps(left, literal)?;
                keys.push(key_step(right, literal)?);
                Some((c, keys))
            }
            _ => None,
        }
    }
    // An index stores paths with `#>` semantics, where "0" may name an array element; `->`
    // keeps keys and positions apart, so a step that reads as a number is not indexed.
    fn key_step(x: &Expr, literal: &dyn Fn(&Expr) -> Option<String>) -> Option<String> {
        literal(x).filter(|k| k.trim().parse::<i64>().is_err())
    }
    let mut e0 = e;
    while let Expr::Nested(inner) = e0 {
        e0 = inner;
    }
    match e0 {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::LongArrow,
            right,
        } => {
            let (c, mut keys) = steps(left, &literal).ok_or_else(bad)?;
            keys.push(key_step(right, &literal).ok_or_else(bad)?);
            Ok((c, keys))
        }
        Expr::BinaryOp {
            left,
            op: BinaryOperator::HashLongArrow,
            right,
        } => {
            let (c, mut keys) = steps(left, &literal).ok_or_else(bad)?;
            let path = literal(right).ok_or_else(bad)?;
            keys.extend(
                tessera_shared::jsonb::text_array(&path)
                    .map_err(|e| CoordError::InvalidValue(e.to_string()))?,
            );
            Ok((c, keys))
        }
        _ => Err(bad()),
    }
}

/// Rewrites filters on indexed paths of `table` in `selection` into its hidden index columns.
pub fn use_path_indexes(selection: &mut Expr, table: &Table) {
    if table.storage != Storage::Document {
        return;
    }
    let paths: Vec<(String, u32)> = table
        .indexes
        .iter()
        .filter_map(|i| Some((i.columns.first()?.clone(), i.path.as_ref()?.slot)))
        .collect();
    if paths.is_empty() {
        return;
    }
    // A subquery may name the same table under another alias: its paths are not this row's.
    let nested = visit_expressions(selection, |x| {
        if crate::planner::is_subquery(x) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .is_break();
    if nested {
        return;
    }
    let _ = visit_expressions_mut(selection, |x| {
        if matches!(
            x,
            Expr::BinaryOp {
                op: BinaryOperator::LongArrow | BinaryOperator::HashLongArrow,
                ..
            }
        ) {
            let key = expr_key(x);
            if let Some((_, slot)) = paths.iter().find(|(p, _)| *p == key) {
                *x = Expr::Identifier(Ident::new(format!("__ix{slot}")));
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Column, Index, IndexPath};
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;
    use tessera_shared::PgType;

    fn expr(sql: &str) -> Expr {
        Parser::new(&PostgreSqlDialect {})
            .try_with_sql(sql)
            .and_then(|mut p| p.parse_expr())
            .expect("parse")
    }

    #[test]
    fn paths_are_recognised() {
        assert_eq!(
            json_path(&expr("(doc->>'user')")).expect("test value"),
            ("doc".into(), vec!["user".into()])
        );
        assert_eq!(
            json_path(&expr("e.doc->'geo'->>'city'")).expect("test value"),
            ("doc".into(), vec!["geo".into(), "city".into()])
        );
        assert_eq!(
            json_path(&expr("doc #>> '{a,b}'")).expect("test value"),
            ("doc".into(), vec!["a".into(), "b".into()])
        );
        assert!(json_path(&expr("doc->'a'->>'0'")).is_err());
        assert!(json_path(&expr("doc->'a'->>0")).is_err());
        assert_eq!(
            json_path(&expr("doc->'a'"))
                .expect_err("test error")
                .sqlstate(),
            "0A000"
        );
        assert_eq!(
            json_path(&expr("lower(doc->>'a')"))
                .expect_err("test error")
                .sqlstate(),
            "0A000"
        );
    }

    #[test]
    fn filters_on_indexed_paths_use_the_hidden_column() {
        let mut t = Table::new(
            "events",
            vec![
                Column::new("id", PgType::Text),
                Column::new("doc", PgType::Jsonb),
            ],
        );
        t.storage = Storage::Document;
        t.indexes.push(Index {
            name: "events_user".into(),
            columns: vec![expr_key(&expr("(doc->>'user')"))],
            unique: false,
            expression: None,
            path: Some(IndexPath {
                column: "doc".into(),
                keys: vec!["user".into()],
                slot: 3,
            }),
        });
        let mut w = expr("e.doc->>'user' = $1 AND doc->>'other' = 'x' AND (doc->>'user') > 'a'");
        use_path_indexes(&mut w, &t);
        assert_eq!(
            w.to_string(),
            "__ix3 = $1 AND doc ->> 'other' = 'x' AND (__ix3) > 'a'"
        );
        t.storage = Storage::Rows;
        let mut w = expr("doc->>'user' = 'a'");
        use_path_indexes(&mut w, &t);
        assert_eq!(w.to_string(), "doc ->> 'user' = 'a'");
    }
}
