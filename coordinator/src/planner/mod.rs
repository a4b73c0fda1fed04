//! The distributed planner: from a statement's AST and the catalog to a plain-data [`Plan`].
//!
//! A plan says where a statement runs (which shards on which nodes, with what
//! SQL) and how the coordinator finishes it (the [`Merge`]). Plans are data:
//! unit tests check them without any node, and `EXPLAIN` prints them.

pub mod aggregate;
pub mod dml;
pub mod doc_groups;
pub mod explain;
mod fuzz;
pub mod groups;
pub mod json_args;
pub mod json_srf;
pub mod path_index;
pub mod route;
pub mod row_lock;
pub mod select;
pub mod vertical;

use crate::catalog::{Catalog, Column, Group, GroupKind, Shard};
use crate::error::CoordError;
use crate::sql::dialect::RewriteCtx;
use crate::sql::infer::OutputColumn;
use sqlparser::ast::Statement;
use tessera_shared::Value;

/// The top-level AND-ed terms of a condition (parentheses looked through).
pub fn conjuncts(e: &sqlparser::ast::Expr) -> Vec<&sqlparser::ast::Expr> {
    use sqlparser::ast::{BinaryOperator, Expr};
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            let mut v = conjuncts(left);
            v.extend(conjuncts(right));
            v
        }
        Expr::Nested(inner) => conjuncts(inner),
        other => vec![other],
    }
}

/// Whether an expression is itself a subquery (scalar, `EXISTS` or `IN (SELECT …)`).
pub fn is_subquery(e: &sqlparser::ast::Expr) -> bool {
    use sqlparser::ast::{Expr, InTarget};
    matches!(
        e,
        Expr::Subquery(_)
            | Expr::Exists { .. }
            | Expr::In {
                target: InTarget::Subquery(_),
                ..
            }
    )
}

/// A shard and the node that serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    /// Shard id.
    pub shard: u64,
    /// Node id.
    pub node: u64,
}

/// SQL to run on one shard.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardTask {
    /// Where.
    pub target: Target,
    /// SQLite SQL with `?n` parameters.
    pub sql: String,
    /// A locking read: how the shard locks the rows it returns.
    pub lock: Option<row_lock::RowLock>,
}

/// One ORDER BY key of a k-way merge.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    /// Column index in the shard rows.
    pub column: usize,
    /// Descending.
    pub desc: bool,
    /// NULLs sort first.
    pub nulls_first: bool,
}

/// How the coordinator combines shard results.
#[derive(Debug, Clone, PartialEq)]
pub enum Merge {
    /// One task: its rows are the result.
    Single,
    /// Every task holds the same data (reference table writes): keep the first task's result.
    FirstOnly,
    /// A write to replicated shards: the first `primaries` tasks are one copy of each shard,
    /// the rest the same statements on the other copies. Only the first copies' results count.
    Replicated {
        /// Tasks whose results count.
        primaries: usize,
        /// How those results combine.
        inner: Box<Merge>,
    },
    /// Append results, then apply OFFSET/LIMIT.
    Concat {
        /// LIMIT.
        limit: Option<u64>,
        /// OFFSET.
        offset: u64,
    },
    /// k-way merge of sorted shard results, then OFFSET/LIMIT; only the first `visible` columns are returned.
    Sort {
        /// Keys.
        keys: Vec<SortKey>,
        /// LIMIT.
        limit: Option<u64>,
        /// OFFSET.
        offset: u64,
        /// Columns returned to the client (the rest are hidden sort keys).
        visible: usize,
    },
    /// Load shard rows into a table `partials(__t0, ...)` of `width` columns and run `sql` over it.
    Final {
        /// Final SQL (aggregates combined, GROUP BY, HAVING, ORDER BY, LIMIT).
        sql: String,
        /// Number of partial columns.
        width: usize,
    },
}

/// A table pulled whole to the coordinator.
#[derive(Debug, Clone, PartialEq)]
pub struct PullTable {
    /// Table name (also its name in the coordinator's scratch database).
    pub name: String,
    /// Its columns.
    pub columns: Vec<Column>,
    /// Shards to read (one per shard; one in all for reference tables), pruned by `filter`.
    pub targets: Vec<Target>,
    /// The query's alias for the table, which `filter` refers to.
    pub alias: Option<String>,
    /// WHERE conjuncts on this table alone, applied by the shards (SQLite SQL, `?n` parameters).
    pub filter: Option<String>,
}

/// Where and how a statement runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// No table: evaluated in the coordinator's scratch SQLite.
    Local {
        /// SQLite SQL.
        sql: String,
    },
    /// Pushed to shards, then merged.
    Distributed {
        /// Per-shard SQL.
        tasks: Vec<ShardTask>,
        /// How results combine.
        merge: Merge,
        /// Whether the statement writes (several shards then commit together).
        write: bool,
    },
    /// Tables gathered to the coordinator, the query finished there.
    Pull {
        /// Tables to gather.
        tables: Vec<PullTable>,
        /// SQLite SQL run over them.
        sql: String,
        /// Why the query could not be pushed down (shown by EXPLAIN).
        reason: String,
    },
}

