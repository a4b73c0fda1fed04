//! A deterministic simulation of shard replication: seeded random runs of writes, node crashes
//! and restarts, failure detection, and copy fills and moves, against the real catalog state
//! machine ([`Catalog::apply`]) and a model of each copy's contents. After every step the
//! safety property must hold: every readable copy (placement) of the shard holds every
//! acknowledged write, and no write that was refused. Two catalog replicas fed the same
//! commands must agree (errors included), as Raft members do.
//!
//! The model follows the protocol the executor and `repair` implement: a write reaches every
//! write node (placements, then copies being filled) and is acknowledged only if each one took
//! it or left the shard through [`CatalogCommand::DropCopy`] first; a fill starts empty, takes
//! every write from [`CatalogCommand::BeginFill`] on, copies the source in batches, and joins
//! only after a final comparison under the source's lock.

use super::*;
use std::collections::{BTreeMap, BTreeSet};
use tessera_shared::PgType;

const SHARD: u64 = 6;
const NODES: u64 = 5;

/// xorshift64*: the run is a function of its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// The cluster as the model sees it.
struct World {
    /// The catalog every coordinator plans with, and a second replica fed the same commands.
    catalog: Catalog,
    replica: Catalog,
    /// Each node's copy of the shard: the write ids it holds.
    data: BTreeMap<u64, BTreeSet<u64>>,
    up: BTreeSet<u64>,
    acked: BTreeSet<u64>,
    refused: BTreeSet<u64>,
    next_write: u64,
    /// A fill in progress: (target, source, the move's leaving node).
    fill: Option<(u64, u64, Option<u64>)>,
    log: Vec<String>,
}

impl World {
    fn new() -> World {
        let mut catalog = Catalog::default();
        let mut id = Column::new("id", PgType::Int8);
        id.not_null = true;
        catalog
            .apply(CatalogCommand::CreateTable {
                table: Table {
                    primary_key: vec!["id".into()],
                    distribution: Distribution::Hash {
                        column: "id".into(),
                    },
                    group: 5,
                    ..Table::new("t", vec![id])
                },
                new_group: Some(Group {
                    id: 5,
                    kind: GroupKind::Hash,
                    replicas: 3,
                    shards: vec![Shard {
                        id: SHARD,
                        index: 0,
                        placements: vec![1, 2, 3],
                        filling: vec![],
                        fill_lease_ms: 0,
                        fill_id: 0,
                        lower: None,
                        upper: None,
                    }],
                }),
            })
            .expect("create");
        World {
            replica: catalog.clone(),
            catalog,
            data: (1..=NODES).map(|n| (n, BTreeSet::new())).collect(),
            up: (1..=NODES).collect(),
            acked: BTreeSet::new(),
            refused: BTreeSet::new(),
            next_write: 0,
            fill: None,
            log: Vec::new(),
        }
    }

    fn shard(&self) -> &Shard {
        self.catalog.shard(SHARD).expect("shard").1
    }

    /// Applies a command to both replicas; they must agree on the outcome.
    fn apply(&mut self, cmd: CatalogCommand) -> bool {
        self.log.push(format!("{cmd:?}"));
        let a = self.catalog.apply(cmd.clone());
        let b = self.replica.apply(cmd);
        assert_eq!(a.is_ok(), b.is_ok(), "replicas disagree on the outcome");
        a.is_ok()
    }

    /// A write: every write node takes it, or the unreachable ones leave the shard (keeping a
    /// majority) and the others take it; otherwise it is refused and rolled back.
    fn write(&mut self) {
        let id = self.next_write;
        self.next_write += 1;
        let targets: Vec<u64> = self.shard().write_nodes().collect();
        let lost: Vec<u64> = targets
            .iter()
            .copied()
            .filter(|n| !self.up.contains(n))
            .collect();
        let keep = 3 / 2 + 1;
        let mut ok = true;
        for n in &lost {
            ok &= self.apply(CatalogCommand::DropCopy {
                shard: SHARD,
                node: *n,
                keep,
            });
            if !ok {
                break;
            }
        }
        self.log
            .push(format!("write {id} to {targets:?}, lost {lost:?}: {ok}"));
        if !ok {
            self.refused.insert(id);
            return;
        }
        let now: Vec<u64> = self.shard().write_nodes().collect();
        for n in now {
            self.data.get_mut(&n).expect("node").insert(id);
        }
        self.acked.insert(id);
    }

