//! Where the catalog lives: the [`CatalogStore`] trait and its file-backed implementation.

use super::{Catalog, CatalogCommand, CATALOG_VERSION};
use crate::error::CoordError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

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
/// Single coordinator only; the consensus issue replaces it with Raft.
pub struct FileCatalog {
    path: PathBuf,
    current: RwLock<Arc<Catalog>>,
    /// Serialises writers so commands apply in one order.
    write: Mutex<()>,
}

impl FileCatalog {
    /// Opens (or creates) `dir/catalog.json`.
    pub fn open(dir: &Path) -> Result<FileCatalog, CoordError> {
        std::fs::create_dir_all(dir).map_err(|e| CoordError::Io(e.to_string()))?;
        let path = dir.join("catalog.json");
        let catalog = match std::fs::read(&path) {
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
                c
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Catalog::default(),
            Err(e) => return Err(CoordError::Io(e.to_string())),
        };
        Ok(FileCatalog {
            path,
            current: RwLock::new(Arc::new(catalog)),
            write: Mutex::new(()),
        })
    }

    fn commit(
        &self,
        f: impl FnOnce(&mut Catalog) -> Result<(), CoordError>,
    ) -> Result<Arc<Catalog>, CoordError> {
        let _w = self
            .write
            .lock()
            .map_err(|_| CoordError::Internal("catalog lock poisoned".into()))?;
        let mut next = (*self.snapshot()).clone();
        f(&mut next)?;
        let bytes =
            serde_json::to_vec_pretty(&next).map_err(|e| CoordError::Internal(e.to_string()))?;
        tessera_shared::fsutil::write_atomically(&self.path, &bytes).map_err(|e| {
            // A failed fsync leaves the file's state unknown: do not retry, stop.
            tracing::error!(error = %e, "catalog write failed; stopping");
            std::process::abort();
        })?;
        let next = Arc::new(next);
        *self
            .current
            .write()
            .map_err(|_| CoordError::Internal("catalog lock poisoned".into()))? = next.clone();
        Ok(next)
    }
}

#[async_trait::async_trait]
impl CatalogStore for FileCatalog {
    fn snapshot(&self) -> Arc<Catalog> {
        self.current.read().map(|c| c.clone()).unwrap_or_default()
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
