//! Issue 8, scenario 1: each backend × IPv4, dual-stack and IPv6-only.
//!
//! A server `n1` and an agent `n2` on one segment, an outside host on the same segment, a pod on
//! each node made by the CNI plugins. For each family: the fabric points at the peer's node IP
//! (vxlan: the FDB entry's `dst`; host-gw: the route's gateway; wireguard-native: the endpoint
//! of the peer whose allowed IPs hold the pod CIDR, with the cluster route on the WireGuard
//! device); the pods ping each other; a TCP
//! transfer between them arrives whole and the receiver sees the sender's pod IP (pod to pod is
//! not masqueraded); a transfer from each pod to the outside host arrives with the node's IP as
//! its source (masqueraded; IPv6 with `flannel-ipv6-masq`, which every cluster with IPv6 here
//! sets). Then the pods are deleted through CNI `DEL` and the daemons stop cleanly on SIGTERM.
//!
//! wireguard-native runs on the kernel module where there is one and on the agent's userspace
//! implementation elsewhere; the peers are read from the agent's read-only UAPI socket for a
//! userspace device and from `wg show` for a kernel one. A run with
//! `--wireguard-implementation` (the VM lane runs `kernel`) also checks every node runs on that
//! implementation: its devices' link kind (`wireguard` or `tun`, read through netlink), what
//! `weft-agent check` reports, and what `weft-agent plan` says. On the kernel's implementation,
//! one peer removed by hand (`wg set DEV peer KEY remove`) must be back within 3 s (times the
//! run's patience) with the reconcile interval an hour away: the agent reads its kernel devices
//! every second, since they send no notifications.

use std::time::Duration;

use anyhow::{bail, ensure};

use crate::e2e::cluster::{self, Node, NodeRow, Role, Settings, row};
use crate::e2e::cni::Pod;
use crate::e2e::inspect;
use crate::e2e::lab::{Families, Lab, family_name, wait_for};
use crate::e2e::probe::{ping, transfer};
use crate::flags::WireguardImplementation;

use super::Scenario;

/// The fabric matrix.
pub(crate) const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "vxlan-ipv4",
        about: "vxlan, IPv4: pod<->pod across nodes, masquerade to the outside, none between pods",
        run: |lab| run(lab, "vxlan", Families::V4),
    },
    Scenario {
        name: "vxlan-dual",
        about: "vxlan, dual-stack: the same for each family",
        run: |lab| run(lab, "vxlan", Families::Dual),
    },
    Scenario {
        name: "vxlan-ipv6",
        about: "vxlan, IPv6 only (flannel-ipv6-masq)",
        run: |lab| run(lab, "vxlan", Families::V6),
    },
    Scenario {
        name: "host-gw-ipv4",
        about: "host-gw, IPv4: pod<->pod across nodes, masquerade to the outside, none between pods",
        run: |lab| run(lab, "host-gw", Families::V4),
    },
    Scenario {
        name: "host-gw-dual",
        about: "host-gw, dual-stack: the same for each family",
        run: |lab| run(lab, "host-gw", Families::Dual),
    },
    Scenario {
        name: "host-gw-ipv6",
        about: "host-gw, IPv6 only (flannel-ipv6-masq)",
        run: |lab| run(lab, "host-gw", Families::V6),
    },
    Scenario {
        name: "wireguard-ipv4",
        about: "wireguard-native, IPv4: the same, through the WireGuard peers",
        run: |lab| run(lab, "wireguard-native", Families::V4),
    },
    Scenario {
        name: "wireguard-dual",
        about: "wireguard-native, dual-stack: the same for each family",
        run: |lab| run(lab, "wireguard-native", Families::Dual),
    },
    Scenario {
        name: "wireguard-ipv6",
        about: "wireguard-native, IPv6 only (flannel-ipv6-masq)",
        run: |lab| run(lab, "wireguard-native", Families::V6),
    },
];

