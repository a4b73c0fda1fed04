//! A transaction's work on a shard copy, run on arrival and committed at its end: each batch
//! runs in a short SQLite transaction of its own over the shard's committed rows plus the
//! transaction's own changes so far, then rolls back, its row changes kept
//! ([`crate::txn_changes`]) and its rows locked ([`crate::row_locks`]); the commit applies
//! the kept changes in one SQLite transaction. So no SQLite lock is held between a
//! transaction's requests (SQLite's write lock covers a whole shard file), each statement
//! sees what committed before it began (READ COMMITTED), and two transactions wait for each
//! other only over a row both write.
//!
//! What SQLite's session extension cannot record (document tables, the attached reference
//! database, schema changes) makes the transaction *hold* instead, as every transaction did
//! before: its kept changes and its savepoints are replayed into an SQLite transaction that
//! stays open, with the shard's write lock, until it ends ([`Work::in_open_txn`]).
//!
//! Every function here runs on the transaction's connection thread.

use crate::capture::{self, Capture};
use crate::error::StorageError;
use crate::exec::run_statement;
use crate::locking_read;
use crate::row_locks::{RowKey, RowLocks};
use crate::rowids::RowIds;
use crate::txn_changes::{self, SavepointOp};
use crate::versions::ChangeTracker;
use crate::work::{all_read_only, end_txn, note_committed, sql, Done, Work};
use rusqlite::Connection;
use tessera_shared::proto::{Statement, StatementResult};

/// Past this many bytes of kept row changes on a shard, a transaction holds the shard's
/// write lock instead of replaying them before each batch.
pub const HOLD_AFTER_BYTES: usize = 1 << 20;

/// Which transaction on which shard, and the node's row locks.
pub struct TxnCtx<'a> {
    /// The shard.
    pub shard: u64,
    /// The transaction.
    pub txn: u64,
    /// The row locks of this node.
    pub locks: &'a RowLocks,
    /// The shard is fenced: a copy of it is being filled from this one.
    pub fenced: bool,
    /// Rowids handed out to open transactions' inserts.
    pub rowids: &'a RowIds,
}

/// Does one request's work for an open transaction; [`StorageError::RowLocked`] when a row
/// it changed is locked by another transaction (nothing of the batch is kept then).
pub fn run(
    c: &Connection,
    t: &ChangeTracker,
    ctx: &TxnCtx<'_>,
    work: Work,
) -> Result<Done, StorageError> {
    if let Work::Run { statements, .. } = &work {
        if let Some(keep) = locking_read::release_request(statements) {
            locking_read::release(ctx.locks, ctx.txn, keep);
            return Ok(Done {
                results: vec![StatementResult::default()],
                changes: None,
            });
        }
    }
    if txn_changes::holding() {
        return held(c, t, ctx, work);
    }
    let (statements, capture) = match work {
        Work::Apply { changes, lenient } if ctx.fenced => {
            // A copy being filled from this one reads under its write lock: the changes
            // apply now, holding it until the transaction ends.
            txn_changes::set_copy(lenient);
            hold(c)?;
            return held(c, t, ctx, Work::Apply { changes, lenient });
        }
        Work::Apply { changes, lenient } => {
            txn_changes::set_copy(lenient);
            // Another copy ran the statements; this one keeps their changes, and locks their
            // rows, so a later transaction's changes to them reach this copy after these.
            // Every row locked before anything is kept: a batch that meets a locked row
            // runs again whole once the holder ended.
            let mut keys = Vec::new();
            for segment in &changes {
                keys.extend(row_keys(ctx.shard, segment)?);
            }
            ctx.locks
                .lock(ctx.txn, keys)
                .map_err(StorageError::RowLocked)?;
            changes
                .into_iter()
                .for_each(|segment| txn_changes::record(Some(segment)));
            return Ok(Done {
                results: vec![StatementResult::default()],
                changes: None,
            });
        }
        Work::Run {
            statements,
            capture,
        } => (statements, capture),
    };
    if ctx.fenced {
        // A copy of the shard is being filled from this one: the fill reads under the shard's
        // write lock, so a writer holds it from its first write until it ends (its rows
        // checked against those transactions from before the fence still lock).
        return hold_then_run(c, t, ctx, statements, capture);
    }
    if locking_read::any(&statements) {
        return locking_reads(c, t, ctx, statements);
    }
    if txn_changes::kept_bytes() > HOLD_AFTER_BYTES {
        // A bulk load (COPY, INSERT ... SELECT in pieces): replaying all it changed before
        // every batch would cost more than holding the shard until it ends.
        return hold_then_run(c, t, ctx, statements, capture);
    }
    let ops: Vec<_> = statements
        .iter()
        .map(|s| SavepointOp::parse(&s.sql))
        .collect();
    if !ops.is_empty() && ops.iter().all(Option::is_some) {
        ops.iter().flatten().for_each(txn_changes::savepoint);
        return Ok(Done {
            results: statements
                .iter()
                .map(|_| StatementResult::default())
                .collect(),
            changes: None,
        });
    }
    if ops.iter().any(Option::is_some) || !recordable(c, &statements)? {
        return hold_then_run(c, t, ctx, statements, capture);
    }
    let kept = txn_changes::segments();
    let reads_only = all_read_only(c, &statements)?;
    if reads_only && kept.is_empty() {
        // One snapshot for the batch, ended with it: the next batch reads newer commits.
        sql(c, "BEGIN")?;
        let r = Work::Run {
            statements,
            capture: false,
        }
        .in_txn(c, t);
        let _ = sql(c, "COMMIT");
        return r;
    }
    // The write lock first: the transaction's own changes are written before anything reads.
    begin_writing(c)?;
    match attempt(c, t, ctx, &kept, statements, capture, reads_only) {
        Ok((done, true)) => {
            txn_changes::hold();
            Ok(done)
        }
        Ok((done, false)) => {
            sql(c, "ROLLBACK")?;
            Ok(done)
        }
        Err(e) => {
            let _ = sql(c, "ROLLBACK");
            Err(e)
        }
    }
}

