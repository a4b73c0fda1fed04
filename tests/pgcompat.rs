//! The differential runner: SQL files run statement by statement against Tessera (embedded,
//! one shard and eight) and against a real PostgreSQL started by the test, compared as
//! PostgreSQL is the oracle: rows as text (in order where the statement orders them, as a
//! multiset otherwise), rows affected, and the SQLSTATE class of errors.
//!
//! It prints matched/total per file and configuration, writes every statement that still
//! differs, with the reason, to `tests/pgcompat/differences/<config>/<file>.txt`, and fails
//! when a file matches fewer statements than `tests/pgcompat/matched.txt` records (more is
//! progress: `TESSERA_PGCOMPAT_BLESS=1` records the new counts and differences).
//!
//! The files are in `tests/pgcompat/sql`. `TESSERA_PGCOMPAT_DIR=<dir>` runs every `.sql` file
//! of another directory instead (PostgreSQL's own `src/test/regress/sql`, say), reporting
//! without comparing to the recorded counts.

mod common;

use common::{Cluster, Postgres};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tokio_postgres::{Client, SimpleQueryMessage};

/// What one statement gave: rows as text and rows affected, or an error's SQLSTATE and message.
#[derive(Debug, PartialEq)]
enum Outcome {
    Rows {
        rows: Vec<Vec<Option<String>>>,
        affected: Option<u64>,
    },
    Error {
        sqlstate: String,
        message: String,
    },
}

/// Splits a SQL file into statements: semicolons outside quotes, identifiers, dollar-quoted
/// bodies and comments end them; psql's backslash commands (whole lines) are dropped.
fn statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let at_line_start = |cur: &str| cur.trim().is_empty() || cur.ends_with('\n');
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\\' && at_line_start(&cur) {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        match c {
            '-' if next == Some('-') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '/' if next == Some('*') => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                cur.push(' ');
                continue;
            }
            '\'' | '"' => {
                let escapes = c == '\''
                    && i > 0
                    && matches!(chars[i - 1], 'e' | 'E')
                    && !chars
                        .get(i.wrapping_sub(2))
                        .is_some_and(|p| p.is_alphanumeric());
                cur.push(c);
                i += 1;
                while i < chars.len() {
                    let d = chars[i];
                    cur.push(d);
                    i += 1;
                    if escapes && d == '\\' && i < chars.len() {
                        cur.push(chars[i]);
                        i += 1;
                    } else if d == c {
                        if chars.get(i) == Some(&c) {
                            cur.push(c);
                            i += 1;
                        } else {
                            break;
                        }
                    }
                }
                continue;
            }
            '$' => {
                let tag_end = chars[i + 1..]
                    .iter()
                    .position(|d| !(d.is_alphanumeric() || *d == '_'))
                    .map(|p| i + 1 + p);
                if let Some(end) = tag_end.filter(|e| chars[*e] == '$') {
                    let tag: String = chars[i..=end].iter().collect();
                    if !tag[1..tag.len() - 1].starts_with(|d: char| d.is_ascii_digit()) {
                        let rest: String = chars[end + 1..].iter().collect();
                        let close = rest.find(&tag).map_or(rest.len(), |p| p + tag.len());
                        cur.push_str(&tag);
                        cur.push_str(&rest[..close]);
                        i = end + 1 + rest[..close].chars().count();
                        continue;
                    }
                }
            }
            ';' => {
                let s = cur.trim();
                if !s.is_empty() {
                    out.push(s.to_string());
                }
                cur.clear();
                i += 1;
                continue;
            }
            _ => {}
        }
        cur.push(c);
        i += 1;
    }
    let s = cur.trim();
    if !s.is_empty() {
        out.push(s.to_string());
    }
    out
}

async fn run(c: &Client, sql: &str) -> Outcome {
    match c.simple_query(sql).await {
        Ok(messages) => {
            let (mut rows, mut affected) = (Vec::new(), None);
            for m in messages {
                match m {
                    SimpleQueryMessage::Row(r) => {
                        rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                    }
                    SimpleQueryMessage::CommandComplete(n) => affected = Some(n),
                    _ => {}
                }
            }
            Outcome::Rows { rows, affected }
        }
        Err(e) => match e.as_db_error() {
            Some(db) => Outcome::Error {
                sqlstate: db.code().code().to_string(),
                message: db.message().to_string(),
            },
            None => Outcome::Error {
                sqlstate: "08006".into(),
                message: e.to_string(),
            },
        },
    }
}

/// Whether the statement's result has an order to compare: an ORDER BY outside parentheses.
fn ordered(sql: &str) -> bool {
    let upper = sql.to_uppercase();
    let mut depth = 0i32;
    let bytes = upper.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b'O' if depth == 0 && upper[i..].starts_with("ORDER BY") => return true,
            _ => {}
        }
    }
    false
}

