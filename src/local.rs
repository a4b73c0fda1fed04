//! `tessera local`: a supervisor that starts storage nodes and a coordinator as child processes.
//!
//! Ports of storage nodes are chosen by the OS on first start and remembered in
//! `DATA_DIR/local.json`, so a restarted cluster finds its nodes where the
//! catalog says. SIGINT/SIGTERM stop the children cleanly; if the supervisor
//! itself is killed, the kernel sends its children SIGTERM.

use crate::roles::READY;
use crate::shutdown::SUPERVISED_ENV;
use anyhow::{bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// `tessera local` flags.
#[derive(Args, Debug)]
pub struct LocalArgs {
    /// Data directory of the whole cluster.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// The coordinator's Postgres port (0 picks a free one; it is printed).
    #[arg(long, default_value_t = tessera_coordinator::config::DEFAULT_PORT)]
    pub port: u16,
    /// Number of storage nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Shards of a hash table without WITH (shards = N).
    #[arg(long, default_value_t = 8)]
    pub shards: u32,
    /// SQLite synchronous level of the storage nodes: full or normal.
    #[arg(long, default_value = "full")]
    pub synchronous: String,
    /// Number of coordinators (each with its own Postgres port: --port, --port + 1, ...;
    /// all on OS-chosen ports when --port is 0). Two or more are the members of the metadata
    /// Raft group. Default 3, so the cluster survives the loss of any one process (1 with
    /// --embedded, which is one process anyway).
    #[arg(long)]
    pub coordinators: Option<usize>,
    /// Copies of each shard of a new table on distinct storage nodes, unless the table says
    /// otherwise (`WITH (replicas = N)`). Default 3, or every node when there are fewer (1
    /// with --embedded).
    #[arg(long)]
    pub replicas: Option<u32>,
    #[command(flatten)]
    pub liveness: crate::roles::LivenessArgs,
    /// Authentication of the coordinators: trust (default; local use only) or scram-sha-256
    /// (the superuser postgres gets the password in TESSERA_PASSWORD on first start).
    #[arg(long, default_value = "trust")]
    pub auth: String,
    /// PEM certificate chain: the coordinators offer TLS (with --tls-key).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Refuse clients that do not use TLS.
    #[arg(long)]
    pub tls_required: bool,
    /// Host the storage nodes inside the coordinator process: no network hop to shards
    /// (fastest), but one process, so nodes cannot be killed one by one.
    #[arg(long)]
    pub embedded: bool,
}

/// Prints a line of the start-up banner. A closed stdout (`tessera local | head`) must not
/// stop the supervisor (its children would go with it), so write errors are ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

const STATE_VERSION: u32 = 1;

/// What `local.json` remembers between runs.
#[derive(Serialize, Deserialize)]
struct LocalState {
    version: u32,
    storage_ports: Vec<u16>,
    /// Metadata Raft RPC ports of the coordinators (several coordinators only): members
    /// find each other at the same addresses after a restart.
    #[serde(default)]
    meta_ports: Vec<u16>,
}

/// A free local port, for a listener whose address other processes must know in advance.
///
/// The port is free when chosen but only taken when the process starts. It is chosen below the
/// kernel's ephemeral range (`ip_local_port_range`), where no `bind(0)` or outgoing connection
/// of another process lands meanwhile; only when no such port is free does it fall back to an
/// ephemeral one.
fn free_port() -> anyhow::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32768);
    if low > 12_000 {
        let span = u64::from(low - 10_000);
        for _ in 0..64 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            let port = 10_000 + (h.finish() % span) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Proc {
    name: String,
    addr: String,
    child: Child,
}

async fn spawn(name: &str, args: Vec<String>) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(&args)
        .env(SUPERVISED_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix(READY) {
                let addr = rest
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                return Ok::<_, std::io::Error>(Some(addr));
            }
        }
        Ok(None)
    })
    .await;
    // Keep draining the child's stdout so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    match ready {
        Ok(Ok(Some(addr))) => Ok(Proc {
            name: name.to_string(),
            addr,
            child,
        }),
        Ok(_) => bail!("{name} exited before it was ready"),
        Err(_) => bail!("{name} was not ready within 60 s"),
    }
}

