//! The cluster catalog: tables, columns, distribution, co-location groups, shards, placements and nodes.
//!
//! The catalog changes only through [`CatalogCommand`]s applied by [`Catalog::apply`],
//! a deterministic function: the same commands in the same order give the same
//! catalog. That is what lets the consensus issue replace the file-backed
//! [`store::FileCatalog`] with a Raft state machine without touching the planner.

#[cfg(test)]
mod simulation;
pub mod store;

use crate::error::CoordError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tessera_shared::PgType;

/// Current on-disk format of the catalog.
pub const CATALOG_VERSION: u32 = 1;

/// A storage node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Stable id, never reused.
    pub id: u64,
    /// Name given at start-up (`storage-1`, ...).
    pub name: String,
    /// gRPC address, `host:port`.
    pub addr: String,
    /// What failure detection last concluded (see [`crate::replication::liveness`]).
    #[serde(default)]
    pub liveness: Liveness,
}

/// A storage node's liveness as failure detection records it in the catalog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    /// Answering.
    #[default]
    Alive,
    /// Silent for longer than `suspect_after_ms`.
    Suspect,
    /// Silent for longer than `dead_after_ms`.
    Dead,
    /// Taken out of service by an operator (`tessera admin node decommission`): holds no
    /// copies and takes none, whatever it answers.
    Decommissioned,
}

impl Liveness {
    /// As `tessera admin nodes` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Alive => "alive",
            Liveness::Suspect => "suspect",
            Liveness::Dead => "dead",
            Liveness::Decommissioned => "decommissioned",
        }
    }
}

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

/// A role (user): who may log in, and how they prove it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Role {
    /// Role name.
    pub name: String,
    /// Stable OID.
    pub oid: u32,
    /// May log in (`LOGIN`; `CREATE USER` implies it).
    pub login: bool,
    /// Superuser: may manage roles.
    pub superuser: bool,
    /// SCRAM-SHA-256 verifier in PostgreSQL's format
    /// (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`); never the password.
    pub scram: Option<String>,
}

/// A boundary value of a range shard.
#[derive(Debug, Clone, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bound {
    /// Integer key.
    Int(i64),
    /// Text key.
    Text(String),
}

/// One shard of a co-location group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shard {
    /// Cluster-wide id; also the storage node's file name.
    pub id: u64,
    /// Position in the group (hash: token range index; range: range order).
    pub index: u32,
    /// Nodes holding a replica; the first is the primary.
    pub placements: Vec<u64>,
    /// Nodes a new copy is being filled on (repair, move, drain): every write reaches them,
    /// no read does, until the fill completes and they join `placements`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filling: Vec<u64>,
    /// While `filling` is not empty: when (Unix ms) its fills are given up unless their
    /// coordinator renews them ([`CatalogCommand::RenewFill`]); a fill whose coordinator died
    /// is then abandoned by the metadata leader.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fill_lease_ms: u64,
    /// While `filling` is not empty: the fill's id, which its later commands must name (a fill
    /// abandoned and begun again is another fill). One fill per shard at a time.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fill_id: u64,
    /// Range groups: inclusive lower bound (None = unbounded).
    pub lower: Option<Bound>,
    /// Range groups: exclusive upper bound (None = unbounded).
    pub upper: Option<Bound>,
}

/// A command naming a fill that is no longer the shard's (abandoned, maybe begun again).
fn stale_fill(shard: u64) -> CoordError {
    CoordError::Storage {
        sqlstate: "40001".into(),
        message: format!("the copy of shard {shard} being made was abandoned; it is made again"),
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Shard {
    /// Every node a write must reach: the placements, then the copies being filled.
    pub fn write_nodes(&self) -> impl Iterator<Item = u64> + '_ {
        self.placements.iter().chain(&self.filling).copied()
    }
}

/// How a group lays out shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupKind {
    /// Hash token ranges (`shards.len()` of them).
    Hash,
    /// Value ranges.
    Range,
    /// One copy per node (placement = that node); reads may use any.
    Reference,
}

