//! Applying a [`Plan`]: every [`Op`] becomes one rtnetlink request (or one `nft`/`iptables`
//! transaction), sent in the plan's order of phases, with the requests of one phase pipelined.
//!
//! A phase is a run of operations of the same kind (all neighbour replaces, say). Its requests
//! go out back to back on one netlink socket, many per datagram, and the kernel answers only
//! failures plus one acknowledgement per datagram (see [`crate::batch`]). The next phase starts
//! when the last acknowledgement of this one is in. So neighbours and FDB entries are in place
//! before the routes that use them, as the plan orders it, while 5,000 peers cost a few hundred
//! system calls instead of 30,000 (`ip -batch` sends a request and reads its answer per line).
//!
//! Idempotence is deliberate, case by case:
//! - neighbours, FDB entries and routes are sent with `NLM_F_REPLACE` (`ip neigh replace`,
//!   `bridge fdb replace`, `ip route replace`), so they never fail with EEXIST;
//! - an address add that finds the address (EEXIST) and a link add that finds the link (EEXIST,
//!   it appeared after the kernel was observed) are taken as done; the next observation
//!   compares the link's attributes;
//! - a delete that finds nothing (ENOENT, ESRCH, EADDRNOTAVAIL, or a device that is gone and
//!   took the object with it) is taken as done.
//!
//! Everything else that fails is collected, the rest of the plan still runs, and
//! [`KernelError::Apply`] lists the failures.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroI32;
use std::sync::Arc;

