//! Prepared transactions that outlive a crash: when a shard copy prepares a transaction, the
//! transaction's row changes are written to the node's prepared log and fsynced before the
//! prepare is acknowledged. A copy whose process dies between its prepare and its commit loses
//! the open SQLite transaction but not the changes: at the next start the transaction is *in
//! doubt* (its shard takes no writes) until a coordinator sends the decision, and COMMIT then
//! applies the recorded changes (`shards.rs`).
//!
//! - One SQLite file per node, `prepared.db` (format version in `PRAGMA user_version`), one row
//!   per (transaction, shard): the changes as length-prefixed patchsets, in the order made.
//! - Group commit: one writer thread takes every waiting request, writes them in one SQLite
//!   transaction and fsyncs once; concurrent prepares share the fsync.
//! - A record is forgotten after its transaction commits or rolls back on the copy. A commit
//!   also writes the transaction id to the shard's `__tessera_committed` table in the same
//!   SQLite transaction, so a record left behind by a crash between the commit and the forget
//!   is recognised at start as committed, not applied twice.

use crate::error::StorageError;
use dashmap::DashSet;
use rusqlite::{params, Connection};
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Format version of `prepared.db`.
pub const PREPARED_LOG_VERSION: i64 = 1;

/// The shard table that names the prepared transactions committed on a copy.
pub const COMMITTED_TABLE: &str = "__tessera_committed";

/// A transaction prepared on one shard copy, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The transaction id.
    pub txn: u64,
    /// The shard.
    pub shard: u64,
    /// Its row changes, as patchsets in the order they were made.
    pub changes: Vec<Vec<u8>>,
}

enum Op {
    Put(Record, mpsc::Sender<Result<(), StorageError>>),
    Forget(u64, u64, Option<mpsc::Sender<Result<(), StorageError>>>),
}

/// The node's prepared log (see the module documentation).
pub struct PreparedLog {
    tx: std::sync::Mutex<mpsc::Sender<Op>>,
    /// The (transaction, shard) pairs recorded and not forgotten.
    live: Arc<DashSet<(u64, u64)>>,
}

impl PreparedLog {
    /// Opens (or creates) `path` and starts its writer; returns the records it holds.
    /// `synchronous` is the node's setting (`full` fsyncs every write, as shard commits do).
    pub fn open(
        path: &Path,
        synchronous: &str,
    ) -> Result<(PreparedLog, Vec<Record>), StorageError> {
        let conn = Connection::open(path)?;
        let sync = crate::config::sqlite_synchronous(synchronous);
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};"
        ))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        match version {
            0 => conn.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS prepared (txn INTEGER NOT NULL, shard INTEGER NOT NULL, \
                 changes BLOB NOT NULL, PRIMARY KEY (txn, shard)); PRAGMA user_version = {PREPARED_LOG_VERSION};"
            ))?,
            PREPARED_LOG_VERSION => {}
            v => {
                return Err(StorageError::Manifest(format!(
                    "{} has format version {v}; this build reads {PREPARED_LOG_VERSION}",
                    path.display()
                )))
            }
        }
        let records = {
            let mut st = conn.prepare("SELECT txn, shard, changes FROM prepared ORDER BY txn")?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (txn, shard, blob) = row?;
                let changes = decode(&blob).ok_or_else(|| {
                    StorageError::Manifest(format!(
                        "{}: the record of transaction {txn} on shard {shard} is damaged",
                        path.display()
                    ))
                })?;
                out.push(Record {
                    txn,
                    shard,
                    changes,
                });
            }
            out
        };
        let live: Arc<DashSet<(u64, u64)>> =
            Arc::new(records.iter().map(|r| (r.txn, r.shard)).collect());
        let (tx, rx) = mpsc::channel();
        let forgotten = live.clone();
        std::thread::Builder::new()
            .name("prepared-log".into())
            .spawn(move || writer(conn, rx, &forgotten))?;
        Ok((
            PreparedLog {
                tx: std::sync::Mutex::new(tx),
                live,
            },
            records,
        ))
    }

    fn send(&self, op: Op) -> Result<(), StorageError> {
        self.tx
            .lock()
            .map_err(|_| StorageError::WorkerGone)?
            .send(op)
            .map_err(|_| StorageError::WorkerGone)
    }

    /// Records `changes` as the prepared changes of `txn` on `shard` and returns once they are
    /// on disk. Blocks: call it from a connection thread, never from the async runtime.
    pub fn put(&self, txn: u64, shard: u64, changes: Vec<Vec<u8>>) -> Result<(), StorageError> {
        let (done, wait) = mpsc::channel();
        let record = Record {
            txn,
            shard,
            changes,
        };
        self.send(Op::Put(record, done))?;
        wait.recv().map_err(|_| StorageError::WorkerGone)??;
        self.live.insert((txn, shard));
        Ok(())
    }

    /// Forgets the record of `txn` on `shard` (its transaction ended there), without waiting.
    /// The deletion reaches the disk with the next prepare's fsync (or within
    /// [`LAZY_FORGET`]): a record still on disk after a crash is recognised by its shard's
    /// committed table, or, rolled back, holds a shard's writes until its decision comes
    /// again. The record counts as kept ([`PreparedLog::holds`]) until then.
    pub fn forget(&self, txn: u64, shard: u64) {
        if self.live.contains(&(txn, shard)) {
            let _ = self.send(Op::Forget(txn, shard, None));
        }
    }

    /// Forgets the record of `txn` on `shard` and returns once that is on disk.
    pub fn forget_durably(&self, txn: u64, shard: u64) -> Result<(), StorageError> {
        let (done, wait) = mpsc::channel();
        self.send(Op::Forget(txn, shard, Some(done)))?;
        wait.recv().map_err(|_| StorageError::WorkerGone)?
    }

    /// Whether a record of `txn` on `shard` is kept.
    pub fn holds(&self, txn: u64, shard: u64) -> bool {
        self.live.contains(&(txn, shard))
    }

    /// The transactions with a record on `shard`.
    pub fn live_on(&self, shard: u64) -> Vec<u64> {
        self.live
            .iter()
            .filter(|k| k.1 == shard)
            .map(|k| k.0)
            .collect()
    }
}

