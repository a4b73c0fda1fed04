//! Throughput benchmark: point selects and single-row inserts through a Tessera coordinator,
//! against the same statements on one plain SQLite file (WAL, same `synchronous` level).
//!
//! Run: `cargo run --release --example bench -- [--rows N] [--clients C] [--synchronous full|normal] [--embedded] [--no-cache]`.
//! It starts its own `tessera local` (release build of this checkout) on free ports in a temp dir.

#[path = "harness.rs"]
mod harness;

use harness::{percentile, start_local};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    rows: usize,
    clients: usize,
    synchronous: String,
    embedded: bool,
    /// `--no-cache`: sessions run with `SET tessera.cache = off`.
    no_cache: bool,
}

fn args() -> Args {
    let mut a = Args {
        rows: 20_000,
        clients: 8,
        synchronous: "full".into(),
        embedded: false,
        no_cache: false,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        if v[i] == "--embedded" {
            a.embedded = true;
            i += 1;
            continue;
        }
        if v[i] == "--no-cache" {
            a.no_cache = true;
            i += 1;
            continue;
        }
        match (v[i].as_str(), v.get(i + 1)) {
            ("--rows", Some(n)) => a.rows = n.parse().expect("--rows N"),
            ("--clients", Some(n)) => a.clients = n.parse().expect("--clients N"),
            ("--synchronous", Some(s)) => a.synchronous = s.clone(),
            (other, _) => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

struct Measured {
    ops_per_sec: f64,
    p50: Duration,
    p99: Duration,
}

fn report(name: &str, m: &Measured) {
    println!(
        "{name:<40} {:>10.0} ops/s   p50 {:>8.1} µs   p99 {:>8.1} µs",
        m.ops_per_sec,
        m.p50.as_secs_f64() * 1e6,
        m.p99.as_secs_f64() * 1e6
    );
}

fn measure(start: Instant, mut lat: Vec<Duration>) -> Measured {
    let total = start.elapsed();
    lat.sort();
    Measured {
        ops_per_sec: lat.len() as f64 / total.as_secs_f64(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
    }
}

async fn tessera_run(port: u16, a: &Args) -> (Measured, Measured) {
    let conn = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let (c, h) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(h);
    c.batch_execute("CREATE TABLE kv (id bigint PRIMARY KEY, v text) PARTITION BY HASH (id)")
        .await
        .expect("create");
    let per = a.rows / a.clients;
    // Inserts: each client writes its own id range, one autocommit INSERT per row.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..a.clients {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            let (c, h) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(h);
            let st = c
                .prepare("INSERT INTO kv (id, v) VALUES ($1, $2)")
                .await
                .expect("prepare");
            let mut lat = Vec::with_capacity(per);
            for i in 0..per {
                let id = (k * per + i) as i64;
                let t = Instant::now();
                c.execute(&st, &[&id, &"value"]).await.expect("insert");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    let inserts = measure(start, lat);
    // Point selects by primary key, routed to one shard.
    let start = Instant::now();
    let mut tasks = Vec::new();
    let total = per * a.clients;
    for k in 0..a.clients {
        let conn = conn.clone();
        let no_cache = a.no_cache;
        tasks.push(tokio::spawn(async move {
            let (c, h) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(h);
            if no_cache {
                c.batch_execute("SET tessera.cache = off")
                    .await
                    .expect("cache off");
            }
            let st = c
                .prepare("SELECT v FROM kv WHERE id = $1")
                .await
                .expect("prepare");
            let mut lat = Vec::with_capacity(per);
            let mut x = k as u64 * 7919 + 1;
            for _ in 0..per {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let id = ((x >> 33) % total as u64) as i64;
                let t = Instant::now();
                let r = c.query_one(&st, &[&id]).await.expect("select");
                assert_eq!(r.get::<_, &str>(0), "value");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    (measure(start, lat), inserts)
}

fn sqlite_run(a: &Args) -> (Measured, Measured) {
    let dir = tempfile::tempdir().expect("tmp");
    let c = rusqlite::Connection::open(dir.path().join("plain.db")).expect("open");
    let sync = if a.synchronous == "normal" {
        "NORMAL"
    } else {
        "FULL"
    };
    c.execute_batch(&format!("PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT) STRICT;")).expect("setup");
    let n = (a.rows / a.clients) * a.clients;
    let start = Instant::now();
    let mut lat = Vec::with_capacity(n);
    {
        let mut st = c
            .prepare("INSERT INTO kv (id, v) VALUES (?1, ?2)")
            .expect("prepare");
        for i in 0..n {
            let t = Instant::now();
            st.execute(rusqlite::params![i as i64, "value"])
                .expect("insert");
            lat.push(t.elapsed());
        }
    }
    let inserts = measure(start, lat);
    let start = Instant::now();
    let mut lat = Vec::with_capacity(n);
    {
        let mut st = c
            .prepare("SELECT v FROM kv WHERE id = ?1")
            .expect("prepare");
        let mut x = 1u64;
        for _ in 0..n {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let id = ((x >> 33) % n as u64) as i64;
            let t = Instant::now();
            let v: String = st.query_row([id], |r| r.get(0)).expect("select");
            assert_eq!(v, "value");
            lat.push(t.elapsed());
        }
    }
    (measure(start, lat), inserts)
}

fn main() {
    let a = args();
    let mut args = vec!["--synchronous", a.synchronous.as_str()];
    if a.embedded {
        args.push("--embedded");
    }
    let local = start_local(&args);
    let port = local.port;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let a = Arc::new(a);
    println!(
        "rows {}, clients {}, synchronous={}, 3 storage nodes{}, 8 hash shards",
        a.rows,
        a.clients,
        a.synchronous,
        if a.embedded { " (embedded)" } else { "" }
    );
    let (t_sel, t_ins) = rt.block_on(tessera_run(port, &a));
    let (s_sel, s_ins) = sqlite_run(&a);
    report("tessera point select (prepared)", &t_sel);
    report("sqlite file point select (1 thread)", &s_sel);
    report("tessera single-row insert (prepared)", &t_ins);
    report("sqlite file single-row insert (1 thread)", &s_ins);
    println!(
        "ratio tessera/sqlite: select {:.3}, insert {:.3}",
        t_sel.ops_per_sec / s_sel.ops_per_sec,
        t_ins.ops_per_sec / s_ins.ops_per_sec
    );
    drop(local);
}
