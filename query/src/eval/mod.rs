//! The evaluator: walks a checked term tree and produces values. Arrays are computed
//! eagerly (as RethinkDB does); streams (`r.range()`, later tables) stay lazy and are
//! pulled in batches by the connection.

mod admin;
mod arith;
mod array;
mod compile;
mod control;
pub mod feed;
pub(crate) mod geo;
mod hook;
pub mod http;
pub mod index;
pub mod js;
mod object;
pub mod point;
mod pretty;
mod seq;
mod string;
mod system;
pub mod table;
pub(crate) mod time;
mod types;
mod workers;
mod write;

use crate::datum::{Datum, Object};
use crate::error::{logic, ErrorKind, Frame, ReqlError, Result};
use crate::term::{self, Op, Term};
use crate::term_type as tt;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

pub use seq::Stream;

/// Default for the `array_limit` global optarg.
pub const ARRAY_LIMIT_DEFAULT: usize = 100_000;

/// Per-query state shared by every term of one query.
pub struct Ctx {
    pub array_limit: usize,
    /// `r.now()`: one instant per query, in epoch seconds (millisecond precision).
    pub now_epoch_secs: f64,
    pub global_optargs: HashMap<String, Datum>,
    /// Where tables live; `None` for pure evaluation (tests, optarg evaluation).
    pub store: Option<Rc<crate::store::Store>>,
    /// The changefeeds this query opened (the session paces their batches).
    pub feeds: std::cell::RefCell<Vec<Rc<feed::FeedControl>>>,
}

impl Ctx {
    pub fn new(global_optargs: HashMap<String, Datum>) -> Result<Rc<Ctx>> {
        Ctx::with_store(global_optargs, None)
    }

    pub fn with_store(
        global_optargs: HashMap<String, Datum>,
        store: Option<Rc<crate::store::Store>>,
    ) -> Result<Rc<Ctx>> {
        let mut array_limit = ARRAY_LIMIT_DEFAULT;
        if let Some(d) = global_optargs.get("array_limit") {
            let n = d.as_num().ok_or_else(|| {
                logic(format!("Expected type NUMBER but found {}.", d.type_name()))
            })?;
            if n < 1.0 {
                return Err(logic(format!(
                    "Illegal array size limit `{}`.  (Must be >= 1.)",
                    crate::json::to_json(d)
                )));
            }
            array_limit = n as usize;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as f64 / 1000.0)
            .unwrap_or(0.0);
        Ok(Rc::new(Ctx {
            array_limit,
            now_epoch_secs: now,
            global_optargs,
            store,
            feeds: Default::default(),
        }))
    }

    /// Fails once an array grows past `array_limit`.
    pub fn check_array(&self, len: usize) -> Result<()> {
        if len > self.array_limit {
            return Err(ReqlError::new(
                ErrorKind::ResourceLimit,
                format!(
                    "Array over size limit `{}`.  To raise the number of allowed elements, modify the `array_limit` option to `.run` (not available in the Data Explorer), or use an index.",
                    self.array_limit
                ),
            ));
        }
        // An array of `len` datums must also fit the query's memory (asked before
        // building it: with a raised `array_limit` one allocation could be gigabytes).
        crate::error::reserve((len as u64).saturating_mul(std::mem::size_of::<Datum>() as u64))
    }
}

/// Variable bindings visible to a term: a persistent list so closures can capture it.
#[derive(Clone, Default)]
pub struct Env {
    vars: Option<Rc<VarNode>>,
    implicit: Option<Datum>,
    /// Set while evaluating the arguments of `merge`, where `r.literal` is legal.
    literal_ok: bool,
}

struct VarNode {
    id: i64,
    val: Datum,
    next: Option<Rc<VarNode>>,
}

impl Env {
    fn bind(&self, id: i64, val: Datum) -> Env {
        Env {
            vars: Some(Rc::new(VarNode {
                id,
                val,
                next: self.vars.clone(),
            })),
            implicit: self.implicit.clone(),
            literal_ok: self.literal_ok,
        }
    }
    fn with_literal_ok(&self, ok: bool) -> Env {
        if self.literal_ok == ok {
            return self.clone();
        }
        Env {
            literal_ok: ok,
            ..self.clone()
        }
    }
    fn lookup(&self, id: i64) -> Option<&Datum> {
        let mut cur = self.vars.as_deref();
        while let Some(n) = cur {
            if n.id == id {
                return Some(&n.val);
            }
            cur = n.next.as_deref();
        }
        None
    }
}

/// A ReQL function value: a FUNC term closed over its environment.
pub struct Func {
    pub params: Vec<i64>,
    pub body: Rc<Term>,
    pub env: Env,
    /// Set for a function `r.js` returned: calls run that JavaScript instead of `body`.
    pub js: Option<Rc<js::JsFunc>>,
}

impl Func {
    pub fn arity(&self) -> usize {
        self.params.len()
    }

