//! Per-connection state: who is connected, session settings, and the open transaction.

use crate::planner::Target;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

static LAST_TXN_CLOCK: AtomicU64 = AtomicU64::new(0);

/// A fresh transaction id: microseconds since 2025 (made strictly increasing in this
/// process) above 12 random bits drawn once per process, so ids are unique across
/// coordinators and ordered by start time. Storage nodes use that order to break lock
/// cycles between transactions (wait-die: a younger transaction never waits for an older
/// one), so a transaction retried with a new id does not stay the youngest for long.
pub fn new_txn_id() -> u64 {
    const EPOCH_2025_MICROS: u64 = 1_735_689_600_000_000;
    static SALT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let salt = *SALT.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish() & 0xFFF
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
        .saturating_sub(EPOCH_2025_MICROS)
        .max(1);
    let prev = LAST_TXN_CLOCK
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or(0);
    (now.max(prev + 1) << 12) | salt
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

    /// Whether a stop was requested.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
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
/// (`us`, `ms`, `s`, `min`, `h`, `d`); 0 disables it.
pub fn parse_timeout(v: &str) -> Option<std::time::Duration> {
    let ms = timeout_ms(v)?;
    (ms > 0.0).then(|| std::time::Duration::from_micros((ms * 1000.0) as u64))
}

/// A time setting in milliseconds, as PostgreSQL reads one; `None` when it does not read.
pub fn timeout_ms(v: &str) -> Option<f64> {
    let v = v.trim().trim_matches('\'').trim();
    let split = v
        .find(|c: char| !c.is_ascii_digit() && c != '.' && c != '-' && c != '+')
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale = match unit.trim() {
        "us" => 1e-3,
        "" | "ms" => 1.0,
        "s" => 1e3,
        "min" => 60e3,
        "h" => 3600e3,
        "d" => 86_400e3,
        _ => return None,
    };
    Some(n * scale).filter(|ms| ms.is_finite())
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
    /// Shard copies written: COMMIT checks that no copy was added to those shards meanwhile.
    pub written: BTreeSet<Target>,
    /// Row changes waiting for the other copies of written shards until COMMIT; `None` in a
    /// statement's own transaction (COPY, INSERT ... SELECT), whose copies get them at once.
    pub waiting: Option<crate::txn::copies::Waiting>,
}

/// Default of `tessera.statement_memory`: rows one statement may hold at the coordinator.
pub const DEFAULT_STATEMENT_MEMORY: &str = "512MB";

/// Settings a client can SET and SHOW, with Postgres' defaults.
pub fn default_settings() -> BTreeMap<String, String> {
    [
        ("application_name", ""),
        ("client_encoding", "UTF8"),
        ("datestyle", "ISO, MDY"),
        ("default_transaction_isolation", "read committed"),
        ("extra_float_digits", "1"),
        ("integer_datetimes", "on"),
        ("intervalstyle", "postgres"),
        ("read_consistency", "leader"),
        ("search_path", "\"$user\", public"),
        ("server_encoding", "UTF8"),
        ("server_version", "16.6"),
        ("standard_conforming_strings", "on"),
        ("statement_timeout", "0"),
        ("tessera.cache", "on"),
        ("tessera.statement_memory", DEFAULT_STATEMENT_MEMORY),
        ("timezone", "UTC"),
        ("transaction_isolation", "read committed"),
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
    pub copy: Option<crate::copy::CopyIn>,
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
            written: BTreeSet::new(),
            waiting: None,
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
        assert_eq!(parse_timeout("1.5 s"), Some(Duration::from_millis(1500)));
        assert_eq!(timeout_ms("-1"), Some(-1.0));
    }
}
