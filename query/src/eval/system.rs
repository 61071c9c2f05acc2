//! The `rethinkdb` system database of a one-server deployment: its tables are computed
//! from the catalog and the server's identity when read. `table_config` and `db_config`
//! accept the changes that mean something here (renames, durability); the others are
//! read-only.

use super::admin::{db_config, table_config, table_status};
use super::table::{TableRef, SYSTEM_DB};
use crate::datum::{Datum, Object};
use crate::error::{logic, ErrorKind, ReqlError, Result};
use crate::store::catalog::TableInfo;
use crate::store::Store;
use std::rc::Rc;
use std::sync::Arc;

/// System tables RethinkDB 2.4 exposes, in `table_list` order.
pub const TABLES: &[&str] = &[
    "cluster_config",
    "current_issues",
    "db_config",
    "jobs",
    "logs",
    "permissions",
    "server_config",
    "server_status",
    "stats",
    "table_config",
    "table_status",
    "users",
];

/// Namespace for the stable ids of system tables and the system database.
const SYSTEM_NS: uuid::Uuid = uuid::Uuid::from_u128(0x5a7c_61e2_0d3b_4f4e_9a51_2c8b_7e10_d4a3);

pub fn system_db_id() -> String {
    uuid::Uuid::new_v5(&SYSTEM_NS, SYSTEM_DB.as_bytes()).to_string()
}

/// The key id of `rethinkdb._debug_scratch`, far above any id the catalog hands out.
pub const DEBUG_SCRATCH_KEY_ID: u64 = 1 << 62;

/// A system table as a table value.
pub fn table(store: Rc<Store>, name: &str, uuids: bool) -> Result<Rc<TableRef>> {
    if name == "_debug_scratch" {
        // RethinkDB's scratch table for tests: an ordinary stored table (it takes any
        // document and has changefeeds) that is not in the catalog.
        let info = Arc::new(TableInfo {
            id: uuid::Uuid::new_v5(&SYSTEM_NS, name.as_bytes()).to_string(),
            db: SYSTEM_DB.into(),
            db_id: system_db_id(),
            name: name.into(),
            key_id: DEBUG_SCRATCH_KEY_ID,
            primary_key: "id".into(),
            durability_hard: false,
            shards: 1,
            write_hook: None,
            indexes: Vec::new(),
            feed_retention_mb: 0,
        });
        return Ok(Rc::new(TableRef {
            info,
            store,
            system: None,
            uuids: false,
        }));
    }
    let Some(&name) = TABLES.iter().find(|n| **n == name) else {
        return Err(ReqlError::new(
            ErrorKind::OpFailed,
            format!("Table `{SYSTEM_DB}.{name}` does not exist."),
        ));
    };
    let info = Arc::new(TableInfo {
        id: uuid::Uuid::new_v5(&SYSTEM_NS, name.as_bytes()).to_string(),
        db: SYSTEM_DB.into(),
        db_id: system_db_id(),
        name: name.into(),
        key_id: 0,
        primary_key: "id".into(),
        durability_hard: true,
        shards: 1,
        write_hook: None,
        indexes: Vec::new(),
        feed_retention_mb: 0,
    });
    Ok(Rc::new(TableRef {
        info,
        store,
        system: Some(name),
        uuids,
    }))
}

fn obj(pairs: Vec<(&str, Datum)>) -> Datum {
    let mut o = Object::new();
    for (k, v) in pairs {
        o.insert(k.into(), v);
    }
    Datum::object(o)
}

