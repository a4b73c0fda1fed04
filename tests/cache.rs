//! The result cache against real clusters: coherence across coordinators, cached reads equal
//! uncached ones under random interleavings, and the controls (session, table, EXPLAIN, admin).

mod common;

use common::{tessera, wait_until, Cluster};
use std::collections::HashMap;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Runs `sql` (simple protocol) and returns every row as text, NULL as "NULL".
async fn rows(c: &Client, sql: &str) -> Vec<Vec<String>> {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{sql}: {}",
                e.as_db_error().map(|d| d.message()).unwrap_or("")
            )
        })
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

async fn cache_stats(c: &Client) -> HashMap<String, i64> {
    rows(c, "SHOW tessera.cache_stats")
        .await
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().expect("number")))
        .collect()
}

/// Waits until coordinator `c` knows `table` (the shared catalog propagates within ms).
async fn wait_for_table(c: &Client, table: &str) {
    let sql = format!("SELECT count(*) FROM {table}");
    assert!(
        wait_until(10, || async { c.simple_query(&sql).await.is_ok() }).await,
        "{table} never appeared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_coordinator_is_seen_by_the_next_read_through_another() {
    let cluster = Cluster::start_coordinators(3, 4, 2);
    let a = cluster.client_at(0).await;
    let b = cluster.client_at(1).await;
    a.batch_execute(
        "CREATE TABLE counters (id bigint PRIMARY KEY, v bigint) PARTITION BY HASH (id);
         CREATE TABLE items (id bigint PRIMARY KEY, v bigint) PARTITION BY HASH (id);
         INSERT INTO counters VALUES (1, 0), (2, 0);",
    )
    .await
    .expect("schema");
    wait_for_table(&b, "items").await;
    let point = b
        .prepare("SELECT v FROM counters WHERE id = 1")
        .await
        .expect("prepare");
    let total = "SELECT count(*), coalesce(sum(v), 0) FROM items";
    let iterations = 2000i64;
    for i in 1..=iterations {
        // Warm B's cache with the value before the write...
        let before: i64 = b.query_one(&point, &[]).await.expect("read").get(0);
        assert_eq!(before, i - 1, "B read a stale point value before write {i}");
        let _ = b.query_one(&point, &[]).await.expect("read again");
        // ...then write through A; once A acknowledged it, B's next read must see it.
        a.execute("UPDATE counters SET v = $1 WHERE id = 1", &[&i])
            .await
            .expect("update");
        let after: i64 = b.query_one(&point, &[]).await.expect("read").get(0);
        assert_eq!(after, i, "B served a stale point value after write {i}");
        // A multi-shard aggregate, through both coordinators.
        if i % 5 == 0 {
            let _ = rows(&b, total).await;
            a.execute("INSERT INTO items VALUES ($1, $1)", &[&i])
                .await
                .expect("insert");
            let n = i / 5;
            let expect = vec![vec![n.to_string(), (5 * n * (n + 1) / 2).to_string()]];
            assert_eq!(
                rows(&b, total).await,
                expect,
                "B's aggregate after insert {i}"
            );
            assert_eq!(
                rows(&a, total).await,
                expect,
                "A's aggregate after insert {i}"
            );
        }
    }
    let stats = cache_stats(&b).await;
    assert!(
        stats["hits"] >= iterations,
        "the cache should have served the repeated reads: {stats:?}"
    );
    assert!(
        stats["stale"] >= iterations,
        "every write should have made B's entry stale: {stats:?}"
    );
}

/// xorshift64*: deterministic, seedable, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_equal_uncached_reads_under_random_interleavings() {
    let cluster = Cluster::start_coordinators(2, 3, 2);
    let mut cached = Vec::new();
    let mut uncached = Vec::new();
    for i in 0..2 {
        cached.push(cluster.client_at(i).await);
        let u = cluster.client_at(i).await;
        u.batch_execute("SET tessera.cache = off")
            .await
            .expect("off");
        uncached.push(u);
    }
    cached[0]
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, grp int, v bigint) PARTITION BY HASH (id);
             CREATE TABLE groups (grp int PRIMARY KEY, name text) WITH (distribution = 'reference');
             CREATE TABLE events (ts bigint PRIMARY KEY, what text)
               PARTITION BY RANGE (ts) WITH (bounds = '100,200');
             INSERT INTO groups VALUES (0, 'zero'), (1, 'one'), (2, 'two');",
        )
        .await
        .expect("schema");
    wait_for_table(&cached[1], "events").await;
    let queries = [
        "SELECT v FROM items WHERE id = 7",
        "SELECT count(*), sum(v), min(v), max(v) FROM items",
        "SELECT grp, count(*), sum(v) FROM items GROUP BY grp ORDER BY grp",
        "SELECT id, v FROM items ORDER BY v DESC, id LIMIT 5",
        "SELECT g.name, count(*) FROM items i JOIN groups g ON g.grp = i.grp GROUP BY g.name ORDER BY 1",
        "SELECT name FROM groups ORDER BY grp",
        "SELECT count(*), max(ts) FROM events WHERE ts >= 100",
        "SELECT * FROM items WHERE id IN (1, 2, 3) ORDER BY id",
        "SELECT * FROM items ORDER BY id LIMIT 3",
    ];
    let mut rng = Rng(0x5EED_CAFE_F00D_0001);
    let mut altered = false;
    for step in 0..1200 {
        let side = rng.below(2) as usize;
        match rng.below(10) {
            0..=3 => {
                let sql = match rng.below(7) {
                    0 => format!(
                        "INSERT INTO items VALUES ({0}, {1}, {2}) ON CONFLICT (id) DO UPDATE SET v = excluded.v",
                        rng.below(20),
                        rng.below(3),
                        rng.below(1000)
                    ),
                    1 => format!("UPDATE items SET v = v + 1 WHERE id = {}", rng.below(20)),
                    2 => format!("DELETE FROM items WHERE id = {}", rng.below(20)),
                    3 => format!("UPDATE groups SET name = 'g{}' WHERE grp = {}", rng.below(50), rng.below(3)),
                    4 => format!(
                        "INSERT INTO events VALUES ({}, 'e') ON CONFLICT (ts) DO NOTHING",
                        rng.below(300)
                    ),
                    5 => format!("DELETE FROM events WHERE ts < {}", rng.below(300)),
                    _ => format!(
                        "BEGIN; UPDATE items SET v = 0 WHERE id = {}; UPDATE items SET v = 1 WHERE id = {}; COMMIT",
                        rng.below(20),
                        rng.below(20)
                    ),
                };
                if std::env::var("CACHE_TEST_TRACE").is_ok() {
                    eprintln!("step {step} side {side}: {sql}");
                }
                cached[side].batch_execute(&sql).await.expect("write");
            }
            _ => {
                let q = queries[rng.below(queries.len() as u64) as usize];
                let got = rows(&cached[side], q).await;
                let want = rows(&uncached[rng.below(2) as usize], q).await;
                assert_eq!(got, want, "step {step}: {q} through coordinator {side}");
            }
        }
        if step == 600 && !altered {
            // A definition change is seen by cached `SELECT *` through both coordinators.
            cached[0]
                .batch_execute("ALTER TABLE items ADD COLUMN note text DEFAULT 'n'")
                .await
                .expect("alter");
            altered = true;
            for c in &cached {
                assert!(
                    wait_until(10, || async {
                        rows(c, "SELECT * FROM items ORDER BY id LIMIT 3")
                            .await
                            .first()
                            .is_none_or(|r| r.len() == 4)
                    })
                    .await,
                    "a cached SELECT * kept the old columns"
                );
            }
        }
    }
    let stats = cache_stats(&cached[0]).await;
    assert!(stats["hits"] > 0 && stats["stale"] > 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_controls_explain_and_admin() {
    let cluster = Cluster::start(2, 4);
    let c = cluster.client().await;
    c.batch_execute(
        "CREATE TABLE t (id bigint PRIMARY KEY, v text) PARTITION BY HASH (id);
         CREATE TABLE secret (id bigint PRIMARY KEY, v text) WITH (cache = off);
         INSERT INTO t VALUES (1, 'a'), (2, 'b');
         INSERT INTO secret VALUES (1, 's');",
    )
    .await
    .expect("schema");
    let explain = |sql: &str| {
        let c = &c;
        let sql = format!("EXPLAIN {sql}");
        async move { rows(c, &sql).await.concat().join("\n") }
    };
    let q = "SELECT count(*) FROM t";
    assert!(explain(q).await.contains("Result cache: miss"));
    // A result is stored on its key's second miss (the first only records the key).
    rows(&c, q).await;
    assert!(explain(q).await.contains("Result cache: miss"));
    rows(&c, q).await;
    let e = explain(q).await;
    assert!(e.contains("Result cache: hit"), "{e}");
    c.batch_execute("INSERT INTO t VALUES (3, 'c')")
        .await
        .expect("insert");
    let e = explain(q).await;
    assert!(e.contains("miss (stale"), "{e}");
    assert_eq!(rows(&c, q).await, vec![vec!["3".to_string()]]);

    // Opt-outs: volatile functions, a table, a session, a transaction block.
    let e = explain("SELECT now(), count(*) FROM t").await;
    assert!(
        e.contains("not cacheable: now() is not deterministic"),
        "{e}"
    );
    let e = explain("SELECT * FROM secret").await;
    assert!(e.contains("table secret has cache = off"), "{e}");
    c.batch_execute("ALTER TABLE t SET (cache = off)")
        .await
        .expect("alter");
    let e = explain(q).await;
    assert!(e.contains("table t has cache = off"), "{e}");
    c.batch_execute("ALTER TABLE t RESET (cache)")
        .await
        .expect("reset");
    rows(&c, q).await;
    assert!(explain(q).await.contains("hit"));
    c.batch_execute("SET tessera.cache = off")
        .await
        .expect("set");
    assert!(explain(q).await.contains("Result cache: off"));
    c.batch_execute("RESET tessera.cache; BEGIN")
        .await
        .expect("begin");
    assert!(explain(q)
        .await
        .contains("not used inside a transaction block"));
    c.batch_execute("COMMIT").await.expect("commit");

    // The admin CLI reads the counters and clears the cache.
    rows(&c, q).await;
    let admin = |args: &[&str]| {
        let out = std::process::Command::new(tessera())
            .args([
                "admin",
                "--port",
                &cluster.port.to_string(),
                "--format",
                "json",
            ])
            .args(args)
            .output()
            .expect("admin");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    };
    let stats = admin(&["cache", "stats"]);
    let parsed: Vec<HashMap<String, String>> = serde_json::from_str(&stats).expect("json");
    let get = |m: &str| -> i64 {
        parsed
            .iter()
            .find(|r| r["metric"] == m)
            .map(|r| r["value"].parse().expect("n"))
            .unwrap_or_else(|| panic!("no {m} in {stats}"))
    };
    assert!(
        get("hits") >= 1 && get("entries") >= 1 && get("bytes") > 0,
        "{stats}"
    );
    admin(&["cache", "clear"]);
    assert!(explain(q).await.contains("Result cache: miss"));
    assert_eq!(cache_stats(&c).await["entries"], 0);
}
