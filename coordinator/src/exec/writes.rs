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
///
/// With `prepare`, every target is also prepared, in as few round trips as there are: the
/// other copies get their first copy's row changes and prepare in one request, while the
/// first copies prepare beside them. Returns the tasks' results (their prepares' failures
/// included) and the first copies' prepares (empty when not asked or not reached).
#[allow(clippy::too_many_arguments)]
pub(super) async fn ordered_tasks(
    engine: &Reach<'_>,
    catalog: &Catalog,
    work: Vec<Task>,
    primaries: usize,
    params: &[Value],
    txn_id: u64,
    session: &Session,
    prepare: bool,
) -> (Vec<TaskResult>, Vec<(Target, Result<(), CoordError>)>) {
    let mut order: Vec<(usize, Task)> = work.into_iter().enumerate().collect();
    order.sort_by_key(|(i, t)| (*i >= primaries, t.target.shard, t.target.node));
    let copies = order.split_off(order.iter().take_while(|(i, _)| *i < primaries).count());
    let (index, mut copies): (Vec<usize>, Vec<Task>) = copies.into_iter().unzip();
    let (first_index, mut firsts): (Vec<usize>, Vec<Task>) = order.into_iter().unzip();
    capture_for(&mut firsts, &copies);
    let mut results: Vec<Option<TaskResult>> =
        (0..firsts.len() + copies.len()).map(|_| None).collect();
    let mut failed = false;
    let mut first_prepares = Vec::new();
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
        copies.iter_mut().for_each(|c| c.prepare = prepare);
        let first_targets: Vec<Target> = match prepare {
            true => firsts.iter().map(|f| f.target).collect(),
            false => vec![],
        };
        let (mut out, prepared) = tokio::join!(
            run_tasks(engine, catalog, copies, params, txn_id, session),
            engine.txn.prepare_all(catalog, &first_targets, txn_id)
        );
        first_prepares = first_targets.into_iter().zip(prepared).collect();
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
    (results.into_iter().flatten().collect(), first_prepares)
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
        // Several targets prepare before the decision (opened with a short idle limit, they
        // are told the decision is coming, and none rolls back on that limit while a
        // restarted coordinator could still commit it); recorded first, so a restarted
        // coordinator rolls back one it never decided.
        let prepare = targets.len() > 1;
        if prepare {
            engine.txn.log.prepare(txn_id, &targets)?;
        }
        let (results, first_prepares) = ordered_tasks(
            engine,
            &catalog,
            work.clone(),
            primaries,
            params,
            txn_id,
            session,
            prepare,
        )
        .await;
        let (prepared_targets, prepared): (Vec<Target>, Vec<Result<(), CoordError>>) =
            first_prepares.into_iter().unzip();
        // The first real failure (parts not run after it say only that). A copy finds that
        // it disagrees when it checks the row changes it kept, at its prepare.
        let mut failure = results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .chain(prepared.iter().filter_map(|r| r.as_ref().err()))
            .min_by_key(|e| matches!(e, CoordError::Internal(_)))
            .cloned();
        let mut lost = lost_copies(&catalog, &targets, &results);
        lost.extend(lost_copies(&catalog, &prepared_targets, &prepared));
        let mut diverged = diverged_copies(&targets, &results);
        diverged.extend(diverged_copies(&prepared_targets, &prepared));
        if prepare && failure.is_none() && prepared_targets.is_empty() {
            // No other copies: the first copies prepare once they all ran.
            let prepared = engine.txn.prepare_all(&catalog, &targets, txn_id).await;
            failure = prepared.iter().find_map(|r| r.as_ref().err()).cloned();
            lost.extend(lost_copies(&catalog, &targets, &prepared));
            diverged.extend(diverged_copies(&targets, &prepared));
        }
        lost.sort_by_key(|t| (t.shard, t.node));
        lost.dedup();
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

/// A write inside an explicit transaction: each shard's first copy before its others, so two
/// writers of one shard queue on its first copy. The other copies' row changes wait for the
/// commit ([`crate::txn::copies`]) unless they must go now: too many of them, a copy that
/// runs the statement itself (its first copy recorded no changes: a document table), or a
/// statement's own transaction. A lost copy leaves its shard (when enough remain) so the
/// retry goes on without it; this transaction has written it and fails with `40001`.
pub(super) async fn txn_write(
    engine: &Reach<'_>,
    catalog: &Catalog,
    mut work: Vec<Task>,
    primaries: usize,
    params: &[Value],
    session: &mut Session,
) -> Result<Vec<TaskResult>, CoordError> {
    let txn_id = session.txn.as_ref().map_or(0, |t| t.id);
    let mut copies = work.split_off(primaries);
    capture_for(&mut work, &copies);
    let targets: Vec<Target> = work.iter().chain(&copies).map(|t| t.target).collect();
    let mut results = run_tasks(engine, catalog, work.clone(), params, txn_id, session).await;
    if results.iter().all(|r| r.is_ok()) {
        hand_changes(&mut copies, &work, &results);
        let mut waiting = session.txn.as_mut().and_then(|t| t.waiting.as_mut());
        let mut out: Vec<Option<TaskResult>> = Vec::with_capacity(copies.len());
        let (mut now, mut earlier) = (Vec::new(), std::collections::BTreeMap::new());
        for mut c in copies {
            match (&mut waiting, c.changes.take()) {
                (Some(w), Some(mut changes)) if changes.len() == 1 => {
                    let kept = changes.pop().unwrap_or_default();
                    match w.keep(c.target, kept) {
                        None => {
                            out.push(Some(Ok((vec![], 0, vec![], None))));
                            continue;
                        }
                        Some(all) => c.changes = Some(all),
                    }
                }
                (Some(w), changes) => {
                    let before = w.take(c.target);
                    if !before.is_empty() {
                        earlier.insert(c.target, before);
                    }
                    c.changes = changes;
                }
                (None, changes) => c.changes = changes,
            }
            out.push(None);
            now.push(c);
        }
        // What waited for a copy that runs this statement itself reaches it first.
        let sent = engine
            .txn
            .send_changes(catalog, txn_id, earlier, false)
            .await;
        let failed: Vec<(Target, CoordError)> = sent
            .into_iter()
            .filter_map(|(t, r)| r.err().map(|e| (t, e)))
            .collect();
        let (blocked, now): (Vec<Task>, Vec<Task>) = now
            .into_iter()
            .partition(|c| failed.iter().any(|(t, _)| *t == c.target));
        let n = now.len();
        let mut ran = run_tasks(engine, catalog, now, params, txn_id, session).await;
        // A cancel or timeout answers with one error for all.
        if ran.len() != n {
            let e = ran
                .pop()
                .and_then(|r| r.err())
                .unwrap_or_else(|| CoordError::Internal("task gave no result".into()));
            ran = (0..n).map(|_| Err(e.clone())).collect();
        }
        let mut ran = ran.into_iter();
        let mut blocked = blocked.into_iter().map(|c| {
            let e = failed.iter().find(|(t, _)| *t == c.target).map(|(_, e)| e);
            Err(e
                .cloned()
                .unwrap_or_else(|| CoordError::Internal("not run".into())))
        });
        // `out` holds a result for each copy whose changes wait; the others take theirs in
        // order, those whose earlier changes could not be sent first.
        let mut copy_targets = targets[work.len()..].iter();
        for slot in &mut out {
            let t = copy_targets.next();
            if slot.is_none() {
                let is_blocked = t.is_some_and(|t| failed.iter().any(|(f, _)| f == t));
                *slot = match is_blocked {
                    true => blocked.next(),
                    false => ran.next(),
                };
            }
        }
        results.extend(out.into_iter().flatten());
    }
    let lost = lost_copies(catalog, &targets, &results);
    let diverged = diverged_copies(&targets, &results);
    if !lost.is_empty() && engine.txn.drop_lost_copies(&lost, &diverged).await.is_ok() {
        return Err(copy_lost_error(&lost));
    }
    Ok(results)
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
            .map(|changes| vec![changes.to_vec()]);
    }
}