/// A planned statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// The plan.
    pub plan: Plan,
    /// Output columns (empty for DML without RETURNING).
    pub columns: Vec<OutputColumn>,
    /// Command tag (`SELECT`, `INSERT`, ...).
    pub tag: &'static str,
}

/// What planning needs besides the statement.
pub struct PlanCtx<'a> {
    /// Catalog snapshot.
    pub catalog: &'a Catalog,
    /// Bound parameters (for routing on `$n`).
    pub params: &'a [Value],
    /// Statement-time values for the dialect rewrite.
    pub rewrite: &'a RewriteCtx,
}

/// Plans a query or DML statement.
pub fn plan(stmt: &Statement, ctx: &PlanCtx<'_>) -> Result<Planned, CoordError> {
    let planned = match stmt {
        Statement::Query(q) => return select::plan_query(q, ctx),
        Statement::Insert(i) => dml::plan_insert(i, ctx),
        Statement::Update(u) => dml::plan_update(u, ctx),
        Statement::Delete(d) => dml::plan_delete(d, ctx),
        other => Err(CoordError::unsupported(format!(
            "statement not supported: {}",
            first_words(other)
        ))),
    }?;
    // Copies apply the row changes of a write's first copy, so every value is computed once.
    // Two kinds of copies run the statement themselves: a document table's (its writes are
    // not recorded as row changes) and a reference table's (one per node, each written on
    // its own).
    if let Plan::Distributed {
        merge, write: true, ..
    } = &planned.plan
    {
        let replicated = matches!(merge, Merge::Replicated { .. });
        let own = names_table(stmt, ctx.catalog, |t| {
            (replicated && t.storage == crate::catalog::Storage::Document)
                || t.distribution == crate::catalog::Distribution::Reference
        });
        if let Some(f) = volatile_function(stmt).filter(|_| own) {
            return Err(CoordError::unsupported(format!(
                "{f}() in a write to a reference table or a replicated document table: every copy would compute its own value; pass the value in instead"
            )));
        }
    }
    Ok(planned)
}

