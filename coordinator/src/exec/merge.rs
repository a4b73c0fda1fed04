//! Merging shard results at the coordinator: k-way merge sort, concatenation, LIMIT/OFFSET.

use crate::planner::SortKey;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use tessera_shared::Value;

/// Compares two rows by sort keys with Postgres' NULL placement (as rewritten into the shard SQL).
pub fn compare(a: &[Value], b: &[Value], keys: &[SortKey]) -> Ordering {
    for k in keys {
        // A row narrower than the plan expects sorts its missing key as NULL (never a panic).
        let (x, y) = (
            a.get(k.column).unwrap_or(&Value::Null),
            b.get(k.column).unwrap_or(&Value::Null),
        );
        let ord = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => {
                if k.nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (false, true) => {
                if k.nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (false, false) => {
                let o = x.sqlite_cmp(y);
                if k.desc {
                    o.reverse()
                } else {
                    o
                }
            }
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

struct Head<'k> {
    row: Vec<Value>,
    source: usize,
    keys: &'k [SortKey],
}

impl PartialEq for Head<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Head<'_> {}
impl PartialOrd for Head<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: reverse for smallest-first; ties by source keep the merge stable.
        compare(&other.row, &self.row, self.keys).then(other.source.cmp(&self.source))
    }
}

/// k-way merge of sorted inputs, then OFFSET/LIMIT; rows are cut to `visible` columns.
pub fn merge_sorted(
    inputs: Vec<Vec<Vec<Value>>>,
    keys: &[SortKey],
    limit: Option<u64>,
    offset: u64,
    visible: usize,
) -> Vec<Vec<Value>> {
    let mut iters: Vec<std::vec::IntoIter<Vec<Value>>> =
        inputs.into_iter().map(|v| v.into_iter()).collect();
    let mut heap = BinaryHeap::new();
    for (i, it) in iters.iter_mut().enumerate() {
        if let Some(row) = it.next() {
            heap.push(Head {
                row,
                source: i,
                keys,
            });
        }
    }
    let want = limit.map(|l| l.saturating_add(offset));
    let mut out = Vec::new();
    let mut taken = 0u64;
    while let Some(Head {
        mut row, source, ..
    }) = heap.pop()
    {
        if want.is_some_and(|w| taken >= w) {
            break;
        }
        if let Some(next) = iters[source].next() {
            heap.push(Head {
                row: next,
                source,
                keys,
            });
        }
        taken += 1;
        if taken > offset {
            row.truncate(visible);
            out.push(row);
        }
    }
    out
}

/// Concatenation, then OFFSET/LIMIT.
pub fn concat(inputs: Vec<Vec<Vec<Value>>>, limit: Option<u64>, offset: u64) -> Vec<Vec<Value>> {
    let it = inputs.into_iter().flatten().skip(offset as usize);
    match limit {
        Some(l) => it.take(l as usize).collect(),
        None => it.collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(v: &[Option<i64>]) -> Vec<Vec<Value>> {
        v.iter()
            .map(|x| {
                vec![
                    x.map(Value::Integer).unwrap_or(Value::Null),
                    Value::Text("h".into()),
                ]
            })
            .collect()
    }

    #[test]
    fn merges_sorted_inputs_with_nulls_last() {
        let keys = [SortKey {
            column: 0,
            desc: false,
            nulls_first: false,
        }];
        let out = merge_sorted(
            vec![
                rows(&[Some(1), Some(4), None]),
                rows(&[Some(2), Some(3)]),
                rows(&[]),
            ],
            &keys,
            None,
            0,
            1,
        );
        let got: Vec<Value> = out.into_iter().map(|r| r[0].clone()).collect();
        assert_eq!(
            got,
            vec![
                Value::Integer(1),
                Value::Integer(2),
                Value::Integer(3),
                Value::Integer(4),
                Value::Null
            ]
        );
    }

    #[test]
    fn desc_limit_offset() {
        let keys = [SortKey {
            column: 0,
            desc: true,
            nulls_first: true,
        }];
        let out = merge_sorted(
            vec![rows(&[None, Some(9), Some(5)]), rows(&[Some(7), Some(1)])],
            &keys,
            Some(2),
            1,
            2,
        );
        assert_eq!(
            out,
            vec![
                vec![Value::Integer(9), Value::Text("h".into())],
                vec![Value::Integer(7), Value::Text("h".into())]
            ]
        );
        assert_eq!(
            concat(
                vec![rows(&[Some(1)]), rows(&[Some(2), Some(3)])],
                Some(1),
                1
            )
            .len(),
            1
        );
    }

    #[test]
    fn merge_equals_sort_of_concatenation() {
        // Property: for any split of sorted data, the merge equals a global sort.
        let mut seed = 7u64;
        for round in 0..50 {
            let mut parts: Vec<Vec<i64>> = vec![vec![]; 1 + round % 5];
            let mut all = Vec::new();
            for _ in 0..(round * 3) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let v = (seed >> 33) as i64 % 100;
                let n = parts.len();
                parts[(seed as usize) % n].push(v);
                all.push(v);
            }
            for p in &mut parts {
                p.sort();
            }
            all.sort();
            let inputs = parts
                .into_iter()
                .map(|p| p.into_iter().map(|v| vec![Value::Integer(v)]).collect())
                .collect();
            let keys = [SortKey {
                column: 0,
                desc: false,
                nulls_first: false,
            }];
            let merged: Vec<i64> = merge_sorted(inputs, &keys, None, 0, 1)
                .into_iter()
                .map(|r| match r[0] {
                    Value::Integer(i) => i,
                    _ => -1,
                })
                .collect();
            assert_eq!(merged, all);
        }
    }
}
