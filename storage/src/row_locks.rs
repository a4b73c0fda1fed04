//! Row locks: the rows an open transaction wrote on this node stay locked until it ends. A
//! writer that meets a row another transaction locked waits for that transaction to end, then
//! runs its statement again against the newest committed rows (PostgreSQL's READ COMMITTED);
//! a cycle of waits fails its youngest member with `40P01`.
//!
//! A transaction's statements run on arrival in a short SQLite transaction of their own and
//! are rolled back at once, their row changes kept ([`crate::deferred`]); the lock on each
//! changed row is what keeps a later writer off it until the changes commit. Locks are taken
//! while the statement still holds SQLite's write lock on its shard, so taking them is atomic
//! with the statement against every other writer of the shard.
//!
//! Waits are detected exactly on one node: every wait is an edge waiter → holder, and an
//! edge that closes a cycle fails the cycle's youngest transaction (the largest id; the
//! coordinator hands out ids in start order). A cycle through several nodes shows on none of
//! them whole: a transaction waiting for an *older* one gives up after `deadlock_timeout_ms`
//! (PostgreSQL's `deadlock_timeout` is 1 s too) with `40P01`; every cycle holds such an edge,
//! so every cycle breaks within that time. Any wait ends after the lock wait limit
//! (`busy_timeout_ms`) with `55P03`.

use crate::error::StorageError;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// A locked row: its shard, its table, its primary key (encoded by [`crate::capture`]).
pub type RowKey = (u64, String, Vec<u8>);

/// The transactions holding one row: one exclusively (it wrote the row or read it `FOR
/// UPDATE`), or any number sharing it (`FOR SHARE`).
#[derive(Debug, Default)]
struct Holders {
    exclusive: Option<u64>,
    shared: Vec<u64>,
}

impl Holders {
    /// A holder other than `txn` that keeps `txn` from taking the row (`shared`: to share it).
    fn conflict(&self, txn: u64, shared: bool) -> Option<u64> {
        match self.exclusive {
            Some(h) if h != txn => Some(h),
            _ if shared => None,
            _ => self.shared.iter().copied().find(|h| *h != txn),
        }
    }

    fn holds(&self, txn: u64) -> bool {
        self.exclusive == Some(txn) || self.shared.contains(&txn)
    }

    fn is_empty(&self) -> bool {
        self.exclusive.is_none() && self.shared.is_empty()
    }
}

#[derive(Default)]
struct Inner {
    /// Row → the transactions holding it.
    held: HashMap<RowKey, Holders>,
    /// Transaction → the rows it holds.
    by_txn: HashMap<u64, Vec<RowKey>>,
    /// Shard → how many of its rows are locked.
    per_shard: HashMap<u64, usize>,
    /// Waiting transaction → the transaction it waits for.
    waits: HashMap<u64, u64>,
    /// Waiting transactions chosen to break a cycle: their wait fails.
    victims: HashSet<u64>,
}

/// How long a wait may last.
#[derive(Debug, Clone, Copy)]
pub struct WaitLimits {
    /// Any wait ends after this long (`55P03`).
    pub lock_timeout: Duration,
    /// A wait for an older transaction ends after this long (`40P01`).
    pub deadlock_timeout: Duration,
}

/// The row locks of every shard of this node (see the module documentation).
#[derive(Default)]
pub struct RowLocks {
    inner: Mutex<Inner>,
    released: tokio::sync::Notify,
}

impl RowLocks {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks `rows` exclusively for `txn`: all of them, or none when another transaction
    /// holds one (then that transaction is returned).
    pub fn lock(&self, txn: u64, rows: Vec<RowKey>) -> Result<(), u64> {
        self.take(txn, rows, false)
    }

    /// Locks `rows` for `txn` to share with other sharers (`FOR SHARE`), as [`RowLocks::lock`].
    pub fn lock_shared(&self, txn: u64, rows: Vec<RowKey>) -> Result<(), u64> {
        self.take(txn, rows, true)
    }

