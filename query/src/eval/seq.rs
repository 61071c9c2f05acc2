//! Sequences: lazy streams, and the sequence terms (map, filter, reduce, order_by,
//! group...). Array inputs produce arrays eagerly; stream inputs stay lazy.

use super::{arg_datum, int, num, Callable, Ctx, Grouped, Optargs, Val};
use crate::datum::{Datum, Object};
use crate::error::{logic, non_existence, ErrorKind, Frame, ReqlError, Result};
use crate::term_type as tt;
use rand::seq::SliceRandom;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

type DatumIter = Box<dyn Iterator<Item = Result<Datum>>>;
/// Stored rows not yet decoded (late materialization: filters and counts on table
/// scans look at the bytes and decode only what they must).
pub type RawIter = Box<dyn Iterator<Item = Result<Vec<u8>>>>;

/// A lazy sequence of datums (from `r.range` or a table).
pub struct Stream {
    iter: DatumIter,
    /// When set, the elements are these stored rows (and `iter` is unused).
    raw: Option<RawIter>,
    /// Infinite streams refuse to be collected.
    pub infinite: bool,
    /// A changefeed (or a transformation of one): infinite, with its own message.
    pub changefeed: bool,
    /// Documents of a table read through transformations `changes()` can follow.
    pub spec: Option<Rc<super::feed::ChangeSpec>>,
    /// Set when the elements are documents of one table, so writes can follow.
    pub sel: Option<Selection>,
}

/// The table a stream's documents come from, and what RethinkDB calls the stream.
pub struct Selection {
    pub table: Rc<super::table::TableRef>,
    /// "TABLE" (a whole table), "TABLE_SLICE" (a key range) or "SELECTION<STREAM>".
    pub kind: &'static str,
    /// For tables and table slices: the index range and order read, which `between`
    /// and `order_by(index=...)` may still narrow or change.
    pub slice: Option<Box<super::table::Slice>>,
    /// For `get_all` results: the index and keys asked for (changefeeds follow them).
    pub get_all: Option<Rc<super::table::GetAllSpec>>,
    /// Set by `limit` on a slice: its first this many documents.
    pub limit: Option<usize>,
    /// For `get_intersecting` results: the index and the query geometry.
    pub geo: Option<Rc<super::geo::read::GeoSpec>>,
}

impl Selection {
    pub fn new(table: Rc<super::table::TableRef>, kind: &'static str) -> Selection {
        Selection {
            table,
            kind,
            slice: None,
            get_all: None,
            limit: None,
            geo: None,
        }
    }
}

impl Stream {
    pub fn new(iter: DatumIter, infinite: bool) -> Stream {
        // Every element is a step: long reads yield the core and stop when interrupted.
        let iter: DatumIter = Box::new(iter.map(|r| {
            crate::error::tick()?;
            r
        }));
        Stream {
            iter,
            raw: None,
            infinite,
            changefeed: false,
            spec: None,
            sel: None,
        }
    }

    /// A changefeed stream (infinite).
    pub fn feed(iter: DatumIter) -> Stream {
        Stream {
            changefeed: true,
            ..Stream::new(iter, true)
        }
    }

    /// A stream of stored rows, decoded only when an element is needed.
    pub fn from_raw(raw: RawIter) -> Stream {
        let raw: RawIter = Box::new(raw.map(|r| {
            crate::error::tick()?;
            r
        }));
        Stream {
            iter: Box::new(std::iter::empty()),
            raw: Some(raw),
            infinite: false,
            changefeed: false,
            spec: None,
            sel: None,
        }
    }

    /// The undecoded rows, if this stream still has them (callers put them back with
    /// `set_raw` after wrapping them).
    pub fn take_raw(&mut self) -> Option<RawIter> {
        self.raw.take()
    }

    pub fn has_raw(&self) -> bool {
        self.raw.is_some()
    }

    pub fn set_raw(&mut self, raw: RawIter) {
        self.raw = Some(raw);
    }

    /// Switches a raw stream to decoded elements.
    fn materialize(&mut self) {
        if let Some(raw) = self.raw.take() {
            self.iter = Box::new(raw.map(|r| r.and_then(|b| crate::store::decode_doc(&b))));
        }
    }

    /// The elements as an iterator.
    fn into_datum_iter(mut self) -> DatumIter {
        self.materialize();
        self.iter
    }
    pub fn from_vec(v: Vec<Datum>) -> Stream {
        Stream::new(Box::new(v.into_iter().map(Ok)), false)
    }

    /// Every element, without the array limit (for streams already held in memory).
    pub fn drain_all(mut self) -> Result<Vec<Datum>> {
        let mut out = Vec::new();
        while let Some(d) = self.next_datum()? {
            out.push(d);
        }
        Ok(out)
    }

    /// The next element, or `None` at the end.
    pub fn next_datum(&mut self) -> Result<Option<Datum>> {
        if let Some(raw) = self.raw.as_mut() {
            return match raw.next() {
                None => Ok(None),
                Some(r) => crate::store::decode_doc(&r?).map(Some),
            };
        }
        self.iter.next().transpose()
    }

    pub fn map(mut self, mut f: impl FnMut(Datum) -> Result<Datum> + 'static) -> Stream {
        self.materialize();
        Stream {
            changefeed: self.changefeed,
            ..Stream::new(
                Box::new(self.iter.map(move |r| r.and_then(&mut f))),
                self.infinite,
            )
        }
    }

    pub fn filter_map(
        mut self,
        mut f: impl FnMut(Datum) -> Result<Option<Datum>> + 'static,
    ) -> Stream {
        self.materialize();
        Stream {
            changefeed: self.changefeed,
            ..Stream::new(
                Box::new(self.iter.filter_map(move |r| match r {
                    Ok(d) => f(d).transpose(),
                    Err(e) => Some(Err(e)),
                })),
                self.infinite,
            )
        }
    }

    fn infinite_error(&self) -> ReqlError {
        if self.changefeed {
            return logic(
                "Cannot call a terminal (`reduce`, `count`, etc.) on an infinite stream (such as a changefeed).",
            );
        }
        logic(
            "Cannot use an infinite stream with an aggregation function (`reduce`, `count`, etc.) or coerce it to an array.",
        )
    }

