//! Changefeeds in the evaluator: `changes()` on a table, a table slice or one document.
//!
//! A feed registers with every shard (`Store::subscribe`); shards offer each committed
//! change of the table, in commit order per document, to a queue bounded by
//! `changefeed_queue_size` (changes past the bound are counted, then reported as
//! RethinkDB's "skipped" error document). The feed is a lazy stream whose reads wait for
//! the next change; the session paces it through `FeedControl`: at most one wait per
//! batch, so a batch ends as soon as nothing more is ready.

use super::index::IndexProbe;
use super::seq::Stream;
use super::table::{Slice, TableRef};
use super::{boolean, Ctx, Optargs, Val};
use crate::datum::{Datum, Object};
use crate::error::{logic, ErrorKind, ReqlError, Result};
use crate::store::index::secondary_code;
use crate::store::{decode_doc, FeedInbox, FeedMsg, Store};
use std::cell::Cell;
use std::collections::VecDeque;
use std::ops::Bound;
use std::rc::Rc;

/// ql2 `Response.ResponseNote` values.
pub const SEQUENCE_FEED: u32 = 1;
pub const ATOM_FEED: u32 = 2;
pub const ORDER_BY_LIMIT_FEED: u32 = 3;
pub const UNIONED_FEED: u32 = 4;
pub const INCLUDES_STATES: u32 = 5;
/// RethinkDB's default `changefeed_queue_size`.
const QUEUE_DEFAULT: usize = 100_000;

/// How the session steers one feed.
pub struct FeedControl {
    /// The response note of the feed's kind (`SEQUENCE_FEED`, `ATOM_FEED`).
    pub note: u32,
    pub states: bool,
    /// Whether a read with nothing ready waits for a change (else it pauses the batch).
    wait: Cell<bool>,
    cancelled: Cell<bool>,
    wake: event_listener::Event,
}

impl FeedControl {
    fn new(note: u32, states: bool) -> Rc<FeedControl> {
        Rc::new(FeedControl {
            note,
            states,
            wait: Cell::new(false),
            cancelled: Cell::new(false),
            wake: event_listener::Event::new(),
        })
    }
    /// Lets the next read wait for a change (the first row of a CONTINUE), or not.
    pub fn set_wait(&self, wait: bool) {
        self.wait.set(wait);
    }
    fn waits(&self) -> bool {
        self.wait.get()
    }

    /// Ends the feed (STOP, connection closed): a waiting read returns at once.
    pub fn cancel(&self) {
        self.cancelled.set(true);
        self.wake.notify(usize::MAX);
    }
}

/// Longest pause between two looks at the feeds of a union waiting for a change.
const UNION_POLL_MS_MAX: u64 = 10;

/// A union of sequences, at least one a changefeed: elements are taken from whichever
/// has one ready, in turn. The feeds are read without waiting; when none has anything
/// and the batch may wait, the union looks again after a short pause.
pub fn union(ctx: &Rc<Ctx>, mut iters: Vec<Box<dyn Iterator<Item = Result<Datum>>>>) -> Stream {
    let controls: Vec<Rc<FeedControl>> = ctx.feeds.borrow().clone();
    let mut turn = 0usize;
    let iter = std::iter::from_fn(move || {
        let wait = controls.iter().any(|c| c.waits());
        for c in &controls {
            c.set_wait(false);
        }
        let mut pause_ms = 1;
        loop {
            if controls.iter().any(|c| c.cancelled.get()) {
                return None;
            }
            if iters.is_empty() {
                return None;
            }
            let n = iters.len();
            let mut k = 0;
            while k < n.min(iters.len()) {
                let i = (turn + k) % iters.len();
                match iters[i].next() {
                    Some(Ok(d)) => {
                        turn = i + 1;
                        return Some(Ok(d));
                    }
                    Some(Err(e)) if is_paused(&e) => k += 1,
                    Some(Err(e)) => return Some(Err(e)),
                    None => {
                        drop(iters.remove(i));
                    }
                }
            }
            if iters.is_empty() {
                return None;
            }
            if !wait {
                return Some(Err(paused()));
            }
            rdb_io::fiber::block_on(rdb_io::sleep(std::time::Duration::from_millis(pause_ms)));
            pause_ms = (pause_ms * 2).min(UNION_POLL_MS_MAX);
        }
    });
    Stream::feed(Box::new(iter))
}

/// The error that ends a batch when a feed has nothing ready.
pub fn paused() -> ReqlError {
    ReqlError::new(ErrorKind::FeedPaused, "The changefeed has nothing ready.")
}

