//! SQL helpers on the sqlparser AST: names, Postgres-to-SQLite rewriting, type inference (of
//! result columns in `infer`, of parameters in `param_types`), parameters.

pub mod datetime;
pub mod depth;
pub mod dialect;
pub mod infer;
pub mod names;
pub mod param_types;
pub mod params;
pub mod parse;
pub mod schema;
pub mod text;
