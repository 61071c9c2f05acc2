//! ReQL for rdb: the datum model, the wire-term parser and checker, and the evaluator.
//!
//! This crate knows nothing of sockets: `net` hands it parsed JSON terms and gets back
//! datums, streams and classified errors. Tables live in `store`, over the engine shards.

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
