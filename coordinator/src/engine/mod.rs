//! Statement dispatch: each statement family goes to its file, as mini-redis's `cmd/` does.
//! Session state lives here; nothing below the engine takes `&Engine`. No sockets here.
//!
//! - [`block`]: BEGIN, COMMIT, ROLLBACK; [`savepoint`]: savepoints.
//! - [`show`]: SET, SHOW, RESET, DISCARD; [`prepared`]: PREPARE, EXECUTE, DEALLOCATE.
//! - [`ddl`]: CREATE, ALTER, DROP, TRUNCATE; [`roles`]: roles; [`admin`]: the administration
//!   functions; [`copy`]: COPY; [`explain`]: EXPLAIN.
//! - [`dml`]: routed queries and DML; [`insert`]: INSERT … SELECT and serials; [`vertical`]:
//!   tables with column groups; [`cached`]: reads through the result cache.
//! - [`open`]: opening the engine and recovering decided commits; [`result`]: what a statement
//!   returns.

pub mod admin;
pub mod block;
pub mod cached;
pub mod copy;
pub mod ddl;
pub mod dml;
pub mod explain;
pub mod insert;
pub mod open;
pub mod prepared;
pub mod result;
pub mod roles;
pub mod savepoint;
pub mod show;
pub mod vertical;

pub(crate) use result::dml_tag;
pub use result::{Completion, Described, QueryResult};

use crate::catalog::store::CatalogStore;
use crate::cluster::Cluster;
use crate::config::CoordinatorConfig;
use crate::error::CoordError;
use crate::exec;
use crate::planner::{self, PlanCtx};
use crate::session::Session;
use crate::sql;
use crate::sql::dialect::RewriteCtx;
use crate::sql::infer::OutputColumn;
use crate::sql::names::{ident, table_name};
use crate::sql::param_types::param_types;
use crate::sql::params;
use admin::utility_call;
use sqlparser::ast::*;
use std::sync::Arc;
use tessera_shared::{PgType, Value};

/// The coordinator's engine: catalog, storage clients and configuration.
pub struct Engine {
    /// Catalog store: the metadata Raft group, or a file.
    pub catalog: Arc<dyn CatalogStore>,
    /// This coordinator's membership of the metadata Raft group, when the catalog lives there.
    pub meta: Option<Arc<crate::meta::store::RaftCatalog>>,
    /// Storage node clients.
    pub cluster: Arc<Cluster>,
    /// Settings.
    pub config: CoordinatorConfig,
    /// Transactions across shards: the commit protocol and its decision log.
    pub txn: Arc<crate::txn::TxnManager>,
    /// Copies of shards: failure detection, repair, moves.
    pub replication: Arc<crate::replication::Replication>,
    /// Work this coordinator started in the background (the rollback of a dropped session's
    /// transaction, the deletion of a moved copy): shutdown waits for it.
    pub tasks: tokio_util::task::TaskTracker,
    /// Sequence values reserved by this coordinator: name -> (next, end).
    pub sequence_blocks: std::sync::Mutex<std::collections::HashMap<String, (i64, i64)>>,
    /// Query-result cache.
    pub cache: crate::cache::ResultCache,
    /// Memory every statement of this coordinator holds at once (`[limits] shared_memory_bytes`).
    pub memory: Arc<crate::exec::budget::SharedMemory>,
}

impl Engine {
    /// What execution below the engine may reach.
    pub fn reach(&self) -> exec::Reach<'_> {
        exec::Reach {
            catalog: &self.catalog,
            cluster: &self.cluster,
            txn: &self.txn,
            memory: &self.memory,
        }
    }
}

impl Engine {
    /// Parses client SQL.
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>, CoordError> {
        sql::parse::parse(sql)
    }

    /// Parameter and result types of a statement, without running it.
    pub fn describe(&self, stmt: &Statement) -> Result<Described, CoordError> {
        let catalog = self.catalog.snapshot();
        let n = params::count(stmt);
        if n > 65535 {
            return Err(CoordError::Storage {
                sqlstate: "54023".into(),
                message: format!("statement has {n} parameters; at most 65535 are allowed"),
            });
        }
        let params = param_types(stmt, &catalog, n);
        let columns = match stmt {
            Statement::Query(q) if utility_call(q).is_some() => vec![OutputColumn {
                name: utility_call(q).map(|c| c.0).unwrap_or_default(),
                ty: PgType::Text,
            }],
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => {
                planner::dml::statement_columns(stmt, &catalog)?
            }
            Statement::Query(_) if crate::pgcatalog::applies(stmt, &catalog) => {
                crate::pgcatalog::prepare(stmt, &catalog, &Session::new("", ""))?.columns
            }
            Statement::Query(_) => {
                // Plan with NULL parameters: the columns do not depend on values.
                let rctx = RewriteCtx::new("", "");
                let nulls = vec![Value::Null; n];
                match planner::plan(
                    stmt,
                    &PlanCtx {
                        catalog: &catalog,
                        params: &nulls,
                        rewrite: &rctx,
                    },
                ) {
                    Ok(p) => p.columns,
                    Err(e) => return Err(e),
                }
            }
            Statement::Explain { .. } => vec![OutputColumn {
                name: "QUERY PLAN".into(),
                ty: PgType::Text,
            }],
            Statement::ShowVariable { variable } => crate::engine::show::show_columns(variable),
            _ => vec![],
        };
        Ok(Described { params, columns })
    }