    /// Reads the whole stream, bounded by `array_limit`.
    pub fn collect_all(mut self, ctx: &Ctx) -> Result<Vec<Datum>> {
        if self.infinite {
            return Err(self.infinite_error());
        }
        let mut out = Vec::new();
        while let Some(d) = self.next_datum()? {
            out.push(d);
            ctx.check_array(out.len())?;
        }
        Ok(out)
    }

    /// Iterates for an aggregation (no array limit, but refuses infinite streams).
    fn into_terminal_iter(self) -> Result<DatumIter> {
        if self.infinite {
            return Err(self.infinite_error());
        }
        Ok(self.into_datum_iter())
    }
}

/// A sequence argument: an array datum or a stream.
pub enum SeqIn {
    Array(Arc<Vec<Datum>>),
    Stream(Stream),
}

impl SeqIn {
    pub fn from_val(_ctx: &Ctx, v: Val) -> Result<SeqIn> {
        match v {
            Val::Datum(Datum::Array(ref a)) => Ok(SeqIn::Array(a.clone())),
            Val::Stream(s) => Ok(SeqIn::Stream(s)),
            Val::Datum(d) => {
                let mut e = logic(format!("Cannot convert {} to SEQUENCE", d.type_name()));
                if matches!(d, Datum::Null) {
                    e.kind = ErrorKind::NonExistence;
                }
                Err(e)
            }
            other => Err(logic(format!(
                "Cannot convert {} to SEQUENCE",
                other.type_name()
            ))),
        }
    }
    pub fn is_array(&self) -> bool {
        matches!(self, SeqIn::Array(_))
    }
    pub fn into_stream(self) -> Stream {
        match self {
            SeqIn::Array(a) => {
                let len = a.len();
                Stream::new(Box::new((0..len).map(move |i| Ok(a[i].clone()))), false)
            }
            SeqIn::Stream(s) => s,
        }
    }
    /// All elements, for operations that need the whole sequence.
    pub fn into_vec(self, ctx: &Ctx) -> Result<Vec<Datum>> {
        match self {
            SeqIn::Array(a) => Ok(Arc::try_unwrap(a).unwrap_or_else(|a| (*a).clone())),
            SeqIn::Stream(s) => s.collect_all(ctx),
        }
    }
    fn terminal_iter(self) -> Result<DatumIter> {
        match self {
            SeqIn::Array(a) => {
                let len = a.len();
                Ok(Box::new((0..len).map(move |i| Ok(a[i].clone()))))
            }
            SeqIn::Stream(s) => s.into_terminal_iter(),
        }
    }
}

/// Arrays in, arrays out: streams built over an array are collected eagerly.
pub fn finish(ctx: &Ctx, s: Stream, is_array: bool) -> Result<Val> {
    if is_array {
        Ok(Val::Datum(Datum::array(s.collect_all(ctx)?)))
    } else {
        Ok(Val::Stream(s))
    }
}

fn seq_arg(ctx: &Ctx, args: &mut [Val]) -> Result<SeqIn> {
    let first = std::mem::replace(&mut args[0], Val::Datum(Datum::Null));
    SeqIn::from_val(ctx, first).map_err(|e| e.with_frame(Frame::Pos(0)))
}

fn callable(args: &mut [Val], i: usize) -> Callable {
    std::mem::replace(&mut args[i], Val::Datum(Datum::Null)).into_callable()
}

/// A function argument, or a field name standing for `row(field)`.
fn field_or_func(ctx: &Ctx, args: &mut [Val], i: usize) -> Result<Callable> {
    match &args[i] {
        Val::Func(_) => Ok(callable(args, i)),
        _ => {
            let d = arg_datum(ctx, args, i)?;
            Ok(Callable::Field(d))
        }
    }
}

/// `union(interleave=...)`: `None` to concatenate (a boolean), else the ordering the
/// inputs follow (field names or functions, each maybe wrapped in `r.asc`/`r.desc`).
fn union_ordering(ctx: &Rc<Ctx>, opt: &Optargs) -> Result<Option<Vec<SortKey>>> {
    let Some((_, t)) = opt.op.optargs.iter().find(|(k, _)| k == "interleave") else {
        return Ok(None);
    };
    let items: Vec<Rc<crate::term::Term>> = match &**t {
        crate::term::Term::Op(o) if o.ty == tt::MAKE_ARRAY => o.args.clone(),
        crate::term::Term::Datum(Datum::Array(a)) => a
            .iter()
            .map(|d| Rc::new(crate::term::Term::Datum(d.clone())))
            .collect(),
        _ => vec![t.clone()],
    };
    let mut keys = Vec::with_capacity(items.len());
    for it in items {
        let (descending, inner) = match &*it {
            crate::term::Term::Op(o) if o.ty == tt::ASC || o.ty == tt::DESC => {
                (o.ty == tt::DESC, o.args[0].clone())
            }
            _ => (false, it.clone()),
        };
        let v = super::eval(ctx, opt.env, &inner)
            .map_err(|e| e.with_frame(Frame::Opt("interleave".into())))?;
        let key = match v {
            Val::Datum(Datum::Bool(_)) if keys.is_empty() => return Ok(None),
            Val::Func(f) => Callable::Func(f),
            Val::Datum(d @ Datum::Str(_)) => Callable::Field(d),
            other => {
                return Err(logic(format!(
                    "Expected type STRING or FUNCTION for `interleave` but found {}.",
                    other.type_name()
                )))
            }
        };
        keys.push(SortKey { key, descending });
    }
    Ok(Some(keys))
}

