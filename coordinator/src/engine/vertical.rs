//! Running statements on tables with column groups: the rewrites of `planner::vertical`,
//! with a write's per-group statements in one transaction.

use crate::engine::{Engine, QueryResult};
use crate::error::CoordError;
use crate::planner::vertical::{keyed_write, per_keys, rewrite_query, split_insert, KeyedWrite};
use crate::session::Session;
use sqlparser::ast::Statement;
use tessera_shared::Value;

impl Engine {
    /// Runs a statement naming a table with column groups.
    pub(crate) async fn execute_vertical(
        &self,
        session: &mut Session,
        stmt: &Statement,
        params: &[Value],
    ) -> Result<QueryResult, CoordError> {
        let catalog = self.catalog.snapshot();
        let t = crate::planner::vertical::target(stmt, &catalog)
            .cloned()
            .ok_or_else(|| CoordError::Internal("no table with column groups".into()))?;
        let (tag, writes) = match stmt {
            Statement::Query(q) => {
                let q = rewrite_query(q, &t)?;
                return Box::pin(self.execute_in_txn(
                    session,
                    &Statement::Query(Box::new(q)),
                    params,
                ))
                .await;
            }
            Statement::Insert(ins) => ("INSERT", KeyedWrite::Direct(split_insert(ins, &t)?)),
            Statement::Update(_) | Statement::Delete(_) => {
                let tag = if matches!(stmt, Statement::Update(_)) {
                    "UPDATE"
                } else {
                    "DELETE"
                };
                (tag, keyed_write(stmt, &t)?)
            }
            _ => {
                return Err(CoordError::unsupported(
                    "this statement on a table with column groups",
                ))
            }
        };
        let implicit = session.txn.is_none();
        if implicit {
            Box::pin(self.execute(session, &control("BEGIN")?, &[])).await?;
        }
        let r = self.run_writes(session, stmt, &t, writes, params).await;
        if implicit {
            match &r {
                Ok(_) => {
                    let done = Box::pin(self.execute(session, &control("COMMIT")?, &[])).await?;
                    if matches!(done.completion, crate::engine::Completion::End("ROLLBACK")) {
                        return Err(CoordError::TxnAborted);
                    }
                }
                Err(_) => {
                    let _ = Box::pin(self.execute(session, &control("ROLLBACK")?, &[])).await;
                }
            }
        }
        let n = r?;
        Ok(QueryResult {
            completion: crate::engine::dml_tag(tag, n),
            ..QueryResult::command(tag, Some(n))
        })
    }

    /// EXPLAIN of a statement on a table with column groups: the groups, then the plan of
    /// each statement it becomes.
    pub(crate) fn explain_vertical(
        &self,
        stmt: &Statement,
        t: &crate::catalog::Table,
        params: &[Value],
        rctx: &crate::sql::dialect::RewriteCtx,
    ) -> Result<Vec<String>, CoordError> {
        let catalog = self.catalog.snapshot();
        let mut lines = vec![format!(
            "Column groups of {} (stitched by {}): {}",
            t.name,
            t.primary_key.join(", "),
            t.column_groups
                .iter()
                .map(|g| format!("{} ({}) in {}", g.name, g.columns.join(", "), g.table))
                .collect::<Vec<_>>()
                .join("; ")
        )];
        let mut explain = |header: String, s: &Statement| -> Result<(), CoordError> {
            lines.push(header);
            let planned = self.plan(s, params, rctx)?;
            lines.extend(
                crate::planner::explain::explain(&planned, &catalog)
                    .into_iter()
                    .map(|l| format!("  {l}")),
            );
            Ok(())
        };
        match stmt {
            Statement::Query(q) => {
                let q = rewrite_query(q, t)?;
                explain("Read:".into(), &Statement::Query(Box::new(q)))?;
            }
            Statement::Insert(ins) => {
                for (i, s) in split_insert(ins, t)?.iter().enumerate() {
                    explain(format!("Write {} of one transaction:", i + 1), s)?;
                }
            }
            _ => match keyed_write(stmt, t)? {
                KeyedWrite::Direct(s) => {
                    for (i, s) in s.iter().enumerate() {
                        explain(format!("Write {} of one transaction:", i + 1), s)?;
                    }
                }
                KeyedWrite::Lookup(q) => {
                    let q = rewrite_query(&q, t)?;
                    explain("Key lookup:".into(), &Statement::Query(Box::new(q)))?;
                    for s in per_keys(stmt, t, &["NULL".into()])? {
                        let s = s.to_string().replace("IN (NULL)", "IN (<the keys found>)");
                        lines.push(format!("Then, in the same transaction: {s}"));
                    }
                }
            },
        }
        Ok(lines)
    }

    /// Runs the per-group statements; the count is the first one's (every group has the row).
    async fn run_writes(
        &self,
        session: &mut Session,
        stmt: &Statement,
        t: &crate::catalog::Table,
        writes: KeyedWrite,
        params: &[Value],
    ) -> Result<u64, CoordError> {
        let statements = match writes {
            KeyedWrite::Direct(s) => s,
            KeyedWrite::Lookup(q) => {
                let read = rewrite_query(&q, t)?;
                let found = Box::pin(self.execute_in_txn(
                    session,
                    &Statement::Query(Box::new(read)),
                    params,
                ))
                .await?;
                let keys: Vec<String> = found
                    .rows
                    .iter()
                    .map(|r| literal(r.first().unwrap_or(&Value::Null)))
                    .collect::<Result<_, _>>()?;
                if keys.is_empty() {
                    return Ok(0);
                }
                per_keys(stmt, t, &keys)?
            }
        };
        let mut first = None;
        for s in &statements {
            let r = Box::pin(self.execute_in_txn(session, s, params)).await?;
            if first.is_none() {
                first = Some(match r.completion {
                    crate::engine::Completion::Command { rows: Some(n), .. } => n,
                    _ => 0,
                });
            }
        }
        Ok(first.unwrap_or(0))
    }
}

fn control(sql: &str) -> Result<Statement, CoordError> {
    crate::sql::parse::parse(sql)?
        .pop()
        .ok_or_else(|| CoordError::Internal(format!("cannot build {sql}")))
}

/// A key value as a SQL literal.
fn literal(v: &Value) -> Result<String, CoordError> {
    Ok(match v {
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => format!("{f:?}"),
        Value::Text(s) => format!("'{}'", s.replace('\'', "''")),
        other => {
            return Err(CoordError::unsupported(format!(
                "a key of this kind ({other:?}) in a write on a table with column groups"
            )))
        }
    })
}
