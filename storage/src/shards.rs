//! The shard registry: which shards this node hosts, their autocommit workers and open transactions.

use crate::exec::run_batch;
use crate::manifest::{Manifest, ShardEntry, ShardKindOnDisk};
use crate::versions::{ChangeTracker, DataVersions};
use crate::worker::Worker;
use crate::{StorageConfig, StorageError};
use dashmap::DashMap;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tessera_shared::proto::{ShardStats, Statement, StatementResult};

/// File name of the node's reference database.
pub const REFERENCE_DB: &str = "reference.db";

/// An open transaction's connection thread and its change tracker.
type TxnConn = (Worker, Arc<ChangeTracker>);

/// An open shard.
#[derive(Clone)]
struct Shard {
    kind: ShardKindOnDisk,
    path: PathBuf,
    /// Runs autocommit batches, one at a time (SQLite has one writer anyway).
    worker: Worker,
    /// Records the worker connection's writes.
    tracker: Arc<ChangeTracker>,
}

/// All shards of this node.
pub struct ShardRegistry {
    config: StorageConfig,
    /// Serialises manifest rewrites (shard create/drop are rare).
    manifest: Mutex<Manifest>,
    shards: DashMap<u64, Shard>,
    /// Open transactions by (txn id, shard id); each owns a connection thread.
    txns: Arc<DashMap<(u64, u64), TxnConn>>,
    /// Data versions of every table, for coordinators' result caches.
    versions: Arc<DataVersions>,
}

impl ShardRegistry {
    /// Opens the data directory and every shard its manifest lists.
    pub fn open(config: StorageConfig) -> Result<ShardRegistry, StorageError> {
        std::fs::create_dir_all(&config.data_dir)?;
        // The reference database exists on every node so shards can attach it.
        drop(open_connection(
            &config,
            &config.data_dir.join(REFERENCE_DB),
            ShardKindOnDisk::Reference,
        )?);
        let manifest = Manifest::load(&config.data_dir)?;
        let reg = ShardRegistry {
            config,
            manifest: Mutex::new(manifest.clone()),
            shards: DashMap::new(),
            txns: Arc::new(DashMap::new()),
            versions: Arc::new(DataVersions::new()),
        };
        for entry in &manifest.shards {
            reg.open_shard(entry.id, entry.kind)?;
        }
        tracing::info!(shards = manifest.shards.len(), dir = %reg.config.data_dir.display(), "opened shards");
        Ok(reg)
    }

    fn shard_path(&self, id: u64, kind: ShardKindOnDisk) -> PathBuf {
        match kind {
            ShardKindOnDisk::Sql => self.config.data_dir.join(format!("shard-{id}.db")),
            ShardKindOnDisk::Reference => self.config.data_dir.join(REFERENCE_DB),
        }
    }

    fn open_shard(&self, id: u64, kind: ShardKindOnDisk) -> Result<Shard, StorageError> {
        let path = self.shard_path(id, kind);
        let mut conn = open_connection(&self.config, &path, kind)?;
        let tracker = self.tracker(&mut conn, id, kind)?;
        let worker = Worker::spawn(
            format!("shard-{id}"),
            conn,
            None,
            |_| {},
            Some(publisher(&tracker)),
        )?;
        let shard = Shard {
            kind,
            path,
            worker,
            tracker,
        };
        self.shards.insert(id, shard.clone());
        Ok(shard)
    }

    /// Hooks `conn` so its committed writes change the data versions.
    fn tracker(
        &self,
        conn: &mut Connection,
        id: u64,
        kind: ShardKindOnDisk,
    ) -> Result<Arc<ChangeTracker>, StorageError> {
        let scope = match kind {
            ShardKindOnDisk::Sql => id,
            ShardKindOnDisk::Reference => tessera_shared::REFERENCE_SCOPE,
        };
        Ok(ChangeTracker::install(conn, self.versions.clone(), scope)?)
    }

    /// This node's incarnation and the current data version of each key.
    pub fn versions(&self, keys: &[tessera_shared::proto::VersionKey]) -> (u64, Vec<u64>) {
        (self.versions.incarnation(), self.versions.get(keys))
    }

    fn shard(&self, id: u64) -> Result<Shard, StorageError> {
        self.shards
            .get(&id)
            .map(|s| s.clone())
            .ok_or(StorageError::NoSuchShard(id))
    }

