//! A coordinator that dies after deciding a multi-shard commit, before any shard commits:
//! the restarted coordinator finishes the commit from its decision log, so no half-committed
//! statement is ever visible. And a storage node that dies after its prepare, before its
//! commit, with every other process killed -9 after it: the prepared transaction's row
//! changes were on its disk, so the restarted cluster commits them there too. Roles run as
//! separate processes, as on separate hosts.

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
    let coord_args = coordinator_args(dir.path(), &format!("s1={},s2={}", s1.addr, s2.addr));
    let args: Vec<&str> = coord_args.iter().map(String::as_str).collect();
    let mut coord = Role::start(&args, &[("TESSERA_FAULT", "crash-after-commit-decision")]);
    let conn = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        coord.port()
    );
    let (c, h) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(h);
    let r = twenty_rows(&c).await;
    assert!(r.is_err(), "the coordinator should have died mid-commit");
    let status = coord.child.wait().expect("wait");
    assert!(!status.success());
    // A new coordinator on the same catalog and decision log finishes the commit.
    let coord2 = coordinator(&coord_args);
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

fn storage_role(name: &str, listen: &str, dir: &std::path::Path, env: &[(&str, &str)]) -> Role {
    let data = dir.join(name).display().to_string();
    Role::start(
        &[
            "storage",
            "--listen",
            listen,
            "--name",
            name,
            "--data-dir",
            &data,
        ],
        env,
    )
}

/// Creates `t` over four shards and inserts twenty keys in one statement: they land on every
/// shard on both nodes, a multi-shard commit.
async fn twenty_rows(c: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    c.batch_execute("CREATE TABLE t (id bigint PRIMARY KEY, v text) PARTITION BY HASH (id)")
        .await
        .expect("create");
    let values: Vec<String> = (1..=20).map(|i| format!("({i}, 'v{i}')")).collect();
    c.batch_execute(&format!("INSERT INTO t VALUES {}", values.join(", ")))
        .await
}

/// The arguments of a coordinator over `storage`, its data in `dir/coord`.
fn coordinator_args(dir: &std::path::Path, storage: &str) -> Vec<String> {
    let data = dir.join("coord").display().to_string();
    [
        "coordinator",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data,
        "--default-shards",
        "4",
        "--storage",
        storage,
    ]
    .map(String::from)
    .to_vec()
}

/// A coordinator started with `args`.
fn coordinator(args: &[String]) -> Role {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Role::start(&args, &[])
}

async fn connect(port: u16) -> tokio_postgres::Client {
    let conn = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let (c, h) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(h);
    c
}

/// Node s2 aborts when told to commit a prepared transaction: s1's shards committed, s2's had
/// only prepared. Then the coordinator and s1 are killed -9 too, and everything restarts. The
/// restarted coordinator re-sends its decision; s2 finds the transaction in doubt (its
/// changes in its prepared log) and commits it: all twenty rows, on every shard. Before the
/// prepared log, s2 answered that it knew no such transaction, and the statement stayed
/// half committed for good (the rows of s1's shards only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_dies_between_prepare_and_commit_commits_after_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut s1 = storage_role("s1", "127.0.0.1:0", dir.path(), &[]);
    let mut s2 = storage_role(
        "s2",
        "127.0.0.1:0",
        dir.path(),
        &[("TESSERA_FAULT", "crash-before-prepared-commit")],
    );
    let coord_args = coordinator_args(dir.path(), &format!("s1={},s2={}", s1.addr, s2.addr));
    let mut coord = coordinator(&coord_args);
    let c = connect(coord.port()).await;
    let r = twenty_rows(&c).await;
    assert!(r.is_err(), "s2 should have died mid-commit");
    assert!(!s2.child.wait().expect("wait").success());
    // Every other process dies too, without a chance to finish anything.
    for role in [&mut coord, &mut s1] {
        common::kill9(role.child.id());
        let _ = role.child.wait();
    }
    let (a1, a2) = (s1.addr.clone(), s2.addr.clone());
    drop((s1, s2, coord));
    let _s1 = storage_role("s1", &a1, dir.path(), &[]);
    let _s2 = storage_role("s2", &a2, dir.path(), &[]);
    let coord = coordinator(&coord_args);
    let c = connect(coord.port()).await;
    assert_eq!(
        common::bigints(&c, "SELECT id FROM t ORDER BY id").await,
        (1..=20).collect::<Vec<i64>>(),
        "every shard committed the decided transaction"
    );
    // No shard is left in doubt: each takes writes again.
    c.batch_execute("INSERT INTO t VALUES (21, 'x'), (22, 'y'), (23, 'z'), (24, 'w')")
        .await
        .expect("insert after recovery");
}

/// The same fault with the coordinator alive: the client hears that the commit failed after
/// other shards committed (`40003`), s2 restarts with the transaction in doubt, and the
/// coordinator, which keeps sending decisions a shard missed, delivers it within a second or
/// so: all twenty rows, without any coordinator restart. Before, the decision waited in the
/// coordinator's log for its next start, and s2's shards refused writes meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_copy_hears_the_decision_it_missed() {
    let dir = tempfile::tempdir().expect("tmp");
    let _s1 = storage_role("s1", "127.0.0.1:0", dir.path(), &[]);
    let mut s2 = storage_role(
        "s2",
        "127.0.0.1:0",
        dir.path(),
        &[("TESSERA_FAULT", "crash-before-prepared-commit")],
    );
    let coord = coordinator(&coordinator_args(
        dir.path(),
        &format!("s1={},s2={}", _s1.addr, s2.addr),
    ));
    let c = connect(coord.port()).await;
    let e = twenty_rows(&c).await.expect_err("s2 died mid-commit");
    assert_eq!(common::sqlstate(&e), "40003", "{e}");
    assert!(!s2.child.wait().expect("wait").success());
    let a2 = s2.addr.clone();
    drop(s2);
    let _s2 = storage_role("s2", &a2, dir.path(), &[]);
    let whole = common::wait_until(20, || async {
        c.query_one("SELECT count(*) FROM t", &[])
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) == 20)
    })
    .await;
    assert!(whole, "s2 never heard the decision");
    c.batch_execute("INSERT INTO t VALUES (21, 'x'), (22, 'y'), (23, 'z'), (24, 'w')")
        .await
        .expect("every shard takes writes again");
}
