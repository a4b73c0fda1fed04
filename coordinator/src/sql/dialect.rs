//! Rewrites a Postgres statement's AST into SQL that SQLite runs with Postgres' meaning.
//!
//! Two steps: [`rewrite`] changes semantics-bearing forms (casts, `ILIKE`,
//! `now()`, NULL ordering, Postgres-only functions) and keeps `$n`
//! placeholders, so the planner can still read them; [`render`] turns `$n`
//! into SQLite's `?n` and prints the SQL text sent to a shard.

use crate::error::CoordError;
use crate::sql::names::function_name;
use sqlparser::ast::*;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;
use tessera_shared::PgType;

/// Per-statement values that Postgres functions read (fixed at statement start,
/// so every shard sees the same `now()`).
#[derive(Debug, Clone)]
pub struct RewriteCtx {
    /// Statement start time.
    pub at: chrono::DateTime<chrono::Utc>,
    /// `now()` as text, formatted on first use (most statements never ask).
    now_text: std::sync::OnceLock<String>,
    /// `current_user`.
    pub user: String,
    /// `current_database()`.
    pub database: String,
}

impl RewriteCtx {
    /// A context stamped with the current time.
    pub fn new(user: &str, database: &str) -> RewriteCtx {
        RewriteCtx::at(chrono::Utc::now(), user, database)
    }

    /// A context stamped with `at`.
    pub fn at(at: chrono::DateTime<chrono::Utc>, user: &str, database: &str) -> RewriteCtx {
        RewriteCtx {
            at,
            now_text: std::sync::OnceLock::new(),
            user: user.to_string(),
            database: database.to_string(),
        }
    }

    /// `now()`, as `YYYY-MM-DD HH:MM:SS.ffffff+00`.
    pub fn now(&self) -> &str {
        self.now_text
            .get_or_init(|| self.at.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
    }
}

/// The string `version()` returns.
pub fn version_string() -> String {
    format!(
        "PostgreSQL 16.6 (Tessera {}) on x86_64-pc-linux-gnu, distributed SQL over SQLite shards",
        env!("CARGO_PKG_VERSION")
    )
}

/// Parses one expression (used to build replacement nodes).
pub fn parse_expr(sql: &str) -> Result<Expr, CoordError> {
    Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(crate::sql::depth::MAX_RECURSION)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| CoordError::Internal(format!("rewrite produced bad SQL {sql}: {e}")))
}

fn string_lit(s: &str) -> Expr {
    Expr::value(Value::SingleQuotedString(s.to_string()))
}

/// The PgType of a declared SQL type, or 42704.
pub fn pg_type_of(dt: &DataType) -> Result<PgType, CoordError> {
    let name = match dt {
        DataType::Custom(n, _) => function_name(n),
        DataType::Timestamp(_, TimezoneInfo::Tz)
        | DataType::Timestamp(_, TimezoneInfo::WithTimeZone) => "timestamptz".into(),
        DataType::Timestamp(..) => "timestamp".into(),
        DataType::Varchar(_) | DataType::CharacterVarying(_) => "varchar".into(),
        DataType::Char(_) | DataType::Character(_) => "char".into(),
        DataType::Numeric(_) | DataType::Decimal(_) => "numeric".into(),
        DataType::Float(_) => "float8".into(),
        DataType::Int(_) | DataType::Integer(_) => "integer".into(),
        DataType::JSON => "json".into(),
        DataType::JSONB => "jsonb".into(),
        other => other.to_string().to_lowercase(),
    };
    PgType::from_name(&name).ok_or(CoordError::UndefinedType(name))
}

/// The declared length of `varchar(n)` / `char(n)`, and PostgreSQL's name of the type; none
/// for a type without one.
pub fn char_limit(dt: &DataType) -> Option<(u32, String)> {
    let (length, name) = match dt {
        DataType::Varchar(Some(l)) | DataType::CharacterVarying(Some(l)) => {
            (l, "character varying")
        }
        DataType::Char(Some(l)) | DataType::Character(Some(l)) => (l, "character"),
        _ => return None,
    };
    match length {
        CharacterLength::IntegerLength { length, .. } => {
            let n = u32::try_from(*length).ok()?;
            Some((n, format!("{name}({n})")))
        }
        CharacterLength::Max => None,
    }
}

