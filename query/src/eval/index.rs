//! Secondary indexes in the evaluator: the index terms (index_create, index_drop,
//! index_rename, index_status, index_wait) and `Indexer`, which the shards are given to
//! compute a document's index entries (the storage layer knows nothing of ReQL).

use super::table::{op_failed, SYSTEM_DB};
use super::{arg_datum, boolean, call_func, string, Ctx, Env, Func, Optargs, Val};
use crate::datum::{Datum, Object};
use crate::error::{logic, ErrorKind, ReqlError, Result};
use crate::store::catalog::{TableInfo, DATA_PREFIX};
use crate::store::index::{entry, secondary_code, IndexInfo};
use crate::store::{decode_doc, IndexFns, Rows, SharedCatalog};
use crate::term_type as tt;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Marks the binary form of an index definition (`index_status().function`), which
/// `index_create` accepts back to copy an index.
const BLOB_MAGIC: &[u8] = b"rdb-index-function:1\n";
/// Longest wait between two looks at the catalog in `index_wait`.
const WAIT_POLL_MS_MAX: u64 = 500;

/// Computes index entries for the shards of one core. Index functions are loaded once
/// per index and run in a pristine context (no global optargs), as RethinkDB does.
pub struct Indexer {
    catalog: SharedCatalog,
    ctx: Rc<Ctx>,
    funcs: RefCell<rustc_hash::FxHashMap<u64, Rc<IndexFn>>>,
}

/// An index function ready to run.
enum IndexFn {
    /// `row(field)`: read straight from the encoded document.
    Field(String),
    Func(Rc<Func>),
}

impl Indexer {
    pub fn new(catalog: SharedCatalog) -> Result<Rc<Indexer>> {
        Ok(Rc::new(Indexer {
            catalog,
            ctx: Ctx::new(HashMap::new())?,
            funcs: RefCell::new(rustc_hash::FxHashMap::default()),
        }))
    }

    fn func(&self, ix: &IndexInfo) -> Result<Rc<IndexFn>> {
        if let Some(f) = self.funcs.borrow().get(&ix.id) {
            return Ok(f.clone());
        }
        let f = load_function(&self.ctx, &ix.function)?;
        let f = Rc::new(match super::compile::single_field(&f) {
            Some(field) => IndexFn::Field(field),
            None => IndexFn::Func(f),
        });
        self.funcs.borrow_mut().insert(ix.id, f.clone());
        Ok(f)
    }
}

/// An index function from its stored wire JSON.
pub(super) fn load_function(ctx: &Rc<Ctx>, json: &str) -> Result<Rc<Func>> {
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| logic(format!("Stored index function is unreadable: {e}")))?;
    let term = crate::term::parse(&v)?;
    match super::eval(ctx, &Env::default(), &term)? {
        Val::Func(f) => Ok(f),
        _ => Err(logic("Stored index function is not a function.")),
    }
}

/// An index's function with its own evaluation context, to compute the values a
/// document has in the index (changefeed filters, index-ordered sorts, geo reads).
pub struct IndexProbe {
    ix: IndexInfo,
    func: Rc<Func>,
    ctx: Rc<Ctx>,
}

impl IndexProbe {
    pub fn new(ix: IndexInfo) -> Result<IndexProbe> {
        let ctx = Ctx::new(HashMap::new())?;
        let func = load_function(&ctx, &ix.function)?;
        Ok(IndexProbe { ix, func, ctx })
    }

    /// The function's result for the document; `None` when it fails on it (the
    /// document is then not in the index).
    pub fn value(&self, doc: &Datum) -> Option<Datum> {
        call_func(&self.ctx, &self.func, std::slice::from_ref(doc))
            .and_then(|v| v.into_datum(&self.ctx))
            .ok()
    }

    /// The values the document is indexed under: each element for a multi index.
    pub fn values(&self, doc: &Datum) -> Vec<Datum> {
        match self.value(doc) {
            None => Vec::new(),
            Some(Datum::Array(ref items)) if self.ix.multi => items.to_vec(),
            Some(v) => vec![v],
        }
    }

    /// The document's encoded index values (those that can be keys).
    pub fn codes(&self, doc: &Datum) -> Vec<Vec<u8>> {
        self.values(doc)
            .iter()
            .filter_map(|x| secondary_code(x).ok())
            .collect()
    }
}

