//! `tessera admin`: cluster views through any coordinator, over the Postgres protocol like psql.

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use tokio_postgres::{NoTls, SimpleQueryMessage};

/// Output format.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns.
    Table,
    /// One JSON array of objects.
    Json,
}

/// `tessera admin` flags.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Coordinator host.
    #[arg(long, default_value = "127.0.0.1", global = true)]
    pub host: String,
    /// Coordinator port.
    #[arg(long, default_value_t = tessera_coordinator::config::DEFAULT_PORT, global = true)]
    pub port: u16,
    /// User.
    #[arg(long, default_value = "postgres", global = true)]
    pub user: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table", global = true)]
    pub format: OutputFormat,
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// What to show.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Storage nodes: address, liveness, process id, shard count.
    Nodes,
    /// Tables: distribution method, column, shard count, columns.
    Tables,
    /// Shards: hash or value range, nodes, tables, rows and bytes (read from the nodes).
    Shards {
        /// Compare every copy of each replicated shard (row count and content checksum).
        #[arg(long)]
        verify: bool,
    },
    /// Dry-run the planner: the route and merge of a statement, without running it.
    Explain {
        /// The SQL statement.
        sql: String,
    },
    /// A storage node: `decommission NAME` takes it out of service (its copies are re-created
    /// elsewhere).
    Node {
        #[command(subcommand)]
        action: NodeAction,
    },
    /// The metadata Raft group: each member's state, leader, term, log and applied index, lag.
    Raft,
    /// The coordinator's query-result cache.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
}

/// What to do with a storage node.
#[derive(Subcommand, Debug)]
pub enum NodeAction {
    /// Take the node out of service: it leaves every shard, repair copies them elsewhere.
    Decommission {
        /// Node name (`storage-2`).
        name: String,
    },
}

/// What to do with the result cache.
#[derive(Subcommand, Debug)]
pub enum CacheAction {
    /// Hits, misses, stale entries, fills, evictions, invalidations, entries and bytes.
    Stats,
    /// Drops every entry of the coordinator connected to.
    Clear,
}

/// Runs an admin command.
pub async fn run(a: AdminArgs) -> anyhow::Result<()> {
    let conn_str = format!(
        "host={} port={} user={} dbname=postgres connect_timeout=5",
        a.host, a.port, a.user
    );
    let (client, conn) = tokio_postgres::connect(&conn_str, NoTls)
        .await
        .with_context(|| format!("connecting to {}:{}", a.host, a.port))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let sql = match &a.command {
        AdminCommand::Nodes => "SHOW tessera.nodes".to_string(),
        AdminCommand::Tables => "SHOW tessera.tables".to_string(),
        AdminCommand::Shards { verify: false } => "SHOW tessera.shards".to_string(),
        AdminCommand::Shards { verify: true } => "SHOW tessera.replica_check".to_string(),
        AdminCommand::Raft => "SHOW tessera.raft".to_string(),
        AdminCommand::Node {
            action: NodeAction::Decommission { name },
        } => format!(
            "SELECT tessera_decommission('{}')",
            name.replace('\'', "''")
        ),
        AdminCommand::Explain { sql } => format!("EXPLAIN {sql}"),
        AdminCommand::Cache {
            action: CacheAction::Stats,
        } => "SHOW tessera.cache_stats".to_string(),
        AdminCommand::Cache {
            action: CacheAction::Clear,
        } => "SELECT tessera_cache_clear()".to_string(),
    };
    let msgs = client
        .simple_query(&sql)
        .await
        .with_context(|| format!("running {sql}"))?;
    let mut header: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<Option<String>>> = Vec::new();
    for m in msgs {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                header = cols.iter().map(|c| c.name().to_string()).collect()
            }
            SimpleQueryMessage::Row(r) => {
                if header.is_empty() {
                    header = r.columns().iter().map(|c| c.name().to_string()).collect();
                }
                rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
            }
            _ => {}
        }
    }
    match a.format {
        OutputFormat::Json => {
            let objs: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    serde_json::Value::Object(
                        header
                            .iter()
                            .cloned()
                            .zip(r.iter().map(|v| {
                                v.clone()
                                    .map(serde_json::Value::String)
                                    .unwrap_or(serde_json::Value::Null)
                            }))
                            .collect(),
                    )
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&objs)?);
        }
        OutputFormat::Table if matches!(a.command, AdminCommand::Explain { .. }) => {
            for r in rows {
                println!("{}", r.first().cloned().flatten().unwrap_or_default());
            }
        }
        OutputFormat::Table => print_table(&header, &rows),
    }
    Ok(())
}

fn print_table(header: &[String], rows: &[Vec<Option<String>>]) {
    let cell = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, v) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell(v).chars().count());
            }
        }
    }
    let line = |vals: Vec<String>| {
        vals.iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(header.to_vec()));
    println!(
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  ")
    );
    for r in rows {
        println!("{}", line(r.iter().map(cell).collect()));
    }
    println!("({} rows)", rows.len());
}
