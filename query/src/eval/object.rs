//! Object terms (get_field, keys, values, object, has_fields, with_fields, pluck,
//! without, merge, bracket); the field terms also map over sequences, as in RethinkDB.

use super::seq::SeqIn;
use super::{arg_datum, string, Callable, Ctx, Val};
use crate::datum::{Datum, Object, REQL_TYPE};
use crate::error::{logic, non_existence, ErrorKind, Result};
use crate::json;
use crate::term_type as tt;
use std::rc::Rc;

pub fn is_object_op(ty: u32) -> bool {
    matches!(
        ty,
        tt::GET_FIELD
            | tt::KEYS
            | tt::VALUES
            | tt::OBJECT
            | tt::HAS_FIELDS
            | tt::WITH_FIELDS
            | tt::PLUCK
            | tt::WITHOUT
            | tt::MERGE
            | tt::BRACKET
    )
}

/// How an object term extends to sequences.
#[derive(Clone, Copy, PartialEq)]
enum Poly {
    Map,
    Filter,
    /// Map, dropping elements where the field does not exist.
    SkipMap,
}

fn name(ty: u32) -> &'static str {
    match ty {
        tt::GET_FIELD => "get_field",
        tt::HAS_FIELDS => "has_fields",
        tt::WITH_FIELDS => "with_fields",
        tt::PLUCK => "pluck",
        tt::WITHOUT => "without",
        tt::MERGE => "merge",
        tt::BRACKET => "bracket",
        tt::KEYS => "keys",
        tt::VALUES => "values",
        _ => "object",
    }
}

pub fn apply(ctx: &Rc<Ctx>, ty: u32, mut args: Vec<Val>) -> Result<Val> {
    match ty {
        tt::OBJECT => {
            if !args.len().is_multiple_of(2) {
                return Err(logic(format!(
                    "OBJECT expects an even number of arguments (but found {}).",
                    args.len()
                )));
            }
            let mut o = Object::new();
            for i in (0..args.len()).step_by(2) {
                let k = arg_datum(ctx, &args, i)?;
                let key = string(&k)?.to_string();
                let v = arg_datum(ctx, &args, i + 1)?;
                if let Some(old) = o.get(&key) {
                    return Err(logic(format!(
                        "Duplicate key {} in object.  (got {} and {} as values)",
                        json::to_json(&k),
                        json::trunc_pretty(old),
                        json::trunc_pretty(&v)
                    )));
                }
                o.insert(key, v);
            }
            Ok(Val::Datum(json::finish_object(o)?))
        }
        tt::KEYS | tt::VALUES => {
            let d = arg_datum(ctx, &args, 0)?;
            match &d {
                Datum::Object(o) if !d.is_ptype() => {
                    Ok(Val::Datum(Datum::array(if ty == tt::KEYS {
                        o.keys().map(|k| Datum::str(k.as_str())).collect()
                    } else {
                        o.values().cloned().collect()
                    })))
                }
                _ => Err(logic(format!(
                    "Cannot call `{}` on objects of type `{}`.",
                    name(ty),
                    d.type_name()
                ))),
            }
        }
        tt::BRACKET => {
            let key = arg_datum(ctx, &args, 1)?;
            match key {
                Datum::Num(_) => {
                    args.truncate(1);
                    super::seq::nth(ctx, args.remove(0), &key)
                }
                Datum::Str(_) => obj_or_seq(ctx, ty, args, Poly::SkipMap),
                other => Err(super::type_err_null_aware("", &other)).map_err(|mut e| {
                    e.msg = format!(
                        "Expected NUMBER or STRING as second argument to `bracket` but found {}.",
                        other.type_name()
                    );
                    e
                }),
            }
        }
        tt::GET_FIELD => obj_or_seq(ctx, ty, args, Poly::SkipMap),
        tt::HAS_FIELDS => obj_or_seq(ctx, ty, args, Poly::Filter),
        tt::PLUCK | tt::WITHOUT | tt::MERGE => obj_or_seq(ctx, ty, args, Poly::Map),
        tt::WITH_FIELDS => {
            // `with_fields` is `has_fields` followed by `pluck`, on sequences only.
            let rest: Vec<Datum> = (1..args.len())
                .map(|i| arg_datum(ctx, &args, i))
                .collect::<Result<_>>()?;
            let first = args.remove(0);
            let paths = Datum::array(rest);
            check_paths(&paths)?;
            if let Val::Datum(d) = &first {
                if !matches!(d, Datum::Array(_)) {
                    return Err(non_object(tt::HAS_FIELDS, d));
                }
            }
            let seq = SeqIn::from_val(ctx, first)?;
            let is_array = seq.is_array();
            let stream = seq.into_stream().filter_map(move |d| {
                if matches!(d, Datum::Object(_)) && has_fields(&d, &paths) {
                    Ok(Some(project(&d, &paths, false)))
                } else {
                    Ok(None)
                }
            });
            super::seq::finish(ctx, stream, is_array)
        }
        _ => unreachable!("object::apply called for term {ty}"),
    }
}

