//! New copies of shards, made online: re-replication (a replicated shard that lost a copy gets
//! one on another live node), moves (`tessera admin shard move`), and draining or
//! decommissioning a node (every copy it holds moves elsewhere, single copies included).
//!
//! A new copy is *filled* while the shard keeps taking writes:
//! 1. The target gets an empty copy, and the catalog lists it as *filling*
//!    ([`CatalogCommand::BeginFill`]): from then on every write to the shard reaches it too, in
//!    the same checked transaction as the other copies. A write planned before that fails its
//!    commit check (`exec::copies_unchanged`, 40001) instead of missing the new copy, and
//!    the source is *fenced* so an autocommit write planned before it is refused too.
//! 2. The source's rows are copied in primary-key order, `repair_batch_rows` at a time. Each
//!    batch is read under the source's write lock and replaces its key range on the target,
//!    so it is exact at that moment, and later writes reach both copies. Between batches the
//!    lock is free (writes go on) and the copy pauses `repair_pause_ms`: the throttle.
//! 3. Under the source's lock once more, both copies are checksummed; if they differ (a write
//!    whose effect depends on rows the target did not have yet), the target is copied again
//!    whole, still under the lock. Then the copy joins the placements
//!    ([`CatalogCommand::FinishFill`]), for a move replacing the source's.
//!
//! A fill that fails is abandoned (the copy stops receiving writes) and tried again. A fill
//! left by a coordinator that died is abandoned when a metadata leader starts detecting.

use crate::catalog::{Catalog, CatalogCommand, GroupKind, Liveness, Node, Table};
use crate::engine::Engine;
use crate::error::CoordError;
use crate::sql::names::quote;
use std::time::Duration;
use tessera_shared::proto::{ShardKind, Statement};
use tessera_shared::Value;

/// How long a move's old copy stays after the switch (reads and commits planned before it
/// may still reach it), before it is deleted.
const OLD_COPY_GRACE: Duration = Duration::from_secs(5);

fn statement(sql: String, params: Vec<Value>, returns_rows: bool) -> Statement {
    Statement {
        sql,
        params: params.into_iter().map(Into::into).collect(),
        returns_rows,
    }
}

/// Takes a shard's SQLite write lock inside transaction `txn` (a write that changes nothing;
/// every SQL shard has the document lock table).
fn lock_statement() -> Statement {
    statement(
        format!(
            "UPDATE main.{} SET n = n WHERE 0",
            tessera_storage::doctab::LOCK_TABLE
        ),
        vec![],
        false,
    )
}

/// The shard's tables' `CREATE TABLE` and `CREATE INDEX` statements.
fn group_schema(tables: &[&Table]) -> Vec<String> {
    let mut out = Vec::new();
    for t in tables {
        out.push(crate::catalog::schema::shard_schema(t));
        out.extend(
            t.indexes
                .iter()
                .map(|i| crate::catalog::schema::index_sql(t, i)),
        );
    }
    out
}

/// The tables stored in a group's shards.
fn tables_of(catalog: &Catalog, group: u64) -> Vec<&Table> {
    catalog
        .tables
        .values()
        .filter(|t| t.group == group)
        .collect()
}

fn node_named<'a>(catalog: &'a Catalog, name: &str) -> Result<&'a Node, CoordError> {
    catalog
        .nodes
        .values()
        .find(|n| n.name == name)
        .ok_or_else(|| CoordError::Storage {
            sqlstate: "42704".into(),
            message: format!("storage node \"{name}\" does not exist"),
        })
}

fn alive(catalog: &Catalog, id: u64) -> bool {
    catalog
        .nodes
        .get(&id)
        .is_some_and(|n| n.liveness == Liveness::Alive)
}

/// Number of shard copies (placed or filling) on each node.
fn load(catalog: &Catalog, node: u64) -> usize {
    catalog
        .groups
        .values()
        .flat_map(|g| &g.shards)
        .filter(|s| s.write_nodes().any(|n| n == node))
        .count()
}

