//! PostgreSQL types Tessera declares: their OIDs, names, and how SQLite stores them.

use serde::{Deserialize, Serialize};

/// A PostgreSQL type as declared in DDL or inferred for an expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PgType {
    /// smallint
    Int2,
    /// integer
    Int4,
    /// bigint
    Int8,
    /// real
    Float4,
    /// double precision
    Float8,
    /// numeric (stored as SQLite REAL: 15 significant digits)
    Numeric,
    /// text
    Text,
    /// character varying
    Varchar,
    /// character(n)
    Bpchar,
    /// boolean (stored 0/1)
    Bool,
    /// date (stored as ISO text)
    Date,
    /// timestamp without time zone (stored as ISO text)
    Timestamp,
    /// timestamp with time zone (stored as ISO text, UTC)
    Timestamptz,
    /// bytea
    Bytea,
    /// json (stored as text)
    Json,
    /// jsonb (stored as text)
    Jsonb,
    /// uuid (stored as text)
    Uuid,
    /// text[] (array text `{a,b}`; only catalog queries produce arrays today)
    TextArray,
    /// smallint[]
    Int2Array,
    /// integer[]
    Int4Array,
    /// bigint[]
    Int8Array,
    /// int2vector (space-separated text `1 2`, as `pg_index.indkey`)
    Int2Vector,
    /// boolean[] (elements stored 0/1, printed t/f)
    BoolArray,
}

/// Every scalar type a column may be declared with.
pub const ALL: [PgType; 17] = [
    PgType::Int2,
    PgType::Int4,
    PgType::Int8,
    PgType::Float4,
    PgType::Float8,
    PgType::Numeric,
    PgType::Text,
    PgType::Varchar,
    PgType::Bpchar,
    PgType::Bool,
    PgType::Date,
    PgType::Timestamp,
    PgType::Timestamptz,
    PgType::Bytea,
    PgType::Json,
    PgType::Jsonb,
    PgType::Uuid,
];

/// The array types, produced by catalog queries (`array_agg`, `pg_index.indkey`).
pub const ARRAYS: [PgType; 6] = [
    PgType::TextArray,
    PgType::Int2Array,
    PgType::Int4Array,
    PgType::Int8Array,
    PgType::Int2Vector,
    PgType::BoolArray,
];

impl PgType {
    /// The type's OID in `pg_type`.
    pub fn oid(self) -> u32 {
        match self {
            PgType::Int2 => 21,
            PgType::Int4 => 23,
            PgType::Int8 => 20,
            PgType::Float4 => 700,
            PgType::Float8 => 701,
            PgType::Numeric => 1700,
            PgType::Text => 25,
            PgType::Varchar => 1043,
            PgType::Bpchar => 1042,
            PgType::Bool => 16,
            PgType::Date => 1082,
            PgType::Timestamp => 1114,
            PgType::Timestamptz => 1184,
            PgType::Bytea => 17,
            PgType::Json => 114,
            PgType::Jsonb => 3802,
            PgType::Uuid => 2950,
            PgType::TextArray => 1009,
            PgType::Int2Array => 1005,
            PgType::Int4Array => 1007,
            PgType::Int8Array => 1016,
            PgType::Int2Vector => 22,
            PgType::BoolArray => 1000,
        }
    }

    /// The type with OID `oid`, if Tessera knows it.
    pub fn from_oid(oid: u32) -> Option<PgType> {
        ALL.iter()
            .chain(ARRAYS.iter())
            .copied()
            .find(|t| t.oid() == oid)
    }