/// Applies an object term to an object, or element-wise to a sequence.
fn obj_or_seq(ctx: &Rc<Ctx>, ty: u32, mut args: Vec<Val>, poly: Poly) -> Result<Val> {
    let rest: Vec<Val> = args.drain(1..).collect();
    let first = args.remove(0);
    let extra: Vec<Extra> = rest
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Val::Func(f) => Ok(Extra::Func(Callable::Func(f))),
            other => {
                let d = other
                    .into_datum(ctx)
                    .map_err(|e| e.with_frame(crate::error::Frame::Pos(i + 1)))?;
                Ok(Extra::Datum(d))
            }
        })
        .collect::<Result<_>>()?;
    match first {
        Val::Datum(d @ Datum::Object(_)) => {
            if d.is_ptype() && !(ty == tt::MERGE && d.reql_type() == Some("LITERAL")) {
                return Err(logic(format!(
                    "Cannot call `{}` on objects of type `{}`.",
                    name(ty),
                    d.type_name()
                )));
            }
            Ok(Val::Datum(obj_eval(ctx, ty, &d, &extra)?))
        }
        v @ (Val::Datum(Datum::Array(_)) | Val::Stream(_)) => {
            let seq = SeqIn::from_val(ctx, v)?;
            let is_array = seq.is_array();
            let ctx2 = ctx.clone();
            let stream = seq.into_stream().filter_map(move |d| {
                let r = match &d {
                    Datum::Object(_) => obj_eval(&ctx2, ty, &d, &extra),
                    Datum::Array(_) => Err(logic(format!(
                        "Cannot perform {} on a sequence of sequences.",
                        name(ty)
                    ))),
                    other => Err(non_object(ty, other)),
                };
                match poly {
                    Poly::Map => r.map(Some),
                    Poly::Filter => r.map(|b| if b.truthy() { Some(d.clone()) } else { None }),
                    Poly::SkipMap => match r {
                        Ok(v) => Ok(Some(v)),
                        Err(e) if e.kind == ErrorKind::NonExistence => Ok(None),
                        Err(e) => Err(e),
                    },
                }
            });
            super::seq::finish(ctx, stream, is_array)
        }
        Val::Datum(d) => Err(non_object(ty, &d)),
        other => Err(logic(format!(
            "Cannot perform {} on a non-object non-sequence `{}`.",
            name(ty),
            other.type_name()
        ))),
    }
}

fn non_object(ty: u32, d: &Datum) -> crate::error::ReqlError {
    let mut e = logic(format!(
        "Cannot perform {} on a non-object non-sequence `{}`.",
        name(ty),
        json::trunc_pretty(d)
    ));
    if matches!(d, Datum::Null) {
        e.kind = ErrorKind::NonExistence;
    }
    e
}

enum Extra {
    Datum(Datum),
    Func(Callable),
}