    fn take(&self, txn: u64, rows: Vec<RowKey>, shared: bool) -> Result<(), u64> {
        let mut inner = self.inner();
        if let Some(holder) = rows
            .iter()
            .filter_map(|r| inner.held.get(r))
            .find_map(|h| h.conflict(txn, shared))
        {
            return Err(holder);
        }
        for row in rows {
            let holders = inner.held.entry(row.clone()).or_default();
            let (was_empty, had) = (holders.is_empty(), holders.holds(txn));
            if shared {
                if holders.exclusive != Some(txn) && !had {
                    holders.shared.push(txn);
                }
            } else {
                holders.shared.retain(|h| *h != txn);
                holders.exclusive = Some(txn);
            }
            if was_empty {
                *inner.per_shard.entry(row.0).or_default() += 1;
            }
            if !had {
                inner.by_txn.entry(txn).or_default().push(row);
            }
        }
        Ok(())
    }

    /// A transaction other than `txn` that keeps it from taking `row` (`shared`: to share it).
    pub fn conflict(&self, txn: u64, row: &RowKey, shared: bool) -> Option<u64> {
        self.inner().held.get(row)?.conflict(txn, shared)
    }

    /// A transaction holding one of `rows`, if any (an autocommit write checks, but holds
    /// nothing past its own commit).
    pub fn holder_of(&self, rows: &[RowKey]) -> Option<u64> {
        let inner = self.inner();
        rows.iter()
            .filter_map(|r| inner.held.get(r))
            .find_map(|h| h.exclusive.or_else(|| h.shared.first().copied()))
    }

    /// Whether any row of `shard` is locked.
    pub fn any_on(&self, shard: u64) -> bool {
        self.inner().per_shard.get(&shard).is_some_and(|n| *n > 0)
    }

    /// Whether `txn` holds `row`.
    pub fn held_by(&self, txn: u64, row: &RowKey) -> bool {
        self.inner().held.get(row).is_some_and(|h| h.holds(txn))
    }

    /// Releases `rows` of `txn` (a locking read's rows the client never got) and wakes the
    /// transactions waiting.
    pub fn unlock(&self, txn: u64, rows: &[RowKey]) {
        self.release_where(txn, |row| rows.contains(row));
    }

    /// Releases every row `txn` holds and wakes the transactions waiting.
    pub fn release(&self, txn: u64) {
        self.release_where(txn, |_| true);
    }

    /// Releases the rows `txn` holds on `shard` (its work there ended: committed, rolled
    /// back) and wakes the transactions waiting. Its rows elsewhere stay locked until its work
    /// there ends too: a commit on one shard must not free rows whose commit on another shard
    /// of the node has not run yet.
    pub fn release_on(&self, txn: u64, shard: u64) {
        self.release_where(txn, |row| row.0 == shard);
    }