/// Makes the transaction hold its SQLite transaction from now on, then runs the batch in it.
fn hold_then_run(
    c: &Connection,
    t: &ChangeTracker,
    ctx: &TxnCtx<'_>,
    statements: Vec<Statement>,
    capture: bool,
) -> Result<Done, StorageError> {
    hold(c)?;
    held(
        c,
        t,
        ctx,
        Work::Run {
            statements,
            capture,
        },
    )
}

/// Work of a transaction that holds its SQLite transaction. The rows it changes or reads
/// with a lock were perhaps locked by a transaction that did not hold, before this one did:
/// it fails `40001` then rather than wait for a row while it holds the whole shard (the other
/// one's commit waits for the shard).
fn held(
    c: &Connection,
    t: &ChangeTracker,
    ctx: &TxnCtx<'_>,
    work: Work,
) -> Result<Done, StorageError> {
    let conflict = |e| {
        match e {
        StorageError::RowLocked(holder) => StorageError::Sql {
            sqlstate: "40001",
            message: format!(
                "could not serialize access: transaction {holder} locked a row this transaction changes"
            ),
        },
        e => e,
    }
    };
    if let Work::Run { statements, .. } = &work {
        if locking_read::any(statements) {
            let (results, keys) = read_locking(c, t, ctx, statements.clone()).map_err(conflict)?;
            locking_read::lock(ctx.locks, ctx.txn, keys)
                .map_err(|h| conflict(StorageError::RowLocked(h)))?;
            return Ok(Done {
                results,
                changes: None,
            });
        }
    }
    let before = txn_changes::segment_count();
    let done = work.in_open_txn(c, t)?;
    let mut keys = Vec::new();
    for segment in &txn_changes::segments_from(before) {
        keys.extend(row_keys(ctx.shard, segment)?);
    }
    let taken = match ctx.fenced {
        // On a shard being copied every writer holds, and the fence waits for the rows
        // locked before it to be released: rows are checked, not locked.
        true => match keys
            .iter()
            .find_map(|k| ctx.locks.conflict(ctx.txn, k, false))
        {
            Some(holder) => Err(holder),
            None => Ok(()),
        },
        false => ctx.locks.lock(ctx.txn, keys),
    };
    taken.map_err(|h| conflict(StorageError::RowLocked(h)))?;
    Ok(done)
}