    /// The wire JSON of this function as a FUNC term (what `term::parse` reads back),
    /// for storing it (write hooks, index functions).
    pub fn to_wire_json(&self) -> serde_json::Value {
        let params: Vec<serde_json::Value> = self
            .params
            .iter()
            .map(|p| serde_json::Value::from(*p))
            .collect();
        serde_json::json!([
            tt::FUNC,
            [[tt::MAKE_ARRAY, params], term::to_wire_json(&self.body)]
        ])
    }
}

/// Something callable where ReQL expects a function: a real function, or a datum that
/// acts as a constant (map) or as a filter-by-example predicate.
#[derive(Clone)]
pub enum Callable {
    Func(Rc<Func>),
    Const(Datum),
    /// A field name standing for `row(field)` (sum('x'), group('x'), order_by('x')).
    Field(Datum),
    /// A value standing for `row == value` (contains, offsets_of).
    Eq(Datum),
}

impl Callable {
    pub fn call(&self, ctx: &Rc<Ctx>, args: &[Datum]) -> Result<Val> {
        match self {
            Callable::Func(f) => call_func(ctx, f, args),
            Callable::Const(d) => Ok(Val::Datum(d.clone())),
            Callable::Field(f) => {
                let row = args.first().cloned().unwrap_or(Datum::Null);
                let key = string(f)?;
                object::get_field(&row, key).map(Val::Datum)
            }
            Callable::Eq(x) => Ok(Val::Datum(Datum::Bool(
                args.first().map(|a| a == x).unwrap_or(false),
            ))),
        }
    }
    pub fn call_datum(&self, ctx: &Rc<Ctx>, args: &[Datum]) -> Result<Datum> {
        self.call(ctx, args)?.into_datum(ctx)
    }
    pub fn arity(&self) -> Option<usize> {
        match self {
            Callable::Func(f) => Some(f.arity()),
            _ => None,
        }
    }
}

pub fn call_func(ctx: &Rc<Ctx>, f: &Func, args: &[Datum]) -> Result<Val> {
    call_func_with(ctx, f, args, false)
}

/// Calls a function; `literal_ok` lets its body build `r.literal` values (merge).
pub fn call_func_with(ctx: &Rc<Ctx>, f: &Func, args: &[Datum], literal_ok: bool) -> Result<Val> {
    if let Some(js) = &f.js {
        return js::call(ctx, js, args);
    }
    if !f.params.is_empty() && f.params.len() != args.len() {
        return Err(logic(format!(
            "Expected function with {} argument{} but found function with {} argument{}.",
            args.len(),
            if args.len() == 1 { "" } else { "s" },
            f.params.len(),
            if f.params.len() == 1 { "" } else { "s" }
        )));
    }
    let mut env = f.env.with_literal_ok(literal_ok);
    for (id, a) in f.params.iter().zip(args) {
        env = env.bind(*id, a.clone());
    }
    if f.params.len() == 1 {
        env.implicit = Some(args[0].clone());
    }
    eval(ctx, &env, &f.body)
}

/// Result of a group: (group key, value) pairs kept in key order.
#[derive(Clone, Debug, Default)]
pub struct Grouped {
    pub groups: Vec<(Datum, Datum)>,
    /// Still a grouped stream as RethinkDB has it (`type_of` says GROUPED_STREAM): made
    /// by `group` and carried through the per-group transforms RethinkDB keeps lazy.
    pub stream: bool,
}

impl Grouped {
    /// Grouped data (not a grouped stream).
    pub fn data(groups: Vec<(Datum, Datum)>) -> Grouped {
        Grouped {
            groups,
            stream: false,
        }
    }
}

impl std::ops::Deref for Grouped {
    type Target = Vec<(Datum, Datum)>;
    fn deref(&self) -> &Self::Target {
        &self.groups
    }
}

/// A value produced by evaluating a term.
pub enum Val {
    Datum(Datum),
    Stream(Stream),
    Func(Rc<Func>),
    Grouped(Rc<Grouped>),
    Db(Rc<str>),
    Table(Rc<table::TableRef>),
    /// One document of a table (or `null`), with the primary key it was asked for.
    Single(Rc<table::TableRef>, Datum, Datum),
}

impl Val {
    pub fn type_name(&self) -> String {
        match self {
            Val::Datum(d) => d.type_name(),
            Val::Stream(_) => "SEQUENCE".into(),
            Val::Func(_) => "FUNCTION".into(),
            Val::Grouped(_) => "GROUPED_DATA".into(),
            Val::Db(_) => "DATABASE".into(),
            Val::Table(_) => "TABLE".into(),
            Val::Single(..) => "SELECTION<OBJECT>".into(),
        }
    }

    /// The value as a datum; streams are read to the end (bounded by `array_limit`).
    pub fn into_datum(self, ctx: &Ctx) -> Result<Datum> {
        match self {
            Val::Datum(d) => Ok(d),
            Val::Stream(s) => Ok(Datum::array(s.collect_all(ctx)?)),
            Val::Grouped(g) => Ok(grouped_to_datum(&g)),
            Val::Single(_, d, _) => Ok(d),
            Val::Table(_) => Err(logic("Expected type DATUM but found TABLE:")),
            other => Err(logic(format!(
                "Expected type DATUM but found {}:\n{}",
                other.type_name(),
                other.describe()
            ))),
        }
    }

