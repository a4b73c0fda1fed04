//! Connections to storage nodes: one lazily connected gRPC channel per node, errors classified.

use crate::catalog::Node;
use crate::error::CoordError;
use dashmap::DashMap;
use std::time::Duration;
use tessera_shared::proto::storage_client::StorageClient;
use tessera_shared::proto::*;
use tonic::transport::{Channel, Endpoint};

/// gRPC metadata key with the SQLSTATE of a failed storage request.
const SQLSTATE_HEADER: &str = "x-sqlstate";

/// Clients to every storage node, keyed by node id.
#[derive(Default)]
pub struct Cluster {
    clients: DashMap<u64, (String, StorageClient<Channel>)>,
}

impl Cluster {
    /// A client for `node`, created (not yet connected) on first use or when its address changed.
    pub fn client(&self, node: &Node) -> Result<StorageClient<Channel>, CoordError> {
        if let Some(e) = self.clients.get(&node.id) {
            if e.0 == node.addr {
                return Ok(e.1.clone());
            }
        }
        let endpoint = Endpoint::from_shared(format!("http://{}", node.addr))
            .map_err(|e| CoordError::Internal(format!("bad address {}: {e}", node.addr)))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let client = StorageClient::new(endpoint.connect_lazy());
        self.clients
            .insert(node.id, (node.addr.clone(), client.clone()));
        Ok(client)
    }

    /// Runs statements on one shard of `node`.
    pub async fn execute(
        &self,
        node: &Node,
        shard_id: u64,
        txn_id: u64,
        statements: Vec<Statement>,
    ) -> Result<Vec<StatementResult>, CoordError> {
        let mut c = self.client(node)?;
        let r = c
            .execute(ExecuteRequest {
                shard_id,
                statements,
                txn_id,
            })
            .await
            .map_err(|s| status_error(node, s))?;
        Ok(r.into_inner().results)
    }

    /// Commits or rolls back a transaction on one shard.
    pub async fn finish_txn(
        &self,
        node: &Node,
        shard_id: u64,
        txn_id: u64,
        commit: bool,
    ) -> Result<(), CoordError> {
        let mut c = self.client(node)?;
        c.finish_txn(FinishTxnRequest {
            shard_id,
            txn_id,
            commit,
        })
        .await
        .map_err(|s| status_error(node, s))?;
        Ok(())
    }

    /// Creates a shard (idempotent) and runs schema statements on it.
    pub async fn create_shard(
        &self,
        node: &Node,
        shard_id: u64,
        kind: ShardKind,
        schema: Vec<String>,
    ) -> Result<(), CoordError> {
        let mut c = self.client(node)?;
        c.create_shard(CreateShardRequest {
            shard_id,
            kind: kind as i32,
            schema,
        })
        .await
        .map_err(|s| status_error(node, s))?;
        Ok(())
    }

    /// Drops a shard.
    pub async fn drop_shard(&self, node: &Node, shard_id: u64) -> Result<(), CoordError> {
        let mut c = self.client(node)?;
        c.drop_shard(DropShardRequest { shard_id })
            .await
            .map_err(|s| status_error(node, s))?;
        Ok(())
    }

    /// A node's stats.
    pub async fn stats(&self, node: &Node) -> Result<StatsResponse, CoordError> {
        let mut c = self.client(node)?;
        Ok(c.stats(StatsRequest {})
            .await
            .map_err(|s| status_error(node, s))?
            .into_inner())
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
