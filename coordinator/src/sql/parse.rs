//! Parsing client SQL, accepting Postgres' `PARTITION BY ... WITH (...)` order too.

use crate::error::CoordError;
use crate::sql::depth;
use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, Tokenizer};

/// Parses one or more statements; a statement nested deeper than Tessera evaluates is `54001`
/// (see [`depth`]), refused before its tree is built where the tokens tell.
pub fn parse(sql: &str) -> Result<Vec<Statement>, CoordError> {
    let stmts = parse_unchecked(sql)?;
    for s in &stmts {
        depth::check_tree(s)?;
    }
    Ok(stmts)
}

/// sqlparser with Tessera's recursion limit, after the token check of operator chains.
fn parse_sql(sql: &str) -> Result<Vec<Statement>, ParserError> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql).tokenize_with_location()?;
    if depth::check_tokens(tokens.iter().map(|t| &t.token)).is_err() {
        return Err(ParserError::RecursionLimitExceeded);
    }
    Parser::new(&dialect)
        .with_recursion_limit(depth::MAX_RECURSION)
        .with_tokens_with_locations(tokens)
        .parse_statements()
}

fn parse_unchecked(sql: &str) -> Result<Vec<Statement>, CoordError> {
    if names_user_statement(sql) {
        if let Some(stmts) = parse_user_statements(sql) {
            return Ok(stmts);
        }
    }
    match parse_sql(sql) {
        Ok(s) => Ok(s),
        Err(ParserError::RecursionLimitExceeded) => Err(depth::too_deep()),
        Err(first) => {
            let syntax = || {
                CoordError::Syntax(
                    first
                        .to_string()
                        .trim_start_matches("sql parser error: ")
                        .to_string(),
                )
            };
            // Rewrites apply statement by statement: split at top-level semicolons.
            let ts = tokens(sql).ok_or_else(syntax)?;
            let segments: Vec<&[Token]> = ts
                .split(|t| matches!(t, Token::SemiColon | Token::EOF))
                .filter(|s| !s.is_empty())
                .collect();
            if segments.len() <= 1 {
                return parse_rewritten(sql).ok_or_else(syntax);
            }
            let mut out = Vec::new();
            for seg in segments {
                let text = join(seg);
                match parse_sql(&text) {
                    Ok(s) => out.extend(s),
                    Err(_) => out.extend(parse_rewritten(&text).ok_or_else(syntax)?),
                }
            }
            Ok(out)
        }
    }
}

/// Whether `sql` may hold `CREATE|ALTER|DROP USER` (a cheap word scan, no allocation).
fn names_user_statement(sql: &str) -> bool {
    let mut prev = "";
    for w in sql.split(|c: char| c.is_whitespace() || c == ';') {
        if w.is_empty() {
            continue;
        }
        if w.eq_ignore_ascii_case("user")
            && ["create", "alter", "drop"]
                .iter()
                .any(|v| prev.eq_ignore_ascii_case(v))
        {
            return true;
        }
        prev = w;
    }
    false
}

/// `CREATE USER` (a role with `LOGIN`), `ALTER USER` and `DROP USER`, which sqlparser reads
/// as other dialects' statements: rewritten to their `ROLE` forms, statement by statement.
/// `None` when the batch has none of them.
fn parse_user_statements(sql: &str) -> Option<Vec<Statement>> {
    let ts = tokens(sql)?;
    let mut any = false;
    let mut out = Vec::new();
    for seg in ts
        .split(|t| matches!(t, Token::SemiColon | Token::EOF))
        .filter(|s| !s.is_empty())
    {
        let mut seg = seg.to_vec();
        let verb = seg.first().and_then(|t| match t {
            Token::Word(w) => Some(w.keyword),
            _ => None,
        });
        let is_user = matches!(verb, Some(Keyword::CREATE | Keyword::ALTER | Keyword::DROP))
            && seg.get(1).is_some_and(|t| is_kw(t, Keyword::USER));
        if is_user {
            any = true;
            seg[1] = Token::make_keyword("ROLE");
            if verb == Some(Keyword::CREATE)
                && !seg
                    .iter()
                    .any(|t| is_kw(t, Keyword::NOLOGIN) || is_kw(t, Keyword::LOGIN))
            {
                if seg.len() == 3 {
                    seg.push(Token::make_keyword("WITH"));
                }
                seg.push(Token::make_keyword("LOGIN"));
            }
        }
        let text = join(&seg);
        out.extend(parse_sql(&text).ok().or_else(|| parse_rewritten(&text))?);
    }
    any.then_some(out)
}

/// One statement in a Postgres spelling sqlparser does not take, rewritten at the token
/// level: `PARTITION BY ... WITH (...)`, COPY's `FREEZE ON` / `HEADER OFF`, `VACUUM ANALYZE t`.
fn parse_rewritten(sql: &str) -> Option<Vec<Statement>> {
    [
        move_with_before_partition(sql),
        copy_booleans(sql),
        bare_vacuum(sql),
    ]
    .into_iter()
    .flatten()
    .find_map(|rewritten| parse_sql(&rewritten).ok())
}

