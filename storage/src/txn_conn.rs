//! A transaction's connection: a thread owning an SQLite connection to one shard, its change
//! tracker, its idle limit and the transaction it serves. When a transaction ends, its
//! connection goes back to its shard's pool with a new transaction begun, and the next
//! transaction on the shard takes it: opening a connection (the file, its WAL and a directory
//! fsync on the first commit, the functions, the reference database) and starting a thread
//! cost more than a replicated single-row write did otherwise.

use crate::versions::ChangeTracker;
use crate::worker::Worker;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Idle connections kept per shard; more are closed.
pub const POOLED_PER_SHARD: usize = 8;

/// The idle limit of a pooled connection: none (it serves no transaction).
const POOLED_IDLE_MS: u64 = u64::MAX / 4;

/// A transaction's connection (see the module documentation).
#[derive(Clone)]
pub struct TxnConn {
    /// The connection's thread.
    pub worker: Worker,
    /// Records the connection's committed writes.
    pub tracker: Arc<ChangeTracker>,
    /// Milliseconds without work after which the transaction is rolled back.
    pub idle: Arc<AtomicU64>,
    /// The transaction served (0 while pooled); the busy handler and the idle rollback read it.
    pub serving: Arc<AtomicU64>,
}

impl TxnConn {
    /// Starts serving `txn`, rolled back after `idle` without work.
    pub fn serve(&self, txn: u64, idle: Duration) {
        self.serving.store(txn, Ordering::SeqCst);
        self.idle
            .store(idle.as_millis().max(1) as u64, Ordering::SeqCst);
    }
}

/// Connections of finished transactions, by shard.
#[derive(Default)]
pub struct TxnPool(DashMap<u64, Vec<TxnConn>>);

impl TxnPool {
    /// A pooled connection to `shard`, if one is free.
    pub fn take(&self, shard: u64) -> Option<TxnConn> {
        self.0.get_mut(&shard)?.pop()
    }

    /// Keeps `conn` (its transaction ended, a new one begun) for the next transaction on
    /// `shard`; beyond [`POOLED_PER_SHARD`] it is dropped, and its thread ends.
    pub fn put(&self, shard: u64, conn: TxnConn) {
        conn.serving.store(0, Ordering::SeqCst);
        conn.idle.store(POOLED_IDLE_MS, Ordering::SeqCst);
        let mut free = self.0.entry(shard).or_default();
        if free.len() < POOLED_PER_SHARD {
            free.push(conn);
        }
    }

    /// Drops every pooled connection (their threads end).
    pub fn clear(&self) {
        self.0.clear();
    }

    /// Every pooled connection to `shard` (it is being dropped).
    pub fn drain(&self, shard: u64) -> Vec<TxnConn> {
        self.0.remove(&shard).map(|(_, v)| v).unwrap_or_default()
    }
}
