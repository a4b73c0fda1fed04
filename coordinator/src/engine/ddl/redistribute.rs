//! Re-placing an existing table: `create_distributed_table`, `create_reference_table`,
//! `ALTER TABLE ... ADD PRIMARY KEY`; a failure puts the table back as it was.

use super::*;

/// `SELECT create_distributed_table('t', 'col' [, shard_count])` and `create_reference_table('t')`:
/// re-places an existing table, moving its rows.
pub async fn redistribute(
    engine: &Engine,
    table: &str,
    distribution: Distribution,
    shards: Option<u32>,
) -> Result<(), CoordError> {
    let old = engine.catalog.snapshot().table(table)?.clone();
    if let Some(dc) = distribution.column() {
        old.column(dc)
            .ok_or_else(|| CoordError::UndefinedColumn(dc.to_string()))?;
        if !old.primary_key.is_empty() && !old.primary_key.iter().any(|k| k == dc) {
            return Err(CoordError::unsupported(format!(
                "the primary key of \"{table}\" must include the distribution column \"{dc}\""
            )));
        }
    }
    let mut new = old.clone();
    new.distribution = distribution;
    rebuild(engine, &old, new, shards).await
}

/// `ALTER TABLE t ADD PRIMARY KEY (cols)`. SQLite cannot add a key to a table, so the table is
/// rebuilt; a table created without a key or distribution becomes hash-distributed on the key's
/// first column (the documented default for undeclared tables).
pub(super) async fn add_primary_key(
    engine: &Engine,
    old: &Table,
    cols: Vec<String>,
) -> Result<(), CoordError> {
    if !old.primary_key.is_empty() {
        return Err(CoordError::Storage {
            sqlstate: "42P16".into(),
            message: format!(
                "multiple primary keys for table \"{}\" are not allowed",
                old.name
            ),
        });
    }
    for c in &cols {
        old.column(c)
            .ok_or_else(|| CoordError::UndefinedColumn(c.clone()))?;
    }
    let mut new = old.clone();
    match &old.distribution {
        Distribution::Single => {
            new.distribution = Distribution::Hash {
                column: cols[0].clone(),
            }
        }
        Distribution::Hash { column } | Distribution::Range { column }
            if !cols.contains(column) =>
        {
            return Err(CoordError::unsupported(format!("the primary key of a distributed table must include its distribution column \"{column}\"")));
        }
        _ => {}
    }
    for col in new.columns.iter_mut() {
        if cols.contains(&col.name) {
            col.not_null = true;
        }
    }
    new.primary_key = cols;
    rebuild(engine, old, new, None).await
}

