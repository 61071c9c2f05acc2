//! The datum model: the JSON-like values ReQL computes with, and their total order.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Field naming a pseudo-type inside an object (`TIME`, `GEOMETRY`, `BINARY`...).
pub const REQL_TYPE: &str = "$reql_type$";

pub type Object = BTreeMap<String, Datum>;

/// A ReQL value that can be stored or sent to a client. Binary data has its own
/// variant; the other pseudo-types (TIME, GEOMETRY) are objects carrying `$reql_type$`.
#[derive(Clone, Debug)]
pub enum Datum {
    /// `r.minval`: sorts below everything; only valid as a range bound.
    MinVal,
    Null,
    Bool(bool),
    /// Always finite: constructors reject NaN and infinities.
    Num(f64),
    Str(Arc<str>),
    Array(Arc<Vec<Datum>>),
    Object(Arc<Object>),
    Binary(Arc<[u8]>),
    /// `r.maxval`: sorts above everything; only valid as a range bound.
    MaxVal,
}

/// Dropping an array or object drops its elements, one stack frame per level of
/// nesting: deep values finish dropping on a fresh stack segment (`with_room`), so no
/// depth can overflow a stack.
impl Drop for Datum {
    #[inline]
    fn drop(&mut self) {
        if matches!(self, Datum::Array(_) | Datum::Object(_))
            && rdb_io::fiber::stack_left_bytes() < rdb_io::fiber::RED_ZONE_BYTES
        {
            let inner = std::mem::replace(self, Datum::Null);
            rdb_io::fiber::with_room(move || drop(inner));
        }
    }
}

impl Datum {
    pub fn str(s: impl Into<Arc<str>>) -> Datum {
        Datum::Str(s.into())
    }
    pub fn array(v: Vec<Datum>) -> Datum {
        Datum::Array(Arc::new(v))
    }
    pub fn object(o: Object) -> Datum {
        Datum::Object(Arc::new(o))
    }
    pub fn empty_object() -> Datum {
        Datum::Object(Arc::new(Object::new()))
    }

    /// The pseudo-type name of an object (`TIME`, `GEOMETRY`...), if it has one.
    pub fn reql_type(&self) -> Option<&str> {
        match self {
            Datum::Object(o) => match o.get(REQL_TYPE) {
                Some(Datum::Str(s)) => Some(s),
                _ => None,
            },
            Datum::Binary(_) => Some("BINARY"),
            _ => None,
        }
    }

    pub fn is_ptype(&self) -> bool {
        match self {
            Datum::Object(o) => o.contains_key(REQL_TYPE),
            Datum::Binary(_) => true,
            _ => false,
        }
    }

    /// RethinkDB's type name, as `type_of` reports it and errors print it.
    pub fn type_name(&self) -> String {
        if let Some(t) = self.reql_type() {
            return format!("PTYPE<{t}>");
        }
        self.raw_type_name().to_string()
    }

