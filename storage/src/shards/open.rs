//! How a shard's SQLite connection is opened: WAL, the node's fsync level, PostgreSQL's `LIKE`,
//! Tessera's functions and document tables, and the reference database attached as `ref`.

use super::REFERENCE_DB;
use crate::config::StorageConfig;
use crate::error::StorageError;
use crate::manifest::ShardKindOnDisk;
use rusqlite::Connection;
use std::path::Path;
use std::sync::Arc;

/// Opens a shard database with Tessera's settings: WAL, the configured fsync level,
/// case-sensitive LIKE (as in Postgres), and the reference database attached as `ref`.
pub(super) fn open_connection(
    config: &StorageConfig,
    path: &Path,
    kind: ShardKindOnDisk,
    docs: Option<(Arc<crate::docstore::DocStore>, u64)>,
) -> Result<Connection, StorageError> {
    let mut conn = Connection::open(path)?;
    let sync = crate::config::sqlite_synchronous(&config.synchronous);
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA case_sensitive_like = ON; PRAGMA foreign_keys = OFF;"
    ))?;
    crate::locks::set_busy_timeout_ms(config.busy_timeout_ms);
    conn.busy_handler(Some(crate::locks::wait_for_lock))?;
    conn.set_prepared_statement_cache_capacity(256);
    crate::jsonfn::register(&conn)?;
    crate::pgfn::register(&conn)?;
    crate::jsonsrf::register(&conn)?;
    if let (ShardKindOnDisk::Sql, Some((store, shard))) = (kind, docs) {
        crate::doctab::register(&conn, store, shard)?;
    }
    if kind == ShardKindOnDisk::Sql {
        let reference = config.data_dir.join(REFERENCE_DB);
        conn.execute("ATTACH DATABASE ?1 AS ref", [reference.to_string_lossy()])?;
        conn.execute_batch(&format!("PRAGMA ref.synchronous = {sync};"))?;
    }
    Ok(conn)
}