    fn describe(&self) -> String {
        match self {
            Val::Db(n) => format!("db(\"{n}\")"),
            Val::Func(_) => "function".into(),
            Val::Table(t) => format!("table(\"{}\")", t.info.name),
            _ => String::new(),
        }
    }

    /// A second handle on a value that is not a stream (streams cannot be shared).
    pub fn share(&self) -> Val {
        match self {
            Val::Datum(d) => Val::Datum(d.clone()),
            Val::Func(f) => Val::Func(f.clone()),
            Val::Grouped(g) => Val::Grouped(g.clone()),
            Val::Db(d) => Val::Db(d.clone()),
            Val::Table(t) => Val::Table(t.clone()),
            Val::Single(t, d, k) => Val::Single(t.clone(), d.clone(), k.clone()),
            Val::Stream(_) => Val::Datum(Datum::Null),
        }
    }

    pub fn into_callable(self) -> Callable {
        match self {
            Val::Func(f) => Callable::Func(f),
            Val::Datum(d) | Val::Single(_, d, _) => Callable::Const(d),
            other => Callable::Const(Datum::str(other.type_name())),
        }
    }
}

pub fn grouped_to_datum(g: &Grouped) -> Datum {
    let mut o = Object::new();
    o.insert(crate::datum::REQL_TYPE.into(), Datum::str("GROUPED_DATA"));
    o.insert(
        "data".into(),
        Datum::array(
            g.iter()
                .map(|(k, v)| Datum::array(vec![k.clone(), v.clone()]))
                .collect(),
        ),
    );
    Datum::object(o)
}

/// Checks a parsed query before evaluation: every term known, arities and optional
/// arguments right, variables bound, `r.row` used only where it means one thing.
pub fn check(t: &Term) -> Result<()> {
    check_at(t, &mut Vec::new(), 0, true)
}

/// Writes and catalog changes (RethinkDB's list).
fn is_write_or_meta(ty: u32) -> bool {
    matches!(
        ty,
        tt::UPDATE
            | tt::DELETE
            | tt::INSERT
            | tt::REPLACE
            | tt::DB_CREATE
            | tt::DB_DROP
            | tt::TABLE_CREATE
            | tt::TABLE_DROP
            | tt::WAIT
            | tt::RECONFIGURE
            | tt::REBALANCE
            | tt::SYNC
            | tt::GRANT
            | tt::SET_WRITE_HOOK
            | tt::GET_WRITE_HOOK
            | tt::INDEX_CREATE
            | tt::INDEX_DROP
            | tt::INDEX_WAIT
            | tt::INDEX_RENAME
    )
}

/// Terms whose arguments after the first may not write (they run per element).
fn forbids_writes(ty: u32) -> bool {
    matches!(
        ty,
        tt::REDUCE
            | tt::MAP
            | tt::FOLD
            | tt::FILTER
            | tt::CONCAT_MAP
            | tt::GROUP
            | tt::INNER_JOIN
            | tt::OUTER_JOIN
            | tt::EQ_JOIN
            | tt::UPDATE
            | tt::DELETE
            | tt::REPLACE
            | tt::INSERT
            | tt::COUNT
            | tt::SUM
            | tt::AVG
            | tt::MIN
            | tt::MAX
    )
}

