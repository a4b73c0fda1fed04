//! Types and collations: `pg_type` and `pg_collation`.

use super::*;

/// Types and collations.
pub(super) struct Types;

impl RelationGroup for Types {
    fn names(&self) -> &'static [&'static str] {
        &["pg_type", "pg_collation"]
    }

    fn build(&self, name: &str, cx: &Context<'_>) -> Option<Relation> {
        use PgType::*;
        let Context { owner, .. } = *cx;
        Some(match name {
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
            _ => return None,
        })
    }
}

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

pub(super) fn typlen(ty: PgType) -> i64 {
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
pub(super) fn storage(ty: PgType) -> &'static str {
    match ty {
        _ if typlen(ty) > 0 => "p",
        PgType::Numeric => "m",
        _ => "x",
    }
}

pub(super) fn collatable(ty: PgType) -> bool {
    matches!(ty, PgType::Text | PgType::Varchar | PgType::Bpchar)
}