/// Locking reads ([`locking_read`]) over the transaction's own changes, in a short SQLite
/// transaction holding the shard's write lock (so their locks are taken atomically with the
/// read against every writer), which then rolls back.
fn locking_reads(
    c: &Connection,
    t: &ChangeTracker,
    ctx: &TxnCtx<'_>,
    statements: Vec<Statement>,
) -> Result<Done, StorageError> {
    if !all_read_only(c, &statements)? {
        return Err(StorageError::Sql {
            sqlstate: "XX000",
            message: "a batch with a locking read may hold only reads".into(),
        });
    }
    let kept = txn_changes::segments();
    begin_writing(c)?;
    let r = (|| {
        for segment in &kept {
            apply_kept(c, segment)?;
        }
        let (results, keys) = read_locking(c, t, ctx, statements)?;
        locking_read::lock(ctx.locks, ctx.txn, keys).map_err(StorageError::RowLocked)?;
        Ok(Done {
            results,
            changes: None,
        })
    })();
    let _ = sql(c, "ROLLBACK");
    r
}

/// Runs reads, some of them locking; their results and the keys to lock (shared or not).
fn read_locking(
    c: &Connection,
    t: &ChangeTracker,
    ctx: &TxnCtx<'_>,
    statements: Vec<Statement>,
) -> Result<(Vec<StatementResult>, Vec<locking_read::KeyToLock>), StorageError> {
    let mut results = Vec::with_capacity(statements.len());
    let mut keys = Vec::new();
    for st in statements {
        let read = locking_read::run(c, t, st, ctx.shard, ctx.txn, ctx.locks)?;
        results.push(read.result);
        keys.extend(read.keys.into_iter().map(|k| (k, read.shared)));
    }
    Ok((results, keys))
}

/// Runs a batch over the transaction's own changes inside an SQLite transaction; gives its
/// results and whether the SQLite transaction must stay open (it made changes no patchset
/// records).
fn attempt(
    c: &Connection,
    t: &ChangeTracker,
    ctx: &TxnCtx<'_>,
    kept: &[Vec<u8>],
    statements: Vec<Statement>,
    capture: bool,
    reads_only: bool,
) -> Result<(Done, bool), StorageError> {
    for segment in kept {
        apply_kept(c, segment)?;
    }
    if reads_only {
        let done = Work::Run {
            statements,
            capture: false,
        }
        .in_txn(c, t)?;
        return Ok((done, false));
    }
    let recording = Capture::start(c)?;
    let results = statements
        .into_iter()
        .map(|s| run_statement(c, s, t))
        .collect::<Result<Vec<_>, _>>()?;
    let mut changes = recording.patchset(c)?;
    if let Some(made) = &changes {
        if ctx.rowids.renumber(c, ctx.shard, made)? {
            changes = recording.patchset(c)?;
        }
    }
    drop(recording);
    let wrote_reference = matches!(
        c.transaction_state(Some(c"ref")),
        Ok(rusqlite::TransactionState::Write)
    );
    let Some(changes) = changes.filter(|_| !wrote_reference) else {
        // Unrecordable: the transaction holds from here on, as it did before; its changes
        // so far are applied already, below this batch's.
        txn_changes::make_opaque();
        return Ok((
            Done {
                results,
                changes: None,
            },
            true,
        ));
    };
    // Still under the shard's write lock: no other writer of the shard runs meanwhile.
    ctx.locks
        .lock(ctx.txn, row_keys(ctx.shard, &changes)?)
        .map_err(StorageError::RowLocked)?;
    let returned = capture.then(|| changes.clone());
    txn_changes::record(Some(changes));
    Ok((
        Done {
            results,
            changes: returned,
        },
        false,
    ))
}

/// Opens the SQLite transaction a holding transaction keeps: its changes so far replayed, its
/// savepoints set where they were.
fn hold(c: &Connection) -> Result<(), StorageError> {
    let kept = txn_changes::segments();
    let marks = txn_changes::marks();
    begin_writing(c)?;
    let replayed = (|| {
        for i in 0..=kept.len() {
            for (name, _) in marks.iter().filter(|(_, at)| *at == i) {
                c.execute_batch(&format!("SAVEPOINT {name}"))?;
            }
            if let Some(segment) = kept.get(i) {
                apply_kept(c, segment)?;
            }
        }
        Ok(())
    })();
    match replayed {
        Ok(()) => {
            txn_changes::hold();
            Ok(())
        }
        Err(e) => {
            let _ = sql(c, "ROLLBACK");
            Err(e)
        }
    }
}

