//! Online shard moves: `tessera admin shard move`, `node drain` and `node decommission` fill a
//! new copy in throttled batches while writers keep writing, then swap it in; nothing
//! acknowledged is lost, nothing is applied twice, and single-copy shards move too.

mod common;

use common::{sqlstate, Cluster};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the writers had acknowledged: inserted ids, and increments per preloaded id.
#[derive(Default)]
struct Acked {
    inserted: Vec<i64>,
    increments: BTreeMap<i64, i64>,
}

/// Until `stop`: inserts fresh ids (from `from`) and increments preloaded rows `0..preloaded`,
/// autocommit, each statement retried until it succeeds. Every error here is a refusal
/// (40001 from the fence or the commit check), so a failed statement did nothing.
async fn write_until(
    port: u16,
    from: i64,
    preloaded: i64,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicUsize>,
) -> Acked {
    let (c, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect");
    tokio::spawn(conn);
    let mut acked = Acked::default();
    let mut id = from;
    let mut refused = 0;
    while !stop.load(Ordering::Relaxed) {
        let r = if id % 2 == 0 {
            c.execute("INSERT INTO acct (id, v) VALUES ($1, 0)", &[&id])
                .await
                .map(|n| {
                    assert_eq!(n, 1);
                    acked.inserted.push(id);
                })
        } else {
            let target = id % preloaded;
            c.execute("UPDATE acct SET v = v + 1 WHERE id = $1", &[&target])
                .await
                .map(|n| {
                    assert_eq!(n, 1);
                    *acked.increments.entry(target).or_default() += 1;
                })
        };
        match r {
            Ok(()) => {
                id += 1;
                progress.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                assert_eq!(sqlstate(&e), "40001", "{e:?}");
                refused += 1;
                assert!(refused < 500, "writes kept being refused: {e:?}");
            }
        }
    }
    acked
}

fn admin(cluster: &Cluster, args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::tessera())
        .args(["admin", "--port", &cluster.port.to_string()])
        .args(args)
        .output()
        .expect("tessera admin")
}

/// (shard id, node list) of every shard of `acct`.
async fn placements(c: &tokio_postgres::Client) -> Vec<(i64, String)> {
    c.query("SHOW tessera.shards", &[])
        .await
        .expect("shards")
        .iter()
        .filter(|r| r.get::<_, String>(5).split(',').any(|t| t == "acct"))
        .map(|r| (r.get(0), r.get(4)))
        .collect()
}

/// Checks the table holds exactly what was acknowledged.
async fn check_exact(c: &tokio_postgres::Client, preloaded: i64, acked: &[Acked]) {
    let mut expected: BTreeMap<i64, i64> = (0..preloaded).map(|i| (i, 0)).collect();
    for a in acked {
        for id in &a.inserted {
            assert!(expected.insert(*id, 0).is_none(), "id {id} acked twice");
        }
        for (id, n) in &a.increments {
            *expected.get_mut(id).expect("preloaded") += n;
        }
    }
    let got: BTreeMap<i64, i64> = c
        .query("SELECT id, v FROM acct", &[])
        .await
        .expect("read")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(got.len(), expected.len(), "row count");
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(k, v)| got.get(k) != Some(v))
        .take(5)
        .map(|(k, v)| (k, v, got.get(k)))
        .collect();
    assert!(wrong.is_empty(), "(id, acked, stored): {wrong:?}");
}

async fn preload(c: &tokio_postgres::Client, n: i64) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let values: Vec<String> = chunk.iter().map(|i| format!("({i}, 0)")).collect();
        c.batch_execute(&format!("INSERT INTO acct VALUES {}", values.join(", ")))
            .await
            .expect("preload");
    }
}

