//! Document tables (`WITH (storage = 'document')`): rows in each storage node's fjall store,
//! queried with PostgreSQL's JSON operators through real clusters; path indexes that never
//! disagree with their documents; acknowledged documents surviving kill -9 of their node,
//! with and without replicas.

mod common;

use common::{kill9, sqlstate, Cluster};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CREATE: &str =
    "CREATE TABLE events (id bigint PRIMARY KEY, doc jsonb NOT NULL) WITH (storage = 'document')";

/// Inserts document `id` until its fate is known (acknowledged, or a duplicate because an
/// earlier attempt committed after all).
async fn insert_until_known(c: &tokio_postgres::Client, id: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let doc = json!({"user": format!("u{}", id % 7), "n": id, "tags": ["a", id.to_string()]});
    loop {
        match c
            .execute("INSERT INTO events (id, doc) VALUES ($1, $2)", &[&id, &doc])
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

/// A writer on its own connection inserting documents `0..n`, each until its fate is known;
/// the counter says how many are done.
fn load_in_background(
    cluster: &Cluster,
    n: i64,
) -> (tokio::task::JoinHandle<()>, Arc<AtomicUsize>) {
    let progress = Arc::new(AtomicUsize::new(0));
    let conn = cluster.conn_str();
    let done = progress.clone();
    let writer = tokio::spawn(async move {
        let (c, h) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(h);
        for id in 0..n {
            insert_until_known(&c, id).await;
            done.fetch_add(1, Ordering::Relaxed);
        }
    });
    (writer, progress)
}

async fn ids(c: &tokio_postgres::Client, sql: &str) -> Vec<i64> {
    c.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The path index answers exactly what a scan of every document answers (`#>> '{user}'` is
/// not rewritten to the index, `->> 'user'` is).
async fn index_agrees(c: &tokio_postgres::Client, users: usize) {
    for u in 0..users {
        let by_index = ids(
            c,
            &format!("SELECT id FROM events WHERE doc->>'user' = 'u{u}' ORDER BY id"),
        )
        .await;
        let by_scan = ids(
            c,
            &format!("SELECT id FROM events WHERE doc #>> '{{user}}' = 'u{u}' ORDER BY id"),
        )
        .await;
        assert_eq!(by_index, by_scan, "index and documents disagree on u{u}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_round_trip_in_binary_and_text_and_live_in_fjall() {
    let cluster = Cluster::start(2, 4);
    let c = cluster.client().await;
    c.batch_execute(CREATE).await.expect("create");
    c.batch_execute("CREATE INDEX events_user ON events ((doc->>'user'))")
        .await
        .expect("index");
    let doc = json!({"user": "ada", "geo": {"city": "Paris"}, "n": 1.5, "ok": true});
    // Binary jsonb in and out (tokio-postgres sends and reads the version byte).
    let insert = c
        .prepare("INSERT INTO events VALUES ($1, $2)")
        .await
        .expect("prepare");
    for id in 1..=50i64 {
        let mut d = doc.clone();
        d["user"] = json!(format!("u{}", id % 5));
        c.execute(&insert, &[&id, &d]).await.expect("insert");
    }
    let got: serde_json::Value = c
        .query_one("SELECT doc FROM events WHERE id = $1", &[&7i64])
        .await
        .expect("get")
        .get(0);
    assert_eq!(got["user"], "u2");
    assert_eq!(got["geo"]["city"], "Paris");
    // Text: PostgreSQL's canonical jsonb form.
    let text = c
        .simple_query("SELECT doc FROM events WHERE id = 5")
        .await
        .expect("text");
    let row = text
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
            _ => None,
        })
        .flatten();
    assert_eq!(
        row.as_deref(),
        Some(r#"{"n": 1.5, "ok": true, "geo": {"city": "Paris"}, "user": "u0"}"#)
    );
    // Filters, projections and updates of one path run on the storage nodes.
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM events WHERE doc @> '{\"geo\": {\"city\": \"Paris\"}}' AND doc->>'user' = 'u3'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 10);
    let changed = c
        .execute(
            "UPDATE events SET doc = jsonb_set(doc, '{geo,city}', $1) WHERE doc->>'user' = 'u4'",
            &[&json!("Oslo")],
        )
        .await
        .expect("update");
    assert_eq!(changed, 10);
    let oslo = ids(
        &c,
        "SELECT id FROM events WHERE doc #>> '{geo,city}' = 'Oslo' ORDER BY id",
    )
    .await;
    assert_eq!(oslo, (1..=50).filter(|i| i % 5 == 4).collect::<Vec<i64>>());
    // EXPLAIN names the storage and the index the shards scan.
    let plan: Vec<String> = c
        .query(
            "EXPLAIN SELECT id FROM events WHERE doc->>'user' = 'u1'",
            &[],
        )
        .await
        .expect("explain")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("WHERE __ix0 = 'u1'"), "{plan}");
    assert!(
        plan.contains("Path index events_user (doc ->> 'user')"),
        "{plan}"
    );
    assert!(plan.contains("Storage of events: document"), "{plan}");
    // The shards' SQLite files hold only the declaration; the rows are in fjall.
    let mut declared = 0;
    let mut docs_dirs = 0;
    for node in ["storage-1", "storage-2"] {
        let dir = cluster.dir.join(node);
        if dir.join("documents").is_dir() {
            docs_dirs += 1;
        }
        for f in std::fs::read_dir(&dir).expect("node dir") {
            let p = f.expect("entry").path();
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if !(name.starts_with("shard-") && name.ends_with(".db")) {
                continue;
            }
            let db = rusqlite::Connection::open_with_flags(
                &p,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .expect("open shard");
            let sql: Option<String> = db
                .query_row(
                    "SELECT sql FROM sqlite_schema WHERE name = 'events'",
                    [],
                    |r| r.get(0),
                )
                .ok();
            if let Some(sql) = sql {
                assert!(sql.starts_with("CREATE VIRTUAL TABLE"), "{sql}");
                declared += 1;
            }
        }
    }
    assert_eq!((declared, docs_dirs), (4, 2));
    // The admin views: the table's storage and index, and the documents of every shard.
    let tables = c.query("SHOW tessera.tables", &[]).await.expect("tables");
    let events = tables
        .iter()
        .find(|r| r.get::<_, String>(0) == "events")
        .expect("events");
    assert_eq!(events.get::<_, String>(6), "document");
    assert_eq!(events.get::<_, String>(7), "events_user (doc ->> 'user')");
    let shards = c.query("SHOW tessera.shards", &[]).await.expect("shards");
    let total: i64 = shards
        .iter()
        .filter(|r| r.get::<_, String>(5).contains("events"))
        .map(|r| r.get::<_, Option<i64>>(6).unwrap_or(0))
        .sum();
    assert_eq!(total, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_index_never_disagrees_with_documents_under_concurrent_updates() {
    let cluster = Cluster::start_embedded(2, 4);
    let c = cluster.client().await;
    c.batch_execute(CREATE).await.expect("create");
    for id in 0..200i64 {
        insert_until_known(&c, id).await;
    }
    c.batch_execute("CREATE INDEX events_user ON events ((doc->>'user'))")
        .await
        .expect("index");
    index_agrees(&c, 7).await;
    for round in 0..3 {
        let workers: Vec<_> = (0..4i64)
            .map(|w| {
                let conn = cluster.conn_str();
                tokio::spawn(async move {
                    let (c, h) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                        .await
                        .expect("connect");
                    tokio::spawn(h);
                    for k in 0..60i64 {
                        let id = (w * 53 + k * 17 + round * 7) % 200;
                        let user = json!(format!("u{}", (id + k + w) % 7));
                        let r = match k % 10 {
                            // A delete and a re-insert in one transaction.
                            9 => {
                                c.batch_execute("BEGIN").await.expect("begin");
                                let d = c.execute("DELETE FROM events WHERE id = $1", &[&id]).await;
                                let i = c
                                    .execute(
                                        "INSERT INTO events VALUES ($1, jsonb_build_object('user', 'u0'))",
                                        &[&id],
                                    )
                                    .await;
                                match (d, i) {
                                    (Ok(_), Ok(_)) => c.batch_execute("COMMIT").await,
                                    (Err(e), _) | (_, Err(e)) => {
                                        let _ = c.batch_execute("ROLLBACK").await;
                                        Err(e)
                                    }
                                }
                            }
                            _ => c
                                .execute(
                                    "UPDATE events SET doc = jsonb_set(doc, '{user}', $2) WHERE id = $1",
                                    &[&id, &user],
                                )
                                .await
                                .map(|_| ()),
                        };
                        if let Err(e) = r {
                            // Lock conflicts between writers are retried by clients; anything
                            // else is a failure.
                            assert_eq!(sqlstate(&e), "40001", "{e:?}");
                        }
                        // Index reads during the writes see only documents that match.
                        let rows = c
                            .query(
                                "SELECT doc->>'user' FROM events WHERE doc->>'user' = $1",
                                &[&format!("u{}", k % 7)],
                            )
                            .await
                            .expect("index read");
                        for r in rows {
                            assert_eq!(r.get::<_, String>(0), format!("u{}", k % 7));
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.expect("worker");
        }
        index_agrees(&c, 7).await;
        let n: i64 = c
            .query_one("SELECT count(*) FROM events", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 200, "deletes and re-inserts keep every id");
    }
}

/// kill -9 of the storage node holding half the documents while a writer loads them, then a
/// restart: every acknowledged document is there exactly once, and the path index (written
/// in the same fjall batch) agrees with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_documents_survive_kill_9_of_their_node() {
    let cluster = Cluster::start(2, 4);
    let c = cluster.client().await;
    c.batch_execute(CREATE).await.expect("create");
    c.batch_execute("CREATE INDEX events_user ON events ((doc->>'user'))")
        .await
        .expect("index");
    let (writer, progress) = load_in_background(&cluster, 400);
    while progress.load(Ordering::Relaxed) < 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid = cluster.pid_of("storage-1");
    let argv = common::command_line(pid);
    let addr = c
        .query("SHOW tessera.nodes", &[])
        .await
        .expect("nodes")
        .iter()
        .find(|r| r.get::<_, String>(1) == "storage-1")
        .map(|r| r.get::<_, String>(2))
        .expect("storage-1");
    kill9(pid);
    let before = progress.load(Ordering::Relaxed);
    let (mut restarted, _) = common::restart(&argv, Some(&addr));
    writer.await.expect("writer");
    assert!(progress.load(Ordering::Relaxed) > before);
    let rows = ids(&c, "SELECT id FROM events ORDER BY id").await;
    assert_eq!(
        rows,
        (0..400).collect::<Vec<i64>>(),
        "every acknowledged document, once"
    );
    index_agrees(&c, 7).await;
    let _ = restarted.kill();
    let _ = restarted.wait();
}

/// A three-copy document table on four nodes: one node killed mid-load; nothing acknowledged
/// is lost, and repair restores three agreeing copies (fjall rows included) elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_documents_survive_a_node_and_are_repaired() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start_args(
        tmp.path(),
        4,
        4,
        &["--node-suspect-ms", "300", "--node-dead-ms", "1200"],
        &[],
    );
    let c = cluster.client().await;
    c.batch_execute("CREATE TABLE events (id bigint PRIMARY KEY, doc jsonb NOT NULL) WITH (storage = 'document', replicas = 3)")
        .await
        .expect("create");
    let (writer, progress) = load_in_background(&cluster, 300);
    while progress.load(Ordering::Relaxed) < 60 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    kill9(cluster.pid_of("storage-2"));
    writer.await.expect("writer");
    let rows = ids(&c, "SELECT id FROM events ORDER BY id").await;
    assert_eq!(rows, (0..300).collect::<Vec<i64>>());
    let repaired = common::wait_until(40, || async {
        let Ok(check) = c.query("SHOW tessera.replica_check", &[]).await else {
            return false;
        };
        let docs: i64 = check.iter().map(|r| r.get::<_, i64>(2)).sum();
        docs == 3 * 300
            && check.iter().all(|r| r.get::<_, bool>(4))
            && check.iter().all(|r| r.get::<_, String>(1) != "storage-2")
    })
    .await;
    assert!(
        repaired,
        "three agreeing copies of every document shard again"
    );
}

/// psql against a document table: DDL, INSERT, `\copy` of documents in CSV, reads, an update
/// of one path and a delete, as a user at a terminal would do them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_crud_and_copy_on_a_document_table() {
    if std::process::Command::new("psql")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("no psql here: the tokio-postgres tests cover the protocol");
        return;
    }
    let cluster = Cluster::start(2, 4);
    let port = cluster.port.to_string();
    let dir = tempfile::tempdir().expect("tmp");
    let csv = dir.path().join("docs.csv");
    let mut data = String::new();
    for i in 1..=40 {
        data.push_str(&format!(
            "{i},\"{{\"\"user\"\": \"\"u{}\"\", \"\"n\"\": {i}}}\"\n",
            i % 4
        ));
    }
    std::fs::write(&csv, data).expect("csv");
    let run = |commands: &[&str]| -> String {
        let mut cmd = std::process::Command::new("psql");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
        ]);
        for c in commands {
            cmd.args(["-c", c]);
        }
        let out = cmd.output().expect("psql");
        assert!(
            out.status.success(),
            "psql {commands:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let copy = format!("\\copy docs FROM '{}' WITH (FORMAT csv)", csv.display());
    let out = run(&[
        "CREATE TABLE docs (id bigint PRIMARY KEY, doc jsonb NOT NULL) WITH (storage = 'document')",
        "INSERT INTO docs VALUES (100, '{\"user\": \"psql\", \"n\": 0}')",
        &copy,
        "SELECT count(*), count(*) FILTER (WHERE doc->>'user' = 'u1') FROM docs",
        "UPDATE docs SET doc = jsonb_set(doc, '{n}', '-1') WHERE doc->>'user' = 'psql'",
        "SELECT doc FROM docs WHERE id = 100",
        "DELETE FROM docs WHERE (doc->>'n')::int > 30",
        "SELECT count(*) FROM docs",
    ]);
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    assert!(lines.contains(&"COPY 40"), "{out}");
    assert!(lines.contains(&"41|10"), "{out}");
    assert!(lines.contains(&"{\"n\": -1, \"user\": \"psql\"}"), "{out}");
    assert_eq!(lines.last(), Some(&"31"), "{out}");
}
