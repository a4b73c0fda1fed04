//! Data versions: a counter per (shard, table) that changes after every committed write.
//!
//! Coordinators cache query results and check these versions before serving one, so
//! the versions must never let a cached result hide an acknowledged write:
//!
//! - Before a statement that may write runs, its target tables are added to the
//!   connection's pending set. The targets come from SQLite's authorizer, which names
//!   every table an INSERT, UPDATE or DELETE (including `DELETE` without `WHERE`, and
//!   the UPDATE of an upsert) writes while the statement compiles; they are remembered
//!   by SQL text. A commit moves the pending set to "committed" (a rollback keeps it for
//!   the next commit: an extra version change is harmless, a missing one is not).
//! - After the job that committed, and *before* its result is returned (so before any
//!   client is told the write happened), each changed table gets a fresh value from a
//!   node-wide sequence.
//! - A reader records versions *before* its statement starts reading, so any write whose
//!   version it saw is already in what it reads.
//!
//! Values are overwritten, never max-merged: each value is written once, so a table's
//! version, once changed, can never return to an earlier value a reader recorded. (A
//! max-merge could: a slow publisher with a smaller value would be swallowed.) The node's
//! `incarnation` changes at every start, so versions from before a restart never match.

use dashmap::DashMap;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::Connection;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tessera_shared::proto::VersionKey;
use tessera_shared::REFERENCE_SCOPE;

/// The data versions of every table on this node.
pub struct DataVersions {
    incarnation: u64,
    seq: AtomicU64,
    tables: DashMap<(u64, String), u64>,
}

impl Default for DataVersions {
    fn default() -> Self {
        DataVersions::new()
    }
}

impl DataVersions {
    /// Fresh versions with a new incarnation (from the clock and process id).
    pub fn new() -> DataVersions {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let incarnation = (nanos ^ (u64::from(std::process::id()) << 32)).max(1);
        DataVersions {
            incarnation,
            seq: AtomicU64::new(0),
            tables: DashMap::new(),
        }
    }

    /// This node's incarnation: it changes at every start.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The current version of each key (0: never written since start).
    pub fn get(&self, keys: &[VersionKey]) -> Vec<u64> {
        keys.iter()
            .map(|k| {
                self.tables
                    .get(&(k.scope, k.table.to_lowercase()))
                    .map(|v| *v)
                    .unwrap_or(0)
            })
            .collect()
    }

    fn publish(&self, changed: HashMap<u64, HashSet<String>>) {
        let v = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        for (scope, tables) in changed {
            for t in tables {
                self.tables.insert((scope, t.to_lowercase()), v);
            }
        }
    }
}

type Changed = HashMap<u64, HashSet<String>>;

/// `(database, table)` pairs a statement writes.
type Targets = Arc<[(String, String)]>;

/// Tables each write statement targets, as `(database, table)`, by SQL text (all connections).
static WRITE_TARGETS: std::sync::LazyLock<DashMap<String, Targets>> =
    std::sync::LazyLock::new(DashMap::new);

/// Distinct statements remembered in [`WRITE_TARGETS`] before it is cleared.
const WRITE_TARGETS_LIMIT: usize = 4096;

/// One connection's changes: what its open transaction wrote, and what it committed.
pub struct ChangeTracker {
    main_scope: u64,
    versions: Arc<DataVersions>,
    /// Write targets the authorizer saw while a statement compiled.
    compiling: Mutex<Vec<(String, String)>>,
    pending: Mutex<Changed>,
    committed: Mutex<Changed>,
}

