//! Runs plans: fans statements out to shards, keeps multi-shard writes atomic, and merges results.
//!
//! - [`fanout`]: shard tasks run concurrently, bounded by the statement's deadline and cancel;
//!   [`writes`]: a statement's own writes over shards and copies; [`merge`]: k-way merge and
//!   concatenation; [`scratch`]: the coordinator's SQLite for final aggregation and pulled
//!   joins; [`budget`]: a statement's deadline, cancel flag and memory; [`locking`]: a locking
//!   read over several shards releases the rows its LIMIT left out.
//!
//! Transactions: inside `BEGIN` every statement carries the session's transaction
//! id, so each shard keeps one open SQLite transaction for it; `COMMIT` commits
//! them all. An autocommit write that touches several shards gets its own
//! transaction id the same way and is committed only after every shard
//! succeeded; any failure rolls back every shard.

use crate::catalog::store::CatalogStore;
use crate::catalog::Catalog;
use crate::cluster::{Cluster, Observed};
use crate::error::CoordError;
use crate::planner::row_lock::{LockWait, RowLock};
use crate::planner::{Merge, Plan, Planned, Target};
use crate::session::{new_txn_id, Session};
use crate::txn::commit::{copies_unchanged, copy_lost_error, diverged_copies, lost_copies};
use crate::txn::TxnManager;
use futures::future::join_all;
use merge::{concat, merge_sorted};
use scratch::Loaded;
use std::sync::Arc;
use tessera_shared::proto::{self, StatementResult};
use tessera_shared::Value;

pub mod budget;
pub mod fanout;
pub mod locking;
pub mod merge;
pub mod scratch;
pub mod writes;

use fanout::*;
use writes::*;

/// What execution reaches, lent by the engine for one statement: the catalog, the storage
/// nodes, the commit protocol and the coordinator's memory budget.
#[derive(Clone, Copy)]
pub struct Reach<'a> {
    /// The catalog store.
    pub catalog: &'a Arc<dyn CatalogStore>,
    /// Storage node clients.
    pub cluster: &'a Arc<Cluster>,
    /// The commit protocol.
    pub txn: &'a TxnManager,
    /// Memory every statement of this coordinator holds at once.
    pub memory: &'a Arc<budget::SharedMemory>,
}

/// Rows and affected-row count of an executed statement.
#[derive(Debug, Default)]
pub struct ResultSet {
    /// Result rows (RETURNING rows for DML).
    pub rows: Vec<Vec<Value>>,
    /// Rows inserted, updated or deleted (rows returned for queries).
    pub affected: u64,
}

pub(super) fn to_rows(r: StatementResult) -> (Vec<Vec<Value>>, u64) {
    let rows = r
        .rows
        .into_iter()
        .map(|row| row.values.into_iter().map(Value::from).collect())
        .collect();
    (rows, r.rows_affected)
}

/// One shard task's output: rows, affected rows, the data versions it was asked to observe
/// (read before the task ran), and the row changes it recorded when asked to.
pub(super) type TaskOutput = (Vec<Vec<Value>>, u64, Vec<Observed>, Option<Vec<u8>>);

pub(super) type TaskResult = Result<TaskOutput, CoordError>;

/// SQL for one shard, and the data versions to read there before it runs (result cache fill).
#[derive(Clone)]
pub(super) struct Task {
    pub(super) target: Target,
    pub(super) sql: String,
    pub(super) watch: Vec<proto::VersionKey>,
    /// The first copy of a replicated write: record the row changes for the other copies.
    pub(super) capture: bool,
    /// Another copy: apply the first copy's row changes (in order) instead of running `sql`.
    pub(super) changes: Option<Vec<Vec<u8>>>,
    /// Prepare the transaction in the same request, once the work is done.
    pub(super) prepare: bool,
    /// A locking read: the rows it returns are locked (see `planner::row_lock`).
    pub(super) lock: Option<proto::RowLock>,
}

impl Task {
    fn new(target: Target, sql: String, watch: Vec<proto::VersionKey>) -> Task {
        Task {
            target,
            sql,
            watch,
            capture: false,
            changes: None,
            prepare: false,
            lock: None,
        }
    }

