//! What one request does on a shard copy: run statements (recording their row changes on the
//! first copy of a replicated write), or apply the row changes another copy recorded.

use crate::capture::{self, Capture};
use crate::error::StorageError;
use crate::exec::{run_batch, run_statement};
use crate::txn_changes;
use crate::versions::ChangeTracker;
use rusqlite::Connection;
use tessera_shared::proto::{Statement, StatementResult};

/// A request's work on one shard copy.
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
        /// A patchset from [`Done::changes`].
        changes: Vec<u8>,
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

thread_local! {
    /// Whether the transaction this thread serves has set a savepoint (each transaction has a
    /// connection thread of its own, `shards.rs`).
    static SAVEPOINTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// READ COMMITTED as PostgreSQL has it: each statement sees what committed before it began.
/// After a batch, a transaction holding no write lock on this shard ends its SQLite read
/// transaction and opens another, so its next statement reads the newest committed rows;
/// once it has written, it holds the shard's write lock and nothing else commits here
/// meanwhile. A transaction that set a savepoint keeps its snapshot (ending the read
/// transaction would release the savepoint).
pub(crate) fn fresh_snapshot_next(c: &Connection, work_set_savepoint: bool) {
    if work_set_savepoint {
        SAVEPOINTS.with(|s| s.set(true));
    }
    if SAVEPOINTS.with(|s| s.get()) || c.is_autocommit() {
        return;
    }
    // An unattached database (the reference database itself) has no state: not writing.
    let writing = |db| {
        matches!(
            c.transaction_state(Some(db)),
            Ok(rusqlite::TransactionState::Write)
        )
    };
    if !writing(rusqlite::MAIN_DB) && !writing(c"ref") {
        if let Err(e) = c.execute_batch("COMMIT") {
            tracing::warn!(error = %e, "could not renew a transaction's read snapshot");
        }
        // Whatever happened, the transaction stays open: a later write must not autocommit.
        if c.is_autocommit() {
            if let Err(e) = c.execute_batch("BEGIN") {
                tracing::error!(error = %e, "could not reopen a transaction after renewing its snapshot");
            }
        }
    }
}

/// Clears what a finished transaction left on its connection's thread, before the connection
/// serves another ([`crate::txn_conn`]).
pub(crate) fn reset_for_next_txn() {
    SAVEPOINTS.with(|s| s.set(false));
    txn_changes::reset();
}

impl Work {
    /// Whether the work sets a savepoint.
    pub(crate) fn sets_savepoint(&self) -> bool {
        match self {
            Work::Run { statements, .. } => statements.iter().any(|s| {
                matches!(
                    txn_changes::SavepointOp::parse(&s.sql),
                    Some(txn_changes::SavepointOp::Set(_))
                )
            }),
            Work::Apply { .. } => false,
        }
    }

    /// Does the work outside any open transaction: all of it in one SQLite transaction.
    pub(crate) fn autocommit(
        self,
        c: &mut Connection,
        t: &ChangeTracker,
    ) -> Result<Done, StorageError> {
        if let Work::Run {
            statements,
            capture: false,
        } = self
        {
            return Ok(Done {
                results: run_batch(c, statements, false, t)?,
                changes: None,
            });
        }
        // Changes are recorded or applied under the write lock, before the commit.
        c.execute_batch("BEGIN IMMEDIATE")?;
        match self.in_txn(c, t) {
            Ok(done) => {
                c.execute_batch("COMMIT")?;
                Ok(done)
            }
            Err(e) => {
                let _ = c.execute_batch("ROLLBACK");
                Err(e)
            }
        }
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
                txn_changes::record(Some(kept));
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
                if !changes.is_empty() {
                    c.execute_batch(&format!(
                        "UPDATE main.{} SET n = n WHERE 0",
                        crate::doctab::LOCK_TABLE
                    ))?;
                }
                t.will_change(&capture::apply(c, &changes, lenient)?);
                Ok(Done {
                    results: vec![StatementResult::default()],
                    changes: None,
                })
            }
        }
    }
}

/// Whether every statement only reads (a read needs no record of changes).
fn all_read_only(c: &Connection, statements: &[Statement]) -> Result<bool, StorageError> {
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
    c.execute_batch("BEGIN IMMEDIATE")?;
    let applied = (|| {
        for segment in changes {
            t.will_change(&capture::apply(c, segment, false)?);
        }
        note_committed(c, txn)
    })();
    match applied {
        Ok(()) => Ok(c.execute_batch("COMMIT")?),
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            Err(e)
        }
    }
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
