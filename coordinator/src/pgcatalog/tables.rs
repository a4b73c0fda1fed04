//! The rows of the emulated `pg_catalog` and `information_schema` relations, generated from
//! Tessera's catalog. OIDs are stable: tables keep their catalog OID, indexes and constraints
//! derive theirs from it.

use crate::catalog::{Catalog, Table};
use crate::session::Session;
use tessera_shared::{PgType, Value};

/// OID of `pg_catalog`.
pub const PG_CATALOG_NS: i64 = 11;
/// OID of `public`.
pub const PUBLIC_NS: i64 = 2200;
/// OID of `information_schema`.
pub const INFORMATION_SCHEMA_NS: i64 = 13000;
/// OID of the bootstrap superuser when no role is recorded (trust clusters).
pub const BOOTSTRAP_ROLE: i64 = 10;
/// OID of PostgreSQL 15's `pg_database_owner`, the owner of `public`.
pub const DATABASE_OWNER_ROLE: i64 = 6171;
const HEAP_AM: i64 = 2;
const BTREE_AM: i64 = 403;
const DEFAULT_COLLATION: i64 = 100;

/// An emulated relation: its name in the scratch database, typed columns, rows.
pub struct SystemTable {
    /// Scratch name (`pg_class`, `information_schema__tables`).
    pub name: &'static str,
    /// Column names and types.
    pub columns: Vec<(&'static str, PgType)>,
    /// Rows.
    pub rows: Vec<Vec<Value>>,
}

/// Every relation this module emulates, by scratch name: `pg_catalog.x` is `x`,
/// `information_schema.x` is `information_schema__x`.
pub const NAMES: &[&str] = &[
    "pg_namespace",
    "pg_class",
    "pg_attribute",
    "pg_type",
    "pg_index",
    "pg_constraint",
    "pg_attrdef",
    "pg_database",
    "pg_roles",
    "pg_user",
    "pg_auth_members",
    "pg_am",
    "pg_settings",
    "pg_description",
    "pg_inherits",
    "pg_tablespace",
    "pg_collation",
    "pg_extension",
    "pg_opclass",
    "pg_proc",
    "pg_stat_activity",
    "pg_tables",
    "pg_indexes",
    "pg_policy",
    "pg_statistic_ext",
    "pg_publication",
    "pg_publication_rel",
    "pg_publication_namespace",
    "pg_trigger",
    "pg_rewrite",
    "pg_sequence",
    "pg_partitioned_table",
    "pg_foreign_table",
    "pg_cast",
    "pg_operator",
    "pg_event_trigger",
    "pg_db_role_setting",
    "information_schema__schemata",
    "information_schema__tables",
    "information_schema__columns",
    "information_schema__views",
    "information_schema__table_constraints",
    "information_schema__key_column_usage",
    "information_schema__referential_constraints",
];

fn i(v: i64) -> Value {
    Value::Integer(v)
}
fn b(v: bool) -> Value {
    Value::Integer(i64::from(v))
}
fn t(v: &str) -> Value {
    Value::Text(v.to_string())
}
const NULL: Value = Value::Null;

/// Relations that are always empty in Tessera (no policies, statistics objects, publications,
/// triggers, rules, inheritance …): a query that must read one of them reads nothing.
pub const EMPTY: &[&str] = &[
    "pg_inherits",
    "pg_policy",
    "pg_statistic_ext",
    "pg_publication",
    "pg_publication_rel",
    "pg_publication_namespace",
    "pg_trigger",
    "pg_rewrite",
    "pg_sequence",
    "pg_partitioned_table",
    "pg_foreign_table",
    "pg_cast",
    "pg_operator",
    "pg_event_trigger",
    "pg_db_role_setting",
    "pg_auth_members",
    "pg_description",
    "pg_extension",
    "pg_opclass",
    "pg_proc",
];

/// `pg_type.typname` of a type.
pub fn typname(ty: PgType) -> &'static str {
    match ty {
        PgType::Int2 => "int2",
        PgType::Int4 => "int4",
        PgType::Int8 => "int8",
        PgType::Float4 => "float4",
        PgType::Float8 => "float8",
        PgType::Numeric => "numeric",
        PgType::Text => "text",
        PgType::Varchar => "varchar",
        PgType::Bpchar => "bpchar",
        PgType::Bool => "bool",
        PgType::Date => "date",
        PgType::Timestamp => "timestamp",
        PgType::Timestamptz => "timestamptz",
        PgType::Bytea => "bytea",
        PgType::Json => "json",
        PgType::Jsonb => "jsonb",
        PgType::Uuid => "uuid",
        PgType::TextArray => "_text",
        PgType::Int2Array => "_int2",
        PgType::Int4Array => "_int4",
        PgType::Int8Array => "_int8",
        PgType::Int2Vector => "int2vector",
        PgType::BoolArray => "_bool",
    }
}

