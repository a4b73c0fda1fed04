//! Runs plans: fans statements out to shards, keeps multi-shard writes atomic, and merges results.
//!
//! Transactions: inside `BEGIN` every statement carries the session's transaction
//! id, so each shard keeps one open SQLite transaction for it; `COMMIT` commits
//! them all. An autocommit write that touches several shards gets its own
//! transaction id the same way and is committed only after every shard
//! succeeded; any failure rolls back every shard.

use crate::catalog::Catalog;
use crate::engine::Engine;
use crate::error::CoordError;
use crate::merge::{concat, merge_sorted};
use crate::planner::{Merge, Plan, Planned, Target};
use crate::scratch::{self, Loaded};
use crate::session::{new_txn_id, Session};
use futures::future::join_all;
use tessera_shared::proto::{self, StatementResult};
use tessera_shared::Value;

/// Rows and affected-row count of an executed statement.
#[derive(Debug, Default)]
pub struct ResultSet {
    /// Result rows (RETURNING rows for DML).
    pub rows: Vec<Vec<Value>>,
    /// Rows inserted, updated or deleted (rows returned for queries).
    pub affected: u64,
}

fn to_rows(r: StatementResult) -> (Vec<Vec<Value>>, u64) {
    let rows = r
        .rows
        .into_iter()
        .map(|row| row.values.into_iter().map(Value::from).collect())
        .collect();
    (rows, r.rows_affected)
}

/// One shard task's output: rows, affected rows, and the data versions it was asked to
/// observe, read before the task ran.
type TaskOutput = (Vec<Vec<Value>>, u64, Vec<Observed>);
type TaskResult = Result<TaskOutput, CoordError>;

/// SQL for one shard, and the data versions to read there before it runs (result cache fill).
#[derive(Clone)]
struct Task {
    target: Target,
    sql: String,
    watch: Vec<proto::VersionKey>,
}

/// A data version a result depended on: `key` on `node` was at `version` (node `incarnation`)
/// before the result was read.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Node id.
    pub node: u64,
    /// Scope (shard or reference database) and table.
    pub key: proto::VersionKey,
    /// The node's incarnation.
    pub incarnation: u64,
    /// The version.
    pub version: u64,
}

/// Runs shard tasks concurrently, until they finish, the session asks to cancel, or its
/// statement deadline passes. Stopping drops the RPCs, which interrupts the shards' statements.
async fn run_tasks(
    engine: &Engine,
    catalog: &Catalog,
    tasks: Vec<Task>,
    params: &[Value],
    txn_id: u64,
    session: &Session,
) -> Vec<TaskResult> {
    let interrupt = session.interrupt.clone();
    let deadline = session.deadline;
    // A client's transaction may idle as long as the node allows; a statement's own is short.
    let idle_ms = match session.txn {
        Some(_) => 0,
        None => crate::cluster::SHORT_TXN_IDLE_MS,
    };
    let work = run_tasks_to_end(engine, catalog, tasks, params, txn_id, idle_ms);
    let timeout = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = work => r,
        _ = interrupt.requested() => vec![Err(CoordError::Canceled("user request"))],
        _ = timeout => vec![Err(CoordError::Canceled("statement timeout"))],
    }
}

async fn run_tasks_to_end(
    engine: &Engine,
    catalog: &Catalog,
    tasks: Vec<Task>,
    params: &[Value],
    txn_id: u64,
    idle_ms: u32,
) -> Vec<TaskResult> {
    let proto_params: Vec<proto::Value> = params.iter().cloned().map(proto::Value::from).collect();
    let futs = tasks.into_iter().map(|task| {
        let params = proto_params.clone();
        async move {
            let t = task.target;
            let node = catalog.node(t.node)?;
            let st = proto::Statement {
                sql: task.sql,
                params,
                returns_rows: true,
            };
            let (mut results, incarnation, versions) = engine
                .cluster
                .execute_versioned(node, t.shard, txn_id, vec![st], task.watch.clone(), idle_ms)
                .await?;
            let first = results
                .pop()
                .ok_or_else(|| CoordError::Internal("storage returned no result".into()))?;
            let (rows, affected) = to_rows(first);
            let seen = task
                .watch
                .into_iter()
                .zip(versions)
                .map(|(key, version)| Observed {
                    node: t.node,
                    key,
                    incarnation,
                    version,
                })
                .collect();
            Ok((rows, affected, seen))
        }
    });
    join_all(futs).await
}