fn check_at(t: &Term, scope: &mut Vec<i64>, implicit_depth: u32, writes_ok: bool) -> Result<()> {
    deep!(check_at(t, scope, implicit_depth, writes_ok));
    let Term::Op(op) = t else { return Ok(()) };
    if !writes_ok && is_write_or_meta(op.ty) {
        return Err(crate::error::compile(
            "Cannot nest writes or meta ops in stream operations.  Use FOR_EACH instead.",
        ));
    }
    let child_ok = |zeroth: bool| writes_ok && (zeroth || !forbids_writes(op.ty));
    if op.ty == tt::ASC || op.ty == tt::DESC {
        // Legal only where `order_by` or an ordered `union` reads them; those callers
        // check the inner term directly.
        return Err(crate::error::compile(format!(
            "{} may only be used as an argument to ORDER_BY or UNION.",
            if op.ty == tt::ASC { "ASC" } else { "DESC" }
        )));
    }
    match op.ty {
        tt::VAR => {
            let id = var_id(op)?;
            if !scope.contains(&id) {
                return Err(crate::error::compile("Variable name not found."));
            }
            return Ok(());
        }
        tt::IMPLICIT_VAR => {
            if implicit_depth != 1 {
                return Err(crate::error::compile(if implicit_depth == 0 {
                    "r.row is not defined in this context."
                } else {
                    "Cannot use r.row in nested queries.  Use functions instead."
                }));
            }
            return Ok(());
        }
        tt::FUNC => {
            let params = func_params(op)?;
            let n = scope.len();
            scope.extend(params.iter().copied());
            let depth = if params.len() == 1 {
                implicit_depth + 1
            } else {
                implicit_depth
            };
            let r = check_at(&op.args[1], scope, depth, child_ok(false))
                .map_err(|e| e.with_frame(Frame::Pos(1)));
            scope.truncate(n);
            return r;
        }
        tt::MAKE_OBJ => {
            for (k, v) in &op.optargs {
                check_at(v, scope, implicit_depth, child_ok(false))
                    .map_err(|e| e.with_frame(Frame::Opt(k.clone())))?;
            }
            return Ok(());
        }
        _ => {}
    }
    let Some(spec) = term::spec(op.ty) else {
        return Err(match crate::term_type::name(op.ty) {
            Some(name) => {
                crate::error::compile(format!("Term {name} is not supported by this server yet."))
            }
            None => crate::error::compile(format!("Unknown term type: {}.", op.ty)),
        });
    };
    let has_args_term = op.args.iter().any(|a| a.ty() == tt::ARGS);
    if !has_args_term && !term::arity_ok(spec.min, spec.max, op.args.len()) {
        return Err(crate::error::compile(term::arity_message(
            spec.min,
            spec.max,
            op.args.len(),
        )));
    }
    // `order_by(r.desc(...))`, `order_by(index=r.desc(...))`, `union(interleave=r.desc(..))`
    // and `union(interleave=[r.asc(...), ...])`: check what ASC/DESC wrap.
    let ordering = |t: &Rc<Term>| -> Rc<Term> {
        match &**t {
            Term::Op(o) if (o.ty == tt::ASC || o.ty == tt::DESC) && o.args.len() == 1 => {
                o.args[0].clone()
            }
            _ => t.clone(),
        }
    };
    for (k, v) in &op.optargs {
        let v = &match (op.ty, k.as_str(), &**v) {
            (tt::ORDER_BY, "index", _) | (tt::UNION, "interleave", _) => match &**v {
                Term::Op(o) if o.ty == tt::MAKE_ARRAY && op.ty == tt::UNION => {
                    for (i, a) in o.args.iter().enumerate() {
                        check_at(&ordering(a), scope, implicit_depth, child_ok(false)).map_err(
                            |e| {
                                e.with_frame(Frame::Pos(i))
                                    .with_frame(Frame::Opt(k.clone()))
                            },
                        )?;
                    }
                    continue;
                }
                _ => ordering(v),
            },
            _ => v.clone(),
        };
        if !spec.optargs.contains(&k.as_str()) {
            return Err(
                crate::error::compile(format!("Unrecognized optional argument `{k}`."))
                    .with_frame(Frame::Opt(k.clone())),
            );
        }
        check_at(v, scope, implicit_depth, child_ok(false))
            .map_err(|e| e.with_frame(Frame::Opt(k.clone())))?;
    }
    for (i, a) in op.args.iter().enumerate() {
        let a = &if op.ty == tt::ORDER_BY {
            ordering(a)
        } else {
            a.clone()
        };
        check_at(a, scope, implicit_depth, child_ok(i == 0))
            .map_err(|e| e.with_frame(Frame::Pos(i)))?;
    }
    Ok(())
}

fn var_id(op: &Op) -> Result<i64> {
    match op.args.first().map(|a| &**a) {
        Some(Term::Datum(Datum::Num(n))) if op.args.len() == 1 => Ok(*n as i64),
        _ => Err(crate::error::compile(
            "A variable term has a non-numeric name datum.",
        )),
    }
}

fn func_params(op: &Op) -> Result<Vec<i64>> {
    if op.args.len() != 2 {
        return Err(crate::error::compile(format!(
            "FUNC takes exactly two arguments (got {})",
            op.args.len()
        )));
    }
    let nums = |items: Vec<&Datum>| -> Result<Vec<i64>> {
        items
            .into_iter()
            .map(|d| match d {
                Datum::Num(n) => Ok(*n as i64),
                _ => Err(crate::error::compile(
                    "FUNC variables must be a literal *array* of numbers.",
                )),
            })
            .collect()
    };
    match &*op.args[0] {
        Term::Datum(Datum::Array(a)) => nums(a.iter().collect()),
        Term::Op(inner) if inner.ty == tt::MAKE_ARRAY => {
            let mut out = Vec::new();
            for a in &inner.args {
                match &**a {
                    Term::Datum(Datum::Num(n)) => out.push(*n as i64),
                    _ => {
                        return Err(crate::error::compile(
                            "FUNC variables must be a literal *array* of numbers.",
                        ))
                    }
                }
            }
            Ok(out)
        }
        _ => Err(crate::error::compile(
            "FUNC variables must be a literal *array* of numbers.",
        )),
    }
}

/// Longest string a query may build, in bytes. RethinkDB has no such cap; without one
/// a loop of concatenations doubles a string until the process runs out of memory.
pub const STRING_BYTES_MAX: usize = 64 << 20;

/// Fails for a string of `len` bytes (callers building strings ask before they do).
pub fn check_string_len(len: usize) -> Result<()> {
    if len > STRING_BYTES_MAX {
        return Err(ReqlError::new(
            ErrorKind::ResourceLimit,
            format!("String of {len} bytes is over the size limit ({STRING_BYTES_MAX} bytes)."),
        ));
    }
    Ok(())
}

