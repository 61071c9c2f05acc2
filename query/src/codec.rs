//! Compact binary encoding of documents, as stored by tables (not JSON text).
//!
//! A stored value is `version u8 (1)` followed by one encoded datum:
//! `0` null, `1` false, `2` true, `3` f64 (8 bytes LE), `4` integer (zigzag varint; used
//! for integral numbers of magnitude <= 2^53 other than -0.0), `5` string (varint length,
//! UTF-8), `6` array (varint count, items), `7` object (varint count, then per field:
//! varint key length, key, value; keys in ascending byte order), `8` binary (varint
//! length, bytes). `r.minval`/`r.maxval` cannot be stored. Decoding checks everything
//! and never panics: bytes from disk are untrusted.

use crate::datum::{Datum, Object};
use std::sync::Arc;

pub const CODEC_VERSION: u8 = 1;
const EXACT_INT_MAX: f64 = 9007199254740992.0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub &'static str);

pub fn encode(d: &Datum) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![CODEC_VERSION];
    encode_into(&mut out, d)?;
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn encode_into(out: &mut Vec<u8>, d: &Datum) -> Result<(), CodecError> {
    deep!(encode_into(out, d));
    match d {
        Datum::Null => out.push(0),
        Datum::Bool(false) => out.push(1),
        Datum::Bool(true) => out.push(2),
        Datum::Num(n) => {
            if n.fract() == 0.0 && n.abs() <= EXACT_INT_MAX && !(*n == 0.0 && n.is_sign_negative())
            {
                out.push(4);
                let i = *n as i64;
                put_varint(out, ((i << 1) ^ (i >> 63)) as u64);
            } else {
                out.push(3);
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        Datum::Str(s) => {
            out.push(5);
            put_varint(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        Datum::Array(a) => {
            out.push(6);
            put_varint(out, a.len() as u64);
            for x in a.iter() {
                encode_into(out, x)?;
            }
        }
        Datum::Object(o) => {
            out.push(7);
            put_varint(out, o.len() as u64);
            for (k, v) in o.iter() {
                put_varint(out, k.len() as u64);
                out.extend_from_slice(k.as_bytes());
                encode_into(out, v)?;
            }
        }
        Datum::Binary(b) => {
            out.push(8);
            put_varint(out, b.len() as u64);
            out.extend_from_slice(b);
        }
        Datum::MinVal | Datum::MaxVal => {
            return Err(CodecError("r.minval and r.maxval cannot be stored"))
        }
    }
    Ok(())
}

pub fn decode(b: &[u8]) -> Result<Datum, CodecError> {
    match b.first() {
        Some(&CODEC_VERSION) => {}
        Some(_) => return Err(CodecError("unknown document encoding version")),
        None => return Err(CodecError("empty document")),
    }
    let mut r = Reader { b, pos: 1 };
    let d = r.datum()?;
    if r.pos != b.len() {
        return Err(CodecError("trailing bytes after document"));
    }
    Ok(d)
}

/// The value at `path` (a chain of object fields) of an encoded document, decoding only
/// that value and skipping the rest: `Ok(None)` when a field is missing or a step is not
/// an object. Used to test predicates on stored rows without decoding them.
pub fn field_path(b: &[u8], path: &[&str]) -> Result<Option<Datum>, CodecError> {
    match b.first() {
        Some(&CODEC_VERSION) => {}
        Some(_) => return Err(CodecError("unknown document encoding version")),
        None => return Err(CodecError("empty document")),
    }
    let mut r = Reader { b, pos: 1 };
    'steps: for key in path {
        if r.byte()? != 7 {
            return Ok(None);
        }
        let n = r.count()?;
        for _ in 0..n {
            let k = r.bytes()?;
            if k == key.as_bytes() {
                continue 'steps;
            }
            if k > key.as_bytes() {
                // Keys are sorted: it is not there.
                return Ok(None);
            }
            r.skip()?;
        }
        return Ok(None);
    }
    r.datum().map(Some)
}

/// Writes an encoded document as compact JSON, exactly as `json::write_json` writes its
/// decoding, without building the datum (a point read's answer goes straight from the
/// stored bytes to the wire). Checks what `decode` checks; on an error, `out` may hold
/// part of the document.
pub fn write_json(b: &[u8], out: &mut String) -> Result<(), CodecError> {
    match b.first() {
        Some(&CODEC_VERSION) => {}
        Some(_) => return Err(CodecError("unknown document encoding version")),
        None => return Err(CodecError("empty document")),
    }
    let mut r = Reader { b, pos: 1 };
    r.json(out)?;
    if r.pos != b.len() {
        return Err(CodecError("trailing bytes after document"));
    }
    Ok(())
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, CodecError> {
        let v = *self
            .b
            .get(self.pos)
            .ok_or(CodecError("document truncated"))?;
        self.pos += 1;
        Ok(v)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError("varint too long"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| CodecError("length out of range"))?;
        let end = self
            .pos
            .checked_add(n)
            .ok_or(CodecError("length out of range"))?;
        let s = self
            .b
            .get(self.pos..end)
            .ok_or(CodecError("document truncated"))?;
        self.pos = end;
        Ok(s)
    }

    fn count(&mut self) -> Result<usize, CodecError> {
        let n = self.varint()?;
        // Every element takes at least one byte: a count beyond the rest is a lie.
        if n > (self.b.len() - self.pos) as u64 {
            return Err(CodecError("element count exceeds the document"));
        }
        Ok(n as usize)
    }

    /// Moves past one encoded value without building it.
    fn skip(&mut self) -> Result<(), CodecError> {
        deep!(self.skip());
        match self.byte()? {
            0..=2 => {}
            3 => {
                if self.pos + 8 > self.b.len() {
                    return Err(CodecError("document truncated"));
                }
                self.pos += 8;
            }
            4 => {
                self.varint()?;
            }
            5 | 8 => {
                self.bytes()?;
            }
            6 => {
                for _ in 0..self.count()? {
                    self.skip()?;
                }
            }
            7 => {
                for _ in 0..self.count()? {
                    self.bytes()?;
                    self.skip()?;
                }
            }
            _ => return Err(CodecError("unknown type tag")),
        }
        Ok(())
    }

    fn f64(&mut self) -> Result<f64, CodecError> {
        let s = self
            .b
            .get(self.pos..self.pos + 8)
            .ok_or(CodecError("document truncated"))?;
        self.pos += 8;
        let n = f64::from_le_bytes(s.try_into().map_err(|_| CodecError("document truncated"))?);
        if !n.is_finite() {
            return Err(CodecError("non-finite number"));
        }
        Ok(n)
    }

    fn int(&mut self) -> Result<f64, CodecError> {
        let z = self.varint()?;
        let i = ((z >> 1) as i64) ^ -((z & 1) as i64);
        if (i as f64).abs() > EXACT_INT_MAX {
            return Err(CodecError("integer out of range"));
        }
        Ok(i as f64)
    }

    fn str(&mut self, what: &'static str) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| CodecError(what))
    }

    /// The next key of an object, which must sort after `last` (then becomes it).
    fn key(&mut self, last: &mut Option<&'a str>) -> Result<&'a str, CodecError> {
        let k = self.str("key is not UTF-8")?;
        if last.is_some_and(|l| l.as_bytes() >= k.as_bytes()) {
            return Err(CodecError("object keys out of order"));
        }
        *last = Some(k);
        Ok(k)
    }

    /// The JSON of one value (see [`write_json`]); the same checks as `datum`.
    fn json(&mut self, out: &mut String) -> Result<(), CodecError> {
        use crate::json::{write_num, write_str};
        // Depth is bounded by the document's length (a byte per level), never by a
        // limit stricter than what writes accept.
        deep!(self.json(out));
        match self.byte()? {
            0 => out.push_str("null"),
            1 => out.push_str("false"),
            2 => out.push_str("true"),
            3 => write_num(out, self.f64()?),
            4 => write_num(out, self.int()?),
            5 => write_str(out, self.str("string is not UTF-8")?),
            6 => {
                out.push('[');
                for i in 0..self.count()? {
                    if i > 0 {
                        out.push(',');
                    }
                    self.json(out)?;
                }
                out.push(']');
            }
            7 => {
                out.push('{');
                let mut last = None;
                for i in 0..self.count()? {
                    let k = self.key(&mut last)?;
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(out, k);
                    out.push(':');
                    self.json(out)?;
                }
                out.push('}');
            }
            8 => {
                out.push_str("{\"$reql_type$\":\"BINARY\",\"data\":");
                write_str(out, &crate::json::encode_base64(self.bytes()?));
                out.push('}');
            }
            _ => return Err(CodecError("unknown type tag")),
        }
        Ok(())
    }

    fn datum(&mut self) -> Result<Datum, CodecError> {
        deep!(self.datum());
        Ok(match self.byte()? {
            0 => Datum::Null,
            1 => Datum::Bool(false),
            2 => Datum::Bool(true),
            3 => Datum::Num(self.f64()?),
            4 => Datum::Num(self.int()?),
            5 => Datum::str(self.str("string is not UTF-8")?),
            6 => {
                let n = self.count()?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.datum()?);
                }
                Datum::array(v)
            }
            7 => {
                let n = self.count()?;
                let mut o = Object::new();
                let mut last = None;
                for _ in 0..n {
                    let k = self.key(&mut last)?;
                    let v = self.datum()?;
                    o.insert(k.to_owned(), v);
                }
                Datum::Object(Arc::new(o))
            }
            8 => Datum::Binary(self.bytes()?.into()),
            _ => return Err(CodecError("unknown type tag")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::testgen::arb_datum;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn round_trip_is_exact(d in arb_datum()) {
            let b = encode(&d).unwrap();
            let back = decode(&b).unwrap();
            // Bit-exact numbers (including -0.0) and identical JSON.
            prop_assert_eq!(crate::json::to_json(&back), crate::json::to_json(&d));
            prop_assert!(back == d);
        }

        #[test]
        fn field_path_matches_decoding(d in arb_datum(), pick in 0usize..8) {
            let b = encode(&d).unwrap();
            // A field that exists (when d is an object), and one that does not.
            let key = match &d {
                Datum::Object(o) if !o.is_empty() => o.keys().nth(pick % o.len()).unwrap().clone(),
                _ => "absent".to_string(),
            };
            let want = match &d {
                Datum::Object(o) => o.get(&key).cloned(),
                _ => None,
            };
            prop_assert_eq!(field_path(&b, &[key.as_str()]).unwrap(), want);
            prop_assert_eq!(field_path(&b, &["\u{10ffff}never"]).unwrap(), None);
            prop_assert_eq!(field_path(&b, &[]).unwrap(), Some(d.clone()));
        }

        #[test]
        fn json_of_the_bytes_is_json_of_the_datum(d in arb_datum()) {
            let b = encode(&d).unwrap();
            let mut out = String::new();
            write_json(&b, &mut out).unwrap();
            prop_assert_eq!(out, crate::json::to_json(&d));
        }

        #[test]
        fn json_fails_exactly_where_decoding_does(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut v = vec![CODEC_VERSION];
            v.extend_from_slice(&b);
            for bytes in [&b[..], &v[..]] {
                let mut out = String::new();
                match (decode(bytes), write_json(bytes, &mut out)) {
                    (Ok(d), Ok(())) => prop_assert_eq!(out, crate::json::to_json(&d)),
                    (Err(a), Err(b)) => prop_assert_eq!(a, b),
                    (a, b) => prop_assert!(false, "decode {:?} but json {:?}", a, b),
                }
            }
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&b);
            let mut v = vec![CODEC_VERSION];
            v.extend_from_slice(&b);
            let _ = decode(&v);
            let _ = field_path(&v, &["a", "b"]);
        }

        #[test]
        fn every_truncation_is_an_error(d in arb_datum()) {
            let b = encode(&d).unwrap();
            for cut in 0..b.len() {
                prop_assert!(decode(&b[..cut]).is_err());
                prop_assert!(write_json(&b[..cut], &mut String::new()).is_err());
            }
        }
    }

    #[test]
    fn smaller_than_json() {
        let d: serde_json::Value = serde_json::json!({"id": 12345, "name": "Ada Lovelace", "tags": ["math", "poetry"], "score": 97.5});
        let d = crate::json::from_json(&d).unwrap();
        assert!(encode(&d).unwrap().len() < crate::json::to_json(&d).len());
        assert!(encode(&Datum::MinVal).is_err());
    }
}