/// Tables whose shards sit together, so joins on the distribution key run inside one shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Group id.
    pub id: u64,
    /// Layout.
    pub kind: GroupKind,
    /// Shards in index order.
    pub shards: Vec<Shard>,
    /// Copies each shard should have (`WITH (replicas = N)`); repair restores it after a
    /// node's death. 0 in catalogs from before replication (treated as 1).
    #[serde(default)]
    pub replicas: u32,
}

/// The whole catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// Format version, [`CATALOG_VERSION`].
    pub version: u32,
    /// Next id for a node, group or shard.
    pub next_id: u64,
    /// Next table OID.
    pub next_oid: u32,
    /// Storage nodes by id.
    pub nodes: BTreeMap<u64, Node>,
    /// Co-location groups by id.
    pub groups: BTreeMap<u64, Group>,
    /// Tables by name.
    pub tables: BTreeMap<String, Table>,
    /// Next unallocated value of each sequence, by `table.column`.
    #[serde(default)]
    pub sequences: BTreeMap<String, i64>,
    /// Counts table definition changes; see [`Table::revision`].
    #[serde(default)]
    pub revision: u64,
    /// Roles by name.
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
}

/// A change to the catalog: the log entry of the future metadata Raft group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CatalogCommand {
    /// Add a node or update its address.
    UpsertNode {
        /// Node name.
        name: String,
        /// Address.
        addr: String,
    },
    /// Record a storage node's liveness (failure detection).
    SetLiveness {
        /// Node name.
        name: String,
        /// The new state.
        liveness: Liveness,
    },
    /// Add a copy of a shard on a node (repair, after the copy was made).
    AddPlacement {
        /// Shard id.
        shard: u64,
        /// Node id.
        node: u64,
    },
    /// Start filling a new copy of a shard on a node: from now on every write reaches it.
    /// Refused if the node holds or is being given a copy already.
    BeginFill {
        /// Shard id.
        shard: u64,
        /// Node id.
        node: u64,
        /// The fill's lease (Unix ms), see [`Shard::fill_lease_ms`].
        lease_until_ms: u64,
        /// The fill's id (non-zero), see [`Shard::fill_id`].
        #[serde(default)]
        fill: u64,
    },
    /// Extends the lease of a shard's fill.
    RenewFill {
        /// Shard id.
        shard: u64,
        /// New expiry (Unix ms).
        lease_until_ms: u64,
        /// The fill's id.
        #[serde(default)]
        fill: u64,
    },
    /// A filled copy joins the shard's placements; `leaving` (a move's source) leaves them.
    FinishFill {
        /// Shard id.
        shard: u64,
        /// Node id of the filled copy.
        node: u64,
        /// Node whose copy the filled one replaces.
        leaving: Option<u64>,
        /// The copy it was filled from: refused unless that is still a placement (a copy
        /// that left the shard meanwhile may lack writes the filled copy must hold).
        #[serde(default)]
        source: Option<u64>,
        /// The fill's id (0: any).
        #[serde(default)]
        fill: u64,
    },
    /// Give up filling a copy (failed, or left behind by a coordinator that died).
    AbandonFill {
        /// Shard id.
        shard: u64,
        /// Node id.
        node: u64,
        /// The fill's id (0: whichever fill it is).
        #[serde(default)]
        fill: u64,
    },
    /// Take one unreachable copy out of a shard (a write found its node gone), as long as
    /// `keep` copies remain; a copy being filled just stops being filled.
    DropCopy {
        /// Shard id.
        shard: u64,
        /// Node id.
        node: u64,
        /// Copies that must remain (a majority of the declared ones).
        keep: u32,
    },
    /// Take a dead node out of every replicated shard that has another copy, so writes go
    /// to the remaining copies (its own copy is stale from then on and never read again).
    DropPlacements {
        /// Node id.
        node: u64,
    },
    /// Add a table; `new_group` is created first when the table starts a new group.
    CreateTable {
        /// The table (its `group` refers to an existing or the new group).
        table: Table,
        /// A group to create along with it.
        new_group: Option<Group>,
    },
    /// Remove a table (its group's shards stay while other tables use them).
    DropTable {
        /// Table name.
        name: String,
        /// `DROP … CASCADE`: foreign keys referencing the table are dropped with it.
        #[serde(default)]
        cascade: bool,
    },
    /// Append a column.
    AddColumn {
        /// Table name.
        table: String,
        /// The column.
        column: Column,
    },
    /// Reserve `count` values of the sequence `name` (`table.column`) for one coordinator.
    AllocSequence {
        /// Sequence name.
        name: String,
        /// How many values.
        count: i64,
    },
    /// Record an index.
    CreateIndex {
        /// Table name.
        table: String,
        /// The index.
        index: Index,
    },
    /// Create a role, or replace it (ALTER ROLE sends the whole new role).
    PutRole {
        /// The role (its OID is assigned on creation and kept on replacement).
        role: Role,
        /// Fail if the role already exists (CREATE ROLE).
        create: bool,
    },
    /// Remove a role.
    DropRole {
        /// Role name.
        name: String,
    },
    /// Change a table's options.
    SetTableOptions {
        /// Table name.
        table: String,
        /// Result caching allowed.
        cache: bool,
    },
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            version: CATALOG_VERSION,
            next_id: 1,
            next_oid: 16384,
            nodes: BTreeMap::new(),
            groups: BTreeMap::new(),
            tables: BTreeMap::new(),
            sequences: BTreeMap::new(),
            revision: 0,
            roles: BTreeMap::new(),
        }
    }
}

