//! `r.http`: HTTP requests from the server, off unless the server enables them.
//!
//! Requests run on a small pool of worker threads (the query's fiber waits, its core
//! keeps serving). Every address a request connects to — also after a redirect — is
//! resolved here and refused when it is loopback, private, link-local (cloud metadata
//! services live there), multicast or otherwise reserved, unless the server allows
//! private addresses: a query must not reach what only the server can reach.

use super::workers::{Stopped, Workers};
use super::{arg_datum, boolean, int, num, object, string, Callable, Ctx, Optargs, Val};
use crate::datum::{Datum, Object};
use crate::error::{logic, non_existence, Result};
use std::io::Read;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How the server runs requests.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub workers: usize,
    /// Allow loopback, private and link-local destinations.
    pub allow_private: bool,
}

/// Largest response body read, in bytes.
const BODY_BYTES_MAX: u64 = 64 << 20;
/// `timeout` is capped at 30 days, as RethinkDB does.
const TIMEOUT_SECS_MAX: f64 = 2_592_000.0;

static POOL: OnceLock<Workers<Job>> = OnceLock::new();

pub fn enable(cfg: &HttpConfig) -> std::io::Result<()> {
    if POOL.get().is_some() {
        return Ok(());
    }
    let allow_private = cfg.allow_private;
    let pool = Workers::start(
        "rdb-http",
        cfg.workers,
        None,
        move |rx: flume::Receiver<Job>| {
            while let Ok(job) = rx.recv() {
                let out = perform(&job.req, allow_private);
                let _ = job.reply.send(out);
            }
        },
    )?;
    let _ = POOL.set(pool);
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    Auto,
    Json,
    Jsonp,
    Text,
    Binary,
}

/// One request, as the options describe it.
#[derive(Clone, Debug)]
struct Request {
    method: &'static str,
    url: String,
    params: Vec<(String, String)>,
    header: Vec<(String, String)>,
    body: Body,
    auth: Option<(String, String)>,
    timeout: Duration,
    attempts: u64,
    redirects: u32,
    verify: bool,
    format: Format,
}

#[derive(Clone, Debug)]
enum Body {
    None,
    Text(String),
    Form(Vec<(String, String)>),
}

/// A response: its body as a datum and its header (for `page`).
struct Reply {
    body: Datum,
    header: Datum,
}

/// Why a request failed: RethinkDB's words after "Error in HTTP GET of `url`: ", and
/// the body of an error response, if any.
struct Failure {
    reason: String,
    body: Option<Datum>,
}

struct Job {
    req: Request,
    reply: flume::Sender<std::result::Result<Reply, Failure>>,
}

pub fn apply(ctx: &Rc<Ctx>, args: &[Val], opt: &Optargs) -> Result<Val> {
    let Some(pool) = POOL.get() else {
        return Err(logic(
            "`r.http` is disabled on this server (start it with --enable-http to allow requests).",
        ));
    };
    let url = string(&arg_datum(ctx, args, 0)?)?.to_string();
    let mut req = request(url, opt)?;
    let page = opt.get("page")?;
    let Some(page) = page else {
        let reply = run(pool, &req)?;
        return Ok(Val::Datum(reply.body));
    };
    let Some(limit) = opt.datum("page_limit")? else {
        return Err(logic(
            "Cannot use `page` without specifying `page_limit` (a positive number performs that many requests, -1 is unlimited).",
        ));
    };
    let mut left = int(&limit)?;
    if left < -1 {
        return Err(logic("`page_limit` should be greater than or equal to -1."));
    }
    let page: Callable = match page {
        Val::Datum(Datum::Str(ref s)) if &**s == "link-next" => Callable::Const(Datum::Null),
        Val::Datum(Datum::Str(ref s)) => {
            return Err(logic(format!(
                "`page` (`{s}`) is not recognized ('link-next' or a function is allowed)."
            )))
        }
        other => other.into_callable(),
    };
    let link_next = matches!(page, Callable::Const(_));
    // Pages are fetched as the stream is read.
    let ctx2 = ctx.clone();
    let mut pending: std::vec::IntoIter<Datum> = Vec::new().into_iter();
    let mut more = left != 0;
    let iter = std::iter::from_fn(move || loop {
        if let Some(d) = pending.next() {
            return Some(Ok(d));
        }
        if !more {
            return None;
        }
        let reply = match run(pool, &req) {
            Ok(r) => r,
            Err(e) => {
                more = false;
                return Some(Err(e));
            }
        };
        if left > 0 {
            left -= 1;
        }
        more = left != 0;
        if more {
            match next_page(&ctx2, &page, link_next, &mut req, &reply) {
                Ok(m) => more = m,
                Err(e) => {
                    more = false;
                    return Some(Err(e));
                }
            }
        }
        pending = match reply.body {
            Datum::Array(ref a) => Vec::clone(a).into_iter(),
            other => vec![other].into_iter(),
        };
    });
    Ok(Val::Stream(super::Stream::new(Box::new(iter), false)))
}

