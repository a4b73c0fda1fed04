//! Row locks under concurrency, on real clusters: a job queue taken with `FOR UPDATE SKIP
//! LOCKED` hands every job to exactly one worker, and clients writing distinct rows never fail
//! each other (before row locks, a transaction held its shard's whole write lock and 85 % of
//! such writes failed `40001`).

mod common;

use common::Cluster;
use std::collections::BTreeMap;
use tokio_postgres::Client;

const JOBS: i64 = 120;
const WORKERS: i64 = 8;

/// Takes one job in its own transaction; `Ok(None)` when none was free.
async fn take_one(c: &Client, worker: i64) -> Result<Option<i64>, tokio_postgres::Error> {
    c.batch_execute("BEGIN").await?;
    let taken = async {
        let row = c
            .query_opt(
                "SELECT id FROM jobs WHERE NOT done ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                &[],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let id: i64 = row.get(0);
        let n = c
            .execute(
                "UPDATE jobs SET done = true, taken_by = $1, takes = takes + 1 WHERE id = $2",
                &[&worker, &id],
            )
            .await?;
        assert_eq!(n, 1, "job {id} vanished under its lock");
        Ok(Some(id))
    }
    .await;
    match taken {
        Ok(id) => {
            c.batch_execute("COMMIT").await?;
            Ok(id)
        }
        Err(e) => {
            let _ = c.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

async fn work(c: Client, worker: i64) -> Vec<i64> {
    let mut mine = Vec::new();
    let mut idle = 0;
    loop {
        match take_one(&c, worker).await {
            Ok(Some(id)) => {
                mine.push(id);
                idle = 0;
            }
            Ok(None) => {
                let left: i64 = c
                    .query_one("SELECT count(*) FROM jobs WHERE NOT done", &[])
                    .await
                    .expect("count")
                    .get(0);
                if left == 0 {
                    return mine;
                }
                // Jobs left, all locked by other workers at the moment.
                idle += 1;
                assert!(
                    idle < 10_000,
                    "worker {worker} never found one of {left} jobs"
                );
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("worker {worker}: {e:?}"),
        }
    }
}

async fn job_queue(cluster: &Cluster) {
    let c = cluster.client().await;
    c.batch_execute(
        "CREATE TABLE jobs (id bigint PRIMARY KEY, done boolean NOT NULL, taken_by bigint, takes bigint NOT NULL)",
    )
    .await
    .expect("create");
    let values: Vec<String> = (1..=JOBS)
        .map(|i| format!("({i}, false, NULL, 0)"))
        .collect();
    c.batch_execute(&format!("INSERT INTO jobs VALUES {}", values.join(", ")))
        .await
        .expect("jobs");
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let c = cluster.client().await;
        workers.push(tokio::spawn(work(c, w)));
    }
    let mut taker: BTreeMap<i64, i64> = BTreeMap::new();
    for (w, h) in workers.into_iter().enumerate() {
        for id in h.await.expect("worker") {
            if let Some(other) = taker.insert(id, w as i64) {
                panic!("job {id} taken by workers {other} and {w}");
            }
        }
    }
    assert_eq!(taker.len() as i64, JOBS, "every job taken once");
    let stored: BTreeMap<i64, (i64, i64)> = c
        .query("SELECT id, taken_by, takes FROM jobs WHERE done", &[])
        .await
        .expect("read")
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let expected: BTreeMap<i64, (i64, i64)> = taker.iter().map(|(id, w)| (*id, (*w, 1))).collect();
    assert_eq!(stored, expected, "job → (worker, times taken)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_queue_hands_out_each_job_once() {
    let cluster = Cluster::start(2, 4);
    job_queue(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_queue_on_three_copies_hands_out_each_job_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start_args(dir.path(), 3, 4, &["--replicas", "3"], &[]);
    job_queue(&cluster).await;
}

/// Eight clients insert, update and delete rows of their own, in autocommit and in
/// transactions, on shards they share: none may fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_of_distinct_rows_never_fail_each_other() {
    let cluster = Cluster::start(2, 2);
    let c = cluster.client().await;
    c.batch_execute("CREATE TABLE kv (k bigint PRIMARY KEY, v bigint NOT NULL)")
        .await
        .expect("create");
    let mut clients = Vec::new();
    for w in 0..8i64 {
        let c = cluster.client().await;
        clients.push(tokio::spawn(async move {
            let base = w * 1_000;
            for i in 0..40i64 {
                let k = base + i;
                c.execute("INSERT INTO kv (k, v) VALUES ($1, 0)", &[&k])
                    .await
                    .unwrap_or_else(|e| panic!("insert {k}: {e:?}"));
                c.execute("UPDATE kv SET v = v + 1 WHERE k = $1", &[&k])
                    .await
                    .unwrap_or_else(|e| panic!("update {k}: {e:?}"));
                // A transaction over two of its own rows, on either shard.
                c.batch_execute(&format!(
                    "BEGIN; UPDATE kv SET v = v + 1 WHERE k = {k}; UPDATE kv SET v = v + 10 WHERE k = {base}; COMMIT"
                ))
                .await
                .unwrap_or_else(|e| panic!("transaction {k}: {e:?}"));
                if i % 4 == 3 {
                    c.execute("DELETE FROM kv WHERE k = $1", &[&k])
                        .await
                        .unwrap_or_else(|e| panic!("delete {k}: {e:?}"));
                }
            }
        }));
    }
    for h in clients {
        h.await.expect("client");
    }
    let rows = c
        .query("SELECT k, v FROM kv ORDER BY k", &[])
        .await
        .expect("read");
    assert_eq!(rows.len(), 8 * 30, "rows left after the deletes");
    for r in rows {
        let (k, v): (i64, i64) = (r.get(0), r.get(1));
        let expected = if k % 1_000 == 0 { 2 + 40 * 10 } else { 2 };
        assert_eq!(v, expected, "row {k}");
    }
}
