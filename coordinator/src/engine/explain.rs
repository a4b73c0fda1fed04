//! `EXPLAIN`: the plan, where it runs, and whether the result cache would answer.

use super::{Engine, QueryResult};
use crate::error::CoordError;
use crate::planner::explain::explain;
use crate::session::Session;
use crate::sql::dialect::RewriteCtx;
use crate::sql::names::table_name;
use sqlparser::ast::Statement;
use tessera_shared::Value;

impl Engine {
    /// `EXPLAIN statement` (ANALYZE is refused).
    pub(super) async fn explain(
        &self,
        session: &mut Session,
        statement: &Statement,
        analyze: bool,
        params: &[Value],
        rctx: &RewriteCtx,
    ) -> Result<QueryResult, CoordError> {
        if analyze {
            return Err(CoordError::unsupported(
                "EXPLAIN ANALYZE is not supported yet",
            ));
        }
        let catalog = self.catalog.snapshot();
        if let Some(t) = crate::planner::vertical::target(statement, &catalog) {
            let lines = self.explain_vertical(statement, t, params, rctx)?;
            return Ok(QueryResult::text_rows("QUERY PLAN", lines));
        }
        let planned = self.plan(statement, params, rctx)?;
        let mut lines = explain(&planned, &catalog);
        let mut names = Vec::new();
        let _ = sqlparser::ast::visit_relations(statement, |r| {
            if let Ok(n) = table_name(r) {
                names.push(n);
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        lines.extend(crate::planner::explain::explain_storage(
            &planned, &catalog, &names,
        ));
        if matches!(statement, Statement::Query(_)) {
            lines.push(self.explain_cache(session, statement, params).await);
        }
        Ok(QueryResult::text_rows("QUERY PLAN", lines))
    }
}
