//! Statement dispatch: session commands, DDL, EXPLAIN and planned statements. No sockets here.

pub mod cached;
pub mod copy;
pub mod ddl;
pub mod insert;
pub mod prepared;
pub mod roles;
pub mod savepoint;
pub mod show;
pub mod vertical;

use crate::catalog::store::{CatalogStore, FileCatalog};
use crate::catalog::{CatalogCommand, Distribution, Table};
use crate::cluster::Cluster;
use crate::config::CoordinatorConfig;
use crate::error::CoordError;
use crate::exec;
use crate::planner::{self, explain::explain, PlanCtx, Planned, Target};
use crate::session::{default_settings, new_txn_id, OpenTxn, Session};
use crate::sql;
use crate::sql::dialect::RewriteCtx;
use crate::sql::infer::{param_types, OutputColumn};
use crate::sql::names::{function_name, ident, table_name};
use crate::sql::params;
use sqlparser::ast::*;
use std::sync::Arc;
use tessera_shared::{PgType, Value};

/// How a statement completes (its CommandComplete tag).
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// `SELECT n` (rows counted by the protocol layer).
    Select,
    /// A command tag such as `INSERT 0 n`, `UPDATE n`, `CREATE TABLE`.
    Command {
        /// Tag word(s).
        name: String,
        /// Row count, when the tag carries one.
        rows: Option<u64>,
    },
    /// `BEGIN`: the session is now in a transaction block.
    Begin,
    /// `COMMIT` or `ROLLBACK`: the transaction block ended.
    End(&'static str),
    /// COPY FROM STDIN started with this many columns: CopyData follows from the client.
    CopyIn(usize),
    /// COPY TO STDOUT: these lines are sent as CopyData.
    CopyOut(Vec<String>),
}

/// The result of one statement.
#[derive(Debug)]
pub struct QueryResult {
    /// Columns of the returned rows (empty when none are returned).
    pub columns: Vec<OutputColumn>,
    /// Rows.
    pub rows: Vec<Vec<Value>>,
    /// Whether rows are returned (a RowDescription is sent).
    pub returns_rows: bool,
    /// Completion tag.
    pub completion: Completion,
}

impl QueryResult {
    pub(crate) fn command(name: &str, rows: Option<u64>) -> QueryResult {
        QueryResult {
            columns: vec![],
            rows: vec![],
            returns_rows: false,
            completion: Completion::Command {
                name: name.into(),
                rows,
            },
        }
    }

    fn text_rows(column: &str, lines: Vec<String>) -> QueryResult {
        QueryResult {
            columns: vec![OutputColumn {
                name: column.into(),
                ty: PgType::Text,
            }],
            rows: lines.into_iter().map(|l| vec![Value::Text(l)]).collect(),
            returns_rows: true,
            completion: Completion::Select,
        }
    }
}

/// What Describe reports for a statement.
#[derive(Debug, Clone)]
pub struct Described {
    /// Parameter types, one per `$n`.
    pub params: Vec<PgType>,
    /// Result columns (empty when the statement returns no rows).
    pub columns: Vec<OutputColumn>,
}

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
    pub txn: crate::txn::TxnManager,
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

pub(crate) fn dml_tag(tag: &str, n: u64) -> Completion {
    match tag {
        "INSERT" => Completion::Command {
            name: "INSERT 0".into(),
            rows: Some(n),
        },
        "SELECT" => Completion::Select,
        other => Completion::Command {
            name: other.into(),
            rows: Some(n),
        },
    }
}

/// Returns `(function, args)` for `SELECT f('a', 'b')` without FROM.
fn utility_call(q: &Query) -> Option<(String, Vec<String>)> {
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    if !s.from.is_empty() || s.projection.len() != 1 {
        return None;
    }
    let (SelectItem::UnnamedExpr(Expr::Function(f))
    | SelectItem::ExprWithAlias {
        expr: Expr::Function(f),
        ..
    }) = &s.projection[0]
    else {
        return None;
    };
    let name = function_name(&f.name);
    if !matches!(
        name.as_str(),
        "create_distributed_table"
            | "create_reference_table"
            | "tessera_cache_clear"
            | "tessera_decommission"
            | "tessera_drain"
            | "tessera_move_shard"
    ) {
        return None;
    }
    let FunctionArguments::List(l) = &f.args else {
        return Some((name, vec![]));
    };
    let args = l
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))) => match &v.value {
                sqlparser::ast::Value::SingleQuotedString(s) => s.clone(),
                other => other.to_string(),
            },
            other => other.to_string(),
        })
        .collect();
    Some((name, args))
}

