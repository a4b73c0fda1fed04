//! Planning of queries: one shard, scatter-gather with a merge, or pull to the coordinator.

use super::aggregate::{decompose, Decomposed};
use super::route::{names_for, prune};
use super::row_lock;
use super::{reference_read_target, target, Merge, Plan, PlanCtx, Planned, PullTable, ShardTask};
use crate::catalog::{Distribution, GroupKind, Table};
use crate::error::CoordError;
use crate::sql::dialect::{render, rewrite};
use crate::sql::infer::query_columns;
use crate::sql::names::{column_ref, table_name};
use sqlparser::ast::*;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

/// Tables a statement reads or writes, in first-mention order, without CTE names.
pub fn referenced_tables(
    node: &impl Visit,
    ctes: &BTreeSet<String>,
) -> Result<Vec<String>, CoordError> {
    let mut out: Vec<String> = Vec::new();
    let mut err = None;
    let _ = visit_relations(node, |r| {
        match table_name(r) {
            Ok(n) if ctes.contains(&n) => {}
            // A JSON set-returning function in FROM is not a table.
            Ok(n) if crate::planner::json_srf::is_function(&n) => {}
            Ok(n) => {
                if !out.contains(&n) {
                    out.push(n)
                }
            }
            Err(e) => err = Some(e),
        }
        ControlFlow::<()>::Continue(())
    });
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn cte_names(q: &Query) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    fn walk(q: &Query, names: &mut BTreeSet<String>) {
        if let Some(w) = &q.with {
            for c in &w.cte_tables {
                names.insert(crate::sql::names::ident(&c.alias.name));
                walk(&c.query, names);
            }
        }
    }
    walk(q, &mut names);
    names
}

/// Whether a query nests another query (subquery, derived table, CTE, set operation).
fn has_nested_query(q: &Query) -> bool {
    if q.with.is_some() || !matches!(q.body.as_ref(), SetExpr::Select(_)) {
        return true;
    }
    let mut nested = false;
    let _ = visit_expressions(q, |e| {
        if crate::planner::is_subquery(e) {
            nested = true;
        }
        ControlFlow::<()>::Continue(())
    });
    if let SetExpr::Select(s) = q.body.as_ref() {
        for twj in &s.from {
            let factors =
                std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation));
            for f in factors {
                if !matches!(f, TableFactor::Table { args: None, .. }) {
                    nested = true;
                }
            }
        }
    }
    nested
}

