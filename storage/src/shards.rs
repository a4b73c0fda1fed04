//! The shard registry: which shards this node hosts, their autocommit workers and open transactions.
//!
//! - `open`: how a shard connection is opened; `refuse`: writes a fenced or in-doubt shard
//!   refuses; `recovery`: the prepared log sorted out at start, in-doubt transactions decided.

use crate::config::StorageConfig;
use crate::error::StorageError;
use crate::exec::run_batch;
use crate::in_doubt::InDoubt;
use crate::locks::LockHolders;
use crate::manifest::{Manifest, ShardEntry, ShardKindOnDisk};
use crate::prepared::{PreparedLog, COMMITTED_TABLE};
use crate::row_locks::{RowLocks, WaitLimits};
use crate::txn_conn::{TxnConn, TxnPool};
use crate::versions::{ChangeTracker, DataVersions};
pub use crate::work::{Done, Work};
use crate::worker::Worker;
use dashmap::DashMap;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tessera_shared::proto::{ShardStats, Statement, StatementResult};
use tessera_shared::REFERENCE_SCOPE;

mod finish;
mod open;
mod recovery;
mod refuse;
#[cfg(test)]
mod tests;

use open::open_connection;
use refuse::{fenced_error, refuse_writes};

/// File name of the node's reference database.
pub const REFERENCE_DB: &str = "reference.db";

/// An open shard.
#[derive(Clone)]
struct Shard {
    kind: ShardKindOnDisk,
    path: PathBuf,
    /// Runs autocommit batches, one at a time (SQLite has one writer anyway).
    worker: Worker,
    /// Records the worker connection's writes.
    tracker: Arc<ChangeTracker>,
    /// Set while a new copy of the shard is filled elsewhere: autocommit writes are refused.
    fenced: Arc<std::sync::atomic::AtomicBool>,
}

