//! Planning of INSERT, UPDATE and DELETE: rows routed by their distribution key, writes to every copy of reference tables.

use super::route::{const_value, dist_key, names_for, prune, shard_for};
use super::select::referenced_tables;
use super::{target, Merge, Plan, PlanCtx, Planned, ShardTask};
use crate::catalog::{Distribution, GroupKind, Table};
use crate::error::CoordError;
use crate::sql::dialect::{render, rewrite};
use crate::sql::infer::projection_columns;
use crate::sql::names::table_name;
use sqlparser::ast::*;
use std::collections::{BTreeMap, BTreeSet};

/// Postgres reads a quoted literal as the target column's type; SQLite stores it as text.
/// Convert the literals SQLite would refuse or misread: booleans, bytea, and dates/timestamps
/// and `jsonb` (stored in Postgres' canonical text so that they compare and print right; JSON
/// is checked, 22P02 when it is not JSON).
fn coerce_literal(e: &mut Expr, ty: tessera_shared::PgType) -> Result<(), CoordError> {
    use tessera_shared::PgType;
    let Expr::Value(v) = e else { return Ok(()) };
    let sqlparser::ast::Value::SingleQuotedString(s) = &v.value else {
        return Ok(());
    };
    match ty {
        PgType::Bool => {
            let b = crate::sql::params::from_text(s, ty)?;
            *e = Expr::value(sqlparser::ast::Value::Number(
                if b == tessera_shared::Value::Integer(1) {
                    "1"
                } else {
                    "0"
                }
                .into(),
                false,
            ));
        }
        PgType::Bytea => {
            let hex = match s.strip_prefix("\\x") {
                Some(h) if h.len() % 2 == 0 && h.chars().all(|c| c.is_ascii_hexdigit()) => {
                    h.to_string()
                }
                Some(_) => {
                    return Err(CoordError::InvalidValue(format!(
                        "invalid input syntax for type bytea: \"{s}\""
                    )))
                }
                None => s.bytes().map(|b| format!("{b:02x}")).collect(),
            };
            *e = Expr::value(sqlparser::ast::Value::HexStringLiteral(hex));
        }
        PgType::Date | PgType::Timestamp | PgType::Timestamptz => {
            *e = Expr::value(sqlparser::ast::Value::SingleQuotedString(
                crate::sql::datetime::canonical(s, ty)?,
            ));
        }
        PgType::Json | PgType::Jsonb => {
            if let tessera_shared::Value::Text(t) = crate::sql::params::from_text(s, ty)? {
                *e = Expr::value(sqlparser::ast::Value::SingleQuotedString(t));
            }
        }
        _ => {}
    }
    Ok(())
}

fn returning_columns(
    ret: &Option<Vec<SelectItem>>,
    table: &Table,
    ctx: &PlanCtx<'_>,
) -> Vec<crate::sql::infer::OutputColumn> {
    match ret {
        Some(items) => projection_columns(items, &vec![(table.name.clone(), table)], ctx.catalog),
        None => vec![],
    }
}

/// Output columns of a DML statement (its RETURNING list), without planning it.
pub fn statement_columns(
    stmt: &Statement,
    catalog: &crate::catalog::Catalog,
) -> Result<Vec<crate::sql::infer::OutputColumn>, CoordError> {
    let (name, returning) = match stmt {
        Statement::Insert(i) => match &i.table {
            TableObject::TableName(n) => (table_name(n)?, &i.returning),
            _ => return Ok(vec![]),
        },
        Statement::Update(u) => (table_of(&u.table)?.0, &u.returning),
        Statement::Delete(d) => {
            let from = match &d.from {
                FromTable::WithFromKeyword(v) | FromTable::WithoutKeyword(v) => v,
            };
            match from.first() {
                Some(t) => (table_of(t)?.0, &d.returning),
                None => return Ok(vec![]),
            }
        }
        _ => return Ok(vec![]),
    };
    let table = catalog.table(&name)?;
    Ok(match returning {
        Some(items) => projection_columns(items, &vec![(table.name.clone(), table)], catalog),
        None => vec![],
    })
}

