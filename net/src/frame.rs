//! Query framing: a 12-byte header (token u64 LE, length u32 LE) and a JSON body
//! `[QueryType, term?, global_optargs?]`.

use serde_json::{Map, Value};

pub const HEADER_BYTES: usize = 12;
/// Queries of this size or more are refused with RESOURCE_LIMIT (as RethinkDB does).
pub const QUERY_BYTES_LIMIT: u32 = 128 * 1024 * 1024;

pub const START: u64 = 1;
pub const CONTINUE: u64 = 2;
pub const STOP: u64 = 3;
pub const NOREPLY_WAIT: u64 = 4;
pub const SERVER_INFO: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub token: u64,
    pub len: u32,
}

pub fn parse_header(b: &[u8; HEADER_BYTES]) -> Header {
    let mut t = [0u8; 8];
    t.copy_from_slice(&b[..8]);
    let mut l = [0u8; 4];
    l.copy_from_slice(&b[8..]);
    Header {
        token: u64::from_le_bytes(t),
        len: u32::from_le_bytes(l),
    }
}

/// A START query's term and global optargs.
#[derive(Debug)]
pub enum StartBody {
    /// As JSON: parsed into terms when the query runs (errors included).
    Json {
        term: Value,
        global_optargs: Map<String, Value>,
    },
    /// Already parsed by the fast path (`rdb_query::term_fast`).
    Parsed(rdb_query::term_fast::Start),
}

#[derive(Debug)]
pub enum Query {
    Start(StartBody),
    Continue,
    Stop,
    NoreplyWait,
    ServerInfo,
}

/// Why a query body could not be understood; sent back as CLIENT_ERROR.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON at all.
    Unparseable,
    /// JSON, but not a query.
    Malformed(String),
}

pub fn parse_body(body: &[u8]) -> Result<Query, BodyError> {
    if let Some(parsed) = rdb_query::term_fast::parse_start(body) {
        return Ok(Query::Start(StartBody::Parsed(parsed)));
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| BodyError::Unparseable)?;
    let Value::Array(items) = v else {
        return Err(BodyError::Malformed(
            "Expected a query to be an array.".into(),
        ));
    };
    let mut items = items.into_iter();
    let ty = items.next().and_then(|t| t.as_u64()).ok_or_else(|| {
        BodyError::Malformed("Expected a query type as the first element.".into())
    })?;
    Ok(match ty {
        START => {
            let term = items
                .next()
                .ok_or_else(|| BodyError::Malformed("START query without a term.".into()))?;
            let global_optargs = match items.next() {
                None => Map::new(),
                Some(Value::Object(m)) => m,
                Some(_) => {
                    return Err(BodyError::Malformed(
                        "Expected global optargs to be an object.".into(),
                    ))
                }
            };
            Query::Start(StartBody::Json {
                term,
                global_optargs,
            })
        }
        CONTINUE => Query::Continue,
        STOP => Query::Stop,
        NOREPLY_WAIT => Query::NoreplyWait,
        SERVER_INFO => Query::ServerInfo,
        other => {
            return Err(BodyError::Malformed(format!(
                "Unrecognized QueryType: {other}."
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_round_trip() {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&7u64.to_le_bytes());
        b[8..].copy_from_slice(&99u32.to_le_bytes());
        assert_eq!(parse_header(&b), Header { token: 7, len: 99 });
    }

    #[test]
    fn bodies() {
        assert!(matches!(
            parse_body(b"[1,[10,[1]],{}]"),
            Ok(Query::Start(StartBody::Parsed(_)))
        ));
        assert!(matches!(
            parse_body(b"[1,[10,[2.5]],{}]"),
            Ok(Query::Start(StartBody::Json { .. }))
        ));
        assert!(matches!(parse_body(b"[2]"), Ok(Query::Continue)));
        assert_eq!(parse_body(b"{").unwrap_err(), BodyError::Unparseable);
        assert!(matches!(parse_body(b"{}"), Err(BodyError::Malformed(_))));
        assert!(matches!(parse_body(b"[9]"), Err(BodyError::Malformed(_))));
        assert!(matches!(parse_body(b"[1]"), Err(BodyError::Malformed(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_body(&b);
            let mut h = [0u8; 12];
            for (i, x) in b.iter().take(12).enumerate() { h[i] = *x; }
            let _ = parse_header(&h);
        }
    }
}
