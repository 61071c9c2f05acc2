//! Conversions between datums and JSON text, printing numbers and strings exactly as
//! RethinkDB does (rapidjson's shortest round-trip doubles, integers without a fraction).

use crate::datum::{Datum, Object, REQL_TYPE};
use crate::error::{logic, Result};
use base64::Engine;
use std::fmt::Write;

/// Largest magnitude at which every integer is exactly representable in an f64.
const MAX_EXACT_INT: f64 = 9007199254740992.0;

/// Writes a number the way RethinkDB's JSON writer does.
pub fn write_num(out: &mut String, d: f64) {
    if d.fract() == 0.0 && d.abs() <= MAX_EXACT_INT && !(d == 0.0 && d.is_sign_negative()) {
        let _ = write!(out, "{}", d as i64);
        return;
    }
    write_double(out, d);
}

/// rapidjson's `Writer::Double`: shortest digits, then its "Prettify" layout.
fn write_double(out: &mut String, d: f64) {
    if d == 0.0 {
        out.push_str(if d.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    let mut buf = ryu::Buffer::new();
    let s = buf.format_finite(d.abs());
    // Split ryu's output into significant digits and a decimal exponent.
    let (mant, exp) = match s.find('e') {
        Some(i) => (&s[..i], s[i + 1..].parse::<i32>().unwrap_or(0)),
        None => (s, 0),
    };
    let (int_part, frac_part) = match mant.find('.') {
        Some(i) => (&mant[..i], &mant[i + 1..]),
        None => (mant, ""),
    };
    let mut digits: String = format!("{int_part}{frac_part}");
    let mut k = exp - frac_part.len() as i32;
    // Normalize: strip leading zeros ("0.001" -> "1") and trailing zeros.
    let trimmed = digits.trim_start_matches('0').to_string();
    digits = trimmed;
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
        k += 1;
    }
    if d < 0.0 {
        out.push('-');
    }
    let length = digits.len() as i32;
    let kk = length + k;
    if 0 <= k && kk <= 21 {
        out.push_str(&digits);
        for _ in 0..k {
            out.push('0');
        }
        out.push_str(".0");
    } else if 0 < kk && kk <= 21 {
        out.push_str(&digits[..kk as usize]);
        out.push('.');
        out.push_str(&digits[kk as usize..]);
    } else if -6 < kk && kk <= 0 {
        out.push_str("0.");
        for _ in 0..(-kk) {
            out.push('0');
        }
        out.push_str(&digits);
    } else if length == 1 {
        out.push_str(&digits);
        let _ = write!(out, "e{}", kk - 1);
    } else {
        out.push_str(&digits[..1]);
        out.push('.');
        out.push_str(&digits[1..]);
        let _ = write!(out, "e{}", kk - 1);
    }
}

/// Writes a JSON string literal with rapidjson's escapes.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    // Runs of bytes that need no escape are copied whole (multi-byte UTF-8 sequences are
    // all >= 0x80, so a run never ends inside a character).
    let mut run = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{:04X}", b);
        } else {
            out.push_str(esc);
        }
        run = i + 1;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

pub fn encode_base64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Compact JSON, refusing `r.minval`/`r.maxval`, which have no JSON form.
pub fn to_json_checked(d: &Datum) -> Result<String> {
    check_serializable(d)?;
    Ok(to_json(d))
}

/// Fails if the datum holds `r.minval` or `r.maxval` anywhere.
pub fn check_serializable(d: &Datum) -> Result<()> {
    deep!(check_serializable(d));
    match d {
        Datum::MinVal => Err(logic("Cannot convert `r.minval` to JSON.")),
        Datum::MaxVal => Err(logic("Cannot convert `r.maxval` to JSON.")),
        Datum::Array(a) => a.iter().try_for_each(check_serializable),
        Datum::Object(o) => o.values().try_for_each(check_serializable),
        _ => Ok(()),
    }
}

/// Compact JSON, as sent on the wire and produced by `to_json_string`.
pub fn to_json(d: &Datum) -> String {
    let mut s = String::new();
    write_json(&mut s, d);
    s
}

