//! DDL: CREATE/DROP/ALTER TABLE, CREATE INDEX and the Citus-style distribution functions.
//!
//! Each DDL statement first changes every shard, then records the change in the
//! catalog, so a table is never visible to the planner before its shards exist.

use crate::catalog::{
    Bound, CatalogCommand, Column, Distribution, ForeignKey, Group, GroupKind, Index, IndexPath,
    Shard, Storage, Table,
};
use crate::engine::Engine;
use crate::error::CoordError;
use crate::planner::target;
use crate::sql::dialect::{pg_type_of, render, rewrite, RewriteCtx};
use crate::sql::names::{function_name, ident, quote, table_name};
use sqlparser::ast::*;
use tessera_shared::proto::ShardKind;
use tessera_shared::{PgType, Value};

/// Options of `WITH (...)` Tessera reads.
/// The most shards one table may have.
pub const MAX_SHARDS: u32 = 4096;

#[derive(Debug, Clone)]
struct TableOptions {
    shards: Option<u32>,
    bounds: Option<String>,
    reference: bool,
    cache: bool,
    /// Copies of each shard, on distinct storage nodes (`WITH (replicas = N)`).
    replicas: Option<u32>,
    /// `WITH (storage = 'document')`: rows in the storage nodes' document store.
    storage: Storage,
    /// `WITH (column_groups = 'a(x, y) | b(z)')`: vertical partitioning.
    column_groups: Option<String>,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            shards: None,
            bounds: None,
            reference: false,
            cache: true,
            replicas: None,
            storage: Storage::Rows,
            column_groups: None,
        }
    }
}

/// `cache = on|off` (also true/false, yes/no, 1/0).
fn cache_option(v: &str) -> Result<bool, CoordError> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(CoordError::InvalidValue(format!(
            "cache must be on or off, not {v}"
        ))),
    }
}

fn option_text(e: &Expr) -> String {
    match e {
        Expr::Value(v) => match &v.value {
            sqlparser::ast::Value::SingleQuotedString(s) => s.clone(),
            sqlparser::ast::Value::Number(n, _) => n.clone(),
            other => other.to_string(),
        },
        other => other.to_string(),
    }
}

fn table_options(opts: &CreateTableOptions) -> Result<TableOptions, CoordError> {
    let mut out = TableOptions::default();
    let list = match opts {
        CreateTableOptions::With(l)
        | CreateTableOptions::Options(l)
        | CreateTableOptions::Plain(l) => l.as_slice(),
        _ => &[],
    };
    for o in list {
        if let SqlOption::KeyValue { key, value } = o {
            let k = function_name(key);
            let v = option_text(value);
            match k.as_str() {
                "shards" | "shard_count" => {
                    let n: u32 = v.parse().map_err(|_| {
                        CoordError::InvalidValue(format!(
                            "shards must be a positive integer, not {v}"
                        ))
                    })?;
                    if n == 0 || n > MAX_SHARDS {
                        return Err(CoordError::InvalidValue(format!(
                            "shards must be between 1 and {MAX_SHARDS}"
                        )));
                    }
                    out.shards = Some(n);
                }
                "bounds" => out.bounds = Some(v),
                "column_groups" => out.column_groups = Some(v),
                "distribution" if v == "reference" => out.reference = true,
                "cache" => out.cache = cache_option(&v)?,
                "replicas" | "replication_factor" => {
                    let n: u32 = v.parse().map_err(|_| {
                        CoordError::InvalidValue(format!(
                            "replicas must be a positive integer, not {v}"
                        ))
                    })?;
                    if n == 0 || n > 16 {
                        return Err(CoordError::InvalidValue(
                            "replicas must be between 1 and 16".into(),
                        ));
                    }
                    out.replicas = Some(n);
                }
                "storage" => {
                    out.storage = match v.to_ascii_lowercase().as_str() {
                        "document" | "documents" => Storage::Document,
                        "rows" | "row" | "sql" => Storage::Rows,
                        _ => {
                            return Err(CoordError::InvalidValue(format!(
                                "storage must be 'rows' or 'document', not {v}"
                            )))
                        }
                    }
                }
                // Postgres storage parameters (fillfactor, ...) are accepted.
                _ => {}
            }
        }
    }
    Ok(out)
}