/// Evaluates a term.
pub fn eval(ctx: &Rc<Ctx>, env: &Env, t: &Rc<Term>) -> Result<Val> {
    deep!(eval(ctx, env, t));
    crate::error::tick()?;
    let v = eval_term(ctx, env, t)?;
    // Every string a term builds is checked here, whatever built it.
    if let Val::Datum(Datum::Str(s)) = &v {
        check_string_len(s.len())?;
    }
    Ok(v)
}

fn eval_term(ctx: &Rc<Ctx>, env: &Env, t: &Rc<Term>) -> Result<Val> {
    let op = match &**t {
        Term::Datum(d) => return Ok(Val::Datum(d.clone())),
        Term::Op(op) => op,
    };
    match op.ty {
        tt::VAR => {
            let id = var_id(op)?;
            env.lookup(id)
                .cloned()
                .map(Val::Datum)
                .ok_or_else(|| crate::error::compile("Variable name not found."))
        }
        tt::IMPLICIT_VAR => env
            .implicit
            .clone()
            .map(Val::Datum)
            .ok_or_else(|| crate::error::compile("r.row is not defined in this context.")),
        tt::FUNC => Ok(Val::Func(Rc::new(Func {
            params: func_params(op)?,
            body: op.args[1].clone(),
            env: env.clone(),
            js: None,
        }))),
        tt::MAKE_OBJ => {
            let mut m = Object::new();
            for (k, v) in &op.optargs {
                let d = eval(ctx, env, v)
                    .and_then(|v| v.into_datum(ctx))
                    .map_err(|e| e.with_frame(Frame::Opt(k.clone())))?;
                m.insert(k.clone(), d);
            }
            Ok(Val::Datum(crate::json::finish_object(m)?))
        }
        tt::LITERAL => {
            if !env.literal_ok {
                return Err(logic(
                    "Stray literal keyword found: literal is only legal inside of the object passed to merge or update and cannot nest inside other literals.",
                ));
            }
            let inner = env.with_literal_ok(false);
            let value = match op.args.first() {
                None => None,
                Some(a) => Some(
                    eval(ctx, &inner, a)
                        .and_then(|v| v.into_datum(ctx))
                        .map_err(|e| e.with_frame(Frame::Pos(0)))?,
                ),
            };
            Ok(Val::Datum(object::make_literal(value)))
        }
        tt::ORDER_BY => {
            let env = env.with_literal_ok(false);
            let first = op
                .args
                .first()
                .ok_or_else(|| logic("ORDER_BY needs a sequence."))?;
            let seq = eval(ctx, &env, first).map_err(|e| e.with_frame(Frame::Pos(0)))?;
            let mut keys = Vec::with_capacity(op.args.len().saturating_sub(1));
            for (i, a) in op.args.iter().enumerate().skip(1) {
                let (desc, t) = match &**a {
                    Term::Op(o) if o.ty == tt::ASC || o.ty == tt::DESC => {
                        (o.ty == tt::DESC, &o.args[0])
                    }
                    _ => (false, a),
                };
                keys.push((
                    desc,
                    eval(ctx, &env, t).map_err(|e| e.with_frame(Frame::Pos(i)))?,
                ));
            }
            let index = op
                .optargs
                .iter()
                .find(|(k, _)| k == "index")
                .map(|(_, t)| t);
            if keys.is_empty() && index.is_none() {
                return Err(logic("Must specify something to order by."));
            }
            table::order_by(ctx, &env, seq, keys, index)
        }
        tt::BRANCH | tt::OR | tt::AND | tt::DEFAULT | tt::FUNCALL => {
            control::eval_lazy(ctx, env, op)
        }
        _ => {
            // `r.args` and array literals pass `merge`'s permission for `r.literal` on.
            let keeps_literal = matches!(op.ty, tt::ARGS | tt::MAKE_ARRAY);
            let plain = if keeps_literal {
                env.clone()
            } else {
                env.with_literal_ok(false)
            };
            if matches!(op.ty, tt::UPDATE | tt::REPLACE)
                && op.args.len() >= 2
                && !deterministic(&op.args[1])
            {
                let optargs = Optargs {
                    ctx,
                    env: &plain,
                    op,
                };
                let non_atomic = match optargs.datum("non_atomic")? {
                    None => false,
                    Some(d) => boolean(&d)?,
                };
                if !non_atomic {
                    return Err(logic(
                        "Could not prove argument deterministic.  Maybe you want to use the non_atomic flag?",
                    ));
                }
            }
            if matches!(op.ty, tt::INSERT | tt::UPDATE | tt::REPLACE | tt::DELETE)
                && op.optargs.iter().any(|(k, _)| k == "return_vals")
            {
                return Err(logic(
                    "Error: encountered obsolete optarg `return_vals`.  Use `return_changes` instead.",
                ));
            }
            if matches!(op.ty, tt::UPDATE | tt::REPLACE)
                && op.args.len() == 2
                && op.args[1].ty() != tt::FUNC
                && op.args[1].ty() != tt::ARGS
            {
                // A value argument is evaluated per row, as RethinkDB rewrites it into a
                // function: its errors count against the row, not the query.
                let sel =
                    eval(ctx, &plain, &op.args[0]).map_err(|e| e.with_frame(Frame::Pos(0)))?;
                let f = Val::Func(Rc::new(Func {
                    params: Vec::new(),
                    body: op.args[1].clone(),
                    env: env.with_literal_ok(op.ty == tt::UPDATE),
                    js: None,
                }));
                let optargs = Optargs {
                    ctx,
                    env: &plain,
                    op,
                };
                return apply(ctx, op.ty, vec![sel, f], &optargs);
            }
            // merge/update build with literals; filter-by-example matches them whole.
            let args = if matches!(op.ty, tt::MERGE | tt::UPDATE | tt::FILTER) {
                let lit = env.with_literal_ok(true);
                eval_args_with(ctx, &plain, &lit, op)?
            } else {
                eval_args(ctx, &plain, op)?
            };
            let env = &plain;
            let optargs = Optargs { ctx, env, op };
            if let Some(Val::Grouped(g)) = args.first() {
                if groupable(op.ty) {
                    return apply_grouped(ctx, op, g.clone(), args, &optargs);
                }
            }
            apply(ctx, op.ty, args, &optargs)
        }
    }
}

