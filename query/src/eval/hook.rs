//! Write hooks: a deterministic three-argument function `(context, old, new) -> row` a
//! table applies to every write (RethinkDB 2.4's `set_write_hook`), stored in the
//! table's catalog entry as wire JSON.

use super::table::TableRef;
use super::{call_func, Ctx, Env, Func, Val};
use crate::datum::{Datum, Object};
use crate::error::{logic, Result};
use std::rc::Rc;

/// `set_write_hook(f)` or `set_write_hook(null)`.
pub fn set(t: &TableRef, f: Val) -> Result<Datum> {
    let json = match &f {
        Val::Datum(Datum::Null) => None,
        Val::Func(func) => {
            if func.arity() != 3 {
                return Err(logic("Write hook functions must expect 3 arguments."));
            }
            if !super::deterministic_everywhere(&func.body) {
                return Err(logic(
                    "Could not prove function deterministic.  Write hook functions must be deterministic.",
                ));
            }
            Some(func.to_wire_json().to_string())
        }
        other => {
            return Err(logic(format!(
                "Expected type FUNCTION but found {}.",
                other.type_name()
            )))
        }
    };
    let had = t.info.write_hook.is_some();
    let counter = match (had, json.is_some()) {
        (false, true) => "created",
        (true, true) => "replaced",
        (true, false) => "deleted",
        (false, false) => "unchanged",
    };
    t.store.table_alter(&t.info.db, &t.info.name, |i| {
        i.write_hook = json;
        Ok(())
    })?;
    let mut o = Object::new();
    o.insert(counter.into(), Datum::Num(1.0));
    Ok(Datum::object(o))
}

/// `get_write_hook()`: null, or the stored function and a description of it.
pub fn get(t: &TableRef) -> Datum {
    match &t.info.write_hook {
        None => Datum::Null,
        Some(json) => {
            let mut o = Object::new();
            o.insert("function".into(), Datum::Binary(json.as_bytes().into()));
            o.insert("query".into(), Datum::str(format!("setWriteHook({json})")));
            Datum::object(o)
        }
    }
}

/// The table's hook as a function, unless there is none or the write ignores it.
pub fn load(ctx: &Rc<Ctx>, t: &TableRef, ignore: bool) -> Result<Option<Rc<Func>>> {
    let Some(json) = (!ignore).then_some(t.info.write_hook.as_ref()).flatten() else {
        return Ok(None);
    };
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| logic(format!("Stored write hook is unreadable: {e}")))?;
    let term = crate::term::parse(&v)?;
    match super::eval(ctx, &Env::default(), &term)? {
        Val::Func(f) => Ok(Some(f)),
        _ => Err(logic("Stored write hook is not a function.")),
    }
}

/// Runs the hook on one row write.
pub fn apply(ctx: &Rc<Ctx>, f: &Func, pk: &Datum, old: &Datum, new: Datum) -> Result<Datum> {
    let mut c = Object::new();
    c.insert("primary_key".into(), pk.clone());
    c.insert(
        "timestamp".into(),
        super::time::make(ctx.now_epoch_secs, 0)?,
    );
    let r = call_func(ctx, f, &[Datum::object(c), old.clone(), new.clone()])
        .and_then(|v| v.into_datum(ctx))
        .map_err(|e| logic(format!("Error in write hook: {}", e.msg)))?;
    match (&new, &r) {
        (Datum::Null, Datum::Null) => Ok(r),
        (Datum::Null, _) => Err(logic(
            "A write hook function must not turn a deletion into a replace/insert.",
        )),
        (_, Datum::Null) => Err(logic(
            "A write hook function must not turn a replace/insert into a deletion.",
        )),
        _ => Ok(r),
    }
}
