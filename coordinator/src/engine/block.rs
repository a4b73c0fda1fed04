//! Transaction blocks: `BEGIN`, `COMMIT`, `ROLLBACK`, and savepoints (see `savepoint.rs`).

use super::{Completion, Engine, QueryResult};
use crate::error::CoordError;
use crate::planner::Target;
use crate::session::{new_txn_id, OpenTxn, Session};
use crate::sql::names::ident;
use sqlparser::ast::{Statement, TransactionIsolationLevel, TransactionMode};

impl Engine {
    /// Runs `stmt` when it controls the transaction block; `None` for any other statement.
    pub(super) async fn transaction_block(
        &self,
        session: &mut Session,
        stmt: &Statement,
    ) -> Option<Result<QueryResult, CoordError>> {
        Some(match stmt {
            Statement::StartTransaction { modes, .. } => {
                isolation_modes(modes).map(|()| begin(session))
            }
            Statement::Commit { .. } => self.commit(session).await,
            Statement::Savepoint { name } => self
                .savepoint(session, &ident(name))
                .await
                .map(|()| QueryResult::command("SAVEPOINT", None)),
            Statement::ReleaseSavepoint { name } => self
                .release_savepoint(session, &ident(name))
                .await
                .map(|()| QueryResult::command("RELEASE", None)),
            Statement::Rollback {
                savepoint: Some(name),
                ..
            } => self
                .rollback_to_savepoint(session, &ident(name))
                .await
                .map(|()| QueryResult::command("ROLLBACK", None)),
            Statement::Rollback {
                savepoint: None, ..
            } => Ok(self.rollback(session).await),
            _ => return None,
        })
    }

    /// `COMMIT`: a failed transaction rolls back instead, as PostgreSQL's does.
    async fn commit(&self, session: &mut Session) -> Result<QueryResult, CoordError> {
        let Some(mut txn) = session.txn.take() else {
            return Ok(ended("COMMIT"));
        };
        let targets: Vec<Target> = txn.touched.iter().copied().collect();
        if txn.failed {
            let _ = self.txn.finish_all(&targets, txn.id, false).await;
            return Ok(ended("ROLLBACK"));
        }
        let written: Vec<Target> = txn.written.iter().copied().collect();
        let catalog = self.catalog.snapshot();
        if let Err(e) = crate::txn::commit::copies_unchanged(&catalog, &written) {
            let _ = self.txn.finish_all(&targets, txn.id, false).await;
            return Err(e);
        }
        // Every written shard still in the transaction (a rollback to a savepoint ends those
        // first touched after it) prepares before the decision: one that cannot (a full disk,
        // 53100) fails the transaction before any shard commits.
        let writing: Vec<Target> = written
            .iter()
            .copied()
            .filter(|t| txn.touched.contains(t))
            .collect();
        // Copies get the row changes that waited for them in the same request.
        let waiting = txn
            .waiting
            .take()
            .map(|mut w| w.take_all())
            .unwrap_or_default();
        if writing.len() > 1 {
            let plain: Vec<Target> = writing
                .iter()
                .copied()
                .filter(|t| !waiting.contains_key(t))
                .collect();
            let (prepared, sent) = tokio::join!(
                self.txn.prepare_all(&catalog, &plain, txn.id),
                self.txn.send_changes(&catalog, txn.id, waiting, true)
            );
            let (sent_to, sent): (Vec<Target>, Vec<Result<(), CoordError>>) =
                sent.into_iter().unzip();
            let writing: Vec<Target> = plain.into_iter().chain(sent_to).collect();
            let prepared: Vec<Result<(), CoordError>> = prepared.into_iter().chain(sent).collect();
            let lost = crate::txn::commit::lost_copies(&catalog, &writing, &prepared);
            let diverged = crate::txn::commit::diverged_copies(&writing, &prepared);
            if let Some(e) = prepared.into_iter().find_map(Result::err) {
                let _ = self.txn.finish_all(&targets, txn.id, false).await;
                // A copy that disagrees (it found so checking its kept changes) or cannot be
                // reached leaves its shard (when enough remain), and the client retries
                // without it.
                if !lost.is_empty() && self.txn.drop_lost_copies(&lost, &diverged).await.is_ok() {
                    return Err(crate::txn::commit::copy_lost_error(&lost));
                }
                return Err(e);
            }
        } else if !waiting.is_empty() {
            // (Not reached: a copy is written only beside its first copy.)
            let sent = self
                .txn
                .send_changes(&catalog, txn.id, waiting, false)
                .await;
            if let Some(e) = sent.into_iter().find_map(|(_, r)| r.err()) {
                let _ = self.txn.finish_all(&targets, txn.id, false).await;
                return Err(e);
            }
        }
        self.txn.commit_all(&targets, txn.id).await?;
        Ok(ended("COMMIT"))
    }

    /// `ROLLBACK`: a shard that cannot be told rolls back on its idle timeout.
    async fn rollback(&self, session: &mut Session) -> QueryResult {
        if let Some(txn) = session.txn.take() {
            let targets: Vec<Target> = txn.touched.iter().copied().collect();
            if let Err(e) = self.txn.finish_all(&targets, txn.id, false).await {
                tracing::warn!(error = %e, "rollback failed on a shard; it rolls back on its idle timeout");
            }
        }
        ended("ROLLBACK")
    }
}

/// `BEGIN`: opens a block unless one is open (PostgreSQL warns and carries on).
fn begin(session: &mut Session) -> QueryResult {
    if session.txn.is_none() {
        session.txn = Some(OpenTxn {
            id: new_txn_id(),
            touched: Default::default(),
            failed: false,
            savepoints: Vec::new(),
            written: Default::default(),
            waiting: Some(Default::default()),
        });
    }
    QueryResult {
        completion: Completion::Begin,
        ..QueryResult::command("BEGIN", None)
    }
}

/// The end of a block, tagged `tag`.
fn ended(tag: &'static str) -> QueryResult {
    QueryResult {
        completion: Completion::End(tag),
        ..QueryResult::command(tag, None)
    }
}

/// The isolation level Tessera gives for `level` (a setting's text), or `0A000`: READ
/// COMMITTED as PostgreSQL's (READ UNCOMMITTED is the same there); REPEATABLE READ and
/// SERIALIZABLE are refused rather than run as something weaker.
pub(super) fn isolation(level: &str) -> Result<&'static str, CoordError> {
    let level = level.trim().to_ascii_lowercase();
    match level.split_whitespace().collect::<Vec<_>>().join(" ").as_str() {
        "read committed" | "read uncommitted" => Ok("read committed"),
        "repeatable read" | "serializable" => Err(CoordError::unsupported(format!(
            "isolation level {} is not supported yet: Tessera runs every transaction at READ COMMITTED (each statement reads what committed before it began)",
            level.to_uppercase()
        ))),
        _ => Err(CoordError::invalid_setting("transaction_isolation", &level)),
    }
}

/// Checks the isolation level among `BEGIN`'s or `SET TRANSACTION`'s modes ([`isolation`]).
pub(super) fn isolation_modes(modes: &[TransactionMode]) -> Result<(), CoordError> {
    for m in modes {
        if let TransactionMode::IsolationLevel(level) = m {
            let text = match level {
                TransactionIsolationLevel::ReadUncommitted => "read uncommitted",
                TransactionIsolationLevel::ReadCommitted => "read committed",
                TransactionIsolationLevel::RepeatableRead => "repeatable read",
                _ => "serializable",
            };
            isolation(text)?;
        }
    }
    Ok(())
}
