//! Vertical partitioning: a table's columns split into column groups, each a table of its own
//! (the primary key plus the group's columns) with its own shards on its own nodes.
//!
//! Statements on the logical table are rewritten here into statements on the group tables,
//! as plain data the rest of the planner and the executor handle unchanged:
//! - a query reading columns of one group reads that group only;
//! - a query reading several stitches them with an inner join on the primary key (finished
//!   at the coordinator, with each group's share of the WHERE clause and any primary-key
//!   equality applied by its own shards, which also prunes them);
//! - an INSERT becomes one INSERT per group, every group getting a row (so the stitch never
//!   loses one); an UPDATE or DELETE one statement per group it concerns, by primary key.
//!
//! The engine runs a write's statements in one transaction, so no failure leaves part of a
//! row, and the inner join means no reader ever sees a row missing from a group.

use super::groups::{copy_key_equalities, unsupported};
pub use super::groups::{group_table_name, parse_spec};
use crate::catalog::{ColumnGroup, Table};
use crate::error::CoordError;
use crate::sql::names::{ident, quote, table_name};
use crate::sql::parse::parse;
use sqlparser::ast::*;
use std::collections::BTreeSet;
use std::ops::ControlFlow;

/// Parses `WITH (column_groups = 'profile(name, email) | activity(last_login, visits)')`
/// against the table's columns: every column outside the primary key in exactly one group.
pub fn parse_groups(spec: &str, t: &Table) -> Result<Vec<ColumnGroup>, CoordError> {
    let bad = |m: String| CoordError::InvalidValue(format!("column_groups: {m}"));
    let mut groups: Vec<ColumnGroup> = Vec::new();
    for (name, columns) in parse_spec(spec, true)? {
        for c in &columns {
            if t.column(c).is_none() {
                return Err(CoordError::UndefinedColumn(c.clone()));
            }
            if t.primary_key.contains(c) {
                return Err(bad(format!(
                    "\"{c}\" is part of the primary key, which every group carries"
                )));
            }
        }
        groups.push(ColumnGroup {
            table: group_table_name(&t.name, &name),
            name,
            columns,
        });
    }
    if groups.len() < 2 {
        return Err(bad("name at least two groups".into()));
    }
    if t.primary_key.is_empty() {
        return Err(CoordError::unsupported(
            "a table with column groups needs a PRIMARY KEY: its groups are stitched by it",
        ));
    }
    for c in &t.columns {
        if !t.primary_key.contains(&c.name) && !groups.iter().any(|g| g.columns.contains(&c.name)) {
            return Err(bad(format!("column \"{}\" is in no group", c.name)));
        }
    }
    Ok(groups)
}

/// The table a group stores: the primary key and the group's columns, in the table's order.
pub fn group_table(t: &Table, g: &ColumnGroup) -> Table {
    let mut gt = t.clone();
    gt.name = g.table.clone();
    gt.columns = t
        .columns
        .iter()
        .filter(|c| t.primary_key.contains(&c.name) || g.columns.contains(&c.name))
        .cloned()
        .collect();
    gt.column_groups = vec![];
    gt.part_of = Some(t.name.clone());
    gt.indexes = vec![];
    gt.foreign_keys = vec![];
    gt
}

/// The vertically partitioned table a statement names, if any.
pub fn target<'a>(stmt: &Statement, catalog: &'a crate::catalog::Catalog) -> Option<&'a Table> {
    let mut found = None;
    let _ = visit_relations(stmt, |r| {
        if let Some(t) = table_name(r).ok().and_then(|n| catalog.tables.get(&n)) {
            if !t.column_groups.is_empty() {
                found = Some(t);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    found
}

/// Which group holds column `c` (None for a primary-key column, which all hold).
fn group_of<'a>(t: &'a Table, c: &str) -> Option<&'a ColumnGroup> {
    t.column_groups
        .iter()
        .find(|g| g.columns.iter().any(|x| x == c))
}

/// The column a reference names, if it is one of `t`'s (bare, or qualified by `alias`).
fn column_ref(e: &Expr, t: &Table, alias: &str) -> Option<String> {
    let c = match e {
        Expr::Identifier(i) => ident(i),
        Expr::CompoundIdentifier(p) if p.len() == 2 && ident(&p[0]) == alias => ident(&p[1]),
        _ => return None,
    };
    t.column(&c).map(|_| c)
}

/// Groups a query must read: those holding a column it names, or the first for one that
/// names only the key (`count(*)`, `SELECT id`).
fn groups_read(select: &Select, order_by: Option<&OrderBy>, t: &Table, alias: &str) -> Vec<usize> {
    let mut used = BTreeSet::new();
    let mut note = |e: &Expr| {
        if let Some(c) = column_ref(e, t, alias) {
            if let Some(g) = group_of(t, &c) {
                used.insert(
                    t.column_groups
                        .iter()
                        .position(|x| x.name == g.name)
                        .unwrap_or(0),
                );
            }
        }
        ControlFlow::<()>::Continue(())
    };
    let _ = visit_expressions(select, &mut note);
    if let Some(o) = order_by {
        let outputs = output_aliases(select);
        let _ = visit_expressions(o, |e| {
            if matches!(e, Expr::Identifier(i) if outputs.contains(&ident(i))) {
                return ControlFlow::Continue(());
            }
            note(e)
        });
    }
    let star = select.projection.iter().any(|p| {
        matches!(p, SelectItem::Wildcard(_))
            || matches!(p, SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(n), _) if table_name(n).ok().as_deref() == Some(alias))
    });
    if star {
        return (0..t.column_groups.len()).collect();
    }
    if used.is_empty() {
        return vec![0];
    }
    used.into_iter().collect()
}

