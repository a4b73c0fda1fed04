//! How deep a statement may nest: checked on the tokens before parsing and on the syntax tree
//! right after, so no later pass (rewrites, planning, inference, dropping the tree) recurses
//! deeper than the threads that run them can hold.
//!
//! sqlparser builds chains of infix operators (`1+1+…`, `a OR b OR …`, `x::text::int…`,
//! `UNION ALL` branches) in a loop, so its recursion limit does not bound them: a 64 MiB
//! statement could make a tree millions of levels deep, and merely dropping it would overflow
//! any stack. [`check_tokens`] bounds those chains from the tokens, conservatively; the parser's
//! recursion limit bounds everything it builds by recursion; [`check_tree`] then measures the
//! tree exactly. Every thread that plans or runs SQL has a stack of [`STACK_BYTES`].

use crate::error::CoordError;
use sqlparser::ast::{Expr, Query, SetExpr, Statement, Visit, Visitor};
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::Token;
use std::ops::ControlFlow;

/// The deepest syntax tree accepted (expressions and queries nested in each other). PostgreSQL
/// 15 with its default `max_stack_depth` answers a 5,000-term `OR` chain and 2,000 chained
/// casts (4,000 levels) and refuses a 5,000-term `+` chain; this accepts all three.
pub const MAX_DEPTH: usize = 10_000;

/// The parser's own recursion limit (parentheses, subqueries, prefix operators). sqlparser
/// grows its stack on the heap where it recurses, so this only needs to let [`check_tree`]
/// decide.
pub const MAX_RECURSION: usize = MAX_DEPTH;

/// A bound on infix operators chained at one nesting level (counted without regard to
/// precedence, so it over-estimates depth: `a = 1 OR a = 2 …` counts two per term).
pub const MAX_CHAINED: usize = 2 * MAX_DEPTH;

/// Stack size of every thread that parses, plans, rewrites or runs SQL.
pub const STACK_BYTES: usize = tessera_shared::SQL_THREAD_STACK_BYTES;

/// `54001`: the statement nests deeper than Tessera evaluates.
pub fn too_deep() -> CoordError {
    CoordError::TooDeep(format!(
        "stack depth limit exceeded: the statement nests more than {MAX_DEPTH} levels deep"
    ))
}

/// One nesting level of the token scan: parentheses, brackets, `CASE … END`.
#[derive(Default)]
struct Level {
    /// Depth charged to the levels around this one.
    base: usize,
    /// Infix operators since the last comma at this level.
    chained: usize,
    /// Set operations (`UNION`, `EXCEPT`, `INTERSECT`) at this level: commas do not end them.
    set_ops: usize,
}

/// `(`, `[` and `CASE` open a nesting level of the token scan.
fn opens_level(t: &Token) -> bool {
    matches!(t, Token::LParen | Token::LBracket)
        || matches!(t, Token::Word(w) if w.keyword == Keyword::CASE)
}

/// `)`, `]` and `END` close one.
fn closes_level(t: &Token) -> bool {
    matches!(t, Token::RParen | Token::RBracket)
        || matches!(t, Token::Word(w) if w.keyword == Keyword::END)
}

