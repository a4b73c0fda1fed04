//! The commit decision log: a multi-shard commit is decided durably here before any shard commits,
//! so a coordinator that dies mid-commit finishes the commit when it restarts.
//!
//! Format (versioned, one JSON object per line): a header `{"tessera_txn_log":1}`, then
//! `{"commit":<txn>,"targets":[[shard,node],...]}` (fsynced before the first shard commits) and
//! `{"done":<txn>}` once every shard acknowledged. A decision without `done` is re-sent on start-up.
//! `{"prepare":<txn>,"targets":...}` (not fsynced) precedes a statement's own transaction's
//! preparation; one never decided is rolled back on start-up.
//! Shards hold a prepared transaction open (and its locks) until they hear COMMIT or ROLLBACK,
//! and roll back on their own only after `txn_idle_timeout_secs` without a decision.

use crate::error::CoordError;
use crate::planner::Target;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Format version of the log.
pub const TXN_LOG_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Record {
    Header {
        tessera_txn_log: u32,
    },
    Commit {
        commit: u64,
        targets: Vec<(u64, u64)>,
    },
    Done {
        done: u64,
    },
    /// A statement's own transaction about to be prepared (not fsynced: it serves a process
    /// crash, after which the undecided transaction is rolled back at once instead of holding
    /// its locks until the nodes' idle limit).
    Prepare {
        prepare: u64,
        targets: Vec<(u64, u64)>,
    },
}

/// The open log.
pub struct DecisionLog {
    path: PathBuf,
    /// The log for appending, and how many records were appended.
    file: Mutex<(File, u64)>,
    /// The same file for fsyncs, and how many records the last fsync covered: one fsync covers
    /// every record appended before it, so concurrent commits share one (group commit).
    synced: Mutex<(File, u64)>,
    /// Transactions prepared but never decided before the last stop: to roll back.
    undecided: Mutex<Vec<Pending>>,
}

/// A commit that was decided but not confirmed done.
pub type Pending = (u64, Vec<Target>);