    fn release_where(&self, txn: u64, which: impl Fn(&RowKey) -> bool) {
        let mut inner = self.inner();
        let Some(rows) = inner.by_txn.remove(&txn) else {
            return;
        };
        let (freed, kept): (Vec<RowKey>, Vec<RowKey>) = rows.into_iter().partition(which);
        if !kept.is_empty() {
            inner.by_txn.insert(txn, kept);
        }
        for row in freed {
            let Some(holders) = inner.held.get_mut(&row) else {
                continue;
            };
            if holders.exclusive == Some(txn) {
                holders.exclusive = None;
            }
            holders.shared.retain(|h| *h != txn);
            if holders.is_empty() {
                inner.held.remove(&row);
                if let Some(n) = inner.per_shard.get_mut(&row.0) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        drop(inner);
        self.released.notify_waiters();
    }

    /// Waits until no row of `shard` is locked; false when that takes longer than `limit`.
    pub async fn wait_shard_free(&self, shard: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if !self.any_on(shard) {
                return true;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return !self.any_on(shard);
            }
        }
    }

    /// Whether `txn` waits for a row.
    pub fn waits_for(&self, txn: u64) -> bool {
        self.inner().waits.contains_key(&txn)
    }

    /// Whether `txn` holds any row.
    pub fn holds(&self, txn: u64) -> bool {
        self.inner().by_txn.contains_key(&txn)
    }

    /// Waits until `holder` holds no row (it ended), or fails: `40P01` when the wait closes
    /// a cycle and `waiter` is its youngest member, or it waits for an older transaction past
    /// `deadlock_timeout`; `55P03` past `lock_timeout`.
    pub async fn wait(
        &self,
        waiter: u64,
        holder: u64,
        limits: WaitLimits,
    ) -> Result<(), StorageError> {
        let start = Instant::now();
        let limit = if holder < waiter {
            limits.deadlock_timeout.min(limits.lock_timeout)
        } else {
            limits.lock_timeout
        };
        // An autocommit write (`waiter` 0) holds nothing, so it closes no cycle.
        if waiter != 0 {
            let mut inner = self.inner();
            inner.waits.insert(waiter, holder);
            if let Some(youngest) = cycle_youngest(&inner.waits, waiter) {
                if youngest == waiter {
                    inner.waits.remove(&waiter);
                    return Err(deadlock(waiter, holder));
                }
                inner.victims.insert(youngest);
                drop(inner);
                self.released.notify_waiters();
            }
        }
        let outcome = loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let mut inner = self.inner();
                if waiter != 0 && inner.victims.remove(&waiter) {
                    break Err(deadlock(waiter, holder));
                }
                if !inner.by_txn.contains_key(&holder) {
                    break Ok(());
                }
            }
            if tokio::time::timeout_at(start + limit, released)
                .await
                .is_err()
            {
                break Err(match holder < waiter && limit < limits.lock_timeout {
                    true => deadlock(waiter, holder),
                    false => lock_timeout(waiter, holder),
                });
            }
        };
        if waiter != 0 {
            let mut inner = self.inner();
            inner.waits.remove(&waiter);
            inner.victims.remove(&waiter);
        }
        outcome
    }
}

/// The youngest transaction of the cycle of waits through `from`, if there is one.
fn cycle_youngest(waits: &HashMap<u64, u64>, from: u64) -> Option<u64> {
    let mut youngest = from;
    let mut at = *waits.get(&from)?;
    for _ in 0..=waits.len() {
        if at == from {
            return Some(youngest);
        }
        youngest = youngest.max(at);
        at = *waits.get(&at)?;
    }
    None
}

/// `40P01`: a cycle of waits broken on `waiter`.
pub fn deadlock(waiter: u64, holder: u64) -> StorageError {
    StorageError::Sql {
        sqlstate: "40P01",
        message: format!(
            "deadlock detected: transaction {waiter} waits for transaction {holder}, which waits for it"
        ),
    }
}

