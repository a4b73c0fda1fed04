//! COPY FROM STDIN and COPY TO STDOUT: rows stream in batches through the routed insert path, in one
//! transaction (the session's, or one of the COPY's own), and stream out in text or CSV.

use crate::copy::{CopyFormat, CopyIn, CopyParser};
use crate::engine::{Completion, Engine, QueryResult};
use crate::error::CoordError;
use crate::exec;
use crate::session::Session;
use crate::sql::dialect::RewriteCtx;
use crate::sql::names::{ident, quote, table_name};
use sqlparser::ast::*;

/// Rows buffered before they are sent to the shards.
const BATCH_ROWS: usize = 2000;

fn copy_columns(
    table: &crate::catalog::Table,
    columns: &[Ident],
) -> Result<Vec<String>, CoordError> {
    if columns.is_empty() {
        return Ok(table.columns.iter().map(|c| c.name.clone()).collect());
    }
    let names: Vec<String> = columns.iter().map(ident).collect();
    for n in &names {
        if table.column(n).is_none() {
            return Err(CoordError::UndefinedColumn(n.clone()));
        }
    }
    Ok(names)
}

impl Engine {
    /// `COPY t [(cols)] FROM STDIN`: validates, opens the transaction, and puts the session in COPY mode.
    pub fn copy_from_stdin(
        &self,
        session: &mut Session,
        source: &CopySource,
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
    ) -> Result<QueryResult, CoordError> {
        let CopySource::Table {
            table_name: name,
            columns,
        } = source
        else {
            return Err(CoordError::Syntax("COPY FROM needs a table".into()));
        };
        let catalog = self.catalog.snapshot();
        let table = catalog.table(&table_name(name)?)?;
        let format = CopyFormat::from_options(options, legacy)?;
        let names = copy_columns(table, columns)?;
        let types = names
            .iter()
            .filter_map(|n| table.column(n).map(|c| c.ty))
            .collect();
        let cols: Vec<String> = names.iter().map(|n| quote(n)).collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            quote(&table.name),
            cols.join(", "),
            vec!["NULL"; cols.len()].join(", ")
        );
        let Some(Statement::Insert(insert)) = crate::sql::parse::parse(&sql)?.pop() else {
            return Err(CoordError::Internal(format!("cannot build {sql}")));
        };
        let implicit = session.begin_own_txn();
        let width = names.len();
        session.copy = Some(CopyIn {
            parser: CopyParser::new(format, &table.name, names, types),
            insert,
            width,
            rows: Vec::new(),
            total: 0,
            error: None,
            implicit,
        });
        Ok(QueryResult {
            columns: vec![],
            rows: vec![],
            returns_rows: false,
            completion: Completion::CopyIn(width),
        })
    }

    async fn flush_copy(&self, session: &mut Session, copy: &mut CopyIn) -> Result<(), CoordError> {
        if copy.rows.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut copy.rows);
        let rctx = RewriteCtx::new(&session.user, &session.database);
        let (n, _, _) = self
            .insert_batch(session, &copy.insert, copy.width, &rows, &rctx)
            .await?;
        copy.total += n;
        Ok(())
    }

    /// A CopyData message: parse, and send full batches to the shards. Errors are kept for CopyDone.
    pub async fn copy_data(&self, session: &mut Session, data: &[u8]) {
        let Some(mut copy) = session.copy.take() else {
            return;
        };
        if copy.error.is_none() {
            let r = match copy.parser.feed(data, &mut copy.rows) {
                Ok(()) if copy.rows.len() >= BATCH_ROWS => {
                    self.flush_copy(session, &mut copy).await
                }
                other => other,
            };
            if let Err(e) = r {
                copy.error = Some(e);
            }
        }
        session.copy = Some(copy);
    }

    /// CopyDone: the last rows, then commit (if the COPY owns its transaction). Returns the row count.
    pub async fn copy_done(&self, session: &mut Session) -> Result<u64, CoordError> {
        let Some(mut copy) = session.copy.take() else {
            return Err(CoordError::TxnState("no COPY in progress".into()));
        };
        let mut result = match copy.error.take() {
            Some(e) => Err(e),
            None => copy.parser.finish(&mut copy.rows),
        };
        if result.is_ok() {
            result = self.flush_copy(session, &mut copy).await;
        }
        self.end_copy(session, copy.implicit, result.is_ok())
            .await?;
        result.map(|_| copy.total)
    }

    /// CopyFail: the client gave up; nothing of the COPY stays.
    pub async fn copy_fail(&self, session: &mut Session, message: &str) -> CoordError {
        if let Some(copy) = session.copy.take() {
            let _ = self.end_copy(session, copy.implicit, false).await;
        }
        CoordError::Storage {
            sqlstate: "57014".into(),
            message: format!("COPY from stdin failed: {message}"),
        }
    }

    async fn end_copy(
        &self,
        session: &mut Session,
        implicit: bool,
        ok: bool,
    ) -> Result<(), CoordError> {
        if implicit {
            return self.end_own_txn(session, ok).await;
        }
        if !ok {
            if let Some(t) = session.txn.as_mut() {
                t.failed = true;
            }
        }
        Ok(())
    }

    /// `COPY t TO STDOUT` / `COPY (query) TO STDOUT`: the rows, formatted.
    pub async fn copy_to_stdout(
        &self,
        session: &mut Session,
        source: &CopySource,
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
    ) -> Result<QueryResult, CoordError> {
        let format = CopyFormat::from_options(options, legacy)?;
        let query = match source {
            CopySource::Query(q) => Statement::Query(q.clone()),
            CopySource::Table {
                table_name: name,
                columns,
            } => {
                let catalog = self.catalog.snapshot();
                let table = catalog.table(&table_name(name)?)?;
                let cols: Vec<String> = copy_columns(table, columns)?
                    .iter()
                    .map(|c| quote(c))
                    .collect();
                let sql = format!("SELECT {} FROM {}", cols.join(", "), quote(&table.name));
                crate::sql::parse::parse(&sql)?
                    .pop()
                    .ok_or_else(|| CoordError::Internal(format!("cannot build {sql}")))?
            }
        };
        let rctx = RewriteCtx::new(&session.user, &session.database);
        let query = match &query {
            Statement::Query(q) => {
                match crate::planner::vertical::target(&query, &self.catalog.snapshot()) {
                    Some(t) => {
                        Statement::Query(Box::new(crate::planner::vertical::rewrite_query(q, t)?))
                    }
                    None => query.clone(),
                }
            }
            other => other.clone(),
        };
        let planned = self.plan(&query, &[], &rctx)?;
        let rows = exec::execute(&self.reach(), session, &planned, &[])
            .await?
            .rows;
        let types: Vec<_> = planned.columns.iter().map(|c| c.ty).collect();
        let mut lines = Vec::with_capacity(rows.len() + 1);
        if format.header && format.csv {
            lines.push(
                format.header_line(
                    &planned
                        .columns
                        .iter()
                        .map(|c| c.name.clone())
                        .collect::<Vec<_>>(),
                ),
            );
        }
        lines.extend(rows.iter().map(|r| format.format_row(r, &types)));
        Ok(QueryResult {
            columns: planned.columns,
            rows: vec![],
            returns_rows: false,
            completion: Completion::CopyOut(lines),
        })
    }
}
