//! Locking reads, `SELECT … FOR UPDATE | FOR SHARE [OF …] [NOWAIT | SKIP LOCKED]`: the clause comes off the query, which is planned as any read of its
//! table; each shard's SQL then selects the row's primary key after the visible columns (the
//! rowid for a table without one), and carries the request ([`RowLock`]) to the shard's first
//! copy, which locks the rows it returns (`storage/src/locking_read.rs`). The shard applies
//! LIMIT and OFFSET itself, after the rows SKIP LOCKED leaves out.
//!
//! `FOR UPDATE` locks a row exclusively, `FOR SHARE` with other sharers (writers wait for both).

use crate::catalog::{Catalog, Distribution, Shard, Storage, Table};
use crate::error::CoordError;
use crate::planner::route::limit_value;
use crate::planner::ShardTask;
use crate::sql::dialect::render;
use sqlparser::ast::*;
use tessera_shared::Value;

/// What a locked row does to the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockWait {
    /// Wait for its transaction to end (the default).
    Block,
    /// `NOWAIT`: fail with `55P03`.
    NoWait,
    /// `SKIP LOCKED`: leave it out.
    Skip,
}

/// A locking read of one table, as the planner found it.
#[derive(Debug, Clone, PartialEq)]
pub struct LockTarget {
    /// The table whose rows are locked.
    pub table: String,
    /// Its key columns in table order (`rowid` when it declares none), as the query names them.
    pub key: Vec<String>,
    /// What a locked row does.
    pub wait: LockWait,
    /// `FOR SHARE`: other sharers may lock the rows too.
    pub shared: bool,
}

/// A shard's part of a locking read: what travels with its SQL.
#[derive(Debug, Clone, PartialEq)]
pub struct RowLock {
    /// The table.
    pub table: String,
    /// How many key columns end each row.
    pub key_columns: u32,
    /// What a locked row does.
    pub wait: LockWait,
    /// LIMIT, applied by the shard after skipping.
    pub limit: Option<u64>,
    /// OFFSET, likewise.
    pub offset: u64,
    /// `FOR SHARE`.
    pub shared: bool,
}

/// Takes the locking clause off `q`, a read of `tables`; `None` when it has none. Shapes
/// PostgreSQL refuses get its errors; shapes Tessera cannot lock yet get `0A000`.
pub fn take(q: &mut Query, tables: &[&Table]) -> Result<Option<LockTarget>, CoordError> {
    if q.locks.is_empty() {
        return Ok(None);
    }
    if tables.is_empty() {
        // Nothing to lock (`SELECT 1 FOR UPDATE`), as in PostgreSQL.
        q.locks.clear();
        return Ok(None);
    }
    let shared = q.locks.iter().all(|l| l.lock_type == LockType::Share);
    let clause = lock_name(&q.locks[0]);
    let wait = q
        .locks
        .iter()
        .map(|l| match l.nonblock {
            Some(NonBlock::Nowait) => LockWait::NoWait,
            Some(NonBlock::SkipLocked) => LockWait::Skip,
            None => LockWait::Block,
        })
        .max_by_key(|w| match w {
            LockWait::Block => 0,
            LockWait::Skip => 1,
            LockWait::NoWait => 2,
        })
        .unwrap_or(LockWait::Block);
    q.locks.clear();
    let refused =
        |what: &str| CoordError::unsupported(format!("{clause} is not allowed with {what}"));
    let SetExpr::Select(select) = q.body.as_ref() else {
        return Err(refused("UNION/INTERSECT/EXCEPT"));
    };
    if select.distinct.is_some() {
        return Err(refused("DISTINCT clause"));
    }
    if !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty()) {
        return Err(refused("GROUP BY clause"));
    }
    if select.having.is_some() {
        return Err(refused("HAVING clause"));
    }
    if crate::planner::aggregate::has_aggregates(select) {
        return Err(refused("aggregate functions"));
    }
    let [table] = tables else {
        return Err(CoordError::unsupported(format!(
            "{clause} over a join or subquery is not supported by Tessera yet"
        )));
    };
    if table.distribution == Distribution::Reference
        || table.storage == Storage::Document
        || !table.column_groups.is_empty()
    {
        return Err(CoordError::unsupported(format!(
            "{clause} on reference, document and column-group tables is not supported by Tessera yet"
        )));
    }
    let alias = match select.from.as_slice() {
        [TableWithJoins { relation, joins }] if joins.is_empty() => match relation {
            TableFactor::Table { alias, .. } => alias.as_ref().map(|a| a.name.value.clone()),
            _ => None,
        },
        _ => {
            return Err(CoordError::unsupported(format!(
                "{clause} over a join or subquery is not supported by Tessera yet"
            )))
        }
    };
    let qualifier = alias.unwrap_or_else(|| table.name.clone());
    let key = match table.primary_key.is_empty() {
        true => vec!["rowid".to_string()],
        false => table
            .columns
            .iter()
            .filter(|c| table.primary_key.contains(&c.name))
            .map(|c| c.name.clone())
            .collect(),
    };
    Ok(Some(LockTarget {
        table: table.name.clone(),
        key: key
            .into_iter()
            .map(|k| format!("{}.{}", ident(&qualifier), ident(&k)))
            .collect(),
        wait,
        shared,
    }))
}

