//! ReQL for rdb: the datum model, the wire-term parser and checker, and the evaluator.
//!
//! This crate knows nothing of sockets: `net` hands it parsed JSON terms and gets back
//! datums, streams and classified errors. Tables live in `store`, over the engine shards.

/// Continues a recursive walk on a fresh stack segment when this stack is nearly used
/// up (`rdb_io::fiber::with_room`): `deep!(f(args))` at the top of a recursive function
/// returns the call's result computed with room to spare. Data and terms of any depth
/// can then be walked without overflowing a stack, as RethinkDB allows.
macro_rules! deep {
    ($call:expr) => {
        if rdb_io::fiber::stack_left_bytes() < rdb_io::fiber::RED_ZONE_BYTES {
            return rdb_io::fiber::with_room(|| $call);
        }
    };
}

pub mod codec;
pub mod datum;
pub mod error;
pub mod eval;
pub mod json;
pub mod keycode;
pub mod store;
pub mod term;
pub mod term_fast;
pub mod term_type;
#[cfg(test)]
mod testgen;

pub use datum::Datum;
pub use error::{ErrorKind, ReqlError};
