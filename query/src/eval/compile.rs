//! Predicates compiled to run on stored rows without decoding them: comparisons of row
//! fields with constants, joined by `and`/`or`/`not`. A row the compiled form cannot
//! decide (a missing field, say, where the full evaluator's error and `default` rules
//! apply) is handed to the general evaluator, so results are always the same.

use super::{Env, Func};
use crate::codec;
use crate::datum::Datum;
use crate::term::Term;
use crate::term_type as tt;
use std::cmp::Ordering;

/// A value a predicate compares.
#[derive(Debug)]
pub enum Operand {
    Const(Datum),
    /// A (nested) field of the row.
    Field(Vec<String>),
}

#[derive(Debug)]
pub enum Pred {
    Cmp(u32, Operand, Operand),
    And(Vec<Pred>),
    Or(Vec<Pred>),
    Not(Box<Pred>),
    Const(bool),
}

/// Compiles a one-argument filter function, if its body has a supported shape.
pub fn compile(f: &Func) -> Option<Pred> {
    if f.params.len() != 1 {
        return None;
    }
    compile_pred(&f.body, f.params[0], &f.env)
}

/// The field a one-argument function reads, when it is exactly `row(field)`: such
/// functions are answered from the encoded row without decoding or evaluating it.
/// (Longer paths are not: `row(a)(b)` maps over an array-valued `a`.)
pub fn single_field(f: &Func) -> Option<String> {
    let row = match f.params.as_slice() {
        [p] => *p,
        _ => return None,
    };
    match operand(&f.body, row, &f.env)? {
        Operand::Field(mut path) if path.len() == 1 => path.pop(),
        _ => None,
    }
}

fn compile_pred(t: &Term, row: i64, env: &Env) -> Option<Pred> {
    let op = match t {
        Term::Datum(Datum::Bool(b)) => return Some(Pred::Const(*b)),
        Term::Datum(_) => return None,
        Term::Op(op) => op,
    };
    if !op.optargs.is_empty() {
        return None;
    }
    match op.ty {
        tt::EQ | tt::NE | tt::LT | tt::LE | tt::GT | tt::GE if op.args.len() == 2 => {
            Some(Pred::Cmp(
                op.ty,
                operand(&op.args[0], row, env)?,
                operand(&op.args[1], row, env)?,
            ))
        }
        tt::AND | tt::OR if !op.args.is_empty() => {
            let parts = op
                .args
                .iter()
                .map(|a| compile_pred(a, row, env))
                .collect::<Option<Vec<_>>>()?;
            Some(if op.ty == tt::AND {
                Pred::And(parts)
            } else {
                Pred::Or(parts)
            })
        }
        tt::NOT if op.args.len() == 1 => {
            Some(Pred::Not(Box::new(compile_pred(&op.args[0], row, env)?)))
        }
        _ => None,
    }
}

fn operand(t: &Term, row: i64, env: &Env) -> Option<Operand> {
    let op = match t {
        Term::Datum(d) => return Some(Operand::Const(d.clone())),
        Term::Op(op) => op,
    };
    if !op.optargs.is_empty() {
        return None;
    }
    match op.ty {
        // A variable of an enclosing function is a constant here.
        tt::VAR => match &*op.args[0] {
            Term::Datum(Datum::Num(n)) if *n as i64 != row => {
                env.lookup(*n as i64).cloned().map(Operand::Const)
            }
            _ => None,
        },
        tt::BRACKET | tt::GET_FIELD if op.args.len() == 2 => {
            let Term::Datum(Datum::Str(k)) = &*op.args[1] else {
                return None;
            };
            let mut path = match &*op.args[0] {
                Term::Op(v) if v.ty == tt::VAR => match &*v.args[0] {
                    Term::Datum(Datum::Num(n)) if *n as i64 == row => Vec::new(),
                    _ => return None,
                },
                Term::Op(v) if v.ty == tt::IMPLICIT_VAR => Vec::new(),
                inner => match operand(inner, row, env)? {
                    Operand::Field(p) => p,
                    Operand::Const(_) => return None,
                },
            };
            path.push(k.to_string());
            Some(Operand::Field(path))
        }
        _ => None,
    }
}

