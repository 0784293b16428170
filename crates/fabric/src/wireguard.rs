//! The wireguard-native backend: `flannel-wg` (IPv4, UDP 51820) and `flannel-wg-v6` (IPv6, UDP
//! 51821), flannel's `separate` mode. Each device holds this node's pod-CIDR address (`/32`,
//! `/128`), one route for the whole cluster CIDR of its family (`scope link`), and one peer per
//! other node: its public key, its public IP and port as the endpoint, its pod CIDR as the only
//! allowed IP, and a persistent keepalive of 25 seconds (K3s's net-conf).
//!
//! What a node publishes is its public key and both listen ports ([`BackendData::Wireguard`]).
//! The private key never enters this crate: a [`LinkKind::Wireguard`] names the device's public
//! key, and weft-kernel, which the agent gave the private key, configures the device with the
//! matching one. So `weft-agent plan` can print a plan without printing a secret.
//!
//! Whether the kernel module or the userspace implementation inside the agent runs a device is
//! part of the desired state ([`WgImplementation`]): the agent resolves `auto` before it plans,
//! and a device of the other implementation is replaced.
//!
//! Read [`WireguardNative`], [`WgPeer`] and [`WgPublicKey`] first.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use weft_ipam::{Cidr, Family};

use crate::backend::{PeerProblem, PeerProblemReason, lease_cidr, peer_public_ip};
use crate::state::{Address, KernelState, Link, LinkKind, Route};
use crate::{Backend, BackendData, BackendKind, FabricConfig, FabricError, Lease};

#[cfg(test)]
mod tests;

/// The IPv4 device.
pub const DEVICE_V4: &str = "flannel-wg";
/// The IPv6 device.
pub const DEVICE_V6: &str = "flannel-wg-v6";
/// The IPv4 device's UDP port (flannel's `ListenPort`).
pub const PORT_V4: u16 = 51820;
/// The IPv6 device's UDP port (flannel's `ListenPortV6`).
pub const PORT_V6: u16 = 51821;
/// The persistent keepalive K3s configures, in seconds.
pub const KEEPALIVE: u16 = 25;
/// What WireGuard adds to a packet: the outer IPv6 header (40), UDP (8), type (4), key index
/// (4), nonce (8) and authentication tag (16). flannel subtracts 80 for both families.
pub const OVERHEAD: u32 = 80;

/// The wireguard-native backend, with this node's public key and the implementation the agent
/// picked for its devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireguardNative {
    /// The public key of this node's devices (both share one key pair, as in flannel).
    pub public_key: WgPublicKey,
    /// Who runs the devices.
    pub implementation: WgImplementation,
    /// The persistent keepalive of every peer, in seconds (0: none).
    pub keepalive: u16,
    /// The listen ports of the IPv4 and IPv6 devices (flannel's `ListenPort`, `ListenPortV6`).
    pub listen_ports: (u16, u16),
    /// Whether every peer gets the cluster's pre-shared key (flannel's `PSK`). The key itself
    /// never enters this crate: weft-kernel holds it, as it holds the private key.
    pub preshared_key: bool,
    /// Which devices carry which family (flannel's `Mode`).
    pub mode: WgMode,
}

/// flannel's wireguard `Mode`: one device per family, or one for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WgMode {
    /// `flannel-wg` for IPv4 on the first port, `flannel-wg-v6` for IPv6 on the second.
    #[default]
    Separate,
    /// `flannel-wg` for both families; each peer's endpoint is its IPv4 address, unless only
    /// IPv6 reaches it without a NAT (flannel's rule, see [`WireguardNative::endpoint_family`]).
    Auto,
    /// `flannel-wg` for both families; endpoints are peers' IPv4 addresses.
    Ipv4,
    /// `flannel-wg` for both families; endpoints are peers' IPv6 addresses.
    Ipv6,
}

/// Who runs a WireGuard device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WgImplementation {
    /// The kernel module (`ip link add NAME type wireguard`).
    Kernel,
    /// The userspace implementation inside the agent process, on a TUN device.
    Userspace,
}

/// A WireGuard public key (Curve25519, 32 bytes), printed in base64 like `wg show`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WgPublicKey(pub [u8; 32]);

/// One peer of a WireGuard device: `wg set DEV peer KEY endpoint IP:PORT allowed-ips CIDR,...
/// persistent-keepalive N [preshared-key FILE]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WgPeer {
    /// Where the peer's device listens.
    pub endpoint: SocketAddr,
    /// The destinations routed to this peer (its pod CIDRs of the device's family).
    pub allowed_ips: BTreeSet<Cidr>,
    /// The persistent keepalive in seconds (0: off).
    pub keepalive: u16,
    /// Whether the peer has the cluster's pre-shared key.
    pub preshared_key: bool,
}