fn run(lab: &Lab<'_>, backend: &'static str, families: Families) -> anyhow::Result<()> {
    let segment = lab.segment(0, families)?;
    let settings = Settings::new(backend, families);
    // On the kernel's WireGuard, a peer removed by hand must come back through the agent's
    // poll of its devices, not through the periodic reconcile: make that an hour away.
    let kernel_wireguard =
        backend == "wireguard-native" && lab.env.wireguard == Some(WireguardImplementation::Kernel);
    let extra: &[&str] = if kernel_wireguard {
        &["--reconcile-interval", "3600"]
    } else {
        &[]
    };
    let (mut nodes, rows) = cluster::start(lab, &segment, &settings, 1, extra)?;
    if let (Some(implementation), "wireguard-native") = (lab.env.wireguard, backend) {
        for node in &nodes {
            check_implementation(lab, node, families, implementation)?;
        }
        lab.step(format!(
            "every node runs WireGuard on the {} implementation",
            implementation.as_str()
        ));
        if kernel_wireguard {
            let took = check_peer_repair(&nodes[0], families)?;
            lab.step(format!(
                "a peer removed by hand with `wg set` is back in {:.1} s (reconcile interval: an hour)",
                took.as_secs_f64()
            ));
        }
    }
    let outside = lab.host("out", &[(&segment, 100)])?;
    for v6 in families.each() {
        check_path(backend, &nodes[0], row(&rows, "n2")?, v6)?;
        check_path(backend, &nodes[1], row(&rows, "n1")?, v6)?;
    }
    lab.step(format!("{backend} points at the peers' node IPs"));

    let p1 = Pod::add(lab, &nodes[0], "p1")?;
    let p2 = Pod::add(lab, &nodes[1], "p2")?;
    lab.step(format!(
        "pods: p1 {:?} on n1, p2 {:?} on n2",
        p1.ips, p2.ips
    ));
    for v6 in families.each() {
        let family = family_name(v6);
        let (a, b) = (p1.ip(v6)?, p2.ip(v6)?);
        ping(&p1.ns, b, 3)?;
        ping(&p2.ns, a, 3)?;
        let seen = transfer(lab, &p1.ns, &p2.ns, b)?.peer;
        ensure!(
            seen == a,
            "{family}: p2 saw p1's transfer come from {seen}, not p1's {a}: pod-to-pod traffic was masqueraded"
        );
        let seen = transfer(lab, &p2.ns, &p1.ns, a)?.peer;
        ensure!(
            seen == b,
            "{family}: p1 saw p2's transfer come from {seen}, not p2's {b}"
        );
        lab.step(format!(
            "{family}: p1 <-> p2 ping and TCP, each side sees the other's pod IP"
        ));
        for (pod, node) in [(&p1, &nodes[0]), (&p2, &nodes[1])] {
            let node_ip = node.host.ip(v6)?;
            let seen = transfer(lab, &pod.ns, &outside.ns, outside.ip(v6)?)?.peer;
            ensure!(
                seen == node_ip,
                "{family}: the outside host saw {}'s transfer come from {seen}, not from {}'s node IP {node_ip}",
                pod.name,
                node.name
            );
        }
        lab.step(format!(
            "{family}: p1, p2 -> outside arrive from the node IPs (masqueraded)"
        ));
    }
    p1.delete()?;
    p2.delete()?;
    lab.step("pods deleted through CNI DEL");
    for node in nodes.iter_mut().rev() {
        node.stop()?;
    }
    Ok(())
}

/// How long a node may take to make its WireGuard devices after it registered.
const DEVICE_TIMEOUT: Duration = Duration::from_secs(60);

/// Checks that `node`'s WireGuard devices run on `implementation`: the link kind its kernel
/// reports, and, for an agent, what `weft-agent check` and `weft-agent plan` say.
/// How long a kernel WireGuard peer removed by hand may stay away: the agent reads its kernel
/// devices every second (they send no notifications).
const PEER_REPAIR: Duration = Duration::from_secs(3);

/// Removes one peer of `node`'s kernel WireGuard devices with `wg set ... remove` and waits
/// for the agent to put it back, well before its reconcile interval; the longest it took.
fn check_peer_repair(node: &Node, families: Families) -> anyhow::Result<Duration> {
    let mut longest = Duration::ZERO;
    for v6 in families.each() {
        let dev = inspect::wireguard_dev(v6);
        let peers = node.host.ns.run("wg", &["show", dev, "peers"])?;
        let key = peers
            .lines()
            .next()
            .ok_or_else(|| anyhow::anyhow!("{}'s {dev} has no peers", node.name))?
            .to_owned();
        node.host
            .ns
            .run("wg", &["set", dev, "peer", &key, "remove"])?;
        let removed = std::time::Instant::now();
        wait_for(
            &format!("{}'s {dev} to get its removed peer back", node.name),
            PEER_REPAIR,
            || {
                let now = node.host.ns.run("wg", &["show", dev, "peers"])?;
                Ok(now.lines().any(|line| line == key).then_some(()))
            },
        )?;
        longest = longest.max(removed.elapsed());
    }
    Ok(longest)
}

