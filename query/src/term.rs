//! The query tree as it arrives from a driver, parsed from wire JSON and checked
//! (arity, optional arguments, variables) before evaluation.

use crate::datum::Datum;
use crate::error::{compile, Frame, ReqlError, Result};
use crate::json;
use crate::term_type as tt;
use std::rc::Rc;

/// Deepest term nesting accepted (the JSON of a query may nest 100,000 levels; a term
/// level takes two). Walks over terms grow their stack (`deep!`), so this only bounds
/// the work a single query can ask for.
pub const TERM_DEPTH_MAX: usize = 50_000;

#[derive(Debug)]
pub enum Term {
    Datum(Datum),
    Op(Op),
}

#[derive(Debug)]
pub struct Op {
    pub ty: u32,
    pub args: Vec<Rc<Term>>,
    pub optargs: Vec<(String, Rc<Term>)>,
}

/// Dropping a term drops its arguments, a stack frame per level: deep terms finish
/// dropping on a fresh stack segment.
impl Drop for Op {
    fn drop(&mut self) {
        if rdb_io::fiber::stack_left_bytes() < rdb_io::fiber::RED_ZONE_BYTES {
            let args = std::mem::take(&mut self.args);
            let optargs = std::mem::take(&mut self.optargs);
            rdb_io::fiber::with_room(move || drop((args, optargs)));
        }
    }
}

impl Term {
    pub fn ty(&self) -> u32 {
        match self {
            Term::Datum(_) => tt::DATUM,
            Term::Op(o) => o.ty,
        }
    }
    pub fn optarg(&self, key: &str) -> Option<&Rc<Term>> {
        match self {
            Term::Op(o) => o.optargs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            Term::Datum(_) => None,
        }
    }
    pub fn args(&self) -> &[Rc<Term>] {
        match self {
            Term::Op(o) => &o.args,
            Term::Datum(_) => &[],
        }
    }
}

/// Parses a wire-format term: `[type, [args...], {optargs}]`, a bare JSON object
/// (MAKE_OBJ), or a bare scalar datum.
/// The wire JSON of a term (what `parse` reads back), for storing functions such as
/// write hooks.
pub fn to_wire_json(t: &Term) -> serde_json::Value {
    deep!(to_wire_json(t));
    use serde_json::Value as J;
    fn datum(d: &Datum) -> J {
        deep!(datum(d));
        match d {
            Datum::Array(a) => J::Array(vec![
                J::from(tt::MAKE_ARRAY),
                J::Array(a.iter().map(datum).collect()),
            ]),
            Datum::Object(o) => J::Object(o.iter().map(|(k, v)| (k.clone(), datum(v))).collect()),
            other => json::to_json_value(other),
        }
    }
    match t {
        Term::Datum(d) => datum(d),
        Term::Op(op) => {
            let mut v = vec![
                J::from(op.ty),
                J::Array(op.args.iter().map(|a| to_wire_json(a)).collect()),
            ];
            if !op.optargs.is_empty() {
                v.push(J::Object(
                    op.optargs
                        .iter()
                        .map(|(k, a)| (k.clone(), to_wire_json(a)))
                        .collect(),
                ));
            }
            J::Array(v)
        }
    }
}

pub fn parse(v: &serde_json::Value) -> Result<Rc<Term>> {
    parse_at(v, 0)
}

fn parse_at(v: &serde_json::Value, depth: usize) -> Result<Rc<Term>> {
    deep!(parse_at(v, depth));
    if depth > TERM_DEPTH_MAX {
        return Err(ReqlError::new(
            crate::error::ErrorKind::ResourceLimit,
            "Query nested too deeply.",
        ));
    }
    use serde_json::Value as J;
    Ok(Rc::new(match v {
        J::Array(a) => {
            let ty = a.first().and_then(|t| t.as_u64()).ok_or_else(|| {
                compile(format!(
                    "Expected a term type as the first element of `{v}`."
                ))
            })? as u32;
            if ty == tt::DATUM {
                let d = a
                    .get(1)
                    .ok_or_else(|| compile("DATUM term without a value."))?;
                return Ok(Rc::new(Term::Datum(json::from_json(d)?)));
            }
            if a.len() > 3 {
                return Err(compile(format!(
                    "Expected at most 3 elements in a term but found {}.",
                    a.len()
                )));
            }
            let mut args = Vec::new();
            match a.get(1) {
                None => {}
                Some(J::Array(xs)) => {
                    for (i, x) in xs.iter().enumerate() {
                        args.push(parse_at(x, depth + 1).map_err(|e| e.with_frame(Frame::Pos(i)))?);
                    }
                }
                Some(other) => {
                    return Err(compile(format!(
                        "Expected an array of arguments but found `{other}`."
                    )))
                }
            }
            let mut optargs = Vec::new();
            match a.get(2) {
                None => {}
                Some(J::Object(o)) => {
                    for (k, x) in o {
                        let t = parse_at(x, depth + 1)
                            .map_err(|e| e.with_frame(Frame::Opt(k.clone())))?;
                        optargs.push((k.clone(), t));
                    }
                }
                Some(other) => {
                    return Err(compile(format!(
                        "Expected an object of optional arguments but found `{other}`."
                    )))
                }
            }
            Term::Op(Op { ty, args, optargs })
        }
        J::Object(o) => {
            let mut optargs = Vec::new();
            for (k, x) in o {
                let t = parse_at(x, depth + 1).map_err(|e| e.with_frame(Frame::Opt(k.clone())))?;
                optargs.push((k.clone(), t));
            }
            Term::Op(Op {
                ty: tt::MAKE_OBJ,
                args: Vec::new(),
                optargs,
            })
        }
        scalar => Term::Datum(json::from_json(scalar)?),
    }))
}

