//! Replicated shards (`WITH (replicas = N)`): every write reaches every copy of its shard in
//! one atomic commit, so a storage node can die without losing anything acknowledged; failure
//! detection then takes the dead node out of its shards, writes go on without it, and repair
//! copies its shards to another live node.

mod common;

use common::{kill9, sqlstate, Cluster};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Inserts `id`, retried until its fate is known: acknowledged, or refused as a duplicate
/// because an earlier attempt committed after all.
async fn insert_until_known(c: &tokio_postgres::Client, id: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
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
            Err(e) => {
                assert!(Instant::now() < deadline, "insert {id} kept failing: {e:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Inserts ids `from..from + n` (each until its fate is known); returns the committed ids.
async fn writer(
    c: tokio_postgres::Client,
    from: i64,
    n: i64,
    progress: Arc<AtomicUsize>,
) -> Vec<i64> {
    let mut acked = Vec::new();
    for id in from..from + n {
        insert_until_known(&c, id).await;
        acked.push(id);
        progress.fetch_add(1, Ordering::Relaxed);
    }
    acked
}

/// A writer inserting ids 0, 1, 2... into `ledger` through coordinator `port` until `stop`,
/// each until its fate is known; returns the acknowledged ids.
fn spawn_ledger_writer(
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
    progress: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Vec<i64>> {
    tokio::spawn(async move {
        let (client, conn) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect");
        tokio::spawn(conn);
        let mut acked = Vec::new();
        let mut id = 0;
        while !stop.load(Ordering::Relaxed) {
            insert_until_known(&client, id).await;
            acked.push(id);
            id += 1;
            progress.fetch_add(1, Ordering::Relaxed);
        }
        acked
    })
}

/// Every id in `ledger`, in order.
async fn ledger_ids(c: &tokio_postgres::Client) -> Vec<i64> {
    c.query("SELECT id FROM ledger ORDER BY id", &[])
        .await
        .expect("read")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Whether every shard of `ledger` has three agreeing copies, none on `not_on`.
async fn three_agreeing_copies(c: &tokio_postgres::Client, not_on: &str) -> bool {
    let Ok(check) = c.query("SHOW tessera.replica_check", &[]).await else {
        return false;
    };
    let mut copies: std::collections::HashMap<i64, usize> = Default::default();
    for r in &check {
        *copies.entry(r.get(0)).or_default() += 1;
    }
    copies.len() == 4
        && copies.values().all(|n| *n == 3)
        && check.iter().all(|r| r.get::<_, bool>(4))
        && check.iter().all(|r| r.get::<_, String>(1) != not_on)
}

/// Four storage nodes with fast failure detection (`dead_ms`), and the 3-copy `ledger` table.
async fn ledger_cluster(dir: &std::path::Path, dead_ms: &str) -> (Cluster, tokio_postgres::Client) {
    let cluster = Cluster::start_args(
        dir,
        4,
        4,
        &["--node-suspect-ms", "300", "--node-dead-ms", dead_ms],
        &[],
    );
    let c = cluster.client().await;
    c.batch_execute(
        "CREATE TABLE ledger (id bigint PRIMARY KEY, amount bigint, note text) WITH (replicas = 3)",
    )
    .await
    .expect("create");
    (cluster, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_storage_node_killed_mid_load() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (cluster, c) = ledger_cluster(tmp.path(), "1200").await;
    let progress = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let progress = progress.clone();
            let port = cluster.ports[0];
            tokio::spawn(async move {
                let (client, conn) = tokio_postgres::connect(
                    &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
                    tokio_postgres::NoTls,
                )
                .await
                .expect("connect");
                tokio::spawn(conn);
                writer(client, w * 1_000_000, 700, progress).await
            })
        })
        .collect();
    while progress.load(Ordering::Relaxed) < 120 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    kill9(cluster.pid_of("storage-2"));
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    acked.sort();
    assert_eq!(acked.len(), 1400, "every insert's fate became known");
    assert_eq!(
        ledger_ids(&c).await,
        acked,
        "exactly the acknowledged rows, each once"
    );
    // The dead node left the shards and repair copied them to the fourth node: three copies
    // of every shard again, agreeing row for row.
    let repaired = common::wait_until(30, || async {
        let check = c
            .query("SHOW tessera.replica_check", &[])
            .await
            .expect("replica check");
        let rows: i64 = check.iter().map(|r| r.get::<_, i64>(2)).sum();
        rows == 3 * 1400
            && check.iter().all(|r| r.get::<_, bool>(4))
            && check.iter().all(|r| r.get::<_, String>(1) != "storage-2")
    })
    .await;
    let check: Vec<(i64, String, i64, bool)> = c
        .query("SHOW tessera.replica_check", &[])
        .await
        .expect("replica check")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(4)))
        .collect();
    assert!(
        repaired,
        "three agreeing copies of every shard, none on the dead node: {check:?}"
    );
    // Writes after the repair reach the new copies too.
    c.batch_execute("UPDATE ledger SET amount = amount + 1")
        .await
        .expect("update after repair");
    for r in c
        .query("SHOW tessera.replica_check", &[])
        .await
        .expect("check")
    {
        assert!(r.get::<_, bool>(4), "copies differ after a write");
    }
    let nodes: Vec<(String, String)> = c
        .query("SHOW tessera.nodes", &[])
        .await
        .expect("nodes")
        .iter()
        .map(|r| (r.get(1), r.get(4)))
        .collect();
    assert!(
        nodes.contains(&("storage-2".into(), "dead".into())),
        "{nodes:?}"
    );
}

/// Every value a copy could compute differently (`DEFAULT now()`, `gen_random_uuid()`,
/// `random()`, the rows an UPDATE picks) is computed once, by the shard's first copy, whose
/// row changes the other copies apply: every copy holds the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_hold_the_values_their_first_copy_computed() {
    let cluster = Cluster::start(2, 2);
    let c = cluster.client().await;
    let e = c
        .batch_execute("CREATE TABLE r3 (id int PRIMARY KEY) WITH (replicas = 3)")
        .await
        .expect_err("3 copies on 2 nodes");
    assert_eq!(sqlstate(&e), "22023", "{e:?}");
    c.batch_execute(
        "CREATE TABLE rd (id int PRIMARY KEY, at timestamptz DEFAULT now(), u uuid DEFAULT gen_random_uuid(), x float8 DEFAULT random()) WITH (replicas = 2);
         CREATE TABLE nk (v float8, u text) WITH (replicas = 2)",
    )
    .await
    .expect("per-row defaults on a replicated table");
    c.batch_execute(
        "INSERT INTO rd (id) VALUES (1), (2), (3), (4), (5), (6), (7), (8);
         INSERT INTO rd (id, x) VALUES (9, random()), (10, random());
         UPDATE rd SET x = random() WHERE id <= 4;
         INSERT INTO nk VALUES (random(), gen_random_uuid()::text), (random(), gen_random_uuid()::text);
         UPDATE nk SET v = random();",
    )
    .await
    .expect("volatile writes");
    let row = c
        .query_one(
            "SELECT count(*), count(DISTINCT u), count(DISTINCT x), count(at) FROM rd",
            &[],
        )
        .await
        .expect("values");
    let counts: Vec<i64> = (0..4).map(|i| row.get(i)).collect();
    assert_eq!(counts, vec![10, 10, 10, 10], "one value per row");
    let affected = c
        .execute("UPDATE rd SET x = 0 WHERE id > 8", &[])
        .await
        .expect("update");
    assert_eq!(affected, 2, "each row counted once, not once per copy");
    let check = c
        .query("SHOW tessera.replica_check", &[])
        .await
        .expect("check");
    assert!(!check.is_empty());
    for r in &check {
        assert!(
            r.get::<_, bool>(4),
            "copies of shard {} differ",
            r.get::<_, i64>(0)
        );
    }
    // A document table's copies run its writes themselves: volatile values stay refused.
    c.batch_execute(
        "CREATE TABLE dd (id bigint PRIMARY KEY, doc jsonb) WITH (storage = 'document', replicas = 2)",
    )
    .await
    .expect("document table");
    let e = c
        .batch_execute("INSERT INTO dd VALUES (1, jsonb_build_object('r', random()))")
        .await
        .expect_err("random per copy");
    assert_eq!(sqlstate(&e), "0A000", "{e:?}");
}

/// Table `d`: rows `(i, i)` for i in 1..=40, in three copies per shard.
async fn forty_rows_in_three_copies(c: &tokio_postgres::Client) {
    let rows: Vec<String> = (1..=40).map(|i| format!("({i}, {i})")).collect();
    c.batch_execute(&format!(
        "CREATE TABLE d (id int PRIMARY KEY, v int) WITH (replicas = 3);
         INSERT INTO d VALUES {}",
        rows.join(", ")
    ))
    .await
    .expect("setup");
}

/// A shard and the node of its second copy (replica_check lists a shard's first copy first).
async fn a_second_copy(c: &tokio_postgres::Client) -> (i64, String) {
    let check = c
        .query("SHOW tessera.replica_check", &[])
        .await
        .expect("check");
    let shard: i64 = check[0].get(0);
    let node = check
        .iter()
        .filter(|r| r.get::<_, i64>(0) == shard)
        .nth(1)
        .map(|r| r.get(1))
        .expect("a second copy");
    (shard, node)
}

/// Changes `d` in the SQLite file of a copy, behind Tessera's back.
fn damage(dir: &std::path::Path, node: &str, shard: i64, sql: &str) {
    let file = dir.join(node).join(format!("shard-{shard}.db"));
    let copy = rusqlite::Connection::open(&file).expect("open the copy");
    copy.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    let changed = copy.execute(sql, []).expect("damage the copy");
    assert!(changed > 0, "the copy held rows");
}

/// Waits until `shard` has three copies and every copy of every shard agrees; then checks
/// the sum of `d.v`.
async fn healed(c: &tokio_postgres::Client, shard: i64, sum: i64) {
    let healed = common::wait_until(120, || async {
        let Ok(check) = c.query("SHOW tessera.replica_check", &[]).await else {
            return false;
        };
        check.iter().filter(|r| r.get::<_, i64>(0) == shard).count() == 3
            && check.iter().all(|r| r.get::<_, bool>(4))
    })
    .await;
    assert!(healed, "shard {shard} has three agreeing copies again");
    let got: i64 = c
        .query_one("SELECT sum(v)::int8 FROM d", &[])
        .await
        .expect("sum")
        .get(0);
    assert_eq!(got, sum);
}

/// A copy whose rows disagree with its shard's first copy (here: rows deleted behind
/// Tessera's back) is found by the next write that changes them, leaves its shard instead of
/// drifting further or failing the write, and repair rebuilds it from the first copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_disagrees_leaves_and_is_rebuilt() {
    let cluster = Cluster::start(3, 2);
    let c = cluster.client().await;
    forty_rows_in_three_copies(&c).await;
    let (shard, node) = a_second_copy(&c).await;
    damage(&cluster.dir, &node, shard, "DELETE FROM d");
    // The write goes on, on the copies that agree.
    let n = c
        .execute("UPDATE d SET v = 0", &[])
        .await
        .expect("update despite the damaged copy");
    assert_eq!(n, 40);
    healed(&c, shard, 0).await;
}

