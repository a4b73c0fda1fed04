//! A statement's own write over several shards or copies: first copies in one global order,
//! then the others at once, prepared, decided and committed; a lost copy leaves its shard and
//! the write runs again on the rest.

use super::*;

/// A statement's own multi-shard write: the shards' first copies one at a time in one global
/// order (by shard id), then every other copy at once. Every such write then takes first-copy
/// locks in the same order and none waits for another in a cycle (run in parallel, 8 clients
/// of 100-row inserts spent most of their time breaking lock cycles: 1 100 retries per 3 200
/// statements). The other copies need no order: whoever writes a copy holds its shard's first
/// copy already. Stops at the first failure of a first copy: the caller rolls back.
pub(super) async fn ordered_tasks(
    engine: &Reach<'_>,
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
    let (index, mut copies): (Vec<usize>, Vec<Task>) = copies.into_iter().unzip();
    let (first_index, mut firsts): (Vec<usize>, Vec<Task>) = order.into_iter().unzip();
    capture_for(&mut firsts, &copies);
    let mut results: Vec<Option<TaskResult>> =
        (0..firsts.len() + copies.len()).map(|_| None).collect();
    let mut failed = false;
    for (i, task) in first_index.iter().copied().zip(firsts.clone()) {
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
        for i in index {
            results[i] = Some(Err(CoordError::Internal(
                "not run: an earlier part failed".into(),
            )));
        }
    } else {
        let first_results = first_index.iter().filter_map(|i| results[*i].as_ref());
        hand_changes(&mut copies, &firsts, first_results);
        let n = copies.len();
        let mut out = run_tasks(engine, catalog, copies, params, txn_id, session).await;
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
pub(super) async fn implicit_write(
    engine: &Reach<'_>,
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
        let mut diverged = diverged_copies(&targets, &results);
        if failure.is_none() && targets.len() > 1 {
            // Opened with a short idle limit: told the decision is coming, none rolls back on
            // that limit while a restarted coordinator could still commit it.
            engine.txn.log.prepare(txn_id, &targets)?;
            let prepared = engine.txn.prepare_all(&catalog, &targets, txn_id).await;
            failure = prepared.iter().find_map(|r| r.as_ref().err()).cloned();
            lost = lost_copies(&catalog, &targets, &prepared);
            // A copy finds that it disagrees when it checks the row changes it kept (they
            // apply at commit, not when they arrive).
            diverged.extend(diverged_copies(&targets, &prepared));
        }
        let Some(e) = failure else {
            if let Err(e) = copies_unchanged(&engine.catalog.snapshot(), &targets) {
                let _ = engine.txn.finish_all(&targets, txn_id, false).await;
                return Err(e);
            }
            engine.txn.commit_all(&targets, txn_id).await?;
            return Ok(results);
        };
        if let Err(rb) = engine.txn.finish_all(&targets, txn_id, false).await {
            tracing::debug!(error = %rb, "rollback after a failed write failed; shards roll back on their idle timeout");
        }
        attempts += 1;
        if lost.is_empty()
            || attempts > 2
            || engine.txn.drop_lost_copies(&lost, &diverged).await.is_err()
        {
            return Err(e);
        }
        work = without_copies(work, primaries, &lost)?;
        // A fresh transaction: a copy whose rollback did not arrive must not find the first
        // attempt's work open under the same id and apply the statement twice.
        txn_id = new_txn_id();
    }
}

/// The tasks without those on `lost` targets; a shard's first copy lost, the shard's next
/// copy takes its task's place among the first copies.
pub(super) fn without_copies(
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
pub(super) fn replicated_shard(catalog: &Catalog, shard: u64) -> bool {
    catalog
        .shard(shard)
        .is_some_and(|(g, s)| g.replicas > 1 || s.write_nodes().nth(1).is_some())
}

/// Marks the first copies whose shards have other copies among `copies` to record their row
/// changes, which those copies then apply ([`hand_changes`]).
pub(super) fn capture_for(firsts: &mut [Task], copies: &[Task]) {
    for f in firsts {
        f.capture = copies.iter().any(|c| c.target.shard == f.target.shard);
    }
}

/// Gives each copy the row changes its shard's first copy recorded (`results` are the first
/// copies' results, in order): it applies them instead of running the statement again. A copy
/// whose first copy recorded none (it wrote a document table) runs the statement.
pub(super) fn hand_changes<'a>(
    copies: &mut [Task],
    firsts: &[Task],
    results: impl IntoIterator<Item = &'a TaskResult>,
) {
    let recorded: std::collections::HashMap<u64, &Vec<u8>> = firsts
        .iter()
        .zip(results)
        .filter_map(|(f, r)| match r {
            Ok((_, _, _, Some(changes))) => Some((f.target.shard, changes)),
            _ => None,
        })
        .collect();
    for c in copies {
        c.changes = recorded
            .get(&c.target.shard)
            .map(|changes| changes.to_vec());
    }
}