pub fn is_paused(e: &ReqlError) -> bool {
    e.kind == ErrorKind::FeedPaused
}

/// Which documents of the table a feed follows.
enum Filter {
    All,
    /// Documents whose storage key lies in the range (a primary-key slice).
    Keys(Bound<Vec<u8>>, Bound<Vec<u8>>),
    /// Documents with one of these storage keys (`get_all` on the primary key).
    KeySet(rustc_hash::FxHashSet<Vec<u8>>),
    /// Documents with a value of a secondary index in the range (encoded values).
    Index {
        func: IndexProbe,
        lo: Bound<Vec<u8>>,
        hi: Bound<Vec<u8>>,
    },
    /// Documents with a value of a secondary index among these (encoded values).
    IndexSet {
        func: IndexProbe,
        codes: rustc_hash::FxHashSet<Vec<u8>>,
    },
    /// Documents whose geometry in a geospatial index intersects this one (read into
    /// S2 once, not per change).
    Geo {
        func: IndexProbe,
        query: std::cell::RefCell<super::geo::shape::Shape>,
    },
}

fn in_range(code: &[u8], lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
    crate::store::index::within(code, lo, hi)
}

impl Filter {
    /// Whether a document is followed: decided by its storage key for key filters.
    fn accepts(&self, key: &[u8], doc: &Datum) -> bool {
        match self {
            Filter::All => true,
            Filter::Keys(lo, hi) => in_range(key, lo, hi),
            Filter::KeySet(keys) => keys.contains(key),
            Filter::Index { func, lo, hi } => func.codes(doc).iter().any(|c| in_range(c, lo, hi)),
            Filter::IndexSet { func, codes } => func.codes(doc).iter().any(|c| codes.contains(c)),
            Filter::Geo { func, query } => func.values(doc).iter().any(|g| {
                super::geo::shape::is_geometry(g)
                    && super::geo::shape::parse(g).is_ok_and(|mut g| {
                        super::geo::ops::intersects(&mut query.borrow_mut(), &mut g)
                    })
            }),
        }
    }
}

struct Options {
    squash: bool,
    queue_max: usize,
    initial: bool,
    states: bool,
    types: bool,
    /// Add a resume token to every change.
    resumable: bool,
    /// Continue after this token's position instead of starting now.
    resume_token: Option<String>,
}

fn options(ctx: &Ctx, opt: &Optargs) -> Result<Options> {
    let flag = |k: &str| -> Result<bool> {
        match opt.datum(k)? {
            Some(d) => boolean(&d),
            None => Ok(false),
        }
    };
    let squash = match opt.datum("squash")? {
        None => false,
        Some(Datum::Bool(b)) => b,
        Some(Datum::Num(n)) if n >= 0.0 => n > 0.0,
        Some(Datum::Num(_)) => {
            return Err(logic(
                "Expected BOOL or a positive NUMBER but found a negative NUMBER.",
            ))
        }
        Some(d) => {
            return Err(logic(format!(
                "Expected BOOL or NUMBER but found {}.",
                d.type_name()
            )))
        }
    };
    let queue = match opt.datum("changefeed_queue_size")? {
        Some(d) => Some(d),
        None => ctx.global_optargs.get("changefeed_queue_size").cloned(),
    };
    let queue_max = match queue {
        None => QUEUE_DEFAULT,
        Some(d) => {
            let n = super::num(&d)?;
            if n < 1.0 || n.fract() != 0.0 {
                return Err(logic(format!(
                    "Illegal changefeed queue size `{}`.  (Must be >= 1.)",
                    crate::json::to_json(&d)
                )));
            }
            n as usize
        }
    };
    if flag("include_offsets")? {
        return Err(logic(
            "Cannot include offsets for range subs (offsets are only available for `order_by(...).limit(...)` changefeeds).",
        ));
    }
    let resume_token = match opt.datum("resume_token")? {
        None | Some(Datum::Null) => None,
        Some(d) => Some(super::string(&d)?.to_string()),
    };
    let initial = flag("include_initial")?;
    if resume_token.is_some() && initial {
        return Err(logic(
            "A resumed changefeed cannot include initial values (`include_initial` with `resume_token`).",
        ));
    }
    Ok(Options {
        squash,
        queue_max,
        initial,
        states: flag("include_states")?,
        types: flag("include_types")?,
        resumable: flag("resumable")? || resume_token.is_some(),
        resume_token,
    })
}

