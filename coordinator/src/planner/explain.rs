//! EXPLAIN output: the route (shards and nodes) and the merge, one line each.

use super::{Merge, Plan, Planned};
use crate::catalog::{Catalog, Storage};

fn node_name(catalog: &Catalog, id: u64) -> String {
    catalog
        .nodes
        .get(&id)
        .map(|n| format!("{} ({})", n.name, n.addr))
        .unwrap_or_else(|| format!("node {id}"))
}

/// The lines EXPLAIN prints for a plan.
pub fn explain(p: &Planned, catalog: &Catalog) -> Vec<String> {
    let mut out = Vec::new();
    match &p.plan {
        Plan::Local { sql } => {
            out.push("Coordinator: evaluated locally (no table)".into());
            out.push(format!("  SQL: {sql}"));
        }
        Plan::Distributed {
            tasks,
            merge,
            write,
        } => {
            let kind = if *write { "Write" } else { "Read" };
            let shards = match merge {
                Merge::Replicated { primaries, .. } => *primaries,
                _ => tasks.len(),
            };
            let copies = if shards > 0 && shards < tasks.len() {
                format!(", {} copies each", tasks.len() / shards)
            } else {
                String::new()
            };
            let route = if shards == 1 {
                format!("single shard{copies}")
            } else {
                format!("{shards} shards{copies}")
            };
            out.push(format!("{kind}: {route}"));
            if *write && tasks.len() > 1 {
                out.push(
                    "  Atomicity: one transaction per shard copy, committed together after all succeed"
                        .into(),
                );
            }
            out.push(format!("  Merge: {}", describe_merge(merge)));
            for t in tasks {
                out.push(format!(
                    "  Shard {} on {}",
                    t.target.shard,
                    node_name(catalog, t.target.node)
                ));
                out.push(format!("    SQL: {}", t.sql));
            }
        }
        Plan::Pull {
            tables,
            sql,
            reason,
        } => {
            out.push(format!("Pull to coordinator: {reason}"));
            for t in tables {
                let shards: Vec<String> = t
                    .targets
                    .iter()
                    .map(|x| format!("{}@{}", x.shard, node_name(catalog, x.node)))
                    .collect();
                out.push(format!(
                    "  Gather {} from shards {}",
                    t.name,
                    shards.join(", ")
                ));
                if let Some(f) = &t.filter {
                    out.push(format!("    Filter on the shards: {f}"));
                }
            }
            out.push(format!("  Coordinator SQL: {sql}"));
        }
    }
    out
}

/// What EXPLAIN adds for the tables a statement names: where a document table's rows live,
/// and which of its path indexes the shards' SQL uses.
pub fn explain_storage(p: &Planned, catalog: &Catalog, tables: &[String]) -> Vec<String> {
    let sqls: Vec<&str> = match &p.plan {
        Plan::Distributed { tasks, .. } => tasks.iter().map(|t| t.sql.as_str()).collect(),
        Plan::Pull { tables, .. } => tables.iter().filter_map(|t| t.filter.as_deref()).collect(),
        Plan::Local { .. } => vec![],
    };
    let mut out = Vec::new();
    for t in tables.iter().filter_map(|n| catalog.tables.get(n)) {
        if t.storage != Storage::Document {
            continue;
        }
        out.push(format!(
            "  Storage of {}: document (fjall on the storage nodes; filters and JSON paths run there)",
            t.name
        ));
        for i in &t.indexes {
            if let Some(path) = &i.path {
                let hidden = format!("__ix{}", path.slot);
                if sqls.iter().any(|s| s.contains(&hidden)) {
                    out.push(format!(
                        "  Path index {} ({}) scanned on the shards",
                        i.name,
                        i.columns.join(", ")
                    ));
                }
            }
        }
    }
    out
}

fn describe_merge(m: &Merge) -> String {
    let lim = |l: &Option<u64>, o: &u64| {
        let mut s = String::new();
        if let Some(l) = l {
            s.push_str(&format!(" limit {l}"));
        }
        if *o > 0 {
            s.push_str(&format!(" offset {o}"));
        }
        s
    };
    match m {
        Merge::Single => "none (one shard answers)".into(),
        Merge::FirstOnly => "first replica's result (reference table)".into(),
        Merge::Replicated { primaries, inner } => format!(
            "{} (each shard written on every replica; {primaries} first copies answer)",
            describe_merge(inner)
        ),
        Merge::Concat { limit, offset } => format!("concatenate{}", lim(limit, offset)),
        Merge::Sort {
            keys,
            limit,
            offset,
            ..
        } => {
            let k: Vec<String> = keys
                .iter()
                .map(|k| format!("col{}{}", k.column + 1, if k.desc { " desc" } else { "" }))
                .collect();
            format!("k-way merge sort on {}{}", k.join(", "), lim(limit, offset))
        }
        Merge::Final { sql, .. } => format!("combine partial aggregates: {sql}"),
    }
}
