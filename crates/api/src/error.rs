//! The one error type of weft-api.

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
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Certificates or keys that can't be made or read.
    #[error("certificate error: {0}")]
    Pki(String),
    /// A TLS configuration that can't be built.
    #[error("TLS error: {0}")]
    Tls(String),
}
