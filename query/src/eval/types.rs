//! Type inspection and conversion terms (coerce_to, type_of, info, json), plus the
//! small constructors (binary, uuid, random, minval/maxval, db, error, literal).

use super::{arg_datum, num, string, Ctx, Optargs, Val};
use crate::datum::{Datum, Object};
use crate::error::{logic, ErrorKind, ReqlError, Result};
use crate::json;
use crate::term_type as tt;
use rand::Rng;
use std::rc::Rc;

/// RethinkDB's namespace for `r.uuid(string)` (version-5 UUIDs).
const UUID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_bytes([
    0x91, 0x46, 0x1c, 0x99, 0xf8, 0x9d, 0x49, 0xd2, 0xaf, 0x96, 0xd8, 0xe2, 0xe1, 0x4e, 0x9b, 0x58,
]);

pub fn apply(ctx: &Rc<Ctx>, ty: u32, args: &[Val], opt: &Optargs) -> Result<Option<Val>> {
    let d = |i| arg_datum(ctx, args, i);
    let v = match ty {
        tt::TYPE_OF => Datum::str(type_of(&args[0])),
        tt::INFO => info(&args[0])?,
        tt::COERCE_TO => return coerce_to(ctx, args).map(Some),
        tt::JSON => {
            let s = d(0)?;
            let text = string(&s)?;
            let v: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| logic(format!("Failed to parse \"{text}\" as JSON: {}", json_err(&e))))?;
            json::from_json(&v)?
        }
        tt::TO_JSON_STRING => Datum::str(json::to_json_checked(&d(0)?)?),
        tt::MAKE_ARRAY => {
            ctx.check_array(args.len())?;
            let mut v = Vec::with_capacity(args.len());
            for i in 0..args.len() {
                v.push(d(i)?);
            }
            Datum::array(v)
        }
        tt::BINARY => match d(0)? {
            Datum::Binary(ref b) => Datum::Binary(b.clone()),
            Datum::Str(ref s) => Datum::Binary(s.as_bytes().into()),
            other => return Err(super::type_err("STRING", &other)),
        },
        tt::UUID => {
            if args.is_empty() {
                Datum::str(uuid::Uuid::new_v4().to_string())
            } else {
                let s = d(0)?;
                Datum::str(uuid::Uuid::new_v5(&UUID_NAMESPACE, string(&s)?.as_bytes()).to_string())
            }
        }
        tt::RANDOM => random(ctx, args, opt)?,
        tt::MINVAL => Datum::MinVal,
        tt::MAXVAL => Datum::MaxVal,
        tt::DB => {
            let s = d(0)?;
            let name = string(&s)?;
            check_name(name, "Database")?;
            return Ok(Some(Val::Db(name.into())));
        }
        tt::ERROR => {
            if args.is_empty() {
                return Err(ReqlError::new(
                    ErrorKind::EmptyUser,
                    "Empty ERROR term outside a default block.",
                ));
            }
            let s = d(0)?;
            return Err(ReqlError::new(ErrorKind::User, string(&s)?));
        }
        tt::ARGS => d(0)?,
        tt::LITERAL => {
            return Err(logic(
                "Stray literal keyword found: literal is only legal inside of the object passed to merge or update and cannot nest inside other literals.",
            ))
        }
        tt::JAVASCRIPT => {
            let source = d(0)?;
            let timeout = super::js::timeout_arg(opt.datum("timeout")?)?;
            return super::js::eval(super::string(&source)?, timeout).map(Some);
        }
        tt::HTTP => return super::http::apply(ctx, args, opt).map(Some),
        _ => return Ok(None),
    };
    Ok(Some(Val::Datum(v)))
}

/// RethinkDB reports JSON errors in rapidjson's words; map serde_json's onto them.
fn json_err(e: &serde_json::Error) -> &'static str {
    let s = e.to_string();
    let has = |p: &str| s.contains(p);
    if has("EOF while parsing a list") || has("expected `,` or `]`") {
        "Missing a comma or ']' after an array element."
    } else if has("EOF while parsing an object") || has("expected `,` or `}`") {
        "Missing a comma or '}' after an object member."
    } else if has("expected `:`") {
        "Missing a colon after a name of object member."
    } else if has("key must be a string") {
        "Missing a name for object member."
    } else if has("EOF while parsing a string") {
        "Missing a closing quotation mark in string."
    } else if has("invalid escape") {
        "Invalid escape character in string."
    } else if has("invalid unicode code point") || has("expected hex") {
        "Incorrect hex digit after \\u escape in string."
    } else if has("trailing characters") {
        "The document root must not be followed by other values."
    } else if e.line() == 1 && e.column() == 0 {
        "The document is empty."
    } else {
        "Invalid value."
    }
}

