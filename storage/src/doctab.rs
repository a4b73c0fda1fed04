//! The `tessera_doc` SQLite virtual table: a document table whose rows live in fjall.
//!
//! A shard declares a document table as `CREATE VIRTUAL TABLE t USING tessera_doc("id" TEXT
//! PRIMARY KEY, "doc" TEXT, ...)`, so every statement the coordinator sends (filters, JSON
//! functions, aggregates, joins with the shard's SQL tables) runs unchanged by SQLite, while
//! rows are read from and written to [`DocStore`].
//!
//! - **Transactions.** A transaction's writes wait in the table's pending map (its own
//!   reads see them) and reach fjall in one durable batch in `xSync`, before SQLite commits;
//!   a rollback drops them.
//! - **Locking.** The first write of a transaction also writes the shard's
//!   `__tessera_doclock` table, taking the shard's SQLite write lock, so document writers
//!   queue and break lock cycles exactly like SQL writers (see `shards::LockHolders`).
//!   Statements read a fjall snapshot taken when their scan starts (read committed).
//! - **Path indexes.** Hidden columns `__ix0` … `__ix7` hold each row's value of the
//!   table's path indexes; the coordinator rewrites `doc->>'k'` into them, and
//!   `xBestIndex` turns equality and ranges on them into index scans.
//!
//! The only `unsafe` code of the project is here: SQLite's virtual-table interface is a C
//! one, and each block says why it is sound.
#![allow(unsafe_code)]

use crate::docstore::{decode_row, encode_key, index_value, DocStore, PathIndex, INDEX_SLOTS};
use crate::error::StorageError;
use fjall::Readable;
use rusqlite::types::{Value, ValueRef};
use rusqlite::vtab::{
    Context, CreateVTab, Filters, IndexConstraintOp, IndexInfo, Inserts, Module, TransactionVTab,
    UpdateVTab, Updates, VTab, VTabConnection, VTabCursor, VTabKind,
};
use rusqlite::{ffi, Connection};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{c_int, CStr, CString};
use std::rc::Rc;
use std::sync::Arc;

/// The lock table every document write touches.
pub const LOCK_TABLE: &str = "__tessera_doclock";

/// What a shard connection's module knows: the node's store and the shard it serves.
pub struct DocAux {
    /// The node's document store.
    pub store: Arc<DocStore>,
    /// The shard this connection's database is.
    pub shard: u64,
}

/// Registers `tessera_doc` on a shard connection, with the lock table it needs.
pub fn register(conn: &Connection, store: Arc<DocStore>, shard: u64) -> rusqlite::Result<()> {
    const MODULE: Module<DocTable> = Module::update_module_with_tx();
    conn.create_module(
        c"tessera_doc",
        &MODULE,
        Some(DocAux {
            store: store.clone(),
            shard,
        }),
    )?;
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS main.{LOCK_TABLE} (n INTEGER NOT NULL)"
    ))?;
    let flags = rusqlite::functions::FunctionFlags::SQLITE_UTF8;
    // tessera_doc_index(table, slot, name, column position, path as a JSON array): defines a
    // path index and builds it, under the shard's write lock.
    let s = store.clone();
    conn.create_scalar_function("tessera_doc_index", 5, flags, move |ctx| {
        let table: String = ctx.get(0)?;
        let slot: i64 = ctx.get(1)?;
        let path: String = ctx.get(4)?;
        let path: Vec<String> = serde_json::from_str(&path)
            .map_err(|e| error(ffi::SQLITE_ERROR, format!("bad index path: {e}")))?;
        let def = PathIndex {
            version: 1,
            name: ctx.get(2)?,
            column: ctx.get::<i64>(3)? as usize,
            path,
        };
        lock_shard(ctx)?;
        s.create_index(shard, &table, slot as usize, def)
            .map_err(store_error)?;
        Ok(1i64)
    })?;
    // tessera_doc_drop_index(table, slot).
    conn.create_scalar_function("tessera_doc_drop_index", 2, flags, move |ctx| {
        let table: String = ctx.get(0)?;
        let slot: i64 = ctx.get(1)?;
        lock_shard(ctx)?;
        store
            .drop_index(shard, &table, slot as usize)
            .map_err(store_error)?;
        Ok(1i64)
    })
}