/// Applies `page` to a response: whether there is a next page, and where.
fn next_page(
    ctx: &Rc<Ctx>,
    page: &Callable,
    link_next: bool,
    req: &mut Request,
    reply: &Reply,
) -> Result<bool> {
    let next = if link_next {
        reply
            .header
            .get_field("link")
            .and_then(|l| l.get_field("next"))
            .cloned()
            .unwrap_or(Datum::Null)
    } else {
        let mut info = Object::new();
        let params: Object = req
            .params
            .iter()
            .map(|(k, v)| (k.as_str().into(), Datum::str(v.as_str())))
            .collect();
        info.insert("params".into(), Datum::object(params));
        info.insert("header".into(), reply.header.clone());
        info.insert("body".into(), reply.body.clone());
        page.call_datum(ctx, &[Datum::object(info)]).map_err(|e| {
            logic(format!(
                "Error in HTTP {} of `{}`: {}.\nError occurred during `page`.",
                req.method, req.url, e.msg
            ))
        })?
    };
    match &next {
        Datum::Null => Ok(false),
        Datum::Str(u) => {
            req.url = u.to_string();
            Ok(true)
        }
        Datum::Object(o) => {
            let url = o.get("url");
            let params = o.get("params");
            if url.is_none() && params.is_none() {
                return Err(logic(
                    "OBJECT returned by `page` must contain `url` and/or `params` fields.",
                ));
            }
            if let Some(p) = params {
                for (k, v) in url_params(p)? {
                    req.params.retain(|(k2, _)| *k2 != k);
                    req.params.push((k, v));
                }
            }
            match url {
                None => Ok(true),
                Some(Datum::Null) => Ok(false),
                Some(Datum::Str(u)) => {
                    req.url = u.to_string();
                    Ok(true)
                }
                Some(other) => Err(logic(format!(
                    "Expected `url` in OBJECT returned by `page` to be a STRING or NULL, but found {}.",
                    other.type_name()
                ))),
            }
        }
        other => Err(logic(format!(
            "Expected `page` to return an OBJECT, but found {}.",
            other.type_name()
        ))),
    }
}

fn run(pool: &Workers<Job>, req: &Request) -> Result<Reply> {
    let out = pool
        .ask(|reply| Job {
            req: req.clone(),
            reply,
        })
        .map_err(|s| match s {
            Stopped::Gone => logic("The HTTP workers have stopped."),
            Stopped::Dropped => logic("An HTTP worker stopped during a request."),
            Stopped::Interrupted => {
                crate::error::ReqlError::from(rdb_io::control::Stop::Interrupted)
            }
        })?;
    out.map_err(|f| {
        let mut msg = format!(
            "Error in HTTP {} of `{}`: {}.",
            req.method, req.url, f.reason
        );
        if let Some(b) = f.body {
            msg.push_str(&format!("\nbody:\n{}", crate::json::pretty(&b)));
        }
        non_existence(msg)
    })
}

