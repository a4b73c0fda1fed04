//! The metadata Raft group: coordinators are its members, so the catalog survives the loss
//! of any one of them (its leader included), every coordinator serves the same schema, and
//! a crash of every process loses no acknowledged schema change.

mod common;

use common::{kill9, wait_until, Cluster};
use std::time::Duration;

/// `SHOW tessera.raft` rows as (member, state, leader).
async fn raft_rows(c: &tokio_postgres::Client) -> Vec<(i64, String, Option<i64>)> {
    c.query("SHOW tessera.raft", &[])
        .await
        .expect("SHOW tessera.raft")
        .iter()
        .map(|r| (r.get(1), r.get(3), r.get(4)))
        .collect()
}

async fn tables(c: &tokio_postgres::Client) -> Vec<String> {
    c.query(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
        &[],
    )
    .await
    .expect("tables")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_survives_the_loss_of_the_metadata_leader() {
    let cluster = Cluster::start_coordinators(2, 4, 3);
    let clients = [
        cluster.client_at(0).await,
        cluster.client_at(1).await,
        cluster.client_at(2).await,
    ];
    clients[1]
        .batch_execute(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, owner text);
             INSERT INTO accounts VALUES (1, 'ann'), (2, 'bob');",
        )
        .await
        .expect("schema through a coordinator");
    // A schema change is acknowledged once every live coordinator applied it: the others
    // serve it at once.
    for c in &clients {
        assert_eq!(tables(c).await, vec!["accounts"]);
        let n: i64 = c
            .query_one("SELECT count(*) FROM accounts", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 2);
    }
    let rows = raft_rows(&clients[0]).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    let leaders: Vec<i64> = rows
        .iter()
        .filter(|r| r.1 == "Leader")
        .map(|r| r.0)
        .collect();
    assert_eq!(leaders.len(), 1, "{rows:?}");
    let leader = leaders[0];
    assert!(rows.iter().all(|r| r.2 == Some(leader)), "{rows:?}");

    // The dead member's command line, to start it again later.
    let leader_pid = cluster.pid_of(&format!("coordinator-{leader}"));
    let argv = common::command_line(leader_pid);
    kill9(leader_pid);
    let survivors: Vec<usize> = (0..3).filter(|i| *i as i64 + 1 != leader).collect();
    // DDL through a survivor: the group elects a new leader and the change goes through.
    let c = &clients[survivors[0]];
    assert!(
        wait_until(15, || async {
            c.batch_execute(
                "CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY, account bigint)",
            )
            .await
            .is_ok()
        })
        .await,
        "DDL after the metadata leader died"
    );
    c.batch_execute("INSERT INTO orders VALUES (10, 1)")
        .await
        .expect("write to the new table");
    for &i in &survivors {
        assert_eq!(
            tables(&clients[i]).await,
            vec!["accounts", "orders"],
            "coordinator {i}"
        );
        let n: i64 = clients[i]
            .query_one("SELECT count(*) FROM orders", &[])
            .await
            .expect("read")
            .get(0);
        assert_eq!(n, 1);
    }
    let rows = raft_rows(c).await;
    let new_leader = rows.iter().find(|r| r.1 == "Leader").map(|r| r.0);
    assert!(
        new_leader.is_some() && new_leader != Some(leader),
        "a new leader: {rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r.0 == leader && r.1.starts_with("unreachable")),
        "the dead member shows as unreachable: {rows:?}"
    );
    // The dead member comes back: it catches up before it serves, and then has the change
    // made while it was down.
    let (mut restarted, addr) = common::restart(&argv, None);
    let (back, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            addr.rsplit(':').next().expect("port")
        ),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect to the restarted member");
    tokio::spawn(conn);
    assert_eq!(tables(&back).await, vec!["accounts", "orders"]);
    let rows = raft_rows(&back).await;
    assert!(
        rows.iter().all(|r| !r.1.starts_with("unreachable")),
        "every member answers again: {rows:?}"
    );
    let _ = restarted.kill();
    let _ = restarted.wait();
    // libpq's multi-host strings skip the dead coordinator.
    let hosts = ["127.0.0.1"; 3].join(",");
    let mut ports: Vec<String> = cluster.ports.iter().map(|p| p.to_string()).collect();
    ports.rotate_left(leader as usize - 1);
    let (mh, conn) = tokio_postgres::connect(
        &format!(
            "host={hosts} port={} user=postgres dbname=postgres connect_timeout=2",
            ports.join(",")
        ),
        tokio_postgres::NoTls,
    )
    .await
    .expect("multi-host connect");
    tokio::spawn(conn);
    let n: i64 = mh
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .expect("multi-host read")
        .get(0);
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_survive_kill_9_of_every_process() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start_coordinators_in(tmp.path(), 2, 2, 3);
    let c = cluster.client_at(2).await;
    for i in 0..20 {
        c.batch_execute(&format!(
            "CREATE TABLE t{i} (id bigint PRIMARY KEY, v text); INSERT INTO t{i} VALUES ({i}, 'x')"
        ))
        .await
        .expect("ddl");
    }
    c.batch_execute("DROP TABLE t7; ALTER TABLE t3 ADD COLUMN extra int")
        .await
        .expect("more ddl");
    for (_, pid) in cluster.pids.clone() {
        kill9(pid);
    }
    drop(cluster);
    let cluster = Cluster::start_coordinators_in(tmp.path(), 2, 2, 3);
    let mut expected: Vec<String> = (0..20)
        .filter(|i| *i != 7)
        .map(|i| format!("t{i}"))
        .collect();
    expected.sort();
    for i in 0..3 {
        let c = cluster.client_at(i).await;
        assert_eq!(
            tables(&c).await,
            expected,
            "coordinator {i} after the crash"
        );
        let n: i64 = c
            .query_one("SELECT count(*) FROM t19 WHERE v = 'x'", &[])
            .await
            .expect("data")
            .get(0);
        assert_eq!(n, 1);
        c.query_one("SELECT extra FROM t3", &[])
            .await
            .expect("the added column");
    }
    // And the group still takes changes.
    tokio::time::timeout(
        Duration::from_secs(20),
        cluster
            .client_at(1)
            .await
            .batch_execute("CREATE TABLE after_restart (id int PRIMARY KEY)"),
    )
    .await
    .expect("in time")
    .expect("ddl after restart");
}