/// How long a forget may wait for a prepare's fsync to take it to disk.
pub const LAZY_FORGET: Duration = Duration::from_millis(200);

/// The writer thread: every request waiting is written in one transaction, one fsync. Forgets
/// nobody waits for ride along with the next batch that must reach the disk (a prepare), so a
/// transaction costs one fsync of this log, not two. A record leaves `live` once its forget is
/// on disk.
fn writer(mut conn: Connection, rx: mpsc::Receiver<Op>, live: &DashSet<(u64, u64)>) {
    let mut lazy: Vec<Op> = Vec::new();
    let mut oldest = Instant::now();
    loop {
        let first = if lazy.is_empty() {
            rx.recv().ok()
        } else {
            match rx.recv_timeout(LAZY_FORGET.saturating_sub(oldest.elapsed())) {
                Ok(op) => Some(op),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => None,
            }
        };
        let stopping = first.is_none() && lazy.is_empty();
        if stopping {
            return;
        }
        let mut ops: Vec<Op> = first.into_iter().chain(rx.try_iter()).collect();
        let urgent = ops.iter().any(|op| !matches!(op, Op::Forget(_, _, None)));
        if lazy.is_empty() {
            oldest = Instant::now();
        }
        if !urgent && oldest.elapsed() < LAZY_FORGET {
            lazy.append(&mut ops);
            continue;
        }
        ops.append(&mut lazy);
        // Kept as SQLSTATE and text: every waiting request gets its own copy of the failure.
        let result = write_all(&mut conn, &ops).map_err(|e| (e.sqlstate(), e.to_string()));
        if let Err((_, e)) = &result {
            tracing::error!(error = %e, "the prepared log could not be written");
        }
        for op in ops {
            let reply = result
                .clone()
                .map_err(|(sqlstate, message)| StorageError::Sql {
                    sqlstate,
                    message: format!("could not record a prepared transaction: {message}"),
                });
            match op {
                Op::Put(_, done) => {
                    let _ = done.send(reply);
                }
                Op::Forget(txn, shard, done) => {
                    if reply.is_ok() {
                        live.remove(&(txn, shard));
                    }
                    if let Some(done) = done {
                        let _ = done.send(reply);
                    }
                }
            }
        }
    }
}

fn write_all(conn: &mut Connection, ops: &[Op]) -> Result<(), StorageError> {
    let t = conn.transaction()?;
    for op in ops {
        match op {
            Op::Put(r, _) => {
                t.execute(
                    "INSERT OR REPLACE INTO prepared (txn, shard, changes) VALUES (?1, ?2, ?3)",
                    params![r.txn as i64, r.shard as i64, encode(&r.changes)],
                )?;
            }
            Op::Forget(txn, shard, _) => {
                t.execute(
                    "DELETE FROM prepared WHERE txn = ?1 AND shard = ?2",
                    params![*txn as i64, *shard as i64],
                )?;
            }
        }
    }
    t.commit()?;
    Ok(())
}

/// Patchsets as one blob: each a little-endian u32 length, then its bytes.
fn encode(changes: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(changes.iter().map(|c| c.len() + 4).sum());
    for c in changes {
        out.extend_from_slice(&(c.len() as u32).to_le_bytes());
        out.extend_from_slice(c);
    }
    out
}

fn decode(mut blob: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !blob.is_empty() {
        let len = u32::from_le_bytes(blob.get(..4)?.try_into().ok()?) as usize;
        out.push(blob.get(4..4 + len)?.to_vec());
        blob = &blob[4 + len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen_until_forgotten() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("prepared.db");
        {
            let (log, records) = PreparedLog::open(&path, "full").expect("open");
            assert!(records.is_empty());
            log.put(7, 1, vec![b"ab".to_vec(), vec![], b"c".to_vec()])
                .expect("put");
            log.put(8, 1, vec![b"x".to_vec()]).expect("put");
            log.put(8, 2, vec![b"y".to_vec()]).expect("put");
            log.forget_durably(8, 1).expect("forget");
            assert!(log.holds(7, 1) && !log.holds(8, 1));
            assert_eq!(log.live_on(1), vec![7]);
        }
        let (_, records) = PreparedLog::open(&path, "full").expect("reopen");
        assert_eq!(
            records,
            vec![
                Record {
                    txn: 7,
                    shard: 1,
                    changes: vec![b"ab".to_vec(), vec![], b"c".to_vec()]
                },
                Record {
                    txn: 8,
                    shard: 2,
                    changes: vec![b"y".to_vec()]
                },
            ]
        );
    }

    #[test]
    fn a_log_of_another_format_version_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("prepared.db");
        Connection::open(&path)
            .expect("open")
            .execute_batch("PRAGMA user_version = 99")
            .expect("version");
        let e = PreparedLog::open(&path, "full").err().expect("refused");
        assert!(e.to_string().contains("format version 99"), "{e}");
    }

    #[test]
    fn damaged_encodings_are_detected() {
        assert_eq!(
            decode(&encode(&[b"abc".to_vec()])),
            Some(vec![b"abc".to_vec()])
        );
        assert_eq!(decode(&[9, 0, 0, 0, 1]), None);
    }
}