fn parse_expr(sql: &str) -> Result<Expr, CoordError> {
    crate::sql::dialect::parse_expr(sql)
}

/// Rewrites a query on the vertically partitioned `t` into one on its group tables.
pub fn rewrite_query(q: &Query, t: &Table) -> Result<Query, CoordError> {
    let nested = {
        let mut n = 0;
        let _ = visit_relations(q, |_| {
            n += 1;
            ControlFlow::<()>::Continue(())
        });
        n > 1 || q.with.is_some()
    };
    let SetExpr::Select(select) = q.body.as_ref() else {
        return Err(unsupported(t, "a set operation"));
    };
    if nested || select.from.len() != 1 || !select.from[0].joins.is_empty() {
        return Err(unsupported(t, "a join or subquery"));
    }
    let TableFactor::Table { alias, .. } = &select.from[0].relation else {
        return Err(unsupported(t, "this FROM item"));
    };
    if let Some(col) = &t.attributes_of {
        return crate::planner::doc_groups::rewrite_query(q, t, col);
    }
    let a = alias
        .as_ref()
        .map(|a| ident(&a.name))
        .unwrap_or_else(|| t.name.clone());
    let groups = groups_read(select, q.order_by.as_ref(), t, &a);
    let alias_of = |gi: usize| {
        if gi == groups[0] {
            a.clone()
        } else {
            format!("{a}__{}", t.column_groups[gi].name)
        }
    };
    // The FROM clause: the first group under the table's name or alias, the others joined on
    // the primary key.
    let mut from = format!(
        "{} AS {}",
        quote(&t.column_groups[groups[0]].table),
        quote(&a)
    );
    for gi in &groups[1..] {
        let on: Vec<String> = t
            .primary_key
            .iter()
            .map(|k| {
                format!(
                    "{}.{} = {}.{}",
                    quote(&a),
                    quote(k),
                    quote(&alias_of(*gi)),
                    quote(k)
                )
            })
            .collect();
        from.push_str(&format!(
            " JOIN {} AS {} ON {}",
            quote(&t.column_groups[*gi].table),
            quote(&alias_of(*gi)),
            on.join(" AND ")
        ));
    }
    let Some(Statement::Query(shell)) = parse(&format!("SELECT 1 FROM {from}"))?.pop() else {
        return Err(CoordError::Internal("vertical FROM clause".into()));
    };
    let SetExpr::Select(shell) = *shell.body else {
        return Err(CoordError::Internal("vertical FROM clause".into()));
    };
    let mut out = q.clone();
    let SetExpr::Select(sel) = out.body.as_mut() else {
        return Err(CoordError::Internal("vertical query".into()));
    };
    sel.from = shell.from;
    if groups.len() > 1 {
        // Every column reference names its group's alias (the key: the first group's).
        let qualify = |e: &mut Expr| {
            if let Some(c) = column_ref(e, t, &a) {
                let owner = group_of(t, &c)
                    .and_then(|g| t.column_groups.iter().position(|x| x.name == g.name))
                    .unwrap_or(groups[0]);
                *e = Expr::CompoundIdentifier(vec![
                    Ident::with_quote('"', alias_of(owner)),
                    Ident::with_quote('"', c),
                ]);
            }
            ControlFlow::<()>::Continue(())
        };
        let outputs = output_aliases(sel);
        let _ = visit_expressions_mut(sel.as_mut(), qualify);
        if let Some(o) = out.order_by.as_mut() {
            // A bare name in ORDER BY is an output column first, as in PostgreSQL.
            let _ = visit_expressions_mut(o, |e| {
                if matches!(e, Expr::Identifier(i) if outputs.contains(&ident(i))) {
                    return ControlFlow::Continue(());
                }
                qualify(e)
            });
        }
        let SetExpr::Select(sel) = out.body.as_mut() else {
            return Err(CoordError::Internal("vertical query".into()));
        };
        // `*` is every column, in the table's order, each from its group.
        let mut projection = Vec::new();
        for item in sel.projection.drain(..) {
            match item {
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                    for c in &t.columns {
                        let owner = group_of(t, &c.name)
                            .and_then(|g| t.column_groups.iter().position(|x| x.name == g.name))
                            .unwrap_or(groups[0]);
                        projection.push(SelectItem::UnnamedExpr(Expr::CompoundIdentifier(vec![
                            Ident::with_quote('"', alias_of(owner)),
                            Ident::with_quote('"', c.name.clone()),
                        ])));
                    }
                }
                other => projection.push(other),
            }
        }
        sel.projection = projection;
        // A key equality holds in every group: each group's shards apply it (and are pruned).
        let others: Vec<String> = groups[1..].iter().map(|g| alias_of(*g)).collect();
        copy_key_equalities(sel, &a, &t.primary_key, &others)?;
    }
    Ok(out)
}

