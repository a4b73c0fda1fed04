//! The coordinator and storage roles as processes: flags, optional TOML config, readiness line, shutdown.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use tessera_coordinator::config::NodeConfig;
use tessera_coordinator::CoordinatorConfig;
use tessera_storage::StorageConfig;

/// The line a role prints on stdout once it accepts connections: `TESSERA_READY <role> <addr>`.
pub const READY: &str = "TESSERA_READY";

fn load<T: serde::de::DeserializeOwned + Default>(path: &Option<PathBuf>) -> anyhow::Result<T> {
    match path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))
        }
        None => Ok(T::default()),
    }
}

/// `tessera coordinator` flags (override the TOML file).
#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    /// TOML file with `CoordinatorConfig` fields.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Postgres listen address (default 127.0.0.1:7432; port 0 picks a free port).
    #[arg(long)]
    pub listen: Option<String>,
    /// Catalog directory (default ./data/coordinator).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Catalog directory shared with other coordinators on this host (default: the data dir, unshared).
    #[arg(long)]
    pub catalog_dir: Option<PathBuf>,
    /// Authentication: trust (default) or scram-sha-256 (the first superuser's password comes
    /// from TESSERA_PASSWORD or the config file's `password`).
    #[arg(long)]
    pub auth: Option<String>,
    /// PEM certificate chain: enables TLS (with --tls-key).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Refuse clients that do not use TLS.
    #[arg(long)]
    pub tls_required: bool,
    /// Storage nodes as name=host:port, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub storage: Vec<String>,
    /// Shards of a hash table without WITH (shards = N) (default 8).
    #[arg(long)]
    pub default_shards: Option<u32>,
    /// Copies of each shard of a table without WITH (replicas = N) (default 1).
    #[arg(long)]
    pub default_replicas: Option<u32>,
    #[command(flatten)]
    pub liveness: LivenessArgs,
    /// This coordinator's id in the metadata Raft group (with --meta-listen and --meta-members).
    #[arg(long)]
    pub meta_id: Option<u64>,
    /// Listen address of the metadata Raft RPC.
    #[arg(long)]
    pub meta_listen: Option<String>,
    /// Every member of the metadata Raft group as id=host:port, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub meta_members: Vec<String>,
}

/// Storage-node failure detection and repair flags, shared by `tessera coordinator` and `tessera local`.
#[derive(Args, Debug, Clone, Default)]
pub struct LivenessArgs {
    /// Silence (ms) after which a storage node is suspect (default 3000).
    #[arg(long)]
    pub node_suspect_ms: Option<u64>,
    /// Silence (ms) after which a storage node is dead and leaves its replicated shards
    /// (default 10000).
    #[arg(long)]
    pub node_dead_ms: Option<u64>,
    /// Rows per batch when a shard copy is made (repair, move, drain; default 500).
    #[arg(long)]
    pub repair_batch_rows: Option<usize>,
    /// Pause (ms) between two batches of a shard copy: the copy's throttle (default 10).
    #[arg(long)]
    pub repair_pause_ms: Option<u64>,
}

impl LivenessArgs {
    /// Overrides the configured timing with the flags given.
    pub fn apply(&self, config: &mut tessera_coordinator::replication::liveness::LivenessConfig) {
        if let Some(ms) = self.node_suspect_ms {
            config.suspect_after_ms = ms;
        }
        if let Some(ms) = self.node_dead_ms {
            config.dead_after_ms = ms;
        }
        if let Some(n) = self.repair_batch_rows {
            config.repair_batch_rows = n;
        }
        if let Some(ms) = self.repair_pause_ms {
            config.repair_pause_ms = ms;
        }
    }

    /// The same flags, for a child `tessera coordinator`.
    pub fn to_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(ms) = self.node_suspect_ms {
            out.extend(["--node-suspect-ms".to_string(), ms.to_string()]);
        }
        if let Some(ms) = self.node_dead_ms {
            out.extend(["--node-dead-ms".to_string(), ms.to_string()]);
        }
        if let Some(n) = self.repair_batch_rows {
            out.extend(["--repair-batch-rows".to_string(), n.to_string()]);
        }
        if let Some(ms) = self.repair_pause_ms {
            out.extend(["--repair-pause-ms".to_string(), ms.to_string()]);
        }
        out
    }
}

