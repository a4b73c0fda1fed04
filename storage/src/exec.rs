//! Runs statements on a SQLite connection: parameters bound by position, typed rows out.

use crate::error::StorageError;
use crate::versions::ChangeTracker;
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::Connection;
use tessera_shared::proto::{Row, Statement, StatementResult};
use tessera_shared::Value;

/// A storage value as a SQLite value.
pub fn to_sqlite(v: Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Integer(i) => SqlValue::Integer(i),
        Value::Real(f) => SqlValue::Real(f),
        Value::Text(s) => SqlValue::Text(s),
        Value::Blob(b) => SqlValue::Blob(b),
    }
}

/// A SQLite value as a storage value.
pub fn from_sqlite(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// Runs one statement. Parameters beyond those the statement names are ignored,
/// so a coordinator may send one parameter list to every shard of a statement.
pub fn run_statement(
    conn: &Connection,
    st: Statement,
    tracker: &ChangeTracker,
) -> Result<StatementResult, StorageError> {
    crate::doctab::before_statement(conn, &st.sql);
    let mut prepared = conn.prepare_cached(&st.sql)?;
    if !prepared.readonly() {
        tracker.will_run(conn, &st.sql)?;
    }
    let wanted = prepared.parameter_count();
    for (i, p) in st.params.into_iter().enumerate() {
        if i + 1 > wanted {
            break;
        }
        prepared.raw_bind_parameter(i + 1, to_sqlite(Value::from(p)))?;
    }
    let readonly = prepared.readonly();
    if prepared.column_count() == 0 {
        let n = prepared.raw_execute()?;
        return Ok(StatementResult {
            columns: vec![],
            rows: vec![],
            rows_affected: n as u64,
        });
    }
    let mut rows = Vec::new();
    let mut q = prepared.raw_query();
    // The width is read after the first step: a cached statement is re-prepared there when
    // the schema changed (ALTER TABLE ADD COLUMN under `SELECT *`), and may widen.
    let mut width = None;
    // The answer travels in one message: a result that cannot is refused while it grows, not
    // after it filled this node's memory.
    let mut bytes = 0usize;
    while let Some(r) = q.next()? {
        let n = *width.get_or_insert_with(|| r.as_ref().column_count());
        let mut values = Vec::with_capacity(n);
        for i in 0..n {
            let v = r.get_ref(i)?;
            bytes += 16
                + match v {
                    ValueRef::Text(t) | ValueRef::Blob(t) => t.len(),
                    _ => 8,
                };
            values.push(from_sqlite(v).into());
        }
        rows.push(Row { values });
        if bytes > tessera_shared::MAX_MESSAGE_BYTES {
            return Err(StorageError::Sql {
                sqlstate: "54000",
                message: format!(
                    "a shard's result exceeds {} bytes",
                    tessera_shared::MAX_MESSAGE_BYTES
                ),
            });
        }
    }
    drop(q);
    let columns: Vec<String> = prepared.column_names().map(|s| s.to_string()).collect();
    let rows_affected = if readonly {
        rows.len() as u64
    } else {
        conn.changes()
    };
    Ok(StatementResult {
        columns,
        rows,
        rows_affected,
    })
}

/// Runs a batch. More than one statement runs inside one transaction, unless
/// `in_txn` says the caller's transaction is already open.
pub fn run_batch(
    conn: &mut Connection,
    statements: Vec<Statement>,
    in_txn: bool,
    tracker: &ChangeTracker,
) -> Result<Vec<StatementResult>, StorageError> {
    if in_txn || statements.len() <= 1 {
        return statements
            .into_iter()
            .map(|s| run_statement(conn, s, tracker))
            .collect();
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut out = Vec::with_capacity(statements.len());
    for s in statements {
        out.push(run_statement(&tx, s, tracker)?);
    }
    tx.commit()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_shared::proto;

    fn run_batch(
        c: &mut Connection,
        statements: Vec<Statement>,
        in_txn: bool,
    ) -> Result<Vec<StatementResult>, StorageError> {
        let t = ChangeTracker::install(c, Default::default(), 1).expect("tracker");
        super::run_batch(c, statements, in_txn, &t)
    }

    fn st(sql: &str, params: Vec<Value>) -> Statement {
        Statement {
            sql: sql.into(),
            params: params.into_iter().map(proto::Value::from).collect(),
            returns_rows: false,
            lock: None,
        }
    }

    #[test]
    fn binds_and_returns_typed_rows() {
        let mut c = Connection::open_in_memory().expect("open");
        run_batch(
            &mut c,
            vec![st(
                "CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT) STRICT",
                vec![],
            )],
            false,
        )
        .expect("create");
        let r = run_batch(
            &mut c,
            vec![st(
                "INSERT INTO t VALUES (?1, ?2), (?3, ?4) RETURNING a",
                vec![
                    Value::Integer(1),
                    Value::Text("x".into()),
                    Value::Integer(2),
                    Value::Null,
                ],
            )],
            false,
        )
        .expect("insert");
        assert_eq!(r[0].rows.len(), 2);
        assert_eq!(r[0].rows_affected, 2);
        let r = run_batch(
            &mut c,
            vec![st(
                "SELECT a, b FROM t WHERE a = ?2",
                vec![Value::Integer(9), Value::Integer(2)],
            )],
            false,
        )
        .expect("select");
        assert_eq!(r[0].columns, vec!["a", "b"]);
        assert_eq!(Value::from(r[0].rows[0].values[1].clone()), Value::Null);
    }

    #[test]
    fn a_cached_select_star_widens_after_add_column() {
        let mut c = Connection::open_in_memory().expect("open");
        run_batch(
            &mut c,
            vec![
                st("CREATE TABLE t (a INTEGER) STRICT", vec![]),
                st("INSERT INTO t VALUES (1)", vec![]),
            ],
            false,
        )
        .expect("create");
        let star = || st("SELECT *, a AS k FROM t", vec![]);
        let r = run_batch(&mut c, vec![star()], false).expect("select");
        assert_eq!(r[0].rows[0].values.len(), 2);
        run_batch(
            &mut c,
            vec![st("ALTER TABLE t ADD COLUMN b TEXT DEFAULT 'x'", vec![])],
            false,
        )
        .expect("alter");
        let r = run_batch(&mut c, vec![star()], false).expect("select again");
        assert_eq!(r[0].columns, vec!["a", "b", "k"]);
        assert_eq!(r[0].rows[0].values.len(), 3);
    }

    #[test]
    fn a_statement_cached_before_a_schema_change_still_changes_versions() {
        use crate::versions::DataVersions;
        let mut c = Connection::open_in_memory().expect("open");
        let versions = std::sync::Arc::new(DataVersions::new());
        let t = ChangeTracker::install(&mut c, versions.clone(), 1).expect("tracker");
        let key = [tessera_shared::proto::VersionKey {
            scope: 1,
            table: "t".into(),
        }];
        let mut run = |sql: &str| {
            super::run_batch(&mut c, vec![st(sql, vec![])], false, &t).expect(sql);
            t.publish();
            versions.get(&key)[0]
        };
        run("CREATE TABLE t (a INTEGER PRIMARY KEY) STRICT");
        run("INSERT INTO t VALUES (1), (2)");
        let v1 = run("DELETE FROM t WHERE a = 1");
        run("ALTER TABLE t ADD COLUMN b TEXT DEFAULT 'x'");
        let v2 = run("INSERT INTO t VALUES (1, 'y')");
        assert!(v2 > v1);
        let v3 = run("DELETE FROM t WHERE a = 1");
        assert!(
            v3 > v2,
            "a cached DELETE after ALTER TABLE changed no version"
        );
    }

    #[test]
    fn batch_is_atomic_and_errors_carry_sqlstate() {
        let mut c = Connection::open_in_memory().expect("open");
        run_batch(
            &mut c,
            vec![st("CREATE TABLE t (a INTEGER PRIMARY KEY) STRICT", vec![])],
            false,
        )
        .expect("create");
        let err = run_batch(
            &mut c,
            vec![
                st("INSERT INTO t VALUES (1)", vec![]),
                st("INSERT INTO t VALUES (1)", vec![]),
            ],
            false,
        )
        .expect_err("duplicate");
        assert_eq!(err.sqlstate(), "23505");
        let r =
            run_batch(&mut c, vec![st("SELECT count(*) FROM t", vec![])], false).expect("count");
        assert_eq!(
            Value::from(r[0].rows[0].values[0].clone()),
            Value::Integer(0)
        );
        let err = run_batch(&mut c, vec![st("SELECT * FROM missing", vec![])], false)
            .expect_err("missing");
        assert_eq!(err.sqlstate(), "42P01");
        let err = run_batch(
            &mut c,
            vec![st("INSERT INTO t VALUES ('abc')", vec![])],
            false,
        )
        .expect_err("type");
        assert_eq!(err.sqlstate(), "22P02");
    }
}