fn typlen(ty: PgType) -> i64 {
    match ty {
        PgType::Int2 => 2,
        PgType::Int4 | PgType::Float4 | PgType::Date => 4,
        PgType::Int8 | PgType::Float8 | PgType::Timestamp | PgType::Timestamptz => 8,
        PgType::Bool => 1,
        PgType::Uuid => 16,
        _ => -1,
    }
}

/// `attstorage`/`typstorage`: plain for fixed-length types, `main` for numeric, extended
/// for the other variable-length ones.
fn storage(ty: PgType) -> &'static str {
    match ty {
        _ if typlen(ty) > 0 => "p",
        PgType::Numeric => "m",
        _ => "x",
    }
}

fn collatable(ty: PgType) -> bool {
    matches!(ty, PgType::Text | PgType::Varchar | PgType::Bpchar)
}

/// One of a table's indexes as the catalog emulation shows it: (oid, name, columns, unique,
/// primary).
pub struct IndexView {
    /// OID.
    pub oid: i64,
    /// Name.
    pub name: String,
    /// Indexed columns or expressions.
    pub columns: Vec<String>,
    /// UNIQUE.
    pub unique: bool,
    /// The primary key's index.
    pub primary: bool,
}

/// The indexes of `table`: the primary key's (`<table>_pkey`), UNIQUE constraints'
/// (`<table>_<cols>_key`), then declared indexes; OIDs derive from the table's.
pub fn indexes(table: &Table) -> Vec<IndexView> {
    let base = 1_000_000_000 + i64::from(table.oid) * 64;
    let mut out = Vec::new();
    if !table.primary_key.is_empty() {
        out.push(IndexView {
            oid: base,
            name: format!("{}_pkey", table.name),
            columns: table.primary_key.clone(),
            unique: true,
            primary: true,
        });
    }
    for (k, cols) in table.uniques.iter().enumerate() {
        out.push(IndexView {
            oid: base + 1 + k as i64,
            name: format!("{}_{}_key", table.name, cols.join("_")),
            columns: cols.clone(),
            unique: true,
            primary: false,
        });
    }
    for (k, ix) in table.indexes.iter().enumerate() {
        out.push(IndexView {
            oid: base + 32 + k as i64,
            name: ix.name.clone(),
            columns: ix.columns.clone(),
            unique: ix.unique,
            primary: false,
        });
    }
    out
}

/// `CREATE [UNIQUE] INDEX name ON public.t USING btree (cols)`, as `pg_get_indexdef` prints it.
pub fn indexdef(table: &Table, ix: &IndexView) -> String {
    format!(
        "CREATE {}INDEX {} ON public.{} USING btree ({})",
        if ix.unique { "UNIQUE " } else { "" },
        ix.name,
        table.name,
        ix.columns.join(", ")
    )
}

fn attnum(table: &Table, column: &str) -> Option<i64> {
    table
        .columns
        .iter()
        .position(|c| c.name == column)
        .map(|p| p as i64 + 1)
}

/// The role rows: recorded roles, or the bootstrap superuser when none is.
fn roles(catalog: &Catalog) -> Vec<(i64, String, bool, bool)> {
    if catalog.roles.is_empty() {
        return vec![(BOOTSTRAP_ROLE, "postgres".into(), true, true)];
    }
    catalog
        .roles
        .values()
        .map(|r| (i64::from(r.oid), r.name.clone(), r.superuser, r.login))
        .collect()
}

/// The owner OID shown for every object: the first superuser.
pub fn owner(catalog: &Catalog) -> i64 {
    roles(catalog)
        .into_iter()
        .find(|r| r.2)
        .map(|r| r.0)
        .unwrap_or(BOOTSTRAP_ROLE)
}

