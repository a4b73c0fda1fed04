//! The PostgreSQL wire protocol layer: translates pgwire calls into [`crate::Engine`] calls and back.
//!
//! - [`conn`]: the per-connection message loop; [`coalesce`]: one write per response.
//! - [`startup`]: connection start-up (trust or SCRAM-SHA-256 authentication, server parameters).
//! - [`tls`]: the TLS acceptor from the configured certificate and key.
//! - [`handler`]: simple and extended query handlers.
//! - [`encode`]: values to text or binary wire format; row descriptions.
//! - [`errors`]: [`crate::CoordError`] to an ErrorResponse with its SQLSTATE.
//! - [`fuzzing`]: the whole decoding path of client bytes as one function, for the fuzzer.
//! - [`wellformed`]: the shape of each client message, checked before pgwire decodes it.

pub mod coalesce;
pub mod conn;
pub mod encode;
pub mod errors;
pub mod fuzzing;
pub mod handler;
pub mod startup;
pub mod tls;
pub mod wellformed;

use pgwire::api::PgWireServerHandlers;
use std::sync::Arc;

/// Hands pgwire the handlers of a connection.
pub struct Handlers {
    /// Query handling.
    pub queries: Arc<handler::QueryHandler>,
    /// Start-up.
    pub startup: Arc<startup::Startup>,
    /// TLS, when a certificate is configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Refuse clients that do not negotiate TLS.
    pub tls_required: bool,
    /// What one client may send (message size, prepared statements).
    pub limits: crate::config::Limits,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        self.queries.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        self.queries.clone()
    }
    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.queries.clone()
    }
    fn copy_handler(&self) -> Arc<impl pgwire::api::copy::CopyHandler> {
        self.queries.clone()
    }
    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.startup.clone()
    }
}
