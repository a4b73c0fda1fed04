//! The catalog's state machine: determinism, validation, fills and lost copies.

use super::*;
use tessera_shared::PgType;

fn table(name: &str, group: u64) -> Table {
    let id = Column {
        not_null: true,
        ..Column::new("id", PgType::Int8)
    };
    Table {
        primary_key: vec!["id".into()],
        distribution: Distribution::Hash {
            column: "id".into(),
        },
        group,
        ..Table::new(name, vec![id])
    }
}

#[test]
fn apply_is_deterministic_and_validates() {
    let cmds = vec![
        CatalogCommand::UpsertNode {
            name: "a".into(),
            addr: "127.0.0.1:1".into(),
        },
        CatalogCommand::CreateTable {
            table: table("t", 5),
            new_group: Some(Group {
                id: 5,
                kind: GroupKind::Hash,
                replicas: 1,
                shards: vec![Shard {
                    id: 6,
                    index: 0,
                    placements: vec![1],
                    filling: vec![],
                    fill_lease_ms: 0,
                    fill_id: 0,
                    lower: None,
                    upper: None,
                }],
            }),
        },
        CatalogCommand::AddColumn {
            table: "t".into(),
            column: Column {
                name: "v".into(),
                ty: PgType::Text,
                not_null: false,
                default: None,
                serial: false,
                max_chars: None,
            },
        },
    ];
    let mut a = Catalog::default();
    let mut b = Catalog::default();
    for c in cmds.clone() {
        a.apply(c).expect("apply a");
    }
    for c in cmds {
        b.apply(c).expect("apply b");
    }
    assert_eq!(a, b);
    assert_eq!(a.next_id, 7);
    assert!(matches!(
        a.apply(CatalogCommand::CreateTable {
            table: table("t", 5),
            new_group: None
        }),
        Err(CoordError::DuplicateTable(_))
    ));
    assert!(matches!(
        a.apply(CatalogCommand::DropTable {
            name: "nope".into(),
            cascade: false,
        }),
        Err(CoordError::UndefinedTable(_))
    ));
    a.apply(CatalogCommand::DropTable {
        name: "t".into(),
        cascade: false,
    })
    .expect("drop");
    assert_eq!(a.unused_groups(), vec![5]);
}

/// A catalog with table `t` in one shard (6) of a group (5) of `replicas` copies.
fn one_shard(replicas: u32, placements: Vec<u64>, filling: Vec<u64>) -> Catalog {
    let mut c = Catalog::default();
    c.apply(CatalogCommand::CreateTable {
        table: table("t", 5),
        new_group: Some(Group {
            id: 5,
            kind: GroupKind::Hash,
            replicas,
            shards: vec![Shard {
                id: 6,
                index: 0,
                placements,
                filling,
                fill_lease_ms: 0,
                fill_id: 0,
                lower: None,
                upper: None,
            }],
        }),
    })
    .expect("create");
    c
}

/// A fill: the new copy receives writes (write_nodes) but is no placement until it
/// finishes; a move's finish replaces the leaving copy; abandoning or the node's death
/// ends it; a finish without a fill is refused (a fill abandoned meanwhile).
#[test]
fn fills_join_placements_only_when_finished() {
    let mut c = one_shard(1, vec![1], vec![]);
    let shard = |c: &Catalog| c.shard(6).expect("shard").1.clone();
    c.apply(CatalogCommand::BeginFill {
        shard: 6,
        node: 2,
        lease_until_ms: 1,
        fill: 0,
    })
    .expect("begin");
    assert_eq!(shard(&c).placements, vec![1]);
    assert_eq!(shard(&c).write_nodes().collect::<Vec<_>>(), vec![1, 2]);
    assert!(
        c.apply(CatalogCommand::BeginFill {
            shard: 6,
            node: 1,
            lease_until_ms: 1,
            fill: 0,
        })
        .is_err(),
        "a node holding a copy is not filled"
    );
    c.apply(CatalogCommand::FinishFill {
        shard: 6,
        node: 2,
        leaving: Some(1),
        source: None,
        fill: 0,
    })
    .expect("finish");
    assert_eq!(shard(&c).placements, vec![2]);
    assert!(shard(&c).filling.is_empty());
    assert!(c
        .apply(CatalogCommand::FinishFill {
            shard: 6,
            node: 3,
            leaving: None,
            source: None,
            fill: 0,
        })
        .is_err());
    c.apply(CatalogCommand::BeginFill {
        shard: 6,
        node: 3,
        lease_until_ms: 1,
        fill: 0,
    })
    .expect("begin");
    c.apply(CatalogCommand::AbandonFill {
        shard: 6,
        node: 3,
        fill: 0,
    })
    .expect("abandon");
    assert_eq!(shard(&c).write_nodes().collect::<Vec<_>>(), vec![2]);
    c.apply(CatalogCommand::BeginFill {
        shard: 6,
        node: 3,
        lease_until_ms: 1,
        fill: 0,
    })
    .expect("begin");
    c.apply(CatalogCommand::DropPlacements { node: 3 })
        .expect("dead");
    assert_eq!(shard(&c).write_nodes().collect::<Vec<_>>(), vec![2]);
}

/// An unreachable copy leaves its shard only while `keep` copies remain: a coordinator
/// cut off from some nodes cannot shrink a shard below a majority.
#[test]
fn a_lost_copy_leaves_only_while_a_majority_remains() {
    let mut c = one_shard(3, vec![1, 2, 3], vec![4]);
    let drop = |node| CatalogCommand::DropCopy {
        shard: 6,
        node,
        keep: 2,
    };
    c.apply(drop(1)).expect("3 copies: one may go");
    assert_eq!(c.shard(6).expect("shard").1.placements, vec![2, 3]);
    let e = c.apply(drop(2)).expect_err("2 copies are the majority");
    assert_eq!(e.sqlstate(), "58000");
    c.apply(drop(4)).expect("a filling copy just stops");
    let s = &c.shard(6).expect("shard").1;
    assert_eq!(s.write_nodes().collect::<Vec<_>>(), vec![2, 3]);
}
