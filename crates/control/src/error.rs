//! The one error type of weft-control.

use std::path::PathBuf;

/// What stops a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] weft_store::StoreError),
    /// Certificates, tokens or TLS failed.
    #[error(transparent)]
    Api(#[from] weft_api::ApiError),
    /// This server's critical settings differ from the cluster's.
    #[error("{}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    CriticalMismatch {
        /// One error per differing setting.
        errors: Vec<weft_config::ConfigError>,
    },
    /// The cluster network stored by the first server can't be read.
    #[error("the cluster network in the store can't be used")]
    StoredNetwork {
        /// What is wrong with it.
        #[source]
        source: weft_config::ConfigError,
    },
    /// The token does not open the cluster's bootstrap record.
    #[error(
        "the token does not match this cluster's: use the token from the first server's <data-dir>/server/token"
    )]
    WrongToken,
    /// A `K10` token pins another CA than the cluster's.
    #[error(
        "the token pins CA hash {pinned}, but this cluster's CA hash is {actual}: use the token from this cluster's <data-dir>/server/token"
    )]
    TokenCaMismatch {
        /// The hash in the token.
        pinned: String,
        /// The cluster's CA hash.
        actual: String,
    },
    /// A server was given an agent token (`K10...::node:...`) as its `--token`.
    #[error(
        "--token is an agent token (K10...::node:...), which joins agents only: give a server the server token from the first server's <data-dir>/server/token"
    )]
    AgentTokenForServer,
    /// `--agent-token` differs from the agent token the cluster already has.
    #[error(
        "--agent-token differs from this cluster's agent token: use the one in an existing server's <data-dir>/server/agent-token, or leave --agent-token unset"
    )]
    AgentTokenMismatch,
    /// `--agent-token` pins another CA than the cluster's.
    #[error(
        "--agent-token pins CA hash {pinned}, but this cluster's CA hash is {actual}: use the one in an existing server's <data-dir>/server/agent-token"
    )]
    AgentTokenCaMismatch {
        /// The hash in the agent token.
        pinned: String,
        /// The cluster's CA hash.
        actual: String,
    },
    /// The bootstrap record could not be encoded.
    #[error("encoding the bootstrap record")]
    BootstrapEncoding(#[source] serde_json::Error),
    /// Encrypting the bootstrap record failed.
    #[error("sealing the bootstrap record failed")]
    BootstrapSeal,
    /// The stored bootstrap record is damaged.
    #[error("the bootstrap record at {key} is damaged ({what}); restore the store from a backup")]
    BootstrapDamaged {
        /// Its store key.
        key: String,
        /// The part that is damaged.
        what: String,
        /// The decoder's error, when a decoder failed.
        #[source]
        source: Option<serde_json::Error>,
    },
    /// A file of the server's could not be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        reason: String,
    },
    /// `<data-dir>/server/api-address`, where a running server records its API's URL, is
    /// missing or unusable.
    #[error(
        "{} {problem}: start weft-server with this data dir first (it records its API's address there at start), or give the server's --data-dir", path.display()
    )]
    NoApiAddress {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The API port could not be bound.
    #[error(
        "can't listen on {addr}: {reason}; is another server running, or is supervisor-port taken?"
    )]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The underlying error.
        reason: String,
    },
}
