//! Where data lives: storage nodes, co-location groups, their shards and each shard's copies.

use crate::error::CoordError;
use serde::{Deserialize, Serialize};

/// A storage node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Stable id, never reused.
    pub id: u64,
    /// Name given at start-up (`storage-1`, ...).
    pub name: String,
    /// gRPC address, `host:port`.
    pub addr: String,
    /// What failure detection last concluded (see [`crate::replication::liveness`]).
    #[serde(default)]
    pub liveness: Liveness,
}

/// A storage node's liveness as failure detection records it in the catalog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    /// Answering.
    #[default]
    Alive,
    /// Silent for longer than `suspect_after_ms`.
    Suspect,
    /// Silent for longer than `dead_after_ms`.
    Dead,
    /// Taken out of service by an operator (`tessera admin node decommission`): holds no
    /// copies and takes none, whatever it answers.
    Decommissioned,
}

impl Liveness {
    /// As `tessera admin nodes` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Alive => "alive",
            Liveness::Suspect => "suspect",
            Liveness::Dead => "dead",
            Liveness::Decommissioned => "decommissioned",
        }
    }
}

#[derive(Debug, Clone, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bound {
    /// Integer key.
    Int(i64),
    /// Text key.
    Text(String),
}

/// One shard of a co-location group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shard {
    /// Cluster-wide id; also the storage node's file name.
    pub id: u64,
    /// Position in the group (hash: token range index; range: range order).
    pub index: u32,
    /// Nodes holding a replica; the first is the primary.
    pub placements: Vec<u64>,
    /// Nodes a new copy is being filled on (repair, move, drain): every write reaches them,
    /// no read does, until the fill completes and they join `placements`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filling: Vec<u64>,
    /// While `filling` is not empty: when (Unix ms) its fills are given up unless their
    /// coordinator renews them ([`CatalogCommand::RenewFill`]); a fill whose coordinator died
    /// is then abandoned by the metadata leader.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fill_lease_ms: u64,
    /// While `filling` is not empty: the fill's id, which its later commands must name (a fill
    /// abandoned and begun again is another fill). One fill per shard at a time.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fill_id: u64,
    /// Range groups: inclusive lower bound (None = unbounded).
    pub lower: Option<Bound>,
    /// Range groups: exclusive upper bound (None = unbounded).
    pub upper: Option<Bound>,
}

/// A command naming a fill that is no longer the shard's (abandoned, maybe begun again).
pub(super) fn stale_fill(shard: u64) -> CoordError {
    CoordError::Storage {
        sqlstate: "40001".into(),
        message: format!("the copy of shard {shard} being made was abandoned; it is made again"),
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Shard {
    /// Every node a write must reach: the placements, then the copies being filled.
    pub fn write_nodes(&self) -> impl Iterator<Item = u64> + '_ {
        self.placements.iter().chain(&self.filling).copied()
    }
}

/// How a group lays out shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupKind {
    /// Hash token ranges (`shards.len()` of them).
    Hash,
    /// Value ranges.
    Range,
    /// One copy per node (placement = that node); reads may use any.
    Reference,
}

/// Tables whose shards sit together, so joins on the distribution key run inside one shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Group id.
    pub id: u64,
    /// Layout.
    pub kind: GroupKind,
    /// Shards in index order.
    pub shards: Vec<Shard>,
    /// Copies each shard should have (`WITH (replicas = N)`); repair restores it after a
    /// node's death. 0 in catalogs from before replication (treated as 1).
    #[serde(default)]
    pub replicas: u32,
}