/// What `changes()` follows when it is called on a stream: the table, the slice,
/// `get_all` keys or limit the stream reads, and the transformations applied since.
#[derive(Clone)]
pub struct ChangeSpec {
    table: Rc<TableRef>,
    slice: Option<Slice>,
    get_all: Option<Rc<super::table::GetAllSpec>>,
    geo: Option<Rc<super::geo::read::GeoSpec>>,
    limit: Option<usize>,
    transforms: Vec<Rc<Transform>>,
    /// A transformation is not deterministic: its changes cannot be followed.
    nondeterministic: bool,
}

/// A transformation applied to documents before `changes()`.
pub enum Transform {
    Map(super::Callable),
    Filter(super::Callable),
    /// An object term (pluck, without, merge, with_fields) with its other arguments.
    Object(u32, Vec<Val>),
}

impl ChangeSpec {
    fn of(v: &Val) -> Option<ChangeSpec> {
        match v {
            Val::Table(t) if t.system.is_none() => Some(ChangeSpec {
                table: t.clone(),
                slice: None,
                get_all: None,
                geo: None,
                limit: None,
                transforms: Vec::new(),
                nondeterministic: false,
            }),
            Val::Stream(s) => {
                if let Some(sp) = &s.spec {
                    return Some((**sp).clone());
                }
                let sel = s.sel.as_ref()?;
                if sel.table.system.is_some() {
                    return None;
                }
                // A selection this cannot describe (none so far) must not follow the
                // whole table.
                if sel.kind == "SELECTION<STREAM>"
                    && sel.slice.is_none()
                    && sel.get_all.is_none()
                    && sel.geo.is_none()
                {
                    return None;
                }
                Some(ChangeSpec {
                    table: sel.table.clone(),
                    slice: sel.slice.as_ref().map(|x| (**x).clone()),
                    get_all: sel.get_all.clone(),
                    geo: sel.geo.clone(),
                    limit: sel.limit,
                    transforms: Vec::new(),
                    nondeterministic: false,
                })
            }
            _ => None,
        }
    }

    /// The spec after `limit(n)`: only an ordered slice keeps one.
    pub fn limited(&self, n: usize) -> Option<ChangeSpec> {
        let ordered = self.slice.as_ref().is_some_and(|s| s.desc.is_some());
        (ordered && self.limit.is_none()).then(|| ChangeSpec {
            limit: Some(n),
            ..self.clone()
        })
    }
}

/// The spec of a transformation of a table's documents (`None`: not one).
pub fn transform_spec(ty: u32, args: &[Val], opt: &Optargs) -> Result<Option<ChangeSpec>> {
    use crate::term_type as tt;
    if !matches!(
        ty,
        tt::MAP | tt::FILTER | tt::PLUCK | tt::WITHOUT | tt::MERGE | tt::WITH_FIELDS
    ) {
        return Ok(None);
    }
    let Some(mut spec) = args.first().and_then(ChangeSpec::of) else {
        return Ok(None);
    };
    if args[1..]
        .iter()
        .any(|a| matches!(a, Val::Stream(_) | Val::Table(_)))
    {
        return Ok(None);
    }
    let deterministic = |v: &Val| match v {
        Val::Func(f) => super::deterministic(&f.body),
        _ => true,
    };
    spec.nondeterministic |= !args[1..].iter().all(deterministic);
    let t = match ty {
        tt::MAP if args.len() == 2 => Transform::Map(args[1].share().into_callable()),
        tt::FILTER if args.len() == 2 && !opt.has("default") => {
            Transform::Filter(args[1].share().into_callable())
        }
        tt::PLUCK | tt::WITHOUT | tt::MERGE | tt::WITH_FIELDS => {
            Transform::Object(ty, args[1..].iter().map(Val::share).collect())
        }
        _ => return Ok(None),
    };
    spec.transforms.push(Rc::new(t));
    Ok(Some(spec))
}

/// A document through the transformations (`None`: filtered out or failed on it).
fn transform(ctx: &Rc<Ctx>, ts: &[Rc<Transform>], mut doc: Datum) -> Option<Datum> {
    for t in ts {
        doc = match &**t {
            Transform::Map(c) => c.call_datum(ctx, std::slice::from_ref(&doc)).ok()?,
            Transform::Filter(c) => {
                if !super::seq::filter_keep(ctx, c, &None, &doc).ok()? {
                    return None;
                }
                doc
            }
            Transform::Object(ty, args) => {
                let op = crate::term::Op {
                    ty: *ty,
                    args: Vec::new(),
                    optargs: Vec::new(),
                };
                let env = super::Env::default();
                let opt = Optargs {
                    ctx,
                    env: &env,
                    op: &op,
                };
                let mut a = vec![Val::Datum(doc)];
                a.extend(args.iter().map(Val::share));
                super::apply_plain(ctx, *ty, a, &opt)
                    .and_then(|v| v.into_datum(ctx))
                    .ok()?
            }
        };
    }
    Some(doc)
}