impl ChangeTracker {
    /// Hooks `conn` (authorizer and commit hook) and returns its tracker.
    ///
    /// `main_scope` is the scope of the connection's `main` database: the shard id, or
    /// [`REFERENCE_SCOPE`] for the reference database itself. An attached `ref` database
    /// is always [`REFERENCE_SCOPE`].
    pub fn install(
        conn: &mut Connection,
        versions: Arc<DataVersions>,
        main_scope: u64,
    ) -> rusqlite::Result<Arc<ChangeTracker>> {
        let t = Arc::new(ChangeTracker {
            main_scope,
            versions,
            compiling: Mutex::default(),
            pending: Mutex::default(),
            committed: Mutex::default(),
        });
        let a = t.clone();
        // The table a DROP being compiled removes: SQLite authorizes that as a DELETE too.
        let mut dropping: Option<String> = None;
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            if let AuthAction::DropTable { table_name }
            | AuthAction::DropTempTable { table_name }
            | AuthAction::DropView {
                view_name: table_name,
            }
            | AuthAction::DropTempView {
                view_name: table_name,
            }
            | AuthAction::DropVtable { table_name, .. } = ctx.action
            {
                dropping = Some(table_name.to_string());
            }
            let table = match ctx.action {
                AuthAction::Insert { table_name }
                | AuthAction::Update { table_name, .. }
                | AuthAction::Delete { table_name } => table_name,
                _ => return Authorization::Allow,
            };
            if table.starts_with("sqlite_") {
                return Authorization::Allow;
            }
            if let Ok(mut c) = a.compiling.lock() {
                let db = ctx.database_name.unwrap_or("main");
                c.push((db.to_string(), table.to_string()));
            }
            match ctx.action {
                // A DROP's own DELETE: `IGNORE` would skip the DROP.
                AuthAction::Delete { table_name } if dropping.as_deref() == Some(table_name) => {
                    dropping = None;
                    Authorization::Allow
                }
                // `IGNORE` for a DELETE statement deletes all the same, row by row: SQLite's
                // truncate optimization (`DELETE FROM t` without WHERE) would bypass the
                // pre-update hook, and a statement compiled with it, cached, and run later
                // under an SQLite session would record no change (`capture`): its rows
                // deleted nowhere else.
                AuthAction::Delete { .. } => Authorization::Ignore,
                _ => Authorization::Allow,
            }
        }))?;
        let c = t.clone();
        conn.commit_hook(Some(move || {
            if let (Ok(mut p), Ok(mut done)) = (c.pending.lock(), c.committed.lock()) {
                for (scope, tables) in p.drain() {
                    done.entry(scope).or_default().extend(tables);
                }
            }
            false
        }))?;
        // No rollback hook clears the pending set: SQLite also rolls back when it re-prepares
        // a statement after a schema change (ALTER TABLE), then runs it again without another
        // `will_run`. Targets of a write that really rolled back are published with the next
        // commit instead: a spurious invalidation, never a missed one.
        Ok(t)
    }

    /// Records that `sql`, about to run on `conn`, may write: its target tables join the
    /// open transaction's changes. Call it for every statement that is not read-only.
    pub fn will_run(&self, conn: &Connection, sql: &str) -> rusqlite::Result<()> {
        let targets = match WRITE_TARGETS.get(sql) {
            Some(t) => t.clone(),
            None => {
                self.take_compiled();
                // Compile once more, uncached, to let the authorizer name the targets.
                drop(conn.prepare(sql)?);
                let t: Targets = self.take_compiled().into();
                if WRITE_TARGETS.len() >= WRITE_TARGETS_LIMIT {
                    WRITE_TARGETS.clear();
                }
                WRITE_TARGETS.insert(sql.to_string(), t.clone());
                t
            }
        };
        self.take_compiled();
        if let Ok(mut p) = self.pending.lock() {
            for (db, table) in targets.iter() {
                let scope = match db.as_str() {
                    "main" => self.main_scope,
                    "ref" => REFERENCE_SCOPE,
                    _ => continue,
                };
                let set = p.entry(scope).or_default();
                if !set.contains(table.as_str()) {
                    set.insert(table.clone());
                }
            }
        }
        Ok(())
    }

    /// Records that the open transaction changes `tables` of the main database (row changes
    /// applied from another copy, which compile no statement naming them).
    pub fn will_change(&self, tables: &[String]) {
        if let Ok(mut p) = self.pending.lock() {
            p.entry(self.main_scope)
                .or_default()
                .extend(tables.iter().cloned());
        }
    }

    fn take_compiled(&self) -> Vec<(String, String)> {
        self.compiling
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    }

    /// Gives every table committed since the last call a new version. Runs after each job,
    /// before its result is returned.
    pub fn publish(&self) {
        let changed = match self.committed.lock() {
            Ok(mut c) if !c.is_empty() => std::mem::take(&mut *c),
            _ => return,
        };
        self.versions.publish(changed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(scope: u64, table: &str) -> VersionKey {
        VersionKey {
            scope,
            table: table.into(),
        }
    }

    #[test]
    fn a_delete_of_every_row_compiled_early_is_still_recorded_and_drop_drops() {
        let mut c = Connection::open_in_memory().expect("open");
        let _t = ChangeTracker::install(&mut c, Arc::new(DataVersions::new()), 7).expect("track");
        c.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY); INSERT INTO t VALUES (1), (2);")
            .expect("seed");
        // Compiled (and cached) before any session exists, as a read-only check would.
        assert!(!c
            .prepare_cached("DELETE FROM t")
            .expect("compile")
            .readonly());
        c.execute_batch("BEGIN").expect("begin");
        let recording = crate::capture::Capture::start(&c).expect("capture");
        c.prepare_cached("DELETE FROM t")
            .expect("cached")
            .raw_execute()
            .expect("delete");
        let changes = recording.finish(&c).expect("finish").expect("recorded");
        c.execute_batch("ROLLBACK").expect("rollback");
        assert_eq!(
            crate::changed_rows::changed_rows(&changes)
                .expect("rows")
                .len(),
            2
        );
        c.execute_batch("DROP TABLE t").expect("drop");
        assert!(c.prepare("SELECT * FROM t").is_err(), "t is gone");
    }

    #[test]
    fn committed_writes_change_versions_and_rollbacks_do_not() {
        let versions = Arc::new(DataVersions::new());
        let mut c = Connection::open_in_memory().expect("open");
        let t = ChangeTracker::install(&mut c, versions.clone(), 7).expect("track");
        let run = |c: &Connection, sql: &str| {
            for s in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                let mut st = c.prepare(s).expect("prepare");
                if !st.readonly() {
                    t.will_run(c, s).expect("will run");
                }
                if st.column_count() > 0 {
                    let mut rows = st.raw_query();
                    while rows.next().expect("row").is_some() {}
                } else {
                    st.raw_execute().expect("run");
                }
            }
            t.publish();
        };
        run(
            &c,
            "CREATE TABLE a (x INTEGER PRIMARY KEY, y INTEGER); CREATE TABLE b (x INTEGER)",
        );
        let keys = [key(7, "a"), key(7, "b"), key(8, "a")];
        assert_eq!(versions.get(&keys), vec![0, 0, 0]);

        run(&c, "INSERT INTO a VALUES (1, 0), (2, 0)");
        let v1 = versions.get(&keys);
        assert!(v1[0] > 0, "a changed: {v1:?}");
        assert_eq!(&v1[1..], &[0, 0], "b and another shard's a did not");

        // A rolled-back write changes nothing (until the next commit, conservatively).
        run(&c, "BEGIN; INSERT INTO b VALUES (1); ROLLBACK");
        assert_eq!(versions.get(&keys), v1);

        // DELETE without WHERE (SQLite's truncate optimisation) still counts.
        run(&c, "DELETE FROM a");
        let v2 = versions.get(&keys);
        assert!(v2[0] > v1[0], "{v2:?} after {v1:?}");

        // A transaction publishes only when it commits.
        run(&c, "BEGIN; UPDATE a SET y = 3; INSERT INTO b VALUES (5)");
        assert_eq!(versions.get(&keys), v2);
        run(&c, "COMMIT");
        let v3 = versions.get(&keys);
        assert!(v3[0] > v2[0] && v3[1] > 0, "{v3:?}");

        // An upsert's UPDATE branch counts, and a read changes nothing.
        run(
            &c,
            "INSERT INTO a VALUES (1, 0) ON CONFLICT (x) DO UPDATE SET y = 9",
        );
        let v4 = versions.get(&keys);
        assert!(v4[0] > v3[0], "{v4:?}");
        run(&c, "SELECT * FROM a, b");
        assert_eq!(versions.get(&keys), v4);

        // A schema change does not disturb tracking of later writes.
        run(&c, "ALTER TABLE a ADD COLUMN note TEXT DEFAULT 'n'");
        let v5 = versions.get(&keys);
        run(&c, "DELETE FROM a WHERE x = 1");
        let v6 = versions.get(&keys);
        assert!(v6[0] > v5[0], "{v6:?} after {v5:?}");
    }

    #[test]
    fn a_new_incarnation_never_matches_an_old_one() {
        let a = DataVersions::new();
        std::thread::sleep(std::time::Duration::from_millis(1));
        let b = DataVersions::new();
        assert_ne!(a.incarnation(), b.incarnation());
    }
}