/// Rewrites Postgres forms into SQLite forms, in place. `$n` placeholders stay.
pub fn rewrite<V: VisitMut>(node: &mut V, ctx: &RewriteCtx) -> Result<(), CoordError> {
    let mut r = Rewriter { ctx, error: None };
    let _ = node.visit(&mut r);
    match r.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

struct Rewriter<'a> {
    ctx: &'a RewriteCtx,
    error: Option<CoordError>,
}

impl VisitorMut for Rewriter<'_> {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr {
            // A window's and an aggregate's own ORDER BY sort NULLs as Postgres does too.
            if let Some(WindowType::WindowSpec(spec)) = &mut f.over {
                nulls_as_postgres(&mut spec.order_by);
            }
            if let FunctionArguments::List(l) = &mut f.args {
                for c in &mut l.clauses {
                    if let FunctionArgumentClause::OrderBy(order) = c {
                        nulls_as_postgres(order);
                    }
                }
            }
        }
        match rewrite_expr(expr, self.ctx) {
            Ok(Some(new)) => *expr = new,
            Ok(None) => {}
            Err(e) => {
                self.error = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_order_by(&mut self, order_by: &mut OrderBy) -> ControlFlow<()> {
        if let OrderByKind::Expressions(exprs) = &mut order_by.kind {
            nulls_as_postgres(exprs);
        }
        ControlFlow::Continue(())
    }
}

/// Postgres sorts NULLs as larger than every value; SQLite as smaller: each sort key without
/// a NULLS clause gets Postgres' placement spelled out.
fn nulls_as_postgres(exprs: &mut [OrderByExpr]) {
    for o in exprs {
        if o.options.nulls_first.is_none() {
            let desc = matches!(o.options.sort, Some(OrderBySort::Desc));
            o.options.nulls_first = Some(desc);
        }
    }
}

/// Moves a subtree out of the tree being rewritten (its node is replaced right after).
fn take(e: &mut Expr) -> Expr {
    std::mem::replace(e, Expr::value(Value::Null))
}

/// Placeholder identifiers of [`template`]: `__tessera_arg0`, `__tessera_arg1`, …
const ARG: &str = "__tessera_arg";

/// `n` placeholders from `from` on, comma-separated.
fn slots(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("{ARG}{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a small SQL template and puts `args` in place of its placeholders (each once).
/// Subtrees move in whole, never printed and parsed again, so rewriting a chain costs its
/// length, not its length squared.
fn template(sql: &str, args: Vec<Expr>) -> Result<Expr, CoordError> {
    let mut e = parse_expr(sql)?;
    let mut args: Vec<Option<Expr>> = args.into_iter().map(Some).collect();
    let mut missing = false;
    let _ = visit_expressions_mut(&mut e, |x| {
        if let Expr::Identifier(i) = x {
            if let Some(n) = i
                .value
                .strip_prefix(ARG)
                .and_then(|n| n.parse::<usize>().ok())
            {
                match args.get_mut(n).and_then(Option::take) {
                    Some(arg) => *x = arg,
                    None => missing = true,
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    if missing {
        return Err(CoordError::Internal(format!(
            "rewrite template {sql} used an argument twice"
        )));
    }
    Ok(e)
}

fn rewrite_expr(expr: &mut Expr, ctx: &RewriteCtx) -> Result<Option<Expr>, CoordError> {
    Ok(Some(match expr {
        Expr::Cast {
            expr: inner,
            data_type,
            ..
        } => {
            let ty = pg_type_of(data_type)?;
            if ty == PgType::Bool {
                if let Expr::Value(v) = inner.as_ref() {
                    if let Value::SingleQuotedString(s) = &v.value {
                        let b = crate::sql::params::from_text(s, PgType::Bool)?;
                        return Ok(Some(parse_expr(
                            if b == tessera_shared::Value::Integer(1) {
                                "1"
                            } else {
                                "0"
                            },
                        )?));
                    }
                }
            }
            let limit = char_limit(data_type);
            let inner = vec![take(inner)];
            match ty {
                // `'abcdef'::varchar(3)` is cut to 3 characters, and so is a `char(n)`,
                // unpadded: its trailing spaces mean nothing in PostgreSQL's comparisons,
                // `length` and `||`, where a padded text would count them.
                PgType::Varchar | PgType::Bpchar if limit.is_some() => {
                    let n = limit.map_or(0, |(n, _)| n);
                    template(&format!("substr(CAST({ARG}0 AS TEXT), 1, {n})"), inner)?
                }
                // Strict: `'abc'::int` fails 22P02, `3.7::int` is 4, out of range fails 22003.
                PgType::Int2 => template(&format!("tessera_int({ARG}0, 16)"), inner)?,
                PgType::Int4 => template(&format!("tessera_int({ARG}0, 32)"), inner)?,
                PgType::Int8 => template(&format!("tessera_int({ARG}0, 64)"), inner)?,
                PgType::Jsonb => template(&format!("tessera_jsonb({ARG}0)"), inner)?,
                PgType::Json => template(&format!("tessera_json({ARG}0)"), inner)?,
                _ => template(&format!("CAST({ARG}0 AS {})", ty.sqlite_type()), inner)?,
            }
        }
        // E'…' strings (their escapes are decoded by the parser) as plain SQLite strings.
        Expr::Value(v) => match &v.value {
            Value::EscapedStringLiteral(s) => string_lit(s),
            _ => return Ok(None),
        },
        Expr::TypedString(ts) => match &ts.value.value {
            Value::SingleQuotedString(s) => string_lit(s),
            _ => return Ok(None),
        },
        // PostgreSQL's LIKE escapes with a backslash unless told otherwise; SQLite's does not.
        Expr::Like { escape_char, .. } if escape_char.is_none() => {
            *escape_char = Some(Box::new(string_lit("\\")));
            return Ok(None);
        }
        Expr::ILike {
            negated,
            expr: e,
            pattern,
            escape_char,
            ..
        } => {
            let not = if *negated { "NOT " } else { "" };
            let esc = escape_char
                .as_ref()
                .map(|c| format!(" ESCAPE {c}"))
                .unwrap_or_else(|| " ESCAPE '\\'".to_string());
            template(
                &format!("lower({ARG}0) {not}LIKE lower({ARG}1){esc}"),
                vec![take(e), take(pattern)],
            )?
        }
        Expr::Substring {
            expr: e,
            substring_from,
            substring_for,
            ..
        } => {
            let from = match substring_from {
                Some(f) => take(f),
                None => Expr::value(Value::Number("1".into(), false)),
            };
            match substring_for {
                Some(n) => template(
                    &format!("substr({})", slots(0, 3)),
                    vec![take(e), from, take(n)],
                )?,
                None => template(&format!("substr({})", slots(0, 2)), vec![take(e), from])?,
            }
        }
        Expr::Position { expr: needle, r#in } => template(
            &format!("instr({})", slots(0, 2)),
            vec![take(r#in), take(needle)],
        )?,
        Expr::Trim {
            trim_where,
            trim_what,
            expr: e,
            ..
        } => {
            let f = match trim_where {
                Some(TrimWhereField::Leading) => "ltrim",
                Some(TrimWhereField::Trailing) => "rtrim",
                _ => "trim",
            };
            match trim_what {
                Some(w) => template(&format!("{f}({})", slots(0, 2)), vec![take(e), take(w)])?,
                None => template(&format!("{f}({ARG}0)"), vec![take(e)])?,
            }
        }
        // IS [NOT] DISTINCT FROM: SQLite reads PostgreSQL's spelling as it is.
        // `~`, `~*`, `!~`, `!~*` (`tessera_storage::pgregex`).
        Expr::BinaryOp { left, op, right }
            if matches!(
                op,
                BinaryOperator::PGRegexMatch
                    | BinaryOperator::PGRegexIMatch
                    | BinaryOperator::PGRegexNotMatch
                    | BinaryOperator::PGRegexNotIMatch
            ) =>
        {
            let not = match op {
                BinaryOperator::PGRegexNotMatch | BinaryOperator::PGRegexNotIMatch => "NOT ",
                _ => "",
            };
            let ci = i32::from(matches!(
                op,
                BinaryOperator::PGRegexIMatch | BinaryOperator::PGRegexNotIMatch
            ));
            template(
                &format!("{not}tessera_regex({ARG}0, {ARG}1, {ci})"),
                vec![take(left), take(right)],
            )?
        }
        // `a ^ b` is exponentiation in PostgreSQL (SQLite has no such operator).
        Expr::BinaryOp {
            left,
            op: BinaryOperator::PGExp,
            right,
        } => template(
            &format!("power({})", slots(0, 2)),
            vec![take(left), take(right)],
        )?,
        // Division and modulo by zero fail (22012), as in PostgreSQL; SQLite answers NULL.
        Expr::BinaryOp {
            op: BinaryOperator::Divide | BinaryOperator::Modulo,
            right,
            ..
        } => {
            **right = template(&format!("tessera_divisor({ARG}0)"), vec![take(right)])?;
            return Ok(None);
        }
        Expr::BinaryOp { left, op, right } => match json_function(op) {
            Some((f, swap)) => {
                let right = json_right_operand(take(right));
                let left = take(left);
                let args = if swap {
                    vec![right, left]
                } else {
                    vec![left, right]
                };
                template(&format!("{f}({})", slots(0, 2)), args)?
            }
            None => return Ok(None),
        },
        Expr::Function(f) => return rewrite_function(f, ctx),
        _ => return Ok(None),
    }))
}

/// The SQLite function (see `tessera_storage::jsonfn`) implementing a JSON operator, and
/// whether it takes its operands swapped.
fn json_function(op: &BinaryOperator) -> Option<(&'static str, bool)> {
    Some(match op {
        BinaryOperator::Arrow => ("tessera_json_get", false),
        BinaryOperator::LongArrow => ("tessera_json_text", false),
        BinaryOperator::HashArrow => ("tessera_json_path", false),
        BinaryOperator::HashLongArrow => ("tessera_json_path_text", false),
        BinaryOperator::AtArrow => ("tessera_jsonb_contains", false),
        BinaryOperator::ArrowAt => ("tessera_jsonb_contains", true),
        BinaryOperator::Question => ("tessera_jsonb_exists", false),
        BinaryOperator::QuestionPipe => ("tessera_jsonb_exists_any", false),
        BinaryOperator::QuestionAnd => ("tessera_jsonb_exists_all", false),
        _ => return None,
    })
}

/// `ARRAY['a', 'b']` on the right of `?|` / `?&` / `#>` travels as a JSON array of strings.
fn json_right_operand(e: Expr) -> Expr {
    match e {
        Expr::Array(a) => Expr::Function(Function {
            name: ObjectName::from(vec![Ident::new("json_array")]),
            uses_odbc_syntax: false,
            parameters: FunctionArguments::None,
            args: FunctionArguments::List(FunctionArgumentList {
                duplicate_treatment: None,
                args: a
                    .elem
                    .into_iter()
                    .map(|x| FunctionArg::Unnamed(FunctionArgExpr::Expr(x)))
                    .collect(),
                clauses: vec![],
            }),
            filter: None,
            null_treatment: None,
            over: None,
            within_group: vec![],
        }),
        other => other,
    }
}

/// Moves a call's arguments out (a named or wildcard argument as its text).
fn take_args(f: &mut Function) -> Result<Vec<Expr>, CoordError> {
    match &mut f.args {
        FunctionArguments::List(l) => l
            .args
            .iter_mut()
            .map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(take(e)),
                other => parse_expr(&other.to_string()),
            })
            .collect(),
        _ => Ok(vec![]),
    }
}

fn rewrite_function(f: &mut Function, ctx: &RewriteCtx) -> Result<Option<Expr>, CoordError> {
    let full = function_name(&f.name);
    // `pg_catalog.f(…)` is `f(…)`: Postgres' own functions live there.
    let name = match full.strip_prefix("pg_catalog.") {
        Some(n) => {
            if let Some(e) = rewrite_function_named(n, f, ctx)? {
                return Ok(Some(e));
            }
            let mut plain = f.clone();
            plain.name = ObjectName::from(vec![Ident::new(n)]);
            return Ok(Some(Expr::Function(plain)));
        }
        None => full,
    };
    rewrite_function_named(&name, f, ctx)
}

fn rewrite_function_named(
    name: &str,
    f: &mut Function,
    ctx: &RewriteCtx,
) -> Result<Option<Expr>, CoordError> {
    // `f(args)` → `g(args)`: the arguments move into the new call.
    let call = |f: &mut Function, g: &str| -> Result<Expr, CoordError> {
        let args = take_args(f)?;
        template(&format!("{g}({})", slots(0, args.len())), args)
    };
    // A template over the first `n` arguments (missing ones are NULL).
    let over = |f: &mut Function, n: usize, sql: &str| -> Result<Expr, CoordError> {
        let mut args = take_args(f)?;
        args.resize(n.max(args.len()), Expr::value(Value::Null));
        template(sql, args)
    };
    let a = |i: usize| format!("{ARG}{i}");
    let nargs = match &f.args {
        FunctionArguments::List(l) => l.args.len(),
        _ => 0,
    };
    Ok(Some(match name {
        "now"
        | "current_timestamp"
        | "transaction_timestamp"
        | "statement_timestamp"
        | "clock_timestamp"
        | "localtimestamp" => string_lit(ctx.now()),
        "current_date" => string_lit(ctx.now().get(..10).unwrap_or(ctx.now())),
        "version" => string_lit(&version_string()),
        "current_database" | "current_catalog" => string_lit(&ctx.database),
        "current_user" | "session_user" | "user" | "current_role" => string_lit(&ctx.user),
        "current_schema" => string_lit("public"),
        "pg_backend_pid" => parse_expr(&std::process::id().to_string())?,
        "random" => parse_expr("((random() & 9007199254740991) / 9007199254740992.0)")?,
        "char_length" | "character_length" => over(f, 1, &format!("length({})", a(0)))?,
        // A negative count drops characters, as PostgreSQL's do (`storage/src/pgstr.rs`).
        "left" => call(f, "tessera_left")?,
        "right" => call(f, "tessera_right")?,
        "strpos" => over(f, 2, &format!("instr({}, {})", a(0), a(1)))?,
        "btrim" => call(f, "trim")?,
        // SQLite's own name; an `ORDER BY` inside the call stays (SQLite has it too).
        "string_agg" if f.over.is_none() => {
            let mut g = f.clone();
            g.name = ObjectName::from(vec![Ident::new("group_concat")]);
            Expr::Function(g)
        }
        "bool_and" | "every" => over(f, 1, &format!("min({})", a(0)))?,
        "bool_or" => over(f, 1, &format!("max({})", a(0)))?,
        // NULLs skipped, as PostgreSQL does (SQLite's max/min of several answer NULL).
        "greatest" => call(f, "tessera_greatest")?,
        "least" => call(f, "tessera_least")?,
        // One value per row, computed where the row is written (on a replicated write, once: the
        // copies apply the first copy's row changes).
        "gen_random_uuid" | "uuid_generate_v4" => over(f, 0, "tessera_gen_random_uuid()")?,
        "json_build_object" | "jsonb_build_object" => call(f, "json_object")?,
        "jsonb_set" | "jsonb_set_lax" if nargs >= 3 => call(f, "tessera_jsonb_set")?,
        "jsonb_typeof" | "json_typeof" => over(f, 1, &format!("tessera_jsonb_typeof({})", a(0)))?,
        "jsonb_extract_path" | "json_extract_path" if nargs > 0 => over(
            f,
            nargs,
            &format!(
                "tessera_json_path({}, json_array({}))",
                a(0),
                slots(1, nargs - 1)
            ),
        )?,
        "jsonb_extract_path_text" | "json_extract_path_text" if nargs > 0 => over(
            f,
            nargs,
            &format!(
                "tessera_json_path_text({}, json_array({}))",
                a(0),
                slots(1, nargs - 1)
            ),
        )?,
        "jsonb_agg" | "json_agg" if f.over.is_none() => {
            // Keeps DISTINCT / ORDER BY inside the call: only the name changes.
            let mut g = f.clone();
            g.name = ObjectName::from(vec![Ident::new("json_group_array")]);
            Expr::Function(g)
        }
        "json_build_array" | "jsonb_build_array" => call(f, "json_array")?,
        _ => return Ok(None),
    }))
}

/// SQL text for SQLite: `$n` placeholders become `?n`.
pub fn render<V: VisitMut + Clone + std::fmt::Display>(node: &V) -> String {
    let mut n = node.clone();
    let _ = visit_expressions_mut(&mut n, |e| {
        if let Expr::Value(v) = e {
            if let Value::Placeholder(p) = &mut v.value {
                if let Some(rest) = p.strip_prefix('$') {
                    *p = format!("?{rest}");
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    n.to_string()
}

#[cfg(test)]
#[path = "dialect_tests.rs"]
mod tests;
