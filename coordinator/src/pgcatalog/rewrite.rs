//! Rewrites a catalog query for the scratch SQLite: system relation names, `pg_catalog.`
//! function prefixes, casts to `regclass`/`regtype`/`regnamespace`/`regrole`/`oid`,
//! regular-expression operators, `COLLATE`, `ARRAY(subquery)` and `= ANY(array)`.

use super::system_name;
use crate::catalog::Catalog;
use crate::error::CoordError;
use crate::sql::dialect::parse_expr;
use sqlparser::ast::*;
use std::ops::ControlFlow;

struct Rewriter<'a> {
    catalog: &'a Catalog,
    relations: Vec<String>,
    error: Option<CoordError>,
}

/// Rewrites `q` in place; returns the scratch names of the system relations it reads.
pub fn rewrite(q: &mut Query, catalog: &Catalog) -> Result<Vec<String>, CoordError> {
    let mut r = Rewriter {
        catalog,
        relations: Vec::new(),
        error: None,
    };
    let _ = q.visit(&mut r);
    match r.error {
        Some(e) => Err(e),
        None => Ok(r.relations),
    }
}

fn strip_pg_catalog(name: &mut ObjectName) {
    let first = name
        .0
        .first()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.to_lowercase());
    if name.0.len() == 2 && first.as_deref() == Some("pg_catalog") {
        name.0.remove(0);
    }
}

/// `pg_catalog.regclass` → `regclass`; `int2[]` stays as written.
fn type_name(t: &DataType) -> String {
    let s = t.to_string().to_lowercase();
    s.strip_prefix("pg_catalog.")
        .map(str::to_string)
        .unwrap_or(s)
}

/// Whether a cast target is one of the catalog's reference types (`regclass` …).
pub fn is_catalog_type(t: &DataType) -> bool {
    matches!(
        type_name(t).as_str(),
        "regclass" | "regtype" | "regnamespace" | "regrole" | "regproc" | "regprocedure"
    )
}

fn regex_call(
    a: &Expr,
    b: &Expr,
    case_insensitive: bool,
    negated: bool,
) -> Result<Expr, CoordError> {
    let not = if negated { "NOT " } else { "" };
    parse_expr(&format!(
        "{not}tessera_regex({a}, {b}, {})",
        i32::from(case_insensitive)
    ))
}

fn rewrite_expr(e: &Expr) -> Result<Option<Expr>, CoordError> {
    Ok(Some(match e {
        Expr::Cast {
            expr, data_type, ..
        } => match type_name(data_type).as_str() {
            "regclass" => parse_expr(&format!("tessera_regclass({expr})"))?,
            "regtype" => parse_expr(&format!("tessera_regtype({expr})"))?,
            "regnamespace" => parse_expr(&format!("tessera_regnamespace({expr})"))?,
            "regrole" => parse_expr(&format!("tessera_regrole({expr})"))?,
            "regproc" | "regprocedure" => (**expr).clone(),
            // OIDs are typed int8 (Tessera has no `oid` type on the wire).
            "oid" | "xid" | "cid" => parse_expr(&format!("CAST({expr} AS BIGINT)"))?,
            "name" | "text" | "char" | "\"char\"" => parse_expr(&format!("CAST({expr} AS TEXT)"))?,
            // Arrays are array text here: `x::int2[]` is `x`.
            t if t.ends_with("[]") => (**expr).clone(),
            _ => return Ok(None),
        },
        Expr::Collate { expr, .. } => (**expr).clone(),
        // `pg_catalog.pg_class.relname` → `pg_class.relname`.
        Expr::CompoundIdentifier(parts) if parts.len() >= 3 => {
            let schema = parts[0].value.to_lowercase();
            let mut rest = parts[1..].to_vec();
            match schema.as_str() {
                "pg_catalog" => {}
                "information_schema" => {
                    rest[0] = Ident::new(format!(
                        "information_schema__{}",
                        rest[0].value.to_lowercase()
                    ))
                }
                _ => return Ok(None),
            }
            Expr::CompoundIdentifier(rest)
        }
        // ARRAY[a, b] → Postgres array text '{a,b}'.
        Expr::Array(arr) => {
            let items: Vec<String> = arr.elem.iter().map(|e| e.to_string()).collect();
            parse_expr(&format!("tessera_array({})", items.join(", ")))?
        }
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::PGRegexMatch => regex_call(left, right, false, false)?,
            BinaryOperator::PGRegexIMatch => regex_call(left, right, true, false)?,
            BinaryOperator::PGRegexNotMatch => regex_call(left, right, false, true)?,
            BinaryOperator::PGRegexNotIMatch => regex_call(left, right, true, true)?,
            BinaryOperator::PGCustomBinaryOperator(parts) => match parts.last().map(String::as_str)
            {
                Some("~") => regex_call(left, right, false, false)?,
                Some("~*") => regex_call(left, right, true, false)?,
                Some("!~") => regex_call(left, right, false, true)?,
                Some("!~*") => regex_call(left, right, true, true)?,
                Some("=") => parse_expr(&format!("({left}) = ({right})"))?,
                _ => return Ok(None),
            },
            _ => return Ok(None),
        },
        Expr::AnyOp {
            left,
            compare_op: BinaryOperator::Eq,
            right,
            ..
        } => parse_expr(&format!("tessera_any_eq({left}, {right})"))?,
        Expr::Function(f) => {
            let is_array = f.name.0.len() == 1
                && f.name.0[0]
                    .as_ident()
                    .is_some_and(|i| i.value.eq_ignore_ascii_case("array"));
            match (&f.args, is_array) {
                // ARRAY(SELECT x ...) → its values as Postgres array text, '{a,b}'.
                (FunctionArguments::Subquery(sub), true) => {
                    let mut sub = sub.clone();
                    let SetExpr::Select(s) = sub.body.as_mut() else {
                        return Ok(None);
                    };
                    let expr = match s.projection.first() {
                        Some(
                            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. },
                        ) => e.clone(),
                        _ => return Ok(None),
                    };
                    s.projection = vec![SelectItem::ExprWithAlias {
                        expr,
                        alias: Ident::new("__v"),
                    }];
                    parse_expr(&format!(
                        "(SELECT '{{' || coalesce(group_concat(__v, ','), '') || '}}' FROM ({sub}) AS __array)"
                    ))?
                }
                _ if f.name.0.len() == 2 => {
                    let mut f = f.clone();
                    strip_pg_catalog(&mut f.name);
                    Expr::Function(f)
                }
                _ => return Ok(None),
            }
        }
        _ => return Ok(None),
    }))
}