    /// Creates a shard if it is new (recording it in the manifest), then runs the `schema` statements.
    pub async fn create_shard(
        &self,
        id: u64,
        kind: tessera_shared::proto::ShardKind,
        schema: Vec<String>,
    ) -> Result<(), StorageError> {
        let kind = match kind {
            tessera_shared::proto::ShardKind::Reference => ShardKindOnDisk::Reference,
            tessera_shared::proto::ShardKind::Sql => ShardKindOnDisk::Sql,
        };
        let schema: Vec<Statement> = schema
            .into_iter()
            .map(|sql| Statement {
                sql,
                params: vec![],
                returns_rows: false,
            })
            .collect();
        let shard = match self.shards.get(&id).map(|s| s.clone()) {
            Some(s) => s,
            None => {
                let shard = self.open_shard(id, kind)?;
                let mut m = self.manifest.lock().map_err(|_| StorageError::WorkerGone)?;
                if !m.shards.iter().any(|e| e.id == id) {
                    m.shards.push(ShardEntry { id, kind });
                    m.store(&self.config.data_dir)?;
                }
                shard
            }
        };
        if !schema.is_empty() {
            let t = shard.tracker.clone();
            shard
                .worker
                .run(move |c| run_batch(c, schema, false, &t))
                .await?;
        }
        Ok(())
    }

