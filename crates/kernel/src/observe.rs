//! Reading the kernel back into a [`KernelState`]: the links weft names, their addresses,
//! neighbours, FDB entries and WireGuard peers, weft's routes (protocol 87), the sysctls weft
//! sets and weft's firewall rules. Objects outside that [`Scope`] are never looked at, so they are never
//! planned away.

use std::collections::HashMap;
use std::net::IpAddr;

use futures::TryStreamExt as _;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteVia,
};
use weft_fabric::{
    Address, KernelState, Link, LinkKind, MacAddr, MasqMode, ROUTE_PROTOCOL, Route,
    WgImplementation,
};
use weft_ipam::{Cidr, Family, Ipv4Cidr, Ipv6Cidr};

use crate::cmd::run_blocking;
use crate::wireguard::Candidate;
use crate::{Kernel, KernelError, firewall, sysctl};

#[cfg(test)]
mod tests;

/// What of the kernel is weft's: the links it names, the sysctls it sets and the firewall
/// modes it may have used. [`Kernel::observe`] reads exactly this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Device names weft creates (`flannel.1`, `flannel-v6.1`, `flannel-wg`, `flannel-wg-v6`).
    pub links: Vec<String>,
    /// Sysctl keys in slash form (`net/ipv4/ip_forward`).
    pub sysctls: Vec<String>,
    /// The firewall modes whose rules to read; both by default, so that switching
    /// `--masq-mode` removes the rules of the other one.
    pub masq_modes: Vec<MasqMode>,
}

/// What one observation read, with the names of the links it resolved.
#[derive(Debug)]
pub(crate) struct Observed {
    /// The objects in scope.
    pub(crate) state: KernelState,
    /// Every link's name by index.
    pub(crate) names: HashMap<u32, String>,
    /// The names of the links in scope by index.
    pub(crate) weft_links: HashMap<u32, String>,
}

/// A neighbour or FDB entry on a weft link, as one netlink message describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// `ip neigh`: `ip` has `mac` on `dev`.
    Neighbour {
        /// The device.
        dev: String,
        /// The neighbour's IP.
        ip: IpAddr,
        /// Its MAC.
        mac: MacAddr,
        /// Whether it is permanent (the only kind weft makes).
        permanent: bool,
    },
    /// `bridge fdb ... self`: frames to `mac` on `dev` go to `dst`.
    Fdb {
        /// The device.
        dev: String,
        /// The MAC.
        mac: MacAddr,
        /// The underlay destination.
        dst: IpAddr,
        /// Whether it is permanent (the only kind weft makes).
        permanent: bool,
    },
}

// === impl Scope ===

impl Scope {
    /// Everything weft-fabric's backends create: the vxlan and WireGuard devices (every
    /// backend's, so an agent restarted with another backend removes the old one's), the
    /// forwarding sysctls and the rules of both firewall modes.
    pub fn weft() -> Scope {
        Scope {
            links: vec![
                weft_fabric::vxlan::DEVICE_V4.to_owned(),
                weft_fabric::vxlan::DEVICE_V6.to_owned(),
                weft_fabric::wireguard::DEVICE_V4.to_owned(),
                weft_fabric::wireguard::DEVICE_V6.to_owned(),
            ],
            sysctls: vec![
                "net/ipv4/ip_forward".to_owned(),
                "net/ipv6/conf/all/forwarding".to_owned(),
            ],
            masq_modes: vec![MasqMode::Nftables, MasqMode::Iptables],
        }
    }
}

impl Scope {
    /// [`Scope::weft`] plus the vxlan devices of `vni` (`flannel.VNI`, `flannel-v6.VNI`), for a
    /// cluster whose flannel-conf sets another VNI; the default VNI's devices stay in scope, so
    /// a node whose VNI changed removes them.
    pub fn weft_with_vxlan_vni(vni: u32) -> Scope {
        let mut scope = Scope::weft();
        for family in [weft_ipam::Family::Ipv4, weft_ipam::Family::Ipv6] {
            let name = weft_fabric::vxlan::device_for(family, vni);
            if !scope.links.contains(&name) {
                scope.links.push(name);
            }
        }
        scope
    }
}