/// Resume tokens: `rdb1.` and the hex of the table's key id, the shard count and each
/// shard's position (record LSN, operation index). Opaque to clients.
const TOKEN_PREFIX: &str = "rdb1.";

fn encode_token(key_id: u64, pos: &[crate::store::LogPos]) -> String {
    let mut b = Vec::with_capacity(10 + pos.len() * 12);
    b.extend_from_slice(&key_id.to_be_bytes());
    b.extend_from_slice(&(pos.len() as u16).to_be_bytes());
    for (lsn, idx) in pos {
        b.extend_from_slice(&lsn.to_be_bytes());
        b.extend_from_slice(&idx.to_be_bytes());
    }
    let mut out = String::from(TOKEN_PREFIX);
    for x in b {
        out.push_str(&format!("{x:02x}"));
    }
    out
}

fn decode_token(t: &str, key_id: u64, shards: usize) -> Result<Vec<crate::store::LogPos>> {
    let bad = || logic(format!("Invalid changefeed resume token `{t}`."));
    let hex = t.strip_prefix(TOKEN_PREFIX).ok_or_else(bad)?;
    if hex.len() % 2 != 0 || !hex.is_ascii() {
        return Err(bad());
    }
    let b: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad())?;
    if b.len() < 10 {
        return Err(bad());
    }
    let id = u64::from_be_bytes(b[0..8].try_into().expect("8 bytes"));
    let n = usize::from(u16::from_be_bytes([b[8], b[9]]));
    if b.len() != 10 + n * 12 {
        return Err(bad());
    }
    if id != key_id {
        return Err(logic("The resume token belongs to another table."));
    }
    if n != shards {
        return Err(logic(
            "The resume token was made for a different number of shards.",
        ));
    }
    Ok((0..n)
        .map(|i| {
            let at = 10 + i * 12;
            (
                u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes")),
                u32::from_be_bytes(b[at + 8..at + 12].try_into().expect("4 bytes")),
            )
        })
        .collect())
}

/// `changes()`.
pub fn changes(ctx: &Rc<Ctx>, args: &mut [Val], opt: &Optargs) -> Result<Val> {
    let o = options(ctx, opt)?;
    let mut transforms: Vec<Rc<Transform>> = Vec::new();
    // `squash` only merges changes that pile up; reporting each one is a valid squash.
    let _ = o.squash;
    let target = std::mem::replace(&mut args[0], Val::Datum(Datum::Null));
    let (t, filter, note, initial): (Rc<TableRef>, Filter, u32, Option<Initial>) = match target {
        Val::Table(t) => {
            let initial = o
                .initial
                .then(|| Initial::Stream(super::table::table_stream(&t)));
            (t, Filter::All, SEQUENCE_FEED, initial)
        }
        Val::Single(t, doc, pk) => {
            let key = Store::doc_key(&t.info, &pk)?;
            let initial = o.initial.then(|| Initial::Point(doc));
            (
                t,
                Filter::Keys(Bound::Included(key.clone()), Bound::Included(key)),
                ATOM_FEED,
                initial,
            )
        }
        v @ Val::Stream(_) => {
            let spec = ChangeSpec::of(&v);
            let Val::Stream(s) = v else {
                unreachable!("matched a stream")
            };
            let Some(spec) = spec else {
                // Streams computed in memory (ranges, arrays, folds...) have no source
                // to follow.
                if s.sel.is_none() {
                    return Err(logic("Cannot call `changes` on an eager stream."));
                }
                return Err(logic(
                    ".changes() is supported on tables, table slices, get_all, get_intersecting, single documents and their transformations by this server so far.",
                ));
            };
            if spec.nondeterministic {
                return Err(logic(
                    "Cannot call `changes` after a non-deterministic function.",
                ));
            }
            let t = spec.table.clone();
            transforms = spec.transforms.clone();
            if let Some(n) = spec.limit {
                let slice = match &spec.slice {
                    Some(slice) if slice.desc.is_some() => slice.clone(),
                    _ => {
                        return Err(logic(
                            "Cannot get changes on the first elements of an unordered stream.",
                        ))
                    }
                };
                return top_feed(ctx, t, slice, n, &o, transforms);
            }
            let filter = match (&spec.slice, &spec.get_all, &spec.geo) {
                (Some(slice), _, _) => slice_filter(&t, slice)?,
                (_, Some(ga), _) => get_all_filter(&t, ga)?,
                (_, _, Some(g)) => Filter::Geo {
                    func: IndexProbe::new(g.index.clone())?,
                    query: std::cell::RefCell::new(super::geo::shape::parse(&g.query)?),
                },
                _ => Filter::All,
            };
            // The initial values are the stream itself (already transformed).
            let initial = o.initial.then_some(Initial::Ready(s));
            (t, filter, SEQUENCE_FEED, initial)
        }
        other => {
            return Err(logic(format!(
                "Expected type SEQUENCE but found {}.",
                other.type_name()
            )))
        }
    };
    if t.system.is_some() {
        return Err(logic(
            "Changefeeds on the tables of the `rethinkdb` database are not supported by this server yet.",
        ));
    }
    let inbox = t.store.subscribe(&t.info, o.queue_max)?;
    let mut pos = inbox.start.clone();
    let mut replay = VecDeque::new();
    if let Some(tok) = &o.resume_token {
        let from = decode_token(tok, t.info.key_id, pos.len())?;
        for (shard, (f, upto)) in from.iter().zip(&pos).enumerate() {
            replay.push_back((
                shard,
                crate::store::ReplayReq {
                    key_id: t.info.key_id,
                    from: *f,
                    upto_lsn: upto.0,
                },
            ));
        }
        pos = from;
    }
    let mut iter = FeedIter::new(ctx, note, t, inbox, filter, initial, transforms, &o);
    iter.pos = pos;
    iter.replay = replay;
    Ok(Val::Stream(Stream::feed(Box::new(iter))))
}