/// Database and table names: RethinkDB's `[A-Za-z0-9_-]+` rule.
pub fn check_name(name: &str, what: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(logic(format!(
            "{what} name `{name}` invalid (Use A-Z, a-z, 0-9, _ and - only)."
        )));
    }
    Ok(())
}

pub fn type_of(v: &Val) -> String {
    match v {
        Val::Datum(d) => d.type_name(),
        Val::Stream(_) => "STREAM".into(),
        Val::Func(_) => "FUNCTION".into(),
        Val::Grouped(g) if g.stream => "GROUPED_STREAM".into(),
        Val::Grouped(_) => "GROUPED_DATA".into(),
        Val::Db(_) => "DB".into(),
        other => super::table::type_name(other).unwrap_or_else(|| "STREAM".into()),
    }
}

fn info(v: &Val) -> Result<Datum> {
    let mut o = Object::new();
    o.insert("type".into(), Datum::str(type_of(v)));
    match v {
        Val::Db(name) => {
            o.insert("name".into(), Datum::str(&**name));
        }
        Val::Datum(d) => {
            if let Datum::Binary(b) = d {
                o.insert("count".into(), Datum::Num(b.len() as f64));
            }
            if !matches!(d, Datum::Null | Datum::MinVal | Datum::MaxVal) {
                o.insert(
                    "value".into(),
                    Datum::str(json::pretty_capped(d, super::STRING_BYTES_MAX)?),
                );
            }
        }
        Val::Func(f) => {
            o.insert("source_code".into(), Datum::str(format!("{:?}", f.body)));
        }
        _ => {}
    }
    Ok(Datum::object(o))
}

/// The coerce_to type names, as RethinkDB spells them in messages.
fn coerce_name(v: &Val) -> &'static str {
    match v {
        Val::Datum(d) => match d {
            Datum::Null => "NULL",
            Datum::Bool(_) => "BOOL",
            Datum::Num(_) => "NUMBER",
            Datum::Str(_) => "STRING",
            Datum::Array(_) => "ARRAY",
            Datum::Object(_) => "OBJECT",
            Datum::Binary(_) => "BINARY",
            Datum::MinVal => "MINVAL",
            Datum::MaxVal => "MAXVAL",
        },
        Val::Stream(_) => "STREAM",
        Val::Func(_) => "FUNCTION",
        Val::Grouped(_) => "GROUPED_DATA",
        Val::Db(_) => "DB",
        Val::Table(_) => "TABLE",
        Val::Single(..) => "SELECTION<OBJECT>",
    }
}

const COERCE_TYPES: &[&str] = &[
    "DB",
    "TABLE",
    "TABLE_SLICE",
    "SELECTION<STREAM>",
    "SELECTION<ARRAY>",
    "STREAM",
    "SELECTION<OBJECT>",
    "DATUM",
    "FUNCTION",
    "GROUPED_DATA",
    "NULL",
    "BINARY",
    "BOOL",
    "NUMBER",
    "STRING",
    "ARRAY",
    "OBJECT",
    "MINVAL",
    "MAXVAL",
];

fn coerce_to(ctx: &Rc<Ctx>, args: &[Val]) -> Result<Val> {
    let target_d = arg_datum(ctx, args, 1)?;
    let target = string(&target_d)?.to_uppercase();
    if !COERCE_TYPES.contains(&target.as_str()) {
        return Err(logic(format!("Unknown Type: {target}")));
    }
    let start = coerce_name(&args[0]);
    let is_datum = matches!(args[0], Val::Datum(_) | Val::Grouped(_));
    // Identity conversions.
    if start == target || (target == "DATUM" && is_datum) {
        return Ok(clone_val(&args[0]));
    }
    if target == "BOOL" {
        return Ok(Val::Datum(Datum::Bool(start != "NULL")));
    }
    if let Val::Datum(d) = &args[0] {
        match (d, target.as_str()) {
            (Datum::Binary(b), "STRING") => {
                return Ok(Val::Datum(Datum::str(
                    String::from_utf8_lossy(b).into_owned(),
                )))
            }
            (Datum::Str(s), "BINARY") => return Ok(Val::Datum(Datum::Binary(s.as_bytes().into()))),
            (_, "STRING") => return Ok(Val::Datum(Datum::str(json::to_json_checked(d)?))),
            (Datum::Object(o), "ARRAY") => {
                let v = o
                    .iter()
                    .map(|(k, v)| Datum::array(vec![Datum::str(k.as_str()), v.clone()]))
                    .collect();
                return Ok(Val::Datum(Datum::array(v)));
            }
            (Datum::Str(s), "NUMBER") => return Ok(Val::Datum(str_to_num(s)?)),
            (Datum::Array(a), "OBJECT") => {
                return Ok(Val::Datum(pairs_to_object(a.iter().cloned().map(Ok))?))
            }
            _ => {}
        }
    }
    let mut e = logic(format!("Cannot coerce {start} to {target}."));
    if let Val::Datum(Datum::Null) = &args[0] {
        e.kind = ErrorKind::NonExistence;
    }
    Err(e)
}