/// The entries a value of index `ix` yields for the document with encoded primary key
/// `pk`. Values that cannot be keys (objects, null, geometry...) yield none; in a multi
/// index, each array element on its own.
pub fn value_entries(ix: &IndexInfo, value: &Datum, pk: &[u8], out: &mut Rows) {
    if ix.geo {
        return geo_entries(ix, value, pk, out);
    }
    match value {
        Datum::Array(items) if ix.multi => {
            for (i, x) in items.iter().enumerate() {
                if let Ok(code) = secondary_code(x) {
                    out.push(entry(ix.id, &code, pk, Some(i as u32)));
                }
            }
        }
        v => {
            if let Ok(code) = secondary_code(v) {
                out.push(entry(ix.id, &code, pk, None));
            }
        }
    }
}

/// A geospatial index files a geometry under each cell of its covering; other values
/// are left out.
fn geo_entries(ix: &IndexInfo, value: &Datum, pk: &[u8], out: &mut Rows) {
    let mut add = |g: &Datum, tag: Option<u32>| {
        if !super::geo::shape::is_geometry(g) {
            return;
        }
        let Ok(shape) = super::geo::shape::parse(g) else {
            return;
        };
        for cell in super::geo::cover::covering(&shape) {
            let code = crate::keycode::encode(&super::geo::cover::cell_value(cell));
            out.push(entry(ix.id, &code, pk, tag));
        }
    };
    match value {
        Datum::Array(items) if ix.multi => {
            for (i, g) in items.iter().enumerate() {
                add(g, Some(i as u32));
            }
        }
        g => add(g, None),
    }
}

impl IndexFns for Indexer {
    fn entries(&self, doc_key: &[u8], doc: &[u8], only: Option<u64>) -> Result<Rows> {
        if doc_key.len() <= 9 || doc_key[0] != DATA_PREFIX {
            return Ok(Vec::new());
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&doc_key[1..9]);
        let table = {
            let c = self.catalog.read().expect("catalog lock");
            match c.by_key_id(u64::from_be_bytes(id)) {
                Some(t) if !t.indexes.is_empty() => t.clone(),
                _ => return Ok(Vec::new()),
            }
        };
        // Decoded only if some index function needs the whole document.
        let mut decoded: Option<Datum> = None;
        let pk = &doc_key[9..];
        let mut out = Vec::new();
        for ix in &table.indexes {
            if only.is_some_and(|o| o != ix.id) {
                continue;
            }
            let f = match self.func(ix) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(index = %ix.name, "cannot load an index function: {}", e.msg);
                    continue;
                }
            };
            // A function that fails on a document (a missing field...) leaves it out
            // of the index.
            let v = match &*f {
                IndexFn::Field(field) => {
                    crate::codec::field_path(doc, &[field.as_str()]).map_err(|e| {
                        crate::error::internal(format!("Corrupt document in storage: {}", e.0))
                    })?
                }
                IndexFn::Func(func) => {
                    if decoded.is_none() {
                        decoded = Some(decode_doc(doc)?);
                    }
                    let d = decoded.as_ref().expect("decoded above");
                    call_func(&self.ctx, func, std::slice::from_ref(d))
                        .and_then(|v| v.into_datum(&self.ctx))
                        .ok()
                }
            };
            if let Some(v) = v {
                value_entries(ix, &v, pk, &mut out);
            }
        }
        Ok(out)
    }

    fn has_indexes(&self, doc_key: &[u8]) -> bool {
        if doc_key.len() <= 9 || doc_key[0] != DATA_PREFIX {
            return false;
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&doc_key[1..9]);
        self.catalog
            .read()
            .expect("catalog lock")
            .by_key_id(u64::from_be_bytes(id))
            .is_some_and(|t| !t.indexes.is_empty())
    }

    fn log_retention_bytes(&self) -> u64 {
        let mb = self
            .catalog
            .read()
            .expect("catalog lock")
            .tables()
            .map(|(_, t)| t.feed_retention_mb)
            .max()
            .unwrap_or(0);
        u64::from(mb) << 20
    }

    fn index_exists(&self, index_id: u64) -> bool {
        self.catalog
            .read()
            .expect("catalog lock")
            .tables()
            .any(|(_, t)| t.indexes.iter().any(|ix| ix.id == index_id))
    }
}

fn table_arg(args: &[Val]) -> Result<Rc<super::table::TableRef>> {
    match args.first() {
        Some(Val::Table(t)) => Ok(t.clone()),
        Some(other) => Err(logic(format!(
            "Expected type TABLE but found {}.",
            super::types::type_of(other)
        ))),
        None => Err(logic("Expected a table.")),
    }
}

fn counter(name: &str, n: f64) -> Datum {
    let mut o = Object::new();
    o.insert(name.into(), Datum::Num(n));
    Datum::object(o)
}

fn pk_conflict(name: &str) -> ReqlError {
    logic(format!(
        "Index name conflict: `{name}` is the name of the primary key."
    ))
}

