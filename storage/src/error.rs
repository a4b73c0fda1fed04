//! Storage errors and their SQLSTATE, carried to the coordinator in gRPC metadata.

use thiserror::Error;

/// gRPC metadata key carrying the SQLSTATE of a failed request.
pub const SQLSTATE_HEADER: &str = "x-sqlstate";

/// What can go wrong on a storage node.
#[derive(Debug, Error)]
pub enum StorageError {
    /// SQLite rejected or failed a statement; `sqlstate` classifies it.
    #[error("{message}")]
    Sql {
        /// The Postgres SQLSTATE this maps to.
        sqlstate: &'static str,
        /// SQLite's message.
        message: String,
    },
    /// The shard is not hosted here.
    #[error("shard {0} is not hosted on this node")]
    NoSuchShard(u64),
    /// The transaction is unknown here (finished, or rolled back after idling).
    #[error("transaction {0} is not open on this shard (it may have timed out)")]
    NoSuchTxn(u64),
    /// A shard's worker thread has stopped.
    #[error("shard worker stopped")]
    WorkerGone,
    /// Reading or writing the data directory failed.
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The manifest on disk cannot be read.
    #[error("manifest: {0}")]
    Manifest(String),
    /// The RPC server failed.
    #[error("transport: {0}")]
    Transport(String),
    /// A row the statement changed is locked by another open transaction, which must end
    /// first ([`crate::row_locks`]); the statement is run again then. Never leaves this node.
    #[error("a row is locked by transaction {0}")]
    RowLocked(u64),
    /// The document store (fjall) failed, or holds a row this build cannot read.
    #[error("document store: {0}")]
    Documents(String),
}

impl StorageError {
    /// The SQLSTATE reported to clients.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            StorageError::Sql { sqlstate, .. } => sqlstate,
            StorageError::NoSuchShard(_) => "58030",
            StorageError::NoSuchTxn(_) => "25P02",
            StorageError::RowLocked(_) => "55P03",
            StorageError::WorkerGone | StorageError::Transport(_) => "58000",
            StorageError::Io(_) | StorageError::Manifest(_) | StorageError::Documents(_) => "58030",
        }
    }
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ffi::ErrorCode;
        let message = match &e {
            // Its display quotes the SQL sent to SQLite, which is Tessera's rewrite, not what
            // the user wrote (and may be megabytes long).
            rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
            e => e.to_string(),
        };
        let sqlstate = match &e {
            rusqlite::Error::SqliteFailure(f, msg) => {
                let msg = msg.as_deref().unwrap_or("");
                match f.code {
                    ErrorCode::ConstraintViolation => match f.extended_code {
                        rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                        | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE => "23505",
                        rusqlite::ffi::SQLITE_CONSTRAINT_NOTNULL => "23502",
                        rusqlite::ffi::SQLITE_CONSTRAINT_CHECK => "23514",
                        rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => "23503",
                        rusqlite::ffi::SQLITE_CONSTRAINT_DATATYPE => "22P02",
                        _ => "23000",
                    },
                    ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => "40001",
                    ErrorCode::TypeMismatch => "22P02",
                    ErrorCode::OperationInterrupted => "57014",
                    ErrorCode::TooBig => "54000",
                    ErrorCode::DiskFull => "53100",
                    ErrorCode::SystemIoFailure | ErrorCode::CannotOpen => "58030",
                    _ => classify_message(msg),
                }
            }
            rusqlite::Error::IntegralValueOutOfRange(..) => "22003",
            rusqlite::Error::InvalidParameterCount(..) => "08P01",
            _ => classify_message(&message),
        };
        let message = if sqlstate == "40001" {
            format!(
                "could not serialize access: a concurrent transaction holds the shard's write lock ({})",
                clean_message(&message)
            )
        } else {
            clean_message(&message)
        };
        StorageError::Sql { sqlstate, message }
    }
}

/// SQLite reports most errors as SQLITE_ERROR with a message: its SQLSTATE, classified by it.
/// The coordinator's scratch database uses the same table.
pub fn classify_message(msg: &str) -> &'static str {
    if msg.starts_with("Expression tree is too large") || msg == "Recursion limit" {
        "54001"
    } else if msg.starts_with("too many terms in compound SELECT") {
        "54000"
    } else if msg.starts_with("no such table") {
        "42P01"
    } else if msg.starts_with("no such column") {
        "42703"
    } else if msg.starts_with("no such function") {
        "42883"
    } else if msg.contains("syntax error") || msg.starts_with("incomplete input") {
        "42601"
    } else if msg.contains("already exists") {
        "42P07"
    } else if msg.starts_with("invalid input syntax") || msg.starts_with("malformed array literal")
    {
        "22P02"
    } else if msg.contains("integer overflow") || msg.contains("out of range") {
        "22003"
    } else if msg == "division by zero" {
        "22012"
    } else if msg.starts_with("cannot take logarithm") {
        "2201E"
    } else if msg.starts_with("cannot take square root") {
        "2201F"
    } else if msg.starts_with("value too long for type") {
        "22001"
    } else if msg.starts_with("invalid regular expression") {
        "2201B"
    } else if msg == "field position must not be zero" {
        "22023"
    } else if msg == "requested length too large"
        || msg == "null character not permitted"
        || msg == "requested character too large for encoding"
    {
        "54000"
    } else if msg.contains("ambiguous column") {
        "42702"
    } else if msg.contains("misuse of aggregate") || msg.contains("GROUP BY") {
        "42803"
    } else {
        "XX000"
    }
}

fn clean_message(msg: &str) -> String {
    msg.trim_start_matches("SQLite error: ").to_string()
}

/// Longest message a status carries: it travels in an HTTP/2 header, and one past the
/// peer's header limit (an SQLite error quoting a megabyte statement) failed the whole
/// request with a protocol error instead of the statement's own.
const MAX_STATUS_MESSAGE: usize = 2048;

/// `msg`, cut at [`MAX_STATUS_MESSAGE`] bytes (on a character boundary) with `…`.
fn within_a_header(mut msg: String) -> String {
    if msg.len() > MAX_STATUS_MESSAGE {
        let mut end = MAX_STATUS_MESSAGE;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg.truncate(end);
        msg.push('…');
    }
    msg
}

impl From<StorageError> for tonic::Status {
    fn from(e: StorageError) -> Self {
        let code = match &e {
            StorageError::Sql { .. } | StorageError::NoSuchTxn(_) | StorageError::RowLocked(_) => {
                tonic::Code::FailedPrecondition
            }
            StorageError::NoSuchShard(_) => tonic::Code::NotFound,
            _ => tonic::Code::Internal,
        };
        let mut status = tonic::Status::new(code, within_a_header(e.to_string()));
        if let Ok(v) = e.sqlstate().parse() {
            status.metadata_mut().insert(SQLSTATE_HEADER, v);
        }
        status
    }
}
