//! PostgreSQL functions SQLite lacks, registered on every shard and scratch connection.

use rusqlite::functions::FunctionFlags;
use rusqlite::Connection;

/// Registers the functions on `conn`.
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    // Volatile: a new value per call, so per row.
    conn.create_scalar_function(
        "tessera_gen_random_uuid",
        0,
        FunctionFlags::SQLITE_UTF8,
        |_| Ok(tessera_shared::uuid::random_uuid()),
    )
}