    fn locking(mut self, lock: Option<&RowLock>) -> Task {
        self.lock = lock.map(|l| proto::RowLock {
            table: l.table.clone(),
            key_columns: l.key_columns,
            wait: match l.wait {
                LockWait::Block => proto::LockWait::Block,
                LockWait::NoWait => proto::LockWait::Nowait,
                LockWait::Skip => proto::LockWait::Skip,
            } as i32,
            limit: l.limit,
            offset: l.offset,
            shared: l.shared,
            keep: None,
        });
        self
    }
}

/// Executes a planned statement for `session`.
pub async fn execute(
    engine: &Reach<'_>,
    session: &mut Session,
    planned: &Planned,
    params: &[Value],
) -> Result<ResultSet, CoordError> {
    Ok(execute_observed(engine, session, planned, params, None)
        .await?
        .0)
}

/// The data versions a task on `target` should observe for a read of `tables`: each
/// table's own version on that shard (or on the node's reference database).
pub(super) fn watch_keys(
    catalog: &Catalog,
    target: Target,
    tables: &[String],
) -> Vec<proto::VersionKey> {
    let mut keys = Vec::new();
    for name in tables {
        let Ok(table) = catalog.table(name) else {
            continue;
        };
        let scope = if table.distribution == crate::catalog::Distribution::Reference {
            tessera_shared::REFERENCE_SCOPE
        } else if catalog
            .group_of(table)
            .is_ok_and(|g| g.shards.iter().any(|s| s.id == target.shard))
        {
            target.shard
        } else {
            continue;
        };
        keys.push(proto::VersionKey {
            scope,
            table: name.clone(),
        });
    }
    keys
}

