//! Control terms whose arguments are evaluated lazily: branch, or, and, default, funcall.

use super::{eval, Ctx, Env, Val};
use crate::datum::Datum;
use crate::error::{logic, ErrorKind, Frame, Result};
use crate::term::Op;
use crate::term_type as tt;
use std::rc::Rc;

pub fn eval_lazy(ctx: &Rc<Ctx>, env: &Env, op: &Op) -> Result<Val> {
    deep!(eval_lazy(ctx, env, op));
    let arg = |i: usize| eval(ctx, env, &op.args[i]).map_err(|e| e.with_frame(Frame::Pos(i)));
    let arg_datum = |i: usize| {
        eval(ctx, env, &op.args[i])
            .and_then(|v| v.into_datum(ctx))
            .map_err(|e| e.with_frame(Frame::Pos(i)))
    };
    match op.ty {
        tt::BRANCH if op.args.iter().any(|a| a.ty() == tt::ARGS) => {
            // `r.args` is expanded first; the other arguments stay lazy.
            let mut items: Vec<Result<Val>> = Vec::new();
            let mut lazy: Vec<Option<usize>> = Vec::new();
            for (i, a) in op.args.iter().enumerate() {
                if a.ty() == tt::ARGS {
                    match arg(i)? {
                        Val::Datum(Datum::Array(ref xs)) => {
                            for x in xs.iter() {
                                items.push(Ok(Val::Datum(x.clone())));
                                lazy.push(None);
                            }
                        }
                        other => {
                            return Err(logic(format!(
                                "Expected type ARRAY but found {}.",
                                other.type_name()
                            )))
                        }
                    }
                } else {
                    items.push(Ok(Val::Datum(Datum::Null)));
                    lazy.push(Some(i));
                }
            }
            if items.len().is_multiple_of(2) {
                return Err(logic(
                    "Cannot call `branch` term with an even number of arguments.",
                ));
            }
            let mut take = |k: usize| -> Result<Val> {
                match lazy[k] {
                    Some(i) => arg(i),
                    None => std::mem::replace(&mut items[k], Ok(Val::Datum(Datum::Null))),
                }
            };
            let n = lazy.len();
            let mut k = 0;
            while k + 1 < n {
                if take(k)?.into_datum(ctx)?.truthy() {
                    return take(k + 1);
                }
                k += 2;
            }
            take(n - 1)
        }
        tt::BRANCH => {
            if op.args.len().is_multiple_of(2) {
                return Err(logic(
                    "Cannot call `branch` term with an even number of arguments.",
                ));
            }
            let mut i = 0;
            while i + 1 < op.args.len() {
                if arg_datum(i)?.truthy() {
                    return arg(i + 1);
                }
                i += 2;
            }
            arg(op.args.len() - 1)
        }
        tt::OR | tt::AND if op.args.iter().any(|a| a.ty() == tt::ARGS) => {
            // `r.args` needs its array before the arguments are known: evaluate all.
            let is_or = op.ty == tt::OR;
            let vals = super::eval_args(ctx, env, op)?;
            let mut last = Datum::Bool(!is_or);
            for (i, v) in vals.into_iter().enumerate() {
                let d = v.into_datum(ctx).map_err(|e| e.with_frame(Frame::Pos(i)))?;
                if d.truthy() == is_or {
                    return Ok(Val::Datum(d));
                }
                last = d;
            }
            Ok(Val::Datum(last))
        }
        tt::OR | tt::AND => {
            let is_or = op.ty == tt::OR;
            let mut last = Datum::Bool(!is_or);
            for i in 0..op.args.len() {
                let d = arg_datum(i)?;
                if d.truthy() == is_or {
                    return Ok(Val::Datum(d));
                }
                last = d;
            }
            Ok(Val::Datum(last))
        }
        tt::DEFAULT => {
            let (fallback_arg, first_err) = match arg(0) {
                Ok(Val::Datum(Datum::Null)) => (Datum::Null, None),
                Ok(v) => return Ok(v),
                Err(e) if e.kind == ErrorKind::NonExistence => (Datum::str(e.msg.clone()), Some(e)),
                Err(e) => return Err(e),
            };
            let result = match arg(1) {
                Ok(Val::Func(f)) => super::call_func(ctx, &f, &[fallback_arg]),
                other => other,
            };
            match result {
                Err(e) if e.kind == ErrorKind::EmptyUser => match first_err {
                    Some(orig) => Err(orig),
                    None => Ok(Val::Datum(Datum::Null)),
                },
                other => other,
            }
        }
        tt::FUNCALL => {
            let f = arg(0)?;
            let mut datums = Vec::with_capacity(op.args.len() - 1);
            let mut grouped = None;
            for i in 1..op.args.len() {
                match arg(i)? {
                    Val::Grouped(g) if i == 1 => grouped = Some(g),
                    v => datums.push(v.into_datum(ctx).map_err(|e| e.with_frame(Frame::Pos(i)))?),
                }
            }
            let callable = f.into_callable();
            if let Some(g) = grouped {
                let mut out = Vec::with_capacity(g.len());
                for (k, v) in g.iter() {
                    let mut a = vec![v.clone()];
                    a.extend(datums.iter().cloned());
                    out.push((k.clone(), callable.call_datum(ctx, &a)?));
                }
                return Ok(Val::Grouped(Rc::new(super::Grouped::data(out))));
            }
            callable.call(ctx, &datums)
        }
        _ => unreachable!("eval_lazy called for term {}", op.ty),
    }
}
