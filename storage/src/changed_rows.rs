//! The rows a patchset changes, named by table and primary key in one encoding shared with
//! locking reads: the keys of row locks ([`crate::row_locks`]).

use crate::error::StorageError;
use crate::patchset::{Datum, Op};
use rusqlite::types::ValueRef;

/// A row a patchset changes: its table and its primary key, encoded so that equal keys are
/// equal bytes (a row lock's key, [`crate::row_locks`]); for an insert whose key is one integer
/// (a rowid), that integer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedRow {
    /// The table.
    pub table: String,
    /// The primary key's values (the rowid for a table without one), encoded.
    pub key: Vec<u8>,
    /// The key of an inserted row, when it is one integer.
    pub inserted_int: Option<i64>,
}

/// The rows a patchset changes, in its order.
pub fn changed_rows(changes: &[u8]) -> Result<Vec<ChangedRow>, StorageError> {
    Ok(crate::patchset::decode(changes)?
        .into_iter()
        .map(|change| {
            let mut key = Vec::new();
            let mut ints = Vec::new();
            for (v, _) in change.values.iter().zip(&change.pk).filter(|(_, pk)| **pk) {
                let v = v.as_ref().map_or(ValueRef::Null, Datum::as_ref);
                encode_key_value(v, &mut key);
                if let ValueRef::Integer(i) = v {
                    ints.push(i);
                }
            }
            let one_int = ints.len() == 1 && change.pk.iter().filter(|pk| **pk).count() == 1;
            ChangedRow {
                inserted_int: (change.op == Op::Insert && one_int).then(|| ints[0]),
                table: change.table,
                key,
            }
        })
        .collect())
}

/// Appends `v` to `key`, tagged with its type: the row-lock key encoding
/// ([`crate::row_locks::RowKey`]) of patchsets and locking reads alike.
pub fn encode_key_value(v: ValueRef<'_>, key: &mut Vec<u8>) {
    match v {
        ValueRef::Null => key.push(b'n'),
        ValueRef::Integer(i) => {
            key.push(b'i');
            key.extend_from_slice(&i.to_be_bytes());
        }
        ValueRef::Real(f) => {
            key.push(b'f');
            key.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        ValueRef::Text(b) | ValueRef::Blob(b) => {
            key.push(if matches!(v, ValueRef::Text(_)) {
                b't'
            } else {
                b'b'
            });
            key.extend_from_slice(&(b.len() as u64).to_be_bytes());
            key.extend_from_slice(b);
        }
    }
}
