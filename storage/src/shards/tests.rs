//! The shard registry's tests: lock cycles, recreated shards, idle and prepared transactions.

use super::*;
use tessera_shared::proto::ShardKind;

/// The registry of a node whose data is in `dir`, with default settings.
mod rows;

pub(super) fn open_in(dir: &Path) -> ShardRegistry {
    ShardRegistry::open(StorageConfig {
        data_dir: dir.to_path_buf(),
        ..StorageConfig::default()
    })
    .expect("open")
}

/// Creates shard `shard` with table `t (k INTEGER PRIMARY KEY, v INTEGER)`.
pub(super) async fn with_table(reg: &ShardRegistry, shard: u64) {
    with_schema(
        reg,
        shard,
        "CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER)",
    )
    .await;
}

/// Creates shard `shard` with the table `schema` declares.
pub(super) async fn with_schema(reg: &ShardRegistry, shard: u64, schema: &str) {
    reg.create_shard(shard, ShardKind::Sql, vec![schema.into()])
        .await
        .expect("shard");
}

pub(super) fn write(sql: &str) -> Vec<Statement> {
    vec![Statement {
        sql: sql.into(),
        params: vec![],
        returns_rows: false,
        lock: None,
    }]
}

/// A shard dropped and created again (repair re-copying onto a node that held a stale copy)
/// must not be touched by connections of the old copy. SQLite deletes a database's WAL by
/// name when its last connection closes; a connection of the old copy closing after the
/// new copy opened deleted the new copy's WAL, and the shard then failed with "disk I/O
/// error" (seen in CI after a storage node restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_shard_is_not_touched_by_the_old_copys_connections() {
    let dir = tempfile::tempdir().expect("tmp");
    let reg = open_in(dir.path());
    let schema = || vec!["CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER)".to_string()];
    reg.create_shard(1, ShardKind::Sql, schema())
        .await
        .expect("shard");
    reg.execute(1, 0, write("INSERT INTO t VALUES (1, 1)"))
        .await
        .expect("write");
    // A transaction of the old copy is open when the shard is dropped.
    reg.execute(1, 77, write("INSERT INTO t VALUES (2, 2)"))
        .await
        .expect("txn write");
    reg.drop_shard(1).await.expect("drop");
    assert_eq!(
        open_files_named(dir.path(), "shard-1.db"),
        0,
        "a connection of the dropped copy is still open"
    );
    reg.create_shard(1, ShardKind::Sql, schema())
        .await
        .expect("again");
    for k in 10..20 {
        reg.execute(1, 0, write(&format!("INSERT INTO t VALUES ({k}, 0)")))
            .await
            .expect("write to the new copy");
    }
    // The old transaction ends (its connection closes) after the new copy has a WAL.
    let _ = reg.finish_txn(1, 77, false).await;
    for txn in 100..105 {
        reg.execute(1, txn, write(&format!("INSERT INTO t VALUES ({txn}, 1)")))
            .await
            .expect("a new connection writes");
        reg.finish_txn(1, txn, true).await.expect("commit");
    }
    let rows = reg
        .execute(
            1,
            0,
            vec![Statement {
                sql: "SELECT count(*) FROM t".into(),
                params: vec![],
                returns_rows: true,
                lock: None,
            }],
        )
        .await
        .expect("read");
    assert_eq!(
        tessera_shared::Value::from(rows[0].rows[0].values[0].clone()),
        tessera_shared::Value::Integer(15),
        "{rows:?}"
    );
    drop(reg);
    // Reopened from disk, the new copy has every committed row and nothing of the old one.
    let reg = open_in(dir.path());
    let rows = reg
        .execute(
            1,
            0,
            vec![Statement {
                sql: "SELECT count(*), sum(k = 1) FROM t".into(),
                params: vec![],
                returns_rows: true,
                lock: None,
            }],
        )
        .await
        .expect("read after reopen");
    assert_eq!(
        tessera_shared::Value::from(rows[0].rows[0].values[0].clone()),
        tessera_shared::Value::Integer(15),
        "{rows:?}"
    );
}

