//! The emulated system catalogs through psql and SQL: psql's describe commands print what
//! PostgreSQL 15 prints for the same schema, and ORM-style `information_schema` and
//! `pg_catalog` queries (extended protocol, parameters, `::regclass`) answer correctly.

mod common;

use common::Cluster;
use std::process::Command;

/// psql's output for a backslash command, without psqlrc.
fn psql(port: u16, command: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-c",
            command,
        ])
        .output()
        .expect("psql");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Captured from PostgreSQL 15 (`psql -X -c …`) after
/// `CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, age int DEFAULT 3)` and
/// `CREATE INDEX users_name ON users (name)`.
const PG_D_USERS: &str = r#"               Table "public.users"
 Column |  Type   | Collation | Nullable | Default 
--------+---------+-----------+----------+---------
 id     | bigint  |           | not null | 
 name   | text    |           | not null | 
 age    | integer |           |          | 3
Indexes:
    "users_pkey" PRIMARY KEY, btree (id)
    "users_name" btree (name)

"#;
const PG_D_PLUS_USERS: &str = r#"                                          Table "public.users"
 Column |  Type   | Collation | Nullable | Default | Storage  | Compression | Stats target | Description 
--------+---------+-----------+----------+---------+----------+-------------+--------------+-------------
 id     | bigint  |           | not null |         | plain    |             |              | 
 name   | text    |           | not null |         | extended |             |              | 
 age    | integer |           |          | 3       | plain    |             |              | 
Indexes:
    "users_pkey" PRIMARY KEY, btree (id)
    "users_name" btree (name)
Access method: heap

"#;
const PG_DN: &str = r#"      List of schemas
  Name  |       Owner       
--------+-------------------
 public | pg_database_owner
(1 row)

"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_describe_commands_match_postgresql() {
    let cluster = Cluster::start_embedded(2, 4);
    let c = cluster.client().await;
    c.batch_execute(
        "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, age int DEFAULT 3) PARTITION BY HASH (id);
         CREATE TABLE countries (code text PRIMARY KEY, name text) WITH (distribution = 'reference');
         CREATE INDEX users_name ON users (name);",
    )
    .await
    .expect("schema");
    let port = cluster.port;
    assert_eq!(psql(port, "\\d users"), PG_D_USERS);
    assert_eq!(psql(port, "\\d+ users"), PG_D_PLUS_USERS);
    assert_eq!(psql(port, "\\dn"), PG_DN);
    let dt = psql(port, "\\dt");
    assert!(
        dt.contains(" public | countries | table | postgres\n public | users     | table | postgres\n(2 rows)"),
        "{dt}"
    );
    let di = psql(port, "\\di");
    for line in [
        " public | countries_pkey | index | postgres | countries",
        " public | users_name     | index | postgres | users",
        " public | users_pkey     | index | postgres | users",
    ] {
        assert!(di.contains(line), "{di}");
    }
    let l = psql(port, "\\l");
    assert!(l.contains(" postgres | postgres | UTF8     |"), "{l}");
    let du = psql(port, "\\du");
    assert!(
        du.contains(" postgres  | Superuser, Create role, Create DB"),
        "{du}"
    );
    for command in [
        "\\dt+",
        "\\di+",
        "\\l+",
        "\\dn+",
        "\\df",
        "\\dT",
        "\\dv",
        "\\dx",
        "\\dp",
        "\\dconfig",
    ] {
        let out = psql(port, command);
        assert!(!out.contains("ERROR"), "{command}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orm_introspection_queries_answer() {
    let cluster = Cluster::start_embedded(1, 2);
    let c = cluster.client().await;
    c.batch_execute(
        "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, email text UNIQUE) WITH (distribution = 'reference');",
    )
    .await
    .expect("schema");
    // information_schema, with parameters (extended protocol: Describe must type the result).
    let rows = c
        .query(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            &[&"public", &"users"],
        )
        .await
        .expect("columns");
    let cols: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        cols,
        vec![
            ("id".into(), "bigint".into(), "NO".into()),
            ("name".into(), "text".into(), "NO".into()),
            ("email".into(), "text".into(), "YES".into()),
        ]
    );
    let tables: Vec<String> = c
        .query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
            &[],
        )
        .await
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tables, vec!["users".to_string()]);
    let pk: Vec<String> = c
        .query(
            "SELECT kcu.column_name FROM information_schema.table_constraints tc \
             JOIN information_schema.key_column_usage kcu ON tc.constraint_name = kcu.constraint_name \
             WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_name = 'users'",
            &[],
        )
        .await
        .expect("pk")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(pk, vec!["id".to_string()]);
    // pg_catalog with ::regclass, booleans typed as booleans, indexes and their definitions.
    let rows = c
        .query(
            "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull \
             FROM pg_catalog.pg_attribute a WHERE a.attrelid = 'users'::regclass AND a.attnum > 0 ORDER BY a.attnum",
            &[],
        )
        .await
        .expect("attributes");
    let attrs: Vec<(String, String, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(attrs[0], ("id".into(), "bigint".into(), true));
    assert_eq!(attrs[2], ("email".into(), "text".into(), false));
    let defs: Vec<String> = c
        .query(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = 'public.users'::regclass ORDER BY 1",
            &[],
        )
        .await
        .expect("indexes")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        defs,
        vec![
            "CREATE UNIQUE INDEX users_email_key ON public.users USING btree (email)".to_string(),
            "CREATE UNIQUE INDEX users_pkey ON public.users USING btree (id)".to_string(),
        ]
    );
    let oid: i64 = c
        .query_one("SELECT 'users'::regclass::oid", &[])
        .await
        .expect("regclass")
        .get(0);
    assert!(oid >= 16384, "{oid}");
    let visible: bool = c
        .query_one(
            "SELECT n.nspname = ANY(current_schemas(false)) FROM pg_namespace n WHERE n.nspname = 'public'",
            &[],
        )
        .await
        .expect("any")
        .get(0);
    assert!(visible);
    // A user table with a catalog-like name is the user's.
    c.batch_execute(
        "CREATE TABLE pg_stats_mine (id bigint PRIMARY KEY); INSERT INTO pg_stats_mine VALUES (7)",
    )
    .await
    .expect("user table");
    let n: i64 = c
        .query_one("SELECT id FROM pg_stats_mine", &[])
        .await
        .expect("user table read")
        .get(0);
    assert_eq!(n, 7);
}