use futures::{StreamExt as _, TryStreamExt as _};
use rtnetlink::packet_core::{ErrorMessage, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use rtnetlink::packet_route::address::{AddressHeaderFlags, AddressMessage};
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{RouteMessage, RouteProtocol, RouteScope};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{AddressMessageBuilder, LinkUnspec, LinkVxlan, LinkWireguard, RouteMessageBuilder};
use weft_fabric::{
    Address, Link, LinkKind, MacAddr, Op, Plan, ROUTE_PROTOCOL, Route, WgImplementation,
};

use crate::batch::Request;
use crate::cmd::run_blocking;
use crate::error::ENODEV;
use crate::{Kernel, KernelError, firewall, sysctl};

#[cfg(test)]
mod tests;

/// `EADDRNOTAVAIL`: deleting an address that is not there.
const EADDRNOTAVAIL: i32 = 99;
/// `EINVAL`: a request the kernel (or the message builder) can't make sense of.
const EINVAL: i32 = 22;

impl Kernel {
    /// Applies `plan` in order: phase by phase, each phase's requests pipelined.
    ///
    /// Operations that fail don't stop the others; they come back together as
    /// [`KernelError::Apply`]. Running the same plan twice is harmless (see the module docs).
    pub async fn apply(&self, plan: &Plan) -> Result<(), KernelError> {
        let mut index = self.resolve(plan.ops.iter().flat_map(devices)).await?;
        let mut failed = Vec::new();
        for phase in phases(&plan.ops) {
            match &phase[0] {
                Op::SetSysctl { .. } => {
                    for op in phase {
                        if let Op::SetSysctl { key, value } = op
                            && let Err(e) = sysctl::write(key, value)
                        {
                            failed.push(e);
                        }
                    }
                }
                Op::ReplaceFirewall { .. } | Op::DeleteFirewall { .. } => {
                    for op in phase {
                        if let Err(e) = apply_firewall(op).await {
                            failed.push(e);
                        }
                    }
                }
                Op::ReplaceWgPeer { .. } | Op::DeleteWgPeer { .. } => {
                    failed.extend(self.apply_wg_peers(phase).await);
                }
                Op::AddLink(_) => {
                    // Userspace WireGuard devices are TUNs this process makes; the rest are
                    // netlink requests, and kernel WireGuard links get their key afterwards.
                    let (userspace, netlink): (Vec<&Op>, Vec<&Op>) =
                        phase.iter().partition(|op| is_userspace_link(op));
                    let netlink: Vec<Op> = netlink.into_iter().cloned().collect();
                    failed.extend(self.apply_netlink(&netlink, &index).await?);
                    let kernel_wg: Vec<Link> = netlink
                        .iter()
                        .filter_map(|op| match op {
                            Op::AddLink(link)
                                if matches!(link.kind, LinkKind::Wireguard { .. }) =>
                            {
                                Some(link.clone())
                            }
                            _ => None,
                        })
                        .collect();
                    if !kernel_wg.is_empty() {
                        failed.extend(self.configure_kernel_links(kernel_wg).await);
                    }
                    let userspace: Vec<Link> = userspace
                        .into_iter()
                        .filter_map(|op| match op {
                            Op::AddLink(link) => Some(link.clone()),
                            _ => None,
                        })
                        .collect();
                    if !userspace.is_empty() {
                        failed.extend(self.add_userspace_links(userspace).await);
                    }
                    let added = phase.iter().filter_map(|op| match op {
                        Op::AddLink(link) => Some(link.name.clone()),
                        _ => None,
                    });
                    index.extend(self.resolve(added).await?);
                }
                // Every other operation is one netlink request (listed, so a new operation
                // fails to compile until it has its executor).
                Op::DeleteRoute(_)
                | Op::DeleteNeighbour { .. }
                | Op::DeleteFdb { .. }
                | Op::DeleteAddress(_)
                | Op::DeleteLink { .. }
                | Op::SetLink { .. }
                | Op::AddAddress(_)
                | Op::ReplaceNeighbour { .. }
                | Op::ReplaceFdb { .. }
                | Op::ReplaceRoute(_) => {
                    if let Op::DeleteLink { .. } = &phase[0] {
                        // A userspace WireGuard device stops with its TUN; the delete request
                        // then finds nothing, which is fine.
                        for op in phase {
                            if let Op::DeleteLink { name } = op {
                                self.wireguard.stop_device(name);
                            }
                        }
                    }
                    failed.extend(self.apply_netlink(phase, &index).await?);
                    // Links that went change the names' indices.
                    for op in phase {
                        if let Op::DeleteLink { name } = op {
                            index.remove(name);
                        }
                    }
                }
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(KernelError::Apply {
                total: plan.ops.len(),
                failed,
            })
        }
    }

    /// The indices of the named devices that exist (`ip link show NAME`).
    pub(crate) async fn resolve(
        &self,
        names: impl IntoIterator<Item = String>,
    ) -> Result<HashMap<String, u32>, KernelError> {
        let mut unique: Vec<String> = names.into_iter().collect();
        unique.sort();
        unique.dedup();
        futures::stream::iter(unique)
            .map(|name| async move {
                let found = self
                    .handle
                    .link()
                    .get()
                    .match_name(name.as_str())
                    .execute()
                    .try_next()
                    .await;
                match found {
                    Ok(Some(msg)) => Ok(Some((name, msg.header.index))),
                    Ok(None) => Ok(None),
                    Err(e) => match KernelError::from_netlink(format!("link {name}"), e) {
                        KernelError::Refused { errno: ENODEV, .. }
                        | KernelError::NotFound { .. } => Ok(None),
                        e => Err(e),
                    },
                }
            })
            .buffer_unordered(16)
            .try_filter_map(|found| async move { Ok(found) })
            .try_collect()
            .await
    }

    /// Sends one netlink request per operation of `phase`, pipelined (see [`crate::batch`]),
    /// and returns the failures, in plan order. An `Err` means the socket itself failed.
    pub(crate) async fn apply_netlink(
        &self,
        phase: &[Op],
        index: &HashMap<String, u32>,
    ) -> Result<Vec<KernelError>, KernelError> {
        let mut failed = Vec::new();
        let mut sent: Vec<&Op> = Vec::new();
        let mut requests: Vec<Request> = Vec::new();
        for op in phase {
            match request(op, index) {
                Ok(Some(request)) => {
                    sent.push(op);
                    requests.push(request);
                }
                Ok(None) => {}
                Err(e) => failed.push(e),
            }
        }
        if requests.is_empty() {
            return Ok(failed);
        }
        let batcher = Arc::clone(&self.batcher);
        let run = move || {
            let mut batcher = batcher
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            batcher.run(requests)
        };
        // One datagram (a lease change's few requests) runs here: the kernel handles route
        // netlink requests inside the send, so the acknowledgement is queued when the receive
        // asks for it, and a hop to the blocking pool would cost more than the work.
        let codes = if sent.len() <= crate::batch::CHUNK {
            run()
        } else {
            run_blocking(run).await
        }
        .map_err(|e| KernelError::Socket { kind: e.kind() })?;
        for (op, code) in sent.into_iter().zip(codes) {
            if let Err(e) = outcome(op, code) {
                failed.push(e);
            }
        }
        Ok(failed)
    }
}

/// Whether `op` adds a WireGuard link the userspace implementation runs.
fn is_userspace_link(op: &Op) -> bool {
    matches!(
        op,
        Op::AddLink(Link {
            kind: LinkKind::Wireguard {
                implementation: WgImplementation::Userspace,
                ..
            },
            ..
        })
    )
}

/// The one netlink request of `op` (message and flags), or `None` when there is nothing to
/// send: a delete whose device is gone (the kernel removed the object with it).
fn request(op: &Op, index: &HashMap<String, u32>) -> Result<Option<Request>, KernelError> {
    let object = || describe(op);
    let dev = |name: &str| {
        index
            .get(name)
            .copied()
            .ok_or_else(|| KernelError::NoSuchDevice {
                object: object(),
                device: name.to_owned(),
            })
    };
    let create = NLM_F_CREATE | NLM_F_EXCL;
    let replace = NLM_F_CREATE | NLM_F_REPLACE;
    let request = match op {
        // `ip route del DST via GW dev DEV proto 87`.
        Op::DeleteRoute(route) => {
            let Some(&oif) = index.get(&route.dev) else {
                return Ok(None);
            };
            let mut msg = route_message(route, oif, &object())?;
            // Match any scope, like `ip route del`; the protocol keeps others' routes safe.
            msg.header.scope = RouteScope::NoWhere;
            (RouteNetlinkMessage::DelRoute(msg), 0)
        }
        // `ip neigh del IP dev DEV`.
        Op::DeleteNeighbour { dev: name, ip, .. } => {
            let Some(&ifindex) = index.get(name) else {
                return Ok(None);
            };
            let msg = neighbour_message(ifindex, *ip, None);
            (RouteNetlinkMessage::DelNeighbour(msg), 0)
        }
        // `bridge fdb del MAC dev DEV dst IP self`.
        Op::DeleteFdb {
            dev: name,
            mac,
            dst,
        } => {
            let Some(&ifindex) = index.get(name) else {
                return Ok(None);
            };
            (
                RouteNetlinkMessage::DelNeighbour(fdb_message(ifindex, mac, *dst)),
                0,
            )
        }
        // `ip addr del ADDR/PREFIX dev LINK`.
        Op::DeleteAddress(address) => {
            let Some(&ifindex) = index.get(&address.link) else {
                return Ok(None);
            };
            (
                RouteNetlinkMessage::DelAddress(address_message(address, ifindex)),
                0,
            )
        }
        // `ip link del NAME`.
        Op::DeleteLink { name } => {
            let Some(&ifindex) = index.get(name) else {
                return Ok(None);
            };
            let msg = LinkUnspec::new_with_index(ifindex).build();
            (RouteNetlinkMessage::DelLink(msg), 0)
        }
        // `ip link add NAME mtu MTU up type vxlan ...`.
        Op::AddLink(link) => (
            RouteNetlinkMessage::NewLink(link_message(link, &dev)?),
            create,
        ),
        // `ip link set NAME mtu MTU up|down`.
        Op::SetLink { name, mtu, up } => {
            let builder = LinkUnspec::new_with_index(dev(name)?).mtu(*mtu);
            let builder = if *up { builder.up() } else { builder.down() };
            (RouteNetlinkMessage::SetLink(builder.build()), 0)
        }
        // `ip addr add ADDR/PREFIX dev LINK` (IPv6: `nodad`, the address is ours by lease).
        Op::AddAddress(address) => {
            let mut msg = address_message(address, dev(&address.link)?);
            if address.addr.is_ipv6() {
                msg.header.flags = AddressHeaderFlags::Nodad;
            }
            (RouteNetlinkMessage::NewAddress(msg), create)
        }
        // `ip neigh replace IP lladdr MAC dev DEV nud permanent`.
        Op::ReplaceNeighbour { dev: name, ip, mac } => {
            let msg = neighbour_message(dev(name)?, *ip, Some(mac));
            (RouteNetlinkMessage::NewNeighbour(msg), replace)
        }
        // `bridge fdb replace MAC dev DEV dst IP self permanent`.
        Op::ReplaceFdb {
            dev: name,
            mac,
            dst,
        } => {
            let msg = fdb_message(dev(name)?, mac, *dst);
            (RouteNetlinkMessage::NewNeighbour(msg), replace)
        }
        // `ip route replace DST via GW dev DEV [onlink] proto 87`.
        Op::ReplaceRoute(route) => {
            let msg = route_message(route, dev(&route.dev)?, &object())?;
            (RouteNetlinkMessage::NewRoute(msg), replace)
        }
        _ => return Err(KernelError::Misrouted { op: op.to_string() }),
    };
    Ok(Some(request))
}

/// What the kernel's answer to `op`'s request means: `None` is success, and some failures are
/// the kernel already being where the plan wants it.
fn outcome(op: &Op, code: Option<NonZeroI32>) -> Result<(), KernelError> {
    let Some(code) = code else {
        return Ok(());
    };
    let mut msg = ErrorMessage::default();
    msg.code = Some(code);
    let err = KernelError::from_netlink(describe(op), rtnetlink::Error::NetlinkError(msg));
    let fine = match op {
        // Nothing to delete: done. A device that vanished took its objects along.
        Op::DeleteRoute(_)
        | Op::DeleteNeighbour { .. }
        | Op::DeleteFdb { .. }
        | Op::DeleteLink { .. } => matches!(
            err,
            KernelError::NotFound { .. } | KernelError::Refused { errno: ENODEV, .. }
        ),
        Op::DeleteAddress(_) => matches!(
            err,
            KernelError::NotFound { .. }
                | KernelError::Refused {
                    errno: EADDRNOTAVAIL | ENODEV,
                    ..
                }
        ),
        // The address is there, or the link was created since the kernel was observed; the
        // next observation compares the link's attributes and replaces it if they differ.
        Op::AddAddress(_) | Op::AddLink(_) => err.is_already_exists(),
        _ => false,
    };
    if fine { Ok(()) } else { Err(err) }
}

/// The `RTM_NEWLINK` message that creates `link`.
fn link_message(
    link: &Link,
    dev: &dyn Fn(&str) -> Result<u32, KernelError>,
) -> Result<LinkMessage, KernelError> {
    match &link.kind {
        LinkKind::Vxlan {
            vni,
            port,
            gbp,
            local,
            underlay,
            mac,
        } => {
            let builder = LinkVxlan::new(&link.name, *vni)
                .dev(dev(underlay)?)
                .port(*port)
                .learning(false)
                .address(mac.0.to_vec())
                .mtu(link.mtu);
            // `ip link add ... gbp`: the group policy extension.
            let builder = if *gbp { builder.gbp() } else { builder };
            let builder = match local {
                IpAddr::V4(ip) => builder.local(*ip),
                IpAddr::V6(ip) => builder.local6(*ip),
            };
            let builder = if link.up { builder.up() } else { builder };
            Ok(builder.build())
        }
        // `ip link add NAME mtu MTU up type wireguard`; the key and port follow by generic
        // netlink.
        LinkKind::Wireguard {
            implementation: WgImplementation::Kernel,
            ..
        } => {
            let builder = LinkWireguard::new(&link.name).mtu(link.mtu);
            let builder = if link.up { builder.up() } else { builder };
            Ok(builder.build())
        }
        _ => Err(KernelError::Misrouted {
            op: Op::AddLink(link.clone()).to_string(),
        }),
    }
}

/// A permanent neighbour (`ip neigh`), with its MAC for adds.
fn neighbour_message(ifindex: u32, ip: IpAddr, mac: Option<&MacAddr>) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = family_of(ip);
    msg.header.ifindex = ifindex;
    msg.header.state = NeighbourState::Permanent;
    msg.attributes
        .push(NeighbourAttribute::Destination(neighbour_address(ip)));
    if let Some(mac) = mac {
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    }
    msg
}

/// A permanent self FDB entry (`bridge fdb ... self permanent`; NTF_SELF is `Own`).
fn fdb_message(ifindex: u32, mac: &MacAddr, dst: IpAddr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = ifindex;
    msg.header.flags = NeighbourFlags::Own;
    msg.header.state = NeighbourState::Permanent;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    msg.attributes
        .push(NeighbourAttribute::Destination(neighbour_address(dst)));
    msg
}

/// Runs a firewall operation on the blocking pool.
async fn apply_firewall(op: &Op) -> Result<(), KernelError> {
    let op = op.clone();
    run_blocking(move || match op {
        Op::ReplaceFirewall {
            family,
            mode,
            table,
        } => firewall::replace(family, mode, &table),
        Op::DeleteFirewall { family, mode } => firewall::delete(family, mode),
        other => Err(KernelError::Misrouted {
            op: other.to_string(),
        }),
    })
    .await
}

/// Splits `ops` into runs of the same kind of operation.
fn phases(ops: &[Op]) -> Vec<&[Op]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=ops.len() {
        if i == ops.len() || std::mem::discriminant(&ops[i]) != std::mem::discriminant(&ops[start])
        {
            if start < i {
                out.push(&ops[start..i]);
            }
            start = i;
        }
    }
    out
}

