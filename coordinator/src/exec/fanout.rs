//! Shard tasks run concurrently until they finish, the session cancels, or the statement
//! deadline passes; reads whose copy is unreachable go to the next copy.

use super::*;
use tessera_storage::work::Work;

/// Runs shard tasks concurrently, until they finish, the session asks to cancel, or its
/// statement deadline passes. Stopping drops the RPCs, which interrupts the shards' statements.
pub(super) async fn run_tasks(
    engine: &Reach<'_>,
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
    let lock_timeout_ms = session
        .settings
        .get("lock_timeout")
        .and_then(|v| crate::session::timeout_ms(v))
        .map_or(0, |ms| ms.round().clamp(0.0, u32::MAX as f64) as u32);
    let work = run_tasks_to_end(
        engine,
        catalog,
        tasks,
        params,
        txn_id,
        (idle_ms, lock_timeout_ms),
    );
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

pub(super) async fn run_tasks_to_end(
    engine: &Reach<'_>,
    catalog: &Catalog,
    tasks: Vec<Task>,
    params: &[Value],
    txn_id: u64,
    (idle_ms, lock_timeout_ms): (u32, u32),
) -> Vec<TaskResult> {
    let proto_params: Vec<proto::Value> = params.iter().cloned().map(proto::Value::from).collect();
    let futs = tasks.into_iter().map(|task| {
        let params = proto_params.clone();
        async move {
            let t = task.target;
            let node = catalog.node(t.node)?;
            let work = match task.changes {
                Some(changes) => Work::Apply {
                    changes,
                    lenient: crate::txn::copies::filling(catalog, t),
                },
                None => Work::Run {
                    statements: vec![proto::Statement {
                        sql: task.sql,
                        params,
                        returns_rows: true,
                        lock: task.lock,
                    }],
                    capture: task.capture,
                },
            };
            let (mut done, incarnation, versions) = engine
                .cluster
                .run_versioned(
                    node,
                    t.shard,
                    txn_id,
                    work,
                    task.watch.clone(),
                    (idle_ms, lock_timeout_ms),
                    task.prepare,
                )
                .await
                .map_err(|e| placement_race(engine, t, e))?;
            let first = done
                .results
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
            Ok((rows, affected, seen, done.changes))
        }
    });
    join_all(futs).await
}

/// A read whose copy's node cannot be reached runs again on the shard's other copies, in
/// order, so reads go on at once when a node dies (before failure detection notices).
pub(super) async fn reads_elsewhere(
    engine: &Reach<'_>,
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
pub(super) fn follower_reads(session: &Session) -> bool {
    session
        .settings
        .get("read_consistency")
        .is_some_and(|v| v.eq_ignore_ascii_case("follower"))
}

/// `read_consistency = 'follower'`: each shard read goes to one of its live copies in turn,
/// not always the first. Copies commit a write one after another, so such a read may miss a
/// write another session has just seen acknowledged (never one of its own, which returned only
/// after every copy committed); in exchange reads spread over every copy's node.
pub(super) fn spread_over_copies(catalog: &Catalog, work: Vec<Task>) -> Vec<Task> {
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

/// A task whose shard is not on `t.node` (yet, or any more) met a placement change while it
/// ran: the node is a copy being filled whose files are not created yet, or the copy left the
/// node (a move finished and the old copy was deleted). That is a retryable conflict (40001),
/// as for writes that meet a fill, not a storage fault.
fn placement_race(engine: &Reach<'_>, t: Target, e: CoordError) -> CoordError {
    let raced = e.sqlstate() == "58030"
        && engine
            .catalog
            .snapshot()
            .shard(t.shard)
            .is_some_and(|(_, s)| {
                s.filling.contains(&t.node) || !s.write_nodes().any(|n| n == t.node)
            });
    if raced {
        CoordError::Storage {
            sqlstate: "40001".into(),
            message: format!(
                "could not serialize access: shard {} changed copies on node {} while this statement ran; retry",
                t.shard, t.node
            ),
        }
    } else {
        e
    }
}
