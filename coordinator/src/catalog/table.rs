//! Tables as the catalog records them: columns, distribution, indexes, column groups,
//! foreign keys.

use serde::{Deserialize, Serialize};
use tessera_shared::PgType;

/// A column with its declared Postgres type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// Column name (lower-case unless quoted).
    pub name: String,
    /// Declared type.
    pub ty: PgType,
    /// `NOT NULL` (or part of the primary key).
    pub not_null: bool,
    /// Default expression as SQLite SQL text, if any.
    pub default: Option<String>,
    /// `serial` / `GENERATED ... AS IDENTITY`: the coordinator assigns values from a
    /// cluster-wide sequence when an INSERT omits the column.
    #[serde(default)]
    pub serial: bool,
    /// `varchar(n)` / `char(n)`: at most this many characters (`22001` past it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chars: Option<u32>,
}

/// How a table's rows are spread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum Distribution {
    /// Hash of `column` picks one of the group's shards.
    Hash {
        /// Distribution column.
        column: String,
    },
    /// `column`'s value falls in one shard's range.
    Range {
        /// Distribution column.
        column: String,
    },
    /// A full copy on every node.
    Reference,
    /// One shard, no distribution column.
    Single,
}

impl Distribution {
    /// The distribution column, if any.
    pub fn column(&self) -> Option<&str> {
        match self {
            Distribution::Hash { column } | Distribution::Range { column } => Some(column),
            _ => None,
        }
    }
}

/// An index declared on a table (created on every shard).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    /// Index name.
    pub name: String,
    /// Indexed columns, or one expression as PostgreSQL SQL (`doc ->> 'user_id'`).
    pub columns: Vec<String>,
    /// `UNIQUE`.
    pub unique: bool,
    /// An expression index on a row table: the expression as the shards' SQLite runs it.
    #[serde(default)]
    pub expression: Option<String>,
    /// A path index on a document table.
    #[serde(default)]
    pub path: Option<IndexPath>,
}

/// What a document table's path index holds: the text at `keys` inside JSON column `column`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexPath {
    /// The JSON column.
    pub column: String,
    /// Keys from the column's top level down.
    pub keys: Vec<String>,
    /// The shard-side index slot (hidden column `__ix<slot>`).
    pub slot: u32,
}

/// A column group of a vertically partitioned table: some of its columns, stored (with the
/// primary key) in a table of their own, with their own shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnGroup {
    /// Group name (`profile`).
    pub name: String,
    /// Its columns outside the primary key.
    pub columns: Vec<String>,
    /// The table holding them (`users$profile`).
    pub table: String,
}

/// Where a table's rows live on its shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// SQLite tables (`WITH (storage = 'rows')`, the default).
    #[default]
    Rows,
    /// Documents in the storage nodes' fjall store, queried through SQLite
    /// (`WITH (storage = 'document')`).
    Document,
}

impl Storage {
    /// As `tessera admin tables` and EXPLAIN show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Storage::Rows => "rows",
            Storage::Document => "document",
        }
    }
}

/// A declared foreign key. It is recorded and shown to tools (`pg_constraint`, psql's `\d`,
/// ORMs' introspection) but not checked: rows on different shards are not locked against
/// each other, so Tessera's foreign keys are PostgreSQL 18's `NOT ENFORCED` ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForeignKey {
    /// Constraint name.
    pub name: String,
    /// Referencing columns of this table.
    pub columns: Vec<String>,
    /// Referenced table.
    pub table: String,
    /// Referenced columns (its primary key or a unique constraint).
    pub referenced: Vec<String>,
    /// `ON DELETE` action as SQL (`CASCADE` …), when declared.
    #[serde(default)]
    pub on_delete: Option<String>,
    /// `ON UPDATE` action as SQL, when declared.
    #[serde(default)]
    pub on_update: Option<String>,
}

/// A table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// Name (unqualified; one schema, `public`, for now).
    pub name: String,
    /// Stable OID, for the Postgres catalog emulation.
    pub oid: u32,
    /// Columns in declaration order.
    pub columns: Vec<Column>,
    /// Primary-key column names.
    pub primary_key: Vec<String>,
    /// Distribution.
    pub distribution: Distribution,
    /// Co-location group holding its shards.
    pub group: u64,
    /// Secondary indexes.
    pub indexes: Vec<Index>,
    /// UNIQUE constraints (column lists), enforced by each shard.
    #[serde(default)]
    pub uniques: Vec<Vec<String>>,
    /// CHECK constraints as SQLite SQL, enforced by each shard.
    #[serde(default)]
    pub checks: Vec<String>,
    /// Declared foreign keys (recorded, not enforced: see [`ForeignKey`]).
    #[serde(default)]
    pub foreign_keys: Vec<ForeignKey>,
    /// Whether the coordinators' result cache may hold results reading this table
    /// (`WITH (cache = off)`, `ALTER TABLE ... SET (cache = off)`).
    #[serde(default = "yes")]
    pub cache: bool,
    /// Where its rows live (SQLite tables or the document store).
    #[serde(default)]
    pub storage: Storage,
    /// Vertical partitioning: its column groups, each a table of its own (empty: none).
    #[serde(default)]
    pub column_groups: Vec<ColumnGroup>,
    /// For a column group's table: the table it is part of.
    #[serde(default)]
    pub part_of: Option<String>,
    /// A document table whose groups split the top-level attributes of this JSON column
    /// (rather than columns).
    #[serde(default)]
    pub attributes_of: Option<String>,
    /// The catalog revision of the table's last definition change (set by [`Catalog::apply`]):
    /// a cached result built under another revision is never served.
    #[serde(default)]
    pub revision: u64,
}

fn yes() -> bool {
    true
}

impl Column {
    /// A nullable column without a default.
    pub fn new(name: impl Into<String>, ty: PgType) -> Column {
        Column {
            name: name.into(),
            ty,
            not_null: false,
            default: None,
            serial: false,
            max_chars: None,
        }
    }
}

impl Table {
    /// A one-shard table with these columns and nothing else declared (no key, no
    /// constraints, cacheable); callers override what they declare.
    pub fn new(name: impl Into<String>, columns: Vec<Column>) -> Table {
        Table {
            name: name.into(),
            oid: 0,
            columns,
            primary_key: vec![],
            distribution: Distribution::Single,
            group: 0,
            indexes: vec![],
            uniques: vec![],
            checks: vec![],
            foreign_keys: vec![],
            cache: true,
            storage: Storage::Rows,
            column_groups: vec![],
            part_of: None,
            attributes_of: None,
            revision: 0,
        }
    }

    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}
