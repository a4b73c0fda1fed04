//! Queries and DML that the planner routes: planning against the current catalog, the
//! emulated system catalog, and rows inserted on the engine's own behalf.

use super::{dml_tag, Completion, Engine, QueryResult};
use crate::catalog::Table;
use crate::error::CoordError;
use crate::exec;
use crate::planner::{self, PlanCtx, Planned};
use crate::session::Session;
use crate::sql::dialect::RewriteCtx;
use sqlparser::ast::Statement;
use tessera_shared::Value;

impl Engine {
    /// Plans and runs a query, INSERT, UPDATE or DELETE on the shards.
    pub(super) async fn run_planned(
        &self,
        session: &mut Session,
        stmt: &Statement,
        params: &[Value],
        rctx: &RewriteCtx,
    ) -> Result<QueryResult, CoordError> {
        let filled = match stmt {
            Statement::Insert(ins) => self.fill_serials(ins).await?.map(Statement::Insert),
            _ => None,
        };
        let stmt = filled.as_ref().unwrap_or(stmt);
        let planned = self.plan(stmt, params, rctx)?;
        let returns_rows = matches!(stmt, Statement::Query(_)) || !planned.columns.is_empty();
        let rs = exec::execute(&self.reach(), session, &planned, params).await?;
        Ok(QueryResult {
            columns: planned.columns,
            returns_rows,
            completion: dml_tag(planned.tag, rs.affected),
            rows: rs.rows,
        })
    }

    /// Answers a query that reads the emulated `pg_catalog` or `information_schema`.
    pub(super) async fn catalog_query(
        &self,
        session: &mut Session,
        stmt: &Statement,
        params: &[Value],
    ) -> Result<QueryResult, CoordError> {
        let catalog = self.catalog.snapshot();
        let budget = crate::exec::budget::Budget::for_session(session, &self.memory);
        let (columns, rows) =
            crate::pgcatalog::run(stmt, &catalog, session, params, &budget).await?;
        Ok(QueryResult {
            columns,
            rows,
            returns_rows: true,
            completion: Completion::Select,
        })
    }

    /// Plans a query or DML statement against the current catalog.
    pub fn plan(
        &self,
        stmt: &Statement,
        params: &[Value],
        rctx: &RewriteCtx,
    ) -> Result<Planned, CoordError> {
        let catalog = self.catalog.snapshot();
        planner::plan(
            stmt,
            &PlanCtx {
                catalog: &catalog,
                params,
                rewrite: rctx,
            },
        )
    }

    /// Inserts rows (all columns, catalog order) through the normal routed write path.
    pub async fn insert_rows(&self, table: &Table, rows: &[Vec<Value>]) -> Result<(), CoordError> {
        if rows.is_empty() {
            return Ok(());
        }
        let width = table.columns.len();
        let mut values = Vec::new();
        let mut params = Vec::new();
        for row in rows {
            let marks: Vec<String> = (0..width)
                .map(|i| format!("${}", params.len() + i + 1))
                .collect();
            values.push(format!("({})", marks.join(", ")));
            params.extend(row.iter().cloned());
        }
        let cols: Vec<String> = table
            .columns
            .iter()
            .map(|c| crate::sql::names::quote(&c.name))
            .collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            crate::sql::names::quote(&table.name),
            cols.join(", "),
            values.join(", ")
        );
        let stmt = self
            .parse(&sql)?
            .pop()
            .ok_or_else(|| CoordError::Internal("empty insert".into()))?;
        let mut session = Session::new("tessera", "postgres");
        let planned = self.plan(&stmt, &params, &RewriteCtx::new("tessera", "postgres"))?;
        exec::execute(&self.reach(), &mut session, &planned, &params).await?;
        Ok(())
    }
}
