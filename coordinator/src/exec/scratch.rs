//! The coordinator's scratch SQLite: a database per statement, on a blocking thread, for
//! table-less queries, combining partial aggregates, and queries over pulled tables.
//!
//! Each statement's [`Budget`] bounds it: SQLite's progress handler stops it on cancel or
//! `statement_timeout`, every row it returns is charged to its memory budget, and the database
//! is a private temporary file with a bounded page cache, so a large pulled table spills to disk
//! instead of growing the process.

use crate::catalog::Column;
use crate::error::CoordError;
use crate::exec::budget::Budget;
use crate::sql::names::quote;
use rusqlite::Connection;
use std::sync::Arc;
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

    /// A table of untyped columns.
    pub fn table_of(name: &str, columns: &[&str], rows: Vec<Vec<Value>>) -> Loaded {
        Loaded {
            name: name.to_string(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
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
    // Not the display of an input error: it quotes the SQL sent to SQLite, not the user's.
    let msg = match e {
        rusqlite::Error::SqlInputError { msg, .. } => msg,
        e => e.to_string(),
    };
    CoordError::Storage {
        sqlstate: tessera_storage::error::classify_message(&msg).into(),
        message: msg,
    }
}

/// SQLite virtual-machine steps between two looks at the statement's budget.
const PROGRESS_STEPS: std::os::raw::c_int = 1000;

fn open(cache_bytes: usize) -> Result<Connection, CoordError> {
    // An empty name is a private temporary database on disk: pages beyond the cache spill to it.
    let conn = Connection::open("").map_err(sql_err)?;
    conn.execute_batch(&format!(
        "PRAGMA case_sensitive_like = ON; PRAGMA temp_store = FILE; \
         PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -{};",
        (cache_bytes / 1024).max(64)
    ))
    .map_err(sql_err)?;
    tessera_storage::jsonfn::register(&conn).map_err(sql_err)?;
    tessera_storage::pgfn::register(&conn).map_err(sql_err)?;
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
    budget: &Arc<Budget>,
) -> Result<Vec<Vec<Value>>, CoordError> {
    if tables.is_empty() && setup.is_none() {
        return EMPTY_DB.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(open(budget.scratch_cache_bytes())?);
            }
            match slot.as_mut() {
                Some(conn) => bounded(conn, budget, |conn| query_on(conn, sql, params, budget)),
                None => Err(CoordError::Internal("scratch database missing".into())),
            }
        });
    }
    let mut conn = open(budget.scratch_cache_bytes())?;
    bounded(&mut conn, budget, |conn| {
        load_and_query(conn, tables, sql, params, setup, budget)
    })
}

/// Runs `work` on `conn` with the budget's progress handler installed: SQLite stops between
/// steps once the statement is cancelled or past its deadline, and the error says which.
fn bounded<T>(
    conn: &mut Connection,
    budget: &Arc<Budget>,
    work: impl FnOnce(&Connection) -> Result<T, CoordError>,
) -> Result<T, CoordError> {
    let watch = budget.clone();
    conn.progress_handler(PROGRESS_STEPS, Some(move || watch.stopped().is_some()))
        .map_err(sql_err)?;
    let out = work(conn);
    conn.progress_handler(PROGRESS_STEPS, None::<fn() -> bool>)
        .map_err(sql_err)?;
    match (out, budget.stopped()) {
        (Err(_), Some(why)) => Err(why),
        (out, _) => out,
    }
}

fn load_and_query(
    conn: &Connection,
    tables: Vec<Loaded>,
    sql: &str,
    params: Vec<Value>,
    setup: Option<Setup>,
    budget: &Budget,
) -> Result<Vec<Vec<Value>>, CoordError> {
    if let Some(setup) = setup {
        setup(conn).map_err(sql_err)?;
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
            if let Some(why) = budget.stopped() {
                return Err(why);
            }
            ins.execute(rusqlite::params_from_iter(row.into_iter().map(to_sqlite)))
                .map_err(sql_err)?;
        }
    }
    query_on(conn, sql, params, budget)
}

