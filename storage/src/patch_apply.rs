//! Applies a patchset through the connection's cached statements. SQLite's own
//! `sqlite3changeset_apply` prepares its statements (and reads each table's columns) again on
//! every call and sets `PRAGMA defer_foreign_keys`, which expires every statement the
//! connection has cached: a transaction that replays its changes before each statement
//! ([`crate::deferred`]) paid for parsing all of its SQL again, every time. Here each table's
//! columns are read once per schema version and its INSERT, UPDATE and DELETE are prepared
//! once; the result is the same as SQLite's strict apply of a patchset (a conflict stops it,
//! nothing of it stays).

use crate::error::StorageError;
use crate::patchset::{Change, Datum, Op};
use rusqlite::{ffi, params_from_iter, Connection, ErrorCode};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write;
use std::rc::Rc;

/// Why a change could not apply, as SQLite's conflict handler would be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// A row to insert is here already (`SQLITE_CHANGESET_CONFLICT`).
    Exists,
    /// A row to change or delete is missing (`SQLITE_CHANGESET_NOTFOUND`).
    Missing,
    /// A constraint other than the primary key fails (`SQLITE_CHANGESET_CONSTRAINT`).
    Constraint,
}

impl Conflict {
    /// SQLite's code for the conflict.
    pub fn code(self) -> std::ffi::c_int {
        match self {
            Conflict::Exists => ffi::SQLITE_CHANGESET_CONFLICT,
            Conflict::Missing => ffi::SQLITE_CHANGESET_NOTFOUND,
            Conflict::Constraint => ffi::SQLITE_CHANGESET_CONSTRAINT,
        }
    }
}

/// What became of a patchset.
pub enum Outcome {
    /// Applied: the tables it changed.
    Applied(Vec<String>),
    /// A change conflicted (nothing of the patchset stays): its table and why.
    Conflicted(String, Conflict),
    /// A table's columns are not what the patchset has (a schema change between); SQLite's
    /// own apply must judge it. Nothing was applied.
    Unsure,
}

/// A table's columns as SQLite's session names them: the visible ones in order, with
/// `_rowid_` first for a table without a primary key.
type Columns = Rc<Vec<String>>;

thread_local! {
    /// Columns by table, with the schema version they were read at, on a thread that owns
    /// one connection for its whole life ([`keep_columns_on_this_thread`]); `None` elsewhere.
    static COLUMNS: RefCell<Option<HashMap<String, (i64, Columns)>>> = const { RefCell::new(None) };
}

/// Lets this thread keep tables' columns between patchsets: it owns one connection for its
/// whole life (a shard's worker, `worker.rs`), so a table and schema version name one list
/// of columns.
pub fn keep_columns_on_this_thread() {
    COLUMNS.with(|m| *m.borrow_mut() = Some(HashMap::new()));
}

/// Applies `changes` inside `conn`'s open transaction (see the module documentation).
pub fn apply(conn: &Connection, changes: &[u8]) -> Result<Outcome, StorageError> {
    let changes = crate::patchset::decode(changes)?;
    let version: i64 = conn
        .prepare_cached("PRAGMA main.schema_version")?
        .query_row([], |r| r.get(0))?;
    let mut plans = Vec::with_capacity(changes.len());
    for change in &changes {
        let columns = columns(conn, &change.table, version)?;
        if columns.len() != change.values.len() {
            return Ok(Outcome::Unsure);
        }
        plans.push(columns);
    }
    conn.prepare_cached("SAVEPOINT tessera_apply")?
        .execute([])?;
    let outcome = apply_all(conn, &changes, &plans);
    let end = match &outcome {
        Ok(Outcome::Applied(_)) => "RELEASE tessera_apply",
        _ => "ROLLBACK TO tessera_apply",
    };
    conn.prepare_cached(end)?.execute([])?;
    if end.starts_with("ROLLBACK") {
        conn.prepare_cached("RELEASE tessera_apply")?.execute([])?;
    }
    outcome
}

fn apply_all(
    conn: &Connection,
    changes: &[Change],
    plans: &[Columns],
) -> Result<Outcome, StorageError> {
    let mut tables: Vec<String> = Vec::new();
    for (change, columns) in changes.iter().zip(plans) {
        if tables.last() != Some(&change.table) {
            tables.push(change.table.clone());
        }
        if let Some(conflict) = apply_one(conn, change, columns)? {
            return Ok(Outcome::Conflicted(change.table.clone(), conflict));
        }
    }
    Ok(Outcome::Applied(tables))
}

