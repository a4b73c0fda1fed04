//! Plans of writes to tables with column groups, checked without any node.

use super::*;
use crate::catalog::Column;
use tessera_shared::PgType;

fn users() -> Table {
    let mut t = Table::new(
        "users",
        vec![
            Column::new("id", PgType::Int8),
            Column::new("name", PgType::Text),
            Column::new("email", PgType::Text),
            Column::new("visits", PgType::Int4),
        ],
    );
    t.primary_key = vec!["id".into()];
    t.column_groups = parse_groups("profile(name, email) | activity(visits)", &t).expect("groups");
    t
}

fn query(sql: &str) -> Query {
    match parse(sql).expect("parse").pop() {
        Some(Statement::Query(q)) => *q,
        _ => panic!("not a query"),
    }
}

#[test]
fn groups_are_checked() {
    let t = users();
    assert_eq!(t.column_groups[1].table, "users$activity");
    for bad in [
        "profile(name, email)",
        "a(name) | b(email)",
        "a(name, visits) | b(email, visits)",
        "a(id, name) | b(email, visits)",
        "a(nope) | b(name, email, visits)",
    ] {
        assert!(parse_groups(bad, &t).is_err(), "{bad}");
    }
}

#[test]
fn one_group_reads_one_table_and_several_are_stitched() {
    let t = users();
    assert_eq!(
        rewrite_query(&query("SELECT name FROM users WHERE id = 1"), &t)
            .expect("rw")
            .to_string(),
        "SELECT name FROM \"users$profile\" AS \"users\" WHERE id = 1"
    );
    assert_eq!(
        rewrite_query(&query("SELECT count(*) FROM users u"), &t)
            .expect("rw")
            .to_string(),
        "SELECT count(*) FROM \"users$profile\" AS \"u\""
    );
    assert_eq!(
        rewrite_query(&query("SELECT * FROM users WHERE id = $1"), &t).expect("rw").to_string(),
        "SELECT \"users\".\"id\", \"users\".\"name\", \"users\".\"email\", \"users__activity\".\"visits\" \
         FROM \"users$profile\" AS \"users\" JOIN \"users$activity\" AS \"users__activity\" ON \"users\".\"id\" = \"users__activity\".\"id\" \
         WHERE \"users\".\"id\" = $1 AND \"users__activity\".\"id\" = $1"
    );
    assert_eq!(
        rewrite_query(&query("SELECT u.name FROM users u WHERE visits > 3 ORDER BY visits"), &t).expect("rw").to_string(),
        "SELECT \"u\".\"name\" FROM \"users$profile\" AS \"u\" JOIN \"users$activity\" AS \"u__activity\" ON \"u\".\"id\" = \"u__activity\".\"id\" \
         WHERE \"u__activity\".\"visits\" > 3 ORDER BY \"u__activity\".\"visits\""
    );
    assert!(rewrite_query(&query("SELECT * FROM users JOIN t ON users.id = t.id"), &t).is_err());
    // An output alias in ORDER BY is the output, not the column of that name.
    assert_eq!(
        rewrite_query(
            &query("SELECT name AS visits FROM users ORDER BY visits"),
            &t
        )
        .expect("rw")
        .to_string(),
        "SELECT name AS visits FROM \"users$profile\" AS \"users\" ORDER BY visits"
    );
}

#[test]
fn writes_split_by_group() {
    let t = users();
    let Some(Statement::Insert(ins)) =
        parse("INSERT INTO users (id, name, visits) VALUES (1, 'a', 2)")
            .expect("p")
            .pop()
    else {
        panic!()
    };
    let s: Vec<String> = split_insert(&ins, &t)
        .expect("split")
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        s,
        [
            "INSERT INTO \"users$profile\" (\"id\", \"name\") VALUES (1, 'a')",
            "INSERT INTO \"users$activity\" (\"id\", \"visits\") VALUES (1, 2)"
        ]
    );
    let upd = parse("UPDATE users SET visits = visits + 1 WHERE id = 3")
        .expect("p")
        .pop()
        .expect("s");
    let KeyedWrite::Direct(s) = keyed_write(&upd, &t).expect("kw") else {
        panic!("direct")
    };
    assert_eq!(
        s.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ["UPDATE \"users$activity\" SET visits = visits + 1 WHERE id = 3"]
    );
    let upd = parse("UPDATE users SET visits = 0 WHERE name = 'a'")
        .expect("p")
        .pop()
        .expect("s");
    let KeyedWrite::Lookup(q) = keyed_write(&upd, &t).expect("kw") else {
        panic!("lookup")
    };
    assert_eq!(
        q.to_string(),
        "SELECT \"id\" FROM \"users\" AS \"users\" WHERE name = 'a'"
    );
    let s = per_keys(&upd, &t, &["4".into(), "5".into()]).expect("keys");
    assert_eq!(
        s[0].to_string(),
        "UPDATE \"users$activity\" SET visits = 0 WHERE \"id\" IN (4, 5)"
    );
    let del = parse("DELETE FROM users WHERE id = 3")
        .expect("p")
        .pop()
        .expect("s");
    let KeyedWrite::Direct(s) = keyed_write(&del, &t).expect("kw") else {
        panic!("direct")
    };
    assert_eq!(s.len(), 2);
    let bad = parse("UPDATE users SET visits = length(name)")
        .expect("p")
        .pop()
        .expect("s");
    assert!(keyed_write(&bad, &t).is_err());
}