/// Takes the shard's write lock from inside a function call.
fn lock_shard(ctx: &rusqlite::functions::Context<'_>) -> rusqlite::Result<()> {
    // SAFETY: the connection running this function; used only for one statement, here.
    let conn = unsafe { ctx.get_connection()? };
    conn.execute(&format!("UPDATE main.{LOCK_TABLE} SET n = n + 1"), [])?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Affinity {
    Integer,
    Real,
    Text,
    Blob,
    Any,
}

#[derive(Debug, Clone)]
struct Col {
    name: String,
    affinity: Affinity,
    not_null: bool,
}

/// A transaction's writes not yet in fjall (`None` deletes the key).
#[derive(Default)]
struct Pending {
    rows: PendingRows,
    locked: bool,
    /// Savepoints set while this table was open in the transaction, with its rows then.
    savepoints: Vec<(String, PendingRows)>,
}

/// Row changes by primary key (`None` deletes).
type PendingRows = BTreeMap<Vec<u8>, Option<Vec<Value>>>;

thread_local! {
    /// The document tables open on this thread's connection (each connection has a thread of
    /// its own), by connection handle: what savepoint statements act on.
    static OPEN: RefCell<Vec<(usize, std::rc::Weak<RefCell<Pending>>)>> = const { RefCell::new(Vec::new()) };
}

/// Gives savepoints their meaning for document tables, whose pending rows SQLite does not know
/// (rusqlite's virtual tables have no savepoint hooks): call before running `sql` on `conn`.
/// `SAVEPOINT n` remembers each open table's pending rows, `ROLLBACK TO n` restores them (a
/// table first written after the savepoint loses all of them), `RELEASE n` forgets it.
pub fn before_statement(conn: &Connection, sql: &str) {
    let sql = sql.trim();
    // Compared in place: every statement passes here, and most are not savepoint commands.
    let starts = |prefix: &str| {
        sql.len() >= prefix.len()
            && sql.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    let (op, rest) = [
        ("ROLLBACK TO SAVEPOINT ", "rollback"),
        ("ROLLBACK TO ", "rollback"),
        ("RELEASE SAVEPOINT ", "release"),
        ("RELEASE ", "release"),
        ("SAVEPOINT ", "set"),
    ]
    .iter()
    .find(|(prefix, _)| starts(prefix))
    .map(|(prefix, op)| (*op, sql[prefix.len()..].trim()))
    .unwrap_or(("", ""));
    if op.is_empty() {
        return;
    }
    // A quoted name (as the coordinator sends it) keeps its spaces and doubled quotes.
    let name = match rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(q) => q.replace("\"\"", "\""),
        None => rest.to_lowercase(),
    };
    // SAFETY: only compared as a number, never dereferenced.
    let handle = unsafe { conn.handle() } as usize;
    OPEN.with(|open| {
        let mut open = open.borrow_mut();
        open.retain(|(_, w)| w.strong_count() > 0);
        for p in open
            .iter()
            .filter(|(h, _)| *h == handle)
            .filter_map(|(_, w)| w.upgrade())
        {
            let mut p = p.borrow_mut();
            let at = p.savepoints.iter().rposition(|(n, _)| *n == name);
            match (op, at) {
                ("set", _) => {
                    let rows = p.rows.clone();
                    p.savepoints.push((name.clone(), rows));
                }
                ("rollback", Some(i)) => {
                    p.rows = p.savepoints[i].1.clone();
                    p.savepoints.truncate(i + 1);
                }
                // Opened after the savepoint: everything it holds came later.
                ("rollback", None) => p.rows.clear(),
                ("release", Some(i)) => p.savepoints.truncate(i),
                _ => {}
            }
        }
    });
}

/// One connection's handle on a document table.
#[repr(C)]
pub struct DocTable {
    base: ffi::sqlite3_vtab,
    db: *mut ffi::sqlite3,
    store: Arc<DocStore>,
    shard: u64,
    table: String,
    cols: Vec<Col>,
    pk: usize,
    pending: Rc<RefCell<Pending>>,
}

fn error(code: c_int, msg: impl Into<String>) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(ffi::Error::new(code), Some(msg.into()))
}

fn store_error(e: StorageError) -> rusqlite::Error {
    error(ffi::SQLITE_IOERR, e.to_string())
}

