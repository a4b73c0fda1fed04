//! Indexes: `pg_index` and `pg_indexes`, and the index views `pg_get_indexdef` prints.

use super::*;

/// Indexes.
pub(super) struct Indexes;

impl RelationGroup for Indexes {
    fn names(&self) -> &'static [&'static str] {
        &["pg_index", "pg_indexes"]
    }

    fn build(&self, name: &str, cx: &Context<'_>) -> Option<Relation> {
        use PgType::*;
        let Context { catalog, .. } = *cx;
        Some(match name {
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
            _ => return None,
        })
    }
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
