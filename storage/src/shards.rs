//! The shard registry: which shards this node hosts, their autocommit workers and open transactions.

use crate::exec::run_batch;
use crate::manifest::{Manifest, ShardEntry, ShardKindOnDisk};
use crate::versions::{ChangeTracker, DataVersions};
pub use crate::work::{Done, Work};
use crate::worker::Worker;
use crate::{StorageConfig, StorageError};
use dashmap::DashMap;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tessera_shared::proto::{ShardStats, Statement, StatementResult};
use tessera_shared::REFERENCE_SCOPE;

/// File name of the node's reference database.
pub const REFERENCE_DB: &str = "reference.db";

/// An open transaction's connection thread, its change tracker, and its idle limit (ms).
type TxnConn = (
    Worker,
    Arc<ChangeTracker>,
    Arc<std::sync::atomic::AtomicU64>,
);

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
    /// Data versions of every table, for coordinators' result caches.
    versions: Arc<DataVersions>,
    /// Which open transaction holds each database's write lock (shard id, or
    /// [`REFERENCE_SCOPE`] for the node's reference database), for wait-die.
    holders: Arc<LockHolders>,
    /// Rows of document tables (all shards of this node).
    docs: Arc<crate::docstore::DocStore>,
}

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
struct LockHolders(DashMap<u64, u64>);

impl LockHolders {
    /// Whether a transaction older than `txn` holds the lock of `db`.
    fn older_holds(&self, db: u64, txn: u64) -> bool {
        self.0.get(&db).is_some_and(|h| *h < txn)
    }

    /// Records the locks `txn` holds after a batch on `conn` (`main_db` is the key of its main
    /// database).
    fn note(&self, conn: &Connection, main_db: u64, txn: u64) {
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

    /// Forgets the locks of a finished transaction.
    fn release(&self, txn: u64) {
        self.0.retain(|_, h| *h != txn);
    }
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
        let reg = ShardRegistry {
            docs,
            config,
            manifest: Mutex::new(manifest.clone()),
            shards: DashMap::new(),
            txns: Arc::new(DashMap::new()),
            versions: Arc::new(DataVersions::new()),
            holders: Arc::default(),
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
        let mut conn = open_connection(&self.config, &path, kind, self.doc_module(id))?;
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
            if let Some((_, (worker, _, _))) = self.txns.remove(&key) {
                worker.close().await;
            }
            if !self.txns.iter().any(|e| e.key().0 == key.0) {
                self.holders.release(key.0);
            }
        }
        shard.worker.close().await;
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
        if txn_id == 0 {
            let shard = self.shard(shard_id)?;
            let t = shard.tracker.clone();
            let fenced = shard.fenced.clone();
            return shard
                .worker
                .run(move |c| {
                    if fenced.load(std::sync::atomic::Ordering::SeqCst) {
                        if let Work::Run { statements, .. } = &work {
                            refuse_writes_while_fenced(c, shard_id, statements)?;
                        }
                    }
                    work.autocommit(c, &t)
                })
                .await;
        }
        let (worker, t, _) = self.txn_worker(shard_id, txn_id, idle)?;
        let holders = self.holders.clone();
        let main_db = self.lock_key(shard_id);
        match worker
            .run(move |c| {
                let savepoint = work.sets_savepoint();
                let r = work.in_txn(c, &t);
                holders.note(c, main_db, txn_id);
                crate::work::fresh_snapshot_next(c, savepoint);
                r
            })
            .await
        {
            Err(StorageError::WorkerGone) => {
                self.txns.remove(&(txn_id, shard_id));
                self.holders.release(txn_id);
                Err(StorageError::NoSuchTxn(txn_id))
            }
            r => r,
        }
    }

