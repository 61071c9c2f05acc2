//! Secondary index entries: their catalog description and their layout in the engine.
//!
//! An index entry lives on the shard of its document, so it is written in the same
//! atomic batch as the document and can never disagree with it. Layout (version 1):
//!
//! - key: `INDEX_PREFIX | index id (u64 BE) | sec | pk | tag`, where `sec` is the
//!   order-preserving encoding (`keycode`) of the index value, cut to `SEC_BYTES_MAX`
//!   bytes when longer; `pk` is the primary key's encoding; `tag` (u32 BE) is the
//!   position of the value in the array a multi index returned.
//! - value: `ENTRY_VERSION | sec length in the key (u16 BE) | tagged (u8)`, then the
//!   whole encoded index value when `sec` was cut.
//!
//! Because encodings are prefix-free and order-preserving, keys sort by index value,
//! then primary key, then tag, except that entries whose values share a cut prefix sort
//! by primary key among themselves; readers restore the order from the whole values.
//!
//! A geospatial index has one entry per S2 cell covering the document's geometry; its
//! value is the cell id as a string of 16 lowercase hex digits, so entries sort by cell
//! id (`eval::geo::cover`).

use crate::datum::Datum;
use crate::error::{internal, logic, Result};
use std::ops::Bound;

/// Index entries start with this byte (catalog 0x00, documents 0x01).
pub const INDEX_PREFIX: u8 = 0x02;
/// Longest index value encoding kept in a key; longer ones are cut (RethinkDB cuts its
/// keys too, to fit its 250-byte key limit).
pub const SEC_BYTES_MAX: usize = 200;
const ENTRY_VERSION: u8 = 1;
const HEADER_BYTES: usize = 4;
const TAG_BYTES: usize = 4;
/// Bytes of `INDEX_PREFIX` and the index id.
pub const PREFIX_BYTES: usize = 9;

/// A secondary index as the catalog records it.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexInfo {
    pub name: String,
    /// Prefix of this index's entries; never reused (shared counter with tables).
    pub id: u64,
    /// The index function: the wire JSON of a one-argument FUNC term.
    pub function: String,
    pub multi: bool,
    pub geo: bool,
    /// False until every document existing at creation has been indexed.
    pub ready: bool,
}

pub fn index_prefix(id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(PREFIX_BYTES);
    k.push(INDEX_PREFIX);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Every key of one index.
pub fn index_bounds(id: u64) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let next = id.checked_add(1).expect("ids never reach u64::MAX");
    (
        Bound::Included(index_prefix(id)),
        Bound::Excluded(index_prefix(next)),
    )
}

/// The encoding of a value as a secondary key, or RethinkDB's error when the value
/// cannot be one (such documents are left out of the index).
pub fn secondary_code(d: &Datum) -> Result<Vec<u8>> {
    check_secondary(d, true)?;
    Ok(crate::keycode::encode(d))
}

fn check_secondary(d: &Datum, top: bool) -> Result<()> {
    deep!(check_secondary(d, top));
    let ok = match d {
        Datum::Num(_) | Datum::Str(_) | Datum::Bool(_) | Datum::Binary(_) => true,
        Datum::Array(a) => {
            for x in a.iter() {
                check_secondary(x, false)?;
            }
            true
        }
        Datum::Object(_) if d.reql_type() == Some("TIME") => true,
        Datum::Object(_) if d.reql_type() == Some("GEOMETRY") => {
            return Err(logic(
                "Cannot use a geometry value as a key value in a primary or non-geospatial secondary index.",
            ))
        }
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let shown = crate::json::to_json(d);
    Err(logic(if top {
        format!(
            "Secondary keys must be a number, string, bool, pseudotype, or array (got type {}):\n{}",
            d.type_name(),
            crate::json::trunc_pretty(d)
        )
    } else {
        format!(
            "Array keys can only contain numbers, strings, bools,  pseudotypes, or arrays (got {shown} of type {}).",
            d.type_name()
        )
    }))
}

/// One entry: its key and value.
pub fn entry(id: u64, sec: &[u8], pk: &[u8], tag: Option<u32>) -> (Vec<u8>, Vec<u8>) {
    let cut = sec.len() > SEC_BYTES_MAX;
    let in_key = if cut { &sec[..SEC_BYTES_MAX] } else { sec };
    let mut key = Vec::with_capacity(PREFIX_BYTES + in_key.len() + pk.len() + TAG_BYTES);
    key.push(INDEX_PREFIX);
    key.extend_from_slice(&id.to_be_bytes());
    key.extend_from_slice(in_key);
    key.extend_from_slice(pk);
    if let Some(t) = tag {
        key.extend_from_slice(&t.to_be_bytes());
    }
    let mut value = Vec::with_capacity(HEADER_BYTES + if cut { sec.len() } else { 0 });
    value.push(ENTRY_VERSION);
    value.extend_from_slice(&(in_key.len() as u16).to_be_bytes());
    value.push(u8::from(tag.is_some()));
    if cut {
        value.extend_from_slice(sec);
    }
    (key, value)
}

/// An entry taken apart (borrowing the key and value it came from).
#[derive(Debug, PartialEq)]
pub struct Entry<'a> {
    /// The index value's whole encoding.
    pub sec: &'a [u8],
    /// True when the key holds only a prefix of `sec`.
    pub cut: bool,
    /// The primary key's encoding (append it to the table prefix for the document key).
    pub pk: &'a [u8],
    pub tag: Option<u32>,
}

