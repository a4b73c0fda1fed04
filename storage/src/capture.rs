//! Row changes, resolved once: a write runs on its shard's first copy, which records the rows
//! it changed as an SQLite patchset; the shard's other copies apply that patchset instead of
//! running the statements again. Every value a copy could compute differently (`now()`,
//! `random()`, `gen_random_uuid()`, defaults, the rows an `UPDATE … LIMIT` picks) is computed
//! once, on the first copy, so copies cannot drift apart through them.
//!
//! - [`Capture`] records a connection's changes to its `main` database (rowid tables
//!   included, with their rowids; Tessera's own `__tessera_*` tables excluded) from its start
//!   until [`Capture::finish`], which must run before the transaction ends: SQLite builds a
//!   patchset from the rows as they are at that moment.
//! - Document tables are virtual tables, whose writes SQLite's session extension does not
//!   see; a batch that wrote one reports no patchset ([`Capture::finish`] gives `None`) and
//!   its copies run its statements, as before.
//! - [`apply`] applies a patchset on another copy, inside its open transaction. A copy that
//!   disagrees with its first copy (a row to insert is there, a row to change is not) fails
//!   with `XX001` rather than drift further; a copy being filled, which may not hold a row yet,
//!   is lenient (its fill ends with a checksum that repairs any difference).
#![allow(unsafe_code)]

use crate::error::StorageError;
use crate::patch_apply::Outcome;
use rusqlite::ffi;
use rusqlite::Connection;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::marker::PhantomData;

thread_local! {
    /// Writes to document tables made on this thread. Each connection runs on a thread of its
    /// own (`worker.rs`), so a change of this count during a batch means the batch wrote one.
    static DOCUMENT_WRITES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Notes a write to a document table on this thread (called by `doctab`).
pub fn note_document_write() {
    DOCUMENT_WRITES.with(|c| c.set(c.get() + 1));
}

fn document_writes() -> u64 {
    DOCUMENT_WRITES.with(|c| c.get())
}

/// Records the row changes made through one connection (see the module documentation).
pub struct Capture<'c> {
    session: *mut ffi::sqlite3_session,
    document_writes: u64,
    _conn: PhantomData<&'c Connection>,
}

/// The session's table filter: every table of `main` but SQLite's and Tessera's own.
unsafe extern "C" fn user_tables(_: *mut c_void, name: *const c_char) -> c_int {
    // SAFETY: SQLite passes a valid NUL-terminated table name for the duration of the call.
    let name = unsafe { CStr::from_ptr(name) }.to_bytes();
    c_int::from(!(name.starts_with(b"__tessera") || name.starts_with(b"sqlite_")))
}

