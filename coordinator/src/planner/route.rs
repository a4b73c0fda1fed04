//! Shard pruning: which shards a WHERE clause can touch, from equalities, IN lists and ranges on the distribution key.

use crate::catalog::{Bound, Catalog, Distribution, Group, GroupKind, Shard, Table};
use crate::error::CoordError;
use crate::sql::names::{column_ref, ident};
use crate::sql::params::{from_text, placeholder_index};
use sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, InTarget, UnaryOperator,
    Value as AstValue,
};
use tessera_shared::hash::{shard_for_key, DistKey};
use tessera_shared::{PgType, Value};

/// The value of a constant expression (literal, `$n`, negation, cast), if it is one.
pub fn const_value(e: &Expr, params: &[Value]) -> Option<Value> {
    match e {
        Expr::Value(v) => match &v.value {
            AstValue::Number(n, _) => n
                .parse::<i64>()
                .map(Value::Integer)
                .ok()
                .or_else(|| n.parse::<f64>().ok().map(Value::Real)),
            AstValue::SingleQuotedString(s) => Some(Value::Text(s.clone())),
            AstValue::Boolean(b) => Some(Value::Integer(i64::from(*b))),
            AstValue::Null => Some(Value::Null),
            AstValue::Placeholder(p) => {
                placeholder_index(p).and_then(|i| params.get(i - 1).cloned())
            }
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match const_value(expr, params)? {
            Value::Integer(i) => Some(Value::Integer(-i)),
            Value::Real(f) => Some(Value::Real(-f)),
            _ => None,
        },
        Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => const_value(inner, params),
        // A cast to an integer type, as the dialect rewrites it (`$1::bigint`).
        Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("tessera_int") => {
            match &f.args {
                FunctionArguments::List(l) => match l.args.first() {
                    Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(inner))) => {
                        const_value(inner, params)
                    }
                    _ => None,
                },
                _ => None,
            }
        }
        _ => None,
    }
}

/// Coerces a value to the distribution column's type, as the row will be stored.
pub fn dist_key(v: &Value, ty: PgType) -> Result<DistKey, CoordError> {
    Ok(match v {
        Value::Null => DistKey::Null,
        Value::Integer(i) if ty.is_integer() => DistKey::Int(*i),
        Value::Real(f) if ty.is_integer() && f.fract() == 0.0 => DistKey::Int(*f as i64),
        Value::Text(s) if ty.is_integer() => match from_text(s, ty)? {
            Value::Integer(i) => DistKey::Int(i),
            _ => DistKey::Text(s.clone()),
        },
        Value::Text(s) => DistKey::Text(s.clone()),
        Value::Integer(i) => DistKey::Text(i.to_string()),
        Value::Real(f) => DistKey::Text(f.to_string()),
        Value::Blob(b) => DistKey::Bytes(b.clone()),
    })
}

fn bound_of(k: &DistKey) -> Option<Bound> {
    match k {
        DistKey::Int(i) => Some(Bound::Int(*i)),
        DistKey::Text(s) => Some(Bound::Text(s.clone())),
        _ => None,
    }
}

/// The shard of `group` that holds key `k`.
pub fn shard_for<'g>(group: &'g Group, k: &DistKey) -> Result<&'g Shard, CoordError> {
    match group.kind {
        GroupKind::Hash => {
            let i = shard_for_key(k, group.shards.len() as u32) as usize;
            group
                .shards
                .get(i)
                .ok_or_else(|| CoordError::Internal("hash shard out of range".into()))
        }
        GroupKind::Range => {
            let b = bound_of(k);
            group
                .shards
                .iter()
                .find(|s| {
                    let Some(b) = &b else {
                        return s.lower.is_none();
                    };
                    s.lower.as_ref().is_none_or(|lo| lo <= b)
                        && s.upper.as_ref().is_none_or(|hi| b < hi)
                })
                .ok_or_else(|| CoordError::InvalidValue(format!("no range shard holds key {k:?}")))
        }
        GroupKind::Reference => group
            .shards
            .first()
            .ok_or_else(|| CoordError::Internal("empty reference group".into())),
    }
}