impl DecisionLog {
    /// Opens `dir/txn-decisions.log`, returning the decisions still pending, and starts a fresh log.
    pub fn open(dir: &Path) -> Result<(DecisionLog, Vec<Pending>), CoordError> {
        let path = dir.join("txn-decisions.log");
        let mut pending: BTreeMap<u64, Vec<Target>> = BTreeMap::new();
        let mut prepared: BTreeMap<u64, Vec<Target>> = BTreeMap::new();
        let targets_of = |targets: Vec<(u64, u64)>| -> Vec<Target> {
            targets
                .into_iter()
                .map(|(shard, node)| Target { shard, node })
                .collect()
        };
        match File::open(&path) {
            Ok(f) => {
                for (i, line) in BufReader::new(f).lines().enumerate() {
                    let line = line.map_err(|e| CoordError::Io(e.to_string()))?;
                    // A torn last line (crash mid-append) is a decision that was never made.
                    let Ok(rec) = serde_json::from_str::<Record>(&line) else {
                        continue;
                    };
                    match rec {
                        Record::Header { tessera_txn_log }
                            if tessera_txn_log != TXN_LOG_VERSION =>
                        {
                            return Err(CoordError::Io(format!("{} has format version {tessera_txn_log}, this build reads {TXN_LOG_VERSION}", path.display())));
                        }
                        Record::Header { .. } => {}
                        Record::Commit { commit, targets } if i > 0 => {
                            prepared.remove(&commit);
                            pending.insert(commit, targets_of(targets));
                        }
                        Record::Commit { .. } => {}
                        Record::Done { done } => {
                            pending.remove(&done);
                            prepared.remove(&done);
                        }
                        Record::Prepare { prepare, targets } => {
                            prepared.insert(prepare, targets_of(targets));
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CoordError::Io(e.to_string())),
        }
        // Rewrite: header plus the still-pending decisions (they stay pending until re-sent).
        let tmp = path.with_extension("tmp");
        {
            let mut f = File::create(&tmp).map_err(|e| CoordError::Io(e.to_string()))?;
            let mut text = serde_json::to_string(&Record::Header {
                tessera_txn_log: TXN_LOG_VERSION,
            })
            .map_err(|e| CoordError::Internal(e.to_string()))?;
            text.push('\n');
            for (txn, targets) in &pending {
                let rec = Record::Commit {
                    commit: *txn,
                    targets: targets.iter().map(|t| (t.shard, t.node)).collect(),
                };
                text.push_str(
                    &serde_json::to_string(&rec)
                        .map_err(|e| CoordError::Internal(e.to_string()))?,
                );
                text.push('\n');
            }
            f.write_all(text.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| CoordError::Io(e.to_string()))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| CoordError::Io(e.to_string()))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| CoordError::Io(e.to_string()))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| CoordError::Io(e.to_string()))?;
        let syncing = file
            .try_clone()
            .map_err(|e| CoordError::Io(e.to_string()))?;
        Ok((
            DecisionLog {
                path,
                file: Mutex::new((file, 0)),
                synced: Mutex::new((syncing, 0)),
                undecided: Mutex::new(prepared.into_iter().collect()),
            },
            pending.into_iter().collect(),
        ))
    }

    fn append(&self, rec: &Record, sync: bool) -> Result<(), CoordError> {
        let mut line =
            serde_json::to_string(rec).map_err(|e| CoordError::Internal(e.to_string()))?;
        line.push('\n');
        let poisoned = |_| CoordError::Internal("decision log lock poisoned".into());
        let appended = {
            let mut f = self.file.lock().map_err(poisoned)?;
            if let Err(e) = f.0.write_all(line.as_bytes()) {
                self.fail(e);
            }
            f.1 += 1;
            f.1
        };
        if !sync {
            return Ok(());
        }
        // One fsync at a time; one that began after this record was appended covers it.
        let mut synced = self.synced.lock().map_err(poisoned)?;
        if synced.1 >= appended {
            return Ok(());
        }
        let upto = self.file.lock().map_err(poisoned)?.1;
        if let Err(e) = synced.0.sync_data() {
            self.fail(e);
        }
        synced.1 = upto;
        Ok(())
    }

    /// A failed write or fsync leaves the log's state unknown: stop rather than guess.
    fn fail(&self, e: std::io::Error) -> ! {
        tracing::error!(path = %self.path.display(), error = %e, "decision log write failed; stopping");
        std::process::abort();
    }

    /// Records, durably, that `txn` commits on `targets`.
    pub fn decide(&self, txn: u64, targets: &[Target]) -> Result<(), CoordError> {
        self.append(
            &Record::Commit {
                commit: txn,
                targets: targets.iter().map(|t| (t.shard, t.node)).collect(),
            },
            true,
        )
    }

    /// Records that `txn` is about to be prepared on `targets` (no fsync; see [`Record`]).
    pub fn prepare(&self, txn: u64, targets: &[Target]) -> Result<(), CoordError> {
        self.append(
            &Record::Prepare {
                prepare: txn,
                targets: targets.iter().map(|t| (t.shard, t.node)).collect(),
            },
            false,
        )
    }

    /// Transactions prepared before the last stop and never decided (rolled back at start).
    pub fn take_undecided(&self) -> Vec<Pending> {
        self.undecided
            .lock()
            .map(|mut u| std::mem::take(&mut *u))
            .unwrap_or_default()
    }

    /// Records that every shard of `txn` acknowledged the commit.
    pub fn done(&self, txn: u64) -> Result<(), CoordError> {
        self.append(&Record::Done { done: txn }, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_decisions_survive_reopen_until_done() {
        let dir = tempfile::tempdir().expect("tmp");
        let t = [Target { shard: 1, node: 2 }, Target { shard: 3, node: 4 }];
        {
            let (log, pending) = DecisionLog::open(dir.path()).expect("open");
            assert!(pending.is_empty());
            log.decide(7, &t).expect("decide");
            log.decide(8, &t).expect("decide");
            log.done(8).expect("done");
        }
        // A torn record at the end is ignored.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("txn-decisions.log"))
            .expect("append");
        f.write_all(b"{\"commit\":9,\"targ").expect("torn");
        drop(f);
        let (log, pending) = DecisionLog::open(dir.path()).expect("reopen");
        assert_eq!(pending, vec![(7, t.to_vec())]);
        log.done(7).expect("done");
        drop(log);
        let (_, pending) = DecisionLog::open(dir.path()).expect("reopen");
        assert!(pending.is_empty());
    }

    /// Decisions taken at once from several threads (sharing fsyncs) are all in the log.
    #[test]
    fn concurrent_decisions_are_all_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let t = [Target { shard: 1, node: 2 }, Target { shard: 3, node: 4 }];
        {
            let (log, _) = DecisionLog::open(dir.path()).expect("open");
            let log = std::sync::Arc::new(log);
            let threads: Vec<_> = (0..8u64)
                .map(|w| {
                    let log = log.clone();
                    std::thread::spawn(move || {
                        for i in 0..50 {
                            log.decide(w * 1000 + i, &t).expect("decide");
                        }
                    })
                })
                .collect();
            for th in threads {
                th.join().expect("join");
            }
        }
        let (_, pending) = DecisionLog::open(dir.path()).expect("reopen");
        assert_eq!(pending.len(), 400);
    }

    /// A transaction prepared and never decided is handed back (to roll back); one decided or
    /// done after its preparation is not.
    #[test]
    fn undecided_preparations_are_handed_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let t = [Target { shard: 1, node: 2 }];
        {
            let (log, _) = DecisionLog::open(dir.path()).expect("open");
            log.prepare(5, &t).expect("prepare");
            log.prepare(6, &t).expect("prepare");
            log.decide(6, &t).expect("decide");
            log.prepare(7, &t).expect("prepare");
            log.done(7).expect("done");
        }
        let (log, pending) = DecisionLog::open(dir.path()).expect("reopen");
        assert_eq!(pending, vec![(6, t.to_vec())]);
        assert_eq!(log.take_undecided(), vec![(5, t.to_vec())]);
        assert!(log.take_undecided().is_empty());
    }
}
