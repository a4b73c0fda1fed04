//! The functions catalog queries call, registered on the scratch database: `format_type`,
//! `pg_get_userbyid`, `pg_get_indexdef`, `pg_get_constraintdef`, `pg_get_expr`,
//! `pg_table_is_visible`, `has_*_privilege`, `quote_ident`, `array_to_string`, the `reg*`
//! conversions, regular-expression matching and `= ANY(array)`.

use super::tables::{constraints, indexdef, indexes, owner_name, typname};
use crate::catalog::Catalog;
use crate::exec::scratch::Setup;
use crate::sql::text::{array_elements, array_text};
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::Connection;
use std::collections::HashMap;
use std::sync::Arc;
use tessera_shared::PgType;

/// Functions only the catalog emulation provides: a table-less query calling one runs there.
pub fn is_catalog_function(name: &sqlparser::ast::ObjectName) -> bool {
    let full = crate::sql::names::function_name(name);
    let n = full.rsplit('.').next().unwrap_or_default();
    matches!(
        n,
        "to_regclass"
            | "to_regtype"
            | "to_regnamespace"
            | "to_regrole"
            | "format_type"
            | "pg_get_userbyid"
            | "pg_get_indexdef"
            | "pg_get_constraintdef"
            | "pg_get_expr"
            | "pg_partition_ancestors"
            | "pg_table_is_visible"
            | "pg_encoding_to_char"
            | "current_setting"
            | "obj_description"
            | "col_description"
            | "has_table_privilege"
            | "has_schema_privilege"
            | "has_database_privilege"
            | "pg_size_pretty"
            | "pg_relation_size"
            | "pg_total_relation_size"
            | "pg_database_size"
            | "current_schemas"
    )
}

/// What the functions look up, captured from the catalog when the query starts.
#[derive(Default)]
struct Lookups {
    /// Relation OID → name (tables and indexes), and back.
    relations: HashMap<i64, String>,
    relation_oids: HashMap<String, i64>,
    /// Role OID → name.
    roles: HashMap<i64, String>,
    /// Index OID → `CREATE INDEX …`.
    indexdefs: HashMap<i64, String>,
    /// Constraint OID → `PRIMARY KEY (…)`, `FOREIGN KEY (…) REFERENCES …`.
    constraintdefs: HashMap<i64, String>,
}

fn lookups(catalog: &Catalog) -> Lookups {
    let mut l = Lookups::default();
    for t in catalog.tables.values() {
        l.relations.insert(t.oid.into(), t.name.clone());
        l.relation_oids.insert(t.name.clone(), t.oid.into());
        for ix in indexes(t) {
            l.indexdefs.insert(ix.oid, indexdef(t, &ix));
            l.relations.insert(ix.oid, ix.name.clone());
            l.relation_oids.insert(ix.name.clone(), ix.oid);
        }
        for c in constraints(t, catalog) {
            l.constraintdefs.insert(c.oid, c.def);
        }
    }
    l.roles.insert(
        super::tables::DATABASE_OWNER_ROLE,
        "pg_database_owner".into(),
    );
    if catalog.roles.is_empty() {
        l.roles
            .insert(super::tables::BOOTSTRAP_ROLE, owner_name(catalog));
    }
    for r in catalog.roles.values() {
        l.roles.insert(r.oid.into(), r.name.clone());
    }
    l
}