fn obj_eval(ctx: &Rc<Ctx>, ty: u32, obj: &Datum, extra: &[Extra]) -> Result<Datum> {
    let datums = || -> Result<Datum> {
        let mut v = Vec::with_capacity(extra.len());
        for e in extra {
            match e {
                Extra::Datum(d) => v.push(d.clone()),
                Extra::Func(_) => return Err(logic("Expected type DATUM but found FUNCTION:")),
            }
        }
        Ok(Datum::array(v))
    };
    match ty {
        tt::GET_FIELD | tt::BRACKET => {
            let Extra::Datum(k) = &extra[0] else {
                return Err(logic("Expected type STRING but found FUNCTION."));
            };
            let key = string(k)?;
            get_field(obj, key)
        }
        tt::HAS_FIELDS => {
            let paths = datums()?;
            check_paths(&paths)?;
            Ok(Datum::Bool(has_fields(obj, &paths)))
        }
        tt::PLUCK => {
            let paths = datums()?;
            check_paths(&paths)?;
            Ok(project(obj, &paths, false))
        }
        tt::WITHOUT => {
            let paths = datums()?;
            check_paths(&paths)?;
            Ok(unproject(obj, &paths, false))
        }
        tt::MERGE => {
            let mut d = obj.clone();
            for e in extra {
                let rhs = match e {
                    Extra::Datum(x) => x.clone(),
                    Extra::Func(Callable::Func(f)) => {
                        super::call_func_with(ctx, f, std::slice::from_ref(&d), true)?
                            .into_datum(ctx)?
                    }
                    Extra::Func(f) => f.call_datum(ctx, std::slice::from_ref(&d))?,
                };
                if rhs.reql_type() == Some("LITERAL") {
                    return Err(logic(
                        "Stray literal keyword found: literal is only legal inside of the object passed to merge or update and cannot nest inside other literals.",
                    ));
                }
                if let Datum::Object(_) = &rhs {
                    if rhs.is_ptype() {
                        return Err(logic(format!(
                            "Cannot merge objects of type `{}`.",
                            rhs.type_name()
                        )));
                    }
                }
                d = merge(&d, &rhs);
            }
            Ok(d)
        }
        _ => unreachable!(),
    }
}

pub fn get_field(obj: &Datum, key: &str) -> Result<Datum> {
    match obj {
        Datum::Object(o) => o.get(key).cloned().ok_or_else(|| {
            non_existence(format!(
                "No attribute `{key}` in object:\n{}",
                json::pretty(obj)
            ))
        }),
        other => Err(super::type_err_null_aware("OBJECT", other)),
    }
}

fn check_paths(paths: &Datum) -> Result<()> {
    match paths {
        Datum::Str(_) => Ok(()),
        Datum::Array(a) => a.iter().try_for_each(check_paths),
        Datum::Object(o) => o.values().try_for_each(|v| match v {
            Datum::Bool(true) => Ok(()),
            other => check_paths(other),
        }),
        other => Err(logic(format!(
            "Invalid path argument `{}`.",
            json::pretty(other)
        ))),
    }
}

/// Keeps only the paths named by `spec` (strings, arrays of specs, nested objects).
pub fn project(d: &Datum, spec: &Datum, recurse: bool) -> Datum {
    if let (Datum::Array(a), true) = (d, recurse) {
        return Datum::array(a.iter().map(|x| project(x, spec, false)).collect());
    }
    let mut out = Object::new();
    project_into(&mut out, d, spec);
    Datum::object(out)
}

