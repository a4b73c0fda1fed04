//! Storage node settings, with their documented defaults.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How a storage node runs. Every field has a default (see [`StorageConfig::default`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// Directory holding the manifest and one SQLite file per shard. Default `./data/storage`.
    pub data_dir: PathBuf,
    /// Name of this node in logs and stats. Default `storage`.
    pub node_name: String,
    /// SQLite `synchronous` level: `full` (default: every commit fsynced, nothing
    /// acknowledged is lost even on power failure) or `normal` (survives a process
    /// crash, may lose the last commits on power loss).
    pub synchronous: String,
    /// How long a writer waits for another transaction's write lock before failing
    /// with SQLSTATE 40001. Default 2000 ms.
    pub busy_timeout_ms: u64,
    /// How long a transaction waits for a write lock an *older* transaction holds before
    /// failing with SQLSTATE 40001. Waits for younger holders last up to `busy_timeout_ms`,
    /// so every lock cycle between transactions (two shards locked in opposite orders)
    /// breaks within this time. Default 50 ms.
    pub younger_wait_ms: u64,
    /// How long a transaction waits for a row an *older* transaction locked before failing
    /// with SQLSTATE 40P01 (PostgreSQL's `deadlock_timeout`): every cycle of row-lock waits
    /// through several nodes breaks within this time; cycles on one node break at once.
    /// Default 1000 ms.
    pub deadlock_timeout_ms: u64,
    /// An open transaction idle this long is rolled back. Default 300 s.
    pub txn_idle_timeout_secs: u64,
}

/// SQLite's `synchronous` value for a node setting (`full` unless `normal` or `off`), shared by
/// shard connections and the prepared log, which must sync alike.
pub fn sqlite_synchronous(setting: &str) -> &'static str {
    match setting {
        "normal" => "NORMAL",
        "off" => "OFF",
        _ => "FULL",
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("data/storage"),
            node_name: "storage".into(),
            synchronous: "full".into(),
            busy_timeout_ms: 2000,
            younger_wait_ms: 50,
            deadlock_timeout_ms: 1000,
            txn_idle_timeout_secs: 300,
        }
    }
}
