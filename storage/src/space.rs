//! Room to commit: a transaction is prepared only once its changes are in the shard's WAL and
//! the node's disk keeps a reserve, so the commit that follows a commit decision does not fail
//! for lack of space after other shards committed (a full disk fails the prepare instead, and
//! nothing of the transaction commits anywhere: `53100`).

use crate::error::StorageError;
use std::path::Path;

/// Free space a prepare leaves for the commits that follow it: the commit frame of each open
/// transaction, and what the node's other files (fjall, manifests) write meanwhile.
pub const PREPARE_RESERVE_BYTES: u64 = 8 << 20;

/// `53100` when the file system holding `dir` has less than [`PREPARE_RESERVE_BYTES`] free.
pub fn check_reserve(dir: &Path, shard: u64) -> Result<(), StorageError> {
    let st = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| StorageError::Io(std::io::Error::from_raw_os_error(e as i32)))?;
    let free = st.blocks_available() * st.fragment_size();
    if free < PREPARE_RESERVE_BYTES {
        return Err(full(shard, format!("{free} bytes free")));
    }
    Ok(())
}

/// `53100` for shard `shard`.
pub fn full(shard: u64, why: String) -> StorageError {
    StorageError::Sql {
        sqlstate: "53100",
        message: format!(
            "could not prepare the transaction on shard {shard}: the storage node's disk is full ({why})"
        ),
    }
}