fn clone_val(v: &Val) -> Val {
    match v {
        Val::Datum(d) => Val::Datum(d.clone()),
        Val::Func(f) => Val::Func(f.clone()),
        Val::Grouped(g) => Val::Grouped(g.clone()),
        Val::Db(d) => Val::Db(d.clone()),
        Val::Table(t) => Val::Table(t.clone()),
        Val::Single(t, d, k) => Val::Single(t.clone(), d.clone(), k.clone()),
        Val::Stream(_) => unreachable!("streams are read before coerce_to (eval::apply)"),
    }
}

fn pairs_to_object(items: impl Iterator<Item = Result<Datum>>) -> Result<Datum> {
    let mut o = Object::new();
    for p in items {
        let p = p?;
        let pair = super::array(&p)?;
        if pair.len() != 2 {
            return Err(logic(format!(
                "Expected array of size 2, but got size {}.",
                pair.len()
            )));
        }
        let key = string(&pair[0])?.to_string();
        if let Some(old) = o.get(&key) {
            return Err(logic(format!(
                "Duplicate key {} in coerced object.  (got {} and {} as values)",
                json::to_json(&Datum::str(key.as_str())),
                json::trunc_pretty(old),
                json::trunc_pretty(&pair[1])
            )));
        }
        o.insert(key, pair[1].clone());
    }
    Ok(Datum::object(o))
}

/// `sscanf("%lf")` semantics: optional leading whitespace, decimal or hex, nothing after.
fn str_to_num(s: &str) -> Result<Datum> {
    let fail = || logic(format!("Could not coerce `{s}` to NUMBER."));
    let t = s.trim_start();
    let (neg, body) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let value = if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(fail());
        }
        hex.chars().fold(0f64, |acc, c| {
            acc * 16.0 + c.to_digit(16).unwrap_or(0) as f64
        })
    } else {
        let lower = body.to_ascii_lowercase();
        if lower == "inf" || lower == "infinity" || lower == "nan" {
            let shown = if lower == "nan" {
                "nan"
            } else if neg {
                "-inf"
            } else {
                "inf"
            };
            return Err(logic(format!("Non-finite number: {shown}")));
        }
        if body.starts_with(['+', '-']) || body.is_empty() {
            return Err(fail());
        }
        body.parse::<f64>().map_err(|_| fail())?
    };
    let v = if neg { -value } else { value };
    super::make_num(v)
}

fn random(ctx: &Ctx, args: &[Val], opt: &Optargs) -> Result<Datum> {
    let float = match opt.datum("float")? {
        None => false,
        Some(d) => super::boolean(&d)?,
    };
    let mut rng = rand::thread_rng();
    match args.len() {
        0 => {
            if opt.has("float") && !float {
                return Err(logic(
                    "Generating a random integer requires one or two bounds.",
                ));
            }
            Ok(Datum::Num(rng.gen::<f64>()))
        }
        n => {
            let (lo_d, hi_d) = if n == 1 {
                (Datum::Num(0.0), arg_datum(ctx, args, 0)?)
            } else {
                (arg_datum(ctx, args, 0)?, arg_datum(ctx, args, 1)?)
            };
            if float {
                let (lo, hi) = (num(&lo_d)?, num(&hi_d)?);
                // lo + r * (hi - lo) for r in [0, 1), reaching lo but never hi (whichever
                // is larger), computed without `hi - lo`, which can overflow.
                if lo == hi {
                    return Ok(Datum::Num(lo));
                }
                let r = rng.gen::<f64>();
                let x = lo * (1.0 - r) + hi * r;
                let past_hi = if lo < hi { x >= hi } else { x <= hi };
                return Ok(Datum::Num(if past_hi || !x.is_finite() { lo } else { x }));
            }
            let lo = bound_int(&lo_d, "Lower")?;
            let hi = bound_int(&hi_d, "Upper")?;
            if lo >= hi {
                return Err(logic(format!(
                    "Lower bound ({lo}) is not less than upper bound ({hi})."
                )));
            }
            Ok(Datum::Num(rng.gen_range(lo..hi) as f64))
        }
    }
}

fn bound_int(d: &Datum, which: &str) -> Result<i64> {
    let n = num(d)?;
    if n.fract() != 0.0 || n.abs() > 9007199254740992.0 {
        return Err(logic(format!(
            "{which} bound ({}) could not be safely converted to an integer.",
            super::fmt_g20(n)
        )));
    }
    Ok(n as i64)
}
