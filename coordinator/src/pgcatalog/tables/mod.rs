//! The rows of the emulated `pg_catalog` and `information_schema` relations, generated from
//! Tessera's catalog, one file per group of relations behind [`RelationGroup`]. OIDs are
//! stable: tables keep their catalog OID, indexes and constraints derive theirs from it.

mod activity;
mod constraints;
mod database;
mod empty;
mod indexes;
mod relations;
mod roles;
mod types;

pub use constraints::{constraints, ConstraintView};
pub use indexes::{indexdef, indexes, IndexView};
pub use roles::{owner, owner_name};
pub use types::typname;

use relations::attnum;
use types::{collatable, storage, typlen};

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

/// A relation's typed columns and its rows, as a group builds them.
type Relation = (Vec<(&'static str, PgType)>, Vec<Vec<Value>>);

/// What every relation is built from.
#[derive(Clone, Copy)]
struct Context<'a> {
    catalog: &'a Catalog,
    session: &'a Session,
    /// The owner OID every object shows ([`owner`]).
    owner: i64,
}

/// A group of emulated relations built from the same part of the catalog.
trait RelationGroup: Sync {
    /// The scratch names of its relations: `pg_catalog.x` is `x`, `information_schema.x` is
    /// `information_schema__x`.
    fn names(&self) -> &'static [&'static str];
    /// Builds the relation `name`, one of [`RelationGroup::names`].
    fn build(&self, name: &str, cx: &Context<'_>) -> Option<Relation>;
}

/// Every group; a relation belongs to exactly one.
const GROUPS: &[&dyn RelationGroup] = &[
    &database::Database,
    &relations::Relations,
    &indexes::Indexes,
    &constraints::Constraints,
    &types::Types,
    &roles::Roles,
    &activity::Activity,
    &empty::Empty,
];

/// Whether `name` is a relation this module emulates (by scratch name).
pub fn emulates(name: &str) -> bool {
    GROUPS.iter().any(|g| g.names().contains(&name))
}

/// Whether `name` is a relation that is always empty in Tessera (no policies, statistics
/// objects, publications, triggers, rules, inheritance …): a query that must read one of them
/// reads nothing.
pub fn always_empty(name: &str) -> bool {
    empty::Empty.names().contains(&name)
}

/// Builds the relation `name` (see [`emulates`]).
pub fn build(name: &str, catalog: &Catalog, session: &Session) -> Option<SystemTable> {
    let cx = Context {
        catalog,
        session,
        owner: owner(catalog),
    };
    GROUPS.iter().find_map(|g| {
        let name = g.names().iter().find(|n| **n == name)?;
        let (columns, rows) = g.build(name, &cx)?;
        Some(SystemTable {
            name,
            columns,
            rows,
        })
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_relation_belongs_to_one_group_and_builds() {
        let catalog = Catalog::default();
        let session = Session::new("postgres", "postgres");
        let mut seen = std::collections::HashSet::new();
        for g in GROUPS {
            for name in g.names() {
                assert!(seen.insert(*name), "{name} is in two groups");
                let st = build(name, &catalog, &session).expect(name);
                assert_eq!(st.name, *name);
                assert!(!st.columns.is_empty(), "{name} has no columns");
                if always_empty(name) {
                    assert!(st.rows.is_empty(), "{name} should be empty");
                }
                for row in &st.rows {
                    assert_eq!(row.len(), st.columns.len(), "{name}: row width");
                }
            }
        }
        assert!(build("pg_nothing", &catalog, &session).is_none());
    }
}
