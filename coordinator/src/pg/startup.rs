//! Connection start-up: trust authentication (the local default, stated at start-up) and server parameters.

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    DefaultServerParameterProvider, StartupHandler,
};
use pgwire::api::{ClientInfo, PidSecretKeyGenerator, RandomPidSecretKeyGenerator};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use std::fmt::Debug;

/// Start-up handler.
pub struct Startup {
    params: DefaultServerParameterProvider,
    keys: RandomPidSecretKeyGenerator,
}

impl Default for Startup {
    fn default() -> Self {
        let mut params = DefaultServerParameterProvider::default();
        params.server_version = "16.6 (Tessera)".into();
        Startup {
            params,
            keys: RandomPidSecretKeyGenerator::default(),
        }
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
        if let PgWireFrontendMessage::Startup(ref startup) = message {
            protocol_negotiation(client, startup).await?;
            save_startup_parameters_to_metadata(client, startup);
            let (pid, key) = self.keys.generate(client);
            client.set_pid_and_secret_key(pid, key);
            finish_authentication(client, &self.params).await?;
        }
        Ok(())
    }
}