/// Reads the options in RethinkDB's order, with its messages.
fn request(url: String, opt: &Optargs) -> Result<Request> {
    let auth = match opt.datum("auth")? {
        None => None,
        Some(a) => {
            let o = match &a {
                Datum::Object(o) => o.clone(),
                other => {
                    return Err(logic(format!(
                        "Expected `auth` to be an OBJECT, but found {}.",
                        other.type_name()
                    )))
                }
            };
            let ty = match o.get("type") {
                None => "basic".to_string(),
                Some(Datum::Str(s)) => s.to_string(),
                Some(other) => {
                    return Err(logic(format!(
                        "Expected `auth.type` to be a STRING, but found {}.",
                        other.type_name()
                    )))
                }
            };
            let item = |name: &str| -> Result<String> {
                match o.get(name) {
                    None => Err(logic(format!(
                        "`auth.{name}` not found in the auth object."
                    ))),
                    Some(Datum::Str(s)) => Ok(s.to_string()),
                    Some(other) => Err(logic(format!(
                        "Expected `auth.{name}` to be a STRING, but found {}.",
                        other.type_name()
                    ))),
                }
            };
            let (user, pass) = (item("user")?, item("pass")?);
            match ty.as_str() {
                "basic" => Some((user, pass)),
                "digest" => {
                    return Err(logic(
                        "`auth.type` digest is not supported by this server (use 'basic').",
                    ))
                }
                _ => {
                    return Err(logic(
                        "`auth.type` is not recognized ('basic', and 'digest' are allowed).",
                    ))
                }
            }
        }
    };
    let method = match opt.datum("method")? {
        None => "GET",
        Some(m) => match string(&m)? {
            "GET" => "GET",
            "HEAD" => "HEAD",
            "POST" => "POST",
            "PUT" => "PUT",
            "PATCH" => "PATCH",
            "DELETE" => "DELETE",
            other => {
                return Err(logic(format!(
                    "`method` ({other}) is not recognized (GET, HEAD, POST, PUT, PATCH and DELETE are allowed)."
                )))
            }
        },
    };
    let mut header = Vec::new();
    let body = match opt.datum("data")? {
        None => Body::None,
        Some(d) => match method {
            "PUT" | "PATCH" | "DELETE" => match d {
                Datum::Str(ref s) => Body::Text(s.to_string()),
                other => {
                    header.push(("Content-Type".to_string(), "application/json".to_string()));
                    Body::Text(crate::json::to_json(&other))
                }
            },
            "POST" => match d {
                Datum::Str(ref s) => Body::Text(s.to_string()),
                Datum::Object(_) if !d.is_ptype() => {
                    let mut form = Vec::new();
                    for (k, v) in object(&d)?.iter() {
                        form.push((k.to_string(), param_text(v, "data", k)?));
                    }
                    Body::Form(form)
                }
                other => {
                    return Err(logic(format!(
                        "Expected `data` to be a STRING or OBJECT, but found {}.",
                        other.type_name()
                    )))
                }
            },
            _ => {
                return Err(logic(
                    "`data` should only be specified on a PUT, POST, PATCH, or DELETE request.  If you want URL parameters, use `params` instead.",
                ))
            }
        },
    };
    let format = match opt.datum("result_format")? {
        None => Format::Auto,
        Some(f) => match string(&f)? {
            "auto" => Format::Auto,
            "json" => Format::Json,
            "jsonp" => Format::Jsonp,
            "text" => Format::Text,
            "binary" => Format::Binary,
            other => {
                return Err(logic(format!(
                    "`result_format` ({other}) is not recognized, ('auto', 'json', 'jsonp', 'text', and 'binary' are allowed)."
                )))
            }
        },
    };
    let params = match opt.datum("params")? {
        None => Vec::new(),
        Some(p) => url_params(&p)?,
    };
    if let Some(h) = opt.datum("header")? {
        match &h {
            Datum::Object(o) if !h.is_ptype() => {
                for (k, v) in o.iter() {
                    match v {
                        Datum::Str(s) => {
                            check_header_text(k)?;
                            check_header_text(s)?;
                            header.push((k.to_string(), s.to_string()));
                        }
                        Datum::Null => {}
                        other => {
                            return Err(logic(format!(
                                "Expected `header.{k}` to be a STRING or NULL, but found {}.",
                                other.type_name()
                            )))
                        }
                    }
                }
            }
            Datum::Array(a) => {
                for (i, line) in a.iter().enumerate() {
                    let Datum::Str(s) = line else {
                        return Err(logic(format!(
                            "Expected `header[{i}]` to be a STRING, but found {}.",
                            line.type_name()
                        )));
                    };
                    check_header_text(s)?;
                    let (k, v) = s.split_once(':').ok_or_else(|| {
                        logic(format!(
                            "A `header` item is not of the form `name: value`: {s}"
                        ))
                    })?;
                    header.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            other => {
                return Err(logic(format!(
                    "Expected `header` to be an ARRAY or OBJECT, but found {}.",
                    other.type_name()
                )))
            }
        }
    }
    let timeout = match opt.datum("timeout")? {
        None => Duration::from_secs(30),
        Some(t) => {
            let secs = num(&t)?;
            if secs < 0.0 {
                return Err(logic("`timeout` may not be negative."));
            }
            Duration::from_secs_f64(secs.min(TIMEOUT_SECS_MAX))
        }
    };
    let attempts = match opt.datum("attempts")? {
        None => 5,
        Some(a) => u64::try_from(int(&a)?).map_err(|_| logic("`attempts` may not be negative."))?,
    };
    let redirects = match opt.datum("redirects")? {
        None => 1,
        Some(r) => {
            u32::try_from(int(&r)?).map_err(|_| logic("`redirects` may not be negative."))?
        }
    };
    let verify = match opt.datum("verify")? {
        None => true,
        Some(v) => boolean(&v)?,
    };
    Ok(Request {
        method,
        url,
        params,
        header,
        body,
        auth,
        timeout,
        attempts,
        redirects,
        verify,
        format,
    })
}

fn check_header_text(s: &str) -> Result<()> {
    if s.contains(['\r', '\n']) {
        return Err(logic("A `header` item contains newline characters."));
    }
    Ok(())
}

fn param_text(v: &Datum, what: &str, key: &str) -> Result<String> {
    match v {
        Datum::Num(n) => Ok(super::fmt_g20(*n)),
        Datum::Str(s) => Ok(s.to_string()),
        Datum::Null => Ok(String::new()),
        other => Err(logic(format!(
            "Expected `{what}.{key}` to be a NUMBER, STRING or NULL, but found {}.",
            other.type_name()
        ))),
    }
}

fn url_params(p: &Datum) -> Result<Vec<(String, String)>> {
    match p {
        Datum::Object(o) if !p.is_ptype() => {
            let mut out = Vec::new();
            for (k, v) in o.iter() {
                if !matches!(v, Datum::Num(_) | Datum::Str(_) | Datum::Null) {
                    return Err(logic(format!(
                        "Expected `params.{k}` to be a NUMBER, STRING or NULL, but found {}:\n{}",
                        v.type_name(),
                        crate::json::pretty(v)
                    )));
                }
                out.push((k.to_string(), param_text(v, "params", k)?));
            }
            Ok(out)
        }
        other => Err(logic(format!(
            "Expected `params` to be an OBJECT, but found {}:\n{}",
            other.type_name(),
            crate::json::pretty(other)
        ))),
    }
}

// ---- worker side ----

/// Whether a destination is off limits unless private addresses are allowed.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // shared address space
                || o[0] >= 240 // reserved
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 of any IPv4 address
        }
    }
}