    fn step(&mut self, rng: &mut Rng) {
        match rng.below(10) {
            0..=3 => self.write(),
            4 => {
                // A crash (at most two nodes down at once).
                let n = 1 + rng.below(NODES);
                if self.up.len() > 3 {
                    self.log.push(format!("crash {n}"));
                    self.up.remove(&n);
                }
            }
            5 => {
                let n = 1 + rng.below(NODES);
                self.log.push(format!("restart {n}"));
                self.up.insert(n);
            }
            6 => {
                // Failure detection declares a down node dead.
                let down: Vec<u64> = (1..=NODES).filter(|n| !self.up.contains(n)).collect();
                if let Some(n) = down.first() {
                    self.apply(CatalogCommand::DropPlacements { node: *n });
                    if self.fill.is_some_and(|f| f.0 == *n) {
                        self.fill = None;
                    }
                }
            }
            7 => {
                // A fill begins: repair (no leaving copy) or a move of a placement.
                if self.fill.is_some() {
                    return;
                }
                let target = 1 + rng.below(NODES);
                let s = self.shard().clone();
                let Some(source) = s.placements.iter().copied().find(|n| self.up.contains(n))
                else {
                    return;
                };
                let leaving = (rng.below(2) == 0)
                    .then(|| s.placements[rng.below(s.placements.len() as u64) as usize]);
                if !self.up.contains(&target) {
                    return;
                }
                if self.apply(CatalogCommand::BeginFill {
                    shard: SHARD,
                    node: target,
                    lease_until_ms: 1,
                    fill: self.next_write + 1,
                }) {
                    // A fresh, empty copy, created under the source's lock.
                    self.data.insert(target, BTreeSet::new());
                    self.fill = Some((target, source, leaving));
                }
            }
            8 => {
                // A batch of the fill: some of the source's rows reach the target.
                if let Some((target, source, _)) = self.fill {
                    if !self.up.contains(&source) || !self.up.contains(&target) {
                        return;
                    }
                    let rows: Vec<u64> = self.data[&source].iter().copied().collect();
                    let from = rng.below(rows.len() as u64 + 1) as usize;
                    let part: Vec<u64> = rows[from..].iter().take(3).copied().collect();
                    self.data.get_mut(&target).expect("target").extend(part);
                }
            }
            _ => {
                // The fill ends: compared under the source's lock (copied whole if it
                // differs), then it joins; or it is abandoned.
                let Some((target, source, leaving)) = self.fill.take() else {
                    return;
                };
                if !self.up.contains(&source) || !self.up.contains(&target) || rng.below(5) == 0 {
                    self.apply(CatalogCommand::AbandonFill {
                        shard: SHARD,
                        node: target,
                        fill: 0,
                    });
                    return;
                }
                let src = self.data[&source].clone();
                self.data.insert(target, src);
                let leaving = leaving.filter(|l| *l != target);
                if !self.apply(CatalogCommand::FinishFill {
                    shard: SHARD,
                    node: target,
                    leaving,
                    source: Some(source),
                    fill: 0,
                }) {
                    self.apply(CatalogCommand::AbandonFill {
                        shard: SHARD,
                        node: target,
                        fill: 0,
                    });
                }
            }
        }
    }

    /// The safety property, and the catalog's own invariants.
    fn check(&self, seed: u64, step: usize) {
        let s = self.shard();
        let ctx = || {
            format!(
                "seed {seed}, step {step}: {:#?}",
                &self.log[self.log.len().saturating_sub(12)..]
            )
        };
        assert!(
            !s.placements.is_empty(),
            "a shard lost every copy; {}",
            ctx()
        );
        let mut seen = BTreeSet::new();
        for n in s.write_nodes() {
            assert!(seen.insert(n), "node {n} twice; {}", ctx());
        }
        for p in &s.placements {
            let missing: Vec<_> = self.acked.difference(&self.data[p]).collect();
            assert!(
                missing.is_empty(),
                "copy on {p} lacks acknowledged writes {missing:?}; {}",
                ctx()
            );
            assert!(
                self.data[p].is_disjoint(&self.refused),
                "copy on {p} holds a refused write; {}",
                ctx()
            );
        }
        assert_eq!(self.catalog, self.replica, "replicas diverged; {}", ctx());
    }
}

#[test]
fn random_runs_never_lose_an_acknowledged_write() {
    let runs: u64 = std::env::var("TESSERA_SIM_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut acked = 0;
    for seed in 1..=runs {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut w = World::new();
        for step in 0..300 {
            w.step(&mut rng);
            w.check(seed, step);
        }
        // The catalog survives its own encoding (snapshots, Raft log entries).
        let json = serde_json::to_string(&w.catalog).expect("encode");
        let back: Catalog = serde_json::from_str(&json).expect("decode");
        assert_eq!(back, w.catalog, "seed {seed}");
        acked += w.acked.len();
    }
    // The runs did acknowledge writes (a model that refuses everything proves nothing).
    assert!(acked as u64 > runs * 50, "only {acked} writes acknowledged");
}

/// The check can fail: a fill that joins without copying the source (only the writes made
/// since it began) leaves a readable copy without older acknowledged writes, and the check
/// reports it. And a write with two of three copies unreachable is refused, not acknowledged
/// on a minority.
#[test]
fn the_checks_catch_a_copy_that_joins_unfilled() {
    let mut w = World::new();
    w.write();
    assert!(w.apply(CatalogCommand::BeginFill {
        shard: SHARD,
        node: 4,
        lease_until_ms: 1,
        fill: 7,
    }));
    w.write();
    assert!(w.apply(CatalogCommand::FinishFill {
        shard: SHARD,
        node: 4,
        leaving: Some(1),
        source: Some(2),
        fill: 7,
    }));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.check(0, 0)));
    assert!(caught.is_err(), "an unfilled copy went unnoticed");

    let mut w = World::new();
    w.up.remove(&2);
    w.up.remove(&3);
    w.write();
    assert!(w.acked.is_empty(), "acknowledged on a minority of copies");
    assert_eq!(w.shard().placements, vec![1, 3]);
    w.check(0, 0);
}