/// Parses one argument: `"name" TYPE [PRIMARY KEY] [NOT NULL]`.
fn parse_column(arg: &str) -> rusqlite::Result<(Col, bool)> {
    let arg = arg.trim();
    let bad = || error(ffi::SQLITE_ERROR, format!("tessera_doc: bad column {arg}"));
    let rest = arg.strip_prefix('"').ok_or_else(bad)?;
    let mut name = String::new();
    let mut chars = rest.char_indices();
    let mut end = None;
    while let Some((i, c)) = chars.next() {
        if c == '"' {
            if rest[i + 1..].starts_with('"') {
                name.push('"');
                chars.next();
            } else {
                end = Some(i + 1);
                break;
            }
        } else {
            name.push(c);
        }
    }
    let words = rest[end.ok_or_else(bad)?..].to_ascii_uppercase();
    let affinity = match words.split_whitespace().next() {
        Some("INTEGER") => Affinity::Integer,
        Some("REAL") => Affinity::Real,
        Some("TEXT") => Affinity::Text,
        Some("BLOB") => Affinity::Blob,
        _ => Affinity::Any,
    };
    let pk = words.contains("PRIMARY KEY");
    Ok((
        Col {
            name,
            affinity,
            not_null: pk || words.contains("NOT NULL"),
        },
        pk,
    ))
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl DocTable {
    fn open_table(
        db: &mut VTabConnection,
        aux: Option<&DocAux>,
        table_name: &[u8],
        args: &[&[u8]],
    ) -> rusqlite::Result<(Cow<'static, CStr>, DocTable)> {
        let aux = aux.ok_or_else(|| error(ffi::SQLITE_ERROR, "tessera_doc: no store"))?;
        let mut cols = Vec::new();
        let mut pk = None;
        for a in args {
            let (c, is_pk) = parse_column(std::str::from_utf8(a)?)?;
            if is_pk {
                pk = Some(cols.len());
            }
            cols.push(c);
        }
        let pk = pk.ok_or_else(|| {
            error(
                ffi::SQLITE_ERROR,
                "a document table needs a one-column primary key",
            )
        })?;
        let mut decl: Vec<String> = cols.iter().map(|c| quote(&c.name)).collect();
        decl.extend((0..INDEX_SLOTS).map(|i| format!("__ix{i} HIDDEN")));
        let sql = format!(
            "CREATE TABLE x({}, PRIMARY KEY({})) WITHOUT ROWID",
            decl.join(", "),
            quote(&cols[pk].name)
        );
        let table = DocTable {
            base: ffi::sqlite3_vtab::default(),
            // SAFETY: the handle of the connection that owns this table; it outlives it.
            db: unsafe { db.handle() },
            store: aux.store.clone(),
            shard: aux.shard,
            table: String::from_utf8_lossy(table_name).into_owned(),
            cols,
            pk,
            pending: Rc::default(),
        };
        let handle = table.db as usize;
        OPEN.with(|open| {
            open.borrow_mut()
                .push((handle, Rc::downgrade(&table.pending)))
        });
        let sql = CString::new(sql).map_err(|_| error(ffi::SQLITE_ERROR, "bad column name"))?;
        Ok((Cow::Owned(sql), table))
    }

    /// Coerces a value to its column's type as a STRICT table would, or fails with
    /// SQLITE_CONSTRAINT_DATATYPE (22P02).
    fn coerce(&self, i: usize, v: Value) -> rusqlite::Result<Value> {
        let c = &self.cols[i];
        let bad = |v: &Value| {
            error(
                ffi::SQLITE_CONSTRAINT_DATATYPE,
                format!("cannot store {v:?} in column \"{}\"", c.name),
            )
        };
        Ok(match (c.affinity, v) {
            (_, Value::Null) if c.not_null => {
                return Err(error(
                    ffi::SQLITE_CONSTRAINT_NOTNULL,
                    format!("NOT NULL constraint failed: {}.{}", self.table, c.name),
                ))
            }
            (_, Value::Null) => Value::Null,
            (Affinity::Integer, Value::Real(f)) if f.fract() == 0.0 => Value::Integer(f as i64),
            (Affinity::Integer, Value::Text(s)) => match s.trim().parse() {
                Ok(i) => Value::Integer(i),
                Err(_) => return Err(bad(&Value::Text(s))),
            },
            (Affinity::Real, Value::Integer(i)) => Value::Real(i as f64),
            (Affinity::Real, Value::Text(s)) => match s.trim().parse() {
                Ok(f) => Value::Real(f),
                Err(_) => return Err(bad(&Value::Text(s))),
            },
            (Affinity::Text, Value::Integer(i)) => Value::Text(i.to_string()),
            (Affinity::Text, Value::Real(f)) => Value::Text(f.to_string()),
            (Affinity::Integer, v @ Value::Integer(_))
            | (Affinity::Real, v @ Value::Real(_))
            | (Affinity::Text, v @ Value::Text(_))
            | (Affinity::Blob, v @ Value::Blob(_))
            | (Affinity::Any, v) => v,
            (_, v) => return Err(bad(&v)),
        })
    }

    fn key_of(&self, v: Value) -> rusqlite::Result<Vec<u8>> {
        Ok(encode_key(&self.coerce(self.pk, v)?))
    }

    /// The row stored under `key` as this transaction sees it.
    fn current(&self, key: &[u8]) -> rusqlite::Result<Option<Vec<Value>>> {
        if let Some(p) = self.pending.borrow().rows.get(key) {
            return Ok(p.clone());
        }
        let ks = self
            .store
            .keyspace(self.shard, &self.table, None)
            .map_err(store_error)?;
        match ks
            .get(key)
            .map_err(|e| error(ffi::SQLITE_IOERR, e.to_string()))?
        {
            Some(v) => Ok(Some(decode_row(&v).map_err(store_error)?)),
            None => Ok(None),
        }
    }

    /// Takes the shard's write lock on the transaction's first write.
    fn lock(&self) -> rusqlite::Result<()> {
        if self.pending.borrow().locked {
            return Ok(());
        }
        // SAFETY: `db` is this table's own open connection; the wrapper does not close it.
        let conn = unsafe { Connection::from_handle(self.db)? };
        conn.execute(&format!("UPDATE main.{LOCK_TABLE} SET n = n + 1"), [])?;
        self.pending.borrow_mut().locked = true;
        Ok(())
    }

    fn new_row(&self, values: &rusqlite::types::Values<'_>) -> rusqlite::Result<Vec<Value>> {
        (0..self.cols.len())
            .map(|i| self.coerce(i, values.get::<Value>(i + 2)?))
            .collect()
    }

    fn duplicate(&self, row: &[Value]) -> rusqlite::Error {
        error(
            ffi::SQLITE_CONSTRAINT_PRIMARYKEY,
            format!(
                "duplicate key value violates unique constraint \"{}_pkey\": Key ({})=({}) already exists.",
                self.table,
                self.cols[self.pk].name,
                display(&row[self.pk])
            ),
        )
    }
}

fn display(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => f.to_string(),
        Value::Text(s) => s.clone(),
        Value::Blob(b) => format!("{b:?}"),
    }
}

