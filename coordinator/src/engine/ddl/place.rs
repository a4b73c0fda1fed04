//! Where a new table's shards go: its co-location group, shard count, ranges and copies.

use super::*;

/// Chooses or creates the table's group, creates its shards, and records it.
pub(super) async fn place_table(
    engine: &Engine,
    mut table: Table,
    opts: TableOptions,
    schema: Vec<String>,
    own_group: bool,
) -> Result<(), CoordError> {
    let catalog = engine.catalog.snapshot();
    // New copies go to nodes in service (not declared dead, not decommissioned).
    let nodes: Vec<u64> = catalog
        .nodes
        .values()
        .filter(|n| {
            !matches!(
                n.liveness,
                crate::catalog::Liveness::Dead | crate::catalog::Liveness::Decommissioned
            )
        })
        .map(|n| n.id)
        .collect();
    if nodes.is_empty() {
        return Err(CoordError::Internal(
            "no storage nodes are registered".into(),
        ));
    }
    let (kind, count, bounds) = match &table.distribution {
        Distribution::Hash { .. } => (
            GroupKind::Hash,
            opts.shards.unwrap_or(engine.config.default_shards),
            None,
        ),
        Distribution::Single => (GroupKind::Hash, 1, None),
        Distribution::Reference => (GroupKind::Reference, nodes.len() as u32, None),
        Distribution::Range { column } => {
            let ty = table.column(column).map(|c| c.ty).unwrap_or(PgType::Text);
            let bounds = parse_bounds(opts.bounds.as_deref().unwrap_or(""), ty)?;
            (GroupKind::Range, bounds.len() as u32 + 1, Some(bounds))
        }
    };
    let replicas = if kind == GroupKind::Reference {
        1
    } else {
        opts.replicas
            .unwrap_or(engine.config.default_replicas.max(1)) as usize
    };
    if replicas > nodes.len() {
        return Err(CoordError::Storage {
            sqlstate: "22023".into(),
            message: format!(
                "replicas = {replicas} needs {replicas} storage nodes; the cluster has {}",
                nodes.len()
            ),
        });
    }
    // Hash tables with the same shard count and replicas share a group (co-located); one
    // reference group.
    // A column group gets shards of its own.
    let existing = catalog.groups.values().find(|g| {
        !own_group
            && match kind {
                GroupKind::Hash => {
                    g.kind == GroupKind::Hash
                && g.shards.len() as u32 == count
                && g.shards.first().map(|s| s.placements.len()) == Some(replicas)
                // Not on a node taken out of service.
                && g.shards.iter().flat_map(|s| &s.placements).all(|n| {
                    catalog.nodes.get(n).is_none_or(|n| {
                        n.liveness != crate::catalog::Liveness::Decommissioned
                    })
                })
                }
                GroupKind::Reference => g.kind == GroupKind::Reference,
                GroupKind::Range => false,
            }
    });
    let (group, new_group) = match existing {
        Some(g) => (g.clone(), None),
        None => {
            let first = engine.catalog.reserve_ids(u64::from(count) + 1).await?;
            let bounds = bounds.unwrap_or_default();
            let mut placer = crate::replication::placement::Placer::new(&catalog, nodes.clone());
            let shards = (0..count)
                .map(|i| Shard {
                    id: first + 1 + u64::from(i),
                    index: i,
                    placements: (0..replicas).fold(Vec::new(), |mut holding, _| {
                        holding.extend(placer.pick(&holding));
                        holding
                    }),
                    filling: vec![],
                    fill_lease_ms: 0,
                    fill_id: 0,
                    lower: (i as usize)
                        .checked_sub(1)
                        .and_then(|j| bounds.get(j).cloned()),
                    upper: bounds.get(i as usize).cloned(),
                })
                .collect();
            let g = Group {
                id: first,
                kind: kind.clone(),
                shards,
                replicas: replicas as u32,
            };
            (g.clone(), Some(g))
        }
    };
    table.group = group.id;
    let shard_kind = if kind == GroupKind::Reference {
        ShardKind::Reference
    } else {
        ShardKind::Sql
    };
    let mut done = Vec::new();
    for (s, t) in group
        .shards
        .iter()
        .flat_map(|s| replica_targets(s).map(move |t| (s, t)))
    {
        let node = catalog.node(t.node)?;
        if let Err(e) = engine
            .cluster
            .create_shard(node, s.id, shard_kind, schema.clone())
            .await
        {
            for d in &done {
                let _ = run_on_shard(
                    engine,
                    *d,
                    format!("DROP TABLE IF EXISTS {}", quote(&table.name)),
                )
                .await;
            }
            return Err(e);
        }
        done.push(t);
    }
    engine
        .catalog
        .propose(CatalogCommand::CreateTable { table, new_group })
        .await?;
    Ok(())
}

pub(super) fn parse_bounds(s: &str, ty: PgType) -> Result<Vec<Bound>, CoordError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        out.push(if ty.is_integer() {
            Bound::Int(part.parse().map_err(|_| {
                CoordError::InvalidValue(format!("range bound \"{part}\" is not an integer"))
            })?)
        } else {
            Bound::Text(part.to_string())
        });
    }
    if out.windows(2).any(|w| w[0] >= w[1]) {
        return Err(CoordError::InvalidValue(
            "range bounds must be strictly increasing".into(),
        ));
    }
    Ok(out)
}