/// A single-copy shard moves to another node while two writers insert into it and update
/// its rows: writes go on during the move, the new copy holds exactly what was acknowledged,
/// and the old node's file is deleted afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_copy_shard_moves_while_it_is_written() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start_args(
        tmp.path(),
        3,
        2,
        &["--repair-batch-rows", "100", "--repair-pause-ms", "20"],
        &[],
    );
    let c = cluster.client().await;
    c.batch_execute("CREATE TABLE acct (id bigint PRIMARY KEY, v bigint NOT NULL)")
        .await
        .expect("create");
    let preloaded = 4000;
    preload(&c, preloaded).await;
    let before = placements(&c).await;
    let (shard, from) = before[0].clone();
    let to = ["storage-1", "storage-2", "storage-3"]
        .into_iter()
        .find(|n| before.iter().all(|(_, p)| p != n))
        .expect("a node without acct shards");
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            tokio::spawn(write_until(
                cluster.port,
                1_000_000 * (w + 1),
                preloaded,
                stop.clone(),
                progress.clone(),
            ))
        })
        .collect();
    while progress.load(Ordering::Relaxed) < 50 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let at_start = progress.load(Ordering::Relaxed);
    let out = admin(&cluster, &["shard", "move", &shard.to_string(), "--to", to]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let during = progress.load(Ordering::Relaxed) - at_start;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("shard {shard} moved to {to}")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Two thousand rows at 100 per batch and 20 ms pauses take over 400 ms: writes went on.
    assert!(during > 20, "only {during} writes while the shard moved");
    while progress.load(Ordering::Relaxed) < at_start + during + 50 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.push(w.await.expect("writer"));
    }
    let after = placements(&c).await;
    assert!(after.contains(&(shard, to.to_string())), "{after:?}");
    check_exact(&c, preloaded, &acked).await;
    // The moved-from node deletes its copy after a grace period.
    let old_file = tmp.path().join(&from).join(format!("shard-{shard}.db"));
    let gone = common::wait_until(20, || async { !old_file.exists() }).await;
    assert!(gone, "{} still exists", old_file.display());
    // Later writes go to the new copy only.
    c.execute("UPDATE acct SET v = -1 WHERE id < 10", &[])
        .await
        .expect("write after the move");
    let n: i64 = c
        .query_one("SELECT count(*) FROM acct WHERE v = -1", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 10);
}

/// `node decommission` moves every copy off the node online, single copies included, without
/// a replicated shard ever dropping below its copies; `node drain` then empties another node
/// that stays in service. Writers keep writing throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_and_decommission_move_every_copy_while_writes_go_on() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start_args(
        tmp.path(),
        5,
        4,
        &["--repair-batch-rows", "200", "--repair-pause-ms", "5"],
        &[],
    );
    let c = cluster.client().await;
    c.batch_execute(
        "CREATE TABLE acct (id bigint PRIMARY KEY, v bigint NOT NULL);
         CREATE TABLE kept (id bigint PRIMARY KEY, v text) WITH (replicas = 3);
         INSERT INTO kept VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e'), (6, 'f');",
    )
    .await
    .expect("schema");
    let preloaded = 2000;
    preload(&c, preloaded).await;
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn(write_until(
        cluster.port,
        1_000_000,
        preloaded,
        stop.clone(),
        progress.clone(),
    ));
    for (action, node, liveness) in [
        ("decommission", "storage-1", "decommissioned"),
        ("drain", "storage-2", "alive"),
    ] {
        let out = admin(&cluster, &["node", action, node]);
        assert!(
            out.status.success(),
            "{action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let nodes: Vec<(String, String, i64)> = c
            .query("SHOW tessera.nodes", &[])
            .await
            .expect("nodes")
            .iter()
            .map(|r| (r.get(1), r.get(4), r.get(6)))
            .collect();
        assert!(
            nodes.contains(&(node.to_string(), liveness.to_string(), 0)),
            "{action}: {nodes:?}"
        );
        // Three agreeing copies of every replicated shard, none on the emptied node.
        let check = c
            .query("SHOW tessera.replica_check", &[])
            .await
            .expect("check");
        assert_eq!(check.len(), 3 * 4, "{action}");
        assert!(check.iter().all(|r| r.get::<_, bool>(4)), "{action}");
        assert!(check.iter().all(|r| r.get::<_, String>(1) != node));
    }
    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.expect("writer");
    check_exact(&c, preloaded, &[acked]).await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM kept", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 6);
    // Moving to a node that is out of service, or a shard that does not exist, is refused.
    let shard = placements(&c).await[0].0.to_string();
    let out = admin(&cluster, &["shard", "move", &shard, "--to", "storage-1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("decommissioned"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = c
        .simple_query("SELECT tessera_move_shard(999999, 'storage-3')")
        .await
        .expect_err("no such shard");
    assert_eq!(sqlstate(&e), "42704");
}
