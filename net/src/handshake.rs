//! The V1_0 handshake: magic number, then three JSON messages carrying SCRAM.

use crate::scram::{AuthError, ScramServer, UserStore};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use rdb_query::datum::Object;
use rdb_query::json::to_json;
use rdb_query::Datum;
use std::io;

pub const V1_0: u32 = 0x34c2_bdc3;
pub const V0_4: u32 = 0x400c_2d20;
pub const V0_3: u32 = 0x5f75_e83e;
pub const V0_2: u32 = 0x7230_81e1;
pub const V0_1: u32 = 0x3f61_ba36;
/// Longest handshake message accepted (bytes, excluding the terminating NUL).
pub const MESSAGE_BYTES_MAX: usize = 2048;
pub const SERVER_VERSION: &str = "2.4.4-rdb";

#[derive(Debug)]
pub enum HandshakeError {
    Io(io::Error),
    /// Reported to the client (JSON or, for old protocols, a plain string), then closed.
    Refused {
        code: i64,
        message: String,
        json: bool,
    },
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        HandshakeError::Io(e)
    }
}

fn refused(code: i64, message: &str) -> HandshakeError {
    HandshakeError::Refused {
        code,
        message: message.to_string(),
        json: true,
    }
}

impl From<AuthError> for HandshakeError {
    fn from(e: AuthError) -> Self {
        refused(e.code as i64, &e.message)
    }
}

/// Runs the handshake; returns the authenticated user.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    users: &UserStore,
) -> Result<String, HandshakeError> {
    let mut magic = [0u8; 4];
    s.read_exact(&mut magic).await?;
    match u32::from_le_bytes(magic) {
        V1_0 => {}
        V0_1 | V0_2 => {
            return Err(HandshakeError::Refused {
                code: -1,
                message: "The PROTOBUF client protocol is no longer supported".into(),
                json: false,
            })
        }
        V0_3 | V0_4 => {
            return Err(HandshakeError::Refused {
                code: -1,
                message: "Protocol versions before V1_0 (no user authentication) are not supported by this server.".into(),
                json: false,
            })
        }
        _ => {
            return Err(HandshakeError::Refused {
                code: -1,
                message: "Received an unsupported protocol version. This port is for RethinkDB queries. Does your client driver version not match the server?".into(),
                json: false,
            })
        }
    }
    let mut hello = Object::new();
    hello.insert("success".into(), Datum::Bool(true));
    hello.insert("min_protocol_version".into(), Datum::Num(0.0));
    hello.insert("max_protocol_version".into(), Datum::Num(0.0));
    hello.insert("server_version".into(), Datum::str(SERVER_VERSION));
    write_message(s, &Datum::object(hello)).await?;

    let first = read_message(s).await?;
    let pv = first.get("protocol_version");
    match pv {
        Some(serde_json::Value::Number(n)) if n.as_f64() == Some(0.0) => {}
        Some(serde_json::Value::Number(_)) => {
            return Err(refused(2, "Unsupported `protocol_version`."))
        }
        _ => return Err(refused(1, "Expected a number for `protocol_version`.")),
    }
    match first.get("authentication_method").and_then(|v| v.as_str()) {
        Some("SCRAM-SHA-256") => {}
        Some(_) => return Err(refused(4, "Unsupported `authentication_method`.")),
        None => return Err(refused(3, "Expected a string for `authentication_method`.")),
    }
    let auth = first
        .get("authentication")
        .and_then(|v| v.as_str())
        .ok_or_else(|| refused(5, "Expected a string for `authentication`."))?;
    let mut scram = ScramServer::new(users);
    let server_first = scram.step_first(auth)?;
    write_auth(s, &server_first).await?;

    let second = read_message(s).await?;
    let auth = second
        .get("authentication")
        .and_then(|v| v.as_str())
        .ok_or_else(|| refused(5, "Expected a string for `authentication`."))?;
    let (server_final, user) = scram.step_final(auth)?;
    write_auth(s, &server_final).await?;
    Ok(user)
}

async fn write_auth<S: AsyncWrite + Unpin>(s: &mut S, auth: &str) -> io::Result<()> {
    let mut o = Object::new();
    o.insert("success".into(), Datum::Bool(true));
    o.insert("authentication".into(), Datum::str(auth));
    write_message(s, &Datum::object(o)).await
}

