//! Catalog terms: creating, dropping and listing databases and tables, and the
//! per-table `config`, `status`, `wait`, `sync`, `info` documents of a one-server
//! deployment.

use super::table::{default_db, name_arg, op_failed, parse_durability, store, TableRef, SYSTEM_DB};
use super::{string, Ctx, Optargs, Val};
use crate::datum::{Datum, Object};
use crate::error::{logic, ErrorKind, ReqlError, Result};
use crate::store::catalog::{DbInfo, TableInfo};
use crate::store::Store;
use crate::term_type as tt;
use std::rc::Rc;

fn obj(pairs: Vec<(&str, Datum)>) -> Datum {
    let mut o = Object::new();
    for (k, v) in pairs {
        o.insert(k.into(), v);
    }
    Datum::object(o)
}

fn change(old: Datum, new: Datum) -> Datum {
    Datum::array(vec![obj(vec![("old_val", old), ("new_val", new)])])
}

fn special(msg: &str) -> ReqlError {
    ReqlError::new(
        ErrorKind::OpFailed,
        format!("Database `{SYSTEM_DB}` is special; {msg}"),
    )
}

pub fn db_config(db: &DbInfo) -> Datum {
    obj(vec![
        ("id", Datum::str(db.id.as_str())),
        ("name", Datum::str(db.name.as_str())),
    ])
}

pub fn table_config(st: &Store, t: &TableInfo) -> Datum {
    let server = Datum::str(st.server_name.as_str());
    let mut row = obj(vec![
        ("db", Datum::str(t.db.as_str())),
        (
            "durability",
            Datum::str(if t.durability_hard { "hard" } else { "soft" }),
        ),
        ("id", Datum::str(t.id.as_str())),
        ("indexes", index_names(t)),
        ("name", Datum::str(t.name.as_str())),
        ("primary_key", Datum::str(t.primary_key.as_str())),
        (
            "shards",
            Datum::array(
                (0..t.shards)
                    .map(|_| {
                        obj(vec![
                            ("primary_replica", server.clone()),
                            ("replicas", Datum::array(vec![server.clone()])),
                        ])
                    })
                    .collect(),
            ),
        ),
        ("write_acks", Datum::str("majority")),
    ]);
    // rdb's own option, shown only where set so RethinkDB's rows stay as they were.
    if t.feed_retention_mb > 0 {
        if let Datum::Object(o) = &mut row {
            std::sync::Arc::make_mut(o).insert(
                "changefeed_retention_mb".into(),
                Datum::Num(f64::from(t.feed_retention_mb)),
            );
        }
    }
    row
}

