//! The query-result cache: memory-bounded, and never serving a result older than a write
//! acknowledged before the read began, whichever coordinator took the write.
//!
//! # How it stays coherent
//! An entry records, for every shard table its result read, the storage node's *data
//! version* as it was before the read (see `tessera_storage::versions`), and the catalog
//! revision of every table it names. Serving an entry first asks each of those nodes for
//! the current versions (one small RPC per node, in parallel) and checks the catalog
//! revisions; any difference makes it a miss. Storage nodes change a version after a
//! write commits and *before* it is acknowledged, so a write acknowledged before the read
//! began is always seen by that check. Nothing depends on messages reaching this
//! coordinator in time, so any number of coordinators can share the storage nodes.
//!
//! # Layout
//! - [`key`]: the cache key (statement, parameters, result-affecting settings).
//! - [`policy`]: which statements may be cached, and the tables they read.
//! - this file: the memory-bounded store (moka: TinyLFU admission, LRU eviction, a byte
//!   weigher), entries and counters.

pub mod key;
pub mod policy;

use crate::cluster::Observed;
use crate::sql::infer::OutputColumn;
use moka::notification::RemovalCause;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_shared::Value;

/// Result cache settings (`[cache]` in the coordinator's TOML file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheConfig {
    /// Whether the cache exists at all. Sessions can still opt out with
    /// `SET tessera.cache = off`. Default true.
    pub enabled: bool,
    /// Memory bound for all entries, in bytes (keys, rows and bookkeeping). Default 256 MiB.
    pub capacity_bytes: u64,
    /// Results larger than this are never cached. Default 16 MiB.
    pub max_entry_bytes: u64,
    /// Entries are dropped this long after they were filled (0: only when evicted or
    /// invalidated). Staleness never depends on it. Default 0.
    pub ttl_secs: u64,
    /// Store a result only once its key has missed this many times recently (1: at the first
    /// miss). With 2, queries that never repeat cost no copy and push nothing out. Default 2.
    pub admit_after_misses: u32,
    /// Results that took less than this to compute are not cached (0: cache everything).
    /// Serving a hit costs one version check per storage node read, so caching results
    /// cheaper than that check gains nothing. Default 0.
    pub min_cost_micros: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            capacity_bytes: 256 << 20,
            max_entry_bytes: 16 << 20,
            ttl_secs: 0,
            min_cost_micros: 0,
            admit_after_misses: 2,
        }
    }
}

/// A cached result and what it depended on.
#[derive(Debug)]
pub struct Entry {
    /// Result columns.
    pub columns: Vec<OutputColumn>,
    /// Result rows.
    pub rows: Vec<Vec<Value>>,
    /// Data versions read before the result was computed.
    pub observed: Vec<Observed>,
    /// Tables the statement names, with their catalog revisions then.
    pub tables: Vec<(String, u64)>,
    /// When it was filled.
    pub filled: Instant,
    /// Bytes it is weighed at.
    pub weight: u32,
}

impl Entry {
    /// An entry, weighed: its rows, columns, dependencies and `key_len` key bytes.
    pub fn new(
        columns: Vec<OutputColumn>,
        rows: Vec<Vec<Value>>,
        observed: Vec<Observed>,
        tables: Vec<(String, u64)>,
        key_len: usize,
    ) -> Entry {
        let weight = entry_bytes(&columns, &rows, &observed, &tables, key_len);
        Entry {
            columns,
            rows,
            observed,
            tables,
            filled: Instant::now(),
            weight: weight.min(u64::from(u32::MAX)) as u32,
        }
    }
}

/// Approximate heap bytes of an entry (what the memory bound counts).
fn entry_bytes(
    columns: &[OutputColumn],
    rows: &[Vec<Value>],
    observed: &[Observed],
    tables: &[(String, u64)],
    key_len: usize,
) -> u64 {
    let value = std::mem::size_of::<Value>() as u64;
    let mut bytes = 256 + key_len as u64 * 2;
    for r in rows {
        bytes += std::mem::size_of::<Vec<Value>>() as u64 + value * r.len() as u64;
        for v in r {
            bytes += match v {
                Value::Text(s) => s.capacity() as u64,
                Value::Blob(b) => b.capacity() as u64,
                _ => 0,
            };
        }
    }
    for c in columns {
        bytes += 64 + c.name.len() as u64;
    }
    for o in observed {
        bytes += std::mem::size_of::<Observed>() as u64 + o.key.table.len() as u64;
    }
    for (t, _) in tables {
        bytes += 32 + t.len() as u64;
    }
    bytes
}

