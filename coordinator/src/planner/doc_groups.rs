//! Column groups of a document table: its JSON column's top-level attributes split into groups,
//! each group a document table of its own (the key and an object holding the group's
//! attributes), whole documents rebuilt on read.
//!
//! `WITH (storage = 'document', column_groups = 'meta(user, status) | rest(*)')`: `rest` holds
//! every attribute no other group names. The rewrites mirror `planner::vertical`:
//! - `doc->'user'`, `doc->>'user'`, `doc #>> '{user,…}'` read only the group holding `user`;
//!   any other use of `doc` reads every group and merges their objects
//!   (`tessera_jsonb_merge`);
//! - an INSERT gives each group `tessera_jsonb_pick(doc, its attributes)` (the `*` group
//!   `tessera_jsonb_omit(doc, every named attribute)`);
//! - `UPDATE … SET doc = jsonb_set(doc, '{user,…}', v)` changes only the group holding
//!   `user`; `SET doc = <a value not reading doc>` rewrites every group's part.

use crate::catalog::{ColumnGroup, Table};
use crate::error::CoordError;
use crate::sql::names::{function_name, ident, quote};
use sqlparser::ast::*;
use std::collections::BTreeSet;
use std::ops::ControlFlow;

/// Parses the groups of a document table's attributes: `meta(user, status) | rest(*)`. The
/// table has its key and one `json`/`jsonb` column (returned); one group is `*`.
pub fn parse_attribute_groups(
    spec: &str,
    t: &Table,
) -> Result<(String, Vec<ColumnGroup>), CoordError> {
    let bad = |m: String| CoordError::InvalidValue(format!("column_groups: {m}"));
    let json: Vec<&str> = t
        .columns
        .iter()
        .filter(|c| !t.primary_key.contains(&c.name))
        .map(|c| c.name.as_str())
        .collect();
    let [col] = json.as_slice() else {
        return Err(CoordError::unsupported(
            "column groups of a document table split its one JSON column: declare the key and one json or jsonb column",
        ));
    };
    if !t.column(col).is_some_and(|c| {
        matches!(
            c.ty,
            tessera_shared::PgType::Json | tessera_shared::PgType::Jsonb
        )
    }) {
        return Err(CoordError::unsupported(
            "column groups of a document table split a json or jsonb column",
        ));
    }
    let groups: Vec<ColumnGroup> = crate::planner::groups::parse_spec(spec, false)?
        .into_iter()
        .map(|(name, columns)| ColumnGroup {
            table: crate::planner::groups::group_table_name(&t.name, &name),
            name,
            columns,
        })
        .collect();
    if groups
        .iter()
        .filter(|g| g.columns.iter().any(|c| c == "*"))
        .count()
        != 1
        || groups
            .iter()
            .any(|g| g.columns.iter().any(|c| c == "*") && g.columns.len() > 1)
    {
        return Err(bad(
            "one group must be name(*), holding every attribute the others do not name".into(),
        ));
    }
    Ok((col.to_string(), groups))
}

/// The table a group stores: the key and the JSON column (holding the group's attributes).
pub fn group_table(t: &Table, g: &ColumnGroup) -> Table {
    let mut gt = t.clone();
    gt.name = g.table.clone();
    gt.column_groups = vec![];
    gt.attributes_of = None;
    gt.part_of = Some(t.name.clone());
    gt.indexes = vec![];
    gt.foreign_keys = vec![];
    gt
}

/// The group holding top-level attribute `key`: the one naming it, else the `*` group.
pub fn owner(t: &Table, key: &str) -> usize {
    t.column_groups
        .iter()
        .position(|g| g.columns.iter().any(|c| c == key))
        .or_else(|| {
            t.column_groups
                .iter()
                .position(|g| g.columns.iter().any(|c| c == "*"))
        })
        .unwrap_or(0)
}

/// Every attribute the groups name (what the `*` group leaves out).
fn named(t: &Table) -> Vec<String> {
    t.column_groups
        .iter()
        .flat_map(|g| g.columns.iter())
        .filter(|c| *c != "*")
        .cloned()
        .collect()
}

/// The SQL giving group `g`'s part of the document `doc_sql`.
pub fn part_of(t: &Table, g: &ColumnGroup, doc_sql: &str) -> String {
    let list = |keys: &[String]| {
        let json = serde_json::to_string(keys).unwrap_or_else(|_| "[]".into());
        format!("'{}'", json.replace('\'', "''"))
    };
    if g.columns.iter().any(|c| c == "*") {
        format!("tessera_jsonb_omit({doc_sql}, {})", list(&named(t)))
    } else {
        format!("tessera_jsonb_pick({doc_sql}, {})", list(&g.columns))
    }
}

