//! The cache key: the normalised statement, its bound parameters, and every session value
//! that can change its result.

use crate::session::Session;
use sqlparser::ast::Statement;
use std::fmt::Write;
use tessera_shared::Value;

/// Session settings that change what a query returns (the rest only change how the
/// protocol layer encodes values, which happens after the cache).
pub const RESULT_SETTINGS: &[&str] = &["search_path", "timezone", "datestyle", "intervalstyle"];

/// The key of `stmt` run with `params` in `session`. The statement is normalised by
/// unparsing its AST, so whitespace, comments and keyword case do not matter.
pub fn build(session: &Session, stmt: &Statement, params: &[Value]) -> String {
    let mut k = String::with_capacity(128);
    let _ = write!(k, "{}\u{0}{}\u{0}", session.user, session.database);
    for name in RESULT_SETTINGS {
        let v = session
            .settings
            .get(*name)
            .map(String::as_str)
            .unwrap_or("");
        let _ = write!(k, "{v}\u{0}");
    }
    let _ = write!(k, "{stmt}\u{0}");
    for p in params {
        // Debug output is unambiguous: variant names, quoted and escaped text.
        let _ = write!(k, "{p:?}\u{1}");
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Statement {
        crate::sql::parse::parse(sql).expect("parse").remove(0)
    }

    #[test]
    fn keys_normalise_text_and_separate_what_changes_results() {
        let s = Session::new("alice", "db");
        let a = build(
            &s,
            &parse("select  *  FROM t where a = $1"),
            &[Value::Integer(1)],
        );
        let b = build(
            &s,
            &parse("SELECT * FROM t WHERE a = $1 -- c"),
            &[Value::Integer(1)],
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            build(
                &s,
                &parse("SELECT * FROM t WHERE a = $1"),
                &[Value::Integer(2)]
            )
        );
        assert_ne!(
            a,
            build(
                &s,
                &parse("SELECT * FROM t WHERE a = $1"),
                &[Value::Text("1".into())]
            )
        );
        let mut other = Session::new("bob", "db");
        assert_ne!(
            a,
            build(
                &other,
                &parse("SELECT * FROM t WHERE a = $1"),
                &[Value::Integer(1)]
            )
        );
        other.user = "alice".into();
        other
            .settings
            .insert("timezone".into(), "Europe/Paris".into());
        assert_ne!(
            a,
            build(
                &other,
                &parse("SELECT * FROM t WHERE a = $1"),
                &[Value::Integer(1)]
            )
        );
        other.settings = s.settings.clone();
        other.settings.insert("application_name".into(), "x".into());
        assert_eq!(
            a,
            build(
                &other,
                &parse("SELECT * FROM t WHERE a = $1"),
                &[Value::Integer(1)]
            )
        );
    }
}
