//! The vxlan backend: `flannel.VNI` (IPv4) and `flannel-v6.VNI` (IPv6), by default VNI 1 and
//! UDP 8472, learning off, and per peer a permanent neighbour, an FDB entry and an onlink
//! route; with `DirectRouting`, a peer on a network the external interface reaches directly
//! gets a plain route via its address instead, as flannel does ([`VxlanSettings`]).

use std::net::IpAddr;

use weft_ipam::Family;

use crate::backend::{PeerProblem, PeerProblemReason, lease_cidr, peer_public_ip};
use crate::state::{Address, KernelState, Link, LinkKind, Route};
use crate::{Backend, BackendData, BackendKind, FabricConfig, FabricError, Lease, MacAddr};

#[cfg(test)]
pub(crate) mod tests;

/// The VXLAN network identifier (flannel's default).
pub const VNI: u32 = 1;
/// The VXLAN UDP port (the Linux default flannel relies on).
pub const PORT: u16 = 8472;
/// The IPv4 VTEP device.
pub const DEVICE_V4: &str = "flannel.1";
/// The IPv6 VTEP device.
pub const DEVICE_V6: &str = "flannel-v6.1";

/// The vxlan backend, with this node's VTEP MACs (kept in the data dir so they survive
/// restarts and reboots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vxlan {
    /// The MAC of the IPv4 device.
    pub mac_v4: MacAddr,
    /// The MAC of the IPv6 device.
    pub mac_v6: MacAddr,
    /// The cluster's vxlan settings (flannel-conf's backend options).
    pub settings: VxlanSettings,
}

/// The vxlan options every node of a cluster shares (flannel's `VNI`, `Port`, `GBP`,
/// `DirectRouting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanSettings {
    /// The VXLAN network identifier; it names the devices.
    pub vni: u32,
    /// The UDP port (`dstport`).
    pub port: u16,
    /// The group policy extension (`gbp`).
    pub gbp: bool,
    /// Whether peers on a directly connected network get a plain route instead of the tunnel.
    pub direct_routing: bool,
}

/// The device of `family` with the default VNI.
pub fn device(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => DEVICE_V4,
        Family::Ipv6 => DEVICE_V6,
    }
}

/// The device of `family` for `vni`, as flannel names it: `flannel.VNI`, `flannel-v6.VNI`.
pub fn device_for(family: Family, vni: u32) -> String {
    match family {
        Family::Ipv4 => format!("flannel.{vni}"),
        Family::Ipv6 => format!("flannel-v6.{vni}"),
    }
}

// === impl VxlanSettings ===

impl Default for VxlanSettings {
    /// flannel's defaults: VNI 1, the kernel's port 8472, no GBP, no direct routing.
    fn default() -> VxlanSettings {
        VxlanSettings {
            vni: VNI,
            port: PORT,
            gbp: false,
            direct_routing: false,
        }
    }
}

/// Encapsulation overhead: outer IP + UDP + VXLAN + inner Ethernet headers. flannel subtracts
/// 50 for IPv6 too, which is 20 bytes short of the 40-byte IPv6 header.
fn overhead(family: Family) -> u32 {
    match family {
        Family::Ipv4 => 50,
        Family::Ipv6 => 70,
    }
}

// === impl Vxlan ===

impl Vxlan {
    fn mac(&self, family: Family) -> MacAddr {
        match family {
            Family::Ipv4 => self.mac_v4,
            Family::Ipv6 => self.mac_v6,
        }
    }
}

impl Backend for Vxlan {
    fn kind(&self) -> BackendKind {
        BackendKind::Vxlan
    }

    fn backend_data(&self) -> BackendData {
        BackendData::Vxlan {
            vtep_mac_ipv4: Some(self.mac_v4),
            vtep_mac_ipv6: Some(self.mac_v6),
        }
    }

    fn mtu(&self, external_mtu: u32, family: Family) -> u32 {
        external_mtu.saturating_sub(overhead(family))
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
            let Some(own) = lease_cidr(local, family) else {
                continue;
            };
            let dev = device_for(family, self.settings.vni);
            let dev = dev.as_str();
            let public =
                local
                    .public_ip(family == Family::Ipv6)
                    .ok_or(FabricError::NoLocalAddress {
                        family,
                        backend: BackendKind::Vxlan,
                    })?;
            // Peers send to the public IP; the VTEP sends from an address this node has.
            let local_ip = config.external.source_for(public);
            state.links.insert(
                dev.to_owned(),
                Link {
                    name: dev.to_owned(),
                    mtu: self.mtu(config.external.mtu, family),
                    up: true,
                    kind: LinkKind::Vxlan {
                        vni: self.settings.vni,
                        port: self.settings.port,
                        gbp: self.settings.gbp,
                        local: local_ip,
                        underlay: config.external.name.clone(),
                        mac: self.mac(family),
                    },
                },
            );
            // A single-address prefix, so no broadcast or subnet routes appear on the device.
            state.addresses.insert(Address {
                link: dev.to_owned(),
                addr: own.network(),
                prefix_len: host_prefix(family),
            });
            for peer in peers {
                let Some(cidr) = lease_cidr(peer, family) else {
                    continue;
                };
                // flannel's DirectRouting: a peer the external interface reaches directly gets
                // `ip route replace CIDR via PUBLIC_IP dev EXT`, the rest the tunnel.
                if self.settings.direct_routing
                    && let Ok(public_ip) = peer_public_ip(peer, family)
                    && config
                        .external
                        .onlink
                        .iter()
                        .any(|net| net.contains(public_ip))
                {
                    state.add_route(Route {
                        dst: cidr,
                        gateway: Some(public_ip),
                        dev: config.external.name.clone(),
                        onlink: false,
                    });
                    continue;
                }
                match peer_objects(peer, family) {
                    Ok((public_ip, mac)) => {
                        let gateway = cidr.network();
                        state.neighbours.insert((dev.to_owned(), gateway), mac);
                        state.fdb.insert((dev.to_owned(), mac), public_ip);
                        state.add_route(Route {
                            dst: cidr,
                            gateway: Some(gateway),
                            dev: dev.to_owned(),
                            onlink: true,
                        });
                    }
                    Err(problem) => problems.push(problem),
                }
            }
        }
        Ok(())
    }
}

/// The public IP and VTEP MAC of a peer for `family`.
fn peer_objects(peer: &Lease, family: Family) -> Result<(IpAddr, MacAddr), PeerProblem> {
    let public_ip = peer_public_ip(peer, family)?;
    let mac = match (&peer.backend, family) {
        (
            BackendData::Vxlan {
                vtep_mac_ipv4: Some(mac),
                ..
            },
            Family::Ipv4,
        )
        | (
            BackendData::Vxlan {
                vtep_mac_ipv6: Some(mac),
                ..
            },
            Family::Ipv6,
        ) => *mac,
        _ => {
            return Err(PeerProblem {
                node: peer.node_name.clone(),
                reason: PeerProblemReason::NoVtepMac { family },
            });
        }
    };
    Ok((public_ip, mac))
}

/// `/32` or `/128`.
fn host_prefix(family: Family) -> u8 {
    match family {
        Family::Ipv4 => 32,
        Family::Ipv6 => 128,
    }
}
