//! One connection's query state: runs START queries, keeps open cursors for CONTINUE
//! and STOP, and turns results and errors into response frames.

use crate::frame::{BodyError, Query, StartBody};
use crate::response::{self, client_error};
use rdb_io::control::Control;
use rdb_query::error::{logic, ErrorKind};
use rdb_query::eval::feed::{self, FeedControl};
use rdb_query::eval::{self, Ctx, Env, Stream, Val};
use rdb_query::json::write_json;
use rdb_query::store::Store;
use rdb_query::{term, Datum, ReqlError};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

/// Rows per batch when the client does not say (`max_batch_rows`).
const BATCH_ROWS_DEFAULT: usize = 1024;
/// Bytes per batch when the client does not say (`max_batch_bytes`).
const BATCH_BYTES_DEFAULT: usize = 1024 * 1024;
/// Open cursors per connection; more is a client bug or an attack.
const CURSORS_MAX: usize = 4096;

/// Global optional arguments RethinkDB accepts on START.
const GLOBAL_OPTARGS: &[&str] = &[
    "db",
    "use_outdated",
    "noreply",
    "time_format",
    "profile",
    "durability",
    "group_format",
    "binary_format",
    "array_limit",
    "right_bound",
    "left_bound",
    "max_batch_rows",
    "max_batch_bytes",
    "max_batch_seconds",
    "first_batch_scaledown_factor",
    "read_mode",
    "min_batch_rows",
    "changefeed_queue_size",
];

pub struct Cursor {
    /// Holds (through its closures) everything it needs, including the query context.
    stream: Stream,
    batch_rows: usize,
    batch_bytes: usize,
    /// The changefeeds the stream reads (empty for a plain stream).
    feeds: Vec<Rc<FeedControl>>,
}

/// Identity reported by SERVER_INFO.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub id: String,
    pub name: String,
}

/// A query being evaluated.
struct Running {
    control: Rc<Control>,
    /// A START (STOP interrupts it); CONTINUEs end by themselves (a feed's by its
    /// `FeedControl`) and are answered.
    start: bool,
}

pub struct Session {
    cursors: HashMap<u64, Cursor>,
    /// Changefeeds of open cursors, also while a CONTINUE holds the cursor (so STOP and
    /// a closing connection can end a read that waits for changes).
    feeds: HashMap<u64, Vec<Rc<FeedControl>>>,
    server: ServerInfo,
    store: Option<Rc<Store>>,
    /// Queries being evaluated (START or CONTINUE), with the control that interrupts
    /// them; a token STOPped while running is no longer here, and its answer is dropped.
    running: HashMap<u64, Running>,
}

impl Session {
    pub fn new(server: ServerInfo, store: Option<Rc<Store>>) -> Session {
        Session {
            cursors: HashMap::new(),
            feeds: HashMap::new(),
            server,
            store,
            running: HashMap::new(),
        }
    }

    /// The control of the running query `token` (the connection runs its job under it).
    pub fn control(&self, token: u64) -> Option<Rc<Control>> {
        self.running.get(&token).map(|r| r.control.clone())
    }

    /// A query's job ended: `false` if it was STOPped meanwhile (its answer, the
    /// interruption, is not sent: STOP was answered already).
    pub fn job_done(&mut self, token: u64) -> bool {
        self.running.remove(&token).is_some()
    }

    /// Interrupts every running query (the client left or the server stops).
    pub fn interrupt_all(&mut self) {
        for r in self.running.values() {
            r.control.interrupt();
        }
        self.cancel_feeds();
    }

    fn duplicate_token(token: u64) -> Step {
        Step::Reply(Some(client_error(
            token,
            ErrorKind::QueryLogic,
            &format!("ERROR: duplicate token {token}"),
        )))
    }

