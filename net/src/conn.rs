//! Serves one client connection: handshake, then frames until the client leaves.

use crate::frame::{parse_body, parse_header, HEADER_BYTES, QUERY_BYTES_LIMIT};
use crate::handshake::{handshake, write_refusal, HandshakeError};
use crate::response;
use crate::scram::UserStore;
use crate::session::ServerInfo;
use crate::session::Session;
use futures_lite::io::BufReader;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use rdb_query::store::Store;
use rdb_query::ErrorKind;
use std::cell::RefCell;
use std::io;
use std::rc::Rc;

/// Responses are written in one go once this many bytes are waiting.
const PENDING_BYTES_MAX: usize = 256 * 1024;

/// Runs the protocol on `stream` until the client disconnects or misbehaves.
/// Errors are per-connection: they never affect other clients.
pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    users: &UserStore,
    server: &ServerInfo,
    store: Option<Rc<Store>>,
) -> io::Result<()> {
    let mut s = BufReader::new(stream);
    match handshake(&mut s, users).await {
        Ok(user) => tracing::debug!(user, "client authenticated"),
        Err(HandshakeError::Io(e)) => return Err(e),
        Err(HandshakeError::Refused {
            code,
            message,
            json,
        }) => {
            tracing::debug!(code, message, "handshake refused");
            write_refusal(s.get_mut(), code, &message, json).await?;
            return Ok(());
        }
    }
    let session = Rc::new(RefCell::new(Session::new(server.clone(), store)));
    let mut header = [0u8; HEADER_BYTES];
    let mut body = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    loop {
        match s.read_exact(&mut header).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let h = parse_header(&header);
        if h.len >= QUERY_BYTES_LIMIT {
            let msg = format!(
                "Query size ({}) greater than maximum ({}).",
                h.len,
                QUERY_BYTES_LIMIT - 1
            );
            pending.extend_from_slice(&response::client_error(
                h.token,
                ErrorKind::ResourceLimit,
                &msg,
            ));
            s.get_mut().write_all(&pending).await?;
            s.get_mut().flush().await?;
            // The rest of the stream is the oversized body: the connection cannot resync.
            return Ok(());
        }
        body.resize(h.len as usize, 0);
        s.read_exact(&mut body).await?;
        let parsed = parse_body(&body);
        // Queries run on a fiber: storage waits suspend it while the core serves others.
        let s2 = session.clone();
        let token = h.token;
        let reply = rdb_io::fiber::run(move || {
            // A bug in one query must not take the server (or this connection) down.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                s2.borrow_mut().handle(token, parsed)
            }))
            .unwrap_or_else(|_| {
                Some(response::client_error(
                    token,
                    ErrorKind::Internal,
                    "Internal error: the query hit a server bug (see the server log).",
                ))
            })
        })
        .await;
        if let Some(out) = reply {
            pending.extend_from_slice(&out);
        }
        // Answer every pipelined query already read before writing, so one write
        // carries many responses; never hold back more than `PENDING_BYTES_MAX`.
        if s.buffer().is_empty() || pending.len() >= PENDING_BYTES_MAX {
            s.get_mut().write_all(&pending).await?;
            s.get_mut().flush().await?;
            pending.clear();
            if pending.capacity() > PENDING_BYTES_MAX * 2 {
                pending = Vec::new();
            }
        }
        if body.capacity() > 1 << 20 {
            body = Vec::new();
        }
    }
}
