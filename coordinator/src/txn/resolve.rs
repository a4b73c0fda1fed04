//! Decisions a coordinator could not deliver (a storage node down or restarting): retried in
//! the background until every copy has heard them. A node that restarts with a transaction in
//! doubt (prepared, its decision not yet heard; `storage/src/in_doubt.rs`) refuses writes to
//! that shard until then, so it hears the decision within a second of answering again, not at
//! the coordinator's next start.

use super::TxnManager;
use crate::error::CoordError;
use crate::planner::Target;
use std::collections::BTreeMap;
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

/// How often undelivered decisions are sent again.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// How long a decision is retried: beyond it, the storage node has rolled the transaction back
/// on its idle limit (`txn_idle_timeout_secs`, 300 s by default) and nothing is left to decide.
const GIVE_UP_AFTER: Duration = Duration::from_secs(900);

/// A decision not yet delivered to some of its targets.
struct Undelivered {
    commit: bool,
    targets: Vec<Target>,
    since: Instant,
}

/// The decisions waiting to be delivered, by transaction.
#[derive(Default)]
pub struct Undeliverable(Mutex<BTreeMap<u64, Undelivered>>);

impl Undeliverable {
    /// Notes that `targets` did not hear `txn`'s decision.
    pub fn note(&self, txn: u64, commit: bool, targets: Vec<Target>) {
        if targets.is_empty() {
            return;
        }
        if let Ok(mut map) = self.0.lock() {
            let e = map.entry(txn).or_insert_with(|| Undelivered {
                commit,
                targets: vec![],
                since: Instant::now(),
            });
            for t in targets {
                if !e.targets.contains(&t) {
                    e.targets.push(t);
                }
            }
        }
    }

    /// How many transactions wait for a decision to be delivered.
    pub fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether none does.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take(&self) -> Vec<(u64, Undelivered)> {
        self.0
            .lock()
            .map(|mut m| std::mem::take(&mut *m).into_iter().collect())
            .unwrap_or_default()
    }
}

/// Whether a target that failed to hear a decision needs to hear it again: not when it answered
/// that it holds no such transaction (it committed or rolled back already, or never prepared).
pub fn needs_retry(e: &CoordError) -> bool {
    !matches!(e, CoordError::Storage { sqlstate, .. } if sqlstate == "25P02")
}

impl TxnManager {
    /// Sends every undelivered decision once more; a commit heard by all its targets is done.
    pub async fn deliver_decisions(&self) {
        for (txn, mut u) in self.undelivered.take() {
            let catalog = self.catalog.snapshot();
            // A copy that left its shard meanwhile is nobody's to read: nothing to deliver.
            u.targets.retain(|t| {
                catalog
                    .shard(t.shard)
                    .is_some_and(|(_, s)| s.write_nodes().any(|n| n == t.node))
            });
            let mut left = Vec::new();
            for t in u.targets {
                let r = match catalog.node(t.node) {
                    Ok(node) => self.cluster.finish_txn(node, t.shard, txn, u.commit).await,
                    Err(e) => Err(e),
                };
                match r {
                    Ok(()) => tracing::info!(
                        txn,
                        shard = t.shard,
                        commit = u.commit,
                        "a shard heard a decision it had missed"
                    ),
                    Err(e) if needs_retry(&e) => left.push(t),
                    Err(_) => {}
                }
            }
            if left.is_empty() {
                if u.commit {
                    if let Err(e) = self.log.done(txn) {
                        tracing::warn!(txn, error = %e, "could not record a finished commit");
                    }
                }
            } else if u.since.elapsed() > GIVE_UP_AFTER {
                tracing::error!(txn, commit = u.commit, targets = ?left, "gave up delivering a decision; the shards decided on their idle limit");
            } else {
                u.targets = left;
                if let Ok(mut map) = self.undelivered.0.lock() {
                    map.entry(txn).or_insert(u);
                }
            }
        }
    }
}

/// Delivers undelivered decisions every [`RETRY_EVERY`] until the manager is dropped.
pub fn spawn(txn: Weak<TxnManager>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RETRY_EVERY).await;
            let Some(txn) = txn.upgrade() else {
                return;
            };
            if !txn.undelivered.is_empty() {
                txn.deliver_decisions().await;
            }
        }
    })
}
