//! Order-preserving binary encoding of datums: `encode(a) < encode(b)` (bytewise) exactly
//! when `a < b` in ReQL's order. Storage keys and index keys are built from it.
//!
//! Layout: one type tag byte (in ReQL type order), then a body that is self-delimiting
//! so that arrays and objects can concatenate their elements:
//! - numbers: IEEE-754 bits, sign bit flipped for positives, all bits flipped for
//!   negatives (big-endian), so byte order equals numeric order; -0.0 is encoded as 0.0.
//! - strings and binary: bytes with 0x00 escaped as 0x00 0xFF, terminated by 0x00 0x00.
//! - arrays: elements' encodings each preceded by 0x01, terminated by 0x00.
//! - objects: (key as string body, value) pairs each preceded by 0x01, terminated by 0x00.
//! - TIME: epoch seconds as a number body (times compare by instant).

use crate::datum::Datum;

/// Version of this encoding; stored formats record it.
pub const KEYCODE_VERSION: u8 = 1;

const TAG_MINVAL: u8 = 0x01;
const TAG_ARRAY: u8 = 0x10;
const TAG_BOOL: u8 = 0x20;
const TAG_NULL: u8 = 0x30;
const TAG_NUMBER: u8 = 0x40;
const TAG_OBJECT: u8 = 0x50;
const TAG_PTYPE: u8 = 0x60;
const TAG_STRING: u8 = 0x70;
const TAG_MAXVAL: u8 = 0xFF;

/// Pseudo-types sort among themselves by name, as in `Datum::cmp_datum`.
const PT_BINARY: u8 = 0x01;
const PT_TIME: u8 = 0x02;
const PT_OTHER: u8 = 0x03;

pub fn encode(d: &Datum) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, d);
    out
}

pub fn encode_into(out: &mut Vec<u8>, d: &Datum) {
    deep!(encode_into(out, d));
    // Geometry compares as a plain object; other pseudo-types get their own tag.
    let special_ptype = d.is_ptype() && d.reql_type() != Some("GEOMETRY");
    if special_ptype {
        out.push(TAG_PTYPE);
        match d {
            Datum::Binary(b) => {
                out.push(PT_BINARY);
                encode_bytes(out, b);
            }
            _ if d.reql_type() == Some("TIME") => {
                out.push(PT_TIME);
                let t = d
                    .get_field("epoch_time")
                    .and_then(Datum::as_num)
                    .unwrap_or(0.0);
                encode_num(out, t);
            }
            Datum::Object(o) => {
                out.push(PT_OTHER);
                encode_bytes(out, d.reql_type().unwrap_or("").as_bytes());
                encode_object_body(out, o);
            }
            _ => unreachable!("pseudo-types are objects or binary"),
        }
        return;
    }
    match d {
        Datum::MinVal => out.push(TAG_MINVAL),
        Datum::MaxVal => out.push(TAG_MAXVAL),
        Datum::Null => out.push(TAG_NULL),
        Datum::Bool(b) => {
            out.push(TAG_BOOL);
            out.push(u8::from(*b));
        }
        Datum::Num(n) => {
            out.push(TAG_NUMBER);
            encode_num(out, *n);
        }
        Datum::Str(s) => {
            out.push(TAG_STRING);
            encode_bytes(out, s.as_bytes());
        }
        Datum::Array(a) => {
            out.push(TAG_ARRAY);
            for x in a.iter() {
                out.push(0x01);
                encode_into(out, x);
            }
            out.push(0x00);
        }
        Datum::Object(o) => {
            out.push(TAG_OBJECT);
            encode_object_body(out, o);
        }
        Datum::Binary(_) => unreachable!("binary is a pseudo-type"),
    }
}

fn encode_object_body(out: &mut Vec<u8>, o: &crate::datum::Object) {
    for (k, v) in o.iter() {
        out.push(0x01);
        encode_bytes(out, k.as_bytes());
        encode_into(out, v);
    }
    out.push(0x00);
}

fn encode_num(out: &mut Vec<u8>, n: f64) {
    let n = if n == 0.0 { 0.0 } else { n };
    let bits = n.to_bits();
    let key = if bits >> 63 == 0 {
        bits ^ (1 << 63)
    } else {
        !bits
    };
    out.extend_from_slice(&key.to_be_bytes());
}

fn encode_bytes(out: &mut Vec<u8>, b: &[u8]) {
    for &c in b {
        out.push(c);
        if c == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x00]);
}

/// Decodes the encoding at the start of `b`; returns the datum and the bytes it took.
/// `None` for bytes that are not a valid encoding (they come from disk: never panic).
/// Times come back in UTC: the encoding keeps the instant, not the timezone.
pub fn decode_prefix(b: &[u8]) -> Option<(Datum, usize)> {
    let mut pos = 0;
    let d = decode_at(b, &mut pos)?;
    Some((d, pos))
}