/// Resolves host names and refuses private destinations (every connection, including
/// those of redirects, goes through here).
struct GuardedResolver {
    allow_private: bool,
}

impl ureq::Resolver for GuardedResolver {
    fn resolve(&self, netloc: &str) -> std::io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = netloc.to_socket_addrs()?.collect();
        if !self.allow_private {
            if let Some(bad) = addrs.iter().find(|a| is_private(a.ip())) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "refusing to connect to {} (a loopback, private, link-local or reserved address; start the server with --http-allow-private to allow it)",
                        bad.ip()
                    ),
                ));
            }
        }
        Ok(addrs)
    }
}

fn agent(req: &Request, allow_private: bool) -> ureq::Agent {
    let mut b = ureq::AgentBuilder::new()
        .timeout(req.timeout)
        // ureq counts the first request too.
        .redirects(if req.redirects == 0 {
            0
        } else {
            req.redirects.saturating_add(1)
        })
        .resolver(GuardedResolver { allow_private });
    if !req.verify {
        b = b.tls_config(Arc::new(insecure_tls()));
    }
    b.build()
}

fn perform(req: &Request, allow_private: bool) -> std::result::Result<Reply, Failure> {
    let fail = |reason: String| Failure { reason, body: None };
    if req.attempts == 0 {
        return Err(fail("could not perform, no attempts allowed".into()));
    }
    let url = if req.url.contains("://") {
        req.url.clone()
    } else {
        format!("http://{}", req.url)
    };
    let agent = agent(req, allow_private);
    let mut last = None;
    for _ in 0..req.attempts {
        let mut r = agent.request(req.method, &url);
        for (k, v) in &req.params {
            r = r.query(k, v);
        }
        for (k, v) in &req.header {
            r = r.set(k, v);
        }
        if let Some((user, pass)) = &req.auth {
            use base64::Engine;
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            r = r.set("Authorization", &format!("Basic {token}"));
        }
        let result = match &req.body {
            Body::None => r.call(),
            Body::Text(t) => r.send_string(t),
            Body::Form(f) => {
                let pairs: Vec<(&str, &str)> =
                    f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                r.send_form(&pairs)
            }
        };
        match result {
            Ok(resp) if (200..300).contains(&resp.status()) => return reply(req, resp),
            Ok(resp) => {
                // A redirect not followed (`redirects` exhausted or 0).
                let status = resp.status();
                let body = read_body(resp)
                    .ok()
                    .map(|b| Datum::str(String::from_utf8_lossy(&b)));
                return Err(Failure {
                    reason: format!("status code {status}"),
                    body,
                });
            }
            Err(ureq::Error::Status(code, resp)) => {
                let body = read_body(resp)
                    .ok()
                    .map(|b| Datum::str(String::from_utf8_lossy(&b)));
                let failure = Failure {
                    reason: format!("status code {code}"),
                    body,
                };
                // Statuses that retrying may cure.
                if matches!(code, 408 | 500 | 502 | 503 | 504) {
                    last = Some(failure);
                    continue;
                }
                return Err(failure);
            }
            Err(ureq::Error::Transport(t)) => {
                let timed_out = t.to_string().to_lowercase().contains("timed out")
                    || t.to_string().contains("WouldBlock");
                if timed_out {
                    return Err(fail(format!(
                        "timed out after {:.3} seconds",
                        req.timeout.as_secs_f64()
                    )));
                }
                match t.kind() {
                    ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Io => {
                        let refused = t.to_string().contains("refusing to connect");
                        let f = fail(if refused {
                            describe_transport(&t)
                        } else {
                            "could not connect to server".into()
                        });
                        if refused {
                            return Err(f);
                        }
                        last = Some(f);
                        continue;
                    }
                    ureq::ErrorKind::TooManyRedirects => {
                        return Err(fail(format!(
                            "too many redirects (at most {} are followed)",
                            req.redirects
                        )))
                    }
                    _ => return Err(fail(describe_transport(&t))),
                }
            }
        }
    }
    Err(last.unwrap_or_else(|| fail("could not perform the request".into())))
}

