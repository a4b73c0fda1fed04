//! Randomised robustness test: token soup and mutated statements through parse, describe and
//! plan must return `Ok` or a typed error, never panic.

#[cfg(test)]
mod tests {
    use crate::planner::testing::catalog;
    use crate::planner::{plan, PlanCtx};
    use crate::sql::dialect::RewriteCtx;
    use crate::sql::param_types::param_types;
    use crate::sql::params;
    use crate::sql::parse::parse;
    use tessera_shared::Value;

    const SEEDS: [&str; 14] = [
        "SELECT * FROM users WHERE id = $1",
        "SELECT count(*), avg(age) FROM users GROUP BY country HAVING count(*) > 1 ORDER BY 1 LIMIT 3 OFFSET 1",
        "SELECT u.name, o.amount FROM users u JOIN orders o ON u.id = o.user_id WHERE u.id IN (1, 2, $2)",
        "SELECT DISTINCT age FROM users ORDER BY age DESC NULLS LAST",
        "INSERT INTO users (id, name) VALUES (1, 'a'), ($1, $2) ON CONFLICT (id) DO NOTHING RETURNING *",
        "UPDATE users SET age = age + 1 WHERE id = 3 RETURNING name",
        "DELETE FROM events WHERE ts BETWEEN 10 AND 150",
        "SELECT name FROM users WHERE age > (SELECT avg(age) FROM users)",
        "WITH t AS (SELECT * FROM users) SELECT count(*) FROM t",
        "SELECT c.name FROM countries c JOIN users u ON u.country = c.code",
        "SELECT substring(name from 1 for 2), name::text, now(), 1/0 FROM users",
        "SELECT max(age) - min(age), sum(age) / count(*) FROM users WHERE name ILIKE 'a%'",
        "SELECT * FROM users u, orders o WHERE u.id = o.user_id AND o.user_id = 7",
        "SELECT id FROM users UNION ALL SELECT user_id FROM orders ORDER BY 1",
    ];

    const TOKENS: [&str; 40] = [
        "SELECT",
        "FROM",
        "WHERE",
        "users",
        "orders",
        "id",
        "age",
        "(",
        ")",
        ",",
        "=",
        "<",
        "AND",
        "OR",
        "NOT",
        "$1",
        "$0",
        "$99999",
        "1",
        "-1",
        "'x'",
        "NULL",
        "count(*)",
        "avg",
        "GROUP BY",
        "ORDER BY",
        "LIMIT",
        "OFFSET",
        "JOIN",
        "ON",
        "IN",
        "::int",
        "DISTINCT",
        "*",
        "HAVING",
        "9223372036854775808",
        "INSERT INTO",
        "VALUES",
        "UPDATE",
        "SET",
    ];

    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    fn exercise(sql: &str) {
        let c = catalog();
        let r = RewriteCtx::new("u", "d");
        let Ok(stmts) = parse(sql) else { return };
        for s in stmts {
            let n = params::count(&s).min(64);
            let _ = param_types(&s, &c, n);
            for params in [
                vec![Value::Null; n],
                vec![Value::Integer(7); n],
                vec![Value::Text("x".into()); n],
            ] {
                let _ = plan(
                    &s,
                    &PlanCtx {
                        catalog: &c,
                        params: &params,
                        rewrite: &r,
                    },
                );
            }
        }
    }

    #[test]
    fn random_statements_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..3000 {
            let n = 1 + (rng(&mut seed) % 14) as usize;
            let soup: Vec<&str> = (0..n)
                .map(|_| TOKENS[(rng(&mut seed) % TOKENS.len() as u64) as usize])
                .collect();
            exercise(&soup.join(" "));
        }
        for base in SEEDS {
            exercise(base);
            let words: Vec<&str> = base.split(' ').collect();
            for _ in 0..200 {
                let mut w = words.clone();
                match rng(&mut seed) % 3 {
                    0 => {
                        let i = (rng(&mut seed) % w.len() as u64) as usize;
                        w.remove(i);
                    }
                    1 => {
                        let i = (rng(&mut seed) % w.len() as u64) as usize;
                        w.insert(i, TOKENS[(rng(&mut seed) % TOKENS.len() as u64) as usize]);
                    }
                    _ => {
                        let i = (rng(&mut seed) % w.len() as u64) as usize;
                        let j = (rng(&mut seed) % w.len() as u64) as usize;
                        w.swap(i, j);
                    }
                }
                exercise(&w.join(" "));
            }
        }
    }
}
