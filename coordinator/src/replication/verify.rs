//! Copies agree after any restart: when a coordinator starts detecting failures (a new
//! metadata leader, or the whole cluster restarted after `kill -9`), it compares every
//! replicated shard's copies, and a copy that disagrees leaves its shard so repair rebuilds it
//! from the others. Nothing is left serving rows its shard's other copies do not hold.
//!
//! Copies are compared under the write lock of the shard's first copy, so no write runs
//! meanwhile; a copy still committing a write the first copy committed just before is
//! compared again a few times before it counts as different. The majority's rows are kept
//! (ties: the first copy's). An acknowledged write is on every copy, so whichever side is
//! kept holds it; what a crash left on some copies only was never acknowledged, and either
//! outcome of it is allowed as long as every copy agrees.

use super::*;

/// Times a differing copy is compared again before it counts as different, and the pause
/// between comparisons (a copy may still be committing the last write of its first copy).
const RECHECKS: usize = 5;
const RECHECK_PAUSE: Duration = Duration::from_millis(200);

/// Compares the copies of every replicated shard and takes the ones that disagree out of
/// their shards. Returns the copies taken out, as `(shard, node)`.
pub async fn verify_copies(repl: &Replication) -> Vec<(u64, u64)> {
    let catalog = repl.catalog.snapshot();
    let mut dropped = Vec::new();
    for g in catalog
        .groups
        .values()
        .filter(|g| g.kind != GroupKind::Reference && g.replicas > 1)
    {
        let tables = tables_of(&catalog, g.id);
        if tables.is_empty() {
            continue;
        }
        for s in g
            .shards
            .iter()
            .filter(|s| s.placements.len() > 1 && s.filling.is_empty())
        {
            match disagreeing(repl, &catalog, s, &tables).await {
                Ok(odd) => {
                    for node in odd {
                        let cmd = CatalogCommand::DropCopy {
                            shard: s.id,
                            node,
                            keep: g.replicas / 2 + 1,
                        };
                        match repl.catalog.propose(cmd).await {
                            Ok(_) => {
                                tracing::warn!(
                                    shard = s.id,
                                    node,
                                    "a copy disagreed with its shard's other copies and left it; repair rebuilds it"
                                );
                                dropped.push((s.id, node));
                            }
                            Err(e) => tracing::error!(
                                shard = s.id,
                                node,
                                error = %e,
                                "a copy disagrees with its shard's other copies but cannot leave it"
                            ),
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(shard = s.id, error = %e, "could not compare a shard's copies")
                }
            }
        }
    }
    dropped
}

/// The copies of `s` whose rows differ from the majority's (ties: the first copy's).
async fn disagreeing(
    repl: &Replication,
    catalog: &Catalog,
    s: &crate::catalog::Shard,
    tables: &[&Table],
) -> Result<Vec<u64>, CoordError> {
    let first = catalog.node(s.placements[0])?;
    under_lock(repl, first, s.id, |txn| async move {
        let mut sums: Vec<(u64, (i64, String))> = Vec::new();
        sums.push((
            s.placements[0],
            digest(repl, first, s.id, tables, txn).await?,
        ));
        for node in &s.placements[1..] {
            let n = catalog.node(*node)?;
            sums.push((*node, digest(repl, n, s.id, tables, 0).await?));
        }
        for _ in 0..RECHECKS {
            if sums.iter().all(|(_, d)| *d == sums[0].1) {
                break;
            }
            tokio::time::sleep(RECHECK_PAUSE).await;
            for (node, d) in sums.iter_mut().skip(1) {
                *d = digest(repl, catalog.node(*node)?, s.id, tables, 0).await?;
            }
        }
        // The most common rows win; among equals, the first copy's (it comes first).
        let count = |d: &(i64, String)| sums.iter().filter(|(_, x)| x == d).count();
        let keep = sums
            .iter()
            .map(|(_, d)| d)
            .max_by_key(|d| {
                (
                    count(d),
                    std::cmp::Reverse(sums.iter().position(|(_, x)| x == *d)),
                )
            })
            .cloned()
            .unwrap_or_default();
        Ok(sums
            .iter()
            .filter(|(_, d)| *d != keep)
            .map(|(node, _)| *node)
            .collect())
    })
    .await
}