impl Catalog {
    /// Applies one command. Deterministic; fails without change when the command is invalid.
    pub fn apply(&mut self, cmd: CatalogCommand) -> Result<(), CoordError> {
        match cmd {
            CatalogCommand::UpsertNode { name, addr } => {
                if let Some(n) = self.nodes.values_mut().find(|n| n.name == name) {
                    n.addr = addr;
                } else {
                    let id = self.alloc_id();
                    self.nodes.insert(
                        id,
                        Node {
                            id,
                            name,
                            addr,
                            liveness: Liveness::Alive,
                        },
                    );
                }
            }
            CatalogCommand::SetLiveness { name, liveness } => {
                let node = self
                    .nodes
                    .values_mut()
                    .find(|n| n.name == name)
                    .ok_or_else(|| CoordError::Internal(format!("no storage node {name}")))?;
                node.liveness = liveness;
            }
            CatalogCommand::AddPlacement { shard, node } => {
                let s = self.shard_mut(shard)?;
                if !s.placements.contains(&node) {
                    s.placements.push(node);
                }
            }
            CatalogCommand::RenewFill {
                shard,
                lease_until_ms,
                fill,
            } => {
                let s = self.shard_mut(shard)?;
                if s.filling.is_empty() || (fill != 0 && fill != s.fill_id) {
                    return Err(stale_fill(shard));
                }
                s.fill_lease_ms = s.fill_lease_ms.max(lease_until_ms);
            }
            CatalogCommand::BeginFill {
                shard,
                node,
                lease_until_ms,
                fill,
            } => {
                let s = self.shard_mut(shard)?;
                if s.write_nodes().any(|n| n == node) || !s.filling.is_empty() {
                    return Err(CoordError::Storage {
                        sqlstate: "55006".into(),
                        message: format!(
                            "a copy of shard {shard} is being made, or node {node} holds one already"
                        ),
                    });
                }
                s.filling.push(node);
                s.fill_lease_ms = lease_until_ms;
                s.fill_id = fill;
            }
            CatalogCommand::FinishFill {
                shard,
                node,
                leaving,
                source,
                fill,
            } => {
                let s = self.shard_mut(shard)?;
                if fill != 0 && fill != s.fill_id {
                    return Err(stale_fill(shard));
                }
                if let Some(src) = source.filter(|src| !s.placements.contains(src)) {
                    return Err(CoordError::Storage {
                        sqlstate: "40001".into(),
                        message: format!(
                            "node {src} left shard {shard} while a copy was filled from it; the copy is made again"
                        ),
                    });
                }
                if !s.filling.contains(&node) {
                    return Err(CoordError::Internal(format!(
                        "no copy of shard {shard} is being filled on node {node}"
                    )));
                }
                s.filling.retain(|n| *n != node);
                s.placements.push(node);
                if s.filling.is_empty() {
                    s.fill_lease_ms = 0;
                }
                if let Some(l) = leaving {
                    s.placements.retain(|n| *n != l);
                }
            }
            CatalogCommand::DropCopy { shard, node, keep } => {
                let s = self.shard_mut(shard)?;
                s.filling.retain(|n| *n != node);
                if s.placements.contains(&node) {
                    if s.placements.len() <= keep.max(1) as usize {
                        return Err(CoordError::Storage {
                            sqlstate: "58000".into(),
                            message: format!(
                                "shard {shard} would keep fewer than {keep} copies without node {node}"
                            ),
                        });
                    }
                    s.placements.retain(|n| *n != node);
                }
            }
            CatalogCommand::AbandonFill { shard, node, fill } => {
                let s = self.shard_mut(shard)?;
                if fill != 0 && fill != s.fill_id {
                    return Ok(());
                }
                s.filling.retain(|n| *n != node);
                if s.filling.is_empty() {
                    s.fill_lease_ms = 0;
                }
            }
            CatalogCommand::DropPlacements { node } => {
                for g in self.groups.values_mut() {
                    if g.kind == GroupKind::Reference {
                        continue;
                    }
                    for s in &mut g.shards {
                        if s.placements.len() > 1 {
                            s.placements.retain(|n| *n != node);
                        }
                        s.filling.retain(|n| *n != node);
                    }
                }
            }
            CatalogCommand::CreateTable {
                mut table,
                new_group,
            } => {
                if self.tables.contains_key(&table.name) {
                    return Err(CoordError::DuplicateTable(table.name));
                }
                if let Some(g) = new_group {
                    self.next_id = self
                        .next_id
                        .max(g.id + 1)
                        .max(g.shards.iter().map(|s| s.id + 1).max().unwrap_or(0));
                    self.groups.insert(g.id, g);
                }
                if !self.groups.contains_key(&table.group) {
                    return Err(CoordError::Internal(format!(
                        "group {} does not exist",
                        table.group
                    )));
                }
                table.oid = self.next_oid;
                self.next_oid += 1;
                self.revision += 1;
                table.revision = self.revision;
                self.tables.insert(table.name.clone(), table);
            }
            CatalogCommand::DropTable { name, cascade } => {
                if self.tables.remove(&name).is_none() {
                    return Err(CoordError::UndefinedTable(name));
                }
                let prefix = format!("{name}.");
                self.sequences.retain(|k, _| !k.starts_with(&prefix));
                self.revision += 1;
                for t in self.tables.values_mut().filter(|_| cascade) {
                    let before = t.foreign_keys.len();
                    t.foreign_keys.retain(|fk| fk.table != name);
                    if t.foreign_keys.len() != before {
                        t.revision = self.revision;
                    }
                }
            }
            CatalogCommand::AddColumn { table, column } => {
                let t = self
                    .tables
                    .get_mut(&table)
                    .ok_or_else(|| CoordError::UndefinedTable(table.clone()))?;
                if t.column(&column.name).is_some() {
                    return Err(CoordError::DuplicateColumn(column.name));
                }
                t.columns.push(column);
                self.revision += 1;
                t.revision = self.revision;
            }
            CatalogCommand::AllocSequence { name, count } => {
                let next = self.sequences.entry(name).or_insert(1);
                *next = next
                    .checked_add(count.max(1))
                    .ok_or_else(|| CoordError::Storage {
                        sqlstate: "2200H".into(),
                        message: "sequence reached its maximum value".into(),
                    })?;
            }
            CatalogCommand::CreateIndex { table, index } => {
                let t = self
                    .tables
                    .get_mut(&table)
                    .ok_or_else(|| CoordError::UndefinedTable(table.clone()))?;
                t.indexes.push(index);
                self.revision += 1;
                t.revision = self.revision;
            }
            CatalogCommand::PutRole { mut role, create } => {
                match self.roles.get(&role.name) {
                    Some(_) if create => {
                        return Err(CoordError::DuplicateObject(format!(
                            "role \"{}\" already exists",
                            role.name
                        )))
                    }
                    Some(old) => role.oid = old.oid,
                    None => {
                        role.oid = self.next_oid;
                        self.next_oid += 1;
                    }
                }
                self.roles.insert(role.name.clone(), role);
            }
            CatalogCommand::DropRole { name } => {
                if self.roles.remove(&name).is_none() {
                    return Err(CoordError::UndefinedObject(format!(
                        "role \"{name}\" does not exist"
                    )));
                }
            }
            CatalogCommand::SetTableOptions { table, cache } => {
                let t = self
                    .tables
                    .get_mut(&table)
                    .ok_or_else(|| CoordError::UndefinedTable(table.clone()))?;
                t.cache = cache;
                self.revision += 1;
                t.revision = self.revision;
            }
        }
        Ok(())
    }