/// After a restart, every replicated shard's copies are compared before anything else, and
/// a copy that disagrees (here: damaged while the cluster was down) leaves its shard and is
/// rebuilt, with no write needed to find it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_are_compared_after_a_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start_in(tmp.path(), 3, 2);
    let c = cluster.client().await;
    forty_rows_in_three_copies(&c).await;
    let (shard, node) = a_second_copy(&c).await;
    drop(c);
    let dir = cluster.stop();
    damage(&dir, &node, shard, "UPDATE d SET v = -v");
    let cluster = Cluster::start_in(&dir, 3, 2);
    let c = cluster.client().await;
    // The majority's rows are kept.
    healed(&c, shard, 820).await;
}

/// `tessera admin node decommission`: the node's copies, single ones included, move to the
/// other nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommissioned_node_hands_its_copies_to_the_others() {
    let cluster = Cluster::start(4, 4);
    let c = cluster.client().await;
    c.batch_execute(
        "CREATE TABLE single (id int PRIMARY KEY);
         CREATE TABLE kept (id bigint PRIMARY KEY, v text) WITH (replicas = 3);
         INSERT INTO kept SELECT 1, 'a';
         INSERT INTO kept VALUES (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e'), (6, 'f');",
    )
    .await
    .expect("schema");
    let admin = |args: &[&str]| {
        std::process::Command::new(common::tessera())
            .args(["admin", "--port", &cluster.port.to_string()])
            .args(args)
            .output()
            .expect("tessera admin")
    };
    let out = admin(&["node", "decommission", "storage-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let moved = common::wait_until(30, || async {
        let check = c
            .query("SHOW tessera.replica_check", &[])
            .await
            .expect("check");
        let rows: i64 = check.iter().map(|r| r.get::<_, i64>(2)).sum();
        rows == 3 * 6
            && check.iter().all(|r| r.get::<_, bool>(4))
            && check.iter().all(|r| r.get::<_, String>(1) != "storage-1")
    })
    .await;
    assert!(moved, "three copies of every shard, none on storage-1");
    let nodes: Vec<(String, String)> = c
        .query("SHOW tessera.nodes", &[])
        .await
        .expect("nodes")
        .iter()
        .map(|r| (r.get(1), r.get(4)))
        .collect();
    assert!(
        nodes.contains(&("storage-1".into(), "decommissioned".into())),
        "{nodes:?}"
    );
    let n: i64 = c
        .query_one("SELECT count(*) FROM kept", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 6);
}

