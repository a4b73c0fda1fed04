//! Parsing client SQL, accepting Postgres' `PARTITION BY ... WITH (...)` order too.

use crate::error::CoordError;
use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

/// Parses one or more statements.
pub fn parse(sql: &str) -> Result<Vec<Statement>, CoordError> {
    match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(s) => Ok(s),
        Err(first) => {
            // sqlparser takes `WITH (...) PARTITION BY`, Postgres writes `PARTITION BY ... WITH (...)`.
            if let Some(reordered) = move_with_before_partition(sql) {
                if let Ok(s) = Parser::parse_sql(&PostgreSqlDialect {}, &reordered) {
                    return Ok(s);
                }
            }
            Err(CoordError::Syntax(
                first
                    .to_string()
                    .trim_start_matches("sql parser error: ")
                    .to_string(),
            ))
        }
    }
}

fn is_kw(t: &Token, k: Keyword) -> bool {
    matches!(t, Token::Word(w) if w.keyword == k)
}

fn move_with_before_partition(sql: &str) -> Option<String> {
    let tokens: Vec<Token> = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .ok()?
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
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
    let text = |ts: &[Token]| {
        ts.iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
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
    }
}