    /// Reserves an id (used when building groups before the command that records them).
    pub fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// A table by name, or 42P01.
    pub fn table(&self, name: &str) -> Result<&Table, CoordError> {
        self.tables
            .get(name)
            .ok_or_else(|| CoordError::UndefinedTable(name.to_string()))
    }

    /// A table's group.
    pub fn group_of(&self, table: &Table) -> Result<&Group, CoordError> {
        self.groups
            .get(&table.group)
            .ok_or_else(|| CoordError::Internal(format!("table {} has no group", table.name)))
    }

    /// The shard with id `id` and its group.
    pub fn shard(&self, id: u64) -> Option<(&Group, &Shard)> {
        self.groups
            .values()
            .find_map(|g| g.shards.iter().find(|s| s.id == id).map(|s| (g, s)))
    }

    fn shard_mut(&mut self, id: u64) -> Result<&mut Shard, CoordError> {
        self.groups
            .values_mut()
            .flat_map(|g| g.shards.iter_mut())
            .find(|s| s.id == id)
            .ok_or_else(|| CoordError::Internal(format!("no shard {id}")))
    }

    /// The node by id.
    pub fn node(&self, id: u64) -> Result<&Node, CoordError> {
        self.nodes
            .get(&id)
            .ok_or_else(|| CoordError::Internal(format!("node {id} unknown")))
    }