fn decode_at(b: &[u8], pos: &mut usize) -> Option<Datum> {
    // Depth is bounded by the key's length (a byte per level).
    deep!(decode_at(b, pos));
    let tag = *b.get(*pos)?;
    *pos += 1;
    Some(match tag {
        TAG_MINVAL => Datum::MinVal,
        TAG_MAXVAL => Datum::MaxVal,
        TAG_NULL => Datum::Null,
        TAG_BOOL => {
            let v = *b.get(*pos)?;
            *pos += 1;
            match v {
                0 => Datum::Bool(false),
                1 => Datum::Bool(true),
                _ => return None,
            }
        }
        TAG_NUMBER => Datum::Num(decode_num(b, pos)?),
        TAG_STRING => Datum::str(String::from_utf8(decode_bytes(b, pos)?).ok()?),
        TAG_ARRAY => {
            let mut items = Vec::new();
            loop {
                match *b.get(*pos)? {
                    0x00 => {
                        *pos += 1;
                        break;
                    }
                    0x01 => {
                        *pos += 1;
                        items.push(decode_at(b, pos)?);
                    }
                    _ => return None,
                }
            }
            Datum::array(items)
        }
        TAG_OBJECT => Datum::object(decode_object_body(b, pos)?),
        TAG_PTYPE => {
            let kind = *b.get(*pos)?;
            *pos += 1;
            match kind {
                PT_BINARY => Datum::Binary(decode_bytes(b, pos)?.into()),
                PT_TIME => {
                    let t = decode_num(b, pos)?;
                    let mut o = crate::datum::Object::new();
                    o.insert("$reql_type$".into(), Datum::str("TIME"));
                    o.insert("epoch_time".into(), Datum::Num(t));
                    o.insert("timezone".into(), Datum::str("+00:00"));
                    Datum::object(o)
                }
                PT_OTHER => {
                    let _name = decode_bytes(b, pos)?;
                    Datum::object(decode_object_body(b, pos)?)
                }
                _ => return None,
            }
        }
        _ => return None,
    })
}

fn decode_object_body(b: &[u8], pos: &mut usize) -> Option<crate::datum::Object> {
    let mut o = crate::datum::Object::new();
    loop {
        match *b.get(*pos)? {
            0x00 => {
                *pos += 1;
                return Some(o);
            }
            0x01 => {
                *pos += 1;
                let k = String::from_utf8(decode_bytes(b, pos)?).ok()?;
                let v = decode_at(b, pos)?;
                o.insert(k, v);
            }
            _ => return None,
        }
    }
}

fn decode_num(b: &[u8], pos: &mut usize) -> Option<f64> {
    let raw: [u8; 8] = b.get(*pos..*pos + 8)?.try_into().ok()?;
    *pos += 8;
    let key = u64::from_be_bytes(raw);
    let bits = if key >> 63 == 1 {
        key ^ (1 << 63)
    } else {
        !key
    };
    Some(f64::from_bits(bits))
}

fn decode_bytes(b: &[u8], pos: &mut usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let c = *b.get(*pos)?;
        *pos += 1;
        if c != 0 {
            out.push(c);
            continue;
        }
        let next = *b.get(*pos)?;
        *pos += 1;
        match next {
            0x00 => return Some(out),
            0xFF => out.push(0),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datum::Object;
    use proptest::prelude::*;
    use std::cmp::Ordering;

    fn arb_datum() -> impl Strategy<Value = Datum> {
        let leaf = prop_oneof![
            Just(Datum::Null),
            any::<bool>().prop_map(Datum::Bool),
            (-1e6f64..1e6).prop_map(Datum::Num),
            any::<i32>().prop_map(|i| Datum::Num(i as f64)),
            "[a-c\\x00]{0,4}".prop_map(Datum::str),
            proptest::collection::vec(any::<u8>(), 0..4).prop_map(|v| Datum::Binary(v.into())),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Datum::array),
                proptest::collection::btree_map("[a-c]{0,2}", inner, 0..3).prop_map(|m| {
                    let o: Object = m.into_iter().collect();
                    Datum::object(o)
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn encoded_order_equals_datum_order(a in arb_datum(), b in arb_datum()) {
            let (ea, eb) = (encode(&a), encode(&b));
            prop_assert_eq!(ea.cmp(&eb), a.cmp_datum(&b), "a={:?} b={:?}", a, b);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        #[test]
        fn decoding_inverts_encoding(a in arb_datum(), tail in proptest::collection::vec(any::<u8>(), 0..4)) {
            let mut e = encode(&a);
            let n = e.len();
            e.extend_from_slice(&tail);
            let (d, used) = decode_prefix(&e).expect("valid encoding");
            prop_assert_eq!(used, n);
            prop_assert_eq!(d.cmp_datum(&a), Ordering::Equal);
        }

        #[test]
        fn decoding_garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_prefix(&b);
        }
    }

    #[test]
    fn extremes() {
        let vals = [
            Datum::MinVal,
            Datum::array(vec![]),
            Datum::Bool(false),
            Datum::Null,
            Datum::Num(-1.0),
            Datum::Num(0.0),
            Datum::empty_object(),
            Datum::Binary(vec![1].into()),
            Datum::str(""),
            Datum::MaxVal,
        ];
        for w in vals.windows(2) {
            assert_eq!(
                w[0].cmp_datum(&w[1]),
                Ordering::Less,
                "{:?} < {:?}",
                w[0],
                w[1]
            );
            assert!(encode(&w[0]) < encode(&w[1]));
        }
        assert_eq!(encode(&Datum::Num(-0.0)), encode(&Datum::Num(0.0)));
    }
}
