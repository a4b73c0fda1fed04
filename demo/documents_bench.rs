//! Documents and column groups, measured: Tessera's document tables against the same data in
//! a PostgreSQL `jsonb` table, and a one-group read against a full-row read of a table with
//! column groups.
//!
//! Run: `bash demo/documents_compare.sh` (starts PostgreSQL and builds the release binary),
//! or `cargo run --release --example documents_bench -- --pg-port P [--docs N] [--secs S]`.
//! Tessera runs as its own `tessera local --embedded` on free ports in a temp dir.
//!
//! For both systems: load N documents with COPY; point gets and point puts for S seconds from
//! 8 clients; a filter matching 0.1 % of the documents (`doc->>'user' = …`) without and with
//! a path index on it.

#[path = "harness.rs"]
mod harness;

use futures_util::SinkExt;
use harness::{percentile, start_local};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 8;

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

fn doc(id: u64) -> String {
    format!(
        r#"{{"user": "u{}", "n": {id}, "tags": ["a", "t{}"], "geo": {{"city": "c{}"}}, "pad": "{}"}}"#,
        id % 1000,
        id % 10,
        id % 50,
        "x".repeat(80)
    )
}

/// Loads `n` documents with COPY in batches; returns documents per second.
async fn load(c: &tokio_postgres::Client, n: u64) -> f64 {
    let started = Instant::now();
    let mut id = 0;
    while id < n {
        let sink = c
            .copy_in("COPY docs (id, doc) FROM STDIN")
            .await
            .expect("copy");
        futures_util::pin_mut!(sink);
        let end = (id + 100_000).min(n);
        let mut data = String::new();
        while id < end {
            // COPY text format: the JSON has no tabs, backslashes or newlines.
            data.push_str(&format!("{id}\t{}\n", doc(id)));
            id += 1;
            if data.len() > 1 << 20 {
                sink.send(bytes::Bytes::from(std::mem::take(&mut data)))
                    .await
                    .expect("data");
            }
        }
        sink.send(bytes::Bytes::from(data)).await.expect("data");
        sink.finish().await.expect("finish");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// `CLIENTS` sessions run `sql` with a fresh id for `secs`; returns (ops/s, p50, p99).
async fn hammer(
    port: u16,
    sql: &'static str,
    n: u64,
    secs: u64,
    put: bool,
) -> (f64, Duration, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(n + 1));
    let mut tasks = Vec::new();
    for w in 0..CLIENTS as u64 {
        let stop = stop.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let c = client(port).await;
            c.batch_execute("SET tessera.cache = off")
                .await
                .expect("cache off");
            let st = c.prepare(sql).await.expect("prepare");
            let mut lat = Vec::new();
            let mut x = w.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let t = Instant::now();
                if put {
                    let id = next.fetch_add(1, Ordering::Relaxed) as i64;
                    let d: serde_json::Value = serde_json::from_str(&doc(id as u64)).expect("json");
                    c.execute(&st, &[&id, &d]).await.expect("put");
                } else {
                    let id = (x % n) as i64;
                    c.query(&st, &[&id]).await.expect("get");
                }
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client"));
    }
    lat.sort();
    (
        lat.len() as f64 / secs as f64,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    )
}

/// Median latency of `runs` runs of a query.
async fn median(c: &tokio_postgres::Client, sql: &str, runs: usize) -> Duration {
    let mut lat = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        c.simple_query(sql).await.expect("query");
        lat.push(t.elapsed());
    }
    lat.sort();
    percentile(&lat, 0.5)
}

struct Report {
    load: f64,
    get: (f64, Duration, Duration),
    put: (f64, Duration, Duration),
    scan: Duration,
    indexed: Duration,
}

async fn measure(port: u16, create: &str, n: u64, secs: u64) -> Report {
    let c = client(port).await;
    // Every run really reads: no result cache (PostgreSQL takes the setting as a custom one).
    c.batch_execute("SET tessera.cache = off")
        .await
        .expect("cache off");
    c.batch_execute("DROP TABLE IF EXISTS docs")
        .await
        .expect("drop");
    c.batch_execute(create).await.expect("create");
    let load_rate = load(&c, n).await;
    let _ = c.batch_execute("ANALYZE docs").await;
    let get = hammer(port, "SELECT doc FROM docs WHERE id = $1", n, secs, false).await;
    let put = hammer(
        port,
        "INSERT INTO docs (id, doc) VALUES ($1, $2)",
        n,
        secs,
        true,
    )
    .await;
    let filter = "SELECT count(*) FROM docs WHERE doc->>'user' = 'u123'";
    let scan = median(&c, filter, 5).await;
    c.batch_execute("CREATE INDEX docs_user ON docs ((doc->>'user'))")
        .await
        .expect("index");
    let _ = c.batch_execute("ANALYZE docs").await;
    let indexed = median(&c, filter, 50).await;
    Report {
        load: load_rate,
        get,
        put,
        scan,
        indexed,
    }
}

