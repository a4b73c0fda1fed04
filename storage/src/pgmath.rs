//! PostgreSQL's math functions SQLite lacks (it is built without its math extension) or
//! answers differently: `power`, `sqrt`, `cbrt`, `exp`, `ln`, `log`, `ceil`, `floor`,
//! `trunc`, `round(x, n)` with negative `n`, `mod`, `div`, `width_bucket`, and `greatest` /
//! `least` that skip NULLs. Registered on every shard and scratch connection.

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::Value;
use rusqlite::Connection;

type Fx = fn(&Context<'_>) -> Result<Value, String>;

/// Registers the functions on `conn`.
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    let pure = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    let functions: [(&str, i32, Fx); 18] = [
        ("power", 2, |c| real2(c, f64::powf)),
        ("pow", 2, |c| real2(c, f64::powf)),
        ("sqrt", 1, sqrt),
        ("cbrt", 1, |c| real1(c, f64::cbrt)),
        ("exp", 1, |c| real1(c, f64::exp)),
        ("ln", 1, |c| log_of(c, 0, None)),
        ("log", 1, |c| log_of(c, 0, Some(10.0))),
        ("log", 2, log_base),
        ("ceil", 1, |c| whole(c, f64::ceil)),
        ("ceiling", 1, |c| whole(c, f64::ceil)),
        ("floor", 1, |c| whole(c, f64::floor)),
        ("trunc", 1, |c| whole(c, f64::trunc)),
        ("trunc", 2, |c| at_digits(c, f64::trunc)),
        ("round", 2, |c| at_digits(c, f64::round)),
        ("mod", 2, modulo),
        ("div", 2, div),
        ("width_bucket", 4, width_bucket),
        ("tessera_greatest", -1, |c| extreme(c, true)),
    ];
    for (name, n, f) in functions {
        conn.create_scalar_function(name, n, pure, move |ctx| {
            f(ctx).map_err(|m| rusqlite::Error::UserFunctionError(m.into()))
        })?;
    }
    conn.create_scalar_function("tessera_least", -1, pure, |ctx| {
        extreme(ctx, false).map_err(|m| rusqlite::Error::UserFunctionError(m.into()))
    })
}

/// Argument `i` as a number: `None` for NULL.
fn num(c: &Context<'_>, i: usize) -> Result<Option<Value>, String> {
    match c.get::<Value>(i).map_err(|e| e.to_string())? {
        Value::Null => Ok(None),
        v @ (Value::Integer(_) | Value::Real(_)) => Ok(Some(v)),
        Value::Text(t) => match t.trim().parse::<i64>() {
            Ok(i) => Ok(Some(Value::Integer(i))),
            Err(_) => t
                .trim()
                .parse::<f64>()
                .map(|r| Some(Value::Real(r)))
                .map_err(|_| format!("invalid input syntax for type double precision: \"{t}\"")),
        },
        Value::Blob(_) => Err("a byte string is not a number".into()),
    }
}

fn float(v: &Value) -> f64 {
    match v {
        Value::Integer(i) => *i as f64,
        Value::Real(r) => *r,
        _ => f64::NAN,
    }
}

fn real1(c: &Context<'_>, f: fn(f64) -> f64) -> Result<Value, String> {
    Ok(num(c, 0)?.map_or(Value::Null, |v| Value::Real(f(float(&v)))))
}

fn real2(c: &Context<'_>, f: fn(f64, f64) -> f64) -> Result<Value, String> {
    match (num(c, 0)?, num(c, 1)?) {
        (Some(a), Some(b)) => Ok(Value::Real(f(float(&a), float(&b)))),
        _ => Ok(Value::Null),
    }
}

fn sqrt(c: &Context<'_>) -> Result<Value, String> {
    match num(c, 0)? {
        Some(v) if float(&v) < 0.0 => Err("cannot take square root of a negative number".into()),
        v => Ok(v.map_or(Value::Null, |v| Value::Real(float(&v).sqrt()))),
    }
}

