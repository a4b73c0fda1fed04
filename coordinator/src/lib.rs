//! Tessera coordinator: PostgreSQL wire protocol, distributed planner and executor.
//!
//! # Layout
//! Layers import only downwards; nothing below [`engine`] takes the engine: each layer gets
//! the narrow handle it uses ([`exec::Reach`], [`txn::TxnManager`],
//! [`replication::Replication`]).
//!
//! The wire:
//! - [`server`]: the listener and shutdown; [`pg`]: the pgwire layer, which only translates
//!   (and holds a client's bytes to the coordinator's limits).
//!
//! Statements:
//! - [`engine`]: statement dispatch and the statement families (DDL, COPY, SET/SHOW, prepared
//!   statements, roles, savepoints, column groups, cached reads), testable without sockets.
//! - [`session`]: per-connection state: settings and the open transaction.
//! - [`cache`]: the query-result cache, coherent with every acknowledged write.
//! - [`config`]: documented settings.
//!
//! Planning and execution:
//! - [`planner`]: statement → plain-data plan (route + merge), EXPLAIN.
//! - [`sql`]: AST helpers: parsing (with its depth bounds), names, Postgres-to-SQLite
//!   rewriting, type inference, parameters, values as text, shard schemas.
//! - [`pgcatalog`]: `pg_catalog` and `information_schema` emulated from Tessera's catalog.
//! - [`exec`]: runs plans: fan-out, a statement's own writes, merges, the scratch database,
//!   and each statement's budget (deadline, cancel, memory).
//! - [`copy`]: COPY text and CSV formats.
//!
//! Transactions and copies:
//! - [`txn`]: the commit protocol across shards and copies, and its decision log.
//! - [`replication`]: failure detection, re-replication, fills, moves, placement of copies,
//!   and the comparison of copies after a restart.
//!
//! The ground:
//! - [`cluster`]: gRPC (or in-process) clients to storage nodes.
//! - [`catalog`]: tables, distribution, shards, nodes; changed by commands, stored by a
//!   [`catalog::store::CatalogStore`].
//! - [`meta`]: the metadata Raft group, whose state machine is the catalog.
//! - [`auth`]: SCRAM-SHA-256 verifiers in the catalog, read by the start-up exchange.
//! - [`error`]: typed errors and the one SQLSTATE table.

pub mod auth;
pub mod cache;
pub mod catalog;
pub mod cluster;
pub mod config;
pub mod copy;
pub mod engine;
pub mod error;
pub mod exec;
pub mod meta;
pub mod pg;
pub mod pgcatalog;
pub mod planner;
pub mod replication;
pub mod server;
pub mod session;
pub mod sql;
pub mod txn;

pub use config::CoordinatorConfig;
pub use engine::Engine;
pub use error::CoordError;
