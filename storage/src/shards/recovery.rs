//! The shard registry's side of prepared transactions: sorting out the prepared log at start,
//! deciding transactions in doubt, and keeping the committed tables small.

use super::{open_connection, ShardRegistry};
use crate::error::StorageError;
use crate::manifest::Manifest;
use crate::prepared::{PreparedLog, Record, COMMITTED_TABLE};
use rusqlite::Connection;

impl ShardRegistry {
    /// Decides a transaction that is not open here: one in doubt commits its recorded changes
    /// or forgets them; an unknown one rolls back as a no-op and fails to commit.
    pub(super) async fn finish_in_doubt(
        &self,
        shard_id: u64,
        txn_id: u64,
        commit: bool,
    ) -> Result<(), StorageError> {
        let Some(changes) = self.in_doubt.take(txn_id, shard_id) else {
            return if commit {
                Err(StorageError::NoSuchTxn(txn_id))
            } else {
                Ok(())
            };
        };
        if commit {
            let shard = self.shard(shard_id)?;
            let t = shard.tracker.clone();
            let recorded = changes.clone();
            let r = shard
                .worker
                .run(move |c| crate::work::commit_recorded(c, &t, txn_id, &recorded))
                .await;
            if let Err(e) = r {
                self.in_doubt.put_back(txn_id, shard_id, changes);
                return Err(e);
            }
            tracing::info!(txn_id, shard_id, "committed an in-doubt transaction");
            self.prepared.forget(txn_id, shard_id);
        } else {
            let prepared = self.prepared.clone();
            tokio::task::spawn_blocking(move || prepared.forget_durably(txn_id, shard_id))
                .await
                .map_err(|_| StorageError::WorkerGone)??;
        }
        Ok(())
    }

    /// Whether a transaction is in doubt on `shard` (those whose wait ran out rolled back).
    pub(super) fn in_doubt_on(&self, shard: u64) -> bool {
        for (txn, s) in self.in_doubt.expired() {
            self.prepared.forget(txn, s);
        }
        self.in_doubt.on(shard)
    }

    /// Sorts the prepared log's records at start: a transaction whose id is in its shard's
    /// committed table committed before the stop (its record is forgotten); one marked
    /// committed that its shard lost (its commit was not fsynced there, `prepared.rs`)
    /// commits now; the others are in doubt. Then the committed tables are emptied: they only
    /// tell records left behind.
    pub(super) fn sort_out_prepared(
        &self,
        records: Vec<Record>,
        manifest: &Manifest,
    ) -> Result<Vec<Record>, StorageError> {
        let mut undecided = Vec::new();
        for r in records {
            let Some(entry) = manifest.shards.iter().find(|e| e.id == r.shard) else {
                self.prepared.forget_durably(r.txn, r.shard)?;
                continue;
            };
            let c = Connection::open(self.shard_path(entry.id, entry.kind))?;
            let committed: bool = c.query_row(
                &format!("SELECT EXISTS (SELECT 1 FROM main.{COMMITTED_TABLE} WHERE txn = ?1)"),
                [r.txn as i64],
                |row| row.get(0),
            )?;
            if committed {
                self.prepared.forget_durably(r.txn, r.shard)?;
            } else if r.committed {
                let mut c = open_connection(
                    &self.config,
                    &self.shard_path(entry.id, entry.kind),
                    entry.kind,
                    self.doc_module(entry.id),
                )?;
                let t = self.tracker(&mut c, entry.id, entry.kind)?;
                crate::work::commit_recorded(&mut c, &t, r.txn, &r.changes)?;
                tracing::warn!(
                    txn = r.txn,
                    shard = r.shard,
                    "applied again a commit its shard lost in the stop"
                );
                self.prepared.forget_durably(r.txn, r.shard)?;
            } else {
                tracing::warn!(txn = r.txn, shard = r.shard, "a transaction prepared before the restart is in doubt until its coordinator decides it");
                undecided.push(r);
            }
        }
        for entry in &manifest.shards {
            let c = Connection::open(self.shard_path(entry.id, entry.kind))?;
            let any: bool = c.query_row(
                &format!("SELECT EXISTS (SELECT 1 FROM main.{COMMITTED_TABLE})"),
                [],
                |row| row.get(0),
            )?;
            if any {
                c.execute(&format!("DELETE FROM main.{COMMITTED_TABLE}"), [])?;
            }
        }
        Ok(undecided)
    }
}

/// Test hook: with `TESSERA_FAULT=crash-before-prepared-commit`, the process dies at the
/// commit of its `TESSERA_FAULT_AFTER`-th prepared transaction (the first by default), after
/// its prepare and before its commit.
pub(super) fn crash_before_prepared_commit() {
    static SEEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if std::env::var("TESSERA_FAULT").as_deref() != Ok("crash-before-prepared-commit") {
        return;
    }
    let after: u64 = std::env::var("TESSERA_FAULT_AFTER")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if SEEN.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= after {
        std::process::abort();
    }
}

/// Now and then (one commit of a recorded transaction in 1,024 on this node), empties a
/// shard's committed table of every transaction no longer recorded in the prepared log: the
/// table only tells, after a crash, which left-behind records committed.
pub(super) fn prune_committed(c: &Connection, prepared: &PreparedLog, shard: u64) {
    static COMMITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if COMMITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 1024 != 1023 {
        return;
    }
    let live = serde_json::to_string(&prepared.live_on(shard)).unwrap_or_else(|_| "[]".into());
    let sql = format!(
        "DELETE FROM main.{COMMITTED_TABLE} WHERE txn NOT IN (SELECT value FROM json_each(?1))"
    );
    if let Err(e) = c.execute(&sql, [live]) {
        tracing::warn!(shard, error = %e, "could not prune the committed table");
    }
}