/// What a WHERE clause says about the distribution key.
#[derive(Debug, Default)]
struct KeyConstraint {
    /// Equal to one of these (None: no equality constraint).
    equals: Option<Vec<DistKey>>,
    /// Range lower bound (inclusive flag).
    lower: Option<(Bound, bool)>,
    /// Range upper bound (inclusive flag).
    upper: Option<(Bound, bool)>,
}

/// The shards of `table`'s group that rows matching `selection` can live on.
/// `names` are the names the table is referred to by (its name and alias).
pub fn prune<'g>(
    catalog: &'g Catalog,
    table: &Table,
    names: &[String],
    selection: Option<&Expr>,
    params: &[Value],
) -> Result<Vec<&'g Shard>, CoordError> {
    let group = catalog.group_of(table)?;
    let Some(col) = table.distribution.column() else {
        return Ok(group.shards.iter().collect());
    };
    let ty = table.column(col).map(|c| c.ty).unwrap_or(PgType::Text);
    let mut c = KeyConstraint::default();
    if let Some(sel) = selection {
        collect(sel, col, names, params, ty, &mut c)?;
    }
    if let Some(keys) = &c.equals {
        let mut out: Vec<&Shard> = Vec::new();
        for k in keys {
            let s = shard_for(group, k)?;
            if !out.iter().any(|o| o.id == s.id) {
                out.push(s);
            }
        }
        out.sort_by_key(|s| s.index);
        return Ok(out);
    }
    if matches!(table.distribution, Distribution::Range { .. })
        && (c.lower.is_some() || c.upper.is_some())
    {
        return Ok(group
            .shards
            .iter()
            .filter(|s| {
                let above_lower = match (&c.lower, &s.upper) {
                    (Some((lo, _)), Some(up)) => lo < up,
                    _ => true,
                };
                let below_upper = match (&c.upper, &s.lower) {
                    (Some((hi, incl)), Some(low)) => {
                        if *incl {
                            low <= hi
                        } else {
                            low < hi
                        }
                    }
                    _ => true,
                };
                above_lower && below_upper
            })
            .collect());
    }
    Ok(group.shards.iter().collect())
}

fn is_key(e: &Expr, col: &str, names: &[String]) -> bool {
    match column_ref(e) {
        Some((None, c)) => c == col,
        Some((Some(q), c)) => c == col && names.contains(&q),
        None => false,
    }
}

fn intersect(c: &mut KeyConstraint, keys: Vec<DistKey>) {
    c.equals = Some(match c.equals.take() {
        None => keys,
        Some(prev) => prev.into_iter().filter(|k| keys.contains(k)).collect(),
    });
}

