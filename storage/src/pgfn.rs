//! PostgreSQL functions SQLite lacks, registered on every shard and scratch connection: a
//! random UUID, and the checks that make integer casts and division fail where PostgreSQL's
//! fail (SQLite answers `'abc'` cast to integer with 0 and division by zero with NULL).

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::{Value, ValueRef};
use rusqlite::Connection;

/// Registers the functions on `conn`.
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    // Volatile: a new value per call, so per row.
    conn.create_scalar_function(
        "tessera_gen_random_uuid",
        0,
        FunctionFlags::SQLITE_UTF8,
        |_| Ok(tessera_shared::uuid::random_uuid()),
    )?;
    let pure = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("tessera_int", 2, pure, |ctx| {
        let bits = ctx.get::<i64>(1)?;
        to_int(ctx.get_raw(0), bits).map_err(fail)
    })?;
    conn.create_scalar_function("tessera_divisor", 1, pure, |ctx| divisor(ctx))?;
    crate::pgmath::register(conn)?;
    crate::pgstr::register(conn)?;
    crate::pgregex::register(conn)
}

fn fail(message: String) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(message.into())
}

/// The divisor of `/` and `%`, refused when it is zero (`22012`, as PostgreSQL).
fn divisor(ctx: &Context<'_>) -> rusqlite::Result<Value> {
    let v: Value = ctx.get(0)?;
    match v {
        Value::Integer(0) => Err(fail("division by zero".into())),
        Value::Real(0.0) => Err(fail("division by zero".into())),
        v => Ok(v),
    }
}

/// PostgreSQL's name of the integer type of `bits` bits.
fn int_type(bits: i64) -> &'static str {
    match bits {
        16 => "smallint",
        32 => "integer",
        _ => "bigint",
    }
}

/// `v` cast to the integer type of `bits` bits as PostgreSQL casts: text is parsed strictly
/// (`22P02` for anything but an optionally signed whole number), fractions round half away
/// from zero, and a value outside the type's range fails (`22003`).
pub fn to_int(v: ValueRef<'_>, bits: i64) -> Result<Option<i64>, String> {
    let ty = int_type(bits);
    let (min, max) = match bits {
        16 => (i64::from(i16::MIN), i64::from(i16::MAX)),
        32 => (i64::from(i32::MIN), i64::from(i32::MAX)),
        _ => (i64::MIN, i64::MAX),
    };
    let out_of_range = || format!("{ty} out of range");
    let n = match v {
        ValueRef::Null => return Ok(None),
        ValueRef::Integer(i) => i,
        ValueRef::Real(r) => {
            let r = r.round();
            if !r.is_finite() || r < min as f64 || r > max as f64 || r >= 9.223_372_036_854_776e18 {
                return Err(out_of_range());
            }
            r as i64
        }
        ValueRef::Text(t) => {
            let text = String::from_utf8_lossy(t);
            let s = text.trim();
            let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("invalid input syntax for type {ty}: \"{text}\""));
            }
            match s.parse::<i64>() {
                Ok(i) if (min..=max).contains(&i) => i,
                _ => return Err(format!("value \"{text}\" is out of range for type {ty}")),
            }
        }
        ValueRef::Blob(_) => return Err(format!("cannot cast a byte string to type {ty}")),
    };
    if (min..=max).contains(&n) {
        Ok(Some(n))
    } else {
        Err(out_of_range())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_casts_fail_where_postgresql_fails() {
        let int = |v: ValueRef<'_>| to_int(v, 32);
        assert_eq!(int(ValueRef::Text(b" 42 ")), Ok(Some(42)));
        assert_eq!(int(ValueRef::Text(b"-7")), Ok(Some(-7)));
        assert!(int(ValueRef::Text(b"abc"))
            .expect_err("fails")
            .starts_with("invalid input syntax"));
        assert!(int(ValueRef::Text(b"3.7")).is_err());
        assert!(int(ValueRef::Text(b"1e3")).is_err());
        assert!(int(ValueRef::Text(b"2147483648"))
            .expect_err("fails")
            .contains("out of range"));
        assert_eq!(int(ValueRef::Real(2.5)), Ok(Some(3)));
        assert_eq!(int(ValueRef::Real(-2.5)), Ok(Some(-3)));
        assert_eq!(int(ValueRef::Real(3.7)), Ok(Some(4)));
        assert_eq!(
            int(ValueRef::Integer(2_147_483_648)),
            Err("integer out of range".into())
        );
        assert_eq!(
            to_int(ValueRef::Integer(32_768), 16),
            Err("smallint out of range".into())
        );
        assert_eq!(
            to_int(ValueRef::Real(f64::NAN), 64),
            Err("bigint out of range".into())
        );
        assert_eq!(int(ValueRef::Null), Ok(None));
    }

    #[test]
    fn division_by_zero_fails() {
        let c = Connection::open_in_memory().expect("db");
        register(&c).expect("register");
        let q = |sql: &str| c.query_row(sql, [], |r| r.get::<_, Option<f64>>(0));
        assert_eq!(q("SELECT 7 / tessera_divisor(2)").expect("7/2"), Some(3.0));
        let e = q("SELECT 1 / tessera_divisor(0)").expect_err("1/0");
        assert!(e.to_string().contains("division by zero"), "{e}");
        assert!(q("SELECT 1.5 % tessera_divisor(0.0)").is_err());
        assert_eq!(q("SELECT 1 / tessera_divisor(NULL)").expect("null"), None);
    }
}