/// Merges streams that each follow `keys` into one that does, failing if one does not.
fn ordered_union(ctx: &Rc<Ctx>, streams: Vec<Stream>, keys: Vec<SortKey>) -> Stream {
    struct Input {
        stream: Stream,
        head: Option<(Vec<Datum>, Datum)>,
        started: bool,
    }
    let ctx = ctx.clone();
    let mut inputs: Vec<Input> = streams
        .into_iter()
        .map(|stream| Input {
            stream,
            head: None,
            started: false,
        })
        .collect();
    let iter = std::iter::from_fn(move || {
        let mut step = || -> Result<Option<Datum>> {
            for inp in inputs.iter_mut() {
                if !inp.started {
                    inp.started = true;
                    if let Some(d) = inp.stream.next_datum()? {
                        inp.head = Some((sort_values(&ctx, &keys, &d)?, d));
                    }
                }
            }
            let mut best: Option<usize> = None;
            for (i, inp) in inputs.iter().enumerate() {
                let Some((k, _)) = &inp.head else { continue };
                best = match best {
                    Some(b)
                        if cmp_sort_values(&keys, &inputs[b].head.as_ref().expect("head").0, k)
                            != Ordering::Greater =>
                    {
                        Some(b)
                    }
                    _ => Some(i),
                };
            }
            let Some(b) = best else { return Ok(None) };
            let (k, d) = inputs[b].head.take().expect("chosen input has a head");
            if let Some(next) = inputs[b].stream.next_datum()? {
                let nk = sort_values(&ctx, &keys, &next)?;
                if cmp_sort_values(&keys, &nk, &k) == Ordering::Less {
                    return Err(logic(
                        "The streams given as arguments are not ordered by given ordering.",
                    ));
                }
                inputs[b].head = Some((nk, next));
            }
            Ok(Some(d))
        };
        step().transpose()
    });
    Stream::new(Box::new(iter), false)
}

/// Whether `filter` keeps row `d`: the predicate's verdict, or on a missing field the
/// `default` (absent: drop the row; `r.error()`: re-raise).
pub fn filter_keep(
    ctx: &Rc<Ctx>,
    pred: &Callable,
    default: &Option<Result<Datum>>,
    d: &Datum,
) -> Result<bool> {
    match pred.call_filter(ctx, d) {
        Ok(b) => Ok(b),
        Err(e) if e.kind == ErrorKind::NonExistence => match default {
            None => Ok(false),
            Some(Ok(def)) => Ok(def.truthy()),
            Some(Err(de)) if de.kind == ErrorKind::EmptyUser => Err(e),
            Some(Err(de)) => Err(de.clone()),
        },
        Err(e) => Err(e),
    }
}

