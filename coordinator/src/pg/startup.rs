//! Connection start-up: authentication (trust, or SCRAM-SHA-256 against the catalog's roles)
//! and server parameters.

use crate::auth::CatalogAuth;
use crate::catalog::store::CatalogStore;
use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    DefaultServerParameterProvider, StartupHandler,
};
use pgwire::api::{ClientInfo, PidSecretKeyGenerator, RandomPidSecretKeyGenerator};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use std::fmt::Debug;
use std::sync::Arc;

/// How clients prove who they are.
pub enum Startup {
    /// Anyone connects as any user (the local default, stated loudly at start-up).
    Trust {
        /// Server parameters sent after authentication.
        params: DefaultServerParameterProvider,
        /// Cancel keys.
        keys: RandomPidSecretKeyGenerator,
    },
    /// SCRAM-SHA-256 against the verifiers of the catalog's roles.
    Scram(SASLAuthStartupHandler<DefaultServerParameterProvider>),
}

fn parameters() -> DefaultServerParameterProvider {
    let mut params = DefaultServerParameterProvider::default();
    params.server_version = "16.6 (Tessera)".into();
    params
}

impl Startup {
    /// Trust authentication.
    pub fn trust() -> Startup {
        Startup::Trust {
            params: parameters(),
            keys: RandomPidSecretKeyGenerator::default(),
        }
    }

    /// SCRAM-SHA-256 against `catalog`'s roles.
    pub fn scram(catalog: Arc<dyn CatalogStore>) -> Startup {
        let scram = ScramAuth::new(Arc::new(CatalogAuth::new(catalog)));
        Startup::Scram(SASLAuthStartupHandler::new(Arc::new(parameters())).with_scram(scram))
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Scram(h) => h.on_startup(client, message).await,
            Startup::Trust { params, keys } => {
                if let PgWireFrontendMessage::Startup(ref startup) = message {
                    protocol_negotiation(client, startup).await?;
                    save_startup_parameters_to_metadata(client, startup);
                    let (pid, key) = keys.generate(client);
                    client.set_pid_and_secret_key(pid, key);
                    finish_authentication(client, params).await?;
                }
                Ok(())
            }
        }
    }
}