/// `55P03`: a row lock not granted within the lock wait limit.
pub fn lock_timeout(waiter: u64, holder: u64) -> StorageError {
    StorageError::Sql {
        sqlstate: "55P03",
        message: format!(
            "canceling statement due to lock timeout: transaction {waiter} waited for a row transaction {holder} holds"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn row(n: u8) -> RowKey {
        (1, "t".into(), vec![n])
    }

    const LIMITS: WaitLimits = WaitLimits {
        lock_timeout: Duration::from_secs(20),
        deadlock_timeout: Duration::from_secs(20),
    };

    #[test]
    fn a_row_has_one_holder_until_it_ends() {
        let l = RowLocks::default();
        l.lock(1, vec![row(1), row(2)]).expect("free");
        assert_eq!(l.lock(2, vec![row(3), row(2)]), Err(1));
        // All or nothing: row 3 stayed free.
        assert_eq!(l.holder_of(&[row(3)]), None);
        l.lock(1, vec![row(2), (2, "t".into(), vec![1])])
            .expect("its own");
        assert!(l.any_on(1) && l.any_on(2));
        l.release_on(1, 2);
        assert!(l.any_on(1) && !l.any_on(2) && l.holds(1));
        l.release(1);
        assert!(!l.any_on(1));
        l.lock(2, vec![row(2)]).expect("released");
    }

    #[test]
    fn sharers_share_a_row_and_keep_writers_off_it() {
        let l = RowLocks::default();
        l.lock_shared(1, vec![row(1)]).expect("free");
        l.lock_shared(2, vec![row(1)]).expect("shared");
        assert_eq!(l.lock(3, vec![row(1)]), Err(1));
        // A sharer cannot write the row while another shares it; alone, it can.
        assert_eq!(l.lock(1, vec![row(1)]), Err(2));
        l.release(2);
        l.lock(1, vec![row(1)]).expect("upgraded");
        assert_eq!(l.lock_shared(3, vec![row(1)]), Err(1));
        assert_eq!(l.conflict(3, &row(1), true), Some(1));
        l.release(1);
        assert!(!l.any_on(1));
        assert_eq!(l.conflict(3, &row(1), false), None);
    }

    #[tokio::test]
    async fn a_waiter_goes_on_when_the_holder_ends() {
        let l = Arc::new(RowLocks::default());
        l.lock(1, vec![row(1)]).expect("free");
        let w = tokio::spawn({
            let l = l.clone();
            async move { l.wait(2, 1, LIMITS).await }
        });
        tokio::task::yield_now().await;
        assert!(!w.is_finished());
        l.release(1);
        w.await.expect("join").expect("granted");
    }

    #[tokio::test]
    async fn a_cycle_fails_its_youngest_member() {
        let l = Arc::new(RowLocks::default());
        l.lock(1, vec![row(1)]).expect("free");
        l.lock(2, vec![row(2)]).expect("free");
        // 2 (younger) waits for 1; then 1 waits for 2: the cycle fails 2, whose wait started first.
        let young = tokio::spawn({
            let l = l.clone();
            async move { l.wait(2, 1, LIMITS).await }
        });
        while !l.inner().waits.contains_key(&2) {
            tokio::task::yield_now().await;
        }
        let old = tokio::spawn({
            let l = l.clone();
            async move { l.wait(1, 2, LIMITS).await }
        });
        let e = young.await.expect("join").expect_err("victim");
        assert_eq!(e.sqlstate(), "40P01", "{e}");
        l.release(2);
        old.await.expect("join").expect("granted");
        // The youngest closing the cycle itself fails at once.
        l.lock(3, vec![row(3)]).expect("free");
        let waiting = tokio::spawn({
            let l = l.clone();
            async move { l.wait(1, 3, LIMITS).await }
        });
        while !l.inner().waits.contains_key(&1) {
            tokio::task::yield_now().await;
        }
        l.lock(1, vec![row(4)]).expect("free");
        let e = l.wait(3, 1, LIMITS).await.expect_err("closes the cycle");
        assert_eq!(e.sqlstate(), "40P01");
        l.release(3);
        waiting.await.expect("join").expect("granted");
    }

    #[tokio::test]
    async fn waits_for_older_transactions_end_at_the_deadlock_timeout() {
        let l = RowLocks::default();
        l.lock(1, vec![row(1)]).expect("free");
        l.lock(3, vec![row(3)]).expect("free");
        let short = WaitLimits {
            lock_timeout: Duration::from_millis(200),
            deadlock_timeout: Duration::from_millis(20),
        };
        let e = l.wait(2, 1, short).await.expect_err("older holder");
        assert_eq!(e.sqlstate(), "40P01");
        let e = l.wait(2, 3, short).await.expect_err("younger holder");
        assert_eq!(e.sqlstate(), "55P03");
        assert!(l.inner().waits.is_empty());
    }
}
