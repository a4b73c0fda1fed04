//! Coordinator errors, and the one table mapping every error to its SQLSTATE.

use thiserror::Error;

/// Everything that can fail between a client's statement and its result.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CoordError {
    /// The SQL does not parse.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// A table that does not exist.
    #[error("relation \"{0}\" does not exist")]
    UndefinedTable(String),
    /// A column that does not exist.
    #[error("column \"{0}\" does not exist")]
    UndefinedColumn(String),
    /// A table that already exists.
    #[error("relation \"{0}\" already exists")]
    DuplicateTable(String),
    /// A column that already exists.
    #[error("column \"{0}\" already exists")]
    DuplicateColumn(String),
    /// An object other than a table or column that already exists (a role).
    #[error("{0}")]
    DuplicateObject(String),
    /// An object other than a table, column or type that does not exist (a role).
    #[error("{0}")]
    UndefinedObject(String),
    /// The session's role may not do this.
    #[error("permission denied: {0}")]
    InsufficientPrivilege(String),
    /// A type Tessera does not know.
    #[error("type \"{0}\" does not exist")]
    UndefinedType(String),
    /// A valid statement Tessera does not support (yet).
    #[error("{0}")]
    NotSupported(String),
    /// A value that cannot be read as its type.
    #[error("{0}")]
    InvalidValue(String),
    /// A statement in a transaction that already failed.
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    TxnAborted,
    /// A statement invalid in the current transaction state.
    #[error("{0}")]
    TxnState(String),
    /// An error reported by a storage node, with its SQLSTATE.
    #[error("{message}")]
    Storage {
        /// SQLSTATE from the node.
        sqlstate: String,
        /// Message from the node.
        message: String,
    },
    /// A storage node that cannot be reached.
    #[error("storage node {node} ({addr}) is unavailable: {reason}")]
    NodeUnavailable {
        /// Node name.
        node: String,
        /// Address tried.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A multi-shard commit that failed part-way (some shards committed).
    #[error("commit failed on shard {shard} after other shards committed: {reason}")]
    PartialCommit {
        /// The shard that failed.
        shard: u64,
        /// Why.
        reason: String,
    },
    /// The statement was stopped: a cancel request or `statement_timeout`.
    #[error("canceling statement due to {0}")]
    Canceled(&'static str),
    /// The statement nests deeper than Tessera evaluates (PostgreSQL's "stack depth limit exceeded").
    #[error("{0}")]
    TooDeep(String),
    /// The statement needs more memory than its budget (`tessera.statement_memory`) or the
    /// coordinator's shared budget allows.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// A protocol or session limit: a message, or a session's prepared statements.
    #[error("{0}")]
    ProgramLimit(String),
    /// A bad value for a setting or a function argument.
    #[error("{0}")]
    InvalidParameter(String),
    /// Local I/O (catalog file).
    #[error("I/O error: {0}")]
    Io(String),
    /// A bug: an invariant broke.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CoordError {
    /// The SQLSTATE sent to the client. This is the one mapping table.
    pub fn sqlstate(&self) -> &str {
        match self {
            CoordError::Syntax(_) => "42601",
            CoordError::UndefinedTable(_) => "42P01",
            CoordError::UndefinedColumn(_) => "42703",
            CoordError::DuplicateTable(_) => "42P07",
            CoordError::DuplicateColumn(_) => "42701",
            CoordError::UndefinedType(_) => "42704",
            CoordError::DuplicateObject(_) => "42710",
            CoordError::UndefinedObject(_) => "42704",
            CoordError::InsufficientPrivilege(_) => "42501",
            CoordError::NotSupported(_) => "0A000",
            CoordError::InvalidValue(_) => "22P02",
            CoordError::TxnAborted => "25P02",
            CoordError::TxnState(_) => "25000",
            CoordError::Storage { sqlstate, .. } => sqlstate,
            CoordError::NodeUnavailable { .. } => "08006",
            CoordError::PartialCommit { .. } => "40003",
            CoordError::Canceled(_) => "57014",
            CoordError::TooDeep(_) => "54001",
            CoordError::OutOfMemory(_) => "53200",
            CoordError::ProgramLimit(_) => "54000",
            CoordError::InvalidParameter(_) => "22023",
            CoordError::Io(_) => "58030",
            CoordError::Internal(_) => "XX000",
        }
    }

    /// `22023`: `value` is not valid for the setting `name`, as PostgreSQL words it.
    pub fn invalid_setting(name: &str, value: &str) -> CoordError {
        CoordError::InvalidParameter(format!(
            "invalid value for parameter \"{name}\": \"{value}\""
        ))
    }

    /// Named constructor for unsupported features.
    pub fn unsupported(what: impl Into<String>) -> CoordError {
        CoordError::NotSupported(what.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(CoordError::Syntax("x".into()).sqlstate(), "42601");
        assert_eq!(CoordError::UndefinedTable("t".into()).sqlstate(), "42P01");
        assert_eq!(CoordError::unsupported("x").sqlstate(), "0A000");
        assert_eq!(
            CoordError::Storage {
                sqlstate: "23505".into(),
                message: "dup".into()
            }
            .sqlstate(),
            "23505"
        );
        assert_eq!(
            CoordError::UndefinedTable("users".into()).to_string(),
            "relation \"users\" does not exist"
        );
    }
}
