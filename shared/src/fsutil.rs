//! Durable small-file writes shared by every on-disk metadata file (manifests, catalog).

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` through a temp file: write, fsync, rename, fsync the directory.
/// A crash leaves the old or the new content, never a mix. Errors are returned, never retried:
/// after a failed fsync the file's state is unknown and callers treat it as fatal.
/// The file is readable by its owner only (the catalog holds password verifiers).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn metadata_files_are_private_and_replaced_whole() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("m.json");
        super::write_atomically(&p, b"one").expect("write");
        super::write_atomically(&p, b"two").expect("rewrite");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