fn groupable(ty: u32) -> bool {
    !matches!(
        ty,
        tt::TYPE_OF
            | tt::UNGROUP
            | tt::COERCE_TO
            | tt::INFO
            | tt::ERROR
            | tt::LITERAL
            | tt::MAKE_ARRAY
            | tt::GROUP
            | tt::ARGS
    )
}

fn apply_grouped(
    ctx: &Rc<Ctx>,
    op: &Op,
    groups: Rc<Grouped>,
    mut args: Vec<Val>,
    optargs: &Optargs,
) -> Result<Val> {
    let rest: Vec<Val> = args.drain(1..).collect();
    // sum/avg/min/max by field name skip rows without the field, and a group left
    // with no rows disappears (RethinkDB filters before it reduces).
    let by_field = match (op.ty, rest.first()) {
        (tt::SUM | tt::AVG | tt::MIN | tt::MAX, Some(Val::Datum(Datum::Str(f)))) => Some(f.clone()),
        _ => None,
    };
    let mut out = Vec::with_capacity(groups.len());
    for (k, v) in groups.iter() {
        let mut a = Vec::with_capacity(rest.len() + 1);
        let v = match (&by_field, v) {
            (Some(f), Datum::Array(rows)) => {
                let kept: Vec<Datum> = rows
                    .iter()
                    .filter(|r| r.get_field(f).is_some())
                    .cloned()
                    .collect();
                if kept.is_empty() {
                    continue;
                }
                Datum::array(kept)
            }
            _ => v.clone(),
        };
        a.push(Val::Datum(v));
        for r in &rest {
            a.push(match r {
                Val::Datum(d) => Val::Datum(d.clone()),
                Val::Func(f) => Val::Func(f.clone()),
                Val::Db(d) => Val::Db(d.clone()),
                Val::Grouped(g) => Val::Grouped(g.clone()),
                Val::Table(t) => Val::Table(t.clone()),
                Val::Single(t, d, k) => Val::Single(t.clone(), d.clone(), k.clone()),
                Val::Stream(_) => {
                    return Err(logic(
                        "Cannot use a stream as an argument to a grouped operation.",
                    ))
                }
            });
        }
        let counting_matches = op.ty == tt::COUNT && a.len() == 2;
        let r = apply(ctx, op.ty, a, optargs)?;
        // count(predicate) filters first: a group with no matching row disappears.
        if counting_matches && matches!(r, Val::Datum(Datum::Num(n)) if n == 0.0) {
            continue;
        }
        let d = match r {
            Val::Grouped(_) => return Err(logic("Cannot nest grouped data.")),
            other => other.into_datum(ctx)?,
        };
        out.push((k.clone(), d));
    }
    // Transforms RethinkDB applies lazily keep a grouped stream a stream.
    let stream = groups.stream
        && matches!(
            op.ty,
            tt::MAP
                | tt::FILTER
                | tt::CONCAT_MAP
                | tt::PLUCK
                | tt::WITHOUT
                | tt::WITH_FIELDS
                | tt::MERGE
                | tt::HAS_FIELDS
        );
    Ok(Val::Grouped(Rc::new(Grouped {
        groups: out,
        stream,
    })))
}

/// Lazily evaluated optional arguments of the current term.
pub struct Optargs<'a> {
    ctx: &'a Rc<Ctx>,
    env: &'a Env,
    op: &'a Op,
}

impl Optargs<'_> {
    pub fn get(&self, key: &str) -> Result<Option<Val>> {
        match self.op.optargs.iter().find(|(k, _)| k == key) {
            None => Ok(None),
            Some((_, t)) => eval(self.ctx, self.env, t)
                .map(Some)
                .map_err(|e| e.with_frame(Frame::Opt(key.to_string()))),
        }
    }
    pub fn datum(&self, key: &str) -> Result<Option<Datum>> {
        match self.get(key)? {
            None => Ok(None),
            Some(v) => v
                .into_datum(self.ctx)
                .map(Some)
                .map_err(|e| e.with_frame(Frame::Opt(key.to_string()))),
        }
    }
    pub fn has(&self, key: &str) -> bool {
        self.op.optargs.iter().any(|(k, _)| k == key)
    }

    /// A `left_bound`/`right_bound` optarg: `true` for "open", `false` for "closed".
    pub fn open_bound(&self, key: &str, default_open: bool) -> Result<bool> {
        match self.datum(key)? {
            None => Ok(default_open),
            Some(d) => match string(&d)? {
                "open" => Ok(true),
                "closed" => Ok(false),
                other => Err(logic(format!(
                    "Expected `open` or `closed` for optarg `{key}` (got `{other}`)."
                ))),
            },
        }
    }
}

