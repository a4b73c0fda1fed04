//! The node's document store: rows of document tables, and their path indexes, in fjall.
//!
//! One fjall database per storage node (`<data_dir>/documents`). Each (shard, table) has a
//! keyspace of rows keyed by the primary key, and one keyspace per path index, keyed by the
//! indexed value followed by the primary key. A transaction's rows and index entries are
//! written in one fjall batch, so an index never disagrees with its documents. Index
//! definitions live in the `_tessera_meta` keyspace.
//!
//! Formats (version 1): a row value is `[1, cell...]`, a cell a tag (0 null, 1 integer, 2
//! real, 3 text, 4 blob) then 8 little-endian bytes or a u32 length and the bytes. Keys are
//! order-preserving: a tag, then big-endian integers with the sign bit flipped, reals with
//! their bits ordered, text and blobs with 0x00 escaped as 0x00 0xFF and ended by 0x00 0x00.

use crate::error::StorageError;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use rusqlite::types::Value;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// Row format version written by this build.
pub const ROW_FORMAT: u8 = 1;
/// Path-index slots a document table has (hidden columns `__ix0` … of its virtual table).
pub const INDEX_SLOTS: usize = 8;
const META: &str = "_tessera_meta";

/// A path index: the text at `path` inside column `column` (what `column->>'a'` or
/// `column #>> '{a,b}'` gives).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathIndex {
    /// Format version of this record.
    pub version: u32,
    /// Index name (for EXPLAIN and errors).
    pub name: String,
    /// Position of the JSON column among the table's columns.
    pub column: usize,
    /// Keys from the column's top level down.
    pub path: Vec<String>,
}

/// Path-index definitions by (shard, table), one entry per slot.
type IndexSlots = HashMap<(u64, String), Vec<Option<PathIndex>>>;

/// All document rows of this node.
pub struct DocStore {
    db: Database,
    meta: Keyspace,
    persist: Option<PersistMode>,
    /// (shard, table) → index slots.
    indexes: RwLock<IndexSlots>,
    /// (shard, table) → the lock under which its batches and index builds run, so an index
    /// build and a commit never interleave.
    writers: dashmap::DashMap<(u64, String), Arc<Mutex<()>>>,
}

fn fjall_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::Documents(e.to_string())
}

