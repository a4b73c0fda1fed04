//! Where the catalog lives: the [`CatalogStore`] trait and its file-backed implementation.

use super::{Catalog, CatalogCommand, CATALOG_VERSION};
use crate::error::CoordError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// A durable, ordered log of catalog commands with a cached current catalog.
/// Planning reads [`CatalogStore::snapshot`] and never waits on I/O.
#[async_trait::async_trait]
pub trait CatalogStore: Send + Sync {
    /// The current catalog.
    fn snapshot(&self) -> Arc<Catalog>;
    /// Applies `cmd` durably; returns the new catalog.
    async fn propose(&self, cmd: CatalogCommand) -> Result<Arc<Catalog>, CoordError>;
    /// Reserves `n` fresh ids (for groups and shards) durably.
    async fn reserve_ids(&self, n: u64) -> Result<u64, CoordError>;
}

/// The catalog in one JSON file, rewritten atomically on every change.
///
/// Several coordinators on one host may share the file (`catalog_dir`): a writer takes an
/// exclusive lock on `catalog.lock`, re-reads the file, applies its command and rewrites
/// it; readers notice a rewritten file (new inode) within [`SHARED_RECHECK`]. This is the
/// single-host stand-in for the Raft metadata group of the consensus issue.
pub struct FileCatalog {
    path: PathBuf,
    lock_path: PathBuf,
    /// Whether other coordinators may change the file.
    shared: bool,
    current: RwLock<Arc<Catalog>>,
    /// The file identity `current` was read from, and when it was last compared.
    seen: Mutex<(Stamp, Instant)>,
    /// Serialises this process's writers so commands apply in one order.
    write: Mutex<()>,
}

/// How long a shared catalog's reader trusts its copy before looking at the file again.
pub const SHARED_RECHECK: Duration = Duration::from_millis(2);

/// Identity of the catalog file's current version: (inode, length, mtime ns).
type Stamp = (u64, u64, i128);

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => (
            m.ino(),
            m.len(),
            i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ),
        Err(_) => (0, 0, 0),
    }
}

fn read_catalog(path: &Path) -> Result<Catalog, CoordError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let c: Catalog = serde_json::from_slice(&bytes)
                .map_err(|e| CoordError::Io(format!("{}: {e}", path.display())))?;
            if c.version != CATALOG_VERSION {
                return Err(CoordError::Io(format!(
                    "{} has format version {}, this build reads {CATALOG_VERSION}",
                    path.display(),
                    c.version
                )));
            }
            Ok(c)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Catalog::default()),
        Err(e) => Err(CoordError::Io(e.to_string())),
    }
}

impl FileCatalog {
    /// Opens (or creates) `dir/catalog.json`, used by this coordinator alone.
    pub fn open(dir: &Path) -> Result<FileCatalog, CoordError> {
        FileCatalog::open_with(dir, false)
    }

    /// Opens `dir/catalog.json`; `shared` when other coordinators use the same file.
    pub fn open_with(dir: &Path, shared: bool) -> Result<FileCatalog, CoordError> {
        std::fs::create_dir_all(dir).map_err(|e| CoordError::Io(e.to_string()))?;
        let path = dir.join("catalog.json");
        let st = stamp(&path);
        let catalog = read_catalog(&path)?;
        Ok(FileCatalog {
            lock_path: dir.join("catalog.lock"),
            path,
            shared,
            current: RwLock::new(Arc::new(catalog)),
            seen: Mutex::new((st, Instant::now())),
            write: Mutex::new(()),
        })
    }

    fn cached(&self) -> Arc<Catalog> {
        self.current.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Re-reads the file if another coordinator rewrote it (shared catalogs only).
    fn refresh(&self, force: bool) -> Result<(), CoordError> {
        if !self.shared {
            return Ok(());
        }
        let Ok(mut seen) = self.seen.lock() else {
            return Ok(());
        };
        if !force && seen.1.elapsed() < SHARED_RECHECK {
            return Ok(());
        }
        let now = stamp(&self.path);
        seen.1 = Instant::now();
        if now == seen.0 {
            return Ok(());
        }
        let catalog = read_catalog(&self.path)?;
        seen.0 = now;
        if let Ok(mut c) = self.current.write() {
            *c = Arc::new(catalog);
        }
        Ok(())
    }

    fn commit(
        &self,
        f: impl FnOnce(&mut Catalog) -> Result<(), CoordError>,
    ) -> Result<Arc<Catalog>, CoordError> {
        let _w = self
            .write
            .lock()
            .map_err(|_| CoordError::Internal("catalog lock poisoned".into()))?;
        // Other coordinators' writers wait here; the file is then re-read under the lock.
        let lock_file = if self.shared {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&self.lock_path)
                .map_err(|e| CoordError::Io(e.to_string()))?;
            file.lock().map_err(|e| CoordError::Io(e.to_string()))?;
            self.refresh(true)?;
            Some(file)
        } else {
            None
        };
        let mut next = (*self.cached()).clone();
        f(&mut next)?;
        let bytes =
            serde_json::to_vec_pretty(&next).map_err(|e| CoordError::Internal(e.to_string()))?;
        tessera_shared::fsutil::write_atomically(&self.path, &bytes).map_err(|e| {
            // A failed fsync leaves the file's state unknown: do not retry, stop.
            tracing::error!(error = %e, "catalog write failed; stopping");
            std::process::abort();
        })?;
        if let Ok(mut seen) = self.seen.lock() {
            *seen = (stamp(&self.path), Instant::now());
        }
        let next = Arc::new(next);
        *self
            .current
            .write()
            .map_err(|_| CoordError::Internal("catalog lock poisoned".into()))? = next.clone();
        drop(lock_file);
        Ok(next)
    }
}

#[async_trait::async_trait]
impl CatalogStore for FileCatalog {
    fn snapshot(&self) -> Arc<Catalog> {
        if let Err(e) = self.refresh(false) {
            tracing::warn!(error = %e, "cannot re-read the shared catalog; using the last copy");
        }
        self.cached()
    }

    async fn propose(&self, cmd: CatalogCommand) -> Result<Arc<Catalog>, CoordError> {
        tokio::task::block_in_place(|| self.commit(|c| c.apply(cmd)))
    }

    async fn reserve_ids(&self, n: u64) -> Result<u64, CoordError> {
        tokio::task::block_in_place(|| {
            let mut first = 0;
            self.commit(|c| {
                first = c.next_id;
                c.next_id += n;
                Ok(())
            })?;
            Ok(first)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn coordinators_sharing_a_catalog_see_each_others_changes() {
        let dir = tempfile::tempdir().expect("dir");
        let a = Arc::new(FileCatalog::open_with(dir.path(), true).expect("a"));
        let b = Arc::new(FileCatalog::open_with(dir.path(), true).expect("b"));
        // Interleaved writers from both never lose a command.
        let mut tasks = Vec::new();
        for (i, c) in [a.clone(), b.clone()].into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                for j in 0..25 {
                    c.propose(CatalogCommand::UpsertNode {
                        name: format!("n{i}-{j}"),
                        addr: "127.0.0.1:1".into(),
                    })
                    .await
                    .expect("propose");
                }
            }));
        }
        for t in tasks {
            t.await.expect("join");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while a.snapshot().nodes.len() != 50 || b.snapshot().nodes.len() != 50 {
            assert!(Instant::now() < deadline, "coordinators did not converge");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(a.snapshot(), b.snapshot());
    }
}