/// The task reading `q` on `shard`: on a copy that serves reads, or for a locking read on the
/// shard's first copy (where its writers lock rows), with the lock request.
pub fn shard_task(
    catalog: &Catalog,
    shard: &Shard,
    q: &Query,
    lock: Option<&LockTarget>,
    params: &[Value],
) -> Result<ShardTask, CoordError> {
    match lock {
        None => Ok(ShardTask {
            target: crate::planner::read_target(catalog, shard)?,
            sql: render(q),
            lock: None,
        }),
        Some(l) => {
            let (sql, lock) = shard_sql(q, l, params)?;
            Ok(ShardTask {
                target: crate::planner::target(shard)?,
                sql,
                lock: Some(lock),
            })
        }
    }
}

/// A shard's SQL for the locking read `target` of `q` (a query the planner made for the
/// shard): LIMIT and OFFSET move into the request, the key columns join the select list.
pub fn shard_sql(
    q: &Query,
    target: &LockTarget,
    params: &[Value],
) -> Result<(String, RowLock), CoordError> {
    let mut q = q.clone();
    let (limit, offset) = match q.limit_clause.take() {
        None => (None, 0),
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) if limit_by.is_empty() => {
            let value = |e: &Expr| {
                limit_value(e, params).ok_or_else(|| {
                    CoordError::unsupported("a locking read's LIMIT and OFFSET must be constants")
                })
            };
            let limit = limit.as_ref().map(value).transpose()?;
            let offset = offset.as_ref().map(|o| value(&o.value)).transpose()?;
            (limit, offset.unwrap_or(0))
        }
        Some(_) => return Err(CoordError::unsupported("this LIMIT form in a locking read")),
    };
    let SetExpr::Select(select) = q.body.as_mut() else {
        return Err(CoordError::Internal(
            "a locking read is a plain SELECT".into(),
        ));
    };
    for k in &target.key {
        let expr = sqlparser::parser::Parser::new(&sqlparser::dialect::SQLiteDialect {})
            .try_with_sql(k)
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| CoordError::Internal(format!("key column {k}: {e}")))?;
        select.projection.push(SelectItem::UnnamedExpr(expr));
    }
    Ok((
        render(&q),
        RowLock {
            table: target.table.clone(),
            key_columns: target.key.len() as u32,
            wait: target.wait,
            limit,
            offset,
            shared: target.shared,
        },
    ))
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The clause as PostgreSQL names it in its errors.
fn lock_name(l: &LockClause) -> &'static str {
    match l.lock_type {
        LockType::Update => "FOR UPDATE",
        LockType::Share => "FOR SHARE",
    }
}
