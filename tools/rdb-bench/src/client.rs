//! A minimal blocking RethinkDB client: V1_0 handshake with SCRAM-SHA-256, then
//! pipelined queries identified by token. Independent of the server's code on purpose,
//! so it measures rdb and RethinkDB alike.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;

const V1_0: u32 = 0x34c2_bdc3;

pub struct Client {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    m.update(msg);
    m.finalize().into_bytes().into()
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Client {
    pub fn connect(host: &str, port: u16, user: &str, password: &str) -> io::Result<Client> {
        let stream = TcpStream::connect((host, port))?;
        stream.set_nodelay(true)?;
        let mut c = Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: BufWriter::new(stream),
        };
        c.handshake(user, password)?;
        Ok(c)
    }

    fn handshake(&mut self, user: &str, password: &str) -> io::Result<()> {
        let mut nonce = [0u8; 18];
        rand::thread_rng().fill_bytes(&mut nonce);
        let user = user.replace('=', "=3D").replace(',', "=2C");
        let bare = format!("n={user},r={}", B64.encode(nonce));
        let first = serde_json::json!({
            "protocol_version": 0,
            "authentication_method": "SCRAM-SHA-256",
            "authentication": format!("n,,{bare}"),
        });
        self.writer.write_all(&V1_0.to_le_bytes())?;
        self.writer.write_all(first.to_string().as_bytes())?;
        self.writer.write_all(&[0])?;
        self.writer.flush()?;
        self.read_message()?; // server hello
        let reply = self.read_message()?;
        let server_first = reply["authentication"]
            .as_str()
            .ok_or_else(|| bad("no authentication"))?
            .to_string();
        let mut salt = None;
        let mut iters = None;
        let mut rnonce = None;
        for attr in server_first.split(',') {
            match attr.split_once('=') {
                Some(("s", v)) => salt = B64.decode(v).ok(),
                Some(("i", v)) => iters = v.parse::<u32>().ok(),
                Some(("r", v)) => rnonce = Some(v.to_string()),
                _ => {}
            }
        }
        let (salt, iters, rnonce) = match (salt, iters, rnonce) {
            (Some(s), Some(i), Some(r)) => (s, i, r),
            _ => return Err(bad("malformed server-first message")),
        };
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iters, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={rnonce}");
        let auth = format!("{bare},{server_first},{without_proof}");
        let sig = hmac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(sig).map(|(a, b)| a ^ b).collect();
        let fin = serde_json::json!({ "authentication": format!("{without_proof},p={}", B64.encode(proof)) });
        self.writer.write_all(fin.to_string().as_bytes())?;
        self.writer.write_all(&[0])?;
        self.writer.flush()?;
        self.read_message()?;
        Ok(())
    }

    fn read_message(&mut self) -> io::Result<serde_json::Value> {
        let mut buf = Vec::new();
        let mut b = [0u8; 1];
        loop {
            self.reader.read_exact(&mut b)?;
            if b[0] == 0 {
                break;
            }
            buf.push(b[0]);
            if buf.len() > 4096 {
                return Err(bad("handshake message too long"));
            }
        }
        let v: serde_json::Value = serde_json::from_slice(&buf).map_err(|e| bad(e.to_string()))?;
        if v["success"] != serde_json::Value::Bool(true) {
            return Err(bad(format!("handshake refused: {}", v["error"])));
        }
        Ok(v)
    }

    /// Queues a query frame; call `flush` to send queued frames.
    pub fn send(&mut self, token: u64, body: &[u8]) -> io::Result<()> {
        self.writer.write_all(&token.to_le_bytes())?;
        self.writer.write_all(&(body.len() as u32).to_le_bytes())?;
        self.writer.write_all(body)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }

    /// Whether a response is already buffered (so `recv` will not block).
    pub fn has_buffered(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// Reads one response: (token, response type, body).
    pub fn recv(&mut self) -> io::Result<(u64, u32, Vec<u8>)> {
        let mut h = [0u8; 12];
        self.reader.read_exact(&mut h)?;
        let token = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(h[8..].try_into().expect("4 bytes")) as usize;
        let mut body = vec![0u8; len];
        self.reader.read_exact(&mut body)?;
        let t = response_type(&body).ok_or_else(|| bad("response without a type"))?;
        Ok((token, t, body))
    }
}

/// Reads `"t":N` from a response body without parsing all of it.
fn response_type(body: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(body).ok()?;
    let i = s.find("\"t\":")? + 4;
    let digits: String = s[i..].chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}
