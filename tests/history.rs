//! A recorded concurrent history, checked Elle-style (Kingsbury and Alvaro's list-append
//! checker, in small): transactions append unique numbers to per-key lists and read lists, on a
//! three-copy cluster whose storage nodes are killed `-9` and restarted midway. From the final
//! lists (each key's version order) the checker derives write-write and write-read dependencies
//! and reports what READ COMMITTED forbids: aborted reads (G1a), intermediate reads (G1b), cycles
//! of write and read dependencies (G0, G1c), lost or duplicated acknowledged appends, reads that
//! are no state the key ever had, and reads that go backwards or miss the reader's own writes.
//!
//! `TESSERA_HISTORY_SEED` replays a run.

mod common;

use common::{Cluster, Rng};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio_postgres::Client;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Status {
    Committed,
    Aborted,
    /// COMMIT was sent and no answer came back: it may have committed.
    Unknown,
}

#[derive(Debug, Clone)]
enum Op {
    Append(i64, i64),
    Read(i64, Vec<i64>),
}

#[derive(Debug, Clone)]
struct Txn {
    ops: Vec<Op>,
    status: Status,
}

/// Everything READ COMMITTED forbids that `history` shows, given each key's final list.
fn anomalies(history: &[Txn], finals: &BTreeMap<i64, Vec<i64>>) -> Vec<String> {
    let mut found = Vec::new();
    // Who appended each number, and the numbers each transaction appended to each key in order.
    let mut writer: HashMap<i64, usize> = HashMap::new();
    let mut appends: HashMap<(usize, i64), Vec<i64>> = HashMap::new();
    for (i, t) in history.iter().enumerate() {
        for op in &t.ops {
            if let Op::Append(k, x) = op {
                writer.insert(*x, i);
                appends.entry((i, *k)).or_default().push(*x);
            }
        }
    }
    // A transaction took effect when any of its appends is in a final list.
    let mut effective = vec![false; history.len()];
    for (k, list) in finals {
        let mut seen = std::collections::HashSet::new();
        for x in list {
            if !seen.insert(*x) {
                found.push(format!("key {k}: {x} appended twice"));
            }
            match writer.get(x) {
                None => found.push(format!("key {k}: {x} was never appended")),
                Some(&w) if history[w].status == Status::Aborted => found.push(format!(
                    "key {k}: {x} of an aborted transaction is in the final list"
                )),
                Some(&w) => effective[w] = true,
            }
        }
    }
    let position = |k: i64, x: i64| finals.get(&k).and_then(|l| l.iter().position(|y| *y == x));
    for (i, t) in history.iter().enumerate() {
        let done = t.status == Status::Committed || effective[i];
        for op in &t.ops {
            if let Op::Append(k, x) = op {
                // All of a transaction or nothing of it (an aborted one's in a final list is
                // reported above).
                if done && position(*k, *x).is_none() {
                    found.push(format!("key {k}: {x}, acknowledged, is lost"));
                }
            }
        }
    }
    // Edges between transactions that took effect: ww along each final list, wr from the
    // writer of the last element a read saw to the reader.
    let mut edges: Vec<Vec<(usize, &'static str)>> = vec![Vec::new(); history.len()];
    for list in finals.values() {
        for pair in list.windows(2) {
            let (a, b) = (writer[&pair[0]], writer[&pair[1]]);
            if a != b {
                edges[a].push((b, "ww"));
            }
        }
    }
    for (i, t) in history.iter().enumerate() {
        if !(t.status == Status::Committed || effective[i]) {
            continue;
        }
        let mut last_seen: HashMap<i64, usize> = HashMap::new();
        let mut own: HashMap<i64, Vec<i64>> = HashMap::new();
        for op in &t.ops {
            match op {
                Op::Append(k, x) => own.entry(*k).or_default().push(*x),
                Op::Read(k, list) => {
                    for x in list {
                        if writer
                            .get(x)
                            .is_some_and(|w| history[*w].status == Status::Aborted)
                        {
                            found.push(format!("G1a: key {k}: read {x} of an aborted transaction"));
                        }
                    }
                    let full = finals.get(k).map(Vec::as_slice).unwrap_or(&[]);
                    if !full.starts_with(list) {
                        found.push(format!(
                            "key {k}: a read saw {list:?}, no prefix of its final list {full:?}"
                        ));
                        continue;
                    }
                    if let Some(mine) = own.get(k) {
                        if !list.ends_with(mine) {
                            found.push(format!("key {k}: a read {list:?} misses its own {mine:?}"));
                        }
                    }
                    if last_seen.get(k).is_some_and(|n| list.len() < *n) {
                        found.push(format!("key {k}: a read went backwards to {list:?}"));
                    }
                    last_seen.insert(*k, list.len());
                    let Some(&x) = list.last() else {
                        continue;
                    };
                    let w = writer[&x];
                    if w == i {
                        continue;
                    }
                    let theirs = &appends[&(w, *k)];
                    if theirs.last() != Some(&x) {
                        found.push(format!(
                            "G1b: key {k}: read {x}, an intermediate append of {theirs:?}"
                        ));
                    }
                    edges[w].push((i, "wr"));
                }
            }
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        let kinds: Vec<&str> = cycle.iter().map(|(_, k)| *k).collect();
        let name = if kinds.iter().all(|k| *k == "ww") {
            "G0"
        } else {
            "G1c"
        };
        found.push(format!("{name}: a cycle of dependencies {cycle:?}"));
    }
    found
}

/// A cycle in `edges`, as (transaction, kind of the edge leaving it), if there is one.
fn find_cycle(edges: &[Vec<(usize, &'static str)>]) -> Option<Vec<(usize, &'static str)>> {
    // 0 unvisited, 1 on the current path, 2 done.
    let mut state = vec![0u8; edges.len()];
    for start in 0..edges.len() {
        if state[start] != 0 {
            continue;
        }
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            if let Some(&(to, _)) = edges[node].get(*next) {
                *next += 1;
                match state[to] {
                    0 => {
                        state[to] = 1;
                        path.push((to, 0));
                    }
                    1 => {
                        let from = path.iter().position(|(n, _)| *n == to).unwrap_or(0);
                        return Some(
                            path[from..]
                                .iter()
                                .map(|(n, e)| (*n, edges[*n][e - 1].1))
                                .collect(),
                        );
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                path.pop();
            }
        }
    }
    None
}

fn list_of(v: &str) -> Vec<i64> {
    v.split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect()
}

/// One transaction of 1 to 4 random appends and reads over `keys` keys.
async fn one_txn(c: &Client, rng: &mut Rng, keys: i64, next: &mut i64) -> Txn {
    let mut ops = Vec::new();
    let ran = async {
        c.batch_execute("BEGIN").await?;
        for _ in 0..1 + rng.below(4) {
            let k = rng.below(keys as u64) as i64;
            if rng.below(2) == 0 {
                *next += 1;
                let x = *next;
                ops.push(Op::Append(k, x));
                c.execute(
                    "UPDATE lists SET v = v || $2 WHERE k = $1",
                    &[&k, &format!(" {x}")],
                )
                .await?;
            } else {
                let row = c
                    .query_one("SELECT v FROM lists WHERE k = $1", &[&k])
                    .await?;
                ops.push(Op::Read(k, list_of(row.get(0))));
            }
        }
        Ok::<(), tokio_postgres::Error>(())
    }
    .await;
    let status = match ran {
        Err(_) => {
            let _ = c.batch_execute("ROLLBACK").await;
            Status::Aborted
        }
        Ok(()) => match c.batch_execute("COMMIT").await {
            Ok(()) => Status::Committed,
            Err(_) => Status::Unknown,
        },
    };
    // An append whose statement failed may still be recorded: it belongs to an aborted
    // transaction, whose appends must appear nowhere.
    Txn { ops, status }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_history_under_node_kills_has_no_read_committed_anomaly() {
    let seed = common::seed_from_env("TESSERA_HISTORY_SEED");
    println!("history seed {seed}: TESSERA_HISTORY_SEED={seed} replays it");
    let mut rng = Rng(seed);
    let keys = 8;
    let workers = 6;
    let per_worker = common::count_from_env("TESSERA_HISTORY_TXNS", 60);
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start_args(
        tmp.path(),
        3,
        4,
        &[
            "--replicas",
            "3",
            "--node-suspect-ms",
            "300",
            "--node-dead-ms",
            "1500",
            "--repair-pause-ms",
            "0",
        ],
        &[],
    );
    let c = cluster.client().await;
    c.batch_execute("CREATE TABLE lists (k bigint PRIMARY KEY, v text NOT NULL)")
        .await
        .expect("create");
    for k in 0..keys {
        c.execute("INSERT INTO lists (k, v) VALUES ($1, '')", &[&k])
            .await
            .expect("key");
    }
    let mut handles = Vec::new();
    for w in 0..workers {
        let client = cluster.client().await;
        let mut rng = Rng(seed ^ (w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        handles.push(tokio::spawn(async move {
            let mut next = (w as i64 + 1) * 1_000_000;
            let mut txns = Vec::new();
            for _ in 0..per_worker {
                txns.push(one_txn(&client, &mut rng, keys, &mut next).await);
            }
            txns
        }));
    }
    // Midway, a storage node dies and comes back.
    tokio::time::sleep(Duration::from_millis(300 + rng.below(700))).await;
    let victim = format!("storage-{}", 1 + rng.below(3));
    let pid = cluster.pid_of(&victim);
    let argv = common::command_line(pid);
    let addr: String = c
        .query("SHOW tessera.nodes", &[])
        .await
        .expect("nodes")
        .iter()
        .find(|r| r.get::<_, String>(1) == victim)
        .map(|r| r.get(2))
        .expect("victim's address");
    println!("kill -9 {victim}");
    common::kill9(pid);
    tokio::time::sleep(Duration::from_millis(200 + rng.below(800))).await;
    let (mut restarted, _) = common::restart(&argv, Some(&addr));
    let mut history = Vec::new();
    for h in handles {
        history.extend(h.await.expect("worker"));
    }
    let finals: BTreeMap<i64, Vec<i64>> = c
        .query("SELECT k, v FROM lists", &[])
        .await
        .expect("final read")
        .iter()
        .map(|r| (r.get(0), list_of(r.get(1))))
        .collect();
    let committed = history
        .iter()
        .filter(|t| t.status == Status::Committed)
        .count();
    println!(
        "{} transactions: {committed} committed, {} aborted, {} unknown",
        history.len(),
        history
            .iter()
            .filter(|t| t.status == Status::Aborted)
            .count(),
        history
            .iter()
            .filter(|t| t.status == Status::Unknown)
            .count()
    );
    let _ = restarted.kill();
    let _ = restarted.wait();
    assert!(committed > history.len() / 2, "too few commits to check");
    let found = anomalies(&history, &finals);
    assert!(found.is_empty(), "seed {seed}: {found:#?}");
}

/// The checker finds each anomaly it names, in histories written to have them.
#[test]
fn the_checker_finds_what_it_looks_for() {
    use Op::*;
    let t = |ops: Vec<Op>, status| Txn { ops, status };
    let finals = |v: &[(i64, &[i64])]| {
        v.iter()
            .map(|(k, l)| (*k, l.to_vec()))
            .collect::<BTreeMap<_, _>>()
    };
    let has = |h: &[Txn], f: &BTreeMap<i64, Vec<i64>>, what: &str| {
        let found = anomalies(h, f);
        assert!(found.iter().any(|a| a.contains(what)), "{what}: {found:?}");
    };
    let ok = vec![
        t(vec![Append(1, 1), Append(2, 2)], Status::Committed),
        t(
            vec![Read(1, vec![1]), Append(1, 3), Read(1, vec![1, 3])],
            Status::Committed,
        ),
        t(vec![Append(2, 4)], Status::Aborted),
    ];
    assert_eq!(
        anomalies(&ok, &finals(&[(1, &[1, 3]), (2, &[2])])),
        Vec::<String>::new()
    );
    // G1a: a read of an aborted append.
    let g1a = vec![
        t(vec![Append(1, 1)], Status::Aborted),
        t(vec![Read(1, vec![1])], Status::Committed),
    ];
    has(&g1a, &finals(&[(1, &[])]), "G1a");
    // G1b: a read of the first of two appends one transaction made.
    let g1b = vec![
        t(vec![Append(1, 1), Append(1, 2)], Status::Committed),
        t(vec![Read(1, vec![1])], Status::Committed),
    ];
    has(&g1b, &finals(&[(1, &[1, 2])]), "G1b");
    // G1c: each transaction read what the other wrote.
    let g1c = vec![
        t(vec![Append(1, 1), Read(2, vec![2])], Status::Committed),
        t(vec![Append(2, 2), Read(1, vec![1])], Status::Committed),
    ];
    has(&g1c, &finals(&[(1, &[1]), (2, &[2])]), "G1c");
    // G0: two keys written in opposite orders.
    let g0 = vec![
        t(vec![Append(1, 1), Append(2, 4)], Status::Committed),
        t(vec![Append(1, 2), Append(2, 3)], Status::Committed),
    ];
    has(&g0, &finals(&[(1, &[1, 2]), (2, &[3, 4])]), "G0");
    // Lost and duplicated appends, a read of no state the key had, one going backwards.
    let lost = vec![t(vec![Append(1, 1), Append(1, 2)], Status::Committed)];
    has(&lost, &finals(&[(1, &[1])]), "lost");
    has(&lost, &finals(&[(1, &[1, 2, 2])]), "twice");
    let torn = vec![
        t(vec![Append(1, 1), Append(1, 2)], Status::Committed),
        t(vec![Read(1, vec![2])], Status::Committed),
    ];
    has(&torn, &finals(&[(1, &[1, 2])]), "no prefix");
    let back = vec![
        t(vec![Append(1, 1)], Status::Committed),
        t(vec![Read(1, vec![1]), Read(1, vec![])], Status::Committed),
    ];
    has(&back, &finals(&[(1, &[1])]), "backwards");
}
