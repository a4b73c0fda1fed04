//! `CREATE TABLE`: columns, keys, defaults, foreign keys, document tables and column groups.

use super::*;

/// Refuses what a document table cannot keep: it is found by a one-column primary key, and
/// its shards check neither UNIQUE, CHECK nor DEFAULT.
pub(super) fn check_document_table(t: &Table, reference: bool) -> Result<(), CoordError> {
    let refuse = |what: &str| {
        Err(CoordError::unsupported(format!(
            "{what} is not supported on a document table"
        )))
    };
    if t.primary_key.len() != 1 {
        return Err(CoordError::unsupported(
            "a document table needs a one-column PRIMARY KEY (its documents are found by it)",
        ));
    }
    if reference {
        return refuse("distribution = reference");
    }
    if !t.uniques.is_empty() {
        return refuse("UNIQUE");
    }
    if !t.checks.is_empty() {
        return refuse("CHECK");
    }
    if let Some(c) = t.columns.iter().find(|c| c.default.is_some() || c.serial) {
        return refuse(&format!("a default value (column \"{}\")", c.name));
    }
    Ok(())
}

pub(super) fn index_columns(cols: &[IndexColumn]) -> Vec<String> {
    cols.iter()
        .map(|c| match &c.column.expr {
            Expr::Identifier(i) => ident(i),
            other => other.to_string(),
        })
        .collect()
}

pub(super) fn default_sql(e: &Expr, ctx: &RewriteCtx) -> Result<String, CoordError> {
    if let Expr::Function(f) = e {
        if matches!(
            function_name(&f.name).as_str(),
            "now" | "current_timestamp" | "localtimestamp"
        ) {
            return Ok("CURRENT_TIMESTAMP".into());
        }
    }
    let mut e = e.clone();
    rewrite(&mut e, ctx)?;
    Ok(format!("({})", render(&e)))
}

