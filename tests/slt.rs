//! Golden SQL files (sqllogictest format) in `tests/slt/`, each run twice against real clusters:
//! one node with one shard per table, three nodes with eight shards, and the same with the nodes
//! embedded in the coordinator process; the expected output is the same.

mod common;

use common::Cluster;
use sqllogictest::{DBOutput, DefaultColumnType};
use tokio_postgres::SimpleQueryMessage;

struct Pg {
    client: tokio_postgres::Client,
}

#[derive(Debug)]
struct PgError(tokio_postgres::Error);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => write!(f, "{}: {}", db.code().code(), db.message()),
            None => write!(f, "{}", self.0),
        }
    }
}

impl std::error::Error for PgError {}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Pg {
    type Error = PgError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, PgError> {
        let msgs = self.client.simple_query(sql).await.map_err(PgError)?;
        let mut rows = Vec::new();
        let mut width = None;
        let mut count = 0;
        for m in msgs {
            match m {
                SimpleQueryMessage::RowDescription(cols) => width = Some(cols.len()),
                SimpleQueryMessage::Row(r) => {
                    width = Some(r.len());
                    rows.push(
                        (0..r.len())
                            .map(|i| match r.get(i) {
                                None => "NULL".to_string(),
                                Some("") => "(empty)".to_string(),
                                Some(v) => v.to_string(),
                            })
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(n) => count = n,
                _ => {}
            }
        }
        match width {
            Some(w) => Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; w],
                rows,
            }),
            None => Ok(DBOutput::StatementComplete(count)),
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "tessera"
    }

    fn error_sql_state(err: &PgError) -> Option<String> {
        err.0.code().map(|c| c.code().to_string())
    }
}

/// Runs one golden file against the server at `conn`.
async fn run_file(conn: String, f: &std::path::Path) -> Result<(), String> {
    let mut runner = sqllogictest::Runner::new(move || {
        let conn = conn.clone();
        async move {
            let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .map_err(PgError)?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(Pg { client })
        }
    });
    runner.run_file_async(f).await.map_err(|e| e.to_string())
}

async fn run_all(nodes: usize, shards: u32, embedded: bool) {
    let mut files: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slt"))
        .expect("tests/slt")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    for f in &files {
        // A fresh cluster per file: files do not see each other's tables.
        let cluster = if embedded {
            Cluster::start_embedded(nodes, shards)
        } else {
            Cluster::start(nodes, shards)
        };
        if let Err(e) = run_file(cluster.conn_str(), f).await {
            failures.push(format!(
                "{} ({nodes} nodes, {shards} shards):\n{e}",
                f.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_files_on_one_shard() {
    run_all(1, 1, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_files_on_many_shards_across_three_nodes() {
    run_all(3, 8, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_files_on_embedded_storage_nodes() {
    run_all(3, 8, true).await;
}

/// The JSON golden file is plain PostgreSQL: run against a real PostgreSQL, it passes too, so
/// its expected results are PostgreSQL's own, not Tessera's opinion of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_golden_file_is_postgresql_s_own_output() {
    let Some(pg) = common::Postgres::start() else {
        eprintln!("no PostgreSQL server binaries here: the JSON file runs against Tessera only");
        return;
    };
    let conn = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        pg.port
    );
    let f = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slt/json.slt"));
    if let Err(e) = run_file(conn, f).await {
        panic!("PostgreSQL disagrees with tests/slt/json.slt:\n{e}");
    }
}
