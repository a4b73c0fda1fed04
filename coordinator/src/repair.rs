//! Re-replication: a replicated shard that lost a copy (its node was declared dead) gets a new
//! copy on another live node, so it is back to the table's `replicas`.
//!
//! The copy is made under the source copy's write lock, held by a transaction of its own for
//! the whole copy: no write to the shard commits meanwhile. The new placement is recorded
//! (and applied by every coordinator) before the lock is released, and a write planned before
//! it fails its commit check (`executor::copies_unchanged`, 40001) instead of missing the new
//! copy.

use crate::catalog::{Catalog, CatalogCommand, Group, Liveness, Shard};
use crate::engine::Engine;
use crate::error::CoordError;
use crate::sql::names::quote;
use tessera_shared::proto::{ShardKind, Statement};

/// Rows per batch written to the new copy.
const BATCH: usize = 200;

fn statement(sql: String, returns_rows: bool) -> Statement {
    Statement {
        sql,
        params: vec![],
        returns_rows,
    }
}

/// The shard's tables' `CREATE TABLE` and `CREATE INDEX` statements.
fn group_schema(catalog: &Catalog, group: &Group) -> Vec<String> {
    let mut out = Vec::new();
    for t in catalog.tables.values().filter(|t| t.group == group.id) {
        out.push(crate::ddl::shard_schema(t));
        out.extend(t.indexes.iter().map(|i| crate::ddl::index_sql(t, i)));
    }
    out
}

/// Takes a storage node out of service: it leaves every shard it holds a copy of, and repair
/// then re-creates those copies on other live nodes. Refused while the node holds the only
/// copy of a shard (moving single-copy shards is not built).
pub async fn decommission(engine: &Engine, name: &str) -> Result<String, CoordError> {
    let catalog = engine.catalog.snapshot();
    let node = catalog
        .nodes
        .values()
        .find(|n| n.name == name)
        .ok_or_else(|| CoordError::Storage {
            sqlstate: "42704".into(),
            message: format!("storage node \"{name}\" does not exist"),
        })?;
    let sole: Vec<u64> = catalog
        .groups
        .values()
        .filter(|g| {
            g.kind != crate::catalog::GroupKind::Reference
                && catalog.tables.values().any(|t| t.group == g.id)
        })
        .flat_map(|g| &g.shards)
        .filter(|s| s.placements == [node.id])
        .map(|s| s.id)
        .collect();
    if !sole.is_empty() {
        return Err(CoordError::unsupported(format!(
            "storage node {name} holds the only copy of shards {sole:?}: moving single-copy shards is not supported yet"
        )));
    }
    engine
        .catalog
        .propose(CatalogCommand::SetLiveness {
            name: name.to_string(),
            liveness: Liveness::Decommissioned,
        })
        .await?;
    engine
        .catalog
        .propose(CatalogCommand::DropPlacements { node: node.id })
        .await?;
    Ok(format!(
        "storage node {name} decommissioned; its copies are being re-created on other nodes"
    ))
}

/// Finds one shard below its table's `replicas` and gives it a new copy. Returns what it
/// did, or `None` when every shard has its copies (or no live node can take one).
pub async fn repair_once(engine: &Engine) -> Result<Option<String>, CoordError> {
    let catalog = engine.catalog.snapshot();
    let alive = |id: &u64| {
        catalog
            .nodes
            .get(id)
            .is_some_and(|n| n.liveness == Liveness::Alive)
    };
    for g in catalog.groups.values().filter(|g| g.replicas > 1) {
        for s in &g.shards {
            if s.placements.len() >= g.replicas as usize {
                continue;
            }
            let Some(source) = s.placements.iter().copied().find(alive) else {
                continue;
            };
            // The live node holding the fewest shard copies.
            let target = catalog
                .nodes
                .values()
                .filter(|n| n.liveness == Liveness::Alive && !s.placements.contains(&n.id))
                .min_by_key(|n| {
                    catalog
                        .groups
                        .values()
                        .flat_map(|g| &g.shards)
                        .filter(|x| x.placements.contains(&n.id))
                        .count()
                })
                .map(|n| n.id);
            let Some(target) = target else {
                continue;
            };
            copy_shard(engine, &catalog, g, s, source, target).await?;
            return Ok(Some(format!(
                "shard {} copied from node {source} to node {target}",
                s.id
            )));
        }
    }
    Ok(None)
}

async fn copy_shard(
    engine: &Engine,
    catalog: &Catalog,
    group: &Group,
    shard: &Shard,
    source: u64,
    target: u64,
) -> Result<(), CoordError> {
    let src = catalog.node(source)?;
    let dst = catalog.node(target)?;
    let tables: Vec<&crate::catalog::Table> = catalog
        .tables
        .values()
        .filter(|t| t.group == group.id)
        .collect();
    let txn = crate::session::new_txn_id();
    // Take the source copy's write lock (a write that changes nothing).
    if let Some(t) = tables.first() {
        engine
            .cluster
            .execute(
                src,
                shard.id,
                txn,
                vec![statement(
                    format!("DELETE FROM {} WHERE 0", quote(&t.name)),
                    false,
                )],
            )
            .await?;
    }
    let copied = async {
        let mut data = Vec::new();
        for t in &tables {
            let r = engine
                .cluster
                .execute(
                    src,
                    shard.id,
                    txn,
                    vec![statement(format!("SELECT * FROM {}", quote(&t.name)), true)],
                )
                .await?;
            data.push((t, r.into_iter().flat_map(|r| r.rows).collect::<Vec<_>>()));
        }
        // A fresh copy: whatever the node kept from before is stale.
        let _ = engine.cluster.drop_shard(dst, shard.id).await;
        engine
            .cluster
            .create_shard(dst, shard.id, ShardKind::Sql, group_schema(catalog, group))
            .await?;
        for (t, rows) in data {
            let width = t.columns.len();
            let marks: Vec<String> = (1..=width).map(|i| format!("?{i}")).collect();
            let sql = format!(
                "INSERT INTO {} VALUES ({})",
                quote(&t.name),
                marks.join(", ")
            );
            for chunk in rows.chunks(BATCH) {
                let stmts = chunk
                    .iter()
                    .map(|row| Statement {
                        sql: sql.clone(),
                        params: row.values.clone(),
                        returns_rows: false,
                    })
                    .collect();
                engine.cluster.execute(dst, shard.id, 0, stmts).await?;
            }
        }
        engine
            .catalog
            .propose(CatalogCommand::AddPlacement {
                shard: shard.id,
                node: target,
            })
            .await?;
        Ok::<(), CoordError>(())
    }
    .await;
    // Release the lock; writes waiting for it then see the new copy.
    if let Err(e) = engine.cluster.finish_txn(src, shard.id, txn, false).await {
        tracing::warn!(shard = shard.id, error = %e, "releasing the repair lock failed; it ends on the idle timeout");
    }
    copied
}
