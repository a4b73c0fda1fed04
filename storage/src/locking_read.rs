//! Locking reads: `SELECT … FOR UPDATE / FOR SHARE [NOWAIT | SKIP LOCKED]`. The coordinator
//! appends each row's primary key (the rowid for a table without one) to the columns it
//! selects; the node reads, meets the rows other transactions locked as the read asks — waits
//! for them (then reads again: PostgreSQL's READ COMMITTED), fails `55P03`, or leaves them
//! out —, applies LIMIT and OFFSET to what is left, drops the key columns and gives the keys
//! of the rows returned, which the transaction then locks like rows it changed
//! ([`crate::row_locks`]).

use crate::changed_rows::encode_key_value;
use crate::error::StorageError;
use crate::exec::run_statement;
use crate::row_locks::{RowKey, RowLocks};
use crate::versions::ChangeTracker;
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use tessera_shared::proto::{self, LockWait, Statement, StatementResult};

/// A key a locking read returned, and whether it is to be shared (`FOR SHARE`).
pub type KeyToLock = (RowKey, bool);

/// A locking read's rows, and the keys to lock.
pub struct Locked {
    /// The rows, without their key columns.
    pub result: StatementResult,
    /// The rows' lock keys.
    pub keys: Vec<RowKey>,
    /// `FOR SHARE`: the keys are locked shared.
    pub shared: bool,
}

thread_local! {
    /// The rows the last locking read on this connection thread locked, in its order, each
    /// with whether it locked it anew, and its transaction (see [`release`]).
    static LAST: std::cell::RefCell<(u64, Vec<(RowKey, bool)>)> = Default::default();
}

/// Whether `statements` hold a locking read.
pub fn any(statements: &[Statement]) -> bool {
    statements.iter().any(|s| s.lock.is_some())
}

/// The release a batch asks for: how many of the last locking read's rows to keep.
pub fn release_request(statements: &[Statement]) -> Option<u32> {
    match statements {
        [st] => st.lock.as_ref().and_then(|l| l.keep),
        _ => None,
    }
}

/// Releases the rows of `txn`'s last locking read (on this connection thread) after the
/// first `keep`: the coordinator returned only those. Rows the transaction held before that
/// read stay locked.
pub fn release(locks: &RowLocks, txn: u64, keep: u32) {
    let (of, rows) = LAST.with(|l| std::mem::take(&mut *l.borrow_mut()));
    if of == txn {
        let extra: Vec<RowKey> = rows
            .into_iter()
            .skip(keep as usize)
            .filter(|(_, new)| *new)
            .map(|(k, _)| k)
            .collect();
        locks.unlock(txn, &extra);
    }
}

/// Runs a locking read for transaction `txn` (0: autocommit, which locks nothing past the
/// read but still waits) on `shard`; [`StorageError::RowLocked`] when it must wait.
pub fn run(
    c: &Connection,
    t: &ChangeTracker,
    mut st: Statement,
    shard: u64,
    txn: u64,
    locks: &RowLocks,
) -> Result<Locked, StorageError> {
    let Some(spec) = st.lock.take() else {
        return Ok(Locked {
            result: run_statement(c, st, t)?,
            keys: vec![],
            shared: false,
        });
    };
    let mut result = run_statement(c, st, t)?;
    let n = spec.key_columns as usize;
    let width = result.columns.len();
    if n == 0 || n > width {
        return Err(StorageError::Sql {
            sqlstate: "XX000",
            message: format!("a locking read has {width} columns, not its {n} key columns"),
        });
    }
    let mut offset = spec.offset;
    let mut keys = Vec::new();
    let mut rows = Vec::new();
    for mut row in std::mem::take(&mut result.rows) {
        if spec.limit.is_some_and(|l| rows.len() as u64 >= l) {
            break;
        }
        let at = row.values.len().saturating_sub(n);
        let key = (shard, spec.table.clone(), key_of(&row.values[at..]));
        row.values.truncate(at);
        if let Some(holder) = locks.conflict(txn, &key, spec.shared) {
            match spec.wait() {
                LockWait::Block => return Err(StorageError::RowLocked(holder)),
                LockWait::Nowait => return Err(not_available(&spec.table)),
                LockWait::Skip => continue,
            }
        }
        if offset > 0 {
            offset -= 1;
            continue;
        }
        keys.push(key);
        rows.push(row);
    }
    result.columns.truncate(width - n);
    result.rows_affected = rows.len() as u64;
    result.rows = rows;
    Ok(Locked {
        result,
        keys,
        shared: spec.shared,
    })
}

/// Locks what locking reads returned, each as its read asked; all, or none (then the
/// transaction holding one is returned). Runs under the shard's write lock, which every
/// locker of the shard's rows holds, so nothing takes a row between the check and the locks.
pub fn lock(locks: &RowLocks, txn: u64, keys: Vec<KeyToLock>) -> Result<(), u64> {
    if let Some(holder) = keys.iter().find_map(|(k, s)| locks.conflict(txn, k, *s)) {
        return Err(holder);
    }
    let order = keys
        .iter()
        .map(|(k, _)| (k.clone(), !locks.held_by(txn, k)))
        .collect();
    LAST.with(|l| *l.borrow_mut() = (txn, order));
    let (shared, exclusive): (Vec<_>, Vec<_>) = keys.into_iter().partition(|(_, s)| *s);
    let keys_of = |v: Vec<KeyToLock>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    locks.lock(txn, keys_of(exclusive))?;
    locks.lock_shared(txn, keys_of(shared))
}

/// The lock key of a row's key values, encoded as patchsets' keys are.
fn key_of(values: &[proto::Value]) -> Vec<u8> {
    let mut key = Vec::new();
    for v in values {
        let v = tessera_shared::Value::from(v.clone());
        let v = match &v {
            tessera_shared::Value::Null => ValueRef::Null,
            tessera_shared::Value::Integer(i) => ValueRef::Integer(*i),
            tessera_shared::Value::Real(f) => ValueRef::Real(*f),
            tessera_shared::Value::Text(s) => ValueRef::Text(s.as_bytes()),
            tessera_shared::Value::Blob(b) => ValueRef::Blob(b),
        };
        encode_key_value(v, &mut key);
    }
    key
}

/// `55P03` for `NOWAIT`, in PostgreSQL's words.
fn not_available(table: &str) -> StorageError {
    StorageError::Sql {
        sqlstate: "55P03",
        message: format!("could not obtain lock on row in relation \"{table}\""),
    }
}
