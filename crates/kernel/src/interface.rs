//! The interface fabric traffic leaves by: what weft-fabric needs to know about it
//! ([`ExternalInterface`]), and which interface that is when `flannel-iface` is not given
//! ([`DefaultInterface`], from the default route).

use std::net::IpAddr;

use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::route::{RouteAttribute, RouteHeader, RouteMessage, RouteType};
use weft_fabric::ExternalInterface;
use weft_ipam::{Cidr, Family};

use crate::observe::{cidr, link_mtu, link_name, route_ip};
use crate::{Kernel, KernelError};

/// The interface of the default route, and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultInterface {
    /// The interface name.
    pub name: String,
    /// The default route's gateway, if it has one.
    pub gateway: Option<IpAddr>,
    /// The interface's addresses of the family, link-local ones left out, permanent ones first
    /// (flannel takes the first).
    pub addresses: Vec<IpAddr>,
}

impl Kernel {
    /// What weft-fabric needs to know about interface `name`: its MTU and the networks
    /// directly reachable through it, which are the routes without a gateway on it in the
    /// main table (`ip route show dev NAME scope link`, and IPv6 `proto kernel` prefixes) and
    /// its address prefixes (`ip addr show dev NAME`).
    pub async fn external_interface(&self, name: &str) -> Result<ExternalInterface, KernelError> {
        let links = self.dump_links().await?;
        let link = links
            .iter()
            .find(|m| link_name(m).as_deref() == Some(name))
            .ok_or_else(|| KernelError::NoSuchInterface {
                name: name.to_owned(),
            })?;
        let index = link.header.index;
        let mtu = link_mtu(link)
            .filter(|m| *m > 0)
            .ok_or_else(|| KernelError::NoMtu {
                name: name.to_owned(),
            })?;
        let routes = self.dump_routes().await?;
        let addresses = self.dump_addresses().await?;
        let mut onlink: Vec<Cidr> = routes
            .iter()
            .filter_map(|r| connected_network(r, index))
            .chain(addresses.iter().filter_map(|a| address_network(a, index)))
            .collect();
        onlink.sort();
        onlink.dedup();
        Ok(ExternalInterface {
            name: name.to_owned(),
            mtu,
            onlink,
            addresses: own_addresses(&addresses, index, None),
        })
    }

    /// The interface of the `family` default route with the lowest metric (`ip route show
    /// default`), with its addresses of that family.
    pub async fn default_interface(&self, family: Family) -> Result<DefaultInterface, KernelError> {
        let routes = self.dump_routes().await?;
        let best = routes
            .iter()
            .filter_map(|r| default_route(r, family))
            .min_by_key(|(priority, _, _)| *priority)
            .ok_or(KernelError::NoDefaultRoute { family })?;
        let (_, oif, gateway) = best;
        let links = self.dump_links().await?;
        let name = links
            .iter()
            .find(|m| m.header.index == oif)
            .and_then(link_name)
            .ok_or(KernelError::NoDefaultRoute { family })?;
        let addresses = own_addresses(&self.dump_addresses().await?, oif, Some(family));
        Ok(DefaultInterface {
            name,
            gateway,
            addresses,
        })
    }
}

impl Kernel {
    /// The name of the interface that holds `address` (`ip -o addr show to ADDRESS`), for
    /// nodes whose node IP is not on the default-route interface, or that have no default
    /// route at all.
    pub async fn interface_with_address(
        &self,
        address: IpAddr,
    ) -> Result<Option<String>, KernelError> {
        let addresses = self.dump_addresses().await?;
        let Some(index) = addresses
            .iter()
            .find(|a| address_ip(a) == Some(address))
            .map(|a| a.header.index)
        else {
            return Ok(None);
        };
        let links = self.dump_links().await?;
        Ok(links
            .iter()
            .find(|m| m.header.index == index)
            .and_then(link_name))
    }
}

/// A main-table unicast route without a gateway out of `index`: a network on that link.
fn connected_network(msg: &RouteMessage, index: u32) -> Option<Cidr> {
    let h = &msg.header;
    if h.table != RouteHeader::RT_TABLE_MAIN || h.kind != RouteType::Unicast {
        return None;
    }
    let mut dst = None;
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = route_ip(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(_) | RouteAttribute::Via(_) | RouteAttribute::MultiPath(_) => {
                return None;
            }
            _ => {}
        }
    }
    if oif != Some(index) {
        return None;
    }
    // A gateway-less default route (`default dev ppp0`) says nothing about adjacency.
    cidr(dst?, h.destination_prefix_length).filter(|c| c.prefix_len() > 0)
}

/// The network of an address on `index` (`192.0.2.1/24` gives `192.0.2.0/24`).
fn address_network(msg: &AddressMessage, index: u32) -> Option<Cidr> {
    if msg.header.index != index {
        return None;
    }
    let ip = address_ip(msg)?;
    let prefix = msg.header.prefix_len;
    let network = match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    };
    cidr(network, prefix)
}

/// The addresses of interface `index` (of `family`, or all), link-local ones left out,
/// permanent ones first, each group in the kernel's order (flannel takes the first).
fn own_addresses(messages: &[AddressMessage], index: u32, family: Option<Family>) -> Vec<IpAddr> {
    let mut addresses: Vec<(bool, IpAddr)> = messages
        .iter()
        .filter(|a| a.header.index == index)
        .filter_map(|a| {
            let ip = address_ip(a)?;
            let right_family = family.is_none_or(|f| Family::of(ip) == f);
            let link_local = matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local());
            (right_family && !link_local).then_some((!is_permanent(a), ip))
        })
        .collect();
    // Stable: the kernel's order within permanent and within dynamic addresses.
    addresses.sort_by_key(|(dynamic, _)| *dynamic);
    addresses.into_iter().map(|(_, ip)| ip).collect()
}

/// The interface's own address of an address message.
fn address_ip(msg: &AddressMessage) -> Option<IpAddr> {
    let find = |local: bool| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) if local => Some(*ip),
            AddressAttribute::Address(ip) if !local => Some(*ip),
            _ => None,
        })
    };
    find(true).or_else(|| find(false))
}

fn is_permanent(msg: &AddressMessage) -> bool {
    msg.attributes.iter().any(|a| match a {
        AddressAttribute::Flags(flags) => flags.contains(AddressFlags::Permanent),
        _ => false,
    })
}

/// `(metric, oif, gateway)` of a main-table default route of `family`.
fn default_route(msg: &RouteMessage, family: Family) -> Option<(u32, u32, Option<IpAddr>)> {
    let h = &msg.header;
    let want = match family {
        Family::Ipv4 => rtnetlink::packet_route::AddressFamily::Inet,
        Family::Ipv6 => rtnetlink::packet_route::AddressFamily::Inet6,
    };
    if h.address_family != want
        || h.table != RouteHeader::RT_TABLE_MAIN
        || h.kind != RouteType::Unicast
        || h.destination_prefix_length != 0
    {
        return None;
    }
    let mut priority = 0;
    let mut oif = None;
    let mut gateway = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Priority(p) => priority = *p,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(a) => gateway = route_ip(a),
            RouteAttribute::MultiPath(hops) => {
                if let Some(hop) = hops.first() {
                    oif = oif.or(Some(hop.interface_index));
                }
            }
            _ => {}
        }
    }
    Some((priority, oif?, gateway))
}
