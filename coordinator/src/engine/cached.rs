//! The engine's read path through the result cache, and what EXPLAIN says about it.

use crate::cache::policy::{analyse, Cacheability};
use crate::cache::{key, Entry};
use crate::catalog::Catalog;
use crate::cluster::Observed;
use crate::engine::{Completion, Engine, QueryResult};
use crate::error::CoordError;
use crate::exec;
use crate::planner::Plan;
use crate::session::Session;
use crate::sql::dialect::RewriteCtx;
use futures::future::join_all;
use sqlparser::ast::Statement;
use std::collections::BTreeMap;
use std::time::Instant;
use tessera_shared::Value;

/// Name of the session setting that turns the cache off for one session.
pub const SESSION_SETTING: &str = "tessera.cache";

/// Whether the session allows the cache (`SET tessera.cache = off` turns it off).
fn session_allows(session: &Session) -> bool {
    session
        .settings
        .get(SESSION_SETTING)
        .map(|v| {
            !matches!(
                v.trim_matches('\'').to_ascii_lowercase().as_str(),
                "off" | "false" | "no" | "0"
            )
        })
        .unwrap_or(true)
}

impl Engine {
    /// Whether a query in this session goes through the cache: the cache is on, the session
    /// allows it, and no transaction block is open (a transaction reads its own snapshot and
    /// its own uncommitted writes, which no shared entry reflects).
    pub(crate) fn cache_applies(&self, session: &Session) -> bool {
        self.cache.enabled() && session.txn.is_none() && session_allows(session)
    }

    /// Runs a query, serving it from the cache when an entry is still valid and storing the
    /// result when the query may be cached.
    pub(crate) async fn read_through_cache(
        &self,
        session: &mut Session,
        stmt: &Statement,
        params: &[Value],
        rctx: &RewriteCtx,
    ) -> Result<QueryResult, CoordError> {
        let catalog = self.catalog.snapshot();
        let tables = match analyse(stmt, &catalog) {
            Cacheability::Cacheable(tables) => Some(tables),
            Cacheability::Not(_) => None,
        };
        let mut key = tables.as_ref().map(|_| key::build(session, stmt, params));
        if let Some(k) = &key {
            match self.cache.get(k) {
                Some(entry) if self.still_valid(&entry, &catalog).await => {
                    self.cache.hit();
                    return Ok(QueryResult {
                        columns: entry.columns.clone(),
                        rows: entry.rows.clone(),
                        returns_rows: true,
                        completion: Completion::Select,
                    });
                }
                Some(_) => self.cache.miss(Some(k)),
                None => self.cache.miss(None),
            }
            if !self.cache.admits(k) {
                key = None;
            }
        }
        let started = Instant::now();
        let planned = self.plan(stmt, params, rctx)?;
        let observe = match (&tables, &planned.plan, &key) {
            (Some(t), Plan::Distributed { .. } | Plan::Pull { .. }, Some(_)) => Some(t.as_slice()),
            _ => None,
        };
        let (rs, observed) =
            exec::execute_observed(&self.reach(), session, &planned, params, observe).await?;
        if let (Some(key), Some(tables)) = (key, observe) {
            // A result that read no shard (all pruned) has nothing to check later: not cached.
            if !observed.is_empty() {
                let revisions = tables
                    .iter()
                    .filter_map(|t| catalog.tables.get(t).map(|x| (t.clone(), x.revision)))
                    .collect();
                let entry = Entry::new(
                    planned.columns.clone(),
                    rs.rows.clone(),
                    observed,
                    revisions,
                    key.len(),
                );
                self.cache.offer(key, entry, started.elapsed());
            }
        }
        Ok(QueryResult {
            columns: planned.columns,
            rows: rs.rows,
            returns_rows: true,
            completion: Completion::Select,
        })
    }

    /// Whether `entry` may be served now: every table it names still has the catalog revision
    /// it was built under, and every data version it read is unchanged on its node (asked
    /// now, after this read began; one request per node, in parallel).
    async fn still_valid(&self, entry: &Entry, catalog: &Catalog) -> bool {
        let same_tables = entry.tables.iter().all(|(name, revision)| {
            catalog
                .tables
                .get(name)
                .is_some_and(|t| t.revision == *revision)
        });
        if !same_tables || entry.observed.is_empty() {
            return false;
        }
        // A copy that left its shard (unreachable for a write) no longer gets the shard's
        // writes: what was read from it is not checked there again.
        let still_placed = entry.observed.iter().all(|o| {
            o.key.scope == tessera_shared::REFERENCE_SCOPE
                || catalog
                    .shard(o.key.scope)
                    .is_some_and(|(_, s)| s.placements.contains(&o.node))
        });
        if !still_placed {
            return false;
        }
        let mut by_node: BTreeMap<u64, Vec<&Observed>> = BTreeMap::new();
        for o in &entry.observed {
            by_node.entry(o.node).or_default().push(o);
        }
        let checks = by_node.into_iter().map(|(node, seen)| async move {
            let Ok(n) = catalog.node(node) else {
                return false;
            };
            let keys = seen.iter().map(|o| o.key.clone()).collect();
            match self.cluster.versions(n, keys).await {
                Ok((incarnation, now)) => {
                    now.len() == seen.len()
                        && seen
                            .iter()
                            .zip(now)
                            .all(|(o, v)| o.incarnation == incarnation && o.version == v)
                }
                Err(_) => false,
            }
        });
        join_all(checks).await.into_iter().all(|ok| ok)
    }

    /// EXPLAIN's line about the cache: whether this query would be served from it now.
    pub(crate) async fn explain_cache(
        &self,
        session: &Session,
        stmt: &Statement,
        params: &[Value],
    ) -> String {
        if !self.cache.enabled() {
            return "Result cache: off (coordinator configuration)".into();
        }
        if !session_allows(session) {
            return format!("Result cache: off ({SESSION_SETTING} = off)");
        }
        if session.txn.is_some() {
            return "Result cache: not used inside a transaction block".into();
        }
        let catalog = self.catalog.snapshot();
        if let Cacheability::Not(why) = analyse(stmt, &catalog) {
            return format!("Result cache: not cacheable: {why}");
        }
        let key = key::build(session, stmt, params);
        match self.cache.get(&key) {
            Some(entry) if self.still_valid(&entry, &catalog).await => format!(
                "Result cache: hit (filled {:.3} s ago; {} data versions checked)",
                entry.filled.elapsed().as_secs_f64(),
                entry.observed.len()
            ),
            Some(_) => "Result cache: miss (stale: a table it read has changed)".into(),
            None => "Result cache: miss".into(),
        }
    }
}
