//! Roles: `CREATE ROLE|USER`, `ALTER ROLE|USER`, `DROP ROLE|USER`, kept in the catalog with
//! SCRAM-SHA-256 verifiers, and the first superuser of a password-protected cluster.

use crate::auth::scram_verifier;
use crate::catalog::{CatalogCommand, Role};
use crate::engine::Engine;
use crate::error::CoordError;
use crate::session::Session;
use crate::sql::names::{ident, last_ident};
use sqlparser::ast::{
    AlterRoleOperation, CreateRole, Expr, Ident, ObjectName, Password, RoleOption,
};

/// The superuser a `scram-sha-256` cluster starts with.
pub const FIRST_SUPERUSER: &str = "postgres";

fn verifier_of(p: &Password) -> Result<Option<String>, CoordError> {
    match p {
        Password::NullPassword => Ok(None),
        Password::Password(Expr::Value(v)) => match &v.value {
            sqlparser::ast::Value::SingleQuotedString(s) => Ok(Some(scram_verifier(s))),
            other => Err(CoordError::InvalidValue(format!(
                "a password must be a string literal, not {other}"
            ))),
        },
        Password::Password(other) => Err(CoordError::InvalidValue(format!(
            "a password must be a string literal, not {other}"
        ))),
    }
}

impl Engine {
    /// Whether passwords are checked; with `trust`, roles are recorded but not enforced.
    fn auth_enforced(&self) -> bool {
        self.config.auth == "scram-sha-256"
    }

    /// With `scram-sha-256`, creates the first superuser from the configured password when the
    /// catalog has none; refuses to start without one.
    pub(crate) async fn bootstrap_superuser(&self) -> Result<(), CoordError> {
        match self.config.auth.as_str() {
            "trust" => return Ok(()),
            "scram-sha-256" => {}
            other => {
                return Err(CoordError::InvalidValue(format!(
                    "auth must be trust or scram-sha-256, not {other}"
                )))
            }
        }
        if self.catalog.snapshot().roles.contains_key(FIRST_SUPERUSER) {
            return Ok(());
        }
        let password = self
            .config
            .password
            .clone()
            .or_else(|| std::env::var("TESSERA_PASSWORD").ok())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                CoordError::InvalidValue(format!(
                    "auth = scram-sha-256 needs a password for the first superuser \"{FIRST_SUPERUSER}\" (password or TESSERA_PASSWORD)"
                ))
            })?;
        self.catalog
            .propose(CatalogCommand::PutRole {
                role: Role {
                    name: FIRST_SUPERUSER.into(),
                    oid: 0,
                    login: true,
                    superuser: true,
                    scram: Some(scram_verifier(&password)),
                },
                create: false,
            })
            .await?;
        Ok(())
    }

    /// Role management and cluster administration need a superuser (when passwords are
    /// enforced).
    pub(super) fn require_superuser(
        &self,
        session: &Session,
        what: &str,
    ) -> Result<(), CoordError> {
        if !self.auth_enforced() {
            return Ok(());
        }
        let catalog = self.catalog.snapshot();
        match catalog.roles.get(&session.user) {
            Some(r) if r.superuser => Ok(()),
            _ => Err(CoordError::InsufficientPrivilege(format!(
                "only a superuser may {what}"
            ))),
        }
    }

    /// `CREATE ROLE` / `CREATE USER`.
    pub(crate) async fn create_role(
        &self,
        session: &Session,
        cr: &CreateRole,
    ) -> Result<(), CoordError> {
        self.require_superuser(session, "create roles")?;
        for name in &cr.names {
            let name = last_ident(name);
            if cr.if_not_exists && self.catalog.snapshot().roles.contains_key(&name) {
                continue;
            }
            let scram = match &cr.password {
                Some(p) => verifier_of(p)?,
                None => None,
            };
            self.catalog
                .propose(CatalogCommand::PutRole {
                    role: Role {
                        name,
                        oid: 0,
                        login: cr.login.unwrap_or(false),
                        superuser: cr.superuser.unwrap_or(false),
                        scram,
                    },
                    create: true,
                })
                .await?;
        }
        Ok(())
    }

    /// `ALTER ROLE name [WITH] options`: PASSWORD, LOGIN/NOLOGIN, SUPERUSER/NOSUPERUSER.
    /// A role may change its own password; anything else needs a superuser.
    pub(crate) async fn alter_role(
        &self,
        session: &Session,
        name: &Ident,
        operation: &AlterRoleOperation,
    ) -> Result<(), CoordError> {
        let name = ident(name);
        let AlterRoleOperation::WithOptions { options } = operation else {
            return Err(CoordError::unsupported(format!(
                "ALTER ROLE {operation} is not supported"
            )));
        };
        let own_password =
            name == session.user && options.iter().all(|o| matches!(o, RoleOption::Password(_)));
        if !own_password {
            self.require_superuser(session, "alter other roles or their attributes")?;
        }
        let mut role = self
            .catalog
            .snapshot()
            .roles
            .get(&name)
            .cloned()
            .ok_or_else(|| {
                CoordError::UndefinedObject(format!("role \"{name}\" does not exist"))
            })?;
        for o in options {
            match o {
                RoleOption::Password(p) => role.scram = verifier_of(p)?,
                RoleOption::Login(b) => role.login = *b,
                RoleOption::SuperUser(b) => role.superuser = *b,
                other => {
                    return Err(CoordError::unsupported(format!(
                        "role option {other} is not supported"
                    )))
                }
            }
        }
        self.catalog
            .propose(CatalogCommand::PutRole {
                role,
                create: false,
            })
            .await?;
        Ok(())
    }

    /// `DROP ROLE [IF EXISTS] names`. The session's own role cannot be dropped.
    pub(crate) async fn drop_roles(
        &self,
        session: &Session,
        names: &[ObjectName],
        if_exists: bool,
    ) -> Result<(), CoordError> {
        self.require_superuser(session, "drop roles")?;
        for name in names {
            let name = last_ident(name);
            if name == session.user {
                return Err(CoordError::Storage {
                    sqlstate: "55006".into(),
                    message: "current user cannot be dropped".into(),
                });
            }
            if if_exists && !self.catalog.snapshot().roles.contains_key(&name) {
                continue;
            }
            self.catalog
                .propose(CatalogCommand::DropRole { name })
                .await?;
        }
        Ok(())
    }
}
