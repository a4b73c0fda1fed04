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

use super::*;

pub(super) fn statement(sql: String, params: Vec<Value>, returns_rows: bool) -> Statement {
    Statement {
        sql,
        params: params.into_iter().map(Into::into).collect(),
        returns_rows,
        lock: None,
    }
}

/// Takes a shard's SQLite write lock inside transaction `txn` (a write that changes nothing;
/// every SQL shard has the document lock table).
pub(super) fn lock_statement() -> Statement {
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
pub(super) fn group_schema(tables: &[&Table]) -> Vec<String> {
    let mut out = Vec::new();
    for t in tables {
        out.push(crate::sql::schema::shard_schema(t));
        out.extend(
            t.indexes
                .iter()
                .map(|i| crate::sql::schema::index_sql(t, i)),
        );
    }
    out
}

/// The tables stored in a group's shards.
pub(super) fn tables_of(catalog: &Catalog, group: u64) -> Vec<&Table> {
    catalog
        .tables
        .values()
        .filter(|t| t.group == group)
        .collect()
}

/// How long a fill's lease lasts, and how often its coordinator renews it.
pub(super) const FILL_LEASE: Duration = Duration::from_secs(30);

pub(super) const FILL_RENEW: Duration = Duration::from_secs(5);

/// The current Unix time in milliseconds.
pub(super) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A fill's lease, renewed while the fill makes progress.
pub(super) struct Lease {
    shard: u64,
    /// The fill's id.
    fill: u64,
    renewed: std::time::Instant,
}

impl Lease {
    fn until() -> u64 {
        unix_ms() + FILL_LEASE.as_millis() as u64
    }

    async fn keep(&mut self, repl: &Replication) -> Result<(), CoordError> {
        if self.renewed.elapsed() >= FILL_RENEW {
            repl.catalog
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
pub(super) async fn under_lock<T, Fut>(
    repl: &Replication,
    src: &Node,
    shard: u64,
    work: impl FnOnce(u64) -> Fut,
) -> Result<T, CoordError>
where
    Fut: std::future::Future<Output = Result<T, CoordError>>,
{
    let txn = crate::session::new_txn_id();
    let r = async {
        repl.cluster
            .execute(src, shard, txn, vec![lock_statement()])
            .await?;
        work(txn).await
    }
    .await;
    if let Err(e) = repl.cluster.finish_txn(src, shard, txn, false).await {
        tracing::warn!(shard, error = %e, "releasing a copy lock failed; it ends on the idle timeout");
    }
    r
}

/// A copy's schema: its tables and indexes as SQLite declares them.
pub(super) async fn schema_of(
    repl: &Replication,
    node: &Node,
    shard: u64,
    txn: u64,
) -> Result<Vec<Vec<tessera_shared::proto::Value>>, CoordError> {
    let st = statement(
        "SELECT type, name, sql FROM main.sqlite_schema WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type, name".into(),
        vec![],
        true,
    );
    Ok(repl
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
pub(super) async fn fill(
    repl: &Replication,
    shard: u64,
    source: u64,
    target: u64,
    leaving: Option<u64>,
) -> Result<u64, CoordError> {
    // First the reservation: a second fill of the shard is refused here.
    let id = crate::session::new_txn_id();
    repl.catalog
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
    let catalog = repl.catalog.snapshot();
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
        under_lock(repl, src, shard, |_| async {
            let _ = repl.cluster.drop_shard(dst, shard).await;
            repl
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
            let fenced = repl.cluster.fence(catalog.node(*p)?, shard, true).await;
            if *p == source {
                fenced?;
            }
        }
        let tables = tables_of(&catalog, group);
        let mut rows = 0;
        let keyed = tables.iter().all(|t| !t.primary_key.is_empty());
        if keyed {
            for t in &tables {
                rows += copy_table_in_batches(repl, src, dst, shard, t, &mut lease).await?;
            }
        }
        lease.keep(repl).await?;
        // Last: compare under the source's lock (copy whole if they differ), then switch.
        under_lock(repl, src, shard, |txn| async move {
            // DDL may have run meanwhile: the tables as they are now, and the same schema on
            // both copies (a change planned before the fill began missed the new copy).
            let now = repl.catalog.snapshot();
            let tables = tables_of(&now, group);
            if schema_of(repl, src, shard, txn).await? != schema_of(repl, dst, shard, 0).await?
            {
                return Err(CoordError::Storage {
                    sqlstate: "40001".into(),
                    message: format!(
                        "the schema of shard {shard} changed while a copy was made; it is made again"
                    ),
                });
            }
            let want = digest(repl, src, shard, &tables, txn).await?;
            let same = digest(repl, dst, shard, &tables, 0)
                .await
                .is_ok_and(|d| d == want);
            if !same {
                if keyed {
                    tracing::warn!(
                        shard,
                        "the filled copy differs from its source; copying it again whole"
                    );
                }
                rows = copy_whole(repl, &tables, shard, src, dst, txn).await?;
                if digest(repl, dst, shard, &tables, 0).await? != want {
                    return Err(CoordError::Internal(format!(
                        "a new copy of shard {shard} differs from its source after a whole copy"
                    )));
                }
            }
            repl
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
        let _ = repl
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
    unfence(repl, &catalog, shard, placements.iter().copied(), leaving).await;
    filled
}

/// Lifts a shard's fence on `nodes` (but `except`).
pub(super) async fn unfence(
    repl: &Replication,
    catalog: &Catalog,
    shard: u64,
    nodes: impl Iterator<Item = u64>,
    except: Option<u64>,
) {
    for p in nodes.filter(|p| Some(*p) != except) {
        if let Ok(n) = catalog.node(p) {
            if let Err(e) = repl.cluster.fence(n, shard, false).await {
                tracing::debug!(shard, node = %n.name, error = %e, "cannot lift a fence");
            }
        }
    }
}

/// Copies one table's rows in primary-key order, one batch under the source's lock at a time
/// (see the module doc). Returns the rows copied.
pub(super) async fn copy_table_in_batches(
    repl: &Replication,
    src: &Node,
    dst: &Node,
    shard: u64,
    t: &Table,
    lease: &mut Lease,
) -> Result<u64, CoordError> {
    let (batch, pause) = (
        repl.config.repair_batch_rows.max(1),
        Duration::from_millis(repl.config.repair_pause_ms),
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
            let step = under_lock(repl, src, shard, |txn| async move {
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
                let rows: Vec<Vec<Value>> = repl
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
                repl.cluster.execute(dst, shard, 0, writes).await?;
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
        lease.keep(repl).await?;
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

pub(super) fn insert_sql(t: &Table) -> String {
    let marks: Vec<String> = (1..=t.columns.len()).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO {} VALUES ({})",
        quote(&t.name),
        marks.join(", ")
    )
}

/// Replaces every table of the target copy with the source's, read in transaction `txn`
/// (which holds the source's lock). Returns the rows copied.
pub(super) async fn copy_whole(
    repl: &Replication,
    tables: &[&Table],
    shard: u64,
    src: &Node,
    dst: &Node,
    txn: u64,
) -> Result<u64, CoordError> {
    let batch = repl.config.repair_batch_rows.max(1);
    let mut copied = 0;
    for t in tables {
        let name = quote(&t.name);
        let rows: Vec<Vec<Value>> = repl
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
        repl.cluster
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
            repl.cluster.execute(dst, shard, 0, writes).await?;
            // Keeps the lock transaction from idling out during a long copy.
            repl.cluster
                .execute(src, shard, txn, vec![lock_statement()])
                .await?;
        }
    }
    Ok(copied)
}

/// Row count and checksum of one copy of a shard: every table read in key order and hashed
/// (inside transaction `txn`, or autocommit with 0).
pub async fn digest(
    repl: &Replication,
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
        for r in repl.cluster.execute(node, shard, txn, vec![st]).await? {
            for row in r.rows {
                rows += 1;
                format!("{:?}", row.values).hash(&mut hasher);
            }
        }
    }
    Ok((rows, format!("{:016x}", hasher.finish())))
}
