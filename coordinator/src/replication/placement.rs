//! The one placement policy of new copies, for new tables and repairs alike: [`Placer`].

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

/// The one placement policy: each new copy goes to the candidate node holding the fewest
/// copies (placed or filling) that does not hold the shard already; a shard's first copy,
/// which takes its writes first, goes to the candidate holding the fewest first copies, so
/// first copies spread over the nodes as evenly as copies do. Ties go to the lowest node id.
pub struct Placer {
    /// Candidate node -> (first copies, copies), counting the picks made so far.
    load: std::collections::BTreeMap<u64, (usize, usize)>,
}

impl Placer {
    /// A policy over `candidates`, loaded with the copies `catalog` records.
    pub fn new(catalog: &Catalog, candidates: impl IntoIterator<Item = u64>) -> Placer {
        let mut load: std::collections::BTreeMap<u64, (usize, usize)> =
            candidates.into_iter().map(|n| (n, (0, 0))).collect();
        for s in catalog.groups.values().flat_map(|g| &g.shards) {
            for (i, n) in s.write_nodes().enumerate() {
                if let Some(l) = load.get_mut(&n) {
                    l.0 += usize::from(i == 0);
                    l.1 += 1;
                }
            }
        }
        Placer { load }
    }

    /// Where the next copy of a shard whose copies are on `holding` goes (the shard's first
    /// copy when `holding` is empty); `None` when every candidate holds one. The pick counts
    /// towards later picks.
    pub fn pick(&mut self, holding: &[u64]) -> Option<u64> {
        let first = holding.is_empty();
        let (&node, load) = self
            .load
            .iter_mut()
            .filter(|(n, _)| !holding.contains(n))
            .min_by_key(|(n, l)| {
                if first {
                    (l.0, l.1, **n)
                } else {
                    (l.1, l.0, **n)
                }
            })?;
        load.0 += usize::from(first);
        load.1 += 1;
        Some(node)
    }
}

/// The live node that should take a new copy of `shard` ([`Placer`]).
pub(super) fn least_loaded(catalog: &Catalog, shard: &crate::catalog::Shard) -> Option<u64> {
    let alive = catalog
        .nodes
        .values()
        .filter(|n| n.liveness == Liveness::Alive)
        .map(|n| n.id);
    let holding: Vec<u64> = shard.write_nodes().collect();
    Placer::new(catalog, alive).pick(&holding)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Group, Shard};

    fn shard(id: u64, placements: Vec<u64>) -> Shard {
        Shard {
            id,
            index: 0,
            placements,
            filling: vec![],
            fill_lease_ms: 0,
            fill_id: 0,
            lower: None,
            upper: None,
        }
    }

    fn place(placer: &mut Placer, replicas: usize) -> Vec<u64> {
        (0..replicas).fold(Vec::new(), |mut holding, _| {
            holding.extend(placer.pick(&holding));
            holding
        })
    }

    #[test]
    fn copies_and_first_copies_spread_evenly() {
        let catalog = Catalog::default();
        let mut placer = Placer::new(&catalog, [1, 2, 3]);
        let shards: Vec<Vec<u64>> = (0..6).map(|_| place(&mut placer, 2)).collect();
        for node in [1, 2, 3] {
            assert_eq!(
                shards.iter().filter(|s| s[0] == node).count(),
                2,
                "{shards:?}"
            );
            assert_eq!(
                shards.iter().filter(|s| s.contains(&node)).count(),
                4,
                "{shards:?}"
            );
        }
        assert!(shards.iter().all(|s| s[0] != s[1]));
        // No candidate left that does not hold the shard.
        assert_eq!(Placer::new(&catalog, [1]).pick(&[1]), None);
    }

    #[test]
    fn a_repair_goes_to_the_least_loaded_node_without_a_copy() {
        let mut catalog = Catalog::default();
        catalog.groups.insert(
            1,
            Group {
                id: 1,
                kind: GroupKind::Hash,
                shards: vec![
                    shard(10, vec![1, 2]),
                    shard(11, vec![1, 3]),
                    shard(12, vec![2]),
                ],
                replicas: 2,
            },
        );
        // Node 4 is empty but node 3 holds one copy; shard 12 lacks a copy.
        let mut placer = Placer::new(&catalog, [1, 2, 3, 4]);
        assert_eq!(placer.pick(&[2]), Some(4));
        assert_eq!(placer.pick(&[2]), Some(3));
        assert_eq!(placer.pick(&[]), Some(4), "fewest first copies");
    }
}
