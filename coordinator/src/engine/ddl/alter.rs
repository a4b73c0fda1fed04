//! `ALTER TABLE` and `DROP TABLE`.

use super::*;

/// `DROP TABLE`.
pub async fn drop_tables(
    engine: &Engine,
    names: &[ObjectName],
    if_exists: bool,
    cascade: bool,
) -> Result<(), CoordError> {
    // A table with column groups goes with its groups' tables.
    let catalog = engine.catalog.snapshot();
    let mut names: Vec<ObjectName> = names.to_vec();
    for n in names.clone() {
        if let Some(t) = table_name(&n).ok().and_then(|n| catalog.tables.get(&n)) {
            names.extend(
                t.column_groups
                    .iter()
                    .map(|g| ObjectName::from(vec![Ident::with_quote('"', g.table.clone())])),
            );
        }
    }
    let dropping: Vec<String> = names.iter().filter_map(|n| table_name(n).ok()).collect();
    // A group's table goes with its table (unless that table was never made).
    if let Some(part) = dropping.iter().find_map(|n| {
        let p = catalog.tables.get(n)?.part_of.clone()?;
        (!dropping.contains(&p) && catalog.tables.contains_key(&p)).then_some(p)
    }) {
        return Err(CoordError::unsupported(format!(
            "a column group's table is dropped with its table: DROP TABLE {part}"
        )));
    }
    for n in &names {
        let name = table_name(n)?;
        let catalog = engine.catalog.snapshot();
        let Some(table) = catalog.tables.get(&name).cloned() else {
            if if_exists {
                continue;
            }
            return Err(CoordError::UndefinedTable(name));
        };
        let dependent = catalog.tables.values().find(|t| {
            !dropping.contains(&t.name) && t.foreign_keys.iter().any(|fk| fk.table == name)
        });
        if let (Some(dep), false) = (dependent, cascade) {
            return Err(CoordError::Storage {
                sqlstate: "2BP01".into(),
                message: format!(
                    "cannot drop table {name} because other objects depend on it: a foreign key of table {}; use DROP ... CASCADE to drop the dependent objects too",
                    dep.name
                ),
            });
        }
        engine
            .catalog
            .propose(CatalogCommand::DropTable {
                name: name.clone(),
                cascade,
            })
            .await?;
        // Shards after the catalog: a failure leaves an orphan table file, never a table without shards.
        if let Err(e) = run_on_all_shards(
            engine,
            &table,
            format!("DROP TABLE IF EXISTS {}", quote(&name)),
        )
        .await
        {
            tracing::warn!(table = %name, error = %e, "dropping a shard table failed; the shard keeps an orphan copy");
        }
    }
    Ok(())
}

/// `ALTER TABLE ... ADD COLUMN`.
pub async fn alter_table(
    engine: &Engine,
    name: &ObjectName,
    ops: &[AlterTableOperation],
    ctx: &RewriteCtx,
) -> Result<(), CoordError> {
    let tname = table_name(name)?;
    let table = engine.catalog.snapshot().table(&tname)?.clone();
    if !table.column_groups.is_empty() || table.part_of.is_some() {
        return Err(CoordError::unsupported(
            "ALTER TABLE on a table with column groups is not supported yet",
        ));
    }
    if table.storage == Storage::Document
        && ops
            .iter()
            .any(|op| !matches!(op, AlterTableOperation::SetOptionsParens { .. }))
    {
        return Err(CoordError::unsupported(
            "ALTER TABLE on a document table is not supported yet (its shards declare a fixed column list)",
        ));
    }
    for op in ops {
        if let AlterTableOperation::AddConstraint {
            constraint: TableConstraint::PrimaryKey(pk),
            ..
        } = op
        {
            let current = engine.catalog.snapshot().table(&tname)?.clone();
            add_primary_key(engine, &current, index_columns(&pk.columns)).await?;
            continue;
        }
        if let AlterTableOperation::SetOptionsParens { options } = op {
            set_options(engine, &tname, options).await?;
            continue;
        }
        if let AlterTableOperation::ResetOptions { options } = op {
            if options.iter().any(|o| function_name(o) == "cache") {
                engine
                    .catalog
                    .propose(CatalogCommand::SetTableOptions {
                        table: tname.clone(),
                        cache: true,
                    })
                    .await?;
            }
            continue;
        }
        let AlterTableOperation::AddColumn {
            column_def,
            if_not_exists,
            ..
        } = op
        else {
            return Err(CoordError::unsupported(format!(
                "ALTER TABLE {op} is not supported yet"
            )));
        };
        let cname = ident(&column_def.name);
        if table.column(&cname).is_some() {
            if *if_not_exists {
                continue;
            }
            return Err(CoordError::DuplicateColumn(cname));
        }
        let ty = pg_type_of(&column_def.data_type)?;
        let mut col = Column {
            name: cname.clone(),
            ty,
            not_null: false,
            default: None,
            serial: false,
            max_chars: char_limit(&column_def.data_type).map(|(n, _)| n),
        };
        for o in &column_def.options {
            match &o.option {
                ColumnOption::NotNull => col.not_null = true,
                ColumnOption::Null => {}
                ColumnOption::Default(e) => col.default = Some(default_sql(e, ctx)?),
                other => {
                    return Err(CoordError::unsupported(format!(
                        "ADD COLUMN with {other} is not supported yet"
                    )))
                }
            }
        }
        let mut sql = format!(
            "ALTER TABLE {} ADD COLUMN {} {}",
            quote(&tname),
            quote(&cname),
            ty.sqlite_type()
        );
        if col.not_null {
            sql.push_str(" NOT NULL");
        }
        if let Some(d) = &col.default {
            sql.push_str(&format!(" DEFAULT {d}"));
        }
        run_on_all_shards(engine, &table, sql).await?;
        engine
            .catalog
            .propose(CatalogCommand::AddColumn {
                table: tname.clone(),
                column: col,
            })
            .await?;
    }
    Ok(())
}