/// The live node holding the fewest copies, among those without a copy of `shard`.
fn least_loaded(catalog: &Catalog, shard: &crate::catalog::Shard) -> Option<u64> {
    catalog
        .nodes
        .values()
        .filter(|n| n.liveness == Liveness::Alive && !shard.write_nodes().any(|w| w == n.id))
        .min_by_key(|n| (load(catalog, n.id), n.id))
        .map(|n| n.id)
}

/// Every distributed shard (not reference) with a copy on `node`.
fn shards_on(catalog: &Catalog, node: u64) -> Vec<u64> {
    catalog
        .groups
        .values()
        .filter(|g| g.kind != GroupKind::Reference && !tables_of(catalog, g.id).is_empty())
        .flat_map(|g| &g.shards)
        .filter(|s| s.placements.contains(&node))
        .map(|s| s.id)
        .collect()
}

/// The SQL entry points: `SELECT tessera_decommission('node')`, `tessera_drain('node')`,
/// `tessera_move_shard(shard, 'to')` and `tessera_move_shard(shard, 'from', 'to')`.
pub async fn placement_call(
    engine: &Engine,
    name: &str,
    args: &[String],
) -> Result<String, CoordError> {
    let usage = || CoordError::Syntax(format!("wrong arguments for {name}"));
    match (name, args) {
        ("tessera_decommission", [node]) => decommission(engine, node).await,
        ("tessera_drain", [node]) => drain(engine, node).await,
        ("tessera_move_shard", [shard, rest @ ..]) if !rest.is_empty() && rest.len() <= 2 => {
            let shard: u64 = shard.trim().parse().map_err(|_| usage())?;
            let (from, to) = match rest {
                [to] => (None, to),
                [from, to] => (Some(from.as_str()), to),
                _ => return Err(usage()),
            };
            move_shard(engine, shard, from, to).await
        }
        _ => Err(usage()),
    }
}

/// Takes a storage node out of service: no new copy lands on it, and every copy it holds
/// moves to another live node online (single copies included); replicated shards keep all
/// their copies throughout.
pub async fn decommission(engine: &Engine, name: &str) -> Result<String, CoordError> {
    let catalog = engine.catalog.snapshot();
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
    engine
        .catalog
        .propose(CatalogCommand::SetLiveness {
            name: name.to_string(),
            liveness: Liveness::Decommissioned,
        })
        .await?;
    match drain(engine, name).await {
        Ok(moved) => Ok(format!("storage node {name} decommissioned; {moved}")),
        Err(e) => {
            // The node stays in service; copies moved so far stay where they are (each is a
            // complete copy).
            let undo = CatalogCommand::SetLiveness {
                name: name.to_string(),
                liveness: before,
            };
            if let Err(u) = engine.catalog.propose(undo).await {
                tracing::error!(node = %name, error = %u, "could not take back a failed decommission");
            }
            Err(e)
        }
    }
}

/// `53400`: no other live node can take a copy of `shard`.
fn no_room(shard: u64) -> CoordError {
    CoordError::Storage {
        sqlstate: "53400".into(),
        message: format!("no other live storage node can take shard {shard}"),
    }
}

/// Moves every copy `name` holds to other live nodes, online; the node stays in service.
pub async fn drain(engine: &Engine, name: &str) -> Result<String, CoordError> {
    let mut moved = 0;
    loop {
        let catalog = engine.catalog.snapshot();
        let node = node_named(&catalog, name)?.id;
        let Some(shard) = shards_on(&catalog, node).into_iter().next() else {
            break;
        };
        let (_, s) = catalog
            .shard(shard)
            .ok_or_else(|| CoordError::Internal(format!("no shard {shard}")))?;
        let target = least_loaded(&catalog, s).ok_or_else(|| no_room(shard))?;
        move_copy(engine, shard, node, target).await?;
        moved += 1;
    }
    Ok(format!("{moved} shard copies moved off {name}"))
}