/// `SHOW tessera.nodes` as (name, liveness).
async fn liveness(c: &tokio_postgres::Client) -> Vec<(String, String)> {
    c.query("SHOW tessera.nodes", &[])
        .await
        .expect("SHOW tessera.nodes")
        .iter()
        .map(|r| (r.get(1), r.get(4)))
        .collect()
}

/// The metadata leader notices a dead storage node: suspect after `--node-suspect-ms`, dead
/// after `--node-dead-ms`, recorded in the catalog so every coordinator says the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_storage_node_becomes_suspect_then_dead_everywhere() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start_args(
        tmp.path(),
        2,
        2,
        &[
            "--coordinators",
            "3",
            "--node-suspect-ms",
            "400",
            "--node-dead-ms",
            "1500",
        ],
        &[],
    );
    let clients = [
        cluster.client_at(0).await,
        cluster.client_at(1).await,
        cluster.client_at(2).await,
    ];
    for c in &clients {
        assert_eq!(
            liveness(c).await,
            vec![
                ("storage-1".to_string(), "alive".to_string()),
                ("storage-2".to_string(), "alive".to_string())
            ]
        );
    }
    kill9(cluster.pid_of("storage-2"));
    let c = &clients[0];
    assert!(
        wait_until(10, || async {
            liveness(c)
                .await
                .contains(&("storage-2".into(), "suspect".into()))
        })
        .await,
        "suspect: {:?}",
        liveness(c).await
    );
    assert!(
        wait_until(10, || async {
            liveness(c)
                .await
                .contains(&("storage-2".into(), "dead".into()))
        })
        .await,
        "dead: {:?}",
        liveness(c).await
    );
    for c in &clients {
        assert_eq!(
            liveness(c).await,
            vec![
                ("storage-1".to_string(), "alive".to_string()),
                ("storage-2".to_string(), "dead".to_string())
            ]
        );
    }
}