/// Executes a planned statement; with `observe` (the tables a read names), also returns the
/// data versions every shard read had before it ran: what the result cache records.
pub async fn execute_observed(
    engine: &Reach<'_>,
    session: &mut Session,
    planned: &Planned,
    params: &[Value],
    observe: Option<&[String]>,
) -> Result<(ResultSet, Vec<Observed>), CoordError> {
    let catalog = engine.catalog.snapshot();
    let budget = crate::exec::budget::Budget::for_session(session, engine.memory);
    let mut seen = Vec::new();
    let watch = |target: Target, tables: &[String]| match observe {
        Some(_) => watch_keys(&catalog, target, tables),
        None => vec![],
    };
    let rs = match &planned.plan {
        Plan::Local { sql } => {
            let rows = scratch::query(vec![], sql.clone(), params.to_vec(), &budget).await?;
            ResultSet {
                affected: rows.len() as u64,
                rows,
            }
        }
        Plan::Distributed {
            tasks,
            merge,
            write,
        } => {
            let targets: Vec<Target> = tasks.iter().map(|t| t.target).collect();
            let tables = observe.unwrap_or(&[]);
            let work: Vec<Task> = tasks
                .iter()
                .map(|t| {
                    Task::new(t.target, t.sql.clone(), watch(t.target, tables))
                        .locking(t.lock.as_ref())
                })
                .collect();
            let work = if !*write && session.txn.is_none() && follower_reads(session) {
                spread_over_copies(&catalog, work)
            } else {
                work
            };
            let (txn_id, implicit) = match &mut session.txn {
                Some(txn) => {
                    txn.touched.extend(targets.iter().copied());
                    if *write {
                        txn.written.extend(targets.iter().copied());
                    }
                    (txn.id, false)
                }
                // Several parts, or one part of a replicated table (a copy may be added while
                // it waits for the lock: the commit check must see it).
                None if *write
                    && (tasks.len() > 1
                        || tasks
                            .iter()
                            .any(|t| replicated_shard(&catalog, t.target.shard))) =>
                {
                    (new_txn_id(), true)
                }
                None => (0, false),
            };
            let primaries = match merge {
                Merge::Replicated { primaries, .. } => *primaries,
                _ => work.len(),
            };
            let results = if implicit {
                implicit_write(engine, work, primaries, params, txn_id, session).await?
            } else if primaries < work.len() {
                txn_write(engine, &catalog, work, primaries, params, session).await?
            } else if !*write && txn_id == 0 {
                let results =
                    run_tasks(engine, &catalog, work.clone(), params, txn_id, session).await;
                reads_elsewhere(engine, &catalog, &work, results, params, txn_id, session).await
            } else {
                run_tasks(engine, &catalog, work, params, txn_id, session).await
            };
            let mut outputs = Vec::with_capacity(results.len());
            let mut failure = None;
            for r in results {
                match r {
                    Ok((rows, affected, observed, _)) => {
                        if let Err(e) = budget.charge_rows(&rows) {
                            failure.get_or_insert(e);
                        }
                        seen.extend(observed);
                        outputs.push((rows, affected));
                    }
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = failure {
                return Err(e);
            }
            if locking::releases_extra(tasks, merge, txn_id) {
                locking::merge_releasing(
                    engine, &catalog, merge, tasks, outputs, params, &budget, txn_id, session,
                )
                .await?
            } else {
                merge_results(merge, outputs, params, &budget).await?
            }
        }
        Plan::Pull { tables, sql, .. } => {
            let txn_id = match &mut session.txn {
                Some(txn) => {
                    for t in tables {
                        txn.touched.extend(t.targets.iter().copied());
                    }
                    txn.id
                }
                None => 0,
            };
            let mut loaded = Vec::new();
            for t in tables {
                let cols: Vec<String> = t
                    .columns
                    .iter()
                    .map(|c| crate::sql::names::quote(&c.name))
                    .collect();
                let mut sql = format!(
                    "SELECT {} FROM {}",
                    cols.join(", "),
                    crate::sql::names::quote(&t.name)
                );
                if let Some(alias) = &t.alias {
                    sql.push_str(&format!(" AS {}", crate::sql::names::quote(alias)));
                }
                if let Some(filter) = &t.filter {
                    sql.push_str(&format!(" WHERE {filter}"));
                }
                let one = [t.name.clone()];
                let work = t
                    .targets
                    .iter()
                    .map(|x| Task::new(*x, sql.clone(), watch(*x, &one)))
                    .collect();
                let mut rows = Vec::new();
                for r in run_tasks(engine, &catalog, work, params, txn_id, session).await {
                    let (part, _, observed, _) = r?;
                    budget.charge_rows(&part)?;
                    rows.extend(part);
                    seen.extend(observed);
                }
                loaded.push(Loaded::table(&t.name, &t.columns, rows));
            }
            let rows = scratch::query(loaded, sql.clone(), params.to_vec(), &budget).await?;
            ResultSet {
                affected: rows.len() as u64,
                rows,
            }
        }
    };
    Ok((rs, seen))
}

pub(super) async fn merge_results(
    merge: &Merge,
    outputs: Vec<(Vec<Vec<Value>>, u64)>,
    params: &[Value],
    budget: &std::sync::Arc<crate::exec::budget::Budget>,
) -> Result<ResultSet, CoordError> {
    if let Merge::Replicated { primaries, inner } = merge {
        let mut outputs = outputs;
        outputs.truncate(*primaries);
        return Box::pin(merge_results(inner, outputs, params, budget)).await;
    }
    let affected: u64 = outputs.iter().map(|o| o.1).sum();
    let mut outputs = outputs;
    Ok(match merge {
        Merge::Single | Merge::FirstOnly | Merge::Replicated { .. } => {
            let (rows, affected) = if outputs.is_empty() {
                (vec![], 0)
            } else {
                outputs.swap_remove(0)
            };
            ResultSet { rows, affected }
        }
        Merge::Concat { limit, offset } => {
            let rows = concat(outputs.into_iter().map(|o| o.0).collect(), *limit, *offset);
            ResultSet { rows, affected }
        }
        Merge::Sort {
            keys,
            limit,
            offset,
            visible,
        } => {
            let rows = merge_sorted(
                outputs.into_iter().map(|o| o.0).collect(),
                keys,
                *limit,
                *offset,
                *visible,
            );
            ResultSet {
                affected: rows.len() as u64,
                rows,
            }
        }
        Merge::Final { sql, width } => {
            let partials: Vec<Vec<Value>> = outputs.into_iter().flat_map(|o| o.0).collect();
            let rows = scratch::query(
                vec![Loaded::partials(*width, partials)],
                sql.clone(),
                params.to_vec(),
                budget,
            )
            .await?;
            ResultSet {
                affected: rows.len() as u64,
                rows,
            }
        }
    })
}
