//! The catalog: databases and tables, kept in memory on every core and persisted in
//! shard 0, one key per entry, so concurrent changes to different entries never
//! overwrite each other.

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
}

#[derive(Default, Debug)]
pub struct Catalog {
    pub dbs: BTreeMap<String, DbInfo>,
    pub tables: BTreeMap<(String, String), Arc<TableInfo>>,
    pub next_key_id: u64,
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
        let Datum::Object(o) = d else {
            return Err(internal("catalog entry is not an object"));
        };
        Ok(DbInfo {
            id: s(&o, "id")?,
            name: s(&o, "name")?,
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
        codec::encode(&Datum::object(o)).expect("catalog entries are small")
    }
    pub fn decode(b: &[u8]) -> Result<TableInfo> {
        let d = codec::decode(b).map_err(|e| internal(format!("bad catalog entry: {}", e.0)))?;
        let Datum::Object(o) = d else {
            return Err(internal("catalog entry is not an object"));
        };
        let key_id = match o.get("key_id") {
            Some(Datum::Num(n)) if *n >= 0.0 => *n as u64,
            _ => return Err(internal("catalog entry lacks `key_id`")),
        };
        Ok(TableInfo {
            id: s(&o, "id")?,
            db: s(&o, "db")?,
            db_id: s(&o, "db_id")?,
            name: s(&o, "name")?,
            key_id,
            primary_key: s(&o, "primary_key")?,
            durability_hard: !matches!(o.get("durability_hard"), Some(Datum::Bool(false))),
            shards: match o.get("shards") {
                Some(Datum::Num(n)) if *n >= 1.0 && *n <= 64.0 => *n as u32,
                _ => 1,
            },
            write_hook: match o.get("write_hook") {
                Some(Datum::Str(h)) => Some(h.to_string()),
                _ => None,
            },
        })
    }
    /// The first bytes of every document key of this table.
    pub fn key_prefix(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(9);
        k.push(DATA_PREFIX);
        k.extend_from_slice(&self.key_id.to_be_bytes());
        k
    }
}

impl Catalog {
    /// Rebuilds the catalog from the entries stored in shard 0.
    pub fn load(rows: &[(Vec<u8>, Vec<u8>)]) -> Result<Catalog> {
        let mut c = Catalog {
            next_key_id: 1,
            ..Catalog::default()
        };
        for (k, v) in rows {
            match k.get(1) {
                Some(&DB_TAG) => {
                    let d = DbInfo::decode(v)?;
                    c.dbs.insert(d.name.clone(), d);
                }
                Some(&TABLE_TAG) => {
                    let t = TableInfo::decode(v)?;
                    c.next_key_id = c.next_key_id.max(t.key_id + 1);
                    c.tables.insert((t.db.clone(), t.name.clone()), Arc::new(t));
                }
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
        assert_eq!(*c.tables[&("test".to_string(), "t".to_string())], t);
        assert_eq!(c.next_key_id, 8);
        assert!(TableInfo::decode(b"garbage").is_err());
    }
}
