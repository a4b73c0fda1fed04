//! Pieces shared by Tessera's coordinator and storage nodes.
//!
//! # Layout
//! - [`fsutil`]: atomic, fsynced writes of small metadata files.
//! - [`hash`]: the shard hash function, defined here once with test vectors.
//! - [`jsonb`]: PostgreSQL `jsonb` semantics (canonical form, containment, paths, `jsonb_set`).
//! - [`uuid`]: random (version 4) UUIDs.
//! - [`value`]: a typed SQL value as it travels between nodes.
//! - [`pgtype`]: PostgreSQL types Tessera declares, with their OIDs and SQLite storage.
//! - [`proto`]: the generated gRPC protocol of storage nodes (`proto/storage.proto`).
//! - [`meta_proto`]: the metadata Raft group's gRPC protocol (`proto/meta.proto`).

pub mod fsutil;
pub mod hash;
pub mod jsonb;
pub mod pgtype;
pub mod uuid;
pub mod value;

/// Generated code for the storage-node RPC protocol.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("tessera.storage.v1");
}

/// Generated code for the metadata Raft group's RPCs between coordinators.
#[allow(clippy::all, missing_docs)]
pub mod meta_proto {
    tonic::include_proto!("tessera.meta.v1");
}

pub use pgtype::PgType;

/// Largest storage RPC message (a statement batch or a shard's result). Results are not streamed
/// yet: a shard answer larger than this fails cleanly instead of being cut.
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;
pub use value::Value;

/// Data-version scope of a node's reference database (reference tables), as opposed to a shard id.
pub const REFERENCE_SCOPE: u64 = u64::MAX;

/// Stack size of every thread that parses, plans, rewrites or runs SQL (the coordinator's tokio
/// threads and scratch database, storage workers): it holds the deepest statement the
/// coordinator accepts (`coordinator::sql::depth`) through every recursive pass, and SQLite's
/// code generator on expressions as deep. Only the pages a thread touches are committed.
pub const SQL_THREAD_STACK_BYTES: usize = 256 * 1024 * 1024;
