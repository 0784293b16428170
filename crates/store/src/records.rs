//! The records of cluster state and the typed views the [`Store`](crate::Store) returns: nodes,
//! pods and leases (the lease type itself is [`weft_fabric::Lease`]), each with its revision.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::stream::BoxStream;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use weft_fabric::{BackendData, Lease, MacAddr, WgPublicKey};
use weft_ipam::{DEFAULT_NODE_CIDR_MASK_SIZE_IPV4, DEFAULT_NODE_CIDR_MASK_SIZE_IPV6, NodeCidrs};

use crate::{KeyValue, Revision, StoreError, keys};

#[cfg(test)]
mod tests;

/// A node of the cluster, as its server registered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NodeRecord {
    /// The node name.
    pub name: String,
    /// A hash of the node's password (never the password), so no other machine can claim the
    /// name. weft-api makes and checks it; the store keeps it as given.
    pub password_hash: String,
    /// The node's internal IPs, primary family first.
    #[serde(default)]
    pub node_ips: Vec<IpAddr>,
    /// The node's external IPs.
    #[serde(default)]
    pub external_ips: Vec<IpAddr>,
    /// When the node first registered.
    pub created_at: UnixTime,
    /// The SHA-256 fingerprint of the client certificate its server issued it last: the only
    /// node certificate the servers accept from it. `None` in records from before fingerprints,
    /// until the node registers again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_fingerprint: Option<String>,
    /// The claim keys the node holds (see [`Claim`]), written with the record so a changed
    /// identity releases what it no longer uses. The store keeps it; callers leave it empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<String>,
}

/// A value that identifies one node and that no other live node may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// An internal node IP (`--node-ip`).
    NodeIp(IpAddr),
    /// An external node IP (`--node-external-ip`); one index with the internal IPs.
    ExternalIp(IpAddr),
    /// The MAC of a VTEP device, either family.
    VtepMac(MacAddr),
    /// The node's WireGuard public key.
    WireguardKey(WgPublicKey),
}

/// A pod and the node it runs on, for the egress selector's `cluster` mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PodRecord {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The node it runs on.
    pub node: String,
    /// The pod's IPs.
    #[serde(default)]
    pub ips: Vec<IpAddr>,
}

/// Seconds since the Unix epoch, stored as a plain number.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixTime(pub u64);

/// A record and the revision that last changed it (compare against it to update safely).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The record.
    pub value: T,
    /// Its key's mod revision.
    pub revision: Revision,
}

/// Every record of one kind and the revision they were read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed<T> {
    /// The records, in key order.
    pub items: Vec<Versioned<T>>,
    /// The store revision of the read: watch from it to follow every later change.
    pub revision: Revision,
    /// Records that did not parse, left out of `items` so one damaged record does not hide
    /// the others. Log them; deleting the node removes them.
    pub corrupt: Vec<CorruptRecord>,
}

/// A stored record that does not parse, or does not match its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord {
    /// The key.
    pub key: String,
    /// What the record should be, e.g. `lease`.
    pub what: &'static str,
    /// What failed.
    pub reason: String,
}

/// A change to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<T> {
    /// The record was created or changed.
    Put {
        /// The record's name: the node name, or `namespace/name` for a pod.
        name: String,
        /// The record.
        value: T,
        /// The change's revision.
        revision: Revision,
    },
    /// The record was deleted.
    Delete {
        /// The record's name: the node name, or `namespace/name` for a pod.
        name: String,
        /// The deletion's revision.
        revision: Revision,
    },
}

/// The changes to one kind of record at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedBatch<T> {
    /// The revision: resume a watch from here.
    pub revision: Revision,
    /// The changes. Empty only when every record changed at this revision was corrupt (each
    /// was reported as an error just before this batch).
    pub events: Vec<Event<T>>,
}

/// A watch on one kind of record; see [`Store::watch_leases`](crate::Store::watch_leases).
pub type TypedWatch<T> = BoxStream<'static, Result<TypedBatch<T>, StoreError>>;

/// Whether a create-if-absent wrote the record or found one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created<T> {
    /// The record did not exist and was written.
    Created(Versioned<T>),
    /// A record existed and was left as it is.
    Existing(Versioned<T>),
}

