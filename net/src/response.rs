//! Response frames: `{"t": type, "r": [...], "b": backtrace, "e": error type, "n": notes}`.
//! The one place where query error classes become ql2 response and error numbers.

use rdb_query::error::{ErrorKind, Frame};
use rdb_query::json::{write_json, write_str};
use rdb_query::{Datum, ReqlError};

pub const SUCCESS_ATOM: u32 = 1;
pub const SUCCESS_SEQUENCE: u32 = 2;
pub const SUCCESS_PARTIAL: u32 = 3;
pub const WAIT_COMPLETE: u32 = 4;
pub const SERVER_INFO: u32 = 5;
pub const CLIENT_ERROR: u32 = 16;
pub const COMPILE_ERROR: u32 = 17;
pub const RUNTIME_ERROR: u32 = 18;

/// ql2 `Response.ErrorType` for an error class.
pub fn error_type(kind: ErrorKind) -> u32 {
    match kind {
        ErrorKind::Internal => 1_000_000,
        ErrorKind::ResourceLimit => 2_000_000,
        ErrorKind::Compile | ErrorKind::QueryLogic => 3_000_000,
        ErrorKind::NonExistence => 3_100_000,
        ErrorKind::OpFailed => 4_100_000,
        ErrorKind::OpIndeterminate => 4_200_000,
        ErrorKind::User => 5_000_000,
        // `r.error()` outside `default` is a logic error, as RethinkDB reports it.
        ErrorKind::EmptyUser => 3_000_000,
        ErrorKind::Permission => 6_000_000,
        ErrorKind::FeedPaused => 1_000_000,
    }
}

/// Wraps a JSON body into a frame for `token`.
pub fn frame(token: u64, body: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + body.len());
    out.extend_from_slice(&token.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body.as_bytes());
    out
}

/// A success response holding `items`, with optional profile JSON.
pub fn success(token: u64, t: u32, items: &[Datum], profile: Option<&str>) -> Vec<u8> {
    let mut s = String::with_capacity(32);
    s.push_str("{\"t\":");
    s.push_str(&t.to_string());
    s.push_str(",\"r\":[");
    for (i, d) in items.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        write_json(&mut s, d);
    }
    s.push(']');
    if let Some(p) = profile {
        s.push_str(",\"p\":");
        s.push_str(p);
    }
    s.push('}');
    frame(token, &s)
}

pub fn error(token: u64, e: &ReqlError) -> Vec<u8> {
    let t = match e.kind {
        ErrorKind::Compile => COMPILE_ERROR,
        _ => RUNTIME_ERROR,
    };
    error_with_type(token, t, e)
}

pub fn error_with_type(token: u64, t: u32, e: &ReqlError) -> Vec<u8> {
    let mut s = format!("{{\"t\":{t},\"e\":{},\"r\":[", error_type(e.kind));
    write_str(&mut s, &e.msg);
    s.push_str("],\"b\":[");
    for (i, f) in e.backtrace().iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        match f {
            Frame::Pos(p) => s.push_str(&p.to_string()),
            Frame::Opt(o) => write_str(&mut s, o),
        }
    }
    s.push_str("]}");
    frame(token, &s)
}

pub fn client_error(token: u64, kind: ErrorKind, msg: &str) -> Vec<u8> {
    error_with_type(token, CLIENT_ERROR, &ReqlError::new(kind, msg))
}