fn describe_transport(t: &ureq::Transport) -> String {
    let mut s = t.to_string();
    // ureq prefixes the URL; RethinkDB's message names it already.
    if let Some(i) = s.find(": ") {
        if s[..i].contains("://") {
            s = s[i + 2..].to_string();
        }
    }
    s
}

/// The whole body, or an error past `BODY_BYTES_MAX` (never a silently cut body).
fn read_body(resp: ureq::Response) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    resp.into_reader()
        .take(BODY_BYTES_MAX + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > BODY_BYTES_MAX {
        return Err(std::io::Error::other(format!(
            "the response body is larger than {} MiB",
            BODY_BYTES_MAX >> 20
        )));
    }
    Ok(out)
}

fn header_datum(resp: &ureq::Response) -> Datum {
    let mut o = Object::new();
    for name in resp.headers_names() {
        let values = resp.all(&name);
        if name.eq_ignore_ascii_case("link") {
            o.insert("link".into(), parse_links(&values));
            continue;
        }
        let v = values.join(", ");
        o.insert(name.as_str().into(), Datum::str(v));
    }
    Datum::object(o)
}

/// `Link: <url>; rel="next", <url>; rel="last"` as `{next: url, last: url}`.
fn parse_links(values: &[&str]) -> Datum {
    let mut o = Object::new();
    for v in values {
        for part in v.split(',') {
            let mut url = None;
            let mut rel = None;
            for piece in part.split(';') {
                let piece = piece.trim();
                if let Some(u) = piece.strip_prefix('<').and_then(|p| p.strip_suffix('>')) {
                    url = Some(u.to_string());
                } else if let Some(r) = piece.strip_prefix("rel=") {
                    rel = Some(r.trim_matches('"').to_string());
                }
            }
            if let (Some(u), Some(r)) = (url, rel) {
                o.insert(r.as_str().into(), Datum::str(u));
            }
        }
    }
    Datum::object(o)
}