impl Entry<'_> {
    /// The key the entry would have without cutting: orders entries exactly.
    pub fn sort_key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.sec.len() + self.pk.len() + TAG_BYTES);
        k.extend_from_slice(self.sec);
        k.extend_from_slice(self.pk);
        if let Some(t) = self.tag {
            k.extend_from_slice(&t.to_be_bytes());
        }
        k
    }
}

fn corrupt(what: &str) -> crate::error::ReqlError {
    internal(format!("Corrupt index entry in storage: {what}"))
}

/// Reads an entry back; bytes from disk are checked, never trusted.
pub fn parse_entry<'a>(key: &'a [u8], value: &'a [u8]) -> Result<Entry<'a>> {
    if value.len() < HEADER_BYTES || value[0] != ENTRY_VERSION {
        return Err(corrupt("bad header"));
    }
    if key.len() < PREFIX_BYTES || key[0] != INDEX_PREFIX {
        return Err(corrupt("bad key"));
    }
    let sec_len = usize::from(u16::from_be_bytes([value[1], value[2]]));
    let tagged = match value[3] {
        0 => false,
        1 => true,
        _ => return Err(corrupt("bad tag flag")),
    };
    let tag_len = if tagged { TAG_BYTES } else { 0 };
    let rest = &key[PREFIX_BYTES..];
    if sec_len + tag_len >= rest.len() {
        return Err(corrupt("key too short"));
    }
    let in_key = &rest[..sec_len];
    let pk = &rest[sec_len..rest.len() - tag_len];
    let tag = tagged.then(|| {
        let t = &rest[rest.len() - TAG_BYTES..];
        u32::from_be_bytes([t[0], t[1], t[2], t[3]])
    });
    let full = &value[HEADER_BYTES..];
    let (sec, cut) = if full.is_empty() {
        (in_key, false)
    } else {
        if sec_len != SEC_BYTES_MAX || !full.starts_with(in_key) {
            return Err(corrupt("stored value disagrees with its key"));
        }
        (full, true)
    };
    Ok(Entry { sec, cut, pk, tag })
}

/// The key-space bounds that hold every entry whose value lies between `lo` and `hi`
/// (encodings; `None` is unbounded). Cut entries near a bound may fall inside without
/// matching: readers check `Entry::sec` against the exact bounds.
pub fn scan_bounds(
    id: u64,
    lo: &Bound<Vec<u8>>,
    hi: &Bound<Vec<u8>>,
) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let (all_lo, all_hi) = index_bounds(id);
    let with = |code: &[u8]| {
        let mut k = index_prefix(id);
        k.extend_from_slice(&code[..code.len().min(SEC_BYTES_MAX)]);
        k
    };
    // Every entry with value v >= code starts with at least `with(code)`; 0xFF is above
    // every primary key's first byte, so `with(code) + 0xFF` is past all entries of
    // exactly `code` (and of every value sharing its cut prefix).
    let lo = match lo {
        Bound::Unbounded => all_lo,
        Bound::Included(c) => Bound::Included(with(c)),
        Bound::Excluded(c) if c.len() >= SEC_BYTES_MAX => Bound::Included(with(c)),
        Bound::Excluded(c) => {
            let mut k = with(c);
            k.push(0xFF);
            Bound::Included(k)
        }
    };
    let hi = match hi {
        Bound::Unbounded => all_hi,
        Bound::Excluded(c) if c.len() < SEC_BYTES_MAX => Bound::Excluded(with(c)),
        Bound::Included(c) | Bound::Excluded(c) => {
            let mut k = with(c);
            k.push(0xFF);
            Bound::Excluded(k)
        }
    };
    (lo, hi)
}

