//! The metadata Raft group: the catalog is the state machine of an openraft group whose
//! members are the coordinators, so any coordinator may die and the others keep serving
//! and changing the same catalog.
//!
//! - [`log`]: the durable Raft log and vote (one SQLite file, `synchronous=FULL`; a failed
//!   write stops the group's member instead of being retried).
//! - [`state`]: the state machine: applies catalog commands, publishes the catalog that
//!   planning reads, builds and installs snapshots.
//! - [`network`]: Raft RPCs between coordinators over gRPC, client and server.
//! - [`store`]: [`store::RaftCatalog`], the [`crate::catalog::store::CatalogStore`] that
//!   proposes through the group (forwarding to the leader) and reads the local copy.

pub mod log;
pub mod network;
pub mod state;
pub mod store;

use crate::catalog::{Catalog, CatalogCommand};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A change proposed to the metadata group: one Raft log entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MetaRequest {
    /// A catalog command.
    Command(Box<CatalogCommand>),
    /// Reserve this many fresh ids (groups, shards); the response carries the first.
    ReserveIds(u64),
    /// Adopt this catalog if the group's is still empty: a data directory written before the
    /// group existed (one coordinator's `catalog.json`) becomes the group's starting point.
    Seed(Box<Catalog>),
}

impl fmt::Display for MetaRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaRequest::Command(c) => write!(f, "command {c:?}"),
            MetaRequest::ReserveIds(n) => write!(f, "reserve {n} ids"),
            MetaRequest::Seed(_) => write!(f, "seed catalog"),
        }
    }
}

/// What applying a [`MetaRequest`] gave.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetaResponse {
    /// The log index of the entry: a member that forwarded the request waits until its own
    /// copy of the catalog has applied it.
    pub index: u64,
    /// For [`MetaRequest::ReserveIds`], the first reserved id.
    pub first_id: u64,
    /// The command was refused (SQLSTATE, message), deterministically on every member.
    pub error: Option<(String, String)>,
}

openraft::declare_raft_types!(
    /// openraft's type configuration for the metadata group.
    pub MetaTypes:
        D = MetaRequest,
        R = MetaResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        AsyncRuntime = openraft::impls::TokioRuntime,
);

/// A member of the metadata group.
pub type MetaRaft = openraft::Raft<MetaTypes, state::StateMachine>;

/// The on-disk format version of the Raft log and the snapshot files.
pub const META_FORMAT_VERSION: u32 = 1;

/// A member's current Raft metrics.
pub fn metrics(raft: &MetaRaft) -> openraft::RaftMetrics<MetaTypes> {
    use openraft::async_runtime::WatchReceiver;
    raft.metrics().borrow_watched().clone()
}
