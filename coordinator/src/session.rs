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

/// A request to stop the running statement (CancelRequest), shared with the cancel handler.
#[derive(Debug, Default)]
pub struct Interrupt {
    requested: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Interrupt {
    /// Asks the running statement to stop.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Clears a request left from an earlier statement.
    pub fn reset(&self) {
        self.requested.store(false, Ordering::SeqCst);
    }

    /// Resolves once a stop is requested.
    pub async fn requested(&self) {
        loop {
            let notified = self.notify.notified();
            if self.requested.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

/// `statement_timeout` as Postgres reads it: a number of milliseconds, or with a unit
/// (`ms`, `s`, `min`, `h`); 0 disables it.
pub fn parse_timeout(v: &str) -> Option<std::time::Duration> {
    let v = v.trim().trim_matches('\'').to_ascii_lowercase();
    let split = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    let ms = match unit.trim() {
        "" | "ms" => n,
        "s" => n * 1e3,
        "min" => n * 60e3,
        "h" => n * 3600e3,
        _ => return None,
    };
    (ms > 0.0).then(|| std::time::Duration::from_micros((ms * 1000.0) as u64))
}

/// An explicit transaction (`BEGIN` ... `COMMIT`).
#[derive(Debug)]
pub struct OpenTxn {
    /// Id sent with every statement, so each shard runs them in one SQLite transaction.
    pub id: u64,
    /// Shards written or read so far: COMMIT and ROLLBACK go to each.
    pub touched: BTreeSet<Target>,
    /// A statement failed: everything but ROLLBACK (or ROLLBACK TO a savepoint) is refused (25P02).
    pub failed: bool,
    /// Open savepoints, oldest first: each name with the shards touched when it was set.
    pub savepoints: Vec<(String, BTreeSet<Target>)>,
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
        ("tessera.cache", "on"),
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
    /// Cancel requests for this session's running statement.
    pub interrupt: std::sync::Arc<Interrupt>,
    /// When the running statement times out (`statement_timeout`).
    pub deadline: Option<tokio::time::Instant>,
    /// Statements prepared with SQL `PREPARE name AS …`, by name.
    pub prepared: std::collections::HashMap<String, sqlparser::ast::Statement>,
    /// NOTICE messages for the client, sent with the statement's response.
    pub notices: Vec<String>,
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
            savepoints: Vec::new(),
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
            interrupt: Default::default(),
            deadline: None,
            prepared: Default::default(),
            notices: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn statement_timeout_units() {
        assert_eq!(parse_timeout("0"), None);
        assert_eq!(parse_timeout("250"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout("'1min'"), Some(Duration::from_secs(60)));
        assert_eq!(parse_timeout("soon"), None);
    }
}
