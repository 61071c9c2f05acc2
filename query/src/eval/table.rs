//! Databases, tables and selections: the terms that read and change stored documents
//! and the catalog. Selections (a table, a filtered or sliced table, one document)
//! remember their table so `update`, `replace` and `delete` can write back.

use super::seq::{Selection, Stream};
use super::write::{replace_rows, update_row, Known, ReturnChanges, RowJob, WriteStats};
use super::{arg_datum, boolean, string, Callable, Ctx, Optargs, Val};
use crate::datum::{Datum, Object};
use crate::error::{logic, ErrorKind, Frame, ReqlError, Result};
use crate::store::catalog::TableInfo;
use crate::store::index::IndexInfo;
use crate::store::scan::MergedScan;
use crate::store::scan::Source;
use crate::store::{decode_doc, Store};
use crate::term_type as tt;
use std::ops::Bound;
use std::rc::Rc;
use std::sync::Arc;

/// Documents written per storage round trip by bulk writes.
const WRITE_BATCH_ROWS: usize = 1000;
/// The system database, which cannot be created, dropped or written.
pub const SYSTEM_DB: &str = "rethinkdb";

/// A table as a value: its catalog entry and the store it lives in.
pub struct TableRef {
    pub info: Arc<TableInfo>,
    pub store: Rc<Store>,
    /// Set for the tables of the `rethinkdb` database, which are computed, not stored.
    pub system: Option<&'static str>,
    /// System tables only: name databases (and tables) by id (`identifier_format`).
    pub uuids: bool,
}

impl TableRef {
    pub fn display(&self) -> String {
        format!("{}.{}", self.info.db, self.info.name)
    }
}

pub(super) fn store(ctx: &Ctx) -> Result<Rc<Store>> {
    ctx.store
        .clone()
        .ok_or_else(|| logic("This query needs tables, and no storage is attached."))
}

pub(super) fn op_failed(msg: impl Into<String>) -> ReqlError {
    ReqlError::new(ErrorKind::OpFailed, msg)
}

/// The default database: the `db` global optarg, or `test`.
pub(super) fn default_db(ctx: &Ctx) -> String {
    default_db_name(ctx).to_string()
}

/// `default_db`, borrowed.
pub(super) fn default_db_name(ctx: &Ctx) -> &str {
    match ctx.global_optargs.get("db") {
        Some(Datum::Str(s)) => s,
        _ => "test",
    }
}

/// Argument `i` as a database or table name (`what`), checked against RethinkDB's rules.
pub(super) fn name_arg(ctx: &Ctx, args: &[Val], i: usize, what: &str) -> Result<String> {
    let d = arg_datum(ctx, args, i)?;
    let name = string(&d)?;
    super::types::check_name(name, what)?;
    Ok(name.to_string())
}

/// Splits `(db?, rest...)` arguments into the database name and the rest.
fn db_and_rest(ctx: &Ctx, args: &mut Vec<Val>) -> String {
    if let Some(Val::Db(_)) = args.first() {
        if let Val::Db(name) = args.remove(0) {
            return name.to_string();
        }
    }
    default_db(ctx)
}

/// A table read through one index: what `between` (bounds) and `order_by(index=...)`
/// (order) build up before anything is read.
#[derive(Clone, Debug, Default)]
pub struct Slice {
    /// The secondary index read; `None` for the primary key.
    pub index: Option<IndexInfo>,
    /// Exact bounds on the index value (`Unbounded` for minval/maxval), from `between`.
    pub bounds: Option<(Bound<Datum>, Bound<Datum>)>,
    /// From an indexed `order_by`: whether descending.
    pub desc: Option<bool>,
}

/// What a `get_all` asked for.
#[derive(Debug)]
pub struct GetAllSpec {
    /// `None`: the primary key.
    pub index: Option<IndexInfo>,
    pub keys: Vec<Datum>,
}

impl Slice {
    /// The name of the index read (the primary key's for the primary index).
    pub fn index_name<'a>(&'a self, t: &'a TableInfo) -> &'a str {
        match &self.index {
            Some(ix) => &ix.name,
            None => &t.primary_key,
        }
    }
}

fn encode_bound(b: &Bound<Datum>, encode: impl Fn(&Datum) -> Vec<u8>) -> Bound<Vec<u8>> {
    match b {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(d) => Bound::Included(encode(d)),
        Bound::Excluded(d) => Bound::Excluded(encode(d)),
    }
}

/// True when no value can lie between the bounds.
fn empty_range(lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
    match (lo, hi) {
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
            a > b
                || (a == b
                    && !(matches!(lo, Bound::Included(_)) && matches!(hi, Bound::Included(_))))
        }
        _ => false,
    }
}

/// The documents of a slice, in its index's order (ascending unless it says otherwise).
pub fn slice_stream(t: &Rc<TableRef>, slice: Slice, kind: &'static str) -> Stream {
    slice_stream_expecting(t, slice, kind, None)
}

/// `slice_stream` for a consumer that wants about `rows` rows.
fn slice_stream_expecting(
    t: &Rc<TableRef>,
    slice: Slice,
    kind: &'static str,
    rows: Option<usize>,
) -> Stream {
    let mut s = match slice_scan(t, &slice) {
        None => Stream::from_vec(Vec::new()),
        Some(scan) => {
            let scan = match rows {
                Some(n) => scan.expect_rows(n),
                None => scan,
            };
            Stream::from_raw(Box::new(scan.map(|r| r.map(|(_, v)| v))))
        }
    };
    s.sel = Some(Selection {
        slice: Some(Box::new(slice)),
        ..Selection::new(t.clone(), kind)
    });
    s
}

