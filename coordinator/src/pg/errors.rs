//! Errors at the protocol edge: every [`CoordError`] becomes an ErrorResponse with its SQLSTATE.

use crate::error::CoordError;
use pgwire::error::{ErrorInfo, PgWireError};

/// The ErrorResponse for an error. Logged here, once, when it signals a fault rather than bad input.
pub fn to_pgwire(e: CoordError) -> PgWireError {
    let code = e.sqlstate().to_string();
    if code.starts_with("XX") || code.starts_with("58") || code.starts_with("08") || code == "40003"
    {
        tracing::warn!(sqlstate = %code, error = %e, "statement failed");
    }
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code,
        e.to_string(),
    )))
}