fn text(ctx: &Context<'_>, i: usize) -> Option<String> {
    match ctx.get_raw(i) {
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Integer(n) => Some(n.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        _ => None,
    }
}

fn int(ctx: &Context<'_>, i: usize) -> Option<i64> {
    match ctx.get_raw(i) {
        ValueRef::Integer(n) => Some(n),
        ValueRef::Text(t) => std::str::from_utf8(t).ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// `'public.users'`, `'"Users"'`, `'users'` → the catalog name.
fn unqualify(name: &str) -> String {
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.starts_with('"') && last.ends_with('"') && last.len() >= 2 {
        last[1..last.len() - 1].replace("\"\"", "\"")
    } else {
        last.to_lowercase()
    }
}

/// Array text `{a,b}` → elements.
fn array_items(s: &str) -> Vec<String> {
    array_elements(s).into_iter().flatten().collect()
}

/// An array element as SQLite sees it: canonical integers as integers, so `attnum = 0`
/// compares as PostgreSQL's `int2` would.
fn element_value(item: Option<&String>) -> SqlValue {
    match item {
        None => SqlValue::Null,
        Some(x) => match x.parse::<i64>() {
            Ok(n) if n.to_string() == *x => SqlValue::Integer(n),
            _ => SqlValue::Text(x.clone()),
        },
    }
}

/// `array_agg(x ORDER BY y)`: values → array text; NULL over no rows, as in PostgreSQL.
struct ArrayAgg;

impl rusqlite::functions::Aggregate<Vec<Option<String>>, Option<String>> for ArrayAgg {
    fn init(&self, _ctx: &mut Context<'_>) -> rusqlite::Result<Vec<Option<String>>> {
        Ok(Vec::new())
    }

    fn step(&self, ctx: &mut Context<'_>, acc: &mut Vec<Option<String>>) -> rusqlite::Result<()> {
        acc.push(text(ctx, 0));
        Ok(())
    }

    fn finalize(
        &self,
        _ctx: &mut Context<'_>,
        acc: Option<Vec<Option<String>>>,
    ) -> rusqlite::Result<Option<String>> {
        Ok(acc.map(|items| array_text(&items)))
    }
}

/// `(3)` → `3`, when the outer parentheses enclose the whole expression.
fn unparenthesize(e: &str) -> String {
    let t = e.trim();
    if !(t.starts_with('(') && t.ends_with(')')) {
        return t.to_string();
    }
    let mut depth = 0i32;
    for (k, c) in t.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 && k != t.len() - 1 {
                    return t.to_string();
                }
            }
            _ => {}
        }
    }
    t[1..t.len() - 1].trim().to_string()
}