/// The index terms other than index_list.
pub fn apply(ctx: &Rc<Ctx>, ty: u32, args: &mut [Val], opt: &Optargs) -> Result<Val> {
    let t = table_arg(args)?;
    let system = t.system.is_some();
    let display = format!("{}.{}", t.info.db, t.info.name);
    Ok(Val::Datum(match ty {
        tt::INDEX_CREATE => {
            let name = string(&arg_datum(ctx, args, 1)?)?.to_string();
            if name == t.info.primary_key {
                return Err(pk_conflict(&name));
            }
            let mut ix = match args.get_mut(2) {
                None => field_index(&name),
                Some(v) => index_from_arg(&name, std::mem::replace(v, Val::Datum(Datum::Null)))?,
            };
            if let Some(d) = opt.datum("multi")? {
                ix.multi = boolean(&d)?;
            }
            if let Some(d) = opt.datum("geo")? {
                ix.geo = boolean(&d)?;
            }
            if system {
                return Err(op_failed(format!(
                    "Database `{SYSTEM_DB}` is special; you can't create secondary indexes on the tables in it."
                )));
            }
            t.store.index_create(&t.info, ix)?;
            counter("created", 1.0)
        }
        tt::INDEX_DROP => {
            let name = string(&arg_datum(ctx, args, 1)?)?.to_string();
            if system {
                return Err(op_failed(format!(
                    "Index `{name}` does not exist on table `{display}`."
                )));
            }
            t.store.index_drop(&t.info, &name)?;
            counter("dropped", 1.0)
        }
        tt::INDEX_RENAME => {
            let old = string(&arg_datum(ctx, args, 1)?)?.to_string();
            let new = string(&arg_datum(ctx, args, 2)?)?.to_string();
            for n in [&old, &new] {
                if *n == t.info.primary_key {
                    return Err(pk_conflict(n));
                }
            }
            let overwrite = match opt.datum("overwrite")? {
                Some(d) => boolean(&d)?,
                None => false,
            };
            if system {
                return Err(op_failed(format!(
                    "Index `{old}` does not exist on table `{display}`."
                )));
            }
            let changed = t.store.index_rename(&t.info, &old, &new, overwrite)?;
            counter("renamed", if changed { 1.0 } else { 0.0 })
        }
        tt::INDEX_STATUS | tt::INDEX_WAIT => {
            let mut names = Vec::new();
            for i in 1..args.len() {
                names.push(string(&arg_datum(ctx, args, i)?)?.to_string());
            }
            let mut poll_ms = 5;
            loop {
                // Fresh from the catalog every time: builds finish meanwhile.
                let info = if system {
                    t.info.clone()
                } else {
                    t.store.table(&t.info.db, &t.info.name)?
                };
                if let Some(missing) = names.iter().find(|n| info.index(n).is_none()) {
                    return Err(op_failed(format!(
                        "Index `{missing}` was not found on table `{display}`."
                    )));
                }
                let chosen: Vec<&IndexInfo> = info
                    .indexes
                    .iter()
                    .filter(|ix| names.is_empty() || names.contains(&ix.name))
                    .collect();
                if ty == tt::INDEX_WAIT && chosen.iter().any(|ix| !ix.ready) {
                    rdb_io::fiber::block_on(rdb_io::sleep(std::time::Duration::from_millis(
                        poll_ms,
                    )));
                    poll_ms = (poll_ms * 2).min(WAIT_POLL_MS_MAX);
                    continue;
                }
                break Datum::array(chosen.iter().map(|ix| status(&t.store, ix)).collect());
            }
        }
        _ => unreachable!("dispatched on index terms"),
    }))
}

/// `index_create(name)`: an index on the field of that name.
fn field_index(name: &str) -> IndexInfo {
    let var = serde_json::json!([tt::VAR, [1]]);
    let f = serde_json::json!([
        tt::FUNC,
        [[tt::MAKE_ARRAY, [1]], [tt::BRACKET, [var, name]]]
    ]);
    IndexInfo {
        name: name.to_string(),
        id: 0,
        function: f.to_string(),
        multi: false,
        geo: false,
        ready: false,
    }
}