/// A statement's own transaction, opened with a short idle limit, is rolled back after it
/// (its coordinator died); once prepared it keeps the client-transaction limit, so a
/// coordinator that decided to commit finds it open when it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_transactions_outlive_the_short_idle_limit() {
    let dir = tempfile::tempdir().expect("tmp");
    let reg = ShardRegistry::open(StorageConfig {
        data_dir: dir.path().to_path_buf(),
        deadlock_timeout_ms: 50,
        ..StorageConfig::default()
    })
    .expect("open");
    with_schema(&reg, 1, "CREATE TABLE t (k INTEGER PRIMARY KEY)").await;
    // Long enough that the second writer's 50 ms wait for the older holder ends first, also on
    // a loaded machine (with 100 ms, parallel tests let the idle rollback win the race).
    let short = Some(Duration::from_millis(600));
    reg.execute_idle(1, 10, write("INSERT INTO t VALUES (1)"), short)
        .await
        .expect("abandoned");
    reg.execute_idle(1, 11, write("INSERT INTO t VALUES (1)"), short)
        .await
        .expect_err("the abandoned transaction holds the row");
    reg.finish_txn(1, 11, false).await.expect("rollback");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let e = reg.finish_txn(1, 10, true).await.expect_err("rolled back");
    assert_eq!(e.sqlstate(), "25P02");
    reg.execute_idle(1, 12, write("INSERT INTO t VALUES (3)"), short)
        .await
        .expect("the lock is free again");
    reg.prepare_txn(1, 12).await.expect("prepare");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    reg.finish_txn(1, 12, true)
        .await
        .expect("a prepared transaction is still there");
    let rows = reg
        .execute(
            1,
            0,
            vec![Statement {
                sql: "SELECT k FROM t".into(),
                params: vec![],
                returns_rows: true,
                lock: None,
            }],
        )
        .await
        .expect("read");
    assert_eq!(rows[0].rows.len(), 1, "{rows:?}");
}

/// How many of this process's open files are `dir/<name>*`.
fn open_files_named(dir: &Path, name: &str) -> usize {
    let prefix = dir.join(name);
    std::fs::read_dir("/proc/self/fd")
        .expect("fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.to_string_lossy().starts_with(&*prefix.to_string_lossy()))
        .count()
}

#[test]
fn waited_time_grows_with_attempts() {
    assert_eq!(crate::locks::waited_ms(0), 0);
    assert_eq!(crate::locks::waited_ms(5), 1);
    assert_eq!(crate::locks::waited_ms(55), 51);
}

pub(super) async fn read(reg: &ShardRegistry, shard: u64, sql: &str) -> Vec<i64> {
    read_in(reg, shard, 0, sql).await
}

/// A copy whose process stops between its prepare and its commit keeps the transaction's row
/// changes: reopened, the transaction is in doubt (its shard refuses writes, reads go on)
/// until COMMIT applies exactly what was prepared (a savepoint's undone writes excluded) or
/// ROLLBACK forgets it; one that committed before the stop is neither applied again nor
/// left in doubt. Without the prepared log the reopened shards simply lacked the rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_transactions_survive_a_restart_in_doubt() {
    let dir = tempfile::tempdir().expect("tmp");
    let reg = open_in(dir.path());
    for shard in [1, 2] {
        with_table(&reg, shard).await;
    }
    reg.execute(1, 0, write("INSERT INTO t VALUES (1, 0), (2, 0)"))
        .await
        .expect("rows before");
    // Transaction 101 prepares and commits before the stop; 102 prepares and rolls back.
    reg.execute(1, 101, write("INSERT INTO t VALUES (11, 101)"))
        .await
        .expect("101");
    reg.prepare_txn(1, 101).await.expect("prepare 101");
    reg.finish_txn(1, 101, true).await.expect("commit 101");
    reg.execute(2, 102, write("INSERT INTO t VALUES (21, 102)"))
        .await
        .expect("102");
    reg.prepare_txn(2, 102).await.expect("prepare 102");
    reg.finish_txn(2, 102, false).await.expect("roll back 102");
    // Transaction 100 on both shards, with a savepoint rolled back on shard 1, prepared.
    for sql in [
        "UPDATE t SET v = 100 WHERE k = 1",
        "SAVEPOINT \"s\"",
        "INSERT INTO t VALUES (50, 0)",
        "ROLLBACK TO \"s\"",
        "DELETE FROM t WHERE k = 2",
        "INSERT INTO t VALUES (10, 100)",
    ] {
        reg.execute(1, 100, write(sql)).await.expect(sql);
    }
    reg.execute(2, 100, write("INSERT INTO t VALUES (20, 100)"))
        .await
        .expect("shard 2");
    for shard in [1, 2] {
        reg.prepare_txn(shard, 100).await.expect("prepare");
    }
    // A record left behind by a stop between 101's commit and its forget.
    reg.prepared
        .put(101, 1, vec![])
        .expect("a left-behind record");
    reg.close();
    drop(reg);

    let reg = open_in(dir.path());
    assert_eq!(
        read(&reg, 1, "SELECT k FROM t ORDER BY k").await,
        [1, 2, 11]
    );
    let e = reg
        .execute(1, 0, write("INSERT INTO t VALUES (99, 0)"))
        .await
        .expect_err("a shard with a transaction in doubt takes no writes");
    assert_eq!(e.sqlstate(), "40001", "{e}");
    let e = reg
        .execute(2, 7, write("INSERT INTO t VALUES (99, 0)"))
        .await
        .expect_err("nor in a transaction");
    assert_eq!(e.sqlstate(), "40001", "{e}");
    reg.finish_txn(2, 7, false).await.expect("end 7");
    reg.finish_txn(1, 100, true).await.expect("commit in doubt");
    reg.finish_txn(2, 100, false)
        .await
        .expect("roll back in doubt");
    assert_eq!(
        read(&reg, 1, "SELECT k * 1000 + v FROM t ORDER BY k").await,
        [1100, 10100, 11101]
    );
    assert!(read(&reg, 2, "SELECT k FROM t").await.is_empty());
    reg.execute(1, 0, write("INSERT INTO t VALUES (99, 0)"))
        .await
        .expect("writes again once decided");
    reg.close();
    drop(reg);
    // Nothing stays in doubt after the decisions.
    let reg = open_in(dir.path());
    reg.execute(2, 0, write("INSERT INTO t VALUES (99, 0)"))
        .await
        .expect("no transaction in doubt");
}

