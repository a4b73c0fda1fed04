//! What a statement returns: its rows and its completion tag, and what Describe reports.

use crate::sql::infer::OutputColumn;
use tessera_shared::{PgType, Value};

/// How a statement completes (its CommandComplete tag).
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// `SELECT n` (rows counted by the protocol layer).
    Select,
    /// A command tag such as `INSERT 0 n`, `UPDATE n`, `CREATE TABLE`.
    Command {
        /// Tag word(s).
        name: String,
        /// Row count, when the tag carries one.
        rows: Option<u64>,
    },
    /// `BEGIN`: the session is now in a transaction block.
    Begin,
    /// `COMMIT` or `ROLLBACK`: the transaction block ended.
    End(&'static str),
    /// COPY FROM STDIN started with this many columns: CopyData follows from the client.
    CopyIn(usize),
    /// COPY TO STDOUT: these lines are sent as CopyData.
    CopyOut(Vec<String>),
}

/// The result of one statement.
#[derive(Debug)]
pub struct QueryResult {
    /// Columns of the returned rows (empty when none are returned).
    pub columns: Vec<OutputColumn>,
    /// Rows.
    pub rows: Vec<Vec<Value>>,
    /// Whether rows are returned (a RowDescription is sent).
    pub returns_rows: bool,
    /// Completion tag.
    pub completion: Completion,
}

impl QueryResult {
    pub(crate) fn command(name: &str, rows: Option<u64>) -> QueryResult {
        QueryResult {
            columns: vec![],
            rows: vec![],
            returns_rows: false,
            completion: Completion::Command {
                name: name.into(),
                rows,
            },
        }
    }

    pub(crate) fn text_rows(column: &str, lines: Vec<String>) -> QueryResult {
        QueryResult {
            columns: vec![OutputColumn {
                name: column.into(),
                ty: PgType::Text,
            }],
            rows: lines.into_iter().map(|l| vec![Value::Text(l)]).collect(),
            returns_rows: true,
            completion: Completion::Select,
        }
    }
}

/// What Describe reports for a statement.
#[derive(Debug, Clone)]
pub struct Described {
    /// Parameter types, one per `$n`.
    pub params: Vec<PgType>,
    /// Result columns (empty when the statement returns no rows).
    pub columns: Vec<OutputColumn>,
}

/// The completion of a planned statement whose planner tag is `tag`, `n` rows affected.
pub(crate) fn dml_tag(tag: &str, n: u64) -> Completion {
    match tag {
        "INSERT" => Completion::Command {
            name: "INSERT 0".into(),
            rows: Some(n),
        },
        "SELECT" => Completion::Select,
        other => Completion::Command {
            name: other.into(),
            rows: Some(n),
        },
    }
}