/// Replaces `old` by `new` (same name): reads every row, drops the old shards' copies,
/// creates the new placement and re-inserts the rows through the routed write path.
/// A key violation found while re-inserting fails the rebuild before anything is dropped.
/// Not crash-safe: the rows are held by the coordinator while the table is re-created.
pub(super) async fn rebuild(
    engine: &Engine,
    old: &Table,
    new: Table,
    shards: Option<u32>,
) -> Result<(), CoordError> {
    let catalog = engine.catalog.snapshot();
    let old_group = catalog.group_of(old)?.clone();
    let read_targets: Vec<_> = if old_group.kind == GroupKind::Reference {
        vec![target(&old_group.shards[0])?]
    } else {
        old_group
            .shards
            .iter()
            .map(target)
            .collect::<Result<_, _>>()?
    };
    let cols: Vec<String> = old.columns.iter().map(|c| quote(&c.name)).collect();
    let mut rows: Vec<Vec<Value>> = Vec::new();
    for t in &read_targets {
        let node = catalog.node(t.node)?;
        let st = tessera_shared::proto::Statement {
            sql: format!("SELECT {} FROM {}", cols.join(", "), quote(&old.name)),
            params: vec![],
            returns_rows: true,
            lock: None,
        };
        for res in engine.cluster.execute(node, t.shard, 0, vec![st]).await? {
            rows.extend(
                res.rows
                    .into_iter()
                    .map(|row| row.values.into_iter().map(Value::from).collect::<Vec<_>>()),
            );
        }
    }
    if !new.primary_key.is_empty() {
        let key: Vec<usize> = new
            .primary_key
            .iter()
            .filter_map(|k| new.columns.iter().position(|c| &c.name == k))
            .collect();
        let mut seen = std::collections::HashSet::new();
        for r in &rows {
            let k: Vec<String> = key.iter().map(|i| format!("{:?}", r[*i])).collect();
            if key.iter().any(|i| r[*i].is_null()) {
                return Err(CoordError::Storage {
                    sqlstate: "23502".into(),
                    message: format!(
                        "column \"{}\" of relation \"{}\" contains null values",
                        new.primary_key.join(", "),
                        new.name
                    ),
                });
            }
            if !seen.insert(k) {
                return Err(CoordError::Storage {
                    sqlstate: "23505".into(),
                    message: format!(
                        "could not create unique index \"{}_pkey\": key is duplicated",
                        new.name
                    ),
                });
            }
        }
    }
    let mut schema = vec![shard_schema(&new)];
    schema.extend(old.indexes.iter().map(|i| index_sql(&new, i)));
    let replicas = old_group.shards.first().map(|s| s.placements.len() as u32);
    let opts = TableOptions {
        shards,
        replicas,
        ..Default::default()
    };
    let swapped = replace_table(engine, old, new, opts, schema, &rows).await;
    if let Err(e) = swapped {
        // Put the table back as it was, rows included, before reporting the failure.
        tracing::warn!(table = %old.name, error = %e, "re-placing a table failed; restoring it");
        let mut schema = vec![shard_schema(old)];
        schema.extend(old.indexes.iter().map(|i| index_sql(old, i)));
        let restored = replace_table(
            engine,
            old,
            old.clone(),
            former_options(old, &old_group),
            schema,
            &rows,
        )
        .await;
        if let Err(r) = restored {
            tracing::error!(table = %old.name, error = %r, "restoring a table after a failed re-placement failed");
        }
        return Err(e);
    }
    Ok(())
}

/// The options that place a table as `group` holds it now (for putting it back).
pub(super) fn former_options(table: &Table, group: &crate::catalog::Group) -> TableOptions {
    let bounds = group
        .shards
        .iter()
        .skip(1)
        .filter_map(|s| s.lower.as_ref())
        .map(|b| match b {
            crate::catalog::Bound::Int(i) => i.to_string(),
            crate::catalog::Bound::Text(t) => t.clone(),
        })
        .collect::<Vec<_>>()
        .join(",");
    TableOptions {
        shards: matches!(table.distribution, Distribution::Hash { .. })
            .then_some(group.shards.len() as u32),
        bounds: matches!(table.distribution, Distribution::Range { .. }).then_some(bounds),
        reference: table.distribution == Distribution::Reference,
        cache: table.cache,
        replicas: group.shards.first().map(|s| s.placements.len() as u32),
        ..Default::default()
    }
}

/// Drops whatever table is named `old.name` now (catalog and shards) and places `new` with
/// `rows`.
pub(super) async fn replace_table(
    engine: &Engine,
    old: &Table,
    new: Table,
    opts: TableOptions,
    schema: Vec<String>,
    rows: &[Vec<Value>],
) -> Result<(), CoordError> {
    let current = engine.catalog.snapshot().table(&old.name).ok().cloned();
    if let Some(current) = current {
        engine
            .catalog
            .propose(CatalogCommand::DropTable {
                name: current.name.clone(),
                cascade: false,
            })
            .await?;
        run_on_all_shards(
            engine,
            &current,
            format!("DROP TABLE IF EXISTS {}", quote(&current.name)),
        )
        .await?;
    }
    let name = new.name.clone();
    place_table(engine, new, opts, schema, false).await?;
    let placed = engine.catalog.snapshot().table(&name)?.clone();
    for chunk in rows.chunks(2000) {
        engine.insert_rows(&placed, chunk).await?;
    }
    Ok(())
}
