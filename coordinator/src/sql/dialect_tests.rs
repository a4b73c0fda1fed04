//! The dialect rewrite's unit tests: PostgreSQL forms in, the SQL the shards run out.

use super::*;

fn sqlite(sql: &str) -> String {
    let mut s = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parse");
    let at = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    let ctx = RewriteCtx::at(at, "u", "d");
    rewrite(&mut s[0], &ctx).expect("rewrite");
    render(&s[0])
}

#[test]
fn rewrites() {
    assert_eq!(
        sqlite("SELECT a::bigint FROM t WHERE b = $1"),
        "SELECT tessera_int(a, 64) FROM t WHERE b = ?1"
    );
    assert_eq!(
        sqlite("SELECT a / b, a % 2, 2 ^ 3 FROM t"),
        "SELECT a / tessera_divisor(b), a % tessera_divisor(2), power(2, 3) FROM t"
    );
    assert_eq!(
        sqlite("SELECT greatest(a, NULL), least(1, 2)"),
        "SELECT tessera_greatest(a, NULL), tessera_least(1, 2)"
    );
    assert_eq!(sqlite("SELECT 't'::boolean"), "SELECT 1");
    assert_eq!(
        sqlite("SELECT * FROM t WHERE a ILIKE 'x%'"),
        "SELECT * FROM t WHERE lower(a) LIKE lower('x%') ESCAPE '\\'"
    );
    assert_eq!(
        sqlite("SELECT a LIKE 'x\\_%', a ~* 'b' FROM t"),
        "SELECT a LIKE 'x\\_%' ESCAPE '\\', tessera_regex(a, 'b', 1) FROM t"
    );
    assert_eq!(
        sqlite("SELECT now()"),
        "SELECT '2026-01-02 03:04:05.000000+00'"
    );
    assert_eq!(
        sqlite("SELECT a FROM t ORDER BY a, b DESC"),
        "SELECT a FROM t ORDER BY a NULLS LAST, b DESC NULLS FIRST"
    );
    assert_eq!(
        sqlite("SELECT substring(a from 2 for 3) FROM t"),
        "SELECT SUBSTR(a, 2, 3) FROM t"
    );
    assert_eq!(sqlite("SELECT current_user"), "SELECT 'u'");
}

#[test]
fn unknown_cast_type_is_42704() {
    let mut s =
        Parser::parse_sql(&PostgreSqlDialect {}, "SELECT a::geometry FROM t").expect("parse");
    let ctx = RewriteCtx::new("u", "d");
    assert_eq!(
        rewrite(&mut s[0], &ctx).expect_err("type").sqlstate(),
        "42704"
    );
}
