//! The RethinkDB driver protocol (V1_0): handshake with SCRAM-SHA-256, query framing,
//! and per-connection query sessions (cursors, noreply, batches).
//!
//! Generic over any AsyncRead + AsyncWrite stream, so it never names the runtime; the
//! server binary hands it sockets from the io seam, tests hand it in-memory pipes.

pub mod conn;
pub mod frame;
pub mod handshake;
pub mod response;
pub mod scram;
pub mod session;

pub use conn::serve_connection;
pub use scram::UserStore;
pub use session::ServerInfo;
