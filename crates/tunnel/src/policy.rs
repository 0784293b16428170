//! Which tunnel a connection takes, and which dials an agent allows, by egress-selector mode
//! (`k3s-network-options.md`, "Control-Plane Egress Selector configuration"). Pure: the server
//! and the agent hand in what they know of the nodes; nothing here does I/O.
//!
//! Read [`RoutingTable::route`] (the server's CONNECT front door) and [`Authorizer::allows`]
//! (the agent's check of every dial, whatever the server asks), with its floor, [`Forbidden`]:
//! the addresses no agent dials, whatever its rules say.

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
pub use weft_config::EgressSelectorMode;

use crate::proto::Target;

/// The kubelet's default port.
pub const KUBELET_PORT: u16 = 10250;

/// The port of the kubelet's streaming server (exec, attach, port-forward), tunnelled like the
/// kubelet's own, as K3s does.
pub const STREAM_SERVER_PORT: u16 = 10010;

/// What the server knows of one node for routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRoute {
    /// The node's name; its tunnel session is bound to it.
    pub name: String,
    /// The node's internal and external IPs.
    pub addresses: Vec<IpAddr>,
    /// The node's kubelet port.
    pub kubelet_port: u16,
    /// The node's pod CIDRs (its lease), routed in `pod` mode.
    pub pod_cidrs: Vec<IpNetwork>,
    /// The pod IPs the node's agent reported, routed in `cluster` mode.
    pub pods: Vec<IpAddr>,
}

/// The server's routing state: the mode, its own node, and every node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingTable {
    /// The egress-selector mode.
    pub mode: EgressSelectorMode,
    /// The node this server runs on (its embedded agent), dialed locally.
    pub local_node: Option<String>,
    /// Every node.
    pub nodes: Vec<NodeRoute>,
}

/// A [`RoutingTable`] indexed for lookups: node names, node addresses and reported pod IPs
/// are hash lookups, so routing costs the same for 5,000 nodes as for 5 (pod CIDRs, one or two
/// per node, are still scanned). Where two nodes claim one address, the first listed wins, as
/// in the table.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    table: RoutingTable,
    by_name: HashMap<String, usize>,
    by_address: HashMap<IpAddr, usize>,
    by_pod: HashMap<IpAddr, usize>,
}

/// Where a CONNECT target goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Through `node`'s tunnel; the agent dials `target`.
    Tunnel {
        /// The node.
        node: String,
        /// What its agent dials.
        target: Target,
    },
    /// The server dials `host:port` itself.
    Direct {
        /// The host.
        host: String,
        /// The port.
        port: u16,
    },
    /// The target names a node that does not exist: `502` naming it.
    UnknownNode {
        /// The name.
        name: String,
    },
}

/// The agent's rules for which dials it performs.
///
/// Whatever the rules say, [`Authorizer::allows`] never passes the floor ([`Forbidden`]), and
/// honours pod CIDRs and pod IPs only inside `cluster_cidrs`: what a server sends (a lease, a
/// pod to dial) widens the rules only inside the cluster CIDR the agent was told at join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorizer {
    /// The egress-selector mode (the servers').
    pub mode: EgressSelectorMode,
    /// This node's kubelet port.
    pub kubelet_port: u16,
    /// This node's IPs.
    pub node_ips: Vec<IpAddr>,
    /// The cluster CIDRs the agent was told at join; pod CIDRs and pods count only inside them.
    pub cluster_cidrs: Vec<IpNetwork>,
    /// This node's pod CIDRs, allowed in `pod` mode; set them with
    /// [`Authorizer::set_pod_cidrs`], which keeps only those inside `cluster_cidrs`.
    pub pod_cidrs: Vec<IpNetwork>,
    /// This node's pod IPs, allowed in `cluster` mode.
    pub pods: Vec<IpAddr>,
}

/// The classes of address an agent never dials, whatever a server asks or sends: the floor
/// under every [`Authorizer`]. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is judged as its
/// IPv4 address, since a dual-stack socket dials it as that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    /// `0.0.0.0/8` or `::`: "this host", which Linux dials as loopback.
    Unspecified,
    /// `169.254.0.0/16` or `fe80::/10`, where cloud metadata services answer.
    LinkLocal,
    /// `224.0.0.0/4` or `ff00::/8`.
    Multicast,
    /// `127.0.0.0/8` or `::1` on any port but the kubelet's and the streaming server's: the
    /// services bound to the agent's host alone.
    Loopback,
}