/// Why Tessera's outcome differs from PostgreSQL's, or `None` when it does not.
fn difference(sql: &str, ours: Outcome, theirs: Outcome) -> Option<String> {
    match (ours, theirs) {
        (
            Outcome::Rows {
                rows: mut a,
                affected: x,
            },
            Outcome::Rows {
                rows: mut b,
                affected: y,
            },
        ) => {
            if !ordered(sql) {
                a.sort();
                b.sort();
            }
            if a != b {
                Some(format!("rows differ: Tessera {a:?}, PostgreSQL {b:?}"))
            } else if x != y {
                Some(format!("rows affected: Tessera {x:?}, PostgreSQL {y:?}"))
            } else {
                None
            }
        }
        (Outcome::Error { sqlstate: a, .. }, Outcome::Error { sqlstate: b, .. })
            if a.get(..2) == b.get(..2) =>
        {
            None
        }
        (
            Outcome::Error {
                sqlstate: a,
                message: m,
            },
            Outcome::Error {
                sqlstate: b,
                message: n,
            },
        ) => Some(format!(
            "error class: Tessera {a} ({m}), PostgreSQL {b} ({n})"
        )),
        (Outcome::Error { sqlstate, message }, Outcome::Rows { rows, .. }) => Some(format!(
            "Tessera fails {sqlstate} ({message}); PostgreSQL answers {rows:?}"
        )),
        (Outcome::Rows { rows, .. }, Outcome::Error { sqlstate, message }) => Some(format!(
            "Tessera answers {rows:?}; PostgreSQL fails {sqlstate} ({message})"
        )),
    }
}

async fn connect(conn: &str) -> Client {
    let (c, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    c.batch_execute("SET statement_timeout = '10s'")
        .await
        .expect("statement_timeout");
    c
}

/// Runs one file on a fresh Tessera cluster and a fresh PostgreSQL database; returns the
/// statement count, and the differing statements with their reasons.
async fn compare_file(
    pg: &Postgres,
    shards: u32,
    name: &str,
    text: &str,
) -> (usize, Vec<(String, String)>) {
    let cluster = Cluster::start_embedded(1, shards);
    let ours = cluster.client().await;
    ours.batch_execute("SET statement_timeout = '10s'")
        .await
        .expect("statement_timeout");
    let admin = connect(&format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        pg.port
    ))
    .await;
    let db = format!(
        "f_{}_{shards}",
        name.replace(|c: char| !c.is_alphanumeric(), "_")
    );
    for sql in [
        format!("DROP DATABASE IF EXISTS {db}"),
        format!("CREATE DATABASE {db}"),
    ] {
        admin.batch_execute(&sql).await.expect("database");
    }
    let theirs = connect(&format!(
        "host=127.0.0.1 port={} user=postgres dbname={db}",
        pg.port
    ))
    .await;
    let all = statements(text);
    let mut differ = Vec::new();
    for sql in &all {
        let a = run(&ours, sql).await;
        let b = run(&theirs, sql).await;
        if let Some(why) = difference(sql, a, b) {
            differ.push((sql.clone(), why));
        }
    }
    (all.len(), differ)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/pgcompat")
}

/// `file config matched total` lines.
fn recorded() -> BTreeMap<(String, String), usize> {
    std::fs::read_to_string(root().join("matched.txt"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                (f.first()?.to_string(), f.get(1)?.to_string()),
                f.get(2)?.parse().ok()?,
            ))
        })
        .collect()
}

fn sql_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("sql dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_answer_as_postgresql_does() {
    let Some(pg) = Postgres::start() else {
        eprintln!("no PostgreSQL server on this machine: the differential runner did not run");
        return;
    };
    let external = std::env::var("TESSERA_PGCOMPAT_DIR")
        .ok()
        .map(PathBuf::from);
    let bless = std::env::var("TESSERA_PGCOMPAT_BLESS").is_ok_and(|v| v == "1");
    let files = sql_files(external.as_deref().unwrap_or(&root().join("sql")));
    let before = recorded();
    let mut table = String::from("# file config matched total\n");
    let mut dropped = Vec::new();
    for (config, shards) in [("1-shard", 1), ("8-shards", 8)] {
        for path in &files {
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            let text = std::fs::read_to_string(path).expect("read sql");
            let (total, differ) = compare_file(&pg, shards, &name, &text).await;
            let matched = total - differ.len();
            println!("{name:>20} {config:>8}: {matched:>4} / {total:<4} match PostgreSQL");
            let _ = writeln!(table, "{name} {config} {matched} {total}");
            let mut listing = format!(
                "# {name} ({config}): {} of {total} statements differ from PostgreSQL 15\n",
                differ.len()
            );
            for (sql, why) in &differ {
                let _ = write!(listing, "\n{sql};\n-- {why}\n");
            }
            let out = match (&external, bless) {
                (None, true) => root().join("differences").join(config),
                _ => PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                    .join("pgcompat")
                    .join(config),
            };
            std::fs::create_dir_all(&out).expect("differences dir");
            std::fs::write(out.join(format!("{name}.txt")), listing).expect("differences");
            if let Some(was) = before.get(&(name.clone(), config.to_string())) {
                if external.is_none() && matched < *was {
                    dropped.push(format!("{name} ({config}): {matched} match, {was} did"));
                }
            }
        }
    }
    if external.is_none() && bless {
        std::fs::write(root().join("matched.txt"), &table).expect("record counts");
    }
    assert!(
        dropped.is_empty(),
        "fewer statements match PostgreSQL than before: {dropped:?} (see the differences under {})",
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("pgcompat")
            .display()
    );
}

#[test]
fn the_splitter_keeps_quoted_semicolons_and_drops_comments() {
    let got = statements(
        "SELECT 'a;b', \"x;y\" -- c;\nFROM t; /* x; /* y; */ */ SELECT $$p;q$$, $f$r;$f$;\n\\set x 1\nSELECT E'it\\'s;'; SELECT $1",
    );
    assert_eq!(
        got,
        vec![
            "SELECT 'a;b', \"x;y\" \nFROM t",
            "SELECT $$p;q$$, $f$r;$f$",
            "SELECT E'it\\'s;'",
            "SELECT $1",
        ]
    );
    assert!(ordered("SELECT a FROM t ORDER BY a"));
    assert!(!ordered("SELECT a FROM (SELECT a FROM t ORDER BY a) s"));
}