/// `ln(x)` (`base` None) or the logarithm in `base` of argument `i`.
fn log_of(c: &Context<'_>, i: usize, base: Option<f64>) -> Result<Value, String> {
    let Some(v) = num(c, i)? else {
        return Ok(Value::Null);
    };
    let x = float(&v);
    if x == 0.0 {
        return Err("cannot take logarithm of zero".into());
    }
    if x < 0.0 {
        return Err("cannot take logarithm of a negative number".into());
    }
    Ok(Value::Real(match base {
        None => x.ln(),
        Some(10.0) => x.log10(),
        Some(b) => x.ln() / b.ln(),
    }))
}

fn log_base(c: &Context<'_>) -> Result<Value, String> {
    match num(c, 0)? {
        None => Ok(Value::Null),
        Some(b) if float(&b) <= 0.0 || float(&b) == 1.0 => {
            Err("cannot take logarithm of zero".into())
        }
        Some(b) => log_of(c, 1, Some(float(&b))),
    }
}

/// `ceil`, `floor` and `trunc` of one argument: an integer stays as it is.
fn whole(c: &Context<'_>, f: fn(f64) -> f64) -> Result<Value, String> {
    Ok(match num(c, 0)? {
        None => Value::Null,
        Some(Value::Real(r)) => Value::Real(f(r)),
        Some(v) => v,
    })
}

/// `round(x, n)` and `trunc(x, n)`: at `n` decimal digits, left of the point when negative;
/// halves round away from zero, as PostgreSQL's numeric does.
fn at_digits(c: &Context<'_>, f: fn(f64) -> f64) -> Result<Value, String> {
    let (Some(v), Some(n)) = (num(c, 0)?, num(c, 1)?) else {
        return Ok(Value::Null);
    };
    let n = float(&n) as i32;
    if let (Value::Integer(i), true) = (&v, n >= 0) {
        return Ok(Value::Integer(*i));
    }
    let scale = 10f64.powi(n);
    let r = f(float(&v) * scale) / scale;
    Ok(match (&v, n <= 0) {
        (Value::Integer(_), true) => Value::Integer(r as i64),
        _ => Value::Real(r),
    })
}

fn modulo(c: &Context<'_>) -> Result<Value, String> {
    match (num(c, 0)?, num(c, 1)?) {
        (Some(Value::Integer(_)), Some(Value::Integer(0))) => Err("division by zero".into()),
        (Some(Value::Integer(a)), Some(Value::Integer(b))) => Ok(Value::Integer(a.wrapping_rem(b))),
        (Some(a), Some(b)) if float(&b) == 0.0 => {
            let _ = a;
            Err("division by zero".into())
        }
        (Some(a), Some(b)) => Ok(Value::Real(float(&a) % float(&b))),
        _ => Ok(Value::Null),
    }
}

fn div(c: &Context<'_>) -> Result<Value, String> {
    match (num(c, 0)?, num(c, 1)?) {
        (Some(_), Some(b)) if float(&b) == 0.0 => Err("division by zero".into()),
        (Some(Value::Integer(a)), Some(Value::Integer(b))) => Ok(Value::Integer(a.wrapping_div(b))),
        (Some(a), Some(b)) => Ok(Value::Integer((float(&a) / float(&b)).trunc() as i64)),
        _ => Ok(Value::Null),
    }
}

fn width_bucket(c: &Context<'_>) -> Result<Value, String> {
    let (Some(x), Some(lo), Some(hi), Some(n)) = (num(c, 0)?, num(c, 1)?, num(c, 2)?, num(c, 3)?)
    else {
        return Ok(Value::Null);
    };
    let (x, lo, hi, n) = (float(&x), float(&lo), float(&hi), float(&n) as i64);
    if n <= 0 {
        return Err("count must be greater than zero".into());
    }
    if lo == hi {
        return Err("lower bound cannot equal upper bound".into());
    }
    let bucket = if lo < hi {
        if x < lo {
            0
        } else if x >= hi {
            n + 1
        } else {
            ((x - lo) / (hi - lo) * n as f64).floor() as i64 + 1
        }
    } else if x > lo {
        0
    } else if x <= hi {
        n + 1
    } else {
        ((lo - x) / (lo - hi) * n as f64).floor() as i64 + 1
    };
    Ok(Value::Integer(bucket))
}

