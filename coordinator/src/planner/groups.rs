//! What row and document column groups share: group table names, the `column_groups` spec,
//! the refusal of what grouped tables cannot do, and copying key equalities to every group.

use crate::catalog::Table;
use crate::error::CoordError;
use crate::sql::dialect::parse_expr;
use crate::sql::names::{ident, quote};
use sqlparser::ast::*;
use std::ops::ControlFlow;

/// The physical table of column group `group` of `table`.
pub fn group_table_name(table: &str, group: &str) -> String {
    format!("{table}${group}")
}

/// The groups a `column_groups` option names, as (group, members): `name(a, b) | other(c)`.
/// Names are letters, digits and `_`; no group or member is named twice; at least two groups.
/// Callers check the members (columns, or a document's attributes).
pub fn parse_spec(
    spec: &str,
    lowercase_members: bool,
) -> Result<Vec<(String, Vec<String>)>, CoordError> {
    let bad = |m: String| CoordError::InvalidValue(format!("column_groups: {m}"));
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for part in spec.split('|').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, rest) = part
            .split_once('(')
            .ok_or_else(|| bad(format!("\"{part}\" is not name(member, ...)")))?;
        let members = rest
            .trim()
            .strip_suffix(')')
            .ok_or_else(|| bad(format!("\"{part}\" lacks its closing parenthesis")))?;
        let name = name.trim().to_lowercase();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad(format!(
                "group name \"{name}\" must be letters, digits and _"
            )));
        }
        if groups.iter().any(|(g, _)| *g == name) {
            return Err(bad(format!("group \"{name}\" is named twice")));
        }
        let members: Vec<String> = members
            .split(',')
            .map(|c| c.trim().trim_matches('"'))
            .map(|c| {
                if lowercase_members {
                    c.to_lowercase()
                } else {
                    c.to_string()
                }
            })
            .filter(|c| !c.is_empty())
            .collect();
        for c in &members {
            if groups.iter().any(|(_, m)| m.contains(c))
                || members.iter().filter(|x| *x == c).count() > 1
            {
                return Err(bad(format!("\"{c}\" is in more than one group")));
            }
        }
        groups.push((name, members));
    }
    if groups.len() < 2 {
        return Err(bad("name at least two groups".into()));
    }
    Ok(groups)
}

pub(crate) fn unsupported(t: &Table, what: &str) -> CoordError {
    CoordError::unsupported(format!(
        "{what} on \"{}\" (a table with column groups) is not supported yet",
        t.name
    ))
}

/// For each `first.k = v` conjunct of the WHERE clause (`k` a key column, `v` reading no
/// column), adds `other.k = v` for every other group alias: the key is the same in every group,
/// so each group's shards filter by it and are pruned.
pub(crate) fn copy_key_equalities(
    sel: &mut Select,
    first: &str,
    key: &[String],
    others: &[String],
) -> Result<(), CoordError> {
    let Some(w) = sel.selection.clone() else {
        return Ok(());
    };
    let mut extra = Vec::new();
    for c in crate::planner::conjuncts(&w) {
        let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = c
        else {
            continue;
        };
        let key_of = |e: &Expr| match e {
            Expr::CompoundIdentifier(p) if p.len() == 2 && ident(&p[0]) == first => {
                Some(ident(&p[1])).filter(|k| key.contains(k))
            }
            _ => None,
        };
        let (k, v) = match (key_of(left), key_of(right)) {
            (Some(k), None) => (k, right),
            (None, Some(k)) => (k, left),
            _ => continue,
        };
        if has_columns(v) {
            continue;
        }
        for other in others {
            extra.push(parse_expr(&format!(
                "{}.{} = {v}",
                quote(other),
                quote(&k)
            ))?);
        }
    }
    for e in extra {
        let w = sel
            .selection
            .take()
            .ok_or_else(|| CoordError::Internal("where".into()))?;
        sel.selection = Some(Expr::BinaryOp {
            left: Box::new(w),
            op: BinaryOperator::And,
            right: Box::new(e),
        });
    }
    Ok(())
}

pub(crate) fn has_columns(e: &Expr) -> bool {
    let mut found = false;
    let _ = visit_expressions(e, |x| {
        if matches!(
            x,
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::Subquery(_)
        ) {
            found = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    found
}