/// Whether `stmt` names a table for which `pred` holds.
fn names_table(
    stmt: &Statement,
    catalog: &Catalog,
    pred: impl Fn(&crate::catalog::Table) -> bool,
) -> bool {
    sqlparser::ast::visit_relations(stmt, |r| {
        let hit = crate::sql::names::table_name(r)
            .ok()
            .and_then(|n| catalog.tables.get(&n))
            .is_some_and(&pred);
        if hit {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    })
    .is_break()
}

/// A function whose value differs per call (and so per replica), if `node` calls one.
pub fn volatile_function(node: &impl sqlparser::ast::Visit) -> Option<String> {
    let mut found = None;
    let _ = sqlparser::ast::visit_expressions(node, |e| {
        if let sqlparser::ast::Expr::Function(f) = e {
            let name = crate::sql::names::function_name(&f.name);
            let name = name.rsplit('.').next().unwrap_or_default();
            if matches!(
                name,
                "random" | "gen_random_uuid" | "uuid_generate_v4" | "setseed" | "randomblob"
            ) {
                found = Some(name.to_string());
                return std::ops::ControlFlow::Break(());
            }
        }
        std::ops::ControlFlow::Continue(())
    });
    found
}

fn first_words(s: &Statement) -> String {
    s.to_string()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The node serving a shard (its first placement).
pub fn target(shard: &Shard) -> Result<Target, CoordError> {
    let node = *shard
        .placements
        .first()
        .ok_or_else(|| CoordError::Internal(format!("shard {} has no placement", shard.id)))?;
    Ok(Target {
        shard: shard.id,
        node,
    })
}

/// The copy a read uses: the first placement whose node failure detection has not flagged,
/// else the first (a replicated shard's reads move off a suspect node at once).
pub fn read_target(catalog: &Catalog, shard: &Shard) -> Result<Target, CoordError> {
    let alive = shard.placements.iter().find(|n| {
        catalog
            .nodes
            .get(n)
            .is_some_and(|n| n.liveness == crate::catalog::Liveness::Alive)
    });
    match alive {
        Some(node) => Ok(Target {
            shard: shard.id,
            node: *node,
        }),
        None => target(shard),
    }
}

/// The shard a reference-table read uses.
pub fn reference_read_target(group: &Group) -> Result<Target, CoordError> {
    debug_assert_eq!(group.kind, GroupKind::Reference);
    target(
        group
            .shards
            .first()
            .ok_or_else(|| CoordError::Internal("reference group has no shard".into()))?,
    )
}

#[cfg(test)]
pub(crate) mod testing {
    //! A catalog for planner tests: `users` and `orders` hash-distributed on 4 shards,
    //! `countries` a reference table, `events` range-distributed.
    use crate::catalog::*;
    use tessera_shared::PgType;

    fn col(name: &str, ty: PgType) -> Column {
        Column {
            name: name.into(),
            ty,
            not_null: false,
            default: None,
            serial: false,
            max_chars: None,
        }
    }

    /// Plans `sql` against [`catalog`] with `params`.
    pub fn plan_sql(
        sql: &str,
        params: &[tessera_shared::Value],
    ) -> Result<crate::planner::Planned, crate::error::CoordError> {
        plan_sql_on(&catalog(), sql, params)
    }

    /// Plans `sql` against catalog `c` with `params`.
    pub fn plan_sql_on(
        c: &Catalog,
        sql: &str,
        params: &[tessera_shared::Value],
    ) -> Result<crate::planner::Planned, crate::error::CoordError> {
        let r = crate::sql::dialect::RewriteCtx::new("u", "d");
        let s =
            sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
                .expect("parse");
        crate::planner::plan(
            &s[0],
            &crate::planner::PlanCtx {
                catalog: c,
                params,
                rewrite: &r,
            },
        )
    }

    pub fn catalog() -> Catalog {
        let mut c = Catalog::default();
        for (i, n) in ["n1", "n2", "n3"].iter().enumerate() {
            c.apply(CatalogCommand::UpsertNode {
                name: n.to_string(),
                addr: format!("127.0.0.1:{}", 1000 + i),
            })
            .expect("node");
        }
        let hash = Group {
            id: 10,
            kind: GroupKind::Hash,
            replicas: 1,
            shards: (0..4)
                .map(|i| Shard {
                    id: 100 + i as u64,
                    index: i,
                    placements: vec![1 + (i as u64 % 3)],
                    filling: vec![],
                    fill_lease_ms: 0,
                    fill_id: 0,
                    lower: None,
                    upper: None,
                })
                .collect(),
        };
        let reference = Group {
            id: 20,
            kind: GroupKind::Reference,
            replicas: 1,
            shards: (0..3)
                .map(|i| Shard {
                    id: 200 + i as u64,
                    index: i,
                    placements: vec![1 + i as u64],
                    filling: vec![],
                    fill_lease_ms: 0,
                    fill_id: 0,
                    lower: None,
                    upper: None,
                })
                .collect(),
        };
        let range = Group {
            id: 30,
            kind: GroupKind::Range,
            replicas: 1,
            shards: vec![
                Shard {
                    id: 300,
                    index: 0,
                    placements: vec![1],
                    filling: vec![],
                    fill_lease_ms: 0,
                    fill_id: 0,
                    lower: None,
                    upper: Some(Bound::Int(100)),
                },
                Shard {
                    id: 301,
                    index: 1,
                    placements: vec![2],
                    filling: vec![],
                    fill_lease_ms: 0,
                    fill_id: 0,
                    lower: Some(Bound::Int(100)),
                    upper: Some(Bound::Int(200)),
                },
                Shard {
                    id: 302,
                    index: 2,
                    placements: vec![3],
                    filling: vec![],
                    fill_lease_ms: 0,
                    fill_id: 0,
                    lower: Some(Bound::Int(200)),
                    upper: None,
                },
            ],
        };
        let t = |name: &str, cols: Vec<Column>, dist: Distribution, group: u64| Table {
            distribution: dist,
            group,
            ..Table::new(name, cols)
        };
        c.apply(CatalogCommand::CreateTable {
            table: t(
                "users",
                vec![
                    col("id", PgType::Int8),
                    col("name", PgType::Text),
                    col("age", PgType::Int4),
                    col("country", PgType::Text),
                ],
                Distribution::Hash {
                    column: "id".into(),
                },
                10,
            ),
            new_group: Some(hash),
        })
        .expect("users");
        c.apply(CatalogCommand::CreateTable {
            table: t(
                "orders",
                vec![col("user_id", PgType::Int8), col("amount", PgType::Float8)],
                Distribution::Hash {
                    column: "user_id".into(),
                },
                10,
            ),
            new_group: None,
        })
        .expect("orders");
        c.apply(CatalogCommand::CreateTable {
            table: t(
                "countries",
                vec![col("code", PgType::Text), col("name", PgType::Text)],
                Distribution::Reference,
                20,
            ),
            new_group: Some(reference),
        })
        .expect("countries");
        c.apply(CatalogCommand::CreateTable {
            table: t(
                "events",
                vec![col("ts", PgType::Int8), col("what", PgType::Text)],
                Distribution::Range {
                    column: "ts".into(),
                },
                30,
            ),
            new_group: Some(range),
        })
        .expect("events");
        c
    }
}