/// The same schema in Tessera and in a PostgreSQL started for the test: psql's describe
/// commands print the same thing in both (where the machine has PostgreSQL's server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_describe_matches_live_postgresql() {
    let Some(pg) = common::Postgres::start() else {
        eprintln!("no PostgreSQL server binaries here: the captured-output test covers psql");
        return;
    };
    let schema = "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, age int DEFAULT 3);
         CREATE INDEX users_name ON users (name);
         CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE, total numeric, placed timestamptz, paid boolean DEFAULT false);
         CREATE TABLE order_lines (order_id bigint, line int, sku text, PRIMARY KEY (order_id, line), FOREIGN KEY (order_id) REFERENCES orders);
         CREATE TABLE pairs (a int, b text, c double precision, UNIQUE (a, b));";
    let cluster = Cluster::start_embedded(2, 4);
    cluster
        .client()
        .await
        .batch_execute(schema)
        .await
        .expect("tessera schema");
    let (pgc, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            pg.port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect to PostgreSQL");
    tokio::spawn(conn);
    pgc.batch_execute(schema).await.expect("postgres schema");
    for command in [
        "\\d users",
        "\\d+ users",
        "\\d orders",
        "\\d+ orders",
        "\\d order_lines",
        "\\d pairs",
        "\\dn",
        "\\dt",
        "\\di",
    ] {
        assert_eq!(
            psql(cluster.port, command),
            psql(pg.port, command),
            "psql {command}: Tessera (left) against PostgreSQL (right)"
        );
    }
}

/// Foreign keys are checked when declared, as PostgreSQL checks them, recorded with a
/// NOTICE that they are not enforced, and protect the referenced table from a plain DROP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_keys_are_declared_recorded_and_guard_drop() {
    let cluster = Cluster::start_embedded(1, 2);
    let c = cluster.client().await;
    c.batch_execute("CREATE TABLE parents (id bigint PRIMARY KEY, code text, UNIQUE (id, code))")
        .await
        .expect("parents");
    for (ddl, state) in [
        ("CREATE TABLE k1 (id int PRIMARY KEY, p bigint REFERENCES nowhere (id))", "42P01"),
        ("CREATE TABLE k2 (id int PRIMARY KEY, p text REFERENCES parents (code))", "42830"),
        ("CREATE TABLE k3 (id int PRIMARY KEY, p bigint, FOREIGN KEY (p, id) REFERENCES parents (id))", "42830"),
        ("CREATE TABLE k4 (id int PRIMARY KEY, FOREIGN KEY (nope) REFERENCES parents)", "42703"),
    ] {
        let e = c.batch_execute(ddl).await.expect_err(ddl);
        assert_eq!(common::sqlstate(&e), state, "{ddl}: {e:?}");
    }
    let out = psql(
        cluster.port,
        "CREATE TABLE kids (id bigint PRIMARY KEY, parent bigint REFERENCES parents, code text, FOREIGN KEY (parent, code) REFERENCES parents (id, code) ON UPDATE CASCADE)",
    );
    assert!(
        out.contains("NOTICE:  foreign key \"kids_parent_fkey\" is recorded but not enforced"),
        "{out}"
    );
    let rows = c
        .query(
            "SELECT conname, contype, confrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = 'kids'::regclass AND contype = 'f' ORDER BY conname",
            &[],
        )
        .await
        .expect("pg_constraint");
    let got: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "kids_parent_code_fkey".to_string(),
                "f".to_string(),
                "parents".to_string(),
                "FOREIGN KEY (parent, code) REFERENCES parents(id, code) ON UPDATE CASCADE"
                    .to_string()
            ),
            (
                "kids_parent_fkey".to_string(),
                "f".to_string(),
                "parents".to_string(),
                "FOREIGN KEY (parent) REFERENCES parents(id)".to_string()
            ),
        ]
    );
    let e = c
        .batch_execute("DROP TABLE parents")
        .await
        .expect_err("drop");
    assert_eq!(common::sqlstate(&e), "2BP01");
    // Dropping both together, or with CASCADE, is allowed.
    c.batch_execute("DROP TABLE parents CASCADE")
        .await
        .expect("cascade");
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);
    c.batch_execute("INSERT INTO kids VALUES (1, 99, 'x')")
        .await
        .expect("kids outlive their parents' table");
}