/// `greatest(…)` / `least(…)`: NULLs are skipped (NULL only when every argument is).
fn extreme(c: &Context<'_>, greatest: bool) -> Result<Value, String> {
    let mut best: Option<Value> = None;
    for i in 0..c.len() {
        let v: Value = c.get(i).map_err(|e| e.to_string())?;
        if v == Value::Null {
            continue;
        }
        let better = match &best {
            None => true,
            Some(b) => {
                let ord = compare(&v, b);
                if greatest {
                    ord == std::cmp::Ordering::Greater
                } else {
                    ord == std::cmp::Ordering::Less
                }
            }
        };
        if better {
            best = Some(v);
        }
    }
    Ok(best.unwrap_or(Value::Null))
}

/// Numbers by value, text by its bytes, numbers before text (SQLite's order).
fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    use Value::*;
    match (a, b) {
        (Integer(x), Integer(y)) => x.cmp(y),
        (Integer(_) | Real(_), Integer(_) | Real(_)) => float(a).total_cmp(&float(b)),
        (Text(x), Text(y)) => x.cmp(y),
        (Integer(_) | Real(_), _) => std::cmp::Ordering::Less,
        (_, Integer(_) | Real(_)) => std::cmp::Ordering::Greater,
        (Blob(x), Blob(y)) => x.cmp(y),
        (Text(_), Blob(_)) => std::cmp::Ordering::Less,
        _ => std::cmp::Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Result<String, String> {
        let c = Connection::open_in_memory().expect("db");
        register(&c).expect("register");
        c.query_row(sql, [], |r| {
            Ok(match r.get::<_, Value>(0)? {
                Value::Null => "NULL".to_string(),
                Value::Integer(i) => i.to_string(),
                Value::Real(f) => f.to_string(),
                Value::Text(t) => t,
                Value::Blob(_) => "blob".into(),
            })
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn math_answers_as_postgresql() {
        assert_eq!(one("SELECT power(2, 10)").as_deref(), Ok("1024"));
        assert_eq!(
            one("SELECT ceil(4.2) || ',' || floor(-4.8)").as_deref(),
            Ok("5.0,-5.0")
        );
        assert_eq!(one("SELECT round(1234.5, -2)").as_deref(), Ok("1200"));
        assert_eq!(one("SELECT round(2.345, 2)").as_deref(), Ok("2.35"));
        assert_eq!(one("SELECT trunc(-4.9)").as_deref(), Ok("-4"));
        assert_eq!(
            one("SELECT mod(-10, 3) || ',' || div(-10, 3)").as_deref(),
            Ok("-1,-3")
        );
        assert_eq!(
            one("SELECT width_bucket(5.35, 0.024, 10.06, 5)").as_deref(),
            Ok("3")
        );
        assert_eq!(
            one("SELECT tessera_greatest(1, NULL, 3)").as_deref(),
            Ok("3")
        );
        assert_eq!(
            one("SELECT tessera_least(NULL, 'b', 'a')").as_deref(),
            Ok("a")
        );
        assert_eq!(
            one("SELECT tessera_greatest(NULL, NULL)").as_deref(),
            Ok("NULL")
        );
        assert_eq!(
            one("SELECT log(100) || ',' || log(2, 8)").as_deref(),
            Ok("2.0,3.0")
        );
        assert!(one("SELECT ln(0)")
            .expect_err("fails")
            .contains("logarithm of zero"));
        assert!(one("SELECT sqrt(-1)")
            .expect_err("fails")
            .contains("square root"));
        assert!(one("SELECT mod(1, 0)")
            .expect_err("fails")
            .contains("division by zero"));
    }
}
