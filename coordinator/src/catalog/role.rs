//! Roles: who may log in, and how they prove it.

use serde::{Deserialize, Serialize};

/// A role (user): who may log in, and how they prove it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Role {
    /// Role name.
    pub name: String,
    /// Stable OID.
    pub oid: u32,
    /// May log in (`LOGIN`; `CREATE USER` implies it).
    pub login: bool,
    /// Superuser: may manage roles.
    pub superuser: bool,
    /// SCRAM-SHA-256 verifier in PostgreSQL's format
    /// (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`); never the password.
    pub scram: Option<String>,
}
