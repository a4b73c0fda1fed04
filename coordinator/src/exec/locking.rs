//! A locking read over several shards with a LIMIT: each shard locks up to LIMIT rows, the
//! merge keeps LIMIT of them all, and the shards release the rows the client never got, so a
//! queue spread over shards hands out as many jobs at once as PostgreSQL's does.

use super::*;
use crate::planner::ShardTask;

/// Whether a locking read's results must be merged by [`merge_releasing`]: several shards,
/// a LIMIT, and a transaction holding the locks.
pub(super) fn releases_extra(tasks: &[ShardTask], merge: &Merge, txn_id: u64) -> bool {
    let limited = matches!(
        merge,
        Merge::Sort { limit: Some(_), .. } | Merge::Concat { limit: Some(_), .. }
    );
    txn_id != 0 && tasks.len() > 1 && limited && tasks.iter().all(|t| t.lock.is_some())
}

/// Merges the shards' `outputs` (one per task, in order), then asks each shard to release the
/// rows it locked beyond those the merge kept: the merge keeps a prefix of each shard's rows.
#[allow(clippy::too_many_arguments)]
pub(super) async fn merge_releasing(
    engine: &Reach<'_>,
    catalog: &Catalog,
    merge: &Merge,
    tasks: &[ShardTask],
    mut outputs: Vec<(Vec<Vec<Value>>, u64)>,
    params: &[Value],
    budget: &Arc<crate::exec::budget::Budget>,
    txn_id: u64,
    session: &Session,
) -> Result<ResultSet, CoordError> {
    let returned: Vec<usize> = outputs.iter().map(|o| o.0.len()).collect();
    for (i, (rows, _)) in outputs.iter_mut().enumerate() {
        for row in rows {
            row.push(Value::Integer(i as i64));
        }
    }
    // The task index rides at the end of each row through the merge, which must not cut it.
    let (wide, visible) = match merge {
        Merge::Sort {
            keys,
            limit,
            offset,
            visible,
        } => (
            Merge::Sort {
                keys: keys.clone(),
                limit: *limit,
                offset: *offset,
                visible: usize::MAX,
            },
            Some(*visible),
        ),
        other => (other.clone(), None),
    };
    let mut rs = merge_results(&wide, outputs, params, budget).await?;
    let mut kept = vec![0u32; tasks.len()];
    for row in &mut rs.rows {
        if let Some(Value::Integer(i)) = row.pop() {
            if let Some(k) = kept.get_mut(i as usize) {
                *k += 1;
            }
        }
        if let Some(v) = visible {
            row.truncate(v);
        }
    }
    let releases: Vec<Task> = tasks
        .iter()
        .zip(&kept)
        .zip(&returned)
        .filter(|((_, kept), returned)| (**kept as usize) < **returned)
        .filter_map(|((t, kept), _)| {
            let lock = t.lock.as_ref()?;
            let mut task = Task::new(t.target, String::new(), vec![]).locking(Some(lock));
            if let Some(l) = task.lock.as_mut() {
                l.keep = Some(*kept);
            }
            Some(task)
        })
        .collect();
    for r in fanout::run_tasks(engine, catalog, releases, params, txn_id, session).await {
        r?;
    }
    Ok(rs)
}