// === impl RoutingTable ===

impl RoutingTable {
    /// Routes a CONNECT to `host:port`:
    ///
    /// - `disabled`: always direct.
    /// - a host that is no IP names a node: its kubelet, through its tunnel as `127.0.0.1:port`.
    /// - a node IP on the kubelet or streaming port, through that node's tunnel (`cluster`
    ///   mode: on any port).
    /// - `pod` mode: an address in a node's pod CIDR, through that node's tunnel.
    /// - `cluster` mode: a pod IP a node reported, through that node's tunnel.
    /// - anything else, and anything on the server's own node, direct.
    ///
    /// This indexes the table for one lookup; a server routing many keeps [`Routes`].
    pub fn route(&self, host: &str, port: u16) -> Route {
        Routes::new(self.clone()).route(host, port)
    }
}

// === impl Routes ===

impl Routes {
    /// Indexes `table`.
    pub fn new(table: RoutingTable) -> Routes {
        let mut by_name = HashMap::with_capacity(table.nodes.len());
        let mut by_address = HashMap::with_capacity(table.nodes.len());
        let mut by_pod = HashMap::new();
        for (index, node) in table.nodes.iter().enumerate() {
            by_name.entry(node.name.clone()).or_insert(index);
            for address in &node.addresses {
                by_address.entry(*address).or_insert(index);
            }
            if table.mode == EgressSelectorMode::Cluster {
                for pod in &node.pods {
                    by_pod.entry(*pod).or_insert(index);
                }
            }
        }
        Routes {
            table,
            by_name,
            by_address,
            by_pod,
        }
    }

    /// The table this indexes.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// Routes a CONNECT to `host:port`; see [`RoutingTable::route`].
    pub fn route(&self, host: &str, port: u16) -> Route {
        let direct = || Route::Direct {
            host: host.to_owned(),
            port,
        };
        let table = &self.table;
        if table.mode == EgressSelectorMode::Disabled {
            return direct();
        }
        let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            let Some(&node) = self.by_name.get(host) else {
                return Route::UnknownNode {
                    name: host.to_owned(),
                };
            };
            let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
            return self.via(node, loopback, port);
        };
        if let Some(&index) = self.by_address.get(&ip) {
            let node = &table.nodes[index];
            let kubelet = port == node.kubelet_port || port == STREAM_SERVER_PORT;
            if kubelet || table.mode == EgressSelectorMode::Cluster {
                return self.via(index, ip, port);
            }
        }
        let owner = match table.mode {
            EgressSelectorMode::Pod => table
                .nodes
                .iter()
                .position(|node| node.pod_cidrs.iter().any(|cidr| cidr.contains(ip))),
            EgressSelectorMode::Cluster => self.by_pod.get(&ip).copied(),
            EgressSelectorMode::Agent | EgressSelectorMode::Disabled => None,
        };
        match owner {
            Some(index) => self.via(index, ip, port),
            None => direct(),
        }
    }

    /// Through the tunnel of node `index`, or direct when it is this server's own.
    fn via(&self, index: usize, ip: IpAddr, port: u16) -> Route {
        let node = &self.table.nodes[index];
        if self.table.local_node.as_deref() == Some(node.name.as_str()) {
            return Route::Direct {
                host: ip.to_string(),
                port,
            };
        }
        match Target::new(ip.to_string(), port) {
            Ok(target) => Route::Tunnel {
                node: node.name.clone(),
                target,
            },
            // Only port 0 fails, and no node listens there: let the direct dial fail.
            Err(_) => Route::Direct {
                host: ip.to_string(),
                port,
            },
        }
    }
}

// === impl Authorizer ===

impl Authorizer {
    /// An authorizer for `mode` that allows only the kubelet on loopback until the node's IPs,
    /// the cluster CIDRs and the pods are known.
    pub fn new(mode: EgressSelectorMode, kubelet_port: u16) -> Authorizer {
        Authorizer {
            mode,
            kubelet_port,
            node_ips: Vec::new(),
            cluster_cidrs: Vec::new(),
            pod_cidrs: Vec::new(),
            pods: Vec::new(),
        }
    }