/// Storage nodes die one after another under load (kill -9), each comes back, and every time
/// repair restores three agreeing copies of every shard; in the end exactly the acknowledged
/// rows are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_kills_and_restarts_lose_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (cluster, c) = ledger_cluster(tmp.path(), "1000").await;
    let addrs: std::collections::HashMap<String, String> = c
        .query("SHOW tessera.nodes", &[])
        .await
        .expect("nodes")
        .iter()
        .map(|r| (r.get(1), r.get(2)))
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let port = cluster.port;
    let writer_task = spawn_ledger_writer(port, stop.clone(), progress.clone());
    let mut restarted = Vec::new();
    for victim in ["storage-1", "storage-2", "storage-3"] {
        let pid = cluster.pid_of(victim);
        let argv = common::command_line(pid);
        let before = progress.load(Ordering::Relaxed);
        kill9(pid);
        let healed = common::wait_until(40, || three_agreeing_copies(&c, victim)).await;
        assert!(healed, "three agreeing copies again after {victim} died");
        assert!(
            progress.load(Ordering::Relaxed) > before,
            "writes went on while {victim} was down"
        );
        restarted.push(common::restart(&argv, Some(&addrs[victim])).0);
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = writer_task.await.expect("writer");
    acked.sort();
    assert_eq!(
        ledger_ids(&c).await,
        acked,
        "exactly the acknowledged rows, each once"
    );
    for r in c
        .query("SHOW tessera.replica_check", &[])
        .await
        .expect("check")
    {
        assert!(r.get::<_, bool>(4), "copies differ at the end");
    }
    for mut p in restarted {
        let _ = p.kill();
        let _ = p.wait();
    }
}