/// Whether constraint `i`'s right operand is a text constant.
fn text_constant(info: &IndexInfo, i: usize) -> bool {
    matches!(info.rhs_value(i), Ok(Some(ValueRef::Text(_))))
}

/// How `xFilter` reads: chosen by `xBestIndex`, passed as idx_num.
const PLAN_SCAN: c_int = 0;
const PLAN_KEY: c_int = 1;
const PLAN_INDEX_EQ: c_int = 2;
const PLAN_INDEX_RANGE: c_int = 3;

unsafe impl<'vtab> VTab<'vtab> for DocTable {
    type Aux = DocAux;
    type Cursor = DocCursor<'vtab>;

    fn connect(
        db: &mut VTabConnection,
        aux: Option<&DocAux>,
        _module: &[u8],
        _database: &[u8],
        table: &[u8],
        args: &[&[u8]],
    ) -> rusqlite::Result<(Cow<'static, CStr>, Self)> {
        DocTable::open_table(db, aux, table, args)
    }

    fn best_index(&self, info: &mut IndexInfo) -> rusqlite::Result<bool> {
        let n = self.cols.len() as c_int;
        let defined = self.store.indexes(self.shard, &self.table);
        let cons: Vec<(usize, c_int, IndexConstraintOp)> = info
            .constraints()
            .enumerate()
            .filter(|(_, c)| c.is_usable())
            .map(|(i, c)| (i, c.column(), c.operator()))
            .collect();
        let slot_of = |col: c_int| {
            let s = (col - n) as usize;
            (col >= n && defined.get(s).is_some_and(|d| d.is_some())).then_some(s)
        };
        if let Some((i, ..)) = cons.iter().find(|(_, col, op)| {
            *col == self.pk as c_int && *op == IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_EQ
        }) {
            let mut u = info.constraint_usage(*i);
            u.set_argv_index(1);
            u.set_omit(true);
            info.set_idx_num(PLAN_KEY);
            info.set_estimated_cost(1.0);
            info.set_estimated_rows(1);
            return Ok(true);
        }
        if let Some((i, col, _)) = cons.iter().find(|(_, col, op)| {
            slot_of(*col).is_some() && *op == IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_EQ
        }) {
            // A text constant compares with the indexed text exactly as the index orders it,
            // so the index alone decides (and a stale entry would show). Other operands may
            // be converted by SQLite's affinity rules: SQLite checks those rows again.
            let exact = text_constant(info, *i);
            let mut u = info.constraint_usage(*i);
            u.set_argv_index(1);
            u.set_omit(exact);
            info.set_idx_num(PLAN_INDEX_EQ);
            info.set_idx_str(&slot_of(*col).unwrap_or(0).to_string());
            info.set_estimated_cost(10.0);
            info.set_estimated_rows(10);
            return Ok(true);
        }
        // A range on one indexed path: a lower bound, an upper bound, or both.
        let mut range: Option<(usize, Vec<(usize, &'static str)>)> = None;
        for (i, col, op) in &cons {
            let Some(slot) = slot_of(*col) else { continue };
            let op = match op {
                IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_GT => ">",
                IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_GE => ">=",
                IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_LT => "<",
                IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_LE => "<=",
                _ => continue,
            };
            match &mut range {
                None => range = Some((slot, vec![(*i, op)])),
                Some((s, ops))
                    if *s == slot
                        && ops.len() < 2
                        && ops[0].1.starts_with('>') != op.starts_with('>') =>
                {
                    ops.push((*i, op))
                }
                _ => {}
            }
        }
        if let Some((slot, ops)) = range {
            let mut desc = slot.to_string();
            for (argv, (i, op)) in ops.iter().enumerate() {
                let exact = text_constant(info, *i);
                let mut u = info.constraint_usage(*i);
                u.set_argv_index(argv as c_int + 1);
                u.set_omit(exact);
                desc.push(' ');
                desc.push_str(op);
            }
            info.set_idx_num(PLAN_INDEX_RANGE);
            info.set_idx_str(&desc);
            info.set_estimated_cost(1000.0);
            info.set_estimated_rows(1000);
            return Ok(true);
        }
        info.set_idx_num(PLAN_SCAN);
        info.set_estimated_cost(1_000_000.0);
        Ok(true)
    }

    fn open(&'vtab mut self) -> rusqlite::Result<DocCursor<'vtab>> {
        Ok(DocCursor {
            base: ffi::sqlite3_vtab_cursor::default(),
            table: self,
            rows: Box::new(std::iter::empty()),
            current: None,
        })
    }
}

impl CreateVTab<'_> for DocTable {
    const KIND: VTabKind = VTabKind::Default;

    fn destroy(&self) -> rusqlite::Result<()> {
        self.store
            .drop_table(self.shard, &self.table)
            .map_err(store_error)
    }
}

impl UpdateVTab<'_> for DocTable {
    fn delete(&mut self, pk: ValueRef<'_>) -> rusqlite::Result<()> {
        crate::capture::note_document_write();
        self.lock()?;
        let key = self.key_of(<Value as rusqlite::types::FromSql>::column_result(pk)?)?;
        self.pending.borrow_mut().rows.insert(key, None);
        Ok(())
    }

    fn insert(&mut self, args: &Inserts<'_>) -> rusqlite::Result<i64> {
        crate::capture::note_document_write();
        self.lock()?;
        let row = self.new_row(args)?;
        let key = encode_key(&row[self.pk]);
        if self.current(&key)?.is_some() {
            return Err(self.duplicate(&row));
        }
        self.pending.borrow_mut().rows.insert(key, Some(row));
        Ok(0)
    }

    fn update(&mut self, args: &Updates<'_>) -> rusqlite::Result<()> {
        crate::capture::note_document_write();
        self.lock()?;
        let old = self.key_of(args.get::<Value>(0)?)?;
        let row = self.new_row(args)?;
        let key = encode_key(&row[self.pk]);
        if key != old {
            if self.current(&key)?.is_some() {
                return Err(self.duplicate(&row));
            }
            self.pending.borrow_mut().rows.insert(old, None);
        }
        self.pending.borrow_mut().rows.insert(key, Some(row));
        Ok(())
    }
}

impl TransactionVTab<'_> for DocTable {
    fn sync(&mut self) -> rusqlite::Result<()> {
        let changes: Vec<(Vec<u8>, Option<Vec<Value>>)> =
            std::mem::take(&mut self.pending.borrow_mut().rows)
                .into_iter()
                .collect();
        self.store
            .commit(self.shard, &self.table, &changes)
            .map_err(store_error)
    }