/// A statement's own multi-shard write: the shards' first copies one at a time in one global
/// order (by shard id), then every other copy at once. Every such write then takes first-copy
/// locks in the same order and none waits for another in a cycle (run in parallel, 8 clients
/// of 100-row inserts spent most of their time breaking lock cycles: 1 100 retries per 3 200
/// statements). The other copies need no order: whoever writes a copy holds its shard's first
/// copy already. Stops at the first failure of a first copy: the caller rolls back.
async fn ordered_tasks(
    engine: &Engine,
    catalog: &Catalog,
    work: Vec<Task>,
    primaries: usize,
    params: &[Value],
    txn_id: u64,
    session: &Session,
) -> Vec<TaskResult> {
    let mut order: Vec<(usize, Task)> = work.into_iter().enumerate().collect();
    order.sort_by_key(|(i, t)| (*i >= primaries, t.target.shard, t.target.node));
    let copies = order.split_off(order.iter().take_while(|(i, _)| *i < primaries).count());
    let mut results: Vec<Option<TaskResult>> =
        (0..order.len() + copies.len()).map(|_| None).collect();
    let mut failed = false;
    for (i, task) in order {
        if failed {
            results[i] = Some(Err(CoordError::Internal(
                "not run: an earlier part failed".into(),
            )));
            continue;
        }
        let r = run_tasks(engine, catalog, vec![task], params, txn_id, session)
            .await
            .pop()
            .unwrap_or_else(|| Err(CoordError::Internal("task gave no result".into())));
        failed = r.is_err();
        results[i] = Some(r);
    }
    if failed {
        for (i, _) in copies {
            results[i] = Some(Err(CoordError::Internal(
                "not run: an earlier part failed".into(),
            )));
        }
    } else {
        let (index, tasks): (Vec<usize>, Vec<Task>) = copies.into_iter().unzip();
        let n = tasks.len();
        let mut out = run_tasks(engine, catalog, tasks, params, txn_id, session).await;
        // A cancel or timeout answers with one error for all.
        if out.len() != n {
            let e = out
                .pop()
                .and_then(|r| r.err())
                .unwrap_or_else(|| CoordError::Internal("task gave no result".into()));
            out = (0..n).map(|_| Err(e.clone())).collect();
        }
        for (i, r) in index.into_iter().zip(out) {
            results[i] = Some(r);
        }
    }
    results.into_iter().flatten().collect()
}

/// A statement's own write transaction (outside `BEGIN`): runs its tasks (see
/// [`ordered_tasks`]), checks the shards' copies did not change, and commits.
///
/// A copy whose node cannot be reached does not fail the write while a majority of its
/// shard's copies remain: it leaves the shard ([`CatalogCommand::DropCopy`], after which no
/// read uses it and repair replaces it), and the write runs again on the copies that remain,
/// the next copy standing in for a lost first one. Writes to a replicated shard therefore go
/// on at once when a node dies, instead of waiting for failure detection to declare it dead.
async fn implicit_write(
    engine: &Engine,
    mut work: Vec<Task>,
    primaries: usize,
    params: &[Value],
    mut txn_id: u64,
    session: &Session,
) -> Result<Vec<TaskResult>, CoordError> {
    let mut attempts = 0;
    loop {
        let catalog = engine.catalog.snapshot();
        let targets: Vec<Target> = work.iter().map(|t| t.target).collect();
        let results = ordered_tasks(
            engine,
            &catalog,
            work.clone(),
            primaries,
            params,
            txn_id,
            session,
        )
        .await;
        // The first real failure (parts not run after it say only that).
        let mut failure = results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .min_by_key(|e| matches!(e, CoordError::Internal(_)))
            .cloned();
        let mut lost = lost_copies(&catalog, &targets, &results);
        if failure.is_none() && targets.len() > 1 {
            // Opened with a short idle limit: told the decision is coming, none rolls back on
            // that limit while a restarted coordinator could still commit it.
            engine.txnlog.prepare(txn_id, &targets)?;
            let prepared = prepare_all(engine, &catalog, &targets, txn_id).await;
            failure = prepared.iter().find_map(|r| r.as_ref().err()).cloned();
            lost = lost_copies(&catalog, &targets, &prepared);
        }
        let Some(e) = failure else {
            if let Err(e) = copies_unchanged(&engine.catalog.snapshot(), &targets) {
                let _ = finish_all(engine, &targets, txn_id, false).await;
                return Err(e);
            }
            commit_all(engine, &targets, txn_id).await?;
            return Ok(results);
        };
        if let Err(rb) = finish_all(engine, &targets, txn_id, false).await {
            tracing::debug!(error = %rb, "rollback after a failed write failed; shards roll back on their idle timeout");
        }
        attempts += 1;
        if lost.is_empty() || attempts > 2 || drop_lost_copies(engine, &lost).await.is_err() {
            return Err(e);
        }
        work = without_copies(work, primaries, &lost)?;
        // A fresh transaction: a copy whose rollback did not arrive must not find the first
        // attempt's work open under the same id and apply the statement twice.
        txn_id = new_txn_id();
    }
}