impl VisitorMut for Rewriter<'_> {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &mut ObjectName) -> ControlFlow<()> {
        if let Some(name) = system_name(relation, self.catalog) {
            *relation = ObjectName::from(vec![Ident::new(name.clone())]);
            if !self.relations.contains(&name) {
                self.relations.push(name);
            }
        } else {
            // `pg_catalog.generate_series(…)` and other set-returning functions.
            strip_pg_catalog(relation);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        // `unnest(array) x` → the elements of the array text as rows of column `x`.
        let TableFactor::Table {
            name,
            args: Some(args),
            alias,
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let is_unnest = name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .is_some_and(|i| i.value.eq_ignore_ascii_case("unnest"));
        if !is_unnest || args.args.len() != 1 {
            return ControlFlow::Continue(());
        }
        let col = alias
            .as_ref()
            .map(|a| a.name.value.clone())
            .unwrap_or_else(|| "unnest".into());
        let sql = format!(
            "SELECT * FROM (SELECT value AS \"{col}\" FROM json_each(tessera_array_json({}))) AS \"{col}\"",
            args.args[0]
        );
        match crate::sql::parse::parse(&sql) {
            Ok(mut stmts) => {
                if let Some(Statement::Query(mut q)) = stmts.pop() {
                    if let SetExpr::Select(s) = q.body.as_mut() {
                        if let Some(twj) = s.from.pop() {
                            *factor = twj.relation;
                        }
                    }
                }
            }
            Err(e) => {
                self.error = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match rewrite_expr(expr) {
            Ok(Some(new)) => *expr = new,
            Ok(None) => {}
            Err(e) => {
                self.error = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(sql: &str) -> (String, Vec<String>) {
        let Statement::Query(mut q) = crate::sql::parse::parse(sql).expect("parse").remove(0)
        else {
            panic!()
        };
        let rels = rewrite(&mut q, &crate::planner::testing::catalog()).expect("rewrite");
        (q.to_string(), rels)
    }

    #[test]
    fn psql_forms_become_sqlite_forms() {
        let (sql, rels) = rw(
            "SELECT c.oid::pg_catalog.regclass, pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c \
             LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname OPERATOR(pg_catalog.~) '^(users)$' COLLATE pg_catalog.default AND n.nspname !~ '^pg_toast'",
        );
        assert_eq!(rels, vec!["pg_class", "pg_namespace"]);
        assert!(sql.contains("tessera_regclass(c.oid)"), "{sql}");
        assert!(
            sql.contains("pg_get_userbyid(c.relowner)") && !sql.contains("pg_catalog."),
            "{sql}"
        );
        assert!(
            sql.contains("tessera_regex(c.relname, '^(users)$', 0)"),
            "{sql}"
        );
        assert!(
            sql.contains("NOT tessera_regex(n.nspname, '^pg_toast', 0)"),
            "{sql}"
        );
        let (sql, rels) = rw("SELECT table_name FROM information_schema.tables WHERE table_schema = ANY(current_schemas(false))");
        assert_eq!(rels, vec!["information_schema__tables"]);
        assert!(
            sql.contains("tessera_any_eq(table_schema, current_schemas(false))"),
            "{sql}"
        );
        let (sql, _) = rw("SELECT ARRAY(SELECT b.rolname FROM pg_catalog.pg_roles b) AS memberof");
        assert!(
            sql.contains("group_concat(__v, ',')") && sql.contains("b.rolname AS __v"),
            "{sql}"
        );
        let (sql, _) = rw("SELECT x FROM pg_catalog.unnest('{a,b}') x");
        assert!(
            sql.contains("json_each(tessera_array_json('{a,b}'))"),
            "{sql}"
        );
        // A user table named like nothing in pg_catalog is left alone.
        let (_, rels) = rw("SELECT * FROM users");
        assert!(rels.is_empty());
    }
}