/// Builds the relation `name` (a [`NAMES`] entry).
pub fn build(name: &str, catalog: &Catalog, session: &Session) -> Option<SystemTable> {
    use PgType::*;
    let owner = owner(catalog);
    let (columns, rows): (Vec<(&'static str, PgType)>, Vec<Vec<Value>>) = match name {
        "pg_namespace" => (
            vec![
                ("oid", Int8),
                ("nspname", Text),
                ("nspowner", Int8),
                ("nspacl", Text),
            ],
            [
                (PG_CATALOG_NS, "pg_catalog", owner),
                (PUBLIC_NS, "public", DATABASE_OWNER_ROLE),
                (INFORMATION_SCHEMA_NS, "information_schema", owner),
            ]
            .iter()
            .map(|(o, n, own)| vec![i(*o), t(n), i(*own), NULL])
            .collect(),
        ),
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
        "pg_type" => (
            vec![
                ("oid", Int8),
                ("typname", Text),
                ("typnamespace", Int8),
                ("typowner", Int8),
                ("typlen", Int2),
                ("typtype", Text),
                ("typrelid", Int8),
                ("typelem", Int8),
                ("typnotnull", Bool),
                ("typbasetype", Int8),
                ("typtypmod", Int4),
                ("typcollation", Int8),
                ("typarray", Int8),
                ("typcategory", Text),
                ("typispreferred", Bool),
                ("typisdefined", Bool),
                ("typdelim", Text),
                ("typbyval", Bool),
                ("typdefault", Text),
            ],
            tessera_shared::pgtype::ALL
                .iter()
                .chain(tessera_shared::pgtype::ARRAYS.iter())
                .map(|ty| {
                    vec![
                        i(ty.oid().into()),
                        t(typname(*ty)),
                        i(PG_CATALOG_NS),
                        i(owner),
                        i(typlen(*ty)),
                        t("b"),
                        i(0),
                        i(ty.element().map_or(0, |e| e.oid().into())),
                        b(false),
                        i(0),
                        i(-1),
                        i(if collatable(*ty) {
                            DEFAULT_COLLATION
                        } else {
                            0
                        }),
                        i(match ty {
                            Int2 | Int4 | Int8 | Text | Bool => ty.array().oid().into(),
                            _ => 0,
                        }),
                        t(match ty {
                            _ if ty.is_array() => "A",
                            Int2 | Int4 | Int8 | Float4 | Float8 | Numeric => "N",
                            Bool => "B",
                            Date | Timestamp | Timestamptz => "D",
                            Text | Varchar | Bpchar => "S",
                            _ => "U",
                        }),
                        b(false),
                        b(true),
                        t(","),
                        b(typlen(*ty) > 0),
                        NULL,
                    ]
                })
                .collect(),
        ),
        "pg_index" => {
            let mut rows = Vec::new();
            for tb in catalog.tables.values() {
                for ix in indexes(tb) {
                    let key: Vec<String> = ix
                        .columns
                        .iter()
                        .map(|c| attnum(tb, c).unwrap_or(0).to_string())
                        .collect();
                    rows.push(vec![
                        i(ix.oid),
                        i(tb.oid.into()),
                        i(ix.columns.len() as i64),
                        b(ix.unique),
                        b(ix.primary),
                        b(false),
                        b(true),
                        b(true),
                        b(false),
                        t(&key.join(" ")),
                        i(ix.columns.len() as i64),
                        b(false),
                        t(&vec!["0"; key.len()].join(" ")),
                        t(&vec!["0"; key.len()].join(" ")),
                        t(&vec!["0"; key.len()].join(" ")),
                        NULL,
                        NULL,
                        b(false),
                        b(true),
                        b(true),
                    ]);
                }
            }
            (
                vec![
                    ("indexrelid", Int8),
                    ("indrelid", Int8),
                    ("indnatts", Int2),
                    ("indisunique", Bool),
                    ("indisprimary", Bool),
                    ("indisclustered", Bool),
                    ("indisvalid", Bool),
                    ("indimmediate", Bool),
                    ("indisreplident", Bool),
                    ("indkey", Int2Vector),
                    ("indnkeyatts", Int2),
                    ("indnullsnotdistinct", Bool),
                    ("indoption", Int2Vector),
                    // oidvector: every column uses its type's default operator class and
                    // collation.
                    ("indclass", Text),
                    ("indcollation", Text),
                    ("indexprs", Text),
                    ("indpred", Text),
                    ("indisexclusion", Bool),
                    ("indisready", Bool),
                    ("indislive", Bool),
                ],
                rows,
            )
        }
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
        "pg_database" => (
            vec![
                ("oid", Int8),
                ("datname", Text),
                ("datdba", Int8),
                ("encoding", Int4),
                ("datlocprovider", Text),
                ("datistemplate", Bool),
                ("datallowconn", Bool),
                ("datconnlimit", Int4),
                ("dattablespace", Int8),
                ("datcollate", Text),
                ("datctype", Text),
                ("daticulocale", Text),
                ("datacl", Text),
            ],
            vec![vec![
                i(5),
                t("postgres"),
                i(owner),
                i(6),
                t("c"),
                b(false),
                b(true),
                i(-1),
                i(1663),
                t("C.UTF-8"),
                t("C.UTF-8"),
                NULL,
                NULL,
            ]],
        ),
        "pg_roles" => (
            vec![
                ("oid", Int8),
                ("rolname", Text),
                ("rolsuper", Bool),
                ("rolinherit", Bool),
                ("rolcreaterole", Bool),
                ("rolcreatedb", Bool),
                ("rolcanlogin", Bool),
                ("rolreplication", Bool),
                ("rolconnlimit", Int4),
                ("rolpassword", Text),
                ("rolvaliduntil", Timestamptz),
                ("rolbypassrls", Bool),
                ("rolconfig", Text),
            ],
            roles(catalog)
                .into_iter()
                .map(|(oid, name, sup, login)| {
                    vec![
                        i(oid),
                        t(&name),
                        b(sup),
                        b(true),
                        b(sup),
                        b(sup),
                        b(login),
                        b(false),
                        i(-1),
                        t("********"),
                        NULL,
                        b(false),
                        NULL,
                    ]
                })
                .collect(),
        ),
        "pg_user" => (
            vec![
                ("usename", Text),
                ("usesysid", Int8),
                ("usecreatedb", Bool),
                ("usesuper", Bool),
                ("userepl", Bool),
                ("usebypassrls", Bool),
                ("passwd", Text),
                ("valuntil", Timestamptz),
                ("useconfig", Text),
            ],
            roles(catalog)
                .into_iter()
                .filter(|r| r.3)
                .map(|(oid, name, sup, _)| {
                    vec![
                        t(&name),
                        i(oid),
                        b(sup),
                        b(sup),
                        b(false),
                        b(false),
                        t("********"),
                        NULL,
                        NULL,
                    ]
                })
                .collect(),
        ),
        "pg_auth_members" => (
            vec![
                ("roleid", Int8),
                ("member", Int8),
                ("grantor", Int8),
                ("admin_option", Bool),
            ],
            vec![],
        ),
        "pg_am" => (
            vec![
                ("oid", Int8),
                ("amname", Text),
                ("amhandler", Text),
                ("amtype", Text),
            ],
            vec![
                vec![i(HEAP_AM), t("heap"), t("heap_tableam_handler"), t("t")],
                vec![i(BTREE_AM), t("btree"), t("bthandler"), t("i")],
            ],
        ),
        "pg_settings" => (
            vec![
                ("name", Text),
                ("setting", Text),
                ("unit", Text),
                ("category", Text),
                ("short_desc", Text),
                ("context", Text),
                ("vartype", Text),
                ("source", Text),
                ("boot_val", Text),
                ("reset_val", Text),
            ],
            session
                .settings
                .iter()
                .map(|(k, v)| {
                    vec![
                        t(k),
                        t(v),
                        NULL,
                        t("Tessera"),
                        t(""),
                        t("user"),
                        t("string"),
                        t("session"),
                        t(v),
                        t(v),
                    ]
                })
                .collect(),
        ),
        "pg_description" => (
            vec![
                ("objoid", Int8),
                ("classoid", Int8),
                ("objsubid", Int4),
                ("description", Text),
            ],
            vec![],
        ),
        "pg_inherits" => (
            vec![
                ("inhrelid", Int8),
                ("inhparent", Int8),
                ("inhseqno", Int4),
                ("inhdetachpending", Bool),
            ],
            vec![],
        ),
        "pg_tablespace" => (
            vec![
                ("oid", Int8),
                ("spcname", Text),
                ("spcowner", Int8),
                ("spcacl", Text),
                ("spcoptions", Text),
            ],
            vec![
                vec![i(1663), t("pg_default"), i(owner), NULL, NULL],
                vec![i(1664), t("pg_global"), i(owner), NULL, NULL],
            ],
        ),
        "pg_collation" => (
            vec![
                ("oid", Int8),
                ("collname", Text),
                ("collnamespace", Int8),
                ("collowner", Int8),
                ("collprovider", Text),
                ("collisdeterministic", Bool),
                ("collencoding", Int4),
                ("collcollate", Text),
                ("collctype", Text),
            ],
            vec![
                vec![
                    i(DEFAULT_COLLATION),
                    t("default"),
                    i(PG_CATALOG_NS),
                    i(owner),
                    t("d"),
                    b(true),
                    i(-1),
                    NULL,
                    NULL,
                ],
                vec![
                    i(950),
                    t("C"),
                    i(PG_CATALOG_NS),
                    i(owner),
                    t("c"),
                    b(true),
                    i(-1),
                    t("C"),
                    t("C"),
                ],
            ],
        ),
        // Every index uses its types' default operator classes, so the non-default ones
        // tools ask for are none.
        "pg_opclass" => (
            vec![
                ("oid", Int8),
                ("opcmethod", Int8),
                ("opcname", Text),
                ("opcnamespace", Int8),
                ("opcowner", Int8),
                ("opcfamily", Int8),
                ("opcintype", Int8),
                ("opcdefault", Bool),
                ("opckeytype", Int8),
            ],
            vec![],
        ),
        "pg_extension" => (
            vec![
                ("oid", Int8),
                ("extname", Text),
                ("extowner", Int8),
                ("extnamespace", Int8),
                ("extrelocatable", Bool),
                ("extversion", Text),
            ],
            vec![],
        ),
        "pg_proc" => (
            vec![
                ("oid", Int8),
                ("proname", Text),
                ("pronamespace", Int8),
                ("proowner", Int8),
                ("prokind", Text),
                ("prorettype", Int8),
                ("proargtypes", Text),
            ],
            vec![],
        ),
        "pg_stat_activity" => (
            vec![
                ("datid", Int8),
                ("datname", Text),
                ("pid", Int4),
                ("usename", Text),
                ("application_name", Text),
                ("client_addr", Text),
                ("state", Text),
                ("query", Text),
            ],
            // Only this session: coordinators do not share a session registry yet.
            vec![vec![
                i(5),
                t(&session.database),
                i(i64::from(std::process::id())),
                t(&session.user),
                t(session
                    .settings
                    .get("application_name")
                    .map(String::as_str)
                    .unwrap_or("")),
                NULL,
                t("active"),
                NULL,
            ]],
        ),
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
        "pg_indexes" => (
            vec![
                ("schemaname", Text),
                ("tablename", Text),
                ("indexname", Text),
                ("tablespace", Text),
                ("indexdef", Text),
            ],
            catalog
                .tables
                .values()
                .flat_map(|tb| {
                    indexes(tb)
                        .into_iter()
                        .map(|ix| {
                            vec![
                                t("public"),
                                t(&tb.name),
                                t(&ix.name),
                                NULL,
                                t(&indexdef(tb, &ix)),
                            ]
                        })
                        .collect::<Vec<_>>()
                })
                .collect(),
        ),
        "information_schema__schemata" => (
            vec![
                ("catalog_name", Text),
                ("schema_name", Text),
                ("schema_owner", Text),
                ("default_character_set_catalog", Text),
                ("default_character_set_schema", Text),
                ("default_character_set_name", Text),
                ("sql_path", Text),
            ],
            ["pg_catalog", "public", "information_schema"]
                .iter()
                .map(|s| {
                    vec![
                        t(&session.database),
                        t(s),
                        t(&owner_name(catalog)),
                        NULL,
                        NULL,
                        NULL,
                        NULL,
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
                            let column = tb.columns.get(*k as usize - 1).map(|c| c.name.as_str());
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
        "pg_policy" => (
            vec![
                ("oid", Int8),
                ("polname", Text),
                ("polrelid", Int8),
                ("polcmd", Text),
                ("polpermissive", Bool),
                ("polroles", Text),
                ("polqual", Text),
                ("polwithcheck", Text),
            ],
            vec![],
        ),
        "pg_statistic_ext" => (
            vec![
                ("oid", Int8),
                ("stxrelid", Int8),
                ("stxname", Text),
                ("stxnamespace", Int8),
                ("stxowner", Int8),
                ("stxstattarget", Int4),
                ("stxkeys", Text),
                ("stxkind", Text),
            ],
            vec![],
        ),
        "pg_publication" => (
            vec![
                ("oid", Int8),
                ("pubname", Text),
                ("pubowner", Int8),
                ("puballtables", Bool),
                ("pubinsert", Bool),
                ("pubupdate", Bool),
                ("pubdelete", Bool),
                ("pubtruncate", Bool),
                ("pubviaroot", Bool),
            ],
            vec![],
        ),
        "pg_publication_rel" => (
            vec![
                ("oid", Int8),
                ("prpubid", Int8),
                ("prrelid", Int8),
                ("prqual", Text),
                ("prattrs", Text),
            ],
            vec![],
        ),
        "pg_publication_namespace" => (
            vec![("oid", Int8), ("pnpubid", Int8), ("pnnspid", Int8)],
            vec![],
        ),
        "pg_trigger" => (
            vec![
                ("oid", Int8),
                ("tgrelid", Int8),
                ("tgname", Text),
                ("tgenabled", Text),
                ("tgisinternal", Bool),
                ("tgparentid", Int8),
            ],
            vec![],
        ),
        "pg_rewrite" => (
            vec![
                ("oid", Int8),
                ("rulename", Text),
                ("ev_class", Int8),
                ("ev_type", Text),
                ("ev_enabled", Text),
                ("is_instead", Bool),
            ],
            vec![],
        ),
        "pg_sequence" => (
            vec![
                ("seqrelid", Int8),
                ("seqtypid", Int8),
                ("seqstart", Int8),
                ("seqincrement", Int8),
                ("seqmax", Int8),
                ("seqmin", Int8),
                ("seqcache", Int8),
                ("seqcycle", Bool),
            ],
            vec![],
        ),
        "pg_partitioned_table" => (
            vec![
                ("partrelid", Int8),
                ("partstrat", Text),
                ("partnatts", Int2),
            ],
            vec![],
        ),
        "pg_foreign_table" => (
            vec![("ftrelid", Int8), ("ftserver", Int8), ("ftoptions", Text)],
            vec![],
        ),
        "pg_cast" => (
            vec![
                ("oid", Int8),
                ("castsource", Int8),
                ("casttarget", Int8),
                ("castfunc", Int8),
                ("castcontext", Text),
                ("castmethod", Text),
            ],
            vec![],
        ),
        "pg_operator" => (
            vec![
                ("oid", Int8),
                ("oprname", Text),
                ("oprnamespace", Int8),
                ("oprkind", Text),
                ("oprleft", Int8),
                ("oprright", Int8),
                ("oprresult", Int8),
                ("oprcode", Text),
            ],
            vec![],
        ),
        "pg_event_trigger" => (
            vec![
                ("oid", Int8),
                ("evtname", Text),
                ("evtevent", Text),
                ("evtowner", Int8),
                ("evtfoid", Int8),
                ("evtenabled", Text),
                ("evttags", Text),
            ],
            vec![],
        ),
        "pg_db_role_setting" => (
            vec![
                ("setdatabase", Int8),
                ("setrole", Int8),
                ("setconfig", Text),
            ],
            vec![],
        ),
        _ => return None,
    };
    let name = NAMES.iter().find(|n| **n == name)?;
    Some(SystemTable {
        name,
        columns,
        rows,
    })
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

/// The name of the owner shown for every object.
pub fn owner_name(catalog: &Catalog) -> String {
    let o = owner(catalog);
    roles(catalog)
        .into_iter()
        .find(|r| r.0 == o)
        .map(|r| r.1)
        .unwrap_or_else(|| "postgres".into())
}