/// The names the select list gives its outputs (`expr AS name`).
fn output_aliases(select: &Select) -> BTreeSet<String> {
    select
        .projection
        .iter()
        .filter_map(|p| match p {
            SelectItem::ExprWithAlias { alias, .. } => Some(ident(alias)),
            _ => None,
        })
        .collect()
}

/// An INSERT on `t` as one INSERT per group; every group gets each row.
pub fn split_insert(ins: &Insert, t: &Table) -> Result<Vec<Statement>, CoordError> {
    if ins.on.is_some() || ins.returning.is_some() {
        return Err(unsupported(t, "INSERT with ON CONFLICT or RETURNING"));
    }
    if let Some(col) = &t.attributes_of {
        return crate::planner::doc_groups::split_insert(ins, t, col);
    }
    let Some(SetExpr::Values(values)) = ins.source.as_ref().map(|s| s.body.as_ref()) else {
        return Err(unsupported(t, "INSERT ... SELECT"));
    };
    let cols = crate::sql::names::insert_columns(ins, t);
    let mut out = Vec::new();
    for g in &t.column_groups {
        let keep: Vec<usize> = cols
            .iter()
            .enumerate()
            .filter(|(_, c)| t.primary_key.contains(c) || g.columns.contains(c))
            .map(|(i, _)| i)
            .collect();
        let mut gi = ins.clone();
        gi.table = TableObject::TableName(ObjectName::from(vec![Ident::with_quote(
            '"',
            g.table.clone(),
        )]));
        gi.table_alias = None;
        gi.columns = keep
            .iter()
            .map(|i| ObjectName::from(vec![Ident::with_quote('"', cols[*i].clone())]))
            .collect();
        let mut v = values.clone();
        for row in v.rows.iter_mut() {
            if row.content.len() != cols.len() {
                return Err(CoordError::Syntax(
                    "INSERT has more expressions than target columns".into(),
                ));
            }
            row.content = keep.iter().map(|i| row.content[*i].clone()).collect();
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

/// Whether an expression reads only the primary key (so every group can evaluate it).
fn key_only(e: &Expr, t: &Table, alias: &str) -> bool {
    let mut ok = true;
    let _ = visit_expressions(e, |x| {
        if let Some(c) = column_ref(x, t, alias) {
            if !t.primary_key.contains(&c) {
                ok = false;
            }
        } else if crate::planner::is_subquery(x) {
            ok = false;
        }
        ControlFlow::<()>::Continue(())
    });
    ok
}

/// What an UPDATE or DELETE on `t` becomes: statements per group whose WHERE is `selection`
/// (when it reads only the key), or a key lookup first.
pub enum KeyedWrite {
    /// Run these as they are.
    Direct(Vec<Statement>),
    /// Read the keys with this query, then run [`per_keys`] with them.
    Lookup(Box<Query>),
}

/// The groups an UPDATE sets columns of, with their assignments.
fn update_groups<'a>(
    u: &Update,
    t: &'a Table,
) -> Result<Vec<(&'a ColumnGroup, Vec<Assignment>)>, CoordError> {
    if let Some(col) = &t.attributes_of {
        return crate::planner::doc_groups::update_groups(u, t, col);
    }
    let mut out: Vec<(&ColumnGroup, Vec<Assignment>)> = Vec::new();
    for a in &u.assignments {
        let AssignmentTarget::ColumnName(c) = &a.target else {
            return Err(unsupported(t, "a tuple assignment"));
        };
        let c = crate::sql::names::last_ident(c);
        let g = group_of(t, &c).ok_or_else(|| {
            CoordError::unsupported(format!(
                "modifying the primary key \"{c}\" is not supported"
            ))
        })?;
        // The new value may read only the key and the group's own columns.
        let mut foreign = false;
        let _ = visit_expressions(&a.value, |x| {
            if let Some(col) = column_ref(x, t, &t.name) {
                if !t.primary_key.contains(&col) && !g.columns.contains(&col) {
                    foreign = true;
                }
            }
            ControlFlow::<()>::Continue(())
        });
        if foreign {
            return Err(unsupported(t, "an assignment reading another column group"));
        }
        match out.iter_mut().find(|(x, _)| x.name == g.name) {
            Some((_, v)) => v.push(a.clone()),
            None => out.push((g, vec![a.clone()])),
        }
    }
    Ok(out)
}

/// An UPDATE or DELETE on `t`.
pub fn keyed_write(stmt: &Statement, t: &Table) -> Result<KeyedWrite, CoordError> {
    let (selection, alias) = match stmt {
        Statement::Update(u) => {
            if u.returning.is_some() || u.from.is_some() {
                return Err(unsupported(t, "UPDATE with FROM or RETURNING"));
            }
            update_groups(u, t)?;
            (u.selection.as_ref(), table_alias(&u.table.relation))
        }
        Statement::Delete(d) => {
            if d.returning.is_some() || d.using.is_some() {
                return Err(unsupported(t, "DELETE with USING or RETURNING"));
            }
            let from = match &d.from {
                FromTable::WithFromKeyword(v) | FromTable::WithoutKeyword(v) => v,
            };
            (
                d.selection.as_ref(),
                from.first().and_then(|f| table_alias(&f.relation)),
            )
        }
        _ => return Err(CoordError::Internal("not a write".into())),
    };
    let alias = alias.unwrap_or_else(|| t.name.clone());
    if selection.is_none_or(|w| key_only(w, t, &alias)) {
        return Ok(KeyedWrite::Direct(per_group(stmt, t, selection.cloned())?));
    }
    if t.primary_key.len() != 1 {
        return Err(unsupported(
            t,
            "a write filtering on non-key columns with a composite key",
        ));
    }
    let where_sql = selection.map(|w| format!(" WHERE {w}")).unwrap_or_default();
    let sql = format!(
        "SELECT {} FROM {} AS {}{where_sql}",
        quote(&t.primary_key[0]),
        quote(&t.name),
        quote(&alias)
    );
    match parse(&sql)?.pop() {
        Some(Statement::Query(q)) => Ok(KeyedWrite::Lookup(q)),
        _ => Err(CoordError::Internal("key lookup".into())),
    }
}

fn table_alias(f: &TableFactor) -> Option<String> {
    match f {
        TableFactor::Table { alias: Some(a), .. } => Some(ident(&a.name)),
        _ => None,
    }
}

/// The per-group statements of an UPDATE or DELETE, for rows whose key is in `keys` (SQL
/// literals).
pub fn per_keys(
    stmt: &Statement,
    t: &Table,
    keys: &[String],
) -> Result<Vec<Statement>, CoordError> {
    if keys.is_empty() {
        return Ok(vec![]);
    }
    let w = parse_expr(&format!(
        "{} IN ({})",
        quote(&t.primary_key[0]),
        keys.join(", ")
    ))?;
    per_group(stmt, t, Some(w))
}

fn per_group(
    stmt: &Statement,
    t: &Table,
    selection: Option<Expr>,
) -> Result<Vec<Statement>, CoordError> {
    let rename = |f: &mut TableFactor, g: &ColumnGroup| {
        if let TableFactor::Table { name, .. } = f {
            *name = ObjectName::from(vec![Ident::with_quote('"', g.table.clone())]);
        }
    };
    Ok(match stmt {
        Statement::Update(u) => update_groups(u, t)?
            .into_iter()
            .map(|(g, assignments)| {
                let mut gu = u.clone();
                rename(&mut gu.table.relation, g);
                gu.assignments = assignments;
                gu.selection = selection.clone();
                Statement::Update(gu)
            })
            .collect(),
        Statement::Delete(d) => t
            .column_groups
            .iter()
            .map(|g| {
                let mut gd = d.clone();
                match &mut gd.from {
                    FromTable::WithFromKeyword(v) | FromTable::WithoutKeyword(v) => {
                        for f in v.iter_mut() {
                            rename(&mut f.relation, g);
                        }
                    }
                }
                gd.selection = selection.clone();
                Statement::Delete(gd)
            })
            .collect(),
        _ => vec![],
    })
}

#[cfg(test)]
mod tests;
