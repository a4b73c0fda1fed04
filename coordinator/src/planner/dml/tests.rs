//! Plans of INSERT, UPDATE and DELETE, checked without any node.

use crate::planner::testing::{plan_sql as try_plan, plan_sql_on};
use crate::planner::{Merge, Plan};
use tessera_shared::Value;

#[test]
fn the_distribution_key_never_changes_in_place() {
    for sql in [
        "UPDATE users SET id = 2000008 WHERE id = 1",
        "INSERT INTO users (id, name) VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET id = 2000008",
        "INSERT INTO users (id, name) VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET (name, id) = ('b', 2)",
    ] {
        let e = try_plan(sql, &[]).expect_err(sql);
        assert_eq!(e.sqlstate(), "0A000", "{sql}: {e}");
    }
    try_plan(
        "INSERT INTO users (id, name) VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET name = excluded.name",
        &[],
    )
    .expect("other columns may change");
}

#[test]
fn insert_rows_split_by_shard() {
    let p = try_plan(
        "INSERT INTO users (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd') RETURNING id",
        &[],
    )
    .expect("plan");
    let Plan::Distributed { tasks, write, .. } = &p.plan else {
        panic!()
    };
    assert!(*write);
    assert!(tasks.len() > 1);
    let total: usize = tasks.iter().map(|t| t.sql.matches("'").count() / 2).sum();
    assert_eq!(total, 4, "every row lands exactly once");
    assert_eq!(p.columns[0].name, "id");
}

#[test]
fn insert_values_shorter_than_the_table_fill_leading_columns() {
    let p = try_plan("INSERT INTO users VALUES (1, 'a')", &[]).expect("plan");
    let Plan::Distributed { tasks, .. } = &p.plan else {
        panic!()
    };
    assert!(
        tasks[0].sql.contains(r#"("id", "name")"#),
        "{}",
        tasks[0].sql
    );
    for bad in [
        "INSERT INTO users (id, name) VALUES (1)",
        "INSERT INTO users VALUES (1, 'a', 2, 'fr', 9)",
        "INSERT INTO users VALUES (1, 'a'), (2)",
    ] {
        let e = try_plan(bad, &[]).expect_err(bad);
        assert_eq!(e.sqlstate(), "42601", "{bad}");
    }
}

/// A write to a replicated shard: the first copies' tasks, then the other copies' with
/// the same SQL, and only the first copies answer; random() is refused there.
#[test]
fn replicated_writes_reach_every_copy_once() {
    let mut c = crate::planner::testing::catalog();
    for g in c.groups.values_mut().filter(|g| g.id == 10) {
        for s in &mut g.shards {
            let first = s.placements[0];
            s.placements = vec![first, 1 + first % 3];
        }
    }
    let plan = |sql: &str| plan_sql_on(&c, sql, &[]);
    let p = plan("INSERT INTO users (id, name) VALUES (1, 'a')").expect("plan");
    let Plan::Distributed { tasks, merge, .. } = &p.plan else {
        panic!()
    };
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0].target.shard, tasks[1].target.shard);
    assert_ne!(tasks[0].target.node, tasks[1].target.node);
    assert_eq!(tasks[0].sql, tasks[1].sql);
    assert!(
        matches!(merge, Merge::Replicated { primaries: 1, inner } if **inner == Merge::Single),
        "{merge:?}"
    );
    // Copies apply the first copy's row changes: a volatile value is computed once.
    plan("INSERT INTO users (id, name) VALUES (1, random()::text)").expect("random");
    // Reads still use one copy.
    let p = plan("SELECT * FROM users WHERE id = 1").expect("read");
    let Plan::Distributed { tasks, .. } = &p.plan else {
        panic!()
    };
    assert_eq!(tasks.len(), 1);
}

/// A copy being filled gets every write to its shard, after the placed copies, and no read.
#[test]
fn a_filling_copy_gets_writes_but_no_reads() {
    let mut c = crate::planner::testing::catalog();
    for g in c.groups.values_mut().filter(|g| g.id == 10) {
        for s in &mut g.shards {
            s.filling = vec![1 + s.placements[0] % 3];
        }
    }
    let plan = |sql: &str| plan_sql_on(&c, sql, &[]).expect("plan");
    let p = plan("UPDATE users SET name = 'b' WHERE id = 1");
    let Plan::Distributed { tasks, merge, .. } = &p.plan else {
        panic!()
    };
    assert_eq!(tasks.len(), 2);
    let (_, shard) = c.shard(tasks[0].target.shard).expect("shard");
    assert_eq!(tasks[0].target.node, shard.placements[0]);
    assert_eq!(tasks[1].target.node, shard.filling[0]);
    assert!(matches!(merge, Merge::Replicated { primaries: 1, .. }));
    let p = plan("SELECT * FROM users WHERE id = 1");
    let Plan::Distributed { tasks, .. } = &p.plan else {
        panic!()
    };
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].target.node, shard.placements[0]);
}

#[test]
fn insert_with_params_routes_by_parameter() {
    let a = try_plan(
        "INSERT INTO users (id, name) VALUES ($1, $2)",
        &[Value::Integer(1), Value::Text("x".into())],
    )
    .expect("a");
    let b = try_plan("SELECT * FROM users WHERE id = 1", &[]).expect("b");
    let (Plan::Distributed { tasks: ta, .. }, Plan::Distributed { tasks: tb, .. }) =
        (&a.plan, &b.plan)
    else {
        panic!()
    };
    assert_eq!(ta[0].target, tb[0].target);
    assert!(ta[0].sql.contains("?1"), "{}", ta[0].sql);
    // A cast parameter, as SQLAlchemy 2.1 sends it (`%(id)s::BIGINT`), routes the same.
    let c = try_plan(
        "INSERT INTO users (id, name) VALUES ($1::BIGINT, $2::VARCHAR)",
        &[Value::Integer(1), Value::Text("x".into())],
    )
    .expect("a cast parameter routes");
    let Plan::Distributed { tasks: tc, .. } = &c.plan else {
        panic!()
    };
    assert_eq!(tc[0].target, tb[0].target);
}

#[test]
fn reference_writes_go_everywhere_and_key_updates_are_refused() {
    let p = try_plan("INSERT INTO countries VALUES ('fr', 'France')", &[]).expect("plan");
    let Plan::Distributed { tasks, merge, .. } = &p.plan else {
        panic!()
    };
    assert_eq!(tasks.len(), 3);
    assert_eq!(*merge, Merge::FirstOnly);
    assert_eq!(
        try_plan("UPDATE users SET id = 5 WHERE id = 1", &[])
            .expect_err("key")
            .sqlstate(),
        "0A000"
    );
    assert_eq!(
        try_plan("UPDATE users SET nope = 5", &[])
            .expect_err("col")
            .sqlstate(),
        "42703"
    );
    let p = try_plan("DELETE FROM users WHERE id = 7", &[]).expect("delete");
    let Plan::Distributed { tasks, .. } = &p.plan else {
        panic!()
    };
    assert_eq!(tasks.len(), 1);
}
