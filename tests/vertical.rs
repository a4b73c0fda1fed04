//! Vertical and mixed partitioning (`WITH (column_groups = ...)`): each column group is a
//! table of its own on its own shards and nodes; reads touch only the groups they need and
//! stitch the others by primary key; writes change every group in one transaction.

mod common;

use common::{sqlstate, Cluster};
use std::collections::HashMap;

const CREATE: &str = "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, email text, \
     last_login timestamptz, visits int NOT NULL DEFAULT 0) \
     WITH (column_groups = 'profile(name, email) | activity(last_login, visits)', shards = 2)";

/// Rows per table per node, as the storage nodes report them (`SHOW tessera.shards` reads
/// each shard's counts from the node holding it), and the nodes of each table's shards.
async fn placement(
    c: &tokio_postgres::Client,
) -> (HashMap<String, i64>, HashMap<String, Vec<String>>) {
    let mut rows = HashMap::new();
    let mut nodes: HashMap<String, Vec<String>> = HashMap::new();
    for r in c.query("SHOW tessera.shards", &[]).await.expect("shards") {
        let tables: String = r.get(5);
        let node: String = r.get(4);
        for t in tables.split(", ").filter(|t| !t.is_empty()) {
            *rows.entry(t.to_string()).or_insert(0) += r.get::<_, Option<i64>>(6).unwrap_or(0);
            nodes.entry(t.to_string()).or_default().push(node.clone());
        }
    }
    (rows, nodes)
}