/// Applies one change; the conflict it met, if any.
fn apply_one(
    conn: &Connection,
    change: &Change,
    columns: &Columns,
) -> Result<Option<Conflict>, StorageError> {
    let table = quoted(&change.table);
    let mut sql = String::with_capacity(64);
    let mut args: Vec<&Datum> = Vec::with_capacity(change.values.len());
    match change.op {
        Op::Insert => {
            let _ = write!(sql, "INSERT INTO main.{table} (");
            for (i, c) in columns.iter().enumerate() {
                sql.push_str(if i == 0 { "" } else { ", " });
                sql.push_str(&column(c));
            }
            sql.push_str(") VALUES (");
            for i in 0..columns.len() {
                let _ = write!(sql, "{}?{}", if i == 0 { "" } else { ", " }, i + 1);
            }
            sql.push(')');
            args.extend(
                change
                    .values
                    .iter()
                    .map(|v| v.as_ref().unwrap_or(&Datum::Null)),
            );
            return match conn.prepare_cached(&sql)?.execute(params_from_iter(args)) {
                Ok(_) => Ok(None),
                Err(e) if is_constraint(&e) => Ok(Some(match exists(conn, change, columns)? {
                    true => Conflict::Exists,
                    false => Conflict::Constraint,
                })),
                Err(e) => Err(e.into()),
            };
        }
        Op::Update => {
            let _ = write!(sql, "UPDATE main.{table} SET ");
            let mut n = 0;
            for ((c, v), pk) in columns.iter().zip(&change.values).zip(&change.pk) {
                if let (Some(v), false) = (v, pk) {
                    n += 1;
                    let _ = write!(
                        sql,
                        "{}{} = ?{n}",
                        if n == 1 { "" } else { ", " },
                        column(c)
                    );
                    args.push(v);
                }
            }
            if n == 0 {
                // Nothing changed but the row must be there, as SQLite's apply checks.
                return Ok((!exists(conn, change, columns)?).then_some(Conflict::Missing));
            }
        }
        Op::Delete => {
            let _ = write!(sql, "DELETE FROM main.{table}");
        }
    }
    where_key(&mut sql, change, columns, args.len());
    args.extend(change.key());
    match conn.prepare_cached(&sql)?.execute(params_from_iter(args)) {
        Ok(0) => Ok(Some(Conflict::Missing)),
        Ok(_) => Ok(None),
        Err(e) if is_constraint(&e) => Ok(Some(Conflict::Constraint)),
        Err(e) => Err(e.into()),
    }
}

/// Whether the row `change` names by its key is in its table.
fn exists(conn: &Connection, change: &Change, columns: &Columns) -> Result<bool, StorageError> {
    let mut sql = format!("SELECT 1 FROM main.{}", quoted(&change.table));
    where_key(&mut sql, change, columns, 0);
    let found = conn
        .prepare_cached(&sql)?
        .exists(params_from_iter(change.key()))?;
    Ok(found)
}