impl<'c> Capture<'c> {
    /// Starts recording `conn`'s changes. The capture borrows `conn`, so it cannot outlive it.
    pub fn start(conn: &'c Connection) -> Result<Capture<'c>, StorageError> {
        let mut session: *mut ffi::sqlite3_session = std::ptr::null_mut();
        // SAFETY: `conn.handle()` is the open connection's handle, valid while `conn` is
        // borrowed; "main" is a static NUL-terminated name; on success SQLite stores a new
        // session in `session`, which `Drop` deletes.
        let rc =
            unsafe { ffi::sqlite3session_create(conn.handle(), c"main".as_ptr(), &mut session) };
        check(conn, rc)?;
        let capture = Capture {
            session,
            document_writes: document_writes(),
            _conn: PhantomData,
        };
        let mut rowid: c_int = 1;
        // SAFETY: `session` is the live session created above; the option takes a pointer to
        // an int, read during the call. It must be set before any table is attached.
        let rc = unsafe {
            ffi::sqlite3session_object_config(
                session,
                ffi::SQLITE_SESSION_OBJCONFIG_ROWID,
                (&mut rowid as *mut c_int).cast(),
            )
        };
        check(conn, rc)?;
        // SAFETY: the filter is a plain function that ignores its context pointer; attaching
        // NULL records every table the filter accepts.
        unsafe {
            ffi::sqlite3session_table_filter(session, Some(user_tables), std::ptr::null_mut());
        }
        // SAFETY: as above; a NULL table name attaches all tables.
        let rc = unsafe { ffi::sqlite3session_attach(session, std::ptr::null()) };
        check(conn, rc)?;
        Ok(capture)
    }

    /// The patchset of every change since [`Capture::start`], read now (call it before the
    /// transaction commits or rolls back). `None` when the batch wrote a document table,
    /// whose changes SQLite does not record.
    pub fn finish(self, conn: &Connection) -> Result<Option<Vec<u8>>, StorageError> {
        self.patchset(conn)
    }

    /// [`Capture::finish`], recording on: the patchset so far.
    pub fn patchset(&self, conn: &Connection) -> Result<Option<Vec<u8>>, StorageError> {
        if document_writes() != self.document_writes {
            return Ok(None);
        }
        let mut n: c_int = 0;
        let mut buf: *mut c_void = std::ptr::null_mut();
        // SAFETY: `self.session` is live; SQLite allocates `n` bytes at `buf` on success.
        let rc = unsafe { ffi::sqlite3session_patchset(self.session, &mut n, &mut buf) };
        check(conn, rc)?;
        let bytes = if buf.is_null() || n <= 0 {
            Vec::new()
        } else {
            // SAFETY: SQLite returned `n` readable bytes at `buf`, which it allocated.
            unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), n as usize) }.to_vec()
        };
        // SAFETY: `buf` was allocated by SQLite (or is NULL, which sqlite3_free ignores).
        unsafe { ffi::sqlite3_free(buf) };
        Ok(Some(bytes))
    }
}

impl Drop for Capture<'_> {
    fn drop(&mut self) {
        // SAFETY: the session was created by `start` and is deleted exactly once, while the
        // connection it records is still open (the capture borrows it).
        unsafe { ffi::sqlite3session_delete(self.session) };
    }
}

fn check(conn: &Connection, rc: c_int) -> Result<(), StorageError> {
    if rc == ffi::SQLITE_OK {
        return Ok(());
    }
    // SAFETY: reading the connection's last error message, valid until the next call on it.
    let msg = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(conn.handle())) }
        .to_string_lossy()
        .into_owned();
    Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), Some(msg)).into())
}

/// The table a changeset iterator's current change is to.
///
/// # Safety
/// `it` must be a live iterator positioned on a change.
unsafe fn change_table(it: *mut ffi::sqlite3_changeset_iter) -> Option<String> {
    let mut table: *const c_char = std::ptr::null();
    let (mut columns, mut op, mut indirect): (c_int, c_int, c_int) = (0, 0, 0);
    // SAFETY: the caller guarantees `it`; SQLite writes the out-parameters, and the table
    // name stays valid while the iterator is on this change (it is copied at once).
    let rc =
        unsafe { ffi::sqlite3changeset_op(it, &mut table, &mut columns, &mut op, &mut indirect) };
    if rc != ffi::SQLITE_OK || table.is_null() {
        return None;
    }
    // SAFETY: SQLite returned a NUL-terminated name.
    Some(
        unsafe { CStr::from_ptr(table) }
            .to_string_lossy()
            .into_owned(),
    )
}

pub(crate) fn too_big() -> StorageError {
    StorageError::Sql {
        sqlstate: "54000",
        message: "a write's row changes exceed 2 GiB".into(),
    }
}

/// What the callbacks of [`apply`] know and learn.
struct Conflicts {
    lenient: bool,
    /// The first conflict met, described (strict mode), and its kind.
    first: Option<(String, c_int)>,
    /// The tables the patchset changes, as SQLite names them before applying each one's changes.
    tables: Vec<String>,
}

