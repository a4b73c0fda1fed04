//! Transactions across shards and copies: ids, the commit protocol, the decision log and its
//! recovery. Code below the engine reaches them through a [`TxnManager`], never the engine.
//!
//! - [`log`]: the durable log of commit decisions; [`commit`]: prepare, decide, commit or roll
//!   back every shard a transaction touched, and what happens to a copy lost on the way;
//!   [`resolve`]: decisions a shard did not hear, sent again in the background; [`copies`]:
//!   row changes waiting for a transaction's other copies until its commit.

pub mod commit;
pub mod copies;
pub mod log;
pub mod resolve;

use crate::catalog::store::CatalogStore;
use crate::cluster::Cluster;
use std::sync::Arc;

/// What the commit protocol reaches: the catalog (placements, and taking a lost copy out of
/// its shard), the storage nodes, and this coordinator's decision log.
pub struct TxnManager {
    /// The catalog store.
    pub catalog: Arc<dyn CatalogStore>,
    /// Storage node clients.
    pub cluster: Arc<Cluster>,
    /// Durable multi-shard commit decisions.
    pub log: Arc<log::DecisionLog>,
    /// Decisions some shard has not heard yet.
    pub undelivered: resolve::Undeliverable,
}