/// Commits a transaction that did not hold: its kept changes applied in order, and (for a
/// prepared one) its id in the shard's committed table, in one SQLite transaction.
pub fn commit(c: &Connection, t: &ChangeTracker, txn: u64, note: bool) -> Result<(), StorageError> {
    let kept = txn_changes::segments();
    if kept.is_empty() && !note {
        return Ok(());
    }
    begin_writing(c)?;
    let applied = (|| {
        for segment in &kept {
            t.will_change(&apply_kept(c, segment)?);
        }
        if note {
            note_committed(c, txn)?;
        }
        Ok(())
    })();
    end_txn(c, applied)
}

/// Checks, before a prepare, that a transaction that did not hold can commit: its kept
/// changes applied and rolled back (a unique value committed meanwhile fails it here, before
/// any shard commits, rather than at its commit).
pub fn check_commit(c: &Connection) -> Result<(), StorageError> {
    let kept = txn_changes::segments();
    if kept.is_empty() {
        return Ok(());
    }
    if txn_changes::copy().is_none() && !crate::unique::any_secondary(c, &kept)? {
        // Its own changes to tables whose only unique key is the one its row locks cover: no
        // commit since could make them fail (each row it changed stayed locked; a key it
        // inserted was locked before any other could insert it).
        return Ok(());
    }
    begin_writing(c)?;
    let applied = kept
        .iter()
        .try_for_each(|segment| apply_kept(c, segment).map(drop));
    let _ = sql(c, "ROLLBACK");
    applied
}

/// Applies one of the transaction's kept patchsets: as its own changes (a conflict is the
/// user's: `23505`, `40001`), or as the first copy's (a conflict means this copy diverged:
/// `XX001`; none on a copy being filled).
fn apply_kept(c: &Connection, segment: &[u8]) -> Result<Vec<String>, StorageError> {
    match txn_changes::copy() {
        Some(lenient) => capture::apply(c, segment, lenient),
        None => capture::apply_own(c, segment),
    }
}

/// The row-lock keys of the rows a patchset changes on `shard`.
pub fn row_keys(shard: u64, changes: &[u8]) -> Result<Vec<RowKey>, StorageError> {
    Ok(crate::changed_rows::changed_rows(changes)?
        .into_iter()
        .map(|r| (shard, r.table, r.key))
        .collect())
}

/// Whether every statement either only reads or changes rows a patchset records (schema
/// changes and the like do not).
fn recordable(c: &Connection, statements: &[Statement]) -> Result<bool, StorageError> {
    for s in statements {
        // A write to the lock table asks for the shard's write lock itself (a copy being
        // filled or checked is read under it): it holds until the transaction ends.
        if s.sql.contains(crate::doctab::LOCK_TABLE) {
            return Ok(false);
        }
        if !changes_rows(&s.sql) && !c.prepare_cached(&s.sql)?.readonly() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether `sql` is a query or a row change (`INSERT`, `UPDATE`, `DELETE`, …), by its first word.
pub(crate) fn changes_rows(sql: &str) -> bool {
    let head = sql
        .trim_start()
        .split(|ch: char| !ch.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    [
        "INSERT", "UPDATE", "DELETE", "REPLACE", "WITH", "SELECT", "VALUES",
    ]
    .iter()
    .any(|k| k.eq_ignore_ascii_case(head))
}

/// A write to the shard's lock table that changes nothing: it takes `main`'s write lock.
const LOCK_SQL: &str = "UPDATE main.__tessera_doclock SET n = n WHERE 0";

/// Begins an SQLite transaction holding the write lock of the shard's main database only
/// (`BEGIN IMMEDIATE` would take the attached reference database's too, and writers of every
/// shard of the node would queue on it).
pub(crate) fn begin_writing(c: &Connection) -> Result<(), StorageError> {
    sql(c, "BEGIN")?;
    if let Err(e) = sql(c, LOCK_SQL) {
        let _ = sql(c, "ROLLBACK");
        return Err(e.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_write_lock_statement_names_the_lock_table() {
        assert!(super::LOCK_SQL.contains(crate::doctab::LOCK_TABLE));
    }
}
