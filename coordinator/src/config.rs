//! Coordinator settings, with their documented defaults.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Default Postgres port of a Tessera coordinator (5432 is left to PostgreSQL).
pub const DEFAULT_PORT: u16 = 7432;

/// A storage node the coordinator should know at start-up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeConfig {
    /// Stable name (`storage-1`).
    pub name: String,
    /// gRPC address `host:port`.
    pub addr: String,
}

/// How a coordinator runs. Every field has a default (see [`CoordinatorConfig::default`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CoordinatorConfig {
    /// Postgres wire listen address. Default `127.0.0.1:7432`.
    pub listen: String,
    /// Directory of the catalog. Default `./data/coordinator`.
    pub data_dir: PathBuf,
    /// Directory of a catalog shared with other coordinators on this host (they then serve
    /// the same tables). Default none: the catalog lives in `data_dir`, this coordinator's alone.
    pub catalog_dir: Option<PathBuf>,
    /// Shards of a hash-distributed table without `WITH (shards = N)`. Default 8.
    pub default_shards: u32,
    /// Copies of each shard of a table without `WITH (replicas = N)`, on distinct storage
    /// nodes. Default 1.
    pub default_replicas: u32,
    /// Storage nodes to register at start-up (added to the catalog, addresses updated).
    pub storage_nodes: Vec<NodeConfig>,
    /// Authentication: `trust` (no password asked; stated loudly at start-up) or
    /// `scram-sha-256` (passwords checked against the catalog's roles). Default `trust`.
    pub auth: String,
    /// With `scram-sha-256`: the password of the first superuser, `postgres`, created when the
    /// catalog has no such role (also read from the `TESSERA_PASSWORD` environment variable).
    /// Ignored once the role exists. Default none.
    pub password: Option<String>,
    /// PEM certificate chain for TLS (with `tls_key`). Default none: TLS is declined.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    pub tls_key: Option<PathBuf>,
    /// Refuse clients that do not negotiate TLS (28000). Default false.
    pub tls_required: bool,
    /// Storage nodes hosted inside this process (no network hop to their shards).
    /// Each is registered in the catalog as `embedded:<node_name>`.
    pub embedded_storage: Vec<tessera_storage::StorageConfig>,
    /// The query-result cache.
    pub cache: crate::cache::CacheConfig,
    /// Storage-node failure detection.
    pub liveness: crate::replication::liveness::LivenessConfig,
    /// Membership of the metadata Raft group. Default none: the catalog is this
    /// coordinator's file (`data_dir/catalog.json`, or the shared `catalog_dir`).
    pub meta: Option<MetaSettings>,
    /// What one client may ask of this coordinator.
    pub limits: Limits,
}

/// Bounds on what clients may ask of a coordinator (`[limits]` in TOML).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Limits {
    /// Largest protocol message a client may send; a larger one is refused with `54000` and
    /// its connection closed. Default 64 MiB (PostgreSQL's limit is 1 GiB).
    pub max_message_bytes: usize,
    /// Named prepared statements (and named portals) one session may hold; one more is
    /// refused with `54000`. Default 10,000.
    pub max_prepared_statements: usize,
    /// Memory all statements of this coordinator may hold at once in rows pulled from shards,
    /// merged results and scratch-database output; past it a statement fails with `53200`.
    /// One statement's share is the session setting `tessera.statement_memory` (512MB).
    /// Default 4 GiB.
    pub shared_memory_bytes: usize,
    /// Page cache of a statement's scratch database (it spills to a temporary file beyond
    /// this). Default 32 MiB.
    pub scratch_cache_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 << 20,
            max_prepared_statements: 10_000,
            shared_memory_bytes: 4 << 30,
            scratch_cache_bytes: 32 << 20,
        }
    }
}

/// This coordinator's place in the metadata Raft group (its log lives in `data_dir/meta`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetaSettings {
    /// This member's id, one of `members`' keys.
    pub id: u64,
    /// Listen address of the metadata RPC (`host:port`).
    pub listen: String,
    /// Every member's id and metadata RPC address, this one included. The lowest id
    /// initialises the group the first time.
    pub members: std::collections::BTreeMap<u64, String>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            listen: format!("127.0.0.1:{DEFAULT_PORT}"),
            data_dir: PathBuf::from("data/coordinator"),
            catalog_dir: None,
            default_shards: 8,
            default_replicas: 1,
            storage_nodes: Vec::new(),
            auth: "trust".into(),
            password: None,
            tls_cert: None,
            tls_key: None,
            tls_required: false,
            embedded_storage: Vec::new(),
            cache: Default::default(),
            meta: None,
            liveness: Default::default(),
            limits: Default::default(),
        }
    }
}