/// `tessera storage` flags (override the TOML file).
#[derive(Args, Debug)]
pub struct StorageArgs {
    /// TOML file with `StorageConfig` fields.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// gRPC listen address (default 127.0.0.1:7501; port 0 picks a free port).
    #[arg(long)]
    pub listen: Option<String>,
    /// Data directory (default ./data/storage).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Node name (default storage).
    #[arg(long)]
    pub name: Option<String>,
    /// SQLite synchronous level: full (default) or normal.
    #[arg(long)]
    pub synchronous: Option<String>,
}

/// Runs a coordinator until SIGINT/SIGTERM.
pub async fn run_coordinator(a: CoordinatorArgs) -> anyhow::Result<()> {
    crate::shutdown::die_with_parent();
    let mut config: CoordinatorConfig = load(&a.config)?;
    if let Some(l) = a.listen {
        config.listen = l;
    }
    if let Some(d) = a.data_dir {
        config.data_dir = d;
    }
    if let Some(n) = a.default_shards {
        config.default_shards = n.max(1);
    }
    if let Some(n) = a.default_replicas {
        config.default_replicas = n.max(1);
    }
    if let Some(d) = a.catalog_dir {
        config.catalog_dir = Some(d);
    }
    if let Some(auth) = a.auth {
        config.auth = auth;
    }
    if a.tls_cert.is_some() {
        config.tls_cert = a.tls_cert;
    }
    if a.tls_key.is_some() {
        config.tls_key = a.tls_key;
    }
    config.tls_required |= a.tls_required;
    if config.tls_cert.is_some() != config.tls_key.is_some() {
        anyhow::bail!("TLS needs both a certificate (--tls-cert) and a key (--tls-key)");
    }
    if config.tls_required && config.tls_cert.is_none() {
        anyhow::bail!("--tls-required needs --tls-cert and --tls-key");
    }
    for s in a.storage {
        let (name, addr) = s
            .split_once('=')
            .with_context(|| format!("--storage wants name=host:port, got {s}"))?;
        config.storage_nodes.push(NodeConfig {
            name: name.into(),
            addr: addr.into(),
        });
    }
    a.liveness.apply(&mut config.liveness);
    if let Some(id) = a.meta_id {
        let mut members = std::collections::BTreeMap::new();
        for m in &a.meta_members {
            let (mid, addr) = m
                .split_once('=')
                .with_context(|| format!("--meta-members wants id=host:port, got {m}"))?;
            members.insert(mid.parse::<u64>().context("member id")?, addr.to_string());
        }
        let listen = a
            .meta_listen
            .clone()
            .or_else(|| members.get(&id).cloned())
            .context("--meta-listen (or this id in --meta-members)")?;
        if !members.contains_key(&id) {
            anyhow::bail!("--meta-members must include this coordinator's id {id}");
        }
        config.meta = Some(tessera_coordinator::config::MetaSettings {
            id,
            listen,
            members,
        });
    }
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let engine = std::sync::Arc::new(tessera_coordinator::Engine::open(config.clone()).await?);
    let _liveness = tessera_coordinator::replication::liveness::spawn(std::sync::Arc::downgrade(
        &engine.replication,
    ));
    if config.auth == "trust" {
        tracing::warn!(
            "authentication is 'trust': any user connects without a password (local default)"
        );
    }
    tracing::info!(%addr, nodes = config.storage_nodes.len(), "coordinator listening");
    println!("{READY} coordinator {addr}");
    tessera_coordinator::server::serve(engine.clone(), listener, crate::shutdown::signal()).await?;
    engine.cluster.close_embedded();
    Ok(())
}

/// Runs a storage node until SIGINT/SIGTERM.
pub async fn run_storage(a: StorageArgs) -> anyhow::Result<()> {
    crate::shutdown::die_with_parent();
    let mut config: StorageConfig = load(&a.config)?;
    if let Some(d) = a.data_dir {
        config.data_dir = d;
    }
    let identity = crate::identity::Identity::read(&config.data_dir);
    match (a.name, &identity) {
        (Some(n), _) => config.node_name = n,
        (None, Some(id)) => config.node_name = id.name.clone(),
        (None, None) => {}
    }
    if let Some(s) = a.synchronous {
        config.synchronous = s;
    }
    let listen = a.listen.unwrap_or_else(|| "127.0.0.1:7501".into());
    let listener = crate::identity::bind(&listen, identity.as_ref()).await?;
    let addr = listener.local_addr()?;
    crate::identity::Identity {
        name: config.node_name.clone(),
        addr: addr.to_string(),
    }
    .write(&config.data_dir)?;
    println!("{READY} storage {addr}");
    tessera_storage::serve(config, listener, crate::shutdown::signal()).await?;
    Ok(())
}
