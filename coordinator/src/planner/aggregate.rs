//! Scatter-gather decomposition: what each shard computes and how the coordinator finishes it.
//!
//! - Plain queries: each shard sorts and limits (LIMIT + OFFSET), the coordinator k-way merges.
//! - Aggregates, GROUP BY, DISTINCT: each shard returns partial aggregates per
//!   group as columns `__t0, __t1, ...`; the coordinator combines them
//!   (count → sum, avg → sum/count, min/max/sum as themselves), then applies
//!   HAVING, ORDER BY and LIMIT in its scratch SQLite.
//! - Anything else (count(DISTINCT), window functions, other aggregates) is
//!   reported as not pushable, and the caller pulls the tables instead.

use super::route::limit_value;
use super::{Merge, SortKey};
use crate::error::CoordError;
use crate::sql::dialect::{parse_expr, render};
use crate::sql::names::{function_name, ident};
use sqlparser::ast::*;
use std::ops::ControlFlow;
use tessera_shared::Value;

/// The result of decomposition.
pub enum Decomposed {
    /// Shards run `shard_query`; the coordinator applies `merge`.
    Pushed {
        /// Query each shard runs.
        shard_query: Box<Query>,
        /// How to combine.
        merge: Merge,
    },
    /// The query cannot be split; the reason is shown by EXPLAIN.
    NotPushable(String),
}

const SIMPLE_AGGREGATES: [&str; 5] = ["count", "sum", "min", "max", "avg"];
const OTHER_AGGREGATES: [&str; 12] = [
    "group_concat",
    "string_agg",
    "array_agg",
    "json_agg",
    "jsonb_agg",
    "json_group_array",
    "stddev",
    "variance",
    "total",
    "stddev_pop",
    "stddev_samp",
    "var_pop",
];

fn is_aggregate(f: &Function) -> bool {
    let n = function_name(&f.name);
    f.over.is_none()
        && (SIMPLE_AGGREGATES.contains(&n.as_str()) || OTHER_AGGREGATES.contains(&n.as_str()))
}

