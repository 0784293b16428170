//! The [`Backend`] trait, the node-wide parts every backend shares (sysctls, masquerade rules),
//! and [`desired_state`], which puts them together.

use std::fmt;
use std::net::IpAddr;

use weft_ipam::{Cidr, CidrList, Family};

use crate::claims::{Claim, first_claims};
use crate::firewall::FamilyRules;
use crate::state::{KernelState, MasqMode};
use crate::{BackendData, FabricError, Lease};

/// A pod-network backend: what this node publishes, and the kernel state it wants.
///
/// A backend never touches the kernel; weft-kernel applies the plan computed from its state.
pub trait Backend {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// What this node publishes in its lease for peers.
    fn backend_data(&self) -> BackendData;

    /// The MTU pods get for `family` (the external MTU minus the encapsulation overhead).
    fn mtu(&self, external_mtu: u32, family: Family) -> u32;

    /// Adds the backend's own objects (links, addresses, per-peer objects) for `local` and
    /// `peers` to `state`. A peer that can't be programmed is skipped and reported in
    /// `problems`; only a problem with this node itself is an error.
    fn program(
        &self,
        local: &Lease,
        peers: &[Lease],
        config: &FabricConfig,
        state: &mut KernelState,
        problems: &mut Vec<PeerProblem>,
    ) -> Result<(), FabricError>;
}

/// The backends weft has (flannel's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// No pod network: nothing programmed, no CNI config written.
    None,
    /// VXLAN encapsulation.
    Vxlan,
    /// Routes to each peer's pod CIDR via its node IP; needs one layer-2 network.
    HostGw,
    /// Encrypted WireGuard tunnels to every peer.
    WireguardNative,
}

/// What the fabric needs to know about the node and the cluster, besides leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabricConfig {
    /// The cluster CIDR(s).
    pub cluster: CidrList,
    /// Whether IPv6 pod traffic leaving the cluster is masqueraded (`flannel-ipv6-masq`).
    pub ipv6_masq: bool,
    /// Where masquerade and forward rules go.
    pub masq_mode: MasqMode,
    /// Whether masquerading uses `fully-random` port selection.
    pub fully_random: bool,
    /// The interface fabric traffic leaves by.
    pub external: ExternalInterface,
}

/// The interface fabric traffic leaves by (`flannel-iface`, else the default-route interface).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalInterface {
    /// Its name.
    pub name: String,
    /// Its MTU.
    pub mtu: u32,
    /// The networks directly reachable through it (its connected routes), used to tell
    /// whether a host-gw peer is on the same layer-2 network.
    pub onlink: Vec<Cidr>,
    /// Its own addresses, link-local ones left out, permanent ones first (`ip addr show dev
    /// NAME`): where fabric traffic is sent from. Empty when unknown.
    pub addresses: Vec<IpAddr>,
}

/// The complete desired kernel state of a node, and the peers left out of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    /// The state to reach.
    pub state: KernelState,
    /// Peers that could not be programmed, with the reason.
    pub problems: Vec<PeerProblem>,
}

/// A peer that could not be programmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerProblem {
    /// The peer's node name.
    pub node: String,
    /// Why.
    pub reason: PeerProblemReason,
}

/// Why a peer could not be programmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerProblemReason {
    /// The peer's lease has no public address of a family the cluster uses.
    NoPublicIp {
        /// The family.
        family: Family,
    },
    /// The peer published no VTEP MAC for a family (it runs another backend, or an old agent).
    NoVtepMac {
        /// The family.
        family: Family,
    },
    /// The peer published no WireGuard public key (it runs another backend, or an old agent).
    NoWireguardKey,
    /// host-gw: the peer's address is not on a network directly connected to the interface.
    NotAdjacent {
        /// The peer's address.
        ip: IpAddr,
        /// The external interface.
        interface: String,
    },
    /// The peer claims a value that another node holds: this node, or a peer whose lease was
    /// created first. The peer is dropped whole, so it can't take that node's traffic.
    Claimed {
        /// What the peer claims.
        claim: Claim,
        /// The node that holds it.
        owner: String,
        /// What the owner holds: the same value, or a pod CIDR overlapping the peer's.
        held: Claim,
    },
}

/// Computes the node's complete desired kernel state: the backend's objects, the forwarding
/// sysctls and the masquerade and forward rules. The `none` backend wants nothing at all.
///
/// A peer that claims a value this node or an earlier-created peer holds (a pod CIDR, a public
/// IP, a VTEP MAC, a WireGuard key) is left out and reported: see [`crate::claims`].
pub fn desired_state(
    backend: &dyn Backend,
    local: &Lease,
    peers: &[Lease],
    config: &FabricConfig,
) -> Result<Desired, FabricError> {
    let mut desired = Desired::default();
    if backend.kind() == BackendKind::None {
        return Ok(desired);
    }
    check_local(local, config)?;
    let peers = first_claims(local, &backend.backend_data(), peers, &mut desired.problems);
    backend.program(
        local,
        &peers,
        config,
        &mut desired.state,
        &mut desired.problems,
    )?;

    let state = &mut desired.state;
    if let (Some(cluster), Some(pod)) = (config.cluster.get(Family::Ipv4), local.ipv4_cidr) {
        state
            .sysctls
            .insert("net/ipv4/ip_forward".to_owned(), "1".to_owned());
        let rules = FamilyRules {
            cluster,
            pod: Cidr::V4(pod),
            masquerade: true,
            fully_random: config.fully_random,
        };
        state.firewall.insert(
            (Family::Ipv4, config.masq_mode),
            rules.table(config.masq_mode),
        );
    }
    if let (Some(cluster), Some(pod)) = (config.cluster.get(Family::Ipv6), local.ipv6_cidr) {
        state
            .sysctls
            .insert("net/ipv6/conf/all/forwarding".to_owned(), "1".to_owned());
        let rules = FamilyRules {
            cluster,
            pod: Cidr::V6(pod),
            masquerade: config.ipv6_masq,
            fully_random: config.fully_random,
        };
        state.firewall.insert(
            (Family::Ipv6, config.masq_mode),
            rules.table(config.masq_mode),
        );
    }
    Ok(desired)
}

