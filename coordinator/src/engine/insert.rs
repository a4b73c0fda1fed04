//! INSERT helpers run before planning: values for `serial` columns from cluster-wide sequences,
//! and `INSERT ... SELECT` (the query runs first, its rows are then inserted as routed writes).

use crate::catalog::{CatalogCommand, Table};
use crate::engine::{Completion, Engine, QueryResult};
use crate::error::CoordError;
use crate::exec;
use crate::session::Session;
use crate::sql::dialect::RewriteCtx;
use crate::sql::names::table_name;
use sqlparser::ast::*;
use tessera_shared::Value as Val;

/// Values reserved per catalog write: one durable write serves this many inserted rows.
const SEQUENCE_BLOCK: i64 = 1000;

/// SQLite binds at most 32766 parameters per statement.
const MAX_PARAMS: usize = 32_000;

fn target_table<'c>(
    ins: &Insert,
    catalog: &'c crate::catalog::Catalog,
) -> Result<&'c Table, CoordError> {
    let TableObject::TableName(name) = &ins.table else {
        return Err(CoordError::unsupported("INSERT into a table function"));
    };
    catalog.table(&table_name(name)?)
}

fn is_default(e: &Expr) -> bool {
    matches!(e, Expr::Identifier(i) if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default"))
}

impl Engine {
    /// Ends a transaction opened by [`Session::begin_own_txn`]: commit if `ok`, else roll back.
    pub async fn end_own_txn(&self, session: &mut Session, ok: bool) -> Result<(), CoordError> {
        let Some(txn) = session.txn.take() else {
            return Ok(());
        };
        let targets: Vec<_> = txn.touched.iter().copied().collect();
        if ok {
            // As at COMMIT: a copy added to a written shard meanwhile would miss these rows.
            let written: Vec<_> = txn.written.iter().copied().collect();
            if let Err(e) = crate::txn::commit::copies_unchanged(&self.catalog.snapshot(), &written)
            {
                let _ = self.txn.finish_all(&targets, txn.id, false).await;
                return Err(e);
            }
        }
        let r = if ok {
            self.txn.commit_all(&targets, txn.id).await
        } else {
            self.txn.finish_all(&targets, txn.id, false).await
        };
        if ok {
            r
        } else {
            Ok(())
        }
    }

    /// The next `n` values of sequence `name`, from this coordinator's reserved block.
    pub async fn next_sequence_values(&self, name: &str, n: usize) -> Result<Vec<i64>, CoordError> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let taken = {
                let mut blocks = self
                    .sequence_blocks
                    .lock()
                    .map_err(|_| CoordError::Internal("sequence lock poisoned".into()))?;
                match blocks.get_mut(name) {
                    Some((next, end)) if *next < *end => {
                        let take = ((*end - *next) as usize).min(n - out.len());
                        out.extend(*next..*next + take as i64);
                        *next += take as i64;
                        true
                    }
                    _ => false,
                }
            };
            if !taken {
                let count = SEQUENCE_BLOCK.max((n - out.len()) as i64);
                let catalog = self
                    .catalog
                    .propose(CatalogCommand::AllocSequence {
                        name: name.to_string(),
                        count,
                    })
                    .await?;
                let end = *catalog
                    .sequences
                    .get(name)
                    .ok_or_else(|| CoordError::Internal(format!("sequence {name} missing")))?;
                let mut blocks = self
                    .sequence_blocks
                    .lock()
                    .map_err(|_| CoordError::Internal("sequence lock poisoned".into()))?;
                blocks.insert(name.to_string(), (end - count, end));
            }
        }
        Ok(out)
    }

    /// Adds values for `serial` columns an INSERT ... VALUES omits (or gives as DEFAULT).
    pub async fn fill_serials(&self, ins: &Insert) -> Result<Option<Insert>, CoordError> {
        let catalog = self.catalog.snapshot();
        let table = target_table(ins, &catalog)?;
        if !table.columns.iter().any(|c| c.serial) {
            return Ok(None);
        }
        let Some(SetExpr::Values(values)) = ins.source.as_deref().map(|q| q.body.as_ref()) else {
            return Ok(None);
        };
        let rows = values.rows.len();
        let mut ins = ins.clone();
        let listed: Vec<String> = crate::sql::names::insert_columns(&ins, table);
        let mut changed = false;
        for col in table.columns.iter().filter(|c| c.serial) {
            let seq = format!("{}.{}", table.name, col.name);
            let pos = listed.iter().position(|c| *c == col.name);
            let Some(SetExpr::Values(v)) = ins.source.as_deref_mut().map(|q| q.body.as_mut())
            else {
                continue;
            };
            let wanted = match pos {
                None => rows,
                Some(p) => v
                    .rows
                    .iter()
                    .filter(|r| r.get(p).is_some_and(is_default))
                    .count(),
            };
            if wanted == 0 {
                continue;
            }
            let mut ids = self.next_sequence_values(&seq, wanted).await?.into_iter();
            let mut lit = || {
                Expr::value(Value::Number(
                    ids.next().unwrap_or_default().to_string(),
                    false,
                ))
            };
            match pos {
                None => {
                    for r in v.rows.iter_mut() {
                        r.content.push(lit());
                    }
                }
                Some(p) => {
                    for r in v.rows.iter_mut() {
                        if r.get(p).is_some_and(is_default) {
                            r.content[p] = lit();
                        }
                    }
                }
            }
            if pos.is_none() {
                if ins.columns.is_empty() {
                    ins.columns = listed
                        .iter()
                        .filter(|c| **c != col.name)
                        .map(|c| ObjectName::from(vec![Ident::new(c.clone())]))
                        .collect();
                }
                ins.columns
                    .push(ObjectName::from(vec![Ident::new(col.name.clone())]));
            }
            changed = true;
        }
        Ok(changed.then_some(ins))
    }

    /// `INSERT ... SELECT`: runs the query, then inserts its rows in parameterised batches,
    /// all in one transaction (the session's, or its own).
    pub async fn insert_select(
        &self,
        session: &mut Session,
        ins: &Insert,
        params: &[Val],
        rctx: &RewriteCtx,
    ) -> Result<QueryResult, CoordError> {
        let query = ins.source.as_deref().ok_or_else(|| {
            CoordError::unsupported("INSERT ... DEFAULT VALUES is not supported yet")
        })?;
        let catalog = self.catalog.snapshot();
        let table = target_table(ins, &catalog)?.clone();
        let width = if ins.columns.is_empty() {
            table.columns.len()
        } else {
            ins.columns.len()
        };
        let planned = self.plan(&Statement::Query(Box::new(query.clone())), params, rctx)?;
        if planned.columns.len() != width {
            return Err(CoordError::Syntax(format!(
                "INSERT has {width} target columns but the query returns {}",
                planned.columns.len()
            )));
        }
        let implicit = session.begin_own_txn();
        let result = self
            .insert_select_in_txn(session, ins, &planned, params, rctx, width)
            .await;
        if implicit {
            self.end_own_txn(session, result.is_ok()).await?;
        }
        result
    }

    async fn insert_select_in_txn(
        &self,
        session: &mut Session,
        ins: &Insert,
        planned: &crate::planner::Planned,
        params: &[Val],
        rctx: &RewriteCtx,
        width: usize,
    ) -> Result<QueryResult, CoordError> {
        let rows = exec::execute(&self.reach(), session, planned, params)
            .await?
            .rows;
        let (affected, returned, columns) =
            self.insert_batch(session, ins, width, &rows, rctx).await?;
        Ok(QueryResult {
            columns,
            rows: returned,
            returns_rows: ins.returning.is_some(),
            completion: Completion::Command {
                name: "INSERT 0".into(),
                rows: Some(affected),
            },
        })
    }

    /// Inserts `rows` (of `width` values, in `ins`'s column order) as parameterised
    /// `INSERT ... VALUES` statements routed like any other, in the session's transaction.
    /// Returns rows affected, RETURNING rows and their columns.
    pub async fn insert_batch(
        &self,
        session: &mut Session,
        ins: &Insert,
        width: usize,
        rows: &[Vec<Val>],
        rctx: &RewriteCtx,
    ) -> Result<(u64, Vec<Vec<Val>>, Vec<crate::sql::infer::OutputColumn>), CoordError> {
        let per_stmt = (MAX_PARAMS / width.max(1)).clamp(1, 1000);
        let mut affected = 0;
        let mut returned = Vec::new();
        let mut columns = Vec::new();
        for chunk in rows.chunks(per_stmt) {
            let mut values = Vec::with_capacity(chunk.len());
            let mut bound = Vec::with_capacity(chunk.len() * width);
            for row in chunk {
                let marks: Vec<Expr> = (0..width)
                    .map(|i| Expr::value(Value::Placeholder(format!("${}", bound.len() + i + 1))))
                    .collect();
                values.push(Parens::with_empty_span(marks));
                bound.extend(row.iter().cloned());
            }
            let mut part = ins.clone();
            let mut q = match ins.source.as_deref() {
                Some(q) => q.clone(),
                None => return Err(CoordError::Internal("INSERT without a source".into())),
            };
            q.body = Box::new(SetExpr::Values(Values {
                explicit_row: false,
                value_keyword: false,
                rows: values,
            }));
            q.order_by = None;
            q.limit_clause = None;
            q.with = None;
            part.source = Some(Box::new(q));
            let stmt = Statement::Insert(self.fill_serials(&part).await?.unwrap_or(part));
            let catalog = self.catalog.snapshot();
            if let (Statement::Insert(i), Some(t)) =
                (&stmt, crate::planner::vertical::target(&stmt, &catalog))
            {
                // COPY or INSERT ... SELECT into a table with column groups: each group's rows,
                // inside the caller's transaction; the count is the first group's.
                for (k, s) in crate::planner::vertical::split_insert(i, t)?
                    .iter()
                    .enumerate()
                {
                    let p = self.plan(s, &bound, rctx)?;
                    let r = exec::execute(&self.reach(), session, &p, &bound).await?;
                    if k == 0 {
                        affected += r.affected;
                    }
                }
                continue;
            }
            let p = self.plan(&stmt, &bound, rctx)?;
            let r = exec::execute(&self.reach(), session, &p, &bound).await?;
            affected += r.affected;
            columns = p.columns;
            returned.extend(r.rows);
        }
        Ok((affected, returned, columns))
    }
}