fn has_aggregate(e: &Expr) -> bool {
    let mut found = false;
    let _ = visit_expressions(e, |e| {
        if let Expr::Function(f) = e {
            if is_aggregate(f) {
                found = true;
            }
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

/// Whether a select list calls an aggregate.
pub fn has_aggregates(select: &Select) -> bool {
    select.projection.iter().any(|p| match p {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => has_aggregate(e),
        _ => false,
    })
}

fn has_window(q: &Query) -> bool {
    let mut found = false;
    let _ = visit_expressions(q, |e| {
        if let Expr::Function(f) = e {
            if f.over.is_some() {
                found = true;
            }
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

fn order_exprs(q: &Query) -> Vec<OrderByExpr> {
    match &q.order_by {
        Some(OrderBy {
            kind: OrderByKind::Expressions(v),
            ..
        }) => v.clone(),
        _ => vec![],
    }
}

fn limits(q: &Query, params: &[Value]) -> Result<(Option<u64>, u64), String> {
    match &q.limit_clause {
        None => Ok((None, 0)),
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) if limit_by.is_empty() => {
            let l = match limit {
                Some(e) => Some(limit_value(e, params).ok_or("LIMIT is not a constant")?),
                None => None,
            };
            let o = match offset {
                Some(o) => limit_value(&o.value, params).ok_or("OFFSET is not a constant")?,
                None => 0,
            };
            Ok((l, o))
        }
        Some(_) => Err("unsupported LIMIT form".into()),
    }
}

fn alias(name: String) -> Ident {
    Ident::new(name)
}

/// Splits `q` (whose body is `select`) for scatter-gather. `visible` is the number of output columns.
pub fn decompose(
    q: &Query,
    select: &Select,
    visible: usize,
    params: &[Value],
) -> Result<Decomposed, CoordError> {
    if has_window(q) {
        return Ok(Decomposed::NotPushable(
            "window functions across shards".into(),
        ));
    }
    if q.fetch.is_some() || !q.locks.is_empty() {
        return Ok(Decomposed::NotPushable(
            "FETCH/locking clauses across shards".into(),
        ));
    }
    let (limit, offset) = match limits(q, params) {
        Ok(v) => v,
        Err(reason) => return Ok(Decomposed::NotPushable(reason)),
    };
    let group_by = match &select.group_by {
        GroupByExpr::Expressions(e, m) if m.is_empty() => e.clone(),
        _ => return Ok(Decomposed::NotPushable("GROUP BY modifiers".into())),
    };
    let aggregated = !group_by.is_empty()
        || select.having.is_some()
        || select.projection.iter().any(|p| match p {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                has_aggregate(e)
            }
            _ => false,
        });
    match &select.distinct {
        None => {}
        Some(Distinct::Distinct) => {}
        Some(_) => return Ok(Decomposed::NotPushable("DISTINCT ON across shards".into())),
    }
    if !aggregated && select.distinct.is_none() {
        return Ok(sort_merge(q, select, visible, limit, offset));
    }
    combine(q, select, group_by, limit, offset)
}

/// Plain query: shards sort and limit, the coordinator merges.
fn sort_merge(
    q: &Query,
    select: &Select,
    visible: usize,
    limit: Option<u64>,
    offset: u64,
) -> Decomposed {
    let mut shard_select = select.clone();
    let mut keys = Vec::new();
    let orders = order_exprs(q);
    for (i, o) in orders.iter().enumerate() {
        let desc = matches!(o.options.sort, Some(OrderBySort::Desc));
        let nulls_first = o.options.nulls_first.unwrap_or(desc);
        // ORDER BY 2, or ORDER BY an output alias, names a visible column.
        let column = match &o.expr {
            Expr::Value(v) => match &v.value {
                sqlparser::ast::Value::Number(n, _) => n.parse::<usize>().ok().filter(|n| *n >= 1 && *n <= visible).map(|n| n - 1),
                _ => None,
            },
            Expr::Identifier(id) => select.projection.iter().position(|p| matches!(p, SelectItem::ExprWithAlias { alias, .. } if ident(alias) == ident(id))),
            _ => None,
        };
        let column = match column {
            Some(c) => c,
            None => {
                shard_select.projection.push(SelectItem::ExprWithAlias {
                    expr: o.expr.clone(),
                    alias: alias(format!("__o{i}")),
                });
                visible + i
            }
        };
        keys.push(SortKey {
            column,
            desc,
            nulls_first,
        });
    }
    let mut shard_query = q.clone();
    shard_query.body = Box::new(SetExpr::Select(Box::new(shard_select)));
    shard_query.limit_clause = limit.map(|l| LimitClause::LimitOffset {
        limit: Some(Expr::value(sqlparser::ast::Value::Number(
            (l + offset).to_string(),
            false,
        ))),
        offset: None,
        limit_by: vec![],
    });
    let merge = if keys.is_empty() {
        Merge::Concat { limit, offset }
    } else {
        Merge::Sort {
            keys,
            limit,
            offset,
            visible,
        }
    };
    Decomposed::Pushed {
        shard_query: Box::new(shard_query),
        merge,
    }
}

/// Maps original expressions onto partial columns.
struct Mapper {
    /// Group keys: expression and its partial column.
    keys: Vec<(Expr, String)>,
    /// Partial items each shard computes.
    partials: Vec<(Expr, String)>,
    failure: Option<String>,
}

impl Mapper {
    fn partial(&mut self, e: Expr) -> String {
        if let Some((_, n)) = self.partials.iter().find(|(p, _)| *p == e) {
            return n.clone();
        }
        let n = format!("__t{}", self.partials.len());
        self.partials.push((e, n.clone()));
        n
    }

    fn combine_aggregate(&mut self, f: &Function) -> Result<Expr, String> {
        let name = function_name(&f.name);
        let distinct =
            matches!(&f.args, FunctionArguments::List(l) if l.duplicate_treatment.is_some());
        if distinct || f.filter.is_some() || !SIMPLE_AGGREGATES.contains(&name.as_str()) {
            return Err(format!(
                "aggregate {name}({}) needs all rows at the coordinator",
                if distinct { "DISTINCT" } else { "" }
            ));
        }
        let call = Expr::Function(f.clone());
        let sql = match name.as_str() {
            "count" => format!("coalesce(sum({}), 0)", self.partial(call)),
            "sum" => format!("sum({})", self.partial(call)),
            "min" => format!("min({})", self.partial(call)),
            "max" => format!("max({})", self.partial(call)),
            "avg" => {
                let mut sum = f.clone();
                sum.name = ObjectName::from(vec![Ident::new("sum")]);
                let mut count = f.clone();
                count.name = ObjectName::from(vec![Ident::new("count")]);
                let s = self.partial(Expr::Function(sum));
                let c = self.partial(Expr::Function(count));
                format!("CAST(sum({s}) AS REAL) / nullif(sum({c}), 0)")
            }
            other => {
                return Err(format!(
                    "aggregate {other} cannot be combined across shards"
                ))
            }
        };
        parse_expr(&sql).map_err(|e| e.to_string())
    }
}

impl VisitorMut for Mapper {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if let Some((_, n)) = self.keys.iter().find(|(k, _)| k == e) {
            *e = Expr::Identifier(Ident::new(n.clone()));
            return ControlFlow::Continue(());
        }
        if let Expr::Function(f) = e {
            if is_aggregate(f) && !combines_partials(f) {
                match self.combine_aggregate(f) {
                    Ok(new) => *e = new,
                    Err(reason) => {
                        self.failure = Some(reason);
                        return ControlFlow::Break(());
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// Whether an aggregate already combines partial columns (built by the mapper itself).
fn combines_partials(f: &Function) -> bool {
    let mut found = false;
    let _ = visit_expressions(&Expr::Function(f.clone()), |x| {
        if matches!(x, Expr::Identifier(i) if i.value.starts_with("__t")) {
            found = true;
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

/// Whether a mapped expression still refers to a source column (so it cannot be finished from partials).
fn refers_to_source(e: &Expr, aliases: &[String]) -> bool {
    let mut found = false;
    let _ = visit_expressions(e, |x| {
        match x {
            Expr::Identifier(i) if !i.value.starts_with("__t") && !aliases.contains(&ident(i)) => {
                found = true
            }
            Expr::CompoundIdentifier(_) => found = true,
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

/// Aggregated or DISTINCT query: partial aggregates per shard, combined at the coordinator.
fn combine(
    q: &Query,
    select: &Select,
    group_by: Vec<Expr>,
    limit: Option<u64>,
    offset: u64,
) -> Result<Decomposed, CoordError> {
    let projection: Vec<(Expr, Option<Ident>)> = match select
        .projection
        .iter()
        .map(|p| match p {
            SelectItem::UnnamedExpr(e) => Some((e.clone(), None)),
            SelectItem::ExprWithAlias { expr, alias } => Some((expr.clone(), Some(alias.clone()))),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
    {
        Some(p) => p,
        None => {
            return Ok(Decomposed::NotPushable(
                "SELECT * with aggregates or DISTINCT across shards".into(),
            ))
        }
    };
    let aliases: Vec<String> = projection
        .iter()
        .filter_map(|(_, a)| a.as_ref().map(ident))
        .collect();
    // GROUP BY 1 / GROUP BY alias name the projection.
    let resolve = |e: &Expr| -> Expr {
        match e {
            Expr::Value(v) => match &v.value {
                sqlparser::ast::Value::Number(n, _) => n
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| projection.get(i.wrapping_sub(1)))
                    .map(|(e, _)| e.clone())
                    .unwrap_or_else(|| e.clone()),
                _ => e.clone(),
            },
            Expr::Identifier(id) => projection
                .iter()
                .find(|(_, a)| a.as_ref().is_some_and(|a| ident(a) == ident(id)))
                .map(|(e, _)| e.clone())
                .unwrap_or_else(|| e.clone()),
            _ => e.clone(),
        }
    };
    let mut key_exprs: Vec<Expr> = group_by.iter().map(resolve).collect();
    if select.distinct.is_some() && group_by.is_empty() {
        key_exprs = projection.iter().map(|(e, _)| e.clone()).collect();
    }
    let mut m = Mapper {
        keys: vec![],
        partials: vec![],
        failure: None,
    };
    for k in &key_exprs {
        let n = m.partial(k.clone());
        m.keys.push((k.clone(), n));
    }
    let map = |e: &Expr, m: &mut Mapper| -> Result<Expr, String> {
        let mut e = e.clone();
        let _ = VisitMut::visit(&mut e, m);
        if let Some(f) = m.failure.take() {
            return Err(f);
        }
        if refers_to_source(&e, &aliases) {
            return Err(format!(
                "expression {e} is neither grouped nor aggregated across shards"
            ));
        }
        Ok(e)
    };
    let mut final_items = Vec::new();
    for (i, (e, a)) in projection.iter().enumerate() {
        let mapped = match map(e, &mut m) {
            Ok(x) => x,
            Err(r) => return Ok(Decomposed::NotPushable(r)),
        };
        let name = a.as_ref().map(ident).unwrap_or_else(|| format!("__c{i}"));
        final_items.push(format!(
            "{} AS {}",
            render(&mapped),
            crate::sql::names::quote(&name)
        ));
    }
    let having = match &select.having {
        Some(h) => match map(h, &mut m) {
            Ok(x) => Some(render(&x)),
            Err(r) => return Ok(Decomposed::NotPushable(r)),
        },
        None => None,
    };
    let mut order = Vec::new();
    for o in order_exprs(q) {
        let mapped = match &o.expr {
            Expr::Value(_) => o.expr.clone(),
            Expr::Identifier(id) if aliases.contains(&ident(id)) => o.expr.clone(),
            e => match map(e, &mut m) {
                Ok(x) => x,
                Err(r) => return Ok(Decomposed::NotPushable(r)),
            },
        };
        let mut o2 = o.clone();
        o2.expr = mapped;
        order.push(render(&o2));
    }
    // Shard query: partial items grouped by the original keys.
    let mut shard_select = select.clone();
    shard_select.distinct = None;
    shard_select.having = None;
    shard_select.projection = m
        .partials
        .iter()
        .map(|(e, n)| SelectItem::ExprWithAlias {
            expr: e.clone(),
            alias: alias(n.clone()),
        })
        .collect();
    shard_select.group_by = GroupByExpr::Expressions(key_exprs.clone(), vec![]);
    let mut shard_query = q.clone();
    shard_query.body = Box::new(SetExpr::Select(Box::new(shard_select)));
    shard_query.order_by = None;
    shard_query.limit_clause = None;
    let width = m.partials.len();
    let mut sql = format!(
        "SELECT {}{} FROM partials",
        if select.distinct.is_some() {
            "DISTINCT "
        } else {
            ""
        },
        final_items.join(", ")
    );
    let distinct_only = select.distinct.is_some() && group_by.is_empty();
    if !m.keys.is_empty() && !distinct_only {
        sql.push_str(" GROUP BY ");
        sql.push_str(
            &m.keys
                .iter()
                .map(|(_, n)| n.clone())
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    if let Some(h) = having {
        sql.push_str(&format!(" HAVING {h}"));
    }
    if !order.is_empty() {
        sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
    }
    if let Some(l) = limit {
        sql.push_str(&format!(" LIMIT {l}"));
    }
    if offset > 0 {
        if limit.is_none() {
            sql.push_str(" LIMIT -1");
        }
        sql.push_str(&format!(" OFFSET {offset}"));
    }
    Ok(Decomposed::Pushed {
        shard_query: Box::new(shard_query),
        merge: Merge::Final { sql, width },
    })
}
