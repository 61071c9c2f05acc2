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

/// Bytes a frame's header takes (token, then body length).
const FRAME_HEADER_BYTES: usize = 12;

/// Wraps a JSON body into a frame for `token`.
pub fn frame(token: u64, body: &str) -> Vec<u8> {
    frame_with(token, |s| s.push_str(body))
}

/// A frame for `token` whose body is written by `body` into a string that starts with
/// room for the header: the body is not copied again.
fn frame_with(token: u64, body: impl FnOnce(&mut String)) -> Vec<u8> {
    let mut s = String::with_capacity(64);
    s.push_str("\0\0\0\0\0\0\0\0\0\0\0\0");
    body(&mut s);
    let mut out = s.into_bytes();
    let len = (out.len() - FRAME_HEADER_BYTES) as u32;
    out[..8].copy_from_slice(&token.to_le_bytes());
    out[8..FRAME_HEADER_BYTES].copy_from_slice(&len.to_le_bytes());
    out
}

/// A success response of type `t` whose items `items` writes (comma-separated), with
/// optional profile JSON.
fn success_with(
    token: u64,
    t: u32,
    profile: Option<&str>,
    items: impl FnOnce(&mut String),
) -> Vec<u8> {
    frame_with(token, |s| {
        s.push_str("{\"t\":");
        s.push_str(&t.to_string());
        s.push_str(",\"r\":[");
        items(s);
        s.push(']');
        if let Some(p) = profile {
            s.push_str(",\"p\":");
            s.push_str(p);
        }
        s.push('}');
    })
}

/// A success response holding `items`, with optional profile JSON.
pub fn success(token: u64, t: u32, items: &[Datum], profile: Option<&str>) -> Vec<u8> {
    success_with(token, t, profile, |s| {
        for (i, d) in items.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            write_json(s, d);
        }
    })
}

/// A success response holding one item given as JSON text.
pub fn success_json(token: u64, t: u32, item: &str) -> Vec<u8> {
    success_with(token, t, None, |s| s.push_str(item))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_written_in_place_match_framed_bodies() {
        let d = Datum::str("a\"b");
        let token = 0x0102_0304_0506_0708;
        assert_eq!(
            success(token, SUCCESS_ATOM, &[d.clone(), Datum::Null], None),
            frame(token, "{\"t\":1,\"r\":[\"a\\\"b\",null]}")
        );
        assert_eq!(
            success(token, SUCCESS_SEQUENCE, &[], Some("[]")),
            frame(token, "{\"t\":2,\"r\":[],\"p\":[]}")
        );
        assert_eq!(
            success_json(token, SUCCESS_ATOM, &rdb_query::json::to_json(&d)),
            success(token, SUCCESS_ATOM, &[d], None)
        );
    }
}