    /// Decides what one query frame needs. Evaluation happens in the returned `Job`,
    /// which owns everything it uses, so queries of one connection can run at once.
    pub fn step(&mut self, token: u64, parsed: Result<Query, BodyError>) -> Step {
        let q = match parsed {
            Ok(q) => q,
            Err(BodyError::Unparseable) => {
                return Step::Reply(Some(client_error(
                    token,
                    ErrorKind::ResourceLimit,
                    "Client is buggy (failed to deserialize query).",
                )))
            }
            Err(BodyError::TooDeep) => {
                return Step::Reply(Some(client_error(
                    token,
                    ErrorKind::ResourceLimit,
                    &format!(
                        "Query nested too deeply (JSON over {} levels).",
                        crate::frame::JSON_DEPTH_MAX
                    ),
                )))
            }
            Err(BodyError::Malformed(m)) => {
                return Step::Reply(Some(client_error(
                    token,
                    ErrorKind::QueryLogic,
                    &format!("Server could not parse query: {m}"),
                )))
            }
        };
        match q {
            Query::Start(body) => {
                // RethinkDB refuses a START whose token is still in use (running or an
                // open cursor) and leaves that query alone.
                if self.running.contains_key(&token) || self.cursors.contains_key(&token) {
                    return Session::duplicate_token(token);
                }
                if self.cursors.len() >= CURSORS_MAX {
                    let e = ReqlError::new(
                        ErrorKind::ResourceLimit,
                        format!("Too many open cursors on this connection (limit {CURSORS_MAX})."),
                    );
                    return Step::Reply(Some(response::error(token, &e)));
                }
                let store = self.store.clone();
                let control = Control::for_query();
                self.running.insert(
                    token,
                    Running {
                        control,
                        start: true,
                    },
                );
                Step::Run(Box::new(move || start(token, body, store)))
            }
            Query::Continue => match self.cursors.remove(&token) {
                Some(c) => {
                    let control = Control::for_query();
                    self.running.insert(
                        token,
                        Running {
                            control,
                            start: false,
                        },
                    );
                    Step::Run(Box::new(move || {
                        let (reply, cursor) = next_batch(token, c, None, true);
                        Outcome {
                            reply: Some(reply),
                            cursor,
                        }
                    }))
                }
                None => Step::Reply(Some(client_error(
                    token,
                    ErrorKind::QueryLogic,
                    &format!("Token {token} not in stream cache."),
                ))),
            },
            Query::Stop => {
                self.cursors.remove(&token);
                // A running query stops at its next step and its answer is dropped.
                if self.running.get(&token).is_some_and(|r| r.start) {
                    if let Some(r) = self.running.remove(&token) {
                        r.control.interrupt();
                    }
                }
                // A CONTINUE waiting for changes ends now, answered on its own.
                for f in self.feeds.remove(&token).into_iter().flatten() {
                    f.cancel();
                }
                Step::Reply(Some(response::success(
                    token,
                    response::SUCCESS_SEQUENCE,
                    &[],
                    None,
                )))
            }
            Query::NoreplyWait => Step::NoreplyWait,
            Query::ServerInfo => {
                let mut o = rdb_query::datum::Object::new();
                o.insert("id".into(), Datum::str(self.server.id.as_str()));
                o.insert("name".into(), Datum::str(self.server.name.as_str()));
                o.insert("proxy".into(), Datum::Bool(false));
                Step::Reply(Some(response::success(
                    token,
                    response::SERVER_INFO,
                    &[Datum::object(o)],
                    None,
                )))
            }
        }
    }

    /// Keeps a cursor for the client's next CONTINUE.
    pub fn keep_cursor(&mut self, token: u64, c: Cursor) {
        if !c.feeds.is_empty() {
            self.feeds.insert(token, c.feeds.clone());
        }
        self.cursors.insert(token, c);
    }

    /// A query finished without a cursor to keep.
    pub fn finished(&mut self, token: u64) {
        self.feeds.remove(&token);
    }

    /// Whether `token` is a changefeed (its CONTINUE may wait indefinitely).
    pub fn is_feed(&self, token: u64) -> bool {
        self.feeds.contains_key(&token)
    }

    /// Ends every changefeed (the connection is closing).
    pub fn cancel_feeds(&mut self) {
        for f in self.feeds.values().flatten() {
            f.cancel();
        }
    }
}

