//! A fast path from a START query's JSON straight to terms, for the shapes drivers send
//! on every query (term arrays, objects, integers, strings without escapes, booleans,
//! null), without building a `serde_json::Value` first.
//!
//! It answers `None` for anything else: escapes, fractions, exponents, `-0`, `DATUM`
//! terms, malformed input, deep nesting. The caller then takes the general path
//! (`serde_json` then `term::parse`), which also produces every error message, so this
//! module never decides what a query means on its own; a property test checks that
//! whenever it answers, the general path gives the same terms.

use crate::datum::Datum;
use crate::term::{Op, Term};
use crate::term_type as tt;
use std::collections::BTreeMap;
use std::rc::Rc;

/// Nesting beyond this takes the general path (which enforces the real limit).
const DEPTH_MAX: usize = 64;
const START: u64 = 1;

/// A START query `[1, term]` or `[1, term, {global optargs}]`: the term and the
/// global optargs (each a term) in key order, as the general path iterates them.
pub type Start = (Rc<Term>, Vec<(String, Rc<Term>)>);

pub fn parse_start(body: &[u8]) -> Option<Start> {
    let mut p = Parser { b: body, pos: 0 };
    p.expect(b'[')?;
    if p.uint()? != START {
        return None;
    }
    p.expect(b',')?;
    let term = p.term(0)?;
    let optargs = if p.eat(b',')? {
        p.expect(b'{')?;
        p.object_entries(0)?
    } else {
        Vec::new()
    };
    p.expect(b']')?;
    p.skip_ws();
    (p.pos == body.len()).then_some((term, optargs))
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn skip_ws(&mut self) {
        while matches!(self.b.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.b.get(self.pos).copied()
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        self.eat(c)?.then_some(())
    }

    /// Whether the next byte is `c` (consumed if so); `None` at the end of input.
    fn eat(&mut self, c: u8) -> Option<bool> {
        let hit = self.peek()? == c;
        self.pos += usize::from(hit);
        Some(hit)
    }

    /// Digits of a non-negative integer (no sign, fraction or exponent).
    fn uint(&mut self) -> Option<u64> {
        self.peek()?;
        let start = self.pos;
        while self.b.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        let digits = &self.b[start..self.pos];
        if digits.is_empty() || digits.len() > 15 || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        if matches!(self.b.get(self.pos), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.pos;
        loop {
            match *self.b.get(self.pos)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => self.pos += 1,
            }
        }
        let s = std::str::from_utf8(&self.b[start..self.pos]).ok()?;
        self.pos += 1;
        Some(s)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos + word.len();
        (self.b.get(self.pos..end)? == word).then(|| self.pos = end)
    }

    /// A scalar literal: what `json::from_json` makes of it (no pseudo-type to check).
    fn datum(d: Datum) -> Option<Rc<Term>> {
        Some(Rc::new(Term::Datum(d)))
    }

    fn term(&mut self, depth: usize) -> Option<Rc<Term>> {
        if depth > DEPTH_MAX {
            return None;
        }
        match self.peek()? {
            b'[' => {
                self.pos += 1;
                // Term numbers are read as u32 like the general path reads them.
                let ty = self.uint()? as u32;
                if ty == tt::DATUM {
                    return None;
                }
                let mut args = Vec::new();
                let mut optargs = Vec::new();
                if self.eat(b',')? {
                    self.expect(b'[')?;
                    self.list(b']', |p| {
                        args.push(p.term(depth + 1)?);
                        Some(())
                    })?;
                    if self.eat(b',')? {
                        self.expect(b'{')?;
                        optargs = self.object_entries(depth + 1)?;
                    }
                }
                self.expect(b']')?;
                Some(Rc::new(Term::Op(Op { ty, args, optargs })))
            }
            b'{' => {
                self.pos += 1;
                let optargs = self.object_entries(depth + 1)?;
                Some(Rc::new(Term::Op(Op {
                    ty: tt::MAKE_OBJ,
                    args: Vec::new(),
                    optargs,
                })))
            }
            b'"' => Self::datum(Datum::str(self.string()?)),
            b't' => {
                self.literal(b"true")?;
                Self::datum(Datum::Bool(true))
            }
            b'f' => {
                self.literal(b"false")?;
                Self::datum(Datum::Bool(false))
            }
            b'n' => {
                self.literal(b"null")?;
                Self::datum(Datum::Null)
            }
            b'-' => {
                self.pos += 1;
                let n = self.uint()?;
                if n == 0 {
                    return None;
                }
                // At most 15 digits: exact as an f64.
                Self::datum(Datum::Num(-(n as f64)))
            }
            b'0'..=b'9' => {
                let n = self.uint()?;
                Self::datum(Datum::Num(n as f64))
            }
            _ => None,
        }
    }

    /// Comma-separated items through `close` (the opening bracket was just read).
    fn list(&mut self, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        if self.eat(close)? {
            return Some(());
        }
        loop {
            item(self)?;
            if !self.eat(b',')? {
                return self.expect(close);
            }
        }
    }

    /// The entries of an object whose `{` was just read, through its `}`: values are
    /// terms, in key order, a repeated key keeping its last value (as the general
    /// path's map does).
    fn object_entries(&mut self, depth: usize) -> Option<Vec<(String, Rc<Term>)>> {
        let mut out = BTreeMap::new();
        self.list(b'}', |p| {
            let k = p.string()?.to_owned();
            p.expect(b':')?;
            out.insert(k, p.term(depth)?);
            Some(())
        })?;
        Some(out.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the general path makes of a START body, in the fast path's shape.
    fn general(body: &[u8]) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let a = v.as_array()?;
        let t = crate::term::parse(a.get(1)?).ok()?;
        let mut optargs = Vec::new();
        if let Some(m) = a.get(2) {
            for (k, x) in m.as_object()? {
                optargs.push((k.clone(), crate::term::parse(x).ok()?));
            }
        }
        Some(format!("{:?}", (t, optargs)))
    }

    fn check(body: &str) {
        if let Some(fast) = parse_start(body.as_bytes()) {
            assert_eq!(
                Some(format!("{fast:?}")),
                general(body.as_bytes()),
                "body: {body}"
            );
        }
    }

    #[test]
    fn common_queries_take_the_fast_path() {
        for body in [
            r#"[1,[16,[[15,[[14,["bench"]],"bench"]],123]],{}]"#,
            r#"[1, [56, [[15, [[14, ["test"]], "t"]], {"id": 1, "a": [2, [1, "x", true]]}], {"durability": "soft"}], {"db": [14, ["test"]]}]"#,
            r#"[1,[2,[]]]"#,
            r#"[1,{"b":1,"a":2,"b":3}]"#,
            r#"[1,[39,[[15,[[14,["d"]],"t"]],[69,[[2,[1]],[67,[[13,[]],-5]]]]]]]"#,
        ] {
            assert!(parse_start(body.as_bytes()).is_some(), "{body}");
            check(body);
        }
    }

    #[test]
    fn anything_unusual_takes_the_general_path() {
        for body in [
            r#"[1,1.5]"#,
            r#"[1,-0]"#,
            r#"[1,1e3]"#,
            r#"[1,"a\"b"]"#,
            r#"[1,[1,[2,3]]]"#,
            r#"[1,[10,[1],{},4]]"#,
            r#"[1,[10,1]]"#,
            r#"[1,01]"#,
            r#"[2]"#,
            r#"[1,[10,[1]]] x"#,
            r#"[1,1234567890123456]"#,
        ] {
            assert!(parse_start(body.as_bytes()).is_none(), "{body}");
        }
    }

    /// Term-like JSON with the fast path's edge cases mixed in.
    fn arb_json() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            (0u64..40).prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            Just("-0".to_string()),
            Just("0.5".to_string()),
            Just("1e2".to_string()),
            Just("true".to_string()),
            Just("null".to_string()),
            "[a-c\"\\\\é]{0,4}".prop_map(|s| format!("\"{s}\"")),
            Just("\"\\u0041\"".to_string()),
        ];
        leaf.prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|xs| format!("[{}]", xs.join(","))),
                ((0u64..200), proptest::collection::vec(inner.clone(), 0..3))
                    .prop_map(|(t, xs)| format!("[{t},[{}]]", xs.join(" , "))),
                (
                    (0u64..200),
                    proptest::collection::vec(inner.clone(), 0..3),
                    proptest::collection::vec(("[a-c]{1,2}", inner.clone()), 0..3)
                )
                    .prop_map(|(t, xs, kv)| {
                        let o: Vec<String> =
                            kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                        format!("[{t},[{}],{{{}}}]", xs.join(","), o.join(","))
                    }),
                proptest::collection::vec(("[a-c]{1,2}", inner), 0..4).prop_map(|kv| {
                    let o: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
                    format!("{{{}}}", o.join(","))
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Whenever the fast path answers, the general path gives the same terms.
        #[test]
        fn agrees_with_the_general_path(t in arb_json(), g in proptest::option::of(arb_json())) {
            let body = match g {
                Some(g) => format!("[1,{t},{{\"db\":{g},\"a\":1}}]"),
                None => format!("[1,{t}]"),
            };
            check(&body);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_start(&b);
        }
    }
}
