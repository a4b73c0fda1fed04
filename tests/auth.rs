//! Authentication and TLS against real clusters: SCRAM-SHA-256 logins (tokio-postgres and
//! psql), wrong passwords and unknown users refused alike (28P01), role management and its
//! privileges, roles surviving a restart, and TLS with `sslmode=require` and `verify-full`.

mod common;

use common::{sqlstate, Cluster};
use std::path::Path;
use std::process::Command;
use tokio_postgres::{Client, NoTls};

async fn login(port: u16, user: &str, password: &str) -> Result<Client, tokio_postgres::Error> {
    let conn = format!(
        "host=127.0.0.1 port={port} user={user} password={password} dbname=postgres connect_timeout=10"
    );
    let (client, conn) = tokio_postgres::connect(&conn, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn refused(r: Result<Client, tokio_postgres::Error>) -> String {
    match r {
        Ok(_) => panic!("the login should have been refused"),
        Err(e) => sqlstate(&e),
    }
}

/// Runs psql with a connection string; returns (success, stdout + stderr).
fn psql(conninfo: &str, sql: &str, password: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new("psql");
    cmd.args([conninfo, "-XAtc", sql]).env_remove("PGPASSWORD");
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let out = cmd.output().expect("psql");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_logins_roles_and_privileges() {
    let tmp = tempfile::tempdir().expect("tmp");
    let env = [("TESSERA_PASSWORD", "first-secret")];
    let args = ["--auth", "scram-sha-256"];
    let cluster = Cluster::start_args(tmp.path(), 1, 2, &args, &env);
    let port = cluster.port;

    let admin = login(port, "postgres", "first-secret")
        .await
        .expect("superuser");
    // Wrong password and unknown user look the same: 28P01, nothing more.
    assert_eq!(refused(login(port, "postgres", "nope").await), "28P01");
    assert_eq!(refused(login(port, "nobody", "nope").await), "28P01");

    admin
        .batch_execute(
            "CREATE USER alice WITH PASSWORD 'alice-1';
             CREATE ROLE reader;
             CREATE TABLE t (id bigint PRIMARY KEY) PARTITION BY HASH (id);",
        )
        .await
        .expect("create roles");
    let e = admin
        .batch_execute("CREATE ROLE alice")
        .await
        .expect_err("duplicate");
    assert_eq!(sqlstate(&e), "42710");
    // A role without LOGIN (CREATE ROLE's default) or without a password cannot log in.
    assert_eq!(refused(login(port, "reader", "").await), "28P01");

    let alice = login(port, "alice", "alice-1").await.expect("alice");
    let who: String = alice
        .query_one("SELECT current_user", &[])
        .await
        .expect("who")
        .get(0);
    assert_eq!(who, "alice");
    for sql in [
        "CREATE ROLE mallory",
        "ALTER ROLE alice SUPERUSER",
        "ALTER ROLE postgres PASSWORD 'x'",
        "DROP ROLE reader",
        // Cluster administration is for superusers too.
        "SELECT tessera_cache_clear()",
        "SELECT tessera_drain('storage-1')",
        "SELECT tessera_decommission('storage-1')",
        "SELECT create_distributed_table('t', 'id', '8')",
        "SELECT create_reference_table('t')",
    ] {
        let e = alice.batch_execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), "42501", "{sql}");
    }
    // Switching roles is refused, not answered `SET` while nothing changes.
    for sql in ["SET ROLE postgres", "SET SESSION AUTHORIZATION postgres"] {
        let e = alice.batch_execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), "0A000", "{sql}");
    }
    alice
        .batch_execute(
            "SET ROLE alice; SET ROLE NONE; RESET ROLE; SET SESSION AUTHORIZATION DEFAULT",
        )
        .await
        .expect("the session's own role");
    admin
        .batch_execute("SELECT tessera_cache_clear()")
        .await
        .expect("a superuser administers");
    // A role changes its own password; the old one stops working.
    alice
        .batch_execute("ALTER USER alice PASSWORD 'alice-2'")
        .await
        .expect("own password");
    assert_eq!(refused(login(port, "alice", "alice-1").await), "28P01");
    login(port, "alice", "alice-2").await.expect("new password");

    // libpq (psql) speaks the same SCRAM exchange.
    let conninfo = format!("host=127.0.0.1 port={port} user=alice dbname=postgres");
    let (ok, out) = psql(&conninfo, "SELECT 40 + 2", Some("alice-2"));
    assert!(ok && out.trim() == "42", "{out}");
    let (ok, out) = psql(&conninfo, "SELECT 1", Some("alice-1"));
    assert!(!ok && out.contains("authentication failed"), "{out}");

    let e = admin
        .batch_execute("DROP ROLE postgres")
        .await
        .expect_err("self");
    assert_eq!(sqlstate(&e), "55006");
    admin
        .batch_execute("DROP USER alice; DROP ROLE IF EXISTS alice")
        .await
        .expect("drop");
    assert_eq!(refused(login(port, "alice", "alice-2").await), "28P01");
    let e = admin
        .batch_execute("ALTER ROLE ghost PASSWORD 'x'")
        .await
        .expect_err("ghost");
    assert_eq!(sqlstate(&e), "42704");
    drop(admin);

    // Roles live in the catalog: after a restart, without TESSERA_PASSWORD, the same
    // password works and others do not.
    let dir = cluster.stop();
    let cluster = Cluster::start_args(&dir, 1, 2, &args, &[]);
    login(cluster.port, "postgres", "first-secret")
        .await
        .expect("after restart");
    assert_eq!(
        refused(login(cluster.port, "postgres", "other").await),
        "28P01"
    );
    drop(cluster);
    drop(tmp);
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files.
fn certificate(dir: &Path, name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let cert = params.self_signed(&key).expect("sign");
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_require_and_verify_full() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (cert, key) = certificate(tmp.path(), "server");
    let (other, _) = certificate(tmp.path(), "other");
    let data = tmp.path().join("data");
    let args = [
        "--tls-cert",
        cert.as_str(),
        "--tls-key",
        key.as_str(),
        "--tls-required",
        "--auth",
        "scram-sha-256",
    ];
    let cluster = Cluster::start_args(&data, 1, 2, &args, &[("TESSERA_PASSWORD", "pw")]);
    let port = cluster.port;
    let base = format!("port={port} user=postgres dbname=postgres");
    let query = "SELECT 'ok'";
    // psql's \conninfo reports the negotiated TLS protocol.
    let conninfo = "\\conninfo";

    let require = format!("host=127.0.0.1 {base} sslmode=require");
    let (ok, out) = psql(&require, query, Some("pw"));
    assert!(ok && out.trim() == "ok", "sslmode=require: {out}");
    let (ok, out) = psql(&require, conninfo, Some("pw"));
    assert!(
        ok && out.contains("SSL connection (protocol: TLSv1.3"),
        "{out}"
    );
    let (ok, out) = psql(
        &format!("host=localhost {base} sslmode=verify-full sslrootcert={cert}"),
        query,
        Some("pw"),
    );
    assert!(ok && out.trim() == "ok", "verify-full: {out}");
    // The certificate is checked: another root is refused by the client.
    let (ok, out) = psql(
        &format!("host=localhost {base} sslmode=verify-full sslrootcert={other}"),
        query,
        Some("pw"),
    );
    assert!(
        !ok && out.contains("certificate"),
        "wrong root accepted: {out}"
    );
    // Plain connections are refused with 28000 when TLS is required.
    let (ok, out) = psql(
        &format!("host=127.0.0.1 {base} sslmode=disable"),
        query,
        Some("pw"),
    );
    assert!(!ok && out.contains("requires TLS"), "plain accepted: {out}");
    let e = login(port, "postgres", "pw").await.expect_err("plain");
    assert_eq!(sqlstate(&e), "28000");
}