/// A write's plan: its tasks, merged as the table's layout requires.
fn write_plan(
    tasks: Vec<ShardTask>,
    table: &Table,
    columns: Vec<crate::sql::infer::OutputColumn>,
    tag: &'static str,
    ctx: &PlanCtx<'_>,
) -> Result<Planned, CoordError> {
    let merge = write_merge(table, ctx, tasks.len())?;
    // Replicated shards: the same statement on every other copy, after the first copies.
    let group = ctx.catalog.group_of(table)?;
    let copies: Vec<ShardTask> = tasks
        .iter()
        .flat_map(|t| {
            group
                .shards
                .iter()
                .filter(|s| s.id == t.target.shard)
                .flat_map(|s| s.write_nodes().skip(1))
                .map(|node| ShardTask {
                    target: super::Target {
                        shard: t.target.shard,
                        node,
                    },
                    sql: t.sql.clone(),
                    lock: None,
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let (tasks, merge) = if copies.is_empty() {
        (tasks, merge)
    } else {
        let primaries = tasks.len();
        let mut all = tasks;
        all.extend(copies);
        (
            all,
            Merge::Replicated {
                primaries,
                inner: Box::new(merge),
            },
        )
    };
    Ok(Planned {
        plan: Plan::Distributed {
            tasks,
            merge,
            write: true,
        },
        columns,
        tag,
    })
}

fn write_merge(table: &Table, ctx: &PlanCtx<'_>, n: usize) -> Result<Merge, CoordError> {
    let group = ctx.catalog.group_of(table)?;
    Ok(if group.kind == GroupKind::Reference {
        Merge::FirstOnly
    } else if n == 1 {
        Merge::Single
    } else {
        Merge::Concat {
            limit: None,
            offset: 0,
        }
    })
}

/// Subqueries in DML see only one shard's rows: refuse them unless the table has one shard.
fn check_no_foreign_tables(
    node: &impl Visit,
    table: &Table,
    ctx: &PlanCtx<'_>,
) -> Result<(), CoordError> {
    let names = referenced_tables(node, &BTreeSet::new())?;
    for n in &names {
        let t = ctx.catalog.table(n)?;
        if t.name != table.name && t.distribution != Distribution::Reference {
            return Err(CoordError::unsupported(format!(
                "a write to \"{}\" that reads \"{}\" is not supported yet (only reference tables may be read)",
                table.name, t.name
            )));
        }
    }
    Ok(())
}

/// INSERT ... VALUES: each row goes to the shard its key hashes to.
pub fn plan_insert(ins: &Insert, ctx: &PlanCtx<'_>) -> Result<Planned, CoordError> {
    let TableObject::TableName(name) = &ins.table else {
        return Err(CoordError::unsupported("INSERT into a table function"));
    };
    let table = ctx.catalog.table(&table_name(name)?)?;
    match &ins.on {
        Some(OnInsert::OnConflict(OnConflict {
            action: OnConflictAction::DoUpdate(DoUpdate { assignments, .. }),
            ..
        }))
        | Some(OnInsert::DuplicateKeyUpdate(assignments)) => check_assignments(assignments, table)?,
        _ => {}
    }
    let group = ctx.catalog.group_of(table)?;
    let columns = returning_columns(&ins.returning, table, ctx);
    let mut ins = ins.clone();
    rewrite(&mut ins, ctx.rewrite)?;
    check_no_foreign_tables(&ins, table, ctx)?;
    let mut col_names: Vec<String> = crate::sql::names::insert_columns(&ins, table);
    for c in &col_names {
        if table.column(c).is_none() {
            return Err(CoordError::UndefinedColumn(c.clone()));
        }
    }
    let rows =
        match ins.source.as_deref().map(|q| q.body.as_ref()) {
            Some(SetExpr::Values(v)) => v.rows.clone(),
            _ => return Err(CoordError::unsupported(
                "INSERT ... SELECT and DEFAULT VALUES are not supported yet on distributed tables",
            )),
        };
    let width = rows.first().map(|r| r.len()).unwrap_or(0);
    if rows.iter().any(|r| r.len() != width) {
        return Err(CoordError::Syntax(
            "VALUES lists must all be the same length".into(),
        ));
    }
    if width > col_names.len() {
        return Err(CoordError::Syntax(
            "INSERT has more expressions than target columns".into(),
        ));
    }
    if width < col_names.len() {
        if !ins.columns.is_empty() {
            return Err(CoordError::Syntax(
                "INSERT has more target columns than expressions".into(),
            ));
        }
        // `INSERT INTO t VALUES (a, b)` on a wider table: the leading columns, the rest default.
        col_names.truncate(width);
        ins.columns = col_names
            .iter()
            .map(|c| ObjectName::from(vec![Ident::with_quote('"', c.clone())]))
            .collect();
    }
    let types: Vec<tessera_shared::PgType> = col_names
        .iter()
        .filter_map(|c| table.column(c).map(|c| c.ty))
        .collect();
    let mut rows = rows;
    for row in rows.iter_mut() {
        for (e, ty) in row.iter_mut().zip(&types) {
            coerce_literal(e, *ty)?;
        }
    }
    let tasks: Vec<ShardTask> = match &table.distribution {
        Distribution::Hash { column } | Distribution::Range { column } => {
            let ty = table
                .column(column)
                .map(|c| c.ty)
                .unwrap_or(tessera_shared::PgType::Text);
            let Some(pos) = col_names.iter().position(|c| c == column) else {
                return Err(CoordError::Storage {
                    sqlstate: "23502".into(),
                    message: format!(
                        "null value in distribution column \"{column}\" of relation \"{}\"",
                        table.name
                    ),
                });
            };
            let mut by_shard: BTreeMap<u32, Vec<Parens<Vec<Expr>>>> = BTreeMap::new();
            for row in rows {
                let v = const_value(&row[pos], ctx.params).ok_or_else(|| {
                    CoordError::unsupported(format!("distribution column \"{column}\" must be a constant or parameter in INSERT"))
                })?;
                let shard = shard_for(group, &dist_key(&v, ty)?)?;
                by_shard.entry(shard.index).or_default().push(row);
            }
            let mut tasks = Vec::new();
            for (index, rows) in by_shard {
                let shard = &group.shards[index as usize];
                let mut part = ins.clone();
                if let Some(src) = part.source.as_mut() {
                    if let SetExpr::Values(v) = src.body.as_mut() {
                        v.rows = rows;
                    }
                }
                tasks.push(ShardTask {
                    target: target(shard)?,
                    sql: render(&Statement::Insert(part)),
                    lock: None,
                });
            }
            tasks
        }
        Distribution::Reference | Distribution::Single => {
            let sql = render(&Statement::Insert(ins.clone()));
            group
                .shards
                .iter()
                .map(|s| {
                    Ok(ShardTask {
                        target: target(s)?,
                        sql: sql.clone(),
                        lock: None,
                    })
                })
                .collect::<Result<_, CoordError>>()?
        }
    };
    write_plan(tasks, table, columns, "INSERT", ctx)
}

fn targets_for_filter(
    table: &Table,
    alias: Option<&TableAlias>,
    selection: Option<&Expr>,
    ctx: &PlanCtx<'_>,
) -> Result<Vec<super::Target>, CoordError> {
    let group = ctx.catalog.group_of(table)?;
    if group.kind == GroupKind::Reference {
        return group.shards.iter().map(target).collect();
    }
    prune(
        ctx.catalog,
        table,
        &names_for(&table.name, alias),
        selection,
        ctx.params,
    )?
    .into_iter()
    .map(target)
    .collect()
}

fn table_of(twj: &TableWithJoins) -> Result<(String, Option<TableAlias>), CoordError> {
    match &twj.relation {
        TableFactor::Table { name, alias, .. } if twj.joins.is_empty() => {
            Ok((table_name(name)?, alias.clone()))
        }
        _ => Err(CoordError::unsupported(
            "UPDATE/DELETE with joins is not supported yet",
        )),
    }
}

/// UPDATE and DELETE: the same SQL on every shard the WHERE clause allows.
fn fan_out_write(
    stmt: Statement,
    table: &Table,
    alias: Option<&TableAlias>,
    selection: Option<&Expr>,
    columns: Vec<crate::sql::infer::OutputColumn>,
    tag: &'static str,
    ctx: &PlanCtx<'_>,
) -> Result<Planned, CoordError> {
    check_no_foreign_tables(&stmt, table, ctx)?;
    let targets = targets_for_filter(table, alias, selection, ctx)?;
    let sql = render(&stmt);
    let tasks: Vec<ShardTask> = targets
        .into_iter()
        .map(|t| ShardTask {
            target: t,
            sql: sql.clone(),
            lock: None,
        })
        .collect();
    write_plan(tasks, table, columns, tag, ctx)
}

/// The columns an UPDATE (or an INSERT's `ON CONFLICT DO UPDATE`) sets exist, and none is the
/// distribution column: a row cannot change shards in place (0A000).
fn check_assignments(assignments: &[Assignment], table: &Table) -> Result<(), CoordError> {
    for a in assignments {
        let cols: Vec<&ObjectName> = match &a.target {
            AssignmentTarget::ColumnName(c) => vec![c],
            AssignmentTarget::Tuple(cs) => cs.iter().collect(),
        };
        for c in cols {
            let c = crate::sql::names::last_ident(c);
            if table.column(&c).is_none() {
                return Err(CoordError::UndefinedColumn(c));
            }
            if table.distribution.column() == Some(c.as_str()) {
                return Err(CoordError::unsupported(format!(
                    "modifying the distribution column \"{c}\" is not supported"
                )));
            }
        }
    }
    Ok(())
}

/// UPDATE: the shards the WHERE clause allows.
pub fn plan_update(u: &Update, ctx: &PlanCtx<'_>) -> Result<Planned, CoordError> {
    let (name, alias) = table_of(&u.table)?;
    let table = ctx.catalog.table(&name)?;
    if u.from.is_some() {
        return Err(CoordError::unsupported(
            "UPDATE ... FROM is not supported yet",
        ));
    }
    check_assignments(&u.assignments, table)?;
    let columns = returning_columns(&u.returning, table, ctx);
    let mut u = u.clone();
    for a in u.assignments.iter_mut() {
        if let AssignmentTarget::ColumnName(c) = &a.target {
            let c = crate::sql::names::last_ident(c);
            if let Some(col) = table.column(&c) {
                coerce_literal(&mut a.value, col.ty)?;
            }
        }
    }
    if let Some(w) = u.selection.as_mut() {
        crate::planner::path_index::use_path_indexes(w, table);
    }
    crate::planner::json_args::mark_json_arguments(&mut u, &[table]);
    rewrite(&mut u, ctx.rewrite)?;
    let selection = u.selection.clone();
    fan_out_write(
        Statement::Update(u),
        table,
        alias.as_ref(),
        selection.as_ref(),
        columns,
        "UPDATE",
        ctx,
    )
}

/// DELETE: the shards the WHERE clause allows.
pub fn plan_delete(d: &Delete, ctx: &PlanCtx<'_>) -> Result<Planned, CoordError> {
    let from = match &d.from {
        FromTable::WithFromKeyword(v) | FromTable::WithoutKeyword(v) => v,
    };
    if from.len() != 1 || d.using.is_some() {
        return Err(CoordError::unsupported(
            "DELETE with USING or several tables is not supported yet",
        ));
    }
    let (name, alias) = table_of(&from[0])?;
    let table = ctx.catalog.table(&name)?;
    let columns = returning_columns(&d.returning, table, ctx);
    let mut d = d.clone();
    if let Some(w) = d.selection.as_mut() {
        crate::planner::path_index::use_path_indexes(w, table);
    }
    rewrite(&mut d, ctx.rewrite)?;
    let selection = d.selection.clone();
    fan_out_write(
        Statement::Delete(d),
        table,
        alias.as_ref(),
        selection.as_ref(),
        columns,
        "DELETE",
        ctx,
    )
}

#[cfg(test)]
mod tests;
