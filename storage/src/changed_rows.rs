//! The rows a patchset changes, named by table and primary key in one encoding shared with
//! locking reads: the keys of row locks ([`crate::row_locks`]). It reads patchsets through
//! SQLite's changeset iterator, which rusqlite does not wrap: the unsafe calls are here.
#![allow(unsafe_code)]

use crate::error::StorageError;
use rusqlite::ffi;
use rusqlite::types::ValueRef;
use std::ffi::{c_char, c_int, c_void, CStr};

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
    if changes.is_empty() {
        return Ok(vec![]);
    }
    let len = c_int::try_from(changes.len()).map_err(|_| crate::capture::too_big())?;
    let mut it: *mut ffi::sqlite3_changeset_iter = std::ptr::null_mut();
    // SAFETY: SQLite only reads the `len` bytes at `changes`, which outlive the iterator
    // (finalized below before returning).
    let rc = unsafe { ffi::sqlite3changeset_start(&mut it, len, changes.as_ptr() as *mut c_void) };
    if rc != ffi::SQLITE_OK {
        return Err(unreadable(rc));
    }
    let mut out = Vec::new();
    // SAFETY: `it` is the live iterator started above.
    let rc = unsafe { read_rows(it, &mut out) };
    // SAFETY: `it` is finalized exactly once.
    unsafe { ffi::sqlite3changeset_finalize(it) };
    match rc {
        ffi::SQLITE_DONE => Ok(out),
        rc => Err(unreadable(rc)),
    }
}

fn unreadable(rc: c_int) -> StorageError {
    StorageError::Sql {
        sqlstate: "XX001",
        message: format!("a transaction's recorded row changes cannot be read (SQLite code {rc})"),
    }
}

/// Reads every change of `it` into `out`; returns SQLite's last code (`SQLITE_DONE` at the end).
///
/// # Safety
/// `it` must be a live changeset iterator.
unsafe fn read_rows(it: *mut ffi::sqlite3_changeset_iter, out: &mut Vec<ChangedRow>) -> c_int {
    loop {
        // SAFETY: the caller guarantees `it`.
        let rc = unsafe { ffi::sqlite3changeset_next(it) };
        if rc != ffi::SQLITE_ROW {
            return rc;
        }
        let mut table: *const c_char = std::ptr::null();
        let (mut columns, mut op, mut indirect): (c_int, c_int, c_int) = (0, 0, 0);
        // SAFETY: `it` is positioned on a change; SQLite writes the out-parameters.
        let rc = unsafe {
            ffi::sqlite3changeset_op(it, &mut table, &mut columns, &mut op, &mut indirect)
        };
        if rc != ffi::SQLITE_OK || table.is_null() {
            return ffi::SQLITE_CORRUPT;
        }
        // SAFETY: a NUL-terminated name, valid while the iterator is on this change.
        let table = unsafe { CStr::from_ptr(table) }
            .to_string_lossy()
            .into_owned();
        let mut flags: *mut u8 = std::ptr::null_mut();
        let mut n: c_int = 0;
        // SAFETY: as above; SQLite points `flags` at `n` bytes it owns.
        let rc = unsafe { ffi::sqlite3changeset_pk(it, &mut flags, &mut n) };
        if rc != ffi::SQLITE_OK || flags.is_null() {
            return ffi::SQLITE_CORRUPT;
        }
        // SAFETY: `n` readable bytes at `flags`, valid while the iterator is on this change.
        let flags = unsafe { std::slice::from_raw_parts(flags, n.max(0) as usize) };
        let insert = op == ffi::SQLITE_INSERT;
        let mut key = Vec::new();
        let mut ints = Vec::new();
        for (i, _) in flags.iter().enumerate().filter(|(_, f)| **f != 0) {
            let mut v: *mut ffi::sqlite3_value = std::ptr::null_mut();
            // SAFETY: column `i` is in range; an insert has new values, the others the key's
            // old values (all a patchset keeps of them).
            let rc = unsafe {
                match insert {
                    true => ffi::sqlite3changeset_new(it, i as c_int, &mut v),
                    false => ffi::sqlite3changeset_old(it, i as c_int, &mut v),
                }
            };
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            // SAFETY: `v` is NULL or a value SQLite owns until the iterator moves on.
            if let Some(int) = unsafe { encode_value(v, &mut key) } {
                ints.push(int);
            }
        }
        let one_int = ints.len() == 1 && flags.iter().filter(|f| **f != 0).count() == 1;
        out.push(ChangedRow {
            table,
            key,
            inserted_int: (insert && one_int).then(|| ints[0]),
        });
    }
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

/// Appends `v` to `key` ([`encode_key_value`]); gives its value when it is an integer.
///
/// # Safety
/// `v` must be NULL or a live `sqlite3_value`.
unsafe fn encode_value(v: *mut ffi::sqlite3_value, key: &mut Vec<u8>) -> Option<i64> {
    if v.is_null() {
        key.push(b'n');
        return None;
    }
    // SAFETY: `v` is live (the caller's promise); text and blob pointers are read at once,
    // for the byte count SQLite reports.
    let value = unsafe {
        let bytes = |p: *const u8| {
            let n = ffi::sqlite3_value_bytes(v).max(0) as usize;
            match p.is_null() {
                true => &[][..],
                false => std::slice::from_raw_parts(p, n),
            }
        };
        match ffi::sqlite3_value_type(v) {
            ffi::SQLITE_INTEGER => ValueRef::Integer(ffi::sqlite3_value_int64(v)),
            ffi::SQLITE_FLOAT => ValueRef::Real(ffi::sqlite3_value_double(v)),
            ffi::SQLITE_TEXT => ValueRef::Text(bytes(ffi::sqlite3_value_text(v))),
            ffi::SQLITE_BLOB => ValueRef::Blob(bytes(ffi::sqlite3_value_blob(v).cast())),
            _ => ValueRef::Null,
        }
    };
    encode_key_value(value, key);
    match value {
        ValueRef::Integer(i) => Some(i),
        _ => None,
    }
}