fn collect(
    e: &Expr,
    col: &str,
    names: &[String],
    params: &[Value],
    ty: PgType,
    c: &mut KeyConstraint,
) -> Result<(), CoordError> {
    match e {
        Expr::Nested(inner) => collect(inner, col, names, params, ty, c)?,
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            collect(left, col, names, params, ty, c)?;
            collect(right, col, names, params, ty, c)?;
        }
        Expr::BinaryOp { left, op, right } => {
            let (key_left, other, op) = if is_key(left, col, names) {
                (true, right, op.clone())
            } else if is_key(right, col, names) {
                (false, left, flip(op))
            } else {
                return Ok(());
            };
            let _ = key_left;
            let Some(v) = const_value(other, params) else {
                return Ok(());
            };
            if v.is_null() {
                // `key = NULL` matches nothing; any shard answers it correctly.
                return Ok(());
            }
            let k = dist_key(&v, ty)?;
            match op {
                BinaryOperator::Eq => intersect(c, vec![k]),
                BinaryOperator::Gt | BinaryOperator::GtEq => {
                    if let Some(b) = bound_of(&k) {
                        c.lower = Some((b, op == BinaryOperator::GtEq));
                    }
                }
                BinaryOperator::Lt | BinaryOperator::LtEq => {
                    if let Some(b) = bound_of(&k) {
                        c.upper = Some((b, op == BinaryOperator::LtEq));
                    }
                }
                _ => {}
            }
        }
        Expr::In {
            expr,
            target: InTarget::List(list),
            negated: false,
            ..
        } if is_key(expr, col, names) => {
            let mut keys = Vec::new();
            for item in list {
                match const_value(item, params) {
                    Some(Value::Null) => {}
                    Some(v) => keys.push(dist_key(&v, ty)?),
                    None => return Ok(()),
                }
            }
            intersect(c, keys);
        }
        Expr::Between {
            expr,
            negated: false,
            low,
            high,
        } if is_key(expr, col, names) => {
            if let (Some(lo), Some(hi)) = (const_value(low, params), const_value(high, params)) {
                if let (Some(lo), Some(hi)) =
                    (bound_of(&dist_key(&lo, ty)?), bound_of(&dist_key(&hi, ty)?))
                {
                    c.lower = Some((lo, true));
                    c.upper = Some((hi, true));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn flip(op: &BinaryOperator) -> BinaryOperator {
    match op {
        BinaryOperator::Lt => BinaryOperator::Gt,
        BinaryOperator::LtEq => BinaryOperator::GtEq,
        BinaryOperator::Gt => BinaryOperator::Lt,
        BinaryOperator::GtEq => BinaryOperator::LtEq,
        other => other.clone(),
    }
}

/// The names a table is referred to by in a FROM item.
pub fn names_for(table: &str, alias: Option<&sqlparser::ast::TableAlias>) -> Vec<String> {
    let mut v = vec![table.to_string()];
    if let Some(a) = alias {
        v.push(ident(&a.name));
    }
    v
}

/// A LIMIT/OFFSET value known at plan time.
pub fn limit_value(e: &Expr, params: &[Value]) -> Option<u64> {
    match const_value(e, params)? {
        Value::Integer(i) if i >= 0 => Some(i as u64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::testing::catalog;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn where_of(sql: &str) -> Expr {
        Parser::new(&PostgreSqlDialect {})
            .try_with_sql(sql)
            .expect("sql")
            .parse_expr()
            .expect("expr")
    }

    fn shards(table: &str, sql: &str, params: &[Value]) -> Vec<u64> {
        let c = catalog();
        let t = c.table(table).expect("table").clone();
        prune(&c, &t, &[table.to_string()], Some(&where_of(sql)), params)
            .expect("prune")
            .iter()
            .map(|s| s.id)
            .collect()
    }

    #[test]
    fn equality_pins_one_shard() {
        let one = shards("users", "id = 1", &[]);
        assert_eq!(one.len(), 1);
        assert_eq!(shards("users", "1 = id AND age > 3", &[]), one);
        assert_eq!(shards("users", "id = $1", &[Value::Integer(1)]), one);
        assert_eq!(
            shards("users", "users.id = '1'", &[]),
            one,
            "text literal coerced to the key type"
        );
        assert_eq!(shards("users", "age = 1", &[]).len(), 4);
        assert_eq!(shards("users", "id = 1 OR id = 2", &[]).len(), 4);
    }

    #[test]
    fn in_list_unions_and_and_intersects() {
        let a = shards("users", "id = 1", &[]);
        let b = shards("users", "id = 2", &[]);
        let mut both = a.clone();
        both.extend(b.iter().copied());
        both.sort();
        both.dedup();
        assert_eq!(shards("users", "id IN (1, 2)", &[]), both);
        assert_eq!(shards("users", "id IN (1, 2) AND id = 1", &[]), a);
    }

    #[test]
    fn range_pruning() {
        assert_eq!(shards("events", "ts = 150", &[]), vec![301]);
        assert_eq!(shards("events", "ts >= 150", &[]), vec![301, 302]);
        assert_eq!(shards("events", "ts < 100", &[]), vec![300]);
        assert_eq!(
            shards("events", "ts BETWEEN 0 AND 150", &[]),
            vec![300, 301]
        );
        assert_eq!(shards("events", "what = 'x'", &[]), vec![300, 301, 302]);
    }
}