/// A commit applied to its shard without an fsync there is durable through its mark in the
/// prepared log: a stop that lost the shard's copy of it (as a power cut may) finds the record
/// marked and applies it at the next start, once, without waiting for a coordinator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marked_commit_its_shard_lost_is_applied_at_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let reg = open_in(dir.path());
    with_table(&reg, 1).await;
    reg.execute(1, 200, write("INSERT INTO t VALUES (5, 200)"))
        .await
        .expect("200");
    reg.prepare_txn(1, 200).await.expect("prepare 200");
    reg.close();
    drop(reg);
    // The stop came after the mark reached the log and before the shard's WAL was synced,
    // which lost the shard's commit.
    Connection::open(dir.path().join("prepared.db"))
        .expect("log")
        .execute("UPDATE prepared SET committed = 1 WHERE txn = 200", [])
        .expect("mark");
    for _ in 0..2 {
        let reg = open_in(dir.path());
        assert_eq!(read(&reg, 1, "SELECT k * 1000 + v FROM t").await, [5200]);
        reg.execute(1, 0, write("INSERT INTO t VALUES (6, 0)"))
            .await
            .expect("not in doubt");
        reg.execute(1, 0, write("DELETE FROM t WHERE k = 6"))
            .await
            .expect("delete");
        reg.close();
    }
}

/// A dropped shard's records leave the prepared log on disk before `drop_shard` returns: a
/// copy created again under the same id must not find an old commit marked there (it would be
/// applied over the new copy's rows at the next start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_shards_records_are_forgotten_on_disk() {
    let dir = tempfile::tempdir().expect("tmp");
    let reg = open_in(dir.path());
    with_table(&reg, 1).await;
    reg.execute(1, 400, write("INSERT INTO t VALUES (4, 400)"))
        .await
        .expect("400");
    reg.prepare_txn(1, 400).await.expect("prepare");
    reg.finish_txn(1, 400, true).await.expect("commit");
    reg.drop_shard(1).await.expect("drop");
    let on_disk: i64 = Connection::open(dir.path().join("prepared.db"))
        .expect("log")
        .query_row("SELECT count(*) FROM prepared WHERE shard = 1", [], |r| {
            r.get(0)
        })
        .expect("count");
    assert_eq!(on_disk, 0);
}

