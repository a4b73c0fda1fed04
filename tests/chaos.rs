//! Randomized failures: three coordinators (the metadata Raft group) and four storage nodes run
//! a three-copy table under concurrent writers while a seeded sequence of `kill -9`s hits any
//! process (a storage node, a coordinator, or whichever coordinator leads the metadata group),
//! each restarted after a random pause. In the end every acknowledged write is present exactly
//! once, no other row exists, every shard has three agreeing copies, and every coordinator
//! serves the same catalog, also after a crash of the whole cluster. `TESSERA_CHAOS_SEED` replays a run; `TESSERA_CHAOS_ROUNDS` sets
//! how many kills (default 6).

mod common;

use common::{kill9, sqlstate, Cluster, Rng};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Three coordinators, fast failure detection, unthrottled repair.
const ARGS: &[&str] = &[
    "--coordinators",
    "3",
    "--node-suspect-ms",
    "300",
    "--node-dead-ms",
    "1500",
    "--repair-pause-ms",
    "0",
];

/// A connection to whichever coordinator answers first, starting at `first` (libpq-style
/// multi-host string).
async fn connect_any(ports: &[u16], first: usize) -> Option<tokio_postgres::Client> {
    let mut ports: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    let n = ports.len();
    ports.rotate_left(first % n);
    let hosts = vec!["127.0.0.1"; ports.len()].join(",");
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host={hosts} port={} user=postgres dbname=postgres connect_timeout=2",
            ports.join(",")
        ),
        tokio_postgres::NoTls,
    )
    .await
    .ok()?;
    tokio::spawn(conn);
    Some(client)
}

