//! A transaction's row changes on one shard copy so far, kept for a durable prepare
//! ([`crate::prepared`]): each batch's patchset in order, cut back by `ROLLBACK TO SAVEPOINT`.
//!
//! Each open transaction runs on a connection thread of its own (`shards.rs`), so the changes
//! live in that thread's local storage. A batch that wrote a document table (whose changes
//! SQLite's session extension does not see) makes them *opaque*: such a transaction prepares
//! without a record, as before, and its copy loses it if its process dies before the commit.

use std::cell::RefCell;

#[derive(Default)]
struct Changes {
    segments: Vec<Vec<u8>>,
    /// Savepoints by name, with the number of segments made before each.
    marks: Vec<(String, usize)>,
    opaque: bool,
    prepared: bool,
    /// The transaction keeps its SQLite transaction open ([`crate::deferred`]).
    holding: bool,
    /// The changes came from the shard's first copy (`Some(lenient)`: applied as a copy's,
    /// leniently when it is being filled; see [`crate::capture::apply`]).
    copy: Option<bool>,
}

thread_local! {
    static CURRENT: RefCell<Changes> = RefCell::default();
}

/// A savepoint command, as the coordinator sends it (one statement to a batch).
#[derive(Debug, PartialEq)]
pub enum SavepointOp<'a> {
    /// `SAVEPOINT name`.
    Set(&'a str),
    /// `ROLLBACK TO name`.
    RollbackTo(&'a str),
    /// `RELEASE name`.
    Release(&'a str),
}

impl<'a> SavepointOp<'a> {
    /// The savepoint command `sql` is, if it is one.
    pub fn parse(sql: &'a str) -> Option<SavepointOp<'a>> {
        let sql = sql.trim();
        let after = |prefix: &str| {
            sql.get(..prefix.len())
                .filter(|h| h.eq_ignore_ascii_case(prefix))
                .map(|_| sql[prefix.len()..].trim())
        };
        if let Some(name) = after("ROLLBACK TO SAVEPOINT ").or_else(|| after("ROLLBACK TO ")) {
            return Some(SavepointOp::RollbackTo(name));
        }
        if let Some(name) = after("RELEASE SAVEPOINT ").or_else(|| after("RELEASE ")) {
            return Some(SavepointOp::Release(name));
        }
        after("SAVEPOINT ").map(SavepointOp::Set)
    }
}

/// Adds a batch's patchset (`None`: the batch's changes are unknown, see the module
/// documentation).
pub fn record(segment: Option<Vec<u8>>) {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        match segment {
            Some(s) if !s.is_empty() => c.segments.push(s),
            Some(_) => {}
            None => c.opaque = true,
        }
    });
}

/// Marks the transaction's changes unknown.
pub fn make_opaque() {
    record(None);
}

/// Follows a savepoint command that succeeded.
pub fn savepoint(op: &SavepointOp<'_>) {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        let at = |c: &Changes, name: &str| c.marks.iter().rposition(|(n, _)| n == name);
        match *op {
            SavepointOp::Set(name) => {
                let n = c.segments.len();
                c.marks.push((name.to_string(), n));
            }
            SavepointOp::RollbackTo(name) => {
                if let Some(i) = at(&c, name) {
                    let n = c.marks[i].1;
                    c.segments.truncate(n);
                    c.marks.truncate(i + 1);
                }
            }
            SavepointOp::Release(name) => {
                if let Some(i) = at(&c, name) {
                    c.marks.truncate(i);
                }
            }
        }
    });
}

/// Forgets everything recorded: the thread's connection serves another transaction next.
pub fn reset() {
    CURRENT.with(|c| *c.borrow_mut() = Changes::default());
}

/// Notes that the transaction prepared (its commit decision is being taken).
pub fn note_prepared() {
    CURRENT.with(|c| c.borrow_mut().prepared = true);
}

/// Whether the transaction prepared.
pub fn prepared() -> bool {
    CURRENT.with(|c| c.borrow().prepared)
}

/// Notes that the transaction holds its SQLite transaction open from now on.
pub fn hold() {
    CURRENT.with(|c| c.borrow_mut().holding = true);
}

/// Whether the transaction holds its SQLite transaction open ([`crate::deferred`]).
pub fn holding() -> bool {
    CURRENT.with(|c| c.borrow().holding)
}

/// Notes that the changes came from the shard's first copy (`lenient`: this copy is being
/// filled).
pub fn set_copy(lenient: bool) {
    CURRENT.with(|c| c.borrow_mut().copy = Some(lenient));
}

/// Whether the changes came from the shard's first copy, and if so whether leniently.
pub fn copy() -> Option<bool> {
    CURRENT.with(|c| c.borrow().copy)
}

/// How many patchsets the transaction keeps.
pub fn segment_count() -> usize {
    CURRENT.with(|c| c.borrow().segments.len())
}

/// The patchsets kept from the `from`-th on.
pub fn segments_from(from: usize) -> Vec<Vec<u8>> {
    CURRENT.with(|c| c.borrow().segments.get(from..).unwrap_or_default().to_vec())
}

/// How many bytes of row changes the transaction keeps.
pub fn kept_bytes() -> usize {
    CURRENT.with(|c| c.borrow().segments.iter().map(Vec::len).sum())
}

/// The savepoints set so far, with the number of segments made before each.
pub fn marks() -> Vec<(String, usize)> {
    CURRENT.with(|c| c.borrow().marks.clone())
}

/// The transaction's changes so far (those known: see [`snapshot`]).
pub fn segments() -> Vec<Vec<u8>> {
    CURRENT.with(|c| c.borrow().segments.clone())
}

/// The transaction's changes so far, or `None` when they are unknown.
pub fn snapshot() -> Option<Vec<Vec<u8>>> {
    CURRENT.with(|c| {
        let c = c.borrow();
        (!c.opaque).then(|| c.segments.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn savepoints_cut_back_the_changes() {
        std::thread::spawn(|| {
            record(Some(b"a".to_vec()));
            let sp = SavepointOp::parse("SAVEPOINT \"s1\"").expect("savepoint");
            assert_eq!(sp, SavepointOp::Set("\"s1\""));
            savepoint(&sp);
            record(Some(b"b".to_vec()));
            savepoint(&SavepointOp::Set("\"s2\""));
            record(Some(b"c".to_vec()));
            savepoint(&SavepointOp::parse("ROLLBACK TO \"s1\"").expect("rollback to"));
            assert_eq!(snapshot(), Some(vec![b"a".to_vec()]));
            // The savepoint stays after a rollback to it; a later one is gone.
            record(Some(b"d".to_vec()));
            savepoint(&SavepointOp::parse("release \"s1\"").expect("release"));
            savepoint(&SavepointOp::RollbackTo("\"s1\""));
            assert_eq!(snapshot(), Some(vec![b"a".to_vec(), b"d".to_vec()]));
            record(Some(Vec::new()));
            assert_eq!(snapshot().map(|s| s.len()), Some(2));
            make_opaque();
            assert_eq!(snapshot(), None);
        })
        .join()
        .expect("thread");
        assert_eq!(SavepointOp::parse("INSERT INTO t VALUES (1)"), None);
    }
}
