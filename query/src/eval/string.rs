//! String terms: match (RE2 syntax via the `regex` crate), split, upcase, downcase, format.

use super::{arg_datum, int, string, Ctx, Val};
use crate::datum::{Datum, Object};
use crate::error::{logic, Result};
use crate::term_type as tt;
use std::rc::Rc;

/// Unicode White_Space, the set RethinkDB's `split` uses.
fn is_space(c: char) -> bool {
    matches!(c as u32, 9..=13 | 32 | 133 | 160 | 5760 | 8192..=8202 | 8232 | 8233 | 8239 | 8287 | 12288)
}

/// Combining marks (general category M), which `split("")` keeps with their base.
fn is_combining(c: char) -> bool {
    matches!(c as u32,
        0x300..=0x36F | 0x483..=0x489 | 0x591..=0x5BD | 0x5BF | 0x5C1..=0x5C2 | 0x5C4..=0x5C5
        | 0x5C7 | 0x610..=0x61A | 0x64B..=0x65F | 0x670 | 0x6D6..=0x6DC | 0x6DF..=0x6E4
        | 0x6E7..=0x6E8 | 0x6EA..=0x6ED | 0x900..=0x903 | 0x93A..=0x94F | 0x1AB0..=0x1AFF
        | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0x302A..=0x302F | 0x3099..=0x309A
        | 0xFE00..=0xFE0F | 0xFE20..=0xFE2F | 0xE0100..=0xE01EF)
}

pub fn apply(ctx: &Rc<Ctx>, ty: u32, args: &[Val]) -> Result<Option<Val>> {
    let d = |i| arg_datum(ctx, args, i);
    let v = match ty {
        tt::UPCASE => Datum::str(string(&d(0)?)?.to_ascii_uppercase()),
        tt::DOWNCASE => Datum::str(string(&d(0)?)?.to_ascii_lowercase()),
        tt::MATCH => {
            let s = d(0)?;
            let re = d(1)?;
            regex_match(string(&s)?, string(&re)?)?
        }
        tt::SPLIT => {
            let s = d(0)?;
            let delim = if args.len() > 1 {
                match d(1)? {
                    Datum::Null => None,
                    other => Some(string(&other)?.to_string()),
                }
            } else {
                None
            };
            let maxnum = if args.len() > 2 {
                let n = int(&d(2)?)?;
                let max = ctx.array_limit as i64 - 1;
                if n < -1 || n > max {
                    return Err(logic(format!(
                        "Error: `split` size argument must be in range [-1, {max}]."
                    )));
                }
                if n < 0 {
                    usize::MAX
                } else {
                    n as usize
                }
            } else {
                usize::MAX
            };
            let parts = split(string(&s)?, delim.as_deref(), maxnum);
            ctx.check_array(parts.len())?;
            Datum::array(parts.into_iter().map(Datum::str).collect())
        }
        tt::FORMAT => {
            let t = d(0)?;
            format(string(&t)?, &d(1)?)?
        }
        _ => return Ok(None),
    };
    Ok(Some(Val::Datum(v)))
}

fn regex_match(s: &str, pattern: &str) -> Result<Datum> {
    let re = regex::Regex::new(pattern).map_err(|e| {
        // RE2 (RethinkDB's engine) rejects a backreference as an invalid escape and
        // names just that escape.
        let shown = crate::json::cut_echo(pattern);
        if let Some(esc) = backreference(pattern) {
            return logic(format!(
                "Error in regexp `{shown}` (portion `{esc}`): invalid escape sequence: {esc}"
            ));
        }
        logic(format!(
            "Error in regexp `{shown}` (portion `{shown}`): {}",
            crate::json::cut_echo(&regex_err(&e))
        ))
    })?;
    let Some(caps) = re.captures(s) else {
        return Ok(Datum::Null);
    };
    let span = |m: regex::Match| {
        let mut o = Object::new();
        o.insert("str".into(), Datum::str(m.as_str()));
        o.insert("start".into(), Datum::Num(m.start() as f64));
        o.insert("end".into(), Datum::Num(m.end() as f64));
        o
    };
    let Some(whole) = caps.get(0) else {
        return Ok(Datum::Null);
    };
    let mut out = span(whole);
    let groups = (1..caps.len())
        .map(|i| {
            caps.get(i)
                .map(|m| Datum::object(span(m)))
                .unwrap_or(Datum::Null)
        })
        .collect();
    out.insert("groups".into(), Datum::array(groups));
    Ok(Datum::object(out))
}

