//! SQLite functions giving JSON PostgreSQL's `jsonb` meaning (`->`, `->>`, `#>`, `@>`, `?`, `jsonb_set`, ...).
//!
//! The coordinator rewrites the operators into these calls, so they run where the data is: a
//! filter on a JSON path is evaluated on the storage node, and only matching rows travel.
//! All are deterministic and return NULL for a NULL argument, as PostgreSQL's strict
//! functions do.

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::{Value, ValueRef};
use rusqlite::Connection;
use tessera_shared::jsonb::{self, Json, JsonError, Key};

/// Registers every function on `conn`.
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    json_scalar(conn, "tessera_jsonb", 1, |a| {
        Ok(text(a, 0)?
            .map(|t| jsonb::canonical(&t))
            .transpose()
            .map_err(user_error)?
            .into())
    })?;
    json_scalar(conn, "tessera_json", 1, |a| {
        let t = text(a, 0)?;
        if let Some(t) = &t {
            jsonb::parse(t).map_err(user_error)?;
        }
        Ok(t.into())
    })?;
    json_scalar(conn, "tessera_json_get", 2, |a| {
        Ok(get(a)?.map(|v| v.to_string()).into())
    })?;
    scalar(conn, "tessera_json_text", 2, |a| {
        Ok(get(a)?.and_then(|v| v.as_text()).into())
    })?;
    json_scalar(conn, "tessera_json_path", 2, |a| {
        with_doc(a, |doc| {
            Ok(path(a, 1)?.and_then(|p| doc.get_path(&p).map(|v| v.to_string())))
        })
    })?;
    scalar(conn, "tessera_json_path_text", 2, |a| {
        with_doc(a, |doc| {
            Ok(path(a, 1)?.and_then(|p| doc.get_path(&p).and_then(Json::as_text)))
        })
    })?;
    scalar(conn, "tessera_jsonb_contains", 2, |a| {
        let (Some(x), Some(y)) = (json(a, 0)?, json(a, 1)?) else {
            return Ok(Value::Null);
        };
        Ok(Value::Integer(x.contains(&y) as i64))
    })?;
    scalar(conn, "tessera_jsonb_exists", 2, |a| {
        let (Some(x), Some(k)) = (json(a, 0)?, text(a, 1)?) else {
            return Ok(Value::Null);
        };
        Ok(Value::Integer(x.has_key(&k) as i64))
    })?;
    scalar(conn, "tessera_jsonb_exists_any", 2, |a| {
        let (Some(x), Some(keys)) = (json(a, 0)?, path(a, 1)?) else {
            return Ok(Value::Null);
        };
        Ok(Value::Integer(keys.iter().any(|k| x.has_key(k)) as i64))
    })?;
    scalar(conn, "tessera_jsonb_exists_all", 2, |a| {
        let (Some(x), Some(keys)) = (json(a, 0)?, path(a, 1)?) else {
            return Ok(Value::Null);
        };
        Ok(Value::Integer(keys.iter().all(|k| x.has_key(k)) as i64))
    })?;
    for n in [3, 4] {
        json_scalar(conn, "tessera_jsonb_set", n, |a| {
            let (Some(mut target), Some(p), Some(new)) = (json(a, 0)?, path(a, 1)?, json(a, 2)?)
            else {
                return Ok(Value::Null);
            };
            let create = a.len() < 4 || a.get::<Option<bool>>(3)?.unwrap_or(true);
            target.set(&p, new, create);
            Ok(Value::Text(target.to_string()))
        })?;
    }
    // Column groups of document tables: a group's part of a document, and the whole again.
    json_scalar(conn, "tessera_jsonb_pick", 2, |a| part(a, true))?;
    json_scalar(conn, "tessera_jsonb_omit", 2, |a| part(a, false))?;
    json_scalar(conn, "tessera_jsonb_merge", -1, |a| {
        let mut fields: Vec<(String, Json)> = Vec::new();
        let mut any = false;
        for i in 0..a.len() {
            match json(a, i)? {
                Some(Json::Object(f)) => {
                    any = true;
                    fields.extend(f);
                }
                Some(_) => {
                    return Err(user_error(JsonError(
                        "a document with column groups must be an object".into(),
                    )))
                }
                None => {}
            }
        }
        Ok(if any {
            Value::Text(jsonb::object(fields).to_string())
        } else {
            Value::Null
        })
    })?;
    scalar(conn, "tessera_jsonb_typeof", 1, |a| {
        Ok(json(a, 0)?.map(|v| v.type_name().to_string()).into())
    })?;
    Ok(())
}

fn scalar(
    conn: &Connection,
    name: &str,
    n_args: i32,
    f: impl Fn(&Context<'_>) -> rusqlite::Result<Value> + Send + Sync + 'static,
) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        name,
        n_args,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        move |c: &mut Context<'_>| f(c),
    )
}

/// SQLite's subtype for JSON text: `json_object`, `json_array` and `json_group_array` embed such a
/// value as JSON instead of quoting it as a string.
const JSON_SUBTYPE: std::ffi::c_uint = 74;