/// A read whose copy's node cannot be reached runs again on the shard's other copies, in
/// order, so reads go on at once when a node dies (before failure detection notices).
async fn reads_elsewhere(
    engine: &Engine,
    catalog: &Catalog,
    work: &[Task],
    mut results: Vec<TaskResult>,
    params: &[Value],
    txn_id: u64,
    session: &Session,
) -> Vec<TaskResult> {
    if results.len() != work.len() {
        return results;
    }
    for (i, task) in work.iter().enumerate() {
        let mut tried = vec![task.target.node];
        while matches!(results[i], Err(CoordError::NodeUnavailable { .. })) {
            let Some((_, s)) = catalog.shard(task.target.shard) else {
                break;
            };
            let Some(next) = s.placements.iter().copied().find(|n| !tried.contains(n)) else {
                break;
            };
            tried.push(next);
            let mut again = task.clone();
            again.target.node = next;
            results[i] = run_tasks(engine, catalog, vec![again], params, txn_id, session)
                .await
                .pop()
                .unwrap_or_else(|| Err(CoordError::Internal("task gave no result".into())));
        }
    }
    results
}

/// Whether the session reads any copy (`SET read_consistency = 'follower'`).
fn follower_reads(session: &Session) -> bool {
    session
        .settings
        .get("read_consistency")
        .is_some_and(|v| v.eq_ignore_ascii_case("follower"))
}

/// `read_consistency = 'follower'`: each shard read goes to one of its live copies in turn,
/// not always the first. Copies commit a write one after another, so such a read may miss a
/// write another session has just seen acknowledged (never one of its own, which returned only
/// after every copy committed); in exchange reads spread over every copy's node.
fn spread_over_copies(catalog: &Catalog, work: Vec<Task>) -> Vec<Task> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    work.into_iter()
        .map(|mut t| {
            if let Some((g, s)) = catalog.shard(t.target.shard) {
                let live: Vec<u64> = s
                    .placements
                    .iter()
                    .copied()
                    .filter(|n| {
                        catalog
                            .nodes
                            .get(n)
                            .is_some_and(|n| n.liveness == crate::catalog::Liveness::Alive)
                    })
                    .collect();
                if g.kind != crate::catalog::GroupKind::Reference && !live.is_empty() {
                    let i = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    t.target.node = live[i % live.len()];
                }
            }
            t
        })
        .collect()
}

/// Marks the transaction prepared on every target (see [`Cluster::prepare_txn`]).
///
/// [`Cluster::prepare_txn`]: crate::cluster::Cluster::prepare_txn
async fn prepare_all(
    engine: &Engine,
    catalog: &Catalog,
    targets: &[Target],
    txn_id: u64,
) -> Vec<Result<(), CoordError>> {
    join_all(targets.iter().map(|t| async move {
        engine
            .cluster
            .prepare_txn(catalog.node(t.node)?, t.shard, txn_id)
            .await
    }))
    .await
}

/// The targets whose node could not be reached, on shards with more than one copy.
fn lost_copies<T>(
    catalog: &Catalog,
    targets: &[Target],
    results: &[Result<T, CoordError>],
) -> Vec<Target> {
    let mut lost: Vec<Target> = targets
        .iter()
        .zip(results)
        .filter(|(_, r)| matches!(r, Err(CoordError::NodeUnavailable { .. })))
        .map(|(t, _)| *t)
        .filter(|t| {
            catalog
                .shard(t.shard)
                .is_some_and(|(_, s)| s.write_nodes().nth(1).is_some())
        })
        .collect();
    lost.sort_by_key(|t| (t.shard, t.node));
    lost.dedup();
    lost
}