    /// Runs one statement for `session`, with Postgres transaction-block semantics.
    pub async fn execute(
        &self,
        session: &mut Session,
        stmt: &Statement,
        params: &[Value],
    ) -> Result<QueryResult, CoordError> {
        if let Some(done) = self.transaction_block(session, stmt).await {
            return done;
        }
        if session.txn.as_ref().is_some_and(|t| t.failed) {
            return Err(CoordError::TxnAborted);
        }
        session.interrupt.reset();
        session.deadline = session
            .settings
            .get("statement_timeout")
            .and_then(|v| crate::session::parse_timeout(v))
            .map(|d| tokio::time::Instant::now() + d);
        let result = self.execute_in_txn(session, stmt, params).await;
        session.deadline = None;
        if result.is_err() {
            if let Some(t) = session.txn.as_mut() {
                t.failed = true;
            }
        }
        result
    }

    /// Hands `stmt` to the file of its family, inside the session's transaction (if any).
    pub(crate) async fn execute_in_txn(
        &self,
        session: &mut Session,
        stmt: &Statement,
        params: &[Value],
    ) -> Result<QueryResult, CoordError> {
        let rctx = RewriteCtx::new(&session.user, &session.database);
        match stmt {
            Statement::Set(set) => show::set(session, set),
            Statement::ShowVariable { variable } => show::show(self, session, variable).await,
            Statement::Reset(r) => Ok(show::reset(session, &r.reset)),
            Statement::Discard { .. } => show::discard(session),
            Statement::Prepare {
                name, statement, ..
            } => self.prepare_named(session, name, statement),
            Statement::Execute {
                name: Some(name),
                parameters,
                ..
            } => {
                let (prepared, values) = self.bind_named(session, name, parameters, params).await?;
                Box::pin(self.execute_in_txn(session, &prepared, &values)).await
            }
            Statement::Deallocate { name, .. } => self.deallocate(session, name),
            Statement::CreateTable(ct) => {
                let notices = ddl::create_table(self, ct, &rctx).await?;
                session.notices.extend(notices);
                Ok(QueryResult::command("CREATE TABLE", None))
            }
            Statement::Drop {
                object_type: ObjectType::Table,
                names,
                if_exists,
                cascade,
                ..
            } => {
                ddl::drop_tables(self, names, *if_exists, *cascade).await?;
                for n in names {
                    if let Ok(t) = table_name(n) {
                        self.cache.invalidate_table(&t);
                    }
                }
                Ok(QueryResult::command("DROP TABLE", None))
            }
            Statement::CreateRole(cr) => {
                self.create_role(session, cr).await?;
                Ok(QueryResult::command("CREATE ROLE", None))
            }
            Statement::AlterRole { name, operation } => {
                self.alter_role(session, name, operation).await?;
                Ok(QueryResult::command("ALTER ROLE", None))
            }
            Statement::Drop {
                object_type: ObjectType::Role,
                names,
                if_exists,
                ..
            } => {
                self.drop_roles(session, names, *if_exists).await?;
                Ok(QueryResult::command("DROP ROLE", None))
            }
            Statement::CreateIndex(ci) => {
                ddl::create_index(self, ci).await?;
                Ok(QueryResult::command("CREATE INDEX", None))
            }
            Statement::AlterTable(at) => {
                let altered = ddl::alter_table(self, &at.name, &at.operations, &rctx).await;
                if let Ok(t) = table_name(&at.name) {
                    self.cache.invalidate_table(&t);
                }
                altered?;
                Ok(QueryResult::command("ALTER TABLE", None))
            }
            Statement::Copy { source, to: false, target: CopyTarget::Stdin, options, legacy_options, .. } => {
                self.copy_from_stdin(session, source, options, legacy_options)
            }
            Statement::Copy { source, to: true, target: CopyTarget::Stdout, options, legacy_options, .. } => {
                self.copy_to_stdout(session, source, options, legacy_options).await
            }
            Statement::Copy { .. } => Err(CoordError::unsupported("COPY to or from a server file or program is not supported; use STDIN/STDOUT (psql \\copy)")),
            Statement::Vacuum(_) => Ok(QueryResult::command("VACUUM", None)),
            Statement::Analyze(_) => Ok(QueryResult::command("ANALYZE", None)),
            Statement::Truncate(t) => {
                ddl::truncate(self, session, t, &rctx).await?;
                Ok(QueryResult::command("TRUNCATE TABLE", None))
            }
            Statement::Explain {
                statement, analyze, ..
            } => self.explain(session, statement, *analyze, params, &rctx).await,
            Statement::Query(q) if utility_call(q).is_some() => {
                let (name, args) = utility_call(q).unwrap_or_default();
                self.admin_call(session, name, args).await
            }
            Statement::Query(_)
            | Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_)
                if crate::planner::vertical::target(stmt, &self.catalog.snapshot()).is_some() =>
            {
                Box::pin(self.execute_vertical(session, stmt, params)).await
            }
            Statement::Insert(ins)
                if !matches!(
                    ins.source.as_deref().map(|q| q.body.as_ref()),
                    Some(SetExpr::Values(_))
                ) =>
            {
                self.insert_select(session, ins, params, &rctx).await
            }
            Statement::Query(_) if crate::pgcatalog::applies(stmt, &self.catalog.snapshot()) => {
                self.catalog_query(session, stmt, params).await
            }
            Statement::Query(_) if self.cache_applies(session) => {
                self.read_through_cache(session, stmt, params, &rctx).await
            }
            Statement::Query(_)
            | Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_) => self.run_planned(session, stmt, params, &rctx).await,
            other => Err(CoordError::unsupported(format!(
                "statement not supported yet: {}",
                other
                    .to_string()
                    .split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            ))),
        }
    }
}

/// Lower-cased identifier list as one dotted name.
pub fn dotted(parts: &[Ident]) -> String {
    parts.iter().map(ident).collect::<Vec<_>>().join(".")
}
