//! The catalog: databases and tables, kept in memory on every core and persisted in
//! shard 0, one key per entry, so concurrent changes to different entries never
//! overwrite each other.

use super::index::IndexInfo;
use crate::codec;
use crate::datum::{Datum, Object};
use crate::error::{internal, Result};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Catalog keys start with this byte; documents start with `DATA_PREFIX`.
pub const CATALOG_PREFIX: u8 = 0x00;
pub const DATA_PREFIX: u8 = 0x01;
const DB_TAG: u8 = b'd';
const TABLE_TAG: u8 = b't';

#[derive(Clone, Debug, PartialEq)]
pub struct DbInfo {
    pub id: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TableInfo {
    pub id: String,
    pub db: String,
    pub db_id: String,
    pub name: String,
    /// Prefix of this table's document keys; never reused, so a dropped table's
    /// leftovers can never show up in a new one.
    pub key_id: u64,
    pub primary_key: String,
    pub durability_hard: bool,
    /// Shards the table's configuration asks for (`table_create`/`reconfigure`); on one
    /// server they all live on it, spread over its cores by key hash.
    pub shards: u32,
    /// The write hook: a three-argument function as wire JSON text.
    pub write_hook: Option<String>,
    /// Secondary indexes, by name.
    pub indexes: Vec<IndexInfo>,
    /// Log kept for resumable changefeeds beyond what storage needs, in MiB (the
    /// shard keeps the largest of its tables' settings).
    pub feed_retention_mb: u32,
}

#[derive(Default, Debug)]
pub struct Catalog {
    pub dbs: BTreeMap<String, DbInfo>,
    /// Change only through `put_table`/`remove_table`, which keep `by_key_id` in step.
    tables: BTreeMap<(String, String), Arc<TableInfo>>,
    /// The same tables by the key id their documents start with (writes find their
    /// table's indexes from a document key).
    by_key_id: rustc_hash::FxHashMap<u64, Arc<TableInfo>>,
    /// Next unused key id for a table or an index.
    pub next_key_id: u64,
    /// Index builds in progress, by index id (not persisted: builds restart).
    pub builds: rustc_hash::FxHashMap<u64, Arc<super::shard::BuildProgress>>,
}

pub fn db_key(name: &str) -> Vec<u8> {
    let mut k = vec![CATALOG_PREFIX, DB_TAG];
    k.extend_from_slice(name.as_bytes());
    k
}

pub fn table_key(db: &str, name: &str) -> Vec<u8> {
    let mut k = vec![CATALOG_PREFIX, TABLE_TAG];
    k.extend_from_slice(db.as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}

fn s(o: &Object, k: &str) -> Result<String> {
    match o.get(k) {
        Some(Datum::Str(v)) => Ok(v.to_string()),
        _ => Err(internal(format!("catalog entry lacks `{k}`"))),
    }
}

impl DbInfo {
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Object::new();
        o.insert("id".into(), Datum::str(self.id.as_str()));
        o.insert("name".into(), Datum::str(self.name.as_str()));
        codec::encode(&Datum::object(o)).expect("catalog entries are small")
    }
    pub fn decode(b: &[u8]) -> Result<DbInfo> {
        let d = codec::decode(b).map_err(|e| internal(format!("bad catalog entry: {}", e.0)))?;
        let Datum::Object(ref o) = d else {
            return Err(internal("catalog entry is not an object"));
        };
        Ok(DbInfo {
            id: s(o, "id")?,
            name: s(o, "name")?,
        })
    }
}

impl TableInfo {
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Object::new();
        o.insert("id".into(), Datum::str(self.id.as_str()));
        o.insert("db".into(), Datum::str(self.db.as_str()));
        o.insert("db_id".into(), Datum::str(self.db_id.as_str()));
        o.insert("name".into(), Datum::str(self.name.as_str()));
        o.insert("key_id".into(), Datum::Num(self.key_id as f64));
        o.insert("primary_key".into(), Datum::str(self.primary_key.as_str()));
        o.insert("durability_hard".into(), Datum::Bool(self.durability_hard));
        o.insert("shards".into(), Datum::Num(f64::from(self.shards)));
        if let Some(h) = &self.write_hook {
            o.insert("write_hook".into(), Datum::str(h.as_str()));
        }
        if self.feed_retention_mb > 0 {
            o.insert(
                "feed_retention_mb".into(),
                Datum::Num(f64::from(self.feed_retention_mb)),
            );
        }
        if !self.indexes.is_empty() {
            let list = self
                .indexes
                .iter()
                .map(|ix| {
                    let mut x = Object::new();
                    x.insert("name".into(), Datum::str(ix.name.as_str()));
                    x.insert("id".into(), Datum::Num(ix.id as f64));
                    x.insert("function".into(), Datum::str(ix.function.as_str()));
                    x.insert("multi".into(), Datum::Bool(ix.multi));
                    x.insert("geo".into(), Datum::Bool(ix.geo));
                    x.insert("ready".into(), Datum::Bool(ix.ready));
                    Datum::object(x)
                })
                .collect();
            o.insert("indexes".into(), Datum::array(list));
        }
        codec::encode(&Datum::object(o)).expect("catalog entries are small")
    }
    pub fn decode(b: &[u8]) -> Result<TableInfo> {
        let d = codec::decode(b).map_err(|e| internal(format!("bad catalog entry: {}", e.0)))?;
        let Datum::Object(ref o) = d else {
            return Err(internal("catalog entry is not an object"));
        };
        let key_id = match o.get("key_id") {
            Some(Datum::Num(n)) if *n >= 0.0 => *n as u64,
            _ => return Err(internal("catalog entry lacks `key_id`")),
        };
        Ok(TableInfo {
            id: s(o, "id")?,
            db: s(o, "db")?,
            db_id: s(o, "db_id")?,
            name: s(o, "name")?,
            key_id,
            primary_key: s(o, "primary_key")?,
            durability_hard: !matches!(o.get("durability_hard"), Some(Datum::Bool(false))),
            shards: match o.get("shards") {
                Some(Datum::Num(n)) if *n >= 1.0 && *n <= 64.0 => *n as u32,
                _ => 1,
            },
            write_hook: match o.get("write_hook") {
                Some(Datum::Str(h)) => Some(h.to_string()),
                _ => None,
            },
            feed_retention_mb: match o.get("feed_retention_mb") {
                Some(Datum::Num(n)) if *n >= 0.0 && *n <= f64::from(u32::MAX) => *n as u32,
                _ => 0,
            },
            indexes: match o.get("indexes") {
                None => Vec::new(),
                Some(Datum::Array(a)) => a.iter().map(decode_index).collect::<Result<_>>()?,
                Some(_) => return Err(internal("catalog entry has bad `indexes`")),
            },
        })
    }
    pub fn index(&self, name: &str) -> Option<&IndexInfo> {
        self.indexes.iter().find(|ix| ix.name == name)
    }
    /// The largest key id this table uses (its own or an index's).
    fn max_key_id(&self) -> u64 {
        self.indexes
            .iter()
            .map(|ix| ix.id)
            .fold(self.key_id, u64::max)
    }
    /// Every document key of this table: `[lo, hi)`.
    pub fn key_range(&self) -> (Vec<u8>, Vec<u8>) {
        let next = self
            .key_id
            .checked_add(1)
            .expect("key ids never reach u64::MAX");
        let mut hi = Vec::with_capacity(9);
        hi.push(DATA_PREFIX);
        hi.extend_from_slice(&next.to_be_bytes());
        (self.key_prefix(), hi)
    }
    /// The first bytes of every document key of this table.
    pub fn key_prefix(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(9);
        k.push(DATA_PREFIX);
        k.extend_from_slice(&self.key_id.to_be_bytes());
        k
    }
}