/// Inserts `id` until its fate is known (acknowledged, or a duplicate because an earlier
/// attempt committed after all), reconnecting when its coordinator dies.
async fn insert_until_known(
    client: &mut Option<tokio_postgres::Client>,
    ports: &[u16],
    writer: usize,
    id: i64,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "insert {id} kept failing");
        let c = match client.as_ref().filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => {
                *client = connect_any(ports, writer).await;
                if client.is_none() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
        };
        match c
            .execute(
                "INSERT INTO ledger (id, amount, note) VALUES ($1, $2, $3)",
                &[&id, &(id % 97), &format!("entry {id}")],
            )
            .await
        {
            Ok(1) => return,
            Ok(n) => panic!("insert of {id} reported {n} rows"),
            Err(e) if sqlstate(&e) == "23505" => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// One process of the cluster, as started or last restarted.
struct Proc {
    pid: u32,
    argv: Vec<String>,
    addr: String,
}

/// Shards of `ledger` and whether each has three agreeing copies (as any coordinator sees).
async fn three_agreeing_copies(ports: &[u16]) -> bool {
    let Some(c) = connect_any(ports, 0).await else {
        return false;
    };
    common::copies_agree(&c, 4, 3).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_of_any_process_lose_no_acknowledged_write() {
    let seed = common::seed_from_env("TESSERA_CHAOS_SEED");
    let rounds = common::count_from_env("TESSERA_CHAOS_ROUNDS", 6);
    println!("chaos seed {seed} ({rounds} rounds): TESSERA_CHAOS_SEED={seed} replays it");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start_args(tmp.path(), 4, 4, ARGS, &[]);
    let ports = cluster.ports.clone();
    assert_eq!(ports.len(), 3);
    let c = cluster.client().await;
    c.batch_execute(
        "CREATE TABLE ledger (id bigint PRIMARY KEY, amount bigint, note text) WITH (replicas = 3)",
    )
    .await
    .expect("create");
    let mut procs: HashMap<String, Proc> = HashMap::new();
    for r in c.query("SHOW tessera.nodes", &[]).await.expect("nodes") {
        let name: String = r.get(1);
        let pid = cluster.pid_of(&name);
        procs.insert(
            name,
            Proc {
                pid,
                argv: common::command_line(pid),
                addr: r.get(2),
            },
        );
    }
    for (i, port) in ports.iter().enumerate() {
        let name = format!("coordinator-{}", i + 1);
        let pid = cluster.pid_of(&name);
        procs.insert(
            name,
            Proc {
                pid,
                argv: common::command_line(pid),
                addr: format!("127.0.0.1:{port}"),
            },
        );
    }
    drop(c);

    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (stop, progress, ports) = (stop.clone(), progress.clone(), ports.clone());
            tokio::spawn(async move {
                let mut client = None;
                let mut acked = Vec::new();
                let mut id = 1_000_000 * (w as i64 + 1);
                while !stop.load(Ordering::Relaxed) {
                    insert_until_known(&mut client, &ports, w, id).await;
                    acked.push(id);
                    id += 1;
                    progress.fetch_add(1, Ordering::Relaxed);
                }
                acked
            })
        })
        .collect();

    let mut restarted = Vec::new();
    let mut names: Vec<String> = procs.keys().cloned().collect();
    names.sort();
    for round in 0..rounds {
        while progress.load(Ordering::Relaxed) < 30 * (round + 1) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // One in four kills goes to the metadata leader, whichever coordinator that is.
        let victim = if rng.below(4) == 0 {
            let c = connect_any(&ports, 0).await.expect("a coordinator");
            let leader: Option<i64> = c
                .query("SHOW tessera.raft", &[])
                .await
                .expect("raft")
                .iter()
                .find(|r| r.get::<_, String>(3) == "Leader")
                .map(|r| r.get(1));
            format!("coordinator-{}", leader.expect("a metadata leader"))
        } else {
            names[rng.below(names.len() as u64) as usize].clone()
        };
        let pause = Duration::from_millis(200 + rng.below(1300));
        println!("round {round}: kill -9 {victim}, restart after {pause:?}");
        let p = procs.get_mut(&victim).expect("victim");
        let before = progress.load(Ordering::Relaxed);
        kill9(p.pid);
        tokio::time::sleep(pause).await;
        let (child, _) = common::restart(&p.argv, Some(&p.addr));
        p.pid = child.id();
        restarted.push(child);
        // The cluster heals: writes go on, and every shard has three agreeing copies.
        let healed = common::wait_until(90, || async {
            progress.load(Ordering::Relaxed) > before + 20 && three_agreeing_copies(&ports).await
        })
        .await;
        assert!(
            healed,
            "round {round} (seed {seed}): no recovery after {victim} died"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    acked.sort();
    // Last, the whole cluster crashes at once (kill -9 of every process, the launcher too) and
    // starts again from its directories.
    for p in procs.values() {
        kill9(p.pid);
    }
    let mut cluster = cluster;
    let _ = cluster.child.kill();
    let _ = cluster.child.wait();
    for mut p in restarted {
        let _ = p.wait();
    }
    drop(cluster);
    let cluster = Cluster::start_args(tmp.path(), 4, 4, ARGS, &[]);
    let ports = cluster.ports.clone();
    assert!(
        common::wait_until(60, || three_agreeing_copies(&ports)).await,
        "seed {seed}: copies after the full crash"
    );
    let c = connect_any(&ports, 0).await.expect("a coordinator");
    let rows = common::bigints(&c, "SELECT id FROM ledger ORDER BY id").await;
    assert_eq!(
        rows.len(),
        acked.len(),
        "seed {seed}: rows stored vs acknowledged"
    );
    assert_eq!(
        rows, acked,
        "seed {seed}: exactly the acknowledged rows, each once"
    );
    assert!(three_agreeing_copies(&ports).await, "seed {seed}: copies");
    // Every coordinator serves the same catalog.
    let mut catalogs = Vec::new();
    for port in &ports {
        let (c, conn) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
            tokio_postgres::NoTls,
        )
        .await
        .expect("every coordinator is back");
        tokio::spawn(conn);
        let shards: Vec<(i64, String)> = c
            .query("SHOW tessera.shards", &[])
            .await
            .expect("shards")
            .iter()
            .map(|r| (r.get(0), r.get(4)))
            .collect();
        catalogs.push(shards);
    }
    assert!(
        catalogs.windows(2).all(|w| w[0] == w[1]),
        "seed {seed}: coordinators disagree: {catalogs:?}"
    );
    println!(
        "{} acknowledged writes checked after {rounds} kills and a full crash",
        acked.len()
    );
}

/// `tessera local` with no topology flags survives the loss of any one process: three
/// coordinators (a libpq multi-host string reaches a live one) and three copies of every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_local_cluster_survives_the_loss_of_any_one_process() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start_args(tmp.path(), 3, 4, &[common::DEFAULT_TOPOLOGY], &[]);
    let ports = cluster.ports.clone();
    assert_eq!(ports.len(), 3, "three coordinators by default");
    let c = connect_any(&ports, 0).await.expect("connect");
    c.batch_execute(
        "CREATE TABLE notes (id bigint PRIMARY KEY, body text);
         INSERT INTO notes VALUES (1, 'one'), (2, 'two');",
    )
    .await
    .expect("schema");
    let copies: Vec<String> = c
        .query("SHOW tessera.shards", &[])
        .await
        .expect("shards")
        .iter()
        .map(|r| r.get(4))
        .collect();
    assert!(
        copies.iter().all(|n| n.split(',').count() == 3),
        "three copies of every shard by default: {copies:?}"
    );
    drop(c);
    let mut id = 3i64;
    for victim in ["storage-2", "coordinator-1"] {
        kill9(cluster.pid_of(victim));
        // Every write goes through while the victim is down.
        let ok = common::wait_until(30, || async {
            let Some(c) = connect_any(&ports, 0).await else {
                return false;
            };
            c.execute("INSERT INTO notes VALUES ($1, 'after')", &[&id])
                .await
                .is_ok()
        })
        .await;
        assert!(ok, "writes after {victim} died");
        id += 1;
        let c = connect_any(&ports, 0).await.expect("connect");
        let n: i64 = c
            .query_one("SELECT count(*) FROM notes", &[])
            .await
            .expect("read")
            .get(0);
        assert_eq!(n, id - 1, "after {victim} died");
    }
}