pub fn apply(ctx: &Rc<Ctx>, ty: u32, mut args: Vec<Val>, opt: &Optargs) -> Result<Val> {
    if super::object::is_object_op(ty) {
        return super::object::apply(ctx, ty, args);
    }
    match ty {
        tt::RANGE => range(ctx, &args),
        tt::MAP => {
            let last = args.len() - 1;
            if let Val::Datum(_) = &args[last] {
                return Err(logic("Expected type FUNCTION but found DATUM:"));
            }
            let f = callable(&mut args, last);
            if let Some(n) = f.arity() {
                if n != 0 && n != args.len() - 1 {
                    return Err(logic(format!(
                        "The function passed to `map` expects {n} argument{}, but {} sequence{} found.",
                        if n == 1 { "" } else { "s" },
                        args.len() - 1,
                        if args.len() - 1 == 1 { " was" } else { "s were" }
                    )));
                }
            }
            args.pop();
            if args.len() == 1 {
                let seq = seq_arg(ctx, &mut args)?;
                let is_array = seq.is_array();
                let ctx2 = ctx.clone();
                let s = seq.into_stream().map(move |d| f.call_datum(&ctx2, &[d]));
                return finish(ctx, s, is_array);
            }
            // Multi-sequence map: zip the inputs, stopping at the shortest.
            let mut streams = Vec::new();
            let mut all_arrays = true;
            let mut infinite = true;
            for v in args.drain(..) {
                let s = SeqIn::from_val(ctx, v)?;
                all_arrays &= s.is_array();
                let st = s.into_stream();
                infinite &= st.infinite;
                streams.push(st);
            }
            let ctx2 = ctx.clone();
            let iter = std::iter::from_fn(move || {
                let mut row = Vec::with_capacity(streams.len());
                for s in streams.iter_mut() {
                    match s.next_datum() {
                        Ok(Some(d)) => row.push(d),
                        Ok(None) => return None,
                        Err(e) => return Some(Err(e)),
                    }
                }
                Some(f.call_datum(&ctx2, &row))
            });
            finish(ctx, Stream::new(Box::new(iter), infinite), all_arrays)
        }
        tt::FILTER => {
            let seq = seq_arg(ctx, &mut args)?;
            let is_array = seq.is_array();
            let pred = callable(&mut args, 1);
            // The default is only consulted when the predicate hits a missing field;
            // `r.error()` as the default re-raises that error.
            let default = opt.datum("default").transpose();
            let ctx2 = ctx.clone();
            let s = seq.into_stream().filter_map(move |d| {
                let keep = filter_keep(&ctx2, &pred, &default, &d)?;
                Ok(if keep { Some(d) } else { None })
            });
            finish(ctx, s, is_array)
        }
        tt::CONCAT_MAP => {
            let seq = seq_arg(ctx, &mut args)?;
            let is_array = seq.is_array();
            let infinite = !is_array && matches!(&seq, SeqIn::Stream(s) if s.infinite);
            let f = callable(&mut args, 1);
            let ctx2 = ctx.clone();
            let mut inner = seq.into_stream();
            let mut pending: std::vec::IntoIter<Datum> = Vec::new().into_iter();
            let iter = std::iter::from_fn(move || loop {
                if let Some(d) = pending.next() {
                    return Some(Ok(d));
                }
                match inner.next_datum() {
                    Ok(Some(d)) => match f.call(&ctx2, &[d]) {
                        Ok(Val::Datum(Datum::Array(ref a))) => pending = Vec::clone(a).into_iter(),
                        Ok(Val::Stream(s)) => match s.collect_all(&ctx2) {
                            Ok(v) => pending = v.into_iter(),
                            Err(e) => return Some(Err(e)),
                        },
                        Ok(other) => {
                            return Some(Err(logic(format!(
                                "Cannot convert {} to SEQUENCE",
                                other.type_name()
                            ))))
                        }
                        Err(e) => return Some(Err(e)),
                    },
                    Ok(None) => return None,
                    Err(e) => return Some(Err(e)),
                }
            });
            finish(ctx, Stream::new(Box::new(iter), infinite), is_array)
        }
        tt::REDUCE => {
            let seq = seq_arg(ctx, &mut args)?;
            let f = callable(&mut args, 1);
            let mut acc: Option<Datum> = None;
            for d in seq.terminal_iter()? {
                let d = d?;
                acc = Some(match acc {
                    None => d,
                    Some(a) => f.call_datum(ctx, &[a, d])?,
                });
            }
            acc.map(Val::Datum).ok_or_else(|| non_existence("Cannot reduce over an empty stream."))
        }
        tt::FOLD => fold(ctx, args, opt),
        tt::COUNT => {
            if args.len() == 2 {
                let seq_or = std::mem::replace(&mut args[0], Val::Datum(Datum::Null));
                let seq = SeqIn::from_val(ctx, seq_or)?;
                let pred = match &args[1] {
                    Val::Func(_) => callable(&mut args, 1),
                    _ => Callable::Eq(arg_datum(ctx, &args, 1)?),
                };
                let mut n = 0usize;
                // count(f) is filter(f).count(): rows lacking a field do not count.
                for d in seq.terminal_iter()? {
                    match pred.call_filter(ctx, &d?) {
                        Ok(true) => n += 1,
                        Ok(false) => {}
                        Err(e) if e.kind == ErrorKind::NonExistence => {}
                        Err(e) => return Err(e),
                    }
                }
                return Ok(Val::Datum(Datum::Num(n as f64)));
            }
            match &args[0] {
                Val::Datum(Datum::Str(s)) => {
                    return Ok(Val::Datum(Datum::Num(s.chars().count() as f64)))
                }
                Val::Datum(Datum::Binary(b)) => return Ok(Val::Datum(Datum::Num(b.len() as f64))),
                Val::Datum(Datum::Object(o)) => return Ok(Val::Datum(Datum::Num(o.len() as f64))),
                _ => {}
            }
            let seq = seq_arg(ctx, &mut args)?;
            let n = match seq {
                SeqIn::Array(a) => a.len(),
                s => {
                    let mut n = 0;
                    for d in s.terminal_iter()? {
                        d?;
                        n += 1;
                    }
                    n
                }
            };
            Ok(Val::Datum(Datum::Num(n as f64)))
        }
        tt::SUM | tt::AVG | tt::MIN | tt::MAX => aggregate(ctx, ty, args, opt),
        tt::DISTINCT => {
            if opt.has("index") {
                return Err(logic("Cannot call distinct with an index on a non-table sequence."));
            }
            let seq = seq_arg(ctx, &mut args)?;
            let is_array = seq.is_array();
            let mut set = std::collections::BTreeSet::new();
            for d in seq.terminal_iter()? {
                set.insert(d?);
                ctx.check_array(set.len())?;
            }
            let v: Vec<Datum> = set.into_iter().collect();
            if is_array {
                Ok(Val::Datum(Datum::array(v)))
            } else {
                Ok(Val::Stream(Stream::from_vec(v)))
            }
        }
        tt::ASC | tt::DESC => Err(logic(format!(
            "{} may only be used as an argument to ORDER_BY.",
            if ty == tt::ASC { "ASC" } else { "DESC" }
        ))),
        tt::UNION => {
            let order = union_ordering(ctx, opt)?;
            let mut all_arrays = true;
            let mut infinite = false;
            let mut streams = Vec::new();
            for (i, v) in args.into_iter().enumerate() {
                let s = SeqIn::from_val(ctx, v).map_err(|e| e.with_frame(Frame::Pos(i)))?;
                all_arrays &= s.is_array();
                let st = s.into_stream();
                infinite |= st.infinite;
                streams.push(st);
            }
            if let Some(keys) = order {
                return finish(ctx, ordered_union(ctx, streams, keys), all_arrays);
            }
            if streams.iter().any(|s| s.changefeed) {
                // Feeds never end: interleave whatever each one has ready.
                let iters = streams.into_iter().map(|s| s.into_datum_iter()).collect();
                return Ok(Val::Stream(super::feed::union(ctx, iters)));
            }
            let iter = streams.into_iter().flat_map(|s| s.into_datum_iter());
            finish(ctx, Stream::new(Box::new(iter), infinite), all_arrays)
        }
        tt::ZIP => {
            let seq = seq_arg(ctx, &mut args)?;
            let is_array = seq.is_array();
            let s = seq.into_stream().map(|d| {
                let l = d.get_field("left").cloned().ok_or_else(|| {
                    logic("ZIP can only be called on the result of a join.")
                })?;
                let r = d.get_field("right");
                match r {
                    None => Ok(l),
                    Some(r) => Ok(super::object::merge(&l, r)),
                }
            });
            finish(ctx, s, is_array)
        }
        tt::LIMIT | tt::SKIP => {
            let n = int(&arg_datum(ctx, &args, 1)?)?;
            if n < 0 {
                return Err(logic(if ty == tt::LIMIT {
                    format!("LIMIT takes a non-negative argument (got {n})")
                } else {
                    "Cannot use a negative left index on a stream.".to_string()
                }));
            }
            let seq = seq_arg(ctx, &mut args)?;
            let is_array = seq.is_array();
            let st = seq.into_stream();
            let infinite = st.infinite && ty == tt::SKIP;
            let spec = match (&st.spec, ty) {
                (Some(sp), tt::LIMIT) => sp.limited(n as usize).map(Rc::new),
                _ => None,
            };
            let iter: DatumIter = if ty == tt::LIMIT {
                // A changefeed's pauses (nothing ready yet) are not elements.
                let mut left = n as usize;
                let mut inner = st.into_datum_iter();
                Box::new(std::iter::from_fn(move || {
                    if left == 0 {
                        return None;
                    }
                    let x = inner.next()?;
                    if !matches!(&x, Err(e) if super::feed::is_paused(e)) {
                        left -= 1;
                    }
                    Some(x)
                }))
            } else {
                Box::new(st.into_datum_iter().skip(n as usize))
            };
            let mut out = Stream::new(iter, infinite);
            out.spec = spec;
            finish(ctx, out, is_array)
        }
        tt::SLICE => slice(ctx, args, opt),
        tt::NTH => {
            let idx = arg_datum(ctx, &args, 1)?;
            args.truncate(1);
            nth(ctx, args.remove(0), &idx)
        }
        tt::IS_EMPTY => {
            let seq = seq_arg(ctx, &mut args)?;
            let mut s = seq.into_stream();
            Ok(Val::Datum(Datum::Bool(s.next_datum()?.is_none())))
        }
        tt::SAMPLE => {
            let n = int(&arg_datum(ctx, &args, 1)?)?;
            if n < 0 {
                return Err(logic("Number of items to sample must be non-negative, got `-1`.".replace("-1", &n.to_string())));
            }
            let seq = seq_arg(ctx, &mut args)?;
            let is_array = seq.is_array();
            let mut v = seq.into_vec(ctx)?;
            v.shuffle(&mut rand::thread_rng());
            v.truncate(n as usize);
            if is_array {
                Ok(Val::Datum(Datum::array(v)))
            } else {
                Ok(Val::Stream(Stream::from_vec(v)))
            }
        }
        tt::OFFSETS_OF => {
            let seq = seq_arg(ctx, &mut args)?;
            let is_array = seq.is_array();
            let pred = match &args[1] {
                Val::Func(_) => callable(&mut args, 1),
                _ => Callable::Eq(arg_datum(ctx, &args, 1)?),
            };
            let ctx2 = ctx.clone();
            let mut i = 0usize;
            let s = seq.into_stream().filter_map(move |d| {
                let idx = i;
                i += 1;
                Ok(if pred.call_predicate(&ctx2, &d)? { Some(Datum::Num(idx as f64)) } else { None })
            });
            finish(ctx, s, is_array)
        }
        tt::CONTAINS => {
            let seq = seq_arg(ctx, &mut args)?;
            let mut wanted: Vec<Callable> = Vec::new();
            for i in 1..args.len() {
                wanted.push(match &args[i] {
                    Val::Func(_) => callable(&mut args, i),
                    _ => Callable::Eq(arg_datum(ctx, &args, i)?),
                });
            }
            for d in seq.terminal_iter()? {
                let d = d?;
                if let Some(pos) = position(ctx, &wanted, &d)? {
                    wanted.swap_remove(pos);
                }
                if wanted.is_empty() {
                    return Ok(Val::Datum(Datum::Bool(true)));
                }
            }
            Ok(Val::Datum(Datum::Bool(wanted.is_empty())))
        }
        tt::GROUP => group(ctx, args, opt),
        tt::UNGROUP => match &args[0] {
            Val::Grouped(g) => Ok(Val::Datum(ungroup(g))),
            other => Err(logic(format!(
                "Expected type GROUPED_DATA but found {}.",
                other.type_name()
            ))),
        },
        tt::INNER_JOIN | tt::OUTER_JOIN => {
            let left = seq_arg(ctx, &mut args)?;
            let is_array = left.is_array();
            let right = SeqIn::from_val(ctx, std::mem::replace(&mut args[1], Val::Datum(Datum::Null)))?
                .into_vec(ctx)?;
            let pred = callable(&mut args, 2);
            let outer = ty == tt::OUTER_JOIN;
            let ctx2 = ctx.clone();
            let mut left = left.into_stream();
            let mut pending: std::vec::IntoIter<Datum> = Vec::new().into_iter();
            let iter = std::iter::from_fn(move || loop {
                if let Some(d) = pending.next() {
                    return Some(Ok(d));
                }
                let l = match left.next_datum() {
                    Ok(Some(l)) => l,
                    Ok(None) => return None,
                    Err(e) => return Some(Err(e)),
                };
                let mut out = Vec::new();
                for r in right.iter() {
                    match pred.call_datum(&ctx2, &[l.clone(), r.clone()]) {
                        Ok(b) if b.truthy() => out.push(join_pair(&l, Some(r))),
                        Ok(_) => {}
                        Err(e) => return Some(Err(e)),
                    }
                }
                if out.is_empty() && outer {
                    out.push(join_pair(&l, None));
                }
                pending = out.into_iter();
            });
            finish(ctx, Stream::new(Box::new(iter), false), is_array)
        }
        tt::EQ_JOIN => Err(logic("`eq_join` needs a table, which this server does not have yet.")),
        tt::FOR_EACH => Err(logic(
            "FOR_EACH expects one or more basic write queries, which this server does not support yet.",
        )),
        // Tables, writes, admin terms and changefeeds arrive with later issues.
        _ => Err(unsupported(ty)),
    }
}