/// Counters behind `SHOW tessera.cache_stats`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Served from the cache.
    pub hits: AtomicU64,
    /// Looked up and not served (absent or stale).
    pub misses: AtomicU64,
    /// Entries found stale by the version check (a subset of misses).
    pub stale: AtomicU64,
    /// Entries stored.
    pub fills: AtomicU64,
    /// Results not stored: first misses (doorkeeper), larger than `max_entry_bytes`, or
    /// cheaper than `min_cost_micros`.
    pub rejected: AtomicU64,
    /// Entries evicted to stay within `capacity_bytes`.
    pub evictions: AtomicU64,
    /// Entries dropped because a table they read changed definition, or was cleared, or went stale.
    pub invalidations: AtomicU64,
    /// Entries dropped by `ttl_secs`.
    pub expirations: AtomicU64,
}

/// Slots of the doorkeeper (a power of two).
const DOORKEEPER_SLOTS: usize = 1 << 16;

/// The coordinator's result cache.
pub struct ResultCache {
    config: CacheConfig,
    store: moka::sync::Cache<String, Arc<Entry>>,
    counters: Arc<Counters>,
    /// Hashes of keys that missed once recently, one per slot (TinyLFU's doorkeeper): a key
    /// is admitted when it misses again while its hash is still in its slot.
    doorkeeper: Box<[AtomicU64]>,
}

