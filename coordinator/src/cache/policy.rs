//! Which statements the result cache may serve, and the tables each reads.

use crate::catalog::Catalog;
use crate::sql::names::{function_name, table_name};
use sqlparser::ast::{visit_expressions, visit_relations, Expr, Statement, Value as AstValue};
use std::ops::ControlFlow;

/// Functions whose result changes between calls with the same arguments, or depends on
/// state outside the cache key.
const VOLATILE: &[&str] = &[
    "now",
    "random",
    "random_normal",
    "setseed",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "timeofday",
    "current_timestamp",
    "current_time",
    "current_date",
    "localtime",
    "localtimestamp",
    "gen_random_uuid",
    "uuid_generate_v1",
    "uuid_generate_v4",
    "nextval",
    "currval",
    "lastval",
    "setval",
    "txid_current",
    "pg_current_xact_id",
    "pg_backend_pid",
    "pg_sleep",
    "current_setting",
    "inet_client_addr",
    "inet_client_port",
    "pg_postmaster_start_time",
];

/// Date/time input strings Postgres evaluates at run time (`'now'::timestamp`).
const VOLATILE_LITERALS: &[&str] = &["now", "today", "tomorrow", "yesterday"];

/// Whether a statement may be cached.
#[derive(Debug, PartialEq)]
pub enum Cacheability {
    /// It may: these catalog tables are what it reads.
    Cacheable(Vec<String>),
    /// It may not, and why (EXPLAIN shows it).
    Not(String),
}

/// Decides whether `stmt` may be cached: a read-only query, without row locks, naming at
/// least one table, all of them with caching on, and without volatile functions.
pub fn analyse(stmt: &Statement, catalog: &Catalog) -> Cacheability {
    let Statement::Query(q) = stmt else {
        return Cacheability::Not("not a query".into());
    };
    if !q.locks.is_empty() {
        return Cacheability::Not("it locks rows (FOR UPDATE/SHARE)".into());
    }
    let mut tables: Vec<String> = Vec::new();
    let mut opted_out = None;
    let _ = visit_relations(stmt, |r| {
        if let Ok(name) = table_name(r) {
            if let Some(t) = catalog.tables.get(&name) {
                if !t.cache {
                    opted_out = Some(name.clone());
                }
                if !tables.contains(&name) {
                    tables.push(name);
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    if let Some(t) = opted_out {
        return Cacheability::Not(format!("table {t} has cache = off"));
    }
    let volatile = visit_expressions(stmt, |e| {
        match e {
            Expr::Function(f) => {
                let full = function_name(&f.name);
                let name = full.rsplit('.').next().unwrap_or_default();
                if VOLATILE.contains(&name) || name.starts_with("tessera_") {
                    return ControlFlow::Break(format!("{name}() is not deterministic"));
                }
            }
            Expr::Value(v) => {
                if let AstValue::SingleQuotedString(s) = &v.value {
                    let s = s.trim().to_ascii_lowercase();
                    if VOLATILE_LITERALS.contains(&s.as_str()) {
                        return ControlFlow::Break(format!("'{s}' depends on the current time"));
                    }
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    });
    if let ControlFlow::Break(why) = volatile {
        return Cacheability::Not(why);
    }
    if tables.is_empty() {
        return Cacheability::Not("it reads no table".into());
    }
    Cacheability::Cacheable(tables)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::testing::catalog;

    fn check(sql: &str) -> Cacheability {
        let stmt = crate::sql::parse::parse(sql).expect("parse").remove(0);
        analyse(&stmt, &catalog())
    }

    #[test]
    fn reads_are_cacheable_with_their_tables() {
        assert_eq!(
            check("SELECT u.name, sum(o.amount) FROM users u JOIN orders o ON o.user_id = u.id GROUP BY 1"),
            Cacheability::Cacheable(vec!["users".into(), "orders".into()])
        );
        assert_eq!(
            check("WITH x AS (SELECT * FROM countries) SELECT * FROM x"),
            Cacheability::Cacheable(vec!["countries".into()])
        );
        assert_eq!(
            check("SELECT * FROM users WHERE id IN (SELECT user_id FROM orders)"),
            Cacheability::Cacheable(vec!["users".into(), "orders".into()])
        );
    }

    #[test]
    fn writes_locks_volatile_functions_and_tableless_queries_are_not() {
        for sql in [
            "INSERT INTO users (id) VALUES (1)",
            "UPDATE users SET age = 1",
            "SELECT * FROM users FOR UPDATE",
            "SELECT now(), * FROM users",
            "SELECT * FROM users WHERE age > random()",
            "SELECT * FROM events WHERE ts < CURRENT_TIMESTAMP",
            "SELECT 'now'::timestamp, * FROM users",
            "SELECT gen_random_uuid() FROM users",
            "SELECT 1",
            "SELECT * FROM nosuch",
        ] {
            assert!(
                matches!(check(sql), Cacheability::Not(_)),
                "{sql} should not be cacheable"
            );
        }
    }

    #[test]
    fn a_table_can_opt_out() {
        let mut c = catalog();
        c.apply(crate::catalog::CatalogCommand::SetTableOptions {
            table: "orders".into(),
            cache: false,
        })
        .expect("set");
        let stmt = crate::sql::parse::parse("SELECT * FROM users JOIN orders ON id = user_id")
            .expect("parse")
            .remove(0);
        assert_eq!(
            analyse(&stmt, &c),
            Cacheability::Not("table orders has cache = off".into())
        );
    }
}