/// Plans a query.
pub fn plan_query(q: &Query, ctx: &PlanCtx<'_>) -> Result<Planned, CoordError> {
    let catalog = ctx.catalog;
    let ctes = cte_names(q);
    let names = referenced_tables(q, &ctes)?;
    let tables: Vec<&Table> = names
        .iter()
        .map(|n| catalog.table(n))
        .collect::<Result<_, _>>()?;
    let columns = query_columns(q, catalog);
    let mut q = q.clone();
    let lock = row_lock::take(&mut q, &tables)?;
    let lock = lock.as_ref();
    crate::planner::json_srf::lift(&mut q)?;
    if let ([table], SetExpr::Select(s)) = (tables.as_slice(), q.body.as_mut()) {
        if let Some(w) = s.selection.as_mut() {
            crate::planner::path_index::use_path_indexes(w, table);
        }
    }
    crate::planner::json_args::mark_json_arguments(&mut q, &tables);
    rewrite(&mut q, ctx.rewrite)?;
    let planned = |plan| {
        Ok(Planned {
            plan,
            columns: columns.clone(),
            tag: "SELECT",
        })
    };

    if tables.is_empty() {
        return planned(Plan::Local { sql: render(&q) });
    }
    let distributed: Vec<&Table> = tables
        .iter()
        .copied()
        .filter(|t| t.distribution != Distribution::Reference)
        .collect();
    if distributed.is_empty() {
        let group = catalog.group_of(tables[0])?;
        let task = ShardTask {
            target: reference_read_target(group)?,
            sql: render(&q),
            lock: None,
        };
        return planned(Plan::Distributed {
            tasks: vec![task],
            merge: Merge::Single,
            write: false,
        });
    }
    let groups: BTreeSet<u64> = distributed.iter().map(|t| t.group).collect();
    if groups.len() > 1 {
        return planned(pull(
            &q,
            &tables,
            ctx,
            "tables are not co-located (different shard layouts)",
        )?);
    }
    let group = catalog.group_of(distributed[0])?;
    // Everything in one shard: the whole query runs there, whatever its shape.
    if group.shards.len() == 1 {
        let task = row_lock::shard_task(catalog, &group.shards[0], &q, lock, ctx.params)?;
        return planned(Plan::Distributed {
            tasks: vec![task],
            merge: Merge::Single,
            write: false,
        });
    }
    if lock.is_some() && has_nested_query(&q) {
        return Err(CoordError::unsupported(
            "FOR UPDATE/SHARE with subqueries over several shards is not supported by Tessera yet",
        ));
    }
    if has_nested_query(&q) {
        return planned(pull(
            &q,
            &tables,
            ctx,
            "subqueries, CTEs and set operations across shards are finished at the coordinator",
        )?);
    }
    let SetExpr::Select(select) = q.body.as_ref() else {
        return planned(pull(&q, &tables, ctx, "not a plain SELECT")?);
    };
    let scope = from_items(select);
    if !joined_on_distribution_keys(select, &distributed) {
        return planned(pull(
            &q,
            &tables,
            ctx,
            "join is not on the distribution columns",
        )?);
    }
    // Prune with the first distributed table's key; co-located tables joined on
    // their keys live on the same shard index.
    let anchor = distributed[0];
    let anchor_names: Vec<String> = scope
        .iter()
        .filter(|(_, t)| *t == anchor.name)
        .map(|(alias, _)| alias.clone())
        .chain(std::iter::once(anchor.name.clone()))
        .collect();
    let shards = prune(
        catalog,
        anchor,
        &anchor_names,
        select.selection.as_ref(),
        ctx.params,
    )?;
    if shards.len() == 1 {
        let task = row_lock::shard_task(catalog, shards[0], &q, lock, ctx.params)?;
        return planned(Plan::Distributed {
            tasks: vec![task],
            merge: Merge::Single,
            write: false,
        });
    }
    match decompose(&q, select, columns.len(), ctx.params)? {
        Decomposed::Pushed { shard_query, merge } => {
            let tasks = shards
                .iter()
                .map(|s| row_lock::shard_task(catalog, s, &shard_query, lock, ctx.params))
                .collect::<Result<_, CoordError>>()?;
            planned(Plan::Distributed {
                tasks,
                merge,
                write: false,
            })
        }
        Decomposed::NotPushable(reason) if lock.is_some() => Err(CoordError::unsupported(format!(
            "FOR UPDATE/SHARE is not supported by Tessera here yet: {reason}"
        ))),
        Decomposed::NotPushable(reason) => planned(pull(&q, &tables, ctx, &reason)?),
    }
}

/// (alias or name, table name) of each FROM item.
fn from_items(select: &Select) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for twj in &select.from {
        for f in std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation)) {
            if let TableFactor::Table { name, alias, .. } = f {
                if let Ok(n) = table_name(name) {
                    for key in names_for(&n, alias.as_ref()) {
                        out.push((key, n.clone()));
                    }
                }
            }
        }
    }
    out
}