/// The merged scan a slice reads (keyed by index order); `None` when it is empty.
fn slice_scan(t: &Rc<TableRef>, slice: &Slice) -> Option<MergedScan> {
    let desc = slice.desc.unwrap_or(false);
    let (lo, hi) = slice
        .bounds
        .clone()
        .unwrap_or((Bound::Unbounded, Bound::Unbounded));
    match &slice.index {
        None => {
            let key = |d: &Datum| {
                let mut k = t.info.key_prefix();
                crate::keycode::encode_into(&mut k, d);
                k
            };
            let (lo, hi) = (encode_bound(&lo, key), encode_bound(&hi, key));
            if empty_range(&lo, &hi) {
                return None;
            }
            let (tlo, thi) = table_bounds(&t.info);
            let lo = if matches!(lo, Bound::Unbounded) {
                tlo
            } else {
                lo
            };
            let hi = if matches!(hi, Bound::Unbounded) {
                thi
            } else {
                hi
            };
            Some(MergedScan::new(t.store.clone(), lo, hi, desc))
        }
        Some(ix) => {
            let (sec_lo, sec_hi) = (
                encode_bound(&lo, crate::keycode::encode),
                encode_bound(&hi, crate::keycode::encode),
            );
            if empty_range(&sec_lo, &sec_hi) {
                return None;
            }
            Some(index_scan(t, ix, sec_lo, sec_hi, desc))
        }
    }
}

/// Documents whose value in index `ix` lies within the bounds (encoded values).
pub(super) fn index_scan(
    t: &Rc<TableRef>,
    ix: &IndexInfo,
    sec_lo: Bound<Vec<u8>>,
    sec_hi: Bound<Vec<u8>>,
    desc: bool,
) -> MergedScan {
    let (klo, khi) = crate::store::index::scan_bounds(ix.id, &sec_lo, &sec_hi);
    let source = Source::Index {
        table_prefix: t.info.key_prefix(),
        sec_lo,
        sec_hi,
    };
    MergedScan::with_source(t.store.clone(), source, klo, khi, desc)
}

/// Documents whose value in index `ix` equals the encoded value `code`.
fn index_lookup(t: &Rc<TableRef>, ix: &IndexInfo, code: Vec<u8>) -> MergedScan {
    index_scan(
        t,
        ix,
        Bound::Included(code.clone()),
        Bound::Included(code),
        false,
    )
}

fn table_bounds(t: &TableInfo) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let (lo, hi) = t.key_range();
    (Bound::Included(lo), Bound::Excluded(hi))
}

pub fn table_stream(t: &Rc<TableRef>) -> Stream {
    if t.system.is_some() {
        let mut s = match super::system::rows(t) {
            Ok(v) => Stream::from_vec(v),
            Err(e) => Stream::new(Box::new(std::iter::once(Err(e))), false),
        };
        s.sel = Some(Selection::new(t.clone(), "TABLE"));
        return s;
    }
    slice_stream(t, Slice::default(), "TABLE")
}

/// Turns table-specific values into plain ones for terms that only read.
pub fn plain(v: Val) -> Val {
    match v {
        Val::Table(t) => Val::Stream(table_stream(&t)),
        Val::Single(_, d, _) => Val::Datum(d),
        // A sorted selection is an array held in memory: it acts as one.
        Val::Stream(s) if s.sel.as_ref().is_some_and(|x| x.kind == "SELECTION<ARRAY>") => {
            match s.drain_all() {
                Ok(v) => Val::Datum(Datum::array(v)),
                Err(_) => unreachable!("in-memory streams cannot fail"),
            }
        }
        other => other,
    }
}

fn selection_of(v: &Val) -> Option<Rc<TableRef>> {
    match v {
        Val::Table(t) => Some(t.clone()),
        Val::Stream(s) => s.sel.as_ref().map(|s| s.table.clone()),
        _ => None,
    }
}

pub fn type_name(v: &Val) -> Option<String> {
    match v {
        Val::Table(_) => Some("TABLE".into()),
        Val::Single(..) => Some("SELECTION<OBJECT>".into()),
        Val::Stream(s) => s.sel.as_ref().map(|s| match s.kind {
            "TABLE" => "SELECTION<STREAM>".to_string(),
            k => k.to_string(),
        }),
        _ => None,
    }
}

pub(super) fn expect_table(v: &Val, i: usize) -> Result<Rc<TableRef>> {
    match v {
        Val::Table(t) => Ok(t.clone()),
        other => Err(logic(format!(
            "Expected type TABLE but found {}.",
            super::types::type_of(other)
        ))
        .with_frame(Frame::Pos(i))),
    }
}

fn durability(opt: &Optargs, t: &TableInfo) -> Result<bool> {
    match opt.datum("durability")? {
        None => Ok(t.durability_hard),
        Some(d) => parse_durability(&d),
    }
}

pub(super) fn parse_durability(d: &Datum) -> Result<bool> {
    match string(d)? {
        "hard" => Ok(true),
        "soft" => Ok(false),
        other => Err(logic(format!(
            "Durability option `{other}` unrecognized (options are \"hard\" and \"soft\")."
        ))),
    }
}

