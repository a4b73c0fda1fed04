//! Constraints: `pg_constraint` and `information_schema`'s constraint relations.

use super::*;

/// Constraints.
pub(super) struct Constraints;

impl RelationGroup for Constraints {
    fn names(&self) -> &'static [&'static str] {
        &[
            "pg_constraint",
            "information_schema__table_constraints",
            "information_schema__key_column_usage",
            "information_schema__referential_constraints",
        ]
    }

    fn build(&self, name: &str, cx: &Context<'_>) -> Option<Relation> {
        use PgType::*;
        let Context {
            catalog, session, ..
        } = *cx;
        Some(match name {
            "pg_constraint" => (
                vec![
                    ("oid", Int8),
                    ("conname", Text),
                    ("connamespace", Int8),
                    ("contype", Text),
                    ("condeferrable", Bool),
                    ("condeferred", Bool),
                    ("convalidated", Bool),
                    ("conrelid", Int8),
                    ("conindid", Int8),
                    ("confrelid", Int8),
                    ("contypid", Int8),
                    ("conkey", Int2Array),
                    ("confkey", Int2Array),
                    ("confupdtype", Text),
                    ("confdeltype", Text),
                    ("confmatchtype", Text),
                    ("conenforced", Bool),
                    ("conislocal", Bool),
                    ("coninhcount", Int4),
                    ("connoinherit", Bool),
                    ("conparentid", Int8),
                    ("tessera_def", Text),
                ],
                catalog
                    .tables
                    .values()
                    .flat_map(|tb| constraints(tb, catalog))
                    .map(|c| {
                        let keys = |a: &[i64]| {
                            let items: Vec<String> = a.iter().map(i64::to_string).collect();
                            format!("{{{}}}", items.join(","))
                        };
                        vec![
                            i(c.oid),
                            t(&c.name),
                            i(PUBLIC_NS),
                            t(c.kind),
                            b(false),
                            b(false),
                            b(true),
                            i(c.table),
                            i(c.index),
                            i(c.referenced.as_ref().map_or(0, |r| r.0)),
                            i(0),
                            t(&keys(&c.keys)),
                            c.referenced.as_ref().map_or(NULL, |r| t(&keys(&r.1))),
                            c.referenced
                                .as_ref()
                                .map_or(t(" "), |_| t(&c.on_update.to_string())),
                            c.referenced
                                .as_ref()
                                .map_or(t(" "), |_| t(&c.on_delete.to_string())),
                            c.referenced.as_ref().map_or(t(" "), |_| t("s")),
                            b(c.kind != "f"),
                            b(true),
                            i(0),
                            b(false),
                            i(0),
                            t(&c.def),
                        ]
                    })
                    .collect(),
            ),
            "information_schema__table_constraints" | "information_schema__key_column_usage" => {
                let keys = name == "information_schema__key_column_usage";
                let mut rows = Vec::new();
                for tb in catalog.tables.values() {
                    for c in constraints(tb, catalog) {
                        let kind = match c.kind {
                            "p" => "PRIMARY KEY",
                            "u" => "UNIQUE",
                            "f" => "FOREIGN KEY",
                            _ => continue,
                        };
                        let head = [
                            t(&session.database),
                            t("public"),
                            t(&c.name),
                            t(&session.database),
                            t("public"),
                            t(&tb.name),
                        ];
                        if keys {
                            for (p, k) in c.keys.iter().enumerate() {
                                let column =
                                    tb.columns.get(*k as usize - 1).map(|c| c.name.as_str());
                                let mut r = head.to_vec();
                                r.extend([
                                    column.map_or(NULL, t),
                                    i(p as i64 + 1),
                                    if c.kind == "f" { i(p as i64 + 1) } else { NULL },
                                ]);
                                rows.push(r);
                            }
                        } else {
                            let mut r = head.to_vec();
                            r.extend([
                                t(kind),
                                t("NO"),
                                t("NO"),
                                t(if c.kind == "f" { "NO" } else { "YES" }),
                            ]);
                            rows.push(r);
                        }
                    }
                }
                let mut cols = vec![
                    ("constraint_catalog", Text),
                    ("constraint_schema", Text),
                    ("constraint_name", Text),
                    ("table_catalog", Text),
                    ("table_schema", Text),
                    ("table_name", Text),
                ];
                if keys {
                    cols.extend([
                        ("column_name", Text),
                        ("ordinal_position", Int4),
                        ("position_in_unique_constraint", Int4),
                    ]);
                } else {
                    cols.extend([
                        ("constraint_type", Text),
                        ("is_deferrable", Text),
                        ("initially_deferred", Text),
                        ("enforced", Text),
                    ]);
                }
                (cols, rows)
            }
            "information_schema__referential_constraints" => {
                let rule = |code: char| match code {
                    'c' => "CASCADE",
                    'r' => "RESTRICT",
                    'n' => "SET NULL",
                    'd' => "SET DEFAULT",
                    _ => "NO ACTION",
                };
                let mut rows = Vec::new();
                for tb in catalog.tables.values() {
                    for c in constraints(tb, catalog)
                        .into_iter()
                        .filter(|c| c.kind == "f")
                    {
                        let unique = catalog
                            .tables
                            .values()
                            .flat_map(|t| constraints(t, catalog))
                            .find(|u| u.kind != "f" && u.index == c.index && c.index != 0)
                            .map(|u| u.name);
                        rows.push(vec![
                            t(&session.database),
                            t("public"),
                            t(&c.name),
                            t(&session.database),
                            t("public"),
                            unique.as_deref().map_or(NULL, t),
                            t("NONE"),
                            t(rule(c.on_update)),
                            t(rule(c.on_delete)),
                        ]);
                    }
                }
                (
                    vec![
                        ("constraint_catalog", Text),
                        ("constraint_schema", Text),
                        ("constraint_name", Text),
                        ("unique_constraint_catalog", Text),
                        ("unique_constraint_schema", Text),
                        ("unique_constraint_name", Text),
                        ("match_option", Text),
                        ("update_rule", Text),
                        ("delete_rule", Text),
                    ],
                    rows,
                )
            }
            _ => return None,
        })
    }
}

