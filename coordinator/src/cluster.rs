//! Connections to storage nodes: a lazily connected gRPC channel per remote node, or a direct
//! call into an embedded node's shard registry (same process, no network hop). Errors classified.

use crate::catalog::Node;
use crate::error::CoordError;
use dashmap::DashMap;
use std::sync::Arc;
use std::time::Duration;
use tessera_shared::proto::storage_client::StorageClient;
use tessera_shared::proto::*;
use tessera_storage::shards::ShardRegistry;
use tessera_storage::work::{Done, Work};
use tessera_storage::StorageError;
use tonic::transport::{Channel, Endpoint};

/// gRPC metadata key with the SQLSTATE of a failed storage request.
const SQLSTATE_HEADER: &str = "x-sqlstate";

/// Address prefix of storage nodes hosted inside the coordinator process.
pub const EMBEDDED_PREFIX: &str = "embedded:";

/// Clients to every storage node.
#[derive(Default)]
pub struct Cluster {
    /// Remote nodes by id: (address the client was built for, client).
    clients: DashMap<u64, (String, StorageClient<Channel>)>,
    /// Embedded nodes by name.
    embedded: DashMap<String, Arc<ShardRegistry>>,
}

enum Target {
    Remote(StorageClient<Channel>),
    Embedded(Arc<ShardRegistry>),
}

fn storage_error(e: StorageError) -> CoordError {
    CoordError::Storage {
        sqlstate: e.sqlstate().to_string(),
        message: e.to_string(),
    }
}

/// How long a statement's own transaction (or the coordinator's own, such as a copy's lock)
/// may sit idle on a storage node: if the coordinator dies mid-statement, its shard locks are
/// released after this, not after the node's limit for client transactions.
pub const SHORT_TXN_IDLE_MS: u32 = 30_000;

impl Cluster {
    /// Hosts a storage node in this process; the catalog addresses it as `embedded:<name>`.
    pub fn add_embedded(&self, name: &str, registry: Arc<ShardRegistry>) {
        self.embedded.insert(name.to_string(), registry);
    }

