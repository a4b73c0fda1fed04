//! Copies of shards: failure detection, re-replication, fills, moves, and where new copies go.
//! Code here reaches the cluster through a [`Replication`] handle, never the engine.
//!
//! - [`liveness`]: storage-node failure detection; [`repair`]: re-replication;
//!   [`fill`]: filling a new copy online; [`moves`]: moves, drain and decommission;
//!   [`placement`]: where a new copy goes; [`verify`]: copies compared after a restart.

pub mod fill;
pub mod liveness;
pub mod moves;
pub mod placement;
pub mod repair;
pub mod verify;

use crate::catalog::store::CatalogStore;
use crate::catalog::{Catalog, CatalogCommand, GroupKind, Liveness, Node, Table};
use crate::cluster::Cluster;
use crate::error::CoordError;
use crate::sql::names::quote;
use std::sync::Arc;
use std::time::Duration;
use tessera_shared::proto::{ShardKind, Statement};
use tessera_shared::Value;

use fill::*;
use moves::*;
use placement::*;

pub use fill::digest;
pub use moves::placement_call;

/// What replication reaches: the catalog store, the storage clients, its timing, and the
/// metadata group (only its leader detects failures and repairs).
pub struct Replication {
    /// The catalog store.
    pub catalog: Arc<dyn CatalogStore>,
    /// Storage node clients.
    pub cluster: Arc<Cluster>,
    /// Failure detection and repair settings.
    pub config: liveness::LivenessConfig,
    /// This coordinator's membership of the metadata Raft group, if the catalog lives there.
    pub meta: Option<Arc<crate::meta::store::RaftCatalog>>,
    /// The coordinator's background work, which shutdown waits for (old copies' deletion).
    pub tasks: tokio_util::task::TaskTracker,
}
