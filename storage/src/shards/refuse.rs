//! What a shard refuses while it must not change: writes to a fenced shard (a copy of it is
//! being filled) and to a shard with a transaction in doubt, both `40001` for a retry.

use crate::error::StorageError;
use crate::work::Work;
use rusqlite::Connection;

/// Refuses work that writes rows with `refusal`'s error, if it gives one. Schema changes reach
/// every copy (the one being filled included) and are not refused.
pub(super) fn refuse_writes(
    conn: &Connection,
    work: &Work,
    refusal: impl FnOnce() -> Option<StorageError>,
) -> Result<(), StorageError> {
    let writes = match work {
        Work::Apply { changes, .. } => changes.iter().any(|segment| !segment.is_empty()),
        Work::Run { statements, .. } => {
            let mut writes = false;
            for st in statements {
                let head = st.sql.trim_start().get(..6).unwrap_or("");
                let ddl = ["CREATE", "DROP T", "DROP I", "ALTER "]
                    .iter()
                    .any(|p| head.eq_ignore_ascii_case(p));
                if !ddl && !conn.prepare_cached(&st.sql)?.readonly() {
                    writes = true;
                    break;
                }
            }
            writes
        }
    };
    match refusal().filter(|_| writes) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// 40001 for a write to a fenced shard, for the coordinator or client to retry with a plan
/// that writes every copy in a checked transaction.
pub(super) fn fenced_error(shard_id: u64) -> StorageError {
    StorageError::Sql {
        sqlstate: "40001",
        message: format!(
            "could not serialize access: shard {shard_id} is being copied and this write was planned before the copy began; retry"
        ),
    }
}