    fn target(&self, node: &Node) -> Result<Target, CoordError> {
        if let Some(name) = node.addr.strip_prefix(EMBEDDED_PREFIX) {
            return self
                .embedded
                .get(name)
                .map(|r| Target::Embedded(r.clone()))
                .ok_or_else(|| CoordError::NodeUnavailable {
                    node: node.name.clone(),
                    addr: node.addr.clone(),
                    reason: "embedded node is not hosted by this coordinator".into(),
                });
        }
        if let Some(e) = self.clients.get(&node.id) {
            if e.0 == node.addr {
                return Ok(Target::Remote(e.1.clone()));
            }
        }
        let endpoint = Endpoint::from_shared(format!("http://{}", node.addr))
            .map_err(|e| CoordError::Internal(format!("bad address {}: {e}", node.addr)))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let client = StorageClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(tessera_shared::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(tessera_shared::MAX_MESSAGE_BYTES);
        self.clients
            .insert(node.id, (node.addr.clone(), client.clone()));
        Ok(Target::Remote(client))
    }

    /// Runs statements on one shard of `node`.
    pub async fn execute(
        &self,
        node: &Node,
        shard_id: u64,
        txn_id: u64,
        statements: Vec<Statement>,
    ) -> Result<Vec<StatementResult>, CoordError> {
        Ok(self
            .execute_versioned(
                node,
                shard_id,
                txn_id,
                statements,
                vec![],
                SHORT_TXN_IDLE_MS,
            )
            .await?
            .0)
    }

    /// Runs statements on one shard of `node`, and reports the data versions of `keys` as
    /// they were before the statements ran (node incarnation, one version per key). A
    /// transaction this opens ends after `txn_idle_ms` without work (0: the node's default).
    pub async fn execute_versioned(
        &self,
        node: &Node,
        shard_id: u64,
        txn_id: u64,
        statements: Vec<Statement>,
        keys: Vec<VersionKey>,
        txn_idle_ms: u32,
    ) -> Result<(Vec<StatementResult>, u64, Vec<u64>), CoordError> {
        let work = Work::Run {
            statements,
            capture: false,
        };
        let (done, incarnation, versions) = self
            .run_versioned(node, shard_id, txn_id, work, keys, (txn_idle_ms, 0), false)
            .await?;
        Ok((done.results, incarnation, versions))
    }

    /// [`Cluster::execute_versioned`] for any [`Work`]: statements, their row changes
    /// recorded or not, or row changes to apply. A statement waits for a locked row up to
    /// `lock_timeout_ms` (0: the node's default). With `prepare`, the transaction is then
    /// prepared in the same round trip (see [`Cluster::prepare_txn`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn run_versioned(
        &self,
        node: &Node,
        shard_id: u64,
        txn_id: u64,
        work: Work,
        keys: Vec<VersionKey>,
        (txn_idle_ms, lock_timeout_ms): (u32, u32),
        prepare: bool,
    ) -> Result<(Done, u64, Vec<u64>), CoordError> {
        match self.target(node)? {
            Target::Embedded(r) => {
                let (incarnation, versions) = r.versions(&keys);
                let idle = (txn_idle_ms > 0).then(|| Duration::from_millis(u64::from(txn_idle_ms)));
                let lock_timeout = (lock_timeout_ms > 0)
                    .then(|| Duration::from_millis(u64::from(lock_timeout_ms)));
                let done = r
                    .run_limited(shard_id, txn_id, work, idle, lock_timeout)
                    .await
                    .map_err(storage_error)?;
                if prepare && txn_id != 0 {
                    r.prepare_txn(shard_id, txn_id)
                        .await
                        .map_err(storage_error)?;
                }
                Ok((done, incarnation, versions))
            }
            Target::Remote(mut c) => {
                let (statements, capture_changes, apply_changes, lenient) = match work {
                    Work::Run {
                        statements,
                        capture,
                    } => (statements, capture, None, false),
                    Work::Apply { changes, lenient } => (vec![], false, Some(changes), lenient),
                };
                let apply = apply_changes.is_some();
                let apply_changes = apply_changes.unwrap_or_default();
                let r = c
                    .execute(ExecuteRequest {
                        shard_id,
                        statements,
                        txn_id,
                        versions_of: keys,
                        txn_idle_ms,
                        capture_changes,
                        apply_changes,
                        apply,
                        lenient,
                        lock_timeout_ms,
                        prepare,
                    })
                    .await
                    .map_err(|s| status_error(node, s))?
                    .into_inner();
                let done = Done {
                    results: r.results,
                    changes: r.changes,
                };
                Ok((done, r.incarnation, r.versions))
            }
        }
    }

    /// The current data versions of `keys` on `node` (node incarnation, one version per key).
    pub async fn versions(
        &self,
        node: &Node,
        keys: Vec<VersionKey>,
    ) -> Result<(u64, Vec<u64>), CoordError> {
        match self.target(node)? {
            Target::Embedded(r) => Ok(r.versions(&keys)),
            Target::Remote(mut c) => {
                let r = c
                    .versions(VersionsRequest { keys })
                    .await
                    .map_err(|s| status_error(node, s))?
                    .into_inner();
                Ok((r.incarnation, r.versions))
            }
        }
    }

    /// Commits or rolls back a transaction on one shard.
    pub async fn finish_txn(
        &self,
        node: &Node,
        shard_id: u64,
        txn_id: u64,
        commit: bool,
    ) -> Result<(), CoordError> {
        match self.target(node)? {
            Target::Embedded(r) => r
                .finish_txn(shard_id, txn_id, commit)
                .await
                .map_err(storage_error),
            Target::Remote(mut c) => {
                c.finish_txn(FinishTxnRequest {
                    shard_id,
                    txn_id,
                    commit,
                    prepare: false,
                })
                .await
                .map_err(|s| status_error(node, s))?;
                Ok(())
            }
        }
    }