/// What a query frame needs.
pub enum Step {
    /// Answer at once (`None`: no answer).
    Reply(Option<Vec<u8>>),
    /// Evaluate (on a fiber); the outcome carries the answer and any cursor to keep.
    Run(Job),
    /// Answer once every query started earlier on this connection has finished.
    NoreplyWait,
}

pub type Job = Box<dyn FnOnce() -> Outcome>;

/// The result of a `Job`.
pub struct Outcome {
    pub reply: Option<Vec<u8>>,
    pub cursor: Option<Cursor>,
}

/// The answer to NOREPLY_WAIT.
pub fn noreply_wait_done(token: u64) -> Vec<u8> {
    response::success(token, response::WAIT_COMPLETE, &[], None)
}

/// What a query evaluated to.
enum Answer {
    /// The JSON of a single datum, written without building it (`eval::point`).
    Json(String),
    Val(Val, Rc<Ctx>),
}

fn start(token: u64, body: StartBody, store: Option<Rc<Store>>) -> Outcome {
    let started = Instant::now();
    let globals = match &body {
        StartBody::Json { global_optargs, .. } => eval_global_optargs(
            global_optargs
                .iter()
                .map(|(k, v)| (k.as_str(), GlobalOptarg::Json(v))),
        ),
        StartBody::Parsed((_, optargs)) => eval_global_optargs(
            optargs
                .iter()
                .map(|(k, t)| (k.as_str(), GlobalOptarg::Term(t))),
        ),
    };
    let (globals, noreply) = match globals {
        Ok(g) => g,
        Err(e) => {
            return Outcome {
                reply: Some(response::error(token, &e)),
                cursor: None,
            }
        }
    };
    let profile = matches!(globals.get("profile"), Some(Datum::Bool(true)));
    let batch_rows = batch_limit(&globals, "max_batch_rows", BATCH_ROWS_DEFAULT);
    let batch_bytes = batch_limit(&globals, "max_batch_bytes", BATCH_BYTES_DEFAULT);
    let result = (|| -> Result<Answer, ReqlError> {
        let t = match &body {
            StartBody::Json { term, .. } => term::parse(term)?,
            StartBody::Parsed((t, _)) => t.clone(),
        };
        eval::check(&t)?;
        let ctx = Ctx::with_store(globals, store)?;
        if !profile {
            if let Some(json) = eval::point::get_json(&ctx, &t) {
                return Ok(Answer::Json(json));
            }
        }
        let v = eval::table::plain(eval::eval(&ctx, &Env::default(), &t)?);
        Ok(Answer::Val(v, ctx))
    })();
    let (reply, cursor) = match result {
        Err(e) => (response::error(token, &e), None),
        Ok(Answer::Json(json)) => (
            response::success_json(token, response::SUCCESS_ATOM, &json),
            None,
        ),
        Ok(Answer::Val(Val::Stream(stream), ctx)) => {
            let c = Cursor {
                stream,
                batch_rows,
                batch_bytes,
                feeds: ctx.feeds.take(),
            };
            let prof = profile.then(|| profile_json(started));
            next_batch(token, c, prof.as_deref(), false)
        }
        Ok(Answer::Val(v, ctx)) => {
            let reply = match result_datum(v, &ctx).and_then(|d| {
                rdb_query::json::check_serializable(&d)?;
                Ok(d)
            }) {
                Ok(d) => {
                    let prof = profile.then(|| profile_json(started));
                    response::success(token, response::SUCCESS_ATOM, &[d], prof.as_deref())
                }
                Err(e) => response::error(token, &e),
            };
            (reply, None)
        }
    };
    if noreply {
        // Nobody will CONTINUE a noreply stream: drop its cursor.
        return Outcome {
            reply: None,
            cursor: None,
        };
    }
    Outcome {
        reply: Some(reply),
        cursor,
    }
}

