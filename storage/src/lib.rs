//! Tessera storage node: hosts shards, each a SQLite database, behind a gRPC service.
//!
//! # Layout
//! - [`config`]: the node's documented settings.
//! - [`manifest`]: the versioned list of shards a node hosts, kept on disk.
//! - [`worker`]: a dedicated OS thread owning one SQLite connection (blocking work never runs on tokio's threads).
//! - [`docstore`]: rows of document tables and their path indexes, in fjall (versioned formats).
//! - [`doctab`]: the `tessera_doc` SQLite virtual table through which shards query and write documents.
//! - [`jsonsrf`]: PostgreSQL's JSON set-returning functions (`jsonb_array_elements` …) as table-valued functions.
//! - [`pgfn`]: PostgreSQL functions SQLite lacks (`gen_random_uuid`, strict integer casts,
//!   division by zero); [`pgmath`]: PostgreSQL's math functions; [`pgstr`]: its string functions; [`pgregex`]: its regular expressions.
//! - [`jsonfn`]: SQLite functions giving JSON PostgreSQL's `jsonb` meaning.
//! - [`capture`]: a write's row changes, captured on a shard's first copy and applied on its others.
//! - [`patchset`]: a patchset read into plain values; [`patch_apply`]: applied through cached statements.
//! - [`changed_rows`]: the rows a patchset changes, by key: what row locks lock.
//! - [`exec`]: runs a batch of statements on a connection, with bound parameters, typed rows out.
//! - [`work`]: one request's work on a shard copy: statements (their row changes recorded), or row changes applied.
//! - [`deferred`]: a transaction's statements run on arrival over its own changes kept aside, committed at its end.
//! - [`txn_changes`]: an open transaction's row changes so far on a copy, cut back at `ROLLBACK TO SAVEPOINT`.
//! - [`prepared`]: the node's prepared log: a prepared transaction's row changes on disk (group-committed) until it ends.
//! - [`in_doubt`]: transactions prepared before a restart and not yet decided; their shards take no writes meanwhile.
//! - [`space`]: room to commit: a prepare fails on a full disk (`53100`), a commit after it does not.
//! - [`shards`]: the shard registry: open shards, their autocommit workers and open transactions.
//! - [`txn_conn`]: a transaction's connection thread, pooled per shard between transactions.
//! - [`unique`]: which tables have unique keys row locks do not cover: what a prepare must check.
//! - [`rowids`]: rowids for tables without a key, distinct across transactions inserting at once.
//! - [`row_locks`]: the rows open transactions wrote, locked until they end; waits, deadlocks.
//! - [`locking_read`]: `SELECT … FOR UPDATE` / `FOR SHARE`: rows read, then locked, waited for or skipped.
//! - [`locks`]: who holds each shard's write lock, and how long a transaction waits for it.
//! - [`versions`]: per-table data versions that change after every committed write (result-cache coherence).
//! - [`service`]: the gRPC service translating requests into shard work.
//! - [`error`]: typed errors and their SQLSTATE, carried to the coordinator in gRPC metadata.

pub mod capture;
pub mod changed_rows;
pub mod config;
pub mod deferred;
pub mod docstore;
pub mod doctab;
pub mod error;
pub mod exec;
pub mod in_doubt;
pub mod jsonfn;
pub mod jsonsrf;
pub mod locking_read;
pub mod locks;
pub mod manifest;
pub mod patch_apply;
pub mod patchset;
pub mod pgfn;
pub mod pgmath;
pub mod pgregex;
pub mod pgstr;
pub mod prepared;
pub mod row_locks;
pub mod rowids;
pub mod service;
pub mod shards;
pub mod space;
pub mod txn_changes;
pub mod txn_conn;
pub mod unique;
pub mod versions;
pub mod work;
pub mod worker;

pub use config::StorageConfig;
pub use error::StorageError;

use std::future::Future;
use std::sync::Arc;

/// Serves the storage RPC on `listener` until `shutdown` resolves.
pub async fn serve(
    config: StorageConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StorageError> {
    let shards = Arc::new(shards::ShardRegistry::open(config.clone())?);
    let svc = service::StorageService::new(shards.clone(), config.node_name.clone());
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tracing::info!(node = %config.node_name, "storage node serving");
    let result = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(
            tessera_shared::proto::storage_server::StorageServer::new(svc)
                .max_decoding_message_size(tessera_shared::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(tessera_shared::MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    shards.close();
    result.map_err(|e| StorageError::Transport(e.to_string()))
}