/// Evaluates positional arguments, expanding `r.args` and re-checking arity after it.
pub(super) fn eval_args(ctx: &Rc<Ctx>, env: &Env, op: &Op) -> Result<Vec<Val>> {
    eval_args_with(ctx, env, env, op)
}

/// Like `eval_args`, with a separate environment for arguments after the first.
fn eval_args_with(ctx: &Rc<Ctx>, env: &Env, rest_env: &Env, op: &Op) -> Result<Vec<Val>> {
    let mut out = Vec::with_capacity(op.args.len());
    let mut expanded = false;
    for (i, a) in op.args.iter().enumerate() {
        let e = if i == 0 { env } else { rest_env };
        let v = eval(ctx, e, a).map_err(|e| e.with_frame(Frame::Pos(i)))?;
        if a.ty() == tt::ARGS {
            expanded = true;
            match v {
                Val::Datum(Datum::Array(ref items)) => {
                    out.extend(items.iter().cloned().map(Val::Datum));
                }
                other => {
                    return Err(logic(format!(
                        "Expected type ARRAY but found {}.",
                        other.type_name()
                    ))
                    .with_frame(Frame::Pos(i)))
                }
            }
        } else {
            out.push(v);
        }
    }
    if expanded {
        if let Some(spec) = term::spec(op.ty) {
            if !term::arity_ok(spec.min, spec.max, out.len()) {
                return Err(logic(term::arity_message(spec.min, spec.max, out.len())));
            }
        }
    }
    Ok(out)
}

/// Applies an eagerly evaluated term to its argument values.
fn apply(ctx: &Rc<Ctx>, ty: u32, mut args: Vec<Val>, opt: &Optargs) -> Result<Val> {
    // A transformation of a table's documents is remembered, so `changes()` after it
    // can apply it to each change.
    let spec = feed::transform_spec(ty, &args, opt)?;
    let v = match table::apply(ctx, ty, &mut args, opt)? {
        Some(v) => v,
        None => {
            let args = args.into_iter().map(table::plain).collect();
            apply_plain(ctx, ty, args, opt)?
        }
    };
    Ok(match (spec, v) {
        (Some(spec), Val::Stream(mut s)) => {
            s.spec = Some(Rc::new(spec));
            Val::Stream(s)
        }
        (_, v) => v,
    })
}

/// Applies a term whose arguments hold no tables or single selections.
fn apply_plain(ctx: &Rc<Ctx>, ty: u32, mut args: Vec<Val>, opt: &Optargs) -> Result<Val> {
    if ty == tt::COERCE_TO && matches!(args.first(), Some(Val::Stream(_))) {
        // Streams coerce only to containers; read it now so the datum rules apply.
        let target = arg_datum(ctx, &args, 1)?;
        let t = string(&target)?.to_uppercase();
        if matches!(t.as_str(), "ARRAY" | "OBJECT" | "DATUM") {
            let s = std::mem::replace(&mut args[0], Val::Datum(Datum::Null));
            args[0] = Val::Datum(s.into_datum(ctx)?);
        } else if t != "STREAM" && t != "BOOL" {
            return Err(logic(format!("Cannot coerce STREAM to {t}.")));
        }
    }
    if let Some(v) = arith::apply(ctx, ty, &args)? {
        return Ok(v);
    }
    if let Some(v) = geo::apply(ctx, ty, &mut args, opt)? {
        return Ok(v);
    }
    if let Some(v) = time::apply(ctx, ty, &args, opt)? {
        return Ok(v);
    }
    if let Some(v) = types::apply(ctx, ty, &args, opt)? {
        return Ok(v);
    }
    if let Some(v) = string::apply(ctx, ty, &args)? {
        return Ok(v);
    }
    if let Some(v) = array::apply(ctx, ty, &args, opt)? {
        return Ok(v);
    }
    seq::apply(ctx, ty, args, opt)
}

// ---- helpers shared by the op modules ----

/// The datum of argument `i`, with the argument's frame on any error.
pub fn arg_datum(_ctx: &Ctx, args: &[Val], i: usize) -> Result<Datum> {
    match &args[i] {
        Val::Datum(d) | Val::Single(_, d, _) => Ok(d.clone()),
        Val::Grouped(g) => Ok(grouped_to_datum(g)),
        Val::Stream(s) if s.sel.as_ref().is_some_and(|x| x.kind == "TABLE") => {
            Err(logic("Expected type DATUM but found TABLE:"))
        }
        Val::Stream(_) => Err(logic("Expected type DATUM but found SEQUENCE.")),
        other => Err(logic(format!(
            "Expected type DATUM but found {}:\n{}",
            other.type_name(),
            other.describe()
        ))
        .with_frame(Frame::Pos(i))),
    }
}