    /// Groups with no table left: their shards can be dropped.
    pub fn unused_groups(&self) -> Vec<u64> {
        self.groups
            .keys()
            .filter(|g| !self.tables.values().any(|t| t.group == **g))
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, group: u64) -> Table {
        let id = Column {
            not_null: true,
            ..Column::new("id", PgType::Int8)
        };
        Table {
            primary_key: vec!["id".into()],
            distribution: Distribution::Hash {
                column: "id".into(),
            },
            group,
            ..Table::new(name, vec![id])
        }
    }

    #[test]
    fn apply_is_deterministic_and_validates() {
        let cmds = vec![
            CatalogCommand::UpsertNode {
                name: "a".into(),
                addr: "127.0.0.1:1".into(),
            },
            CatalogCommand::CreateTable {
                table: table("t", 5),
                new_group: Some(Group {
                    id: 5,
                    kind: GroupKind::Hash,
                    replicas: 1,
                    shards: vec![Shard {
                        id: 6,
                        index: 0,
                        placements: vec![1],
                        filling: vec![],
                        fill_lease_ms: 0,
                        fill_id: 0,
                        lower: None,
                        upper: None,
                    }],
                }),
            },
            CatalogCommand::AddColumn {
                table: "t".into(),
                column: Column {
                    name: "v".into(),
                    ty: PgType::Text,
                    not_null: false,
                    default: None,
                    serial: false,
                },
            },
        ];
        let mut a = Catalog::default();
        let mut b = Catalog::default();
        for c in cmds.clone() {
            a.apply(c).expect("apply a");
        }
        for c in cmds {
            b.apply(c).expect("apply b");
        }
        assert_eq!(a, b);
        assert_eq!(a.next_id, 7);
        assert!(matches!(
            a.apply(CatalogCommand::CreateTable {
                table: table("t", 5),
                new_group: None
            }),
            Err(CoordError::DuplicateTable(_))
        ));
        assert!(matches!(
            a.apply(CatalogCommand::DropTable {
                name: "nope".into(),
                cascade: false,
            }),
            Err(CoordError::UndefinedTable(_))
        ));
        a.apply(CatalogCommand::DropTable {
            name: "t".into(),
            cascade: false,
        })
        .expect("drop");
        assert_eq!(a.unused_groups(), vec![5]);
    }

