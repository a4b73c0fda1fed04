//! Row locks through the registry: transactions writing distinct rows of one shard do not
//! wait for each other; one writing a row another holds waits, then runs against the newest
//! committed rows; a cycle of waits fails its youngest member.

use super::*;

/// `v` of row `k` of table `t` on `shard`, read in `txn` (0: autocommit).
async fn v_of(reg: &ShardRegistry, shard: u64, txn: u64, k: i64) -> Vec<i64> {
    read_in(reg, shard, txn, &format!("SELECT v FROM t WHERE k = {k}")).await
}

/// A registry in `dir` whose shards 1 and 2 hold table `t` with row (1, 0).
async fn one_row_on_two_shards(dir: &std::path::Path) -> Arc<ShardRegistry> {
    let reg = Arc::new(open_in(dir));
    for shard in [1, 2] {
        with_table(&reg, shard).await;
        reg.execute(shard, 0, write("INSERT INTO t VALUES (1, 0)"))
            .await
            .expect("row");
    }
    reg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_writing_distinct_rows_of_a_shard_do_not_wait() {
    let dir = tempfile::tempdir().expect("tmp");
    let reg = open_in(dir.path());
    with_table(&reg, 1).await;
    reg.execute(1, 0, write("INSERT INTO t VALUES (1, 0), (2, 0)"))
        .await
        .expect("rows");
    // Four open transactions on one shard, none committed: before row locks the second one
    // waited for the first's shard-wide write lock and failed with 40001.
    for txn in [10, 11] {
        reg.execute(
            1,
            txn,
            write(&format!("UPDATE t SET v = {txn} WHERE k = {}", txn - 9)),
        )
        .await
        .expect("update a row of its own");
    }
    for txn in [12, 13] {
        reg.execute(
            1,
            txn,
            write(&format!("INSERT INTO t VALUES ({txn}, {txn})")),
        )
        .await
        .expect("insert a row of its own");
    }
    // Each sees its own change, none another's uncommitted one.
    assert_eq!(v_of(&reg, 1, 10, 1).await, [10]);
    assert_eq!(v_of(&reg, 1, 11, 1).await, [0]);
    assert_eq!(v_of(&reg, 1, 0, 12).await, Vec::<i64>::new());
    // An autocommit write of another row goes on too.
    reg.execute(1, 0, write("INSERT INTO t VALUES (3, 3)"))
        .await
        .expect("autocommit");
    for txn in [10, 11, 12, 13] {
        reg.finish_txn(1, txn, true).await.expect("commit");
    }
    assert_eq!(
        read(&reg, 1, "SELECT v FROM t ORDER BY k").await,
        [10, 11, 3, 12, 13]
    );
    assert!(!reg.row_locks.any_on(1), "ended transactions hold no rows");
}

/// PostgreSQL's READ COMMITTED for a row another transaction changed: the second UPDATE
/// waits for the first transaction, then applies to the row as it committed (no lost update);
/// each statement reads what committed before it began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_of_a_locked_row_waits_then_sees_the_commit() {
    let dir = tempfile::tempdir().expect("tmp");
    let reg = Arc::new(open_in(dir.path()));
    with_table(&reg, 1).await;
    reg.execute(1, 0, write("INSERT INTO t VALUES (1, 10)"))
        .await
        .expect("row");
    assert_eq!(v_of(&reg, 1, 21, 1).await, [10]);
    reg.execute(1, 20, write("UPDATE t SET v = v + 1 WHERE k = 1"))
        .await
        .expect("first update");
    let second = tokio::spawn({
        let reg = reg.clone();
        async move {
            reg.execute(1, 21, write("UPDATE t SET v = v + 1 WHERE k = 1"))
                .await
        }
    });
    let autocommit = tokio::spawn({
        let reg = reg.clone();
        async move {
            reg.execute(1, 0, write("UPDATE t SET v = v * 10 WHERE k = 1"))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !second.is_finished() && !autocommit.is_finished(),
        "both wait"
    );
    reg.finish_txn(1, 20, true).await.expect("commit the first");
    second.await.expect("join").expect("the second goes on");
    // Transaction 21 read 10 before; now it reads 11 committed, plus its own change.
    let v = v_of(&reg, 1, 21, 1).await;
    assert!(v == [12] || v == [111], "{v:?}");
    reg.finish_txn(1, 21, true)
        .await
        .expect("commit the second");
    autocommit
        .await
        .expect("join")
        .expect("the autocommit write goes on");
    // Both orders of the last two writers are serial: (11 + 1) * 10 or 11 * 10 + 1.
    let v = v_of(&reg, 1, 0, 1).await;
    assert!(v == [120] || v == [111], "{v:?}");
}

/// Two transactions each hold a row the other then writes, on two shards of one node: the
/// younger one fails at once with 40P01 and the older one goes on. Under the shard-wide lock
/// the younger waited `younger_wait_ms` first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_of_row_waits_fails_the_younger_transaction() {
    let dir = tempfile::tempdir().expect("tmp");
    let reg = one_row_on_two_shards(dir.path()).await;
    let (older, younger) = (100, 200);
    reg.execute(1, older, write("UPDATE t SET v = 1 WHERE k = 1"))
        .await
        .expect("older holds shard 1's row");
    reg.execute(2, younger, write("UPDATE t SET v = 2 WHERE k = 1"))
        .await
        .expect("younger holds shard 2's row");
    let older_waits = tokio::spawn({
        let reg = reg.clone();
        async move {
            reg.execute(2, older, write("UPDATE t SET v = 1 WHERE k = 1"))
                .await
        }
    });
    while !reg.row_locks.waits_for(older) {
        tokio::task::yield_now().await;
    }
    let e = reg
        .execute(1, younger, write("UPDATE t SET v = 2 WHERE k = 1"))
        .await
        .expect_err("the younger transaction gives way");
    assert_eq!(e.sqlstate(), "40P01", "{e:?}");
    for shard in [1, 2] {
        reg.finish_txn(shard, younger, false)
            .await
            .expect("rollback");
    }
    older_waits
        .await
        .expect("join")
        .expect("the older one goes on");
    for shard in [1, 2] {
        reg.finish_txn(shard, older, true).await.expect("commit");
        assert_eq!(read(&reg, shard, "SELECT v FROM t").await, [1]);
    }
    assert!(reg.holders.is_empty() && !reg.row_locks.holds(older));
}

/// A savepoint rolled back forgets the changes made after it; a statement SQLite's session
/// extension cannot record (a schema change) makes the transaction hold its SQLite
/// transaction, with its changes and savepoints so far replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savepoints_and_a_switch_to_holding_keep_the_transactions_changes() {
    let dir = tempfile::tempdir().expect("tmp");
    let reg = open_in(dir.path());
    with_table(&reg, 1).await;
    for sql in [
        "INSERT INTO t VALUES (1, 1)",
        "SAVEPOINT \"a\"",
        "INSERT INTO t VALUES (2, 2)",
        "ROLLBACK TO \"a\"",
        "INSERT INTO t VALUES (3, 3)",
        "SAVEPOINT \"b\"",
        "CREATE TABLE u (x INTEGER)",
        "INSERT INTO t VALUES (4, 4)",
        "ROLLBACK TO \"b\"",
        "INSERT INTO t VALUES (5, 5)",
    ] {
        reg.execute(1, 30, write(sql)).await.expect(sql);
    }
    assert_eq!(
        read_in(&reg, 1, 30, "SELECT k FROM t ORDER BY k").await,
        [1, 3, 5]
    );
    reg.finish_txn(1, 30, true).await.expect("commit");
    assert_eq!(read(&reg, 1, "SELECT k FROM t ORDER BY k").await, [1, 3, 5]);
    let tables = read(
        &reg,
        1,
        "SELECT count(*) FROM sqlite_schema WHERE name = 'u'",
    )
    .await;
    assert_eq!(tables, [0], "the schema change was rolled back to b");
}

/// A transaction's rows on one shard stay locked until its commit there ran, even when its
/// commit on another shard of the node ended first: released together, a writer of the first
/// shard's row read it before that commit applied and lost its update (pgbench's branch
/// balance drifted from its accounts').
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_stay_locked_until_their_own_shard_commits() {
    let dir = tempfile::tempdir().expect("tmp");
    let reg = one_row_on_two_shards(dir.path()).await;
    for shard in [1, 2] {
        reg.execute(shard, 40, write("UPDATE t SET v = v + 1 WHERE k = 1"))
            .await
            .expect("update");
    }
    reg.finish_txn(2, 40, true)
        .await
        .expect("commit on shard 2");
    let next = tokio::spawn({
        let reg = reg.clone();
        async move {
            reg.execute(1, 41, write("UPDATE t SET v = v + 1 WHERE k = 1"))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!next.is_finished(), "shard 1's row is still locked");
    reg.finish_txn(1, 40, true)
        .await
        .expect("commit on shard 1");
    next.await.expect("join").expect("then it goes on");
    reg.finish_txn(1, 41, true).await.expect("commit");
    assert_eq!(read(&reg, 1, "SELECT v FROM t").await, [2]);
}