/// `order_by(index).limit(n).changes()`: follows the first `n` documents of a slice.
fn top_feed(
    ctx: &Rc<Ctx>,
    t: Rc<TableRef>,
    slice: Slice,
    n: usize,
    o: &Options,
    transforms: Vec<Rc<Transform>>,
) -> Result<Val> {
    let filter = slice_filter(&t, &slice)?;
    let probe = match &slice.index {
        Some(ix) => Some(IndexProbe::new(ix.clone())?),
        None => None,
    };
    if o.resumable {
        return Err(logic(
            "Resumable changefeeds on `order_by.limit` are not supported; use them on tables, ranges, get_all or single documents.",
        ));
    }
    // Subscribe before reading the first set, so no change in between is missed.
    let inbox = t.store.subscribe(&t.info, o.queue_max)?;
    let mut top = Top {
        t,
        slice,
        n,
        probe,
        set: Vec::new(),
    };
    top.set = top.read()?;
    let initial = o.initial.then(|| {
        Initial::Stream(Stream::from_vec(
            top.set.iter().map(|(_, d)| d.clone()).collect(),
        ))
    });
    let table = top.t.clone();
    let mut iter = FeedIter::new(
        ctx,
        ORDER_BY_LIMIT_FEED,
        table,
        inbox,
        filter,
        initial,
        transforms,
        o,
    );
    iter.top = Some(top);
    Ok(Val::Stream(Stream::feed(Box::new(iter))))
}

/// The first `n` documents of a slice, as a feed last reported them.
struct Top {
    t: Rc<TableRef>,
    slice: Slice,
    n: usize,
    probe: Option<IndexProbe>,
    /// (storage key, document), in the slice's order.
    set: Vec<(Vec<u8>, Datum)>,
}

impl Top {
    fn read(&self) -> Result<Vec<(Vec<u8>, Datum)>> {
        let mut s = super::table::slice_stream(&self.t, self.slice.clone(), "TABLE_SLICE");
        let mut out = Vec::with_capacity(self.n);
        while out.len() < self.n {
            let Some(d) = s.next_datum()? else { break };
            let pk = d
                .get_field(&self.t.info.primary_key)
                .cloned()
                .unwrap_or(Datum::Null);
            out.push((Store::doc_key(&self.t.info, &pk)?, d));
        }
        Ok(out)
    }

    /// Where a document sorts in the slice's order (index value, then key).
    fn sort_key(&self, key: &[u8], doc: &Datum) -> Vec<u8> {
        let mut k = match &self.probe {
            Some(p) => p.codes(doc).into_iter().min().unwrap_or_default(),
            None => Vec::new(),
        };
        k.extend_from_slice(key);
        k
    }