/// A prepared transaction that holds its SQLite transaction (a schema change made it hold)
/// commits too: it cannot take the unsynced path of the others (SQLite refuses to change the
/// sync level inside a transaction, which failed such commits after other shards committed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_transaction_that_holds_commits() {
    let dir = tempfile::tempdir().expect("tmp");
    let reg = open_in(dir.path());
    with_table(&reg, 1).await;
    for sql in [
        "INSERT INTO t VALUES (1, 1)",
        "CREATE TABLE u (x INTEGER)",
        "INSERT INTO u VALUES (7)",
    ] {
        reg.execute(1, 300, write(sql)).await.expect(sql);
    }
    reg.prepare_txn(1, 300).await.expect("prepare");
    reg.finish_txn(1, 300, true).await.expect("commit");
    assert_eq!(read(&reg, 1, "SELECT k FROM t").await, [1]);
    assert_eq!(read(&reg, 1, "SELECT x FROM u").await, [7]);
}

/// Threads of this process whose name is `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == name)
        .count()
}

/// Transactions one after another reuse one connection and thread, and none inherits the
/// last one's state: its savepoint (which would pin the next one's snapshot, breaking READ
/// COMMITTED) or its recorded row changes (which would be prepared again with the next one's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_start_each_transaction_afresh() {
    let dir = tempfile::tempdir().expect("tmp");
    let reg = open_in(dir.path());
    // A shard id no other test uses: threads are counted process-wide.
    const SHARD: u64 = 4242;
    with_schema(&reg, SHARD, "CREATE TABLE t (k INTEGER PRIMARY KEY)").await;
    for txn in 1..=10 {
        reg.execute(SHARD, txn, write("SAVEPOINT \"s\""))
            .await
            .expect("savepoint");
        reg.execute(SHARD, txn, write(&format!("INSERT INTO t VALUES ({txn})")))
            .await
            .expect("insert");
        reg.finish_txn(SHARD, txn, true).await.expect("commit");
    }
    assert_eq!(
        threads_named(&format!("txn-{SHARD}")),
        1,
        "one pooled connection serves them all"
    );
    // READ COMMITTED: the next transaction on the pooled connection sees a later commit.
    assert_eq!(
        read_in(&reg, SHARD, 11, "SELECT count(*) FROM t").await,
        [10]
    );
    reg.execute(SHARD, 0, write("INSERT INTO t VALUES (100)"))
        .await
        .expect("another's write");
    assert_eq!(
        read_in(&reg, SHARD, 11, "SELECT count(*) FROM t").await,
        [11]
    );
    // Its prepare records its own changes only: after a restart, COMMIT applies them alone.
    reg.execute(SHARD, 11, write("INSERT INTO t VALUES (200)"))
        .await
        .expect("insert");
    reg.prepare_txn(SHARD, 11).await.expect("prepare");
    reg.close();
    drop(reg);
    let reg = open_in(dir.path());
    reg.finish_txn(SHARD, 11, true)
        .await
        .expect("commit in doubt");
    assert_eq!(read(&reg, SHARD, "SELECT count(*) FROM t").await, [12]);
}

/// The first column of `sql`'s rows on `shard`, as integers, in `txn` (0: autocommit).
pub(super) async fn read_in(reg: &ShardRegistry, shard: u64, txn: u64, sql: &str) -> Vec<i64> {
    let st = Statement {
        sql: sql.into(),
        params: vec![],
        returns_rows: true,
        lock: None,
    };
    reg.execute(shard, txn, vec![st])
        .await
        .expect("read")
        .remove(0)
        .rows
        .into_iter()
        .map(|r| match tessera_shared::Value::from(r.values[0].clone()) {
            tessera_shared::Value::Integer(i) => i,
            v => panic!("not an integer: {v:?}"),
        })
        .collect()
}
