//! Transactions in doubt: prepared on a shard copy whose process stopped before their commit
//! decision arrived. Their row changes are in the prepared log ([`crate::prepared`]); their
//! SQLite transaction is gone. Until a coordinator sends the decision (COMMIT applies the
//! recorded changes, ROLLBACK forgets them) the shard refuses writes with `40001`, as the
//! transaction's locks would have held them off: a write in between could change the rows the
//! decision then applies to. Reads go on. A coordinator resolves its undecided and decided
//! transactions when it starts (`txn/log.rs`); one never resolved is rolled back after the
//! node's idle limit for transactions, as an open prepared transaction would have been.

use crate::error::StorageError;
use crate::prepared::Record;
use dashmap::DashMap;
use std::time::{Duration, Instant};

/// A transaction's recorded row changes, and since when it waits for its decision.
type Waiting = (Vec<Vec<u8>>, Instant);

/// The in-doubt transactions of a node, by (transaction, shard).
pub struct InDoubt {
    map: DashMap<(u64, u64), Waiting>,
    /// How long one waits for its decision before it is rolled back.
    limit: Duration,
}

impl InDoubt {
    /// The records found at start that did not commit (see `shards.rs`).
    pub fn new(records: Vec<Record>, limit: Duration) -> InDoubt {
        let now = Instant::now();
        let map = records
            .into_iter()
            .map(|r| ((r.txn, r.shard), (r.changes, now)))
            .collect();
        InDoubt { map, limit }
    }

    /// Takes the recorded changes of `txn` on `shard`, if it is in doubt there.
    pub fn take(&self, txn: u64, shard: u64) -> Option<Vec<Vec<u8>>> {
        self.map
            .remove(&(txn, shard))
            .map(|(_, (changes, _))| changes)
    }

    /// Puts back changes taken by [`InDoubt::take`] whose commit failed.
    pub fn put_back(&self, txn: u64, shard: u64, changes: Vec<Vec<u8>>) {
        self.map.insert((txn, shard), (changes, Instant::now()));
    }

    /// The transactions whose wait for a decision ran out (to roll back), removed.
    pub fn expired(&self) -> Vec<(u64, u64)> {
        let gone: Vec<(u64, u64)> = self
            .map
            .iter()
            .filter(|e| e.value().1.elapsed() >= self.limit)
            .map(|e| *e.key())
            .collect();
        for key in &gone {
            self.map.remove(key);
            tracing::warn!(
                txn = key.0,
                shard = key.1,
                "no coordinator decided an in-doubt transaction within the idle limit; rolled back"
            );
        }
        gone
    }

    /// `40001` when a transaction is in doubt on `shard`.
    pub fn refuse_writes(&self, shard: u64) -> Result<(), StorageError> {
        match self.map.iter().find(|e| e.key().1 == shard) {
            None => Ok(()),
            Some(e) => Err(StorageError::Sql {
                sqlstate: "40001",
                message: format!(
                    "could not serialize access: transaction {} is in doubt on shard {shard} (prepared before the storage node restarted) until its coordinator decides it; retry",
                    e.key().0
                ),
            }),
        }
    }

    /// Whether any transaction is in doubt on `shard`.
    pub fn on(&self, shard: u64) -> bool {
        self.map.iter().any(|e| e.key().1 == shard)
    }

    /// Forgets the transactions of a dropped shard.
    pub fn drop_shard(&self, shard: u64) -> Vec<u64> {
        let txns: Vec<u64> = self
            .map
            .iter()
            .filter(|e| e.key().1 == shard)
            .map(|e| e.key().0)
            .collect();
        self.map.retain(|k, _| k.1 != shard);
        txns
    }
}