    /// Whether a change can alter the set (else it is not read again).
    fn touches(&self, key: &[u8], new: Option<&Datum>, filter: &Filter) -> bool {
        if self.set.iter().any(|(k, _)| k == key) {
            return true;
        }
        let Some(new) = new.filter(|d| filter.accepts(key, d)) else {
            return false;
        };
        if self.set.len() < self.n {
            return true;
        }
        let Some((lk, ld)) = self.set.last() else {
            return false;
        };
        let (mine, last) = (self.sort_key(key, new), self.sort_key(lk, ld));
        if self.slice.desc == Some(true) {
            mine > last
        } else {
            mine < last
        }
    }

    /// Reads the set again and reports how it changed: documents that changed in
    /// place, and departures paired with arrivals.
    fn refresh(&mut self, types: bool, ctx: &Rc<Ctx>, ts: &[Rc<Transform>]) -> Result<Vec<Datum>> {
        let next = self.read()?;
        let before: rustc_hash::FxHashMap<&[u8], &Datum> =
            self.set.iter().map(|(k, d)| (k.as_slice(), d)).collect();
        let after: rustc_hash::FxHashMap<&[u8], &Datum> =
            next.iter().map(|(k, d)| (k.as_slice(), d)).collect();
        let mut out = Vec::new();
        let through = |d: Option<&Datum>| -> Option<Datum> {
            let d = d?.clone();
            if ts.is_empty() {
                Some(d)
            } else {
                transform(ctx, ts, d)
            }
        };
        // A change the transformations hide (same values before and after) is not one.
        let row = |old: Option<&Datum>, new: Option<&Datum>| -> Option<Datum> {
            let (old, new) = (through(old), through(new));
            if old == new {
                return None;
            }
            let (old, new) = (old.as_ref(), new.as_ref());
            let mut o = Object::new();
            if types {
                let ty = match (old, new) {
                    (None, _) => "add",
                    (_, None) => "remove",
                    _ => "change",
                };
                o.insert("type".into(), Datum::str(ty));
            }
            o.insert("new_val".into(), new.cloned().unwrap_or(Datum::Null));
            o.insert("old_val".into(), old.cloned().unwrap_or(Datum::Null));
            Some(Datum::object(o))
        };
        for (k, d) in &next {
            if let Some(old) = before.get(k.as_slice()) {
                if *old != d {
                    out.extend(row(Some(old), Some(d)));
                }
            }
        }
        let gone: Vec<&Datum> = self
            .set
            .iter()
            .filter(|(k, _)| !after.contains_key(k.as_slice()))
            .map(|(_, d)| d)
            .collect();
        let came: Vec<&Datum> = next
            .iter()
            .filter(|(k, _)| !before.contains_key(k.as_slice()))
            .map(|(_, d)| d)
            .collect();
        for i in 0..gone.len().max(came.len()) {
            out.extend(row(gone.get(i).copied(), came.get(i).copied()));
        }
        drop(before);
        drop(after);
        self.set = next;
        Ok(out)
    }
}

fn slice_filter(t: &TableRef, slice: &Slice) -> Result<Filter> {
    let (lo, hi) = slice
        .bounds
        .clone()
        .unwrap_or((Bound::Unbounded, Bound::Unbounded));
    let map = |b: Bound<Datum>, enc: &dyn Fn(&Datum) -> Vec<u8>| match b {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(d) => Bound::Included(enc(&d)),
        Bound::Excluded(d) => Bound::Excluded(enc(&d)),
    };
    Ok(match &slice.index {
        None => {
            let key = |d: &Datum| {
                let mut k = t.info.key_prefix();
                crate::keycode::encode_into(&mut k, d);
                k
            };
            Filter::Keys(map(lo, &key), map(hi, &key))
        }
        Some(ix) => Filter::Index {
            func: IndexProbe::new(ix.clone())?,
            lo: map(lo, &crate::keycode::encode),
            hi: map(hi, &crate::keycode::encode),
        },
    })
}

fn get_all_filter(t: &TableRef, ga: &super::table::GetAllSpec) -> Result<Filter> {
    Ok(match &ga.index {
        None => Filter::KeySet(
            ga.keys
                .iter()
                .filter_map(|k| Store::doc_key(&t.info, k).ok())
                .collect(),
        ),
        Some(ix) => Filter::IndexSet {
            func: IndexProbe::new(ix.clone())?,
            codes: ga
                .keys
                .iter()
                .filter_map(|k| secondary_code(k).ok())
                .collect(),
        },
    })
}

/// The values a feed reports before its changes (`include_initial`).
enum Initial {
    /// Documents still to go through the feed's transformations.
    Stream(Stream),
    /// Values already transformed.
    Ready(Stream),
    Point(Datum),
}

fn state(name: &str, types: bool) -> Datum {
    let mut o = Object::new();
    o.insert("state".into(), Datum::str(name));
    if types {
        o.insert("type".into(), Datum::str("state"));
    }
    Datum::object(o)
}

