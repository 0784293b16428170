//! Leases as the fabric sees them: a node's pod CIDRs, its public addresses and what its backend
//! published for peers.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use weft_ipam::{Ipv4Cidr, Ipv6Cidr};

use crate::FabricError;

/// One node's lease: the input the fabric plans from, for this node and for each peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Lease {
    /// The node's name.
    pub node_name: String,
    /// The node's IPv4 pod CIDR, when the cluster has IPv4.
    #[serde(default, with = "opt_display")]
    pub ipv4_cidr: Option<Ipv4Cidr>,
    /// The node's IPv6 pod CIDR, when the cluster has IPv6.
    #[serde(default, with = "opt_display")]
    pub ipv6_cidr: Option<Ipv6Cidr>,
    /// The IPv4 address peers send fabric traffic to (the external IP with
    /// `flannel-external-ip`, else the node IP).
    #[serde(default)]
    pub public_ipv4: Option<Ipv4Addr>,
    /// The IPv6 address peers send fabric traffic to.
    #[serde(default)]
    pub public_ipv6: Option<Ipv6Addr>,
    /// What the node's backend published.
    #[serde(default)]
    pub backend: BackendData,
    /// The store revision that created the lease (etcd's `create_revision`): weft-store fills
    /// it from the key on every read and watch event and never stores it in the lease itself,
    /// so no client can set it. 0 when unknown (an old server, a static file).
    ///
    /// When two leases claim a value only one node may hold (a VTEP MAC, a public IP, a
    /// WireGuard key, an overlapping pod CIDR), the one created first keeps it, and name order
    /// breaks a tie ([`desired_state`](crate::desired_state)).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub created_revision: u64,
}

/// What a node's backend publishes for its peers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum BackendData {
    /// Nothing published (backend `none`, or not yet known).
    #[default]
    None,
    /// vxlan: the MAC of each VTEP device.
    Vxlan {
        /// The MAC of `flannel.1`.
        #[serde(default, with = "opt_display")]
        vtep_mac_ipv4: Option<MacAddr>,
        /// The MAC of `flannel-v6.1`.
        #[serde(default, with = "opt_display")]
        vtep_mac_ipv6: Option<MacAddr>,
    },
    /// host-gw publishes nothing beyond the public IPs.
    HostGw,
    /// wireguard-native: the public key of both devices and their listen ports (flannel's
    /// `{"PublicKey": ..., "Port": ...}` of backend-data and backend-v6-data).
    Wireguard {
        /// The devices' public key.
        public_key: crate::WgPublicKey,
        /// The port of `flannel-wg`; 0 means the peer's own.
        #[serde(default)]
        port_ipv4: u16,
        /// The port of `flannel-wg-v6`; 0 means the peer's own.
        #[serde(default)]
        port_ipv6: u16,
    },
}

/// An Ethernet MAC address, printed lowercase with colons like `ip link`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

// === impl Lease ===

impl Lease {
    /// The public address of `family`'s fabric traffic, as an `IpAddr`.
    pub fn public_ip(&self, ipv6: bool) -> Option<IpAddr> {
        if ipv6 {
            self.public_ipv6.map(IpAddr::V6)
        } else {
            self.public_ipv4.map(IpAddr::V4)
        }
    }

    /// The node's pod CIDRs, IPv4 first.
    pub fn pod_cidrs(&self) -> Vec<ipnetwork::IpNetwork> {
        let v4 = self
            .ipv4_cidr
            .map(|cidr| ipnetwork::IpNetwork::V4(cidr.as_ipnetwork()));
        let v6 = self
            .ipv6_cidr
            .map(|cidr| ipnetwork::IpNetwork::V6(cidr.as_ipnetwork()));
        v4.into_iter().chain(v6).collect()
    }
}

#[cfg(test)]
mod tests;

/// Whether a revision is unknown (serde leaves such a field out).
fn is_zero(revision: &u64) -> bool {
    *revision == 0
}

// === impl MacAddr ===

impl MacAddr {
    /// A locally administered unicast MAC from 6 random bytes (flannel's `NewHardwareAddr`).
    pub fn local_from(mut bytes: [u8; 6]) -> MacAddr {
        bytes[0] = (bytes[0] & 0xfe) | 0x02;
        MacAddr(bytes)
    }

    /// Whether this is a locally administered unicast MAC.
    pub fn is_local_unicast(self) -> bool {
        self.0[0] & 0x03 == 0x02
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = FabricError;

    fn from_str(s: &str) -> Result<MacAddr, FabricError> {
        let bad = || FabricError::InvalidMac {
            value: s.to_owned(),
        };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

/// Serde for `Option<T>` through `Display`/`FromStr`, so CIDRs and MACs read as strings
/// (`#[serde(default, with = "weft_fabric::opt_display")]`, as weft-api's messages use it too).
pub mod opt_display {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some(v)` as `v`'s `Display` string, `None` as null.
    pub fn serialize<T: Display, S: Serializer>(
        value: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    /// Reads a string with `FromStr`, or null as `None`.
    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}
