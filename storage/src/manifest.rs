//! The versioned manifest of shards a node hosts, written atomically (temp file, fsync, rename).

use crate::error::StorageError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Current manifest format. Bump it with an upgrade step when the layout changes.
pub const MANIFEST_VERSION: u32 = 1;

/// What kind of database a shard is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardKindOnDisk {
    /// A shard of distributed tables: `shard-<id>.db`.
    Sql,
    /// The node's reference database, `reference.db`, attached to every shard as `ref`.
    Reference,
}

/// One hosted shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardEntry {
    /// Cluster-wide shard id, given by the catalog.
    pub id: u64,
    /// Which database file it is.
    pub kind: ShardKindOnDisk,
}

/// The manifest file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version, [`MANIFEST_VERSION`].
    pub version: u32,
    /// Hosted shards.
    pub shards: Vec<ShardEntry>,
}

impl Manifest {
    /// Path of the manifest in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("MANIFEST.json")
    }

    /// Loads the manifest, or an empty one on a fresh directory.
    pub fn load(dir: &Path) -> Result<Manifest, StorageError> {
        let path = Self::path(dir);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let m: Manifest = serde_json::from_slice(&bytes)
                    .map_err(|e| StorageError::Manifest(format!("{}: {e}", path.display())))?;
                if m.version != MANIFEST_VERSION {
                    return Err(StorageError::Manifest(format!(
                        "{} has format version {}, this build reads {MANIFEST_VERSION}",
                        path.display(),
                        m.version
                    )));
                }
                Ok(m)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest {
                version: MANIFEST_VERSION,
                shards: Vec::new(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the manifest durably: a crash leaves either the old or the new one.
    pub fn store(&self, dir: &Path) -> Result<(), StorageError> {
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|e| StorageError::Manifest(e.to_string()))?;
        Ok(tessera_shared::fsutil::write_atomically(
            &Self::path(dir),
            &bytes,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = Manifest::load(dir.path()).expect("load empty");
        assert!(empty.shards.is_empty());
        let m = Manifest {
            version: MANIFEST_VERSION,
            shards: vec![ShardEntry {
                id: 7,
                kind: ShardKindOnDisk::Sql,
            }],
        };
        m.store(dir.path()).expect("store");
        assert_eq!(Manifest::load(dir.path()).expect("load").shards[0].id, 7);
        std::fs::write(Manifest::path(dir.path()), br#"{"version":99,"shards":[]}"#)
            .expect("write");
        assert!(Manifest::load(dir.path()).is_err());
    }
}