    /// Whether this agent dials `target`. Never below the floor ([`Forbidden`]). Above it, in
    /// every mode: the kubelet and streaming ports on loopback and on the node's own IPs. In
    /// `pod` mode also any address in the node's pod CIDRs; in `cluster` mode also the node's
    /// IPs on any port and its reported pods; pod CIDRs and pods only inside the cluster CIDRs.
    /// Host names are never dialed, so a name cannot smuggle in another address; an IPv4-mapped
    /// address is judged as its IPv4 address.
    pub fn allows(&self, target: &Target) -> bool {
        let Some(ip) = target_ip(target) else {
            return false;
        };
        let port = target.port();
        if Forbidden::of(ip, port, self.kubelet_port).is_some() {
            return false;
        }
        let loopback =
            ip == IpAddr::V4(Ipv4Addr::LOCALHOST) || ip == IpAddr::V6(Ipv6Addr::LOCALHOST);
        if is_kubelet_port(port, self.kubelet_port) && (loopback || self.node_ips.contains(&ip)) {
            return true;
        }
        let in_cluster = || self.cluster_cidrs.iter().any(|cidr| cidr.contains(ip));
        match self.mode {
            EgressSelectorMode::Pod => {
                in_cluster() && self.pod_cidrs.iter().any(|cidr| cidr.contains(ip))
            }
            EgressSelectorMode::Cluster => {
                self.node_ips.contains(&ip) || (in_cluster() && self.pods.contains(&ip))
            }
            EgressSelectorMode::Agent | EgressSelectorMode::Disabled => false,
        }
    }

    /// The floor class `target` falls in, if any: why [`Authorizer::allows`] refuses it
    /// whatever the rules say.
    pub fn below_floor(&self, target: &Target) -> Option<Forbidden> {
        Forbidden::of(target_ip(target)?, target.port(), self.kubelet_port)
    }

    /// Takes the node's pod CIDRs (from its lease), keeping those that lie inside one of the
    /// cluster CIDRs; returns the others, which it ignores, so the caller can say so.
    pub fn set_pod_cidrs(&mut self, cidrs: Vec<IpNetwork>) -> Vec<IpNetwork> {
        let (inside, outside) = cidrs.into_iter().partition(|cidr| {
            self.cluster_cidrs
                .iter()
                .any(|outer| is_within(*cidr, *outer))
        });
        self.pod_cidrs = inside;
        outside
    }
}

// === impl Forbidden ===

impl Forbidden {
    /// The class `ip` falls in when dialed on `port` by an agent whose kubelet listens on
    /// `kubelet_port`, or `None` when it is above the floor.
    pub fn of(ip: IpAddr, port: u16, kubelet_port: u16) -> Option<Forbidden> {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                if v4.octets()[0] == 0 {
                    Some(Forbidden::Unspecified)
                } else if v4.is_link_local() {
                    Some(Forbidden::LinkLocal)
                } else if v4.is_multicast() {
                    Some(Forbidden::Multicast)
                } else if v4.is_loopback() && !is_kubelet_port(port, kubelet_port) {
                    Some(Forbidden::Loopback)
                } else {
                    None
                }
            }
            IpAddr::V6(v6) => {
                if v6.is_unspecified() {
                    Some(Forbidden::Unspecified)
                } else if v6.is_unicast_link_local() {
                    Some(Forbidden::LinkLocal)
                } else if v6.is_multicast() {
                    Some(Forbidden::Multicast)
                } else if v6.is_loopback() && !is_kubelet_port(port, kubelet_port) {
                    Some(Forbidden::Loopback)
                } else {
                    None
                }
            }
        }
    }
}

impl std::fmt::Display for Forbidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Forbidden::Unspecified => "an unspecified address",
            Forbidden::LinkLocal => "a link-local address",
            Forbidden::Multicast => "a multicast address",
            Forbidden::Loopback => "loopback off the kubelet ports",
        })
    }
}

/// The target's host as an IP, an IPv4-mapped IPv6 address as its IPv4 address; `None` for a
/// name.
fn target_ip(target: &Target) -> Option<IpAddr> {
    target
        .host()
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical())
}

/// Whether `port` is the kubelet's (`kubelet_port`) or its streaming server's.
fn is_kubelet_port(port: u16, kubelet_port: u16) -> bool {
    port == kubelet_port || port == STREAM_SERVER_PORT
}

/// Whether `inner` lies entirely inside `outer` (never across families).
fn is_within(inner: IpNetwork, outer: IpNetwork) -> bool {
    outer.prefix() <= inner.prefix() && outer.contains(inner.network())
}