    pub fn raw_type_name(&self) -> &'static str {
        match self {
            Datum::MinVal => "MINVAL",
            Datum::Null => "NULL",
            Datum::Bool(_) => "BOOL",
            Datum::Num(_) => "NUMBER",
            Datum::Str(_) => "STRING",
            Datum::Array(_) => "ARRAY",
            Datum::Object(_) => "OBJECT",
            Datum::Binary(_) => "PTYPE<BINARY>",
            Datum::MaxVal => "MAXVAL",
        }
    }

    fn type_rank(&self) -> u8 {
        match self {
            Datum::MinVal => 1,
            Datum::Array(_) => 2,
            Datum::Binary(_) => 3,
            Datum::Bool(_) => 4,
            Datum::Null => 5,
            Datum::Num(_) => 6,
            Datum::Object(_) => 7,
            Datum::Str(_) => 8,
            Datum::MaxVal => 9,
        }
    }

    fn sort_type_name(&self) -> String {
        match self {
            Datum::MinVal => "\u{1}MINVAL".to_string(),
            Datum::MaxVal => "\u{10FFFF}MAXVAL".to_string(),
            _ => self.type_name(),
        }
    }

    /// Pseudo-types that compare by their own rules rather than as objects.
    fn ptype_compares_specially(&self) -> bool {
        self.is_ptype() && self.reql_type() != Some("GEOMETRY")
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Datum::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_num(&self) -> Option<f64> {
        match self {
            Datum::Num(n) => Some(*n),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&Arc<Vec<Datum>>> {
        match self {
            Datum::Array(a) => Some(a),
            _ => None,
        }
    }
    pub fn as_object(&self) -> Option<&Arc<Object>> {
        match self {
            Datum::Object(o) => Some(o),
            _ => None,
        }
    }
    pub fn get_field(&self, key: &str) -> Option<&Datum> {
        self.as_object().and_then(|o| o.get(key))
    }

    /// Truthiness: everything but `false` and `null` is true.
    pub fn truthy(&self) -> bool {
        !matches!(self, Datum::Null | Datum::Bool(false))
    }

    /// RethinkDB's total order across all datums.
    pub fn cmp_datum(&self, other: &Datum) -> Ordering {
        deep!(self.cmp_datum(other));
        let lp = self.ptype_compares_specially();
        let rp = other.ptype_compares_specially();
        if lp && rp {
            let (lt, rt) = (
                self.reql_type().unwrap_or(""),
                other.reql_type().unwrap_or(""),
            );
            if lt != rt {
                return lt.cmp(rt);
            }
            return ptype_cmp(self, other);
        } else if lp || rp {
            return self.sort_type_name().cmp(&other.sort_type_name());
        }
        let (lr, rr) = (self.type_rank(), other.type_rank());
        if lr != rr {
            return lr.cmp(&rr);
        }
        match (self, other) {
            (Datum::Bool(a), Datum::Bool(b)) => a.cmp(b),
            (Datum::Num(a), Datum::Num(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            (Datum::Str(a), Datum::Str(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Datum::Array(a), Datum::Array(b)) => {
                for (x, y) in a.iter().zip(b.iter()) {
                    let c = x.cmp_datum(y);
                    if c != Ordering::Equal {
                        return c;
                    }
                }
                a.len().cmp(&b.len())
            }
            (Datum::Object(a), Datum::Object(b)) => {
                for ((ka, va), (kb, vb)) in a.iter().zip(b.iter()) {
                    let c = ka.as_bytes().cmp(kb.as_bytes());
                    if c != Ordering::Equal {
                        return c;
                    }
                    let c = va.cmp_datum(vb);
                    if c != Ordering::Equal {
                        return c;
                    }
                }
                a.len().cmp(&b.len())
            }
            _ => Ordering::Equal,
        }
    }
}

fn ptype_cmp(a: &Datum, b: &Datum) -> Ordering {
    match (a, b) {
        (Datum::Binary(x), Datum::Binary(y)) => x.cmp(y),
        _ => {
            if a.reql_type() == Some("TIME") {
                let ea = a
                    .get_field("epoch_time")
                    .and_then(Datum::as_num)
                    .unwrap_or(0.0);
                let eb = b
                    .get_field("epoch_time")
                    .and_then(Datum::as_num)
                    .unwrap_or(0.0);
                return ea.partial_cmp(&eb).unwrap_or(Ordering::Equal);
            }
            match (a, b) {
                (Datum::Object(x), Datum::Object(y)) => {
                    Datum::Object(x.clone()).cmp_plain_object(y)
                }
                _ => Ordering::Equal,
            }
        }
    }
}

impl Datum {
    fn cmp_plain_object(&self, other: &Arc<Object>) -> Ordering {
        let a = match self {
            Datum::Object(o) => o,
            _ => return Ordering::Equal,
        };
        for ((ka, va), (kb, vb)) in a.iter().zip(other.iter()) {
            let c = ka.cmp(kb).then_with(|| va.cmp_datum(vb));
            if c != Ordering::Equal {
                return c;
            }
        }
        a.len().cmp(&other.len())
    }
}

impl PartialEq for Datum {
    fn eq(&self, other: &Datum) -> bool {
        self.cmp_datum(other) == Ordering::Equal
    }
}
impl Eq for Datum {}
impl PartialOrd for Datum {
    fn partial_cmp(&self, other: &Datum) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Datum {
    fn cmp(&self, other: &Datum) -> Ordering {
        self.cmp_datum(other)
    }
}

impl From<bool> for Datum {
    fn from(b: bool) -> Datum {
        Datum::Bool(b)
    }
}
impl From<f64> for Datum {
    fn from(n: f64) -> Datum {
        Datum::Num(n)
    }
}
impl From<&str> for Datum {
    fn from(s: &str) -> Datum {
        Datum::Str(s.into())
    }
}
impl From<String> for Datum {
    fn from(s: String) -> Datum {
        Datum::Str(s.into())
    }
}
impl From<Vec<Datum>> for Datum {
    fn from(v: Vec<Datum>) -> Datum {
        Datum::array(v)
    }
}
