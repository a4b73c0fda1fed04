//! Relations that are always empty in Tessera (no policies, statistics objects, publications, triggers, rules, inheritance …): a query that must read one of them reads nothing.

use super::*;

/// Relations that are always empty in Tessera (no policies, statistics objects, publications, triggers, rules, inheritance …).
pub(super) struct Empty;

impl RelationGroup for Empty {
    fn names(&self) -> &'static [&'static str] {
        &[
            "pg_auth_members",
            "pg_description",
            "pg_inherits",
            "pg_opclass",
            "pg_extension",
            "pg_proc",
            "pg_policy",
            "pg_statistic_ext",
            "pg_publication",
            "pg_publication_rel",
            "pg_publication_namespace",
            "pg_trigger",
            "pg_rewrite",
            "pg_sequence",
            "pg_partitioned_table",
            "pg_foreign_table",
            "pg_cast",
            "pg_operator",
            "pg_event_trigger",
            "pg_db_role_setting",
        ]
    }

    fn build(&self, name: &str, _: &Context<'_>) -> Option<Relation> {
        use PgType::*;

        Some(match name {
            "pg_auth_members" => (
                vec![
                    ("roleid", Int8),
                    ("member", Int8),
                    ("grantor", Int8),
                    ("admin_option", Bool),
                ],
                vec![],
            ),
            "pg_description" => (
                vec![
                    ("objoid", Int8),
                    ("classoid", Int8),
                    ("objsubid", Int4),
                    ("description", Text),
                ],
                vec![],
            ),
            "pg_inherits" => (
                vec![
                    ("inhrelid", Int8),
                    ("inhparent", Int8),
                    ("inhseqno", Int4),
                    ("inhdetachpending", Bool),
                ],
                vec![],
            ),
            "pg_opclass" => (
                vec![
                    ("oid", Int8),
                    ("opcmethod", Int8),
                    ("opcname", Text),
                    ("opcnamespace", Int8),
                    ("opcowner", Int8),
                    ("opcfamily", Int8),
                    ("opcintype", Int8),
                    ("opcdefault", Bool),
                    ("opckeytype", Int8),
                ],
                vec![],
            ),
            "pg_extension" => (
                vec![
                    ("oid", Int8),
                    ("extname", Text),
                    ("extowner", Int8),
                    ("extnamespace", Int8),
                    ("extrelocatable", Bool),
                    ("extversion", Text),
                ],
                vec![],
            ),
            "pg_proc" => (
                vec![
                    ("oid", Int8),
                    ("proname", Text),
                    ("pronamespace", Int8),
                    ("proowner", Int8),
                    ("prokind", Text),
                    ("prorettype", Int8),
                    ("proargtypes", Text),
                ],
                vec![],
            ),
            "pg_policy" => (
                vec![
                    ("oid", Int8),
                    ("polname", Text),
                    ("polrelid", Int8),
                    ("polcmd", Text),
                    ("polpermissive", Bool),
                    ("polroles", Text),
                    ("polqual", Text),
                    ("polwithcheck", Text),
                ],
                vec![],
            ),
            "pg_statistic_ext" => (
                vec![
                    ("oid", Int8),
                    ("stxrelid", Int8),
                    ("stxname", Text),
                    ("stxnamespace", Int8),
                    ("stxowner", Int8),
                    ("stxstattarget", Int4),
                    ("stxkeys", Text),
                    ("stxkind", Text),
                ],
                vec![],
            ),
            "pg_publication" => (
                vec![
                    ("oid", Int8),
                    ("pubname", Text),
                    ("pubowner", Int8),
                    ("puballtables", Bool),
                    ("pubinsert", Bool),
                    ("pubupdate", Bool),
                    ("pubdelete", Bool),
                    ("pubtruncate", Bool),
                    ("pubviaroot", Bool),
                ],
                vec![],
            ),
            "pg_publication_rel" => (
                vec![
                    ("oid", Int8),
                    ("prpubid", Int8),
                    ("prrelid", Int8),
                    ("prqual", Text),
                    ("prattrs", Text),
                ],
                vec![],
            ),
            "pg_publication_namespace" => (
                vec![("oid", Int8), ("pnpubid", Int8), ("pnnspid", Int8)],
                vec![],
            ),
            "pg_trigger" => (
                vec![
                    ("oid", Int8),
                    ("tgrelid", Int8),
                    ("tgname", Text),
                    ("tgenabled", Text),
                    ("tgisinternal", Bool),
                    ("tgparentid", Int8),
                ],
                vec![],
            ),
            "pg_rewrite" => (
                vec![
                    ("oid", Int8),
                    ("rulename", Text),
                    ("ev_class", Int8),
                    ("ev_type", Text),
                    ("ev_enabled", Text),
                    ("is_instead", Bool),
                ],
                vec![],
            ),
            "pg_sequence" => (
                vec![
                    ("seqrelid", Int8),
                    ("seqtypid", Int8),
                    ("seqstart", Int8),
                    ("seqincrement", Int8),
                    ("seqmax", Int8),
                    ("seqmin", Int8),
                    ("seqcache", Int8),
                    ("seqcycle", Bool),
                ],
                vec![],
            ),
            "pg_partitioned_table" => (
                vec![
                    ("partrelid", Int8),
                    ("partstrat", Text),
                    ("partnatts", Int2),
                ],
                vec![],
            ),
            "pg_foreign_table" => (
                vec![("ftrelid", Int8), ("ftserver", Int8), ("ftoptions", Text)],
                vec![],
            ),
            "pg_cast" => (
                vec![
                    ("oid", Int8),
                    ("castsource", Int8),
                    ("casttarget", Int8),
                    ("castfunc", Int8),
                    ("castcontext", Text),
                    ("castmethod", Text),
                ],
                vec![],
            ),
            "pg_operator" => (
                vec![
                    ("oid", Int8),
                    ("oprname", Text),
                    ("oprnamespace", Int8),
                    ("oprkind", Text),
                    ("oprleft", Int8),
                    ("oprright", Int8),
                    ("oprresult", Int8),
                    ("oprcode", Text),
                ],
                vec![],
            ),
            "pg_event_trigger" => (
                vec![
                    ("oid", Int8),
                    ("evtname", Text),
                    ("evtevent", Text),
                    ("evtowner", Int8),
                    ("evtfoid", Int8),
                    ("evtenabled", Text),
                    ("evttags", Text),
                ],
                vec![],
            ),
            "pg_db_role_setting" => (
                vec![
                    ("setdatabase", Int8),
                    ("setrole", Int8),
                    ("setconfig", Text),
                ],
                vec![],
            ),
            _ => return None,
        })
    }
}
