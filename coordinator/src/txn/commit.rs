//! The commit protocol: a transaction's targets are prepared (copies told the decision is
//! coming), the decision is logged and fsynced, then every target commits; a copy whose node
//! cannot be reached leaves its shard (a majority remaining) instead of failing the commit.

use super::TxnManager;
use crate::catalog::Catalog;
use crate::error::CoordError;
use crate::planner::Target;
use futures::future::join_all;

impl TxnManager {
    /// Marks the transaction prepared on every target (see [`Cluster::prepare_txn`]).
    ///
    /// [`Cluster::prepare_txn`]: crate::cluster::Cluster::prepare_txn
    pub async fn prepare_all(
        &self,
        catalog: &Catalog,
        targets: &[Target],
        txn_id: u64,
    ) -> Vec<Result<(), CoordError>> {
        join_all(targets.iter().map(|t| async move {
            self.cluster
                .prepare_txn(catalog.node(t.node)?, t.shard, txn_id)
                .await
        }))
        .await
    }

    /// Takes lost copies out of their shards. Refused (and the write fails as it would have)
    /// when a shard would keep fewer than a majority of its declared copies: a coordinator cut
    /// off from the others' nodes cannot shrink a shard to the copies it still reaches.
    /// `diverged` are the lost copies whose rows disagree with their first copy: they leave
    /// even though their node answers.
    pub async fn drop_lost_copies(
        &self,
        lost: &[Target],
        diverged: &[Target],
    ) -> Result<(), CoordError> {
        for t in lost {
            let catalog = self.catalog.snapshot();
            let Some((g, _)) = catalog.shard(t.shard) else {
                continue;
            };
            // A node that answers a second call was only briefly out of reach (a reconnect, a
            // slow moment): its copy stays and the write fails as it would have.
            let node = catalog.node(t.node)?;
            let probe = tokio::time::timeout(
                std::time::Duration::from_millis(500),
                self.cluster.versions(node, vec![]),
            )
            .await;
            if !diverged.contains(t) && matches!(probe, Ok(Ok(_))) {
                return Err(CoordError::Internal(format!(
                    "node {} answers again; its copy of shard {} stays",
                    node.name, t.shard
                )));
            }
            let keep = g.replicas / 2 + 1;
            self.catalog
                .propose(crate::catalog::CatalogCommand::DropCopy {
                    shard: t.shard,
                    node: t.node,
                    keep,
                })
                .await?;
            tracing::warn!(
                shard = t.shard,
                node = t.node,
                diverged = diverged.contains(t),
                "a copy unreachable or disagreeing with its first copy left its shard; writes go on with the others"
            );
        }
        Ok(())
    }

    /// Commits `txn_id` on every target. A copy lost at commit (its node unreachable) does not
    /// fail the commit if every other target committed and the lost copy leaves its shard (a
    /// majority remaining): nobody reads it again. Otherwise as [`TxnManager::finish_all`].
    pub async fn commit_all(&self, targets: &[Target], txn_id: u64) -> Result<(), CoordError> {
        let done = match self.finish_each(targets, txn_id, true).await {
            Ok(done) => done,
            // The decision could not be recorded (its disk is full): nothing committed, and
            // nothing may stay prepared holding locks.
            Err(e) => {
                let _ = self.finish_each(targets, txn_id, false).await;
                return Err(e);
            }
        };
        let catalog = self.catalog.snapshot();
        let lost = lost_copies(&catalog, targets, &done);
        let committed_elsewhere = !lost.is_empty()
            && targets
                .iter()
                .zip(&done)
                .all(|(t, r)| r.is_ok() || lost.contains(t));
        if committed_elsewhere && self.drop_lost_copies(&lost, &[]).await.is_ok() {
            self.done(txn_id);
            return Ok(());
        }
        if done.iter().all(|r| r.is_ok()) && targets.len() > 1 {
            self.done(txn_id);
        }
        fold_finish(targets, done, txn_id, true)
    }

    /// Records that every target of `txn_id` committed. Failing to is no failure of the commit:
    /// a decision without `done` only makes the next start send COMMIT again, which a shard
    /// that committed answers as done.
    fn done(&self, txn_id: u64) {
        if let Err(e) = self.log.done(txn_id) {
            tracing::warn!(txn_id, error = %e, "could not record a finished commit; the next start finishes it again");
        }
    }

