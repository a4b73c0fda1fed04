//! A patchset read into plain values: each change's table, kind, primary-key columns and
//! values. It reads patchsets through SQLite's changeset iterator, which rusqlite does not
//! wrap: the unsafe calls are here, and everything above works on owned data.
#![allow(unsafe_code)]

use crate::error::StorageError;
use rusqlite::ffi;
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use std::ffi::{c_char, c_int, c_void, CStr};

/// A value as SQLite stored it: text keeps its bytes as they are (SQLite does not insist on
/// UTF-8, and a copy must get the very bytes its first copy holds).
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    /// NULL.
    Null,
    /// An integer.
    Integer(i64),
    /// A float.
    Real(f64),
    /// Text, its bytes.
    Text(Vec<u8>),
    /// A blob.
    Blob(Vec<u8>),
}

impl Datum {
    /// The value, borrowed.
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Datum::Null => ValueRef::Null,
            Datum::Integer(i) => ValueRef::Integer(*i),
            Datum::Real(f) => ValueRef::Real(*f),
            Datum::Text(b) => ValueRef::Text(b),
            Datum::Blob(b) => ValueRef::Blob(b),
        }
    }
}

impl ToSql for Datum {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(self.as_ref()))
    }
}

/// What a change does to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A new row: every column's value.
    Insert,
    /// A changed row: its key, and the new value of each column that changed.
    Update,
    /// A removed row: its key.
    Delete,
}

/// One row change of a patchset.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The table (of the `main` database).
    pub table: String,
    /// What the change does.
    pub op: Op,
    /// Which columns form the primary key (the rowid, first, for a table without one).
    pub pk: Vec<bool>,
    /// The row's values, one per column: every column of an insert; the key columns (and
    /// for an update the columns it changed) of the others; `None` where the patchset keeps
    /// no value.
    pub values: Vec<Option<Datum>>,
}

impl Change {
    /// The key's values, in column order.
    pub fn key(&self) -> impl Iterator<Item = &Datum> {
        self.values
            .iter()
            .zip(&self.pk)
            .filter(|(_, pk)| **pk)
            .filter_map(|(v, _)| v.as_ref())
    }
}

/// Every change of `changes`, in its order.
pub fn decode(changes: &[u8]) -> Result<Vec<Change>, StorageError> {
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
    let rc = unsafe { read_all(it, &mut out) };
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
unsafe fn read_all(it: *mut ffi::sqlite3_changeset_iter, out: &mut Vec<Change>) -> c_int {
    loop {
        // SAFETY: the caller guarantees `it`.
        let rc = unsafe { ffi::sqlite3changeset_next(it) };
        if rc != ffi::SQLITE_ROW {
            return rc;
        }
        // SAFETY: `it` is positioned on a change.
        match unsafe { read_one(it) } {
            Ok(change) => out.push(change),
            Err(rc) => return rc,
        }
    }
}

/// The change `it` is positioned on.
///
/// # Safety
/// `it` must be a live changeset iterator positioned on a change.
unsafe fn read_one(it: *mut ffi::sqlite3_changeset_iter) -> Result<Change, c_int> {
    let mut table: *const c_char = std::ptr::null();
    let (mut columns, mut op, mut indirect): (c_int, c_int, c_int) = (0, 0, 0);
    // SAFETY: `it` is positioned on a change; SQLite writes the out-parameters.
    let rc =
        unsafe { ffi::sqlite3changeset_op(it, &mut table, &mut columns, &mut op, &mut indirect) };
    if rc != ffi::SQLITE_OK || table.is_null() {
        return Err(ffi::SQLITE_CORRUPT);
    }
    // SAFETY: a NUL-terminated name, valid while the iterator is on this change.
    let table = unsafe { CStr::from_ptr(table) }
        .to_string_lossy()
        .into_owned();
    let mut flags: *mut u8 = std::ptr::null_mut();
    let mut n: c_int = 0;
    // SAFETY: as above; SQLite points `flags` at `n` bytes it owns.
    let rc = unsafe { ffi::sqlite3changeset_pk(it, &mut flags, &mut n) };
    if rc != ffi::SQLITE_OK || flags.is_null() || n != columns {
        return Err(ffi::SQLITE_CORRUPT);
    }
    // SAFETY: `n` readable bytes at `flags`, valid while the iterator is on this change.
    let pk: Vec<bool> = unsafe { std::slice::from_raw_parts(flags, n.max(0) as usize) }
        .iter()
        .map(|f| *f != 0)
        .collect();
    let op = match op {
        ffi::SQLITE_INSERT => Op::Insert,
        ffi::SQLITE_UPDATE => Op::Update,
        ffi::SQLITE_DELETE => Op::Delete,
        _ => return Err(ffi::SQLITE_CORRUPT),
    };
    let mut values = Vec::with_capacity(pk.len());
    for (i, is_key) in pk.iter().enumerate() {
        // An insert has new values; a delete keeps its key's old values; a patchset's update
        // keeps its key among the old values and what it changed among the new.
        let read_new = match op {
            Op::Insert => true,
            Op::Delete => false,
            Op::Update => !is_key,
        };
        if op == Op::Delete && !is_key {
            values.push(None);
            continue;
        }
        let mut v: *mut ffi::sqlite3_value = std::ptr::null_mut();
        // SAFETY: column `i` is in range for this change.
        let rc = unsafe {
            match read_new {
                true => ffi::sqlite3changeset_new(it, i as c_int, &mut v),
                false => ffi::sqlite3changeset_old(it, i as c_int, &mut v),
            }
        };
        if rc != ffi::SQLITE_OK {
            return Err(rc);
        }
        // SAFETY: `v` is NULL or a value SQLite owns until the iterator moves on.
        values.push(unsafe { owned(v) });
    }
    Ok(Change {
        table,
        op,
        pk,
        values,
    })
}

/// An owned copy of `v`; `None` for a NULL pointer (no value kept).
///
/// # Safety
/// `v` must be NULL or a live `sqlite3_value`.
unsafe fn owned(v: *mut ffi::sqlite3_value) -> Option<Datum> {
    if v.is_null() {
        return None;
    }
    // SAFETY: `v` is live (the caller's promise); text and blob pointers are read at once,
    // for the byte count SQLite reports.
    unsafe {
        let bytes = |p: *const u8| {
            let n = ffi::sqlite3_value_bytes(v).max(0) as usize;
            match p.is_null() {
                true => Vec::new(),
                false => std::slice::from_raw_parts(p, n).to_vec(),
            }
        };
        Some(match ffi::sqlite3_value_type(v) {
            ffi::SQLITE_INTEGER => Datum::Integer(ffi::sqlite3_value_int64(v)),
            ffi::SQLITE_FLOAT => Datum::Real(ffi::sqlite3_value_double(v)),
            ffi::SQLITE_TEXT => Datum::Text(bytes(ffi::sqlite3_value_text(v))),
            ffi::SQLITE_BLOB => Datum::Blob(bytes(ffi::sqlite3_value_blob(v).cast())),
            _ => Datum::Null,
        })
    }
}