    /// A catalog with table `t` in one shard (6) of a group (5) of `replicas` copies.
    fn one_shard(replicas: u32, placements: Vec<u64>, filling: Vec<u64>) -> Catalog {
        let mut c = Catalog::default();
        c.apply(CatalogCommand::CreateTable {
            table: table("t", 5),
            new_group: Some(Group {
                id: 5,
                kind: GroupKind::Hash,
                replicas,
                shards: vec![Shard {
                    id: 6,
                    index: 0,
                    placements,
                    filling,
                    fill_lease_ms: 0,
                    fill_id: 0,
                    lower: None,
                    upper: None,
                }],
            }),
        })
        .expect("create");
        c
    }

    /// A fill: the new copy receives writes (write_nodes) but is no placement until it
    /// finishes; a move's finish replaces the leaving copy; abandoning or the node's death
    /// ends it; a finish without a fill is refused (a fill abandoned meanwhile).
    #[test]
    fn fills_join_placements_only_when_finished() {
        let mut c = one_shard(1, vec![1], vec![]);
        let shard = |c: &Catalog| c.shard(6).expect("shard").1.clone();
        c.apply(CatalogCommand::BeginFill {
            shard: 6,
            node: 2,
            lease_until_ms: 1,
            fill: 0,
        })
        .expect("begin");
        assert_eq!(shard(&c).placements, vec![1]);
        assert_eq!(shard(&c).write_nodes().collect::<Vec<_>>(), vec![1, 2]);
        assert!(
            c.apply(CatalogCommand::BeginFill {
                shard: 6,
                node: 1,
                lease_until_ms: 1,
                fill: 0,
            })
            .is_err(),
            "a node holding a copy is not filled"
        );
        c.apply(CatalogCommand::FinishFill {
            shard: 6,
            node: 2,
            leaving: Some(1),
            source: None,
            fill: 0,
        })
        .expect("finish");
        assert_eq!(shard(&c).placements, vec![2]);
        assert!(shard(&c).filling.is_empty());
        assert!(c
            .apply(CatalogCommand::FinishFill {
                shard: 6,
                node: 3,
                leaving: None,
                source: None,
                fill: 0,
            })
            .is_err());
        c.apply(CatalogCommand::BeginFill {
            shard: 6,
            node: 3,
            lease_until_ms: 1,
            fill: 0,
        })
        .expect("begin");
        c.apply(CatalogCommand::AbandonFill {
            shard: 6,
            node: 3,
            fill: 0,
        })
        .expect("abandon");
        assert_eq!(shard(&c).write_nodes().collect::<Vec<_>>(), vec![2]);
        c.apply(CatalogCommand::BeginFill {
            shard: 6,
            node: 3,
            lease_until_ms: 1,
            fill: 0,
        })
        .expect("begin");
        c.apply(CatalogCommand::DropPlacements { node: 3 })
            .expect("dead");
        assert_eq!(shard(&c).write_nodes().collect::<Vec<_>>(), vec![2]);
    }

    /// An unreachable copy leaves its shard only while `keep` copies remain: a coordinator
    /// cut off from some nodes cannot shrink a shard below a majority.
    #[test]
    fn a_lost_copy_leaves_only_while_a_majority_remains() {
        let mut c = one_shard(3, vec![1, 2, 3], vec![4]);
        let drop = |node| CatalogCommand::DropCopy {
            shard: 6,
            node,
            keep: 2,
        };
        c.apply(drop(1)).expect("3 copies: one may go");
        assert_eq!(c.shard(6).expect("shard").1.placements, vec![2, 3]);
        let e = c.apply(drop(2)).expect_err("2 copies are the majority");
        assert_eq!(e.sqlstate(), "58000");
        c.apply(drop(4)).expect("a filling copy just stops");
        let s = &c.shard(6).expect("shard").1;
        assert_eq!(s.write_nodes().collect::<Vec<_>>(), vec![2, 3]);
    }
}
