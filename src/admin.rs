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
    /// A storage node: `drain NAME` moves its copies elsewhere, `decommission NAME` also takes
    /// it out of service.
    Node {
        #[command(subcommand)]
        action: NodeAction,
    },
    /// A shard: `move ID --to NODE` moves a copy to another node, online.
    Shard {
        #[command(subcommand)]
        action: ShardAction,
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
    /// Take the node out of service: no new copy lands on it, and every copy it holds moves
    /// to another live node while writes go on (single copies included).
    Decommission {
        /// Node name (`storage-2`).
        name: String,
    },
    /// Move every copy the node holds to other live nodes while writes go on; the node stays
    /// in service (before maintenance, or to rebalance).
    Drain {
        /// Node name (`storage-2`).
        name: String,
    },
}

/// What to do with a shard.
#[derive(Subcommand, Debug)]
pub enum ShardAction {
    /// Move a copy of the shard to another node, online (the copy is filled in throttled
    /// batches while writes go on, then swapped in).
    Move {
        /// Shard id (`tessera admin shards`).
        id: u64,
        /// The node to move it to.
        #[arg(long)]
        to: String,
        /// The node whose copy moves (default: the shard's first copy).
        #[arg(long)]
        from: Option<String>,
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
        } => format!("SELECT tessera_decommission({})", literal(name)),
        AdminCommand::Node {
            action: NodeAction::Drain { name },
        } => format!("SELECT tessera_drain({})", literal(name)),
        AdminCommand::Shard {
            action: ShardAction::Move { id, to, from },
        } => match from {
            Some(f) => format!(
                "SELECT tessera_move_shard({id}, {}, {})",
                literal(f),
                literal(to)
            ),
            None => format!("SELECT tessera_move_shard({id}, {})", literal(to)),
        },
        AdminCommand::Explain { sql } => format!("EXPLAIN {sql}"),
        AdminCommand::Cache {
            action: CacheAction::Stats,
        } => "SHOW tessera.cache_stats".to_string(),
        AdminCommand::Cache {
            action: CacheAction::Clear,
        } => "SELECT tessera_cache_clear()".to_string(),
    };
    let draining = match &a.command {
        AdminCommand::Node {
            action: NodeAction::Decommission { name } | NodeAction::Drain { name },
        } => Some(name.clone()),
        _ => None,
    };
    let msgs = match draining {
        Some(node) => with_progress(&conn_str, &node, client.simple_query(&sql)).await,
        None => client.simple_query(&sql).await,
    }
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

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The node's shard count as `SHOW tessera.nodes` reports it.
async fn shards_on(client: &tokio_postgres::Client, node: &str) -> Option<u64> {
    let msgs = client.simple_query("SHOW tessera.nodes").await.ok()?;
    msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) if r.get("name") == Some(node) => r.get("shards")?.parse().ok(),
        _ => None,
    })
}

/// Runs a drain or decommission while a progress bar (on a terminal) counts the copies
/// moved off `node`, read through a second connection.
async fn with_progress<T>(
    conn_str: &str,
    node: &str,
    work: impl std::future::Future<Output = T>,
) -> T {
    let watcher = match tokio_postgres::connect(conn_str, NoTls).await {
        Ok((c, conn)) => {
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Some(c)
        }
        Err(_) => None,
    };
    let total = match &watcher {
        Some(c) => shards_on(c, node).await.unwrap_or(0),
        None => 0,
    };
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} shard copies ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(format!("moving copies off {node}"));
    tokio::pin!(work);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(300));
    let out = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = tick.tick() => {
                if let Some(c) = &watcher {
                    if let Some(left) = shards_on(c, node).await {
                        bar.set_position(total.saturating_sub(left));
                    }
                }
            }
        }
    };
    bar.finish_and_clear();
    out
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
