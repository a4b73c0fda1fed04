//! PostgreSQL's JSON set-returning functions as SQLite table-valued functions:
//! `jsonb_array_elements(_text)`, `jsonb_each(_text)`, `jsonb_object_keys` (and their `json_`
//! twins, except `json_each`, which is SQLite's own).
//!
//! Each is an eponymous virtual table whose hidden column `json` is the argument, so
//! `FROM events, jsonb_array_elements(events.doc->'tags') AS e` runs on the shard like a
//! PostgreSQL lateral call. Values come out as PostgreSQL prints them: `jsonb` text for the
//! plain forms, text (strings unquoted, JSON null as NULL) for the `_text` forms.
#![allow(unsafe_code)]

use rusqlite::types::Value;
use rusqlite::vtab::{
    Context, CreateVTab, Filters, IndexConstraintOp, IndexInfo, Module, VTab, VTabConnection,
    VTabCursor, VTabKind,
};
use rusqlite::{ffi, Connection};
use std::borrow::Cow;
use std::ffi::{c_int, CStr};
use tessera_shared::jsonb::{self, Json};

/// Which function a module is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Srf {
    /// `jsonb_array_elements`: one row per element, as jsonb.
    Elements,
    /// `jsonb_array_elements_text`: one row per element, as text.
    ElementsText,
    /// `jsonb_each`: (key, value as jsonb) per field.
    Each,
    /// `jsonb_each_text`: (key, value as text) per field.
    EachText,
    /// `jsonb_object_keys`: one row per key.
    ObjectKeys,
}

/// The functions and their SQL names.
pub const FUNCTIONS: [(&str, Srf); 9] = [
    ("jsonb_array_elements", Srf::Elements),
    ("json_array_elements", Srf::Elements),
    ("jsonb_array_elements_text", Srf::ElementsText),
    ("json_array_elements_text", Srf::ElementsText),
    ("jsonb_each", Srf::Each),
    ("jsonb_each_text", Srf::EachText),
    ("json_each_text", Srf::EachText),
    ("jsonb_object_keys", Srf::ObjectKeys),
    ("json_object_keys", Srf::ObjectKeys),
];

/// Registers every function on `conn`.
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    const MODULE: Module<SrfTable> = Module::eponymous_only_module();
    for (name, kind) in FUNCTIONS {
        conn.create_module(name, &MODULE, Some(kind))?;
    }
    Ok(())
}

/// One function's table.
#[repr(C)]
pub struct SrfTable {
    base: ffi::sqlite3_vtab,
    kind: Srf,
    /// Visible columns before the hidden argument.
    width: c_int,
}

fn error(msg: impl Into<String>) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_ERROR), Some(msg.into()))
}

unsafe impl<'vtab> VTab<'vtab> for SrfTable {
    type Aux = Srf;
    type Cursor = SrfCursor;

    fn connect(
        _db: &mut VTabConnection,
        aux: Option<&Srf>,
        module: &[u8],
        _database: &[u8],
        _table: &[u8],
        _args: &[&[u8]],
    ) -> rusqlite::Result<(Cow<'static, CStr>, Self)> {
        let kind = *aux.ok_or_else(|| error("json function without its kind"))?;
        let (decl, width): (Cow<'static, CStr>, c_int) = match kind {
            Srf::Elements | Srf::ElementsText => {
                (Cow::Borrowed(c"CREATE TABLE x(value, json HIDDEN)"), 1)
            }
            Srf::Each | Srf::EachText => {
                (Cow::Borrowed(c"CREATE TABLE x(key, value, json HIDDEN)"), 2)
            }
            Srf::ObjectKeys => {
                let name = String::from_utf8_lossy(module).replace('"', "");
                let sql =
                    std::ffi::CString::new(format!("CREATE TABLE x(\"{name}\", json HIDDEN)"))
                        .map_err(|_| error("bad function name"))?;
                (Cow::Owned(sql), 1)
            }
        };
        Ok((
            decl,
            SrfTable {
                base: ffi::sqlite3_vtab::default(),
                kind,
                width,
            },
        ))
    }

    fn best_index(&self, info: &mut IndexInfo) -> rusqlite::Result<bool> {
        let arg = info.constraints().enumerate().find(|(_, c)| {
            c.is_usable()
                && c.column() == self.width
                && c.operator() == IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_EQ
        });
        let Some((i, _)) = arg.map(|(i, c)| (i, c.column())) else {
            // Called without its argument: not a plan SQLite may use.
            return Ok(false);
        };
        let mut u = info.constraint_usage(i);
        u.set_argv_index(1);
        u.set_omit(true);
        info.set_estimated_cost(10.0);
        info.set_estimated_rows(10);
        Ok(true)
    }

    fn open(&'vtab mut self) -> rusqlite::Result<SrfCursor> {
        Ok(SrfCursor {
            base: ffi::sqlite3_vtab_cursor::default(),
            kind: self.kind,
            rows: Vec::new(),
            at: 0,
        })
    }
}

impl CreateVTab<'_> for SrfTable {
    const KIND: VTabKind = VTabKind::EponymousOnly;
}