    /// Commits or rolls back `txn_id` on every target. Returns the first failure; a commit that
    /// fails after another shard committed is reported as a partial commit.
    pub async fn finish_all(
        &self,
        targets: &[Target],
        txn_id: u64,
        commit: bool,
    ) -> Result<(), CoordError> {
        let results = self.finish_each(targets, txn_id, commit).await?;
        if commit && results.iter().all(|r| r.is_ok()) && targets.len() > 1 {
            self.done(txn_id);
        }
        fold_finish(targets, results, txn_id, commit)
    }

    /// Commits or rolls back `txn_id` on every target, after recording a commit decision when
    /// there are several; one result per target.
    pub async fn finish_each(
        &self,
        targets: &[Target],
        txn_id: u64,
        commit: bool,
    ) -> Result<Vec<Result<(), CoordError>>, CoordError> {
        let catalog = self.catalog.snapshot();
        if commit && targets.len() > 1 {
            // The fsync off the async threads (shared with concurrent commits: log.rs).
            let (log, decided) = (self.log.clone(), targets.to_vec());
            tokio::task::spawn_blocking(move || log.decide(txn_id, &decided))
                .await
                .map_err(|e| CoordError::Internal(format!("decision log task: {e}")))??;
            if std::env::var("TESSERA_FAULT").as_deref() == Ok("crash-after-commit-decision") {
                // Test hook: die between the decision and the shards' commits.
                std::process::abort();
            }
        }
        let futs = targets.iter().map(|t| {
            let catalog = catalog.clone();
            async move {
                let node = catalog.node(t.node)?;
                self.cluster.finish_txn(node, t.shard, txn_id, commit).await
            }
        });
        let results = join_all(futs).await;
        // A decision a prepared copy did not hear is sent again until it does (a single
        // target never prepared: nothing of it outlives its connection).
        if targets.len() > 1 {
            let missed = targets
                .iter()
                .zip(&results)
                .filter(|(_, r)| r.as_ref().err().is_some_and(super::resolve::needs_retry))
                .map(|(t, _)| *t)
                .collect();
            self.undelivered.note(txn_id, commit, missed);
        }
        Ok(results)
    }
}

/// Whether `e` says a copy is lost to its shard: its node cannot be reached, or its rows
/// disagree with the shard's first copy (`XX001` from applying the first copy's row changes;
/// such a copy leaves and is rebuilt by repair, never left serving).
pub fn copy_is_lost(e: &CoordError) -> bool {
    matches!(e, CoordError::NodeUnavailable { .. }) || copy_diverged(e)
}

/// Whether `e` says a copy's rows disagree with its shard's first copy (`XX001`).
fn copy_diverged(e: &CoordError) -> bool {
    matches!(e, CoordError::Storage { sqlstate, .. } if sqlstate == "XX001")
}

/// The targets lost to their shards ([`copy_is_lost`]), on shards with more than one copy.
pub fn lost_copies<T>(
    catalog: &Catalog,
    targets: &[Target],
    results: &[Result<T, CoordError>],
) -> Vec<Target> {
    let mut lost: Vec<Target> = targets
        .iter()
        .zip(results)
        .filter(|(_, r)| r.as_ref().err().is_some_and(copy_is_lost))
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

/// The targets whose copy disagreed with its shard's first copy (`XX001`).
pub fn diverged_copies<T>(targets: &[Target], results: &[Result<T, CoordError>]) -> Vec<Target> {
    targets
        .iter()
        .zip(results)
        .filter(|(_, r)| r.as_ref().err().is_some_and(copy_diverged))
        .map(|(t, _)| *t)
        .collect()
}

/// 40001 for a transaction that wrote a copy which then left its shard.
pub fn copy_lost_error(lost: &[Target]) -> CoordError {
    CoordError::Storage {
        sqlstate: "40001".into(),
        message: format!(
            "could not serialize access: the copy of shard {} on node {} became unreachable or disagreed with its first copy, and left the shard; retry the transaction",
            lost[0].shard, lost[0].node
        ),
    }
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

/// The first failure of [`TxnManager::finish_each`]'s results, as the statement's error.
pub fn fold_finish(
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