    /// Sets or lifts a shard's fence (see the `Fence` RPC). The change runs on the shard's
    /// worker, so autocommit writes running when it is set finish first and every later one
    /// sees it.
    pub async fn fence(&self, shard_id: u64, fenced: bool) -> Result<(), StorageError> {
        let shard = self.shard(shard_id)?;
        let flag = shard.fenced.clone();
        shard
            .worker
            .run(move |_| {
                flag.store(fenced, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            })
            .await
    }

    /// The lock-holder key of a shard's main database.
    fn lock_key(&self, shard_id: u64) -> u64 {
        match self.shards.get(&shard_id).map(|s| s.kind) {
            Some(ShardKindOnDisk::Reference) => REFERENCE_SCOPE,
            _ => shard_id,
        }
    }

    fn txn_worker(
        &self,
        shard_id: u64,
        txn_id: u64,
        idle: Option<Duration>,
    ) -> Result<TxnConn, StorageError> {
        if let Some(w) = self.txns.get(&(txn_id, shard_id)) {
            return Ok(w.clone());
        }
        let shard = self.shard(shard_id)?;
        let mut conn = open_connection(
            &self.config,
            &shard.path,
            shard.kind,
            self.doc_module(shard_id),
        )?;
        let tracker = self.tracker(&mut conn, shard_id, shard.kind)?;
        let holders = self.holders.clone();
        let main_db = self.lock_key(shard_id);
        let younger_wait_ms = self.config.younger_wait_ms;
        conn.busy_handler(Some(move |attempt: i32| {
            let older = holders.older_holds(main_db, txn_id)
                || holders.older_holds(REFERENCE_SCOPE, txn_id);
            if older && waited_ms(attempt) >= younger_wait_ms {
                return false;
            }
            wait_for_lock(attempt)
        }))?;
        conn.execute_batch("BEGIN")?;
        let txns = self.txns.clone();
        let holders = self.holders.clone();
        let idle = Arc::new(std::sync::atomic::AtomicU64::new(
            idle.unwrap_or_else(|| self.client_idle()).as_millis() as u64,
        ));
        let worker = Worker::spawn(
            format!("txn-{txn_id}-{shard_id}"),
            conn,
            Some(idle.clone()),
            move |c| {
                tracing::warn!(txn_id, shard_id, "rolling back idle transaction");
                let _ = c.execute_batch("ROLLBACK");
                txns.remove(&(txn_id, shard_id));
                holders.release(txn_id);
            },
            Some(publisher(&tracker)),
        )?;
        self.txns.insert(
            (txn_id, shard_id),
            (worker.clone(), tracker.clone(), idle.clone()),
        );
        Ok((worker, tracker, idle))
    }

    /// Commits or rolls back a transaction's work on one shard. Rolling back an
    /// unknown transaction succeeds (it holds nothing); committing one fails.
    pub async fn finish_txn(
        &self,
        shard_id: u64,
        txn_id: u64,
        commit: bool,
    ) -> Result<(), StorageError> {
        let Some((_, (worker, _, _))) = self.txns.remove(&(txn_id, shard_id)) else {
            return if commit {
                Err(StorageError::NoSuchTxn(txn_id))
            } else {
                Ok(())
            };
        };
        let sql = if commit { "COMMIT" } else { "ROLLBACK" };
        let r = match worker.run(move |c| Ok(c.execute_batch(sql)?)).await {
            Err(StorageError::WorkerGone) if commit => Err(StorageError::NoSuchTxn(txn_id)),
            Err(StorageError::WorkerGone) => Ok(()),
            r => r,
        };
        if !self.txns.iter().any(|e| e.key().0 == txn_id) {
            self.holders.release(txn_id);
        }
        r
    }

    /// The idle limit of client transactions.
    fn client_idle(&self) -> Duration {
        Duration::from_secs(self.config.txn_idle_timeout_secs.max(1))
    }

    /// Marks a transaction prepared: its commit decision is about to be taken, so it keeps
    /// the client-transaction idle limit even if it was opened with a short one (a statement's
    /// own): a coordinator that dies after deciding finds it still open when it recovers.
    ///
    /// It runs as a job of the transaction's thread, so it is ordered with the idle check: a
    /// transaction already rolled back for idling answers [`StorageError::NoSuchTxn`].
    pub async fn prepare_txn(&self, shard_id: u64, txn_id: u64) -> Result<(), StorageError> {
        let Some((worker, _, idle)) = self.txns.get(&(txn_id, shard_id)).map(|e| e.clone()) else {
            return Err(StorageError::NoSuchTxn(txn_id));
        };
        let ms = self.client_idle().as_millis() as u64;
        let dir = self.config.data_dir.clone();
        match worker
            .run(move |c| {
                // The transaction's pages go to the WAL now, and a reserve stays free: a full
                // disk fails here, before any shard commits, rather than at a commit after
                // others committed.
                c.cache_flush().map_err(|e| match StorageError::from(e) {
                    StorageError::Sql {
                        sqlstate: "53100",
                        message,
                    } => crate::space::full(shard_id, message),
                    other => other,
                })?;
                crate::space::check_reserve(&dir, shard_id)?;
                idle.fetch_max(ms, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            })
            .await
        {
            Err(StorageError::WorkerGone) => Err(StorageError::NoSuchTxn(txn_id)),
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
        self.shards.clear();
    }
}

/// Refuses a batch with a writing statement on a fenced shard: 40001, for the coordinator or
/// client to retry with a plan that writes every copy in a checked transaction.
fn refuse_writes_while_fenced(
    conn: &Connection,
    shard_id: u64,
    statements: &[Statement],
) -> Result<(), StorageError> {
    for st in statements {
        // Schema changes reach every copy, the one being filled included: not refused.
        let head = st.sql.trim_start().get(..6).unwrap_or("");
        let ddl = ["CREATE", "DROP T", "DROP I", "ALTER "]
            .iter()
            .any(|p| head.eq_ignore_ascii_case(p));
        if !ddl && !conn.prepare_cached(&st.sql)?.readonly() {
            return Err(StorageError::Sql {
                sqlstate: "40001",
                message: format!(
                    "could not serialize access: shard {shard_id} is being copied and this write was planned before the copy began; retry"
                ),
            });
        }
    }
    Ok(())
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
    if waited_ms(attempt) >= BUSY_TIMEOUT_MS.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    let step_us = (50u64 << attempt.clamp(0, 5) as u32).min(1000);
    std::thread::sleep(Duration::from_micros(step_us));
    true
}

/// Milliseconds slept by [`wait_for_lock`] before attempt `attempt`: attempts 0..5 sleep
/// 50..800 µs (1.55 ms in all); each later attempt sleeps 1 ms.
fn waited_ms(attempt: i32) -> u64 {
    if attempt < 5 {
        0
    } else {
        (1550 + (attempt as u64 - 5) * 1000) / 1000
    }
}

/// Opens a shard database with Tessera's settings: WAL, the configured fsync level,
/// case-sensitive LIKE (as in Postgres), and the reference database attached as `ref`.
fn open_connection(
    config: &StorageConfig,
    path: &Path,
    kind: ShardKindOnDisk,
    docs: Option<(Arc<crate::docstore::DocStore>, u64)>,
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
    crate::jsonfn::register(&conn)?;
    crate::pgfn::register(&conn)?;
    crate::jsonsrf::register(&conn)?;
    if let (ShardKindOnDisk::Sql, Some((store, shard))) = (kind, docs) {
        crate::doctab::register(&conn, store, shard)?;
    }
    if kind == ShardKindOnDisk::Sql {
        let reference = config.data_dir.join(REFERENCE_DB);
        conn.execute("ATTACH DATABASE ?1 AS ref", [reference.to_string_lossy()])?;
        conn.execute_batch(&format!("PRAGMA ref.synchronous = {sync};"))?;
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_shared::proto::ShardKind;

    fn write(sql: &str) -> Vec<Statement> {
        vec![Statement {
            sql: sql.into(),
            params: vec![],
            returns_rows: false,
        }]
    }

    /// Two transactions lock two shards in opposite orders. The younger one's wait for the
    /// older one's lock ends after `younger_wait_ms` with 40001; the older one, waiting for
    /// the younger one's lock, then gets it and commits. Without the ordering both waited out
    /// the lock timeout, and the older one (waiting first) was the one to fail.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lock_cycle_fails_the_younger_transaction() {
        let dir = tempfile::tempdir().expect("tmp");
        let reg = Arc::new(
            ShardRegistry::open(StorageConfig {
                data_dir: dir.path().to_path_buf(),
                busy_timeout_ms: 20_000,
                younger_wait_ms: 50,
                ..StorageConfig::default()
            })
            .expect("open"),
        );
        for shard in [1, 2] {
            reg.create_shard(
                shard,
                ShardKind::Sql,
                vec!["CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER)".into()],
            )
            .await
            .expect("shard");
        }
        let (older, younger) = (100, 200);
        reg.execute(1, older, write("INSERT INTO t VALUES (1, 1)"))
            .await
            .expect("older locks shard 1");
        reg.execute(2, younger, write("INSERT INTO t VALUES (2, 2)"))
            .await
            .expect("younger locks shard 2");
        // The older one waits for shard 2 (held by the younger one)...
        let r = reg.clone();
        let older_waits = tokio::spawn(async move {
            r.execute(2, older, write("INSERT INTO t VALUES (3, 1)"))
                .await
        });
        // ...while the younger one asks for shard 1: a cycle.
        let e = reg
            .execute(1, younger, write("INSERT INTO t VALUES (4, 2)"))
            .await
            .expect_err("the younger transaction gives way");
        assert_eq!(e.sqlstate(), "40001", "{e:?}");
        reg.finish_txn(1, younger, false).await.expect("rollback");
        reg.finish_txn(2, younger, false).await.expect("rollback");
        older_waits
            .await
            .expect("join")
            .expect("the older transaction gets the lock");
        for shard in [1, 2] {
            reg.finish_txn(shard, older, true).await.expect("commit");
        }
        let rows = reg
            .execute(
                2,
                0,
                vec![Statement {
                    sql: "SELECT k FROM t ORDER BY k".into(),
                    params: vec![],
                    returns_rows: true,
                }],
            )
            .await
            .expect("read");
        // Shard 2 has the older transaction's row only: the younger one's was rolled back.
        assert_eq!(rows[0].rows.len(), 1, "{rows:?}");
        assert!(
            reg.holders.0.is_empty(),
            "finished transactions hold no locks"
        );
    }

    /// A shard dropped and created again (repair re-copying onto a node that held a stale copy)
    /// must not be touched by connections of the old copy. SQLite deletes a database's WAL by
    /// name when its last connection closes; a connection of the old copy closing after the
    /// new copy opened deleted the new copy's WAL, and the shard then failed with "disk I/O
    /// error" (seen in CI after a storage node restart).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_recreated_shard_is_not_touched_by_the_old_copys_connections() {
        let dir = tempfile::tempdir().expect("tmp");
        let reg = ShardRegistry::open(StorageConfig {
            data_dir: dir.path().to_path_buf(),
            ..StorageConfig::default()
        })
        .expect("open");
        let schema = || vec!["CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER)".to_string()];
        reg.create_shard(1, ShardKind::Sql, schema())
            .await
            .expect("shard");
        reg.execute(1, 0, write("INSERT INTO t VALUES (1, 1)"))
            .await
            .expect("write");
        // A transaction of the old copy is open when the shard is dropped.
        reg.execute(1, 77, write("INSERT INTO t VALUES (2, 2)"))
            .await
            .expect("txn write");
        reg.drop_shard(1).await.expect("drop");
        assert_eq!(
            open_files_named(dir.path(), "shard-1.db"),
            0,
            "a connection of the dropped copy is still open"
        );
        reg.create_shard(1, ShardKind::Sql, schema())
            .await
            .expect("again");
        for k in 10..20 {
            reg.execute(1, 0, write(&format!("INSERT INTO t VALUES ({k}, 0)")))
                .await
                .expect("write to the new copy");
        }
        // The old transaction ends (its connection closes) after the new copy has a WAL.
        let _ = reg.finish_txn(1, 77, false).await;
        for txn in 100..105 {
            reg.execute(1, txn, write(&format!("INSERT INTO t VALUES ({txn}, 1)")))
                .await
                .expect("a new connection writes");
            reg.finish_txn(1, txn, true).await.expect("commit");
        }
        let rows = reg
            .execute(
                1,
                0,
                vec![Statement {
                    sql: "SELECT count(*) FROM t".into(),
                    params: vec![],
                    returns_rows: true,
                }],
            )
            .await
            .expect("read");
        assert_eq!(
            tessera_shared::Value::from(rows[0].rows[0].values[0].clone()),
            tessera_shared::Value::Integer(15),
            "{rows:?}"
        );
        drop(reg);
        // Reopened from disk, the new copy has every committed row and nothing of the old one.
        let reg = ShardRegistry::open(StorageConfig {
            data_dir: dir.path().to_path_buf(),
            ..StorageConfig::default()
        })
        .expect("reopen");
        let rows = reg
            .execute(
                1,
                0,
                vec![Statement {
                    sql: "SELECT count(*), sum(k = 1) FROM t".into(),
                    params: vec![],
                    returns_rows: true,
                }],
            )
            .await
            .expect("read after reopen");
        assert_eq!(
            tessera_shared::Value::from(rows[0].rows[0].values[0].clone()),
            tessera_shared::Value::Integer(15),
            "{rows:?}"
        );
    }

    /// A statement's own transaction, opened with a short idle limit, is rolled back after it
    /// (its coordinator died); once prepared it keeps the client-transaction limit, so a
    /// coordinator that decided to commit finds it open when it comes back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prepared_transactions_outlive_the_short_idle_limit() {
        let dir = tempfile::tempdir().expect("tmp");
        let reg = ShardRegistry::open(StorageConfig {
            data_dir: dir.path().to_path_buf(),
            ..StorageConfig::default()
        })
        .expect("open");
        reg.create_shard(
            1,
            ShardKind::Sql,
            vec!["CREATE TABLE t (k INTEGER PRIMARY KEY)".into()],
        )
        .await
        .expect("shard");
        let short = Some(Duration::from_millis(100));
        reg.execute_idle(1, 10, write("INSERT INTO t VALUES (1)"), short)
            .await
            .expect("abandoned");
        reg.execute_idle(1, 11, write("INSERT INTO t VALUES (2)"), short)
            .await
            .expect_err("the abandoned transaction holds the lock");
        reg.finish_txn(1, 11, false).await.expect("rollback");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let e = reg.finish_txn(1, 10, true).await.expect_err("rolled back");
        assert_eq!(e.sqlstate(), "25P02");
        reg.execute_idle(1, 12, write("INSERT INTO t VALUES (3)"), short)
            .await
            .expect("the lock is free again");
        reg.prepare_txn(1, 12).await.expect("prepare");
        tokio::time::sleep(Duration::from_millis(400)).await;
        reg.finish_txn(1, 12, true)
            .await
            .expect("a prepared transaction is still there");
        let rows = reg
            .execute(
                1,
                0,
                vec![Statement {
                    sql: "SELECT k FROM t".into(),
                    params: vec![],
                    returns_rows: true,
                }],
            )
            .await
            .expect("read");
        assert_eq!(rows[0].rows.len(), 1, "{rows:?}");
    }

    /// How many of this process's open files are `dir/<name>*`.
    fn open_files_named(dir: &Path, name: &str) -> usize {
        let prefix = dir.join(name);
        std::fs::read_dir("/proc/self/fd")
            .expect("fds")
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|p| p.to_string_lossy().starts_with(&*prefix.to_string_lossy()))
            .count()
    }

    #[test]
    fn waited_time_grows_with_attempts() {
        assert_eq!(waited_ms(0), 0);
        assert_eq!(waited_ms(5), 1);
        assert_eq!(waited_ms(55), 51);
    }
}
