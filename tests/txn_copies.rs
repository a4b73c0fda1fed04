//! A transaction's row changes reach its shards' other copies at its commit, in its prepare
//! request, not statement by statement: every copy ends with the same rows, savepoints and
//! rollbacks included, and a copy whose node died before the commit leaves its shard and the
//! transaction fails with `40001` for its retry.

mod common;

use common::{copies_agree, kill9, sqlstate, Cluster};

const SHARDS: usize = 4;

/// `(i, value)` for each i in `ids`, as a VALUES list.
fn values(ids: std::ops::RangeInclusive<i32>, value: &str) -> String {
    ids.map(|i| format!("({i}, {value})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rows of `t`, in key order, read from every copy in turn (follower reads).
async fn rows_on_every_copy(c: &tokio_postgres::Client) -> Vec<Vec<(i32, String)>> {
    c.batch_execute("SET read_consistency = 'follower'")
        .await
        .expect("follower reads");
    let mut seen = Vec::new();
    for _ in 0..12 {
        let rows = c
            .query("SELECT id, v FROM t ORDER BY id", &[])
            .await
            .expect("read")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect::<Vec<(i32, String)>>();
        if !seen.contains(&rows) {
            seen.push(rows);
        }
    }
    c.batch_execute("RESET read_consistency")
        .await
        .expect("leader reads");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_get_a_transactions_changes_at_its_commit() {
    let cluster = Cluster::start(3, SHARDS as u32);
    let c = cluster.client().await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text) WITH (replicas = 3)")
        .await
        .expect("table");
    c.batch_execute(&format!(
        "BEGIN;
         INSERT INTO t VALUES {};
         UPDATE t SET v = 'b' WHERE id <= 10;
         SAVEPOINT s;
         INSERT INTO t VALUES (100, 'gone');
         DELETE FROM t WHERE id = 1;
         ROLLBACK TO SAVEPOINT s;
         DELETE FROM t WHERE id = 2;
         UPDATE t SET v = v || 'c' WHERE id IN (3, 11);
         COMMIT",
        values(1..=20, "'a'")
    ))
    .await
    .expect("transaction");
    c.batch_execute(
        "BEGIN; INSERT INTO t VALUES (200, 'never'); UPDATE t SET v = 'x' WHERE id = 3; ROLLBACK",
    )
    .await
    .expect("rolled back");
    let mut want: Vec<(i32, String)> = (1..=20)
        .filter(|i| *i != 2)
        .map(|i| {
            let v = match i {
                3 => "bc",
                11 => "ac",
                i if i <= 10 => "b",
                _ => "a",
            };
            (i, v.to_string())
        })
        .collect();
    assert_eq!(rows_on_every_copy(&c).await, vec![want.clone()]);
    assert!(copies_agree(&c, SHARDS, 3).await, "copies differ");

    // More changes than wait at the coordinator (256 KiB): sent on the way, then the rest at
    // the commit; the copies agree all the same.
    c.batch_execute(&format!(
        "BEGIN;
         INSERT INTO t VALUES {};
         UPDATE t SET v = 'z' WHERE id >= 3990;
         DELETE FROM t WHERE id BETWEEN 1000 AND 1009;
         COMMIT",
        values(1000..=3999, &format!("'{}'", "y".repeat(400)))
    ))
    .await
    .expect("bulk transaction");
    want.extend((1010..=3989).map(|i| (i, "y".repeat(400))));
    want.extend((3990..=3999).map(|i| (i, "z".to_string())));
    assert_eq!(rows_on_every_copy(&c).await, vec![want]);
    assert!(copies_agree(&c, SHARDS, 3).await, "copies differ");
}

/// Copies learn of a transaction's writes only at its commit: one whose node died after the
/// writes leaves its shard then, the commit fails `40001` with nothing committed, and the
/// retry commits on the copies that remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_lost_before_the_commit_fails_it_for_a_retry() {
    let cluster = Cluster::start(3, SHARDS as u32);
    let c = cluster.client().await;
    c.batch_execute(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, v text) WITH (replicas = 3);
         INSERT INTO t VALUES {}",
        values(1..=8, "'a'")
    ))
    .await
    .expect("table");
    let txn = "BEGIN; UPDATE t SET v = 'b'; INSERT INTO t VALUES (9, 'b');";
    c.batch_execute(txn).await.expect("writes");
    kill9(cluster.pid_of("storage-3"));
    let e = c.batch_execute("COMMIT").await.expect_err("a copy is gone");
    assert_eq!(sqlstate(&e), "40001", "{e:?}");
    let rows: Vec<String> = c
        .query("SELECT v FROM t ORDER BY id", &[])
        .await
        .expect("read")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, vec!["a"; 8], "nothing of the failed commit");
    c.batch_execute(txn).await.expect("retry");
    c.batch_execute("COMMIT").await.expect("retry commits");
    let rows: Vec<String> = c
        .query("SELECT v FROM t ORDER BY id", &[])
        .await
        .expect("read")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, vec!["b"; 9]);
    assert!(
        copies_agree(&c, SHARDS, 2).await,
        "two agreeing copies left"
    );
}
