//! Who holds each shard's write lock, and how a transaction waits for it: a transaction waits
//! for a younger holder up to the lock timeout, for an older one only `younger_wait_ms`, so
//! every cycle of waiting transactions breaks within that time on its youngest member.

use dashmap::DashMap;
use rusqlite::Connection;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tessera_shared::REFERENCE_SCOPE;

/// Database → the transaction holding its write lock, as far as this node knows.
///
/// SQLite locks a whole database for writing, and a distributed transaction holds such
/// locks on several shards until it commits, so two transactions that lock two shards in
/// opposite orders would wait for each other until the lock timeout. Transaction ids are
/// ordered by start time (the coordinator makes them so). A transaction waits for a younger
/// holder as long as the lock timeout allows, but for an older one only `younger_wait_ms`
/// (then it fails with SQLSTATE 40001, to be retried). Every cycle of waiting transactions
/// has a younger-waits-for-older edge, so every cycle breaks within that time, while a
/// queue behind a hot row's shard (an older holder finishing within milliseconds) still
/// waits instead of failing. With no wait at all ("wait-die"), pgbench's hot branch rows
/// failed three transactions in four.
#[derive(Default)]
pub(crate) struct LockHolders(DashMap<u64, u64>);

impl LockHolders {
    /// Whether a transaction older than `txn` holds the lock of `db`.
    pub(crate) fn older_holds(&self, db: u64, txn: u64) -> bool {
        self.0.get(&db).is_some_and(|h| *h < txn)
    }

    /// Records the locks `txn` holds after a batch on `conn` (`main_db` is the key of its main
    /// database).
    pub(crate) fn note(&self, conn: &Connection, main_db: u64, txn: u64) {
        use rusqlite::TransactionState;
        if let Ok(TransactionState::Write) = conn.transaction_state(Some(rusqlite::MAIN_DB)) {
            self.0.insert(main_db, txn);
        }
        if main_db != REFERENCE_SCOPE {
            if let Ok(TransactionState::Write) = conn.transaction_state(Some(c"ref")) {
                self.0.insert(REFERENCE_SCOPE, txn);
            }
        }
    }

    /// Whether no transaction holds a lock.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Forgets the locks of a finished transaction.
    pub(crate) fn release(&self, txn: u64) {
        self.0.retain(|_, h| *h != txn);
    }
}

/// The lock wait limit, shared by every connection of this node (a busy handler is a plain fn).
static BUSY_TIMEOUT_MS: AtomicU64 = AtomicU64::new(2000);

/// Waits for another transaction's lock: short sleeps growing to 1 ms (SQLite's own handler
/// sleeps up to 100 ms at a time, which stalls short contended transactions), until the
/// configured limit; then the statement fails with SQLITE_BUSY (SQLSTATE 40001).
pub(crate) fn wait_for_lock(attempt: i32) -> bool {
    if waited_ms(attempt) >= BUSY_TIMEOUT_MS.load(Ordering::Relaxed) {
        return false;
    }
    let step_us = (50u64 << attempt.clamp(0, 5) as u32).min(1000);
    std::thread::sleep(Duration::from_micros(step_us));
    true
}

/// Milliseconds slept by [`wait_for_lock`] before attempt `attempt`: attempts 0..5 sleep
/// 50..800 µs (1.55 ms in all); each later attempt sleeps 1 ms.
pub(crate) fn waited_ms(attempt: i32) -> u64 {
    if attempt < 5 {
        0
    } else {
        (1550 + (attempt as u64 - 5) * 1000) / 1000
    }
}

/// Sets the lock wait limit of every connection of this node.
pub(crate) fn set_busy_timeout_ms(ms: u64) {
    BUSY_TIMEOUT_MS.store(ms.max(1), Ordering::Relaxed);
}

/// The busy handler of a transaction's connection: waits as [`wait_for_lock`] does, but for a
/// lock an older transaction holds only `younger_wait_ms` (`serving` is the transaction the
/// connection serves now; `main_db` the lock key of its main database).
pub(crate) fn txn_busy_handler(
    holders: std::sync::Arc<LockHolders>,
    main_db: u64,
    serving: std::sync::Arc<AtomicU64>,
    younger_wait_ms: u64,
) -> impl FnMut(i32) -> bool + Send + 'static {
    move |attempt: i32| {
        let txn = serving.load(Ordering::SeqCst);
        let older = holders.older_holds(main_db, txn) || holders.older_holds(REFERENCE_SCOPE, txn);
        if older && waited_ms(attempt) >= younger_wait_ms {
            return false;
        }
        wait_for_lock(attempt)
    }
}
