//! The coordinator's scratch SQLite: an in-memory database per statement, on a blocking thread,
//! for table-less queries, combining partial aggregates, and queries over pulled tables.

use crate::catalog::Column;
use crate::error::CoordError;
use crate::sql::names::quote;
use rusqlite::Connection;
use tessera_shared::Value;
use tessera_storage::exec::{from_sqlite, to_sqlite};

/// A table to load before running the query.
pub struct Loaded {
    /// Table name.
    pub name: String,
    /// Column names (untyped in the scratch database: values keep their storage class).
    pub columns: Vec<String>,
    /// Rows.
    pub rows: Vec<Vec<Value>>,
    /// Declared SQLite column types (empty: untyped). Typed columns compare with affinity,
    /// so `oid = '16384'` matches as Postgres would.
    pub types: Vec<&'static str>,
}

impl Loaded {
    /// A pulled table with its catalog columns.
    pub fn table(name: &str, columns: &[Column], rows: Vec<Vec<Value>>) -> Loaded {
        Loaded {
            name: name.to_string(),
            columns: columns.iter().map(|c| c.name.clone()).collect(),
            rows,
            types: vec![],
        }
    }

    /// The `partials(__t0, ...)` table of a final aggregation.
    pub fn partials(width: usize, rows: Vec<Vec<Value>>) -> Loaded {
        Loaded {
            name: "partials".into(),
            columns: (0..width).map(|i| format!("__t{i}")).collect(),
            rows,
            types: vec![],
        }
    }
}

fn sql_err(e: rusqlite::Error) -> CoordError {
    let msg = e.to_string();
    let code = if msg.contains("syntax error") {
        "42601"
    } else if msg.starts_with("no such column") {
        "42703"
    } else if msg.starts_with("invalid input syntax") || msg.starts_with("malformed array") {
        "22P02"
    } else if msg.starts_with("no such function") {
        "42883"
    } else if msg.starts_with("no such table") {
        "42P01"
    } else {
        "XX000"
    };
    CoordError::Storage {
        sqlstate: code.into(),
        message: msg,
    }
}

fn open() -> Result<Connection, CoordError> {
    let conn = Connection::open_in_memory().map_err(sql_err)?;
    conn.execute_batch("PRAGMA case_sensitive_like = ON;")
        .map_err(sql_err)?;
    tessera_storage::jsonfn::register(&conn).map_err(sql_err)?;
    tessera_storage::jsonsrf::register(&conn).map_err(sql_err)?;
    Ok(conn)
}

thread_local! {
    /// Table-less queries (`SELECT 1`, `SELECT version()`) reuse one database per blocking thread.
    static EMPTY_DB: std::cell::RefCell<Option<Connection>> = const { std::cell::RefCell::new(None) };
}

/// Registers functions on a fresh scratch database before the query runs.
pub type Setup = Box<dyn FnOnce(&Connection) -> rusqlite::Result<()> + Send>;

fn run(
    tables: Vec<Loaded>,
    sql: &str,
    params: Vec<Value>,
    setup: Option<Setup>,
) -> Result<Vec<Vec<Value>>, CoordError> {
    if tables.is_empty() && setup.is_none() {
        return EMPTY_DB.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(open()?);
            }
            match slot.as_ref() {
                Some(conn) => query_on(conn, sql, params),
                None => Err(CoordError::Internal("scratch database missing".into())),
            }
        });
    }
    let conn = open()?;
    if let Some(setup) = setup {
        setup(&conn).map_err(sql_err)?;
    }
    for t in tables {
        let cols: Vec<String> = t
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| match t.types.get(i) {
                Some(ty) => format!("{} {ty}", quote(c)),
                None => quote(c),
            })
            .collect();
        conn.execute_batch(&format!(
            "CREATE TABLE {} ({})",
            quote(&t.name),
            cols.join(", ")
        ))
        .map_err(sql_err)?;
        let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
        let mut ins = conn
            .prepare(&format!(
                "INSERT INTO {} VALUES ({})",
                quote(&t.name),
                marks.join(", ")
            ))
            .map_err(sql_err)?;
        for row in t.rows {
            ins.execute(rusqlite::params_from_iter(row.into_iter().map(to_sqlite)))
                .map_err(sql_err)?;
        }
    }
    query_on(&conn, sql, params)
}

fn query_on(
    conn: &Connection,
    sql: &str,
    params: Vec<Value>,
) -> Result<Vec<Vec<Value>>, CoordError> {
    let mut st = conn.prepare_cached(sql).map_err(sql_err)?;
    let wanted = st.parameter_count();
    for (i, p) in params.into_iter().enumerate().take(wanted) {
        st.raw_bind_parameter(i + 1, to_sqlite(p))
            .map_err(sql_err)?;
    }
    let n = st.column_count();
    let mut out = Vec::new();
    let mut rows = st.raw_query();
    while let Some(r) = rows.next().map_err(sql_err)? {
        let mut row = Vec::with_capacity(n);
        for i in 0..n {
            row.push(from_sqlite(r.get_ref(i).map_err(sql_err)?));
        }
        out.push(row);
    }
    Ok(out)
}

/// Loads `tables` into a fresh in-memory database and runs `sql` with `params`, off the async threads.
pub async fn query(
    tables: Vec<Loaded>,
    sql: String,
    params: Vec<Value>,
) -> Result<Vec<Vec<Value>>, CoordError> {
    tokio::task::spawn_blocking(move || run(tables, &sql, params, None))
        .await
        .map_err(|e| CoordError::Internal(format!("scratch query panicked: {e}")))?
}

/// Like [`query`], after `setup` registered functions on the database.
pub async fn query_with(
    tables: Vec<Loaded>,
    sql: String,
    params: Vec<Value>,
    setup: Setup,
) -> Result<Vec<Vec<Value>>, CoordError> {
    tokio::task::spawn_blocking(move || run(tables, &sql, params, Some(setup)))
        .await
        .map_err(|e| CoordError::Internal(format!("scratch query panicked: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn final_aggregation_over_partials() {
        let rows = vec![
            vec![Value::Integer(2), Value::Integer(10)],
            vec![Value::Integer(3), Value::Integer(20)],
        ];
        let out = query(
            vec![Loaded::partials(2, rows)],
            "SELECT sum(__t0), max(__t1) FROM partials".into(),
            vec![],
        )
        .await
        .expect("query");
        assert_eq!(out, vec![vec![Value::Integer(5), Value::Integer(20)]]);
    }
}
