//! Every process killed `-9` in the middle of writing, again and again: three coordinators and
//! three storage nodes run a three-copy table under eight writers, whose statements insert one
//! row or ten rows spread over every shard. At a seeded point the storage nodes die in the
//! worst place, each at the commit of its N-th prepared transaction (after its prepare,
//! before its commit: `TESSERA_FAULT_AFTER`), as at a power loss; as soon as one has died every
//! other process is killed `-9`, and the cluster starts again from its directories. Each time:
//! every acknowledged statement is there whole, no statement is there in part (acknowledged or
//! not), every row once, and every shard has three agreeing copies. `TESSERA_CRASH_SEED`
//! replays a run; `TESSERA_CRASH_ROUNDS` sets how many crashes (default 4).

mod common;

use common::{Cluster, Rng};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WRITERS: usize = 8;

/// Rows a statement writes: statement ids ending in 0..=4 write one row, the others ten.
fn rows_of(stmt: i64) -> i64 {
    if stmt % 10 < 5 {
        1
    } else {
        10
    }
}

async fn connect(port: u16) -> Option<tokio_postgres::Client> {
    let (c, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=2"),
        tokio_postgres::NoTls,
    )
    .await
    .ok()?;
    tokio::spawn(conn);
    Some(c)
}

/// Writes statements `first, first + WRITERS, …` through `port` until stopped or its
/// coordinator dies; returns the statements acknowledged.
async fn writer(port: u16, first: i64, stop: Arc<AtomicBool>, acked: Arc<AtomicUsize>) -> Vec<i64> {
    let mut done = Vec::new();
    let Some(c) = connect(port).await else {
        return done;
    };
    let mut stmt = first;
    while !stop.load(Ordering::Relaxed) {
        let values: Vec<String> = (0..rows_of(stmt))
            .map(|i| format!("({}, {stmt}, 'statement {stmt} row {i}')", stmt * 100 + i))
            .collect();
        match c
            .batch_execute(&format!("INSERT INTO t VALUES {}", values.join(", ")))
            .await
        {
            Ok(()) => {
                done.push(stmt);
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) if c.is_closed() => break,
            // A lock conflict or a node going away: this statement's fate is checked like any
            // other's (whole or absent), and the writer goes on with the next.
            Err(_) => {}
        }
        stmt += WRITERS as i64;
    }
    done
}

/// Whether process `pid` is alive (not gone, not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_killed_mid_write_leaves_whole_statements_only() {
    let seed = common::seed_from_env("TESSERA_CRASH_SEED");
    let rounds = common::count_from_env("TESSERA_CRASH_ROUNDS", 4);
    println!("crash seed {seed} ({rounds} rounds): TESSERA_CRASH_SEED={seed} replays it");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().expect("tmp");
    let args = ["--coordinators", "3"];
    let mut acked_all: Vec<i64> = Vec::new();
    let mut next_stmt = 0i64;
    for round in 0..rounds {
        // Each storage node dies at the commit of its N-th prepared transaction.
        let after = (40 + rng.below(400)).to_string();
        let fault = [
            ("TESSERA_FAULT", "crash-before-prepared-commit"),
            ("TESSERA_FAULT_AFTER", after.as_str()),
        ];
        let cluster = Cluster::start_args(tmp.path(), 3, 4, &args, &fault);
        let ports = cluster.ports.clone();
        let c = connect(ports[0]).await.expect("connect");
        if round == 0 {
            c.batch_execute(
                "CREATE TABLE t (id bigint PRIMARY KEY, stmt bigint, note text) WITH (replicas = 3)",
            )
            .await
            .expect("create");
        }
        let mut pids = vec![];
        for r in c.query("SHOW tessera.nodes", &[]).await.expect("nodes") {
            pids.push(cluster.pid_of(&r.get::<_, String>(1)));
        }
        let storage = pids.clone();
        for i in 1..=ports.len() {
            pids.push(cluster.pid_of(&format!("coordinator-{i}")));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let port = ports[w % ports.len()];
                tokio::spawn(writer(
                    port,
                    next_stmt + w as i64,
                    stop.clone(),
                    acked.clone(),
                ))
            })
            .collect();
        // The crash: a storage node dies between a prepare and its commit, then at once
        // everything else (watched closely: the others' commits must not get ahead).
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while storage.iter().all(|pid| running(*pid)) {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round} (seed {seed}): no storage node reached its fault"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for pid in &pids {
            // One may be dying of its fault meanwhile: not an error.
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
        let mut cluster = cluster;
        let _ = cluster.child.kill();
        let _ = cluster.child.wait();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            acked_all.extend(w.await.expect("writer"));
        }
        drop(cluster);
        next_stmt += 100_000;

        // Back from the directories: resolved, agreeing, whole.
        let cluster = Cluster::start_args(tmp.path(), 3, 4, &args, &[]);
        let c = connect(cluster.ports[0])
            .await
            .expect("connect after the crash");
        assert!(
            common::wait_until(60, || common::copies_agree(&c, 4, 3)).await,
            "round {round} (seed {seed}): copies disagree after the crash"
        );
        let counts: HashMap<i64, i64> = c
            .query("SELECT stmt, count(*) FROM t GROUP BY stmt", &[])
            .await
            .expect("count")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for (stmt, n) in &counts {
            assert_eq!(
                *n,
                rows_of(*stmt),
                "round {round} (seed {seed}): statement {stmt} is there in part"
            );
        }
        for stmt in &acked_all {
            assert!(
                counts.contains_key(stmt),
                "round {round} (seed {seed}): acknowledged statement {stmt} is missing"
            );
        }
        println!(
            "round {round}: crash after {} acknowledged statements; {} statements stored, all whole",
            acked_all.len(),
            counts.len()
        );
        drop(c);
        let stopped = cluster.stop();
        assert!(stopped.exists());
    }
}