/// What a node publishes in its lease, beside the CIDRs its server picks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseAttrs {
    /// The IPv4 address peers send fabric traffic to.
    pub public_ipv4: Option<Ipv4Addr>,
    /// The IPv6 address peers send fabric traffic to.
    pub public_ipv6: Option<Ipv6Addr>,
    /// What the node's backend published (VTEP MACs and so on).
    pub backend: BackendData,
}

/// The node CIDR mask size of each family (`--node-cidr-mask-size-ipv4`/`-ipv6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeMaskSizes {
    /// The IPv4 node CIDR prefix length.
    pub ipv4: u8,
    /// The IPv6 node CIDR prefix length.
    pub ipv6: u8,
}

/// What [`Store::allocate_lease`](crate::Store::allocate_lease) returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseAllocation {
    /// The node's lease.
    pub lease: Lease,
    /// The revision that last changed it.
    pub revision: Revision,
    /// Whether CIDRs were allocated now (else the node already had this lease).
    pub created: bool,
}

// === impl Claim ===

impl Claim {
    /// What `node` publishes that must be its own: its IPs, VTEP MACs and WireGuard key.
    pub fn of_node(
        node_ips: &[IpAddr],
        external_ips: &[IpAddr],
        backend: &BackendData,
    ) -> Vec<Claim> {
        let mut claims: Vec<Claim> = node_ips.iter().copied().map(Claim::NodeIp).collect();
        claims.extend(external_ips.iter().copied().map(Claim::ExternalIp));
        match backend {
            BackendData::Vxlan {
                vtep_mac_ipv4,
                vtep_mac_ipv6,
            } => claims.extend(
                vtep_mac_ipv4
                    .iter()
                    .chain(vtep_mac_ipv6)
                    .copied()
                    .map(Claim::VtepMac),
            ),
            BackendData::Wireguard { public_key, .. } => {
                claims.push(Claim::WireguardKey(*public_key));
            }
            _ => {}
        }
        claims
    }

    /// The claim's key in the index.
    pub fn key(&self) -> String {
        match self {
            Claim::NodeIp(ip) | Claim::ExternalIp(ip) => format!("{}ip/{ip}", keys::CLAIMS),
            Claim::VtepMac(mac) => format!("{}vtep-mac/{mac}", keys::CLAIMS),
            Claim::WireguardKey(key) => format!(
                "{}wireguard-key/{}",
                keys::CLAIMS,
                key.to_string().replace('+', "-").replace('/', "_")
            ),
        }
    }

    /// Why `owner` holding this claim stops another node, and what to do about it.
    pub fn conflict(&self, owner: &str) -> String {
        let fix = |what: &str| format!("{what}, or delete {owner} first");
        match self {
            Claim::NodeIp(ip) => format!(
                "{ip} is already node {owner}'s address; {}",
                fix("give this node its own --node-ip")
            ),
            Claim::ExternalIp(ip) => format!(
                "{ip} is already node {owner}'s address; {}",
                fix("give this node its own --node-external-ip")
            ),
            Claim::VtepMac(mac) => format!(
                "VTEP MAC {mac} is already node {owner}'s; {}",
                fix("delete this node's <data-dir>/agent/vtep-macs.json so it makes its own")
            ),
            Claim::WireguardKey(key) => format!(
                "WireGuard public key {key} is already node {owner}'s; {}",
                fix("delete this node's <data-dir>/agent/wireguard-key so it makes its own")
            ),
        }
    }
}

// === impl CorruptRecord ===

impl CorruptRecord {
    /// The record as an error, with the same message as [`StoreError::Corrupt`].
    pub fn into_error(self) -> StoreError {
        StoreError::Corrupt {
            key: self.key,
            what: self.what,
            reason: self.reason,
        }
    }
}

impl fmt::Display for CorruptRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.clone().into_error().fmt(f)
    }
}

// === impl UnixTime ===

impl UnixTime {
    /// The current time (0 if the clock is before 1970).
    pub fn now() -> UnixTime {
        UnixTime(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        )
    }
}

// === impl LeaseAttrs ===

impl LeaseAttrs {
    /// The attributes a lease holds.
    pub fn of(lease: &Lease) -> LeaseAttrs {
        LeaseAttrs {
            public_ipv4: lease.public_ipv4,
            public_ipv6: lease.public_ipv6,
            backend: lease.backend.clone(),
        }
    }

