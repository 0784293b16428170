//! The one error type of weft-node.

use std::path::PathBuf;

/// What stops an agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A file of the agent's could not be read or written.
    #[error("{path}{hint}")]
    File {
        /// The file.
        path: PathBuf,
        /// What the file must be, when that is the fix (`; token-file must name a readable
        /// file holding the token`), or nothing.
        hint: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file of the agent's holds something it can't use.
    #[error("{path} is damaged: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong, and the fix.
        reason: String,
    },
    /// Talking to the servers failed.
    #[error(transparent)]
    Api(#[from] weft_api::ApiError),
    /// The servers' cluster network settings can't be used.
    #[error("the cluster network the servers sent is not usable: {reason}")]
    BadClusterConfig {
        /// What is wrong.
        reason: String,
    },
    /// This node does not fit the cluster network the servers sent (one line per problem,
    /// each naming the setting and the fix).
    #[error("{}", errors.join("\n"))]
    ClusterMismatch {
        /// Each problem.
        errors: Vec<String>,
    },
    /// The lease source has no lease for this node.
    #[error("{source_name} has no lease for node {node}; add one, or check --node-name")]
    NoLease {
        /// The node.
        node: String,
        /// Where leases come from.
        source_name: String,
    },
    /// Neither `token` nor `token-file` is set.
    #[error(
        "no join token: set --token (K3S_TOKEN) or --token-file (K3S_TOKEN_FILE) to the token from the server's <data-dir>/server/token"
    )]
    NoToken,
    /// Leases were asked for before registering, or a read-only source found no saved
    /// registration of the node.
    #[error("the node is not registered yet: start its agent (weft-agent run) first")]
    NotRegistered,
    /// The fabric can't compute this node's state.
    #[error(transparent)]
    Fabric(#[from] weft_fabric::FabricError),
    /// The metrics endpoint could not be bound.
    #[error(
        "can't serve metrics on {addr}: {reason}; set metrics-address to a free address (or port)"
    )]
    MetricsListen {
        /// `metrics-address`.
        addr: std::net::SocketAddr,
        /// The underlying error.
        reason: String,
    },
    /// Programming the kernel failed.
    #[error(transparent)]
    Kernel(#[from] weft_kernel::KernelError),
}