/// The device of `family`.
pub fn device(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => DEVICE_V4,
        Family::Ipv6 => DEVICE_V6,
    }
}

/// The listen port of `family`'s device.
pub fn port(family: Family) -> u16 {
    match family {
        Family::Ipv4 => PORT_V4,
        Family::Ipv6 => PORT_V6,
    }
}

// === impl WireguardNative ===

impl Backend for WireguardNative {
    fn kind(&self) -> BackendKind {
        BackendKind::WireguardNative
    }

    fn backend_data(&self) -> BackendData {
        BackendData::Wireguard {
            public_key: self.public_key,
            port_ipv4: self.listen_port(Family::Ipv4),
            port_ipv6: self.listen_port(Family::Ipv6),
        }
    }

    fn mtu(&self, external_mtu: u32, _family: Family) -> u32 {
        external_mtu.saturating_sub(OVERHEAD)
    }

    fn program(
        &self,
        local: &Lease,
        peers: &[Lease],
        config: &FabricConfig,
        state: &mut KernelState,
        problems: &mut Vec<PeerProblem>,
    ) -> Result<(), FabricError> {
        for family in [Family::Ipv4, Family::Ipv6] {
            let (Some(own), Some(cluster)) =
                (lease_cidr(local, family), config.cluster.get(family))
            else {
                continue;
            };
            let single = self.mode != WgMode::Separate;
            let dev = if single { DEVICE_V4 } else { device(family) };
            state.links.insert(
                dev.to_owned(),
                Link {
                    name: dev.to_owned(),
                    mtu: self.mtu(config.external.mtu, family),
                    up: true,
                    kind: LinkKind::Wireguard {
                        implementation: self.implementation,
                        listen_port: self.listen_port(family),
                        public_key: self.public_key,
                    },
                },
            );
            state.addresses.insert(Address {
                link: dev.to_owned(),
                addr: own.network(),
                prefix_len: match family {
                    Family::Ipv4 => 32,
                    Family::Ipv6 => 128,
                },
            });
            // `ip route replace CLUSTER dev flannel-wg scope link`: one route for every peer;
            // the peers' allowed IPs pick the peer.
            state.add_route(Route {
                dst: cluster,
                gateway: None,
                dev: dev.to_owned(),
                onlink: false,
            });
            if single {
                continue;
            }
            for peer in peers {
                let Some(cidr) = lease_cidr(peer, family) else {
                    continue;
                };
                match self.peer(peer, family, cidr) {
                    Ok((key, wg_peer)) => {
                        state.wg_peers.insert((dev.to_owned(), key), wg_peer);
                    }
                    Err(problem) => problems.push(problem),
                }
            }
        }
        if self.mode != WgMode::Separate && state.links.contains_key(DEVICE_V4) {
            for peer in peers {
                match self.single_device_peer(local, peer, config) {
                    Ok(Some((key, wg_peer))) => {
                        state.wg_peers.insert((DEVICE_V4.to_owned(), key), wg_peer);
                    }
                    Ok(None) => {}
                    Err(problem) => problems.push(problem),
                }
            }
        }
        Ok(())
    }
}

impl WireguardNative {
    /// The peer entry of `peer` on the one device of the `auto`, `ipv4` and `ipv6` modes: its
    /// pod CIDRs of both families as allowed IPs, its endpoint in the family the mode picks.
    /// `None` for a peer with no pod CIDR of the cluster's families.
    fn single_device_peer(
        &self,
        local: &Lease,
        peer: &Lease,
        config: &FabricConfig,
    ) -> Result<Option<(WgPublicKey, WgPeer)>, PeerProblem> {
        let cidrs: BTreeSet<Cidr> = [Family::Ipv4, Family::Ipv6]
            .into_iter()
            .filter(|f| config.cluster.get(*f).is_some() && lease_cidr(local, *f).is_some())
            .filter_map(|f| lease_cidr(peer, f))
            .collect();
        let Some(&first) = cidrs.iter().next() else {
            return Ok(None);
        };
        let family = self.endpoint_family(local, peer);
        let (key, mut wg_peer) = self.peer(peer, family, first)?;
        wg_peer.allowed_ips = cidrs;
        Ok(Some((key, wg_peer)))
    }