fn decode_index(d: &Datum) -> Result<IndexInfo> {
    let Datum::Object(o) = d else {
        return Err(internal("catalog index entry is not an object"));
    };
    let flag = |k: &str| matches!(o.get(k), Some(Datum::Bool(true)));
    Ok(IndexInfo {
        name: s(o, "name")?,
        id: match o.get("id") {
            Some(Datum::Num(n)) if *n >= 1.0 => *n as u64,
            _ => return Err(internal("catalog index entry lacks `id`")),
        },
        function: s(o, "function")?,
        multi: flag("multi"),
        geo: flag("geo"),
        ready: flag("ready"),
    })
}

impl Catalog {
    pub fn empty() -> Catalog {
        Catalog {
            next_key_id: 1,
            ..Catalog::default()
        }
    }
    pub fn tables(&self) -> impl Iterator<Item = (&(String, String), &Arc<TableInfo>)> {
        self.tables.iter()
    }
    pub fn get_table(&self, db: &str, name: &str) -> Option<&Arc<TableInfo>> {
        self.tables.get(&(db.to_string(), name.to_string()))
    }
    pub fn by_key_id(&self, key_id: u64) -> Option<&Arc<TableInfo>> {
        self.by_key_id.get(&key_id)
    }
    /// Adds or replaces a table (by database and name).
    pub fn put_table(&mut self, t: Arc<TableInfo>) {
        self.next_key_id = self.next_key_id.max(t.max_key_id() + 1);
        self.by_key_id.insert(t.key_id, t.clone());
        self.tables.insert((t.db.clone(), t.name.clone()), t);
    }
    pub fn remove_table(&mut self, db: &str, name: &str) -> Option<Arc<TableInfo>> {
        let t = self.tables.remove(&(db.to_string(), name.to_string()))?;
        self.by_key_id.remove(&t.key_id);
        Some(t)
    }

    /// Rebuilds the catalog from the entries stored in shard 0.
    pub fn load(rows: &[(Vec<u8>, Vec<u8>)]) -> Result<Catalog> {
        let mut c = Catalog::empty();
        for (k, v) in rows {
            match k.get(1) {
                Some(&DB_TAG) => {
                    let d = DbInfo::decode(v)?;
                    c.dbs.insert(d.name.clone(), d);
                }
                Some(&TABLE_TAG) => c.put_table(Arc::new(TableInfo::decode(v)?)),
                _ => return Err(internal("unknown catalog entry")),
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let t = TableInfo {
            id: "a".into(),
            db: "test".into(),
            db_id: "b".into(),
            name: "t".into(),
            key_id: 7,
            primary_key: "id".into(),
            durability_hard: false,
            shards: 3,
            write_hook: Some("[69,[[2,[1,2,3]],[10,[3]]]]".into()),
            indexes: vec![IndexInfo {
                name: "by_x".into(),
                id: 9,
                function: "[69,[[2,[1]],[31,[[10,[1]],\"x\"]]]]".into(),
                multi: true,
                geo: false,
                ready: false,
            }],
            feed_retention_mb: 128,
        };
        let d = DbInfo {
            id: "b".into(),
            name: "test".into(),
        };
        let rows = vec![
            (db_key("test"), d.encode()),
            (table_key("test", "t"), t.encode()),
        ];
        let c = Catalog::load(&rows).unwrap();
        assert_eq!(c.dbs["test"], d);
        assert_eq!(**c.get_table("test", "t").unwrap(), t);
        assert_eq!(**c.by_key_id(7).unwrap(), t);
        assert_eq!(c.next_key_id, 10, "index ids are never reused either");
        assert!(TableInfo::decode(b"garbage").is_err());
    }
}
