//! Prints terms as JavaScript driver code, the way RethinkDB describes stored functions
//! (`index_status().query`): `function(var1) { return var1("a"); }`.

use crate::term::Term;
use crate::term_type as tt;

/// The JavaScript form of a term.
pub fn js(t: &Term) -> String {
    let mut out = String::new();
    write(&mut out, t);
    out
}

fn camel(upper: &str) -> String {
    let mut out = String::with_capacity(upper.len());
    let mut up = false;
    for c in upper.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.push(c.to_ascii_uppercase());
            up = false;
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

fn list(out: &mut String, items: &[std::rc::Rc<Term>]) {
    for (i, a) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write(out, a);
    }
}

fn write(out: &mut String, t: &Term) {
    deep!(write(out, t));
    let op = match t {
        Term::Datum(d) => {
            out.push_str(&crate::json::to_json(d));
            return;
        }
        Term::Op(op) => op,
    };
    match op.ty {
        tt::VAR => {
            out.push_str("var");
            list(out, &op.args);
        }
        tt::IMPLICIT_VAR => out.push_str("r.row"),
        tt::MAKE_ARRAY => {
            out.push('[');
            list(out, &op.args);
            out.push(']');
        }
        tt::FUNC => {
            out.push_str("function(");
            if let Some(Term::Op(params)) = op.args.first().map(|p| &**p) {
                for (i, p) in params.args.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str("var");
                    write(out, p);
                }
            } else if let Some(Term::Datum(crate::datum::Datum::Array(ps))) =
                op.args.first().map(|p| &**p)
            {
                for (i, p) in ps.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str("var");
                    out.push_str(&crate::json::to_json(p));
                }
            }
            out.push_str(") { return ");
            if let Some(body) = op.args.get(1) {
                write(out, body);
            }
            out.push_str("; }");
        }
        tt::BRACKET | tt::GET_FIELD if op.args.len() == 2 => {
            write(out, &op.args[0]);
            out.push('(');
            write(out, &op.args[1]);
            out.push(')');
        }
        ty => {
            let name = camel(tt::name(ty).unwrap_or("unknown"));
            // A method on the first argument, except for terms that start a chain.
            let (receiver, rest) = match op.args.split_first() {
                Some((first, rest)) if !matches!(ty, tt::DB | tt::TABLE) => (Some(first), rest),
                _ => (None, op.args.as_slice()),
            };
            match receiver {
                Some(r) => write(out, r),
                None => out.push('r'),
            }
            out.push('.');
            out.push_str(&name);
            out.push('(');
            let mut inner: Vec<String> = rest.iter().map(|a| js(a)).collect();
            if !op.optargs.is_empty() {
                let fields: Vec<String> = op
                    .optargs
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", js(v)))
                    .collect();
                inner.push(format!("{{{}}}", fields.join(", ")));
            }
            out.push_str(&inner.join(", "));
            out.push(')');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn js_of(wire: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(wire).unwrap();
        js(&crate::term::parse(&v).unwrap())
    }

    #[test]
    fn prints_index_functions() {
        assert_eq!(
            js_of(r#"[69,[[2,[1]],[170,[[10,[1]],"a"]]]]"#),
            r#"function(var1) { return var1("a"); }"#
        );
        assert_eq!(
            js_of(r#"[69,[[2,[1]],[2,[[170,[[10,[1]],"b"]],[24,[[10,[1]],1]]]]]]"#),
            r#"function(var1) { return [var1("b"), var1.add(1)]; }"#
        );
    }
}