/// Handles the terms that know about tables; `None` leaves the term to the others.
pub fn apply(ctx: &Rc<Ctx>, ty: u32, args: &mut Vec<Val>, opt: &Optargs) -> Result<Option<Val>> {
    // `db.table()` and friends without a name: the database is taken as the name.
    if matches!(ty, tt::TABLE | tt::TABLE_CREATE | tt::TABLE_DROP) {
        if let [Val::Db(n)] = args.as_slice() {
            return Err(logic(format!(
                "Expected type DATUM but found DATABASE:\ndb(\"{n}\")"
            )));
        }
    }
    let v = match ty {
        tt::DB_CREATE
        | tt::DB_DROP
        | tt::DB_LIST
        | tt::TABLE_CREATE
        | tt::TABLE_DROP
        | tt::TABLE_LIST => super::admin::apply(ctx, ty, args, opt)?,
        tt::CONFIG
        | tt::STATUS
        | tt::WAIT
        | tt::SYNC
        | tt::INDEX_LIST
        | tt::RECONFIGURE
        | tt::REBALANCE => match super::admin::apply_table(ctx, ty, args, opt)? {
            Some(v) => v,
            None => return Ok(None),
        },
        tt::TABLE => {
            let db = db_and_rest(ctx, args);
            let name = &name_arg(ctx, args, 0, "Table")?;
            if let Some(mode) = opt.datum("read_mode")? {
                let m = string(&mode)?;
                if !matches!(m, "single" | "majority" | "outdated") {
                    return Err(logic(format!(
                        "Read mode `{m}` unrecognized (options are \"majority\", \"single\", and \"outdated\")."
                    )));
                }
            }
            let mut uuids = false;
            if let Some(f) = opt.datum("identifier_format")? {
                let m = string(&f)?;
                if !matches!(m, "name" | "uuid") {
                    return Err(logic(format!(
                        "Identifier format `{m}` unrecognized (options are \"name\" and \"uuid\")."
                    )));
                }
                uuids = m == "uuid";
            }
            let st = store(ctx)?;
            if db == SYSTEM_DB {
                return Ok(Some(Val::Table(super::system::table(st, name, uuids)?)));
            }
            let info = st.table(&db, name)?;
            Val::Table(Rc::new(TableRef {
                info,
                store: st,
                system: None,
                uuids: false,
            }))
        }
        tt::SET_WRITE_HOOK => {
            let t = expect_table(&args[0], 0)?;
            let f = std::mem::replace(&mut args[1], Val::Datum(Datum::Null));
            Val::Datum(super::hook::set(&t, f)?)
        }
        tt::GET_WRITE_HOOK => Val::Datum(super::hook::get(&*expect_table(&args[0], 0)?)),
        tt::GET => {
            let t = expect_table(&args[0], 0)?;
            let key = arg_datum(ctx, args, 1)?;
            let doc = if t.system.is_some() {
                super::system::rows(&t)?
                    .into_iter()
                    .find(|d| d.get_field("id") == Some(&key))
            } else {
                t.store.get_doc(&t.info, &key)?
            };
            Val::Single(t, doc.unwrap_or(Datum::Null), key)
        }
        tt::INDEX_CREATE
        | tt::INDEX_DROP
        | tt::INDEX_RENAME
        | tt::INDEX_STATUS
        | tt::INDEX_WAIT => super::index::apply(ctx, ty, args, opt)?,
        tt::CHANGES => super::feed::changes(ctx, args, opt)?,
        tt::GET_ALL => get_all(ctx, args, opt)?,
        tt::GET_INTERSECTING => super::geo::read::get_intersecting(ctx, args, opt)?,
        tt::GET_NEAREST => super::geo::read::get_nearest(ctx, args, opt)?,
        tt::BETWEEN => between(ctx, args, opt)?,
        tt::INSERT => insert(ctx, args, opt)?,
        tt::UPDATE | tt::REPLACE | tt::DELETE => modify(ctx, ty, args, opt)?,
        tt::FOR_EACH => for_each(ctx, args)?,
        tt::EQ_JOIN if matches!(args.get(2), Some(Val::Table(_))) => eq_join(ctx, args, opt)?,
        tt::MIN | tt::MAX if args.len() == 1 && matches!(args[0], Val::Table(_)) => {
            let t = expect_table(&args[0], 0)?;
            // Without a field or function, a table's extreme is by an index (the
            // primary key unless one is named).
            let slice = Slice {
                index: index_opt(&t, opt)?,
                bounds: None,
                desc: Some(ty == tt::MAX),
            };
            let mut s = slice_stream(&t, slice, "TABLE_SLICE");
            match s.next_datum()? {
                Some(d) => {
                    let pk = pk_of(&t.info, &d).unwrap_or(Datum::Null);
                    Val::Single(t, d, pk)
                }
                None => {
                    let name = if ty == tt::MIN { "min" } else { "max" };
                    return Err(ReqlError::new(
                        ErrorKind::NonExistence,
                        format!("Cannot take the {name} of an empty stream.  (If you passed `{name}` a field name, it may be that no elements of the stream had that field.)"),
                    ));
                }
            }
        }
        tt::DISTINCT if matches!(args[0], Val::Table(_)) && opt.has("index") => {
            let t = expect_table(&args[0], 0)?;
            match index_opt(&t, opt)? {
                None => {
                    let pkey = t.info.primary_key.clone();
                    let s = table_stream(&t).map(move |d| super::object::get_field(&d, &pkey));
                    Val::Stream(s)
                }
                Some(ix) => Val::Stream(index_values(&t, &ix)),
            }
        }
        tt::DISTINCT if slice_of(&args[0]).is_some() && opt.has("index") => {
            // A table slice: the distinct values the named index has for its documents.
            let (t, slice) = slice_of(&args[0]).expect("checked");
            let probe = index_opt(&t, opt)?
                .map(super::index::IndexProbe::new)
                .transpose()?;
            let mut set = std::collections::BTreeSet::new();
            let mut s = slice_stream(&t, slice, "TABLE_SLICE");
            while let Some(d) = s.next_datum()? {
                let values = match &probe {
                    None => d
                        .get_field(&t.info.primary_key)
                        .cloned()
                        .into_iter()
                        .collect(),
                    Some(p) => p.values(&d),
                };
                for v in values {
                    set.insert(v);
                }
                ctx.check_array(set.len())?;
            }
            Val::Stream(Stream::from_vec(set.into_iter().collect()))
        }
        tt::GROUP if matches!(args[0], Val::Table(_)) && opt.has("index") => {
            let t = expect_table(&args[0], 0)?;
            let ix = index_opt(&t, opt)?;
            let mut multi = match opt.datum("multi")? {
                None => false,
                Some(d) => boolean(&d)?,
            };
            let mut a: Vec<Val> = args.drain(..).map(plain).collect();
            match ix {
                None => a.push(Val::Datum(Datum::str(t.info.primary_key.as_str()))),
                Some(ix) => {
                    // Grouped by the index's values: its function, element-wise for a
                    // multi index.
                    multi |= ix.multi;
                    a.push(Val::Func(super::index::load_function(ctx, &ix.function)?));
                }
            }
            super::seq::group_by(ctx, a, multi)?
        }
        // Grouped streams hold arrays already: coercing them to arrays changes nothing
        // but their type (grouped data).
        tt::COERCE_TO
            if matches!(&args[0], Val::Grouped(g) if g.iter().all(|(_, v)| matches!(v, Datum::Array(_))))
                && matches!(args.get(1), Some(Val::Datum(Datum::Str(t))) if t.eq_ignore_ascii_case("array")) =>
        {
            match std::mem::replace(&mut args[0], Val::Datum(Datum::Null)) {
                Val::Grouped(g) if g.stream => {
                    Val::Grouped(Rc::new(super::Grouped::data(Rc::unwrap_or_clone(g).groups)))
                }
                other => other,
            }
        }
        tt::TYPE_OF if type_name(&args[0]).is_some() => {
            Val::Datum(Datum::str(type_name(&args[0]).expect("checked")))
        }
        tt::INFO => match &args[0] {
            Val::Table(t) => Val::Datum(super::admin::table_info(t)),
            Val::Db(name) => {
                let id = if &**name == SYSTEM_DB {
                    super::system::system_db_id()
                } else {
                    store(ctx)?.db(name)?.id
                };
                let mut o = Object::new();
                o.insert("type".into(), Datum::str("DB"));
                o.insert("name".into(), Datum::str(&**name));
                o.insert("id".into(), Datum::str(id));
                Val::Datum(Datum::object(o))
            }
            Val::Single(..) => return Ok(None),
            _ => return Ok(None),
        },
        tt::FILTER if args.len() == 2 && is_raw_scan(&args[0]) && compiles(&args[1]) => {
            raw_filter(ctx, args, opt)?
        }
        tt::COUNT if args.len() == 1 && is_raw_scan(&args[0]) => {
            // Counting stored rows needs none of them decoded.
            let Val::Stream(mut s) = plain(args.remove(0)) else {
                unreachable!("raw scans are streams")
            };
            let raw = s.take_raw().expect("checked by is_raw_scan");
            let mut n = 0u64;
            for r in raw {
                r?;
                n += 1;
            }
            Val::Datum(Datum::Num(n as f64))
        }
        tt::FILTER
        | tt::LIMIT
        | tt::SKIP
        | tt::SLICE
        | tt::NTH
        | tt::BRACKET
        | tt::SAMPLE
        | tt::HAS_FIELDS
            if selection_of(&args[0]).is_some() =>
        {
            let t = selection_of(&args[0]).expect("checked");
            // `limit` on a slice stays a slice with a limit (changefeeds follow it).
            let mut limited: Option<(Slice, usize)> = None;
            if let (tt::LIMIT, Some(Val::Datum(Datum::Num(n)))) = (ty, args.get(1)) {
                if *n >= 0.0 {
                    limited = slice_of(&args[0]).map(|(_, s)| (s, *n as usize));
                }
                // A slice not read yet is read in batches sized for the limit.
                if let Some((t, slice)) = slice_of(&args[0]) {
                    if *n >= 0.0 && t.system.is_none() {
                        let kind = match &args[0] {
                            Val::Stream(s) => s.sel.as_ref().map_or("TABLE", |x| x.kind),
                            _ => "TABLE",
                        };
                        args[0] =
                            Val::Stream(slice_stream_expecting(&t, slice, kind, Some(*n as usize)));
                    }
                }
            }
            if ty == tt::BRACKET && !matches!(args.get(1), Some(Val::Datum(Datum::Num(_)))) {
                return Ok(None);
            }
            let plain_args: Vec<Val> = args.drain(..).map(plain).collect();
            let r = super::apply_plain(ctx, ty, plain_args, opt)?;
            match r {
                Val::Stream(mut s) => {
                    s.sel = Some(match limited {
                        Some((slice, n)) => Selection {
                            slice: Some(Box::new(slice)),
                            limit: Some(n),
                            ..Selection::new(t, "SELECTION<STREAM>")
                        },
                        None => Selection::new(t, "SELECTION<STREAM>"),
                    });
                    Val::Stream(s)
                }
                Val::Datum(d @ Datum::Object(_)) if matches!(ty, tt::NTH | tt::BRACKET) => {
                    let pk = pk_of(&t.info, &d).unwrap_or(Datum::Null);
                    Val::Single(t, d, pk)
                }
                other => other,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(v))
}

/// A table or table slice that `order_by(index=...)` and `between` can still narrow.
pub fn slice_of(v: &Val) -> Option<(Rc<TableRef>, Slice)> {
    match v {
        Val::Table(t) if t.system.is_none() => Some((t.clone(), Slice::default())),
        Val::Stream(s) => {
            let sel = s.sel.as_ref()?;
            if sel.limit.is_some() {
                return None;
            }
            Some((sel.table.clone(), (**sel.slice.as_ref()?).clone()))
        }
        _ => None,
    }
}

const INDEXED_ORDER_BY_NEEDS_TABLE: &str = "Indexed order_by can only be performed on a TABLE or TABLE_SLICE. Make sure order_by comes before any transformations (such as map) or filters.";

/// `order_by` where tables are involved: with `index`, a scan in index order (streamed;
/// further keys sort it stably in memory); without, an in-memory sort that stays a
/// selection (`SELECTION<ARRAY>`) so writes can follow. `None`: not a table matter.
pub fn order_by(
    ctx: &Rc<Ctx>,
    env: &super::Env,
    seq: Val,
    keys: Vec<(bool, Val)>,
    index: Option<&Rc<crate::term::Term>>,
) -> Result<Val> {
    let Some(index) = index else {
        let sel = selection_of(&seq);
        let r = super::seq::order_by(ctx, plain(seq), keys)?;
        return Ok(match (sel, r) {
            (Some(t), Val::Stream(s)) => as_array_selection(t, s.drain_all()?),
            (Some(t), Val::Datum(Datum::Array(ref a))) => as_array_selection(t, a.to_vec()),
            (_, r) => r,
        });
    };
    let Some((t, mut slice)) = slice_of(&seq) else {
        return Err(logic(INDEXED_ORDER_BY_NEEDS_TABLE));
    };
    if slice.desc.is_some() {
        return Err(logic(
            "Cannot perform multiple indexed ORDER_BYs on the same table.",
        ));
    }
    let (desc, name_term) = match &**index {
        crate::term::Term::Op(o) if o.ty == tt::DESC || o.ty == tt::ASC => {
            (o.ty == tt::DESC, o.args[0].clone())
        }
        _ => (false, index.clone()),
    };
    let name = super::eval(ctx, env, &name_term)
        .and_then(|v| v.into_datum(ctx))
        .map_err(|e| e.with_frame(Frame::Opt("index".into())))?;
    let name = string(&name)?;
    if slice.bounds.is_some() && slice.index_name(&t.info) != name {
        return Err(logic(format!(
            "Cannot order by index `{name}` after calling BETWEEN on index `{}`.",
            slice.index_name(&t.info)
        )));
    }
    slice.index = super::index::resolve(&t.info, name)?;
    slice.desc = Some(desc);
    let ix = slice.index.clone();
    let s = slice_stream(&t, slice, "TABLE_SLICE");
    if keys.is_empty() {
        return Ok(Val::Stream(s));
    }
    // The index orders first; the other keys order documents with equal index values
    // (each run of them, as the index delivers them).
    let rows = s.collect_all(ctx)?;
    let probe = ix.map(super::index::IndexProbe::new).transpose()?;
    let index_value = |d: &Datum| match &probe {
        None => d.get_field(&t.info.primary_key).cloned(),
        Some(p) => p.value(d),
    };
    let mut out = Vec::with_capacity(rows.len());
    let mut run: Vec<Datum> = Vec::new();
    let mut run_value: Option<Datum> = None;
    let flush = |run: &mut Vec<Datum>, out: &mut Vec<Datum>| -> Result<()> {
        if run.len() <= 1 {
            out.append(run);
            return Ok(());
        }
        let ks: Vec<(bool, Val)> = keys.iter().map(|(d, v)| (*d, v.share())).collect();
        match super::seq::order_by(ctx, Val::Datum(Datum::array(std::mem::take(run))), ks)? {
            Val::Datum(Datum::Array(ref a)) => out.extend(a.iter().cloned()),
            other => {
                if let Datum::Array(ref a) = other.into_datum(ctx)? {
                    out.extend(a.iter().cloned());
                }
            }
        }
        Ok(())
    };
    for row in rows {
        let v = index_value(&row);
        if v != run_value {
            flush(&mut run, &mut out)?;
            run_value = v;
        }
        run.push(row);
    }
    flush(&mut run, &mut out)?;
    Ok(as_array_selection(t, out))
}

fn as_array_selection(t: Rc<TableRef>, rows: Vec<Datum>) -> Val {
    let mut s = Stream::from_vec(rows);
    s.sel = Some(Selection::new(t, "SELECTION<ARRAY>"));
    Val::Stream(s)
}

/// A table, or a stream of its rows still undecoded.
fn is_raw_scan(v: &Val) -> bool {
    match v {
        Val::Table(t) => t.system.is_none(),
        Val::Stream(s) => s.sel.is_some() && s.has_raw(),
        _ => false,
    }
}

fn compiles(v: &Val) -> bool {
    matches!(v, Val::Func(f) if super::compile::compile(f).is_some())
}

/// `filter` on stored rows with a compiled predicate: rows are tested undecoded; the
/// few the compiled form cannot decide go through the general evaluator.
fn raw_filter(ctx: &Rc<Ctx>, args: &mut Vec<Val>, opt: &Optargs) -> Result<Val> {
    let table = selection_of(&args[0]).expect("raw scans are selections");
    let Val::Func(f) = args.remove(1) else {
        unreachable!("checked by compiles")
    };
    let compiled = super::compile::compile(&f).expect("checked by compiles");
    let pred = Callable::Func(f);
    let default = opt.datum("default").transpose();
    let Val::Stream(mut s) = plain(args.remove(0)) else {
        unreachable!("raw scans are streams")
    };
    let raw = s.take_raw().expect("checked by is_raw_scan");
    let ctx2 = ctx.clone();
    let kept = raw.filter_map(move |r| {
        let b = match r {
            Ok(b) => b,
            Err(e) => return Some(Err(e)),
        };
        let keep = match compiled.eval(&b) {
            Some(k) => Ok(k),
            None => {
                decode_doc(&b).and_then(|d| super::seq::filter_keep(&ctx2, &pred, &default, &d))
            }
        };
        match keep {
            Ok(true) => Some(Ok(b)),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    });
    s.set_raw(Box::new(kept));
    s.sel = Some(Selection::new(table, "SELECTION<STREAM>"));
    Ok(Val::Stream(s))
}

fn ignore_hook(opt: &Optargs) -> Result<bool> {
    match opt.datum("ignore_write_hook")? {
        None => Ok(false),
        Some(d) => boolean(&d),
    }
}

fn pk_of(t: &TableInfo, doc: &Datum) -> Option<Datum> {
    match doc {
        Datum::Object(o) => o.get(&t.primary_key).cloned(),
        _ => None,
    }
}

/// The index named by the `index` optarg (`None`: the primary key, also when absent).
fn index_opt(t: &TableRef, opt: &Optargs) -> Result<Option<IndexInfo>> {
    match opt.datum("index")? {
        None => Ok(None),
        Some(d) => {
            let name = string(&d)?;
            if t.system.is_some() {
                if name == t.info.primary_key {
                    return Ok(None);
                }
                return Err(op_failed(format!(
                    "Index `{name}` was not found on table `{}`.",
                    t.display()
                )));
            }
            super::index::resolve(&t.info, name)
        }
    }
}

/// The distinct values of a secondary index, in index order.
fn index_values(t: &Rc<TableRef>, ix: &IndexInfo) -> Stream {
    let scan = index_scan(t, ix, Bound::Unbounded, Bound::Unbounded, false);
    let mut last: Option<Vec<u8>> = None;
    let iter = scan.filter_map(move |r| {
        let (sort_key, _) = match r {
            Ok(x) => x,
            Err(e) => return Some(Err(e)),
        };
        let Some((value, used)) = crate::keycode::decode_prefix(&sort_key) else {
            return Some(Err(crate::error::internal(
                "Corrupt index value in storage.",
            )));
        };
        let code = sort_key[..used].to_vec();
        if last.as_ref() == Some(&code) {
            return None;
        }
        last = Some(code);
        Some(Ok(value))
    });
    Stream::new(Box::new(iter), false)
}

fn has_extrema(d: &Datum) -> bool {
    deep!(has_extrema(d));
    match d {
        Datum::MinVal | Datum::MaxVal => true,
        Datum::Array(a) => a.iter().any(has_extrema),
        _ => false,
    }
}

/// A `get_all` key: not geometry, not null.
fn get_all_key(ctx: &Ctx, args: &[Val], i: usize) -> Result<Datum> {
    let key = arg_datum(ctx, args, i)?;
    if key.reql_type() == Some("GEOMETRY") {
        return Err(logic(
            "Cannot use a geospatial index with `get_all`. Use `get_intersecting` instead.",
        ));
    }
    if key == Datum::Null {
        return Err(ReqlError::new(
            ErrorKind::NonExistence,
            "Keys cannot be NULL.",
        ));
    }
    Ok(key)
}

fn get_all(ctx: &Rc<Ctx>, args: &mut [Val], opt: &Optargs) -> Result<Val> {
    let t = expect_table(&args[0], 0)?;
    let ix = index_opt(&t, opt)?;
    // Each distinct key once, in key order, its documents repeated as often as the
    // key was given (as RethinkDB does).
    let mut keys: std::collections::BTreeMap<Datum, usize> = Default::default();
    for i in 1..args.len() {
        *keys.entry(get_all_key(ctx, args, i)?).or_default() += 1;
    }
    let spec = Rc::new(GetAllSpec {
        index: ix.clone(),
        keys: keys.keys().cloned().collect(),
    });
    let mut s = match ix {
        None => {
            let mut docs = Vec::new();
            for (key, n) in keys {
                if let Some(d) = t.store.get_doc(&t.info, &key)? {
                    docs.extend(std::iter::repeat_n(d, n));
                }
            }
            Stream::from_vec(docs)
        }
        Some(ix) => {
            let mut codes = Vec::with_capacity(keys.len());
            for (key, n) in keys {
                // No document has minval or maxval as an index value.
                if has_extrema(&key) {
                    continue;
                }
                codes.push((crate::store::index::secondary_code(&key)?, n));
            }
            let t2 = t.clone();
            let rows = codes.into_iter().flat_map(move |(code, n)| {
                let scan = index_lookup(&t2, &ix, code).map(|r| r.map(|(_, v)| v));
                let it: Box<dyn Iterator<Item = Result<Vec<u8>>>> = if n == 1 {
                    Box::new(scan)
                } else {
                    let rows: Vec<Result<Vec<u8>>> = scan.collect();
                    Box::new((0..n).flat_map(move |_| rows.clone()))
                };
                it
            });
            Stream::from_raw(Box::new(rows))
        }
    };
    s.sel = Some(Selection {
        get_all: Some(spec),
        ..Selection::new(t, "SELECTION<STREAM>")
    });
    Ok(Val::Stream(s))
}

fn between(ctx: &Rc<Ctx>, args: &mut [Val], opt: &Optargs) -> Result<Val> {
    let (t, mut slice) = match slice_of(&args[0]) {
        Some(x) => x,
        None => {
            return Err(match &args[0] {
                Val::Datum(_) => logic("Expected type TABLE_SLICE but found DATUM:"),
                Val::Stream(s) if s.sel.is_some() => {
                    logic("Expected type TABLE_SLICE but found SELECTION:")
                }
                other => logic(format!(
                    "Expected type TABLE_SLICE but found {}:",
                    super::types::type_of(other)
                )),
            })
        }
    };
    if slice.bounds.is_some() {
        return Err(logic("Cannot perform multiple BETWEENs on the same table."));
    }
    let left_open = opt.open_bound("left_bound", false)?;
    let right_open = opt.open_bound("right_bound", true)?;
    let lo_d = arg_datum(ctx, args, 1)?;
    let hi_d = arg_datum(ctx, args, 2)?;
    for b in [&lo_d, &hi_d] {
        if *b == Datum::Null {
            return Err(logic(
                "Cannot use `null` in BETWEEN, use `r.minval` or `r.maxval` to denote unboundedness.",
            ));
        }
    }
    let name = match opt.datum("index")? {
        Some(d) => string(&d)?.to_string(),
        None => t.info.primary_key.clone(),
    };
    if slice.desc.is_some() && slice.index_name(&t.info) != name {
        return Err(logic(format!(
            "Cannot call BETWEEN on index `{name}` after ordering on index `{}`.",
            slice.index_name(&t.info)
        )));
    }
    slice.index = super::index::resolve(&t.info, &name)?;
    let lo = match lo_d {
        Datum::MinVal => Bound::Unbounded,
        d if left_open => Bound::Excluded(d),
        d => Bound::Included(d),
    };
    let hi = match hi_d {
        Datum::MaxVal => Bound::Unbounded,
        d if right_open => Bound::Excluded(d),
        d => Bound::Included(d),
    };
    slice.bounds = Some((lo, hi));
    Ok(Val::Stream(slice_stream(&t, slice, "TABLE_SLICE")))
}

/// Rows from an `insert` argument: one object, an array or a stream of them.
fn insert_rows(ctx: &Rc<Ctx>, v: Val) -> Result<Box<dyn Iterator<Item = Result<Datum>>>> {
    match plain(v) {
        Val::Datum(d @ Datum::Object(_)) => Ok(Box::new(std::iter::once(Ok(d)))),
        other => {
            let seq = super::seq::SeqIn::from_val(ctx, other)?;
            let mut s = seq.into_stream();
            if s.infinite {
                return Err(logic(
                    "Cannot use an infinite stream with an aggregation function (`reduce`, `count`, etc.) or coerce it to an array.",
                ));
            }
            Ok(Box::new(std::iter::from_fn(move || {
                s.next_datum().transpose()
            })))
        }
    }
}

enum Conflict {
    Error,
    Replace,
    Update,
    Func(Callable),
}

fn insert(ctx: &Rc<Ctx>, args: &mut [Val], opt: &Optargs) -> Result<Val> {
    let t = expect_table(&args[0], 0)?;
    if let Some(name) = t.system {
        return Err(op_failed(format!(
            "It's illegal to insert new rows into the `{SYSTEM_DB}.{name}` table."
        )));
    }
    let rc = ReturnChanges::parse(opt.datum("return_changes")?)?;
    let hard = durability(opt, &t.info)?;
    let hook = super::hook::load(ctx, &t, ignore_hook(opt)?)?;
    let conflict = match opt.get("conflict")? {
        None => Conflict::Error,
        Some(Val::Func(f)) => {
            if !matches!(f.arity(), 0 | 3) {
                return Err(logic(
                    "The conflict function passed to `insert` should expect 3 arguments.",
                ));
            }
            if !super::deterministic(&f.body) {
                return Err(logic(
                    "The conflict function passed to `insert` must be deterministic.",
                ));
            }
            Conflict::Func(Callable::Func(f))
        }
        Some(v) => {
            let d = v.into_datum(ctx)?;
            match string(&d)? {
                "error" => Conflict::Error,
                "replace" => Conflict::Replace,
                "update" => Conflict::Update,
                other => {
                    return Err(logic(format!(
                        "Conflict option `{other}` unrecognized (options are \"error\", \"replace\" and \"update\")."
                    )))
                }
            }
        }
    };
    let rows = insert_rows(
        ctx,
        std::mem::replace(&mut args[1], Val::Datum(Datum::Null)),
    )?;
    let mut stats = WriteStats::new(rc);
    let pkey = t.info.primary_key.clone();
    let mut batch: Vec<Datum> = Vec::new();
    let mut rows = rows.peekable();
    while rows.peek().is_some() {
        batch.clear();
        while batch.len() < WRITE_BATCH_ROWS {
            match rows.next() {
                None => break,
                Some(r) => batch.push(r?),
            }
        }
        let mut jobs = Vec::with_capacity(batch.len());
        for doc in batch.iter_mut() {
            let pk = match doc {
                Datum::Object(o) => match o.get(&pkey) {
                    Some(pk) => pk.clone(),
                    None => {
                        let id = Datum::str(uuid::Uuid::new_v4().to_string());
                        Arc::make_mut(o).insert(pkey.clone(), id.clone());
                        stats.generated_keys.push(id.clone());
                        id
                    }
                },
                _ => Datum::Null,
            };
            jobs.push(RowJob {
                pk,
                known: Known::LikelyAbsent,
            });
        }
        let docs = &batch;
        let resolve = |i: usize, old: &Datum| -> Result<Datum> {
            let new = docs[i].clone();
            if *old == Datum::Null {
                return Ok(new);
            }
            match &conflict {
                Conflict::Error => Err(op_failed(format!(
                    "Duplicate primary key `{pkey}`:\n{}\n{}",
                    crate::json::pretty(old),
                    crate::json::pretty(&new)
                ))),
                Conflict::Replace => Ok(new),
                Conflict::Update => Ok(super::object::merge(old, &new)),
                Conflict::Func(c) => {
                    c.call_datum(ctx, &[Datum::str(pkey.as_str()), old.clone(), new])
                }
            }
        };
        let mut f = |i: usize, old: &Datum| -> Result<Datum> {
            let new = resolve(i, old)?;
            match &hook {
                Some(h) => {
                    let pk = pk_of(&t.info, &docs[i]).unwrap_or(Datum::Null);
                    super::hook::apply(ctx, h, &pk, old, new)
                }
                None => Ok(new),
            }
        };
        // Rows that are not objects fail one by one, as in RethinkDB.
        replace_rows(&t, jobs, &mut f, hard, rc, &mut stats)?;
    }
    Ok(Val::Datum(stats.to_datum()))
}

fn modify(ctx: &Rc<Ctx>, ty: u32, args: &mut [Val], opt: &Optargs) -> Result<Val> {
    let rc = ReturnChanges::parse(opt.datum("return_changes")?)?;
    // `non_atomic` was consulted when the argument's term was checked for determinism
    // (before it was evaluated); here it only has to be a boolean.
    if let Some(d) = opt.datum("non_atomic")? {
        boolean(&d)?;
    }
    let f: Option<Callable> = if ty == tt::DELETE {
        None
    } else {
        Some(std::mem::replace(&mut args[1], Val::Datum(Datum::Null)).into_callable())
    };
    let target = std::mem::replace(&mut args[0], Val::Datum(Datum::Null));
    let t = match &target {
        Val::Single(t, ..) => t.clone(),
        other => match selection_of(other) {
            Some(t) => t,
            None => {
                let what = match other {
                    Val::Datum(_) => "DATUM".to_string(),
                    other => super::types::type_of(other),
                };
                return Err(logic(format!("Expected type SELECTION but found {what}:")));
            }
        },
    };
    let hard = durability(opt, &t.info)?;
    let hook = super::hook::load(ctx, &t, ignore_hook(opt)?)?;
    let mut stats = WriteStats::new(rc);
    let compute = |old: &Datum| -> Result<Datum> {
        match (&f, ty) {
            (None, _) => Ok(Datum::Null),
            (Some(c), tt::UPDATE) => {
                if *old == Datum::Null {
                    return Ok(Datum::Null);
                }
                let patch = match c {
                    Callable::Func(func) => {
                        super::call_func_with(ctx, func, std::slice::from_ref(old), true)?
                            .into_datum(ctx)?
                    }
                    other => other.call_datum(ctx, std::slice::from_ref(old))?,
                };
                update_row(old, patch)
            }
            (Some(c), _) => c.call_datum(ctx, std::slice::from_ref(old)),
        }
    };
    let apply_batch = |rows: Vec<(Datum, Datum)>, stats: &mut WriteStats| -> Result<()> {
        if t.system.is_some() {
            for (_, old) in rows {
                match compute(&old).and_then(|new| {
                    if new == old {
                        return Ok(false);
                    }
                    super::system::write_row(&t, &old, &new).map(|_| true)
                }) {
                    Ok(true) => stats.bump("replaced"),
                    Ok(false) => stats.bump("unchanged"),
                    Err(e) => stats.error(e.msg),
                }
            }
            return Ok(());
        }
        let mut jobs = Vec::with_capacity(rows.len());
        let mut pks = Vec::with_capacity(rows.len());
        for (pk, d) in rows {
            let known = Known::Read(match d {
                Datum::Null => None,
                d => Some(crate::store::encode_doc(&d)?),
            });
            pks.push(pk.clone());
            jobs.push(RowJob { pk, known });
        }
        let mut g = |i: usize, old: &Datum| {
            let new = compute(old)?;
            match &hook {
                Some(h) => super::hook::apply(ctx, h, &pks[i], old, new),
                None => Ok(new),
            }
        };
        replace_rows(&t, jobs, &mut g, hard, rc, stats)
    };
    match target {
        Val::Single(_, d, pk) => apply_batch(vec![(pk, d)], &mut stats)?,
        other => {
            let mut s = match plain(other) {
                Val::Stream(s) => s,
                _ => unreachable!("selections are streams"),
            };
            let mut batch = Vec::new();
            loop {
                let next = s.next_datum()?;
                let end = next.is_none();
                if let Some(d) = next {
                    let pk = pk_of(&t.info, &d).unwrap_or(Datum::Null);
                    batch.push((pk, d));
                }
                if batch.len() >= WRITE_BATCH_ROWS || (end && !batch.is_empty()) {
                    apply_batch(std::mem::take(&mut batch), &mut stats)?;
                }
                if end {
                    break;
                }
            }
        }
    }
    Ok(Val::Datum(stats.to_datum()))
}

fn for_each(ctx: &Rc<Ctx>, args: &mut [Val]) -> Result<Val> {
    let seq = super::seq::SeqIn::from_val(
        ctx,
        plain(std::mem::replace(&mut args[0], Val::Datum(Datum::Null))),
    )?;
    let f = std::mem::replace(&mut args[1], Val::Datum(Datum::Null)).into_callable();
    let mut s = seq.into_stream();
    let mut stats = WriteStats::default();
    let fail = || logic("FOR_EACH expects one or more basic write queries.");
    while let Some(d) = s.next_datum()? {
        let r = f.call(ctx, &[d])?;
        match r {
            Val::Datum(Datum::Array(ref a)) => {
                for x in a.iter() {
                    stats.merge_datum(x).map_err(|_| fail())?;
                }
            }
            Val::Datum(d @ Datum::Object(_)) => stats.merge_datum(&d).map_err(|_| fail())?,
            Val::Datum(d) => {
                return Err(logic(format!(
                    "FOR_EACH expects one or more basic write queries.  Expected type ARRAY but found {}.",
                    d.type_name()
                )))
            }
            _ => return Err(fail()),
        }
    }
    Ok(Val::Datum(stats.to_datum()))
}

fn eq_join(ctx: &Rc<Ctx>, args: &mut [Val], opt: &Optargs) -> Result<Val> {
    let t = expect_table(&args[2], 2)?;
    let ix = index_opt(&t, opt)?;
    // The output follows the left sequence's order, so `ordered` holds either way.
    if let Some(d) = opt.datum("ordered")? {
        boolean(&d)?;
    }
    let key_fn = match std::mem::replace(&mut args[1], Val::Datum(Datum::Null)) {
        Val::Func(f) => Callable::Func(f),
        Val::Datum(d) => Callable::Field(d),
        other => Callable::Const(Datum::str(other.type_name())),
    };
    let seq = super::seq::SeqIn::from_val(
        ctx,
        plain(std::mem::replace(&mut args[0], Val::Datum(Datum::Null))),
    )?;
    let is_array = seq.is_array();
    let ctx2 = ctx.clone();
    // The right-hand documents matching one left row.
    let rights = move |left: &Datum| -> Result<Vec<Datum>> {
        let key = match key_fn.call_datum(&ctx2, std::slice::from_ref(left)) {
            Ok(k) => k,
            Err(e) if e.kind == ErrorKind::NonExistence => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        match &ix {
            None => {
                if crate::store::check_primary_key(&key).is_err() {
                    return Ok(Vec::new());
                }
                Ok(t.store.get_doc(&t.info, &key)?.into_iter().collect())
            }
            Some(ix) => {
                let Ok(code) = crate::store::index::secondary_code(&key) else {
                    return Ok(Vec::new());
                };
                index_lookup(&t, ix, code)
                    .map(|r| r.and_then(|(_, v)| decode_doc(&v)))
                    .collect()
            }
        }
    };
    let mut left_rows = seq.into_stream();
    let mut pending: std::collections::VecDeque<Datum> = Default::default();
    let iter = std::iter::from_fn(move || loop {
        if let Some(d) = pending.pop_front() {
            return Some(Ok(d));
        }
        let left = match left_rows.next_datum() {
            Ok(Some(l)) => l,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        match rights(&left) {
            Ok(rs) => {
                for right in rs {
                    let mut o = Object::new();
                    o.insert("left".into(), left.clone());
                    o.insert("right".into(), right);
                    pending.push_back(Datum::object(o));
                }
            }
            Err(e) => return Some(Err(e)),
        }
    });
    super::seq::finish(ctx, Stream::new(Box::new(iter), false), is_array)
}
