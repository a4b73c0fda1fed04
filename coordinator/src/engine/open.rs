//! Opening an engine: the catalog (metadata Raft group or file), storage nodes, the decision
//! log, and the recovery of commits decided before a crash.

use super::Engine;
use crate::catalog::store::{CatalogStore, FileCatalog};
use crate::catalog::CatalogCommand;
use crate::cluster::Cluster;
use crate::config::CoordinatorConfig;
use crate::error::CoordError;
use std::sync::Arc;

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
        let txn = Arc::new(crate::txn::TxnManager {
            catalog: catalog.clone(),
            cluster: cluster.clone(),
            log: Arc::new(txnlog),
            undelivered: Default::default(),
        });
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
        crate::txn::resolve::spawn(Arc::downgrade(&engine.txn));
        Ok(engine)
    }

    /// Finishes commits decided before a crash: every shard that still holds the transaction commits it.
    async fn recover(&self, pending: Vec<crate::txn::log::Pending>) {
        // Prepared and never decided: roll back now rather than hold locks until the nodes'
        // idle limit.
        for (txn, targets) in self.txn.log.take_undecided() {
            if let Err(e) = self.txn.finish_all(&targets, txn, false).await {
                tracing::warn!(txn, error = %e, "rolling back an undecided transaction failed; retrying in the background");
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
                        tracing::warn!(txn, shard = t.shard, error = %e, "cannot finish a decided commit yet; retrying in the background");
                        self.txn.undelivered.note(txn, true, vec![*t]);
                    }
                }
            }
            if all_ok {
                let _ = self.txn.log.done(txn);
            }
        }
    }
}
