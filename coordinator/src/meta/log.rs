//! The metadata group's durable Raft log and vote, in one SQLite file (`raft.db`).
//!
//! `synchronous=FULL`: an append is reported flushed only after SQLite's commit fsynced it,
//! and the vote is durable before `save_vote` returns. Any I/O error is returned to openraft,
//! which treats storage errors as fatal and stops this member: a failed fsync leaves the
//! file's state unknown, so it is never retried. SQLite work runs on blocking threads.

use super::{MetaTypes, META_FORMAT_VERSION};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::{LogState, OptionalSend, RaftLogReader};
use rusqlite::{params, Connection, OptionalExtension};
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};

type C = MetaTypes;

/// The log store; clones share the file.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Mutex<Connection>>,
}

fn other<E: std::fmt::Display>(e: E) -> io::Error {
    io::Error::other(e.to_string())
}

impl LogStore {
    /// Opens (or creates) `dir/raft.db`.
    pub fn open(dir: &Path) -> io::Result<LogStore> {
        std::fs::create_dir_all(dir)?;
        let conn = Connection::open(dir.join("raft.db")).map_err(other)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS log (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);",
        )
        .map_err(other)?;
        let version: Option<Vec<u8>> = conn
            .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(other)?;
        match version {
            None => {
                conn.execute(
                    "INSERT INTO meta VALUES ('format', ?1)",
                    [META_FORMAT_VERSION.to_string().into_bytes()],
                )
                .map_err(other)?;
            }
            Some(v) if v == META_FORMAT_VERSION.to_string().into_bytes() => {}
            Some(v) => {
                return Err(other(format!(
                    "{} has Raft log format {}, this build reads {META_FORMAT_VERSION}",
                    dir.join("raft.db").display(),
                    String::from_utf8_lossy(&v)
                )))
            }
        }
        Ok(LogStore {
            db: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection, on a blocking thread.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.lock().map_err(|_| other("raft log lock poisoned"))?;
            f(&mut conn).map_err(other)
        })
        .await
        .map_err(other)?
    }

    async fn get_meta<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
    ) -> io::Result<Option<T>> {
        let bytes: Option<Vec<u8>> = self
            .with(move |c| {
                c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                    .optional()
            })
            .await?;
        bytes
            .map(|b| serde_json::from_slice(&b).map_err(other))
            .transpose()
    }

    async fn put_meta<T: serde::Serialize>(&self, key: &'static str, value: &T) -> io::Result<()> {
        let bytes = serde_json::to_vec(value).map_err(other)?;
        self.with(move |c| {
            c.execute(
                "INSERT INTO meta VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, bytes],
            )
            .map(|_| ())
        })
        .await
    }
}

fn decode(bytes: &[u8]) -> rusqlite::Result<EntryOf<C>> {
    serde_json::from_slice(bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

impl RaftLogReader<C> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<C>>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s as i64,
            Bound::Excluded(s) => *s as i64 + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => *e as i64 + 1,
            Bound::Excluded(e) => *e as i64,
            Bound::Unbounded => i64::MAX,
        };
        self.with(move |c| {
            let mut st = c.prepare_cached(
                "SELECT entry FROM log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
            )?;
            let rows = st.query_map([start, end], |r| r.get::<_, Vec<u8>>(0))?;
            rows.map(|b| decode(&b?)).collect()
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        self.get_meta("vote").await
    }
}

impl RaftLogStorage<C> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let purged: Option<LogIdOf<C>> = self.get_meta("purged").await?;
        let last = self
            .with(|c| {
                c.query_row("SELECT entry FROM log ORDER BY idx DESC LIMIT 1", [], |r| {
                    r.get::<_, Vec<u8>>(0)
                })
                .optional()?
                .map(|b| decode(&b))
                .transpose()
            })
            .await?
            .map(|e| e.log_id());
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last.or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        self.put_meta("vote", vote).await
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        self.put_meta("committed", &committed).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        Ok(self
            .get_meta::<Option<LogIdOf<C>>>("committed")
            .await?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let rows: Vec<(i64, Vec<u8>)> = entries
            .into_iter()
            .map(|e| Ok((e.index() as i64, serde_json::to_vec(&e).map_err(other)?)))
            .collect::<io::Result<_>>()?;
        let result = self
            .with(move |c| {
                let tx = c.transaction()?;
                {
                    let mut st = tx.prepare_cached("INSERT OR REPLACE INTO log VALUES (?1, ?2)")?;
                    for (idx, bytes) in &rows {
                        st.execute(params![idx, bytes])?;
                    }
                }
                tx.commit()
            })
            .await;
        match result {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "metadata Raft log append failed; this member stops");
                callback.io_completed(Err(other(&e)));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index() as i64 + 1);
        self.with(move |c| {
            c.execute("DELETE FROM log WHERE idx >= ?1", [from])
                .map(|_| ())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        self.put_meta("purged", &log_id).await?;
        let upto = log_id.index() as i64;
        self.with(move |c| {
            c.execute("DELETE FROM log WHERE idx <= ?1", [upto])
                .map(|_| ())
        })
        .await
    }
}
