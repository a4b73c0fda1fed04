//! A transaction's row changes reach its shards' other copies once, at its commit: each
//! statement runs on the shard's first copy only, and what it changed (the first copy's
//! patchset) waits here until the copies get all of it in their prepare request.
//!
//! Statement by statement, every write inside `BEGIN` cost a second round trip to the other
//! copies, which only kept the changes (they apply at commit); now the commit's prepare
//! carries them. The first copy's row locks order writers of a row on every copy: a later
//! writer of a row runs on the first copy only after an earlier one committed there, which it
//! did only after every copy prepared, locking the row there too. Anything else sent to a
//! copy inside the transaction (a statement a copy must run itself, a savepoint) sends the
//! changes waiting for it first, so the copy sees them in order.

use super::TxnManager;
use crate::catalog::Catalog;
use crate::error::CoordError;
use crate::planner::Target;
use futures::future::join_all;
use std::collections::BTreeMap;
use tessera_storage::work::Work;

/// Past this many bytes of changes waiting for one copy, they are sent at once: a bulk write
/// inside `BEGIN` does not pile up at the coordinator or make one huge prepare request.
pub const WAIT_AT_MOST_BYTES: usize = 256 << 10;

/// The row changes waiting for each copy, in the order they were made.
#[derive(Debug, Default)]
pub struct Waiting {
    changes: BTreeMap<Target, Vec<Vec<u8>>>,
}

impl Waiting {
    /// Keeps `changes` for `copy` if they fit; gives them back (with those already waiting,
    /// oldest first) when they are to be sent now.
    pub fn keep(&mut self, copy: Target, changes: Vec<u8>) -> Option<Vec<Vec<u8>>> {
        let waiting = self.changes.entry(copy).or_default();
        let bytes: usize = waiting.iter().map(Vec::len).sum::<usize>() + changes.len();
        waiting.push(changes);
        (bytes > WAIT_AT_MOST_BYTES).then(|| self.changes.remove(&copy).unwrap_or_default())
    }

    /// The changes waiting for `copy`, no longer waiting.
    pub fn take(&mut self, copy: Target) -> Vec<Vec<u8>> {
        self.changes.remove(&copy).unwrap_or_default()
    }

    /// Every copy's waiting changes, no longer waiting.
    pub fn take_all(&mut self) -> BTreeMap<Target, Vec<Vec<u8>>> {
        std::mem::take(&mut self.changes)
    }

    /// Whether no changes wait.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

impl TxnManager {
    /// Sends each copy the changes waiting for it (kept there with their rows locked, as
    /// statement-by-statement copies kept them); one result per copy.
    pub async fn send_changes(
        &self,
        catalog: &Catalog,
        txn_id: u64,
        waiting: BTreeMap<Target, Vec<Vec<u8>>>,
        prepare: bool,
    ) -> Vec<(Target, Result<(), CoordError>)> {
        join_all(waiting.into_iter().map(|(t, changes)| async move {
            let r = async {
                let work = Work::Apply {
                    changes,
                    lenient: filling(catalog, t),
                };
                self.cluster
                    .run_versioned(
                        catalog.node(t.node)?,
                        t.shard,
                        txn_id,
                        work,
                        vec![],
                        (0, 0),
                        prepare,
                    )
                    .await
                    .map(|_| ())
            }
            .await;
            (t, r)
        }))
        .await
    }
}

/// Whether `t` is a copy being filled, which may lack rows (its changes apply leniently).
pub fn filling(catalog: &Catalog, t: Target) -> bool {
    catalog
        .shard(t.shard)
        .is_some_and(|(_, s)| s.filling.contains(&t.node))
}