    /// The canonical Postgres name, as `format_type` prints it.
    pub fn name(self) -> &'static str {
        match self {
            PgType::Int2 => "smallint",
            PgType::Int4 => "integer",
            PgType::Int8 => "bigint",
            PgType::Float4 => "real",
            PgType::Float8 => "double precision",
            PgType::Numeric => "numeric",
            PgType::Text => "text",
            PgType::Varchar => "character varying",
            PgType::Bpchar => "character",
            PgType::Bool => "boolean",
            PgType::Date => "date",
            PgType::Timestamp => "timestamp without time zone",
            PgType::Timestamptz => "timestamp with time zone",
            PgType::Bytea => "bytea",
            PgType::Json => "json",
            PgType::Jsonb => "jsonb",
            PgType::Uuid => "uuid",
            PgType::TextArray => "text[]",
            PgType::Int2Array => "smallint[]",
            PgType::Int4Array => "integer[]",
            PgType::Int8Array => "bigint[]",
            PgType::Int2Vector => "int2vector",
            PgType::BoolArray => "boolean[]",
        }
    }

    /// The element type of an array type.
    pub fn element(self) -> Option<PgType> {
        Some(match self {
            PgType::TextArray => PgType::Text,
            PgType::Int2Array | PgType::Int2Vector => PgType::Int2,
            PgType::Int4Array => PgType::Int4,
            PgType::Int8Array => PgType::Int8,
            PgType::BoolArray => PgType::Bool,
            _ => return None,
        })
    }

    /// The array type whose elements are `self` (`array_agg`'s result); `text[]` for
    /// element types without their own array type here.
    pub fn array(self) -> PgType {
        match self {
            PgType::Int2 => PgType::Int2Array,
            PgType::Int4 => PgType::Int4Array,
            PgType::Int8 => PgType::Int8Array,
            PgType::Bool => PgType::BoolArray,
            _ => PgType::TextArray,
        }
    }

    /// Whether this is an array type (its values travel as array text).
    pub fn is_array(self) -> bool {
        self.element().is_some()
    }

    /// Parses a declared type name (lower-case, without modifiers such as `(10)`). Array
    /// types are not column types yet, so they do not parse.
    pub fn from_name(name: &str) -> Option<PgType> {
        let n = name.trim().to_ascii_lowercase();
        Some(match n.as_str() {
            "smallint" | "int2" | "smallserial" | "serial2" => PgType::Int2,
            "int" | "integer" | "int4" | "serial" | "serial4" => PgType::Int4,
            "bigint" | "int8" | "bigserial" | "serial8" => PgType::Int8,
            "real" | "float4" => PgType::Float4,
            "double precision" | "float8" | "float" | "double" => PgType::Float8,
            "numeric" | "decimal" => PgType::Numeric,
            "text" | "string" => PgType::Text,
            "varchar" | "character varying" => PgType::Varchar,
            "char" | "character" | "bpchar" => PgType::Bpchar,
            "bool" | "boolean" => PgType::Bool,
            "date" => PgType::Date,
            "timestamp" | "timestamp without time zone" => PgType::Timestamp,
            "timestamptz" | "timestamp with time zone" => PgType::Timestamptz,
            "bytea" => PgType::Bytea,
            "json" => PgType::Json,
            "jsonb" => PgType::Jsonb,
            "uuid" => PgType::Uuid,
            _ => return None,
        })
    }

    /// The column type used in SQLite `STRICT` tables.
    pub fn sqlite_type(self) -> &'static str {
        match self {
            PgType::Int2 | PgType::Int4 | PgType::Int8 | PgType::Bool => "INTEGER",
            PgType::Float4 | PgType::Float8 | PgType::Numeric => "REAL",
            PgType::Bytea => "BLOB",
            _ => "TEXT",
        }
    }

    /// Whether values of this type are integers in storage.
    pub fn is_integer(self) -> bool {
        matches!(self, PgType::Int2 | PgType::Int4 | PgType::Int8)
    }

    /// Whether values of this type are numbers (integer or floating).
    pub fn is_numeric(self) -> bool {
        self.is_integer() || matches!(self, PgType::Float4 | PgType::Float8 | PgType::Numeric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in ALL {
            assert_eq!(PgType::from_name(t.name()), Some(t));
            assert_eq!(PgType::from_oid(t.oid()), Some(t));
        }
        assert_eq!(PgType::from_name("BIGSERIAL"), Some(PgType::Int8));
        assert_eq!(PgType::from_name("geometry"), None);
        for t in ARRAYS {
            assert_eq!(PgType::from_oid(t.oid()), Some(t));
            assert_eq!(
                t.element().map(PgType::array),
                Some(t)
                    .filter(|t| *t != PgType::Int2Vector)
                    .or(Some(PgType::Int2Array))
            );
            assert_eq!(PgType::from_name(t.name()), None);
        }
    }
}
