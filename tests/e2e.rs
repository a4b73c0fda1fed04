//! End-to-end tests against a real `tessera local` cluster: tokio-postgres (simple and extended
//! protocol), psql, the admin CLI, errors with their SQLSTATE, transactions and node failure.

mod common;

use common::{kill9, sqlstate, wait_until, Cluster};
use tokio_postgres::SimpleQueryMessage;

fn rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

async fn query_rows(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    rows(
        &c.simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}")),
    )
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

const USERS: &str = "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, email text, age int) PARTITION BY HASH (id)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_walkthrough_over_simple_protocol() {
    let cluster = Cluster::start(3, 6);
    let c = cluster.client().await;
    c.simple_query(USERS).await.expect("create");
    let r = query_rows(
        &c,
        "INSERT INTO users VALUES (1,'Ada','ada@example.com',36),(2,'Linus',NULL,54) RETURNING id",
    )
    .await;
    let mut ids: Vec<_> = r.into_iter().map(|r| r[0].clone()).collect();
    ids.sort();
    assert_eq!(ids, vec![s("1"), s("2")]);
    assert_eq!(
        query_rows(&c, "SELECT * FROM users WHERE id = 1").await,
        vec![vec![s("1"), s("Ada"), s("ada@example.com"), s("36")]]
    );
    assert_eq!(
        query_rows(&c, "SELECT count(*), avg(age), max(age) FROM users").await,
        vec![vec![s("2"), s("45"), s("54")]]
    );
    assert_eq!(
        query_rows(&c, "SELECT age, count(*) FROM users GROUP BY age HAVING count(*) > 0 ORDER BY age LIMIT 10").await,
        vec![vec![s("36"), s("1")], vec![s("54"), s("1")]]
    );
    let msgs = c
        .simple_query("UPDATE users SET age = age + 1 WHERE id = 2")
        .await
        .expect("update");
    assert!(matches!(
        msgs.last(),
        Some(SimpleQueryMessage::CommandComplete(1))
    ));
    let msgs = c
        .simple_query("DELETE FROM users WHERE age > 100")
        .await
        .expect("delete");
    assert!(matches!(
        msgs.last(),
        Some(SimpleQueryMessage::CommandComplete(0))
    ));
    let plan: Vec<String> = query_rows(&c, "EXPLAIN SELECT * FROM users WHERE id = 1")
        .await
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
    assert!(plan[0].contains("single shard"), "{plan:?}");
    assert!(plan.iter().any(|l| l.contains("on storage-")), "{plan:?}");
    let plan: Vec<String> = query_rows(&c, "EXPLAIN SELECT count(*) FROM users")
        .await
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
    assert!(plan[0].contains("6 shards"), "{plan:?}");
    assert!(plan[1].contains("combine partial aggregates"), "{plan:?}");
    assert_eq!(
        query_rows(&c, "SELECT age FROM users WHERE id = 2").await,
        vec![vec![s("55")]]
    );
    // Several statements in one query, and an empty query.
    let msgs = c
        .simple_query("SELECT 1; SELECT 'two'")
        .await
        .expect("multi");
    assert_eq!(rows(&msgs), vec![vec![s("1")], vec![s("two")]]);
    c.simple_query("").await.expect("empty query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_with_typed_parameters_and_results() {
    let cluster = Cluster::start(3, 4);
    let c = cluster.client().await;
    c.batch_execute("CREATE TABLE t (id bigint PRIMARY KEY, name text, score double precision, ok boolean, n int, data bytea) PARTITION BY HASH (id)")
        .await
        .expect("create");
    let ins = c
        .prepare("INSERT INTO t (id, name, score, ok, n, data) VALUES ($1, $2, $3, $4, $5, $6)")
        .await
        .expect("prepare insert");
    for i in 0..50i64 {
        let name = format!("n{i}");
        let n = (i % 7) as i32;
        let data = vec![i as u8, 0xff];
        c.execute(
            &ins,
            &[&i, &name, &(i as f64 / 2.0), &(i % 2 == 0), &n, &data],
        )
        .await
        .expect("insert");
    }
    let sel = c
        .prepare("SELECT id, name, score, ok, n, data FROM t WHERE id = $1")
        .await
        .expect("prepare select");
    let row = c.query_one(&sel, &[&7i64]).await.expect("select");
    assert_eq!(row.get::<_, i64>(0), 7);
    assert_eq!(row.get::<_, String>(1), "n7");
    assert_eq!(row.get::<_, f64>(2), 3.5);
    assert!(!row.get::<_, bool>(3));
    assert_eq!(row.get::<_, i32>(4), 0);
    assert_eq!(row.get::<_, Vec<u8>>(5), vec![7, 0xff]);
    let rows = c
        .query(
            "SELECT id FROM t WHERE n = $1 ORDER BY id DESC LIMIT $2",
            &[&3i32, &3i64],
        )
        .await
        .expect("scatter");
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![45, 38, 31]);
    let row = c
        .query_one("SELECT count(*), sum(n), min(name) FROM t WHERE ok", &[])
        .await
        .expect("agg");
    assert_eq!(row.get::<_, i64>(0), 25);
    assert_eq!(
        row.get::<_, i64>(1),
        (0..50).filter(|i| i % 2 == 0).map(|i| i % 7).sum::<i64>()
    );
    assert_eq!(row.get::<_, String>(2), "n0");
    let none = c
        .query_opt("SELECT name FROM t WHERE id = $1", &[&1000i64])
        .await
        .expect("missing");
    assert!(none.is_none());
    let row = c
        .query_one(
            "SELECT name FROM t WHERE id = $1 AND name = $2",
            &[&3i64, &"n3"],
        )
        .await
        .expect("text param");
    assert_eq!(row.get::<_, String>(0), "n3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_sqlstate_and_the_connection_stays_usable() {
    let cluster = Cluster::start(2, 4);
    let c = cluster.client().await;
    c.batch_execute(USERS).await.expect("create");
    c.batch_execute("INSERT INTO users VALUES (1, 'a', NULL, 1)")
        .await
        .expect("insert");
    let cases = [
        ("SELEC 1", "42601"),
        ("SELECT * FROM nope", "42P01"),
        ("SELECT nope FROM users", "42703"),
        ("INSERT INTO users VALUES (1, 'dup', NULL, 1)", "23505"),
        ("INSERT INTO users (id) VALUES (9)", "23502"),
        ("UPDATE users SET id = 3 WHERE id = 1", "0A000"),
        ("SELECT * FROM users WHERE name ~ '('", "2201B"),
        ("CREATE TABLE users (id int)", "42P07"),
        (
            "CREATE TABLE bad (id int PRIMARY KEY, k int UNIQUE) PARTITION BY HASH (id)",
            "0A000",
        ),
        ("SELECT 1::geometry", "42704"),
        ("INSERT INTO users VALUES ('x', 'a', NULL, 1)", "22P02"),
    ];
    for (sql, code) in cases {
        let e = c.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), code, "{sql}: {e}");
        assert_eq!(
            query_rows(&c, "SELECT 1").await,
            vec![vec![s("1")]],
            "connection unusable after {sql}"
        );
    }
    let e = c
        .prepare("SELECT * FROM nope WHERE id = $1")
        .await
        .expect_err("prepare");
    assert_eq!(sqlstate(&e), "42P01");
    assert_eq!(
        c.query_one("SELECT count(*) FROM users", &[])
            .await
            .expect("after")
            .get::<_, i64>(0),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_atomic_across_shards() {
    let cluster = Cluster::start(3, 6);
    let c = cluster.client().await;
    c.batch_execute(USERS).await.expect("create");
    // A multi-row insert spanning shards with a duplicate on one shard: nothing lands.
    c.batch_execute("INSERT INTO users VALUES (1, 'a', NULL, 1)")
        .await
        .expect("seed");
    let values: Vec<String> = (2..40)
        .map(|i| format!("({i}, 'u{i}', NULL, {i})"))
        .chain(std::iter::once("(1, 'dup', NULL, 0)".into()))
        .collect();
    let e = c
        .batch_execute(&format!("INSERT INTO users VALUES {}", values.join(", ")))
        .await
        .expect_err("duplicate");
    assert_eq!(sqlstate(&e), "23505");
    assert_eq!(
        query_rows(&c, "SELECT count(*) FROM users").await,
        vec![vec![s("1")]],
        "partial multi-shard insert is visible"
    );
    // Explicit transaction: rolled back, then committed.
    c.batch_execute("BEGIN").await.expect("begin");
    for i in 10..20 {
        c.batch_execute(&format!("INSERT INTO users VALUES ({i}, 'x', NULL, 1)"))
            .await
            .expect("insert in txn");
    }
    assert_eq!(
        query_rows(&c, "SELECT count(*) FROM users").await,
        vec![vec![s("11")]],
        "a transaction sees its own writes"
    );
    let other = cluster.client().await;
    assert_eq!(
        query_rows(&other, "SELECT count(*) FROM users").await,
        vec![vec![s("1")]],
        "uncommitted writes are invisible to others"
    );
    c.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!(
        query_rows(&c, "SELECT count(*) FROM users").await,
        vec![vec![s("1")]]
    );
    c.batch_execute("BEGIN; INSERT INTO users VALUES (20, 'y', NULL, 2); INSERT INTO users VALUES (21, 'z', NULL, 3); COMMIT").await.expect("commit");
    assert_eq!(
        query_rows(&other, "SELECT count(*) FROM users").await,
        vec![vec![s("3")]]
    );
    // A failed statement aborts the transaction until ROLLBACK.
    c.batch_execute("BEGIN").await.expect("begin");
    c.batch_execute("INSERT INTO users VALUES (30, 'w', NULL, 1)")
        .await
        .expect("insert");
    assert!(c.batch_execute("SELECT * FROM nope").await.is_err());
    let e = c.batch_execute("SELECT 1").await.expect_err("aborted");
    assert_eq!(sqlstate(&e), "25P02");
    c.batch_execute("COMMIT")
        .await
        .expect("commit of a failed transaction rolls back");
    assert_eq!(
        query_rows(&c, "SELECT count(*) FROM users WHERE id = 30").await,
        vec![vec![s("0")]]
    );
    // tokio-postgres transactions (extended protocol).
    let mut c2 = cluster.client().await;
    let tx = c2.transaction().await.expect("tx");
    tx.execute(
        "INSERT INTO users VALUES ($1, $2, NULL, 1)",
        &[&40i64, &"p"],
    )
    .await
    .expect("insert");
    tx.execute("UPDATE users SET age = 99 WHERE id = $1", &[&1i64])
        .await
        .expect("update");
    tx.commit().await.expect("commit");
    assert_eq!(
        query_rows(&c, "SELECT age FROM users WHERE id = 1").await,
        vec![vec![s("99")]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_storage_node_gives_a_clean_error_and_other_shards_answer() {
    let cluster = Cluster::start(3, 6);
    let c = cluster.client().await;
    c.batch_execute(USERS).await.expect("create");
    let values: Vec<String> = (1..=60)
        .map(|i| format!("({i}, 'u{i}', NULL, {i})"))
        .collect();
    c.batch_execute(&format!("INSERT INTO users VALUES {}", values.join(", ")))
        .await
        .expect("insert");
    kill9(cluster.pid_of("storage-2"));
    // The node is gone: a scatter query fails cleanly with 08006.
    let failed = wait_until(10, || async {
        c.simple_query("SELECT count(*) FROM users")
            .await
            .err()
            .map(|e| sqlstate(&e))
            == Some("08006".into())
    })
    .await;
    assert!(
        failed,
        "scatter query over a dead node did not fail with 08006"
    );
    // Point queries on shards of live nodes still answer; those on the dead node fail with 08006.
    let (mut ok, mut down) = (0, 0);
    for i in 1..=60 {
        match c
            .query_opt("SELECT name FROM users WHERE id = $1", &[&(i as i64)])
            .await
        {
            Ok(Some(r)) => {
                assert_eq!(r.get::<_, String>(0), format!("u{i}"));
                ok += 1;
            }
            Ok(None) => panic!("row {i} vanished"),
            Err(e) => {
                assert_eq!(sqlstate(&e), "08006", "{e}");
                down += 1;
            }
        }
    }
    assert!(ok > 0 && down > 0, "ok={ok} down={down}");
    assert_eq!(query_rows(&c, "SELECT 1").await, vec![vec![s("1")]]);
    // The admin view reports the node down.
    let nodes = query_rows(&c, "SHOW tessera.nodes").await;
    let status: Vec<(String, String)> = nodes
        .iter()
        .map(|r| {
            (
                r[1].clone().unwrap_or_default(),
                r[3].clone().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        status.contains(&("storage-2".into(), "down".into())),
        "{status:?}"
    );
    assert!(
        status.contains(&("storage-1".into(), "up".into())),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_restart_and_a_kill() {
    let cluster = Cluster::start(3, 4);
    let c = cluster.client().await;
    c.batch_execute(USERS).await.expect("create");
    c.batch_execute("CREATE INDEX ON users (age)")
        .await
        .expect("index");
    let values: Vec<String> = (1..=30)
        .map(|i| format!("({i}, 'u{i}', NULL, {i})"))
        .collect();
    c.batch_execute(&format!("INSERT INTO users VALUES {}", values.join(", ")))
        .await
        .expect("insert");
    // Every acknowledged single-row write, then kill -9 every storage node.
    for i in 31..=60 {
        c.execute(
            "INSERT INTO users VALUES ($1, 'k', NULL, 0)",
            &[&(i as i64)],
        )
        .await
        .expect("ack");
    }
    for n in ["storage-1", "storage-2", "storage-3"] {
        kill9(cluster.pid_of(n));
    }
    drop(c);
    let dir = cluster.dir.clone();
    let tmp_keepalive = cluster;
    let dir_copy = tempfile::tempdir().expect("tmp");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&dir)
        .arg(dir_copy.path())
        .status()
        .expect("cp");
    assert!(status.success());
    drop(tmp_keepalive);
    let copied = dir_copy.path().join(dir.file_name().expect("name"));
    let cluster = Cluster::start_in(&copied, 3, 4);
    let c = cluster.client().await;
    assert_eq!(
        query_rows(&c, "SELECT count(*), sum(id) FROM users").await,
        vec![vec![s("60"), s(&(1..=60).sum::<i32>().to_string())]]
    );
    assert_eq!(
        query_rows(&c, "SELECT name FROM users WHERE id = 45").await,
        vec![vec![s("k")]]
    );
    let tables = query_rows(&c, "SHOW tessera.tables").await;
    assert_eq!(tables[0][0], s("users"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_admin_cli_work() {
    let cluster = Cluster::start(3, 4);
    let port = cluster.port.to_string();
    let has_psql = std::process::Command::new("psql")
        .arg("--version")
        .output()
        .is_ok();
    if has_psql {
        let out = std::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-X", "-c", USERS, "-c", "INSERT INTO users VALUES (1,'Ada','ada@example.com',36),(2,'Linus',NULL,54) RETURNING id", "-c", "SELECT name, age FROM users ORDER BY id"])
            .output()
            .expect("psql");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "psql failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("INSERT 0 2"), "{stdout}");
        assert!(stdout.contains(" Linus |  54"), "{stdout}");
        // psql's \copy: COPY FROM STDIN / TO STDOUT over the simple protocol.
        let dir = tempfile::tempdir().expect("tmp");
        let csv = dir.path().join("in.csv");
        std::fs::write(&csv, "10,Grace,,85\n11,\"Hopper, G.\",g@navy.mil,\n").expect("csv");
        let out_file = dir.path().join("out.txt");
        let copy_in = format!("\\copy users FROM '{}' WITH (FORMAT csv)", csv.display());
        let copy_out = format!(
            "\\copy (SELECT id, name FROM users WHERE id >= 10 ORDER BY id) TO '{}'",
            out_file.display()
        );
        let out = std::process::Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-X",
                "-c",
                &copy_in,
                "-c",
                &copy_out,
            ])
            .output()
            .expect("psql copy");
        assert!(
            out.status.success(),
            "psql \\copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(&out_file).expect("out"),
            "10\tGrace\n11\tHopper, G.\n"
        );
    } else {
        let c = cluster.client().await;
        c.batch_execute(USERS).await.expect("create");
        c.batch_execute(
            "INSERT INTO users VALUES (1,'Ada','ada@example.com',36),(2,'Linus',NULL,54)",
        )
        .await
        .expect("insert");
    }
    let admin = |args: &[&str]| {
        let out = std::process::Command::new(common::tessera())
            .arg("admin")
            .args(["--port", &port])
            .args(args)
            .output()
            .expect("admin");
        assert!(
            out.status.success(),
            "admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let nodes: serde_json::Value =
        serde_json::from_str(&admin(&["nodes", "--format", "json"])).expect("json");
    let nodes = nodes.as_array().expect("array");
    assert_eq!(nodes.len(), 3);
    assert!(nodes.iter().all(|n| n["status"] == "up"), "{nodes:?}");
    let tables = admin(&["tables"]);
    assert!(
        tables.contains("users") && tables.contains("hash"),
        "{tables}"
    );
    let shards: serde_json::Value =
        serde_json::from_str(&admin(&["shards", "--format", "json"])).expect("json");
    let total: i64 = shards
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|s| s["rows"].as_str()?.parse::<i64>().ok())
        .sum();
    assert_eq!(
        total,
        if has_psql { 4 } else { 2 },
        "row counts read from the storage nodes: {shards}"
    );
    let plan = admin(&["explain", "SELECT * FROM users WHERE id = 2"]);
    assert!(plan.contains("single shard"), "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_transaction_is_rolled_back_and_releases_its_locks() {
    let cluster = Cluster::start(2, 2);
    let a = cluster.client().await;
    a.batch_execute(USERS).await.expect("create");
    a.batch_execute("BEGIN; INSERT INTO users VALUES (100, 'uncommitted', NULL, 1)")
        .await
        .expect("open txn");
    drop(a);
    let b = cluster.client().await;
    let written = wait_until(15, || async {
        b.batch_execute("INSERT INTO users VALUES (100, 'b', NULL, 2)")
            .await
            .is_ok()
    })
    .await;
    assert!(
        written,
        "the abandoned transaction kept its lock or its row"
    );
    assert_eq!(
        query_rows(&b, "SELECT name FROM users WHERE id = 100").await,
        vec![vec![s("b")]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_garbage_does_not_hurt_the_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = Cluster::start(1, 1);
    let payloads: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0, 0, 0, 8, 4, 210, 22, 47], // SSLRequest, then hang up
        vec![0, 0, 0, 4],                 // too-short startup
        vec![0xff; 64],
        vec![0, 0, 0, 200, 0, 3, 0, 0, b'u', b's', b'e', b'r', 0], // truncated startup
    ];
    for p in payloads {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", cluster.port))
            .await
            .expect("connect");
        let _ = s.write_all(&p).await;
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(std::time::Duration::from_millis(300), s.read(&mut buf)).await;
    }
    let c = cluster.client().await;
    assert_eq!(query_rows(&c, "SELECT 41 + 1").await, vec![vec![s("42")]]);
}

#[test]
fn sigterm_stops_the_whole_local_cluster() {
    let cluster = Cluster::start(3, 2);
    let pids: Vec<u32> = cluster.pids.iter().map(|(_, p)| *p).collect();
    assert_eq!(
        pids.len(),
        4,
        "coordinator and three storage nodes are printed: {:?}",
        cluster.pids
    );
    cluster.stop();
    for pid in pids {
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        assert!(!alive, "process {pid} outlived tessera local");
    }
}

/// Raw protocol: a client that sends Parse + Flush (no Sync) must get ParseComplete right away,
/// and a pipelined Parse/Bind/Execute/Sync gets its whole answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_without_sync_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = Cluster::start(1, 1);
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", cluster.port))
        .await
        .expect("connect");
    let msg = |ty: u8, payload: &[u8]| {
        let mut v = vec![ty];
        v.extend_from_slice(&((payload.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    };
    let mut startup = 196608u32.to_be_bytes().to_vec();
    startup.extend_from_slice(b"user\0postgres\0database\0postgres\0\0");
    let mut packet = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend(startup);
    s.write_all(&packet).await.expect("startup");
    async fn read_until(s: &mut tokio::net::TcpStream, want: u8) -> Vec<u8> {
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 4096];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            // Scan complete messages for the wanted type.
            let mut i = 0;
            while i + 5 <= seen.len() {
                let len = u32::from_be_bytes([seen[i + 1], seen[i + 2], seen[i + 3], seen[i + 4]])
                    as usize;
                if i + 1 + len > seen.len() {
                    break;
                }
                if seen[i] == want {
                    return seen;
                }
                i += 1 + len;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero(),
                "no message {:?} within 5 s; got {seen:?}",
                want as char
            );
            if let Ok(Ok(n)) = tokio::time::timeout(left, s.read(&mut buf)).await {
                assert!(n > 0, "server closed the connection");
                seen.extend_from_slice(&buf[..n]);
            }
        }
    }
    read_until(&mut s, b'Z').await;
    // Parse + Flush: ParseComplete ('1') must arrive without a Sync.
    let mut p = msg(b'P', b"\0SELECT 42\0\0\0");
    p.extend(msg(b'H', b""));
    s.write_all(&p).await.expect("parse+flush");
    read_until(&mut s, b'1').await;
    // Bind + Execute + Sync: DataRow, CommandComplete and ReadyForQuery.
    let mut b = msg(b'B', b"\0\0\0\0\0\0\0\0");
    b.extend(msg(b'E', b"\0\0\0\0\0"));
    b.extend(msg(b'S', b""));
    s.write_all(&b).await.expect("bind+execute+sync");
    let got = read_until(&mut s, b'Z').await;
    assert!(
        got.windows(2).any(|w| w == b"42"),
        "row 42 missing in {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_text_and_csv() {
    use futures_util::SinkExt;
    let cluster = Cluster::start(3, 4);
    let c = cluster.client().await;
    c.batch_execute("CREATE TABLE t (id bigint PRIMARY KEY, name text, score double precision) PARTITION BY HASH (id)").await.expect("create");
    // Text format, streamed in several chunks, 5000 rows across every shard.
    let sink = c.copy_in("COPY t FROM STDIN").await.expect("copy in");
    futures_util::pin_mut!(sink);
    let mut chunk = String::new();
    for i in 1..=5000 {
        chunk.push_str(&format!("{i}\tname {i}\t{}\n", i as f64 / 4.0));
        if i % 700 == 0 {
            sink.send(bytes::Bytes::from(std::mem::take(&mut chunk)))
                .await
                .expect("data");
        }
    }
    chunk.push_str("5001\t\\N\t\\N\n");
    sink.send(bytes::Bytes::from(chunk)).await.expect("data");
    assert_eq!(sink.finish().await.expect("finish"), 5001);
    assert_eq!(
        query_rows(&c, "SELECT count(*), sum(id), count(name) FROM t").await,
        vec![vec![s("5001"), s("12507501"), s("5000")]]
    );
    // A bad line fails the whole COPY, names the line, and leaves nothing behind.
    let sink = c
        .copy_in("COPY t (id, name) FROM STDIN WITH (FORMAT csv)")
        .await
        .expect("copy in");
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(
        b"6001,ok\n6002,\"quoted, with comma\"\nnot-a-number,x\n",
    ))
    .await
    .expect("data");
    let e = sink.finish().await.expect_err("bad row");
    assert_eq!(sqlstate(&e), "22P04", "{e}");
    let message = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("line 3"), "{message}");
    assert_eq!(
        query_rows(&c, "SELECT count(*) FROM t WHERE id > 6000").await,
        vec![vec![s("0")]]
    );
    // CSV in, then COPY (query) TO STDOUT as CSV with a header.
    let sink = c
        .copy_in("COPY t (id, name) FROM STDIN WITH (FORMAT csv)")
        .await
        .expect("copy in");
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(
        b"6001,ok\n6002,\"quoted, with comma\"\n",
    ))
    .await
    .expect("data");
    assert_eq!(sink.finish().await.expect("finish"), 2);
    let out = c.copy_out("COPY (SELECT id, name FROM t WHERE id > 6000 ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER true)").await.expect("copy out");
    let data: Vec<bytes::Bytes> = futures_util::TryStreamExt::try_collect(out)
        .await
        .expect("collect");
    let text: String = data
        .iter()
        .map(|b| String::from_utf8_lossy(b).to_string())
        .collect();
    assert_eq!(text, "id,name\n6001,ok\n6002,\"quoted, with comma\"\n");
    let out = c.copy_out("COPY t TO STDOUT").await.expect("copy out");
    let data: Vec<bytes::Bytes> = futures_util::TryStreamExt::try_collect(out)
        .await
        .expect("collect");
    assert_eq!(data.len(), 5003);
}

/// pgbench, unmodified: initialisation (DDL, COPY, VACUUM, ADD PRIMARY KEY), then the
/// select-only and the TPC-B-like runs in all three protocol modes; balances must agree.
#[test]
fn pgbench_runs_unmodified_and_tpcb_keeps_its_invariant() {
    if std::process::Command::new("pgbench")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("pgbench not installed; skipped (CI installs postgresql-client)");
        return;
    }
    let cluster = Cluster::start(3, 4);
    let port = cluster.port.to_string();
    let pgbench = |args: &[&str]| {
        let out = std::process::Command::new("pgbench")
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
            .args(args)
            .arg("postgres")
            .output()
            .expect("pgbench");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
        text
    };
    pgbench(&["-i", "-s", "1", "-q"]);
    for mode in ["simple", "extended", "prepared"] {
        let out = pgbench(&["-S", "-M", mode, "-c", "2", "-j", "2", "-t", "200"]);
        assert!(out.contains("number of failed transactions: 0"), "{out}");
    }
    // TPC-B-like: transactions lock several shards in no common order. A lock cycle fails
    // its youngest transaction with 40001 (never a stall until the lock timeout), which
    // pgbench retries.
    for mode in ["simple", "extended", "prepared"] {
        let out = pgbench(&[
            "-n",
            "-M",
            mode,
            "-c",
            "3",
            "-j",
            "2",
            "-t",
            "20",
            "--max-tries=20",
        ]);
        assert!(
            out.contains("number of transactions actually processed: 60/60"),
            "{out}"
        );
    }
    let psql = |sql: &str| {
        let out = std::process::Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-X",
                "-A",
                "-t",
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    if std::process::Command::new("psql")
        .arg("--version")
        .output()
        .is_ok()
    {
        let a = psql("SELECT sum(abalance) FROM pgbench_accounts");
        assert_eq!(a, psql("SELECT sum(bbalance) FROM pgbench_branches"));
        assert_eq!(a, psql("SELECT sum(tbalance) FROM pgbench_tellers"));
        assert_eq!(
            a,
            psql("SELECT coalesce(sum(delta), 0) FROM pgbench_history")
        );
        assert_eq!(psql("SELECT count(*) FROM pgbench_accounts"), "100000");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_larger_than_grpc_defaults_travel_and_tables_rebuild() {
    use futures_util::SinkExt;
    let cluster = Cluster::start(2, 2);
    let c = cluster.client().await;
    // No key, no distribution: one shard, so one RPC carries every row (over 6 MB).
    c.batch_execute("CREATE TABLE big (id bigint, body text)")
        .await
        .expect("create");
    let sink = c.copy_in("COPY big FROM STDIN").await.expect("copy");
    futures_util::pin_mut!(sink);
    let body = "x".repeat(1000);
    let mut data = String::new();
    for i in 0..6000 {
        data.push_str(&format!("{i}\t{body}\n"));
    }
    sink.send(bytes::Bytes::from(data)).await.expect("data");
    assert_eq!(sink.finish().await.expect("finish"), 6000);
    let rows = c
        .query("SELECT id, body FROM big", &[])
        .await
        .expect("select all");
    assert_eq!(rows.len(), 6000);
    // Adding a key rebuilds the table hash-distributed on it.
    c.batch_execute("ALTER TABLE big ADD PRIMARY KEY (id)")
        .await
        .expect("add key");
    let tables = query_rows(&c, "SHOW tessera.tables").await;
    assert_eq!(tables[0][1], s("hash"), "{tables:?}");
    assert_eq!(
        query_rows(&c, "SELECT count(*), sum(length(body)) FROM big").await,
        vec![vec![s("6000"), s("6000000")]]
    );
    let e = c
        .batch_execute("INSERT INTO big VALUES (5, 'dup')")
        .await
        .expect_err("key enforced");
    assert_eq!(sqlstate(&e), "23505");
}

/// statement_timeout and CancelRequest stop a statement on the shard it runs on: the error is
/// 57014 and the shard is free again at once (its SQLite statement was interrupted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_and_cancel_stop_shard_work() {
    let cluster = Cluster::start(2, 2);
    let c = cluster.client().await;
    c.batch_execute("CREATE TABLE s (x int)")
        .await
        .expect("create");
    let values: Vec<String> = (0..2000).map(|i| format!("({i})")).collect();
    c.batch_execute(&format!("INSERT INTO s VALUES {}", values.join(", ")))
        .await
        .expect("insert");
    let slow = "SELECT count(*) FROM s a, s b, s c";
    c.batch_execute("SET statement_timeout = '300ms'")
        .await
        .expect("set");
    let started = std::time::Instant::now();
    let e = c.simple_query(slow).await.expect_err("timeout");
    assert_eq!(sqlstate(&e), "57014");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let quick = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        c.simple_query("SELECT count(*) FROM s"),
    )
    .await;
    assert_eq!(
        rows(
            &quick
                .expect("the shard is still busy with the timed-out query")
                .expect("count")
        ),
        vec![vec![s("2000")]]
    );
    c.batch_execute("SET statement_timeout = 0")
        .await
        .expect("reset");
    // Cancel from another connection while the query runs (retrying until it lands).
    let token = c.cancel_token();
    let canceller = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let _ = token.cancel_query(tokio_postgres::NoTls).await;
        }
    });
    let e = c.simple_query(slow).await.expect_err("canceled");
    canceller.abort();
    assert_eq!(sqlstate(&e), "57014");
    let quick = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        c.simple_query("SELECT count(*) FROM s"),
    )
    .await;
    assert_eq!(
        rows(
            &quick
                .expect("shard still busy after cancel")
                .expect("count")
        ),
        vec![vec![s("2000")]]
    );
}