/// Registers every function on `conn`; `settings` are the session's.
fn register(
    conn: &Connection,
    l: Arc<Lookups>,
    settings: std::collections::BTreeMap<String, String>,
) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "current_setting",
        -1,
        FunctionFlags::SQLITE_UTF8,
        move |ctx| Ok(text(ctx, 0).and_then(|n| settings.get(&n.to_lowercase()).cloned())),
    )?;
    let det = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    let constant = |name: &str, v: SqlValue| -> rusqlite::Result<()> {
        conn.create_scalar_function(name, -1, det, move |_| Ok(v.clone()))
    };
    for name in [
        "pg_table_is_visible",
        "pg_type_is_visible",
        "pg_collation_is_visible",
        "pg_function_is_visible",
        "has_table_privilege",
        "has_schema_privilege",
        "has_database_privilege",
        "has_column_privilege",
        "has_any_column_privilege",
        "has_function_privilege",
        "has_sequence_privilege",
        "pg_has_role",
    ] {
        constant(name, SqlValue::Integer(1))?;
    }
    for name in [
        "obj_description",
        "col_description",
        "shobj_description",
        "pg_get_serial_sequence",
    ] {
        constant(name, SqlValue::Null)?;
    }
    for name in [
        "pg_relation_size",
        "pg_total_relation_size",
        "pg_table_size",
        "pg_indexes_size",
        "pg_is_in_recovery",
        "pg_database_size",
    ] {
        constant(name, SqlValue::Integer(0))?;
    }
    constant("pg_encoding_to_char", SqlValue::Text("UTF8".into()))?;
    constant("pg_tablespace_location", SqlValue::Text(String::new()))?;
    constant("current_schemas", SqlValue::Text("{public}".into()))?;
    conn.create_scalar_function("pg_size_pretty", 1, det, |ctx| {
        Ok(int(ctx, 0).map(|n| format!("{n} bytes")))
    })?;
    conn.create_scalar_function("format_type", -1, det, |ctx| {
        Ok(int(ctx, 0).map(|oid| {
            PgType::from_oid(oid as u32)
                .map(|t| t.name().to_string())
                .unwrap_or_else(|| "???".into())
        }))
    })?;
    // Defaults are kept as SQLite SQL in parentheses: shown without them, as Postgres does.
    conn.create_scalar_function("pg_get_expr", -1, det, |ctx| {
        Ok(text(ctx, 0).map(|e| unparenthesize(&e)))
    })?;
    conn.create_scalar_function("quote_ident", 1, det, |ctx| {
        Ok(text(ctx, 0).map(|s| tessera_storage::pgstr::quote_ident(&s)))
    })?;
    conn.create_scalar_function("array_to_string", -1, det, |ctx| {
        let sep = text(ctx, 1).unwrap_or_default();
        Ok(text(ctx, 0).map(|a| array_items(&a).join(&sep)))
    })?;
    conn.create_scalar_function("tessera_array_json", 1, det, |ctx| {
        let items = text(ctx, 0).map(|a| array_items(&a)).unwrap_or_default();
        let quoted: Vec<String> = items
            .iter()
            .map(|i| format!("\"{}\"", i.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        Ok(format!("[{}]", quoted.join(",")))
    })?;
    conn.create_aggregate_function("tessera_array_agg", 1, det, ArrayAgg)?;
    // Set-returning functions in select lists (see `rewrite`): the row numbers
    // `[0, 1, …]` of the longest array, then each array's element or subscript at a row.
    conn.create_scalar_function("tessera_srf_rows", -1, det, |ctx| {
        let longest = (0..ctx.len())
            .map(|i| text(ctx, i).map_or(0, |a| array_elements(&a).len()))
            .max()
            .unwrap_or(0);
        let rows: Vec<String> = (0..longest).map(|i| i.to_string()).collect();
        Ok(format!("[{}]", rows.join(",")))
    })?;
    conn.create_scalar_function("tessera_array_at", 2, det, |ctx| {
        let (Some(a), Some(i)) = (text(ctx, 0), int(ctx, 1)) else {
            return Ok(SqlValue::Null);
        };
        Ok(element_value(
            array_elements(&a).get(i as usize).and_then(Option::as_ref),
        ))
    })?;
    conn.create_scalar_function("tessera_subscript", 2, det, |ctx| {
        let (Some(a), Some(i)) = (text(ctx, 0), int(ctx, 1)) else {
            return Ok(None);
        };
        Ok(((i as usize) < array_elements(&a).len()).then_some(i + 1))
    })?;
    conn.create_scalar_function("tessera_array", -1, det, |ctx| {
        let items: Vec<String> = (0..ctx.len())
            .map(|i| text(ctx, i).unwrap_or_else(|| "NULL".into()))
            .collect();
        Ok(format!("{{{}}}", items.join(",")))
    })?;
    conn.create_scalar_function("tessera_any_eq", 2, det, |ctx| {
        let (Some(x), Some(arr)) = (text(ctx, 0), text(ctx, 1)) else {
            return Ok(None);
        };
        Ok(Some(array_items(&arr).contains(&x)))
    })?;
    conn.create_scalar_function("tessera_regex", 3, det, |ctx| {
        let (Some(s), Some(p)) = (text(ctx, 0), text(ctx, 1)) else {
            return Ok(None);
        };
        let re = tessera_storage::pgregex::compiled(&p, int(ctx, 2) == Some(1))
            .map_err(|e| rusqlite::Error::UserFunctionError(e.into()))?;
        Ok(Some(re.is_match(&s)))
    })?;
    let lk = l.clone();
    conn.create_scalar_function("pg_get_userbyid", 1, det, move |ctx| {
        Ok(int(ctx, 0).map(|oid| {
            lk.roles
                .get(&oid)
                .cloned()
                .unwrap_or_else(|| format!("unknown (OID={oid})"))
        }))
    })?;
    let lk = l.clone();
    conn.create_scalar_function("pg_get_indexdef", -1, det, move |ctx| {
        Ok(int(ctx, 0).and_then(|oid| lk.indexdefs.get(&oid).cloned()))
    })?;
    let lk = l.clone();
    conn.create_scalar_function("pg_get_constraintdef", -1, det, move |ctx| {
        Ok(int(ctx, 0).and_then(|oid| lk.constraintdefs.get(&oid).cloned()))
    })?;
    // reg* conversions: an OID shows as its name; a name converts to its OID.
    // `to_regclass('name')` and friends are the same conversions from a name.
    for name in ["tessera_regclass", "to_regclass"] {
        let lk = l.clone();
        conn.create_scalar_function(name, 1, det, move |ctx| {
            Ok(match ctx.get_raw(0) {
                ValueRef::Integer(oid) => Some(SqlValue::Text(
                    lk.relations
                        .get(&oid)
                        .cloned()
                        .unwrap_or_else(|| oid.to_string()),
                )),
                ValueRef::Text(t) => {
                    let text = String::from_utf8_lossy(t);
                    // `'16385'::regclass` is the OID itself.
                    match text.trim().parse::<i64>() {
                        Ok(oid) => Some(SqlValue::Integer(oid)),
                        Err(_) => lk
                            .relation_oids
                            .get(&unqualify(&text))
                            .map(|o| SqlValue::Integer(*o)),
                    }
                }
                _ => None,
            })
        })?;
    }
    // Tessera has no table partitions (inheritance), so a relation's only "ancestor" is
    // itself: the one row PostgreSQL's set-returning function gives for a plain table.
    conn.create_scalar_function("pg_partition_ancestors", 1, det, |ctx| Ok(int(ctx, 0)))?;
    for name in ["tessera_regtype", "to_regtype"] {
        conn.create_scalar_function(name, 1, det, |ctx| {
            Ok(match ctx.get_raw(0) {
                ValueRef::Integer(oid) => {
                    PgType::from_oid(oid as u32).map(|t| SqlValue::Text(t.name().into()))
                }
                ValueRef::Text(t) => {
                    let name = unqualify(&String::from_utf8_lossy(t));
                    PgType::from_name(&name)
                        .or_else(|| {
                            tessera_shared::pgtype::ALL
                                .iter()
                                .copied()
                                .find(|t| typname(*t) == name)
                        })
                        .map(|t| SqlValue::Integer(t.oid().into()))
                }
                _ => None,
            })
        })?;
    }
    for name in ["tessera_regnamespace", "to_regnamespace"] {
        conn.create_scalar_function(name, 1, det, |ctx| {
            let spaces = [
                (super::tables::PG_CATALOG_NS, "pg_catalog"),
                (super::tables::PUBLIC_NS, "public"),
                (super::tables::INFORMATION_SCHEMA_NS, "information_schema"),
            ];
            Ok(match ctx.get_raw(0) {
                ValueRef::Integer(oid) => spaces
                    .iter()
                    .find(|s| s.0 == oid)
                    .map(|s| SqlValue::Text(s.1.into())),
                ValueRef::Text(t) => {
                    let name = unqualify(&String::from_utf8_lossy(t));
                    spaces
                        .iter()
                        .find(|s| s.1 == name)
                        .map(|s| SqlValue::Integer(s.0))
                }
                _ => None,
            })
        })?;
    }
    for name in ["tessera_regrole", "to_regrole"] {
        let lk = l.clone();
        conn.create_scalar_function(name, 1, det, move |ctx| {
            Ok(match ctx.get_raw(0) {
                ValueRef::Integer(oid) => lk.roles.get(&oid).map(|n| SqlValue::Text(n.clone())),
                ValueRef::Text(t) => {
                    let name = unqualify(&String::from_utf8_lossy(t));
                    lk.roles
                        .iter()
                        .find(|(_, n)| **n == name)
                        .map(|(o, _)| SqlValue::Integer(*o))
                }
                _ => None,
            })
        })?;
    }
    Ok(())
}

/// The scratch set-up for a catalog query over `catalog` in `session`.
pub fn setup(catalog: &Catalog, session: &crate::session::Session) -> Setup {
    let l = Arc::new(lookups(catalog));
    let settings = session.settings.clone();
    Box::new(move |conn: &Connection| register(conn, l, settings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(tessera_storage::pgstr::quote_ident("users"), "users");
        assert_eq!(tessera_storage::pgstr::quote_ident("Users"), "\"Users\"");
        assert_eq!(unqualify("public.users"), "users");
        assert_eq!(unqualify("\"Mixed\""), "Mixed");
        assert_eq!(array_items("{public,\"a b\"}"), vec!["public", "a b"]);
        assert!(array_items("{}").is_empty());
        assert_eq!(array_items("1 2"), vec!["1", "2"]);
        let odd = vec![
            Some("a,b".to_string()),
            None,
            Some("q\"uote\\".to_string()),
            Some("NULL".to_string()),
            Some(String::new()),
            Some("plain".to_string()),
        ];
        let text = array_text(&odd);
        assert_eq!(text, r#"{"a,b",NULL,"q\"uote\\","NULL","",plain}"#);
        assert_eq!(array_elements(&text), odd);
        assert_eq!(unparenthesize("(3)"), "3");
        assert_eq!(unparenthesize("(a) + (b)"), "(a) + (b)");
    }
}