fn value(o: &Operand, raw: &[u8]) -> Option<Datum> {
    match o {
        Operand::Const(d) => Some(d.clone()),
        Operand::Field(path) => {
            let keys: Vec<&str> = path.iter().map(String::as_str).collect();
            let d = codec::field_path(raw, &keys).ok()??;
            // Pseudo-types (times, geometry) compare by their own rules: leave them to
            // the evaluator.
            if d.is_ptype() {
                return None;
            }
            Some(d)
        }
    }
}

impl Pred {
    /// The verdict on a stored row, or `None` when the row needs the full evaluator.
    pub fn eval(&self, raw: &[u8]) -> Option<bool> {
        match self {
            Pred::Const(b) => Some(*b),
            Pred::Cmp(ty, a, b) => {
                let (a, b) = (value(a, raw)?, value(b, raw)?);
                let c = a.cmp_datum(&b);
                Some(match *ty {
                    tt::EQ => c == Ordering::Equal,
                    tt::NE => c != Ordering::Equal,
                    tt::LT => c == Ordering::Less,
                    tt::LE => c != Ordering::Greater,
                    tt::GT => c == Ordering::Greater,
                    _ => c != Ordering::Less,
                })
            }
            Pred::And(ps) => {
                let mut all = true;
                for p in ps {
                    all &= p.eval(raw)?;
                }
                Some(all)
            }
            Pred::Or(ps) => {
                let mut any = false;
                for p in ps {
                    any |= p.eval(raw)?;
                }
                Some(any)
            }
            Pred::Not(p) => p.eval(raw).map(|b| !b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{check, eval, Ctx, Val};
    use std::collections::HashMap;

    fn func(json: &str) -> std::rc::Rc<Func> {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let t = crate::term::parse(&v).unwrap();
        check(&t).unwrap();
        let ctx = Ctx::new(HashMap::new()).unwrap();
        match eval(&ctx, &Env::default(), &t).unwrap() {
            Val::Func(f) => f,
            _ => panic!("not a function"),
        }
    }

    fn row(json: &str) -> Vec<u8> {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        codec::encode(&crate::json::from_json(&v).unwrap()).unwrap()
    }

    #[test]
    fn compiled_predicates_agree_with_rows() {
        // x => x("v") < 500 and not(x("s") == "a")
        let f = func(
            r#"[69,[[2,[1]],[67,[[19,[[170,[[10,[1]],"v"]],500]],[23,[[17,[[170,[[10,[1]],"s"]],"a"]]]]]]]]"#,
        );
        let p = compile(&f).expect("supported shape");
        assert_eq!(p.eval(&row(r#"{"v":3,"s":"b"}"#)), Some(true));
        assert_eq!(p.eval(&row(r#"{"v":3,"s":"a"}"#)), Some(false));
        assert_eq!(p.eval(&row(r#"{"v":900,"s":"b"}"#)), Some(false));
        // A missing field goes to the full evaluator.
        assert_eq!(p.eval(&row(r#"{"s":"b"}"#)), None);
    }

    #[test]
    fn nested_fields_and_unsupported_shapes() {
        let f = func(r#"[69,[[2,[1]],[17,[[170,[[170,[[10,[1]],"a"]],"b"]],1]]]]"#);
        let p = compile(&f).expect("nested field");
        assert_eq!(p.eval(&row(r#"{"a":{"b":1}}"#)), Some(true));
        assert_eq!(p.eval(&row(r#"{"a":{"b":2}}"#)), Some(false));
        // r.row.add(1) > 2 is not compiled.
        let g = func(r#"[69,[[2,[1]],[21,[[24,[[10,[1]],1]],2]]]]"#);
        assert!(compile(&g).is_none());
    }
}
