//! `WITH (...)` options of tables and the arguments of the distribution functions.

use super::*;

/// The most shards one table may have.
pub const MAX_SHARDS: u32 = 4096;

/// Options of `WITH (...)` Tessera reads.
#[derive(Debug, Clone)]
pub(super) struct TableOptions {
    pub(super) shards: Option<u32>,
    pub(super) bounds: Option<String>,
    pub(super) reference: bool,
    pub(super) cache: bool,
    /// Copies of each shard, on distinct storage nodes (`WITH (replicas = N)`).
    pub(super) replicas: Option<u32>,
    /// `WITH (storage = 'document')`: rows in the storage nodes' document store.
    pub(super) storage: Storage,
    /// `WITH (column_groups = 'a(x, y) | b(z)')`: vertical partitioning.
    pub(super) column_groups: Option<String>,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            shards: None,
            bounds: None,
            reference: false,
            cache: true,
            replicas: None,
            storage: Storage::Rows,
            column_groups: None,
        }
    }
}

/// `cache = on|off` (also true/false, yes/no, 1/0).
pub(super) fn cache_option(v: &str) -> Result<bool, CoordError> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(CoordError::InvalidValue(format!(
            "cache must be on or off, not {v}"
        ))),
    }
}

pub(super) fn option_text(e: &Expr) -> String {
    match e {
        Expr::Value(v) => match &v.value {
            sqlparser::ast::Value::SingleQuotedString(s) => s.clone(),
            sqlparser::ast::Value::Number(n, _) => n.clone(),
            other => other.to_string(),
        },
        other => other.to_string(),
    }
}

pub(super) fn table_options(opts: &CreateTableOptions) -> Result<TableOptions, CoordError> {
    let mut out = TableOptions::default();
    let list = match opts {
        CreateTableOptions::With(l)
        | CreateTableOptions::Options(l)
        | CreateTableOptions::Plain(l) => l.as_slice(),
        _ => &[],
    };
    for o in list {
        if let SqlOption::KeyValue { key, value } = o {
            let k = function_name(key);
            let v = option_text(value);
            match k.as_str() {
                "shards" | "shard_count" => {
                    let n: u32 = v.parse().map_err(|_| {
                        CoordError::InvalidValue(format!(
                            "shards must be a positive integer, not {v}"
                        ))
                    })?;
                    if n == 0 || n > MAX_SHARDS {
                        return Err(CoordError::InvalidValue(format!(
                            "shards must be between 1 and {MAX_SHARDS}"
                        )));
                    }
                    out.shards = Some(n);
                }
                "bounds" => out.bounds = Some(v),
                "column_groups" => out.column_groups = Some(v),
                "distribution" if v == "reference" => out.reference = true,
                "cache" => out.cache = cache_option(&v)?,
                "replicas" | "replication_factor" => {
                    let n: u32 = v.parse().map_err(|_| {
                        CoordError::InvalidValue(format!(
                            "replicas must be a positive integer, not {v}"
                        ))
                    })?;
                    if n == 0 || n > 16 {
                        return Err(CoordError::InvalidValue(
                            "replicas must be between 1 and 16".into(),
                        ));
                    }
                    out.replicas = Some(n);
                }
                "storage" => {
                    out.storage = match v.to_ascii_lowercase().as_str() {
                        "document" | "documents" => Storage::Document,
                        "rows" | "row" | "sql" => Storage::Rows,
                        _ => {
                            return Err(CoordError::InvalidValue(format!(
                                "storage must be 'rows' or 'document', not {v}"
                            )))
                        }
                    }
                }
                // Postgres storage parameters (fillfactor, ...) are accepted.
                _ => {}
            }
        }
    }
    Ok(out)
}

/// `ALTER TABLE t SET (cache = off, ...)`; storage parameters other than `cache` are accepted and ignored.
pub(super) async fn set_options(
    engine: &Engine,
    table: &str,
    options: &[SqlOption],
) -> Result<(), CoordError> {
    for o in options {
        if let SqlOption::KeyValue { key, value } = o {
            if function_name(key) == "cache" {
                let cache = cache_option(&option_text(value))?;
                engine
                    .catalog
                    .propose(CatalogCommand::SetTableOptions {
                        table: table.to_string(),
                        cache,
                    })
                    .await?;
            }
        }
    }
    Ok(())
}

/// The shard-count argument of `create_distributed_table`: `22023` unless it is a whole
/// number of shards Tessera creates (1 to [`MAX_SHARDS`]).
pub fn shard_count_arg(arg: &str) -> Result<u32, CoordError> {
    let n: i64 = arg.trim().parse().map_err(|_| {
        CoordError::InvalidValue(format!("invalid input syntax for type integer: \"{arg}\""))
    })?;
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_SHARDS).contains(n))
        .ok_or_else(|| {
            CoordError::InvalidParameter(format!(
                "shard_count must be between 1 and {MAX_SHARDS}, not {n}"
            ))
        })
}