/// The top-level attribute an access reads: `doc->'k'`, `doc->>'k'`, `doc #> '{k,…}'`.
fn accessed_key(op: &BinaryOperator, right: &Expr) -> Option<String> {
    let Expr::Value(v) = right else { return None };
    let Value::SingleQuotedString(s) = &v.value else {
        return None;
    };
    match op {
        BinaryOperator::Arrow | BinaryOperator::LongArrow => Some(s.clone()),
        BinaryOperator::HashArrow | BinaryOperator::HashLongArrow => {
            tessera_shared::jsonb::text_array(s)
                .ok()
                .and_then(|p| p.into_iter().next())
        }
        _ => None,
    }
}

/// Whether `e` names the JSON column `col` (bare, or qualified by `alias`).
fn is_doc(e: &Expr, col: &str, alias: &str) -> bool {
    match e {
        Expr::Identifier(i) => ident(i) == col,
        Expr::CompoundIdentifier(p) => p.len() == 2 && ident(&p[0]) == alias && ident(&p[1]) == col,
        _ => false,
    }
}

/// Rewrites a query on `t` into one on its group tables.
pub fn rewrite_query(q: &Query, t: &Table, col: &str) -> Result<Query, CoordError> {
    let SetExpr::Select(select) = q.body.as_ref() else {
        return Err(crate::planner::groups::unsupported(t, "a set operation"));
    };
    let TableFactor::Table { alias, .. } = &select.from[0].relation else {
        return Err(crate::planner::groups::unsupported(t, "this FROM item"));
    };
    let a = alias
        .as_ref()
        .map(|a| ident(&a.name))
        .unwrap_or_else(|| t.name.clone());
    let key = t.primary_key[0].clone();
    let galias = |i: usize| format!("{a}__{}", t.column_groups[i].name);
    let mut out = q.clone();
    let mut used = BTreeSet::new();
    let mut whole = false;
    // Pass 1: attribute accesses read their group's part.
    {
        let mut mark = |e: &mut Expr| {
            if let Expr::BinaryOp { left, op, right } = e {
                if is_doc(left, col, &a) {
                    if let Some(k) = accessed_key(op, right) {
                        let g = owner(t, &k);
                        used.insert(g);
                        **left = Expr::CompoundIdentifier(vec![
                            Ident::with_quote('"', galias(g)),
                            Ident::with_quote('"', col),
                        ]);
                    }
                }
            }
            ControlFlow::<()>::Continue(())
        };
        let _ = visit_expressions_mut(&mut out.body, &mut mark);
        if let Some(o) = out.order_by.as_mut() {
            let _ = visit_expressions_mut(o, &mut mark);
        }
    }
    // Any other use of the column, or `*`, needs the whole document.
    let check = |e: &Expr| {
        if is_doc(e, col, &a) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    if visit_expressions(&out.body, check).is_break()
        || out
            .order_by
            .as_ref()
            .is_some_and(|o| visit_expressions(o, check).is_break())
        || select.projection.iter().any(|p| {
            matches!(
                p,
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
            )
        })
    {
        whole = true;
        used.extend(0..t.column_groups.len());
    }
    if used.is_empty() {
        used.insert(owner(t, "*"));
    }
    let used: Vec<usize> = used.into_iter().collect();
    let first = galias(used[0]);
    let merged = format!(
        "tessera_jsonb_merge({})",
        (0..t.column_groups.len())
            .map(|i| format!("{}.{}", quote(&galias(i)), quote(col)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let merged_expr = crate::sql::dialect::parse_expr(&merged)?;
    // Pass 2: the whole document is the merge of every group's part; the key is the first's.
    let mut qualify = |e: &mut Expr| {
        if whole && is_doc(e, col, &a) {
            *e = merged_expr.clone();
        } else if is_doc(e, &key, &a) {
            *e = Expr::CompoundIdentifier(vec![
                Ident::with_quote('"', first.clone()),
                Ident::with_quote('"', key.clone()),
            ]);
        }
        ControlFlow::<()>::Continue(())
    };
    let _ = visit_expressions_mut(&mut out.body, &mut qualify);
    if let Some(o) = out.order_by.as_mut() {
        let _ = visit_expressions_mut(o, &mut qualify);
    }
    let SetExpr::Select(sel) = out.body.as_mut() else {
        return Err(CoordError::Internal("document groups query".into()));
    };
    let mut projection = Vec::new();
    for item in sel.projection.drain(..) {
        match item {
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                for c in &t.columns {
                    let e = if c.name == col {
                        merged_expr.clone()
                    } else {
                        Expr::CompoundIdentifier(vec![
                            Ident::with_quote('"', first.clone()),
                            Ident::with_quote('"', c.name.clone()),
                        ])
                    };
                    projection.push(SelectItem::ExprWithAlias {
                        expr: e,
                        alias: Ident::new(c.name.clone()),
                    });
                }
            }
            SelectItem::UnnamedExpr(e) if matches!(&e, Expr::Function(f) if function_name(&f.name) == "tessera_jsonb_merge") =>
            {
                projection.push(SelectItem::ExprWithAlias {
                    expr: e,
                    alias: Ident::new(col),
                });
            }
            other => projection.push(other),
        }
    }
    sel.projection = projection;
    let mut from = format!(
        "{} AS {}",
        quote(&t.column_groups[used[0]].table),
        quote(&first)
    );
    for g in &used[1..] {
        from.push_str(&format!(
            " JOIN {} AS {} ON {}.{k} = {}.{k}",
            quote(&t.column_groups[*g].table),
            quote(&galias(*g)),
            quote(&first),
            quote(&galias(*g)),
            k = quote(&key)
        ));
    }
    let Some(Statement::Query(shell)) =
        crate::sql::parse::parse(&format!("SELECT 1 FROM {from}"))?.pop()
    else {
        return Err(CoordError::Internal("document groups FROM".into()));
    };
    let SetExpr::Select(shell) = *shell.body else {
        return Err(CoordError::Internal("document groups FROM".into()));
    };
    sel.from = shell.from;
    // A key equality holds in every group: each group's shards apply it.
    let others: Vec<String> = used[1..].iter().map(|g| galias(*g)).collect();
    crate::planner::groups::copy_key_equalities(sel, &first, std::slice::from_ref(&key), &others)?;
    Ok(out)
}

/// The groups an UPDATE changes, with each group's assignment to the JSON column.
pub fn update_groups<'a>(
    u: &Update,
    t: &'a Table,
    col: &str,
) -> Result<Vec<(&'a ColumnGroup, Vec<Assignment>)>, CoordError> {
    let refuse = |what: &str| crate::planner::groups::unsupported(t, what);
    let [a] = u.assignments.as_slice() else {
        return Err(refuse("an UPDATE setting several columns"));
    };
    let AssignmentTarget::ColumnName(c) = &a.target else {
        return Err(refuse("a tuple assignment"));
    };
    if crate::sql::names::last_ident(c) != col {
        return Err(CoordError::unsupported(
            "modifying the primary key is not supported",
        ));
    }
    let reads_doc = visit_expressions(&a.value, |e| {
        if matches!(e, Expr::Identifier(i) if ident(i) == col)
            || matches!(e, Expr::CompoundIdentifier(p) if p.last().is_some_and(|i| ident(i) == col))
        {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .is_break();
    if !reads_doc {
        // A new document: every group gets its part.
        return t
            .column_groups
            .iter()
            .map(|g| {
                let value =
                    crate::sql::dialect::parse_expr(&part_of(t, g, &format!("({})", a.value)))?;
                Ok((
                    g,
                    vec![Assignment {
                        target: a.target.clone(),
                        value,
                    }],
                ))
            })
            .collect();
    }
    // jsonb_set(doc, '{k,…}', v): only the group holding k.
    if let Expr::Function(f) = &a.value {
        if function_name(&f.name) == "jsonb_set" {
            if let FunctionArguments::List(l) = &f.args {
                if let (
                    Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(target))),
                    Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(p)))),
                ) = (l.args.first(), l.args.get(1))
                {
                    if let (true, Value::SingleQuotedString(path)) = (
                        matches!(target, Expr::Identifier(i) if ident(i) == col),
                        &p.value,
                    ) {
                        if let Some(k) = tessera_shared::jsonb::text_array(path)
                            .ok()
                            .and_then(|v| v.into_iter().next())
                        {
                            return Ok(vec![(&t.column_groups[owner(t, &k)], vec![a.clone()])]);
                        }
                    }
                }
            }
        }
    }
    Err(refuse(
        "an UPDATE of the document other than jsonb_set on one path or a new value",
    ))
}