fn project_into(out: &mut Object, d: &Datum, spec: &Datum) {
    deep!(project_into(out, d, spec));
    let Datum::Object(o) = d else { return };
    match spec {
        Datum::Str(k) => {
            if let Some(v) = o.get(&**k) {
                out.insert(k.to_string(), v.clone());
            }
        }
        Datum::Array(a) => {
            for s in a.iter() {
                project_into(out, d, s);
            }
        }
        Datum::Object(m) => {
            for (k, sub) in m.iter() {
                let Some(v) = o.get(k) else { continue };
                match sub {
                    Datum::Bool(true) => {
                        out.insert(k.clone(), v.clone());
                    }
                    _ => {
                        if matches!(v, Datum::Object(_) | Datum::Array(_)) {
                            out.insert(k.clone(), project(v, sub, true));
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// Removes the paths named by `spec`.
pub fn unproject(d: &Datum, spec: &Datum, recurse: bool) -> Datum {
    if let (Datum::Array(a), true) = (d, recurse) {
        return Datum::array(a.iter().map(|x| unproject(x, spec, false)).collect());
    }
    let Datum::Object(o) = d else {
        return d.clone();
    };
    let mut out = (**o).clone();
    unproject_from(&mut out, spec);
    Datum::object(out)
}

fn unproject_from(out: &mut Object, spec: &Datum) {
    deep!(unproject_from(out, spec));
    match spec {
        Datum::Str(k) => {
            out.remove(&**k);
        }
        Datum::Array(a) => a.iter().for_each(|s| unproject_from(out, s)),
        Datum::Object(m) => {
            for (k, sub) in m.iter() {
                if let Datum::Bool(true) = sub {
                    out.remove(k);
                    continue;
                }
                if let Some(v) = out.get(k).cloned() {
                    if matches!(v, Datum::Object(_) | Datum::Array(_)) {
                        out.insert(k.clone(), unproject(&v, sub, true));
                    }
                }
            }
        }
        _ => {}
    }
}

/// Whether every path in `spec` exists (and is not null).
pub fn has_fields(d: &Datum, spec: &Datum) -> bool {
    deep!(has_fields(d, spec));
    let Datum::Object(o) = d else { return false };
    match spec {
        Datum::Str(k) => matches!(o.get(&**k), Some(v) if !matches!(v, Datum::Null)),
        Datum::Array(a) => a.iter().all(|s| has_fields(d, s)),
        Datum::Object(m) => m.iter().all(|(k, sub)| match o.get(k) {
            None => false,
            Some(v) => match sub {
                Datum::Bool(true) => !matches!(v, Datum::Null),
                _ => has_fields(v, sub),
            },
        }),
        _ => false,
    }
}

/// RethinkDB's merge: objects merge recursively, `r.literal` replaces or deletes.
pub fn merge(lhs: &Datum, rhs: &Datum) -> Datum {
    deep!(merge(lhs, rhs));
    let (Datum::Object(l), Datum::Object(r)) = (lhs, rhs) else {
        return drop_literals(rhs).unwrap_or(Datum::Null);
    };
    if rhs.reql_type() == Some("LITERAL") {
        return r
            .get("value")
            .map(|v| drop_literals(v).unwrap_or(Datum::Null))
            .unwrap_or(Datum::Null);
    }
    let mut out = (**l).clone();
    for (k, v) in r.iter() {
        let is_literal = v.reql_type() == Some("LITERAL");
        match (out.get(k), v) {
            (Some(sub), Datum::Object(_)) if !is_literal => {
                let m = merge(sub, v);
                out.insert(k.clone(), m);
            }
            _ => {
                let val = if is_literal {
                    v.get_field("value").cloned()
                } else {
                    Some(v.clone())
                };
                match val.and_then(|x| drop_literals(&x)) {
                    Some(x) => {
                        out.insert(k.clone(), x);
                    }
                    None => {
                        out.remove(k);
                    }
                }
            }
        }
    }
    Datum::object(out)
}

/// Replaces literal pseudo-objects by their values; `None` for an empty literal.
fn drop_literals(d: &Datum) -> Option<Datum> {
    deep!(drop_literals(d));
    match d {
        Datum::Object(o) => {
            if d.reql_type() == Some("LITERAL") {
                return o.get("value").and_then(drop_literals);
            }
            let mut out = Object::new();
            for (k, v) in o.iter() {
                if let Some(x) = drop_literals(v) {
                    out.insert(k.clone(), x);
                }
            }
            Some(Datum::object(out))
        }
        Datum::Array(a) => Some(Datum::array(a.iter().filter_map(drop_literals).collect())),
        other => Some(other.clone()),
    }
}

/// The LITERAL pseudo-object that `r.literal(x)` evaluates to inside `merge`.
pub fn make_literal(value: Option<Datum>) -> Datum {
    let mut o = Object::new();
    o.insert(REQL_TYPE.into(), Datum::str("LITERAL"));
    if let Some(v) = value {
        o.insert("value".into(), v);
    }
    Datum::object(o)
}
