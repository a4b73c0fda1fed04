//! The storage node's gRPC service: translates requests into shard registry calls.

use crate::shards::ShardRegistry;
use crate::work::Work;
use std::sync::Arc;
use tessera_shared::proto::storage_server::Storage;
use tessera_shared::proto::*;
use tonic::{Request, Response, Status};

/// Implements [`Storage`] over a [`ShardRegistry`].
pub struct StorageService {
    shards: Arc<ShardRegistry>,
    node_name: String,
}

impl StorageService {
    /// A service over `shards`.
    pub fn new(shards: Arc<ShardRegistry>, node_name: String) -> StorageService {
        StorageService { shards, node_name }
    }
}

#[tonic::async_trait]
impl Storage for StorageService {
    async fn execute(
        &self,
        req: Request<ExecuteRequest>,
    ) -> Result<Response<ExecuteResponse>, Status> {
        let r = req.into_inner();
        // Read before the statements run: see `versions`.
        let (incarnation, versions) = if r.versions_of.is_empty() {
            (0, vec![])
        } else {
            self.shards.versions(&r.versions_of)
        };
        let work = match r.apply {
            true => Work::Apply {
                changes: r.apply_changes,
                lenient: r.lenient,
            },
            false => Work::Run {
                statements: r.statements,
                capture: r.capture_changes,
            },
        };
        let done = self
            .shards
            .run_limited(
                r.shard_id,
                r.txn_id,
                work,
                idle(r.txn_idle_ms),
                idle(r.lock_timeout_ms),
            )
            .await?;
        if r.prepare && r.txn_id != 0 {
            self.shards.prepare_txn(r.shard_id, r.txn_id).await?;
        }
        Ok(Response::new(ExecuteResponse {
            results: done.results,
            incarnation,
            versions,
            changes: done.changes,
        }))
    }

    async fn finish_txn(
        &self,
        req: Request<FinishTxnRequest>,
    ) -> Result<Response<FinishTxnResponse>, Status> {
        let r = req.into_inner();
        if r.prepare {
            self.shards.prepare_txn(r.shard_id, r.txn_id).await?;
        } else {
            self.shards
                .finish_txn(r.shard_id, r.txn_id, r.commit)
                .await?;
        }
        Ok(Response::new(FinishTxnResponse {}))
    }

    async fn create_shard(
        &self,
        req: Request<CreateShardRequest>,
    ) -> Result<Response<CreateShardResponse>, Status> {
        let r = req.into_inner();
        let kind = ShardKind::try_from(r.kind).unwrap_or(ShardKind::Sql);
        self.shards.create_shard(r.shard_id, kind, r.schema).await?;
        Ok(Response::new(CreateShardResponse {}))
    }

    async fn drop_shard(
        &self,
        req: Request<DropShardRequest>,
    ) -> Result<Response<DropShardResponse>, Status> {
        self.shards.drop_shard(req.into_inner().shard_id).await?;
        Ok(Response::new(DropShardResponse {}))
    }

    async fn fence(&self, req: Request<FenceRequest>) -> Result<Response<FenceResponse>, Status> {
        let r = req.into_inner();
        self.shards.fence(r.shard_id, r.fenced).await?;
        Ok(Response::new(FenceResponse {}))
    }

    async fn versions(
        &self,
        req: Request<VersionsRequest>,
    ) -> Result<Response<VersionsResponse>, Status> {
        let (incarnation, versions) = self.shards.versions(&req.into_inner().keys);
        Ok(Response::new(VersionsResponse {
            incarnation,
            versions,
        }))
    }

    async fn stats(&self, _req: Request<StatsRequest>) -> Result<Response<StatsResponse>, Status> {
        let shards = self.shards.stats().await?;
        Ok(Response::new(StatsResponse {
            node_name: self.node_name.clone(),
            pid: std::process::id(),
            shards,
        }))
    }
}

/// A request's time limit in milliseconds (0: the node's own).
fn idle(ms: u32) -> Option<std::time::Duration> {
    (ms > 0).then(|| std::time::Duration::from_millis(u64::from(ms)))
}