/// Appends ` WHERE key1 = ?n AND …`, numbering parameters after `before` others.
fn where_key(sql: &mut String, change: &Change, columns: &Columns, before: usize) {
    let mut n = before;
    for (c, _) in columns.iter().zip(&change.pk).filter(|(_, pk)| **pk) {
        n += 1;
        let word = if n == before + 1 { " WHERE " } else { " AND " };
        let _ = write!(sql, "{word}{} = ?{n}", column(c));
    }
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A column as SQL names it: the rowid unquoted (a quoted name would not mean it).
fn column(name: &str) -> String {
    match name {
        "_rowid_" => name.to_string(),
        _ => quoted(name),
    }
}

/// `table`'s columns at schema `version`, read once per version.
fn columns(conn: &Connection, table: &str, version: i64) -> Result<Columns, StorageError> {
    if let Some(columns) = COLUMNS.with(|m| {
        m.borrow()
            .as_ref()?
            .get(table)
            .filter(|(v, _)| *v == version)
            .map(|(_, c)| c.clone())
    }) {
        return Ok(columns);
    }
    let mut columns = Vec::new();
    let mut keyed = false;
    {
        let mut info =
            conn.prepare_cached("SELECT name, pk, hidden FROM pragma_table_xinfo(?1, 'main')")?;
        let mut rows = info.query([table])?;
        while let Some(r) = rows.next()? {
            let (name, pk, hidden): (String, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            if hidden == 0 {
                columns.push(name);
                keyed |= pk != 0;
            }
        }
    }
    if !keyed && !columns.is_empty() {
        columns.insert(0, "_rowid_".to_string());
    }
    let columns = Rc::new(columns);
    COLUMNS.with(|m| {
        if let Some(m) = m.borrow_mut().as_mut() {
            if m.len() > 4096 {
                m.clear();
            }
            m.insert(table.to_string(), (version, columns.clone()));
        }
    });
    Ok(columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Capture;

    const SCHEMA: &str = "CREATE TABLE k (id INTEGER PRIMARY KEY, v TEXT, n REAL);
         CREATE TABLE c (a TEXT, b INTEGER, v BLOB, PRIMARY KEY (a, b)) WITHOUT ROWID;
         CREATE TABLE r (v TEXT, w INTEGER);
         CREATE TABLE u (id INTEGER PRIMARY KEY, email TEXT UNIQUE);";

    fn db() -> Connection {
        let c = Connection::open_in_memory().expect("open");
        c.execute_batch(SCHEMA).expect("schema");
        c
    }

    fn dump(c: &Connection) -> Vec<String> {
        let mut out = Vec::new();
        for sql in [
            "SELECT quote(id) || hex(v) || typeof(v) || quote(n) FROM k ORDER BY id",
            "SELECT quote(a) || quote(b) || quote(v) FROM c ORDER BY a, b",
            "SELECT rowid || quote(v) || quote(w) FROM r ORDER BY rowid",
            "SELECT quote(id) || quote(email) FROM u ORDER BY id",
        ] {
            let mut st = c.prepare(sql).expect("prepare");
            let rows = st.query_map([], |r| r.get::<_, String>(0)).expect("query");
            out.extend(rows.map(|r| r.expect("row")));
        }
        out
    }

    /// Runs `sql` on `first`, capturing its row changes.
    fn captured(first: &Connection, sql: &str) -> Vec<u8> {
        first.execute_batch("BEGIN").expect("begin");
        let capture = Capture::start(first).expect("start");
        first.execute_batch(sql).expect("run");
        let changes = capture.finish(first).expect("finish").expect("captured");
        first.execute_batch("COMMIT").expect("commit");
        changes
    }

    fn applied(copy: &Connection, changes: &[u8]) -> Outcome {
        copy.execute_batch("BEGIN").expect("begin");
        let outcome = apply(copy, changes).expect("apply");
        copy.execute_batch("COMMIT").expect("commit");
        outcome
    }

    #[test]
    fn a_copy_ends_as_its_first_copy_through_every_kind_of_change() {
        keep_columns_on_this_thread();
        let (first, copy) = (db(), db());
        for sql in [
            "INSERT INTO k VALUES (1, 'a', 1.5), (2, NULL, 2), (3, 'c', NULL);
             INSERT INTO c VALUES ('x', 1, x'00ff'), ('y', 2, NULL);
             INSERT INTO r VALUES ('one', 1), ('two', 2);
             INSERT INTO u VALUES (1, 'a@x'), (2, 'b@x');",
            "UPDATE k SET v = 'b', n = 9 WHERE id = 2; DELETE FROM k WHERE id = 3;
             UPDATE c SET v = x'01' WHERE a = 'x'; DELETE FROM c WHERE a = 'y';
             UPDATE r SET w = 20 WHERE v = 'two'; DELETE FROM r WHERE v = 'one';
             UPDATE u SET email = 'c@x' WHERE id = 2;",
            // Text that is not UTF-8 arrives byte for byte.
            "INSERT INTO k VALUES (4, CAST(x'c328ff' AS TEXT), 0);",
            // A changed key is a delete and an insert.
            "UPDATE k SET id = 10 WHERE id = 1;",
        ] {
            let changes = captured(&first, sql);
            assert!(
                matches!(applied(&copy, &changes), Outcome::Applied(_)),
                "{sql}"
            );
            assert_eq!(dump(&first), dump(&copy), "after {sql}");
        }
    }

    #[test]
    fn a_conflict_is_named_and_leaves_nothing_of_the_patchset() {
        let (first, copy) = (db(), db());
        copy.execute_batch("INSERT INTO k VALUES (2, 'here', 0); INSERT INTO u VALUES (9, 'a@x')")
            .expect("seed");
        let before = dump(&copy);
        let cases = [
            (
                "INSERT INTO k VALUES (1, 'a', 0), (2, 'b', 0)",
                Conflict::Exists,
            ),
            ("INSERT INTO u VALUES (1, 'a@x')", Conflict::Constraint),
        ];
        for (sql, conflict) in cases {
            let changes = captured(&first, sql);
            match applied(&copy, &changes) {
                Outcome::Conflicted(_, c) => assert_eq!(c, conflict, "{sql}"),
                _ => panic!("{sql} applied"),
            }
            assert_eq!(dump(&copy), before, "{sql} left part of itself");
        }
        first
            .execute_batch("INSERT INTO k VALUES (5, 'e', 0)")
            .expect("seed");
        for sql in [
            "UPDATE k SET v = 'f' WHERE id = 5",
            "DELETE FROM k WHERE id = 5",
        ] {
            let changes = captured(&first, sql);
            match applied(&copy, &changes) {
                Outcome::Conflicted(t, c) => assert_eq!((t.as_str(), c), ("k", Conflict::Missing)),
                _ => panic!("{sql} applied"),
            }
        }
    }

    #[test]
    fn a_patchset_from_before_a_schema_change_is_left_to_sqlite() {
        keep_columns_on_this_thread();
        let (first, copy) = (db(), db());
        let changes = captured(&first, "INSERT INTO k VALUES (1, 'a', 0)");
        assert!(matches!(applied(&copy, &changes), Outcome::Applied(_)));
        copy.execute_batch("ALTER TABLE k ADD COLUMN extra TEXT")
            .expect("alter");
        let changes = captured(&first, "INSERT INTO k VALUES (2, 'b', 0)");
        assert!(matches!(applied(&copy, &changes), Outcome::Unsure));
    }
}
