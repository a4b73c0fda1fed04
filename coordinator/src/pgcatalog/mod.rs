//! The PostgreSQL system catalogs, emulated: `pg_catalog` and `information_schema` relations
//! generated from Tessera's catalog, so psql's `\dt`, `\l`, `\dn`, `\du`, `\di`, ORMs'
//! introspection and BI tools find the tables.
//!
//! A query that names a system relation runs in the coordinator's scratch SQLite: the
//! relations it names are built ([`tables`]), the query is rewritten for SQLite ([`rewrite`]:
//! `pg_catalog.` prefixes, `::regclass` and friends, regular-expression operators,
//! `ARRAY(subquery)`, `= ANY(array)`), and the functions catalog queries call are registered
//! ([`functions`]).

pub mod functions;
pub mod rewrite;
pub mod tables;

use crate::catalog::{Catalog, Column, Table};
use crate::error::CoordError;
use crate::exec::scratch::{self, Loaded};
use crate::session::Session;
use crate::sql::dialect::{render, RewriteCtx};
use crate::sql::infer::{query_columns, OutputColumn};
use sqlparser::ast::{
    visit_expressions, visit_relations, Expr, GroupByExpr, JoinOperator, ObjectName, Query, Select,
    SetExpr, SetOperator, Statement, TableFactor, Visit, Visitor,
};
use std::ops::ControlFlow;
use tessera_shared::Value;

/// The scratch name of a relation if it is a system relation: `pg_catalog.x` → `x`,
/// `information_schema.x` → `information_schema__x`, and an unqualified `pg_…` name that no
/// user table has.
pub fn system_name(name: &ObjectName, catalog: &Catalog) -> Option<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident())
        .map(|i| i.value.to_lowercase())
        .collect();
    let candidate = match parts.as_slice() {
        [schema, rel] if schema == "pg_catalog" => rel.clone(),
        [schema, rel] if schema == "information_schema" => format!("information_schema__{rel}"),
        [rel] if !catalog.tables.contains_key(rel) => rel.clone(),
        _ => return None,
    };
    tables::emulates(&candidate).then_some(candidate)
}

/// Whether `stmt` runs here rather than on the shards: it reads a system relation, or it
/// reads no table and converts with `::regclass` and friends (`SELECT 'users'::regclass::oid`).
pub fn applies(stmt: &Statement, catalog: &Catalog) -> bool {
    let Statement::Query(_) = stmt else {
        return false;
    };
    let mut user_tables = false;
    let system = visit_relations(stmt, |r| {
        if system_name(r, catalog).is_some() {
            return ControlFlow::Break(());
        }
        user_tables = true;
        ControlFlow::Continue(())
    })
    .is_break();
    system
        || (!user_tables
            && visit_expressions(stmt, |e| match e {
                Expr::Cast { data_type, .. } if rewrite::is_catalog_type(data_type) => {
                    ControlFlow::Break(())
                }
                Expr::Function(f) if functions::is_catalog_function(&f.name) => {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            })
            .is_break())
}

/// A catalog query ready to run: SQLite SQL, the relations it needs, its result columns.
pub struct Prepared {
    /// SQLite SQL.
    pub sql: String,
    /// Scratch names of the system relations it reads.
    pub relations: Vec<String>,
    /// Result columns.
    pub columns: Vec<OutputColumn>,
    /// The query must read an always-empty relation: no rows, nothing to run.
    pub empty: bool,
}

fn is_empty_relation(f: &TableFactor) -> bool {
    match f {
        TableFactor::Table { name, .. } => name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .is_some_and(|i| tables::always_empty(&i.value)),
        _ => false,
    }
}

/// Whether the select list aggregates (outside subqueries): then it returns a row even
/// over no input.
fn has_aggregate(s: &Select) -> bool {
    const AGGREGATES: &[&str] = &[
        "count",
        "sum",
        "min",
        "max",
        "avg",
        "array_agg",
        "tessera_array_agg",
        "string_agg",
        "bool_and",
        "bool_or",
        "every",
        "json_agg",
        "jsonb_agg",
    ];
    struct Finder {
        depth: usize,
    }
    impl Visitor for Finder {
        type Break = ();
        fn pre_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            match e {
                Expr::Function(f)
                    if self.depth == 0
                        && f.name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| {
                            AGGREGATES.contains(&i.value.to_lowercase().as_str())
                        }) =>
                {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            }
        }
    }
    s.projection.visit(&mut Finder { depth: 0 }).is_break()
}

