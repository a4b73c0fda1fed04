//! Authentication: SCRAM-SHA-256 verifiers kept in the catalog (never passwords), and the
//! source pgwire's SCRAM exchange reads them from.

use crate::catalog::store::CatalogStore;
use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use pgwire::api::auth::sasl::scram::ScramSecret;
use pgwire::api::auth::{AuthSource, LoginInfo, Password};
use pgwire::error::{PgWireError, PgWireResult};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};
use std::num::NonZeroU32;
use std::sync::Arc;

/// PBKDF2 iterations of new verifiers (PostgreSQL's default).
pub const ITERATIONS: u32 = 4096;

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The system RNG failing is not recoverable; a zero salt would only weaken one verifier.
    let _ = SystemRandom::new().fill(&mut b);
    b
}

/// A SCRAM-SHA-256 verifier for `password`, in PostgreSQL's format:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 parts).
pub fn scram_verifier(password: &str) -> String {
    let salt: [u8; 16] = random_bytes();
    verifier_with(password, &salt, ITERATIONS)
}

fn verifier_with(password: &str, salt: &[u8], iterations: u32) -> String {
    let prepared = stringprep::saslprep(password)
        .map(|p| p.into_owned())
        .unwrap_or_else(|_| password.to_string());
    let mut salted = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN),
        salt,
        prepared.as_bytes(),
        &mut salted,
    );
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, &client_key);
    let server_key = hmac_sha256(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        B64.encode(salt),
        B64.encode(stored_key.as_ref()),
        B64.encode(server_key)
    )
}

/// A verifier string as the SCRAM exchange uses it.
pub fn parse_verifier(v: &str) -> Option<ScramSecret> {
    let rest = v.strip_prefix("SCRAM-SHA-256$")?;
    let (params, keys) = rest.split_once('$')?;
    let (iterations, salt) = params.split_once(':')?;
    let (stored, server) = keys.split_once(':')?;
    Some(ScramSecret::Verifier {
        iterations: iterations.parse().ok()?,
        salt: B64.decode(salt).ok()?,
        stored_key: B64.decode(stored).ok()?,
        server_key: B64.decode(server).ok()?,
    })
}

/// Reads roles' verifiers from the catalog for pgwire's SCRAM exchange.
///
/// A login that cannot succeed (no such role, no password, `NOLOGIN`) still gets a full
/// exchange with a salt that is stable for that name and keys nobody knows, so it fails at
/// the proof like a wrong password does (28P01) and the client learns nothing more.
pub struct CatalogAuth {
    catalog: Arc<dyn CatalogStore>,
    /// Per-process secret behind the stable fake salts.
    secret: [u8; 32],
}

impl std::fmt::Debug for CatalogAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CatalogAuth")
    }
}

impl CatalogAuth {
    /// A source over `catalog`.
    pub fn new(catalog: Arc<dyn CatalogStore>) -> CatalogAuth {
        CatalogAuth {
            catalog,
            secret: random_bytes(),
        }
    }

    /// The verifier of `user`, if that role may log in.
    fn verifier(&self, user: &str) -> Option<ScramSecret> {
        let catalog = self.catalog.snapshot();
        let role = catalog.roles.get(user).filter(|r| r.login)?;
        parse_verifier(role.scram.as_deref()?)
    }
}

#[async_trait]
impl AuthSource for CatalogAuth {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        Err(PgWireError::InvalidPassword(
            login.user().unwrap_or_default().to_string(),
        ))
    }

    async fn get_scram_secret(&self, login: &LoginInfo) -> PgWireResult<(ScramSecret, Option<()>)> {
        let user = login.user().unwrap_or_default();
        let secret = self
            .verifier(user)
            .unwrap_or_else(|| ScramSecret::Verifier {
                salt: hmac_sha256(&self.secret, user.as_bytes())[..16].to_vec(),
                iterations: ITERATIONS as usize,
                stored_key: random_bytes::<32>().to_vec(),
                server_key: random_bytes::<32>().to_vec(),
            });
        Ok((secret, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_match_postgresql() {
        // Made by PostgreSQL 15 on this machine: CREATE ROLE … PASSWORD 'secret' with
        // password_encryption = 'scram-sha-256', read back from pg_authid.
        let pg = "SCRAM-SHA-256$4096:+L8ak9S60MlLz8DKJR6ZWw==$AagV7m4dNElnv5BLQhRprqLZgItIQ+a0dwXj/E8cv/4=:SRsE5z7ndcs0t8cwaXp3Svylj4bFDu4LYey90HbpLog=";
        let Some(ScramSecret::Verifier {
            salt, iterations, ..
        }) = parse_verifier(pg)
        else {
            panic!("unparsed")
        };
        assert_eq!(verifier_with("secret", &salt, iterations as u32), pg);
        assert_ne!(verifier_with("Secret", &salt, iterations as u32), pg);
        assert_ne!(
            scram_verifier("secret"),
            scram_verifier("secret"),
            "salts are random"
        );
        assert!(parse_verifier("md5abc").is_none());
    }
}
