//! Durable small-file writes shared by every on-disk metadata file (manifests, catalog).

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` through a temp file: write, fsync, rename, fsync the directory.
/// A crash leaves the old or the new content, never a mix. Errors are returned, never retried:
/// after a failed fsync the file's state is unknown and callers treat it as fatal.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}
