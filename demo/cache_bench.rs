//! Result-cache benchmark: a repeated aggregate over a large table and a repeated point query,
//! cache on versus off (p50/p99, throughput), and a 90/10 read/write mix (hit ratio, and every
//! read checked against the writes its own client had acknowledged).
//!
//! Run: `cargo run --release --example cache_bench -- [--rows N] [--embedded]`.
//! It starts its own `tessera local` (release build of this checkout) on free ports in a temp dir.

#[path = "harness.rs"]
mod harness;

use futures_util::SinkExt;
use harness::{percentile, start_local};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

fn report(name: &str, start: Instant, mut lat: Vec<Duration>) -> f64 {
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    let ops = lat.len() as f64 / secs;
    println!(
        "{name:<44} {:>9.0} ops/s   p50 {:>9.1} µs   p99 {:>9.1} µs",
        ops,
        percentile(&lat, 0.5).as_secs_f64() * 1e6,
        percentile(&lat, 0.99).as_secs_f64() * 1e6
    );
    ops
}

async fn connect(port: u16, cache: bool) -> Client {
    let conn = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let (c, h) = tokio_postgres::connect(&conn, NoTls)
        .await
        .expect("connect");
    tokio::spawn(h);
    if !cache {
        c.batch_execute("SET tessera.cache = off")
            .await
            .expect("off");
    }
    c
}

/// Runs `sql` `n` times on one connection, returning per-call latencies.
async fn repeat(c: &Client, sql: &str, n: usize) -> Vec<Duration> {
    let st = c.prepare(sql).await.expect("prepare");
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.query(&st, &[]).await.expect("query");
        lat.push(t.elapsed());
    }
    lat
}

async fn stat(c: &Client, name: &str) -> i64 {
    for m in c
        .simple_query("SHOW tessera.cache_stats")
        .await
        .expect("stats")
    {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            if r.get(0) == Some(name) {
                return r.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            }
        }
    }
    0
}

async fn run(port: u16, rows: usize) {
    let c = connect(port, true).await;
    c.batch_execute(
        "CREATE TABLE big (id bigint PRIMARY KEY, grp int, v bigint) PARTITION BY HASH (id);
         CREATE TABLE hot (id bigint PRIMARY KEY, v bigint) PARTITION BY HASH (id);",
    )
    .await
    .expect("schema");
    let t = Instant::now();
    let sink = c.copy_in("COPY big FROM STDIN").await.expect("copy");
    futures_util::pin_mut!(sink);
    let mut buf = String::new();
    for i in 0..rows {
        buf.push_str(&format!("{i}\t{}\t{}\n", i % 100, i * 7 % 1000));
        if buf.len() > 1 << 20 {
            sink.send(bytes::Bytes::from(std::mem::take(&mut buf)))
                .await
                .expect("send");
        }
    }
    sink.send(bytes::Bytes::from(buf)).await.expect("send");
    sink.finish().await.expect("finish");
    println!("loaded {rows} rows in {:.1} s", t.elapsed().as_secs_f64());

    let off = connect(port, false).await;
    let agg = "SELECT grp % 10, count(*), sum(v), avg(v) FROM big GROUP BY 1 ORDER BY 1";
    let s = Instant::now();
    let lat = repeat(&off, agg, 20).await;
    let agg_off = report("aggregate over big, cache off", s, lat);
    let _ = repeat(&c, agg, 1).await;
    let s = Instant::now();
    let lat = repeat(&c, agg, 2000).await;
    let agg_on = report("aggregate over big, cache on (hits)", s, lat);
    println!("  speed-up {:.0}x", agg_on / agg_off);

    let point = "SELECT v FROM big WHERE id = 4242";
    let s = Instant::now();
    let lat = repeat(&off, point, 5000).await;
    let p_off = report("point query, cache off", s, lat);
    let s = Instant::now();
    let lat = repeat(&c, point, 5000).await;
    let p_on = report("point query, cache on (hits)", s, lat);
    println!("  ratio on/off {:.2}", p_on / p_off);

    // 90/10 mix: 4 clients over 200 hot keys. Writers store increasing values; a client's
    // read of a key it wrote must return at least what it wrote (never an older value).
    let mut values = String::new();
    for i in 0..200 {
        values.push_str(&format!("{}({i}, 0)", if i == 0 { "" } else { ", " }));
    }
    c.batch_execute(&format!("INSERT INTO hot VALUES {values}"))
        .await
        .expect("hot rows");
    let (h0, m0) = (stat(&c, "hits").await, stat(&c, "misses").await);
    let counter = Arc::new(AtomicI64::new(1));
    let s = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..4u64 {
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let c = connect(port, true).await;
            let read = c
                .prepare("SELECT v FROM hot WHERE id = $1")
                .await
                .expect("prepare");
            let write = c
                .prepare("UPDATE hot SET v = $2 WHERE id = $1")
                .await
                .expect("prepare");
            let mut mine = std::collections::HashMap::new();
            let mut lat = Vec::new();
            let mut x = k * 7919 + 17;
            for _ in 0..5000 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // Skewed keys: most reads go to a few keys.
                let key = ((x >> 33) % 200).min((x >> 20) % 200) as i64;
                let t = Instant::now();
                if (x >> 40) % 10 == 0 {
                    let v = counter.fetch_add(1, Ordering::SeqCst);
                    c.execute(&write, &[&key, &v]).await.expect("write");
                    mine.insert(key, v);
                } else {
                    let v: i64 = c.query_one(&read, &[&key]).await.expect("read").get(0);
                    if let Some(w) = mine.get(&key) {
                        assert!(
                            v >= *w,
                            "stale read: key {key} gave {v} after this client wrote {w}"
                        );
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
    report("90/10 mix, 4 clients, cache on", s, lat);
    let (h1, m1) = (stat(&c, "hits").await, stat(&c, "misses").await);
    let (h, m) = ((h1 - h0) as f64, (m1 - m0) as f64);
    println!(
        "  hit ratio {:.1}% ({} hits, {} misses); no client read a value older than its own write",
        100.0 * h / (h + m).max(1.0),
        h,
        m
    );
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let embedded = argv.iter().any(|a| a == "--embedded");
    let rows: usize = argv
        .iter()
        .position(|a| a == "--rows")
        .and_then(|i| argv.get(i + 1))
        .map(|n| n.parse().expect("--rows N"))
        .unwrap_or(1_000_000);
    let mut args = vec![];
    if embedded {
        args.push("--embedded");
    }
    let local = start_local(&args);
    let port = local.port;
    println!(
        "3 storage nodes{}, 8 hash shards, {rows} rows",
        if embedded {
            " (embedded)"
        } else {
            " (processes)"
        }
    );
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(run(port, rows));
    drop(local);
}
