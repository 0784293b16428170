//! The plan: the ordered operations that take the kernel from an observed state to a desired one.

use std::fmt;
use std::net::IpAddr;

use weft_ipam::Family;

use crate::state::{Address, FirewallTable, KernelState, Link, MasqMode, Route};
use crate::{MacAddr, WgPeer, WgPublicKey};

#[cfg(test)]
mod tests;

/// The route protocol number weft marks its routes with (`ip route ... proto 87`), so it can
/// tell its own routes from everyone else's when it observes and cleans up.
pub const ROUTE_PROTOCOL: u8 = 87;

/// One kernel operation. Each maps to one netlink request (or one `nft`/`iptables-restore`
/// transaction for firewall tables) in weft-kernel, and prints as the matching command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `ip route del DST [via GW] dev DEV`.
    DeleteRoute(Route),
    /// `ip neigh del IP dev DEV`.
    DeleteNeighbour {
        /// The device.
        dev: String,
        /// The neighbour's IP.
        ip: IpAddr,
        /// The MAC it had.
        mac: MacAddr,
    },
    /// `bridge fdb del MAC dev DEV dst IP self`.
    DeleteFdb {
        /// The device.
        dev: String,
        /// The entry's MAC.
        mac: MacAddr,
        /// The underlay destination it had.
        dst: IpAddr,
    },
    /// `wg set DEV peer KEY remove`.
    DeleteWgPeer {
        /// The WireGuard device.
        dev: String,
        /// The peer's public key.
        public_key: WgPublicKey,
    },
    /// `ip addr del ADDR/PREFIX dev LINK`.
    DeleteAddress(Address),
    /// `ip link del NAME`; the kernel removes the link's addresses, routes, neighbours and FDB
    /// entries with it.
    DeleteLink {
        /// The device name.
        name: String,
    },
    /// Removes weft's firewall table (or iptables chains) of a family.
    DeleteFirewall {
        /// The family.
        family: Family,
        /// The tool that holds the rules.
        mode: MasqMode,
    },
    /// `sysctl -w KEY=VALUE`.
    SetSysctl {
        /// The dotted key.
        key: String,
        /// The value.
        value: String,
    },
    /// `ip link add NAME mtu MTU up type ...`.
    AddLink(Link),
    /// `ip link set NAME mtu MTU up|down`.
    SetLink {
        /// The device name.
        name: String,
        /// The MTU.
        mtu: u32,
        /// Whether the device is up.
        up: bool,
    },
    /// `ip addr add ADDR/PREFIX dev LINK`.
    AddAddress(Address),
    /// `ip neigh replace IP lladdr MAC dev DEV nud permanent`.
    ReplaceNeighbour {
        /// The device.
        dev: String,
        /// The neighbour's IP.
        ip: IpAddr,
        /// Its MAC.
        mac: MacAddr,
    },
    /// `bridge fdb replace MAC dev DEV dst IP self permanent`.
    ReplaceFdb {
        /// The device.
        dev: String,
        /// The MAC.
        mac: MacAddr,
        /// The underlay destination.
        dst: IpAddr,
    },
    /// `wg set DEV peer KEY endpoint IP:PORT allowed-ips CIDR,... persistent-keepalive N`: adds
    /// the peer, or changes it in place; no other peer of the device is touched.
    ReplaceWgPeer {
        /// The WireGuard device.
        dev: String,
        /// The peer's public key.
        public_key: WgPublicKey,
        /// What the peer should be.
        peer: WgPeer,
    },
    /// `ip route replace DST [via GW] dev DEV [onlink|scope link] proto 87`.
    ReplaceRoute(Route),
    /// Replaces weft's firewall table of a family in one transaction.
    ReplaceFirewall {
        /// The family.
        family: Family,
        /// The tool that holds the rules.
        mode: MasqMode,
        /// The rules.
        table: FirewallTable,
    },
}

/// An ordered list of operations.
///
/// The order is fixed: deletions first (routes, then the neighbours, FDB entries and WireGuard
/// peers they used, then addresses, links and firewall tables), then sysctls, links, addresses,
/// neighbours, FDB entries and WireGuard peers, and routes last, so a route never points at a
/// neighbour or peer that is not there yet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The operations, in the order they must be applied.
    pub ops: Vec<Op>,
}