/// The rows of one call.
#[repr(C)]
pub struct SrfCursor {
    base: ffi::sqlite3_vtab_cursor,
    kind: Srf,
    rows: Vec<(Value, Value)>,
    at: usize,
}

fn as_jsonb(v: &Json) -> Value {
    Value::Text(v.to_string())
}

fn as_text(v: &Json) -> Value {
    v.as_text().map(Value::Text).unwrap_or(Value::Null)
}

/// PostgreSQL's error for a call on the wrong kind of value (SQLSTATE 22023 there).
fn wrong(what: &str, v: &Json) -> rusqlite::Error {
    error(format!(
        "cannot {what} of a {} (invalid parameter value)",
        match v {
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
            _ => "a scalar",
        }
    ))
}

unsafe impl VTabCursor for SrfCursor {
    fn filter(
        &mut self,
        _idx_num: c_int,
        _idx_str: Option<&str>,
        args: &Filters<'_>,
    ) -> rusqlite::Result<()> {
        self.at = 0;
        self.rows.clear();
        let Some(text) = args.get::<Option<String>>(0)? else {
            return Ok(());
        };
        let v = jsonb::parse(&text).map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))?;
        self.rows = match (self.kind, &v) {
            (Srf::Elements, Json::Array(items)) => {
                items.iter().map(|i| (as_jsonb(i), Value::Null)).collect()
            }
            (Srf::ElementsText, Json::Array(items)) => {
                items.iter().map(|i| (as_text(i), Value::Null)).collect()
            }
            (Srf::Elements | Srf::ElementsText, other) => {
                return Err(wrong("extract elements", other))
            }
            (Srf::Each, Json::Object(fields)) => fields
                .iter()
                .map(|(k, x)| (Value::Text(k.clone()), as_jsonb(x)))
                .collect(),
            (Srf::EachText, Json::Object(fields)) => fields
                .iter()
                .map(|(k, x)| (Value::Text(k.clone()), as_text(x)))
                .collect(),
            (Srf::ObjectKeys, Json::Object(fields)) => fields
                .iter()
                .map(|(k, _)| (Value::Text(k.clone()), Value::Null))
                .collect(),
            (Srf::Each | Srf::EachText, other) => return Err(wrong("deconstruct", other)),
            (Srf::ObjectKeys, other) => return Err(wrong("call jsonb_object_keys on", other)),
        };
        Ok(())
    }

    fn next(&mut self) -> rusqlite::Result<()> {
        self.at += 1;
        Ok(())
    }

    fn eof(&self) -> bool {
        self.at >= self.rows.len()
    }

    fn column(&self, ctx: &mut Context, i: c_int) -> rusqlite::Result<()> {
        let Some((a, b)) = self.rows.get(self.at) else {
            return ctx.set_result(&Value::Null);
        };
        match i {
            0 => ctx.set_result(a),
            1 if matches!(self.kind, Srf::Each | Srf::EachText) => ctx.set_result(b),
            _ => ctx.set_result(&Value::Null),
        }
    }

    fn rowid(&self) -> rusqlite::Result<i64> {
        Ok(self.at as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_returning_functions_follow_postgres() {
        let conn = Connection::open_in_memory().expect("db");
        register(&conn).expect("register");
        let rows = |sql: &str| -> Vec<String> {
            let mut st = conn.prepare(sql).expect(sql);
            st.query_map([], |r| {
                let n = r.as_ref().column_count();
                Ok((0..n)
                    .map(|i| {
                        r.get::<_, Option<String>>(i)
                            .expect("col")
                            .unwrap_or_else(|| "NULL".into())
                    })
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
        };
        assert_eq!(
            rows(r#"SELECT value FROM jsonb_array_elements('[1, "a", {"b": null}, null]')"#),
            ["1", "\"a\"", "{\"b\": null}", "null"]
        );
        assert_eq!(
            rows(r#"SELECT value FROM jsonb_array_elements_text('[1, "a", null]')"#),
            ["1", "a", "NULL"]
        );
        assert_eq!(
            rows(r#"SELECT key, value FROM jsonb_each('{"b": [1], "a": "x"}')"#),
            ["a|\"x\"", "b|[1]"]
        );
        assert_eq!(
            rows(r#"SELECT * FROM jsonb_object_keys('{"bb": 1, "a": 2}')"#),
            ["a", "bb"]
        );
        // Lateral, as PostgreSQL's calls in FROM are.
        conn.execute_batch(r#"CREATE TABLE t (id, doc); INSERT INTO t VALUES (1, '{"tags": ["x", "y"]}'), (2, '{"tags": []}');"#)
            .expect("t");
        assert_eq!(rows("SELECT CAST(t.id AS TEXT), e.value FROM t, jsonb_array_elements_text(t.doc -> '$.tags') AS e ORDER BY 1, 2"), ["1|x", "1|y"]);
        let mut st = conn
            .prepare("SELECT * FROM jsonb_array_elements('{}')")
            .expect("prepare");
        let r: rusqlite::Result<Vec<Value>> =
            st.query_map([], |r| r.get(0)).expect("query").collect();
        assert!(r.is_err(), "elements of an object is an error");
    }
}
