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
                        "(SELECT coalesce(tessera_array_agg(__v), '{{}}') FROM ({sub}) AS __array)"
                    ))?
                }
                // array_agg(x ORDER BY y) → quoted array text (SQLite orders any aggregate).
                _ if crate::sql::names::function_name(&f.name).ends_with("array_agg") => {
                    let mut f = f.clone();
                    f.name = ObjectName::from(vec![Ident::new("tessera_array_agg")]);
                    Expr::Function(f)
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

/// A set-returning call in a select list: `unnest(a)` or `generate_subscripts(a, 1)`.
enum Srf {
    Unnest,
    Subscripts,
}

fn srf_call(e: &Expr) -> Option<(Srf, Expr)> {
    let Expr::Function(f) = e else { return None };
    let name = f.name.0.last()?.as_ident()?.value.to_lowercase();
    let FunctionArguments::List(l) = &f.args else {
        return None;
    };
    let arg = match l.args.first()? {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(a)) => a.clone(),
        _ => return None,
    };
    match (name.as_str(), l.args.len()) {
        ("unnest", 1) => Some((Srf::Unnest, arg)),
        ("generate_subscripts", 2) => Some((Srf::Subscripts, arg)),
        _ => None,
    }
}

/// Set-returning functions in a select list (`SELECT unnest(indkey) AS attnum,
/// generate_subscripts(indkey, 1) AS ord FROM pg_index`) become a join with one row per
/// element of the longest array, since SQLite has none in select lists. As in PostgreSQL,
/// the calls advance together and a shorter array yields NULL past its end.
fn lift_select_srfs(s: &mut Select) -> Result<(), CoordError> {
    let mut arrays: Vec<String> = Vec::new();
    for item in s.projection.iter_mut() {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (&*e, None),
            SelectItem::ExprWithAlias { expr, alias } => (&*expr, Some(alias.clone())),
            _ => continue,
        };
        let Some((kind, mut arg)) = srf_call(expr) else {
            continue;
        };
        let _ = visit_expressions_mut(&mut arg, |e| {
            if let Ok(Some(new)) = rewrite_expr(e) {
                *e = new;
            }
            ControlFlow::<()>::Continue(())
        });
        let arg = arg.to_string();
        // PostgreSQL names an unaliased column after the function.
        let (replacement, name) = match kind {
            Srf::Unnest => (format!("tessera_array_at({arg}, __srf.value)"), "unnest"),
            Srf::Subscripts => (
                format!("tessera_subscript({arg}, __srf.value)"),
                "generate_subscripts",
            ),
        };
        if !arrays.contains(&arg) {
            arrays.push(arg);
        }
        *item = SelectItem::ExprWithAlias {
            expr: parse_expr(&replacement)?,
            alias: alias.unwrap_or_else(|| Ident::new(name)),
        };
    }
    if arrays.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT 1 FROM json_each(tessera_srf_rows({})) AS __srf",
        arrays.join(", ")
    );
    if let Some(Statement::Query(mut q)) = crate::sql::parse::parse(&sql)?.pop() {
        if let SetExpr::Select(inner) = q.body.as_mut() {
            s.from.extend(inner.from.pop());
        }
    }
    Ok(())
}

impl VisitorMut for Rewriter<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
        if let SetExpr::Select(s) = q.body.as_mut() {
            if let Err(e) = lift_select_srfs(s) {
                self.error = Some(e);
                return ControlFlow::Break(());
            }
            // Column aliases are quoted: Postgres takes `AS collate`, SQLite does not.
            for item in s.projection.iter_mut() {
                if let SelectItem::ExprWithAlias { alias, .. } = item {
                    if alias.quote_style.is_none() {
                        *alias = Ident::with_quote('"', alias.value.to_lowercase());
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }

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
    fn select_list_srfs_become_a_join() {
        let (sql, _) = rw(
            "SELECT c.conname, unnest(i.indkey) AS attnum, generate_subscripts(i.indkey, 1), \
             unnest(i.indclass) FROM pg_catalog.pg_index i JOIN pg_constraint c ON c.conindid = i.indexrelid",
        );
        assert!(
            sql.contains("tessera_array_at(i.indkey, __srf.value) AS \"attnum\""),
            "{sql}"
        );
        assert!(
            sql.contains("tessera_subscript(i.indkey, __srf.value) AS \"generate_subscripts\""),
            "{sql}"
        );
        assert!(
            sql.contains("tessera_array_at(i.indclass, __srf.value) AS \"unnest\""),
            "{sql}"
        );
        assert!(
            sql.contains(", json_each(tessera_srf_rows(i.indkey, i.indclass)) AS __srf"),
            "{sql}"
        );
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
            sql.contains("tessera_array_agg(__v)") && sql.contains("b.rolname AS __v"),
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
