//! The end of a transaction on a shard: its prepare (row changes on disk before the decision)
//! and its commit or rollback, for transactions that held their SQLite transaction and for
//! those that kept their changes aside ([`crate::deferred`]) alike.

use super::{recovery, ShardRegistry};
use crate::error::StorageError;
use crate::txn_changes;
use crate::txn_conn::TxnConn;
use rusqlite::Connection;

impl ShardRegistry {
    /// Commits or rolls back a transaction's work on one shard. Rolling back an
    /// unknown transaction succeeds (it holds nothing); committing one fails, unless it is in
    /// doubt here ([`crate::in_doubt`]): then its recorded changes commit.
    pub async fn finish_txn(
        &self,
        shard_id: u64,
        txn_id: u64,
        commit: bool,
    ) -> Result<(), StorageError> {
        let Some((_, conn)) = self.txns.remove(&(txn_id, shard_id)) else {
            return self.finish_in_doubt(shard_id, txn_id, commit).await;
        };
        let prepared = self.prepared.clone();
        let t = conn.tracker.clone();
        let wal = self.shard(shard_id).ok().map(|s| wal_of(&s.path));
        let unsynced_apply = crate::config::sqlite_synchronous(&self.config.synchronous) == "FULL";
        let finish = move |c: &mut Connection| {
            let recorded = prepared.holds(txn_id, shard_id);
            if commit && txn_changes::prepared() {
                recovery::crash_before_prepared_commit();
            }
            // A recorded commit is made durable by its mark in the prepared log, not by an
            // fsync of the shard under its write lock (see `prepared.rs`). One that holds its
            // SQLite transaction open commits with the fsync: SQLite refuses to change the
            // sync level inside a transaction.
            let wal = wal.filter(|_| commit && recorded && c.is_autocommit());
            if wal.is_some() && unsynced_apply {
                crate::work::sql(c, "PRAGMA synchronous = NORMAL")?;
            }
            let holding = txn_changes::holding();
            let ended = match (holding, commit) {
                (true, _) => {
                    if commit && recorded {
                        crate::work::note_committed(c, txn_id)?;
                    }
                    c.execute_batch(if commit { "COMMIT" } else { "ROLLBACK" })
                        .map_err(StorageError::from)
                }
                (false, true) => crate::deferred::commit(c, &t, txn_id, recorded),
                (false, false) => Ok(()),
            };
            if ended.is_err() && !c.is_autocommit() {
                let _ = c.execute_batch("ROLLBACK");
            }
            if wal.is_some() && unsynced_apply {
                crate::work::sql(c, "PRAGMA synchronous = FULL")?;
            }
            ended?;
            if let Some(wal) = wal {
                // Durable once marked; forgotten once the shard's WAL is synced.
                prepared.commit(txn_id, shard_id, wal)?;
                recovery::prune_committed(c, &prepared, shard_id);
            } else if recorded && commit {
                // On disk with the next prepare: the committed table tells it meanwhile.
                prepared.forget(txn_id, shard_id);
                recovery::prune_committed(c, &prepared, shard_id);
            } else if recorded {
                // Nothing else would tell a rolled-back record from an undecided one.
                prepared.forget_durably(txn_id, shard_id)?;
            }
            // Ready for the next transaction: nothing of this one's state left on the thread,
            // no SQLite transaction open.
            crate::work::reset_for_next_txn();
            Ok(c.is_autocommit())
        };
        let r = match conn.worker.run(finish).await {
            Ok(reusable) => {
                if reusable {
                    self.pool.put(shard_id, conn);
                }
                Ok(())
            }
            Err(StorageError::WorkerGone) if commit => Err(StorageError::NoSuchTxn(txn_id)),
            Err(StorageError::WorkerGone) => Ok(()),
            Err(e) => Err(e),
        };
        self.release(txn_id, shard_id);
        r
    }

    /// Marks a transaction prepared: its commit decision is about to be taken, so it keeps
    /// the client-transaction idle limit even if it was opened with a short one (a statement's
    /// own): a coordinator that dies after deciding finds it still open when it recovers.
    ///
    /// It runs as a job of the transaction's thread, so it is ordered with the idle check: a
    /// transaction already rolled back for idling answers [`StorageError::NoSuchTxn`].
    pub async fn prepare_txn(&self, shard_id: u64, txn_id: u64) -> Result<(), StorageError> {
        let Some(TxnConn { worker, idle, .. }) =
            self.txns.get(&(txn_id, shard_id)).map(|e| e.clone())
        else {
            return Err(StorageError::NoSuchTxn(txn_id));
        };
        let ms = self.client_idle().as_millis() as u64;
        let dir = self.config.data_dir.clone();
        let prepared = self.prepared.clone();
        match worker
            .run(move |c| {
                if txn_changes::holding() {
                    // The transaction's pages go to the WAL now, and a reserve stays free: a
                    // full disk fails here, before any shard commits, rather than at a commit
                    // after others committed.
                    c.cache_flush().map_err(|e| match StorageError::from(e) {
                        StorageError::Sql {
                            sqlstate: "53100",
                            message,
                        } => crate::space::full(shard_id, message),
                        other => other,
                    })?;
                } else {
                    // Its changes apply over what committed since they were made.
                    crate::deferred::check_commit(c)?;
                }
                crate::space::check_reserve(&dir, shard_id)?;
                // Its row changes on disk: a crash of this process before the decision leaves
                // it in doubt, not lost.
                match txn_changes::snapshot() {
                    Some(changes) => prepared.put(txn_id, shard_id, changes)?,
                    None => tracing::debug!(
                        txn_id,
                        shard_id,
                        "a prepared transaction that wrote document tables is not recorded"
                    ),
                }
                txn_changes::note_prepared();
                idle.fetch_max(ms, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            })
            .await
        {
            Err(StorageError::WorkerGone) => Err(StorageError::NoSuchTxn(txn_id)),
            r => r,
        }
    }
}

/// The WAL file of the shard database at `path`.
fn wal_of(path: &std::path::Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    name.into()
}