    fn commit(&mut self) -> rusqlite::Result<()> {
        *self.pending.borrow_mut() = Pending::default();
        Ok(())
    }

    fn rollback(&mut self) -> rusqlite::Result<()> {
        *self.pending.borrow_mut() = Pending::default();
        Ok(())
    }
}

type RowIter = Box<dyn Iterator<Item = rusqlite::Result<(Vec<u8>, Vec<Value>)>>>;

/// A scan over a document table.
#[repr(C)]
pub struct DocCursor<'vtab> {
    base: ffi::sqlite3_vtab_cursor,
    table: &'vtab DocTable,
    rows: RowIter,
    current: Option<(Vec<u8>, Vec<Value>)>,
}

/// The length of the value part of an index key (see `docstore::encode_key`).
fn value_len(k: &[u8]) -> Option<usize> {
    match k.first()? {
        0 => Some(1),
        1 | 2 => Some(9),
        _ => {
            let mut i = 1;
            while i + 1 < k.len() {
                if k[i] == 0 {
                    if k[i + 1] == 0 {
                        return Some(i + 2);
                    }
                    i += 2;
                } else {
                    i += 1;
                }
            }
            None
        }
    }
}

impl DocCursor<'_> {
    fn pending_snapshot(&self) -> BTreeMap<Vec<u8>, Option<Vec<Value>>> {
        self.table.pending.borrow().rows.clone()
    }

    /// Rows found through index slot `slot` between `lo` and `hi` (index keys), with this
    /// transaction's pending rows whose indexed value falls in the same bounds.
    fn index_rows(
        &self,
        slot: usize,
        lo: Vec<u8>,
        hi: Option<Vec<u8>>,
    ) -> rusqlite::Result<RowIter> {
        let t = self.table;
        let idx = t
            .store
            .keyspace(t.shard, &t.table, Some(slot))
            .map_err(store_error)?;
        let rows = t
            .store
            .keyspace(t.shard, &t.table, None)
            .map_err(store_error)?;
        let pending = self.pending_snapshot();
        let (lo_bound, hi_bound) = (lo.clone(), hi.clone());
        // One snapshot for the index and the rows: an entry and the row it names agree.
        let snap = t.store.snapshot();
        let iter = match hi {
            Some(hi) => snap.range(&idx, lo..hi),
            None => snap.range(&idx, lo..),
        };
        let skip = pending.clone();
        let def = t
            .store
            .indexes(t.shard, &t.table)
            .get(slot)
            .cloned()
            .flatten();
        let (lo_p, hi_p) = (lo_bound.clone(), hi_bound.clone());
        let pending = pending.into_iter().filter(move |(_, row)| {
            let Some(v) = row
                .as_ref()
                .zip(def.as_ref())
                .and_then(|(r, d)| index_value(r, d))
            else {
                return false;
            };
            let k = encode_key(&v);
            k >= lo_p && hi_p.as_ref().is_none_or(|h| k < *h)
        });
        let pending: BTreeMap<Vec<u8>, Option<Vec<Value>>> = pending.collect();
        let found = iter.filter_map(move |g| {
            let k = match g.key() {
                Ok(k) => k,
                Err(e) => return Some(Err(error(ffi::SQLITE_IOERR, e.to_string()))),
            };
            let pk = k.get(value_len(&k)?..)?.to_vec();
            if skip.contains_key(&pk) {
                return None;
            }
            match snap.get(&rows, &pk) {
                Ok(Some(v)) => Some(decode_row(&v).map(|r| (pk, r)).map_err(store_error)),
                Ok(None) => None,
                Err(e) => Some(Err(error(ffi::SQLITE_IOERR, e.to_string()))),
            }
        });
        Ok(Box::new(found.chain(live(pending))))
    }
}

