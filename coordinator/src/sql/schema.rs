//! A table's schema as its shards declare it: the SQLite `CREATE TABLE` (a `STRICT` table, or a
//! document table's virtual table) and its indexes. DDL creates shards with it; repair and moves
//! compare and re-create copies with it.

use crate::catalog::{Index, Storage, Table};
use crate::sql::names::quote;
use tessera_shared::PgType;

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
            if let Some(n) = c.max_chars {
                // Fails 22001 past `n` characters (`tessera_storage::pgstr`).
                let ty = match c.ty {
                    PgType::Bpchar => "character",
                    _ => "character varying",
                };
                s.push_str(&format!(
                    " CHECK (tessera_max_chars({}, {n}, '{ty}({n})'))",
                    quote(&c.name)
                ));
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
