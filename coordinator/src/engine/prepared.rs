//! SQL-level prepared statements: `PREPARE name [(types)] AS …`, `EXECUTE name (args)` and
//! `DEALLOCATE [PREPARE] name | ALL`, kept per session (the protocol's own named statements are
//! pgwire's business).

use crate::engine::{Engine, QueryResult};
use crate::error::CoordError;
use crate::exec;
use crate::session::Session;
use crate::sql::dialect::RewriteCtx;
use crate::sql::names::{ident, last_ident};
use sqlparser::ast::{Expr, Ident, ObjectName, Statement};
use tessera_shared::Value;

fn no_such(name: &str) -> CoordError {
    CoordError::Storage {
        sqlstate: "26000".into(),
        message: format!("prepared statement \"{name}\" does not exist"),
    }
}

impl Engine {
    /// `PREPARE name AS statement`.
    pub(crate) fn prepare_named(
        &self,
        session: &mut Session,
        name: &Ident,
        statement: &Statement,
    ) -> Result<QueryResult, CoordError> {
        let name = ident(name);
        if session.prepared.contains_key(&name) {
            return Err(CoordError::Storage {
                sqlstate: "42P05".into(),
                message: format!("prepared statement \"{name}\" already exists"),
            });
        }
        let max = self.config.limits.max_prepared_statements;
        if session.prepared.len() >= max {
            return Err(CoordError::ProgramLimit(format!(
                "too many prepared statements in this session (max_prepared_statements = {max}): DEALLOCATE some first"
            )));
        }
        session.prepared.insert(name, statement.clone());
        Ok(QueryResult::command("PREPARE", None))
    }

    /// `EXECUTE name (args)`: the prepared statement and its argument values.
    pub(crate) async fn bind_named(
        &self,
        session: &Session,
        name: &ObjectName,
        args: &[Expr],
        params: &[Value],
    ) -> Result<(Statement, Vec<Value>), CoordError> {
        let name = last_ident(name);
        let prepared = session
            .prepared
            .get(&name)
            .cloned()
            .ok_or_else(|| no_such(&name))?;
        Ok((prepared, self.evaluate(args, params).await?))
    }

    /// `DEALLOCATE name | ALL`.
    pub(crate) fn deallocate(
        &self,
        session: &mut Session,
        name: &Ident,
    ) -> Result<QueryResult, CoordError> {
        let name = ident(name);
        if name == "all" {
            session.prepared.clear();
        } else if session.prepared.remove(&name).is_none() {
            return Err(no_such(&name));
        }
        Ok(QueryResult::command("DEALLOCATE", None))
    }

    /// Evaluates `EXECUTE`'s argument expressions (constants, `$n` of the outer statement).
    async fn evaluate(&self, exprs: &[Expr], params: &[Value]) -> Result<Vec<Value>, CoordError> {
        if exprs.is_empty() {
            return Ok(vec![]);
        }
        let list: Vec<String> = exprs.iter().map(|e| e.to_string()).collect();
        let stmt = self
            .parse(&format!("SELECT {}", list.join(", ")))?
            .pop()
            .ok_or_else(|| CoordError::Internal("empty EXECUTE arguments".into()))?;
        let planned = self.plan(&stmt, params, &RewriteCtx::new("", ""))?;
        let mut session = Session::new("tessera", "postgres");
        let rs = exec::execute(&self.reach(), &mut session, &planned, params).await?;
        rs.rows
            .into_iter()
            .next()
            .ok_or_else(|| CoordError::Internal("EXECUTE arguments gave no row".into()))
    }
}