/// Whether every FROM item of a distributed table is connected to the others by equalities
/// between distribution columns (a table joined with itself counts twice: `emp a JOIN emp b
/// ON a.boss = b.id` is not co-located, though one table is).
fn joined_on_distribution_keys(select: &Select, distributed: &[&Table]) -> bool {
    // Each FROM item of a distributed table: the names it is referred to by, and its table.
    let mut items: Vec<(Vec<String>, &Table)> = Vec::new();
    for twj in &select.from {
        for f in std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation)) {
            if let TableFactor::Table { name, alias, .. } = f {
                let Ok(n) = table_name(name) else { continue };
                if let Some(t) = distributed.iter().find(|t| t.name == n) {
                    items.push((names_for(&n, alias.as_ref()), t));
                }
            }
        }
    }
    if items.len() < 2 {
        return true;
    }
    // The WHERE clause and every join condition, each split into its AND-ed terms.
    let mut conditions: Vec<&Expr> = select.selection.iter().collect();
    for twj in &select.from {
        for j in &twj.joins {
            let c = match &j.join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c)
                | JoinOperator::Right(c)
                | JoinOperator::RightOuter(c)
                | JoinOperator::FullOuter(c) => c,
                _ => continue,
            };
            if let JoinConstraint::On(e) = c {
                conditions.push(e);
            }
        }
    }
    // The FROM item a qualified distribution column belongs to (a name two items share, as
    // an unaliased self-join's, belongs to neither).
    let item_of = |q: &str, c: &str| -> Option<usize> {
        let mut found = items
            .iter()
            .enumerate()
            .filter(|(_, (names, _))| names.iter().any(|n| n == q));
        let (i, (_, t)) = found.next()?;
        (found.next().is_none() && t.distribution.column() == Some(c)).then_some(i)
    };
    // Union-find over the FROM items.
    let mut parent: Vec<usize> = (0..items.len()).collect();
    fn find(p: &[usize], mut x: usize) -> usize {
        while p[x] != x {
            x = p[x];
        }
        x
    }
    for c in conditions.into_iter().flat_map(crate::planner::conjuncts) {
        let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = c
        else {
            continue;
        };
        if let (Some((Some(lq), lc)), Some((Some(rq), rc))) = (column_ref(left), column_ref(right))
        {
            if let (Some(a), Some(b)) = (item_of(&lq, &lc), item_of(&rq, &rc)) {
                let (ra, rb) = (find(&parent, a), find(&parent, b));
                parent[ra] = rb;
            }
        }
    }
    (0..items.len())
        .map(|i| find(&parent, i))
        .collect::<BTreeSet<_>>()
        .len()
        == 1
}

/// WHERE conjuncts that mention one table only, by table name, with the alias they use.
/// Only for a plain SELECT whose joins are all inner and whose tables appear once each:
/// then filtering a table before the join changes nothing (the coordinator still applies
/// the whole WHERE).
fn single_table_filters(q: &Query, tables: &[&Table]) -> BTreeMap<String, (String, Vec<Expr>)> {
    let mut out = BTreeMap::new();
    let SetExpr::Select(select) = q.body.as_ref() else {
        return out;
    };
    let Some(selection) = &select.selection else {
        return out;
    };
    if q.with.is_some() {
        return out;
    }
    let inner_only = select.from.iter().flat_map(|t| &t.joins).all(|j| {
        matches!(
            &j.join_operator,
            JoinOperator::Join(JoinConstraint::On(_))
                | JoinOperator::Inner(JoinConstraint::On(_))
                | JoinOperator::CrossJoin(_)
        )
    });
    if !inner_only {
        return out;
    }
    let mut mentions: BTreeMap<String, usize> = BTreeMap::new();
    let _ = visit_relations(q, |r| {
        if let Ok(n) = table_name(r) {
            *mentions.entry(n).or_default() += 1;
        }
        ControlFlow::<()>::Continue(())
    });
    // alias -> table name, for each FROM item.
    let mut aliases: Vec<(String, String)> = Vec::new();
    for twj in &select.from {
        for f in std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation)) {
            if let TableFactor::Table { name, alias, .. } = f {
                if let Ok(n) = table_name(name) {
                    aliases.push((
                        alias
                            .as_ref()
                            .map(|a| crate::sql::names::ident(&a.name))
                            .unwrap_or_else(|| n.clone()),
                        n,
                    ));
                }
            }
        }
    }
    let mut conjuncts = Vec::new();
    fn split<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
        match e {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                split(left, out);
                split(right, out);
            }
            Expr::Nested(inner) => split(inner, out),
            other => out.push(other),
        }
    }
    split(selection, &mut conjuncts);
    for c in conjuncts {
        let mut owner: Option<String> = None;
        let mut ok = true;
        let _ = visit_expressions(c, |e| {
            match e {
                Expr::Subquery(_)
                | Expr::Exists { .. }
                | Expr::In {
                    target: InTarget::Subquery(_),
                    ..
                } => ok = false,
                Expr::Function(f) if f.over.is_some() => ok = false,
                _ => {}
            }
            if let Expr::Identifier(_) | Expr::CompoundIdentifier(_) = e {
                let who = match column_ref(e) {
                    Some((Some(q), _)) => aliases
                        .iter()
                        .find(|(a, _)| *a == q)
                        .map(|(a, _)| a.clone()),
                    Some((None, col)) => {
                        let holders: Vec<&(String, String)> = aliases
                            .iter()
                            .filter(|(_, t)| {
                                tables
                                    .iter()
                                    .any(|x| x.name == *t && x.column(&col).is_some())
                            })
                            .collect();
                        (holders.len() == 1).then(|| holders[0].0.clone())
                    }
                    None => None,
                };
                match (who, &owner) {
                    (Some(w), None) => owner = Some(w),
                    (Some(w), Some(o)) if w == *o => {}
                    _ => ok = false,
                }
            }
            ControlFlow::<()>::Continue(())
        });
        let Some(alias) = owner.filter(|_| ok) else {
            continue;
        };
        let Some((_, table)) = aliases.iter().find(|(a, _)| *a == alias) else {
            continue;
        };
        if mentions.get(table).copied() != Some(1) {
            continue;
        }
        out.entry(table.clone())
            .or_insert_with(|| (alias.clone(), Vec::new()))
            .1
            .push(c.clone());
    }
    out
}

