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

/// Deepest JSON nesting a query may have (RethinkDB has no limit; this one keeps the
/// stack a parse needs, about a kilobyte a level, under 100 MiB).
pub const JSON_DEPTH_MAX: usize = 100_000;
/// Queries nested deeper than this are parsed on a stack sized for them.
const JSON_DEPTH_SHALLOW: usize = 100;
/// Stack a JSON parse needs per level of nesting (generous: a Value parse level takes a
/// few hundred bytes).
const PARSE_STACK_BYTES_PER_LEVEL: usize = 1024;

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
    /// JSON nested deeper than `JSON_DEPTH_MAX`.
    TooDeep,
}

/// The JSON of a query may be nested as deep as `JSON_DEPTH_MAX`, and dropping a
/// `serde_json::Value` recurses once per level: a deep one is taken apart iteratively.
impl Drop for StartBody {
    fn drop(&mut self) {
        if let StartBody::Json {
            term,
            global_optargs,
        } = self
        {
            drop_value(std::mem::take(term));
            for (_, v) in std::mem::take(global_optargs) {
                drop_value(v);
            }
        }
    }
}

/// Drops `v` without recursion (an explicit stack of the values left to drop).
pub fn drop_value(v: Value) {
    let mut left = vec![v];
    while let Some(v) = left.pop() {
        match v {
            Value::Array(a) => left.extend(a),
            Value::Object(m) => left.extend(m.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

/// How deeply the JSON in `b` nests (brackets outside strings; for valid JSON exact,
/// for anything else an upper bound of what the parser reaches).
pub fn json_depth(b: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut in_str = false;
    let mut escaped = false;
    for &c in b {
        if in_str {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_str = false;
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

pub fn parse_body(body: &[u8]) -> Result<Query, BodyError> {
    if let Some(parsed) = rdb_query::term_fast::parse_start(body) {
        return Ok(Query::Start(StartBody::Parsed(parsed)));
    }
    let depth = json_depth(body);
    if depth > JSON_DEPTH_MAX {
        return Err(BodyError::TooDeep);
    }
    if depth <= JSON_DEPTH_SHALLOW {
        return parse_json_body(body);
    }
    // serde_json recurses once per level: give it the stack it needs.
    rdb_io::fiber::with_stack_bytes(
        (depth + 64) * PARSE_STACK_BYTES_PER_LEVEL + rdb_io::fiber::RED_ZONE_BYTES,
        || parse_json_body(body),
    )
}

fn parse_json_body(body: &[u8]) -> Result<Query, BodyError> {
    use serde::Deserialize;
    let mut de = serde_json::Deserializer::from_slice(body);
    // Depth is bounded by `parse_body` (JSON_DEPTH_MAX) and the stack sized for it.
    de.disable_recursion_limit();
    let v = Value::deserialize(&mut de).map_err(|_| BodyError::Unparseable)?;
    if de.end().is_err() {
        drop_value(v);
        return Err(BodyError::Unparseable);
    }
    let Value::Array(items) = v else {
        drop_value(v);
        return Err(BodyError::Malformed(
            "Expected a query to be an array.".into(),
        ));
    };
    let mut items = items.into_iter();
    let q = query_of(&mut items);
    items.for_each(drop_value);
    q
}

fn query_of(items: &mut std::vec::IntoIter<Value>) -> Result<Query, BodyError> {
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
                Some(other) => {
                    drop_value(term);
                    drop_value(other);
                    return Err(BodyError::Malformed(
                        "Expected global optargs to be an object.".into(),
                    ));
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
    fn json_depth_skips_strings() {
        assert_eq!(json_depth(br#"[1,"[[[\"{{",{"a":[]}]"#), 3);
        assert_eq!(json_depth(b"1"), 0);
        assert_eq!(json_depth(b"]]][["), 2);
    }

    #[test]
    fn deep_queries_parse_and_drop_without_overflow() {
        // Two JSON levels a term: 80,001 levels in all, on a 256 KiB thread stack.
        let depth = 40_000;
        let body = format!("[1,{}1{},{{}}]", "[2,[".repeat(depth), "]]".repeat(depth));
        let q = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || matches!(parse_body(body.as_bytes()), Ok(Query::Start(_))))
            .unwrap()
            .join()
            .unwrap();
        assert!(q);
        let too_deep = format!(
            "[1,{}{}]",
            "[".repeat(JSON_DEPTH_MAX + 1),
            "]".repeat(JSON_DEPTH_MAX + 1)
        );
        assert_eq!(
            parse_body(too_deep.as_bytes()).err(),
            Some(BodyError::TooDeep)
        );
    }

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
