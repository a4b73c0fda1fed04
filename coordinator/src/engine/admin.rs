//! Cluster administration called as functions: `create_distributed_table`,
//! `create_reference_table`, `tessera_cache_clear`, `tessera_decommission`, `tessera_drain`,
//! `tessera_move_shard`.

use super::{ddl, Completion, Engine, QueryResult};
use crate::catalog::Distribution;
use crate::error::CoordError;
use crate::session::Session;
use crate::sql::infer::OutputColumn;
use crate::sql::names::function_name;
use sqlparser::ast::*;
use tessera_shared::{PgType, Value};

/// Returns `(function, args)` for `SELECT f('a', 'b')` without FROM.
pub(super) fn utility_call(q: &Query) -> Option<(String, Vec<String>)> {
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    if !s.from.is_empty() || s.projection.len() != 1 {
        return None;
    }
    let (SelectItem::UnnamedExpr(Expr::Function(f))
    | SelectItem::ExprWithAlias {
        expr: Expr::Function(f),
        ..
    }) = &s.projection[0]
    else {
        return None;
    };
    let name = function_name(&f.name);
    if !matches!(
        name.as_str(),
        "create_distributed_table"
            | "create_reference_table"
            | "tessera_cache_clear"
            | "tessera_decommission"
            | "tessera_drain"
            | "tessera_move_shard"
    ) {
        return None;
    }
    let FunctionArguments::List(l) = &f.args else {
        return Some((name, vec![]));
    };
    let args = l
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))) => match &v.value {
                sqlparser::ast::Value::SingleQuotedString(s) => s.clone(),
                other => other.to_string(),
            },
            other => other.to_string(),
        })
        .collect();
    Some((name, args))
}

impl Engine {
    /// Runs the administration call `name(args)` (see [`utility_call`]).
    pub(super) async fn admin_call(
        &self,
        session: &Session,
        name: String,
        args: Vec<String>,
    ) -> Result<QueryResult, CoordError> {
        // Before anything changes: moving data and clearing caches is for superusers.
        self.require_superuser(session, &format!("call {name}()"))?;
        if matches!(
            name.as_str(),
            "tessera_decommission" | "tessera_drain" | "tessera_move_shard"
        ) {
            let done = crate::replication::placement_call(&self.replication, &name, &args).await?;
            return Ok(QueryResult {
                columns: vec![OutputColumn {
                    name,
                    ty: PgType::Text,
                }],
                rows: vec![vec![Value::Text(done)]],
                returns_rows: true,
                completion: Completion::Select,
            });
        }
        if name == "tessera_cache_clear" {
            self.cache.clear();
            return Ok(QueryResult {
                columns: vec![OutputColumn {
                    name,
                    ty: PgType::Text,
                }],
                rows: vec![vec![Value::Text("cleared".into())]],
                returns_rows: true,
                completion: Completion::Select,
            });
        }
        let table = args
            .first()
            .cloned()
            .ok_or_else(|| CoordError::Syntax(format!("{name} needs a table name")))?;
        let table = table.to_lowercase();
        self.cache.invalidate_table(&table);
        if name == "create_reference_table" {
            ddl::redistribute(self, &table, Distribution::Reference, None).await?;
        } else {
            let column = args
                .get(1)
                .cloned()
                .ok_or_else(|| CoordError::Syntax(format!("{name} needs a distribution column")))?;
            let shards = args.get(2).map(|s| ddl::shard_count_arg(s)).transpose()?;
            ddl::redistribute(
                self,
                &table,
                Distribution::Hash {
                    column: column.to_lowercase(),
                },
                shards,
            )
            .await?;
        }
        Ok(QueryResult {
            columns: vec![OutputColumn {
                name,
                ty: PgType::Text,
            }],
            rows: vec![vec![Value::Text(String::new())]],
            returns_rows: true,
            completion: Completion::Select,
        })
    }
}
