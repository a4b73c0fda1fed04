//! Tables and their columns: `pg_class`, `pg_attribute`, `pg_attrdef`, `pg_tables` and `information_schema`'s tables, columns and views.

use super::*;

/// Tables and their columns.
pub(super) struct Relations;

impl RelationGroup for Relations {
    fn names(&self) -> &'static [&'static str] {
        &[
            "pg_class",
            "pg_attribute",
            "pg_attrdef",
            "pg_tables",
            "information_schema__tables",
            "information_schema__columns",
            "information_schema__views",
        ]
    }

    fn build(&self, name: &str, cx: &Context<'_>) -> Option<Relation> {
        use PgType::*;
        let Context {
            catalog,
            session,
            owner,
        } = *cx;
        Some(match name {
            "pg_class" => {
                let mut rows = Vec::new();
                for tb in catalog.tables.values() {
                    let ixs = indexes(tb);
                    rows.push(vec![
                        i(tb.oid.into()),
                        t(&tb.name),
                        i(PUBLIC_NS),
                        i(0),
                        i(0),
                        i(owner),
                        i(HEAP_AM),
                        i(0),
                        i(0),
                        b(!ixs.is_empty()),
                        t("r"),
                        i(tb.columns.len() as i64),
                        i(tb.checks.len() as i64),
                        t("p"),
                    ]);
                    let last = rows.len() - 1;
                    let has_triggers = !tb.foreign_keys.is_empty()
                        || catalog
                            .tables
                            .values()
                            .any(|o| o.foreign_keys.iter().any(|fk| fk.table == tb.name));
                    rows[last].extend(class_flags(has_triggers));
                    for ix in ixs {
                        rows.push(vec![
                            i(ix.oid),
                            t(&ix.name),
                            i(PUBLIC_NS),
                            i(0),
                            i(0),
                            i(owner),
                            i(BTREE_AM),
                            i(0),
                            i(0),
                            b(false),
                            t("i"),
                            i(ix.columns.len() as i64),
                            i(0),
                            t("p"),
                        ]);
                        let last = rows.len() - 1;
                        rows[last].extend(class_flags(false));
                    }
                }
                (
                    vec![
                        ("oid", Int8),
                        ("relname", Text),
                        ("relnamespace", Int8),
                        ("reltype", Int8),
                        ("reloftype", Int8),
                        ("relowner", Int8),
                        ("relam", Int8),
                        ("reltablespace", Int8),
                        ("reltoastrelid", Int8),
                        ("relhasindex", Bool),
                        ("relkind", Text),
                        ("relnatts", Int4),
                        ("relchecks", Int4),
                        ("relpersistence", Text),
                        ("relhasrules", Bool),
                        ("relhastriggers", Bool),
                        ("relhassubclass", Bool),
                        ("relrowsecurity", Bool),
                        ("relforcerowsecurity", Bool),
                        ("relispartition", Bool),
                        ("relispopulated", Bool),
                        ("relreplident", Text),
                        ("relisshared", Bool),
                        ("reloptions", Text),
                        ("relacl", Text),
                        ("relpartbound", Text),
                        ("reltuples", Float4),
                        ("relpages", Int4),
                    ],
                    rows,
                )
            }
            "pg_attribute" => {
                let mut rows = Vec::new();
                for tb in catalog.tables.values() {
                    for (n, c) in tb.columns.iter().enumerate() {
                        let notnull = c.not_null || tb.primary_key.contains(&c.name);
                        rows.push(vec![
                            i(tb.oid.into()),
                            t(&c.name),
                            i(c.ty.oid().into()),
                            i(n as i64 + 1),
                            i(-1),
                            b(notnull),
                            b(c.default.is_some()),
                            b(false),
                            t(if c.serial { "d" } else { "" }),
                            t(""),
                            i(if collatable(c.ty) {
                                DEFAULT_COLLATION
                            } else {
                                0
                            }),
                            i(typlen(c.ty)),
                            t(storage(c.ty)),
                            t(""),
                            i(-1),
                            i(0),
                            b(true),
                            i(0),
                            NULL,
                            NULL,
                        ]);
                    }
                }
                (
                    vec![
                        ("attrelid", Int8),
                        ("attname", Text),
                        ("atttypid", Int8),
                        ("attnum", Int2),
                        ("atttypmod", Int4),
                        ("attnotnull", Bool),
                        ("atthasdef", Bool),
                        ("attisdropped", Bool),
                        ("attidentity", Text),
                        ("attgenerated", Text),
                        ("attcollation", Int8),
                        ("attlen", Int2),
                        ("attstorage", Text),
                        ("attcompression", Text),
                        ("attstattarget", Int4),
                        ("attndims", Int4),
                        ("attislocal", Bool),
                        ("attinhcount", Int4),
                        ("attacl", Text),
                        ("attoptions", Text),
                    ],
                    rows,
                )
            }
            "pg_attrdef" => {
                let mut rows = Vec::new();
                for tb in catalog.tables.values() {
                    for (n, c) in tb.columns.iter().enumerate() {
                        if let Some(d) = &c.default {
                            rows.push(vec![
                                i(4_000_000_000 + i64::from(tb.oid) * 1024 + n as i64),
                                i(tb.oid.into()),
                                i(n as i64 + 1),
                                t(d),
                            ]);
                        }
                    }
                }
                (
                    vec![
                        ("oid", Int8),
                        ("adrelid", Int8),
                        ("adnum", Int2),
                        ("adbin", Text),
                    ],
                    rows,
                )
            }
            "pg_tables" => (
                vec![
                    ("schemaname", Text),
                    ("tablename", Text),
                    ("tableowner", Text),
                    ("tablespace", Text),
                    ("hasindexes", Bool),
                    ("hasrules", Bool),
                    ("hastriggers", Bool),
                    ("rowsecurity", Bool),
                ],
                catalog
                    .tables
                    .values()
                    .map(|tb| {
                        vec![
                            t("public"),
                            t(&tb.name),
                            t(&owner_name(catalog)),
                            NULL,
                            b(!indexes(tb).is_empty()),
                            b(false),
                            b(false),
                            b(false),
                        ]
                    })
                    .collect(),
            ),
            "information_schema__tables" => (
                vec![
                    ("table_catalog", Text),
                    ("table_schema", Text),
                    ("table_name", Text),
                    ("table_type", Text),
                    ("self_referencing_column_name", Text),
                    ("reference_generation", Text),
                    ("user_defined_type_catalog", Text),
                    ("user_defined_type_schema", Text),
                    ("user_defined_type_name", Text),
                    ("is_insertable_into", Text),
                    ("is_typed", Text),
                    ("commit_action", Text),
                ],
                catalog
                    .tables
                    .values()
                    .map(|tb| {
                        vec![
                            t(&session.database),
                            t("public"),
                            t(&tb.name),
                            t("BASE TABLE"),
                            NULL,
                            NULL,
                            NULL,
                            NULL,
                            NULL,
                            t("YES"),
                            t("NO"),
                            NULL,
                        ]
                    })
                    .collect(),
            ),
            "information_schema__columns" => {
                let mut rows = Vec::new();
                for tb in catalog.tables.values() {
                    for (n, c) in tb.columns.iter().enumerate() {
                        let notnull = c.not_null || tb.primary_key.contains(&c.name);
                        let (precision, scale) = match c.ty {
                            Int2 => (i(16), i(0)),
                            Int4 => (i(32), i(0)),
                            Int8 => (i(64), i(0)),
                            Float4 => (i(24), NULL),
                            Float8 => (i(53), NULL),
                            _ => (NULL, NULL),
                        };
                        rows.push(vec![
                            t(&session.database),
                            t("public"),
                            t(&tb.name),
                            t(&c.name),
                            i(n as i64 + 1),
                            c.default.as_deref().map(t).unwrap_or(NULL),
                            t(if notnull { "NO" } else { "YES" }),
                            t(c.ty.name()),
                            NULL,
                            precision,
                            scale,
                            t(typname(c.ty)),
                            t(if c.serial { "YES" } else { "NO" }),
                            t("NEVER"),
                            t("YES"),
                        ]);
                    }
                }
                (
                    vec![
                        ("table_catalog", Text),
                        ("table_schema", Text),
                        ("table_name", Text),
                        ("column_name", Text),
                        ("ordinal_position", Int4),
                        ("column_default", Text),
                        ("is_nullable", Text),
                        ("data_type", Text),
                        ("character_maximum_length", Int4),
                        ("numeric_precision", Int4),
                        ("numeric_scale", Int4),
                        ("udt_name", Text),
                        ("is_identity", Text),
                        ("is_generated", Text),
                        ("is_updatable", Text),
                    ],
                    rows,
                )
            }
            "information_schema__views" => (
                vec![
                    ("table_catalog", Text),
                    ("table_schema", Text),
                    ("table_name", Text),
                    ("view_definition", Text),
                    ("check_option", Text),
                    ("is_updatable", Text),
                    ("is_insertable_into", Text),
                ],
                vec![],
            ),
            _ => return None,
        })
    }
}

/// The `pg_class` columns from `relhasrules` on, alike for every Tessera relation but
/// `relhastriggers`, which is what makes psql's `\d` list foreign keys (PostgreSQL enforces
/// them with triggers).
fn class_flags(has_triggers: bool) -> Vec<Value> {
    vec![
        b(false),
        b(has_triggers),
        b(false),
        b(false),
        b(false),
        b(false),
        b(true),
        t("d"),
        b(false),
        NULL,
        NULL,
        NULL,
        Value::Real(-1.0),
        i(0),
    ]
}

pub(super) fn attnum(table: &Table, column: &str) -> Option<i64> {
    table
        .columns
        .iter()
        .position(|c| c.name == column)
        .map(|p| p as i64 + 1)
}