/// With failure detection slowed to a minute, writes to the shards of a node killed with
/// kill -9 still go on within moments: the first write that cannot reach the dead copy takes it
/// out of its shard (two of three copies remain, a majority) and commits on the others. Repair
/// then restores three agreeing copies, and exactly the acknowledged rows are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_at_once_when_a_copy_dies() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (cluster, c) = ledger_cluster(tmp.path(), "60000").await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let port = cluster.port;
    let writer_task = spawn_ledger_writer(port, stop.clone(), progress.clone());
    while progress.load(Ordering::Relaxed) < 50 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    kill9(cluster.pid_of("storage-1"));
    let killed = Instant::now();
    let before = progress.load(Ordering::Relaxed);
    let went_on = common::wait_until(20, || async {
        progress.load(Ordering::Relaxed) >= before + 100
    })
    .await;
    assert!(went_on, "writes stalled after storage-1 died");
    println!(
        "100 writes after kill -9 of a copy's node within {:?}",
        killed.elapsed()
    );
    // Still not declared dead, yet out of every shard, and repaired onto the fourth node.
    let healed = common::wait_until(30, || three_agreeing_copies(&c, "storage-1")).await;
    assert!(healed, "three agreeing copies again, none on storage-1");
    let liveness: String = c
        .query("SHOW tessera.nodes", &[])
        .await
        .expect("nodes")
        .iter()
        .find(|r| r.get::<_, String>(1) == "storage-1")
        .map(|r| r.get(4))
        .expect("storage-1");
    assert_ne!(
        liveness, "dead",
        "failure detection was not what moved writes on"
    );
    stop.store(true, Ordering::Relaxed);
    let mut acked = writer_task.await.expect("writer");
    acked.sort();
    assert_eq!(
        ledger_ids(&c).await,
        acked,
        "exactly the acknowledged rows, each once"
    );
}

