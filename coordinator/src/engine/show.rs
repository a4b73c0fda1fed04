//! SET and SHOW: session settings, and the cluster views behind `tessera admin` (`SHOW tessera.nodes` ...).

use crate::catalog::{Distribution, GroupKind};
use crate::engine::{dotted, Completion, Engine, QueryResult};
use crate::error::CoordError;
use crate::session::{default_settings, Session};
use crate::sql::infer::OutputColumn;
use crate::sql::names::function_name;
use sqlparser::ast::{Expr, Ident, Reset, Set};
use tessera_shared::{PgType, Value};

fn setting_value(values: &[Expr]) -> String {
    values
        .iter()
        .map(|v| match v {
            Expr::Value(v) => match &v.value {
                sqlparser::ast::Value::SingleQuotedString(s) => s.clone(),
                other => other.to_string(),
            },
            Expr::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `RESET name` and `RESET ALL`: back to the defaults.
pub fn reset(session: &mut Session, reset: &Reset) -> QueryResult {
    match reset {
        Reset::ALL => session.settings = default_settings(),
        Reset::ConfigurationParameter(name) => {
            let n = function_name(name);
            if let Some(d) = default_settings().get(&n) {
                session.settings.insert(n, d.clone());
            }
        }
        Reset::SessionAuthorization => {}
    }
    QueryResult::command("RESET", None)
}

/// `DISCARD ALL`: default settings, no prepared statements; refused inside a block.
pub fn discard(session: &mut Session) -> Result<QueryResult, CoordError> {
    if session.txn.is_some() {
        return Err(CoordError::TxnState(
            "DISCARD ALL cannot run inside a transaction block".into(),
        ));
    }
    session.settings = default_settings();
    session.prepared.clear();
    Ok(QueryResult::command("DISCARD ALL", None))
}

/// `SET name = value` (session and LOCAL scope are treated alike).
pub fn set(session: &mut Session, set: &Set) -> Result<QueryResult, CoordError> {
    match set {
        Set::SingleAssignment {
            variable, values, ..
        } => {
            let name = function_name(variable);
            let value = setting_value(values);
            let value = if value.eq_ignore_ascii_case("default") {
                value
            } else {
                checked(&name, value)?
            };
            if value.eq_ignore_ascii_case("default") {
                if let Some(d) = crate::session::default_settings().get(&name) {
                    session.settings.insert(name, d.clone());
                }
            } else {
                session.settings.insert(name, value);
            }
        }
        Set::SetTimeZone { value, .. } => {
            session.settings.insert(
                "timezone".into(),
                setting_value(std::slice::from_ref(value)),
            );
        }
        Set::SetNames { charset_name, .. } => {
            session
                .settings
                .insert("client_encoding".into(), charset_name.to_string());
        }
        Set::SetTransaction { modes, .. } => crate::engine::block::isolation_modes(modes)?,
        // Another role for the session is not supported yet: refused, never answered `SET`
        // while nothing changes. Naming the session's own role (or none) changes nothing.
        Set::SetRole { role_name, .. } => {
            if let Some(r) = role_name {
                same_role(session, &crate::sql::names::ident(r), "SET ROLE")?;
            }
        }
        Set::SetSessionAuthorization(p) => {
            if let sqlparser::ast::SetSessionAuthorizationParamKind::User(u) = &p.kind {
                same_role(
                    session,
                    &crate::sql::names::ident(u),
                    "SET SESSION AUTHORIZATION",
                )?;
            }
        }
        other => {
            return Err(CoordError::unsupported(format!(
                "{other} is not supported yet"
            )))
        }
    }
    Ok(QueryResult {
        columns: vec![],
        rows: vec![],
        returns_rows: false,
        completion: Completion::Command {
            name: "SET".into(),
            rows: None,
        },
    })
}

/// `0A000` unless `role` is the session's own.
fn same_role(session: &Session, role: &str, what: &str) -> Result<(), CoordError> {
    if role == session.user {
        return Ok(());
    }
    Err(CoordError::unsupported(format!(
        "{what} to another role is not supported yet: this session stays \"{}\"",
        session.user
    )))
}

/// `value` for the setting `name` as stored, or PostgreSQL's `22023` when the setting does not
/// take it. Settings Tessera does not interpret are stored as given.
fn checked(name: &str, value: String) -> Result<String, CoordError> {
    let invalid = || CoordError::invalid_setting(name, &value);
    match name {
        "statement_timeout" | "lock_timeout" | "idle_in_transaction_session_timeout" => {
            let ms = crate::session::timeout_ms(&value).ok_or_else(invalid)?;
            if !(0.0..=i32::MAX as f64).contains(&ms.round()) {
                return Err(CoordError::InvalidParameter(format!(
                    "{} ms is outside the valid range for parameter \"{name}\" (0 .. {})",
                    ms.round(),
                    i32::MAX
                )));
            }
            Ok(value)
        }
        "tessera.cache" => match boolean(&value) {
            Some(true) => Ok("on".into()),
            Some(false) => Ok("off".into()),
            None => Err(CoordError::InvalidParameter(format!(
                "parameter \"{name}\" requires a Boolean value"
            ))),
        },
        "tessera.statement_memory" => crate::exec::budget::parse_memory(&value)
            .map(|_| value.clone())
            .ok_or_else(invalid),
        "default_transaction_isolation" | "transaction_isolation" => {
            crate::engine::block::isolation(&value).map(str::to_string)
        }
        "read_consistency" => ["leader", "follower"]
            .into_iter()
            .find(|v| value.eq_ignore_ascii_case(v))
            .map(str::to_string)
            .ok_or_else(invalid),
        "extra_float_digits" => match value.trim().parse::<i32>() {
            Ok(n) if (-15..=3).contains(&n) => Ok(n.to_string()),
            Ok(n) => Err(CoordError::InvalidParameter(format!(
                "{n} is outside the valid range for parameter \"{name}\" (-15 .. 3)"
            ))),
            Err(_) => Err(CoordError::InvalidParameter(format!(
                "invalid value for parameter \"{name}\": \"{value}\""
            ))),
        },
        _ => Ok(value),
    }
}

/// A Boolean as PostgreSQL's settings read one: `on`, `off`, `true`, `false`, `yes`, `no`,
/// `1`, `0`, or an unambiguous prefix of the words.
fn boolean(v: &str) -> Option<bool> {
    let v = v.trim().to_ascii_lowercase();
    match v.as_str() {
        "1" | "on" => return Some(true),
        "0" | "of" | "off" => return Some(false),
        "" | "o" => return None,
        _ => {}
    }
    let starts = |word: &str| word.starts_with(v.as_str());
    if starts("true") || starts("yes") {
        Some(true)
    } else if starts("false") || starts("no") {
        Some(false)
    } else {
        None
    }
}

fn cols(names: &[(&str, PgType)]) -> Vec<OutputColumn> {
    names
        .iter()
        .map(|(n, t)| OutputColumn {
            name: n.to_string(),
            ty: *t,
        })
        .collect()
}

/// The setting `SHOW` names: dotted, with SQL's spelled-out forms mapped to their settings
/// (`SHOW TRANSACTION ISOLATION LEVEL` is `transaction_isolation`, `SHOW TIME ZONE` is `timezone`).
fn setting_name(variable: &[Ident]) -> String {
    let name = dotted(variable);
    match name.as_str() {
        "transaction.isolation.level" => "transaction_isolation".into(),
        "time.zone" => "timezone".into(),
        _ => name,
    }
}

/// Columns `SHOW <variable>` returns.
pub fn show_columns(variable: &[Ident]) -> Vec<OutputColumn> {
    match setting_name(variable).as_str() {
        "all" => cols(&[
            ("name", PgType::Text),
            ("setting", PgType::Text),
            ("description", PgType::Text),
        ]),
        "tessera.nodes" => cols(&[
            ("id", PgType::Int8),
            ("name", PgType::Text),
            ("address", PgType::Text),
            ("status", PgType::Text),
            ("liveness", PgType::Text),
            ("pid", PgType::Int8),
            ("shards", PgType::Int8),
            ("first_copies", PgType::Int8),
        ]),
        "tessera.tables" => cols(&[
            ("name", PgType::Text),
            ("distribution", PgType::Text),
            ("column", PgType::Text),
            ("shards", PgType::Int8),
            ("group", PgType::Int8),
            ("columns", PgType::Text),
            ("storage", PgType::Text),
            ("indexes", PgType::Text),
            ("column_groups", PgType::Text),
        ]),
        "tessera.shards" => cols(&[
            ("shard", PgType::Int8),
            ("group", PgType::Int8),
            ("kind", PgType::Text),
            ("range", PgType::Text),
            ("node", PgType::Text),
            ("tables", PgType::Text),
            ("rows", PgType::Int8),
            ("bytes", PgType::Int8),
        ]),
        "tessera.cache_stats" => cols(&[("metric", PgType::Text), ("value", PgType::Int8)]),
        "tessera.replica_check" => cols(&[
            ("shard", PgType::Int8),
            ("node", PgType::Text),
            ("rows", PgType::Int8),
            ("checksum", PgType::Text),
            ("agrees", PgType::Bool),
        ]),
        "tessera.raft" => cols(&[
            ("group", PgType::Text),
            ("member", PgType::Int8),
            ("address", PgType::Text),
            ("state", PgType::Text),
            ("leader", PgType::Int8),
            ("term", PgType::Int8),
            ("last_log", PgType::Int8),
            ("applied", PgType::Int8),
            ("lag", PgType::Int8),
        ]),
        name => cols(&[(name, PgType::Text)]),
    }
}

fn result(variable: &[Ident], rows: Vec<Vec<Value>>) -> QueryResult {
    QueryResult {
        columns: show_columns(variable),
        rows,
        returns_rows: true,
        completion: Completion::Command {
            name: "SHOW".into(),
            rows: None,
        },
    }
}

/// `SHOW name`, `SHOW ALL`, and the `tessera.*` cluster views.
pub async fn show(
    engine: &Engine,
    session: &Session,
    variable: &[Ident],
) -> Result<QueryResult, CoordError> {
    let name = setting_name(variable);
    let text = |s: &str| Value::Text(s.to_string());
    let rows = match name.as_str() {
        "all" => session
            .settings
            .iter()
            .map(|(k, v)| vec![text(k), text(v), text("")])
            .collect(),
        "tessera.nodes" => {
            let catalog = engine.catalog.snapshot();
            let mut rows = Vec::new();
            for n in catalog.nodes.values() {
                let shards = catalog
                    .groups
                    .values()
                    .flat_map(|g| &g.shards)
                    .filter(|s| s.placements.contains(&n.id))
                    .count();
                // Shards whose first copy (the one reads prefer) is here.
                let first_copies = catalog
                    .groups
                    .values()
                    .flat_map(|g| &g.shards)
                    .filter(|s| s.placements.first() == Some(&n.id))
                    .count();
                let (status, pid) = match engine.cluster.stats(n).await {
                    Ok(s) => ("up", Value::Integer(i64::from(s.pid))),
                    Err(_) => ("down", Value::Null),
                };
                rows.push(vec![
                    Value::Integer(n.id as i64),
                    text(&n.name),
                    text(&n.addr),
                    text(status),
                    text(n.liveness.as_str()),
                    pid,
                    Value::Integer(shards as i64),
                    Value::Integer(first_copies as i64),
                ]);
            }
            rows
        }
        "tessera.tables" => {
            let catalog = engine.catalog.snapshot();
            catalog
                .tables
                .values()
                .map(|t| {
                    let (dist, col) = match &t.distribution {
                        Distribution::Hash { column } => ("hash", Value::Text(column.clone())),
                        Distribution::Range { column } => ("range", Value::Text(column.clone())),
                        Distribution::Reference => ("reference", Value::Null),
                        Distribution::Single => ("single", Value::Null),
                    };
                    let shards = catalog
                        .groups
                        .get(&t.group)
                        .map(|g| g.shards.len())
                        .unwrap_or(0);
                    let columns: Vec<String> = t
                        .columns
                        .iter()
                        .map(|c| format!("{} {}", c.name, c.ty.name()))
                        .collect();
                    vec![
                        text(&t.name),
                        text(dist),
                        col,
                        Value::Integer(shards as i64),
                        Value::Integer(t.group as i64),
                        text(&columns.join(", ")),
                        text(t.storage.as_str()),
                        text(
                            &t.indexes
                                .iter()
                                .map(|i| format!("{} ({})", i.name, i.columns.join(", ")))
                                .collect::<Vec<_>>()
                                .join("; "),
                        ),
                        text(
                            &t.column_groups
                                .iter()
                                .map(|g| {
                                    format!("{}({}) in {}", g.name, g.columns.join(", "), g.table)
                                })
                                .collect::<Vec<_>>()
                                .join(" | "),
                        ),
                    ]
                })
                .collect()
        }
        "tessera.shards" => shard_rows(engine).await?,
        "tessera.replica_check" => replica_check(engine).await?,
        "tessera.raft" => raft_rows(engine).await,
        "tessera.cache_stats" => engine
            .cache
            .stats()
            .into_iter()
            .map(|(k, v)| vec![text(k), Value::Integer(v as i64)])
            .collect(),
        other => match session.settings.get(other) {
            Some(v) => vec![vec![text(v)]],
            None => {
                return Err(CoordError::Storage {
                    sqlstate: "42704".into(),
                    message: format!("unrecognized configuration parameter \"{other}\""),
                })
            }
        },
    };
    Ok(result(variable, rows))
}

/// `SHOW tessera.raft`: every member of the metadata group, as it reports itself; the lag is
/// the leader's last log index minus what the leader has replicated to the member.
async fn raft_rows(engine: &Engine) -> Vec<Vec<Value>> {
    let text = |s: &str| Value::Text(s.to_string());
    let Some(meta) = &engine.meta else {
        return vec![vec![
            text("metadata"),
            Value::Integer(0),
            text(""),
            text("single coordinator: catalog file, no Raft group"),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
        ]];
    };
    let statuses = meta.statuses().await;
    let leader = statuses
        .iter()
        .flatten()
        .find(|s| s.state == "Leader")
        .cloned();
    let int = |v: u64| Value::Integer(v as i64);
    statuses
        .into_iter()
        .zip(meta.members())
        .map(|(s, (id, addr))| match s {
            Ok(s) => {
                let lag = leader.as_ref().and_then(|l| {
                    l.replicated
                        .get(&id)
                        .map(|r| int(l.last_log.saturating_sub(*r)))
                });
                vec![
                    text("metadata"),
                    int(id),
                    text(&addr),
                    text(&s.state),
                    s.leader.map_or(Value::Null, int),
                    int(s.term),
                    int(s.last_log),
                    int(s.applied),
                    lag.unwrap_or(Value::Null),
                ]
            }
            Err(e) => vec![
                text("metadata"),
                int(id),
                text(&addr),
                text(&format!("unreachable: {e}")),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
            ],
        })
        .collect()
}

/// `SHOW tessera.replica_check` (`tessera admin shards --verify`): every copy of every shard
/// that has several, read in key order and hashed; `agrees` is whether it matches the first copy.
async fn replica_check(engine: &Engine) -> Result<Vec<Vec<Value>>, CoordError> {
    let catalog = engine.catalog.snapshot();
    let mut out = Vec::new();
    for g in catalog.groups.values() {
        if g.kind == GroupKind::Reference {
            continue;
        }
        let tables: Vec<&crate::catalog::Table> = catalog
            .tables
            .values()
            .filter(|t| t.group == g.id)
            .collect();
        for s in g.shards.iter().filter(|s| s.placements.len() > 1) {
            let mut first: Option<String> = None;
            for node_id in &s.placements {
                let node = catalog.node(*node_id)?;
                let (rows, sum) =
                    match crate::replication::digest(&engine.replication, node, s.id, &tables, 0)
                        .await
                    {
                        Ok(d) => d,
                        Err(e) => (0, format!("unreadable: {e}")),
                    };
                let agrees = match &first {
                    None => {
                        first = Some(sum.clone());
                        true
                    }
                    Some(f) => *f == sum,
                };
                out.push(vec![
                    Value::Integer(s.id as i64),
                    Value::Text(node.name.clone()),
                    Value::Integer(rows),
                    Value::Text(sum),
                    Value::Integer(i64::from(agrees)),
                ]);
            }
        }
    }
    Ok(out)
}

async fn shard_rows(engine: &Engine) -> Result<Vec<Vec<Value>>, CoordError> {
    let catalog = engine.catalog.snapshot();
    let mut stats = std::collections::HashMap::new();
    for n in catalog.nodes.values() {
        if let Ok(s) = engine.cluster.stats(n).await {
            for sh in s.shards {
                stats.insert((n.id, sh.shard_id), sh);
            }
        }
    }
    let mut rows = Vec::new();
    for g in catalog.groups.values() {
        let tables: Vec<String> = catalog
            .tables
            .values()
            // A table with column groups has no rows of its own: its groups' tables do.
            .filter(|t| t.group == g.id && t.column_groups.is_empty())
            .map(|t| t.name.clone())
            .collect();
        for s in &g.shards {
            let node = s.placements.first().copied().unwrap_or(0);
            // Every copy, the first (the one reads prefer) first.
            let node_name = s
                .placements
                .iter()
                .filter_map(|p| catalog.nodes.get(p).map(|n| n.name.clone()))
                .chain(s.filling.iter().filter_map(|p| {
                    catalog
                        .nodes
                        .get(p)
                        .map(|n| format!("{} (filling)", n.name))
                }))
                .collect::<Vec<_>>()
                .join(",");
            let range = match g.kind {
                GroupKind::Hash => {
                    let (lo, hi) =
                        tessera_shared::hash::token_range(s.index, g.shards.len() as u32);
                    format!("hash [{lo}, {hi}]")
                }
                GroupKind::Range => format!(
                    "[{}, {})",
                    s.lower
                        .as_ref()
                        .map(|b| format!("{b:?}"))
                        .unwrap_or_else(|| "-inf".into()),
                    s.upper
                        .as_ref()
                        .map(|b| format!("{b:?}"))
                        .unwrap_or_else(|| "+inf".into())
                ),
                GroupKind::Reference => "full copy".into(),
            };
            let st = stats.get(&(node, s.id));
            let count: Option<u64> =
                st.map(|st| tables.iter().filter_map(|t| st.rows.get(t)).sum());
            rows.push(vec![
                Value::Integer(s.id as i64),
                Value::Integer(g.id as i64),
                Value::Text(format!("{:?}", g.kind).to_lowercase()),
                Value::Text(range),
                Value::Text(node_name),
                Value::Text(tables.join(", ")),
                count
                    .map(|c| Value::Integer(c as i64))
                    .unwrap_or(Value::Null),
                st.map(|st| Value::Integer(st.bytes as i64))
                    .unwrap_or(Value::Null),
            ]);
        }
    }
    Ok(rows)
}
