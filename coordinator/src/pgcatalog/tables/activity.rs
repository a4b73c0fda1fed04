//! The running server: `pg_settings` and `pg_stat_activity`.

use super::*;

/// The running server.
pub(super) struct Activity;

impl RelationGroup for Activity {
    fn names(&self) -> &'static [&'static str] {
        &["pg_settings", "pg_stat_activity"]
    }

    fn build(&self, name: &str, cx: &Context<'_>) -> Option<Relation> {
        use PgType::*;
        let Context { session, .. } = *cx;
        Some(match name {
            "pg_settings" => (
                vec![
                    ("name", Text),
                    ("setting", Text),
                    ("unit", Text),
                    ("category", Text),
                    ("short_desc", Text),
                    ("context", Text),
                    ("vartype", Text),
                    ("source", Text),
                    ("boot_val", Text),
                    ("reset_val", Text),
                ],
                session
                    .settings
                    .iter()
                    .map(|(k, v)| {
                        vec![
                            t(k),
                            t(v),
                            NULL,
                            t("Tessera"),
                            t(""),
                            t("user"),
                            t("string"),
                            t("session"),
                            t(v),
                            t(v),
                        ]
                    })
                    .collect(),
            ),
            "pg_stat_activity" => (
                vec![
                    ("datid", Int8),
                    ("datname", Text),
                    ("pid", Int4),
                    ("usename", Text),
                    ("application_name", Text),
                    ("client_addr", Text),
                    ("state", Text),
                    ("query", Text),
                ],
                // Only this session: coordinators do not share a session registry yet.
                vec![vec![
                    i(5),
                    t(&session.database),
                    i(i64::from(std::process::id())),
                    t(&session.user),
                    t(session
                        .settings
                        .get("application_name")
                        .map(String::as_str)
                        .unwrap_or("")),
                    NULL,
                    t("active"),
                    NULL,
                ]],
            ),
            _ => return None,
        })
    }
}