/// `SET read_consistency = 'follower'` spreads reads over every live copy; the default reads
/// the first copy. Shown by giving one copy a row behind Tessera's back (written straight into
/// its SQLite file): leader reads never see it, follower reads sometimes do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_reads_use_every_copy() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start_args(tmp.path(), 3, 1, &[], &[]);
    let c = cluster.client().await;
    c.batch_execute(
        "CREATE TABLE kv (k bigint PRIMARY KEY, v text) WITH (replicas = 3);
         INSERT INTO kv VALUES (1, 'a'), (2, 'b'), (3, 'c');
         SET tessera.cache = off;",
    )
    .await
    .expect("schema");
    let row = c
        .query_one("SHOW tessera.shards", &[])
        .await
        .expect("shards");
    let (shard, nodes): (i64, String) = (row.get(0), row.get(4));
    let nodes: Vec<&str> = nodes.split(',').collect();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    let file = tmp.path().join(nodes[2]).join(format!("shard-{shard}.db"));
    rusqlite::Connection::open(&file)
        .expect("open the third copy")
        .execute("INSERT INTO kv VALUES (4, 'only here')", [])
        .expect("write behind Tessera's back");
    let counts = |n: usize| {
        let c = &c;
        async move {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..n {
                let k: i64 = c
                    .query_one("SELECT count(*) FROM kv", &[])
                    .await
                    .expect("count")
                    .get(0);
                seen.insert(k);
            }
            seen
        }
    };
    assert_eq!(
        counts(12).await,
        [3].into(),
        "leader reads use the first copy"
    );
    c.batch_execute("SET read_consistency = 'follower'")
        .await
        .expect("set");
    assert_eq!(
        counts(12).await,
        [3, 4].into(),
        "follower reads use every copy"
    );
    c.batch_execute("SET read_consistency = default")
        .await
        .expect("reset");
    assert_eq!(counts(6).await, [3].into());
    let e = c
        .batch_execute("SET read_consistency = 'nearest'")
        .await
        .expect_err("bad value");
    assert_eq!(sqlstate(&e), "22023");
}