/// Computes the operations that take `observed` to `desired`.
///
/// Objects outside `desired` are removed, except sysctls, which weft sets but never resets.
/// A link whose creation-time attributes differ is deleted and created again, and everything
/// on it is re-added.
pub fn plan(observed: &KernelState, desired: &KernelState) -> Plan {
    let mut ops = Vec::new();

    // Links that go away (unwanted, or incompatible with what is wanted) take their objects
    // with them; plan against what remains.
    let doomed: Vec<&String> = observed
        .links
        .iter()
        .filter(|(name, link)| desired.links.get(*name).is_none_or(|d| d.kind != link.kind))
        .map(|(name, _)| name)
        .collect();
    let pruned;
    let observed = if doomed.is_empty() {
        observed
    } else {
        pruned = without_links(observed, &doomed);
        &pruned
    };

    for (dst, route) in &observed.routes {
        if !desired.routes.contains_key(dst) {
            ops.push(Op::DeleteRoute(route.clone()));
        }
    }
    for ((dev, ip), mac) in &observed.neighbours {
        if !desired.neighbours.contains_key(&(dev.clone(), *ip)) {
            ops.push(Op::DeleteNeighbour {
                dev: dev.clone(),
                ip: *ip,
                mac: *mac,
            });
        }
    }
    for ((dev, mac), dst) in &observed.fdb {
        if !desired.fdb.contains_key(&(dev.clone(), *mac)) {
            ops.push(Op::DeleteFdb {
                dev: dev.clone(),
                mac: *mac,
                dst: *dst,
            });
        }
    }
    for (dev, public_key) in observed.wg_peers.keys() {
        if !desired.wg_peers.contains_key(&(dev.clone(), *public_key)) {
            ops.push(Op::DeleteWgPeer {
                dev: dev.clone(),
                public_key: *public_key,
            });
        }
    }
    for address in observed.addresses.difference(&desired.addresses) {
        ops.push(Op::DeleteAddress(address.clone()));
    }
    for name in doomed {
        ops.push(Op::DeleteLink { name: name.clone() });
    }
    for &(family, mode) in observed.firewall.keys() {
        if !desired.firewall.contains_key(&(family, mode)) {
            ops.push(Op::DeleteFirewall { family, mode });
        }
    }
    for (key, value) in &desired.sysctls {
        if observed.sysctls.get(key) != Some(value) {
            ops.push(Op::SetSysctl {
                key: key.clone(),
                value: value.clone(),
            });
        }
    }
    for (name, link) in &desired.links {
        match observed.links.get(name) {
            None => ops.push(Op::AddLink(link.clone())),
            Some(have) if have.mtu != link.mtu || have.up != link.up => ops.push(Op::SetLink {
                name: name.clone(),
                mtu: link.mtu,
                up: link.up,
            }),
            Some(_) => {}
        }
    }
    for address in desired.addresses.difference(&observed.addresses) {
        ops.push(Op::AddAddress(address.clone()));
    }
    for (key, mac) in &desired.neighbours {
        if observed.neighbours.get(key) != Some(mac) {
            ops.push(Op::ReplaceNeighbour {
                dev: key.0.clone(),
                ip: key.1,
                mac: *mac,
            });
        }
    }
    for (key, dst) in &desired.fdb {
        if observed.fdb.get(key) != Some(dst) {
            ops.push(Op::ReplaceFdb {
                dev: key.0.clone(),
                mac: key.1,
                dst: *dst,
            });
        }
    }
    for ((dev, public_key), peer) in &desired.wg_peers {
        if observed.wg_peers.get(&(dev.clone(), *public_key)) != Some(peer) {
            ops.push(Op::ReplaceWgPeer {
                dev: dev.clone(),
                public_key: *public_key,
                peer: peer.clone(),
            });
        }
    }
    for (dst, route) in &desired.routes {
        if observed.routes.get(dst) != Some(route) {
            ops.push(Op::ReplaceRoute(route.clone()));
        }
    }
    for (&(family, mode), table) in &desired.firewall {
        if observed.firewall.get(&(family, mode)) != Some(table) {
            ops.push(Op::ReplaceFirewall {
                family,
                mode,
                table: table.clone(),
            });
        }
    }
    Plan { ops }
}

/// `state` without the named links and every object that lives on them.
fn without_links(state: &KernelState, names: &[&String]) -> KernelState {
    let gone = |dev: &String| names.contains(&dev);
    let mut out = state.clone();
    out.links.retain(|name, _| !gone(name));
    out.addresses.retain(|a| !gone(&a.link));
    out.routes.retain(|_, r| !gone(&r.dev));
    out.neighbours.retain(|(dev, _), _| !gone(dev));
    out.fdb.retain(|(dev, _), _| !gone(dev));
    out.wg_peers.retain(|(dev, _), _| !gone(dev));
    out
}

// === impl Plan ===

impl Plan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// How many operations there are.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

impl fmt::Display for Plan {
    /// One command per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for op in &self.ops {
            writeln!(f, "{op}")?;
        }
        Ok(())
    }
}

// === impl KernelState (applying) ===