/// The index an `index_create` argument describes: a deterministic function, or the
/// binary definition `index_status` reports for another index.
fn index_from_arg(name: &str, v: Val) -> Result<IndexInfo> {
    match v {
        Val::Func(func) => {
            if !super::deterministic_everywhere(&func.body) {
                return Err(logic(
                    "Could not prove function deterministic.  Index functions must be deterministic.",
                ));
            }
            Ok(IndexInfo {
                name: name.to_string(),
                id: 0,
                function: func.to_wire_json().to_string(),
                multi: false,
                geo: false,
                ready: false,
            })
        }
        Val::Datum(Datum::Binary(ref b)) => {
            let bad = |why: &str| {
                logic(format!(
                    "Binary blob passed to index create could not be interpreted as a reql_index_function ({why})."
                ))
            };
            let body = b
                .strip_prefix(BLOB_MAGIC)
                .ok_or_else(|| bad("unknown format"))?;
            let v: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| bad(&e.to_string()))?;
            let function = v
                .get("function")
                .ok_or_else(|| bad("no function"))?
                .to_string();
            // Checked like a new function: it must parse and be deterministic.
            let term = crate::term::parse(v.get("function").expect("checked"))?;
            if term.ty() != tt::FUNC || !super::deterministic(&term) {
                return Err(bad("not a deterministic function"));
            }
            Ok(IndexInfo {
                name: name.to_string(),
                id: 0,
                function,
                multi: v.get("multi").and_then(|m| m.as_bool()).unwrap_or(false),
                geo: v.get("geo").and_then(|m| m.as_bool()).unwrap_or(false),
                ready: false,
            })
        }
        other => Err(logic(format!(
            "Expected type FUNCTION but found {}.",
            other.type_name()
        ))),
    }
}

/// The binary definition of an index (`function` in its status).
fn blob(ix: &IndexInfo) -> Datum {
    let def = serde_json::json!({
        "function": serde_json::from_str::<serde_json::Value>(&ix.function)
            .unwrap_or(serde_json::Value::Null),
        "multi": ix.multi,
        "geo": ix.geo,
    });
    let mut b = BLOB_MAGIC.to_vec();
    b.extend_from_slice(def.to_string().as_bytes());
    Datum::Binary(b.into())
}

/// One row of `index_status`/`index_wait`.
fn status(store: &crate::store::Store, ix: &IndexInfo) -> Datum {
    let mut o = Object::new();
    o.insert("index".into(), Datum::str(ix.name.as_str()));
    if !ix.ready {
        let (done, total) = store.build_progress(ix.id).unwrap_or((0, 0));
        let p = if total == 0 {
            0.0
        } else {
            (done as f64 / total as f64).min(0.99)
        };
        o.insert("progress".into(), Datum::Num(p));
    }
    o.insert("ready".into(), Datum::Bool(ix.ready));
    o.insert("outdated".into(), Datum::Bool(false));
    o.insert("multi".into(), Datum::Bool(ix.multi));
    o.insert("geo".into(), Datum::Bool(ix.geo));
    o.insert("function".into(), blob(ix));
    o.insert("query".into(), Datum::str(create_query(ix)));
    Datum::object(o)
}

/// The JavaScript `indexCreate` call that makes this index, as RethinkDB reports it.
fn create_query(ix: &IndexInfo) -> String {
    let f = serde_json::from_str::<serde_json::Value>(&ix.function)
        .ok()
        .and_then(|v| crate::term::parse(&v).ok())
        .map(|t| super::pretty::js(&t))
        .unwrap_or_else(|| "function() { ... }".into());
    let mut opts = Vec::new();
    if ix.multi {
        opts.push("multi: true");
    }
    if ix.geo {
        opts.push("geo: true");
    }
    let opts = if opts.is_empty() {
        String::new()
    } else {
        format!(", {{{}}}", opts.join(", "))
    };
    format!("indexCreate('{}', {f}{opts})", ix.name)
}

/// The index a read names: `None` for the primary key; errors for indexes that do not
/// exist or are still being built, and for geospatial ones (only their own terms read
/// them).
pub fn resolve(t: &TableInfo, name: &str) -> Result<Option<IndexInfo>> {
    if name == t.primary_key {
        return Ok(None);
    }
    let ix = resolve_any(t, name)?;
    if ix.geo {
        return Err(logic(format!(
            "Index `{name}` is a geospatial index.  Only get_nearest and get_intersecting can use a geospatial index."
        )));
    }
    Ok(Some(ix))
}

/// A secondary index that exists and is built, of any kind.
pub fn resolve_any(t: &TableInfo, name: &str) -> Result<IndexInfo> {
    match t.index(name) {
        None => Err(op_failed(format!(
            "Index `{name}` was not found on table `{}.{}`.",
            t.db, t.name
        ))),
        Some(ix) if !ix.ready => Err(ReqlError::new(
            ErrorKind::OpFailed,
            format!(
                "Index `{name}` on table `{}.{}` was accessed before its construction was finished.",
                t.db, t.name
            ),
        )),
        Some(ix) => Ok(ix.clone()),
    }
}