fn live(
    pending: BTreeMap<Vec<u8>, Option<Vec<Value>>>,
) -> impl Iterator<Item = rusqlite::Result<(Vec<u8>, Vec<Value>)>> {
    pending
        .into_iter()
        .filter_map(|(k, v)| v.map(|r| Ok((k, r))))
}

unsafe impl VTabCursor for DocCursor<'_> {
    fn filter(
        &mut self,
        idx_num: c_int,
        idx_str: Option<&str>,
        args: &Filters<'_>,
    ) -> rusqlite::Result<()> {
        let t = self.table;
        self.rows = match idx_num {
            PLAN_KEY => {
                let key = t.key_of(args.get::<Value>(0)?);
                match key {
                    Ok(key) => Box::new(t.current(&key)?.map(|r| Ok((key, r))).into_iter()),
                    // A key of the wrong type matches nothing (as `id = 'x'` on an integer key).
                    Err(_) => Box::new(std::iter::empty()),
                }
            }
            PLAN_INDEX_EQ | PLAN_INDEX_RANGE => {
                let desc = idx_str.unwrap_or("0");
                let mut words = desc.split(' ');
                let slot: usize = words.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                if idx_num == PLAN_INDEX_EQ {
                    let v = encode_key(&args.get::<Value>(0)?);
                    let mut hi = v.clone();
                    hi.push(0xFF);
                    self.index_rows(slot, v, Some(hi))?
                } else {
                    let (mut lo, mut hi) = (vec![], None);
                    for (i, op) in words.enumerate() {
                        let mut v = encode_key(&args.get::<Value>(i)?);
                        match op {
                            ">" => {
                                v.push(0xFF);
                                lo = v;
                            }
                            ">=" => lo = v,
                            "<" => hi = Some(v),
                            _ => {
                                v.push(0xFF);
                                hi = Some(v);
                            }
                        }
                    }
                    self.index_rows(slot, lo, hi)?
                }
            }
            _ => {
                let rows = t
                    .store
                    .keyspace(t.shard, &t.table, None)
                    .map_err(store_error)?;
                let pending = self.pending_snapshot();
                let skip = pending.clone();
                let stored = rows.iter().filter_map(move |g| match g.into_inner() {
                    Ok((k, _)) if skip.contains_key(k.as_ref()) => None,
                    Ok((k, v)) => {
                        Some(decode_row(&v).map(|r| (k.to_vec(), r)).map_err(store_error))
                    }
                    Err(e) => Some(Err(error(ffi::SQLITE_IOERR, e.to_string()))),
                });
                Box::new(stored.chain(live(pending)))
            }
        };
        self.next()
    }

    fn next(&mut self) -> rusqlite::Result<()> {
        self.current = self.rows.next().transpose()?;
        Ok(())
    }

    fn eof(&self) -> bool {
        self.current.is_none()
    }

    fn column(&self, ctx: &mut Context, i: c_int) -> rusqlite::Result<()> {
        let Some((_, row)) = &self.current else {
            return ctx.set_result(&Value::Null);
        };
        let i = i as usize;
        if let Some(v) = row.get(i) {
            return ctx.set_result(v);
        }
        let slot = i - self.table.cols.len();
        let def: Option<PathIndex> = self
            .table
            .store
            .indexes(self.table.shard, &self.table.table)
            .get(slot)
            .cloned()
            .flatten();
        ctx.set_result(
            def.and_then(|d| index_value(row, &d))
                .unwrap_or(Value::Null),
        )
    }

    fn rowid(&self) -> rusqlite::Result<i64> {
        Err(error(ffi::SQLITE_ERROR, "document tables have no rowid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_arguments_parse() {
        let (c, pk) = parse_column(r#""a ""b"   INTEGER PRIMARY KEY"#).expect("parse");
        assert_eq!(
            (c.name.as_str(), c.affinity, c.not_null, pk),
            ("a \"b", Affinity::Integer, true, true)
        );
        let (c, pk) = parse_column(r#""doc" TEXT NOT NULL"#).expect("parse");
        assert_eq!((c.affinity, c.not_null, pk), (Affinity::Text, true, false));
        assert!(parse_column("doc TEXT").is_err());
    }

    /// The plans SQLite picks: the primary key, an index for equality and for a range, a scan
    /// otherwise; and a rolled-back transaction leaves nothing in fjall.
    #[test]
    fn queries_use_keys_and_path_indexes_and_rollbacks_leave_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Arc::new(DocStore::open(dir.path(), "full").expect("store"));
        let conn = Connection::open(dir.path().join("shard.db")).expect("db");
        register(&conn, store.clone(), 1).expect("register");
        crate::jsonfn::register(&conn).expect("json");
        conn.execute_batch(
            r#"CREATE VIRTUAL TABLE t USING tessera_doc("id" INTEGER PRIMARY KEY, "doc" TEXT);
               INSERT INTO t VALUES (1, '{"u": "a"}'), (2, '{"u": "b"}'), (3, '{"v": 1}');
               SELECT tessera_doc_index('t', 0, 't_u', 1, '["u"]');"#,
        )
        .expect("setup");
        let plan = |sql: &str| -> String {
            let mut st = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("plan");
            let rows: Vec<String> = st
                .query_map([], |r| r.get::<_, String>(3))
                .expect("rows")
                .collect::<Result<_, _>>()
                .expect("rows");
            rows.join("; ")
        };
        assert!(plan("SELECT * FROM t WHERE id = 2").contains("INDEX 1:"));
        assert!(plan("SELECT * FROM t WHERE __ix0 = 'b'").contains("INDEX 2:0"));
        assert!(plan("SELECT * FROM t WHERE __ix0 > 'a'").contains("INDEX 3:0 >"));
        assert!(plan("SELECT * FROM t WHERE doc LIKE '%u%'").contains("INDEX 0:"));
        let ids = |sql: &str| -> Vec<i64> {
            let mut st = conn.prepare(sql).expect("prepare");
            st.query_map([], |r| r.get(0))
                .expect("rows")
                .collect::<Result<_, _>>()
                .expect("rows")
        };
        assert_eq!(ids("SELECT id FROM t WHERE __ix0 = 'b'"), [2]);
        assert_eq!(
            ids("SELECT id FROM t WHERE __ix0 >= 'a' ORDER BY id"),
            [1, 2]
        );
        conn.execute_batch(r#"BEGIN; INSERT INTO t VALUES (4, '{"u": "b"}'); UPDATE t SET doc = '{"u": "c"}' WHERE id = 2;"#)
            .expect("write");
        assert_eq!(
            ids("SELECT id FROM t WHERE __ix0 = 'b'"),
            [4],
            "the transaction sees its own writes"
        );
        conn.execute_batch("ROLLBACK").expect("rollback");
        assert_eq!(ids("SELECT id FROM t WHERE __ix0 = 'b'"), [2]);
        // Savepoints, as the storage node runs them (each statement announced first).
        let run = |sql: &str| {
            before_statement(&conn, sql);
            conn.execute_batch(sql).expect(sql);
        };
        run("BEGIN");
        run(r#"INSERT INTO t VALUES (5, '{"u": "sp"}')"#);
        run("SAVEPOINT \"a\"");
        run(r#"INSERT INTO t VALUES (6, '{"u": "sp"}')"#);
        run("SAVEPOINT \"b\"");
        run("DELETE FROM t WHERE id = 5");
        run("ROLLBACK TO \"b\"");
        assert_eq!(
            ids("SELECT id FROM t WHERE __ix0 = 'sp' ORDER BY id"),
            [5, 6]
        );
        run("ROLLBACK TO \"a\"");
        run("RELEASE \"a\"");
        run("COMMIT");
        assert_eq!(ids("SELECT id FROM t WHERE __ix0 = 'sp'"), [5]);
        run("DELETE FROM t WHERE id = 5");
        assert_eq!(
            store
                .keyspace(1, "t", None)
                .expect("ks")
                .len()
                .expect("len"),
            3
        );
        let e = conn
            .execute(r#"INSERT INTO t VALUES (1, '{}')"#, [])
            .expect_err("duplicate");
        assert_eq!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::ConstraintViolation)
        );
        conn.execute_batch("DROP TABLE t").expect("drop");
        assert!(store
            .keyspace(1, "t", None)
            .expect("ks")
            .is_empty()
            .expect("empty"));
    }

    #[test]
    fn index_key_value_lengths() {
        for v in [
            Value::Null,
            Value::Integer(3),
            Value::Real(1.0),
            Value::Text("a\0b".into()),
        ] {
            let mut k = encode_key(&v);
            let n = k.len();
            k.extend(encode_key(&Value::Integer(9)));
            assert_eq!(value_len(&k), Some(n), "{v:?}");
        }
    }
}