impl KernelState {
    /// Applies one operation the way the kernel would (a model for tests and fakes).
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::DeleteRoute(route) => {
                self.routes.remove(&route.dst);
            }
            Op::DeleteNeighbour { dev, ip, .. } => {
                self.neighbours.remove(&(dev.clone(), *ip));
            }
            Op::DeleteFdb { dev, mac, .. } => {
                self.fdb.remove(&(dev.clone(), *mac));
            }
            Op::DeleteWgPeer { dev, public_key } => {
                self.wg_peers.remove(&(dev.clone(), *public_key));
            }
            Op::DeleteAddress(address) => {
                self.addresses.remove(address);
            }
            Op::DeleteLink { name } => *self = without_links(self, &[name]),
            Op::DeleteFirewall { family, mode } => {
                self.firewall.remove(&(*family, *mode));
            }
            Op::SetSysctl { key, value } => {
                self.sysctls.insert(key.clone(), value.clone());
            }
            Op::AddLink(link) => {
                self.links.insert(link.name.clone(), link.clone());
            }
            Op::SetLink { name, mtu, up } => {
                if let Some(link) = self.links.get_mut(name) {
                    link.mtu = *mtu;
                    link.up = *up;
                }
            }
            Op::AddAddress(address) => {
                self.addresses.insert(address.clone());
            }
            Op::ReplaceNeighbour { dev, ip, mac } => {
                self.neighbours.insert((dev.clone(), *ip), *mac);
            }
            Op::ReplaceFdb { dev, mac, dst } => {
                self.fdb.insert((dev.clone(), *mac), *dst);
            }
            Op::ReplaceWgPeer {
                dev,
                public_key,
                peer,
            } => {
                self.wg_peers
                    .insert((dev.clone(), *public_key), peer.clone());
            }
            Op::ReplaceRoute(route) => self.add_route(route.clone()),
            Op::ReplaceFirewall {
                family,
                mode,
                table,
            } => {
                self.firewall.insert((*family, *mode), table.clone());
            }
        }
    }

    /// Applies every operation of `plan` in order.
    pub fn apply_plan(&mut self, plan: &Plan) {
        for op in &plan.ops {
            self.apply(op);
        }
    }
}

// === impl Op ===

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::DeleteRoute(r) => {
                write!(f, "ip route del {}", r.dst)?;
                if let Some(gw) = r.gateway {
                    write!(f, " via {gw}")?;
                }
                write!(f, " dev {} proto {ROUTE_PROTOCOL}", r.dev)
            }
            Op::DeleteNeighbour { dev, ip, .. } => write!(f, "ip neigh del {ip} dev {dev}"),
            Op::DeleteFdb { dev, mac, dst } => {
                write!(f, "bridge fdb del {mac} dev {dev} dst {dst} self")
            }
            Op::DeleteWgPeer { dev, public_key } => {
                write!(f, "wg set {dev} peer {public_key} remove")
            }
            Op::DeleteAddress(a) => {
                write!(f, "ip addr del {}/{} dev {}", a.addr, a.prefix_len, a.link)
            }
            Op::DeleteLink { name } => write!(f, "ip link del {name}"),
            Op::DeleteFirewall { family, mode } => {
                f.write_str(&crate::firewall::delete_command(*family, *mode))
            }
            Op::SetSysctl { key, value } => write!(f, "sysctl -w {key}={value}"),
            Op::AddLink(l) => {
                let state = if l.up { "up " } else { "" };
                write!(f, "ip link add {} mtu {} {state}{}", l.name, l.mtu, l.kind)
            }
            Op::SetLink { name, mtu, up } => {
                let state = if *up { "up" } else { "down" };
                write!(f, "ip link set {name} mtu {mtu} {state}")
            }
            Op::AddAddress(a) => {
                write!(f, "ip addr add {}/{} dev {}", a.addr, a.prefix_len, a.link)
            }
            Op::ReplaceNeighbour { dev, ip, mac } => {
                write!(
                    f,
                    "ip neigh replace {ip} lladdr {mac} dev {dev} nud permanent"
                )
            }
            Op::ReplaceFdb { dev, mac, dst } => {
                write!(
                    f,
                    "bridge fdb replace {mac} dev {dev} dst {dst} self permanent"
                )
            }
            Op::ReplaceWgPeer {
                dev,
                public_key,
                peer,
            } => write!(f, "wg set {dev} peer {public_key} {}", peer.wg_args()),
            Op::ReplaceRoute(r) => {
                write!(f, "ip route replace {}", r.dst)?;
                if let Some(gw) = r.gateway {
                    write!(f, " via {gw}")?;
                }
                write!(f, " dev {}", r.dev)?;
                if r.onlink {
                    f.write_str(" onlink")?;
                } else if r.gateway.is_none() {
                    f.write_str(" scope link")?;
                }
                write!(f, " proto {ROUTE_PROTOCOL}")
            }
            Op::ReplaceFirewall {
                family,
                mode,
                table,
            } => f.write_str(&crate::firewall::replace_command(*family, *mode, table)),
        }
    }
}