/// `ALTER TABLE t SET (cache = off, ...)`; storage parameters other than `cache` are accepted and ignored.
async fn set_options(
    engine: &Engine,
    table: &str,
    options: &[SqlOption],
) -> Result<(), CoordError> {
    for o in options {
        if let SqlOption::KeyValue { key, value } = o {
            if function_name(key) == "cache" {
                let cache = cache_option(&option_text(value))?;
                engine
                    .catalog
                    .propose(CatalogCommand::SetTableOptions {
                        table: table.to_string(),
                        cache,
                    })
                    .await?;
            }
        }
    }
    Ok(())
}

/// A recorded index as the shards create it: a SQLite index on columns or an expression,
/// or a document table's path index (built by the storage node's `tessera_doc_index`).
pub fn index_sql(t: &Table, i: &Index) -> String {
    if let Some(p) = &i.path {
        let position = t
            .columns
            .iter()
            .position(|c| c.name == p.column)
            .unwrap_or(0);
        let keys = serde_json::to_string(&p.keys).unwrap_or_else(|_| "[]".into());
        return format!(
            "SELECT tessera_doc_index({}, {}, {}, {position}, {})",
            sql_string(&t.name),
            p.slot,
            sql_string(&i.name),
            sql_string(&keys)
        );
    }
    let on = match &i.expression {
        Some(e) => e.clone(),
        None => i
            .columns
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(", "),
    };
    format!(
        "CREATE {}INDEX IF NOT EXISTS {} ON {} ({on})",
        if i.unique { "UNIQUE " } else { "" },
        quote(&i.name),
        quote(&t.name),
    )
}

fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The shard-side declaration of a document table: a `tessera_doc` virtual table (see
/// `tessera_storage::doctab`).
fn document_schema(t: &Table) -> String {
    let cols: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            let mut s = format!("{} {}", quote(&c.name), c.ty.sqlite_type());
            if t.primary_key.first() == Some(&c.name) {
                s.push_str(" PRIMARY KEY");
            } else if c.not_null {
                s.push_str(" NOT NULL");
            }
            s
        })
        .collect();
    format!(
        "CREATE VIRTUAL TABLE IF NOT EXISTS {} USING tessera_doc({})",
        quote(&t.name),
        cols.join(", ")
    )
}