/// The current rows of a system table, in primary-key order.
pub fn rows(t: &TableRef) -> Result<Vec<Datum>> {
    let st = &t.store;
    let name = t.system.expect("system tables only");
    let c = st.catalog();
    let server = Datum::str(st.server_name.as_str());
    let server_id = Datum::str(st.server_id.as_str());
    let mut out = match name {
        "db_config" => c.dbs.values().map(db_config).collect(),
        "table_config" | "table_status" => c
            .tables()
            .map(|(_, i)| {
                let mut row = if name == "table_config" {
                    table_config(st, i)
                } else {
                    table_status(st, i)
                };
                if t.uuids {
                    if let Datum::Object(o) = &mut row {
                        std::sync::Arc::make_mut(o)
                            .insert("db".into(), Datum::str(i.db_id.as_str()));
                    }
                }
                row
            })
            .collect(),
        "server_config" => vec![obj(vec![
            ("id", server_id.clone()),
            ("name", server.clone()),
            ("cache_size_mb", Datum::str("auto")),
            ("tags", Datum::array(vec![Datum::str("default")])),
        ])],
        "server_status" => vec![obj(vec![
            ("id", server_id.clone()),
            ("name", server.clone()),
            (
                "network",
                obj(vec![
                    ("hostname", server.clone()),
                    ("reql_port", Datum::Num(f64::from(st.driver_port))),
                    ("connected_to", obj(vec![])),
                ]),
            ),
            (
                "process",
                obj(vec![
                    ("argv", Datum::array(vec![])),
                    ("cache_size_mb", Datum::str("auto")),
                    ("pid", Datum::Num(f64::from(std::process::id()))),
                    ("time_started", super::time::make(st.started_epoch_secs, 0)?),
                    (
                        "version",
                        Datum::str(format!(
                            "rethinkdb 2.4.4 (rdb {})",
                            env!("CARGO_PKG_VERSION")
                        )),
                    ),
                ]),
            ),
        ])],
        "cluster_config" => vec![obj(vec![
            ("id", Datum::str("heartbeat")),
            ("heartbeat_timeout_secs", Datum::Num(10.0)),
        ])],
        "users" => vec![obj(vec![
            ("id", Datum::str("admin")),
            ("password", Datum::Bool(true)),
        ])],
        // Nothing to report on one server with no issues, jobs kept or log tail.
        _ => Vec::new(),
    };
    out.sort_by(|a, b| a.get_field("id").cmp(&b.get_field("id")));
    Ok(out)
}

/// Applies changed rows of a system table (the `new` documents, by their `old`).
pub fn write_row(t: &TableRef, old: &Datum, new: &Datum) -> Result<()> {
    let name = t.system.expect("system tables only");
    let st = &t.store;
    let field = |d: &Datum, k: &str| d.get_field(k).cloned();
    match name {
        "table_config" => {
            if *new == Datum::Null || *old == Datum::Null {
                return Err(logic(
                    "It's illegal to insert or delete rows of the `rethinkdb.table_config` table; use `table_create` and `table_drop`.",
                ));
            }
            for k in ["id", "db", "primary_key"] {
                if field(old, k) != field(new, k) {
                    return Err(logic(format!(
                        "It's illegal to change the `{k}` field of a table."
                    )));
                }
            }
            let db = super::string(&field(old, "db").unwrap_or(Datum::Null))?.to_string();
            let old_name = super::string(&field(old, "name").unwrap_or(Datum::Null))?.to_string();
            let new_name = match field(new, "name") {
                Some(d) => super::string(&d)?.to_string(),
                None => return Err(logic("Expected a field named `name`.")),
            };
            super::types::check_name(&new_name, "Table")?;
            let hard = match field(new, "durability") {
                Some(d) => match super::string(&d)? {
                    "hard" => true,
                    "soft" => false,
                    other => {
                        return Err(logic(format!(
                            "Durability option `{other}` unrecognized (options are \"hard\" and \"soft\")."
                        )))
                    }
                },
                None => true,
            };
            st.table_alter(&db, &old_name, |t| {
                t.name = new_name;
                t.durability_hard = hard;
                Ok(())
            })?;
            Ok(())
        }
        other => Err(logic(format!(
            "It's illegal to write to the `{SYSTEM_DB}.{other}` table."
        ))),
    }
}