/// One of a table's constraints as the catalog emulation shows it.
pub struct ConstraintView {
    /// OID.
    pub oid: i64,
    /// Name.
    pub name: String,
    /// `p`, `u`, `c` or `f`.
    pub kind: &'static str,
    /// The table's OID.
    pub table: i64,
    /// The index enforcing it (for a foreign key, the referenced table's).
    pub index: i64,
    /// Column numbers.
    pub keys: Vec<i64>,
    /// A foreign key's referenced table OID and column numbers.
    pub referenced: Option<(i64, Vec<i64>)>,
    /// A foreign key's `ON UPDATE` and `ON DELETE` codes (`a` no action, `c` cascade …).
    pub on_update: char,
    /// See `on_update`.
    pub on_delete: char,
    /// As `pg_get_constraintdef` prints it.
    pub def: String,
}

fn action_code(action: Option<&String>) -> char {
    match action.map(|a| a.to_uppercase()).as_deref() {
        Some("CASCADE") => 'c',
        Some("RESTRICT") => 'r',
        Some("SET NULL") => 'n',
        Some("SET DEFAULT") => 'd',
        _ => 'a',
    }
}

/// A table's primary key, unique, check and foreign-key constraints.
pub fn constraints(tb: &Table, catalog: &Catalog) -> Vec<ConstraintView> {
    let keys = |t: &Table, cols: &[String]| -> Vec<i64> {
        cols.iter().map(|c| attnum(t, c).unwrap_or(0)).collect()
    };
    let mut out = Vec::new();
    for ix in indexes(tb).into_iter().filter(|x| x.unique) {
        if !ix.primary && !tb.uniques.contains(&ix.columns) {
            continue;
        }
        out.push(ConstraintView {
            oid: ix.oid + 2_000_000_000,
            name: ix.name.clone(),
            kind: if ix.primary { "p" } else { "u" },
            table: tb.oid.into(),
            index: ix.oid,
            keys: keys(tb, &ix.columns),
            referenced: None,
            on_update: ' ',
            on_delete: ' ',
            def: format!(
                "{} ({})",
                if ix.primary { "PRIMARY KEY" } else { "UNIQUE" },
                ix.columns.join(", ")
            ),
        });
    }
    for (k, check) in tb.checks.iter().enumerate() {
        out.push(ConstraintView {
            oid: 3_000_000_000 + i64::from(tb.oid) * 64 + k as i64,
            name: format!(
                "{}_check{}",
                tb.name,
                if k == 0 { String::new() } else { k.to_string() }
            ),
            kind: "c",
            table: tb.oid.into(),
            index: 0,
            keys: vec![],
            referenced: None,
            on_update: ' ',
            on_delete: ' ',
            def: format!("CHECK ({check})"),
        });
    }
    for (k, fk) in tb.foreign_keys.iter().enumerate() {
        let Some(target) = catalog.tables.get(&fk.table) else {
            continue;
        };
        let index = indexes(target)
            .into_iter()
            .find(|ix| {
                ix.unique && {
                    let (mut a, mut b) = (ix.columns.clone(), fk.referenced.clone());
                    a.sort();
                    b.sort();
                    a == b
                }
            })
            .map_or(0, |ix| ix.oid);
        let mut def = format!(
            "FOREIGN KEY ({}) REFERENCES {}({})",
            fk.columns.join(", "),
            fk.table,
            fk.referenced.join(", ")
        );
        for (what, action) in [("UPDATE", &fk.on_update), ("DELETE", &fk.on_delete)] {
            if let Some(a) = action
                .as_ref()
                .filter(|a| !a.eq_ignore_ascii_case("NO ACTION"))
            {
                def.push_str(&format!(" ON {what} {}", a.to_uppercase()));
            }
        }
        out.push(ConstraintView {
            oid: 3_500_000_000 + i64::from(tb.oid) * 64 + k as i64,
            name: fk.name.clone(),
            kind: "f",
            table: tb.oid.into(),
            index,
            keys: keys(tb, &fk.columns),
            referenced: Some((target.oid.into(), keys(target, &fk.referenced))),
            on_update: action_code(fk.on_update.as_ref()),
            on_delete: action_code(fk.on_delete.as_ref()),
            def,
        });
    }
    out
}