/// `CREATE TABLE`. Returns the notices for the client.
pub async fn create_table(
    engine: &Engine,
    ct: &CreateTable,
    ctx: &RewriteCtx,
) -> Result<Vec<String>, CoordError> {
    if ct.query.is_some() || ct.like.is_some() || ct.partition_of.is_some() {
        return Err(CoordError::unsupported(
            "CREATE TABLE AS / LIKE / PARTITION OF is not supported yet",
        ));
    }
    let name = table_name(&ct.name)?;
    if engine.catalog.snapshot().tables.contains_key(&name) {
        return if ct.if_not_exists {
            Ok(vec![format!(
                "relation \"{name}\" already exists, skipping"
            )])
        } else {
            Err(CoordError::DuplicateTable(name))
        };
    }
    let mut columns = Vec::new();
    let mut primary_key: Vec<String> = Vec::new();
    let mut uniques: Vec<Vec<String>> = Vec::new();
    let mut checks: Vec<String> = Vec::new();
    let mut declared_fks: Vec<ForeignKeyConstraint> = Vec::new();
    for cd in &ct.columns {
        let cname = ident(&cd.name);
        let ty = pg_type_of(&cd.data_type)?;
        let serial = matches!(&cd.data_type, DataType::Custom(n, _) if function_name(n).ends_with("serial") || function_name(n).starts_with("serial"));
        let mut col = Column {
            name: cname.clone(),
            ty,
            not_null: serial,
            default: None,
            serial,
            max_chars: char_limit(&cd.data_type).map(|(n, _)| n),
        };
        for o in &cd.options {
            match &o.option {
                ColumnOption::NotNull => col.not_null = true,
                ColumnOption::Null => {}
                ColumnOption::Default(e) => col.default = Some(default_sql(e, ctx)?),
                ColumnOption::PrimaryKey(_) => {
                    primary_key = vec![cname.clone()];
                    col.not_null = true;
                }
                ColumnOption::Unique(_) => uniques.push(vec![cname.clone()]),
                ColumnOption::Check(c) => {
                    let mut e = (*c.expr).clone();
                    rewrite(&mut e, ctx)?;
                    checks.push(render(&e));
                }
                ColumnOption::ForeignKey(fk) => {
                    let mut fk = fk.clone();
                    fk.columns = vec![cd.name.clone()];
                    declared_fks.push(fk);
                }
                ColumnOption::Generated {
                    generation_expr: None,
                    ..
                } => {
                    col.serial = true;
                    col.not_null = true;
                }
                other => {
                    return Err(CoordError::unsupported(format!(
                        "column option {other} is not supported yet"
                    )))
                }
            }
        }
        columns.push(col);
    }
    for c in &ct.constraints {
        match c {
            TableConstraint::PrimaryKey(pk) => primary_key = index_columns(&pk.columns),
            TableConstraint::Unique(u) => uniques.push(index_columns(&u.columns)),
            TableConstraint::Check(ch) => {
                let mut e = (*ch.expr).clone();
                rewrite(&mut e, ctx)?;
                checks.push(render(&e));
            }
            TableConstraint::ForeignKey(fk) => declared_fks.push(fk.clone()),
            other => {
                return Err(CoordError::unsupported(format!(
                    "table constraint {other} is not supported yet"
                )))
            }
        }
    }
    for pk in &primary_key {
        let col = columns
            .iter_mut()
            .find(|c| &c.name == pk)
            .ok_or_else(|| CoordError::UndefinedColumn(pk.clone()))?;
        col.not_null = true;
    }
    let opts = table_options(&ct.table_options)?;
    let distribution = match &ct.partition_by {
        Some(e) => match e.as_ref() {
            Expr::Function(f) => {
                let method = function_name(&f.name);
                let cols: Vec<String> = match &f.args {
                    FunctionArguments::List(l) => l
                        .args
                        .iter()
                        .map(|a| a.to_string().to_lowercase().trim_matches('"').to_string())
                        .collect(),
                    _ => vec![],
                };
                let [column] = cols.as_slice() else {
                    return Err(CoordError::unsupported(
                        "partitioning on several columns is not supported yet",
                    ));
                };
                if !columns.iter().any(|c| &c.name == column) {
                    return Err(CoordError::UndefinedColumn(column.clone()));
                }
                match method.as_str() {
                    "hash" => Distribution::Hash {
                        column: column.clone(),
                    },
                    "range" => Distribution::Range {
                        column: column.clone(),
                    },
                    other => {
                        return Err(CoordError::unsupported(format!(
                            "PARTITION BY {} is not supported (use HASH or RANGE)",
                            other.to_uppercase()
                        )))
                    }
                }
            }
            other => {
                return Err(CoordError::unsupported(format!(
                    "PARTITION BY {other} is not supported"
                )))
            }
        },
        None if opts.reference => Distribution::Reference,
        None => match primary_key.first() {
            Some(pk) => Distribution::Hash { column: pk.clone() },
            None => Distribution::Single,
        },
    };
    if let Some(dc) = distribution.column() {
        for key in std::iter::once(&primary_key)
            .filter(|k| !k.is_empty())
            .chain(uniques.iter())
        {
            if !key.iter().any(|k| k == dc) {
                return Err(CoordError::unsupported(format!(
                    "unique constraints on a distributed table must include its distribution column \"{dc}\""
                )));
            }
        }
    }
    let mut table = Table {
        name: name.clone(),
        oid: 0,
        columns,
        primary_key,
        distribution,
        group: 0,
        indexes: vec![],
        uniques,
        checks,
        foreign_keys: vec![],
        cache: opts.cache,
        storage: opts.storage,
        column_groups: vec![],
        part_of: None,
        attributes_of: None,
        revision: 0,
    };
    let catalog = engine.catalog.snapshot();
    for fk in &declared_fks {
        let resolved = foreign_key(&table, &catalog, fk)?;
        table.foreign_keys.push(resolved);
    }
    let notices = table
        .foreign_keys
        .iter()
        .map(|fk| {
            format!(
                "foreign key \"{}\" is recorded but not enforced: Tessera does not check references across shards",
                fk.name
            )
        })
        .collect();
    if opts.replicas.unwrap_or(engine.config.default_replicas) > 1
        && table.storage == Storage::Document
    {
        // A document table's copies compute its defaults each (their writes are not recorded
        // as row changes): only deterministic ones keep copies equal.
        for cd in &ct.columns {
            for o in &cd.options {
                if let ColumnOption::Default(e) = &o.option {
                    let time = matches!(e, Expr::Function(f) if matches!(function_name(&f.name).as_str(), "now" | "current_timestamp" | "localtimestamp" | "transaction_timestamp" | "statement_timestamp" | "clock_timestamp"));
                    if let Some(f) =
                        crate::planner::volatile_function(e).or(time.then(|| "now".to_string()))
                    {
                        return Err(CoordError::unsupported(format!(
                            "DEFAULT {f}() on a replicated document table: every copy would compute its own value; give the value in each INSERT (now() in a statement is one value for every copy), or keep one copy with WITH (replicas = 1)"
                        )));
                    }
                }
            }
        }
    }
    if table.storage == Storage::Document {
        check_document_table(&table, opts.reference)?;
    }
    if let Some(spec) = opts.column_groups.clone() {
        create_column_groups(engine, table, opts, &spec).await?;
        return Ok(notices);
    }
    let schema = shard_schema(&table);
    place_table(engine, table, opts, vec![schema], false).await?;
    Ok(notices)
}