/// The device names an operation refers to.
fn devices(op: &Op) -> Vec<String> {
    match op {
        Op::DeleteRoute(r) | Op::ReplaceRoute(r) => vec![r.dev.clone()],
        Op::DeleteNeighbour { dev, .. }
        | Op::DeleteFdb { dev, .. }
        | Op::ReplaceNeighbour { dev, .. }
        | Op::ReplaceFdb { dev, .. } => vec![dev.clone()],
        Op::DeleteAddress(a) | Op::AddAddress(a) => vec![a.link.clone()],
        Op::DeleteLink { name } | Op::SetLink { name, .. } => vec![name.clone()],
        Op::AddLink(link) => match &link.kind {
            LinkKind::Vxlan { underlay, .. } => vec![underlay.clone()],
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// What an operation is about, for error messages: `route 10.42.2.0/24 via 10.42.2.0 dev
/// flannel.1`, `neighbour 10.42.2.0 dev flannel.1`, ...
pub(crate) fn describe(op: &Op) -> String {
    match op {
        Op::DeleteRoute(r) | Op::ReplaceRoute(r) => describe_route(r),
        Op::DeleteNeighbour { dev, ip, .. } => format!("neighbour {ip} dev {dev}"),
        Op::ReplaceNeighbour { dev, ip, mac } => format!("neighbour {ip} lladdr {mac} dev {dev}"),
        Op::DeleteFdb { dev, mac, dst } | Op::ReplaceFdb { dev, mac, dst } => {
            format!("fdb entry {mac} dst {dst} dev {dev}")
        }
        Op::DeleteAddress(a) | Op::AddAddress(a) => {
            format!("address {}/{} dev {}", a.addr, a.prefix_len, a.link)
        }
        Op::DeleteLink { name } | Op::SetLink { name, .. } => format!("link {name}"),
        Op::AddLink(link) => format!("link {} ({})", link.name, link.kind),
        Op::SetSysctl { key, .. } => format!("sysctl {key}"),
        Op::DeleteWgPeer { dev, public_key } => format!("WireGuard peer {public_key} dev {dev}"),
        Op::ReplaceWgPeer {
            dev,
            public_key,
            peer,
        } => format!(
            "WireGuard peer {public_key} endpoint {} dev {dev}",
            peer.endpoint
        ),
        Op::DeleteFirewall { family, mode } | Op::ReplaceFirewall { family, mode, .. } => {
            format!("{family} {mode} rules")
        }
    }
}

fn describe_route(r: &Route) -> String {
    let mut s = format!("route {}", r.dst);
    if let Some(gw) = r.gateway {
        s.push_str(&format!(" via {gw}"));
    }
    s.push_str(&format!(" dev {}", r.dev));
    if r.onlink {
        s.push_str(" onlink");
    }
    s
}

/// The `RTM_NEWROUTE`/`RTM_DELROUTE` message of `route`: main table, protocol 87, universe
/// scope, unicast.
fn route_message(route: &Route, oif: u32, object: &str) -> Result<RouteMessage, KernelError> {
    let invalid = |_| KernelError::Refused {
        object: object.to_owned(),
        errno: EINVAL,
    };
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.dst.network(), route.dst.prefix_len())
        .map_err(invalid)?
        .output_interface(oif)
        .protocol(RouteProtocol::from(ROUTE_PROTOCOL));
    if let Some(gw) = route.gateway {
        builder = builder.gateway(gw).map_err(invalid)?;
    }
    if route.onlink {
        builder = builder.onlink();
    } else if route.gateway.is_none() {
        // `ip route add DST dev DEV` is `scope link`, as iproute2 makes it.
        builder = builder.scope(RouteScope::Link);
    }
    Ok(builder.build())
}

/// The `RTM_DELADDR` message of `address` on `ifindex`.
fn address_message(address: &Address, ifindex: u32) -> AddressMessage {
    match address.addr {
        IpAddr::V4(ip) => AddressMessageBuilder::<std::net::Ipv4Addr>::new()
            .index(ifindex)
            .address(ip, address.prefix_len)
            .build(),
        IpAddr::V6(ip) => AddressMessageBuilder::<std::net::Ipv6Addr>::new()
            .index(ifindex)
            .address(ip, address.prefix_len)
            .build(),
    }
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn neighbour_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}