/// Gathers the tables to the coordinator and runs the query there. Conjuncts of the WHERE
/// clause that concern one table are applied by its shards, and prune them.
pub fn pull(
    q: &Query,
    tables: &[&Table],
    ctx: &PlanCtx<'_>,
    reason: &str,
) -> Result<Plan, CoordError> {
    let filters = single_table_filters(q, tables);
    let mut pulled = Vec::new();
    for t in tables {
        let group = ctx.catalog.group_of(t)?;
        let pushed = filters.get(&t.name);
        let conjunction = pushed.and_then(|(_, cs)| {
            cs.iter().cloned().reduce(|a, b| Expr::BinaryOp {
                left: Box::new(a),
                op: BinaryOperator::And,
                right: Box::new(b),
            })
        });
        let alias = pushed.map(|(a, _)| a.clone());
        let targets = if group.kind == GroupKind::Reference {
            vec![reference_read_target(group)?]
        } else {
            let names: Vec<String> = alias
                .iter()
                .cloned()
                .chain(std::iter::once(t.name.clone()))
                .collect();
            prune(ctx.catalog, t, &names, conjunction.as_ref(), ctx.params)?
                .into_iter()
                .map(target)
                .collect::<Result<_, _>>()?
        };
        pulled.push(PullTable {
            name: t.name.clone(),
            columns: t.columns.clone(),
            targets,
            alias,
            filter: conjunction.as_ref().map(render),
        });
    }
    Ok(Plan::Pull {
        tables: pulled,
        sql: render(q),
        reason: reason.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::SortKey;

    fn planned(sql: &str) -> Planned {
        crate::planner::testing::plan_sql(sql, &[]).expect("plan")
    }

    fn tasks(p: &Planned) -> (usize, Merge) {
        match &p.plan {
            Plan::Distributed { tasks, merge, .. } => (tasks.len(), merge.clone()),
            other => panic!("expected a distributed plan, got {other:?}"),
        }
    }

    #[test]
    fn point_query_goes_to_one_shard_unchanged() {
        let p = planned("SELECT * FROM users WHERE id = 1");
        assert_eq!(tasks(&p), (1, Merge::Single));
        assert_eq!(p.columns.len(), 4);
    }

    #[test]
    fn scatter_with_sort_merge_and_limit_pushdown() {
        let p = planned("SELECT name FROM users ORDER BY age DESC LIMIT 5 OFFSET 2");
        let (n, merge) = tasks(&p);
        assert_eq!(n, 4);
        assert_eq!(
            merge,
            Merge::Sort {
                keys: vec![SortKey {
                    column: 1,
                    desc: true,
                    nulls_first: true
                }],
                limit: Some(5),
                offset: 2,
                visible: 1
            }
        );
        let Plan::Distributed { tasks, .. } = &p.plan else {
            unreachable!()
        };
        assert!(tasks[0].sql.ends_with("LIMIT 7"), "{}", tasks[0].sql);
    }

    #[test]
    fn aggregates_are_decomposed() {
        let p = planned("SELECT count(*), avg(age), max(age) FROM users");
        let (n, merge) = tasks(&p);
        assert_eq!(n, 4);
        let Merge::Final { sql, .. } = merge else {
            panic!("{merge:?}")
        };
        assert!(sql.contains("sum(__t0)"), "{sql}");
        let Plan::Distributed { tasks, .. } = &p.plan else {
            unreachable!()
        };
        assert!(
            tasks[0].sql.contains("count(*) AS __t0"),
            "{}",
            tasks[0].sql
        );
    }

    #[test]
    fn co_located_join_is_pushed_down_and_other_joins_pulled() {
        let p = planned(
            "SELECT u.name, o.amount FROM users u JOIN orders o ON u.id = o.user_id WHERE u.id = 3",
        );
        assert_eq!(tasks(&p).0, 1);
        let p = planned("SELECT u.name, o.amount FROM users u JOIN orders o ON u.id = o.user_id");
        assert_eq!(tasks(&p).0, 4);
        let p =
            planned("SELECT u.name, c.name FROM users u JOIN countries c ON u.country = c.code");
        assert_eq!(tasks(&p).0, 4, "reference tables join on every shard");
        let p = planned("SELECT u.name FROM users u JOIN orders o ON u.age = o.amount");
        assert!(matches!(p.plan, Plan::Pull { .. }), "{:?}", p.plan);
        let p = planned("SELECT * FROM users WHERE age > (SELECT avg(age) FROM users)");
        assert!(matches!(p.plan, Plan::Pull { .. }));
        // One table twice: co-located only when joined on its key (it answered no rows).
        let p = planned("SELECT a.name, b.name FROM users a JOIN users b ON a.age = b.id");
        assert!(matches!(p.plan, Plan::Pull { .. }), "{:?}", p.plan);
        let p = planned("SELECT a.name FROM users a JOIN users b ON b.id = a.id");
        assert_eq!(tasks(&p).0, 4);
    }

    #[test]
    fn count_distinct_is_pulled_and_local_queries_stay_local() {
        assert!(matches!(
            planned("SELECT count(DISTINCT age) FROM users").plan,
            Plan::Pull { .. }
        ));
        assert!(matches!(planned("SELECT 1 + 1").plan, Plan::Local { .. }));
    }

    fn pulled(p: &Planned) -> Vec<(String, usize, Option<String>)> {
        match &p.plan {
            Plan::Pull { tables, .. } => tables
                .iter()
                .map(|t| (t.name.clone(), t.targets.len(), t.filter.clone()))
                .collect(),
            other => panic!("expected a pull, got {other:?}"),
        }
    }

    #[test]
    fn pulled_tables_are_filtered_and_pruned_on_their_shards() {
        let p = planned("SELECT u.name FROM users u JOIN orders o ON u.age = o.amount WHERE u.id = 3 AND o.amount > 10 AND u.age < o.amount");
        let t = pulled(&p);
        assert_eq!(t[0], ("users".into(), 1, Some("u.id = 3".into())), "{t:?}");
        assert_eq!(
            t[1],
            ("orders".into(), 4, Some("o.amount > 10".into())),
            "{t:?}"
        );
        // Outer joins and tables read twice are gathered whole.
        let p = planned("SELECT u.name FROM users u LEFT JOIN orders o ON u.age = o.amount WHERE o.amount IS NULL");
        assert!(pulled(&p).iter().all(|t| t.2.is_none()));
        let p =
            planned("SELECT name FROM users WHERE id = 3 AND age > (SELECT avg(age) FROM users)");
        assert!(pulled(&p).iter().all(|t| t.2.is_none()));
    }
}
