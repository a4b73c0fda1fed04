//! Storage-node failure detection: one coordinator (the metadata leader, or the only
//! coordinator) asks every storage node for its data versions every `interval_ms`; a node
//! silent for `suspect_after_ms` becomes *suspect*, for `dead_after_ms` *dead*, and answering
//! again makes it *alive*. Each change is a catalog command, so every coordinator and
//! `tessera admin nodes` agree on it. A dead node leaves every replicated shard that has
//! another copy, so writes to those shards go on without it.

use super::Replication;
use crate::catalog::{CatalogCommand, Liveness};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Failure-detection timing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LivenessConfig {
    /// How often each storage node is asked. Default 500 ms.
    pub interval_ms: u64,
    /// Silence after which a node is suspect. Default 3000 ms.
    pub suspect_after_ms: u64,
    /// Silence after which a node is dead (and leaves its replicated shards, whose writes wait
    /// for this). Default 10000 ms.
    pub dead_after_ms: u64,
    /// Rows a new shard copy (repair, move, drain) takes per batch; the source shard's writes
    /// wait only while one batch is read. Default 500.
    pub repair_batch_rows: usize,
    /// Pause between two batches of a new copy: the throttle that leaves the nodes' disks and
    /// the shard's lock to the workload. Default 10 ms.
    pub repair_pause_ms: u64,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig {
            interval_ms: 500,
            suspect_after_ms: 3000,
            dead_after_ms: 10_000,
            repair_batch_rows: 500,
            repair_pause_ms: 10,
        }
    }
}

impl LivenessConfig {
    /// The state a node silent for `silence` is in.
    pub fn judge(&self, silence: Duration) -> Liveness {
        let ms = silence.as_millis() as u64;
        if ms >= self.dead_after_ms {
            Liveness::Dead
        } else if ms >= self.suspect_after_ms {
            Liveness::Suspect
        } else {
            Liveness::Alive
        }
    }
}

/// Whether this coordinator is the one that detects: the metadata leader, or the only one.
fn detecting(repl: &Replication) -> bool {
    match &repl.meta {
        Some(m) => {
            let metrics = crate::meta::metrics(m.raft());
            metrics.current_leader == Some(metrics.id)
        }
        None => true,
    }
}

/// Runs failure detection until the replication handle is dropped.
pub fn spawn(repl: Weak<Replication>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // When each node last answered, as this coordinator saw it. Silence only counts
        // from the moment this coordinator started detecting (a new leader starts fresh).
        let mut last_ok: HashMap<u64, Instant> = HashMap::new();
        let mut was_detecting = false;
        let mut repairing: Option<tokio::task::JoinHandle<()>> = None;
        // Copies are compared once each time this coordinator starts detecting (verify.rs).
        let mut verify = false;
        loop {
            let Some(repl) = repl.upgrade() else {
                if let Some(r) = repairing.take() {
                    r.abort();
                }
                return;
            };
            let config = repl.config.clone();
            let now_detecting = detecting(&repl);
            if now_detecting && !was_detecting {
                last_ok.clear();
                // A fill's coordinator may have died (with the old leader, or before a
                // restart): no fill outlives a change of detector.
                super::repair::abandon_fills(&repl, true).await;
                verify = true;
            }
            was_detecting = now_detecting;
            // No longer the detector: a repair under way stops (the new leader abandons it).
            if !now_detecting {
                if let Some(r) = repairing.take() {
                    r.abort();
                }
            }
            if now_detecting {
                probe_all(&repl, &config, &mut last_ok).await;
                super::repair::abandon_fills(&repl, false).await;
                // Repair runs beside detection (a throttled copy can take minutes, and
                // detection must go on meanwhile), one copy at a time.
                if repairing.as_ref().is_none_or(|r| r.is_finished()) {
                    let e = Arc::downgrade(&repl);
                    let verify_first = std::mem::take(&mut verify);
                    repairing = Some(tokio::spawn(async move {
                        let Some(repl) = e.upgrade() else {
                            return;
                        };
                        if verify_first {
                            let dropped = super::verify::verify_copies(&repl).await;
                            tracing::info!(
                                dropped = dropped.len(),
                                "compared every replicated shard's copies"
                            );
                            return;
                        }
                        match super::repair::repair_once(&repl).await {
                            Ok(Some(done)) => tracing::warn!(%done, "replica repaired"),
                            Ok(None) => {}
                            Err(e) => tracing::warn!(error = %e, "replica repair failed; retrying"),
                        }
                    }));
                }
            }
            drop(repl);
            tokio::time::sleep(Duration::from_millis(config.interval_ms.max(10))).await;
        }
    })
}

async fn probe_all(
    repl: &Replication,
    config: &LivenessConfig,
    last_ok: &mut HashMap<u64, Instant>,
) {
    let catalog = repl.catalog.snapshot();
    let timeout = Duration::from_millis(config.suspect_after_ms.max(100));
    let probes = catalog.nodes.values().map(|n| async move {
        let ok = tokio::time::timeout(timeout, repl.cluster.versions(n, vec![]))
            .await
            .is_ok_and(|r| r.is_ok());
        (n, ok)
    });
    let results = futures::future::join_all(probes).await;
    let now = Instant::now();
    for (node, ok) in results {
        let seen = last_ok.entry(node.id).or_insert(now);
        if node.liveness == Liveness::Decommissioned {
            continue;
        }
        if ok {
            *seen = now;
        }
        let state = config.judge(now.duration_since(*seen));
        if state != node.liveness {
            match repl
                .catalog
                .propose(CatalogCommand::SetLiveness {
                    name: node.name.clone(),
                    liveness: state,
                })
                .await
            {
                Ok(_) => {
                    tracing::warn!(
                        node = %node.name,
                        from = node.liveness.as_str(),
                        to = state.as_str(),
                        "storage node liveness changed"
                    );
                }
                Err(e) => tracing::debug!(node = %node.name, error = %e, "cannot record liveness"),
            }
        }
        // A dead node leaves every replicated shard that has another copy (retried each
        // round until it is recorded).
        let replicated_here = catalog.groups.values().any(|g| {
            g.kind != crate::catalog::GroupKind::Reference
                && g.shards.iter().any(|s| {
                    (s.placements.len() > 1 && s.placements.contains(&node.id))
                        || s.filling.contains(&node.id)
                })
        });
        if state == Liveness::Dead && replicated_here {
            match repl
                .catalog
                .propose(CatalogCommand::DropPlacements { node: node.id })
                .await
            {
                Ok(_) => {
                    tracing::warn!(node = %node.name, "dead node left its replicated shards; writes go to the other copies")
                }
                Err(e) => {
                    tracing::error!(node = %node.name, error = %e, "cannot take a dead node out of its shards")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_decides_the_state() {
        let c = LivenessConfig {
            interval_ms: 100,
            suspect_after_ms: 1000,
            dead_after_ms: 5000,
            ..LivenessConfig::default()
        };
        assert_eq!(c.judge(Duration::from_millis(999)), Liveness::Alive);
        assert_eq!(c.judge(Duration::from_millis(1000)), Liveness::Suspect);
        assert_eq!(c.judge(Duration::from_millis(4999)), Liveness::Suspect);
        assert_eq!(c.judge(Duration::from_secs(5)), Liveness::Dead);
    }
}
