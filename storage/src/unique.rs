//! Which tables have a unique key besides their primary key (or rowid): the only keys two
//! transactions can both write without meeting on a row lock ([`crate::row_locks`] names rows
//! by primary key), so the only ones a commit must check its kept changes against.
//!
//! Answers are cached per connection thread (each connection has a thread of its own,
//! `worker.rs`) and dropped when the connection's schema changes.

use crate::changed_rows::changed_rows;
use crate::error::StorageError;
use rusqlite::Connection;
use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    /// The schema version the answers were read at, and the answers by table.
    static CACHE: RefCell<(i64, HashMap<String, bool>)> = RefCell::new((-1, HashMap::new()));
}

/// Whether any table a patchset of `segments` changes has a unique key other than its
/// primary key: a `UNIQUE` constraint or a unique index, partial or on expressions alike.
pub fn any_secondary(c: &Connection, segments: &[Vec<u8>]) -> Result<bool, StorageError> {
    let version: i64 = c
        .prepare_cached("PRAGMA main.schema_version")?
        .query_row([], |r| r.get(0))?;
    let mut tables: Vec<String> = Vec::new();
    for segment in segments {
        for row in changed_rows(segment)? {
            if !tables.contains(&row.table) {
                tables.push(row.table);
            }
        }
    }
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != version {
            *cache = (version, HashMap::new());
        }
        for table in tables {
            let has = match cache.1.get(&table) {
                Some(has) => *has,
                None => {
                    let has = has_secondary(c, &table)?;
                    cache.1.insert(table, has);
                    has
                }
            };
            if has {
                return Ok(true);
            }
        }
        Ok(false)
    })
}

/// Whether `table` has a unique index that is not its primary key's.
fn has_secondary(c: &Connection, table: &str) -> Result<bool, StorageError> {
    Ok(c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM pragma_index_list(?1, 'main') WHERE \"unique\" AND origin <> 'pk')",
    )?
    .query_row([table], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Capture;

    fn patchset(c: &Connection, sql: &str) -> Vec<u8> {
        c.execute_batch("BEGIN").expect("begin");
        let capture = Capture::start(c).expect("capture");
        c.execute_batch(sql).expect("write");
        let p = capture.finish(c).expect("patchset").expect("recorded");
        c.execute_batch("ROLLBACK").expect("rollback");
        p
    }

    #[test]
    fn only_keys_besides_the_primary_key_count() {
        let c = Connection::open_in_memory().expect("open");
        c.execute_batch(
            "CREATE TABLE pk (id INTEGER PRIMARY KEY, v TEXT);
             CREATE TABLE composite (a INTEGER, b INTEGER, v TEXT, PRIMARY KEY (a, b));
             CREATE TABLE keyless (v TEXT);
             CREATE TABLE uc (id INTEGER PRIMARY KEY, email TEXT UNIQUE);
             CREATE TABLE ui (id INTEGER PRIMARY KEY, v TEXT);
             CREATE INDEX ui_plain ON ui (v);",
        )
        .expect("schema");
        let no = [
            "INSERT INTO pk VALUES (1, 'a')",
            "INSERT INTO composite VALUES (1, 2, 'a')",
            "INSERT INTO keyless VALUES ('a')",
            "INSERT INTO ui VALUES (1, 'a')",
        ];
        for sql in no {
            assert!(
                !any_secondary(&c, &[patchset(&c, sql)]).expect("check"),
                "{sql}"
            );
        }
        assert!(
            any_secondary(&c, &[patchset(&c, "INSERT INTO uc VALUES (1, 'x')")]).expect("check")
        );
        // A unique index made later counts at once: the schema version changed.
        let ui = patchset(&c, "INSERT INTO ui VALUES (2, 'b')");
        assert!(!any_secondary(&c, std::slice::from_ref(&ui)).expect("check"));
        c.execute_batch("CREATE UNIQUE INDEX ui_v ON ui (lower(v)) WHERE v IS NOT NULL")
            .expect("index");
        assert!(any_secondary(&c, &[ui]).expect("check"));
    }
}
