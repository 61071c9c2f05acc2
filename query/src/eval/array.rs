//! Array terms that work on whole array datums: append, prepend, difference, the set
//! operations and the *_at family.

use super::{arg_datum, array, int, Ctx, Optargs, Val};
use crate::datum::Datum;
use crate::error::{logic, non_existence, Result};
use crate::term_type as tt;
use std::collections::BTreeSet;
use std::rc::Rc;

pub fn apply(ctx: &Rc<Ctx>, ty: u32, args: &[Val], _opt: &Optargs) -> Result<Option<Val>> {
    if !matches!(
        ty,
        tt::APPEND
            | tt::PREPEND
            | tt::DIFFERENCE
            | tt::SET_INSERT
            | tt::SET_UNION
            | tt::SET_INTERSECTION
            | tt::SET_DIFFERENCE
            | tt::INSERT_AT
            | tt::SPLICE_AT
            | tt::DELETE_AT
            | tt::CHANGE_AT
    ) {
        return Ok(None);
    }
    let first = arg_datum(ctx, args, 0)?;
    let a = array(&first)?;
    let second = arg_datum(ctx, args, 1)?;
    let mut out: Vec<Datum>;
    match ty {
        tt::APPEND | tt::PREPEND => {
            out = Vec::with_capacity(a.len() + 1);
            if ty == tt::PREPEND {
                out.push(second);
                out.extend(a.iter().cloned());
            } else {
                out.extend(a.iter().cloned());
                out.push(second);
            }
        }
        tt::DIFFERENCE => {
            let b = array(&second)?;
            out = a.iter().filter(|x| !b.contains(x)).cloned().collect();
        }
        tt::SET_INSERT => {
            let mut seen = BTreeSet::new();
            out = a
                .iter()
                .filter(|x| seen.insert((*x).clone()))
                .cloned()
                .collect();
            if !seen.contains(&second) {
                out.push(second);
            }
        }
        tt::SET_UNION => {
            let b = array(&second)?;
            let mut seen = BTreeSet::new();
            out = a
                .iter()
                .chain(b.iter())
                .filter(|x| seen.insert((*x).clone()))
                .cloned()
                .collect();
        }
        tt::SET_INTERSECTION => {
            let b = array(&second)?;
            let mut set: BTreeSet<Datum> = a.iter().cloned().collect();
            out = b.iter().filter(|x| set.remove(x)).cloned().collect();
        }
        tt::SET_DIFFERENCE => {
            let b = array(&second)?;
            let mut set: BTreeSet<Datum> = b.iter().cloned().collect();
            out = a
                .iter()
                .filter(|x| set.insert((*x).clone()))
                .cloned()
                .collect();
        }
        _ => {
            out = (**a).clone();
            let len = out.len();
            let idx = int(&second)?;
            match ty {
                tt::INSERT_AT | tt::SPLICE_AT => {
                    let i = canonicalize(idx, len + 1)?;
                    check_bound(i, len, true)?;
                    let v = arg_datum(ctx, args, 2)?;
                    if ty == tt::INSERT_AT {
                        out.insert(i, v);
                    } else {
                        let items = array(&v)?;
                        out.splice(i..i, items.iter().cloned());
                    }
                }
                tt::CHANGE_AT => {
                    let i = canonicalize(idx, len)?;
                    check_bound(i, len, false)?;
                    out[i] = arg_datum(ctx, args, 2)?;
                }
                _ => {
                    let start = canonicalize(idx, len)?;
                    if args.len() == 2 {
                        check_bound(start, len, false)?;
                        out.remove(start);
                    } else {
                        let end = canonicalize(int(&arg_datum(ctx, args, 2)?)?, len)?;
                        check_bound(start, len, true)?;
                        check_bound(end, len, true)?;
                        if start > end {
                            return Err(logic(format!(
                                "Start index `{start}` is greater than end index `{end}`."
                            )));
                        }
                        out.drain(start..end);
                    }
                }
            }
        }
    }
    ctx.check_array(out.len())?;
    Ok(Some(Val::Datum(Datum::array(out))))
}

/// Turns a possibly negative index into a position, as RethinkDB does.
pub fn canonicalize(index: i64, size: usize) -> Result<usize> {
    if index >= 0 {
        return Ok(index as usize);
    }
    if index.unsigned_abs() as usize > size {
        return Err(non_existence(format!("Index out of bounds: {index}")));
    }
    Ok((size as i64 + index) as usize)
}

fn check_bound(i: usize, len: usize, inclusive: bool) -> Result<()> {
    if i > len || (!inclusive && i == len) {
        return Err(non_existence(format!(
            "Index `{i}` out of bounds for array of size: `{len}`."
        )));
    }
    Ok(())
}
