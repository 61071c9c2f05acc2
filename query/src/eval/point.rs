//! Point reads answered straight from the stored bytes: `table.get(key)` is the most
//! common query there is, and its answer is the stored document as it is. Rather than
//! decode it into a datum, wrap it in a selection and encode it again, the plain form of
//! the query writes the document's JSON from its encoded bytes (`codec::write_json`).
//!
//! Only the plain form is taken: anything else, and anything that would fail (a missing
//! database or table, a bad key, a storage error, a corrupt document), is left to the
//! evaluator, which then gives the answer or the error exactly as it always does.

use super::table::{default_db_name, SYSTEM_DB};
use super::types::check_name;
use super::Ctx;
use crate::datum::Datum;
use crate::store::Store;
use crate::term::{Op, Term};
use crate::term_type as tt;

/// The operation of `t` when it has exactly `arity` arguments and no optional ones.
fn plain_op(t: &Term, ty: u32, arity: usize) -> Option<&Op> {
    match t {
        Term::Op(op) if op.ty == ty && op.args.len() == arity && op.optargs.is_empty() => Some(op),
        _ => None,
    }
}

fn literal_str(t: &Term) -> Option<&str> {
    match t {
        Term::Datum(Datum::Str(s)) => Some(s),
        _ => None,
    }
}

/// The database and table names of `r.table(name)` or `r.db(db).table(name)`.
fn table_names<'a>(ctx: &'a Ctx, t: &'a Term) -> Option<(&'a str, &'a str)> {
    let (db, name) = match plain_op(t, tt::TABLE, 1) {
        Some(op) => (default_db_name(ctx), literal_str(&op.args[0])?),
        None => {
            let op = plain_op(t, tt::TABLE, 2)?;
            let db = literal_str(&plain_op(&op.args[0], tt::DB, 1)?.args[0])?;
            check_name(db, "Database").ok()?;
            (db, literal_str(&op.args[1])?)
        }
    };
    check_name(name, "Table").ok()?;
    Some((db, name))
}

/// The answer of `t` as JSON when it is a plain point read (`r.table(name).get(key)`
/// or `r.db(db).table(name).get(key)` without optional arguments, the key a literal, on
/// a stored table) that succeeds: the document, or `null` when there is none. `None`
/// leaves the query to the evaluator.
pub fn get_json(ctx: &Ctx, t: &Term) -> Option<String> {
    let op = plain_op(t, tt::GET, 2)?;
    let (db, name) = table_names(ctx, &op.args[0])?;
    let Term::Datum(pk) = &*op.args[1] else {
        return None;
    };
    if db == SYSTEM_DB {
        return None;
    }
    let store = ctx.store.as_ref()?;
    let info = store.table(db, name).ok()?;
    let key = Store::doc_key(&info, pk).ok()?;
    let shard = store.shard_of(&key);
    let mut out = String::new();
    match store.get_raw(shard, key).ok()? {
        None => out.push_str("null"),
        Some(doc) => crate::codec::write_json(&doc, &mut out).ok()?,
    }
    Some(out)
}
