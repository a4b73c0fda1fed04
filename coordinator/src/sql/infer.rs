//! Static result typing: the Postgres name and type of every output column, and of every `$n`.
//!
//! Types are decided from the AST and the catalog alone, before any row exists,
//! because Describe must answer before Execute.

use crate::catalog::{Catalog, Table};
use crate::sql::dialect::pg_type_of;
use crate::sql::names::{column_ref, function_name, ident, table_name};
use sqlparser::ast::*;
use tessera_shared::PgType;

/// One output column.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputColumn {
    /// Name as Postgres would report it.
    pub name: String,
    /// Type.
    pub ty: PgType,
}

/// Tables visible to an expression: (name or alias, table).
pub type Scope<'a> = Vec<(String, &'a Table)>;

/// Named row sources that are not catalog tables: CTEs and derived tables, as tables.
type Synthetic = Vec<(String, Table)>;

/// A query's result as a table (for the scope of whatever reads it).
fn synthetic(name: String, columns: Vec<OutputColumn>) -> Table {
    Table::new(
        name,
        columns
            .into_iter()
            .map(|c| crate::catalog::Column::new(c.name, c.ty))
            .collect(),
    )
}

/// The factors of a FROM list.
fn factors(from: &[TableWithJoins]) -> impl Iterator<Item = &TableFactor> {
    from.iter()
        .flat_map(|twj| std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation)))
}

/// The scope of a FROM list: catalog tables, `ctes` it names, and its `derived` tables.
fn scope_of<'a>(
    from: &[TableWithJoins],
    catalog: &'a Catalog,
    ctes: &'a Synthetic,
    derived: &'a Synthetic,
) -> Scope<'a> {
    let mut scope: Scope<'a> = Vec::new();
    for f in factors(from) {
        // A CTE shadows a catalog table of the same name.
        let cte = match f {
            TableFactor::Table { name, alias, .. } => table_name(name).ok().and_then(|n| {
                let (_, t) = ctes.iter().rev().find(|(c, _)| *c == n)?;
                Some((alias.as_ref().map(|a| ident(&a.name)).unwrap_or(n), t))
            }),
            _ => None,
        };
        match cte {
            Some(entry) => scope.push(entry),
            None => add_factor(f, catalog, &mut scope),
        }
    }
    scope.extend(derived.iter().map(|(k, t)| (k.clone(), t)));
    scope
}

/// Adds a catalog table of the FROM list to `scope`.
pub(super) fn add_factor<'a>(f: &TableFactor, catalog: &'a Catalog, scope: &mut Scope<'a>) {
    if let TableFactor::Table { name, alias, .. } = f {
        if let Ok(n) = table_name(name) {
            if let Some(t) = catalog.tables.get(&n) {
                let key = alias.as_ref().map(|a| ident(&a.name)).unwrap_or(n);
                scope.push((key, t));
            }
        }
    }
}

/// Output columns of a query.
pub fn query_columns(q: &Query, catalog: &Catalog) -> Vec<OutputColumn> {
    query_columns_in(q, catalog, &Vec::new())
}

fn query_columns_in(q: &Query, catalog: &Catalog, outer: &Synthetic) -> Vec<OutputColumn> {
    let mut ctes = outer.clone();
    if let Some(with) = &q.with {
        for cte in &with.cte_tables {
            let mut cols = query_columns_in(&cte.query, catalog, &ctes);
            for (c, renamed) in cols.iter_mut().zip(&cte.alias.columns) {
                c.name = ident(&renamed.name);
            }
            ctes.push((
                ident(&cte.alias.name),
                synthetic(ident(&cte.alias.name), cols),
            ));
        }
    }
    set_expr_columns(&q.body, catalog, &ctes)
}