/// A table with two column groups: p50 of a point read of one group against a full row.
async fn vertical(port: u16, rows: u64) -> (Duration, Duration) {
    let c = client(port).await;
    c.batch_execute("SET tessera.cache = off")
        .await
        .expect("cache off");
    c.batch_execute(
        "CREATE TABLE people (id bigint PRIMARY KEY, name text, email text, last_login text, visits int) \
         WITH (column_groups = 'profile(name, email) | activity(last_login, visits)')",
    )
    .await
    .expect("create");
    let sink = c.copy_in("COPY people FROM STDIN").await.expect("copy");
    futures_util::pin_mut!(sink);
    let mut data = String::new();
    for i in 0..rows {
        data.push_str(&format!(
            "{i}\tname {i}\tu{i}@example.com\t2026-11-27\t{}\n",
            i % 100
        ));
    }
    sink.send(bytes::Bytes::from(data)).await.expect("data");
    sink.finish().await.expect("finish");
    let mut one = Vec::new();
    let mut full = Vec::new();
    let q1 = c
        .prepare("SELECT name, email FROM people WHERE id = $1")
        .await
        .expect("prepare");
    let q2 = c
        .prepare("SELECT * FROM people WHERE id = $1")
        .await
        .expect("prepare");
    for i in 0..2000u64 {
        let id = ((i * 7919) % rows) as i64;
        let t = Instant::now();
        c.query(&q1, &[&id]).await.expect("one group");
        one.push(t.elapsed());
        let t = Instant::now();
        c.query(&q2, &[&id]).await.expect("full row");
        full.push(t.elapsed());
    }
    one.sort();
    full.sort();
    (percentile(&one, 0.5), percentile(&full, 0.5))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let n: u64 = arg("--docs")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let secs: u64 = arg("--secs").and_then(|v| v.parse().ok()).unwrap_or(20);
    let pg_port: Option<u16> = arg("--pg-port").and_then(|v| v.parse().ok());

    let local = start_local(&["--embedded"]);
    println!("documents: {n}, point operations for {secs} s from {CLIENTS} clients");
    let t = measure(
        local.port,
        "CREATE TABLE docs (id bigint PRIMARY KEY, doc jsonb NOT NULL) WITH (storage = 'document')",
        n,
        secs,
    )
    .await;
    let p = match pg_port {
        Some(port) => Some(
            measure(
                port,
                "CREATE TABLE docs (id bigint PRIMARY KEY, doc jsonb NOT NULL)",
                n,
                secs,
            )
            .await,
        ),
        None => None,
    };
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    println!("| measure | Tessera | PostgreSQL 15 | ratio |");
    println!("|---|---|---|---|");
    let row = |name: &str, tv: f64, pv: Option<f64>, unit: &str, higher_better: bool| {
        let ratio = pv.map(|pv| if higher_better { tv / pv } else { pv / tv });
        println!(
            "| {name} | {tv:.0} {unit} | {} | {} |",
            pv.map(|v| format!("{v:.0} {unit}"))
                .unwrap_or_else(|| "-".into()),
            ratio
                .map(|r| format!("{r:.2}"))
                .unwrap_or_else(|| "-".into())
        );
    };
    row(
        "COPY load",
        t.load,
        p.as_ref().map(|p| p.load),
        "docs/s",
        true,
    );
    row(
        "point get",
        t.get.0,
        p.as_ref().map(|p| p.get.0),
        "ops/s",
        true,
    );
    row(
        "point put",
        t.put.0,
        p.as_ref().map(|p| p.put.0),
        "ops/s",
        true,
    );
    let lat = |name: &str, tv: Duration, pv: Option<Duration>| {
        println!(
            "| {name} | {} | {} | {} |",
            ms(tv),
            pv.map(ms).unwrap_or_else(|| "-".into()),
            pv.map(|pv| format!("{:.2}", pv.as_secs_f64() / tv.as_secs_f64()))
                .unwrap_or_else(|| "-".into())
        );
    };
    lat("get p50", t.get.1, p.as_ref().map(|p| p.get.1));
    lat("get p99", t.get.2, p.as_ref().map(|p| p.get.2));
    lat("put p50", t.put.1, p.as_ref().map(|p| p.put.1));
    lat(
        "filter, no index (median)",
        t.scan,
        p.as_ref().map(|p| p.scan),
    );
    lat(
        "filter, path index (median)",
        t.indexed,
        p.as_ref().map(|p| p.indexed),
    );
    println!("(ratios: Tessera / PostgreSQL for rates, PostgreSQL / Tessera for latencies; above 1 Tessera is ahead)");
    let (one, full) = vertical(local.port, 100_000).await;
    println!("column groups, 100 000 rows, point read p50: one group {} | full row (two groups stitched) {}", ms(one), ms(full));
}