/// Refuses a statement whose operator chains could build a tree deeper than [`MAX_CHAINED`],
/// before the parser builds it.
pub fn check_tokens<'a>(tokens: impl IntoIterator<Item = &'a Token>) -> Result<(), CoordError> {
    let mut stack = vec![Level::default()];
    for t in tokens {
        match t {
            t if opens_level(t) => {
                let top = stack.last().map_or(0, |l| l.base + l.chained + l.set_ops);
                stack.push(Level {
                    base: top + 1,
                    ..Level::default()
                });
            }
            t if closes_level(t) => {
                if stack.len() > 1 {
                    stack.pop();
                }
            }
            Token::Comma => {
                if let Some(l) = stack.last_mut() {
                    l.chained = 0;
                }
            }
            Token::SemiColon => stack.truncate(1),
            Token::Word(w) => {
                let l = stack.last_mut().expect("the outer level stays");
                match w.keyword {
                    Keyword::UNION | Keyword::EXCEPT | Keyword::INTERSECT => l.set_ops += 1,
                    Keyword::AND
                    | Keyword::OR
                    | Keyword::XOR
                    | Keyword::NOT
                    | Keyword::IS
                    | Keyword::IN
                    | Keyword::LIKE
                    | Keyword::ILIKE
                    | Keyword::SIMILAR
                    | Keyword::BETWEEN
                    | Keyword::COLLATE
                    | Keyword::AT
                    | Keyword::OVERLAPS
                    | Keyword::OPERATOR
                    | Keyword::ESCAPE => l.chained += 1,
                    _ => {}
                }
            }
            Token::Whitespace(_)
            | Token::Number(..)
            | Token::Char(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Placeholder(_)
            | Token::Period
            | Token::EOF => {}
            // Every other token is an operator or punctuation that may chain.
            _ => {
                if let Some(l) = stack.last_mut() {
                    l.chained += 1;
                }
            }
        }
        let l = stack.last().expect("the outer level stays");
        if l.base + l.chained + l.set_ops > MAX_CHAINED {
            return Err(too_deep());
        }
    }
    Ok(())
}

/// Measures nesting, stopping as soon as it passes [`MAX_DEPTH`] (so the measure itself
/// recurses no deeper than that).
struct Depth {
    now: usize,
}

impl Depth {
    fn enter(&mut self) -> ControlFlow<()> {
        self.now += 1;
        if self.now > MAX_DEPTH {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// Set operations nest as a chain the visitor walks without a hook of its own: its length.
fn set_branches(q: &Query) -> usize {
    let mut branches = 0;
    let mut body = q.body.as_ref();
    while let SetExpr::SetOperation { left, .. } = body {
        branches += 1;
        body = left;
    }
    branches
}

impl Visitor for Depth {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        self.now += set_branches(q);
        self.enter()
    }

    fn post_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        self.now -= set_branches(q) + 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, _e: &Expr) -> ControlFlow<()> {
        self.enter()
    }

    fn post_visit_expr(&mut self, _e: &Expr) -> ControlFlow<()> {
        self.now -= 1;
        ControlFlow::Continue(())
    }
}

/// Refuses a parsed statement nested deeper than [`MAX_DEPTH`].
pub fn check_tree(stmt: &Statement) -> Result<(), CoordError> {
    match stmt.visit(&mut Depth { now: 0 }) {
        ControlFlow::Break(()) => Err(too_deep()),
        ControlFlow::Continue(()) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::tokenizer::Tokenizer;

    fn tokens(sql: &str) -> Vec<Token> {
        Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize()
            .expect("tokens")
    }

    #[test]
    fn chains_are_bounded_and_lists_are_not() {
        let plus = format!("select {}", vec!["1"; MAX_CHAINED + 2].join("+"));
        assert_eq!(
            check_tokens(&tokens(&plus)).expect_err("deep").sqlstate(),
            "54001"
        );
        let or = format!("select 1 where {}", vec!["a=1"; 5_000].join(" OR "));
        check_tokens(&tokens(&or)).expect("5,000 OR terms");
        let list = format!("select 1 where a in ({})", vec!["1"; 100_000].join(","));
        check_tokens(&tokens(&list)).expect("a long IN list");
        let rows = format!(
            "insert into t values {}",
            vec!["(1+1, '2024-01-01'::date)"; 50_000].join(",")
        );
        check_tokens(&tokens(&rows)).expect("many rows");
        let union = vec!["select 1, 2"; MAX_CHAINED + 2].join(" union all ");
        assert!(check_tokens(&tokens(&union)).is_err(), "set operations");
        let cases = format!(
            "select {}",
            vec!["case when a then 1 end"; MAX_CHAINED + 2].join("+")
        );
        assert!(check_tokens(&tokens(&cases)).is_err(), "a chain of CASEs");
    }
}