/// Refuses what a document table cannot keep: it is found by a one-column primary key, and
/// its shards check neither UNIQUE, CHECK nor DEFAULT.
fn check_document_table(t: &Table, reference: bool) -> Result<(), CoordError> {
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

/// The shard-side `CREATE TABLE` for a table.
pub fn shard_schema(t: &Table) -> String {
    if t.storage == Storage::Document {
        return document_schema(t);
    }
    let mut parts: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            let mut s = format!("{} {}", quote(&c.name), c.ty.sqlite_type());
            if c.not_null {
                s.push_str(" NOT NULL");
            }
            if let Some(d) = &c.default {
                s.push_str(&format!(" DEFAULT {d}"));
            }
            s
        })
        .collect();
    if !t.primary_key.is_empty() {
        parts.push(format!(
            "PRIMARY KEY ({})",
            t.primary_key
                .iter()
                .map(|c| quote(c))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for u in &t.uniques {
        parts.push(format!(
            "UNIQUE ({})",
            u.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ")
        ));
    }
    for c in &t.checks {
        parts.push(format!("CHECK ({c})"));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({}) STRICT",
        quote(&t.name),
        parts.join(", ")
    )
}

fn index_columns(cols: &[IndexColumn]) -> Vec<String> {
    cols.iter()
        .map(|c| match &c.column.expr {
            Expr::Identifier(i) => ident(i),
            other => other.to_string(),
        })
        .collect()
}

fn default_sql(e: &Expr, ctx: &RewriteCtx) -> Result<String, CoordError> {
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
    if opts.replicas.unwrap_or(engine.config.default_replicas) > 1 {
        // Defaults are computed by each copy: only deterministic ones keep copies equal.
        for cd in &ct.columns {
            for o in &cd.options {
                if let ColumnOption::Default(e) = &o.option {
                    let time = matches!(e, Expr::Function(f) if matches!(function_name(&f.name).as_str(), "now" | "current_timestamp" | "localtimestamp" | "transaction_timestamp" | "statement_timestamp" | "clock_timestamp"));
                    if let Some(f) =
                        crate::planner::volatile_function(e).or(time.then(|| "now".to_string()))
                    {
                        return Err(CoordError::unsupported(format!(
                            "DEFAULT {f}() on a replicated table: every copy would compute its own value; give the value in each INSERT (now() in a statement is one value for every copy), or keep one copy with WITH (replicas = 1)"
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
    place_table(engine, table, opts, vec![schema], None).await?;
    Ok(notices)
}

/// Creates a vertically partitioned table: one table per column group (the primary key and
/// the group's columns), each with shards of its own starting on another node, then the
/// table itself, which only the planner sees (see `planner::vertical`).
async fn create_column_groups(
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
    let shards = opts.shards.unwrap_or(engine.config.default_shards) as usize;
    for (i, g) in groups.iter().enumerate() {
        if engine.catalog.snapshot().tables.contains_key(&g.table) {
            return Err(CoordError::DuplicateTable(g.table.clone()));
        }
        let gt = match &table.attributes_of {
            Some(_) => crate::planner::doc_groups::group_table(&table, g),
            None => group_table(&table, g),
        };
        let schema = shard_schema(&gt);
        if let Err(e) = place_table(engine, gt, opts.clone(), vec![schema], Some(i * shards)).await
        {
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
fn foreign_key(
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

/// Chooses or creates the table's group, creates its shards, and records it.
async fn place_table(
    engine: &Engine,
    mut table: Table,
    opts: TableOptions,
    schema: Vec<String>,
    own_group_from: Option<usize>,
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
    // A column group gets shards of its own, placed from another node onwards.
    let offset = own_group_from.unwrap_or(0);
    let existing = catalog.groups.values().find(|g| {
        own_group_from.is_none()
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
            let shards = (0..count)
                .map(|i| Shard {
                    id: first + 1 + u64::from(i),
                    index: i,
                    placements: (0..replicas)
                        .map(|r| nodes[(i as usize + r + offset) % nodes.len()])
                        .collect(),
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

fn parse_bounds(s: &str, ty: PgType) -> Result<Vec<Bound>, CoordError> {
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

async fn run_on_shard(
    engine: &Engine,
    t: crate::planner::Target,
    sql: String,
) -> Result<(), CoordError> {
    let catalog = engine.catalog.snapshot();
    let node = catalog.node(t.node)?;
    let st = tessera_shared::proto::Statement {
        sql,
        params: vec![],
        returns_rows: false,
    };
    engine
        .cluster
        .execute(node, t.shard, 0, vec![st])
        .await
        .map(|_| ())
}

async fn run_on_all_shards(engine: &Engine, table: &Table, sql: String) -> Result<(), CoordError> {
    let catalog = engine.catalog.snapshot();
    for s in &catalog.group_of(table)?.shards {
        for t in replica_targets(s) {
            run_on_shard(engine, t, sql.clone()).await?;
        }
    }
    Ok(())
}

/// Every copy of a shard, those being filled included.
fn replica_targets(s: &Shard) -> impl Iterator<Item = crate::planner::Target> + '_ {
    s.write_nodes()
        .map(|node| crate::planner::Target { shard: s.id, node })
}

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

/// `CREATE INDEX`.
pub async fn create_index(engine: &Engine, ci: &CreateIndex) -> Result<(), CoordError> {
    use crate::planner::path_index::{expr_key, json_path};
    let tname = table_name(&ci.table_name)?;
    let table = engine.catalog.snapshot().table(&tname)?.clone();
    if !table.column_groups.is_empty() {
        // An index on columns of one group is that group's table's index.
        let cols = index_columns(&ci.columns);
        let group = table
            .column_groups
            .iter()
            .find(|g| {
                cols.iter()
                    .all(|c| g.columns.contains(c) || table.primary_key.contains(c))
            })
            .ok_or_else(|| {
                CoordError::unsupported(
                    "an index on a table with column groups must be on columns of one group",
                )
            })?;
        let mut on_group = ci.clone();
        on_group.table_name = ObjectName::from(vec![Ident::with_quote('"', group.table.clone())]);
        return Box::pin(create_index(engine, &on_group)).await;
    }
    // One expression (not a plain column): an expression index, or a document path index.
    let expression = match ci.columns.as_slice() {
        [c] if !matches!(&c.column.expr, Expr::Identifier(_)) => Some(&c.column.expr),
        _ => None,
    };
    let document = table.storage == Storage::Document;
    let (cols, sqlite_expr, path) = match expression {
        Some(e) if document => {
            if ci.unique {
                return Err(CoordError::unsupported(
                    "UNIQUE path indexes are not supported on document tables",
                ));
            }
            let (column, keys) = json_path(e)?;
            if !table
                .column(&column)
                .is_some_and(|c| matches!(c.ty, PgType::Json | PgType::Jsonb))
            {
                return Err(CoordError::UndefinedColumn(column));
            }
            let used: Vec<u32> = table
                .indexes
                .iter()
                .filter_map(|i| i.path.as_ref().map(|p| p.slot))
                .collect();
            let slot = (0..tessera_storage::docstore::INDEX_SLOTS as u32)
                .find(|s| !used.contains(s))
                .ok_or_else(|| {
                    CoordError::unsupported(format!(
                        "a document table has at most {} path indexes",
                        tessera_storage::docstore::INDEX_SLOTS
                    ))
                })?;
            let path = IndexPath { column, keys, slot };
            (vec![expr_key(e)], None, Some(path))
        }
        Some(_) if ci.unique && table.distribution.column().is_some() => {
            return Err(CoordError::unsupported(
                "a unique expression index on a distributed table is not supported",
            ))
        }
        Some(e) => {
            let mut rewritten = e.clone();
            rewrite(&mut rewritten, &RewriteCtx::new("", ""))?;
            (vec![expr_key(e)], Some(render(&rewritten)), None)
        }
        None if document => {
            return Err(CoordError::unsupported(
                "a document table's indexes are path indexes, such as CREATE INDEX ON t ((doc->>'key'))",
            ))
        }
        None => {
            let cols = index_columns(&ci.columns);
            for c in &cols {
                if table.column(c).is_none() {
                    return Err(CoordError::UndefinedColumn(c.clone()));
                }
            }
            if ci.unique {
                if let Some(dc) = table.distribution.column() {
                    if !cols.iter().any(|c| c == dc) {
                        return Err(CoordError::unsupported(format!("a unique index on a distributed table must include its distribution column \"{dc}\"")));
                    }
                }
            }
            (cols, None, None)
        }
    };
    let name = match &ci.name {
        Some(n) => table_name(n)?,
        None if expression.is_some() => format!("{tname}_expr_idx"),
        None => format!("{}_{}_idx", tname, cols.join("_")),
    };
    if table.indexes.iter().any(|i| i.name == name) {
        return if ci.if_not_exists {
            Ok(())
        } else {
            Err(CoordError::DuplicateTable(name))
        };
    }
    let index = Index {
        name,
        columns: cols,
        unique: ci.unique,
        expression: sqlite_expr,
        path,
    };
    run_on_all_shards(engine, &table, index_sql(&table, &index)).await?;
    engine
        .catalog
        .propose(CatalogCommand::CreateIndex {
            table: tname,
            index,
        })
        .await?;
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
async fn add_primary_key(
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
async fn rebuild(
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
fn former_options(table: &Table, group: &crate::catalog::Group) -> TableOptions {
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
async fn replace_table(
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
    place_table(engine, new, opts, schema, None).await?;
    let placed = engine.catalog.snapshot().table(&name)?.clone();
    for chunk in rows.chunks(2000) {
        engine.insert_rows(&placed, chunk).await?;
    }
    Ok(())
}

/// The shard-count argument of `create_distributed_table`: `22023` unless it is a whole
/// number of shards Tessera creates (1 to [`MAX_SHARDS`]).
pub fn shard_count_arg(arg: &str) -> Result<u32, CoordError> {
    let n: i64 = arg.trim().parse().map_err(|_| {
        CoordError::InvalidValue(format!("invalid input syntax for type integer: \"{arg}\""))
    })?;
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_SHARDS).contains(n))
        .ok_or_else(|| {
            CoordError::InvalidParameter(format!(
                "shard_count must be between 1 and {MAX_SHARDS}, not {n}"
            ))
        })
}