    /// Drops a shard and deletes its files. The reference database is only forgotten.
    pub fn drop_shard(&self, id: u64) -> Result<(), StorageError> {
        let Some((_, shard)) = self.shards.remove(&id) else {
            return Ok(());
        };
        {
            let mut m = self.manifest.lock().map_err(|_| StorageError::WorkerGone)?;
            m.shards.retain(|e| e.id != id);
            m.store(&self.config.data_dir)?;
        }
        drop(shard.worker);
        if shard.kind == ShardKindOnDisk::Sql {
            for suffix in ["", "-wal", "-shm"] {
                let p = PathBuf::from(format!("{}{suffix}", shard.path.display()));
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Runs a batch, autocommit (`txn_id == 0`) or inside the transaction `txn_id`.
    pub async fn execute(
        &self,
        shard_id: u64,
        txn_id: u64,
        statements: Vec<Statement>,
    ) -> Result<Vec<StatementResult>, StorageError> {
        if txn_id == 0 {
            let shard = self.shard(shard_id)?;
            let t = shard.tracker.clone();
            return shard
                .worker
                .run(move |c| run_batch(c, statements, false, &t))
                .await;
        }
        let (worker, t) = self.txn_worker(shard_id, txn_id)?;
        match worker
            .run(move |c| run_batch(c, statements, true, &t))
            .await
        {
            Err(StorageError::WorkerGone) => {
                self.txns.remove(&(txn_id, shard_id));
                Err(StorageError::NoSuchTxn(txn_id))
            }
            r => r,
        }
    }

    fn txn_worker(&self, shard_id: u64, txn_id: u64) -> Result<TxnConn, StorageError> {
        if let Some(w) = self.txns.get(&(txn_id, shard_id)) {
            return Ok(w.clone());
        }
        let shard = self.shard(shard_id)?;
        let mut conn = open_connection(&self.config, &shard.path, shard.kind)?;
        let tracker = self.tracker(&mut conn, shard_id, shard.kind)?;
        conn.execute_batch("BEGIN")?;
        let txns = self.txns.clone();
        let idle = Duration::from_secs(self.config.txn_idle_timeout_secs.max(1));
        let worker = Worker::spawn(
            format!("txn-{txn_id}-{shard_id}"),
            conn,
            Some(idle),
            move |c| {
                tracing::warn!(txn_id, shard_id, "rolling back idle transaction");
                let _ = c.execute_batch("ROLLBACK");
                txns.remove(&(txn_id, shard_id));
            },
            Some(publisher(&tracker)),
        )?;
        self.txns
            .insert((txn_id, shard_id), (worker.clone(), tracker.clone()));
        Ok((worker, tracker))
    }

    /// Commits or rolls back a transaction's work on one shard. Rolling back an
    /// unknown transaction succeeds (it holds nothing); committing one fails.
    pub async fn finish_txn(
        &self,
        shard_id: u64,
        txn_id: u64,
        commit: bool,
    ) -> Result<(), StorageError> {
        let Some((_, (worker, _))) = self.txns.remove(&(txn_id, shard_id)) else {
            return if commit {
                Err(StorageError::NoSuchTxn(txn_id))
            } else {
                Ok(())
            };
        };
        let sql = if commit { "COMMIT" } else { "ROLLBACK" };
        match worker.run(move |c| Ok(c.execute_batch(sql)?)).await {
            Err(StorageError::WorkerGone) if commit => Err(StorageError::NoSuchTxn(txn_id)),
            Err(StorageError::WorkerGone) => Ok(()),
            r => r,
        }
    }

    /// Sizes and per-table row counts of every shard.
    pub async fn stats(&self) -> Result<Vec<ShardStats>, StorageError> {
        let shards: Vec<(u64, Shard)> = self
            .shards
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        let mut out = Vec::with_capacity(shards.len());
        for (id, shard) in shards {
            let bytes = file_size(&shard.path)
                + file_size(&PathBuf::from(format!("{}-wal", shard.path.display())));
            let rows = shard
                .worker
                .run(|c| {
                    let names: Vec<String> = c
                        .prepare("SELECT name FROM main.sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")?
                        .query_map([], |r| r.get(0))?
                        .collect::<Result<_, _>>()?;
                    let mut rows = std::collections::HashMap::new();
                    for n in names {
                        let count: i64 = c.query_row(&format!("SELECT count(*) FROM main.\"{}\"", n.replace('"', "\"\"")), [], |r| r.get(0))?;
                        rows.insert(n, count as u64);
                    }
                    Ok(rows)
                })
                .await?;
            let kind = match shard.kind {
                ShardKindOnDisk::Sql => tessera_shared::proto::ShardKind::Sql,
                ShardKindOnDisk::Reference => tessera_shared::proto::ShardKind::Reference,
            };
            out.push(ShardStats {
                shard_id: id,
                kind: kind as i32,
                bytes,
                rows,
            });
        }
        out.sort_by_key(|s| s.shard_id);
        Ok(out)
    }

    /// Rolls back open transactions and stops all workers.
    pub fn close(&self) {
        self.txns.clear();
        self.shards.clear();
    }
}

/// The worker hook that publishes a connection's committed writes.
fn publisher(tracker: &Arc<ChangeTracker>) -> crate::worker::AfterJob {
    let t = tracker.clone();
    Arc::new(move || t.publish())
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// The lock wait limit, shared by every connection of this node (a busy handler is a plain fn).
static BUSY_TIMEOUT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(2000);

/// Waits for another transaction's lock: short sleeps growing to 1 ms (SQLite's own handler
/// sleeps up to 100 ms at a time, which stalls short contended transactions), until the
/// configured limit; then the statement fails with SQLITE_BUSY (SQLSTATE 40001).
fn wait_for_lock(attempt: i32) -> bool {
    let step_us = (50u64 << attempt.clamp(0, 5) as u32).min(1000);
    // Attempts 0..5 sleep 50..800 µs (1.55 ms in all); each later attempt sleeps 1 ms.
    let waited_us = if attempt < 5 {
        0
    } else {
        1550 + (attempt as u64 - 5) * 1000
    };
    if waited_us / 1000 >= BUSY_TIMEOUT_MS.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    std::thread::sleep(Duration::from_micros(step_us));
    true
}

/// Opens a shard database with Tessera's settings: WAL, the configured fsync level,
/// case-sensitive LIKE (as in Postgres), and the reference database attached as `ref`.
fn open_connection(
    config: &StorageConfig,
    path: &Path,
    kind: ShardKindOnDisk,
) -> Result<Connection, StorageError> {
    let mut conn = Connection::open(path)?;
    let sync = match config.synchronous.as_str() {
        "normal" => "NORMAL",
        "off" => "OFF",
        _ => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA case_sensitive_like = ON; PRAGMA foreign_keys = OFF;"
    ))?;
    BUSY_TIMEOUT_MS.store(
        config.busy_timeout_ms.max(1),
        std::sync::atomic::Ordering::Relaxed,
    );
    conn.busy_handler(Some(wait_for_lock))?;
    conn.set_prepared_statement_cache_capacity(256);
    if kind == ShardKindOnDisk::Sql {
        let reference = config.data_dir.join(REFERENCE_DB);
        conn.execute("ATTACH DATABASE ?1 AS ref", [reference.to_string_lossy()])?;
        conn.execute_batch(&format!("PRAGMA ref.synchronous = {sync};"))?;
    }
    Ok(conn)
}