unsafe extern "C" fn on_table(ctx: *mut c_void, table: *const c_char) -> c_int {
    // SAFETY: as for `on_conflict`; SQLite passes a NUL-terminated table name, copied at once.
    let conflicts = unsafe { &mut *ctx.cast::<Conflicts>() };
    if !table.is_null() {
        let name = unsafe { CStr::from_ptr(table) }
            .to_string_lossy()
            .into_owned();
        conflicts.tables.push(name);
    }
    1
}

unsafe extern "C" fn on_conflict(
    ctx: *mut c_void,
    kind: c_int,
    it: *mut ffi::sqlite3_changeset_iter,
) -> c_int {
    // SAFETY: `ctx` is the `Conflicts` that `apply` passes and keeps alive (and does not
    // touch) for the duration of sqlite3changeset_apply, which calls this on its own thread.
    let conflicts = unsafe { &mut *ctx.cast::<Conflicts>() };
    if conflicts.lenient {
        return match kind {
            ffi::SQLITE_CHANGESET_CONFLICT | ffi::SQLITE_CHANGESET_DATA => {
                ffi::SQLITE_CHANGESET_REPLACE
            }
            _ => ffi::SQLITE_CHANGESET_OMIT,
        };
    }
    // SAFETY: SQLite passes the iterator positioned on the conflicting change.
    let table = unsafe { change_table(it) }.unwrap_or_default();
    conflicts
        .first
        .get_or_insert_with(|| (describe(kind, &table), kind));
    ffi::SQLITE_CHANGESET_ABORT
}

/// A conflict of kind `kind` in `table`, in words.
fn describe(kind: c_int, table: &str) -> String {
    let what = match kind {
        ffi::SQLITE_CHANGESET_CONFLICT => "a row to insert is already here",
        ffi::SQLITE_CHANGESET_NOTFOUND => "a row to change or delete is missing",
        ffi::SQLITE_CHANGESET_DATA => "a row to change differs",
        ffi::SQLITE_CHANGESET_CONSTRAINT => "a constraint fails",
        _ => "a foreign key fails",
    };
    format!("{what} in table \"{table}\"")
}

/// Applies a patchset captured on the shard's first copy to `conn` (inside its open
/// transaction; SQLite applies it within a savepoint, all or nothing), and returns the tables
/// it changed. `lenient` for a copy being filled: a row it lacks is skipped and a row it holds
/// already is replaced. Otherwise any conflict fails with `XX001`.
pub fn apply(
    conn: &Connection,
    changes: &[u8],
    lenient: bool,
) -> Result<Vec<String>, StorageError> {
    apply_with(conn, changes, lenient).map_err(|e| match e {
        Applied::Conflict(conflict, _) => StorageError::Sql {
            sqlstate: "XX001",
            message: format!(
                "this copy disagrees with its shard's first copy ({conflict}); the write was not applied here"
            ),
        },
        Applied::Failed(e) => e,
    })
}

/// Applies a transaction's own row changes, recorded on this copy, at its commit
/// ([`crate::deferred`]). Its rows were locked since, so only a value another transaction
/// committed meanwhile under a unique constraint other than the primary key can conflict:
/// `23505`, as PostgreSQL reports a deferred unique constraint at commit.
pub fn apply_own(conn: &Connection, changes: &[u8]) -> Result<Vec<String>, StorageError> {
    apply_with(conn, changes, false).map_err(|e| match e {
        Applied::Conflict(conflict, ffi::SQLITE_CHANGESET_CONFLICT | ffi::SQLITE_CHANGESET_CONSTRAINT) => {
            StorageError::Sql {
                sqlstate: "23505",
                message: format!("duplicate key value violates unique constraint ({conflict}, committed by a concurrent transaction)"),
            }
        }
        Applied::Conflict(conflict, _) => StorageError::Sql {
            sqlstate: "40001",
            message: format!("could not serialize access due to concurrent update ({conflict})"),
        },
        Applied::Failed(e) => e,
    })
}