/// `tessera admin shard move`: moves shard `shard`'s copy on `from` (by default its first)
/// to `to`.
pub async fn move_shard(
    engine: &Engine,
    shard: u64,
    from: Option<&str>,
    to: &str,
) -> Result<String, CoordError> {
    let catalog = engine.catalog.snapshot();
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
    let rows = move_copy(engine, shard, from, to_node.id).await?;
    Ok(format!("shard {shard} moved to {to} ({rows} rows)"))
}

/// The copy a fill reads from: the shard's first copy while its node answers. Every writer
/// takes that copy's lock before any other, so holding it while the new copy is written
/// cannot deadlock. Else the first live copy.
async fn lock_head(
    engine: &Engine,
    catalog: &Catalog,
    s: &crate::catalog::Shard,
) -> Result<u64, CoordError> {
    if let Some(first) = s.placements.first() {
        if engine.cluster.stats(catalog.node(*first)?).await.is_ok() {
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
async fn move_copy(engine: &Engine, shard: u64, from: u64, to: u64) -> Result<u64, CoordError> {
    let catalog = engine.catalog.snapshot();
    let (_, s) = catalog
        .shard(shard)
        .ok_or_else(|| CoordError::Internal(format!("no shard {shard}")))?;
    let source = lock_head(engine, &catalog, s).await?;
    let rows = fill(engine, shard, source, to, Some(from)).await?;
    // The old copy goes once reads and commits planned before the switch are done.
    let old = catalog.node(from)?.clone();
    let cluster = engine.cluster.clone();
    let store = engine.catalog.clone();
    tokio::spawn(async move {
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

/// Finds one shard below its table's `replicas` and fills a new copy. Returns what it did, or
/// `None` when every shard has its copies (or no live node can take one).
pub async fn repair_once(engine: &Engine) -> Result<Option<String>, CoordError> {
    let catalog = engine.catalog.snapshot();
    for g in catalog.groups.values().filter(|g| g.replicas > 1) {
        for s in &g.shards {
            if s.placements.len() >= g.replicas as usize || !s.filling.is_empty() {
                continue;
            }
            let Ok(source) = lock_head(engine, &catalog, s).await else {
                continue;
            };
            let Some(target) = least_loaded(&catalog, s) else {
                continue;
            };
            let rows = fill(engine, s.id, source, target, None).await?;
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
pub async fn abandon_fills(engine: &Engine, all: bool) {
    let catalog = engine.catalog.snapshot();
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
            match engine.catalog.propose(cmd).await {
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
        unfence(engine, &catalog, s.id, s.placements.iter().copied(), None).await;
    }
}

/// How long a fill's lease lasts, and how often its coordinator renews it.
const FILL_LEASE: Duration = Duration::from_secs(30);
const FILL_RENEW: Duration = Duration::from_secs(5);

/// The current Unix time in milliseconds.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A fill's lease, renewed while the fill makes progress.
struct Lease {
    shard: u64,
    /// The fill's id.
    fill: u64,
    renewed: std::time::Instant,
}

impl Lease {
    fn until() -> u64 {
        unix_ms() + FILL_LEASE.as_millis() as u64
    }

    async fn keep(&mut self, engine: &Engine) -> Result<(), CoordError> {
        if self.renewed.elapsed() >= FILL_RENEW {
            engine
                .catalog
                .propose(CatalogCommand::RenewFill {
                    shard: self.shard,
                    lease_until_ms: Self::until(),
                    fill: self.fill,
                })
                .await?;
            self.renewed = std::time::Instant::now();
        }
        Ok(())
    }
}

/// Runs `work` while a transaction of its own (given to `work`) holds the write lock of the
/// copy of `shard` on `src`; the lock is released after, whatever the outcome.
async fn under_lock<T, Fut>(
    engine: &Engine,
    src: &Node,
    shard: u64,
    work: impl FnOnce(u64) -> Fut,
) -> Result<T, CoordError>
where
    Fut: std::future::Future<Output = Result<T, CoordError>>,
{
    let txn = crate::session::new_txn_id();
    let r = async {
        engine
            .cluster
            .execute(src, shard, txn, vec![lock_statement()])
            .await?;
        work(txn).await
    }
    .await;
    if let Err(e) = engine.cluster.finish_txn(src, shard, txn, false).await {
        tracing::warn!(shard, error = %e, "releasing a copy lock failed; it ends on the idle timeout");
    }
    r
}

/// A copy's schema: its tables and indexes as SQLite declares them.
async fn schema_of(
    engine: &Engine,
    node: &Node,
    shard: u64,
    txn: u64,
) -> Result<Vec<Vec<tessera_shared::proto::Value>>, CoordError> {
    let st = statement(
        "SELECT type, name, sql FROM main.sqlite_schema WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type, name".into(),
        vec![],
        true,
    );
    Ok(engine
        .cluster
        .execute(node, shard, txn, vec![st])
        .await?
        .into_iter()
        .flat_map(|r| r.rows)
        .map(|r| r.values)
        .collect())
}

/// Fills a new copy of `shard` on `target` from `source` (see the module doc); the copy then
/// joins the placements, replacing `leaving`'s. Returns the rows copied.
async fn fill(
    engine: &Engine,
    shard: u64,
    source: u64,
    target: u64,
    leaving: Option<u64>,
) -> Result<u64, CoordError> {
    // First the reservation: a second fill of the shard is refused here.
    let id = crate::session::new_txn_id();
    engine
        .catalog
        .propose(CatalogCommand::BeginFill {
            shard,
            node: target,
            lease_until_ms: Lease::until(),
            fill: id,
        })
        .await?;
    let mut lease = Lease {
        shard,
        fill: id,
        renewed: std::time::Instant::now(),
    };
    let catalog = engine.catalog.snapshot();
    let (group, s) = catalog
        .shard(shard)
        .ok_or_else(|| CoordError::Internal(format!("no shard {shard}")))?;
    let group = group.id;
    let placements = s.placements.clone();
    let src = catalog.node(source)?;
    let dst = catalog.node(target)?;
    let filled = async {
        // A fresh copy (whatever the node kept from before is stale), made while no write
        // can reach it: every writer holds the source's lock before it writes a copy.
        under_lock(engine, src, shard, |_| async {
            let _ = engine.cluster.drop_shard(dst, shard).await;
            engine
                .cluster
                .create_shard(
                    dst,
                    shard,
                    ShardKind::Sql,
                    group_schema(&tables_of(&catalog, group)),
                )
                .await
        })
        .await?;
        for p in &placements {
            let fenced = engine.cluster.fence(catalog.node(*p)?, shard, true).await;
            if *p == source {
                fenced?;
            }
        }
        let tables = tables_of(&catalog, group);
        let mut rows = 0;
        let keyed = tables.iter().all(|t| !t.primary_key.is_empty());
        if keyed {
            for t in &tables {
                rows += copy_table_in_batches(engine, src, dst, shard, t, &mut lease).await?;
            }
        }
        lease.keep(engine).await?;
        // Last: compare under the source's lock (copy whole if they differ), then switch.
        under_lock(engine, src, shard, |txn| async move {
            // DDL may have run meanwhile: the tables as they are now, and the same schema on
            // both copies (a change planned before the fill began missed the new copy).
            let now = engine.catalog.snapshot();
            let tables = tables_of(&now, group);
            if schema_of(engine, src, shard, txn).await? != schema_of(engine, dst, shard, 0).await?
            {
                return Err(CoordError::Storage {
                    sqlstate: "40001".into(),
                    message: format!(
                        "the schema of shard {shard} changed while a copy was made; it is made again"
                    ),
                });
            }
            let want = digest(engine, src, shard, &tables, txn).await?;
            let same = digest(engine, dst, shard, &tables, 0)
                .await
                .is_ok_and(|d| d == want);
            if !same {
                if keyed {
                    tracing::warn!(
                        shard,
                        "the filled copy differs from its source; copying it again whole"
                    );
                }
                rows = copy_whole(engine, &tables, shard, src, dst, txn).await?;
                if digest(engine, dst, shard, &tables, 0).await? != want {
                    return Err(CoordError::Internal(format!(
                        "a new copy of shard {shard} differs from its source after a whole copy"
                    )));
                }
            }
            engine
                .catalog
                .propose(CatalogCommand::FinishFill {
                    shard,
                    node: target,
                    leaving,
                    source: Some(source),
                    fill: id,
                })
                .await?;
            tracing::info!(
                shard,
                source,
                target,
                rows,
                copied_again_whole = !same,
                "new shard copy filled"
            );
            Ok(rows)
        })
        .await
    }
    .await;
    if filled.is_err() {
        let _ = engine
            .catalog
            .propose(CatalogCommand::AbandonFill {
                shard,
                node: target,
                fill: id,
            })
            .await;
    }
    // A leaving copy stays fenced until it is deleted: a write planned before the fill and
    // arriving only now must not land there alone.
    let leaving = leaving.filter(|_| filled.is_ok());
    unfence(engine, &catalog, shard, placements.iter().copied(), leaving).await;
    filled
}

/// Lifts a shard's fence on `nodes` (but `except`).
async fn unfence(
    engine: &Engine,
    catalog: &Catalog,
    shard: u64,
    nodes: impl Iterator<Item = u64>,
    except: Option<u64>,
) {
    for p in nodes.filter(|p| Some(*p) != except) {
        if let Ok(n) = catalog.node(p) {
            if let Err(e) = engine.cluster.fence(n, shard, false).await {
                tracing::debug!(shard, node = %n.name, error = %e, "cannot lift a fence");
            }
        }
    }
}

/// Copies one table's rows in primary-key order, one batch under the source's lock at a time
/// (see the module doc). Returns the rows copied.
async fn copy_table_in_batches(
    engine: &Engine,
    src: &Node,
    dst: &Node,
    shard: u64,
    t: &Table,
    lease: &mut Lease,
) -> Result<u64, CoordError> {
    let (batch, pause) = (
        engine.config.liveness.repair_batch_rows.max(1),
        Duration::from_millis(engine.config.liveness.repair_pause_ms),
    );
    let key_cols: Vec<usize> = t
        .primary_key
        .iter()
        .map(|k| {
            t.columns
                .iter()
                .position(|c| c.name == *k)
                .ok_or_else(|| CoordError::Internal(format!("key column {k} missing")))
        })
        .collect::<Result<_, _>>()?;
    let order = t
        .primary_key
        .iter()
        .map(|k| quote(k))
        .collect::<Vec<_>>()
        .join(", ");
    let key = format!("({order})");
    let marks = |from: usize| {
        format!(
            "({})",
            (from..from + key_cols.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let name = quote(&t.name);
    let insert = insert_sql(t);
    let mut after: Option<Vec<Value>> = None;
    let mut copied = 0u64;
    let (key_cols, order, key, marks, name, insert) =
        (&key_cols, &order, &key, &marks, &name, &insert);
    loop {
        let mut attempt = 0;
        let step = loop {
            let after = &after;
            let step = under_lock(engine, src, shard, |txn| async move {
                let read = match &after {
                    None => statement(
                        format!("SELECT * FROM {name} ORDER BY {order} LIMIT {batch}"),
                        vec![],
                        true,
                    ),
                    Some(k) => statement(
                        format!(
                            "SELECT * FROM {name} WHERE {key} > {} ORDER BY {order} LIMIT {batch}",
                            marks(1)
                        ),
                        k.clone(),
                        true,
                    ),
                };
                let rows: Vec<Vec<Value>> = engine
                    .cluster
                    .execute(src, shard, txn, vec![read])
                    .await?
                    .into_iter()
                    .flat_map(|r| r.rows)
                    .map(|r| r.values.into_iter().map(Value::from).collect())
                    .collect();
                let upper: Option<Vec<Value>> = (rows.len() >= batch)
                    .then(|| rows.last())
                    .flatten()
                    .map(|r| key_cols.iter().map(|i| r[*i].clone()).collect());
                // The target's rows in this key range become exactly the source's.
                let (range, params) = match (&after, &upper) {
                    (None, None) => (String::new(), vec![]),
                    (Some(a), None) => (format!(" WHERE {key} > {}", marks(1)), a.clone()),
                    (None, Some(u)) => (format!(" WHERE {key} <= {}", marks(1)), u.clone()),
                    (Some(a), Some(u)) => (
                        format!(
                            " WHERE {key} > {} AND {key} <= {}",
                            marks(1),
                            marks(1 + key_cols.len())
                        ),
                        a.iter().chain(u).cloned().collect(),
                    ),
                };
                let mut writes = vec![statement(
                    format!("DELETE FROM {name}{range}"),
                    params,
                    false,
                )];
                let n = rows.len() as u64;
                writes.extend(
                    rows.into_iter()
                        .map(|r| statement(insert.clone(), r, false)),
                );
                engine.cluster.execute(dst, shard, 0, writes).await?;
                Ok((upper, n))
            })
            .await;
            // The copy's lock transaction is the youngest: it gives way to older writers
            // (40001) and tries again, rather than starting the whole copy over.
            match step {
                Err(e) if e.sqlstate() == "40001" && attempt < 20 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
                }
                r => break r,
            }
        };
        let (upper, n) = step?;
        lease.keep(engine).await?;
        copied += n;
        match upper {
            Some(u) => after = Some(u),
            None => return Ok(copied),
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

fn insert_sql(t: &Table) -> String {
    let marks: Vec<String> = (1..=t.columns.len()).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO {} VALUES ({})",
        quote(&t.name),
        marks.join(", ")
    )
}

/// Replaces every table of the target copy with the source's, read in transaction `txn`
/// (which holds the source's lock). Returns the rows copied.
async fn copy_whole(
    engine: &Engine,
    tables: &[&Table],
    shard: u64,
    src: &Node,
    dst: &Node,
    txn: u64,
) -> Result<u64, CoordError> {
    let batch = engine.config.liveness.repair_batch_rows.max(1);
    let mut copied = 0;
    for t in tables {
        let name = quote(&t.name);
        let rows: Vec<Vec<Value>> = engine
            .cluster
            .execute(
                src,
                shard,
                txn,
                vec![statement(format!("SELECT * FROM {name}"), vec![], true)],
            )
            .await?
            .into_iter()
            .flat_map(|r| r.rows)
            .map(|r| r.values.into_iter().map(Value::from).collect())
            .collect();
        engine
            .cluster
            .execute(
                dst,
                shard,
                0,
                vec![statement(format!("DELETE FROM {name}"), vec![], false)],
            )
            .await?;
        copied += rows.len() as u64;
        let insert = insert_sql(t);
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let writes: Vec<Statement> = rows
                .by_ref()
                .take(batch)
                .map(|r| statement(insert.clone(), r, false))
                .collect();
            engine.cluster.execute(dst, shard, 0, writes).await?;
            // Keeps the lock transaction from idling out during a long copy.
            engine
                .cluster
                .execute(src, shard, txn, vec![lock_statement()])
                .await?;
        }
    }
    Ok(copied)
}

/// Row count and checksum of one copy of a shard: every table read in key order and hashed
/// (inside transaction `txn`, or autocommit with 0).
pub async fn digest(
    engine: &Engine,
    node: &Node,
    shard: u64,
    tables: &[&Table],
    txn: u64,
) -> Result<(i64, String), CoordError> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut rows = 0i64;
    for t in tables {
        let key = if t.primary_key.is_empty() {
            "rowid".to_string()
        } else {
            t.primary_key
                .iter()
                .map(|k| quote(k))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let st = statement(
            format!("SELECT * FROM {} ORDER BY {key}", quote(&t.name)),
            vec![],
            true,
        );
        t.name.hash(&mut hasher);
        for r in engine.cluster.execute(node, shard, txn, vec![st]).await? {
            for row in r.rows {
                rows += 1;
                format!("{:?}", row.values).hash(&mut hasher);
            }
        }
    }
    Ok((rows, format!("{:016x}", hasher.finish())))
}