pub(crate) fn check_implementation(
    lab: &Lab<'_>,
    node: &Node,
    families: Families,
    implementation: WireguardImplementation,
) -> anyhow::Result<()> {
    let kind = match implementation {
        WireguardImplementation::Kernel => "wireguard",
        WireguardImplementation::Userspace => "tun",
    };
    for v6 in families.each() {
        let dev = inspect::wireguard_dev(v6);
        // An agent that has just joined may not have made its devices yet (a VM under TCG is
        // slow); once there, the kind is what it is.
        let found = wait_for(&format!("{}'s {dev}", node.name), DEVICE_TIMEOUT, || {
            Ok(inspect::link_kind(&node.host.ns, dev).ok())
        })?;
        ensure!(
            found.as_deref() == Some(kind),
            "{}'s {dev} is of kind {found:?}, not {kind}",
            node.name
        );
    }
    if node.role != Role::Agent {
        return Ok(());
    }
    let check = node.agent_command(lab, &["check"])?;
    let report = String::from_utf8_lossy(&check.stdout);
    let said = match implementation {
        WireguardImplementation::Kernel => "wireguard-native runs on the kernel's WireGuard",
        WireguardImplementation::Userspace => {
            "wireguard-native runs on the userspace implementation"
        }
    };
    ensure!(
        report.contains(said),
        "`weft-agent check` on {} does not say `{said}`:\n{report}",
        node.name
    );
    let plan = node.agent_command(lab, &["plan"])?;
    let said = format!(
        "wireguard-native: the {} implementation runs the WireGuard devices",
        implementation.as_str()
    );
    let stderr = String::from_utf8_lossy(&plan.stderr);
    ensure!(
        plan.status.success() && stderr.contains(&said),
        "`weft-agent plan` on {} does not say `{said}`:\n{stderr}",
        node.name
    );
    Ok(())
}

/// Checks that `node`'s fabric sends `peer`'s pod traffic of a family to the peer's node IP.
pub(crate) fn check_path(
    backend: &str,
    node: &Node,
    peer: &NodeRow,
    v6: bool,
) -> anyhow::Result<()> {
    let family = family_name(v6);
    let Some(want) = peer.node_ips.iter().copied().find(|ip| ip.is_ipv6() == v6) else {
        bail!("{} has no {family} node IP", peer.name);
    };
    check_path_to(backend, node, peer, v6, want)
}

/// Checks that `node`'s fabric sends `peer`'s pod traffic of a family to `want`.
pub(crate) fn check_path_to(
    backend: &str,
    node: &Node,
    peer: &NodeRow,
    v6: bool,
    want: std::net::IpAddr,
) -> anyhow::Result<()> {
    let family = family_name(v6);
    let cidr = if v6 { &peer.ipv6_cidr } else { &peer.ipv4_cidr };
    let Some(cidr) = cidr else {
        bail!("{} has no {family} pod CIDR", peer.name);
    };
    let route = match backend {
        // One route for the whole cluster CIDR; the peers' allowed IPs pick the peer.
        "wireguard-native" => inspect::route_to(&node.host.ns, cidr)?,
        _ => inspect::route(&node.host.ns, cidr)?,
    };
    match backend {
        "vxlan" => {
            let dev = inspect::vxlan_dev(v6);
            ensure!(
                route.contains(&format!("dev {dev}")),
                "{}: the route to {} ({cidr}) is `{route}`, not through {dev}",
                node.name,
                peer.name
            );
            let dsts = inspect::fdb_dsts(&node.host.ns, dev)?;
            ensure!(
                dsts.contains(&want),
                "{}: {dev}'s FDB sends to {dsts:?}, not to {}'s {want}",
                node.name,
                peer.name
            );
        }
        "host-gw" => {
            let via = inspect::route_via(&route);
            ensure!(
                via == Some(want),
                "{}: the route to {} ({cidr}) is `{route}`, not via {want}",
                node.name,
                peer.name
            );
        }
        "wireguard-native" => {
            let dev = inspect::wireguard_dev(v6);
            ensure!(
                route.contains(&format!("dev {dev}")),
                "{}: the route to {} ({cidr}) is `{route}`, not through {dev}",
                node.name,
                peer.name
            );
            let peers = inspect::wireguard_peers(node, dev)?;
            let found = peers.iter().find(|p| p.allowed_ips.contains(cidr));
            ensure!(
                found.is_some_and(|p| p.endpoint == Some(want)),
                "{}: {dev} has no peer for {} ({cidr}) with endpoint {want}: {peers:?}",
                node.name,
                peer.name
            );
        }
        other => bail!("no path check for backend {other}"),
    }
    Ok(())
}
