//! The one error type of weft-fabric.

use weft_ipam::{Cidr, Family};

use crate::BackendKind;

/// What stops the fabric from computing a node's desired state.
///
/// Problems with single peers are not errors: they are reported as
/// [`crate::PeerProblem`]s and the rest of the fabric goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FabricError {
    /// This node's lease lacks a pod CIDR of a family the cluster uses.
    #[error(
        "the lease of node {node} has no {family} pod CIDR, but the cluster uses {family}; the server must allocate one (re-register the node)"
    )]
    LeaseMissingFamily {
        /// The node.
        node: String,
        /// The missing family.
        family: Family,
    },
    /// This node's pod CIDR is outside the cluster CIDR.
    #[error(
        "the lease of node {node} has pod CIDR {cidr} outside cluster-cidr {cluster}; delete the node so it gets a new lease"
    )]
    LeaseOutsideCluster {
        /// The node.
        node: String,
        /// The pod CIDR.
        cidr: Cidr,
        /// The cluster CIDR.
        cluster: Cidr,
    },
    /// This node has no address of a family its backend needs.
    #[error(
        "the {backend} backend needs an {family} address on this node; set --node-ip (or --node-external-ip with flannel-external-ip)"
    )]
    NoLocalAddress {
        /// The family.
        family: Family,
        /// The backend.
        backend: BackendKind,
    },
    /// A MAC address that does not parse.
    #[error(
        "invalid MAC address {value:?}: write six hex bytes separated by colons, e.g. 02:42:ac:11:00:02"
    )]
    InvalidMac {
        /// The value as given.
        value: String,
    },
    /// A WireGuard public key that does not parse.
    #[error(
        "invalid WireGuard public key {value:?}: write 32 bytes in base64 (44 characters), as `wg pubkey` prints it"
    )]
    InvalidWgKey {
        /// The value as given.
        value: String,
    },
    /// An unknown masquerade mode.
    #[error("invalid masq-mode {value:?}: use nftables or iptables")]
    InvalidMasqMode {
        /// The value as given.
        value: String,
    },
}