pub fn table_status(st: &Store, t: &TableInfo) -> Datum {
    let server = Datum::str(st.server_name.as_str());
    obj(vec![
        ("db", Datum::str(t.db.as_str())),
        ("id", Datum::str(t.id.as_str())),
        ("name", Datum::str(t.name.as_str())),
        ("raft_leader", server.clone()),
        (
            "shards",
            Datum::array(
                (0..t.shards)
                    .map(|_| {
                        obj(vec![
                            ("primary_replicas", Datum::array(vec![server.clone()])),
                            (
                                "replicas",
                                Datum::array(vec![obj(vec![
                                    ("server", server.clone()),
                                    ("state", Datum::str("ready")),
                                ])]),
                            ),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "status",
            obj(vec![
                ("all_replicas_ready", Datum::Bool(true)),
                ("ready_for_outdated_reads", Datum::Bool(true)),
                ("ready_for_reads", Datum::Bool(true)),
                ("ready_for_writes", Datum::Bool(true)),
            ]),
        ),
    ])
}

pub fn table_info(t: &TableRef) -> Datum {
    let db_id = t.info.db_id.clone();
    obj(vec![
        ("type", Datum::str("TABLE")),
        ("name", Datum::str(t.info.name.as_str())),
        ("primary_key", Datum::str(t.info.primary_key.as_str())),
        (
            "db",
            obj(vec![
                ("type", Datum::str("DB")),
                ("name", Datum::str(t.info.db.as_str())),
                ("id", Datum::str(db_id)),
            ]),
        ),
        ("id", Datum::str(t.info.id.as_str())),
        ("doc_count_estimates", Datum::array(vec![])),
        ("indexes", index_names(&t.info)),
    ])
}

/// The names of a table's secondary indexes, in order.
pub fn index_names(t: &TableInfo) -> Datum {
    Datum::array(
        t.indexes
            .iter()
            .map(|ix| Datum::str(ix.name.as_str()))
            .collect(),
    )
}

/// db_create, db_drop, db_list, table_create, table_drop, table_list.
pub fn apply(ctx: &Rc<Ctx>, ty: u32, args: &mut Vec<Val>, opt: &Optargs) -> Result<Val> {
    let st = store(ctx)?;
    let db = match args.first() {
        Some(Val::Db(n)) if matches!(ty, tt::TABLE_CREATE | tt::TABLE_DROP | tt::TABLE_LIST) => {
            let n = n.to_string();
            args.remove(0);
            n
        }
        _ => default_db(ctx),
    };
    let v = match ty {
        tt::DB_LIST => {
            let mut names: Vec<Datum> = st
                .catalog()
                .dbs
                .keys()
                .map(|n| Datum::str(n.as_str()))
                .collect();
            names.push(Datum::str(SYSTEM_DB));
            names.sort();
            Datum::array(names)
        }
        tt::DB_CREATE => {
            let name = &name_arg(ctx, args, 0, "Database")?;
            if name == SYSTEM_DB {
                return Err(ReqlError::new(
                    ErrorKind::OpFailed,
                    format!("Database `{SYSTEM_DB}` already exists."),
                ));
            }
            let d = st.db_create(name)?;
            obj(vec![
                ("dbs_created", Datum::Num(1.0)),
                ("config_changes", change(Datum::Null, db_config(&d))),
            ])
        }
        tt::DB_DROP => {
            let name = &name_arg(ctx, args, 0, "Database")?;
            if name == SYSTEM_DB {
                return Err(special("you can't delete it."));
            }
            let (d, tables) = st.db_drop(name)?;
            obj(vec![
                ("dbs_dropped", Datum::Num(1.0)),
                ("tables_dropped", Datum::Num(tables.len() as f64)),
                ("config_changes", change(db_config(&d), Datum::Null)),
            ])
        }
        tt::TABLE_LIST => {
            if db == SYSTEM_DB {
                let names = super::system::TABLES
                    .iter()
                    .map(|n| Datum::str(*n))
                    .collect();
                return Ok(Val::Datum(Datum::array(names)));
            }
            st.db(&db)?;
            let names = st
                .catalog()
                .tables()
                .map(|(k, _)| k)
                .filter(|(d, _)| *d == db)
                .map(|(_, n)| Datum::str(n.as_str()))
                .collect();
            Datum::array(names)
        }
        tt::TABLE_CREATE => {
            let name = &name_arg(ctx, args, 0, "Table")?;
            let pk = match opt.datum("primary_key")? {
                None => "id".to_string(),
                Some(d) => string(&d)?.to_string(),
            };
            let hard = match opt.datum("durability")? {
                None => true,
                Some(d) => parse_durability(&d)?,
            };
            let shards = parse_shards(opt)?.unwrap_or(1);
            if opt.has("replicas") || opt.has("primary_replica_tag") {
                check_replicas(opt)?;
            }
            if db == SYSTEM_DB {
                return Err(special("you can't create new tables in it."));
            }
            let retention = match opt.datum("changefeed_retention_mb")? {
                None => 0,
                Some(d) => {
                    let n = super::num(&d)?;
                    if !(0.0..=1_048_576.0).contains(&n) || n.fract() != 0.0 {
                        return Err(logic(format!(
                            "`changefeed_retention_mb` must be a whole number of MiB from 0 to 1048576 (got {}).",
                            crate::json::to_json(&d)
                        )));
                    }
                    n as u32
                }
            };
            let t = st.table_create(&db, name, &pk, hard, shards, retention)?;
            obj(vec![
                ("tables_created", Datum::Num(1.0)),
                ("config_changes", change(Datum::Null, table_config(&st, &t))),
            ])
        }
        tt::TABLE_DROP => {
            let name = &name_arg(ctx, args, 0, "Table")?;
            if db == SYSTEM_DB {
                return Err(special("you can't drop tables in it."));
            }
            let t = st.table_drop(&db, name)?;
            obj(vec![
                ("tables_dropped", Datum::Num(1.0)),
                ("config_changes", change(table_config(&st, &t), Datum::Null)),
            ])
        }
        _ => unreachable!("dispatched by table::apply"),
    };
    Ok(Val::Datum(v))
}

/// config, status, wait, sync and index_list on tables and databases.
pub fn apply_table(ctx: &Rc<Ctx>, ty: u32, args: &mut [Val], opt: &Optargs) -> Result<Option<Val>> {
    let st = store(ctx)?;
    let v = match (ty, args.first()) {
        (tt::CONFIG, Some(Val::Table(t))) if t.system.is_none() => {
            // A single selection of the table's `table_config` row: updates write back.
            let sys = super::system::table(st.clone(), "table_config", false)?;
            let row = table_config(&st, &t.info);
            let id = Datum::str(t.info.id.as_str());
            return Ok(Some(Val::Single(sys, row, id)));
        }
        (tt::STATUS, Some(Val::Table(t))) => table_status(&st, &t.info),
        (tt::CONFIG, Some(Val::Db(name))) => {
            if &**name == SYSTEM_DB {
                return Err(special("you can't configure it."));
            }
            let sys = super::system::table(st.clone(), "db_config", false)?;
            let d = st.db(name)?;
            return Ok(Some(Val::Single(
                sys,
                db_config(&d),
                Datum::str(d.id.as_str()),
            )));
        }
        (tt::WAIT, first) => {
            for k in ["wait_for", "timeout"] {
                if let Some(d) = opt.datum(k)? {
                    if k == "wait_for" {
                        let w = string(&d)?;
                        if !matches!(
                            w,
                            "ready_for_outdated_reads"
                                | "ready_for_reads"
                                | "ready_for_writes"
                                | "all_replicas_ready"
                        ) {
                            return Err(logic(format!(
                                "Unknown table readiness state: '{w}', must be one of 'ready_for_outdated_reads', 'ready_for_reads', 'ready_for_writes', or 'all_replicas_ready'"
                            )));
                        }
                    } else {
                        super::num(&d)?;
                    }
                }
            }
            let n = match first {
                Some(Val::Table(_)) => 1,
                Some(Val::Db(name)) => {
                    st.db(name)?;
                    st.catalog()
                        .tables()
                        .map(|(k, _)| k)
                        .filter(|(d, _)| **d == **name)
                        .count()
                }
                None => st.catalog().tables().count(),
                Some(_) => return Ok(None),
            };
            obj(vec![("ready", Datum::Num(n as f64))])
        }
        (tt::SYNC, Some(Val::Table(_))) => {
            st.sync_all()?;
            obj(vec![("synced", Datum::Num(1.0))])
        }
        (tt::INDEX_LIST, Some(Val::Table(t))) => index_names(&t.info),
        (tt::RECONFIGURE, Some(Val::Table(_) | Val::Db(_))) => reconfigure(&st, &args[0], opt)?,
        (tt::REBALANCE, Some(Val::Table(_) | Val::Db(_))) => {
            let tables = target_tables(&st, &args[0])?;
            let changes = tables
                .iter()
                .map(|t| {
                    let s = table_status(&st, t);
                    obj(vec![("old_val", s.clone()), ("new_val", s)])
                })
                .collect();
            // One server holds every shard: balanced by construction.
            obj(vec![
                ("rebalanced", Datum::Num(tables.len() as f64)),
                ("status_changes", Datum::array(changes)),
            ])
        }
        _ => return Ok(None),
    };
    Ok(Some(Val::Datum(v)))
}

/// The tables a `reconfigure`/`rebalance` applies to: one table, or a database's.
fn target_tables(st: &Store, v: &Val) -> Result<Vec<std::sync::Arc<TableInfo>>> {
    match v {
        Val::Table(t) if t.system.is_some() => {
            Err(special("you can't configure the system tables."))
        }
        Val::Table(t) => Ok(vec![t.info.clone()]),
        Val::Db(name) => {
            if &**name == SYSTEM_DB {
                return Err(special("you can't configure the system tables."));
            }
            st.db(name)?;
            Ok(st
                .catalog()
                .tables()
                .filter(|((d, _), _)| **d == **name)
                .map(|(_, t)| t.clone())
                .collect())
        }
        _ => unreachable!("dispatched on tables and databases"),
    }
}

fn parse_shards(opt: &Optargs) -> Result<Option<u32>> {
    let Some(d) = opt.datum("shards")? else {
        return Ok(None);
    };
    let n = super::int(&d)?;
    if n < 1 {
        return Err(logic("Every table must have at least one shard."));
    }
    if n > 64 {
        return Err(logic("Maximum number of shards is 64."));
    }
    Ok(Some(n as u32))
}

/// Checks `replicas`/`primary_replica_tag`/`nonvoting_replica_tags` against a
/// one-server cluster whose only server carries the tag `default`.
fn check_replicas(opt: &Optargs) -> Result<()> {
    let primary = opt.datum("primary_replica_tag")?;
    let nonvoting: Vec<String> = match opt.datum("nonvoting_replica_tags")? {
        None => Vec::new(),
        Some(Datum::Array(ref a)) => a
            .iter()
            .map(|t| string(t).map(str::to_string))
            .collect::<Result<_>>()?,
        Some(other) => return Err(super::type_err("ARRAY", &other)),
    };
    let counts: Vec<(String, i64)> = match opt.datum("replicas")? {
        None => vec![("default".into(), 1)],
        Some(Datum::Object(ref o)) => {
            if primary.is_none() {
                return Err(logic(
                    "`primary_replica_tag` must be specified when `replicas` is an OBJECT.",
                ));
            }
            let mut v = Vec::new();
            for (k, n) in o.iter() {
                let n = super::int(n)?;
                if n < 0 {
                    return Err(logic("Can't have a negative number of replicas"));
                }
                v.push((k.clone(), n));
            }
            v
        }
        Some(d) => {
            let n = super::int(&d)?;
            if primary.is_some() {
                return Err(logic(
                    "`replicas` must be an OBJECT if `primary_replica_tag` is specified.",
                ));
            }
            if !nonvoting.is_empty() {
                return Err(logic(
                    "`replicas` must be an OBJECT if `nonvoting_replica_tags` is specified.",
                ));
            }
            if n < 0 {
                return Err(logic("Can't have a negative number of replicas"));
            }
            vec![("default".into(), n)]
        }
    };
    if counts.iter().map(|(_, n)| n).sum::<i64>() == 0 {
        return Err(op_failed(
            "You must set `replicas` to at least one. `replicas` includes the primary replica; if there are zero replicas, there is nowhere to put the data.",
        ));
    }
    if let Some(p) = &primary {
        let p = string(p)?;
        if !counts.iter().any(|(t, n)| t == p && *n > 0) {
            return Err(op_failed(format!(
                "Can't use server tag `{p}` for primary replicas because you specified no replicas in server tag `{p}`."
            )));
        }
    }
    for t in &nonvoting {
        if !counts.iter().any(|(c, _)| c == t) {
            return Err(op_failed(format!(
                "You specified that the replicas in server tag `{t}` should be non-voting, but you didn't specify a number of replicas in server tag `{t}`."
            )));
        }
    }
    for (tag, n) in &counts {
        let servers = i64::from(tag == "default");
        if *n > servers {
            return Err(op_failed(format!(
                "Can't put {n} replicas on servers with the tag `{tag}` because there are only {servers} servers with the tag `{tag}`. It's impossible to have more replicas of the data than there are servers."
            )));
        }
    }
    Ok(())
}

fn reconfigure(st: &Rc<Store>, target: &Val, opt: &Optargs) -> Result<Datum> {
    if let Some(e) = opt.datum("emergency_repair")? {
        if e != Datum::Null {
            if matches!(target, Val::Db(_)) {
                return Err(logic("Can't emergency repair an entire database at once; instead you should run `reconfigure()` on each table individually."));
            }
            let mode = string(&e)?;
            if !matches!(mode, "unsafe_rollback" | "unsafe_rollback_or_erase") {
                return Err(logic(
                    "`emergency_repair` should be \"unsafe_rollback\" or \"unsafe_rollback_or_erase\"",
                ));
            }
            if [
                "shards",
                "replicas",
                "primary_replica_tag",
                "nonvoting_replica_tags",
            ]
            .iter()
            .any(|k| opt.has(k))
            {
                return Err(logic(
                    "In emergency repair mode, you can't specify shards, replicas, etc.",
                ));
            }
            return Err(op_failed("This table doesn't need to be repaired."));
        }
    }
    let shards = parse_shards(opt)?;
    if shards.is_none() {
        return Err(logic("Missing required argument `shards`."));
    }
    if !opt.has("replicas") {
        return Err(logic("Missing required argument `replicas`."));
    }
    check_replicas(opt)?;
    let dry_run = match opt.datum("dry_run")? {
        None => false,
        Some(d) => super::boolean(&d)?,
    };
    let tables = target_tables(st, target)?;
    let mut config_changes = Vec::new();
    let mut status_changes = Vec::new();
    for t in &tables {
        let old_config = table_config(st, t);
        let old_status = table_status(st, t);
        let mut new_info = (**t).clone();
        new_info.shards = shards.expect("checked above");
        let new_info = if dry_run {
            std::sync::Arc::new(new_info)
        } else {
            st.table_alter(&t.db, &t.name, |x| {
                x.shards = new_info.shards;
                Ok(())
            })?
        };
        config_changes.push(obj(vec![
            ("old_val", old_config),
            ("new_val", table_config(st, &new_info)),
        ]));
        status_changes.push(obj(vec![
            ("old_val", old_status),
            ("new_val", table_status(st, &new_info)),
        ]));
    }
    let mut pairs = vec![
        (
            "reconfigured",
            Datum::Num(if dry_run { 0.0 } else { tables.len() as f64 }),
        ),
        ("config_changes", Datum::array(config_changes)),
    ];
    if !dry_run {
        pairs.push(("status_changes", Datum::array(status_changes)));
    }
    Ok(obj(pairs))
}
