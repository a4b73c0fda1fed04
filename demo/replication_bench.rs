//! Replication cost and failover: single-row and 100-row inserts into a table with one copy
//! per shard against one with three (`WITH (replicas = 3)`), then the time from `kill -9` of a
//! storage node to the first write that succeeds on a shard it held.
//!
//! Run: `cargo build --release && cargo run --release --example replication_bench -- [--clients C] [--rows N]`.
//! It starts its own `tessera local` (3 storage nodes as processes, `synchronous=full`,
//! failure detection at its defaults) on free ports in a temp dir.

#[path = "harness.rs"]
mod harness;

use harness::{percentile, start_local};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn client(port: u16) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect");
    tokio::spawn(conn);
    c
}

/// `clients` sessions insert `batches` statements of `per` rows each into `table`; returns
/// (rows per second, p50 and p99 of one statement, 40001 retries).
async fn load(
    port: u16,
    table: &str,
    clients: usize,
    batches: usize,
    per: usize,
) -> (f64, Duration, Duration, i64) {
    let next = Arc::new(AtomicI64::new(1));
    let retries = Arc::new(AtomicI64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let next = next.clone();
        let retries = retries.clone();
        let table = table.to_string();
        tasks.push(tokio::spawn(async move {
            let c = client(port).await;
            let mut lat = Vec::with_capacity(batches);
            for _ in 0..batches {
                let first = next.fetch_add(per as i64, Ordering::Relaxed);
                let values: Vec<String> = (first..first + per as i64)
                    .map(|id| format!("({id}, {}, 'row {id}')", id % 1000))
                    .collect();
                let sql = format!("INSERT INTO {table} VALUES {}", values.join(", "));
                let t = Instant::now();
                // A lock cycle between multi-shard writes fails the younger with 40001:
                // retried, as a client should, and counted.
                loop {
                    match c.batch_execute(&sql).await {
                        Ok(()) => break,
                        Err(e) if e.code().map(|s| s.code()) == Some("40001") => {
                            retries.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("insert: {e:?}"),
                    }
                }
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort();
    let rows = (clients * batches * per) as f64;
    (
        rows / elapsed,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        retries.load(Ordering::Relaxed),
    )
}

#[tokio::main]
async fn main() {
    let v: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str, default: usize| {
        v.iter()
            .position(|a| a == name)
            .and_then(|i| v.get(i + 1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(default)
    };
    let clients = arg("--clients", 8);
    let rows = arg("--rows", 4000);
    // Failure detection at its defaults (3 s suspect, 10 s dead): the failover below must not
    // wait for it.
    let local = start_local(&["--nodes", "3"]);
    let c = client(local.port).await;
    c.batch_execute(
        "CREATE TABLE rf1 (id bigint PRIMARY KEY, k int, v text) WITH (replicas = 1);
         CREATE TABLE rf3 (id bigint PRIMARY KEY, k int, v text) WITH (replicas = 3);",
    )
    .await
    .expect("tables");
    println!("{clients} clients, 3 storage nodes as processes, synchronous=full");
    println!(
        "{:<34} {:>12} {:>10} {:>10} {:>8}",
        "workload", "rows/s", "p50", "p99", "retries"
    );
    for (label, per) in [("single-row INSERT", 1usize), ("100-row INSERT", 100)] {
        for table in ["rf1", "rf3"] {
            let batches = (rows / per / clients).max(5);
            let (rate, p50, p99, retries) = load(local.port, table, clients, batches, per).await;
            println!(
                "{:<34} {:>12.0} {:>10.2?} {:>10.2?} {:>8}",
                format!("{label}, {}", if table == "rf1" { "RF=1" } else { "RF=3" }),
                rate,
                p50,
                p99,
                retries
            );
            c.batch_execute(&format!("DELETE FROM {table}"))
                .await
                .expect("reset");
        }
    }
    // Failover: kill storage-2 and write to rf3 until a write succeeds.
    let pid = local
        .pids
        .iter()
        .find(|(n, _)| n == "storage-2")
        .map(|(_, p)| *p)
        .expect("storage-2 pid");
    let killed = Instant::now();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    let mut id = 10_000_000i64;
    loop {
        id += 1;
        if c.execute("INSERT INTO rf3 VALUES ($1, 1, 'after the kill')", &[&id])
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first = killed.elapsed();
    // And the write latency right after: 200 more single-row writes.
    let mut lat = Vec::new();
    for _ in 0..200 {
        id += 1;
        let t = Instant::now();
        c.execute("INSERT INTO rf3 VALUES ($1, 1, 'after the kill')", &[&id])
            .await
            .expect("write after failover");
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "kill -9 of a storage node to the first successful RF=3 write: {first:.2?} (failure detection would declare it dead after 10 s); the next 200 writes p50 {:.2?}, p99 {:.2?}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
}
