//! The Postgres listener: accepts connections until shutdown, then drains them.

use crate::engine::Engine;
use crate::pg::{handler::QueryHandler, startup::Startup, Handlers};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Serves the Postgres protocol on `listener` until `shutdown` resolves; open
/// connections get a grace period to finish their statement.
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let startup = match engine.config.auth.as_str() {
        "scram-sha-256" => Startup::scram(engine.catalog.clone()),
        _ => Startup::trust(),
    };
    let tls =
        match (&engine.config.tls_cert, &engine.config.tls_key) {
            (Some(cert), Some(key)) => Some(crate::pg::tls::acceptor(cert, key).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
            })?),
            _ => None,
        };
    let tasks = engine.tasks.clone();
    let handlers = Arc::new(Handlers {
        tls_required: engine.config.tls_required,
        limits: engine.config.limits.clone(),
        tls,
        startup: Arc::new(startup),
        queries: Arc::new(QueryHandler::new(engine)),
    });
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (sock, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let h = handlers.clone();
                conns.spawn(async move {
                    if let Err(e) = crate::pg::conn::serve_connection(sock, h).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    tracing::info!(open = conns.len(), "coordinator shutting down");
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(std::time::Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        conns.abort_all();
    }
    // Background work (rollbacks of the sessions just closed, deletions of moved copies)
    // finishes before the coordinator stops; what does not within the limit is left to the
    // storage nodes' idle timeouts.
    tasks.close();
    if tokio::time::timeout(std::time::Duration::from_secs(10), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = tasks.len(),
            "background work still running at shutdown"
        );
    }
    Ok(())
}
