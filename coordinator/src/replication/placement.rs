//! The one placement policy of new copies: the live node holding the fewest copies.

use super::*;

pub(super) fn node_named<'a>(catalog: &'a Catalog, name: &str) -> Result<&'a Node, CoordError> {
    catalog
        .nodes
        .values()
        .find(|n| n.name == name)
        .ok_or_else(|| CoordError::Storage {
            sqlstate: "42704".into(),
            message: format!("storage node \"{name}\" does not exist"),
        })
}

pub(super) fn alive(catalog: &Catalog, id: u64) -> bool {
    catalog
        .nodes
        .get(&id)
        .is_some_and(|n| n.liveness == Liveness::Alive)
}

/// Number of shard copies (placed or filling) on each node.
pub(super) fn load(catalog: &Catalog, node: u64) -> usize {
    catalog
        .groups
        .values()
        .flat_map(|g| &g.shards)
        .filter(|s| s.write_nodes().any(|n| n == node))
        .count()
}

/// The live node holding the fewest copies, among those without a copy of `shard`.
pub(super) fn least_loaded(catalog: &Catalog, shard: &crate::catalog::Shard) -> Option<u64> {
    catalog
        .nodes
        .values()
        .filter(|n| n.liveness == Liveness::Alive && !shard.write_nodes().any(|w| w == n.id))
        .min_by_key(|n| (load(catalog, n.id), n.id))
        .map(|n| n.id)
}

/// Every distributed shard (not reference) with a copy on `node`.
pub(super) fn shards_on(catalog: &Catalog, node: u64) -> Vec<u64> {
    catalog
        .groups
        .values()
        .filter(|g| g.kind != GroupKind::Reference && !tables_of(catalog, g.id).is_empty())
        .flat_map(|g| &g.shards)
        .filter(|s| s.placements.contains(&node))
        .map(|s| s.id)
        .collect()
}

/// `53400`: no other live node can take a copy of `shard`.
pub(super) fn no_room(shard: u64) -> CoordError {
    CoordError::Storage {
        sqlstate: "53400".into(),
        message: format!("no other live storage node can take shard {shard}"),
    }
}
