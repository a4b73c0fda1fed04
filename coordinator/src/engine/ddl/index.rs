//! `CREATE INDEX`: SQLite indexes on columns and expressions, path indexes on documents.

use super::*;

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