    /// The family of a peer's endpoint on the single device. `ipv4` and `ipv6` say it; `auto`
    /// follows flannel's `selectMode`: IPv4 when the peer has no IPv6 address, or its IPv4
    /// address is public and this node has one; else IPv6 when both nodes' IPv6 addresses are
    /// public; else IPv4.
    pub fn endpoint_family(&self, local: &Lease, peer: &Lease) -> Family {
        match self.mode {
            WgMode::Ipv4 | WgMode::Separate => Family::Ipv4,
            WgMode::Ipv6 => Family::Ipv6,
            WgMode::Auto => {
                let Some(peer_v6) = peer.public_ipv6 else {
                    return Family::Ipv4;
                };
                if peer.public_ipv4.is_some_and(|ip| !is_private_v4(ip))
                    && local.public_ipv4.is_some()
                {
                    return Family::Ipv4;
                }
                if !is_private_v6(peer_v6) && local.public_ipv6.is_some_and(|ip| !is_private_v6(ip))
                {
                    return Family::Ipv6;
                }
                Family::Ipv4
            }
        }
    }

    /// The peer entry of `peer` on `family`'s device.
    fn peer(
        &self,
        peer: &Lease,
        family: Family,
        cidr: Cidr,
    ) -> Result<(WgPublicKey, WgPeer), PeerProblem> {
        let ip = peer_public_ip(peer, family)?;
        let BackendData::Wireguard {
            public_key,
            port_ipv4,
            port_ipv6,
        } = &peer.backend
        else {
            return Err(PeerProblem {
                node: peer.node_name.clone(),
                reason: PeerProblemReason::NoWireguardKey,
            });
        };
        // A peer that published no port (an old flannel) listens where we do.
        let published = match family {
            Family::Ipv4 => *port_ipv4,
            Family::Ipv6 => *port_ipv6,
        };
        let port = if published == 0 {
            self.listen_port(family)
        } else {
            published
        };
        Ok((
            *public_key,
            WgPeer {
                endpoint: SocketAddr::new(ip, port),
                allowed_ips: BTreeSet::from([cidr]),
                keepalive: self.keepalive,
                preshared_key: self.preshared_key,
            },
        ))
    }

    /// This node's listen port for `family`: its device's, which with one device for both
    /// families is the first port.
    fn listen_port(&self, family: Family) -> u16 {
        match (family, self.mode) {
            (Family::Ipv6, WgMode::Separate) => self.listen_ports.1,
            _ => self.listen_ports.0,
        }
    }
}

// === impl WgImplementation ===

impl fmt::Display for WgImplementation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WgImplementation::Kernel => "kernel",
            WgImplementation::Userspace => "userspace",
        })
    }
}

// === impl WgPublicKey ===

impl fmt::Display for WgPublicKey {
    /// Standard base64 with padding (44 characters), as `wg` prints keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base64_encode(&self.0))
    }
}

impl fmt::Debug for WgPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WgPublicKey({self})")
    }
}

impl FromStr for WgPublicKey {
    type Err = FabricError;

    fn from_str(s: &str) -> Result<WgPublicKey, FabricError> {
        base64_decode_key(s)
            .map(WgPublicKey)
            .ok_or_else(|| FabricError::InvalidWgKey {
                value: s.to_owned(),
            })
    }
}

impl Serialize for WgPublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WgPublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<WgPublicKey, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

// === impl WgPeer ===

impl WgPeer {
    /// The `wg set` arguments after the key: `endpoint IP:PORT allowed-ips A,B
    /// [persistent-keepalive N]`.
    pub(crate) fn wg_args(&self) -> String {
        let ips: Vec<String> = self.allowed_ips.iter().map(ToString::to_string).collect();
        let mut out = format!(
            "endpoint {} allowed-ips {}",
            self.endpoint,
            if ips.is_empty() {
                "\"\"".to_owned()
            } else {
                ips.join(",")
            }
        );
        if self.keepalive != 0 {
            out.push_str(&format!(" persistent-keepalive {}", self.keepalive));
        }
        // The key is a secret: a plan names only that there is one.
        if self.preshared_key {
            out.push_str(" preshared-key <redacted>");
        }
        out
    }
}

/// Standard base64 with padding, as `wg` writes keys.
fn base64_encode(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// A 32-byte key from standard base64 (44 characters with their `=`), or `None`.
fn base64_decode_key(s: &str) -> Option<[u8; 32]> {
    BASE64.decode(s.trim()).ok()?.try_into().ok()
}

/// Go's `IP.IsPrivate` for IPv4: 10/8, 172.16/12, 192.168/16.
fn is_private_v4(ip: std::net::Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    a == 10 || (a == 172 && b & 0xf0 == 16) || (a == 192 && b == 168)
}

/// Go's `IP.IsPrivate` for IPv6: fc00::/7.
fn is_private_v6(ip: std::net::Ipv6Addr) -> bool {
    ip.segments()[0] & 0xfe00 == 0xfc00
}