fn load_state(dir: &Path) -> anyhow::Result<Option<LocalState>> {
    let p = dir.join("local.json");
    match std::fs::read(&p) {
        Ok(b) => {
            let s: LocalState =
                serde_json::from_slice(&b).with_context(|| format!("parsing {}", p.display()))?;
            if s.version != STATE_VERSION {
                bail!(
                    "{} has version {}, this build reads {STATE_VERSION}",
                    p.display(),
                    s.version
                );
            }
            Ok(Some(s))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn stop(procs: &mut [Proc]) {
    // Coordinators first (they may be finishing commits on the storage nodes), then storage
    // nodes; each kind all at once, so stopping takes at most twice the 10 s limit, however many
    // processes there are.
    let (coordinators, storage): (Vec<&mut Proc>, Vec<&mut Proc>) = procs
        .iter_mut()
        .partition(|p| p.name.starts_with("coordinator"));
    stop_all(coordinators).await;
    stop_all(storage).await;
}

async fn stop_all(procs: Vec<&mut Proc>) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    for p in procs.iter() {
        if let Some(pid) = p.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for p in procs {
        if tokio::time::timeout_at(deadline, p.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(node = %p.name, "did not stop within 10 s; killing");
            let _ = p.child.kill().await;
        }
    }
}

/// The start-up banner's authentication line.
fn print_auth(a: &LocalArgs) {
    if a.auth == "trust" {
        say!(
            "  authentication: trust — user postgres connects without a password (local use only)"
        );
    } else {
        say!(
            "  authentication: {} — user postgres, password from TESSERA_PASSWORD at first start",
            a.auth
        );
    }
    if a.tls_cert.is_some() {
        say!("  TLS: offered (sslmode=require or verify-full)");
    }
}

impl LocalArgs {
    /// Coordinators to start (see the flag).
    fn coordinators(&self) -> usize {
        self.coordinators
            .unwrap_or(if self.embedded { 1 } else { 3 })
            .max(1)
    }

    /// Copies of each shard of a new table (see the flag).
    fn replicas(&self) -> u32 {
        let default = if self.embedded {
            1
        } else {
            3.min(self.nodes.max(1) as u32)
        };
        self.replicas.unwrap_or(default).max(1)
    }
}

/// Starts the cluster and supervises it until SIGINT/SIGTERM.
pub async fn run(a: LocalArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.data_dir)?;
    let dir = std::fs::canonicalize(&a.data_dir)?;
    if a.embedded {
        return run_embedded(a, dir).await;
    }
    let state = load_state(&dir)?;
    let mut meta_ports: Vec<u16> = state
        .as_ref()
        .map(|s| s.meta_ports.clone())
        .unwrap_or_default();
    let mut ports: Vec<u16> = state.map(|s| s.storage_ports).unwrap_or_default();
    let mut procs = Vec::new();
    for i in 0..a.nodes.max(1) {
        let name = format!("storage-{}", i + 1);
        let port = ports.get(i).copied().unwrap_or(0);
        let args = vec![
            "storage".into(),
            "--name".into(),
            name.clone(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            dir.join(&name).display().to_string(),
            "--synchronous".into(),
            a.synchronous.clone(),
        ];
        let p = spawn(&name, args).await?;
        let bound: u16 = p
            .addr
            .rsplit(':')
            .next()
            .and_then(|x| x.parse().ok())
            .context("storage address")?;
        if i < ports.len() {
            ports[i] = bound;
        } else {
            ports.push(bound);
        }
        procs.push(p);
    }
    let shared = a.coordinators() > 1;
    if shared {
        while meta_ports.len() < a.coordinators() {
            meta_ports.push(free_port()?);
        }
    }
    let state = LocalState {
        version: STATE_VERSION,
        storage_ports: ports,
        meta_ports: meta_ports.clone(),
    };
    std::fs::write(dir.join("local.json"), serde_json::to_vec_pretty(&state)?)?;
    let members: Vec<String> = meta_ports
        .iter()
        .take(a.coordinators())
        .enumerate()
        .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
        .collect();
    let storage: Vec<String> = procs
        .iter()
        .map(|p| format!("{}={}", p.name, p.addr))
        .collect();
    let mut starting = Vec::new();
    for i in 0..a.coordinators() {
        // The first coordinator keeps the single-coordinator layout (its catalog directory is
        // the shared one), so a data directory can grow from one coordinator to several.
        let name = if shared {
            format!("coordinator-{}", i + 1)
        } else {
            "coordinator".to_string()
        };
        let data = if i == 0 {
            "coordinator".to_string()
        } else {
            format!("coordinator-{}", i + 1)
        };
        let port = if a.port == 0 { 0 } else { a.port + i as u16 };
        let mut args = vec![
            "coordinator".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            dir.join(&data).display().to_string(),
            "--default-shards".into(),
            a.shards.to_string(),
            "--storage".into(),
            storage.join(","),
        ];
        args.push("--auth".into());
        args.push(a.auth.clone());
        args.push("--default-replicas".into());
        args.push(a.replicas().to_string());
        args.extend(a.liveness.to_args());
        if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
            args.push("--tls-cert".into());
            args.push(cert.display().to_string());
            args.push("--tls-key".into());
            args.push(key.display().to_string());
        }
        if a.tls_required {
            args.push("--tls-required".into());
        }
        if shared {
            // The coordinators are the members of the metadata Raft group.
            args.push("--meta-id".into());
            args.push((i + 1).to_string());
            args.push("--meta-members".into());
            args.push(members.join(","));
        }
        // Started together: a member is ready only once the group has a leader.
        starting.push(tokio::spawn(async move { spawn(&name, args).await }));
    }
    let mut coords = Vec::new();
    for s in starting {
        coords.push(s.await??);
    }
    say!(
        "Tessera local cluster ({} storage nodes, {} coordinators) in {}",
        procs.len(),
        coords.len(),
        dir.display()
    );
    for p in coords.iter().chain(procs.iter()) {
        say!(
            "  {:<14} {:<22} pid {}",
            p.name,
            p.addr,
            p.child.id().unwrap_or(0)
        );
    }
    print_auth(&a);
    let hosts: Vec<&str> = coords.iter().map(|c| c.addr.as_str()).collect();
    let ports: Vec<&str> = hosts
        .iter()
        .map(|h| h.rsplit(':').next().unwrap_or_default())
        .collect();
    say!(
        "  connect: psql -h 127.0.0.1 -p {} -U postgres",
        ports.first().copied().unwrap_or_default()
    );
    say!("{READY} local {}", hosts.join(","));
    procs.extend(coords);
    supervise(&mut procs).await;
    stop(&mut procs).await;
    say!("Tessera local cluster stopped");
    Ok(())
}

/// Waits for a shutdown signal, reporting children that exit on their own.
async fn supervise(procs: &mut [Proc]) {
    let shutdown = crate::shutdown::signal();
    tokio::pin!(shutdown);
    let mut exited = vec![false; procs.len()];
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        for (i, p) in procs.iter_mut().enumerate() {
            if exited[i] {
                continue;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                exited[i] = true;
                tracing::error!(node = %p.name, %status, "process exited; the cluster runs without it");
            }
        }
    }
}

/// One process: the coordinator hosts every storage node.
async fn run_embedded(a: LocalArgs, dir: PathBuf) -> anyhow::Result<()> {
    let mut config = tessera_coordinator::CoordinatorConfig {
        listen: format!("127.0.0.1:{}", a.port),
        data_dir: dir.join("coordinator"),
        default_shards: a.shards.max(1),
        default_replicas: a.replicas(),
        auth: a.auth.clone(),
        tls_cert: a.tls_cert.clone(),
        tls_key: a.tls_key.clone(),
        tls_required: a.tls_required,
        ..Default::default()
    };
    for i in 0..a.nodes.max(1) {
        let name = format!("storage-{}", i + 1);
        config
            .embedded_storage
            .push(tessera_storage::StorageConfig {
                data_dir: dir.join(&name),
                node_name: name,
                synchronous: a.synchronous.clone(),
                ..Default::default()
            });
    }
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let engine = std::sync::Arc::new(tessera_coordinator::Engine::open(config).await?);
    say!(
        "Tessera local cluster ({} embedded storage nodes) in {}",
        a.nodes.max(1),
        dir.display()
    );
    say!(
        "  {:<12} {:<22} pid {}",
        "coordinator",
        addr,
        std::process::id()
    );
    print_auth(&a);
    say!(
        "  connect: psql -h 127.0.0.1 -p {} -U postgres",
        addr.port()
    );
    say!("{READY} local {addr}");
    tessera_coordinator::server::serve(engine.clone(), listener, crate::shutdown::signal()).await?;
    engine.cluster.close_embedded();
    say!("Tessera local cluster stopped");
    Ok(())
}