impl Default for Scope {
    fn default() -> Scope {
        Scope::weft()
    }
}

impl Kernel {
    /// Reads the part of the kernel that `scope` names into a [`KernelState`].
    ///
    /// The netlink dumps are `ip -d link show`, `ip addr show`, `ip route show table main proto
    /// 87` (both families), `ip neigh show nud permanent` and `bridge fdb show`; sysctls come
    /// from `/proc/sys`; firewall rules from `nft -j list table ip weft` or `iptables -S`.
    pub async fn observe(&self, scope: &Scope) -> Result<KernelState, KernelError> {
        Ok(self.observe_indexed(scope).await?.state)
    }

    /// [`Kernel::observe`], with the link names it resolved on the way.
    pub(crate) async fn observe_indexed(&self, scope: &Scope) -> Result<Observed, KernelError> {
        let mut state = KernelState::default();
        let links = self.dump_links().await?;
        let names: HashMap<u32, String> = links
            .iter()
            .filter_map(|m| Some((m.header.index, link_name(m)?)))
            .collect();
        let mut weft_links: HashMap<u32, String> = HashMap::new();
        let mut wireguard = Vec::new();
        for msg in &links {
            let Some(name) = link_name(msg) else { continue };
            if scope.links.contains(&name) {
                weft_links.insert(msg.header.index, name.clone());
                let implementation = match info_kind(msg) {
                    Some(InfoKind::Wireguard) => Some(WgImplementation::Kernel),
                    Some(InfoKind::Tun) => Some(WgImplementation::Userspace),
                    _ => None,
                };
                if let Some(implementation) = implementation {
                    wireguard.push(Candidate {
                        name: name.clone(),
                        ifindex: msg.header.index,
                        implementation,
                    });
                }
                state
                    .links
                    .insert(name.clone(), observed_link(name, msg, &names));
            }
        }
        self.observe_wireguard(wireguard, &mut state).await?;

        // One dump at a time: the kernel refuses a second dump on a socket (EBUSY) while one
        // is in progress.
        let addresses = self.dump_addresses().await?;
        let routes = self.dump_routes().await?;
        let neighbours = self.dump_neighbours().await?;
        for msg in &addresses {
            if let Some(address) = observed_address(msg, &weft_links) {
                state.addresses.insert(address);
            }
        }
        for msg in &routes {
            if let Some(route) = observed_route(msg, &names) {
                state.add_route(route);
            }
        }
        for msg in &neighbours {
            match neighbour_entry(msg, &weft_links) {
                Some(Entry::Neighbour {
                    dev,
                    ip,
                    mac,
                    permanent: true,
                }) => {
                    state.neighbours.insert((dev, ip), mac);
                }
                Some(Entry::Fdb {
                    dev,
                    mac,
                    dst,
                    permanent: true,
                }) => {
                    state.fdb.insert((dev, mac), dst);
                }
                _ => {}
            }
        }

        for key in &scope.sysctls {
            if let Some(value) = sysctl::read(key)? {
                state.sysctls.insert(key.clone(), value);
            }
        }
        for &mode in &scope.masq_modes {
            for family in [Family::Ipv4, Family::Ipv6] {
                if let Some(table) = run_blocking(move || firewall::observe(family, mode)).await? {
                    state.firewall.insert((family, mode), table);
                }
            }
        }
        Ok(Observed {
            state,
            names,
            weft_links,
        })
    }