pub fn write_json(out: &mut String, d: &Datum) {
    deep!(write_json(out, d));
    match d {
        Datum::Null | Datum::MinVal | Datum::MaxVal => out.push_str("null"),
        Datum::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Datum::Num(n) => write_num(out, *n),
        Datum::Str(s) => write_str(out, s),
        Datum::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, x);
            }
            out.push(']');
        }
        Datum::Object(o) => {
            out.push('{');
            for (i, (k, v)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, k);
                out.push(':');
                write_json(out, v);
            }
            out.push('}');
        }
        Datum::Binary(b) => {
            out.push_str("{\"$reql_type$\":\"BINARY\",\"data\":");
            write_str(out, &encode_base64(b));
            out.push('}');
        }
    }
}

/// Tab-indented JSON, as RethinkDB prints datums inside error messages.
pub fn pretty(d: &Datum) -> String {
    let mut s = String::new();
    write_pretty(&mut s, d, 0);
    s
}

/// Longest value an error message echoes whole (RethinkDB echoes primary keys and
/// regular expressions whole; a 1 MB pattern then comes back in every error).
pub const ECHO_BYTES_MAX: usize = 4096;

/// `s` for an error message: whole up to `ECHO_BYTES_MAX` bytes, else cut (on a
/// character boundary) and ended with "...", as RethinkDB's truncated prints are.
pub fn cut_echo(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= ECHO_BYTES_MAX {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut end = ECHO_BYTES_MAX - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}...", &s[..end]))
}

/// `pretty`, failing once the text passes `max_bytes` (indentation makes the text of a
/// deeply nested value quadratic in its depth).
pub fn pretty_capped(d: &Datum, max_bytes: usize) -> Result<String> {
    let mut s = String::new();
    if write_pretty_capped(&mut s, d, 0, max_bytes) {
        Ok(s)
    } else {
        Err(crate::error::resource(format!(
            "String over the size limit ({max_bytes} bytes) while printing a value."
        )))
    }
}

/// `write_pretty` that stops (returning false) once `out` is longer than `max`.
fn write_pretty_capped(out: &mut String, d: &Datum, depth: usize, max: usize) -> bool {
    deep!(write_pretty_capped(out, d, depth, max));
    if out.len() > max {
        return false;
    }
    match d {
        Datum::Array(a) if !a.is_empty() => {
            out.push_str("[\n");
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                }
                indent(out, depth + 1);
                if !write_pretty_capped(out, x, depth + 1, max) {
                    return false;
                }
            }
            out.push('\n');
            indent(out, depth);
            out.push(']');
        }
        Datum::Object(o) if !o.is_empty() => {
            out.push_str("{\n");
            for (i, (k, v)) in o.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                }
                indent(out, depth + 1);
                write_str(out, k);
                out.push_str(":\t");
                if !write_pretty_capped(out, v, depth + 1, max) {
                    return false;
                }
            }
            out.push('\n');
            indent(out, depth);
            out.push('}');
        }
        Datum::Binary(b) => {
            let mut o = Object::new();
            o.insert(REQL_TYPE.into(), Datum::str("BINARY"));
            o.insert("data".into(), Datum::str(encode_base64(b)));
            return write_pretty_capped(out, &Datum::object(o), depth, max);
        }
        _ => write_json(out, d),
    }
    out.len() <= max
}

/// `pretty`, cut to RethinkDB's limit for values quoted in messages.
pub fn trunc_pretty(d: &Datum) -> String {
    const TRUNC_LEN: usize = 300;
    let s = pretty(d);
    if s.len() > TRUNC_LEN {
        let mut cut = TRUNC_LEN - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &s[..cut])
    } else {
        s
    }
}

fn indent(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push('\t');
    }
}

fn write_pretty(out: &mut String, d: &Datum, depth: usize) {
    write_pretty_capped(out, d, depth, usize::MAX);
}

/// A scalar or pseudo-type datum as a serde_json value (its wire JSON).
pub fn to_json_value(d: &Datum) -> serde_json::Value {
    serde_json::from_str(&to_json(d)).unwrap_or(serde_json::Value::Null)
}

