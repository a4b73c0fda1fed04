//! Tessera coordinator: PostgreSQL wire protocol, distributed planner and executor.
//!
//! # Layout
//! - [`config`]: documented settings.
//! - [`error`]: typed errors and the one SQLSTATE table.
//! - [`auth`]: SCRAM-SHA-256 verifiers in the catalog, read by the start-up exchange.
//! - [`budget`]: a statement's deadline, cancel flag and memory, and the coordinator's shared memory budget.
//! - [`cache`]: the query-result cache, coherent with every acknowledged write; [`engine_cache`]: the read path through it.
//! - [`catalog`]: tables, distribution, shards, nodes; changed by commands, stored by a [`catalog::store::CatalogStore`].
//! - [`cluster`]: gRPC clients to storage nodes.
//! - [`sql`]: AST helpers: names, Postgres-to-SQLite rewriting, type inference, parameters.
//! - [`planner`]: statement → plain-data plan (route + merge), EXPLAIN.
//! - [`copy`]: COPY text and CSV formats.
//! - [`ddl`]: CREATE/DROP/ALTER TABLE, CREATE INDEX, `create_distributed_table`.
//! - [`executor`]: runs plans: fan-out, transactions across shards, merges.
//! - [`scratch`]: the coordinator's in-memory SQLite for table-less queries, final aggregation and pulled joins.
//! - [`session`]: per-connection state: settings and the open transaction.
//! - [`engine`]: statement dispatch, testable without sockets; [`engine_show`]: SET/SHOW and cluster views;
//!   [`engine_insert`]: serial values and INSERT ... SELECT; [`engine_copy`]: COPY FROM STDIN / TO STDOUT; [`engine_roles`]: roles and their passwords;
//!   [`engine_savepoint`]: savepoints across shards; [`engine_prepared`]: PREPARE/EXECUTE/DEALLOCATE;
//!   [`engine_vertical`]: statements on tables with column groups, a write's groups in one transaction.
//! - [`liveness`]: storage-node failure detection (alive, suspect, dead), recorded in the catalog.
//! - [`merge`]: k-way merge sort and concatenation of shard results.
//! - [`pg`]: the pgwire layer, which only translates.
//! - [`pgcatalog`]: `pg_catalog` and `information_schema` emulated from Tessera's catalog.
//! - [`repair`]: re-creates a dead node's shard copies on live nodes.
//! - [`server`]: the listener and shutdown.
//! - [`txnlog`]: the durable log of multi-shard commit decisions.

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