/// A function whose (non-NULL) results are JSON, marked so that SQLite's JSON constructors embed
/// them (`jsonb_build_object('geo', doc->'geo')` nests the object, as in PostgreSQL).
fn json_scalar(
    conn: &Connection,
    name: &str,
    n_args: i32,
    f: impl Fn(&Context<'_>) -> rusqlite::Result<Value> + Send + Sync + 'static,
) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        name,
        n_args,
        FunctionFlags::SQLITE_UTF8
            | FunctionFlags::SQLITE_DETERMINISTIC
            | FunctionFlags::SQLITE_RESULT_SUBTYPE,
        move |c: &mut Context<'_>| {
            let v = f(c)?;
            let subtype = (v != Value::Null).then_some(JSON_SUBTYPE);
            Ok((v, subtype))
        },
    )
}

/// `tessera_jsonb_pick(doc, keys)` (`keep`) or `tessera_jsonb_omit(doc, keys)`: the object with
/// only, or without, those top-level keys. A document that is not an object cannot be split.
fn part(a: &Context<'_>, keep: bool) -> rusqlite::Result<Value> {
    let (Some(doc), Some(keys)) = (json(a, 0)?, path(a, 1)?) else {
        return Ok(Value::Null);
    };
    let Json::Object(fields) = doc else {
        return Err(user_error(JsonError(
            "a document with column groups must be an object".into(),
        )));
    };
    let fields = fields
        .into_iter()
        .filter(|(k, _)| keys.contains(k) == keep)
        .collect();
    Ok(Value::Text(jsonb::object(fields).to_string()))
}

fn user_error(e: JsonError) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(Box::new(e))
}

/// Argument `i` as text (numbers print as SQLite does), or None for NULL.
fn text(a: &Context<'_>, i: usize) -> rusqlite::Result<Option<String>> {
    Ok(match a.get_raw(i) {
        ValueRef::Null => None,
        ValueRef::Integer(n) => Some(n.to_string()),
        ValueRef::Real(r) => Some(r.to_string()),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
    })
}

/// Argument `i` parsed as JSON; invalid JSON is 22P02.
fn json(a: &Context<'_>, i: usize) -> rusqlite::Result<Option<Json>> {
    text(a, i)?
        .map(|t| jsonb::parse(&t))
        .transpose()
        .map_err(user_error)
}

fn with_doc(
    a: &Context<'_>,
    f: impl FnOnce(&Json) -> rusqlite::Result<Option<String>>,
) -> rusqlite::Result<Value> {
    Ok(match json(a, 0)? {
        Some(doc) => f(&doc)?.into(),
        None => Value::Null,
    })
}

/// `doc -> key`: an object field is found without parsing the rest of the document (the hot
/// path of filters on a path), an array element with a full parse.
fn get(a: &Context<'_>) -> rusqlite::Result<Option<Json>> {
    let (Some(doc), Some(k)) = (text(a, 0)?, key(a, 1)?) else {
        return Ok(None);
    };
    match k {
        Key::Name(name) => jsonb::field(&doc, &name).map_err(user_error),
        Key::Index(_) => Ok(jsonb::parse(&doc).map_err(user_error)?.get(&k).cloned()),
    }
}

/// The right operand of `->`: an integer is an array position, text an object key.
fn key(a: &Context<'_>, i: usize) -> rusqlite::Result<Option<Key>> {
    Ok(match a.get_raw(i) {
        ValueRef::Null => None,
        ValueRef::Integer(n) => Some(Key::Index(n)),
        _ => text(a, i)?.map(Key::Name),
    })
}

/// A `text[]` argument (`'{a,b}'`, or a JSON array of strings).
fn path(a: &Context<'_>, i: usize) -> rusqlite::Result<Option<Vec<String>>> {
    text(a, i)?
        .map(|t| jsonb::text_array(&t))
        .transpose()
        .map_err(user_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The functions are deterministic, so a SQLite index on one (what `CREATE INDEX ON t
    /// ((doc->>'user'))` makes on a row table) serves the filter the coordinator writes.
    #[test]
    fn an_expression_index_on_a_path_serves_the_filter() {
        let conn = Connection::open_in_memory().expect("db");
        register(&conn).expect("register");
        conn.execute_batch(
            r#"CREATE TABLE t (id INTEGER PRIMARY KEY, doc TEXT);
               INSERT INTO t VALUES (1, '{"user": "a"}'), (2, '{"user": "b"}'), (3, '[1]');
               CREATE INDEX t_user ON t (tessera_json_text("doc", 'user'));"#,
        )
        .expect("setup");
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT id FROM t WHERE tessera_json_text(doc, 'user') = 'b'",
                [],
                |r| r.get(3),
            )
            .expect("plan");
        assert!(plan.contains("INDEX t_user"), "{plan}");
        let id: i64 = conn
            .query_row(
                "SELECT id FROM t WHERE tessera_json_text(doc, 'user') = 'b'",
                [],
                |r| r.get(0),
            )
            .expect("row");
        assert_eq!(id, 2);
        let e = conn
            .query_row("SELECT tessera_jsonb('{bad')", [], |r| {
                r.get::<_, String>(0)
            })
            .expect_err("invalid");
        assert!(
            e.to_string()
                .starts_with("invalid input syntax for type json"),
            "{e}"
        );
    }
}