/// An INSERT on `t` as one INSERT per group, each with its part of the document.
pub fn split_insert(ins: &Insert, t: &Table, col: &str) -> Result<Vec<Statement>, CoordError> {
    let Some(SetExpr::Values(values)) = ins.source.as_ref().map(|s| s.body.as_ref()) else {
        return Err(crate::planner::groups::unsupported(t, "INSERT ... SELECT"));
    };
    let cols = crate::sql::names::insert_columns(ins, t);
    let mut out = Vec::new();
    for g in &t.column_groups {
        let mut gi = ins.clone();
        gi.table = TableObject::TableName(ObjectName::from(vec![Ident::with_quote(
            '"',
            g.table.clone(),
        )]));
        gi.table_alias = None;
        let mut v = values.clone();
        for row in v.rows.iter_mut() {
            if row.content.len() != cols.len() {
                return Err(CoordError::Syntax(
                    "INSERT has more expressions than target columns".into(),
                ));
            }
            for (e, c) in row.content.iter_mut().zip(&cols) {
                if c == col {
                    *e = crate::sql::dialect::parse_expr(&part_of(t, g, &format!("({e})")))?;
                }
            }
        }
        let mut source = ins
            .source
            .clone()
            .ok_or_else(|| CoordError::Internal("insert".into()))?;
        source.body = Box::new(SetExpr::Values(v));
        gi.source = Some(source);
        out.push(Statement::Insert(gi));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Column, Storage};
    use tessera_shared::PgType;

    fn events() -> Table {
        let mut t = Table::new(
            "events",
            vec![
                Column::new("id", PgType::Int8),
                Column::new("doc", PgType::Jsonb),
            ],
        );
        t.primary_key = vec!["id".into()];
        t.storage = Storage::Document;
        let (col, groups) =
            parse_attribute_groups("meta(user, status) | body(*)", &t).expect("groups");
        t.attributes_of = Some(col);
        t.column_groups = groups;
        t
    }

    fn rewritten(sql: &str) -> String {
        let t = events();
        let Some(Statement::Query(q)) = crate::sql::parse::parse(sql).expect("parse").pop() else {
            panic!("query")
        };
        rewrite_query(&q, &t, "doc").expect("rewrite").to_string()
    }

    #[test]
    fn attribute_reads_touch_their_group_and_documents_are_merged() {
        assert_eq!(
            rewritten("SELECT doc->>'user' FROM events WHERE id = 1"),
            "SELECT \"events__meta\".\"doc\" ->> 'user' FROM \"events$meta\" AS \"events__meta\" WHERE \"events__meta\".\"id\" = 1"
        );
        assert_eq!(
            rewritten("SELECT doc FROM events WHERE id = $1"),
            "SELECT tessera_jsonb_merge(\"events__meta\".\"doc\", \"events__body\".\"doc\") AS doc \
             FROM \"events$meta\" AS \"events__meta\" JOIN \"events$body\" AS \"events__body\" ON \"events__meta\".\"id\" = \"events__body\".\"id\" \
             WHERE \"events__meta\".\"id\" = $1 AND \"events__body\".\"id\" = $1"
        );
        // An attribute no group names lives in the `*` group.
        assert!(
            rewritten("SELECT doc #>> '{geo,city}' FROM events").contains("FROM \"events$body\"")
        );
        for bad in ["meta(user)", "a(x) | b(y)", "a(*) | b(*)", "a(x, *) | b(y)"] {
            assert!(parse_attribute_groups(bad, &events()).is_err(), "{bad}");
        }
    }

    #[test]
    fn updates_go_to_the_groups_they_change() {
        let t = events();
        let update = |sql: &str| match crate::sql::parse::parse(sql).expect("parse").pop() {
            Some(Statement::Update(u)) => update_groups(&u, &t, "doc").map(|g| {
                g.iter()
                    .map(|(g, a)| format!("{}: {}", g.name, a[0].value))
                    .collect::<Vec<_>>()
            }),
            _ => panic!("update"),
        };
        assert_eq!(
            update("UPDATE events SET doc = jsonb_set(doc, '{status}', '\"x\"') WHERE id = 1")
                .expect("set"),
            ["meta: jsonb_set(doc, '{status}', '\"x\"')"]
        );
        assert_eq!(
            update("UPDATE events SET doc = '{\"n\": 1}' WHERE id = 1").expect("new"),
            [
                "meta: tessera_jsonb_pick(('{\"n\": 1}'), '[\"user\",\"status\"]')",
                "body: tessera_jsonb_omit(('{\"n\": 1}'), '[\"user\",\"status\"]')"
            ]
        );
        assert!(update("UPDATE events SET doc = doc || '{\"a\": 1}'").is_err());
    }
}
