//! Catalog changes: [`CatalogCommand`] and the deterministic [`Catalog::apply`].

use super::*;
use crate::error::CoordError;
use serde::{Deserialize, Serialize};

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
}