/// Arity (min, max with -1 for unbounded) and accepted optional arguments of a term.
pub struct Spec {
    pub min: i32,
    pub max: i32,
    pub optargs: &'static [&'static str],
}

const fn sp(min: i32, max: i32, optargs: &'static [&'static str]) -> Option<Spec> {
    Some(Spec { min, max, optargs })
}

const BOUNDS: &[&str] = &["left_bound", "right_bound"];

/// The signature of every term type this server knows; `None` for unknown numbers.
pub fn spec(t: u32) -> Option<Spec> {
    use tt::*;
    match t {
        MAKE_ARRAY | OBJECT => sp(0, -1, &[]),
        BINARY | NOT | KEYS | VALUES | ARGS | ZIP | TYPE_OF | UNGROUP | IS_EMPTY | JSON
        | TO_JSON_STRING | ASC | DESC | INFO | UPCASE | DOWNCASE | FLOOR | CEIL | ROUND
        | BIT_NOT | DB => sp(1, 1, &[]),
        JAVASCRIPT => sp(1, 1, &["timeout"]),
        HTTP => sp(
            1,
            1,
            &[
                "data",
                "timeout",
                "method",
                "params",
                "header",
                "attempts",
                "redirects",
                "verify",
                "page",
                "page_limit",
                "auth",
                "result_format",
            ],
        ),
        ERROR | LITERAL | UUID => sp(0, 1, &[]),
        RANDOM => sp(0, 2, &["float"]),
        TABLE => sp(1, 2, &["read_mode", "use_outdated", "identifier_format"]),
        GET | MOD | BIT_SAL | BIT_SAR | DIFFERENCE | SET_INSERT | SET_INTERSECTION | SET_UNION
        | SET_DIFFERENCE | GET_FIELD | OFFSETS_OF | APPEND | PREPEND | NTH | LIMIT | SKIP
        | COERCE_TO | MATCH | SAMPLE | DEFAULT | FOR_EACH | FORMAT | IN_TIMEZONE
        | SET_WRITE_HOOK | INDEX_DROP => sp(2, 2, &[]),
        GET_ALL => sp(1, -1, &["index"]),
        EQ | NE | LT | LE | GT | GE => sp(2, -1, &[]),
        ADD | SUB | MUL | DIV | BIT_AND | BIT_OR | BIT_XOR | CONTAINS => sp(1, -1, &[]),
        SLICE => sp(2, 3, BOUNDS),
        HAS_FIELDS | WITH_FIELDS | PLUCK | WITHOUT | MERGE => sp(1, -1, &[]),
        BETWEEN_DEPRECATED | BETWEEN => sp(3, 3, &["index", "left_bound", "right_bound"]),
        CHANGES => sp(
            1,
            1,
            &[
                "squash",
                "changefeed_queue_size",
                "include_initial",
                "include_offsets",
                "include_states",
                "include_types",
                "resumable",
                "resume_token",
            ],
        ),
        REDUCE => sp(2, 2, &["base"]),
        MAP => sp(2, -1, &[]),
        FOLD => sp(3, 3, &["emit", "final_emit"]),
        FILTER => sp(2, 2, &["default"]),
        CONCAT_MAP => sp(2, 2, &[]),
        GROUP => sp(1, -1, &["index", "multi"]),
        ORDER_BY => sp(1, -1, &["index"]),
        DISTINCT => sp(1, 1, &["index"]),
        COUNT | SUM | AVG => sp(1, 2, &[]),
        MIN | MAX => sp(1, 2, &["index"]),
        UNION => sp(0, -1, &["interleave"]),
        BRACKET => sp(2, 2, &[]),
        INNER_JOIN | OUTER_JOIN => sp(3, 3, &[]),
        EQ_JOIN => sp(3, 3, &["index", "ordered"]),
        RANGE => sp(0, 2, &[]),
        INSERT_AT | CHANGE_AT | SPLICE_AT => sp(3, 3, &[]),
        DELETE_AT => sp(2, 3, &[]),
        UPDATE | REPLACE => sp(
            2,
            2,
            &[
                "non_atomic",
                "durability",
                "return_vals",
                "return_changes",
                "ignore_write_hook",
            ],
        ),
        DELETE => sp(
            1,
            1,
            &[
                "durability",
                "return_vals",
                "return_changes",
                "ignore_write_hook",
            ],
        ),
        INSERT => sp(
            2,
            2,
            &[
                "conflict",
                "durability",
                "return_vals",
                "return_changes",
                "ignore_write_hook",
            ],
        ),
        DB_CREATE | DB_DROP | SYNC | INDEX_LIST | GET_WRITE_HOOK => sp(1, 1, &[]),
        DB_LIST => sp(0, 0, &[]),
        TABLE_CREATE => sp(
            1,
            2,
            &[
                "primary_key",
                "shards",
                "replicas",
                "nonvoting_replica_tags",
                "primary_replica_tag",
                "durability",
                "changefeed_retention_mb",
            ],
        ),
        TABLE_DROP => sp(1, 2, &[]),
        TABLE_LIST => sp(0, 1, &[]),
        CONFIG | STATUS => sp(1, 1, &[]),
        WAIT => sp(0, 1, &["timeout", "wait_for"]),
        RECONFIGURE => sp(
            0,
            1,
            &[
                "dry_run",
                "emergency_repair",
                "nonvoting_replica_tags",
                "primary_replica_tag",
                "replicas",
                "shards",
            ],
        ),
        REBALANCE => sp(0, 1, &[]),
        GRANT => sp(2, 3, &[]),
        INDEX_CREATE => sp(2, 3, &["multi", "geo"]),
        INDEX_STATUS | INDEX_WAIT => sp(1, -1, &[]),
        INDEX_RENAME => sp(3, 3, &["overwrite"]),
        FUNCALL => sp(1, -1, &[]),
        BRANCH => sp(3, -1, &[]),
        OR | AND => sp(0, -1, &[]),
        SPLIT => sp(1, 3, &[]),
        ISO8601 => sp(1, 1, &["default_timezone"]),
        TO_ISO8601 | EPOCH_TIME | TO_EPOCH_TIME | DATE | TIME_OF_DAY | TIMEZONE | YEAR | MONTH
        | DAY | DAY_OF_WEEK | DAY_OF_YEAR | HOURS | MINUTES | SECONDS => sp(1, 1, &[]),
        NOW | MINVAL | MAXVAL | MONDAY | TUESDAY | WEDNESDAY | THURSDAY | FRIDAY | SATURDAY
        | SUNDAY | JANUARY | FEBRUARY | MARCH | APRIL | MAY | JUNE | JULY | AUGUST | SEPTEMBER
        | OCTOBER | NOVEMBER | DECEMBER => sp(0, 0, &[]),
        DURING => sp(3, 3, BOUNDS),
        TIME => sp(4, 7, &[]),
        GEOJSON | TO_GEOJSON | FILL => sp(1, 1, &[]),
        POINT | INTERSECTS | INCLUDES | POLYGON_SUB => sp(2, 2, &[]),
        LINE => sp(2, -1, &[]),
        POLYGON => sp(3, -1, &[]),
        DISTANCE => sp(2, 2, &["geo_system", "unit"]),
        CIRCLE => sp(2, 2, &["geo_system", "unit", "fill", "num_vertices"]),
        GET_INTERSECTING => sp(2, 2, &["index"]),
        GET_NEAREST => sp(
            2,
            2,
            &["index", "max_results", "max_dist", "geo_system", "unit"],
        ),
        _ => None,
    }
}

pub fn arity_message(min: i32, max: i32, found: usize) -> String {
    let expected = if min == max {
        format!("{min} argument{}", if min == 1 { "" } else { "s" })
    } else if max == -1 {
        format!("{min} or more arguments")
    } else {
        format!("between {min} and {max} arguments")
    };
    format!("Expected {expected} but found {found}.")
}

pub fn arity_ok(min: i32, max: i32, n: usize) -> bool {
    n as i64 >= min as i64 && (max < 0 || n as i64 <= max as i64)
}
