//! Roles: `pg_roles` and `pg_user`, and the owner every object shows.

use super::*;

/// Roles.
pub(super) struct Roles;

impl RelationGroup for Roles {
    fn names(&self) -> &'static [&'static str] {
        &["pg_roles", "pg_user"]
    }

    fn build(&self, name: &str, cx: &Context<'_>) -> Option<Relation> {
        use PgType::*;
        let Context { catalog, .. } = *cx;
        Some(match name {
            "pg_roles" => (
                vec![
                    ("oid", Int8),
                    ("rolname", Text),
                    ("rolsuper", Bool),
                    ("rolinherit", Bool),
                    ("rolcreaterole", Bool),
                    ("rolcreatedb", Bool),
                    ("rolcanlogin", Bool),
                    ("rolreplication", Bool),
                    ("rolconnlimit", Int4),
                    ("rolpassword", Text),
                    ("rolvaliduntil", Timestamptz),
                    ("rolbypassrls", Bool),
                    ("rolconfig", Text),
                ],
                roles(catalog)
                    .into_iter()
                    .map(|(oid, name, sup, login)| {
                        vec![
                            i(oid),
                            t(&name),
                            b(sup),
                            b(true),
                            b(sup),
                            b(sup),
                            b(login),
                            b(false),
                            i(-1),
                            t("********"),
                            NULL,
                            b(false),
                            NULL,
                        ]
                    })
                    .collect(),
            ),
            "pg_user" => (
                vec![
                    ("usename", Text),
                    ("usesysid", Int8),
                    ("usecreatedb", Bool),
                    ("usesuper", Bool),
                    ("userepl", Bool),
                    ("usebypassrls", Bool),
                    ("passwd", Text),
                    ("valuntil", Timestamptz),
                    ("useconfig", Text),
                ],
                roles(catalog)
                    .into_iter()
                    .filter(|r| r.3)
                    .map(|(oid, name, sup, _)| {
                        vec![
                            t(&name),
                            i(oid),
                            b(sup),
                            b(sup),
                            b(false),
                            b(false),
                            t("********"),
                            NULL,
                            NULL,
                        ]
                    })
                    .collect(),
            ),
            _ => return None,
        })
    }
}

/// The role rows: recorded roles, or the bootstrap superuser when none is.
fn roles(catalog: &Catalog) -> Vec<(i64, String, bool, bool)> {
    if catalog.roles.is_empty() {
        return vec![(BOOTSTRAP_ROLE, "postgres".into(), true, true)];
    }
    catalog
        .roles
        .values()
        .map(|r| (i64::from(r.oid), r.name.clone(), r.superuser, r.login))
        .collect()
}

/// The owner OID shown for every object: the first superuser.
pub fn owner(catalog: &Catalog) -> i64 {
    roles(catalog)
        .into_iter()
        .find(|r| r.2)
        .map(|r| r.0)
        .unwrap_or(BOOTSTRAP_ROLE)
}

/// The name of the owner shown for every object.
pub fn owner_name(catalog: &Catalog) -> String {
    let o = owner(catalog);
    roles(catalog)
        .into_iter()
        .find(|r| r.0 == o)
        .map(|r| r.1)
        .unwrap_or_else(|| "postgres".into())
}
