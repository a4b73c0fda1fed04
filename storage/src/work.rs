//! What one request does on a shard copy: run statements (recording their row changes on the
//! first copy of a replicated write), or apply the row changes another copy recorded.

use crate::capture::{self, Capture};
use crate::exec::{run_batch, run_statement};
use crate::versions::ChangeTracker;
use crate::StorageError;
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

impl Work {
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
                t.will_change(&capture::tables(&changes)?);
                capture::apply(c, &changes, lenient)?;
                Ok(Done {
                    results: vec![StatementResult::default()],
                    changes: None,
                })
            }
        }
    }
}