/// Why a patchset did not apply.
enum Applied {
    /// A change met a conflict: described, and its kind.
    Conflict(String, c_int),
    /// SQLite failed otherwise.
    Failed(StorageError),
}

fn apply_with(conn: &Connection, changes: &[u8], lenient: bool) -> Result<Vec<String>, Applied> {
    if changes.is_empty() {
        return Ok(vec![]);
    }
    if !lenient {
        match crate::patch_apply::apply(conn, changes).map_err(Applied::Failed)? {
            Outcome::Applied(tables) => return Ok(tables),
            Outcome::Conflicted(table, c) => {
                return Err(Applied::Conflict(describe(c.code(), &table), c.code()))
            }
            // SQLite's own apply judges a patchset whose columns are not the table's.
            Outcome::Unsure => {}
        }
    }
    let len = c_int::try_from(changes.len()).map_err(|_| Applied::Failed(too_big()))?;
    let mut conflicts = Conflicts {
        lenient,
        first: None,
        tables: Vec::new(),
    };
    // SAFETY: `conn.handle()` is the open connection, borrowed for the call; SQLite only reads
    // the `len` bytes at `changes`; `conflicts` outlives the call and is reached only through
    // the context pointer while it runs.
    let rc = unsafe {
        ffi::sqlite3changeset_apply(
            conn.handle(),
            len,
            changes.as_ptr() as *mut c_void,
            Some(on_table),
            Some(on_conflict),
            (&mut conflicts as *mut Conflicts).cast(),
        )
    };
    if rc == ffi::SQLITE_OK {
        return Ok(conflicts.tables);
    }
    match conflicts.first {
        Some((conflict, kind)) => Err(Applied::Conflict(conflict, kind)),
        None => check(conn, rc)
            .map(|()| conflicts.tables)
            .map_err(Applied::Failed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let c = Connection::open_in_memory().expect("open");
        c.execute_batch(
            "CREATE TABLE k (id INTEGER PRIMARY KEY, v TEXT);
             CREATE TABLE r (v TEXT);
             CREATE TABLE __tessera_doclock (n INTEGER);
             INSERT INTO __tessera_doclock VALUES (0);",
        )
        .expect("schema");
        c
    }

    fn dump(c: &Connection) -> Vec<String> {
        let mut out = Vec::new();
        for sql in [
            "SELECT id || ':' || v FROM k ORDER BY id",
            "SELECT rowid || ':' || v FROM r ORDER BY rowid",
        ] {
            let mut st = c.prepare(sql).expect("prepare");
            let rows = st.query_map([], |r| r.get::<_, String>(0)).expect("query");
            out.extend(rows.map(|r| r.expect("row")));
        }
        out
    }

    /// Runs `sql` on `first` while capturing, then applies the patchset to `copy`; returns the
    /// tables it changed.
    fn replicate(first: &Connection, copy: &Connection, sql: &str) -> Vec<String> {
        first.execute_batch("BEGIN").expect("begin");
        let capture = Capture::start(first).expect("start");
        first.execute_batch(sql).expect("run");
        let changes = capture.finish(first).expect("finish").expect("captured");
        first.execute_batch("COMMIT").expect("commit");
        copy.execute_batch("BEGIN").expect("begin");
        let tables = apply(copy, &changes, false).expect("apply");
        copy.execute_batch("COMMIT").expect("commit");
        tables
    }

    #[test]
    fn copies_get_the_first_copys_values_not_their_own() {
        let (a, b) = (db(), db());
        replicate(
            &a,
            &b,
            "INSERT INTO k VALUES (1, hex(randomblob(8))), (2, 'x');
             INSERT INTO r VALUES (hex(randomblob(8))), ('y');
             UPDATE __tessera_doclock SET n = n + 1;",
        );
        assert_eq!(dump(&a), dump(&b));
        let tables = replicate(
            &a,
            &b,
            "UPDATE k SET v = hex(randomblob(4)) WHERE id = 1;
             DELETE FROM k WHERE id = 2;
             UPDATE r SET v = hex(randomblob(4)) WHERE rowid = 2;
             DELETE FROM r WHERE rowid = 1;",
        );
        assert_eq!(dump(&a), dump(&b));
        assert_eq!(dump(&a).len(), 2);
        assert_eq!(tables, vec!["k", "r"]);
        // Tessera's own tables are not replicated.
        let n: i64 = b
            .query_row("SELECT n FROM __tessera_doclock", [], |r| r.get(0))
            .expect("n");
        assert_eq!(n, 0);
    }

    #[test]
    fn changed_rows_name_each_row_by_its_key() {
        let a = db();
        a.execute_batch("INSERT INTO k VALUES (7, 'x'); INSERT INTO r VALUES ('a'), ('b');")
            .expect("seed");
        a.execute_batch("BEGIN").expect("begin");
        let capture = Capture::start(&a).expect("start");
        a.execute_batch(
            "INSERT INTO k VALUES (1, 'a'); UPDATE k SET v = 'y' WHERE id = 7;
             DELETE FROM r WHERE rowid = 1; INSERT INTO r VALUES ('c');",
        )
        .expect("write");
        let changes = capture.finish(&a).expect("finish").expect("captured");
        a.execute_batch("ROLLBACK").expect("rollback");
        let rows = crate::changed_rows::changed_rows(&changes).expect("rows");
        let mut seen: Vec<(String, Option<i64>)> = rows
            .iter()
            .map(|r| (r.table.clone(), r.inserted_int))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("k".into(), None),
                ("k".into(), Some(1)),
                ("r".into(), None),
                ("r".into(), Some(3)),
            ]
        );
        let k7: Vec<_> = rows
            .iter()
            .filter(|r| r.table == "k" && r.inserted_int.is_none())
            .collect();
        let mut key = vec![b'i'];
        key.extend_from_slice(&7i64.to_be_bytes());
        assert_eq!(k7[0].key, key);
        assert!(crate::changed_rows::changed_rows(b"garbage").is_err());
    }

    #[test]
    fn a_rolled_back_statement_leaves_nothing_to_apply() {
        let (a, b) = (db(), db());
        a.execute_batch("BEGIN").expect("begin");
        let capture = Capture::start(&a).expect("start");
        a.execute_batch("INSERT INTO k VALUES (1, 'a')")
            .expect("insert");
        assert!(a
            .execute_batch("INSERT INTO k VALUES (2, 'b'), (1, 'dup')")
            .is_err());
        let changes = capture.finish(&a).expect("finish").expect("captured");
        a.execute_batch("COMMIT").expect("commit");
        apply(&b, &changes, false).expect("apply");
        assert_eq!(dump(&b), vec!["1:a"]);
    }

    #[test]
    fn a_copy_that_disagrees_fails_unless_it_is_being_filled() {
        let (a, b) = (db(), db());
        b.execute_batch("INSERT INTO k VALUES (1, 'stale')")
            .expect("seed");
        a.execute_batch("BEGIN").expect("begin");
        let capture = Capture::start(&a).expect("start");
        a.execute_batch("INSERT INTO k VALUES (1, 'new'), (3, 'c'); ")
            .expect("insert");
        let changes = capture.finish(&a).expect("finish").expect("captured");
        a.execute_batch("COMMIT").expect("commit");
        b.execute_batch("BEGIN").expect("begin");
        let e = apply(&b, &changes, false).expect_err("conflict");
        assert_eq!(e.sqlstate(), "XX001", "{e}");
        b.execute_batch("ROLLBACK").expect("rollback");
        assert_eq!(dump(&b), vec!["1:stale"]);
        apply(&b, &changes, true).expect("lenient");
        assert_eq!(dump(&b), vec!["1:new", "3:c"]);
    }
}