/// Whether a function body always gives the same result for the same input (what
/// `update`/`replace` need to apply it atomically): no randomness, r.js, r.http, table
/// reads or catalog terms.
pub fn deterministic(t: &Term) -> bool {
    deterministic_at(t, false)
}

/// `deterministic`, and also the same on every server: what index functions and write
/// hooks need. Geometry terms other than `point` depend on floating-point details.
pub fn deterministic_everywhere(t: &Term) -> bool {
    deterministic_at(t, true)
}

fn deterministic_at(t: &Term, everywhere: bool) -> bool {
    deep!(deterministic_at(t, everywhere));
    let Term::Op(op) = t else { return true };
    let bad = matches!(
        op.ty,
        tt::JAVASCRIPT
            | tt::HTTP
            | tt::RANDOM
            | tt::SAMPLE
            | tt::TABLE
            | tt::DB
            | tt::DB_CREATE
            | tt::DB_DROP
            | tt::DB_LIST
            | tt::TABLE_CREATE
            | tt::TABLE_DROP
            | tt::TABLE_LIST
            | tt::CONFIG
            | tt::STATUS
            | tt::WAIT
            | tt::SYNC
            | tt::INDEX_CREATE
            | tt::INDEX_DROP
            | tt::INDEX_LIST
            | tt::INDEX_STATUS
            | tt::INDEX_WAIT
            | tt::INDEX_RENAME
    ) || (op.ty == tt::UUID && op.args.is_empty());
    // Geometry terms other than `point` give the same result only on the same server.
    let single_server = matches!(
        op.ty,
        tt::GEOJSON
            | tt::LINE
            | tt::POLYGON
            | tt::DISTANCE
            | tt::INTERSECTS
            | tt::INCLUDES
            | tt::CIRCLE
            | tt::GET_INTERSECTING
            | tt::FILL
            | tt::GET_NEAREST
            | tt::POLYGON_SUB
    );
    let refused = bad || (everywhere && single_server);
    !refused
        && op.args.iter().all(|a| deterministic_at(a, everywhere))
        && op
            .optargs
            .iter()
            .all(|(_, v)| deterministic_at(v, everywhere))
}

pub fn type_err(expected: &str, d: &Datum) -> ReqlError {
    logic(format!(
        "Expected type {expected} but found {}.",
        d.type_name()
    ))
}

/// Type errors on a NULL are "non-existence" errors in RethinkDB.
pub fn type_err_null_aware(expected: &str, d: &Datum) -> ReqlError {
    let mut e = type_err(expected, d);
    if matches!(d, Datum::Null) {
        e.kind = ErrorKind::NonExistence;
    }
    e
}

pub fn num(d: &Datum) -> Result<f64> {
    d.as_num().ok_or_else(|| type_err_null_aware("NUMBER", d))
}
pub fn string(d: &Datum) -> Result<&str> {
    d.as_str().ok_or_else(|| type_err_null_aware("STRING", d))
}
pub fn array(d: &Datum) -> Result<&Arc<Vec<Datum>>> {
    match d {
        Datum::Array(a) => Ok(a),
        _ => Err(type_err_null_aware("ARRAY", d)),
    }
}
pub fn object(d: &Datum) -> Result<&Arc<Object>> {
    match d {
        Datum::Object(o) if !d.is_ptype() => Ok(o),
        _ => Err(type_err_null_aware("OBJECT", d)),
    }
}
pub fn boolean(d: &Datum) -> Result<bool> {
    match d {
        Datum::Bool(b) => Ok(*b),
        _ => Err(type_err_null_aware("BOOL", d)),
    }
}

/// A number that must be an integer (indices, counts).
pub fn int(d: &Datum) -> Result<i64> {
    let n = num(d)?;
    const LIMIT: f64 = 9007199254740992.0;
    if n.fract() != 0.0 || n.abs() > LIMIT {
        let range = if n < -LIMIT {
            " (<-2^53)"
        } else if n > LIMIT {
            " (>2^53)"
        } else {
            ""
        };
        return Err(logic(format!(
            "Number not an integer{range}: {}",
            fmt_g20(n)
        )));
    }
    Ok(n as i64)
}

/// C's `%.20g`, which RethinkDB uses to print numbers in some messages.
pub fn fmt_g20(n: f64) -> String {
    if n == 0.0 {
        return if n.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let e = format!("{:.19e}", n);
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..20).contains(&exp) {
        let m = trim_zeros(mant);
        return format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    let decimals = (19 - exp).max(0) as usize;
    trim_zeros(&format!("{:.*}", decimals, n)).to_string()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

pub fn make_num(n: f64) -> Result<Datum> {
    if !n.is_finite() {
        return Err(logic(format!("Non-finite number: {}", fmt_nonfinite(n))));
    }
    Ok(Datum::Num(n))
}

fn fmt_nonfinite(n: f64) -> &'static str {
    if n.is_nan() {
        "nan"
    } else if n > 0.0 {
        "inf"
    } else {
        "-inf"
    }
}
