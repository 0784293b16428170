//! Join tokens in K3s's shapes, and node passwords.
//!
//! A secure token is `K10<sha256 of the CA certificate, hex>::server:<secret>`: an agent checks
//! the server's CA against the hash before it sends anything. A bare `<secret>` still works, but
//! the CA is then taken on first use.

use std::fmt;

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::ApiError;

#[cfg(test)]
mod tests;

/// The user part of a server token: it joins servers and agents, and unseals the cluster's
/// bootstrap data.
pub const SERVER_USER: &str = "server";
/// The user part of an agent token (K3s's `node`): it registers agents and nothing else.
pub const AGENT_USER: &str = "node";

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The pinned CA hash (lowercase hex), for a `K10` token.
    pub ca_hash: Option<String>,
    /// The user part of a `K10` token ([`SERVER_USER`] or [`AGENT_USER`]); a bare secret
    /// reads as [`SERVER_USER`].
    pub user: String,
    /// The shared secret.
    pub secret: String,
}

// === impl JoinToken ===

impl JoinToken {
    /// Parses a token as given with `--token`/`K3S_TOKEN`.
    pub fn parse(text: &str) -> Result<JoinToken, ApiError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ApiError::InvalidToken {
                reason: "it is empty".into(),
            });
        }
        let Some(rest) = text.strip_prefix("K10") else {
            return Ok(JoinToken {
                ca_hash: None,
                user: SERVER_USER.into(),
                secret: text.to_owned(),
            });
        };
        let Some((hash, credentials)) = rest.split_once("::") else {
            return Err(ApiError::InvalidToken {
                reason: "a K10 token must read K10<ca-hash>::<user>:<secret>".into(),
            });
        };
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::InvalidToken {
                reason: "the CA hash after K10 must be 64 hex characters".into(),
            });
        }
        let Some((user, secret)) = credentials.split_once(':') else {
            return Err(ApiError::InvalidToken {
                reason: "a K10 token must read K10<ca-hash>::<user>:<secret>".into(),
            });
        };
        if user.is_empty() || secret.is_empty() {
            return Err(ApiError::InvalidToken {
                reason: "the user and secret of a K10 token must not be empty".into(),
            });
        }
        Ok(JoinToken {
            ca_hash: Some(hash.to_ascii_lowercase()),
            user: user.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// A secure server token for `secret`, pinning `ca_hash`.
    pub fn server(ca_hash: &str, secret: &str) -> JoinToken {
        JoinToken {
            ca_hash: Some(ca_hash.to_owned()),
            user: SERVER_USER.into(),
            secret: secret.to_owned(),
        }
    }

    /// A secure agent token (`K10<ca_hash>::node:<secret>`) for `secret`.
    pub fn agent(ca_hash: &str, secret: &str) -> JoinToken {
        JoinToken {
            ca_hash: Some(ca_hash.to_owned()),
            user: AGENT_USER.into(),
            secret: secret.to_owned(),
        }
    }

    /// Whether this is an agent token, which may register agents only.
    pub fn is_agent(&self) -> bool {
        self.user == AGENT_USER
    }
}

impl fmt::Display for JoinToken {
    /// The token text: `K10<hash>::<user>:<secret>`, or the bare secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ca_hash {
            Some(hash) => write!(f, "K10{hash}::{}:{}", self.user, self.secret),
            None => f.write_str(&self.secret),
        }
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_hash", &self.ca_hash)
            .field("user", &self.user)
            .field("secret", &"********")
            .finish()
    }
}

/// A fresh random secret: 32 bytes, lowercase hex.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Lowercase hex of `bytes`.
pub fn hex_encode(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Whether two secrets are equal, in time independent of where they differ.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// A salted hash of a node password for the store: `sha256:<salt>:<digest>`.
///
/// Node passwords are 32 random bytes made by the agent, so a salted SHA-256 is enough; the
/// salt keeps equal passwords from having equal hashes.
pub fn hash_node_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = hex::encode(salt);
    format!("sha256:{salt}:{}", salted_digest(&salt, password))
}

/// Whether `password` matches a hash made by [`hash_node_password`].
pub fn verify_node_password(hash: &str, password: &str) -> bool {
    let mut parts = hash.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("sha256"), Some(salt), Some(digest)) => {
            secrets_equal(&salted_digest(salt, password), digest)
        }
        _ => false,
    }
}

fn salted_digest(salt: &str, password: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    hex::encode(h.finalize())
}
