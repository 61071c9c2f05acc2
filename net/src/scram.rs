//! Server side of SCRAM-SHA-256 (RFC 5802 / RFC 7677) as RethinkDB uses it: no channel
//! binding, RethinkDB's own JSON error reporting. The crypto comes from RustCrypto crates.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use subtle::ConstantTimeEq;
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// PBKDF2 iterations for stored passwords (RethinkDB's default).
pub const ITERATIONS: u32 = 4096;

/// Handshake failures, with RethinkDB's error codes (10..=20 are authentication errors).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{message}")]
pub struct AuthError {
    pub code: u32,
    pub message: String,
}

fn err(code: u32, message: &str) -> AuthError {
    AuthError {
        code,
        message: message.to_string(),
    }
}

/// What the server keeps per user: never the password itself.
#[derive(Clone)]
pub struct StoredKey {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl StoredKey {
    pub fn from_password(password: &str) -> StoredKey {
        let mut salt = vec![0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        Self::with_salt(password, salt, ITERATIONS)
    }

    pub fn with_salt(password: &str, salt: Vec<u8>, iterations: u32) -> StoredKey {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let server_key = hmac(&salted, b"Server Key");
        StoredKey {
            salt,
            iterations,
            stored_key,
            server_key,
        }
    }
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// Users known to this server.
#[derive(Clone, Default)]
pub struct UserStore {
    users: HashMap<String, StoredKey>,
    /// Used for unknown users so that they take the same path as wrong passwords.
    decoy: Option<StoredKey>,
}

impl UserStore {
    pub fn with_admin(password: &str) -> UserStore {
        let mut s = UserStore::default();
        s.users
            .insert("admin".into(), StoredKey::from_password(password));
        s.decoy = Some(StoredKey::from_password("\u{0}decoy"));
        s
    }
    pub fn get(&self, user: &str) -> Option<&StoredKey> {
        self.users.get(user)
    }
}

/// The server's half of one SCRAM exchange.
pub struct ScramServer<'a> {
    users: &'a UserStore,
    state: State,
}

enum State {
    Start,
    SentFirst {
        user: String,
        key: StoredKey,
        known: bool,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

impl<'a> ScramServer<'a> {
    pub fn new(users: &'a UserStore) -> Self {
        ScramServer {
            users,
            state: State::Start,
        }
    }

    /// The authenticated user, once `server_final` succeeded.
    pub fn step_first(&mut self, client_first: &str) -> Result<String, AuthError> {
        let State::Start = self.state else {
            return Err(err(20, "Other error"));
        };
        // gs2 header: "n,," (no channel binding, no authzid).
        let rest = match client_first.strip_prefix("n,") {
            Some(r) => r,
            None if client_first.starts_with("p=") => {
                return Err(err(15, "Channel binding is not supported"))
            }
            None if client_first.starts_with("y,") => client_first.strip_prefix("y,").unwrap_or(""),
            None => return Err(err(10, "Invalid encoding")),
        };
        // An authorization identity (before the comma) is not supported.
        let bare = match rest.split_once(',') {
            Some(("", bare)) => bare,
            _ => return Err(err(10, "Invalid encoding")),
        };
        let mut user = None;
        let mut client_nonce = None;
        for attr in bare.split(',') {
            match attr.split_once('=') {
                Some(("n", v)) => user = Some(decode_username(v)?),
                Some(("r", v)) => client_nonce = Some(v.to_string()),
                Some(("m", _)) => return Err(err(11, "Extensions not supported")),
                _ => return Err(err(10, "Invalid encoding")),
            }
        }
        let (Some(user), Some(client_nonce)) = (user, client_nonce) else {
            return Err(err(10, "Invalid encoding"));
        };
        if client_nonce.is_empty() {
            return Err(err(10, "Invalid encoding"));
        }
        let (key, known) = match self.users.get(&user) {
            Some(k) => (k.clone(), true),
            None => (
                self.users
                    .decoy
                    .clone()
                    .unwrap_or_else(|| StoredKey::from_password("")),
                false,
            ),
        };
        let mut server_nonce = [0u8; 18];
        rand::thread_rng().fill_bytes(&mut server_nonce);
        let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        let server_first = format!("r={nonce},s={},i={}", B64.encode(&key.salt), key.iterations);
        self.state = State::SentFirst {
            user,
            key,
            known,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first)
    }

    /// Checks the client's proof; returns the server-final message and the user name.
    pub fn step_final(&mut self, client_final: &str) -> Result<(String, String), AuthError> {
        let State::SentFirst {
            user,
            key,
            known,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(err(20, "Other error"));
        };
        let (without_proof, proof_b64) = client_final
            .rsplit_once(",p=")
            .ok_or_else(|| err(10, "Invalid encoding"))?;
        let mut channel_ok = false;
        let mut nonce_ok = false;
        for attr in without_proof.split(',') {
            match attr.split_once('=') {
                Some(("c", v)) => channel_ok = v == "biws",
                Some(("r", v)) => nonce_ok = v == nonce,
                Some(("m", _)) => return Err(err(11, "Extensions not supported")),
                _ => return Err(err(10, "Invalid encoding")),
            }
        }
        if !channel_ok || !nonce_ok {
            return Err(err(10, "Invalid encoding"));
        }
        let proof = B64
            .decode(proof_b64)
            .map_err(|_| err(10, "Invalid encoding"))?;
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac(&key.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        let proof_len_ok = proof.len() == 32;
        for i in 0..32 {
            client_key[i] = client_signature[i] ^ proof.get(i).copied().unwrap_or(0);
        }
        let computed: [u8; 32] = Sha256::digest(client_key).into();
        let matches: bool = computed.ct_eq(&key.stored_key).into();
        // Unknown users and wrong passwords fail alike, after the same work.
        if !(matches && proof_len_ok && known) {
            return Err(err(12, "Wrong password"));
        }
        let server_signature = hmac(&key.server_key, auth_message.as_bytes());
        Ok((format!("v={}", B64.encode(server_signature)), user))
    }
}

fn decode_username(v: &str) -> Result<String, AuthError> {
    let mut out = String::new();
    let mut rest = v;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let esc = rest
            .get(i..i + 3)
            .ok_or_else(|| err(18, "Invalid username encoding"))?;
        match esc {
            "=2C" => out.push(','),
            "=3D" => out.push('='),
            _ => return Err(err(18, "Invalid username encoding")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client following RFC 5802, to exercise the server end to end.
    fn client_final(password: &str, client_first_bare: &str, server_first: &str) -> String {
        let attrs: HashMap<&str, &str> = server_first
            .split(',')
            .filter_map(|a| a.split_once('='))
            .collect();
        let salt = B64.decode(attrs["s"]).unwrap();
        let iters: u32 = attrs["i"].parse().unwrap();
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iters, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={}", attrs["r"]);
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = hmac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(sig.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    fn run(users: &UserStore, user: &str, password: &str) -> Result<String, AuthError> {
        let mut s = ScramServer::new(users);
        let bare = format!("n={user},r=abcdefgh");
        let first = s.step_first(&format!("n,,{bare}"))?;
        s.step_final(&client_final(password, &bare, &first))
            .map(|(_, u)| u)
    }

    #[test]
    fn right_password_passes() {
        let users = UserStore::with_admin("");
        assert_eq!(run(&users, "admin", "").unwrap(), "admin");
        let users = UserStore::with_admin("s3cret");
        assert_eq!(run(&users, "admin", "s3cret").unwrap(), "admin");
    }

    #[test]
    fn wrong_password_and_unknown_user_fail_alike() {
        let users = UserStore::with_admin("s3cret");
        let a = run(&users, "admin", "nope").unwrap_err();
        let b = run(&users, "mallory", "s3cret").unwrap_err();
        assert_eq!(a, b);
        assert_eq!(a.code, 12);
    }

    #[test]
    fn malformed_messages_are_rejected() {
        let users = UserStore::with_admin("");
        for bad in [
            "",
            "x",
            "n,,",
            "n,,n=admin",
            "p=tls,,n=a,r=b",
            "n,,n=admin,r=x,m=ext",
            "n,,n=a=ZZ,r=b",
        ] {
            let mut s = ScramServer::new(&users);
            assert!(s.step_first(bad).is_err(), "{bad:?}");
        }
        let mut s = ScramServer::new(&users);
        s.step_first("n,,n=admin,r=abc").unwrap();
        assert!(s.step_final("c=biws,r=wrong,p=AAAA").is_err());
    }

    /// One store for all property cases: building keys runs PBKDF2.
    fn shared_users() -> &'static UserStore {
        static USERS: std::sync::OnceLock<UserStore> = std::sync::OnceLock::new();
        USERS.get_or_init(|| UserStore::with_admin(""))
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_input(a in ".{0,80}", b in ".{0,80}") {
            let mut s = ScramServer::new(shared_users());
            let _ = s.step_first(&a);
            let _ = s.step_final(&b);
        }
    }
}