impl ResultCache {
    /// An empty cache.
    pub fn new(config: CacheConfig) -> ResultCache {
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let mut builder = moka::sync::Cache::builder()
            .max_capacity(config.capacity_bytes)
            .weigher(|_k: &String, v: &Arc<Entry>| v.weight)
            .support_invalidation_closures()
            .eviction_listener(move |_k, _v, cause| {
                let counter = match cause {
                    RemovalCause::Size => &c.evictions,
                    RemovalCause::Expired => &c.expirations,
                    RemovalCause::Explicit => &c.invalidations,
                    RemovalCause::Replaced => return,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            });
        if config.ttl_secs > 0 {
            builder = builder.time_to_live(Duration::from_secs(config.ttl_secs));
        }
        ResultCache {
            store: builder.build(),
            config,
            counters,
            doorkeeper: (0..DOORKEEPER_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Whether a result for `key`, which just missed, should be computed for storing. With
    /// `admit_after_misses` 2, the first miss only records the key.
    pub fn admits(&self, key: &str) -> bool {
        if self.config.admit_after_misses <= 1 {
            return true;
        }
        use std::hash::Hasher;
        // DefaultHasher::new() has fixed keys: a key always lands in the same slot.
        let mut fx = std::hash::DefaultHasher::new();
        fx.write(key.as_bytes());
        let hash = fx.finish() | 1;
        let slot = &self.doorkeeper[hash as usize & (DOORKEEPER_SLOTS - 1)];
        if slot.load(Ordering::Relaxed) == hash {
            true
        } else {
            slot.store(hash, Ordering::Relaxed);
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Whether the cache is configured on.
    pub fn enabled(&self) -> bool {
        self.config.enabled && self.config.capacity_bytes > 0
    }

    /// The entry under `key`, not yet checked for staleness.
    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.store.get(key)
    }

    /// Counts a hit.
    pub fn hit(&self) {
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a miss; a stale entry is dropped.
    pub fn miss(&self, stale_key: Option<&str>) {
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        if let Some(k) = stale_key {
            self.counters.stale.fetch_add(1, Ordering::Relaxed);
            self.store.invalidate(k);
        }
    }

    /// Stores `entry` unless it is too large or was too cheap to compute (`cost`).
    pub fn offer(&self, key: String, entry: Entry, cost: Duration) -> bool {
        if u64::from(entry.weight) > self.config.max_entry_bytes
            || entry.weight == u32::MAX
            || cost < Duration::from_micros(self.config.min_cost_micros)
        {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.counters.fills.fetch_add(1, Ordering::Relaxed);
        self.store.insert(key, Arc::new(entry));
        true
    }

    /// Drops every entry that read `table` (its definition changed, or it was dropped).
    pub fn invalidate_table(&self, table: &str) {
        let t = table.to_string();
        if self
            .store
            .invalidate_entries_if(move |_k, v| v.tables.iter().any(|(n, _)| *n == t))
            .is_err()
        {
            self.store.invalidate_all();
        }
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.store.invalidate_all();
        self.store.run_pending_tasks();
    }

    /// Counters and sizes, as (name, value) rows.
    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        self.store.run_pending_tasks();
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("enabled", u64::from(self.enabled())),
            ("entries", self.store.entry_count()),
            ("bytes", self.store.weighted_size()),
            ("capacity_bytes", self.config.capacity_bytes),
            ("hits", get(&c.hits)),
            ("misses", get(&c.misses)),
            ("stale", get(&c.stale)),
            ("fills", get(&c.fills)),
            ("rejected", get(&c.rejected)),
            ("evictions", get(&c.evictions)),
            ("invalidations", get(&c.invalidations)),
            ("expirations", get(&c.expirations)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_shared::PgType;

    fn entry(rows: usize, width: usize, table: &str) -> Entry {
        Entry::new(
            vec![OutputColumn {
                name: "v".into(),
                ty: PgType::Text,
            }],
            (0..rows)
                .map(|i| vec![Value::Text(format!("{i:0width$}"))])
                .collect(),
            vec![],
            vec![(table.into(), 1)],
            10,
        )
    }

    #[test]
    fn memory_bound_holds_under_a_flood_of_distinct_large_results() {
        let cap = 4 << 20;
        let cache = ResultCache::new(CacheConfig {
            capacity_bytes: cap,
            max_entry_bytes: 1 << 20,
            ..CacheConfig::default()
        });
        let mut stored = 0;
        for i in 0..2000 {
            // ~100-300 KB each: the flood is ~100x the capacity.
            let e = entry(1000 + (i % 3) * 1000, 64, "t");
            assert!(e.weight > 90_000);
            if cache.offer(format!("q{i}"), e, Duration::ZERO) {
                stored += 1;
            }
            // Touch some keys twice so TinyLFU sees a frequency signal.
            let _ = cache.get(&format!("q{}", i / 2));
            if i % 100 == 0 {
                cache.store.run_pending_tasks();
                assert!(cache.store.weighted_size() <= cap, "over the bound at {i}");
            }
        }
        cache.store.run_pending_tasks();
        let stats: std::collections::HashMap<_, _> = cache.stats().into_iter().collect();
        assert!(stats["bytes"] <= cap, "{stats:?}");
        assert!(stats["entries"] > 0, "{stats:?}");
        assert_eq!(stored, 2000);
        assert!(stats["evictions"] > 0, "{stats:?}");
    }

    #[test]
    fn oversize_and_cheap_results_are_not_stored() {
        let cache = ResultCache::new(CacheConfig {
            capacity_bytes: 1 << 30,
            max_entry_bytes: 50_000,
            min_cost_micros: 100,
            ..CacheConfig::default()
        });
        assert!(!cache.offer("big".into(), entry(1000, 64, "t"), Duration::from_secs(1)));
        assert!(!cache.offer("cheap".into(), entry(1, 1, "t"), Duration::from_micros(10)));
        assert!(cache.offer("ok".into(), entry(1, 1, "t"), Duration::from_millis(1)));
        assert!(cache.get("ok").is_some());
        assert!(cache.get("big").is_none());
    }

    #[test]
    fn a_key_is_admitted_on_its_second_miss() {
        let cache = ResultCache::new(CacheConfig::default());
        assert!(!cache.admits("SELECT 1"), "first miss only records");
        assert!(cache.admits("SELECT 1"), "second miss admits");
        assert!(!cache.admits("SELECT 2"));
        let eager = ResultCache::new(CacheConfig {
            admit_after_misses: 1,
            ..CacheConfig::default()
        });
        assert!(eager.admits("SELECT 3"));
    }

    #[test]
    fn ddl_invalidates_only_entries_reading_that_table() {
        let cache = ResultCache::new(CacheConfig::default());
        cache.offer("a".into(), entry(1, 1, "a"), Duration::ZERO);
        cache.offer("b".into(), entry(1, 1, "b"), Duration::ZERO);
        cache.invalidate_table("a");
        cache.store.run_pending_tasks();
        assert!(cache.get("a").is_none());
        assert!(cache.get("b").is_some());
    }
}
