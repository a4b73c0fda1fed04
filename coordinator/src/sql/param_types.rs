//! The types of a statement's `$n` parameters, for Describe: from the column a parameter is
//! compared with or inserted into.

use crate::catalog::{Catalog, Table};
use crate::sql::dialect::pg_type_of;
use crate::sql::infer::{add_factor, column_type, expr_type};
use crate::sql::names::{function_name, table_name};
use crate::sql::params::placeholder_index;
use sqlparser::ast::*;
use std::ops::ControlFlow;
use tessera_shared::PgType;

/// Types of `$1..$n` in a statement: from the column a parameter is compared with
/// or inserted into; `LIMIT`/`OFFSET` take bigint; otherwise text.
pub fn param_types(stmt: &Statement, catalog: &Catalog, n: usize) -> Vec<PgType> {
    let mut types: Vec<Option<PgType>> = vec![None; n];
    let mut set = |p: &Expr, t: PgType| {
        if let Some(i) = placeholder(p) {
            if i >= 1 && i <= types.len() && types[i - 1].is_none() {
                types[i - 1] = Some(t);
            }
        }
    };
    // The tables any part of the statement names: a bare column resolves against them.
    let mut tables: Vec<(String, &Table)> = Vec::new();
    let _ = visit_relations(stmt, |r| {
        if let Ok(n) = table_name(r) {
            if let Some(t) = catalog.tables.get(&n) {
                tables.push((n, t));
            }
        }
        ControlFlow::<()>::Continue(())
    });
    // Aliases: map every alias in FROM clauses to its table too.
    let _ = visit_table_factors(stmt, catalog, &mut tables);
    if let Statement::Insert(ins) = stmt {
        if let (TableObject::TableName(name), Some(src)) = (&ins.table, &ins.source) {
            if let (Ok(tn), SetExpr::Values(v)) = (table_name(name), src.body.as_ref()) {
                if let Some(t) = catalog.tables.get(&tn) {
                    let cols: Vec<String> = crate::sql::names::insert_columns(ins, t);
                    for row in &v.rows {
                        for (e, c) in row.iter().zip(&cols) {
                            if let Some(col) = t.column(c) {
                                set(e, col.ty);
                            }
                        }
                    }
                }
            }
        }
    }
    if let Statement::Update(u) = stmt {
        for a in &u.assignments {
            if let AssignmentTarget::ColumnName(c) = &a.target {
                let c = crate::sql::names::last_ident(c);
                if let Some(t) = column_type(None, &c, &tables) {
                    set(&a.value, t);
                }
            }
        }
    }
    let _ = visit_expressions(stmt, |e| {
        match e {
            // The key or path operand of a JSON operator is text, whatever the JSON's type.
            Expr::BinaryOp {
                op:
                    BinaryOperator::Arrow
                    | BinaryOperator::LongArrow
                    | BinaryOperator::HashArrow
                    | BinaryOperator::HashLongArrow
                    | BinaryOperator::Question
                    | BinaryOperator::QuestionAnd
                    | BinaryOperator::QuestionPipe,
                right,
                ..
            } => set(right, PgType::Text),
            Expr::Function(f)
                if matches!(
                    function_name(&f.name).as_str(),
                    "jsonb_set" | "jsonb_set_lax"
                ) =>
            {
                if let FunctionArguments::List(l) = &f.args {
                    for (i, a) in l.args.iter().enumerate() {
                        if let FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) = a {
                            set(e, if i == 1 { PgType::Text } else { PgType::Jsonb });
                        }
                    }
                }
            }
            Expr::BinaryOp { left, right, .. } => {
                let lt = expr_type(left, &tables, catalog);
                let rt = expr_type(right, &tables, catalog);
                if placeholder(left).is_some() && placeholder(right).is_none() {
                    set(left, rt);
                }
                if placeholder(right).is_some() && placeholder(left).is_none() {
                    set(right, lt);
                }
            }
            Expr::In {
                expr,
                target: InTarget::List(list),
                ..
            } => {
                let t = expr_type(expr, &tables, catalog);
                for item in list {
                    set(item, t);
                }
            }
            Expr::Between {
                expr, low, high, ..
            } => {
                let t = expr_type(expr, &tables, catalog);
                set(low, t);
                set(high, t);
            }
            Expr::Cast {
                expr, data_type, ..
            } => {
                if let Ok(t) = pg_type_of(data_type) {
                    set(expr, t);
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    if let Statement::Query(q) = stmt {
        if let Some(LimitClause::LimitOffset { limit, offset, .. }) = &q.limit_clause {
            if let Some(l) = limit {
                set(l, PgType::Int8);
            }
            if let Some(o) = offset {
                set(&o.value, PgType::Int8);
            }
        }
    }
    types
        .into_iter()
        .map(|t| t.unwrap_or(PgType::Text))
        .collect()
}

fn visit_table_factors<'a>(
    stmt: &Statement,
    catalog: &'a Catalog,
    tables: &mut Vec<(String, &'a Table)>,
) -> ControlFlow<()> {
    struct V<'a, 'b> {
        catalog: &'a Catalog,
        tables: &'b mut Vec<(String, &'a Table)>,
    }
    impl Visitor for V<'_, '_> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, f: &TableFactor) -> ControlFlow<()> {
            add_factor(f, self.catalog, self.tables);
            ControlFlow::Continue(())
        }
    }
    stmt.visit(&mut V { catalog, tables })
}

fn placeholder(e: &Expr) -> Option<usize> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Placeholder(p) => placeholder_index(p),
            _ => None,
        },
        Expr::Nested(inner) => placeholder(inner),
        _ => None,
    }
}