fn is_kw(t: &Token, k: Keyword) -> bool {
    matches!(t, Token::Word(w) if w.keyword == k)
}

fn tokens(sql: &str) -> Option<Vec<Token>> {
    Some(
        Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize()
            .ok()?
            .into_iter()
            .filter(|t| !matches!(t, Token::Whitespace(_)))
            .collect(),
    )
}

fn join(ts: &[Token]) -> String {
    ts.iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `COPY ... WITH (FREEZE ON, HEADER OFF)` → `TRUE` / `FALSE`.
fn copy_booleans(sql: &str) -> Option<String> {
    let mut ts = tokens(sql)?;
    if !is_kw(ts.first()?, Keyword::COPY) {
        return None;
    }
    for i in 1..ts.len() {
        let after_option = matches!(&ts[i - 1], Token::Word(w) if matches!(w.keyword, Keyword::FREEZE | Keyword::HEADER));
        if let (true, Token::Word(w)) = (after_option, &ts[i]) {
            match w.keyword {
                Keyword::ON => ts[i] = Token::make_keyword("TRUE"),
                Keyword::OFF => ts[i] = Token::make_keyword("FALSE"),
                _ => {}
            }
        }
    }
    Some(join(&ts))
}

/// `VACUUM [ANALYZE] [t, ...]` → `VACUUM` (a no-op here: SQLite shards need no vacuum to stay correct).
fn bare_vacuum(sql: &str) -> Option<String> {
    let ts = tokens(sql)?;
    is_kw(ts.first()?, Keyword::VACUUM).then(|| "VACUUM".to_string())
}

fn move_with_before_partition(sql: &str) -> Option<String> {
    let tokens = tokens(sql)?;
    let partition = tokens.iter().position(|t| is_kw(t, Keyword::PARTITION))?;
    let with = (partition..tokens.len()).find(|&i| {
        is_kw(&tokens[i], Keyword::WITH) && matches!(tokens.get(i + 1), Some(Token::LParen))
    })?;
    let mut depth = 0usize;
    let mut end = None;
    for (i, t) in tokens.iter().enumerate().skip(with + 1) {
        match t {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    end = Some(i);
                    break;
                }
            }
            _ => {}
        }
    }
    let end = end?;
    let text = join;
    Some(format!(
        "{} {} {} {}",
        text(&tokens[..partition]),
        text(&tokens[with..=end]),
        text(&tokens[partition..with]),
        text(&tokens[end + 1..])
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_orders_parse() {
        let a = parse("CREATE TABLE t (id int) WITH (shards = 4) PARTITION BY HASH (id)")
            .expect("sqlparser order");
        let b = parse("CREATE TABLE t (id int) PARTITION BY HASH (id) WITH (shards = 4);")
            .expect("postgres order");
        assert_eq!(a[0].to_string(), b[0].to_string());
        assert_eq!(parse("SELEC 1").expect_err("bad").sqlstate(), "42601");
        assert!(matches!(
            parse("copy pgbench_accounts from stdin with (freeze on)").expect("copy")[0],
            Statement::Copy { .. }
        ));
        assert!(matches!(
            parse("vacuum analyze pgbench_branches").expect("vacuum")[0],
            Statement::Vacuum(_)
        ));
    }

    #[test]
    fn user_statements_are_role_statements() {
        let s = parse("CREATE USER alice WITH PASSWORD 'x'; create user bob; ALTER USER alice PASSWORD 'y'; DROP USER IF EXISTS bob")
            .expect("parse");
        assert_eq!(s.len(), 4);
        let Statement::CreateRole(cr) = &s[0] else {
            panic!("{}", s[0])
        };
        assert_eq!(cr.login, Some(true));
        assert!(cr.password.is_some());
        assert!(matches!(&s[1], Statement::CreateRole(c) if c.login == Some(true)));
        assert!(matches!(s[2], Statement::AlterRole { .. }));
        assert!(s[3].to_string().starts_with("DROP ROLE IF EXISTS"));
        // Other statements naming a "user" are untouched.
        assert_eq!(parse("SELECT user_id FROM users").expect("select").len(), 1);
    }

    #[test]
    fn rewrites_apply_to_each_statement_of_a_batch() {
        let batch = parse(
            "CREATE TABLE a (id int) PARTITION BY HASH (id);
             CREATE TABLE g (k int) WITH (distribution = 'reference');
             CREATE TABLE r (ts int) PARTITION BY RANGE (ts) WITH (bounds = '100');
             VACUUM ANALYZE a; SELECT ';' AS semi",
        )
        .expect("batch");
        assert_eq!(batch.len(), 5);
        assert!(batch[2]
            .to_string()
            .contains("WITH (bounds = '100') PARTITION BY"));
        assert!(batch[4].to_string().contains("';'"));
        assert_eq!(
            parse("SELECT 1; SELEC 2").expect_err("bad").sqlstate(),
            "42601"
        );
    }
}