struct FeedIter {
    table: Rc<TableRef>,
    /// Per shard, the last change position this feed has passed (reported or not).
    pos: Vec<crate::store::LogPos>,
    resumable: bool,
    /// Shards whose log still has changes to replay (a resumed feed), and what was
    /// read back from them, both before any live change.
    replay: VecDeque<(usize, crate::store::ReplayReq)>,
    replayed: VecDeque<crate::store::DocChange>,
    ctx: Rc<Ctx>,
    /// Applied to every document reported (old and new values, initial values).
    transforms: Vec<Rc<Transform>>,
    ctl: Rc<FeedControl>,
    inbox: FeedInbox,
    filter: Filter,
    /// For `order_by.limit` feeds: the set followed.
    top: Option<Top>,
    /// Documents ready to hand out (states).
    pending: VecDeque<Datum>,
    initial: Option<Initial>,
    states: bool,
    types: bool,
    ready_sent: bool,
}

impl FeedIter {
    /// A feed of `table` reading `inbox`, registered with the query's feeds; it starts
    /// where the inbox's subscription did.
    #[allow(clippy::too_many_arguments)]
    fn new(
        ctx: &Rc<Ctx>,
        note: u32,
        table: Rc<TableRef>,
        inbox: FeedInbox,
        filter: Filter,
        initial: Option<Initial>,
        transforms: Vec<Rc<Transform>>,
        o: &Options,
    ) -> FeedIter {
        let ctl = FeedControl::new(note, o.states);
        ctx.feeds.borrow_mut().push(ctl.clone());
        let mut pending = VecDeque::new();
        if o.states && o.initial {
            pending.push_back(state("initializing", o.types));
        }
        FeedIter {
            ctx: ctx.clone(),
            transforms,
            ctl,
            pos: inbox.start.clone(),
            inbox,
            filter,
            top: None,
            table,
            resumable: o.resumable,
            replay: VecDeque::new(),
            replayed: VecDeque::new(),
            pending,
            initial,
            states: o.states,
            types: o.types,
            ready_sent: false,
        }
    }

    /// The change as the feed reports it: each side only if the feed follows it there
    /// (a document leaving a range shows as removed). `None`: not followed at all.
    fn change(&self, key: &[u8], old: Option<&[u8]>, new: Option<&[u8]>) -> Result<Option<Datum>> {
        let dec = |b: Option<&[u8]>| b.map(decode_doc).transpose();
        let (old, new) = (dec(old)?, dec(new)?);
        let old = old
            .filter(|d| self.filter.accepts(key, d))
            .and_then(|d| self.through(d));
        let new = new
            .filter(|d| self.filter.accepts(key, d))
            .and_then(|d| self.through(d));
        if old.is_none() && new.is_none() {
            return Ok(None);
        }
        let mut o = Object::new();
        if self.types {
            let ty = match (&old, &new) {
                (None, _) => "add",
                (_, None) => "remove",
                _ => "change",
            };
            o.insert("type".into(), Datum::str(ty));
        }
        o.insert("new_val".into(), new.unwrap_or(Datum::Null));
        o.insert("old_val".into(), old.unwrap_or(Datum::Null));
        if self.resumable {
            o.insert(
                "token".into(),
                Datum::str(encode_token(self.table.info.key_id, &self.pos)),
            );
        }
        Ok(Some(Datum::object(o)))
    }

    /// Moves the shard's position past a change; false if it was already passed.
    fn advance(&mut self, key: &[u8], lsn: u64, idx: u32) -> bool {
        let shard = self.table.store.shard_of(key);
        let Some(p) = self.pos.get_mut(shard) else {
            return true;
        };
        if (lsn, idx) <= *p {
            return false;
        }
        *p = (lsn, idx);
        true
    }

    /// The next change read back from a shard's log, fetching as needed.
    fn next_replayed(&mut self) -> Option<Result<crate::store::DocChange>> {
        loop {
            if let Some(c) = self.replayed.pop_front() {
                return Some(Ok(c));
            }
            let (shard, req) = self.replay.pop_front()?;
            match self.table.store.replay_raw(shard, req.clone()) {
                Ok(r) => {
                    self.replayed.extend(r.changes);
                    if let Some(next) = r.next {
                        self.replay
                            .push_front((shard, crate::store::ReplayReq { from: next, ..req }));
                    }
                }
                Err(e) => {
                    self.replay.clear();
                    return Some(Err(e));
                }
            }
        }
    }