/// Creates a vertically partitioned table: one table per column group (the primary key and
/// the group's columns), each with shards of its own starting on another node, then the
/// table itself, which only the planner sees (see `planner::vertical`).
pub(super) async fn create_column_groups(
    engine: &Engine,
    mut table: Table,
    opts: TableOptions,
    spec: &str,
) -> Result<(), CoordError> {
    use crate::planner::vertical::{group_table, parse_groups};
    let refuse = |what: &str| {
        Err(CoordError::unsupported(format!(
            "{what} on a table with column groups is not supported yet"
        )))
    };
    if opts.reference {
        return refuse("distribution = reference");
    }
    if !table.uniques.is_empty() || !table.checks.is_empty() || !table.foreign_keys.is_empty() {
        return refuse("UNIQUE, CHECK or FOREIGN KEY");
    }
    if table.columns.iter().any(|c| c.serial) {
        return refuse("a serial column");
    }
    // A document table groups its JSON column's attributes; a row table its columns.
    let groups = match table.storage {
        Storage::Document => {
            let (col, groups) = crate::planner::doc_groups::parse_attribute_groups(spec, &table)?;
            table.attributes_of = Some(col);
            groups
        }
        Storage::Rows => parse_groups(spec, &table)?,
    };
    for (i, g) in groups.iter().enumerate() {
        if engine.catalog.snapshot().tables.contains_key(&g.table) {
            return Err(CoordError::DuplicateTable(g.table.clone()));
        }
        let gt = match &table.attributes_of {
            Some(_) => crate::planner::doc_groups::group_table(&table, g),
            None => group_table(&table, g),
        };
        let schema = shard_schema(&gt);
        if let Err(e) = place_table(engine, gt, opts.clone(), vec![schema], true).await {
            // Leave nothing behind: the groups already made go again.
            let made: Vec<ObjectName> = groups[..i]
                .iter()
                .map(|g| ObjectName::from(vec![Ident::with_quote('"', g.table.clone())]))
                .collect();
            let _ = Box::pin(drop_tables(engine, &made, true, false)).await;
            return Err(e);
        }
    }
    let catalog = engine.catalog.snapshot();
    table.group = catalog.table(&groups[0].table)?.group;
    table.column_groups = groups;
    engine
        .catalog
        .propose(CatalogCommand::CreateTable {
            table,
            new_group: None,
        })
        .await?;
    Ok(())
}

/// Resolves a declared foreign key against the table being created and the catalog,
/// with PostgreSQL's checks: the referenced table exists and the referenced columns are its
/// primary key or one of its unique constraints.
pub(super) fn foreign_key(
    table: &Table,
    catalog: &crate::catalog::Catalog,
    fk: &ForeignKeyConstraint,
) -> Result<ForeignKey, CoordError> {
    let target_name = table_name(&fk.foreign_table)?;
    let target = if target_name == table.name {
        table
    } else {
        catalog
            .tables
            .get(&target_name)
            .ok_or_else(|| CoordError::UndefinedTable(target_name.clone()))?
    };
    let columns: Vec<String> = fk.columns.iter().map(ident).collect();
    for c in &columns {
        if table.column(c).is_none() {
            return Err(CoordError::UndefinedColumn(c.clone()));
        }
    }
    let referenced: Vec<String> = if fk.referred_columns.is_empty() {
        target.primary_key.clone()
    } else {
        fk.referred_columns.iter().map(ident).collect()
    };
    let invalid = |message: String| CoordError::Storage {
        sqlstate: "42830".into(),
        message,
    };
    if referenced.is_empty() {
        return Err(invalid(format!(
            "there is no primary key for referenced table \"{target_name}\""
        )));
    }
    if referenced.len() != columns.len() {
        return Err(invalid(
            "number of referencing and referenced columns for foreign key disagree".into(),
        ));
    }
    let same = |key: &Vec<String>| {
        let mut a = key.clone();
        let mut b = referenced.clone();
        a.sort();
        b.sort();
        a == b
    };
    if !same(&target.primary_key) && !target.uniques.iter().any(same) {
        return Err(invalid(format!(
            "there is no unique constraint matching given keys for referenced table \"{target_name}\""
        )));
    }
    let action = |a: &Option<ReferentialAction>| a.as_ref().map(|a| a.to_string());
    Ok(ForeignKey {
        name: fk
            .name
            .as_ref()
            .map(ident)
            .unwrap_or_else(|| format!("{}_{}_fkey", table.name, columns.join("_"))),
        columns,
        table: target_name,
        referenced,
        on_delete: action(&fk.on_delete),
        on_update: action(&fk.on_update),
    })
}
