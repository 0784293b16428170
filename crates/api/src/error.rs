//! The one error type of weft-api.

use weft_cause::Cause;

#[cfg(test)]
mod tests;

/// What can go wrong between agents and servers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// A join token that does not parse.
    #[error("invalid token: {reason}; use the token from the server's <data-dir>/server/token")]
    InvalidToken {
        /// What is wrong with it.
        reason: String,
    },
    /// The server's CA does not match the hash the token pins.
    #[error(
        "the CA of server {server} has hash {got}, but the token pins {expected}: refusing to talk to it; check --server and use the token from that cluster's <data-dir>/server/token"
    )]
    CaMismatch {
        /// The server URL.
        server: String,
        /// The hash in the token.
        expected: String,
        /// The hash of the CA the server sent.
        got: String,
    },
    /// A server URL that does not parse.
    #[error("invalid server URL {url:?}: {reason}; write it as https://HOST:PORT")]
    InvalidServerUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A server could not be reached or the connection broke.
    #[error("server {url} is unreachable: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// The underlying error.
        reason: String,
    },
    /// The server answered with an error.
    #[error("server {server} refused the request ({status}): {message}")]
    Rejected {
        /// The server URL.
        server: String,
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// A message that breaks the protocol.
    #[error("protocol error: {what}")]
    Protocol {
        /// What was being done or read.
        what: String,
        /// The decoder's or HTTP library's error, if one failed.
        #[source]
        source: Option<Cause>,
    },
    /// Certificates or keys that can't be made or read.
    #[error("certificate error: {what}")]
    Pki {
        /// What was being made or read.
        what: String,
        /// The parser's or generator's error, if one failed.
        #[source]
        source: Option<Cause>,
    },
    /// A TLS configuration that can't be built, or a handshake that failed.
    #[error("TLS error: {what}")]
    Tls {
        /// What was being built or done.
        what: String,
        /// rustls's or the socket's error, if one failed.
        #[source]
        source: Option<Cause>,
    },
}

// === impl ApiError ===

impl ApiError {
    /// A [`ApiError::Protocol`] while doing `what`, caused by `source`.
    pub fn protocol(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> ApiError {
        ApiError::Protocol {
            what: what.into(),
            source: Some(Cause::new(source)),
        }
    }

    /// A [`ApiError::Pki`] while doing `what`, caused by `source`.
    pub fn pki(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> ApiError {
        ApiError::Pki {
            what: what.into(),
            source: Some(Cause::new(source)),
        }
    }

    /// A [`ApiError::Tls`] while doing `what`, caused by `source`.
    pub fn tls(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> ApiError {
        ApiError::Tls {
            what: what.into(),
            source: Some(Cause::new(source)),
        }
    }
}