/// The first backreference escape (`\1`..`\9`) in a pattern, if any.
fn backreference(pattern: &str) -> Option<String> {
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(d @ '1'..='9') => return Some(format!("\\{d}")),
                Some(_) => {}
                None => return None,
            }
        }
    }
    None
}

fn regex_err(e: &regex::Error) -> String {
    let s = e.to_string();
    s.lines()
        .last()
        .unwrap_or("")
        .trim_start_matches("error: ")
        .to_string()
}

fn split(s: &str, delim: Option<&str>, maxnum: usize) -> Vec<String> {
    let mut res: Vec<String> = Vec::new();
    let mut cur = 0usize;
    loop {
        let rest = &s[cur..];
        if res.len() == maxnum {
            match delim {
                Some(d) => {
                    if !d.is_empty() || !rest.is_empty() {
                        res.push(rest.to_string());
                    }
                }
                None => {
                    let t = rest.trim_start_matches(is_space);
                    if !t.is_empty() {
                        res.push(t.to_string());
                    }
                }
            }
            return res;
        }
        match delim {
            Some("") => {
                let mut chars = rest.char_indices();
                let Some((_, first)) = chars.next() else {
                    return res;
                };
                let mut end = first.len_utf8();
                for (i, c) in chars {
                    if !is_combining(c) {
                        break;
                    }
                    end = i + c.len_utf8();
                }
                res.push(rest[..end].to_string());
                cur += end;
                if cur == s.len() {
                    return res;
                }
            }
            Some(d) => match rest.find(d) {
                Some(i) => {
                    res.push(rest[..i].to_string());
                    cur += i + d.len();
                }
                None => {
                    res.push(rest.to_string());
                    return res;
                }
            },
            None => match rest.find(is_space) {
                None => {
                    let t = rest.trim_start_matches(is_space);
                    if !t.is_empty() {
                        res.push(t.to_string());
                    }
                    return res;
                }
                Some(i) => {
                    if i > 0 {
                        res.push(rest[..i].to_string());
                    }
                    let c = rest[i..].chars().next().map(char::len_utf8).unwrap_or(1);
                    cur += i + c;
                }
            },
        }
    }
}

fn format(template: &str, params: &Datum) -> Result<Datum> {
    let mut out = String::new();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        match c {
            '}' => return Err(logic("No parameter tags to close")),
            '{' => {
                let mut name = String::new();
                let mut closed = false;
                for n in chars.by_ref() {
                    match n {
                        '}' => {
                            closed = true;
                            break;
                        }
                        '{' => return Err(logic("Nested template parameters are not allowed")),
                        ',' | '\\' => {
                            return Err(logic(if n == ',' {
                                "Formatting separator `,` is not allowed in parameter name"
                            } else {
                                "Reserved escape character `\\` is not allowed in parameter name"
                            }))
                        }
                        other => name.push(other),
                    }
                }
                if !closed {
                    return Err(logic("Parameter tag must be closed"));
                }
                let obj = super::object(params)?;
                let v = obj.get(&name).ok_or_else(|| {
                    crate::error::non_existence(format!(
                        "No attribute `{name}` in object:\n{}",
                        crate::json::pretty(params)
                    ))
                })?;
                match v {
                    Datum::Str(s) => out.push_str(s),
                    Datum::Binary(b) => out.push_str(&String::from_utf8_lossy(b)),
                    other => out.push_str(&crate::json::to_json(other)),
                }
            }
            other => out.push(other),
        }
    }
    Ok(Datum::str(out))
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn split_like_rethinkdb() {
        assert_eq!(split("a  b ", None, usize::MAX), vec!["a", "b"]);
        assert_eq!(
            split("a,b,,c", Some(","), usize::MAX),
            vec!["a", "b", "", "c"]
        );
        assert_eq!(split("a,b,c", Some(","), 1), vec!["a", "b,c"]);
        assert_eq!(split("abc", Some(""), usize::MAX), vec!["a", "b", "c"]);
        assert_eq!(split("", Some(","), usize::MAX), vec![""]);
    }
}