/// Whether an encoded value lies within the exact bounds.
pub fn within(sec: &[u8], lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
    let above = match lo {
        Bound::Unbounded => true,
        Bound::Included(c) => sec >= c.as_slice(),
        Bound::Excluded(c) => sec > c.as_slice(),
    };
    let below = match hi {
        Bound::Unbounded => true,
        Bound::Included(c) => sec <= c.as_slice(),
        Bound::Excluded(c) => sec < c.as_slice(),
    };
    above && below
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keycode;
    use proptest::prelude::*;

    #[test]
    fn entries_round_trip() {
        let pk = keycode::encode(&Datum::Num(7.0));
        for (v, tag) in [
            (Datum::str("short"), None),
            (Datum::str("x".repeat(500)), Some(3)),
            (
                Datum::array(vec![Datum::Num(1.0), Datum::Bool(true)]),
                Some(0),
            ),
        ] {
            let sec = secondary_code(&v).unwrap();
            let (k, val) = entry(42, &sec, &pk, tag);
            let e = parse_entry(&k, &val).unwrap();
            assert_eq!(e.sec, sec.as_slice());
            assert_eq!(e.pk, pk.as_slice());
            assert_eq!(e.tag, tag);
            assert_eq!(e.cut, sec.len() > SEC_BYTES_MAX);
            assert!(k.len() <= PREFIX_BYTES + SEC_BYTES_MAX + pk.len() + TAG_BYTES);
        }
    }

    #[test]
    fn values_that_cannot_be_keys() {
        assert!(secondary_code(&Datum::Null).is_err());
        assert!(secondary_code(&Datum::MinVal).is_err());
        assert!(secondary_code(&Datum::empty_object()).is_err());
        assert!(secondary_code(&Datum::array(vec![Datum::Null])).is_err());
        assert!(secondary_code(&Datum::array(vec![Datum::MaxVal])).is_err());
    }

    proptest! {
        #[test]
        fn garbage_entries_are_errors_not_panics(
            k in proptest::collection::vec(any::<u8>(), 0..40),
            v in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let _ = parse_entry(&k, &v);
        }

        /// Whatever the cut, every entry whose value is in range is inside the scan
        /// bounds, and `within` on the whole value decides membership exactly.
        #[test]
        fn scan_bounds_cover_every_match(
            vals in proptest::collection::vec(("[ab]{0,3}", 0usize..3), 1..20),
            lo in "[ab]{0,3}", lo_len in 0usize..3, lo_open in any::<bool>(),
            hi in "[ab]{0,3}", hi_len in 0usize..3, hi_open in any::<bool>(),
        ) {
            let long = |s: &str, n: usize| Datum::str(format!("{}{s}", "p".repeat(n * 150)));
            let code = |d: &Datum| keycode::encode(d);
            let lo_c = code(&long(&lo, lo_len));
            let hi_c = code(&long(&hi, hi_len));
            let lo_b = if lo_open { Bound::Excluded(lo_c) } else { Bound::Included(lo_c) };
            let hi_b = if hi_open { Bound::Excluded(hi_c) } else { Bound::Included(hi_c) };
            let (klo, khi) = scan_bounds(5, &lo_b, &hi_b);
            for (i, (s, n)) in vals.iter().enumerate() {
                let sec = code(&long(s, *n));
                let pk = code(&Datum::Num(i as f64));
                let (key, _) = entry(5, &sec, &pk, None);
                let in_scan = (match &klo {
                    Bound::Included(b) => key >= *b,
                    Bound::Excluded(b) => key > *b,
                    Bound::Unbounded => true,
                }) && (match &khi {
                    Bound::Included(b) => key <= *b,
                    Bound::Excluded(b) => key < *b,
                    Bound::Unbounded => true,
                });
                if within(&sec, &lo_b, &hi_b) {
                    prop_assert!(in_scan, "value {:?} in range but outside scan", s);
                }
            }
        }
    }
}