impl DocStore {
    /// Opens (or creates) the store in `dir`. `synchronous` is the node's fsync level:
    /// `full` fsyncs every commit, `normal` hands it to the OS, `off` leaves it to fjall.
    pub fn open(dir: &std::path::Path, synchronous: &str) -> Result<DocStore, StorageError> {
        let db = Database::builder(dir).open().map_err(fjall_err)?;
        let meta = db
            .keyspace(META, KeyspaceCreateOptions::default)
            .map_err(fjall_err)?;
        let persist = match synchronous {
            "off" => None,
            "normal" => Some(PersistMode::Buffer),
            _ => Some(PersistMode::SyncAll),
        };
        let mut indexes: IndexSlots = HashMap::new();
        for kv in meta.prefix(b"ix/") {
            let (k, v) = kv.into_inner().map_err(fjall_err)?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let mut parts = key.splitn(4, '/').skip(1);
            let (Some(shard), Some(slot), Some(table)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let (Ok(shard), Ok(slot)) = (shard.parse::<u64>(), slot.parse::<usize>()) else {
                continue;
            };
            let def: PathIndex = serde_json::from_slice(&v).map_err(fjall_err)?;
            let slots = indexes
                .entry((shard, table.to_string()))
                .or_insert_with(|| vec![None; INDEX_SLOTS]);
            if slot < INDEX_SLOTS {
                slots[slot] = Some(def);
            }
        }
        Ok(DocStore {
            db,
            meta,
            persist,
            indexes: RwLock::new(indexes),
            writers: dashmap::DashMap::new(),
        })
    }

    fn keyspace_name(shard: u64, table: &str, index: Option<usize>) -> String {
        let mut name = format!("s{shard}_");
        for b in table.bytes() {
            if b.is_ascii_alphanumeric() || b == b'_' {
                name.push(b as char);
            } else {
                name.push_str(&format!("${b:02x}"));
            }
        }
        if let Some(slot) = index {
            name.push_str(&format!("#ix{slot}"));
        }
        name
    }

    /// The keyspace of a table's rows, or of one of its path indexes.
    pub fn keyspace(
        &self,
        shard: u64,
        table: &str,
        index: Option<usize>,
    ) -> Result<Keyspace, StorageError> {
        self.db
            .keyspace(
                &Self::keyspace_name(shard, table, index),
                KeyspaceCreateOptions::default,
            )
            .map_err(fjall_err)
    }

    /// A consistent view of every keyspace, for reads that combine an index and the rows.
    pub fn snapshot(&self) -> fjall::Snapshot {
        self.db.snapshot()
    }

    fn writer_lock(&self, shard: u64, table: &str) -> Arc<Mutex<()>> {
        self.writers
            .entry((shard, table.to_string()))
            .or_default()
            .clone()
    }

    /// The path indexes of a table, by slot.
    pub fn indexes(&self, shard: u64, table: &str) -> Vec<Option<PathIndex>> {
        self.indexes
            .read()
            .ok()
            .and_then(|m| m.get(&(shard, table.to_string())).cloned())
            .unwrap_or_else(|| vec![None; INDEX_SLOTS])
    }

    /// Writes a batch of row changes (`None` deletes) with their index entries, durably.
    pub fn commit(
        &self,
        shard: u64,
        table: &str,
        changes: &[(Vec<u8>, Option<Vec<Value>>)],
    ) -> Result<(), StorageError> {
        if changes.is_empty() {
            return Ok(());
        }
        let lock = self.writer_lock(shard, table);
        let _writing = lock.lock().map_err(|_| StorageError::WorkerGone)?;
        let rows = self.keyspace(shard, table, None)?;
        let indexes = self.indexes(shard, table);
        let index_ks: Vec<Option<(Keyspace, PathIndex)>> = indexes
            .into_iter()
            .enumerate()
            .map(|(slot, def)| {
                def.map(|d| self.keyspace(shard, table, Some(slot)).map(|k| (k, d)))
                    .transpose()
            })
            .collect::<Result<_, _>>()?;
        let mut batch = self.db.batch().durability(self.persist);
        for (key, row) in changes {
            let old = match rows.get(key).map_err(fjall_err)? {
                Some(v) => Some(decode_row(&v)?),
                None => None,
            };
            for (ks, def) in index_ks.iter().flatten() {
                let before = old.as_ref().and_then(|r| index_value(r, def));
                let after = row.as_ref().and_then(|r| index_value(r, def));
                if before == after {
                    continue;
                }
                if let Some(v) = before {
                    batch.remove(ks, index_key(&v, key));
                }
                if let Some(v) = after {
                    batch.insert(ks, index_key(&v, key), b"".as_slice());
                }
            }
            match row {
                Some(r) => batch.insert(&rows, key.clone(), encode_row(r)),
                None => batch.remove(&rows, key.clone()),
            }
        }
        batch.commit().map_err(fjall_err)
    }

    /// Defines path index `slot` and builds it from the table's rows, under the table's writer
    /// lock: no batch commits between the scan and the definition's publication, and every
    /// batch after it maintains the index. Whatever the slot held before is deleted first.
    pub fn create_index(
        &self,
        shard: u64,
        table: &str,
        slot: usize,
        def: PathIndex,
    ) -> Result<(), StorageError> {
        if slot >= INDEX_SLOTS {
            return Err(StorageError::Documents(format!(
                "a document table has at most {INDEX_SLOTS} path indexes"
            )));
        }
        let lock = self.writer_lock(shard, table);
        let _writing = lock.lock().map_err(|_| StorageError::WorkerGone)?;
        self.drop_index(shard, table, slot)?;
        let rows = self.keyspace(shard, table, None)?;
        let ks = self.keyspace(shard, table, Some(slot))?;
        let mut batch = self.db.batch().durability(self.persist);
        for kv in rows.iter() {
            let (k, v) = kv.into_inner().map_err(fjall_err)?;
            if let Some(value) = index_value(&decode_row(&v)?, &def) {
                batch.insert(&ks, index_key(&value, &k), b"".as_slice());
            }
        }
        batch.insert(
            &self.meta,
            format!("ix/{shard}/{slot}/{table}"),
            serde_json::to_vec(&def).map_err(fjall_err)?,
        );
        batch.commit().map_err(fjall_err)?;
        let mut m = self.indexes.write().map_err(|_| StorageError::WorkerGone)?;
        m.entry((shard, table.to_string()))
            .or_insert_with(|| vec![None; INDEX_SLOTS])[slot] = Some(def);
        Ok(())
    }

    /// Forgets a path index and deletes its entries.
    pub fn drop_index(&self, shard: u64, table: &str, slot: usize) -> Result<(), StorageError> {
        self.meta
            .remove(format!("ix/{shard}/{slot}/{table}"))
            .map_err(fjall_err)?;
        if let Ok(mut m) = self.indexes.write() {
            if let Some(slots) = m.get_mut(&(shard, table.to_string())) {
                if let Some(s) = slots.get_mut(slot) {
                    *s = None;
                }
            }
        }
        let name = Self::keyspace_name(shard, table, Some(slot));
        if self.db.keyspace_exists(&name) {
            let ks = self.keyspace(shard, table, Some(slot))?;
            self.db.delete_keyspace(ks).map_err(fjall_err)?;
        }
        Ok(())
    }

    /// Deletes a table's rows and indexes (DROP TABLE, or its shard dropped).
    pub fn drop_table(&self, shard: u64, table: &str) -> Result<(), StorageError> {
        for slot in 0..INDEX_SLOTS {
            self.drop_index(shard, table, slot)?;
        }
        let name = Self::keyspace_name(shard, table, None);
        if self.db.keyspace_exists(&name) {
            let ks = self.keyspace(shard, table, None)?;
            self.db.delete_keyspace(ks).map_err(fjall_err)?;
        }
        Ok(())
    }

    /// Deletes every table of a shard.
    pub fn drop_shard(&self, shard: u64) -> Result<(), StorageError> {
        let prefix = format!("s{shard}_");
        let tables: Vec<String> = self
            .db
            .list_keyspace_names()
            .into_iter()
            .map(|n| n.to_string())
            .filter(|n| n.starts_with(&prefix) && !n.contains('#'))
            .collect();
        for name in tables {
            let table = decode_table_name(&name[prefix.len()..]);
            self.drop_table(shard, &table)?;
        }
        Ok(())
    }

    /// Bytes on disk of a shard's document keyspaces.
    pub fn shard_bytes(&self, shard: u64) -> u64 {
        let prefix = format!("s{shard}_");
        self.db
            .list_keyspace_names()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .filter_map(|n| self.db.keyspace(&n, KeyspaceCreateOptions::default).ok())
            .map(|k| k.disk_space())
            .sum()
    }
}

fn decode_table_name(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 2 < b.len() + 1 {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value a path index holds for a row: the text at its path (`->>` semantics), or
/// None (not indexed) when absent or JSON null.
pub fn index_value(row: &[Value], def: &PathIndex) -> Option<Value> {
    let Value::Text(doc) = row.get(def.column)? else {
        return None;
    };
    let json = tessera_shared::jsonb::parse(doc).ok()?;
    json.get_path(&def.path)?.as_text().map(Value::Text)
}

/// A row as stored.
pub fn encode_row(row: &[Value]) -> Vec<u8> {
    let mut out = vec![ROW_FORMAT];
    for v in row {
        match v {
            Value::Null => out.push(0),
            Value::Integer(i) => {
                out.push(1);
                out.extend(i.to_le_bytes());
            }
            Value::Real(f) => {
                out.push(2);
                out.extend(f.to_le_bytes());
            }
            Value::Text(s) => {
                out.push(3);
                out.extend((s.len() as u32).to_le_bytes());
                out.extend(s.as_bytes());
            }
            Value::Blob(b) => {
                out.push(4);
                out.extend((b.len() as u32).to_le_bytes());
                out.extend(b);
            }
        }
    }
    out
}

/// A stored row back; a newer format or a damaged value is an error, not a guess.
pub fn decode_row(b: &[u8]) -> Result<Vec<Value>, StorageError> {
    let bad = || StorageError::Documents("damaged document row".into());
    match b.first() {
        Some(&ROW_FORMAT) => {}
        Some(v) => {
            return Err(StorageError::Documents(format!(
                "document row format {v} is newer than this build ({ROW_FORMAT})"
            )))
        }
        None => return Err(bad()),
    }
    let mut out = Vec::new();
    let mut i = 1;
    let take = |i: &mut usize, n: usize| -> Result<&[u8], StorageError> {
        let s = b.get(*i..*i + n).ok_or_else(bad)?;
        *i += n;
        Ok(s)
    };
    while i < b.len() {
        let tag = b[i];
        i += 1;
        out.push(match tag {
            0 => Value::Null,
            1 => Value::Integer(i64::from_le_bytes(
                take(&mut i, 8)?.try_into().map_err(|_| bad())?,
            )),
            2 => Value::Real(f64::from_le_bytes(
                take(&mut i, 8)?.try_into().map_err(|_| bad())?,
            )),
            3 | 4 => {
                let n =
                    u32::from_le_bytes(take(&mut i, 4)?.try_into().map_err(|_| bad())?) as usize;
                let bytes = take(&mut i, n)?.to_vec();
                if tag == 3 {
                    Value::Text(String::from_utf8(bytes).map_err(|_| bad())?)
                } else {
                    Value::Blob(bytes)
                }
            }
            _ => return Err(bad()),
        });
    }
    Ok(out)
}

/// A value in order-preserving form (a primary key, or the value part of an index key).
pub fn encode_key(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match v {
        Value::Null => out.push(0),
        Value::Integer(i) => {
            out.push(1);
            out.extend(((*i as u64) ^ (1 << 63)).to_be_bytes());
        }
        Value::Real(f) => {
            out.push(2);
            let bits = f.to_bits();
            let ordered = if bits >> 63 == 1 {
                !bits
            } else {
                bits | (1 << 63)
            };
            out.extend(ordered.to_be_bytes());
        }
        Value::Text(s) => escaped(&mut out, 3, s.as_bytes()),
        Value::Blob(b) => escaped(&mut out, 4, b),
    }
    out
}

fn escaped(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend([0, 0]);
}

/// An index entry's key: the indexed value, then the row's primary key.
pub fn index_key(value: &Value, pk: &[u8]) -> Vec<u8> {
    let mut k = encode_key(value);
    k.extend(pk);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_keys_keep_order() {
        let row = vec![
            Value::Integer(-5),
            Value::Real(1.5),
            Value::Text("a\0b".into()),
            Value::Blob(vec![0, 1]),
            Value::Null,
        ];
        assert_eq!(decode_row(&encode_row(&row)).expect("decode"), row);
        assert!(decode_row(&[9, 0]).is_err(), "a newer format is refused");
        let ints: Vec<Vec<u8>> = [-3i64, -1, 0, 2, 1 << 40]
            .iter()
            .map(|i| encode_key(&Value::Integer(*i)))
            .collect();
        assert!(ints.windows(2).all(|w| w[0] < w[1]));
        let reals: Vec<Vec<u8>> = [-2.5f64, -0.1, 0.0, 3.25]
            .iter()
            .map(|f| encode_key(&Value::Real(*f)))
            .collect();
        assert!(reals.windows(2).all(|w| w[0] < w[1]));
        let texts: Vec<Vec<u8>> = ["", "a", "a\0", "ab", "b"]
            .iter()
            .map(|s| encode_key(&Value::Text(s.to_string())))
            .collect();
        assert!(texts.windows(2).all(|w| w[0] < w[1]), "{texts:?}");
        assert_eq!(decode_table_name("ev$2dents"), "ev-ents");
    }

    #[test]
    fn indexes_follow_rows_in_one_batch() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = DocStore::open(dir.path(), "full").expect("open");
        let doc = |id: i64, user: &str| {
            (
                encode_key(&Value::Integer(id)),
                Some(vec![
                    Value::Integer(id),
                    Value::Text(format!("{{\"user\": \"{user}\"}}")),
                ]),
            )
        };
        store
            .commit(7, "t", &[doc(1, "ada"), doc(2, "bob")])
            .expect("write");
        let def = PathIndex {
            version: 1,
            name: "t_user".into(),
            column: 1,
            path: vec!["user".into()],
        };
        store.create_index(7, "t", 0, def.clone()).expect("index");
        store
            .commit(
                7,
                "t",
                &[
                    doc(1, "cy"),
                    (encode_key(&Value::Integer(2)), None),
                    doc(3, "ada"),
                ],
            )
            .expect("write");
        let ks = store.keyspace(7, "t", Some(0)).expect("ks");
        let entries: Vec<Vec<u8>> = ks.iter().map(|g| g.key().expect("key").to_vec()).collect();
        let want = vec![
            index_key(&Value::Text("cy".into()), &encode_key(&Value::Integer(1))),
            index_key(&Value::Text("ada".into()), &encode_key(&Value::Integer(3))),
        ];
        let mut want = want;
        want.sort();
        assert_eq!(entries, want);
        drop(ks);
        drop(store);
        // fjall's background threads let go of the directory shortly after the drop.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let store = loop {
            match DocStore::open(dir.path(), "full") {
                Ok(s) => break s,
                Err(e) if std::time::Instant::now() < deadline => {
                    assert!(e.to_string().contains("Locked"), "{e}");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("reopen: {e}"),
            }
        };
        assert_eq!(
            store.indexes(7, "t")[0],
            Some(def),
            "index definitions survive a restart"
        );
        store.drop_shard(7).expect("drop");
        assert!(store
            .keyspace(7, "t", None)
            .expect("ks")
            .is_empty()
            .expect("empty"));
    }
}
