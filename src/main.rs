//! The `tessera` binary: one executable for every role.
//!
//! - `tessera local`: a whole cluster on this machine (storage nodes and a coordinator, each its own process).
//! - `tessera coordinator` / `tessera storage`: one role, for separate hosts.
//! - `tessera admin`: cluster inspection through any coordinator, as psql connects.

mod admin;
mod identity;
mod local;
mod roles;
mod shutdown;

use clap::{Parser, Subcommand};

/// Tessera: a distributed SQL database that speaks the PostgreSQL wire protocol.
#[derive(Parser)]
#[command(name = "tessera", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local cluster: N storage nodes and a coordinator, each its own process.
    Local(local::LocalArgs),
    /// Run a coordinator (Postgres protocol, planner, executor).
    Coordinator(roles::CoordinatorArgs),
    /// Run a storage node (shards in SQLite, gRPC service).
    Storage(roles::StorageArgs),
    /// Inspect the cluster through a coordinator.
    Admin(admin::AdminArgs),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
        // openraft narrates every vote and append at info: its warnings are what matter here.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Admin(_)) {
        init_tracing();
    }
    // Statements are parsed, planned and rewritten on these threads, and the scratch SQLite runs
    // on the blocking ones: their stacks hold the deepest statement accepted.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(tessera_coordinator::sql::depth::STACK_BYTES)
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Local(a) => local::run(a).await,
            Command::Coordinator(a) => roles::run_coordinator(a).await,
            Command::Storage(a) => roles::run_storage(a).await,
            Command::Admin(a) => admin::run(a).await,
        }
    })
}