/// Converts parsed JSON to a datum without interpreting pseudo-types.
pub fn from_json_raw(v: &serde_json::Value) -> Result<Datum> {
    deep!(from_json_raw(v));
    Ok(match v {
        serde_json::Value::Null => Datum::Null,
        serde_json::Value::Bool(b) => Datum::Bool(*b),
        serde_json::Value::Number(n) => {
            let f = n
                .as_f64()
                .ok_or_else(|| logic("Non-finite number in JSON."))?;
            if !f.is_finite() {
                return Err(logic(format!("Non-finite number: {f}")));
            }
            Datum::Num(f)
        }
        serde_json::Value::String(s) => Datum::str(s.as_str()),
        serde_json::Value::Array(a) => {
            Datum::array(a.iter().map(from_json_raw).collect::<Result<Vec<_>>>()?)
        }
        serde_json::Value::Object(o) => {
            let mut m = Object::new();
            for (k, v) in o {
                m.insert(k.clone(), from_json_raw(v)?);
            }
            Datum::object(m)
        }
    })
}

/// Converts parsed JSON to a datum, turning pseudo-type objects into their values.
pub fn from_json(v: &serde_json::Value) -> Result<Datum> {
    let d = from_json_raw(v)?;
    sanitize(d)
}

/// Validates and converts pseudo-type objects anywhere inside a datum.
pub fn sanitize(d: Datum) -> Result<Datum> {
    deep!(sanitize(d));
    match d {
        Datum::Array(ref a) => {
            let mut out = Vec::with_capacity(a.len());
            for x in a.iter() {
                out.push(sanitize(x.clone())?);
            }
            Ok(Datum::array(out))
        }
        Datum::Object(ref o) => {
            let mut m = Object::new();
            for (k, v) in o.iter() {
                m.insert(k.clone(), sanitize(v.clone())?);
            }
            finish_object(m)
        }
        other => Ok(other),
    }
}

/// Turns a freshly built object into a datum, interpreting `$reql_type$` if present.
pub fn finish_object(m: Object) -> Result<Datum> {
    let Some(t) = m.get(REQL_TYPE) else {
        return Ok(Datum::object(m));
    };
    let Datum::Str(t) = t else {
        let d = Datum::object(m.clone());
        return Err(logic(format!(
            "Error: Field `{REQL_TYPE}` must be a string (got `{}` of type {}):\n{}",
            trunc_pretty(t),
            t.type_name(),
            trunc_pretty(&d)
        )));
    };
    match &**t {
        "BINARY" => {
            let Some(data) = m.get("data") else {
                return Err(logic("Invalid binary pseudotype: lacking `data` key."));
            };
            let Datum::Str(s) = data else {
                return Err(logic(format!(
                    "Invalid binary pseudotype: `data` must be a string (got {}).",
                    data.type_name()
                )));
            };
            if m.len() != 2 {
                let extra = m.keys().find(|k| *k != REQL_TYPE && *k != "data").cloned();
                return Err(logic(format!(
                    "Invalid binary pseudotype: illegal `{}` key.",
                    extra.unwrap_or_default()
                )));
            }
            Ok(Datum::Binary(decode_base64(s)?.into()))
        }
        "TIME" => sanitize_time(m),
        "GEOMETRY" => {
            crate::eval::geo::shape::sanitize(&m)?;
            Ok(Datum::object(m))
        }
        _ => Ok(Datum::object(m)),
    }
}

/// Checks a literal TIME object the way RethinkDB does: exactly `epoch_time` (a number,
/// rounded to milliseconds) and `timezone` (a valid offset, `Z` becoming `+00:00`).
fn sanitize_time(mut m: Object) -> Result<Datum> {
    let mut problem = None;
    let mut has_epoch = false;
    let mut has_tz = false;
    for (k, v) in m.iter() {
        match k.as_ref() {
            "epoch_time" => match v {
                Datum::Num(_) => has_epoch = true,
                _ => {
                    problem = Some(format!(
                        "field `epoch_time` must be a number (got `{}` of type {})",
                        trunc_pretty(v),
                        v.type_name()
                    ));
                    break;
                }
            },
            "timezone" => match v {
                Datum::Str(s) if crate::eval::time::parse_tz(s).is_ok() => has_tz = true,
                Datum::Str(_) => {
                    problem = Some(format!("invalid timezone string `{}`", trunc_pretty(v)));
                    break;
                }
                _ => {
                    problem = Some(format!(
                        "field `timezone` must be a string (got `{}` of type {})",
                        trunc_pretty(v),
                        v.type_name()
                    ));
                    break;
                }
            },
            REQL_TYPE => {}
            other => {
                problem = Some(format!("unrecognized field `{other}`"));
                break;
            }
        }
    }
    if problem.is_none() && !has_epoch {
        problem = Some("no field `epoch_time`".to_string());
    } else if problem.is_none() && !has_tz {
        problem = Some("no field `timezone`".to_string());
    }
    if let Some(p) = problem {
        let d = Datum::object(m);
        return Err(logic(format!(
            "Invalid time object constructed ({p}):\n{}",
            trunc_pretty(&d)
        )));
    }
    if let Some(Datum::Num(e)) = m.get("epoch_time") {
        let rounded = (e * 1000.0).round() / 1000.0;
        if rounded != *e {
            m.insert("epoch_time".into(), Datum::Num(rounded));
        }
    }
    if let Some(Datum::Str(tz)) = m.get("timezone") {
        if &**tz == "Z" {
            m.insert("timezone".into(), Datum::str("+00:00"));
        }
    }
    Ok(Datum::object(m))
}

