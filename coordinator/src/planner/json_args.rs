//! JSON columns inside JSON constructors: `jsonb_build_object('d', doc)` nests `doc` in
//! PostgreSQL, but SQLite's `json_object` quotes any plain text as a string. References to
//! `json`/`jsonb` columns inside the constructors are wrapped in `tessera_jsonb(...)`, whose
//! result SQLite knows to be JSON (see `tessera_storage::jsonfn`).

use crate::catalog::Table;
use crate::sql::names::{function_name, ident};
use sqlparser::ast::*;
use std::collections::HashSet;
use std::ops::ControlFlow;
use tessera_shared::PgType;

/// Functions whose arguments are embedded as JSON values.
const CONSTRUCTORS: [&str; 6] = [
    "jsonb_build_object",
    "json_build_object",
    "jsonb_build_array",
    "json_build_array",
    "jsonb_agg",
    "json_agg",
];

/// Wraps the JSON column references that are direct arguments of a JSON constructor.
pub fn mark_json_arguments<V: VisitMut>(node: &mut V, tables: &[&Table]) {
    let json: HashSet<String> = tables
        .iter()
        .flat_map(|t| t.columns.iter())
        .filter(|c| matches!(c.ty, PgType::Json | PgType::Jsonb))
        .map(|c| c.name.clone())
        .collect();
    if json.is_empty() {
        return;
    }
    let is_json_column = |e: &Expr| match e {
        Expr::Identifier(i) => json.contains(&ident(i)),
        Expr::CompoundIdentifier(p) => p.last().is_some_and(|i| json.contains(&ident(i))),
        _ => false,
    };
    let _ = visit_expressions_mut(node, |e| {
        if let Expr::Function(f) = e {
            if CONSTRUCTORS.contains(&function_name(&f.name).as_str()) {
                if let FunctionArguments::List(l) = &mut f.args {
                    for a in l.args.iter_mut() {
                        if let FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) = a {
                            if is_json_column(x) {
                                let inner = x.clone();
                                *x = Expr::Function(Function {
                                    name: ObjectName::from(vec![Ident::new("tessera_jsonb")]),
                                    uses_odbc_syntax: false,
                                    parameters: FunctionArguments::None,
                                    args: FunctionArguments::List(FunctionArgumentList {
                                        duplicate_treatment: None,
                                        args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(
                                            inner,
                                        ))],
                                        clauses: vec![],
                                    }),
                                    filter: None,
                                    null_treatment: None,
                                    over: None,
                                    within_group: vec![],
                                });
                            }
                        }
                    }
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Column;

    #[test]
    fn json_columns_in_constructors_are_marked() {
        let t = Table::new(
            "e",
            vec![
                Column::new("doc", PgType::Jsonb),
                Column::new("name", PgType::Text),
            ],
        );
        let mut s = crate::sql::parse::parse(
            "SELECT jsonb_build_object('d', doc, 'n', name), jsonb_agg(e.doc), doc FROM e",
        )
        .expect("parse");
        mark_json_arguments(&mut s[0], &[&t]);
        assert_eq!(
            s[0].to_string(),
            "SELECT jsonb_build_object('d', tessera_jsonb(doc), 'n', name), jsonb_agg(tessera_jsonb(e.doc)), doc FROM e"
        );
    }
}
