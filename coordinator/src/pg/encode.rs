//! Wire encoding: row descriptions, values as Postgres formats them (text) or typed (binary), and bound parameters.

use crate::error::CoordError;
use crate::sql::infer::OutputColumn;
use crate::sql::params::from_text;
use crate::sql::text::text;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::api::Type;
use pgwire::error::PgWireResult;
use tessera_shared::{PgType, Value};

/// The type announced for a column in a given format. Binary values are only
/// produced for types with a simple binary form; others are sent as `text` in
/// binary mode (and keep their own type in text mode).
pub fn wire_type(ty: PgType, format: FieldFormat) -> Type {
    let effective = match (format, ty) {
        (FieldFormat::Binary, PgType::Numeric) => PgType::Float8,
        (
            FieldFormat::Binary,
            PgType::Date
            | PgType::Timestamp
            | PgType::Timestamptz
            | PgType::Json
            | PgType::Uuid
            | PgType::Bpchar,
        ) => PgType::Text,
        (FieldFormat::Binary, t) if t.is_array() => PgType::Text,
        (_, t) => t,
    };
    Type::from_oid(effective.oid()).unwrap_or(Type::TEXT)
}

/// The type announced for a parameter: one whose binary form Tessera decodes.
pub fn param_wire_type(ty: PgType) -> Type {
    wire_type(ty, FieldFormat::Binary)
}

/// Row description fields for result columns in the requested formats.
pub fn fields(columns: &[OutputColumn], format: &Format) -> Vec<FieldInfo> {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let f = format.format_for(i);
            FieldInfo::new(c.name.clone(), None, None, wire_type(c.ty, f), f)
        })
        .collect()
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        Value::Real(f) => Some(*f as i64),
        Value::Text(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Real(f) => Some(*f),
        Value::Text(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Encodes one row.
pub fn encode_row(
    enc: &mut DataRowEncoder,
    row: &[Value],
    columns: &[OutputColumn],
    fields: &[FieldInfo],
) -> PgWireResult<()> {
    for (i, f) in fields.iter().enumerate() {
        let v = row.get(i).unwrap_or(&Value::Null);
        let ty = columns.get(i).map(|c| c.ty).unwrap_or(PgType::Text);
        if ty.is_array() {
            // Already array text: written as is (pgwire would quote a string as one element).
            enc.encode_field_with_type_and_format(
                &text(v, ty),
                &Type::TEXT,
                f.format(),
                f.format_options(),
            )?;
            continue;
        }
        if f.format() == FieldFormat::Text || v.is_null() {
            enc.encode_field(&text(v, ty))?;
            continue;
        }
        let wt = f.datatype().clone();
        match wt {
            Type::INT2 => enc.encode_field(&as_i64(v).map(|x| x as i16))?,
            Type::INT4 => enc.encode_field(&as_i64(v).map(|x| x as i32))?,
            Type::INT8 => enc.encode_field(&as_i64(v))?,
            Type::FLOAT4 => enc.encode_field(&as_f64(v).map(|x| x as f32))?,
            Type::FLOAT8 => enc.encode_field(&as_f64(v))?,
            Type::BOOL => enc.encode_field(
                &as_i64(v)
                    .map(|x| x != 0)
                    .or_else(|| text(v, PgType::Bool).map(|t| t == "t")),
            )?,
            // jsonb's binary form: a version byte (1), then the text.
            Type::JSONB => {
                let mut bytes = vec![1u8];
                bytes.extend(text(v, ty).unwrap_or_default().into_bytes());
                enc.encode_field_with_type_and_format(
                    &Some(bytes),
                    &Type::BYTEA,
                    FieldFormat::Binary,
                    f.format_options(),
                )?
            }
            Type::BYTEA => enc.encode_field(&match v {
                Value::Blob(b) => Some(b.clone()),
                other => text(other, ty).map(String::into_bytes),
            })?,
            _ => enc.encode_field(&text(v, ty))?,
        }
    }
    Ok(())
}

/// Decodes bound parameter `i` (text or binary) into a storage value of type `ty`.
pub fn decode_param(raw: Option<&[u8]>, binary: bool, ty: PgType) -> Result<Value, CoordError> {
    let Some(raw) = raw else {
        return Ok(Value::Null);
    };
    let bad = || CoordError::Storage {
        sqlstate: "22P03".into(),
        message: format!(
            "incorrect binary data format in bind parameter of type {}",
            ty.name()
        ),
    };
    if !binary {
        let s = std::str::from_utf8(raw).map_err(|_| CoordError::Storage {
            sqlstate: "22021".into(),
            message: "invalid byte sequence for encoding \"UTF8\"".into(),
        })?;
        return from_text(s, ty);
    }
    let wt = param_wire_type(ty);
    Ok(match wt {
        Type::INT2 => Value::Integer(i64::from(i16::from_be_bytes(
            raw.try_into().map_err(|_| bad())?,
        ))),
        Type::INT4 => Value::Integer(i64::from(i32::from_be_bytes(
            raw.try_into().map_err(|_| bad())?,
        ))),
        Type::INT8 => Value::Integer(i64::from_be_bytes(raw.try_into().map_err(|_| bad())?)),
        Type::FLOAT4 => Value::Real(f64::from(f32::from_be_bytes(
            raw.try_into().map_err(|_| bad())?,
        ))),
        Type::FLOAT8 => Value::Real(f64::from_be_bytes(raw.try_into().map_err(|_| bad())?)),
        Type::BOOL => Value::Integer(i64::from(*raw.first().ok_or_else(bad)? != 0)),
        Type::BYTEA => Value::Blob(raw.to_vec()),
        Type::JSONB => match raw.split_first() {
            Some((1, rest)) => {
                from_text(std::str::from_utf8(rest).map_err(|_| bad())?, PgType::Jsonb)?
            }
            _ => return Err(bad()),
        },
        _ => Value::Text(String::from_utf8(raw.to_vec()).map_err(|_| bad())?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_follows_postgres() {
        assert_eq!(text(&Value::Integer(1), PgType::Bool).as_deref(), Some("t"));
        assert_eq!(
            text(&Value::Real(2.5), PgType::Float8).as_deref(),
            Some("2.5")
        );
        assert_eq!(
            text(&Value::Blob(vec![1, 171]), PgType::Bytea).as_deref(),
            Some("\\x01ab")
        );
        assert_eq!(text(&Value::Null, PgType::Text), None);
        assert_eq!(
            text(&Value::Real(f64::NAN), PgType::Float8).as_deref(),
            Some("NaN")
        );
    }

    #[test]
    fn binary_params() {
        assert_eq!(
            decode_param(Some(&7i64.to_be_bytes()), true, PgType::Int8).expect("i8"),
            Value::Integer(7)
        );
        assert_eq!(
            decode_param(Some(&7i32.to_be_bytes()), true, PgType::Int4).expect("i4"),
            Value::Integer(7)
        );
        assert_eq!(
            decode_param(Some(b"42"), false, PgType::Int8).expect("text"),
            Value::Integer(42)
        );
        assert_eq!(
            decode_param(Some(&[1, 2]), true, PgType::Int8)
                .expect_err("short")
                .sqlstate(),
            "22P03"
        );
        assert_eq!(
            decode_param(None, true, PgType::Int8).expect("null"),
            Value::Null
        );
    }
}