/// Strict base64 decoding with RethinkDB's messages for each kind of bad input.
pub fn decode_base64(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut nbits = 0;
    let mut count = 0usize;
    let mut seen_pad = false;
    for c in s.chars() {
        if c == '=' {
            seen_pad = true;
            continue;
        }
        if c.is_ascii_whitespace() {
            continue;
        }
        if seen_pad {
            return Err(logic(
                "Invalid base64 format, data found after padding character '='.",
            ));
        }
        let v = match c {
            'A'..='Z' => c as u32 - 'A' as u32,
            'a'..='z' => c as u32 - 'a' as u32 + 26,
            '0'..='9' => c as u32 - '0' as u32 + 52,
            '+' => 62,
            '/' => 63,
            _ => return Err(logic(format!("Invalid base64 character found: '{c}'."))),
        };
        acc = (acc << 6) | v;
        nbits += 6;
        count += 1;
        if nbits >= 8 {
            nbits -= 8;
            out.push((acc >> nbits) as u8);
            acc &= (1 << nbits) - 1;
        }
    }
    if count % 4 == 1 {
        return Err(logic(
            "Invalid base64 length: 1 character remaining, cannot decode a full byte.",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(d: f64) -> String {
        let mut s = String::new();
        write_num(&mut s, d);
        s
    }

    #[test]
    fn numbers_print_like_rapidjson() {
        assert_eq!(num(1.0), "1");
        assert_eq!(num(-73850380122423.0), "-73850380122423");
        assert_eq!(num(1.5), "1.5");
        assert_eq!(num(-0.5), "-0.5");
        assert_eq!(num(1e40), "1e40");
        assert_eq!(num(1.2345e40), "1.2345e40");
        assert_eq!(num(0.0001), "0.0001");
        assert_eq!(num(1e-7), "1e-7");
        assert_eq!(num(-0.0), "-0.0");
        assert_eq!(num(123456789012345680000.0), "123456789012345680000.0");
        assert_eq!(num(67498.89278), "67498.89278");
    }

    #[test]
    fn string_escapes() {
        let mut out = String::new();
        write_str(&mut out, "a\"b\\c\nd\u{1}é\u{7f}\t");
        assert_eq!(out, "\"a\\\"b\\\\c\\nd\\u0001é\u{7f}\\t\"");
    }

    #[test]
    fn base64_errors() {
        assert_eq!(decode_base64("AAE=").unwrap(), vec![0, 1]);
        assert!(decode_base64("ABCDE").is_err());
        assert!(decode_base64("A^CD").is_err());
        assert!(decode_base64("ABCDEFGH==AA").is_err());
    }
}

#[cfg(test)]
mod prop {
    use super::*;
    use proptest::prelude::*;

    use crate::testgen::arb_datum;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        /// What we print, we read back as the same datum (numbers bit-exact).
        #[test]
        fn json_round_trip(d in arb_datum()) {
            let text = to_json(&d);
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let back = from_json(&v).unwrap();
            prop_assert_eq!(to_json(&back), text);
            prop_assert!(back == d);
        }

        /// Strings with any characters, control characters and quotes among them, read
        /// back unchanged.
        #[test]
        fn strings_round_trip(s in "(\\PC|[\\x00-\\x1f\"\\\\\u{7f}\u{2028}])*") {
            let mut out = String::new();
            write_str(&mut out, &s);
            prop_assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
        }

        #[test]
        fn parsing_arbitrary_json_never_panics(s in ".{0,64}") {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&s) {
                let _ = from_json(&v);
            }
            let _ = decode_base64(&s);
        }
    }
}