impl Engine {
    /// Opens the catalog and registers the configured storage nodes.
    pub async fn open(config: CoordinatorConfig) -> Result<Engine, CoordError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| CoordError::Io(format!("creating {}: {e}", config.data_dir.display())))?;
        let (catalog, meta): (Arc<dyn CatalogStore>, _) = match &config.meta {
            Some(m) => {
                let raft = Arc::new(
                    crate::meta::store::RaftCatalog::start(crate::meta::store::MetaConfig {
                        id: m.id,
                        listen: m.listen.clone(),
                        members: m.members.clone(),
                        dir: config.data_dir.join("meta"),
                    })
                    .await?,
                );
                // A data directory from before the group: its catalog file seeds the group
                // (applied only while the group's catalog is empty).
                let file =
                    FileCatalog::open(config.catalog_dir.as_ref().unwrap_or(&config.data_dir))?
                        .snapshot();
                if !file.tables.is_empty() || !file.nodes.is_empty() {
                    raft.seed((*file).clone()).await?;
                }
                (raft.clone() as Arc<dyn CatalogStore>, Some(raft))
            }
            None => (
                Arc::new(match &config.catalog_dir {
                    Some(dir) => FileCatalog::open_with(dir, true)?,
                    None => FileCatalog::open(&config.data_dir)?,
                }) as Arc<dyn CatalogStore>,
                None,
            ),
        };
        let cluster = Arc::new(Cluster::default());
        let mut config = config;
        for sc in config.embedded_storage.clone() {
            let name = sc.node_name.clone();
            let registry = tokio::task::spawn_blocking(move || {
                tessera_storage::shards::ShardRegistry::open(sc)
            })
            .await
            .map_err(|e| CoordError::Internal(e.to_string()))?
            .map_err(|e| CoordError::Io(e.to_string()))?;
            cluster.add_embedded(&name, Arc::new(registry));
            config.storage_nodes.push(crate::config::NodeConfig {
                name: name.clone(),
                addr: format!("{}{name}", crate::cluster::EMBEDDED_PREFIX),
            });
        }
        for n in &config.storage_nodes {
            let known = catalog
                .snapshot()
                .nodes
                .values()
                .any(|x| x.name == n.name && x.addr == n.addr);
            if !known {
                catalog
                    .propose(CatalogCommand::UpsertNode {
                        name: n.name.clone(),
                        addr: n.addr.clone(),
                    })
                    .await?;
            }
        }
        let (txnlog, pending) = crate::txn::log::DecisionLog::open(&config.data_dir)?;
        let txn = crate::txn::TxnManager {
            catalog: catalog.clone(),
            cluster: cluster.clone(),
            log: txnlog,
        };
        let tasks = tokio_util::task::TaskTracker::new();
        let replication = Arc::new(crate::replication::Replication {
            tasks: tasks.clone(),
            catalog: catalog.clone(),
            cluster: cluster.clone(),
            config: config.liveness.clone(),
            meta: meta.clone(),
        });
        let engine = Engine {
            replication,
            tasks,
            catalog,
            meta,
            cluster,
            cache: crate::cache::ResultCache::new(config.cache.clone()),
            memory: crate::exec::budget::SharedMemory::new(
                config.limits.shared_memory_bytes,
                config.limits.scratch_cache_bytes,
            ),
            config,
            txn,
            sequence_blocks: Default::default(),
        };
        engine.bootstrap_superuser().await?;
        engine.recover(pending).await;
        Ok(engine)
    }

    /// Finishes commits decided before a crash: every shard that still holds the transaction commits it.
    async fn recover(&self, pending: Vec<crate::txn::log::Pending>) {
        // Prepared and never decided: roll back now rather than hold locks until the nodes'
        // idle limit.
        for (txn, targets) in self.txn.log.take_undecided() {
            if let Err(e) = self.txn.finish_all(&targets, txn, false).await {
                tracing::warn!(txn, error = %e, "rolling back an undecided transaction failed; it ends on the idle limit");
            }
        }
        for (txn, targets) in pending {
            let mut all_ok = true;
            for t in &targets {
                let r = match self.catalog.snapshot().node(t.node) {
                    Ok(node) => self.cluster.finish_txn(node, t.shard, txn, true).await,
                    Err(e) => Err(e),
                };
                match r {
                    Ok(()) => {
                        tracing::info!(txn, shard = t.shard, "recovered commit: shard committed")
                    }
                    // The shard committed before the crash (or lost the transaction with its own crash).
                    Err(CoordError::Storage { sqlstate, .. }) if sqlstate == "25P02" => {}
                    Err(e) => {
                        all_ok = false;
                        tracing::error!(txn, shard = t.shard, error = %e, "cannot finish a decided commit; will retry at next start");
                    }
                }
            }
            if all_ok {
                let _ = self.txn.log.done(txn);
            }
        }
    }

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
        match stmt {
            Statement::StartTransaction { .. } => {
                if session.txn.is_none() {
                    session.txn = Some(OpenTxn {
                        id: new_txn_id(),
                        touched: Default::default(),
                        failed: false,
                        savepoints: Vec::new(),
                        written: Default::default(),
                    });
                }
                return Ok(QueryResult {
                    completion: Completion::Begin,
                    ..QueryResult::command("BEGIN", None)
                });
            }
            Statement::Commit { .. } => {
                let Some(txn) = session.txn.take() else {
                    return Ok(QueryResult {
                        completion: Completion::End("COMMIT"),
                        ..QueryResult::command("COMMIT", None)
                    });
                };
                let targets: Vec<Target> = txn.touched.iter().copied().collect();
                if txn.failed {
                    let _ = self.txn.finish_all(&targets, txn.id, false).await;
                    return Ok(QueryResult {
                        completion: Completion::End("ROLLBACK"),
                        ..QueryResult::command("ROLLBACK", None)
                    });
                }
                let written: Vec<Target> = txn.written.iter().copied().collect();
                if let Err(e) =
                    crate::txn::commit::copies_unchanged(&self.catalog.snapshot(), &written)
                {
                    let _ = self.txn.finish_all(&targets, txn.id, false).await;
                    return Err(e);
                }
                self.txn.commit_all(&targets, txn.id).await?;
                return Ok(QueryResult {
                    completion: Completion::End("COMMIT"),
                    ..QueryResult::command("COMMIT", None)
                });
            }
            Statement::Savepoint { name } => {
                self.savepoint(session, &crate::sql::names::ident(name))
                    .await?;
                return Ok(QueryResult::command("SAVEPOINT", None));
            }
            Statement::ReleaseSavepoint { name } => {
                self.release_savepoint(session, &crate::sql::names::ident(name))
                    .await?;
                return Ok(QueryResult::command("RELEASE", None));
            }
            Statement::Rollback {
                savepoint: Some(name),
                ..
            } => {
                self.rollback_to_savepoint(session, &crate::sql::names::ident(name))
                    .await?;
                return Ok(QueryResult::command("ROLLBACK", None));
            }
            Statement::Rollback {
                savepoint: None, ..
            } => {
                if let Some(txn) = session.txn.take() {
                    let targets: Vec<Target> = txn.touched.iter().copied().collect();
                    if let Err(e) = self.txn.finish_all(&targets, txn.id, false).await {
                        tracing::warn!(error = %e, "rollback failed on a shard; it rolls back on its idle timeout");
                    }
                }
                return Ok(QueryResult {
                    completion: Completion::End("ROLLBACK"),
                    ..QueryResult::command("ROLLBACK", None)
                });
            }
            _ => {}
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

    pub(crate) async fn execute_in_txn(
        &self,
        session: &mut Session,
        stmt: &Statement,
        params: &[Value],
    ) -> Result<QueryResult, CoordError> {
        let rctx = RewriteCtx::new(&session.user, &session.database);
        match stmt {
            Statement::Set(set) => crate::engine::show::set(session, set),
            Statement::ShowVariable { variable } => {
                crate::engine::show::show(self, session, variable).await
            }
            Statement::Reset(r) => {
                match &r.reset {
                    Reset::ALL => session.settings = default_settings(),
                    Reset::ConfigurationParameter(name) => {
                        let n = function_name(name);
                        if let Some(d) = default_settings().get(&n) {
                            session.settings.insert(n, d.clone());
                        }
                    }
                    _ => {}
                }
                Ok(QueryResult::command("RESET", None))
            }
            Statement::Discard { .. } => {
                if session.txn.is_some() {
                    return Err(CoordError::TxnState(
                        "DISCARD ALL cannot run inside a transaction block".into(),
                    ));
                }
                session.settings = default_settings();
                session.prepared.clear();
                Ok(QueryResult::command("DISCARD ALL", None))
            }
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
                let catalog = self.catalog.snapshot();
                let mut names = Vec::new();
                for target in &t.table_names {
                    let name = table_name(&target.name)?;
                    // A table with column groups is emptied through its groups' tables.
                    match catalog.tables.get(&name) {
                        Some(t) if !t.column_groups.is_empty() => {
                            names.extend(t.column_groups.iter().map(|g| g.table.clone()))
                        }
                        _ => names.push(name),
                    }
                }
                for name in names {
                    let planned = self.plan(&Statement::Delete(delete_all(&name)?), &[], &rctx)?;
                    exec::execute(&self.reach(), session, &planned, &[]).await?;
                }
                Ok(QueryResult::command("TRUNCATE TABLE", None))
            }
            Statement::Explain {
                statement, analyze, ..
            } => {
                if *analyze {
                    return Err(CoordError::unsupported(
                        "EXPLAIN ANALYZE is not supported yet",
                    ));
                }
                let catalog = self.catalog.snapshot();
                if let Some(t) = crate::planner::vertical::target(statement, &catalog) {
                    let lines = self.explain_vertical(statement, t, params, &rctx)?;
                    return Ok(QueryResult::text_rows("QUERY PLAN", lines));
                }
                let planned = self.plan(statement, params, &rctx)?;
                let mut lines = explain(&planned, &catalog);
                let mut names = Vec::new();
                let _ = sqlparser::ast::visit_relations(statement.as_ref(), |r| {
                    if let Ok(n) = table_name(r) {
                        names.push(n);
                    }
                    std::ops::ControlFlow::<()>::Continue(())
                });
                lines.extend(crate::planner::explain::explain_storage(
                    &planned, &catalog, &names,
                ));
                if matches!(statement.as_ref(), Statement::Query(_)) {
                    lines.push(self.explain_cache(session, statement, params).await);
                }
                Ok(QueryResult::text_rows("QUERY PLAN", lines))
            }
            Statement::Query(q) if utility_call(q).is_some() => {
                let (name, args) = utility_call(q).unwrap_or_default();
                if matches!(
                    name.as_str(),
                    "tessera_decommission" | "tessera_drain" | "tessera_move_shard"
                ) {
                    let done = crate::replication::placement_call(&self.replication, &name, &args).await?;
                    return Ok(QueryResult {
                        columns: vec![OutputColumn {
                            name,
                            ty: PgType::Text,
                        }],
                        rows: vec![vec![Value::Text(done)]],
                        returns_rows: true,
                        completion: Completion::Select,
                    });
                }
                if name == "tessera_cache_clear" {
                    self.cache.clear();
                    return Ok(QueryResult {
                        columns: vec![OutputColumn {
                            name,
                            ty: PgType::Text,
                        }],
                        rows: vec![vec![Value::Text("cleared".into())]],
                        returns_rows: true,
                        completion: Completion::Select,
                    });
                }
                let table = args
                    .first()
                    .cloned()
                    .ok_or_else(|| CoordError::Syntax(format!("{name} needs a table name")))?;
                let table = table.to_lowercase();
                self.cache.invalidate_table(&table);
                if name == "create_reference_table" {
                    ddl::redistribute(self, &table, Distribution::Reference, None).await?;
                } else {
                    let column = args.get(1).cloned().ok_or_else(|| {
                        CoordError::Syntax(format!("{name} needs a distribution column"))
                    })?;
                    let shards = args
                        .get(2)
                        .map(|s| ddl::shard_count_arg(s))
                        .transpose()?;
                    ddl::redistribute(
                        self,
                        &table,
                        Distribution::Hash {
                            column: column.to_lowercase(),
                        },
                        shards,
                    )
                    .await?;
                }
                Ok(QueryResult {
                    columns: vec![OutputColumn {
                        name,
                        ty: PgType::Text,
                    }],
                    rows: vec![vec![Value::Text(String::new())]],
                    returns_rows: true,
                    completion: Completion::Select,
                })
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
            Statement::Query(_) if self.cache_applies(session) => {
                self.read_through_cache(session, stmt, params, &rctx).await
            }
            Statement::Query(_)
            | Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_) => {
                let filled = match stmt {
                    Statement::Insert(ins) => self.fill_serials(ins).await?.map(Statement::Insert),
                    _ => None,
                };
                let stmt = filled.as_ref().unwrap_or(stmt);
                let planned = self.plan(stmt, params, &rctx)?;
                let returns_rows =
                    matches!(stmt, Statement::Query(_)) || !planned.columns.is_empty();
                let rs = exec::execute(&self.reach(), session, &planned, params).await?;
                Ok(QueryResult {
                    columns: planned.columns,
                    returns_rows,
                    completion: dml_tag(planned.tag, rs.affected),
                    rows: rs.rows,
                })
            }
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

fn delete_all(table: &str) -> Result<Delete, CoordError> {
    let sql = format!("DELETE FROM {}", crate::sql::names::quote(table));
    match sql::parse::parse(&sql)?.pop() {
        Some(Statement::Delete(d)) => Ok(d),
        _ => Err(CoordError::Internal(format!("cannot build {sql}"))),
    }
}

/// Lower-cased identifier list as one dotted name.
pub fn dotted(parts: &[Ident]) -> String {
    parts.iter().map(ident).collect::<Vec<_>>().join(".")
}