fn reply(req: &Request, resp: ureq::Response) -> std::result::Result<Reply, Failure> {
    let header = header_datum(&resp);
    let content_type = resp.content_type().to_ascii_lowercase();
    let head = req.method == "HEAD";
    let bytes = read_body(resp).map_err(|e| Failure {
        reason: format!("error when receiving data: {e}"),
        body: None,
    })?;
    if head {
        return Ok(Reply {
            body: Datum::Null,
            header,
        });
    }
    let text = || Datum::str(String::from_utf8_lossy(&bytes));
    let json = |attach: bool| -> std::result::Result<Datum, Failure> {
        parse_json(&String::from_utf8_lossy(&bytes)).map_err(|e| Failure {
            reason: format!("failed to parse JSON response: {e}"),
            body: attach.then(text),
        })
    };
    let body = match req.format {
        Format::Text => text(),
        Format::Binary => Datum::Binary(bytes.clone().into()),
        Format::Json => json(true)?,
        Format::Jsonp => jsonp(&String::from_utf8_lossy(&bytes)).ok_or_else(|| Failure {
            reason: "failed to parse JSONP response".into(),
            body: Some(text()),
        })?,
        Format::Auto => {
            if content_type.starts_with("application/json") {
                json(true)?
            } else if content_type.starts_with("text/javascript")
                || content_type.starts_with("application/json-p")
                || content_type.starts_with("text/json-p")
            {
                json(false)
                    .ok()
                    .or_else(|| jsonp(&String::from_utf8_lossy(&bytes)))
                    .unwrap_or_else(text)
            } else if ["audio/", "image/", "video/", "application/octet-stream"]
                .iter()
                .any(|p| content_type.starts_with(p))
            {
                Datum::Binary(bytes.clone().into())
            } else {
                text()
            }
        }
    };
    Ok(Reply { body, header })
}

fn parse_json(s: &str) -> std::result::Result<Datum, String> {
    let v: serde_json::Value = serde_json::from_str(s).map_err(|e| e.to_string())?;
    crate::json::from_json(&v).map_err(|e| e.msg)
}

/// The JSON inside `name(...)`, `obj.name(...)` or `obj["name"](...)`.
fn jsonp(s: &str) -> Option<Datum> {
    let s = s.trim();
    let s = s.strip_suffix(';').unwrap_or(s).trim_end();
    let open = s.find('(')?;
    let callee = s[..open].trim();
    let ident_ok = !callee.is_empty()
        && callee.chars().all(|c| {
            c.is_alphanumeric() || matches!(c, '_' | '$' | '.' | '[' | ']' | '"' | '\'' | '-' | ' ')
        });
    if !ident_ok || !s.ends_with(')') {
        return None;
    }
    parse_json(&s[open + 1..s.len() - 1]).ok()
}

/// TLS that accepts any certificate (`verify: false`).
fn insecure_tls() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth()
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_destinations_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn link_headers_and_jsonp() {
        let l = parse_links(&["<http://x/2>; rel=\"next\", <http://x/9>; rel=\"last\""]);
        assert_eq!(l.get_field("next"), Some(&Datum::str("http://x/2")));
        assert_eq!(l.get_field("last"), Some(&Datum::str("http://x/9")));
        assert_eq!(jsonp("cb({\"a\": 1});"), parse_json("{\"a\": 1}").ok());
        assert_eq!(jsonp("obj.cb([1,2])"), parse_json("[1,2]").ok());
        assert_eq!(jsonp("not jsonp"), None);
    }
}