fn unsupported(ty: u32) -> ReqlError {
    logic(format!(
        "Term {} is not supported by this server yet.",
        crate::term_type::name(ty).unwrap_or("?")
    ))
}

fn position(ctx: &Rc<Ctx>, wanted: &[Callable], d: &Datum) -> Result<Option<usize>> {
    for (i, w) in wanted.iter().enumerate() {
        if w.call_predicate(ctx, d)? {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

fn join_pair(l: &Datum, r: Option<&Datum>) -> Datum {
    let mut o = Object::new();
    o.insert("left".into(), l.clone());
    if let Some(r) = r {
        o.insert("right".into(), r.clone());
    }
    Datum::object(o)
}

fn range(ctx: &Ctx, args: &[Val]) -> Result<Val> {
    let (start, end) = match args.len() {
        0 => (0, None),
        1 => (0, Some(int(&arg_datum(ctx, args, 0)?)?)),
        _ => (
            int(&arg_datum(ctx, args, 0)?)?,
            Some(int(&arg_datum(ctx, args, 1)?)?),
        ),
    };
    let infinite = end.is_none();
    let iter: DatumIter = match end {
        None => Box::new((start..).map(|i| Ok(Datum::Num(i as f64)))),
        Some(e) => Box::new((start..e.max(start)).map(|i| Ok(Datum::Num(i as f64)))),
    };
    Ok(Val::Stream(Stream::new(iter, infinite)))
}

/// `nth`/bracket with a number.
pub fn nth(ctx: &Rc<Ctx>, v: Val, idx: &Datum) -> Result<Val> {
    let n = int(idx)?;
    match v {
        Val::Datum(Datum::Array(ref a)) => {
            let i = super::array::canonicalize(n, a.len())?;
            a.get(i)
                .cloned()
                .map(Val::Datum)
                .ok_or_else(|| non_existence(format!("Index out of bounds: {n}")))
        }
        Val::Stream(mut s) => {
            if n < -1 {
                return Err(logic(format!(
                    "Cannot use an index < -1 ({n}) on a stream."
                )));
            }
            let mut last = None;
            let mut i = 0i64;
            while let Some(d) = s.next_datum()? {
                if i == n {
                    return Ok(Val::Datum(d));
                }
                last = Some(d);
                i += 1;
            }
            match (n, last) {
                (-1, Some(d)) => Ok(Val::Datum(d)),
                _ => Err(non_existence(format!("Index out of bounds: {n}"))),
            }
        }
        Val::Grouped(g) => {
            let mut out = Vec::with_capacity(g.len());
            for (k, v) in g.iter() {
                let r = nth(ctx, Val::Datum(v.clone()), idx)?.into_datum(ctx)?;
                out.push((k.clone(), r));
            }
            Ok(Val::Grouped(Rc::new(Grouped::data(out))))
        }
        Val::Datum(d) => {
            let mut e = logic(format!("Cannot convert {} to SEQUENCE", d.type_name()));
            if matches!(d, Datum::Null) {
                e.kind = ErrorKind::NonExistence;
            }
            Err(e)
        }
        other => Err(logic(format!(
            "Cannot convert {} to SEQUENCE",
            other.type_name()
        ))),
    }
}

fn slice(ctx: &Rc<Ctx>, mut args: Vec<Val>, opt: &Optargs) -> Result<Val> {
    let left_open = opt.open_bound("left_bound", false)?;
    let right_open = opt.open_bound("right_bound", true)?;
    let l = int(&arg_datum(ctx, &args, 1)?)?;
    let (r, has_r) = if args.len() == 3 {
        (int(&arg_datum(ctx, &args, 2)?)?, true)
    } else {
        (-1, false)
    };
    let right_open = if has_r { right_open } else { false };
    let canon = |size: usize, open: bool, idx: i64, is_left: bool| -> usize {
        let (mut real, oob) = if idx >= 0 {
            (idx as usize, false)
        } else if idx.unsigned_abs() as usize > size {
            (0, true)
        } else {
            ((size as i64 + idx) as usize, false)
        };
        if open == is_left && !oob {
            real += 1;
        }
        real
    };
    match &args[0] {
        Val::Datum(d @ (Datum::Array(_) | Datum::Str(_) | Datum::Binary(_))) => {
            let size = match d {
                Datum::Array(a) => a.len(),
                Datum::Str(s) => s.chars().count(),
                Datum::Binary(b) => b.len(),
                _ => 0,
            };
            let lo = canon(size, left_open, l, true);
            let hi = canon(size, right_open, r, false).min(size);
            let (lo, hi) = if lo <= hi { (lo, hi) } else { (0, 0) };
            let out = match d {
                Datum::Array(a) => Datum::array(a[lo.min(a.len())..hi].to_vec()),
                Datum::Str(s) => Datum::str(s.chars().skip(lo).take(hi - lo).collect::<String>()),
                Datum::Binary(b) => Datum::Binary(b[lo..hi].into()),
                _ => unreachable!(),
            };
            Ok(Val::Datum(out))
        }
        Val::Stream(_) => {
            if l < 0 {
                return Err(logic("Cannot use a negative left index on a stream."));
            }
            let lo = l as usize + usize::from(left_open);
            let hi = if r < -1 {
                return Err(logic("Cannot use a right index < -1 on a stream."));
            } else if r == -1 {
                if right_open {
                    return Err(logic(
                        "Cannot slice to an open right index of -1 on a stream.",
                    ));
                }
                usize::MAX
            } else {
                r as usize + usize::from(!right_open)
            };
            let seq = seq_arg(ctx, &mut args)?;
            let st = seq.into_stream();
            let infinite = st.infinite && hi == usize::MAX;
            let iter = st.into_datum_iter().skip(lo).take(hi.saturating_sub(lo));
            Ok(Val::Stream(Stream::new(Box::new(iter), infinite)))
        }
        Val::Datum(d) => Err(logic(format!(
            "Expected ARRAY, BINARY, or STRING, but found {}.",
            d.type_name()
        ))),
        other => Err(logic(format!(
            "Cannot slice non-sequences ({}).",
            other.type_name()
        ))),
    }
}

fn fold(ctx: &Rc<Ctx>, mut args: Vec<Val>, opt: &Optargs) -> Result<Val> {
    let seq = seq_arg(ctx, &mut args)?;
    let is_array = seq.is_array();
    let base = arg_datum(ctx, &args, 1)?;
    let f = callable(&mut args, 2);
    if let Some(n) = f.arity() {
        if n != 0 && n != 2 {
            return Err(logic(format!(
                "The accumulator function passed to `fold` should expect 2 arguments, but it expects {n}."
            )));
        }
    }
    let emit = opt.get("emit")?.map(Val::into_callable);
    let final_emit = opt.get("final_emit")?.map(Val::into_callable);
    if emit.is_none() {
        let mut acc = base;
        for d in seq.terminal_iter()? {
            acc = f.call_datum(ctx, &[acc, d?])?;
        }
        if let Some(fe) = final_emit {
            return fe.call(ctx, &[acc]);
        }
        return Ok(Val::Datum(acc));
    }
    let emit = emit.expect("checked above");
    let ctx2 = ctx.clone();
    let mut inner = seq.into_stream();
    let infinite = inner.infinite;
    let mut acc = Some(base);
    let mut pending: std::vec::IntoIter<Datum> = Vec::new().into_iter();
    let mut finished = false;
    let iter = std::iter::from_fn(move || loop {
        if let Some(d) = pending.next() {
            return Some(Ok(d));
        }
        if finished {
            return None;
        }
        let step = (|| -> Result<Option<Vec<Datum>>> {
            match inner.next_datum()? {
                Some(row) => {
                    let old = acc.take().unwrap_or(Datum::Null);
                    let new = f.call_datum(&ctx2, &[old.clone(), row.clone()])?;
                    let out = match emit.call(&ctx2, &[old, row, new.clone()])? {
                        Val::Stream(_) => {
                            return Err(logic("Expected type DATUM but found SEQUENCE:"))
                        }
                        v => v.into_datum(&ctx2)?,
                    };
                    acc = Some(new);
                    Ok(Some(super::array(&out)?.to_vec()))
                }
                None => {
                    finished = true;
                    match &final_emit {
                        Some(fe) => {
                            let out = fe.call_datum(&ctx2, &[acc.take().unwrap_or(Datum::Null)])?;
                            Ok(Some(super::array(&out)?.to_vec()))
                        }
                        None => Ok(None),
                    }
                }
            }
        })();
        match step {
            Ok(Some(v)) => pending = v.into_iter(),
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        }
    });
    finish(ctx, Stream::new(Box::new(iter), infinite), is_array)
}

fn aggregate(ctx: &Rc<Ctx>, ty: u32, mut args: Vec<Val>, opt: &Optargs) -> Result<Val> {
    if opt.has("index") {
        return Err(logic(format!(
            "Cannot call {} with an index on a non-table sequence.",
            if ty == tt::MIN { "min" } else { "max" }
        )));
    }
    let f = if args.len() == 2 {
        Some(field_or_func(ctx, &mut args, 1)?)
    } else {
        None
    };
    let seq = seq_arg(ctx, &mut args)?;
    let mut sum = 0.0;
    let mut count = 0u64;
    let mut best: Option<(Datum, Datum)> = None;
    for d in seq.terminal_iter()? {
        let d = d?;
        let v = match &f {
            None => d.clone(),
            Some(f) => match f.call_datum(ctx, std::slice::from_ref(&d)) {
                Ok(v) => v,
                Err(e) if e.kind == ErrorKind::NonExistence => continue,
                Err(e) => return Err(e),
            },
        };
        match ty {
            tt::SUM | tt::AVG => {
                sum += num(&v)?;
                count += 1;
            }
            _ => {
                let better = match &best {
                    None => true,
                    Some((_, bv)) => {
                        let c = v.cmp_datum(bv);
                        if ty == tt::MIN {
                            c == Ordering::Less
                        } else {
                            c == Ordering::Greater
                        }
                    }
                };
                if better {
                    best = Some((d, v));
                }
            }
        }
    }
    match ty {
        tt::SUM => Ok(Val::Datum(super::make_num(sum)?)),
        tt::AVG => {
            if count == 0 {
                return Err(non_existence(
                    "Cannot take the average of an empty stream.  (If you passed `avg` a field name, it may be that no elements of the stream had that field.)",
                ));
            }
            Ok(Val::Datum(super::make_num(sum / count as f64)?))
        }
        _ => {
            let name = if ty == tt::MIN { "min" } else { "max" };
            best.map(|(row, _)| Val::Datum(row)).ok_or_else(|| {
                non_existence(format!(
                    "Cannot take the {name} of an empty stream.  (If you passed `{name}` a field name, it may be that no elements of the stream had that field.)"
                ))
            })
        }
    }
}

/// A sort key for order_by: a field or function, ascending or descending.
struct SortKey {
    key: Callable,
    descending: bool,
}

/// The values a row sorts by; rows without a field sort first (as `r.minval`).
fn sort_values(ctx: &Rc<Ctx>, keys: &[SortKey], row: &Datum) -> Result<Vec<Datum>> {
    keys.iter()
        .map(|k| match k.key.call_datum(ctx, std::slice::from_ref(row)) {
            Ok(v) => Ok(v),
            Err(e) if e.kind == ErrorKind::NonExistence => Ok(Datum::MinVal),
            Err(e) => Err(e),
        })
        .collect()
}

/// Orders two rows' `sort_values` by `keys` (each ascending or descending).
fn cmp_sort_values(keys: &[SortKey], a: &[Datum], b: &[Datum]) -> Ordering {
    for (i, k) in keys.iter().enumerate() {
        let c = a[i].cmp_datum(&b[i]);
        let c = if k.descending { c.reverse() } else { c };
        if c != Ordering::Equal {
            return c;
        }
    }
    Ordering::Equal
}

/// `order_by` with its keys already evaluated: (descending, key) pairs.
pub fn order_by(ctx: &Rc<Ctx>, first: Val, raw_keys: Vec<(bool, Val)>) -> Result<Val> {
    if let Val::Grouped(g) = &first {
        let mut out = Vec::with_capacity(g.len());
        for (k, v) in g.iter() {
            let ks = raw_keys.iter().map(|(d, v)| (*d, v.share())).collect();
            let r = order_by(ctx, Val::Datum(v.clone()), ks)?.into_datum(ctx)?;
            out.push((k.clone(), r));
        }
        return Ok(Val::Grouped(Rc::new(Grouped::data(out))));
    }
    let mut args = vec![first];
    let mut keys = Vec::new();
    for (descending, v) in raw_keys {
        keys.push(match v {
            Val::Func(f) => SortKey {
                key: Callable::Func(f),
                descending,
            },
            Val::Datum(d) => SortKey {
                key: Callable::Field(d),
                descending,
            },
            other => {
                return Err(logic(format!(
                    "Expected type DATUM but found {}.",
                    other.type_name()
                )))
            }
        });
    }
    if keys.is_empty() {
        return Err(logic("Must specify something to order by."));
    }
    let seq = seq_arg(ctx, &mut args)?;
    let is_array = seq.is_array();
    let rows = seq.into_vec(ctx)?;
    let mut keyed = Vec::with_capacity(rows.len());
    for r in rows {
        keyed.push((sort_values(ctx, &keys, &r)?, r));
    }
    keyed.sort_by(|(a, _), (b, _)| cmp_sort_values(&keys, a, b));
    let v: Vec<Datum> = keyed.into_iter().map(|(_, r)| r).collect();
    if is_array {
        Ok(Val::Datum(Datum::array(v)))
    } else {
        Ok(Val::Stream(Stream::from_vec(v)))
    }
}

fn group(ctx: &Rc<Ctx>, args: Vec<Val>, opt: &Optargs) -> Result<Val> {
    if opt.has("index") {
        return Err(logic("Cannot group by an index on a non-table sequence."));
    }
    let multi = match opt.datum("multi")? {
        None => false,
        Some(d) => super::boolean(&d)?,
    };
    group_by(ctx, args, multi)
}

/// RethinkDB's bound on the number of groups (`array_limit`).
fn check_groups(ctx: &Ctx, groups: usize) -> Result<()> {
    if groups > ctx.array_limit {
        return Err(ReqlError::new(
            ErrorKind::ResourceLimit,
            format!("Too many groups (> {}).", ctx.array_limit),
        ));
    }
    Ok(())
}

/// Groups `args[0]` by the key functions or field names in `args[1..]`.
pub fn group_by(ctx: &Rc<Ctx>, mut args: Vec<Val>, multi: bool) -> Result<Val> {
    let mut keys = Vec::new();
    for i in 1..args.len() {
        keys.push(field_or_func(ctx, &mut args, i)?);
    }
    if keys.is_empty() {
        return Err(logic("Cannot group by nothing."));
    }
    let seq = seq_arg(ctx, &mut args)?;
    let mut groups: BTreeMap<Datum, Vec<Datum>> = BTreeMap::new();
    for d in seq.terminal_iter()? {
        let d = d?;
        let mut ks = Vec::with_capacity(keys.len());
        for k in &keys {
            ks.push(match k.call_datum(ctx, std::slice::from_ref(&d)) {
                Ok(v) => v,
                Err(e) if e.kind == ErrorKind::NonExistence => Datum::Null,
                Err(e) => return Err(e),
            });
        }
        if multi {
            // Each array-valued key stands for each of its elements (a cross product
            // when several keys are arrays).
            let mut combos: Vec<Vec<Datum>> = vec![Vec::new()];
            for k in ks {
                let choices: Vec<Datum> = match k {
                    // An empty array groups the row under null.
                    Datum::Array(ref items) if items.is_empty() => vec![Datum::Null],
                    Datum::Array(ref items) => items.iter().cloned().collect(),
                    other => vec![other],
                };
                let mut next = Vec::with_capacity(combos.len() * choices.len());
                for c in &combos {
                    for ch in &choices {
                        let mut c2 = c.clone();
                        c2.push(ch.clone());
                        next.push(c2);
                    }
                }
                combos = next;
            }
            for mut c in combos {
                let key = if c.len() == 1 {
                    c.pop().unwrap_or(Datum::Null)
                } else {
                    Datum::array(c)
                };
                groups.entry(key).or_default().push(d.clone());
                check_groups(ctx, groups.len())?;
            }
            continue;
        }
        let key = if ks.len() == 1 {
            ks.pop().unwrap_or(Datum::Null)
        } else {
            Datum::array(ks)
        };
        groups.entry(key).or_default().push(d);
        check_groups(ctx, groups.len())?;
    }
    let groups = groups
        .into_iter()
        .map(|(k, v)| (k, Datum::array(v)))
        .collect();
    Ok(Val::Grouped(Rc::new(Grouped {
        groups,
        stream: true,
    })))
}

pub fn ungroup(g: &Grouped) -> Datum {
    Datum::array(
        g.iter()
            .map(|(k, v)| {
                let mut o = Object::new();
                o.insert("group".into(), k.clone());
                o.insert("reduction".into(), v.clone());
                Datum::object(o)
            })
            .collect(),
    )
}

impl Callable {
    /// Calls the function as a filter: an object result is matched against the row
    /// like a filter-by-example pattern.
    pub fn call_filter(&self, ctx: &Rc<Ctx>, d: &Datum) -> Result<bool> {
        match self {
            Callable::Func(f) => {
                let r = self.call_datum(ctx, std::slice::from_ref(d))?;
                // Only a function whose body is an object literal filters by example.
                let literal_body = matches!(f.body.ty(), tt::MAKE_OBJ | tt::DATUM);
                match &r {
                    Datum::Object(_) if literal_body => filter_match(&r, d),
                    other => Ok(other.truthy()),
                }
            }
            Callable::Const(p @ Datum::Object(_)) => filter_match(p, d),
            _ => self.call_predicate(ctx, d),
        }
    }

    /// Calls the function as a predicate (filter, count, contains...).
    pub fn call_predicate(&self, ctx: &Rc<Ctx>, d: &Datum) -> Result<bool> {
        match self {
            Callable::Eq(x) => Ok(x == d),
            Callable::Const(Datum::Object(pattern)) => Ok(matches_pattern(d, pattern)),
            _ => Ok(self.call_datum(ctx, std::slice::from_ref(d))?.truthy()),
        }
    }
}

/// Filter-by-example as RethinkDB does it: a missing field is a non-existence error
/// (so `default` applies), nested objects match recursively, `r.literal` matches whole.
fn filter_match(pattern: &Datum, row: &Datum) -> Result<bool> {
    deep!(filter_match(pattern, row));
    if pattern.reql_type() == Some("LITERAL") {
        return Ok(pattern.get_field("value") == Some(row));
    }
    let Datum::Object(p) = pattern else {
        return Ok(pattern == row);
    };
    for (k, pv) in p.iter() {
        let Some(rv) = row.get_field(k) else {
            return Err(non_existence(format!("No attribute `{k}` in object.")));
        };
        let ok = match (pv, rv) {
            (Datum::Object(_), Datum::Object(_)) => filter_match(pv, rv)?,
            _ => rv == pv,
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Filter-by-example: every field of the pattern matches the row.
fn matches_pattern(row: &Datum, pattern: &Object) -> bool {
    deep!(matches_pattern(row, pattern));
    let Datum::Object(o) = row else { return false };
    pattern.iter().all(|(k, pv)| match (o.get(k), pv) {
        (Some(rv @ Datum::Object(_)), Datum::Object(sub)) if !pv.is_ptype() => {
            matches_pattern(rv, sub)
        }
        (Some(rv), pv) => rv == pv,
        (None, _) => false,
    })
}
