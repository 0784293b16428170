//! The messages between agents and servers, as JSON over HTTPS.
//!
//! | request | auth | body | response |
//! |---|---|---|---|
//! | `GET /cacerts` | none | | the CA bundle (PEM); agents check it against the token's hash |
//! | `GET /v1-weft/config` | `Authorization: Bearer <token secret>` | | the cluster network (weft-config's JSON) |
//! | `POST /v1-weft/register` | `Authorization: Bearer <token secret>` | [`RegisterRequest`] | [`RegisterResponse`] |
//! | `GET /v1-weft/leases` | node certificate | | [`LeaseSnapshot`] |
//! | `GET /v1-weft/leases?watch=<revision>` | node certificate | | [`LeaseEvent`]s as JSON lines, from after `revision` |
//! | `GET /v1-weft/servers` | node certificate | | the servers' URLs |
//! | `GET /v1-weft/nodes` | admin certificate | | every node as a [`NodeInfo`], with its pod CIDRs |
//! | `DELETE /v1-weft/nodes/<name>` | admin certificate | | deletes the node and its lease |
//! | `PUT /v1-weft/pods` | node certificate | [`PodReport`] | replaces the calling node's pods (egress `cluster` mode); `422` if an IP lies outside its lease |
//!
//! Errors are JSON [`ErrorBody`]s with a matching status.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weft_fabric::{BackendData, Lease};
use weft_ipam::{Ipv4Cidr, Ipv6Cidr};

#[cfg(test)]
mod tests;

/// Where agents fetch the CA bundle.
pub const CACERTS_PATH: &str = "/cacerts";
/// Where agents read the cluster network before they register (K3s's `/v1-k3s/config`).
pub const CONFIG_PATH: &str = "/v1-weft/config";
/// Where agents register.
pub const REGISTER_PATH: &str = "/v1-weft/register";
/// Where agents list and watch leases.
pub const LEASES_PATH: &str = "/v1-weft/leases";
/// Where agents learn every server.
pub const SERVERS_PATH: &str = "/v1-weft/servers";
/// Where the admin lists nodes (`GET`) and deletes one (`DELETE /v1-weft/nodes/<name>`).
pub const NODES_PATH: &str = "/v1-weft/nodes";
/// Where an agent reports the pods on its node (`PUT`), for the egress selector's `cluster`
/// mode; the report replaces every pod the node reported before.
pub const PODS_PATH: &str = "/v1-weft/pods";
/// The most pods one report may hold.
pub const MAX_REPORTED_PODS: usize = 4096;
/// The header that carries the node password at registration.
pub const NODE_PASSWORD_HEADER: &str = "weft-node-password";
/// How often a server sends a [`LeaseEvent::Bookmark`] on an idle lease watch, so both ends
/// notice a dead connection: an agent that reads nothing for [`WATCH_IDLE_TIMEOUT`] reconnects.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(10);
/// How long an agent waits for any byte of a lease watch (three bookmark intervals) before it
/// takes the connection for dead and reconnects.
pub const WATCH_IDLE_TIMEOUT: Duration = Duration::from_secs(3 * BOOKMARK_INTERVAL.as_secs());

/// An agent's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RegisterRequest {
    /// The node name.
    pub node_name: String,
    /// The node's internal IPs, primary family first.
    pub node_ips: Vec<IpAddr>,
    /// The node's external IPs.
    #[serde(default)]
    pub external_ips: Vec<IpAddr>,
    /// What the node's backend publishes (VTEP MACs, ...).
    #[serde(default)]
    pub backend: BackendData,
}

/// The server's answer to a registration.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RegisterResponse {
    /// The node's lease (the same one on every registration of the node).
    pub lease: Lease,
    /// The cluster network settings every node takes from the servers, as weft-config renders
    /// them (`ClusterNetwork::to_json`).
    pub cluster: serde_json::Value,
    /// The node's client certificate (`system:node:<name>`), PEM.
    pub node_cert_pem: String,
    /// Its private key, PEM.
    pub node_key_pem: String,
    /// Every server's base URL, this one first.
    pub servers: Vec<String>,
}

/// One node, as `GET /v1-weft/nodes` lists it: what it registered, and its lease's pod CIDRs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NodeInfo {
    /// The node's name.
    pub name: String,
    /// Its internal IPs (`--node-ip`).
    pub node_ips: Vec<IpAddr>,
    /// Its external IPs (`--node-external-ip`).
    pub external_ips: Vec<IpAddr>,
    /// Its IPv4 pod CIDR; `None` without a lease or IPv4.
    #[serde(default, with = "weft_fabric::opt_display")]
    pub ipv4_cidr: Option<Ipv4Cidr>,
    /// Its IPv6 pod CIDR; `None` without a lease or IPv6.
    #[serde(default, with = "weft_fabric::opt_display")]
    pub ipv6_cidr: Option<Ipv6Cidr>,
    /// When it first registered, in seconds since the Unix epoch.
    pub created_at: u64,
}

/// Every lease, at a store revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LeaseSnapshot {
    /// The revision the snapshot was taken at; watch from here.
    pub revision: u64,
    /// Every lease.
    pub leases: Vec<Lease>,
}

/// One change to the leases, or a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum LeaseEvent {
    /// A lease was added or changed.
    Put {
        /// The store revision of the change.
        revision: u64,
        /// The lease as it is now.
        lease: Lease,
    },
    /// A node's lease was removed.
    Delete {
        /// The store revision of the change.
        revision: u64,
        /// The node whose lease went away.
        node_name: String,
    },
    /// Nothing changed; the stream is alive at this revision.
    Bookmark {
        /// The newest store revision.
        revision: u64,
    },
    /// The revision asked for is older than the store's history: list again.
    Compacted {
        /// The oldest revision still watchable.
        oldest: u64,
    },
}

/// The pods running on the reporting node, as its CNI's IPAM recorded them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PodReport {
    /// Every pod on the node now, at most [`MAX_REPORTED_PODS`].
    pub pods: Vec<ReportedPod>,
}

/// One pod of a [`PodReport`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReportedPod {
    /// The pod's id on its node: the container id the CNI plugins were given.
    pub id: String,
    /// The pod's IPs, each inside the reporting node's lease.
    pub ips: Vec<IpAddr>,
}

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, and what to do about it.
    pub error: String,
}

impl LeaseEvent {
    /// The revision the event carries.
    pub fn revision(&self) -> u64 {
        match self {
            LeaseEvent::Put { revision, .. }
            | LeaseEvent::Delete { revision, .. }
            | LeaseEvent::Bookmark { revision } => *revision,
            LeaseEvent::Compacted { oldest } => *oldest,
        }
    }
}

impl std::fmt::Debug for RegisterResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterResponse")
            .field("lease", &self.lease)
            .field("cluster", &self.cluster)
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}