async fn plan(c: &tokio_postgres::Client, sql: &str) -> String {
    c.query(&format!("EXPLAIN {sql}"), &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_live_on_their_own_nodes_and_reads_touch_only_what_they_need() {
    use futures_util::SinkExt;
    let cluster = Cluster::start(3, 4);
    let c = cluster.client().await;
    c.batch_execute(CREATE).await.expect("create");
    for i in 1..=60i64 {
        c.execute(
            "INSERT INTO users (id, name, email, visits) VALUES ($1, $2, $3, $4)",
            &[
                &i,
                &format!("user {i}"),
                &(i % 3 != 0).then(|| format!("u{i}@x")),
                &((i % 7) as i32),
            ],
        )
        .await
        .expect("insert");
    }
    // COPY goes through the same split.
    let sink = c
        .copy_in("COPY users (id, name, visits) FROM STDIN")
        .await
        .expect("copy");
    futures_util::pin_mut!(sink);
    let mut data = String::new();
    for i in 61..=80 {
        data.push_str(&format!("{i}\tuser {i}\t{}\n", i % 7));
    }
    sink.send(bytes::Bytes::from(data)).await.expect("data");
    assert_eq!(sink.finish().await.expect("finish"), 20);
    // Each group's rows are on its own shards, as the nodes report: every row in both groups,
    // and no group's shard on the node its twin of the other group is on.
    let (rows, nodes) = placement(&c).await;
    assert_eq!(rows.get("users$profile"), Some(&80), "{rows:?}");
    assert_eq!(rows.get("users$activity"), Some(&80), "{rows:?}");
    assert!(
        !rows.contains_key("users"),
        "the table itself holds nothing: {rows:?}"
    );
    let (p, a) = (&nodes["users$profile"], &nodes["users$activity"]);
    assert_eq!(p.len(), 2);
    assert!(
        p.iter().zip(a).all(|(x, y)| x != y),
        "profile {p:?}, activity {a:?}"
    );
    // One group: only its table is read.
    let one = plan(&c, "SELECT name, email FROM users WHERE id = 7").await;
    // (The first line names every group.)
    let route = one.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert!(
        route.contains("users$profile") && !route.contains("users$activity"),
        "{one}"
    );
    assert!(one.contains("Read: single shard"), "{one}");
    // Several: both, stitched by the key, each pruned to one shard by it.
    let all = plan(&c, "SELECT * FROM users WHERE id = 7").await;
    assert!(
        all.contains("users$profile") && all.contains("users$activity"),
        "{all}"
    );
    assert!(all.contains("stitched by id"), "{all}");
    assert_eq!(all.matches("Gather").count(), 2, "{all}");
    assert!(
        !all.contains("shards 1, ") && !all.contains(", 2@"),
        "each group pruned to one shard: {all}"
    );
    // Full rows come back exactly.
    let r = c
        .query_one("SELECT * FROM users WHERE id = 7", &[])
        .await
        .expect("row");
    assert_eq!(r.get::<_, i64>(0), 7);
    assert_eq!(r.get::<_, String>(1), "user 7");
    assert_eq!(r.get::<_, Option<String>>(2).as_deref(), Some("u7@x"));
    assert_eq!(r.get::<_, i32>(4), 0);
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM users WHERE visits = 3 AND email IS NULL",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    let want = (1..=80)
        .filter(|i| i % 7 == 3 && (i % 3 == 0 || *i > 60))
        .count() as i64;
    assert_eq!(n, want);
    // Writes: by key, and by another group's column (a key lookup first).
    assert_eq!(
        c.execute("UPDATE users SET visits = visits + 10 WHERE id = 7", &[])
            .await
            .expect("update"),
        1
    );
    assert_eq!(
        c.execute("UPDATE users SET visits = 99 WHERE name = 'user 8'", &[])
            .await
            .expect("update"),
        1
    );
    assert_eq!(
        c.execute("DELETE FROM users WHERE email IS NULL", &[])
            .await
            .expect("delete"),
        40
    );
    let left: Vec<(i64, i32)> = c
        .query(
            "SELECT id, visits FROM users WHERE id IN (7, 8, 9) ORDER BY id",
            &[],
        )
        .await
        .expect("read")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(left, vec![(7, 10), (8, 99)]);
    let (rows, _) = placement(&c).await;
    assert_eq!(
        (rows["users$profile"], rows["users$activity"]),
        (40, 40),
        "{rows:?}"
    );
    // COPY out reconstructs rows too; an index goes to its group's table.
    c.batch_execute("CREATE INDEX users_visits ON users (visits)")
        .await
        .expect("index");
    let tables = c.query("SHOW tessera.tables", &[]).await.expect("tables");
    let by_name: HashMap<String, (String, String)> = tables
        .iter()
        .map(|r| (r.get(0), (r.get::<_, String>(7), r.get::<_, String>(8))))
        .collect();
    assert_eq!(by_name["users$activity"].0, "users_visits (visits)");
    assert!(by_name["users"]
        .1
        .contains("activity(last_login, visits) in users$activity"));
    c.batch_execute("TRUNCATE users").await.expect("truncate");
    let (rows, _) = placement(&c).await;
    assert_eq!((rows["users$profile"], rows["users$activity"]), (0, 0));
    c.batch_execute("DROP TABLE users").await.expect("drop");
    assert!(c
        .query("SHOW tessera.tables", &[])
        .await
        .expect("tables")
        .is_empty());
}

/// A write whose second group fails (a NOT NULL column of that group) leaves nothing in the
/// first: the groups' statements are one transaction. Inside an explicit transaction the
/// failure aborts it, as in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_between_groups_leaves_no_half_row() {
    let cluster = Cluster::start(2, 2);
    let c = cluster.client().await;
    c.batch_execute(CREATE).await.expect("create");
    c.batch_execute("INSERT INTO users (id, name) VALUES (1, 'kept')")
        .await
        .expect("insert");
    // profile accepts the row, activity refuses it (visits NOT NULL).
    let e = c
        .batch_execute("INSERT INTO users (id, name, visits) VALUES (2, 'half', NULL)")
        .await
        .expect_err("not null");
    assert_eq!(sqlstate(&e), "23502");
    let (rows, _) = placement(&c).await;
    assert_eq!(
        (rows["users$profile"], rows["users$activity"]),
        (1, 1),
        "{rows:?}"
    );
    c.batch_execute("BEGIN").await.expect("begin");
    c.batch_execute("INSERT INTO users (id, name) VALUES (3, 'in txn')")
        .await
        .expect("insert");
    let e = c
        .batch_execute("INSERT INTO users (id, name, visits) VALUES (4, 'half', NULL)")
        .await
        .expect_err("not null");
    assert_eq!(sqlstate(&e), "23502");
    assert_eq!(
        sqlstate(&c.batch_execute("SELECT 1").await.expect_err("aborted")),
        "25P02"
    );
    c.batch_execute("ROLLBACK").await.expect("rollback");
    let (rows, _) = placement(&c).await;
    assert_eq!(
        (rows["users$profile"], rows["users$activity"]),
        (1, 1),
        "{rows:?}"
    );
    // What is refused is refused clearly.
    for (sql, state) in [
        ("CREATE TABLE v1 (id int PRIMARY KEY, a int, b int) WITH (column_groups = 'x(a)')", "22P02"),
        ("CREATE TABLE v2 (id int PRIMARY KEY, a int, b int) WITH (column_groups = 'x(a) | y(a, b)')", "22P02"),
        ("CREATE TABLE v3 (a int, b int) WITH (column_groups = 'x(a) | y(b)')", "0A000"),
        ("SELECT * FROM users u JOIN users v ON u.id = v.id", "0A000"),
        ("UPDATE users SET visits = length(name)", "0A000"),
        ("ALTER TABLE users ADD COLUMN z int", "0A000"),
        ("DROP TABLE \"users$profile\"", "0A000"),
    ] {
        let e = c.batch_execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), state, "{sql}: {e:?}");
    }
}

