//! A coordinator that dies after deciding a multi-shard commit, before any shard commits:
//! the restarted coordinator finishes the commit from its decision log, so no half-committed
//! statement is ever visible. Roles run as separate processes, as on separate hosts.

mod common;

use common::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decided_commit_survives_a_coordinator_crash() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = |n: &str| dir.path().join(n).display().to_string();
    let s1 = Role::start(
        &[
            "storage",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "s1",
            "--data-dir",
            &d("s1"),
        ],
        &[],
    );
    let s2 = Role::start(
        &[
            "storage",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "s2",
            "--data-dir",
            &d("s2"),
        ],
        &[],
    );
    let storage = format!("s1={},s2={}", s1.addr, s2.addr);
    let coord_args = [
        "coordinator",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &d("coord"),
        "--default-shards",
        "4",
        "--storage",
        &storage,
    ];
    let mut coord = Role::start(
        &coord_args,
        &[("TESSERA_FAULT", "crash-after-commit-decision")],
    );
    let conn = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        coord.port()
    );
    let (c, h) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(h);
    c.batch_execute("CREATE TABLE t (id bigint PRIMARY KEY, v text) PARTITION BY HASH (id)")
        .await
        .expect("create");
    let values: Vec<String> = (1..=20).map(|i| format!("({i}, 'v{i}')")).collect();
    // Twenty keys land on all four shards on both nodes: a multi-shard commit, and the crash.
    let r = c
        .batch_execute(&format!("INSERT INTO t VALUES {}", values.join(", ")))
        .await;
    assert!(r.is_err(), "the coordinator should have died mid-commit");
    let status = coord.child.wait().expect("wait");
    assert!(!status.success());
    // A new coordinator on the same catalog and decision log finishes the commit.
    let coord2 = Role::start(&coord_args, &[]);
    let conn = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        coord2.port()
    );
    let (c, h) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(h);
    let row = c
        .query_one("SELECT count(*), min(v), max(id) FROM t", &[])
        .await
        .expect("count");
    assert_eq!(
        row.get::<_, i64>(0),
        20,
        "every shard committed the decided transaction"
    );
    assert_eq!(row.get::<_, i64>(2), 20);
    // And writes work again on every shard (no lock left behind).
    c.batch_execute("INSERT INTO t VALUES (21, 'x'), (22, 'y'), (23, 'z'), (24, 'w')")
        .await
        .expect("insert after recovery");
    assert_eq!(
        c.query_one("SELECT count(*) FROM t", &[])
            .await
            .expect("count")
            .get::<_, i64>(0),
        24
    );
}