/// Takes lost copies out of their shards. Refused (and the write fails as it would have)
/// when a shard would keep fewer than a majority of its declared copies: a coordinator cut
/// off from the others' nodes cannot shrink a shard to the copies it still reaches.
async fn drop_lost_copies(engine: &Engine, lost: &[Target]) -> Result<(), CoordError> {
    for t in lost {
        let catalog = engine.catalog.snapshot();
        let Some((g, _)) = catalog.shard(t.shard) else {
            continue;
        };
        // A node that answers a second call was only briefly out of reach (a reconnect, a
        // slow moment): its copy stays and the write fails as it would have.
        let node = catalog.node(t.node)?;
        let probe = tokio::time::timeout(
            std::time::Duration::from_millis(500),
            engine.cluster.versions(node, vec![]),
        )
        .await;
        if matches!(probe, Ok(Ok(_))) {
            return Err(CoordError::Internal(format!(
                "node {} answers again; its copy of shard {} stays",
                node.name, t.shard
            )));
        }
        let keep = g.replicas / 2 + 1;
        engine
            .catalog
            .propose(crate::catalog::CatalogCommand::DropCopy {
                shard: t.shard,
                node: t.node,
                keep,
            })
            .await?;
        tracing::warn!(
            shard = t.shard,
            node = t.node,
            "unreachable copy left its shard; writes go on with the others"
        );
    }
    Ok(())
}

/// 40001 for a transaction that wrote a copy which then left its shard.
fn copy_lost_error(lost: &[Target]) -> CoordError {
    CoordError::Storage {
        sqlstate: "40001".into(),
        message: format!(
            "could not serialize access: the copy of shard {} on node {} became unreachable and left the shard; retry the transaction",
            lost[0].shard, lost[0].node
        ),
    }
}

/// The tasks without those on `lost` targets; a shard's first copy lost, the shard's next
/// copy takes its task's place among the first copies.
fn without_copies(
    mut work: Vec<Task>,
    primaries: usize,
    lost: &[Target],
) -> Result<Vec<Task>, CoordError> {
    let mut copies = work.split_off(primaries.min(work.len()));
    for p in &mut work {
        if lost.contains(&p.target) {
            let next = copies
                .iter()
                .position(|c| c.target.shard == p.target.shard && !lost.contains(&c.target))
                .ok_or_else(|| CoordError::Internal("a shard lost every copy".into()))?;
            *p = copies.remove(next);
        }
    }
    copies.retain(|c| !lost.contains(&c.target));
    work.extend(copies);
    Ok(work)
}

/// Whether a shard belongs to a table declared with several copies, or has a copy being
/// filled: its writes need the commit check.
fn replicated_shard(catalog: &Catalog, shard: u64) -> bool {
    catalog
        .shard(shard)
        .is_some_and(|(g, s)| g.replicas > 1 || s.write_nodes().nth(1).is_some())
}

/// Refuses to commit writes planned before a copy was added to one of their shards (repair):
/// the new copy would miss them. The copy is added while the repair holds the shard's write
/// lock, so any such write commits after it is visible here. 40001: the client retries, and
/// the retry writes every copy.
pub fn copies_unchanged(catalog: &Catalog, written: &[Target]) -> Result<(), CoordError> {
    let mut by_shard: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
    for t in written {
        by_shard.entry(t.shard).or_default().push(t.node);
    }
    for (id, nodes) in &by_shard {
        let Some((g, s)) = catalog.shard(*id) else {
            continue;
        };
        if g.kind == crate::catalog::GroupKind::Reference {
            continue;
        }
        if let Some(missing) = s.write_nodes().find(|p| !nodes.contains(p)) {
            return Err(CoordError::Storage {
                sqlstate: "40001".into(),
                message: format!(
                    "could not serialize access: shard {id} gained a copy on node {missing} during this write; retry"
                ),
            });
        }
    }
    Ok(())
}

/// Commits `txn_id` on every target. A copy lost at commit (its node unreachable) does not
/// fail the commit if every other target committed and the lost copy leaves its shard (a
/// majority remaining): nobody reads it again. Otherwise as [`finish_all`].
pub async fn commit_all(
    engine: &Engine,
    targets: &[Target],
    txn_id: u64,
) -> Result<(), CoordError> {
    let done = finish_each(engine, targets, txn_id, true).await?;
    let catalog = engine.catalog.snapshot();
    let lost = lost_copies(&catalog, targets, &done);
    let committed_elsewhere = !lost.is_empty()
        && targets
            .iter()
            .zip(&done)
            .all(|(t, r)| r.is_ok() || lost.contains(t));
    if committed_elsewhere && drop_lost_copies(engine, &lost).await.is_ok() {
        engine.txnlog.done(txn_id)?;
        return Ok(());
    }
    if done.iter().all(|r| r.is_ok()) && targets.len() > 1 {
        engine.txnlog.done(txn_id)?;
    }
    fold_finish(targets, done, txn_id, true)
}

