//! Query errors, classified as RethinkDB classifies them; the wire layer maps each
//! class to its ql2 response and error type in one place.

use std::fmt;

/// Who is at fault, in RethinkDB's terms (ql2 `Response.ErrorType` plus compile errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The query is malformed (bad arity, unknown term, unbound variable...).
    Compile,
    Internal,
    ResourceLimit,
    QueryLogic,
    NonExistence,
    OpFailed,
    OpIndeterminate,
    /// Raised by `r.error`.
    User,
    /// Raised by `r.error()` with no message: `default` turns it into its fallback.
    EmptyUser,
    Permission,
    /// A changefeed has nothing more to give right now: ends the batch being filled.
    /// Internal to the server; never sent to a client.
    FeedPaused,
}

/// One step from a term to one of its arguments, for the error's backtrace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Pos(usize),
    Opt(String),
}

#[derive(Clone, Debug)]
pub struct ReqlError {
    pub kind: ErrorKind,
    pub msg: String,
    /// Innermost frame first; reversed when sent to the client.
    pub frames_rev: Vec<Frame>,
}

impl ReqlError {
    pub fn new(kind: ErrorKind, msg: impl Into<String>) -> ReqlError {
        ReqlError {
            kind,
            msg: msg.into(),
            frames_rev: Vec::new(),
        }
    }
    pub fn with_frame(mut self, f: Frame) -> ReqlError {
        self.frames_rev.push(f);
        self
    }
    pub fn backtrace(&self) -> Vec<Frame> {
        self.frames_rev.iter().rev().cloned().collect()
    }
}

impl fmt::Display for ReqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.msg)
    }
}

impl std::error::Error for ReqlError {}

pub type Result<T> = std::result::Result<T, ReqlError>;

/// Why a query's fiber had to stop (`rdb_io::control`), as the error its client gets.
impl From<rdb_io::control::Stop> for ReqlError {
    fn from(s: rdb_io::control::Stop) -> ReqlError {
        use rdb_io::control::Stop;
        match s {
            Stop::Interrupted => ReqlError::new(
                ErrorKind::OpIndeterminate,
                "Query interrupted (stopped, its connection closed, or the server is shutting down).",
            ),
            Stop::QueryMemory { limit_bytes } => ReqlError::new(
                ErrorKind::ResourceLimit,
                format!(
                    "Query exceeded its memory limit ({} MiB; the server's `--query-memory-mb`).",
                    limit_bytes >> 20
                ),
            ),
            Stop::CoreMemory { limit_bytes } => ReqlError::new(
                ErrorKind::ResourceLimit,
                format!(
                    "Queries on this server core hold more memory than its limit ({} MiB; the server's `--queries-memory-mb`); try again later.",
                    limit_bytes >> 20
                ),
            ),
        }
    }
}

/// One step of evaluation: time-slices the core and stops a query that was
/// interrupted or holds too much memory (`rdb_io::control::tick`).
#[inline]
pub fn tick() -> Result<()> {
    rdb_io::control::tick().map_err(ReqlError::from)
}

/// Fails unless the current query may allocate `bytes` more (asked before building
/// something large, so one allocation cannot overshoot the limits).
pub fn reserve(bytes: u64) -> Result<()> {
    rdb_io::control::can_allocate(bytes).map_err(ReqlError::from)
}

pub fn logic(msg: impl Into<String>) -> ReqlError {
    ReqlError::new(ErrorKind::QueryLogic, msg)
}
pub fn non_existence(msg: impl Into<String>) -> ReqlError {
    ReqlError::new(ErrorKind::NonExistence, msg)
}
pub fn compile(msg: impl Into<String>) -> ReqlError {
    ReqlError::new(ErrorKind::Compile, msg)
}
pub fn resource(msg: impl Into<String>) -> ReqlError {
    ReqlError::new(ErrorKind::ResourceLimit, msg)
}
pub fn internal(msg: impl Into<String>) -> ReqlError {
    ReqlError::new(ErrorKind::Internal, msg)
}

/// Shorthand for returning an error of a given class from a function.
#[macro_export]
macro_rules! bail {
    ($ctor:ident, $($arg:tt)*) => {
        return Err($crate::error::$ctor(format!($($arg)*)))
    };
}
