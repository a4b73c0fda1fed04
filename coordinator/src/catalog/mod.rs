//! The cluster catalog: tables, columns, distribution, co-location groups, shards, placements and nodes.
//!
//! The catalog changes only through [`CatalogCommand`]s applied by [`Catalog::apply`],
//! a deterministic function: the same commands in the same order give the same
//! catalog. That is what lets the consensus issue replace the file-backed
//! [`store::FileCatalog`] with a Raft state machine without touching the planner.

mod command;
mod role;
#[cfg(test)]
mod simulation;
pub mod store;
mod table;
#[cfg(test)]
mod tests;
mod topology;

pub use command::CatalogCommand;
pub use role::Role;
pub use table::*;
pub use topology::*;

use crate::error::CoordError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Current on-disk format of the catalog.
pub const CATALOG_VERSION: u32 = 1;

/// The whole catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// Format version, [`CATALOG_VERSION`].
    pub version: u32,
    /// Next id for a node, group or shard.
    pub next_id: u64,
    /// Next table OID.
    pub next_oid: u32,
    /// Storage nodes by id.
    pub nodes: BTreeMap<u64, Node>,
    /// Co-location groups by id.
    pub groups: BTreeMap<u64, Group>,
    /// Tables by name.
    pub tables: BTreeMap<String, Table>,
    /// Next unallocated value of each sequence, by `table.column`.
    #[serde(default)]
    pub sequences: BTreeMap<String, i64>,
    /// Counts table definition changes; see [`Table::revision`].
    #[serde(default)]
    pub revision: u64,
    /// Roles by name.
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            version: CATALOG_VERSION,
            next_id: 1,
            next_oid: 16384,
            nodes: BTreeMap::new(),
            groups: BTreeMap::new(),
            tables: BTreeMap::new(),
            sequences: BTreeMap::new(),
            revision: 0,
            roles: BTreeMap::new(),
        }
    }
}

impl Catalog {
    /// Reserves an id (used when building groups before the command that records them).
    pub fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// A table by name, or 42P01.
    pub fn table(&self, name: &str) -> Result<&Table, CoordError> {
        self.tables
            .get(name)
            .ok_or_else(|| CoordError::UndefinedTable(name.to_string()))
    }

    /// A table's group.
    pub fn group_of(&self, table: &Table) -> Result<&Group, CoordError> {
        self.groups
            .get(&table.group)
            .ok_or_else(|| CoordError::Internal(format!("table {} has no group", table.name)))
    }

    /// The shard with id `id` and its group.
    pub fn shard(&self, id: u64) -> Option<(&Group, &Shard)> {
        self.groups
            .values()
            .find_map(|g| g.shards.iter().find(|s| s.id == id).map(|s| (g, s)))
    }

    fn shard_mut(&mut self, id: u64) -> Result<&mut Shard, CoordError> {
        self.groups
            .values_mut()
            .flat_map(|g| g.shards.iter_mut())
            .find(|s| s.id == id)
            .ok_or_else(|| CoordError::Internal(format!("no shard {id}")))
    }

    /// The node by id.
    pub fn node(&self, id: u64) -> Result<&Node, CoordError> {
        self.nodes
            .get(&id)
            .ok_or_else(|| CoordError::Internal(format!("node {id} unknown")))
    }

    /// Groups with no table left: their shards can be dropped.
    pub fn unused_groups(&self) -> Vec<u64> {
        self.groups
            .keys()
            .filter(|g| !self.tables.values().any(|t| t.group == **g))
            .copied()
            .collect()
    }
}
