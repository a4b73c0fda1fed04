//! The database, its schemas, access methods and tablespaces.

use super::*;

/// The database, its schemas, access methods and tablespaces.
pub(super) struct Database;

impl RelationGroup for Database {
    fn names(&self) -> &'static [&'static str] {
        &[
            "pg_namespace",
            "pg_database",
            "pg_am",
            "pg_tablespace",
            "information_schema__schemata",
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
            _ => return None,
        })
    }
}
