//! What one request does on a shard copy: run statements (recording their row changes on the
//! first copy of a replicated write), or apply the row changes another copy recorded.

use crate::capture::{self, Capture};
use crate::error::StorageError;
use crate::exec::{run_batch, run_statement};
use crate::row_locks::RowLocks;
use crate::txn_changes;
use crate::versions::ChangeTracker;
use rusqlite::Connection;
use tessera_shared::proto::{Statement, StatementResult};

/// A request's work on one shard copy.
#[derive(Clone)]
pub enum Work {
    /// Run statements; with `capture`, also return the row changes they made.
    Run {
        /// The statements, in order.
        statements: Vec<Statement>,
        /// Record and return the row changes (see [`crate::capture`]).
        capture: bool,
    },
    /// Apply row changes recorded on the shard's first copy.
    Apply {
        /// Patchsets from [`Done::changes`], in the order they were made.
        changes: Vec<Vec<u8>>,
        /// The copy is being filled and may lack rows (see [`capture::apply`]).
        lenient: bool,
    },
}

/// What the work gave back.
#[derive(Debug, Default)]
pub struct Done {
    /// One result per statement (one empty result for applied changes).
    pub results: Vec<StatementResult>,
    /// The row changes, when asked to capture them and the statements wrote no document table.
    pub changes: Option<Vec<u8>>,
}

/// Clears what a finished transaction left on its connection's thread, before the connection
/// serves another ([`crate::txn_conn`]).
pub(crate) fn reset_for_next_txn() {
    txn_changes::reset();
}

impl Work {
    /// Does the work outside any open transaction: all of it in one SQLite transaction.
    ///
    /// A write checks the row locks of open transactions on `shard` ([`crate::row_locks`])
    /// under the shard's write lock: one that changed a locked row rolls back and fails with
    /// [`StorageError::RowLocked`], to run again once the holder ends.
    pub(crate) fn autocommit(
        self,
        c: &mut Connection,
        t: &ChangeTracker,
        locks: &RowLocks,
        shard: u64,
    ) -> Result<Done, StorageError> {
        if let Work::Run { statements, .. } = &self {
            if crate::locking_read::release_request(statements).is_some() {
                // An autocommit locking read kept nothing to release.
                return Ok(Done {
                    results: vec![StatementResult::default()],
                    changes: None,
                });
            }
            if crate::locking_read::any(statements) {
                // Waits for rows other transactions locked; holds nothing past the read.
                let results = statements
                    .iter()
                    .map(|s| crate::locking_read::run(c, t, s.clone(), shard, 0, locks))
                    .map(|r| r.map(|read| read.result))
                    .collect::<Result<_, _>>()?;
                return Ok(Done {
                    results,
                    changes: None,
                });
            }
        }
        if let Work::Run {
            statements,
            capture: false,
        } = self
        {
            let plain = |s: &Statement| !crate::deferred::changes_rows(&s.sql);
            if all_read_only(c, &statements)? || statements.iter().any(plain) {
                return Ok(Done {
                    results: run_batch(c, statements, false, t)?,
                    changes: None,
                });
            }
            crate::deferred::begin_writing(c)?;
            let checked = !locks.any_on(shard);
            let work = Work::Run {
                statements,
                capture: !checked,
            };
            let r = work.in_txn(c, t).and_then(|done| {
                let rows = match (&done.changes, checked) {
                    (Some(changes), false) => crate::deferred::row_keys(shard, changes)?,
                    _ => vec![],
                };
                match locks.holder_of(&rows) {
                    Some(holder) => Err(StorageError::RowLocked(holder)),
                    None => Ok(Done {
                        results: done.results,
                        changes: None,
                    }),
                }
            });
            return end_txn(c, r);
        }
        // Changes are recorded or applied under the write lock, before the commit.
        sql(c, "BEGIN IMMEDIATE")?;
        let r = self.in_txn(c, t);
        end_txn(c, r)
    }

