//! Rowids for tables without a primary key (pgbench's `pgbench_history`, logs), handed out so
//! that transactions inserting at once take different ones. SQLite gives a new row the largest
//! rowid plus one; a transaction's statements run over the *committed* rows ([`crate::deferred`]),
//! so two open transactions inserting into one table would pick the same rowid, and the second
//! would wait for the first to end on that row's lock: every insert into the table serialized.
//!
//! On the shard's first copy, a batch's inserted rows whose rowid another open transaction may
//! have taken are moved (`UPDATE … SET rowid`, inside the batch's recording, which then holds
//! inserts at the new rowids) above the highest rowid handed out on that table. The other
//! copies apply the recorded rows as they are, so every copy holds the same rowids. Rowids of
//! transactions that roll back stay unused: they are hidden, and gaps are harmless (so is a
//! high mark left from a copy that was dropped and filled again).

use crate::changed_rows::changed_rows;
use crate::error::StorageError;
use rusqlite::Connection;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// The highest rowid handed out per (shard, table); `None` for a table with a primary key.
#[derive(Default)]
pub struct RowIds {
    high: Mutex<HashMap<(u64, String), Option<i64>>>,
}

impl RowIds {
    /// Moves the rows `changes` inserted into keyless tables of `shard` to rowids no other
    /// open transaction took; true when it moved any (the recording then holds other bytes).
    /// Runs under the shard's write lock, inside the batch's SQLite transaction.
    pub fn renumber(
        &self,
        c: &Connection,
        shard: u64,
        changes: &[u8],
    ) -> Result<bool, StorageError> {
        let mut inserted: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for row in changed_rows(changes)? {
            if let Some(id) = row.inserted_int {
                inserted.entry(row.table).or_default().push(id);
            }
        }
        if inserted.is_empty() {
            return Ok(false);
        }
        let mut high = self.high.lock().unwrap_or_else(|e| e.into_inner());
        let mut moved = false;
        for (table, ids) in inserted {
            let key = (shard, table);
            let entry = match high.get_mut(&key) {
                Some(e) => e,
                None => {
                    let keyless = keyless(c, &key.1)?;
                    high.entry(key.clone())
                        .or_insert(keyless.then_some(i64::MIN))
                }
            };
            let Some(h) = entry else {
                continue;
            };
            let max = ids.iter().copied().max().unwrap_or(i64::MIN);
            if ids.iter().all(|id| *id > *h) {
                *h = max;
                continue;
            }
            let mut next = (*h).max(max).saturating_add(1);
            let sql = format!(
                "UPDATE main.\"{}\" SET rowid = ?1 WHERE rowid = ?2",
                key.1.replace('"', "\"\"")
            );
            for id in ids {
                c.execute(&sql, [next, id])?;
                next = next.saturating_add(1);
            }
            *h = next - 1;
            moved = true;
        }
        Ok(moved)
    }
}

/// Whether `table` has no declared primary key (its rows are keyed by rowid alone).
fn keyless(c: &Connection, table: &str) -> Result<bool, StorageError> {
    let declared: i64 = c.query_row(
        "SELECT count(*) FROM pragma_table_info(?1) WHERE pk > 0",
        [table],
        |r| r.get(0),
    )?;
    Ok(declared == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Capture;

    /// One open transaction's insert, as `deferred` runs it: recorded, renumbered, rolled back.
    fn insert(c: &Connection, ids: &RowIds, sql: &str) -> Vec<i64> {
        c.execute_batch("BEGIN").expect("begin");
        let recording = Capture::start(c).expect("capture");
        c.execute_batch(sql).expect("insert");
        let mut changes = recording.patchset(c).expect("patchset").expect("recorded");
        if ids.renumber(c, 1, &changes).expect("renumber") {
            changes = recording.patchset(c).expect("again").expect("recorded");
        }
        drop(recording);
        c.execute_batch("ROLLBACK").expect("rollback");
        changed_rows(&changes)
            .expect("rows")
            .iter()
            .map(|r| r.inserted_int.expect("an insert"))
            .collect()
    }

    #[test]
    fn concurrent_inserts_into_a_keyless_table_take_distinct_rowids() {
        let c = Connection::open_in_memory().expect("open");
        c.execute_batch(
            "CREATE TABLE h (a int, b text); INSERT INTO h VALUES (1, 'x');
             CREATE TABLE k (id INTEGER PRIMARY KEY, v int);",
        )
        .expect("tables");
        let ids = RowIds::default();
        // Each runs over the committed rows (one, rowid 1) and rolls back, as open
        // transactions do: without renumbering all three would take rowid 2.
        assert_eq!(insert(&c, &ids, "INSERT INTO h VALUES (2, 'y')"), [2]);
        assert_eq!(insert(&c, &ids, "INSERT INTO h VALUES (3, 'z')"), [3]);
        assert_eq!(
            insert(&c, &ids, "INSERT INTO h VALUES (4, 'a'), (5, 'b')"),
            [4, 5]
        );
        // A key the user gives is never moved.
        assert_eq!(insert(&c, &ids, "INSERT INTO k VALUES (7, 0)"), [7]);
        assert_eq!(insert(&c, &ids, "INSERT INTO k VALUES (7, 1)"), [7]);
    }
}
