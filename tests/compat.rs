//! Real clients against a running cluster: psycopg 3, psycopg2, SQLAlchemy 2 and pandas
//! (`tests/compat/python_clients.py`), pgcli, node-postgres (`tests/compat/node/node_pg.js`)
//! and pgjdbc (`tests/compat/jdbc/JdbcClient.java`).
//!
//! Python and Node packages are installed on first use into `target/compat-venv` and
//! `tests/compat/node/node_modules`; pgjdbc comes from Debian's `libpostgresql-jdbc-java`
//! (installed by `.ci/run`).

mod common;

use common::Cluster;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// The compat virtualenv's python, with the requirements installed.
fn python() -> PathBuf {
    let venv = root().join("target/compat-venv");
    let py = venv.join("bin/python");
    if !py.exists() {
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        );
    }
    let ready = Command::new(&py)
        .args(["-c", "import psycopg, psycopg2, sqlalchemy, pandas, pgcli"])
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        run(
            Command::new(&py)
                .args(["-m", "pip", "install", "-q", "-r"])
                .arg(root().join("tests/compat/requirements.txt")),
            "pip install",
        );
    }
    py
}

fn node_dir() -> PathBuf {
    let dir = root().join("tests/compat/node");
    if !dir.join("node_modules/pg").exists() {
        run(
            Command::new("npm")
                .args([
                    "install",
                    "--no-package-lock",
                    "--no-audit",
                    "--no-fund",
                    "-q",
                ])
                .current_dir(&dir),
            "npm install",
        );
    }
    dir
}

const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_node_and_java_clients() {
    let cluster = Cluster::start(2, 4);
    let port = cluster.port.to_string();

    let out = run(
        Command::new(python())
            .arg(root().join("tests/compat/python_clients.py"))
            .arg(&port),
        "python clients",
    );
    assert!(out.contains("python clients ok"), "{out}");

    // pgcli -c, over the tables the Python clients left; its log records any query of its
    // own (describe commands, completion metadata) that failed.
    let home = tempfile::tempdir().expect("tmp");
    let pgcli = python().with_file_name("pgcli");
    let out = run(
        Command::new(&pgcli)
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join(".config"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args([
                "-c",
                "SELECT id, owner FROM sa_accounts ORDER BY id LIMIT 2",
            ])
            .args([
                "-c",
                "\\dt",
                "-c",
                "\\d sa_entries",
                "-c",
                "\\l",
                "-c",
                "\\di",
            ]),
        "pgcli",
    );
    for expected in [
        "| 1  | o1    |",
        "| public | sa_entries  | table | postgres |",
        "\"sa_entries_account_id_fkey\" FOREIGN KEY (account_id) REFERENCES sa_accounts(id) ON DELETE CASCADE",
        "| postgres | postgres | UTF8     |",
        "| public | sa_entries_account     | index | postgres |",
    ] {
        assert!(out.contains(expected), "pgcli output lacks {expected:?}:\n{out}");
    }
    let log = std::fs::read_to_string(home.path().join(".config/pgcli/log")).unwrap_or_default();
    assert!(!log.contains(" ERROR "), "pgcli logged errors:\n{log}");

    let out = run(
        Command::new("node")
            .arg("node_pg.js")
            .arg(&port)
            .current_dir(node_dir()),
        "node-postgres",
    );
    assert!(out.contains("node pg ok"), "{out}");

    assert!(
        Path::new(JDBC_JAR).exists(),
        "{JDBC_JAR} is missing: apt-get install libpostgresql-jdbc-java (bash .ci/run does)"
    );
    let classes = tempfile::tempdir().expect("tmp");
    run(
        Command::new("javac")
            .arg("-d")
            .arg(classes.path())
            .arg(root().join("tests/compat/jdbc/JdbcClient.java")),
        "javac",
    );
    let out = run(
        Command::new("java")
            .arg("-cp")
            .arg(format!("{JDBC_JAR}:{}", classes.path().display()))
            .arg("JdbcClient")
            .arg(&port),
        "pgjdbc",
    );
    assert!(out.contains("jdbc ok"), "{out}");
}
