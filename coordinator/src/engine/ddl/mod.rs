//! DDL: CREATE/DROP/ALTER TABLE, CREATE INDEX and the Citus-style distribution functions.
//!
//! Each DDL statement first changes every shard, then records the change in the
//! catalog, so a table is never visible to the planner before its shards exist.
//!
//! - [`options`]: `WITH (...)` options; [`create`]: `CREATE TABLE`; [`place`]: where shards go;
//!   [`alter`]: `ALTER` and `DROP TABLE`; [`index`]: `CREATE INDEX`; [`redistribute`]:
//!   re-placing a table. The shard-side schema is [`crate::sql::schema`].

pub mod alter;
pub mod create;
pub mod index;
pub mod options;
pub mod place;
pub mod redistribute;

pub use alter::{alter_table, drop_tables};
pub use create::create_table;
pub use index::create_index;
pub use options::{shard_count_arg, MAX_SHARDS};
pub use redistribute::redistribute;

use crate::catalog::{
    Bound, CatalogCommand, Column, Distribution, ForeignKey, Group, GroupKind, Index, IndexPath,
    Shard, Storage, Table,
};
use crate::engine::Engine;
use crate::error::CoordError;
use crate::exec;
use crate::planner::target;
use crate::session::Session;
use crate::sql;
use crate::sql::dialect::{char_limit, pg_type_of, render, rewrite, RewriteCtx};
use crate::sql::names::{function_name, ident, quote, table_name};
use crate::sql::schema::{index_sql, shard_schema};
use create::*;
use options::*;
use place::*;
use redistribute::*;
use sqlparser::ast::*;
use tessera_shared::proto::ShardKind;
use tessera_shared::{PgType, Value};

pub(super) async fn run_on_shard(
    engine: &Engine,
    t: crate::planner::Target,
    sql: String,
) -> Result<(), CoordError> {
    let catalog = engine.catalog.snapshot();
    let node = catalog.node(t.node)?;
    let st = tessera_shared::proto::Statement {
        sql,
        params: vec![],
        returns_rows: false,
        lock: None,
    };
    engine
        .cluster
        .execute(node, t.shard, 0, vec![st])
        .await
        .map(|_| ())
}

pub(super) async fn run_on_all_shards(
    engine: &Engine,
    table: &Table,
    sql: String,
) -> Result<(), CoordError> {
    let catalog = engine.catalog.snapshot();
    for s in &catalog.group_of(table)?.shards {
        for t in replica_targets(s) {
            run_on_shard(engine, t, sql.clone()).await?;
        }
    }
    Ok(())
}

/// Every copy of a shard, those being filled included.
pub(super) fn replica_targets(s: &Shard) -> impl Iterator<Item = crate::planner::Target> + '_ {
    s.write_nodes()
        .map(|node| crate::planner::Target { shard: s.id, node })
}

/// `TRUNCATE`: deletes every row of each table (a table with column groups through its
/// groups' tables).
pub(super) async fn truncate(
    engine: &Engine,
    session: &mut Session,
    t: &Truncate,
    rctx: &RewriteCtx,
) -> Result<(), CoordError> {
    let catalog = engine.catalog.snapshot();
    let mut names = Vec::new();
    for target in &t.table_names {
        let name = table_name(&target.name)?;
        // A table with column groups is emptied through its groups' tables.
        match catalog.tables.get(&name) {
            Some(t) if !t.column_groups.is_empty() => {
                names.extend(t.column_groups.iter().map(|g| g.table.clone()))
            }
            _ => names.push(name),
        }
    }
    for name in names {
        let planned = engine.plan(&Statement::Delete(delete_all(&name)?), &[], rctx)?;
        exec::execute(&engine.reach(), session, &planned, &[]).await?;
    }
    Ok(())
}

fn delete_all(table: &str) -> Result<Delete, CoordError> {
    let sql = format!("DELETE FROM {}", crate::sql::names::quote(table));
    match sql::parse::parse(&sql)?.pop() {
        Some(Statement::Delete(d)) => Ok(d),
        _ => Err(CoordError::Internal(format!("cannot build {sql}"))),
    }
}