/// All shards of this node.
pub struct ShardRegistry {
    config: StorageConfig,
    /// Serialises manifest rewrites (shard create/drop are rare).
    manifest: Mutex<Manifest>,
    shards: DashMap<u64, Shard>,
    /// Open transactions by (txn id, shard id); each owns a connection thread.
    txns: Arc<DashMap<(u64, u64), TxnConn>>,
    /// Connections of finished transactions, ready for the next ones (by shard).
    pool: Arc<TxnPool>,
    /// Data versions of every table, for coordinators' result caches.
    versions: Arc<DataVersions>,
    /// Which open transaction holds each database's write lock (shard id, or
    /// [`REFERENCE_SCOPE`] for the node's reference database), for wait-die.
    holders: Arc<LockHolders>,
    /// Rows of document tables (all shards of this node).
    docs: Arc<crate::docstore::DocStore>,
    /// The row changes of transactions prepared here, on disk until they end.
    prepared: Arc<PreparedLog>,
    /// Transactions prepared before the last stop and not yet decided.
    in_doubt: Arc<InDoubt>,
    /// The rows open transactions changed, locked until they end.
    row_locks: Arc<RowLocks>,
    /// Rowids handed out to open transactions' inserts into tables without a key.
    rowids: Arc<crate::rowids::RowIds>,
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
            None,
        )?);
        let manifest = Manifest::load(&config.data_dir)?;
        let docs = Arc::new(crate::docstore::DocStore::open(
            &config.data_dir.join("documents"),
            &config.synchronous,
        )?);
        let (prepared, records) =
            PreparedLog::open(&config.data_dir.join("prepared.db"), &config.synchronous)?;
        let mut reg = ShardRegistry {
            docs,
            manifest: Mutex::new(manifest.clone()),
            shards: DashMap::new(),
            txns: Arc::new(DashMap::new()),
            pool: Arc::default(),
            versions: Arc::new(DataVersions::new()),
            holders: Arc::default(),
            prepared: Arc::new(prepared),
            in_doubt: Arc::new(InDoubt::new(vec![], Duration::ZERO)),
            row_locks: Arc::default(),
            rowids: Arc::default(),
            config,
        };
        for entry in &manifest.shards {
            reg.open_shard(entry.id, entry.kind)?;
        }
        let undecided = reg.sort_out_prepared(records, &manifest)?;
        reg.in_doubt = Arc::new(InDoubt::new(undecided, reg.client_idle()));
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
        let mut conn = open_connection(&self.config, &path, kind, self.doc_module(id))?;
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS main.{COMMITTED_TABLE} (txn INTEGER PRIMARY KEY);
             CREATE TABLE IF NOT EXISTS main.{} (n INTEGER NOT NULL);",
            crate::doctab::LOCK_TABLE
        ))?;
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
            fenced: Arc::default(),
        };
        self.shards.insert(id, shard.clone());
        Ok(shard)
    }

    /// What a connection to shard `id` needs to serve its document tables.
    fn doc_module(&self, id: u64) -> Option<(Arc<crate::docstore::DocStore>, u64)> {
        Some((self.docs.clone(), id))
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
                lock: None,
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
    ///
    /// Every connection to the shard (its worker and open transactions, rolled back) is closed
    /// before the files go, so a copy created again at the same path (repair) is never
    /// touched by the old copy's connections.
    pub async fn drop_shard(&self, id: u64) -> Result<(), StorageError> {
        let Some((_, shard)) = self.shards.remove(&id) else {
            return Ok(());
        };
        {
            let mut m = self.manifest.lock().map_err(|_| StorageError::WorkerGone)?;
            m.shards.retain(|e| e.id != id);
            m.store(&self.config.data_dir)?;
        }
        let open: Vec<(u64, u64)> = self
            .txns
            .iter()
            .map(|e| *e.key())
            .filter(|(_, shard)| *shard == id)
            .collect();
        for key in open {
            if let Some((_, conn)) = self.txns.remove(&key) {
                conn.worker.close().await;
            }
            self.release(key.0, id);
        }
        for conn in self.pool.drain(id) {
            conn.worker.close().await;
        }
        shard.worker.close().await;
        // Forgotten on disk before the shard can be created again under its id: a record left
        // there would be applied (marked committed) or held in doubt on the new copy.
        let records: Vec<u64> = self
            .in_doubt
            .drop_shard(id)
            .into_iter()
            .chain(self.prepared.live_on(id))
            .collect();
        if !records.is_empty() {
            let prepared = self.prepared.clone();
            tokio::task::spawn_blocking(move || {
                records
                    .iter()
                    .try_for_each(|txn| prepared.forget_durably(*txn, id))
            })
            .await
            .map_err(|_| StorageError::WorkerGone)??;
        }
        if shard.kind == ShardKindOnDisk::Sql {
            self.docs.drop_shard(id)?;
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
        self.execute_idle(shard_id, txn_id, statements, None).await
    }

    /// [`ShardRegistry::execute`]; a transaction this opens is rolled back after `idle`
    /// without work (default: the configured `txn_idle_timeout_secs`).
    pub async fn execute_idle(
        &self,
        shard_id: u64,
        txn_id: u64,
        statements: Vec<Statement>,
        idle: Option<Duration>,
    ) -> Result<Vec<StatementResult>, StorageError> {
        let work = Work::Run {
            statements,
            capture: false,
        };
        Ok(self.run(shard_id, txn_id, work, idle).await?.results)
    }

    /// Does `work` on a shard, autocommit (`txn_id == 0`) or inside the transaction `txn_id`
    /// (opened on first use; rolled back after `idle` without work, by default the configured
    /// `txn_idle_timeout_secs`).
    pub async fn run(
        &self,
        shard_id: u64,
        txn_id: u64,
        work: Work,
        idle: Option<Duration>,
    ) -> Result<Done, StorageError> {
        self.run_limited(shard_id, txn_id, work, idle, None).await
    }

    /// [`ShardRegistry::run`], a statement waiting for a locked row up to `lock_timeout`
    /// (the session's; by default the configured `busy_timeout_ms`) before it fails `55P03`.
    pub async fn run_limited(
        &self,
        shard_id: u64,
        txn_id: u64,
        work: Work,
        idle: Option<Duration>,
        lock_timeout: Option<Duration>,
    ) -> Result<Done, StorageError> {
        let mut limits = self.wait_limits();
        if let Some(t) = lock_timeout {
            limits.lock_timeout = t;
        }
        let in_doubt = self.in_doubt_on(shard_id).then(|| self.in_doubt.clone());
        loop {
            let attempt = match txn_id {
                0 => {
                    self.run_autocommit(shard_id, work.clone(), in_doubt.clone())
                        .await
                }
                _ => {
                    self.run_in_txn(shard_id, txn_id, work.clone(), idle, in_doubt.clone())
                        .await
                }
            };
            match attempt {
                // The statement changed a locked row: it runs again once the holder ended,
                // against the newest committed rows (PostgreSQL's READ COMMITTED).
                Err(StorageError::RowLocked(holder)) => {
                    self.row_locks.wait(txn_id, holder, limits).await?
                }
                r => return r,
            }
        }
    }

    /// How long a statement waits for a locked row.
    fn wait_limits(&self) -> WaitLimits {
        WaitLimits {
            lock_timeout: Duration::from_millis(self.config.busy_timeout_ms.max(1)),
            deadlock_timeout: Duration::from_millis(self.config.deadlock_timeout_ms.max(1)),
        }
    }

    async fn run_autocommit(
        &self,
        shard_id: u64,
        work: Work,
        in_doubt: Option<Arc<InDoubt>>,
    ) -> Result<Done, StorageError> {
        let shard = self.shard(shard_id)?;
        let t = shard.tracker.clone();
        let fenced = shard.fenced.clone();
        let locks = self.row_locks.clone();
        shard
            .worker
            .run(move |c| {
                if fenced.load(std::sync::atomic::Ordering::SeqCst)
                    && matches!(work, Work::Run { .. })
                {
                    refuse_writes(c, &work, || Some(fenced_error(shard_id)))?;
                }
                if let Some(d) = &in_doubt {
                    refuse_writes(c, &work, || d.refuse_writes(shard_id).err())?;
                }
                work.autocommit(c, &t, &locks, shard_id)
            })
            .await
    }

    async fn run_in_txn(
        &self,
        shard_id: u64,
        txn_id: u64,
        work: Work,
        idle: Option<Duration>,
        in_doubt: Option<Arc<InDoubt>>,
    ) -> Result<Done, StorageError> {
        let TxnConn {
            worker, tracker: t, ..
        } = self.txn_worker(shard_id, txn_id, idle)?;
        let holders = self.holders.clone();
        let locks = self.row_locks.clone();
        let rowids = self.rowids.clone();
        let main_db = self.lock_key(shard_id);
        let fenced = self.shard(shard_id)?.fenced.clone();
        match worker
            .run(move |c| {
                if let Some(d) = &in_doubt {
                    refuse_writes(c, &work, || d.refuse_writes(shard_id).err())?;
                }
                let ctx = crate::deferred::TxnCtx {
                    shard: shard_id,
                    txn: txn_id,
                    locks: &locks,
                    fenced: fenced.load(std::sync::atomic::Ordering::SeqCst),
                    rowids: &rowids,
                };
                let r = crate::deferred::run(c, &t, &ctx, work);
                holders.note(c, main_db, txn_id);
                r
            })
            .await
        {
            Err(StorageError::WorkerGone) => {
                self.txns.remove(&(txn_id, shard_id));
                self.release(txn_id, shard_id);
                Err(StorageError::NoSuchTxn(txn_id))
            }
            r => r,
        }
    }

    /// Forgets the locks of a transaction whose work on a shard ended: its rows there, and
    /// its shard write locks once it has no connection on this node any more.
    fn release(&self, txn_id: u64, shard_id: u64) {
        self.row_locks.release_on(txn_id, shard_id);
        if !self.txns.iter().any(|e| e.key().0 == txn_id) {
            self.holders.release(txn_id);
        }
    }

    /// Sets or lifts a shard's fence (see the `Fence` RPC). The change runs on the shard's
    /// worker, so autocommit writes running when it is set finish first and every later one
    /// sees it. A fenced shard is being copied, read under its write lock: a transaction that
    /// writes it from then on holds that lock until it ends ([`crate::deferred`]), and the
    /// fence is up once every transaction that wrote it before (its rows locked) ended.
    pub async fn fence(&self, shard_id: u64, fenced: bool) -> Result<(), StorageError> {
        let shard = self.shard(shard_id)?;
        let flag = shard.fenced.clone();
        shard
            .worker
            .run(move |_| {
                flag.store(fenced, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            })
            .await?;
        let limit = self.wait_limits().lock_timeout;
        if fenced && !self.row_locks.wait_shard_free(shard_id, limit).await {
            return Err(StorageError::Sql {
                sqlstate: "55P03",
                message: format!(
                    "shard {shard_id}: transactions that wrote it before its fence did not end within {} ms",
                    limit.as_millis()
                ),
            });
        }
        Ok(())
    }

    /// The lock-holder key of a shard's main database.
    fn lock_key(&self, shard_id: u64) -> u64 {
        match self.shards.get(&shard_id).map(|s| s.kind) {
            Some(ShardKindOnDisk::Reference) => REFERENCE_SCOPE,
            _ => shard_id,
        }
    }

    /// The connection of transaction `txn_id` on a shard: its own, once it has one; else one
    /// from the shard's pool, or a new one. Its idle limit is `idle` (by default the
    /// configured `txn_idle_timeout_secs`).
    fn txn_worker(
        &self,
        shard_id: u64,
        txn_id: u64,
        idle: Option<Duration>,
    ) -> Result<TxnConn, StorageError> {
        if let Some(w) = self.txns.get(&(txn_id, shard_id)) {
            return Ok(w.clone());
        }
        let conn = match self.pool.take(shard_id) {
            Some(conn) => conn,
            None => self.new_txn_conn(shard_id)?,
        };
        conn.serve(txn_id, idle.unwrap_or_else(|| self.client_idle()));
        self.txns.insert((txn_id, shard_id), conn.clone());
        Ok(conn)
    }

    /// A new transaction connection to a shard, with a transaction begun.
    fn new_txn_conn(&self, shard_id: u64) -> Result<TxnConn, StorageError> {
        let shard = self.shard(shard_id)?;
        let mut conn = open_connection(
            &self.config,
            &shard.path,
            shard.kind,
            self.doc_module(shard_id),
        )?;
        let tracker = self.tracker(&mut conn, shard_id, shard.kind)?;
        let serving = Arc::new(std::sync::atomic::AtomicU64::new(0));
        conn.busy_handler(Some(crate::locks::txn_busy_handler(
            self.holders.clone(),
            self.lock_key(shard_id),
            serving.clone(),
            self.config.younger_wait_ms,
        )))?;
        let txns = self.txns.clone();
        let holders = self.holders.clone();
        let row_locks = self.row_locks.clone();
        let prepared = self.prepared.clone();
        let idle = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX / 4));
        let current = serving.clone();
        let worker = Worker::spawn(
            format!("txn-{shard_id}"),
            conn,
            Some(idle.clone()),
            move |c| {
                let txn_id = current.load(std::sync::atomic::Ordering::SeqCst);
                tracing::warn!(txn_id, shard_id, "rolling back idle transaction");
                let _ = c.execute_batch("ROLLBACK");
                prepared.forget(txn_id, shard_id);
                txns.remove(&(txn_id, shard_id));
                holders.release(txn_id);
                row_locks.release_on(txn_id, shard_id);
            },
            Some(publisher(&tracker)),
        )?;
        Ok(TxnConn {
            worker,
            tracker,
            idle,
            serving,
        })
    }

    /// The idle limit of client transactions.
    pub(super) fn client_idle(&self) -> Duration {
        Duration::from_secs(self.config.txn_idle_timeout_secs.max(1))
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
                + file_size(&PathBuf::from(format!("{}-wal", shard.path.display())))
                + self.docs.shard_bytes(id);
            let rows = shard
                .worker
                .run(|c| {
                    let names: Vec<String> = c
                        .prepare("SELECT name FROM main.sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '\\_\\_tessera%' ESCAPE '\\'")?
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
        self.pool.clear();
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