/// Whether `body` returns no rows because every way through it inner-joins an always-empty
/// relation (psql's `\d` asks for policies, statistics objects, publications, inheritance).
fn always_empty(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(s) => {
            s.group_by == GroupByExpr::Expressions(vec![], vec![])
                && !has_aggregate(s)
                && s.from.iter().any(|twj| {
                    is_empty_relation(&twj.relation)
                        || twj.joins.iter().any(|j| {
                            matches!(
                                j.join_operator,
                                JoinOperator::Inner(_)
                                    | JoinOperator::Join(_)
                                    | JoinOperator::CrossJoin(_)
                            ) && is_empty_relation(&j.relation)
                        })
                })
        }
        SetExpr::Query(q) => always_empty(&q.body),
        SetExpr::SetOperation {
            op, left, right, ..
        } => match op {
            SetOperator::Union => always_empty(left) && always_empty(right),
            SetOperator::Intersect => always_empty(left) || always_empty(right),
            _ => always_empty(left),
        },
        _ => false,
    }
}

/// A system relation's columns as a table, for type inference.
fn as_table(st: &tables::SystemTable) -> Table {
    let columns = st
        .columns
        .iter()
        .map(|(n, ty)| Column::new(*n, *ty))
        .collect();
    Table {
        cache: false,
        ..Table::new(st.name, columns)
    }
}

/// Rewrites and types a catalog query.
pub fn prepare(
    stmt: &Statement,
    catalog: &Catalog,
    session: &Session,
) -> Result<Prepared, CoordError> {
    let Statement::Query(q) = stmt else {
        return Err(CoordError::Internal("not a catalog query".into()));
    };
    let mut q = q.clone();
    let relations = rewrite::rewrite(&mut q, catalog)?;
    let mut typed = catalog.clone();
    for r in &relations {
        if let Some(st) = tables::build(r, catalog, session) {
            typed.tables.insert(r.clone(), as_table(&st));
        }
    }
    let columns = query_columns(&q, &typed);
    let empty = always_empty(&q.body);
    crate::sql::dialect::rewrite(
        q.as_mut(),
        &RewriteCtx::new(&session.user, &session.database),
    )?;
    Ok(Prepared {
        sql: render(q.as_ref()),
        relations,
        columns,
        empty,
    })
}

/// Runs a catalog query for `session`.
pub async fn run(
    stmt: &Statement,
    catalog: &Catalog,
    session: &Session,
    params: &[Value],
    budget: &std::sync::Arc<crate::exec::budget::Budget>,
) -> Result<(Vec<OutputColumn>, Vec<Vec<Value>>), CoordError> {
    let p = prepare(stmt, catalog, session)?;
    if p.empty {
        return Ok((p.columns, vec![]));
    }
    let loaded = p
        .relations
        .iter()
        .filter_map(|r| tables::build(r, catalog, session))
        .map(|st| Loaded {
            name: st.name.to_string(),
            columns: st.columns.iter().map(|c| c.0.to_string()).collect(),
            types: st.columns.iter().map(|c| c.1.sqlite_type()).collect(),
            rows: st.rows,
        })
        .collect();
    let setup = functions::setup(catalog, session);
    let rows = scratch::query_with(loaded, p.sql, params.to_vec(), setup, budget).await?;
    Ok((p.columns, rows))
}
