//! Per-connection state: who is connected, session settings, and the open transaction.

use crate::planner::Target;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_TXN: AtomicU64 = AtomicU64::new(1);

/// A fresh transaction id, unique across coordinators (high bits from the process id and start time).
pub fn new_txn_id() -> u64 {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        ((u64::from(std::process::id()) << 40) ^ (t << 20)) & !0xF_FFFF
    });
    base | (NEXT_TXN.fetch_add(1, Ordering::Relaxed) & 0xF_FFFF)
}

/// An explicit transaction (`BEGIN` ... `COMMIT`).
#[derive(Debug)]
pub struct OpenTxn {
    /// Id sent with every statement, so each shard runs them in one SQLite transaction.
    pub id: u64,
    /// Shards written or read so far: COMMIT and ROLLBACK go to each.
    pub touched: BTreeSet<Target>,
    /// A statement failed: everything but ROLLBACK is refused (25P02).
    pub failed: bool,
}

/// Settings a client can SET and SHOW, with Postgres' defaults.
pub fn default_settings() -> BTreeMap<String, String> {
    [
        ("application_name", ""),
        ("client_encoding", "UTF8"),
        ("datestyle", "ISO, MDY"),
        ("default_transaction_isolation", "serializable"),
        ("extra_float_digits", "1"),
        ("integer_datetimes", "on"),
        ("intervalstyle", "postgres"),
        ("search_path", "\"$user\", public"),
        ("server_encoding", "UTF8"),
        ("server_version", "16.6"),
        ("standard_conforming_strings", "on"),
        ("statement_timeout", "0"),
        ("timezone", "UTC"),
        ("transaction_isolation", "serializable"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// One client connection's state.
#[derive(Debug)]
pub struct Session {
    /// Connected user.
    pub user: String,
    /// Connected database.
    pub database: String,
    /// Current settings (lower-case names).
    pub settings: BTreeMap<String, String>,
    /// The open explicit transaction, if any.
    pub txn: Option<OpenTxn>,
    /// A COPY FROM STDIN in progress.
    pub copy: Option<crate::engine_copy::CopyIn>,
}

impl Session {
    /// Opens a transaction for one statement's several writes unless the client has one open.
    /// Returns whether it did (the caller then ends it with [`crate::Engine::end_own_txn`]).
    pub fn begin_own_txn(&mut self) -> bool {
        if self.txn.is_some() {
            return false;
        }
        self.txn = Some(OpenTxn {
            id: new_txn_id(),
            touched: Default::default(),
            failed: false,
        });
        true
    }

    /// A new session.
    pub fn new(user: &str, database: &str) -> Session {
        Session {
            user: user.to_string(),
            database: database.to_string(),
            settings: default_settings(),
            txn: None,
            copy: None,
        }
    }
}
