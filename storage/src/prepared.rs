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
//! - The log is the commit's durable record: a copy applies a prepared transaction's changes
//!   to its shard without an fsync of the shard's file (SQLite `synchronous = NORMAL`, holding
//!   the shard's write lock only while it writes), then marks the record committed here; the
//!   mark's fsync is shared by every commit waiting on the node (group commit), and the
//!   client hears COMMIT once it is on disk. The record is forgotten only after the shard's
//!   WAL was fsynced (one fsync per shard for many commits, off every lock): until then a
//!   crash finds the record marked and applies it again if the shard lost it.
//! - A commit also writes the transaction id to the shard's `__tessera_committed` table in
//!   the same SQLite transaction, so a record left behind by a crash between the commit and
//!   the forget is recognised at start as committed, not applied twice.
//!
//! Format 2 added the `committed` mark (format 1 logs are upgraded in place when opened).

use crate::error::StorageError;
use dashmap::DashSet;
use rusqlite::{params, Connection};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Format version of `prepared.db`.
pub const PREPARED_LOG_VERSION: i64 = 2;

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
    /// Marked committed: the commit was decided and applied (perhaps not yet on disk).
    pub committed: bool,
}

type Reply = mpsc::Sender<Result<(), StorageError>>;

enum Op {
    Put(Record, Reply),
    /// The record of (transaction, shard) committed on the shard whose WAL is at the path.
    Commit(u64, u64, PathBuf, Reply),
    Forget(u64, u64, Option<Reply>),
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
                 changes BLOB NOT NULL, committed INTEGER NOT NULL DEFAULT 0, \
                 PRIMARY KEY (txn, shard)); PRAGMA user_version = {PREPARED_LOG_VERSION};"
            ))?,
            1 => conn.execute_batch(&format!(
                "BEGIN; ALTER TABLE prepared ADD COLUMN committed INTEGER NOT NULL DEFAULT 0; \
                 PRAGMA user_version = {PREPARED_LOG_VERSION}; COMMIT;"
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
            let mut st =
                conn.prepare("SELECT txn, shard, changes, committed FROM prepared ORDER BY txn")?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, bool>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (txn, shard, blob, committed) = row?;
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
                    committed,
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
            committed: false,
        };
        self.send(Op::Put(record, done))?;
        wait.recv().map_err(|_| StorageError::WorkerGone)??;
        self.live.insert((txn, shard));
        Ok(())
    }

    /// Marks the record of `txn` on `shard` committed and returns once the mark is on disk;
    /// `wal` is the shard's WAL file, fsynced before the record is forgotten (see the module
    /// documentation). The commit applied to the shard before this call. Blocks: call it
    /// from a connection thread.
    pub fn commit(&self, txn: u64, shard: u64, wal: PathBuf) -> Result<(), StorageError> {
        let (done, wait) = mpsc::channel();
        self.send(Op::Commit(txn, shard, wal, done))?;
        wait.recv().map_err(|_| StorageError::WorkerGone)?
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
/// nobody waits for ride along with the next batch that must reach the disk (a prepare or a
/// commit), so a transaction costs no fsync of its own for them. A committed record is
/// forgotten once its shard's WAL was fsynced, at most [`LAZY_FORGET`] after its commit. A
/// record leaves `live` once its forget is on disk.
fn writer(mut conn: Connection, rx: mpsc::Receiver<Op>, live: &DashSet<(u64, u64)>) {
    // Forgets not written yet, and committed records whose shard WAL is not synced yet.
    let mut lazy: Vec<Op> = Vec::new();
    let mut unsynced: Vec<(u64, u64, PathBuf)> = Vec::new();
    let mut oldest = Instant::now();
    let mut open = true;
    loop {
        let waiting = !lazy.is_empty() || !unsynced.is_empty();
        let first = if !waiting {
            match rx.recv() {
                Ok(op) => Some(op),
                Err(_) => return,
            }
        } else if open {
            match rx.recv_timeout(LAZY_FORGET.saturating_sub(oldest.elapsed())) {
                Ok(op) => Some(op),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    open = false;
                    None
                }
            }
        } else {
            None
        };
        if !waiting {
            oldest = Instant::now();
        }
        let mut ops: Vec<Op> = first.into_iter().chain(rx.try_iter()).collect();
        let due = !open || oldest.elapsed() >= LAZY_FORGET;
        if due && !unsynced.is_empty() {
            let failed = sync_wals(&unsynced);
            let (kept, synced): (Vec<_>, Vec<_>) = unsynced
                .drain(..)
                .partition(|(_, _, wal)| failed.contains(wal));
            lazy.extend(
                synced
                    .into_iter()
                    .map(|(txn, shard, _)| Op::Forget(txn, shard, None)),
            );
            unsynced = kept;
            if !open && lazy.is_empty() && ops.is_empty() {
                // Nothing more can be done for the records kept: they stay marked.
                return;
            }
        }
        let urgent = ops.iter().any(|op| !matches!(op, Op::Forget(_, _, None)));
        if !urgent && !due {
            lazy.append(&mut ops);
            continue;
        }
        ops.append(&mut lazy);
        if ops.is_empty() {
            if !open && unsynced.is_empty() {
                return;
            }
            oldest = Instant::now();
            continue;
        }
        // Kept as SQLSTATE and text: every waiting request gets its own copy of the failure.
        let result = write_all(&mut conn, &ops).map_err(|e| (e.sqlstate(), e.to_string()));
        if let Err((_, e)) = &result {
            tracing::error!(error = %e, "the prepared log could not be written");
        }
        if unsynced.is_empty() {
            oldest = Instant::now();
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
                Op::Commit(txn, shard, wal, done) => {
                    if reply.is_ok() {
                        unsynced.push((txn, shard, wal));
                    }
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

/// Fsyncs each shard WAL named once; gives those that failed (their records stay). A WAL
/// that is gone was checkpointed into its database, which SQLite fsyncs before it removes the
/// WAL.
fn sync_wals(unsynced: &[(u64, u64, PathBuf)]) -> Vec<PathBuf> {
    let mut seen: Vec<&PathBuf> = Vec::new();
    let mut failed = Vec::new();
    for (_, _, wal) in unsynced {
        if seen.contains(&wal) {
            continue;
        }
        seen.push(wal);
        let synced = match std::fs::File::open(wal) {
            Ok(f) => f.sync_data(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = synced {
            tracing::error!(wal = %wal.display(), error = %e, "could not fsync a shard's WAL; its committed records stay");
            failed.push(wal.clone());
        }
    }
    failed
}

fn write_all(conn: &mut Connection, ops: &[Op]) -> Result<(), StorageError> {
    let t = conn.transaction()?;
    for op in ops {
        match op {
            Op::Put(r, _) => {
                t.prepare_cached(
                    "INSERT OR REPLACE INTO prepared (txn, shard, changes) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![
                    r.txn as i64,
                    r.shard as i64,
                    encode(&r.changes)
                ])?;
            }
            Op::Commit(txn, shard, _, _) => {
                t.prepare_cached(
                    "UPDATE prepared SET committed = 1 WHERE txn = ?1 AND shard = ?2",
                )?
                .execute(params![*txn as i64, *shard as i64])?;
            }
            Op::Forget(txn, shard, _) => {
                t.prepare_cached("DELETE FROM prepared WHERE txn = ?1 AND shard = ?2")?
                    .execute(params![*txn as i64, *shard as i64])?;
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
                    changes: vec![b"ab".to_vec(), vec![], b"c".to_vec()],
                    committed: false,
                },
                Record {
                    txn: 8,
                    shard: 2,
                    changes: vec![b"y".to_vec()],
                    committed: false,
                },
            ]
        );
    }

    /// A commit's mark is on disk when `commit` returns; the record goes once the shard's WAL
    /// was fsynced, and stays (marked) while that fails.
    #[test]
    fn committed_records_stay_until_their_shard_wal_is_synced() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("prepared.db");
        let wal = dir.path().join("1.db-wal");
        std::fs::write(&wal, b"frames").expect("wal");
        {
            let (log, _) = PreparedLog::open(&path, "full").expect("open");
            log.put(8, 1, vec![b"x".to_vec()]).expect("put");
            log.put(9, 2, vec![b"y".to_vec()]).expect("put");
            log.commit(8, 1, wal.clone()).expect("commit 8");
            // A WAL that cannot be opened (a path under a file) cannot be synced.
            log.commit(9, 2, dir.path().join("1.db-wal").join("x"))
                .expect("commit 9");
            let deadline = Instant::now() + Duration::from_secs(10);
            while log.holds(8, 1) {
                assert!(Instant::now() < deadline, "record 8 never forgotten");
                std::thread::yield_now();
            }
            assert!(log.holds(9, 2), "kept while its WAL cannot be synced");
        }
        let (_, records) = PreparedLog::open(&path, "full").expect("reopen");
        assert_eq!(
            records,
            vec![Record {
                txn: 9,
                shard: 2,
                changes: vec![b"y".to_vec()],
                committed: true,
            }]
        );
    }

    #[test]
    fn a_format_1_log_is_upgraded_in_place() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("prepared.db");
        Connection::open(&path)
            .expect("open")
            .execute_batch(
                "CREATE TABLE prepared (txn INTEGER NOT NULL, shard INTEGER NOT NULL, \
                 changes BLOB NOT NULL, PRIMARY KEY (txn, shard));
                 INSERT INTO prepared VALUES (5, 1, x'0100000061');
                 PRAGMA user_version = 1;",
            )
            .expect("format 1");
        let (log, records) = PreparedLog::open(&path, "full").expect("open");
        assert_eq!(
            records,
            vec![Record {
                txn: 5,
                shard: 1,
                changes: vec![b"a".to_vec()],
                committed: false,
            }]
        );
        log.commit(5, 1, dir.path().join("missing-wal"))
            .expect("the upgraded log takes marks");
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