/// The next batch of a cursor, and the cursor again unless the stream ended. A
/// changefeed's batch holds what is ready; on CONTINUE (`wait`) it first waits for at
/// least one change.
fn next_batch(
    token: u64,
    mut c: Cursor,
    profile: Option<&str>,
    wait: bool,
) -> (Vec<u8>, Option<Cursor>) {
    let mut body = String::from("[");
    let mut rows = 0usize;
    for f in &c.feeds {
        f.set_wait(wait);
    }
    let done = loop {
        if rows >= c.batch_rows || body.len() >= c.batch_bytes {
            break false;
        }
        if rows == 1 {
            for f in &c.feeds {
                f.set_wait(false);
            }
        }
        match c.stream.next_datum() {
            Ok(Some(d)) => {
                if let Err(e) = rdb_query::json::check_serializable(&d) {
                    return (response::error(token, &e), None);
                }
                if rows > 0 {
                    body.push(',');
                }
                write_json(&mut body, &d);
                rows += 1;
            }
            Ok(None) => break true,
            Err(e) if feed::is_paused(&e) => break false,
            Err(e) => return (response::error(token, &e), None),
        }
    };
    body.push(']');
    let t = if done {
        response::SUCCESS_SEQUENCE
    } else {
        response::SUCCESS_PARTIAL
    };
    // Drivers read the notes field of stream responses: it tells feeds apart.
    let mut s = format!("{{\"t\":{t},\"r\":{body},\"n\":[{}]", notes(&c.feeds));
    if let Some(p) = profile {
        s.push_str(",\"p\":");
        s.push_str(p);
    }
    s.push('}');
    (response::frame(token, &s), (!done).then_some(c))
}

/// The response notes of a stream reading these feeds.
fn notes(feeds: &[Rc<FeedControl>]) -> String {
    let Some(first) = feeds.first() else {
        return String::new();
    };
    let mut kind = first.note;
    if feeds.iter().any(|f| f.note != kind) {
        kind = feed::UNIONED_FEED;
    }
    if feeds.iter().any(|f| f.states) {
        format!("{kind},{}", feed::INCLUDES_STATES)
    } else {
        kind.to_string()
    }
}

fn result_datum(v: Val, ctx: &Ctx) -> Result<Datum, ReqlError> {
    match v {
        Val::Datum(d) => Ok(d),
        Val::Grouped(_) => v.into_datum(ctx),
        other => Err(logic(format!(
            "Query result must be of type DATUM, GROUPED_DATA, or STREAM (got {}).",
            other.type_name()
        ))),
    }
}

fn batch_limit(globals: &HashMap<String, Datum>, key: &str, default: usize) -> usize {
    match globals.get(key).and_then(Datum::as_num) {
        Some(n) if n >= 1.0 => n as usize,
        _ => default,
    }
}

fn profile_json(started: Instant) -> String {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut s = String::from("[{\"description\":\"Evaluating query.\",\"duration(ms)\":");
    rdb_query::json::write_num(&mut s, ms);
    s.push_str(",\"sub_tasks\":[]}]");
    s
}

/// A global optarg's value: JSON still to parse, or a term the fast path parsed.
enum GlobalOptarg<'a> {
    Json(&'a serde_json::Value),
    Term(&'a Rc<term::Term>),
}

/// Evaluates the global optargs (each is a term), in key order; returns them and the
/// noreply flag.
fn eval_global_optargs<'a>(
    m: impl Iterator<Item = (&'a str, GlobalOptarg<'a>)>,
) -> Result<(HashMap<String, Datum>, bool), ReqlError> {
    let mut out = HashMap::new();
    let mut scratch = None;
    for (k, v) in m {
        if !GLOBAL_OPTARGS.contains(&k) {
            return Err(ReqlError::new(
                ErrorKind::Compile,
                format!("Unrecognized global optional argument `{k}`."),
            ));
        }
        let t = match v {
            GlobalOptarg::Json(v) => term::parse(v)?,
            GlobalOptarg::Term(t) => t.clone(),
        };
        eval::check(&t)?;
        let scratch = match &mut scratch {
            Some(s) => s,
            None => scratch.insert(Ctx::new(HashMap::new())?),
        };
        let d = match eval::eval(scratch, &Env::default(), &t)? {
            Val::Db(name) => Datum::str(&*name),
            other => other.into_datum(scratch)?,
        };
        out.insert(k.to_owned(), d);
    }
    let noreply = matches!(out.get("noreply"), Some(Datum::Bool(true)));
    Ok((out, noreply))
}