/// Mixed partitioning: column groups, each range-partitioned on the key; a key still routes
/// to one shard per group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_partitioning_routes_by_key_to_one_shard_per_group() {
    let cluster = Cluster::start(3, 4);
    let c = cluster.client().await;
    c.batch_execute(
        "CREATE TABLE events (id bigint PRIMARY KEY, kind text, body text, score int) \
         PARTITION BY RANGE (id) WITH (bounds = '100,200', column_groups = 'head(kind, score) | payload(body)')",
    )
    .await
    .expect("create");
    for i in (0..300i64).step_by(7) {
        c.execute(
            "INSERT INTO events VALUES ($1, $2, $3, $4)",
            &[
                &i,
                &format!("k{}", i % 3),
                &format!("body {i}"),
                &((i % 11) as i32),
            ],
        )
        .await
        .expect("insert");
    }
    let p = plan(&c, "SELECT * FROM events WHERE id = 147").await;
    assert_eq!(p.matches("Gather").count(), 2, "{p}");
    for line in p.lines().filter(|l| l.contains("Gather")) {
        assert!(!line.contains(','), "one shard per group: {line}");
    }
    let r = c
        .query_one("SELECT kind, body, score FROM events WHERE id = 147", &[])
        .await
        .expect("row");
    assert_eq!(
        (
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, i32>(2)
        ),
        ("k0".to_string(), "body 147".to_string(), 4)
    );
    let one = plan(&c, "SELECT kind FROM events WHERE id >= 200").await;
    assert!(
        one.contains("Read: single shard") && one.contains("events$head"),
        "{one}"
    );
    let sum: i64 = c
        .query_one(
            "SELECT sum(score) FROM events WHERE id < 100 AND body LIKE 'body%'",
            &[],
        )
        .await
        .expect("sum")
        .get(0);
    assert_eq!(sum, (0..100i64).step_by(7).map(|i| i % 11).sum::<i64>());
}

/// A document table's attributes in groups: each group's shards hold only its attributes,
/// a read of one attribute reads one group, and whole documents are rebuilt on read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_attributes_in_groups_rebuild_whole_documents() {
    let cluster = Cluster::start(3, 4);
    let c = cluster.client().await;
    c.batch_execute(
        "CREATE TABLE events (id bigint PRIMARY KEY, doc jsonb) \
         WITH (storage = 'document', column_groups = 'meta(user, status) | body(*)', shards = 2)",
    )
    .await
    .expect("create");
    let insert = c
        .prepare("INSERT INTO events VALUES ($1, $2)")
        .await
        .expect("prepare");
    for (id, doc) in [
        (
            1i64,
            serde_json::json!({"user": "ada", "status": "new", "tags": ["x"], "n": 1}),
        ),
        (
            2,
            serde_json::json!({"user": "bob", "status": "new", "geo": {"city": "Oslo"}}),
        ),
        (3, serde_json::json!({"user": "cy", "n": 3})),
    ] {
        c.execute(&insert, &[&id, &doc]).await.expect("insert");
    }
    let doc = |id: i64| {
        let c = &c;
        async move {
            c.query_one("SELECT doc::text FROM events WHERE id = $1", &[&id])
                .await
                .expect("doc")
                .get::<_, String>(0)
        }
    };
    assert_eq!(
        doc(1).await,
        r#"{"n": 1, "tags": ["x"], "user": "ada", "status": "new"}"#
    );
    // Each group's table holds only its attributes.
    let part: serde_json::Value = c
        .query_one("SELECT doc FROM \"events$meta\" WHERE id = 2", &[])
        .await
        .expect("meta part")
        .get(0);
    assert_eq!(part, serde_json::json!({"user": "bob", "status": "new"}));
    let part: serde_json::Value = c
        .query_one("SELECT doc FROM \"events$body\" WHERE id = 2", &[])
        .await
        .expect("body part")
        .get(0);
    assert_eq!(part, serde_json::json!({"geo": {"city": "Oslo"}}));
    // One attribute: one group.
    let p = plan(&c, "SELECT doc->>'user' FROM events WHERE id = 2").await;
    let route = p.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert!(
        route.contains("events$meta") && !route.contains("events$body"),
        "{p}"
    );
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM events WHERE doc->>'status' = 'new'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 2);
    // jsonb_set on one attribute changes its group only; a new document, every group.
    c.batch_execute("UPDATE events SET doc = jsonb_set(doc, '{status}', '\"done\"') WHERE id = 1")
        .await
        .expect("set status");
    c.batch_execute(
        "UPDATE events SET doc = jsonb_set(doc, '{tags}', '[\"z\"]') WHERE doc->>'user' = 'ada'",
    )
    .await
    .expect("set tags");
    assert_eq!(
        doc(1).await,
        r#"{"n": 1, "tags": ["z"], "user": "ada", "status": "done"}"#
    );
    c.batch_execute(r#"UPDATE events SET doc = '{"user": "cy", "n": 5}' WHERE id = 3"#)
        .await
        .expect("replace");
    assert_eq!(doc(3).await, r#"{"n": 5, "user": "cy"}"#);
    let e = c
        .batch_execute("INSERT INTO events VALUES (9, '[1, 2]')")
        .await
        .expect_err("not an object");
    assert_eq!(sqlstate(&e), "22P02");
    let (rows, _) = placement(&c).await;
    assert_eq!(
        (rows["events$meta"], rows["events$body"]),
        (3, 3),
        "{rows:?}"
    );
    c.batch_execute("DELETE FROM events WHERE doc->>'n' = '5'")
        .await
        .expect("delete");
    let (rows, _) = placement(&c).await;
    assert_eq!(
        (rows["events$meta"], rows["events$body"]),
        (2, 2),
        "{rows:?}"
    );
    let all: Vec<i64> = c
        .query("SELECT id FROM events ORDER BY id", &[])
        .await
        .expect("all")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(all, vec![1, 2]);
}