    /// A lease for `node` with these attributes and `cidrs`, not yet stored (its creation
    /// revision is 0).
    pub fn lease(&self, node: &str, cidrs: NodeCidrs) -> Lease {
        Lease {
            node_name: node.to_owned(),
            ipv4_cidr: cidrs.ipv4,
            ipv6_cidr: cidrs.ipv6,
            public_ipv4: self.public_ipv4,
            public_ipv6: self.public_ipv6,
            backend: self.backend.clone(),
            created_revision: 0,
        }
    }
}

// === impl NodeMaskSizes ===

impl Default for NodeMaskSizes {
    /// Kubernetes' defaults: /24 for IPv4, /64 for IPv6.
    fn default() -> Self {
        NodeMaskSizes {
            ipv4: DEFAULT_NODE_CIDR_MASK_SIZE_IPV4,
            ipv6: DEFAULT_NODE_CIDR_MASK_SIZE_IPV6,
        }
    }
}

// --- Records in keys ---

/// A kind of record stored under its own prefix, one key per record.
pub(crate) trait Record: Serialize + DeserializeOwned + Send + 'static {
    /// What the record is, for messages.
    const WHAT: &'static str;
    /// The prefix of its keys.
    const PREFIX: &'static str;
    /// The name that follows the prefix in its key.
    fn name(&self) -> String;
    /// Checks that the record's names can form its key.
    fn check_names(&self) -> Result<(), StoreError>;

    /// The record's key.
    fn key(&self) -> String {
        format!("{}{}", Self::PREFIX, self.name())
    }

    /// Fills what the store keeps in the key rather than in the record, after a read.
    fn stamp(&mut self, _kv: &KeyValue) {}

    /// The record as stored: JSON without what [`Record::stamp`] fills, so a writer can't set it.
    fn encode_stored(&self) -> Result<Vec<u8>, StoreError> {
        encode(Self::WHAT, self)
    }
}

impl Record for NodeRecord {
    const WHAT: &'static str = "node record";
    const PREFIX: &'static str = keys::NODES;

    fn name(&self) -> String {
        self.name.clone()
    }

    fn check_names(&self) -> Result<(), StoreError> {
        keys::check_name("node name", &self.name)
    }
}

impl Record for Lease {
    const WHAT: &'static str = "lease";
    const PREFIX: &'static str = keys::LEASES;

    fn name(&self) -> String {
        self.node_name.clone()
    }

    fn check_names(&self) -> Result<(), StoreError> {
        keys::check_name("node name", &self.node_name)
    }

    /// The creation revision is the key's, whatever the stored JSON says.
    fn stamp(&mut self, kv: &KeyValue) {
        self.created_revision = kv.create_revision.get();
    }

    fn encode_stored(&self) -> Result<Vec<u8>, StoreError> {
        let unstamped = Lease {
            created_revision: 0,
            ..self.clone()
        };
        encode(Self::WHAT, &unstamped)
    }
}

impl Record for PodRecord {
    const WHAT: &'static str = "pod record";
    const PREFIX: &'static str = keys::PODS;

    fn name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn check_names(&self) -> Result<(), StoreError> {
        keys::check_name("pod namespace", &self.namespace)?;
        keys::check_name("pod name", &self.name)?;
        keys::check_name("node name", &self.node)
    }
}

/// Encodes a value as JSON.
pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Encode {
        what,
        reason: e.to_string(),
    })
}

/// Decodes a JSON value read from `key`.
pub(crate) fn decode_json<T: DeserializeOwned>(
    what: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        what,
        reason: format!("it does not parse: {e}"),
    })
}

/// Decodes a record read from the store, checking that it names its own key, and stamps it
/// with the key's metadata ([`Record::stamp`]).
pub(crate) fn decode<T: Record>(kv: &KeyValue) -> Result<Versioned<T>, StoreError> {
    let mut value: T = decode_json(T::WHAT, &kv.key, &kv.value)?;
    value.stamp(kv);
    let key = value.key();
    if key != kv.key {
        return Err(StoreError::Corrupt {
            key: kv.key.clone(),
            what: T::WHAT,
            reason: format!("the record belongs at {key}"),
        });
    }
    Ok(Versioned {
        value,
        revision: kv.mod_revision,
    })
}

/// The record name in a key under `T`'s prefix.
pub(crate) fn name_of<T: Record>(key: &str) -> String {
    key.strip_prefix(T::PREFIX).unwrap_or(key).to_owned()
}