/// Rows are charged to the budget in batches of this many.
const CHARGE_EVERY: usize = 256;

fn query_on(
    conn: &Connection,
    sql: &str,
    params: Vec<Value>,
    budget: &Budget,
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
    let mut charged = 0;
    while let Some(r) = rows.next().map_err(sql_err)? {
        let mut row = Vec::with_capacity(n);
        for i in 0..n {
            row.push(from_sqlite(r.get_ref(i).map_err(sql_err)?));
        }
        out.push(row);
        if out.len() - charged == CHARGE_EVERY {
            budget.charge_rows(&out[charged..])?;
            charged = out.len();
        }
    }
    budget.charge_rows(&out[charged..])?;
    Ok(out)
}

/// Loads `tables` into a fresh scratch database and runs `sql` with `params`, off the async
/// threads, within `budget`.
pub async fn query(
    tables: Vec<Loaded>,
    sql: String,
    params: Vec<Value>,
    budget: &Arc<Budget>,
) -> Result<Vec<Vec<Value>>, CoordError> {
    let budget = budget.clone();
    tokio::task::spawn_blocking(move || run(tables, &sql, params, None, &budget))
        .await
        .map_err(|e| CoordError::Internal(format!("scratch query panicked: {e}")))?
}

/// Like [`query`], after `setup` registered functions on the database.
pub async fn query_with(
    tables: Vec<Loaded>,
    sql: String,
    params: Vec<Value>,
    setup: Setup,
    budget: &Arc<Budget>,
) -> Result<Vec<Vec<Value>>, CoordError> {
    let budget = budget.clone();
    tokio::task::spawn_blocking(move || run(tables, &sql, params, Some(setup), &budget))
        .await
        .map_err(|e| CoordError::Internal(format!("scratch query panicked: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(timeout_ms: Option<u64>, memory: &str) -> Arc<Budget> {
        let mut s = crate::session::Session::new("u", "d");
        s.deadline =
            timeout_ms.map(|ms| tokio::time::Instant::now() + std::time::Duration::from_millis(ms));
        s.settings
            .insert("tessera.statement_memory".into(), memory.into());
        Budget::for_session(
            &s,
            &crate::exec::budget::SharedMemory::new(1 << 30, 1 << 20),
        )
    }

    const RUNAWAY: &str =
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n FROM r";

    #[tokio::test]
    async fn a_runaway_query_stops_at_its_deadline() {
        let start = std::time::Instant::now();
        let e = query(vec![], RUNAWAY.into(), vec![], &budget(Some(200), "64GB"))
            .await
            .expect_err("stopped");
        assert_eq!(e.sqlstate(), "57014", "{e}");
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_runaway_query_stops_at_its_memory_budget() {
        let e = query(vec![], RUNAWAY.into(), vec![], &budget(None, "8MB"))
            .await
            .expect_err("stopped");
        assert_eq!(e.sqlstate(), "53200", "{e}");
    }

    #[tokio::test]
    async fn a_cancel_stops_a_pulled_join() {
        let b = budget(None, "64GB");
        let rows: Vec<Vec<Value>> = (0..2000).map(|i| vec![Value::Integer(i)]).collect();
        let tables = vec![
            Loaded::table_of("a", &["id"], rows.clone()),
            Loaded::table_of("b", &["id"], rows),
        ];
        let stop = b.clone();
        let canceller = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            stop.cancel_for_test();
        });
        let e = query(
            tables,
            "SELECT count(*) FROM a, b, a AS c".into(),
            vec![],
            &b,
        )
        .await
        .expect_err("stopped");
        canceller.await.expect("canceller");
        assert_eq!(e.sqlstate(), "57014", "{e}");
    }

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
            &budget(None, "1GB"),
        )
        .await
        .expect("query");
        assert_eq!(out, vec![vec![Value::Integer(5), Value::Integer(20)]]);
    }
}