    fn through(&self, doc: Datum) -> Option<Datum> {
        if self.transforms.is_empty() {
            return Some(doc);
        }
        transform(&self.ctx, &self.transforms, doc)
    }

    fn initial_row(&self, doc: Datum) -> Datum {
        let mut o = Object::new();
        o.insert("new_val".into(), doc);
        if self.types {
            o.insert("type".into(), Datum::str("initial"));
        }
        Datum::object(o)
    }

    /// Waits (suspending the query's fiber) for a message or a cancellation.
    fn wait(&mut self) -> Option<FeedMsg> {
        let cancel = self.ctl.wake.listen();
        if self.ctl.cancelled.get() {
            return None;
        }
        let waiting = self.inbox.wait(cancel);
        rdb_io::fiber::block_on(waiting);
        self.inbox.try_next()
    }
}

impl Iterator for FeedIter {
    type Item = Result<Datum>;

    fn next(&mut self) -> Option<Result<Datum>> {
        loop {
            if self.ctl.cancelled.get() {
                return None;
            }
            if let Some(d) = self.pending.pop_front() {
                return Some(Ok(d));
            }
            match self.initial.take() {
                Some(Initial::Point(doc)) => return Some(Ok(self.initial_row(doc))),
                Some(Initial::Ready(mut s)) => match s.next_datum() {
                    Ok(Some(v)) => {
                        let row = self.initial_row(v);
                        self.initial = Some(Initial::Ready(s));
                        return Some(Ok(row));
                    }
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                },
                Some(Initial::Stream(mut s)) => match s.next_datum() {
                    Ok(Some(doc)) => {
                        let row = self.through(doc).map(|d| self.initial_row(d));
                        self.initial = Some(Initial::Stream(s));
                        match row {
                            Some(row) => return Some(Ok(row)),
                            None => continue,
                        }
                    }
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                },
                None => {}
            }
            if self.states && !self.ready_sent {
                self.ready_sent = true;
                return Some(Ok(state("ready", self.types)));
            }
            if let Some(r) = self.next_replayed() {
                let c = match r {
                    Ok(c) => c,
                    Err(e) => return Some(Err(e)),
                };
                if !self.advance(&c.key, c.lsn, c.idx) {
                    continue;
                }
                if let Some(r) = self
                    .change(&c.key, c.old.as_deref(), c.new.as_deref())
                    .transpose()
                {
                    return Some(r);
                }
                continue;
            }
            let skipped = self.inbox.take_skipped();
            if skipped > 0 {
                let mut o = Object::new();
                o.insert(
                    "error".into(),
                    Datum::str(format!(
                        "Changefeed cache over array size limit, skipped {skipped} elements."
                    )),
                );
                return Some(Ok(Datum::object(o)));
            }
            let msg = match self.inbox.try_next() {
                Some(m) => m,
                None => {
                    if !self.ctl.wait.get() {
                        return Some(Err(paused()));
                    }
                    match self.wait() {
                        Some(m) => m,
                        None => continue,
                    }
                }
            };
            match msg {
                FeedMsg::End(why) => {
                    self.initial = None;
                    return Some(Err(ReqlError::new(ErrorKind::OpFailed, why)));
                }
                FeedMsg::Change(c) if self.top.is_some() => {
                    let new = match c.new_value().map(decode_doc).transpose() {
                        Ok(n) => n,
                        Err(e) => return Some(Err(e)),
                    };
                    let top = self.top.as_mut().expect("checked");
                    if !top.touches(c.key(), new.as_ref(), &self.filter) {
                        continue;
                    }
                    match top.refresh(self.types, &self.ctx, &self.transforms) {
                        Ok(rows) => self.pending.extend(rows),
                        Err(e) => return Some(Err(e)),
                    }
                }
                FeedMsg::Change(c) => {
                    if !self.advance(c.key(), c.lsn(), c.idx()) {
                        continue;
                    }
                    if let Some(r) = self
                        .change(c.key(), c.old_value(), c.new_value())
                        .transpose()
                    {
                        return Some(r);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_checked() {
        let pos = vec![(5, 2), (0, u32::MAX), (u64::MAX - 1, 0)];
        let t = encode_token(42, &pos);
        assert_eq!(decode_token(&t, 42, 3).unwrap(), pos);
        assert!(decode_token(&t, 43, 3).is_err(), "another table");
        assert!(decode_token(&t, 42, 2).is_err(), "another shard count");
        for bad in ["", "rdb1.", "rdb1.zz", "rdb2.00", &t[..t.len() - 2]] {
            assert!(decode_token(bad, 42, 3).is_err(), "{bad}");
        }
    }
}
