//! A SQL value as it travels between coordinator and storage nodes: SQLite's five storage classes.

use crate::proto;

/// A typed value. Postgres types map onto these at the coordinator (see [`crate::PgType`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// 64-bit integer (also booleans, stored 0/1).
    Integer(i64),
    /// 64-bit float (also numeric).
    Real(f64),
    /// UTF-8 text (also dates, timestamps, json, uuid).
    Text(String),
    /// Bytes (bytea).
    Blob(Vec<u8>),
}

impl Value {
    /// Whether this is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Total order used by the coordinator's merge: SQLite's order of storage
    /// classes (NULL < numbers < text < blob), numbers compared by value.
    pub fn sqlite_cmp(&self, other: &Value) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        use Value::*;
        fn class(v: &Value) -> u8 {
            match v {
                Null => 0,
                Integer(_) | Real(_) => 1,
                Text(_) => 2,
                Blob(_) => 3,
            }
        }
        match (self, other) {
            (Integer(a), Integer(b)) => a.cmp(b),
            (Integer(a), Real(b)) => (*a as f64).partial_cmp(b).unwrap_or(Ordering::Equal),
            (Real(a), Integer(b)) => a.partial_cmp(&(*b as f64)).unwrap_or(Ordering::Equal),
            (Real(a), Real(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            (Text(a), Text(b)) => a.cmp(b),
            (Blob(a), Blob(b)) => a.cmp(b),
            _ => class(self).cmp(&class(other)),
        }
    }
}

impl From<Value> for proto::Value {
    fn from(v: Value) -> Self {
        use proto::value::Kind;
        let kind = match v {
            Value::Null => Kind::Null(true),
            Value::Integer(i) => Kind::Integer(i),
            Value::Real(f) => Kind::Real(f),
            Value::Text(s) => Kind::Text(s),
            Value::Blob(b) => Kind::Blob(b),
        };
        proto::Value { kind: Some(kind) }
    }
}

impl From<proto::Value> for Value {
    fn from(v: proto::Value) -> Self {
        use proto::value::Kind;
        match v.kind {
            None | Some(Kind::Null(_)) => Value::Null,
            Some(Kind::Integer(i)) => Value::Integer(i),
            Some(Kind::Real(f)) => Value::Real(f),
            Some(Kind::Text(s)) => Value::Text(s),
            Some(Kind::Blob(b)) => Value::Blob(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_round_trip() {
        for v in [
            Value::Null,
            Value::Integer(-5),
            Value::Real(2.5),
            Value::Text("é".into()),
            Value::Blob(vec![0, 255]),
        ] {
            let p: proto::Value = v.clone().into();
            assert_eq!(Value::from(p), v);
        }
    }

    #[test]
    fn order_follows_sqlite_classes() {
        use std::cmp::Ordering::*;
        assert_eq!(Value::Null.sqlite_cmp(&Value::Integer(0)), Less);
        assert_eq!(Value::Integer(2).sqlite_cmp(&Value::Real(1.5)), Greater);
        assert_eq!(Value::Real(9.0).sqlite_cmp(&Value::Text("a".into())), Less);
        assert_eq!(
            Value::Text("b".into()).sqlite_cmp(&Value::Text("a".into())),
            Greater
        );
    }
}
