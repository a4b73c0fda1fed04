//! Moving copies online: `tessera admin shard move`, draining and decommissioning a node.

use super::*;

/// How long a move's old copy stays after the switch (reads and commits planned before it
/// may still reach it), before it is deleted.
pub(super) const OLD_COPY_GRACE: Duration = Duration::from_secs(5);

/// The SQL entry points: `SELECT tessera_decommission('node')`, `tessera_drain('node')`,
/// `tessera_move_shard(shard, 'to')` and `tessera_move_shard(shard, 'from', 'to')`.
pub async fn placement_call(
    repl: &Replication,
    name: &str,
    args: &[String],
) -> Result<String, CoordError> {
    let usage = || CoordError::Syntax(format!("wrong arguments for {name}"));
    match (name, args) {
        ("tessera_decommission", [node]) => decommission(repl, node).await,
        ("tessera_drain", [node]) => drain(repl, node).await,
        ("tessera_move_shard", [shard, rest @ ..]) if !rest.is_empty() && rest.len() <= 2 => {
            let shard: u64 = shard.trim().parse().map_err(|_| usage())?;
            let (from, to) = match rest {
                [to] => (None, to),
                [from, to] => (Some(from.as_str()), to),
                _ => return Err(usage()),
            };
            move_shard(repl, shard, from, to).await
        }
        _ => Err(usage()),
    }
}

/// Takes a storage node out of service: no new copy lands on it, and every copy it holds
/// moves to another live node online (single copies included); replicated shards keep all
/// their copies throughout.
pub async fn decommission(repl: &Replication, name: &str) -> Result<String, CoordError> {
    let catalog = repl.catalog.snapshot();
    let node = node_named(&catalog, name)?;
    let before = node.liveness;
    // Every copy must have somewhere to go before anything changes.
    for shard in shards_on(&catalog, node.id) {
        let (_, s) = catalog
            .shard(shard)
            .ok_or_else(|| CoordError::Internal(format!("no shard {shard}")))?;
        if least_loaded(&catalog, s).is_none() {
            return Err(no_room(shard));
        }
    }
    repl.catalog
        .propose(CatalogCommand::SetLiveness {
            name: name.to_string(),
            liveness: Liveness::Decommissioned,
        })
        .await?;
    match drain(repl, name).await {
        Ok(moved) => Ok(format!("storage node {name} decommissioned; {moved}")),
        Err(e) => {
            // The node stays in service; copies moved so far stay where they are (each is a
            // complete copy).
            let undo = CatalogCommand::SetLiveness {
                name: name.to_string(),
                liveness: before,
            };
            if let Err(u) = repl.catalog.propose(undo).await {
                tracing::error!(node = %name, error = %u, "could not take back a failed decommission");
            }
            Err(e)
        }
    }
}

/// Moves every copy `name` holds to other live nodes, online; the node stays in service.
pub async fn drain(repl: &Replication, name: &str) -> Result<String, CoordError> {
    let mut moved = 0;
    loop {
        let catalog = repl.catalog.snapshot();
        let node = node_named(&catalog, name)?.id;
        let Some(shard) = shards_on(&catalog, node).into_iter().next() else {
            break;
        };
        let (_, s) = catalog
            .shard(shard)
            .ok_or_else(|| CoordError::Internal(format!("no shard {shard}")))?;
        let target = least_loaded(&catalog, s).ok_or_else(|| no_room(shard))?;
        move_copy(repl, shard, node, target).await?;
        moved += 1;
    }
    Ok(format!("{moved} shard copies moved off {name}"))
}

/// `tessera admin shard move`: moves shard `shard`'s copy on `from` (by default its first)
/// to `to`.
pub async fn move_shard(
    repl: &Replication,
    shard: u64,
    from: Option<&str>,
    to: &str,
) -> Result<String, CoordError> {
    let catalog = repl.catalog.snapshot();
    let (g, s) = catalog.shard(shard).ok_or_else(|| CoordError::Storage {
        sqlstate: "42704".into(),
        message: format!("shard {shard} does not exist"),
    })?;
    if g.kind == GroupKind::Reference {
        return Err(CoordError::unsupported(
            "reference tables have a copy on every node; they are not moved",
        ));
    }
    let from = match from {
        Some(name) => node_named(&catalog, name)?.id,
        None => *s
            .placements
            .first()
            .ok_or_else(|| CoordError::Internal(format!("shard {shard} has no copy")))?,
    };
    let to_node = node_named(&catalog, to)?;
    if !s.placements.contains(&from) {
        return Err(CoordError::Storage {
            sqlstate: "22023".into(),
            message: format!("shard {shard} has no copy on node {from}"),
        });
    }
    if s.placements.contains(&to_node.id) {
        return Err(CoordError::Storage {
            sqlstate: "22023".into(),
            message: format!("shard {shard} already has a copy on {to}"),
        });
    }
    if to_node.liveness != Liveness::Alive {
        return Err(CoordError::Storage {
            sqlstate: "22023".into(),
            message: format!("storage node {to} is {}", to_node.liveness.as_str()),
        });
    }
    let rows = move_copy(repl, shard, from, to_node.id).await?;
    Ok(format!("shard {shard} moved to {to} ({rows} rows)"))
}

/// The copy a fill reads from: the shard's first copy while its node answers. Every writer
/// takes that copy's lock before any other, so holding it while the new copy is written
/// cannot deadlock. Else the first live copy.
pub(super) async fn lock_head(
    repl: &Replication,
    catalog: &Catalog,
    s: &crate::catalog::Shard,
) -> Result<u64, CoordError> {
    if let Some(first) = s.placements.first() {
        if repl.cluster.stats(catalog.node(*first)?).await.is_ok() {
            return Ok(*first);
        }
    }
    s.placements
        .iter()
        .copied()
        .find(|n| alive(catalog, *n))
        .ok_or_else(|| CoordError::Storage {
            sqlstate: "58000".into(),
            message: format!("no live copy of shard {} to copy from", s.id),
        })
}

/// Fills a copy of `shard` on `to`, then swaps it for the copy on `from`.
pub(super) async fn move_copy(
    repl: &Replication,
    shard: u64,
    from: u64,
    to: u64,
) -> Result<u64, CoordError> {
    let catalog = repl.catalog.snapshot();
    let (_, s) = catalog
        .shard(shard)
        .ok_or_else(|| CoordError::Internal(format!("no shard {shard}")))?;
    let source = lock_head(repl, &catalog, s).await?;
    let rows = fill(repl, shard, source, to, Some(from)).await?;
    // The old copy goes once reads and commits planned before the switch are done.
    let old = catalog.node(from)?.clone();
    let cluster = repl.cluster.clone();
    let store = repl.catalog.clone();
    repl.tasks.spawn(async move {
        tokio::time::sleep(OLD_COPY_GRACE).await;
        // Unless the shard came back to that node meanwhile (a move back, a repair).
        let back = store
            .snapshot()
            .shard(shard)
            .is_some_and(|(_, s)| s.write_nodes().any(|n| n == old.id));
        if back {
            return;
        }
        if let Err(e) = cluster.drop_shard(&old, shard).await {
            tracing::warn!(shard, node = %old.name, error = %e, "deleting a moved shard's old copy failed");
        }
    });
    Ok(rows)
}