    /// Does the work inside an open client transaction (its own connection thread), recording
    /// its row changes for a durable prepare ([`crate::txn_changes`]). Only the changes the
    /// caller asked for are returned.
    pub(crate) fn in_open_txn(
        self,
        c: &Connection,
        t: &ChangeTracker,
    ) -> Result<Done, StorageError> {
        match self {
            Work::Run {
                statements,
                capture,
            } => {
                let savepoints: Vec<_> = statements
                    .iter()
                    .filter_map(|s| txn_changes::SavepointOp::parse(&s.sql))
                    .collect();
                if !savepoints.is_empty() {
                    if statements.len() > 1 {
                        // Not what the coordinator sends; unknown changes are safe, not wrong.
                        txn_changes::make_opaque();
                    }
                    let ops: Vec<String> = statements.iter().map(|s| s.sql.clone()).collect();
                    let done = Work::Run {
                        statements,
                        capture,
                    }
                    .in_txn(c, t)?;
                    for sql in &ops {
                        if let Some(op) = txn_changes::SavepointOp::parse(sql) {
                            txn_changes::savepoint(&op);
                        }
                    }
                    return Ok(done);
                }
                let reads_only = !capture && all_read_only(c, &statements)?;
                let mut done = Work::Run {
                    statements,
                    capture: !reads_only,
                }
                .in_txn(c, t)?;
                if !reads_only {
                    match capture {
                        true => txn_changes::record(done.changes.clone()),
                        false => txn_changes::record(done.changes.take()),
                    }
                }
                Ok(done)
            }
            Work::Apply { changes, lenient } => {
                let kept = changes.clone();
                let done = Work::Apply { changes, lenient }.in_txn(c, t)?;
                kept.into_iter()
                    .for_each(|segment| txn_changes::record(Some(segment)));
                Ok(done)
            }
        }
    }

    /// Does the work inside the connection's open transaction.
    pub(crate) fn in_txn(self, c: &Connection, t: &ChangeTracker) -> Result<Done, StorageError> {
        match self {
            Work::Run {
                statements,
                capture,
            } => {
                let recording = capture.then(|| Capture::start(c)).transpose()?;
                let results = statements
                    .into_iter()
                    .map(|s| run_statement(c, s, t))
                    .collect::<Result<Vec<_>, _>>()?;
                let changes = match recording {
                    Some(r) => r.finish(c)?,
                    None => None,
                };
                Ok(Done { results, changes })
            }
            Work::Apply { changes, lenient } => {
                // The write lock first: applying reads before it writes, and a read snapshot
                // taken first could not be upgraded once another writer had committed
                // (SQLITE_BUSY_SNAPSHOT, without waiting): 143 needless 40001s in 3,200
                // single-row inserts with three copies. Nothing to apply, no lock to take.
                if changes.iter().any(|segment| !segment.is_empty()) {
                    c.execute_batch(&format!(
                        "UPDATE main.{} SET n = n WHERE 0",
                        crate::doctab::LOCK_TABLE
                    ))?;
                }
                for segment in &changes {
                    t.will_change(&capture::apply(c, segment, lenient)?);
                }
                Ok(Done {
                    results: vec![StatementResult::default()],
                    changes: None,
                })
            }
        }
    }
}

/// Ends the connection's SQLite transaction: commits it when `r` succeeded, else rolls it
/// back; gives `r` (or the commit's failure).
pub(crate) fn end_txn<T>(c: &Connection, r: Result<T, StorageError>) -> Result<T, StorageError> {
    match r {
        Ok(v) => {
            sql(c, "COMMIT")?;
            Ok(v)
        }
        Err(e) => {
            let _ = sql(c, "ROLLBACK");
            Err(e)
        }
    }
}

/// Runs one of Tessera's own fixed statements (`BEGIN`, `COMMIT`, ...) through the
/// connection's statement cache: these run around every write, and parsing them each time
/// showed in profiles.
pub(crate) fn sql(c: &Connection, text: &'static str) -> rusqlite::Result<()> {
    c.prepare_cached(text)?.execute([]).map(drop)
}

/// Whether every statement only reads (a read needs no record of changes).
pub(crate) fn all_read_only(
    c: &Connection,
    statements: &[Statement],
) -> Result<bool, StorageError> {
    for s in statements {
        if !c.prepare_cached(&s.sql)?.readonly() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Commits an in-doubt transaction ([`crate::in_doubt`]) on its shard: its recorded row
/// changes, in order, and its id in the shard's committed table, in one SQLite transaction.
pub(crate) fn commit_recorded(
    c: &mut Connection,
    t: &ChangeTracker,
    txn: u64,
    changes: &[Vec<u8>],
) -> Result<(), StorageError> {
    sql(c, "BEGIN IMMEDIATE")?;
    let applied = (|| {
        for segment in changes {
            t.will_change(&capture::apply(c, segment, false)?);
        }
        note_committed(c, txn)
    })();
    end_txn(c, applied)
}

/// Records in the shard's committed table, inside the committing transaction, that `txn`
/// committed here (see [`crate::prepared`]).
pub(crate) fn note_committed(c: &Connection, txn: u64) -> Result<(), StorageError> {
    c.execute(
        &format!(
            "INSERT OR IGNORE INTO main.{} (txn) VALUES (?1)",
            crate::prepared::COMMITTED_TABLE
        ),
        [txn as i64],
    )?;
    Ok(())
}
