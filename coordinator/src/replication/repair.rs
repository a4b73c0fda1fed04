//! Re-replication: a shard below its table's copies gets a new one; fills whose coordinator
//! died are abandoned.

use super::*;

/// Finds one shard below its table's `replicas` and fills a new copy. Returns what it did, or
/// `None` when every shard has its copies (or no live node can take one).
pub async fn repair_once(repl: &Replication) -> Result<Option<String>, CoordError> {
    let catalog = repl.catalog.snapshot();
    for g in catalog.groups.values().filter(|g| g.replicas > 1) {
        for s in &g.shards {
            if s.placements.len() >= g.replicas as usize || !s.filling.is_empty() {
                continue;
            }
            let Ok(source) = lock_head(repl, &catalog, s).await else {
                continue;
            };
            let Some(target) = least_loaded(&catalog, s) else {
                continue;
            };
            let rows = fill(repl, s.id, source, target, None).await?;
            return Ok(Some(format!(
                "shard {} copied from node {source} to node {target} ({rows} rows)",
                s.id
            )));
        }
    }
    Ok(None)
}

/// Abandons fills whose coordinator stopped renewing their lease (it died), or every fill
/// with `all` (this coordinator just started detecting: a fill's coordinator may have died
/// with the old leader), and lifts their shards' fences.
pub async fn abandon_fills(repl: &Replication, all: bool) {
    let catalog = repl.catalog.snapshot();
    let now = unix_ms();
    for s in catalog.groups.values().flat_map(|g| &g.shards) {
        if s.filling.is_empty() || (!all && s.fill_lease_ms > now) {
            continue;
        }
        for node in &s.filling {
            let cmd = CatalogCommand::AbandonFill {
                shard: s.id,
                node: *node,
                fill: s.fill_id,
            };
            match repl.catalog.propose(cmd).await {
                Ok(_) => {
                    tracing::warn!(
                        shard = s.id,
                        node,
                        "abandoned a fill whose coordinator is gone"
                    )
                }
                Err(e) => tracing::warn!(shard = s.id, error = %e, "cannot abandon a fill"),
            }
        }
        unfence(repl, &catalog, s.id, s.placements.iter().copied(), None).await;
    }
}