/// Checks that this node's lease covers every family of the cluster, inside the cluster CIDR.
fn check_local(local: &Lease, config: &FabricConfig) -> Result<(), FabricError> {
    let families = [
        (Family::Ipv4, local.ipv4_cidr.map(Cidr::V4)),
        (Family::Ipv6, local.ipv6_cidr.map(Cidr::V6)),
    ];
    for (family, cidr) in families {
        match (config.cluster.get(family), cidr) {
            (Some(_), None) => {
                return Err(FabricError::LeaseMissingFamily {
                    node: local.node_name.clone(),
                    family,
                });
            }
            (Some(cluster), Some(cidr)) if !cluster.contains_cidr(cidr) => {
                return Err(FabricError::LeaseOutsideCluster {
                    node: local.node_name.clone(),
                    cidr,
                    cluster,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// The public address of `family` of a peer, or a problem report.
pub(crate) fn peer_public_ip(peer: &Lease, family: Family) -> Result<IpAddr, PeerProblem> {
    let ip = match family {
        Family::Ipv4 => peer.public_ipv4.map(IpAddr::V4),
        Family::Ipv6 => peer.public_ipv6.map(IpAddr::V6),
    };
    ip.ok_or_else(|| PeerProblem {
        node: peer.node_name.clone(),
        reason: PeerProblemReason::NoPublicIp { family },
    })
}

/// A lease's pod CIDR of `family`.
pub(crate) fn lease_cidr(lease: &Lease, family: Family) -> Option<Cidr> {
    match family {
        Family::Ipv4 => lease.ipv4_cidr.map(Cidr::V4),
        Family::Ipv6 => lease.ipv6_cidr.map(Cidr::V6),
    }
}

// === impl ExternalInterface ===

impl ExternalInterface {
    /// The interface's first address of `family` (flannel's `IfaceAddr`).
    pub fn address(&self, family: Family) -> Option<IpAddr> {
        self.addresses
            .iter()
            .copied()
            .find(|ip| Family::of(*ip) == family)
    }

    /// The address this node sends `family` fabric traffic from: its public IP (the one peers
    /// send to) when the interface holds it or nothing is known about the interface's
    /// addresses, else the interface's first address of the family, as flannel does. The two
    /// differ with `flannel-external-ip` when the external IP belongs to a NAT in front of the
    /// node: the kernel sends nothing from an address the node does not have.
    pub fn source_for(&self, public: IpAddr) -> IpAddr {
        if self.addresses.is_empty() || self.addresses.contains(&public) {
            return public;
        }
        self.address(Family::of(public)).unwrap_or(public)
    }
}

// === impl BackendKind ===

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::None => "none",
            BackendKind::Vxlan => "vxlan",
            BackendKind::HostGw => "host-gw",
            BackendKind::WireguardNative => "wireguard-native",
        })
    }
}

// === impl PeerProblem ===

impl fmt::Display for PeerProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let node = &self.node;
        match &self.reason {
            PeerProblemReason::NoPublicIp { family } => write!(
                f,
                "node {node} is skipped: its lease has no {family} public address; set --node-ip (or --node-external-ip with flannel-external-ip) on that node"
            ),
            PeerProblemReason::NoVtepMac { family } => write!(
                f,
                "node {node} is skipped: it published no {family} VTEP MAC; every node must run the vxlan backend"
            ),
            PeerProblemReason::NoWireguardKey => write!(
                f,
                "node {node} is skipped: it published no WireGuard public key; every node must run the wireguard-native backend"
            ),
            PeerProblemReason::NotAdjacent { ip, interface } => write!(
                f,
                "node {node} is skipped: its address {ip} is not on a network directly connected to {interface}; host-gw requires every node on one layer-2 network (use vxlan or wireguard-native across routed networks)"
            ),
            PeerProblemReason::Claimed { claim, owner, held } => {
                if claim == held {
                    write!(
                        f,
                        "node {node} is skipped: its {claim} is already held by node {owner}"
                    )?;
                } else {
                    write!(
                        f,
                        "node {node} is skipped: its {claim} overlaps {held} of node {owner}"
                    )?;
                }
                write!(
                    f,
                    ", and a node may not take another's traffic; give {node} its own or delete it (weft-server node delete {node})"
                )
            }
        }
    }
}