fn set_expr_columns(body: &SetExpr, catalog: &Catalog, ctes: &Synthetic) -> Vec<OutputColumn> {
    match body {
        SetExpr::Select(s) => {
            let derived: Synthetic = factors(&s.from)
                .filter_map(|f| match f {
                    TableFactor::Derived {
                        subquery,
                        alias: Some(alias),
                        ..
                    } => {
                        let mut cols = query_columns_in(subquery, catalog, ctes);
                        for (c, renamed) in cols.iter_mut().zip(&alias.columns) {
                            c.name = ident(&renamed.name);
                        }
                        let name = ident(&alias.name);
                        Some((name.clone(), synthetic(name, cols)))
                    }
                    _ => None,
                })
                .collect();
            let scope = scope_of(&s.from, catalog, ctes, &derived);
            projection_columns(&s.projection, &scope, catalog)
        }
        SetExpr::Query(q) => query_columns_in(q, catalog, ctes),
        SetExpr::SetOperation { left, .. } => set_expr_columns(left, catalog, ctes),
        SetExpr::Values(v) => v
            .rows
            .first()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .map(|(i, e)| OutputColumn {
                        name: format!("column{}", i + 1),
                        ty: expr_type(e, &[], catalog),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => vec![],
    }
}

/// Output columns of a projection (also RETURNING lists).
pub fn projection_columns(
    items: &[SelectItem],
    scope: &Scope<'_>,
    catalog: &Catalog,
) -> Vec<OutputColumn> {
    let mut out = Vec::new();
    for item in items {
        match item {
            SelectItem::Wildcard(_) => {
                for (_, t) in scope {
                    out.extend(t.columns.iter().map(|c| OutputColumn {
                        name: c.name.clone(),
                        ty: c.ty,
                    }));
                }
            }
            SelectItem::QualifiedWildcard(kind, _) => {
                let q = match kind {
                    SelectItemQualifiedWildcardKind::ObjectName(n) => {
                        table_name(n).unwrap_or_default()
                    }
                    SelectItemQualifiedWildcardKind::Expr(e) => e.to_string(),
                };
                if let Some((_, t)) = scope.iter().find(|(k, _)| *k == q) {
                    out.extend(t.columns.iter().map(|c| OutputColumn {
                        name: c.name.clone(),
                        ty: c.ty,
                    }));
                }
            }
            SelectItem::UnnamedExpr(e) => out.push(OutputColumn {
                name: expr_name(e),
                ty: expr_type(e, scope, catalog),
            }),
            SelectItem::ExprWithAlias { expr, alias } => out.push(OutputColumn {
                name: ident(alias),
                ty: expr_type(expr, scope, catalog),
            }),
            SelectItem::ExprWithAliases { expr, aliases } => out.push(OutputColumn {
                name: aliases
                    .first()
                    .map(ident)
                    .unwrap_or_else(|| expr_name(expr)),
                ty: expr_type(expr, scope, catalog),
            }),
        }
    }
    out
}

/// The column name Postgres gives an unaliased expression.
pub fn expr_name(e: &Expr) -> String {
    match e {
        Expr::Identifier(i) => ident(i),
        Expr::CompoundIdentifier(parts) => parts.last().map(ident).unwrap_or_default(),
        Expr::Function(f) => {
            let name = function_name(&f.name);
            let name = name.rsplit('.').next().unwrap_or("?column?");
            // The catalog emulation's stand-ins keep the name of the function they replace.
            match name {
                "tessera_array_agg" => "array_agg",
                n => n,
            }
            .to_string()
        }
        Expr::Cast {
            expr, data_type, ..
        } => match expr.as_ref() {
            Expr::Value(_) => pg_type_of(data_type)
                .map(short_type_name)
                .unwrap_or("?column?")
                .to_string(),
            inner => expr_name(inner),
        },
        Expr::Nested(inner) => expr_name(inner),
        Expr::Case { .. } => "case".into(),
        Expr::Exists { .. } => "exists".into(),
        Expr::Substring { .. } => "substring".into(),
        Expr::Position { .. } => "position".into(),
        Expr::Trim { .. } => "btrim".into(),
        _ => "?column?".into(),
    }
}

fn short_type_name(t: PgType) -> &'static str {
    match t {
        PgType::Int2 => "int2",
        PgType::Int4 => "int4",
        PgType::Int8 => "int8",
        PgType::Float4 => "float4",
        PgType::Float8 => "float8",
        PgType::Bool => "bool",
        PgType::Varchar => "varchar",
        PgType::Bpchar => "bpchar",
        PgType::Timestamptz => "timestamptz",
        other => other.name(),
    }
}

pub(super) fn column_type(q: Option<&str>, c: &str, scope: &[(String, &Table)]) -> Option<PgType> {
    scope
        .iter()
        .filter(|(k, _)| q.is_none_or(|q| q == k))
        .find_map(|(_, t)| t.column(c).map(|col| col.ty))
}

/// The type of an expression, `text` when nothing better is known.
pub fn expr_type(e: &Expr, scope: &[(String, &Table)], catalog: &Catalog) -> PgType {
    if let Some((q, c)) = column_ref(e) {
        return column_type(q.as_deref(), &c, scope).unwrap_or(PgType::Text);
    }
    let ty = |e: &Expr| expr_type(e, scope, catalog);
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => {
                if n.contains(['.', 'e', 'E']) {
                    PgType::Numeric
                } else if n.parse::<i32>().is_ok() {
                    PgType::Int4
                } else {
                    PgType::Int8
                }
            }
            Value::Boolean(_) => PgType::Bool,
            _ => PgType::Text,
        },
        Expr::Cast { data_type, .. } => pg_type_of(data_type).unwrap_or(PgType::Text),
        Expr::Nested(inner)
        | Expr::UnaryOp {
            expr: inner,
            op: UnaryOperator::Minus | UnaryOperator::Plus,
        } => ty(inner),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            ..
        }
        | Expr::IsNull(_)
        | Expr::IsNotNull(_)
        | Expr::IsTrue(_)
        | Expr::IsFalse(_)
        | Expr::IsNotTrue(_)
        | Expr::IsNotFalse(_)
        | Expr::IsDistinctFrom(..)
        | Expr::IsNotDistinctFrom(..)
        | Expr::In { .. }
        | Expr::Between { .. }
        | Expr::Like { .. }
        | Expr::ILike { .. }
        | Expr::Exists { .. } => PgType::Bool,
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::Eq
            | BinaryOperator::NotEq
            | BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq
            | BinaryOperator::And
            | BinaryOperator::Or
            | BinaryOperator::PGLikeMatch
            | BinaryOperator::PGILikeMatch
            | BinaryOperator::PGNotLikeMatch
            | BinaryOperator::PGNotILikeMatch
            | BinaryOperator::PGRegexMatch
            | BinaryOperator::PGRegexIMatch
            | BinaryOperator::PGRegexNotMatch
            | BinaryOperator::PGRegexNotIMatch
            | BinaryOperator::AtArrow
            | BinaryOperator::ArrowAt
            | BinaryOperator::Question
            | BinaryOperator::QuestionAnd
            | BinaryOperator::QuestionPipe => PgType::Bool,
            BinaryOperator::Arrow | BinaryOperator::HashArrow => match ty(left) {
                PgType::Json => PgType::Json,
                _ => PgType::Jsonb,
            },
            BinaryOperator::StringConcat
            | BinaryOperator::LongArrow
            | BinaryOperator::HashLongArrow => PgType::Text,
            _ => numeric_result(ty(left), ty(right)),
        },
        Expr::Case {
            conditions,
            else_result,
            ..
        } => conditions
            .first()
            .map(|c| ty(&c.result))
            .or_else(|| else_result.as_deref().map(ty))
            .unwrap_or(PgType::Text),
        Expr::Subquery(q) => query_columns(q, catalog)
            .first()
            .map(|c| c.ty)
            .unwrap_or(PgType::Text),
        Expr::Substring { .. } | Expr::Trim { .. } => PgType::Text,
        Expr::Position { .. } => PgType::Int4,
        Expr::Function(f) => function_type(f, scope, catalog),
        _ => PgType::Text,
    }
}

