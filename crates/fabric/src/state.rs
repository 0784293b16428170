//! The kernel objects weft owns, and a whole set of them: [`KernelState`].
//!
//! The same type describes what the kernel holds (observed by weft-kernel) and what it should
//! hold (computed by a backend); [`crate::plan`] diffs the two.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use weft_ipam::{Cidr, Family};

use crate::MacAddr;
use crate::wireguard::{WgImplementation, WgPeer, WgPublicKey};

/// A set of kernel objects, keyed the way the kernel keys them.
///
/// Observed state holds only objects in weft's scope: links weft names, routes with weft's route
/// protocol, neighbours and FDB entries on weft's links, the peers of weft's WireGuard devices,
/// the sysctls weft sets and weft's own firewall tables.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelState {
    /// Links by name.
    pub links: BTreeMap<String, Link>,
    /// Addresses on weft's links.
    pub addresses: BTreeSet<Address>,
    /// Routes by destination (the main table holds one route per destination).
    pub routes: BTreeMap<Cidr, Route>,
    /// Neighbours by (device, IP).
    pub neighbours: BTreeMap<(String, IpAddr), MacAddr>,
    /// FDB entries by (device, MAC): one destination per MAC, as flannel's `NeighSet` keeps it.
    pub fdb: BTreeMap<(String, MacAddr), IpAddr>,
    /// Sysctl values by key (dotted form, e.g. `net.ipv4.ip_forward`).
    pub sysctls: BTreeMap<String, String>,
    /// weft's firewall rules by family and the tool that holds them.
    pub firewall: BTreeMap<(Family, MasqMode), FirewallTable>,
    /// WireGuard peers by (device, public key).
    pub wg_peers: BTreeMap<(String, WgPublicKey), WgPeer>,
}

/// The desired kernel state, as a backend computes it.
pub type DesiredState = KernelState;

/// A network device weft creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The device name.
    pub name: String,
    /// The MTU.
    pub mtu: u32,
    /// Whether the device is up.
    pub up: bool,
    /// The device type and its creation-time attributes.
    pub kind: LinkKind,
}

/// A device type with the attributes that can only be set when the device is created.
///
/// Two links of different `LinkKind` can't be reconciled in place: the old one is deleted and the
/// new one created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// A VXLAN tunnel endpoint: `ip link add NAME type vxlan id VNI local LOCAL dev UNDERLAY
    /// dstport PORT [gbp] nolearning address MAC`.
    Vxlan {
        /// The VXLAN network identifier.
        vni: u32,
        /// The UDP destination port.
        port: u16,
        /// Whether the group policy extension is on (`gbp`).
        gbp: bool,
        /// The local underlay address.
        local: IpAddr,
        /// The underlay device name.
        underlay: String,
        /// The device MAC (the VTEP MAC peers put in their FDB).
        mac: MacAddr,
    },
    /// A WireGuard device: `ip link add NAME type wireguard` (or a TUN device run by the
    /// userspace implementation inside the agent), then `wg set NAME listen-port PORT
    /// private-key KEY` with the private key of `public_key`, which the agent holds.
    Wireguard {
        /// Who runs the device.
        implementation: WgImplementation,
        /// The UDP port it listens on.
        listen_port: u16,
        /// The public key of its private key.
        public_key: WgPublicKey,
    },
    /// A device of a type weft does not create, found under one of weft's names (observed
    /// only). It never equals a desired kind, so planning deletes it and creates weft's.
    Other {
        /// The kernel's name for the type (`bridge`, `veth`, ...).
        kind: String,
    },
}

/// An address on a device: `ip addr add ADDR/PREFIX dev LINK`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    /// The device name.
    pub link: String,
    /// The address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix_len: u8,
}

/// A route in the main table: `ip route replace DST [via GW] dev DEV [onlink]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// The destination.
    pub dst: Cidr,
    /// The gateway, if any.
    pub gateway: Option<IpAddr>,
    /// The output device.
    pub dev: String,
    /// Whether the gateway is taken as on-link without a covering route.
    pub onlink: bool,
}

/// weft's firewall rules for one family, as the kernel holds them.
///
/// `digest` identifies the rule set: for nftables it is the table's comment (which encodes the
/// rules) once weft-kernel has checked the rule counts; for iptables it is the chains' rules as
/// `iptables -S` prints them. Equal digests mean nothing to do.
///
/// `script` is what installs the rules (an `nft -f` or `iptables-restore` input); it is empty in
/// observed state and not compared.
#[derive(Debug, Clone, Eq)]
pub struct FirewallTable {
    /// What identifies the rule set (see the type's docs).
    pub digest: String,
    /// The input that installs the rules, in desired state.
    pub script: String,
}

/// How masquerade and forward rules are installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum MasqMode {
    /// weft's own nftables tables, replaced in one atomic transaction (the default).
    #[default]
    Nftables,
    /// flannel's iptables chains through `iptables-restore --noflush`.
    Iptables,
}

// === impl KernelState ===

impl KernelState {
    /// How many objects the state holds (links, addresses, routes, neighbours, FDB entries,
    /// sysctls, firewall tables and WireGuard peers).
    pub fn object_count(&self) -> usize {
        self.links.len()
            + self.addresses.len()
            + self.routes.len()
            + self.neighbours.len()
            + self.fdb.len()
            + self.sysctls.len()
            + self.firewall.len()
            + self.wg_peers.len()
    }

    /// Adds a route, keyed by destination.
    pub fn add_route(&mut self, route: Route) {
        self.routes.insert(route.dst, route);
    }
}

// === impl Link ===

impl Link {
    /// The VTEP MAC of a vxlan link.
    pub fn mac(&self) -> Option<MacAddr> {
        match &self.kind {
            LinkKind::Vxlan { mac, .. } => Some(*mac),
            LinkKind::Wireguard { .. } | LinkKind::Other { .. } => None,
        }
    }
}

impl fmt::Display for LinkKind {
    /// The `ip link add` arguments after the device name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkKind::Vxlan {
                vni,
                port,
                gbp,
                local,
                underlay,
                mac,
            } => write!(
                f,
                "type vxlan id {vni} local {local} dev {underlay} dstport {port}{} nolearning address {mac}",
                if *gbp { " gbp" } else { "" }
            ),
            LinkKind::Wireguard {
                implementation,
                listen_port,
                public_key,
            } => write!(
                f,
                "type wireguard ({implementation}) listen-port {listen_port} public-key {public_key}"
            ),
            LinkKind::Other { kind } => write!(f, "type {kind}"),
        }
    }
}

impl PartialEq for FirewallTable {
    fn eq(&self, other: &FirewallTable) -> bool {
        self.digest == other.digest
    }
}

impl fmt::Display for MasqMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MasqMode::Nftables => "nftables",
            MasqMode::Iptables => "iptables",
        })
    }
}

impl std::str::FromStr for MasqMode {
    type Err = crate::FabricError;

    fn from_str(s: &str) -> Result<MasqMode, crate::FabricError> {
        match s {
            "nftables" => Ok(MasqMode::Nftables),
            "iptables" => Ok(MasqMode::Iptables),
            _ => Err(crate::FabricError::InvalidMasqMode {
                value: s.to_owned(),
            }),
        }
    }
}
