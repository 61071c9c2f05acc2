//! Changefeeds in the evaluator: `changes()` on a table, a table slice or one document.
//!
//! A feed registers with every shard (`Store::subscribe`); shards offer each committed
//! change of the table, in commit order per document, to a queue bounded by
//! `changefeed_queue_size` (changes past the bound are counted, then reported as
//! RethinkDB's "skipped" error document). The feed is a lazy stream whose reads wait for
//! the next change; the session paces it through `FeedControl`: at most one wait per
//! batch, so a batch ends as soon as nothing more is ready.

use super::seq::Stream;
use super::table::{Slice, TableRef};
use super::{boolean, Ctx, Optargs, Val};
use crate::datum::{Datum, Object};
use crate::error::{logic, ErrorKind, ReqlError, Result};
use crate::store::{decode_doc, FeedInbox, FeedMsg, Store};
use std::cell::Cell;
use std::collections::VecDeque;
use std::ops::Bound;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

/// ql2 `Response.ResponseNote` values.
pub const SEQUENCE_FEED: u32 = 1;
pub const ATOM_FEED: u32 = 2;
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
    /// Ends the feed (STOP, connection closed): a waiting read returns at once.
    pub fn cancel(&self) {
        self.cancelled.set(true);
        self.wake.notify(usize::MAX);
    }
}

/// The error that ends a batch when a feed has nothing ready.
pub fn paused() -> ReqlError {
    ReqlError::new(ErrorKind::FeedPaused, "The changefeed has nothing ready.")
}

pub fn is_paused(e: &ReqlError) -> bool {
    e.kind == ErrorKind::FeedPaused
}

/// Which changes of the table a feed reports.
enum Filter {
    All,
    /// Documents whose storage key lies in the range (a primary-key slice).
    Keys(Bound<Vec<u8>>, Bound<Vec<u8>>),
}

impl Filter {
    fn matches(&self, key: &[u8]) -> bool {
        match self {
            Filter::All => true,
            Filter::Keys(lo, hi) => {
                let above = match lo {
                    Bound::Unbounded => true,
                    Bound::Included(b) => key >= b.as_slice(),
                    Bound::Excluded(b) => key > b.as_slice(),
                };
                let below = match hi {
                    Bound::Unbounded => true,
                    Bound::Included(b) => key <= b.as_slice(),
                    Bound::Excluded(b) => key < b.as_slice(),
                };
                above && below
            }
        }
    }
}

struct Options {
    squash: bool,
    queue_max: usize,
    initial: bool,
    states: bool,
    types: bool,
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
    Ok(Options {
        squash,
        queue_max,
        initial: flag("include_initial")?,
        states: flag("include_states")?,
        types: flag("include_types")?,
    })
}

/// `changes()`.
pub fn changes(ctx: &Rc<Ctx>, args: &mut [Val], opt: &Optargs) -> Result<Val> {
    let o = options(ctx, opt)?;
    // `squash` only merges changes that pile up; reporting each one is a valid squash.
    let _ = o.squash;
    let target = std::mem::replace(&mut args[0], Val::Datum(Datum::Null));
    let (t, filter, note, initial): (Rc<TableRef>, Filter, u32, Option<Initial>) = match target
    {
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
        Val::Stream(s) => match s.sel.as_ref().and_then(|x| x.slice.clone()) {
            Some(slice) if slice.index.is_none() && slice.desc.is_none() => {
                let t = s.sel.as_ref().expect("checked").table.clone();
                let filter = primary_filter(&t, &slice);
                let initial = o.initial.then(|| Initial::Stream(s));
                (t, filter, SEQUENCE_FEED, initial)
            }
            _ => {
                return Err(logic(
                    ".changes() is supported on tables, primary-key ranges and single documents by this server so far.",
                ))
            }
        },
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
    let ctl = FeedControl::new(note, o.states);
    ctx.feeds.borrow_mut().push(ctl.clone());
    let mut pending = VecDeque::new();
    if o.states && o.initial {
        pending.push_back(state("initializing", o.types));
    }
    let iter = FeedIter {
        ctl,
        inbox,
        filter,
        pending,
        initial,
        states: o.states,
        types: o.types,
        ready_sent: false,
    };
    Ok(Val::Stream(Stream::new(Box::new(iter), true)))
}

fn primary_filter(t: &TableRef, slice: &Slice) -> Filter {
    let key = |d: &Datum| {
        let mut k = t.info.key_prefix();
        crate::keycode::encode_into(&mut k, d);
        k
    };
    let (lo, hi) = slice
        .bounds
        .clone()
        .unwrap_or((Bound::Unbounded, Bound::Unbounded));
    let map = |b: Bound<Datum>| match b {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(d) => Bound::Included(key(&d)),
        Bound::Excluded(d) => Bound::Excluded(key(&d)),
    };
    Filter::Keys(map(lo), map(hi))
}

/// The values a feed reports before its changes (`include_initial`).
enum Initial {
    Stream(Stream),
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
    ctl: Rc<FeedControl>,
    inbox: FeedInbox,
    filter: Filter,
    /// Documents ready to hand out (states).
    pending: VecDeque<Datum>,
    initial: Option<Initial>,
    states: bool,
    types: bool,
    ready_sent: bool,
}

impl FeedIter {
    fn change(&self, old: Option<&[u8]>, new: Option<&[u8]>) -> Result<Datum> {
        let dec = |b: Option<&[u8]>| b.map(decode_doc).transpose();
        let (old, new) = (dec(old)?, dec(new)?);
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
        Ok(Datum::object(o))
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
    fn wait(&self) -> Option<FeedMsg> {
        let listener = self.ctl.wake.listen();
        if self.ctl.cancelled.get() {
            return None;
        }
        let rx = self.inbox.rx.clone();
        rdb_io::fiber::block_on(futures_lite::future::or(
            async move { rx.recv_async().await.ok() },
            async move {
                listener.await;
                None
            },
        ))
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
                Some(Initial::Stream(mut s)) => match s.next_datum() {
                    Ok(Some(doc)) => {
                        let row = self.initial_row(doc);
                        self.initial = Some(Initial::Stream(s));
                        return Some(Ok(row));
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
            let skipped = self.inbox.skipped.swap(0, Relaxed);
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
            let msg = match self.inbox.rx.try_recv() {
                Ok(m) => m,
                Err(flume::TryRecvError::Disconnected) => return None,
                Err(flume::TryRecvError::Empty) => {
                    if !self.ctl.wait.get() {
                        return Some(Err(paused()));
                    }
                    match self.wait() {
                        Some(m) => m,
                        None => continue,
                    }
                }
            };
            self.inbox.queued.fetch_sub(1, Relaxed);
            match msg {
                FeedMsg::End(why) => {
                    self.initial = None;
                    return Some(Err(ReqlError::new(ErrorKind::OpFailed, why)));
                }
                FeedMsg::Change(c) => {
                    if !self.filter.matches(&c.key) {
                        continue;
                    }
                    return Some(self.change(c.old.as_deref(), c.new.as_deref()));
                }
            }
        }
    }
}
