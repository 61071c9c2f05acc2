//! One connection's query state: runs START queries, keeps open cursors for CONTINUE
//! and STOP, and turns results and errors into response frames.

use crate::frame::{BodyError, Query};
use crate::response::{self, client_error};
use rdb_query::error::{logic, ErrorKind};
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
];

struct Cursor {
    /// Holds (through its closures) everything it needs, including the query context.
    stream: Stream,
    batch_rows: usize,
    batch_bytes: usize,
}

/// Identity reported by SERVER_INFO.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub id: String,
    pub name: String,
}

pub struct Session {
    cursors: HashMap<u64, Cursor>,
    server: ServerInfo,
    store: Option<Rc<Store>>,
}

impl Session {
    pub fn new(server: ServerInfo, store: Option<Rc<Store>>) -> Session {
        Session {
            cursors: HashMap::new(),
            server,
            store,
        }
    }

    /// Handles one query body; `None` when no response is due (noreply).
    pub fn handle(&mut self, token: u64, parsed: Result<Query, BodyError>) -> Option<Vec<u8>> {
        let q = match parsed {
            Ok(q) => q,
            Err(BodyError::Unparseable) => {
                return Some(client_error(
                    token,
                    ErrorKind::ResourceLimit,
                    "Client is buggy (failed to deserialize query).",
                ))
            }
            Err(BodyError::Malformed(m)) => {
                return Some(client_error(
                    token,
                    ErrorKind::QueryLogic,
                    &format!("Server could not parse query: {m}"),
                ))
            }
        };
        match q {
            Query::Start {
                term,
                global_optargs,
            } => self.start(token, &term, global_optargs),
            Query::Continue => Some(match self.cursors.remove(&token) {
                Some(c) => self.next_batch(token, c, None),
                None => client_error(
                    token,
                    ErrorKind::QueryLogic,
                    &format!("Token {token} not in stream cache."),
                ),
            }),
            Query::Stop => {
                self.cursors.remove(&token);
                Some(response::success(
                    token,
                    response::SUCCESS_SEQUENCE,
                    &[],
                    None,
                ))
            }
            // Queries run to completion before the next frame is read, so every earlier
            // noreply query has finished by now.
            Query::NoreplyWait => {
                Some(response::success(token, response::WAIT_COMPLETE, &[], None))
            }
            Query::ServerInfo => {
                let mut o = rdb_query::datum::Object::new();
                o.insert("id".into(), Datum::str(self.server.id.as_str()));
                o.insert("name".into(), Datum::str(self.server.name.as_str()));
                o.insert("proxy".into(), Datum::Bool(false));
                Some(response::success(
                    token,
                    response::SERVER_INFO,
                    &[Datum::object(o)],
                    None,
                ))
            }
        }
    }

    fn start(
        &mut self,
        token: u64,
        term_json: &serde_json::Value,
        optargs_json: serde_json::Map<String, serde_json::Value>,
    ) -> Option<Vec<u8>> {
        let started = Instant::now();
        let (globals, noreply) = match eval_global_optargs(&optargs_json) {
            Ok(g) => g,
            Err(e) => return Some(response::error(token, &e)),
        };
        let profile = matches!(globals.get("profile"), Some(Datum::Bool(true)));
        let batch_rows = batch_limit(&globals, "max_batch_rows", BATCH_ROWS_DEFAULT);
        let batch_bytes = batch_limit(&globals, "max_batch_bytes", BATCH_BYTES_DEFAULT);
        let result = (|| -> Result<(Val, Rc<Ctx>), ReqlError> {
            let t = term::parse(term_json)?;
            eval::check(&t)?;
            let ctx = Ctx::with_store(globals, self.store.clone())?;
            let v = eval::table::plain(eval::eval(&ctx, &Env::default(), &t)?);
            Ok((v, ctx))
        })();
        let reply = match result {
            Err(e) => response::error(token, &e),
            Ok((Val::Stream(stream), _)) => {
                if self.cursors.len() >= CURSORS_MAX {
                    let e = ReqlError::new(
                        ErrorKind::ResourceLimit,
                        format!("Too many open cursors on this connection (limit {CURSORS_MAX})."),
                    );
                    return Some(response::error(token, &e));
                }
                let c = Cursor {
                    stream,
                    batch_rows,
                    batch_bytes,
                };
                let prof = profile.then(|| profile_json(started));
                self.next_batch(token, c, prof.as_deref())
            }
            Ok((v, ctx)) => match result_datum(v, &ctx).and_then(|d| {
                rdb_query::json::check_serializable(&d)?;
                Ok(d)
            }) {
                Ok(d) => {
                    let prof = profile.then(|| profile_json(started));
                    response::success(token, response::SUCCESS_ATOM, &[d], prof.as_deref())
                }
                Err(e) => response::error(token, &e),
            },
        };
        if noreply {
            // Keep the cursor drained for noreply streams: nobody will CONTINUE it.
            self.cursors.remove(&token);
            return None;
        }
        Some(reply)
    }

    fn next_batch(&mut self, token: u64, mut c: Cursor, profile: Option<&str>) -> Vec<u8> {
        let mut body = String::from("[");
        let mut rows = 0usize;
        let done = loop {
            if rows >= c.batch_rows || body.len() >= c.batch_bytes {
                break false;
            }
            match c.stream.next_datum() {
                Ok(Some(d)) => {
                    if let Err(e) = rdb_query::json::check_serializable(&d) {
                        return response::error(token, &e);
                    }
                    if rows > 0 {
                        body.push(',');
                    }
                    write_json(&mut body, &d);
                    rows += 1;
                }
                Ok(None) => break true,
                Err(e) => return response::error(token, &e),
            }
        };
        body.push(']');
        let t = if done {
            response::SUCCESS_SEQUENCE
        } else {
            response::SUCCESS_PARTIAL
        };
        // Drivers read the notes field of stream responses; plain streams have none.
        let mut s = format!("{{\"t\":{t},\"r\":{body},\"n\":[]");
        if let Some(p) = profile {
            s.push_str(",\"p\":");
            s.push_str(p);
        }
        s.push('}');
        if !done {
            self.cursors.insert(token, c);
        }
        response::frame(token, &s)
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

/// Evaluates the global optargs (each is a term); returns them and the noreply flag.
fn eval_global_optargs(
    m: &serde_json::Map<String, serde_json::Value>,
) -> Result<(HashMap<String, Datum>, bool), ReqlError> {
    let mut out = HashMap::new();
    let scratch = Ctx::new(HashMap::new())?;
    for (k, v) in m {
        if !GLOBAL_OPTARGS.contains(&k.as_str()) {
            return Err(ReqlError::new(
                ErrorKind::Compile,
                format!("Unrecognized global optional argument `{k}`."),
            ));
        }
        let t = term::parse(v)?;
        eval::check(&t)?;
        let d = match eval::eval(&scratch, &Env::default(), &t)? {
            Val::Db(name) => Datum::str(&*name),
            other => other.into_datum(&scratch)?,
        };
        out.insert(k.clone(), d);
    }
    let noreply = matches!(out.get("noreply"), Some(Datum::Bool(true)));
    Ok((out, noreply))
}