fn numeric_result(a: PgType, b: PgType) -> PgType {
    match (a, b) {
        (a, b) if a.is_integer() && b.is_integer() => {
            if a == PgType::Int8 || b == PgType::Int8 {
                PgType::Int8
            } else if a == PgType::Int2 && b == PgType::Int2 {
                PgType::Int2
            } else {
                PgType::Int4
            }
        }
        (PgType::Float4 | PgType::Float8, _) | (_, PgType::Float4 | PgType::Float8) => {
            PgType::Float8
        }
        (PgType::Numeric, _) | (_, PgType::Numeric) => PgType::Numeric,
        (PgType::Date | PgType::Timestamp | PgType::Timestamptz, _) => a,
        _ => PgType::Numeric,
    }
}

fn first_arg(f: &Function) -> Option<&Expr> {
    match &f.args {
        FunctionArguments::List(l) => l.args.first().and_then(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        }),
        _ => None,
    }
}

fn function_type(f: &Function, scope: &[(String, &Table)], catalog: &Catalog) -> PgType {
    let arg = || {
        first_arg(f)
            .map(|e| expr_type(e, scope, catalog))
            .unwrap_or(PgType::Text)
    };
    match function_name(&f.name).as_str() {
        "count" | "row_number" | "rank" | "dense_rank" | "pg_backend_pid" => PgType::Int8,
        "sum" => match arg() {
            t if t.is_integer() => PgType::Int8,
            PgType::Float4 | PgType::Float8 => PgType::Float8,
            _ => PgType::Numeric,
        },
        "avg" => match arg() {
            PgType::Float4 | PgType::Float8 => PgType::Float8,
            _ => PgType::Numeric,
        },
        "min" | "max" | "abs" | "coalesce" | "nullif" | "greatest" | "least" | "round"
        | "trunc" | "ceil" | "floor" => arg(),
        "length" | "char_length" | "character_length" | "octet_length" | "strpos" | "position"
        | "ascii" => PgType::Int4,
        "starts_with" => PgType::Bool,
        "random" => PgType::Float8,
        "now" | "current_timestamp" | "transaction_timestamp" | "statement_timestamp" => {
            PgType::Timestamptz
        }
        "current_date" => PgType::Date,
        "bool_and" | "bool_or" | "every" => PgType::Bool,
        "array_agg" | "tessera_array_agg" => arg().array(),
        "unnest" => arg().element().unwrap_or(PgType::Text),
        "generate_subscripts" | "array_length" | "array_upper" | "array_lower" | "cardinality" => {
            PgType::Int4
        }
        // Catalog predicates (see `pgcatalog`).
        "pg_table_is_visible"
        | "pg_type_is_visible"
        | "pg_function_is_visible"
        | "pg_is_in_recovery"
        | "pg_has_role"
        | "tessera_any_eq"
        | "tessera_regex" => PgType::Bool,
        n if n.starts_with("has_") && n.ends_with("_privilege") => PgType::Bool,
        "pg_relation_size"
        | "pg_total_relation_size"
        | "pg_table_size"
        | "pg_indexes_size"
        | "pg_database_size" => PgType::Int8,
        "gen_random_uuid" => PgType::Uuid,
        "jsonb_set" | "jsonb_set_lax" | "jsonb_build_object" | "jsonb_build_array"
        | "jsonb_extract_path" | "to_jsonb" | "jsonb_agg" => PgType::Jsonb,
        "json_build_object" | "json_build_array" | "json_extract_path" | "json_agg" => PgType::Json,
        "jsonb_array_elements" => PgType::Jsonb,
        "json_array_elements" => PgType::Json,
        "jsonb_array_elements_text"
        | "json_array_elements_text"
        | "jsonb_object_keys"
        | "json_object_keys" => PgType::Text,
        _ => PgType::Text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(sql: &str) -> Vec<(String, PgType)> {
        let Statement::Query(q) = crate::sql::parse::parse(sql).expect("parse").remove(0) else {
            panic!("not a query")
        };
        query_columns(&q, &crate::planner::testing::catalog())
            .into_iter()
            .map(|c| (c.name, c.ty))
            .collect()
    }

    #[test]
    fn derived_tables_and_ctes_keep_their_column_types() {
        let b = |n: &str, t| (n.to_string(), t);
        assert_eq!(
            types("SELECT a FROM (SELECT true AS a) s"),
            vec![b("a", PgType::Bool)]
        );
        assert_eq!(
            types("WITH x AS (SELECT id, age FROM users) SELECT age, id FROM x"),
            vec![b("age", PgType::Int4), b("id", PgType::Int8)]
        );
        assert_eq!(
            types("WITH x (n, flag) AS (SELECT id, true FROM users) SELECT s.flag, n FROM (SELECT * FROM x) s"),
            vec![b("flag", PgType::Bool), b("n", PgType::Int8)]
        );
        // A CTE named like a table shadows it.
        assert_eq!(
            types("WITH users AS (SELECT 'x' AS name) SELECT name FROM users"),
            vec![b("name", PgType::Text)]
        );
    }
}
