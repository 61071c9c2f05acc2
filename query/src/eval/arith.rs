//! Arithmetic, bitwise, comparison and boolean terms.

use super::{arg_datum, int, make_num, num, type_err_null_aware, Ctx, Val};
use crate::datum::Datum;
use crate::error::{logic, Frame, Result};
use crate::term_type as tt;
use std::cmp::Ordering;
use std::rc::Rc;

pub fn apply(ctx: &Rc<Ctx>, ty: u32, args: &[Val]) -> Result<Option<Val>> {
    let v = match ty {
        tt::ADD | tt::SUB | tt::MUL | tt::DIV => {
            let mut acc = arg_datum(ctx, args, 0)?;
            for i in 1..args.len() {
                let rhs = arg_datum(ctx, args, i)?;
                acc = match ty {
                    tt::ADD => add(ctx, acc, rhs)?,
                    tt::SUB => sub(acc, rhs)?,
                    tt::MUL => mul(ctx, acc, rhs)?,
                    _ => div(acc, rhs)?,
                };
            }
            acc
        }
        tt::MOD => {
            let a = int(&arg_datum(ctx, args, 0)?).map_err(|e| e.with_frame(Frame::Pos(0)))?;
            let b = int(&arg_datum(ctx, args, 1)?).map_err(|e| e.with_frame(Frame::Pos(1)))?;
            if b == 0 {
                return Err(logic("Cannot take a number modulo 0."));
            }
            if a == i64::MIN && b == -1 {
                return Err(logic(format!("Cannot take {a} mod {b}")));
            }
            Datum::Num((a % b) as f64)
        }
        tt::FLOOR => Datum::Num(num(&arg_datum(ctx, args, 0)?)?.floor()),
        tt::CEIL => Datum::Num(num(&arg_datum(ctx, args, 0)?)?.ceil()),
        tt::ROUND => Datum::Num(num(&arg_datum(ctx, args, 0)?)?.round()),
        tt::BIT_AND | tt::BIT_OR | tt::BIT_XOR => {
            let mut acc = ranged_int(&arg_datum(ctx, args, 0)?)?;
            for i in 1..args.len() {
                let r = ranged_int(&arg_datum(ctx, args, i)?)?;
                acc = match ty {
                    tt::BIT_AND => acc & r,
                    tt::BIT_OR => acc | r,
                    _ => acc ^ r,
                };
            }
            Datum::Num(acc as f64)
        }
        tt::BIT_NOT => Datum::Num(!ranged_int(&arg_datum(ctx, args, 0)?)? as f64),
        tt::BIT_SAL | tt::BIT_SAR => {
            let lhs = ranged_int(&arg_datum(ctx, args, 0)?)?;
            let rhs = int(&arg_datum(ctx, args, 1)?)?;
            if rhs < 0 {
                return Err(logic("Cannot bit-shift by a negative value"));
            }
            let r = if ty == tt::BIT_SAL {
                if lhs == 0 {
                    0.0
                } else if rhs < 4096 {
                    lhs as f64 * 2f64.powi(rhs as i32)
                } else {
                    f64::INFINITY
                }
            } else if rhs > 63 {
                if lhs < 0 {
                    -1.0
                } else {
                    0.0
                }
            } else {
                (lhs >> rhs) as f64
            };
            make_num(r)?
        }
        tt::EQ | tt::NE | tt::LT | tt::LE | tt::GT | tt::GE => {
            let mut lhs = arg_datum(ctx, args, 0)?;
            let mut holds = true;
            for i in 1..args.len() {
                let rhs = arg_datum(ctx, args, i)?;
                let c = lhs.cmp_datum(&rhs);
                let ok = match ty {
                    tt::EQ | tt::NE => c == Ordering::Equal,
                    tt::LT => c == Ordering::Less,
                    tt::LE => c != Ordering::Greater,
                    tt::GT => c == Ordering::Greater,
                    _ => c != Ordering::Less,
                };
                if !ok {
                    holds = false;
                    break;
                }
                lhs = rhs;
            }
            // NE inverts the whole chain, so `r.ne(1, 2, 3)` means "not all equal".
            Datum::Bool(holds != (ty == tt::NE))
        }
        tt::NOT => Datum::Bool(!arg_datum(ctx, args, 0)?.truthy()),
        _ => return Ok(None),
    };
    Ok(Some(Val::Datum(v)))
}

fn ranged_int(d: &Datum) -> Result<i64> {
    let i = int(d)?;
    if !(-(1i64 << 53)..(1i64 << 53)).contains(&i) {
        return Err(logic(format!("Integer too large: {i}")));
    }
    Ok(i)
}

fn check_num(d: &Datum) -> Result<f64> {
    num(d)
}

fn add(ctx: &Ctx, lhs: Datum, rhs: Datum) -> Result<Datum> {
    if super::time::is_time(&lhs) || super::time::is_time(&rhs) {
        return match (super::time::is_time(&lhs), super::time::is_time(&rhs)) {
            (true, true) => Err(super::type_err("NUMBER", &rhs)),
            (true, false) => super::time::add(&lhs, check_num(&rhs)?),
            _ => super::time::add(&rhs, check_num(&lhs)?),
        };
    }
    match &lhs {
        Datum::Num(a) => make_num(a + check_num(&rhs)?),
        Datum::Str(a) => match &rhs {
            Datum::Str(b) => {
                super::check_string_len(a.len() + b.len())?;
                Ok(Datum::str(format!("{a}{b}")))
            }
            _ => Err(type_err_null_aware("STRING", &rhs)),
        },
        Datum::Array(a) => match &rhs {
            Datum::Array(b) => {
                ctx.check_array(a.len() + b.len())?;
                let mut v = Vec::with_capacity(a.len() + b.len());
                v.extend(a.iter().cloned());
                v.extend(b.iter().cloned());
                Ok(Datum::array(v))
            }
            _ => Err(type_err_null_aware("ARRAY", &rhs)),
        },
        _ => Err(type_err_null_aware("NUMBER", &lhs)),
    }
}

fn sub(lhs: Datum, rhs: Datum) -> Result<Datum> {
    if super::time::is_time(&lhs) {
        if super::time::is_time(&rhs) {
            let (a, _) = super::time::parts(&lhs)?;
            let (b, _) = super::time::parts(&rhs)?;
            return make_num(((a - b) * 1000.0).round() / 1000.0);
        }
        return super::time::add(&lhs, -check_num(&rhs)?);
    }
    make_num(check_num(&lhs)? - check_num(&rhs)?)
}

fn mul(ctx: &Ctx, lhs: Datum, rhs: Datum) -> Result<Datum> {
    if let (Datum::Array(_), _) | (_, Datum::Array(_)) = (&lhs, &rhs) {
        let (arr, n) = if matches!(lhs, Datum::Array(_)) {
            (lhs, rhs)
        } else {
            (rhs, lhs)
        };
        let copies = int(&n)?;
        if copies < 0 {
            return Err(logic("Cannot multiply an ARRAY by a negative number."));
        }
        let a = super::array(&arr)?;
        let total = a.len().saturating_mul(copies as usize);
        ctx.check_array(total)?;
        let mut v = Vec::with_capacity(total);
        for _ in 0..copies {
            v.extend(a.iter().cloned());
        }
        return Ok(Datum::array(v));
    }
    make_num(check_num(&lhs)? * check_num(&rhs)?)
}

fn div(lhs: Datum, rhs: Datum) -> Result<Datum> {
    let a = check_num(&lhs)?;
    let b = check_num(&rhs)?;
    if b == 0.0 {
        return Err(logic("Cannot divide by zero."));
    }
    make_num(a / b)
}