/// Commits or rolls back `txn_id` on every target. Returns the first failure; a commit that
/// fails after another shard committed is reported as a partial commit.
pub async fn finish_all(
    engine: &Engine,
    targets: &[Target],
    txn_id: u64,
    commit: bool,
) -> Result<(), CoordError> {
    let results = finish_each(engine, targets, txn_id, commit).await?;
    if commit && results.iter().all(|r| r.is_ok()) && targets.len() > 1 {
        engine.txnlog.done(txn_id)?;
    }
    fold_finish(targets, results, txn_id, commit)
}

/// Commits or rolls back `txn_id` on every target, after recording a commit decision when
/// there are several; one result per target.
async fn finish_each(
    engine: &Engine,
    targets: &[Target],
    txn_id: u64,
    commit: bool,
) -> Result<Vec<Result<(), CoordError>>, CoordError> {
    let catalog = engine.catalog.snapshot();
    if commit && targets.len() > 1 {
        engine.txnlog.decide(txn_id, targets)?;
        if std::env::var("TESSERA_FAULT").as_deref() == Ok("crash-after-commit-decision") {
            // Test hook: die between the decision and the shards' commits.
            std::process::abort();
        }
    }
    let futs = targets.iter().map(|t| {
        let catalog = catalog.clone();
        async move {
            let node = catalog.node(t.node)?;
            engine
                .cluster
                .finish_txn(node, t.shard, txn_id, commit)
                .await
        }
    });
    Ok(join_all(futs).await)
}

/// The first failure of [`finish_each`]'s results, as the statement's error.
fn fold_finish(
    targets: &[Target],
    results: Vec<Result<(), CoordError>>,
    txn_id: u64,
    commit: bool,
) -> Result<(), CoordError> {
    let ok = results.iter().filter(|r| r.is_ok()).count();
    for (t, r) in targets.iter().zip(results) {
        if let Err(e) = r {
            if commit && ok > 0 {
                tracing::error!(txn_id, shard = t.shard, error = %e, "commit failed after other shards committed");
                return Err(CoordError::PartialCommit {
                    shard: t.shard,
                    reason: e.to_string(),
                });
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Executes a planned statement for `session`.
pub async fn execute(
    engine: &Engine,
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
fn watch_keys(catalog: &Catalog, target: Target, tables: &[String]) -> Vec<proto::VersionKey> {
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
    engine: &Engine,
    session: &mut Session,
    planned: &Planned,
    params: &[Value],
    observe: Option<&[String]>,
) -> Result<(ResultSet, Vec<Observed>), CoordError> {
    let catalog = engine.catalog.snapshot();
    let budget = crate::budget::Budget::for_session(session, &engine.memory);
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
                .map(|t| Task {
                    target: t.target,
                    sql: t.sql.clone(),
                    watch: watch(t.target, tables),
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
                // Inside an explicit transaction: each shard's first copy before its others,
                // so two writers of one shard queue on its first copy.
                let mut work: Vec<Task> = work;
                let copies = work.split_off(primaries);
                let mut results = run_tasks(engine, &catalog, work, params, txn_id, session).await;
                if results.iter().all(|r| r.is_ok()) {
                    results
                        .extend(run_tasks(engine, &catalog, copies, params, txn_id, session).await);
                }
                // A lost copy leaves its shard (when enough remain) so the retry goes on
                // without it; this transaction has written it and fails.
                let lost = lost_copies(&catalog, &targets, &results);
                if !lost.is_empty() && drop_lost_copies(engine, &lost).await.is_ok() {
                    return Err(copy_lost_error(&lost));
                }
                results
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
                    Ok((rows, affected, observed)) => {
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
            merge_results(merge, outputs, params, &budget).await?
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
                    .map(|x| Task {
                        target: *x,
                        sql: sql.clone(),
                        watch: watch(*x, &one),
                    })
                    .collect();
                let mut rows = Vec::new();
                for r in run_tasks(engine, &catalog, work, params, txn_id, session).await {
                    let (part, _, observed) = r?;
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

async fn merge_results(
    merge: &Merge,
    outputs: Vec<(Vec<Vec<Value>>, u64)>,
    params: &[Value],
    budget: &std::sync::Arc<crate::budget::Budget>,
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