async fn write_message<S: AsyncWrite + Unpin>(s: &mut S, d: &Datum) -> io::Result<()> {
    let mut bytes = to_json(d).into_bytes();
    bytes.push(0);
    s.write_all(&bytes).await?;
    s.flush().await
}

/// Tells the client why the handshake failed, in the form its protocol expects.
pub async fn write_refusal<S: AsyncWrite + Unpin>(
    s: &mut S,
    code: i64,
    message: &str,
    json: bool,
) -> io::Result<()> {
    if json {
        let mut o = Object::new();
        o.insert("success".into(), Datum::Bool(false));
        o.insert("error".into(), Datum::str(message));
        o.insert("error_code".into(), Datum::Num(code as f64));
        write_message(s, &Datum::object(o)).await
    } else {
        let mut b = format!("ERROR: {message}\n").into_bytes();
        b.push(0);
        s.write_all(&b).await?;
        s.flush().await
    }
}

/// Reads one NUL-terminated JSON object of at most `MESSAGE_BYTES_MAX` bytes.
async fn read_message<S: AsyncRead + Unpin>(
    s: &mut S,
) -> Result<serde_json::Map<String, serde_json::Value>, HandshakeError> {
    let mut buf = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    loop {
        s.read_exact(&mut byte).await?;
        if byte[0] == 0 {
            break;
        }
        if buf.len() >= MESSAGE_BYTES_MAX {
            return Err(refused(-1, "Handshake message too long."));
        }
        buf.push(byte[0]);
    }
    match serde_json::from_slice::<serde_json::Value>(&buf) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        _ => Err(refused(-1, "Expected a JSON object in the handshake.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use proptest::prelude::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// Scripted input, captured output.
    struct Pipe {
        input: Vec<u8>,
        pos: usize,
        output: Vec<u8>,
    }

    impl AsyncRead for Pipe {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.input.len() - self.pos);
            let start = self.pos;
            buf[..n].copy_from_slice(&self.input[start..start + n]);
            self.pos += n;
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Pipe {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.output.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn run(input: Vec<u8>) -> (Result<String, HandshakeError>, Vec<u8>) {
        // One store for all cases: building keys runs PBKDF2.
        static USERS: std::sync::OnceLock<UserStore> = std::sync::OnceLock::new();
        let users = USERS.get_or_init(|| UserStore::with_admin(""));
        let mut p = Pipe {
            input,
            pos: 0,
            output: Vec::new(),
        };
        let r = block_on(handshake(&mut p, users));
        (r, p.output)
    }

    #[test]
    fn bad_magic_is_refused_without_json() {
        let (r, _) = run(b"GET / HTTP/1.1\r\n".to_vec());
        assert!(matches!(
            r,
            Err(HandshakeError::Refused { json: false, .. })
        ));
    }

    #[test]
    fn long_message_is_refused() {
        let mut input = V1_0.to_le_bytes().to_vec();
        input.extend(std::iter::repeat_n(b' ', MESSAGE_BYTES_MAX + 10));
        input.push(0);
        let (r, out) = run(input);
        assert!(matches!(r, Err(HandshakeError::Refused { json: true, .. })));
        assert!(out.starts_with(b"{\"max_protocol_version\""));
    }

    #[test]
    fn wrong_protocol_fields_are_refused() {
        for msg in [
            r#"{"protocol_version":1,"authentication_method":"SCRAM-SHA-256","authentication":"n,,n=admin,r=x"}"#,
            r#"{"protocol_version":0,"authentication_method":"PLAIN","authentication":"x"}"#,
            r#"{"protocol_version":0,"authentication_method":"SCRAM-SHA-256"}"#,
            r#"[1,2,3]"#,
        ] {
            let mut input = V1_0.to_le_bytes().to_vec();
            input.extend_from_slice(msg.as_bytes());
            input.push(0);
            let (r, _) = run(input);
            assert!(matches!(r, Err(HandshakeError::Refused { .. })), "{msg}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut input = V1_0.to_le_bytes().to_vec();
            input.extend_from_slice(&tail);
            let _ = run(input);
            let _ = run(tail);
        }
    }
}