    /// `ip link show`: every link.
    pub(crate) async fn dump_links(&self) -> Result<Vec<LinkMessage>, KernelError> {
        self.handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| KernelError::from_netlink("ip link show", e))
    }

    /// `ip addr show`: every address.
    pub(crate) async fn dump_addresses(&self) -> Result<Vec<AddressMessage>, KernelError> {
        self.handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| KernelError::from_netlink("ip addr show", e))
    }

    /// `ip route show table all` for both families, one after the other (filtered by the
    /// callers).
    pub(crate) async fn dump_routes(&self) -> Result<Vec<RouteMessage>, KernelError> {
        let dump = |family| {
            let mut msg = RouteMessage::default();
            msg.header.address_family = family;
            self.handle
                .route()
                .get(msg)
                .execute()
                .try_collect::<Vec<_>>()
        };
        let mut routes = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            routes.extend(
                dump(family)
                    .await
                    .map_err(|e| KernelError::from_netlink("ip route show", e))?,
            );
        }
        Ok(routes)
    }

    /// `ip neigh show` for both families and `bridge fdb show`.
    async fn dump_neighbours(&self) -> Result<Vec<NeighbourMessage>, KernelError> {
        let dump = |family| {
            self.handle
                .neighbours()
                .get()
                .set_address_family(family)
                .execute()
                .try_collect::<Vec<_>>()
        };
        let mut neighbours = Vec::new();
        for family in [
            AddressFamily::Inet,
            AddressFamily::Inet6,
            AddressFamily::Bridge,
        ] {
            neighbours.extend(
                dump(family)
                    .await
                    .map_err(|e| KernelError::from_netlink("ip neigh show", e))?,
            );
        }
        Ok(neighbours)
    }
}

/// The `IFLA_IFNAME` of a link.
pub(crate) fn link_name(msg: &LinkMessage) -> Option<String> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

/// The `IFLA_INFO_KIND` of a link.
fn info_kind(msg: &LinkMessage) -> Option<&InfoKind> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind),
            _ => None,
        }),
        _ => None,
    })
}

/// The MTU of a link.
pub(crate) fn link_mtu(msg: &LinkMessage) -> Option<u32> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    })
}

/// A weft link as the kernel holds it. A device of a type weft does not create keeps its name
/// but gets [`LinkKind::Other`], so the plan replaces it. WireGuard devices get their kind once
/// their configuration is read (`Kernel::observe_wireguard`); until then they are `Other`.
pub(crate) fn observed_link(name: String, msg: &LinkMessage, names: &HashMap<u32, String>) -> Link {
    let mac = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
        _ => None,
    });
    let infos: &[LinkInfo] = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => Some(infos.as_slice()),
            _ => None,
        })
        .unwrap_or(&[]);
    let kind = infos.iter().find_map(|i| match i {
        LinkInfo::Kind(kind) => Some(kind),
        _ => None,
    });
    let vxlan = infos.iter().find_map(|i| match i {
        LinkInfo::Data(InfoData::Vxlan(data)) => Some(data.as_slice()),
        _ => None,
    });
    let kind = match (kind, vxlan, mac) {
        (Some(InfoKind::Vxlan), Some(data), Some(mac)) => vxlan_kind(data, MacAddr(mac), names),
        (kind, _, _) => LinkKind::Other {
            kind: kind.map_or_else(|| "unknown".to_owned(), |k| k.to_string()),
        },
    };
    Link {
        name,
        mtu: link_mtu(msg).unwrap_or(0),
        up: msg.header.flags.contains(LinkFlags::Up),
        kind,
    }
}

/// The creation-time attributes of a vxlan device. A device with learning on, or without a
/// local address or underlay device, is not one weft made: it gets [`LinkKind::Other`].
fn vxlan_kind(data: &[InfoVxlan], mac: MacAddr, names: &HashMap<u32, String>) -> LinkKind {
    let mut vni = None;
    let mut port = None;
    let mut local = None;
    let mut underlay = None;
    let mut learning = true;
    let mut gbp = false;
    for attr in data {
        match attr {
            InfoVxlan::Id(id) => vni = Some(*id),
            InfoVxlan::Port(p) => port = Some(*p),
            InfoVxlan::Local(ip) => local = Some(IpAddr::V4(*ip)),
            InfoVxlan::Local6(ip) => local = Some(IpAddr::V6(*ip)),
            InfoVxlan::Link(index) => underlay = names.get(index).cloned(),
            InfoVxlan::Learning(on) => learning = *on,
            InfoVxlan::Gbp => gbp = true,
            _ => {}
        }
    }
    match (vni, port, local, underlay, learning) {
        (Some(vni), Some(port), Some(local), Some(underlay), false) => LinkKind::Vxlan {
            vni,
            port,
            gbp,
            local,
            underlay,
            mac,
        },
        _ => LinkKind::Other {
            kind: "vxlan (not weft's: learning on, or no local address or underlay)".to_owned(),
        },
    }
}

