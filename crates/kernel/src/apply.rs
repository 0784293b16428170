//! Applying a [`Plan`]: every [`Op`] becomes one rtnetlink request (or one `nft`/`iptables`
//! transaction), sent in the plan's order of phases, with the requests of one phase pipelined.
//!
//! A phase is a run of operations of the same kind (all neighbour replaces, say). Its requests
//! go out together on the one netlink socket, up to [`PIPELINE_DEPTH`] in flight, and the next
//! phase starts when every reply of this one is in. So neighbours and FDB entries are in place
//! before the routes that use them, as the plan orders it, while 5,000 peers cost three
//! round trips' worth of waiting instead of 15,000.
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

use futures::{StreamExt as _, TryStreamExt as _};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressHeaderFlags, AddressMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{RouteMessage, RouteProtocol, RouteScope};
use rtnetlink::{AddressMessageBuilder, LinkUnspec, LinkVxlan, RouteMessageBuilder};
use weft_fabric::{Address, Link, LinkKind, Op, Plan, ROUTE_PROTOCOL, Route};

use crate::cmd::run_blocking;
use crate::error::ENODEV;
use crate::{Kernel, KernelError, firewall, sysctl};

/// How many requests of one phase are in flight at once.
pub const PIPELINE_DEPTH: usize = 256;

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
                _ => {
                    let index_ref = &index;
                    let results: Vec<Result<(), KernelError>> = futures::stream::iter(phase)
                        .map(|op| self.apply_netlink(op, index_ref))
                        .buffered(PIPELINE_DEPTH)
                        .collect()
                        .await;
                    failed.extend(results.into_iter().filter_map(Result::err));
                    // Links that came or went change the names' indices.
                    match &phase[0] {
                        Op::DeleteLink { .. } => {
                            for op in phase {
                                if let Op::DeleteLink { name } = op {
                                    index.remove(name);
                                }
                            }
                        }
                        Op::AddLink(_) => {
                            let added = phase.iter().filter_map(|op| match op {
                                Op::AddLink(link) => Some(link.name.clone()),
                                _ => None,
                            });
                            index.extend(self.resolve(added).await?);
                        }
                        _ => {}
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
            .buffer_unordered(PIPELINE_DEPTH)
            .try_filter_map(|found| async move { Ok(found) })
            .try_collect()
            .await
    }

    /// Sends the one netlink request of `op` and waits for its acknowledgement.
    async fn apply_netlink(
        &self,
        op: &Op,
        index: &HashMap<String, u32>,
    ) -> Result<(), KernelError> {
        let object = describe(op);
        let dev = |name: &str| {
            index
                .get(name)
                .copied()
                .ok_or_else(|| KernelError::NoSuchDevice {
                    object: object.clone(),
                    device: name.to_owned(),
                })
        };
        let h = &self.handle;
        let sent = match op {
            // `ip route del DST via GW dev DEV proto 87`.
            Op::DeleteRoute(route) => {
                let Some(&oif) = index.get(&route.dev) else {
                    return Ok(()); // The device is gone, and its routes with it.
                };
                let mut msg = route_message(route, oif, &object)?;
                // Match any scope, like `ip route del`; the protocol keeps others' routes safe.
                msg.header.scope = RouteScope::NoWhere;
                h.route().del(msg).execute().await
            }
            // `ip neigh del IP dev DEV`.
            Op::DeleteNeighbour { dev: name, ip, .. } => {
                let Some(&ifindex) = index.get(name) else {
                    return Ok(());
                };
                let mut msg = NeighbourMessage::default();
                msg.header.family = family_of(*ip);
                msg.header.ifindex = ifindex;
                msg.attributes
                    .push(NeighbourAttribute::Destination(neighbour_address(*ip)));
                h.neighbours().del(msg).execute().await
            }
            // `bridge fdb del MAC dev DEV dst IP self`.
            Op::DeleteFdb {
                dev: name,
                mac,
                dst,
            } => {
                let Some(&ifindex) = index.get(name) else {
                    return Ok(());
                };
                let mut msg = NeighbourMessage::default();
                msg.header.family = AddressFamily::Bridge;
                msg.header.ifindex = ifindex;
                msg.header.flags = NeighbourFlags::Own;
                msg.header.state = NeighbourState::Permanent;
                msg.attributes
                    .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
                msg.attributes
                    .push(NeighbourAttribute::Destination(neighbour_address(*dst)));
                h.neighbours().del(msg).execute().await
            }
            // `ip addr del ADDR/PREFIX dev LINK`.
            Op::DeleteAddress(address) => {
                let Some(&ifindex) = index.get(&address.link) else {
                    return Ok(());
                };
                let result = h
                    .address()
                    .del(address_message(address, ifindex))
                    .execute()
                    .await;
                return match result.map_err(|e| KernelError::from_netlink(object, e)) {
                    Err(KernelError::Refused {
                        errno: EADDRNOTAVAIL,
                        ..
                    }) => Ok(()),
                    other => gone_is_fine(other),
                };
            }
            // `ip link del NAME`.
            Op::DeleteLink { name } => {
                let Some(&ifindex) = index.get(name) else {
                    return Ok(());
                };
                let result = h.link().del(ifindex).execute().await;
                return match result.map_err(|e| KernelError::from_netlink(object, e)) {
                    Err(KernelError::Refused { errno: ENODEV, .. }) => Ok(()),
                    other => gone_is_fine(other),
                };
            }
            // `ip link add NAME mtu MTU up type vxlan ...`.
            Op::AddLink(link) => {
                let msg = self.link_message(link, &dev)?;
                let result = h.link().add(msg).execute().await;
                // Created by someone since the kernel was observed: the next observation
                // compares its attributes and replaces it if they differ.
                return already_there_is_fine(
                    result.map_err(|e| KernelError::from_netlink(object, e)),
                );
            }
            // `ip link set NAME mtu MTU up|down`.
            Op::SetLink { name, mtu, up } => {
                let builder = LinkUnspec::new_with_index(dev(name)?).mtu(*mtu);
                let builder = if *up { builder.up() } else { builder.down() };
                h.link().set(builder.build()).execute().await
            }
            // `ip addr add ADDR/PREFIX dev LINK` (IPv6: `nodad`, the address is ours by lease).
            Op::AddAddress(address) => {
                let mut req =
                    h.address()
                        .add(dev(&address.link)?, address.addr, address.prefix_len);
                if address.addr.is_ipv6() {
                    req.message_mut().header.flags = AddressHeaderFlags::Nodad;
                }
                return already_there_is_fine(
                    req.execute()
                        .await
                        .map_err(|e| KernelError::from_netlink(object, e)),
                );
            }
            // `ip neigh replace IP lladdr MAC dev DEV nud permanent`.
            Op::ReplaceNeighbour { dev: name, ip, mac } => {
                h.neighbours()
                    .add(dev(name)?, *ip)
                    .link_layer_address(&mac.0)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
            }
            // `bridge fdb replace MAC dev DEV dst IP self permanent` (NTF_SELF is `Own`).
            Op::ReplaceFdb {
                dev: name,
                mac,
                dst,
            } => {
                h.neighbours()
                    .add_bridge(dev(name)?, &mac.0)
                    .flags(NeighbourFlags::Own)
                    .destination(*dst)
                    .replace()
                    .execute()
                    .await
            }
            // `ip route replace DST via GW dev DEV [onlink] proto 87`.
            Op::ReplaceRoute(route) => {
                let msg = route_message(route, dev(&route.dev)?, &object)?;
                h.route().add(msg).replace().execute().await
            }
            _ => return Err(KernelError::Unsupported { op: op.to_string() }),
        };
        let result = sent.map_err(|e| KernelError::from_netlink(object, e));
        match op {
            Op::DeleteRoute(_) | Op::DeleteNeighbour { .. } | Op::DeleteFdb { .. } => {
                gone_is_fine(result)
            }
            _ => result,
        }
    }

    /// The `RTM_NEWLINK` message that creates `link`.
    fn link_message(
        &self,
        link: &Link,
        dev: &dyn Fn(&str) -> Result<u32, KernelError>,
    ) -> Result<rtnetlink::packet_route::link::LinkMessage, KernelError> {
        match &link.kind {
            LinkKind::Vxlan {
                vni,
                port,
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
                let builder = match local {
                    IpAddr::V4(ip) => builder.local(*ip),
                    IpAddr::V6(ip) => builder.local6(*ip),
                };
                let builder = if link.up { builder.up() } else { builder };
                Ok(builder.build())
            }
            _ => Err(KernelError::Unsupported {
                op: Op::AddLink(link.clone()).to_string(),
            }),
        }
    }
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
        other => Err(KernelError::Unsupported {
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
        Op::DeleteFirewall { family, mode } | Op::ReplaceFirewall { family, mode, .. } => {
            format!("{family} {mode} rules")
        }
        other => other.to_string(),
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

/// A delete that found nothing to delete is done.
fn gone_is_fine(result: Result<(), KernelError>) -> Result<(), KernelError> {
    match result {
        Err(KernelError::NotFound { .. }) => Ok(()),
        other => other,
    }
}

/// An add that found the object there is done.
fn already_there_is_fine(result: Result<(), KernelError>) -> Result<(), KernelError> {
    match result {
        Err(KernelError::AlreadyExists { .. }) => Ok(()),
        other => other,
    }
}