    /// Marks a transaction prepared on `node` (see the storage `FinishTxn` RPC).
    pub async fn prepare_txn(
        &self,
        node: &Node,
        shard_id: u64,
        txn_id: u64,
    ) -> Result<(), CoordError> {
        match self.target(node)? {
            Target::Embedded(r) => r.prepare_txn(shard_id, txn_id).await.map_err(storage_error),
            Target::Remote(mut c) => {
                c.finish_txn(FinishTxnRequest {
                    shard_id,
                    txn_id,
                    commit: false,
                    prepare: true,
                })
                .await
                .map_err(|s| status_error(node, s))?;
                Ok(())
            }
        }
    }

    /// Creates a shard (idempotent) and runs schema statements on it.
    pub async fn create_shard(
        &self,
        node: &Node,
        shard_id: u64,
        kind: ShardKind,
        schema: Vec<String>,
    ) -> Result<(), CoordError> {
        match self.target(node)? {
            Target::Embedded(r) => r
                .create_shard(shard_id, kind, schema)
                .await
                .map_err(storage_error),
            Target::Remote(mut c) => {
                c.create_shard(CreateShardRequest {
                    shard_id,
                    kind: kind as i32,
                    schema,
                })
                .await
                .map_err(|s| status_error(node, s))?;
                Ok(())
            }
        }
    }

    /// Drops a shard.
    pub async fn drop_shard(&self, node: &Node, shard_id: u64) -> Result<(), CoordError> {
        match self.target(node)? {
            Target::Embedded(r) => r.drop_shard(shard_id).await.map_err(storage_error),
            Target::Remote(mut c) => {
                c.drop_shard(DropShardRequest { shard_id })
                    .await
                    .map_err(|s| status_error(node, s))?;
                Ok(())
            }
        }
    }

    /// Sets or lifts a shard's fence on `node` (see the storage `Fence` RPC).
    pub async fn fence(&self, node: &Node, shard_id: u64, fenced: bool) -> Result<(), CoordError> {
        match self.target(node)? {
            Target::Embedded(r) => r.fence(shard_id, fenced).await.map_err(storage_error),
            Target::Remote(mut c) => {
                c.fence(FenceRequest { shard_id, fenced })
                    .await
                    .map_err(|s| status_error(node, s))?;
                Ok(())
            }
        }
    }

    /// A node's stats.
    pub async fn stats(&self, node: &Node) -> Result<StatsResponse, CoordError> {
        match self.target(node)? {
            Target::Embedded(r) => {
                let shards = r.stats().await.map_err(storage_error)?;
                Ok(StatsResponse {
                    node_name: node.name.clone(),
                    pid: std::process::id(),
                    shards,
                })
            }
            Target::Remote(mut c) => Ok(c
                .stats(StatsRequest {})
                .await
                .map_err(|s| status_error(node, s))?
                .into_inner()),
        }
    }

    /// Stops embedded nodes' workers (open transactions roll back).
    pub fn close_embedded(&self) {
        for r in self.embedded.iter() {
            r.close();
        }
    }
}

fn status_error(node: &Node, s: tonic::Status) -> CoordError {
    if let Some(code) = s
        .metadata()
        .get(SQLSTATE_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        return CoordError::Storage {
            sqlstate: code.to_string(),
            message: s.message().to_string(),
        };
    }
    match s.code() {
        tonic::Code::Unavailable
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Cancelled
        | tonic::Code::Unknown => CoordError::NodeUnavailable {
            node: node.name.clone(),
            addr: node.addr.clone(),
            reason: s.message().to_string(),
        },
        _ => CoordError::Storage {
            sqlstate: "XX000".into(),
            message: s.message().to_string(),
        },
    }
}

/// A data version a result depended on: `key` on `node` was at `version` (node `incarnation`)
/// before the result was read.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Node id.
    pub node: u64,
    /// Scope (shard or reference database) and table.
    pub key: tessera_shared::proto::VersionKey,
    /// The node's incarnation.
    pub incarnation: u64,
    /// The version.
    pub version: u64,
}