/// An address on a weft link; IPv6 link-local addresses belong to the kernel and are left out.
pub(crate) fn observed_address(
    msg: &AddressMessage,
    weft_links: &HashMap<u32, String>,
) -> Option<Address> {
    let link = weft_links.get(&msg.header.index)?;
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS the peer's on point-to-point links.
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let addr = local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })?;
    if let IpAddr::V6(v6) = addr
        && v6.is_unicast_link_local()
    {
        return None;
    }
    Some(Address {
        link: link.clone(),
        addr,
        prefix_len: msg.header.prefix_len,
    })
}

/// A route of weft's: main table, protocol 87, unicast, one next hop.
pub(crate) fn observed_route(msg: &RouteMessage, names: &HashMap<u32, String>) -> Option<Route> {
    if msg.header.protocol != RouteProtocol::from(ROUTE_PROTOCOL) {
        return None;
    }
    main_route(msg, names)
}

/// A route of the main table, whoever made it.
pub(crate) fn main_route(msg: &RouteMessage, names: &HashMap<u32, String>) -> Option<Route> {
    let h = &msg.header;
    let table = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(h.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = route_ip(a),
            RouteAttribute::Gateway(a) => gateway = route_ip(a),
            RouteAttribute::Via(RouteVia::Inet(ip)) => gateway = Some(IpAddr::V4(*ip)),
            RouteAttribute::Via(RouteVia::Inet6(ip)) => gateway = Some(IpAddr::V6(*ip)),
            RouteAttribute::Oif(index) => oif = Some(*index),
            _ => {}
        }
    }
    let dst = match (dst, h.address_family) {
        (Some(ip), _) => ip,
        (None, AddressFamily::Inet) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        (None, AddressFamily::Inet6) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        (None, _) => return None,
    };
    let dst = cidr(dst, h.destination_prefix_length)?;
    Some(Route {
        dst,
        gateway,
        // A multipath route has no single device; an empty name never matches a desired one.
        dev: oif.and_then(|i| names.get(&i).cloned()).unwrap_or_default(),
        onlink: h.flags.contains(RouteFlags::Onlink),
    })
}

/// The network `ip/prefix_len`, when no host bits are set.
pub(crate) fn cidr(ip: IpAddr, prefix_len: u8) -> Option<Cidr> {
    match ip {
        IpAddr::V4(a) => Ipv4Cidr::new(a, prefix_len).map(Cidr::V4),
        IpAddr::V6(a) => Ipv6Cidr::new(a, prefix_len).map(Cidr::V6),
    }
}

pub(crate) fn route_ip(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

/// The neighbour or self FDB entry `msg` describes on a weft link.
pub(crate) fn neighbour_entry(
    msg: &NeighbourMessage,
    weft_links: &HashMap<u32, String>,
) -> Option<Entry> {
    let h = &msg.header;
    let dev = weft_links.get(&h.ifindex)?;
    let permanent = h.state == NeighbourState::Permanent;
    let mut ip = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(IpAddr::V4(*a)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                ip = Some(IpAddr::V6(*a));
            }
            // FDB entries (family AF_BRIDGE) carry the underlay address as raw bytes.
            NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                ip = raw_ip(bytes);
            }
            NeighbourAttribute::LinkLayerAddress(bytes) => {
                mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr);
            }
            _ => {}
        }
    }
    let (ip, mac) = (ip?, mac?);
    match h.family {
        AddressFamily::Inet | AddressFamily::Inet6 => Some(Entry::Neighbour {
            dev: dev.clone(),
            ip,
            mac,
            permanent,
        }),
        // The all-zero MAC is the default destination (`bridge fdb append 00:00:...`), which
        // weft does not use.
        AddressFamily::Bridge if h.flags.contains(NeighbourFlags::Own) && mac.0 != [0; 6] => {
            Some(Entry::Fdb {
                dev: dev.clone(),
                mac,
                dst: ip,
                permanent,
            })
        }
        _ => None,
    }
}

/// An IPv4 or IPv6 address from its 4 or 16 network-order bytes.
fn raw_ip(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        Some(IpAddr::from(v4))
    } else {
        <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
    }
}
