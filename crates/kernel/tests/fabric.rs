//! Privileged tests of weft-fabric + weft-kernel on real kernels in network namespaces (feature
//! `netns-tests`, root): pods on different nodes reach each other over vxlan and host-gw for
//! IPv4, IPv6 and dual-stack; traffic leaving the cluster is masqueraded to the node's IP while
//! pod-to-pod traffic keeps the pod's; restarts change nothing; removed peers, changed VTEP MACs,
//! firewall modes and drift are reconciled; cleanup leaves nothing behind.
//!
//! Run with `cargo test -p weft-kernel --features netns-tests`. See `support/mod.rs` for the
//! topology.

#![cfg(feature = "netns-tests")]

mod support;

use std::net::IpAddr;

use support::{Cluster, Kind, Stack, node_ip, outside_ip, ping, pings, tcp, vtep_mac};
use weft_fabric::{BackendData, MasqMode, Op, PeerProblemReason};
use weft_ipam::Family;

/// Pings between every pair of pods, in every family of the cluster.
fn ping_all(cluster: &Cluster) {
    for a in &cluster.nodes {
        for b in &cluster.nodes {
            if a.n != b.n {
                for family in cluster.stack.families() {
                    ping(&a.pod, b.pod_ip(family));
                }
            }
        }
    }
}

/// Pod 1 to pod 2 keeps the pod's address; pod 1 to the outside arrives from node 1's address.
fn check_sources(cluster: &Cluster, family: Family) {
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    assert_eq!(tcp(&a.pod, &b.pod, b.pod_ip(family)), a.pod_ip(family));
    assert_eq!(
        tcp(&a.pod, &cluster.outside, outside_ip(family)),
        node_ip(1, 0, family)
    );
}

#[test]
fn vxlan_ipv4_three_nodes() {
    let mut cluster = Cluster::new(Kind::Vxlan, Stack::V4, MasqMode::Nftables, &[0, 0, 0]);
    ping_all(&cluster);
    check_sources(&cluster, Family::Ipv4);

    // A restart with the same leases changes nothing, and the link stays the same.
    let index = cluster.nodes[0].link_index("flannel.1");
    assert!(index.is_some());
    let again = cluster.converge(0);
    assert!(again.plan.is_empty(), "{}", again.plan);
    assert_eq!(cluster.nodes[0].link_index("flannel.1"), index);

    // Node 2's VTEP MAC changes (a new device): every peer updates its neighbour and FDB
    // entry, and drops the FDB entry of the old MAC.
    let (old, new) = (vtep_mac(2, Family::Ipv4, 0), vtep_mac(2, Family::Ipv4, 1));
    let node2 = &mut cluster.nodes[1];
    node2.vxlan.mac_v4 = new;
    node2.lease.backend = BackendData::Vxlan {
        vtep_mac_ipv4: Some(new),
        vtep_mac_ipv6: Some(node2.vxlan.mac_v6),
    };
    let recreated = cluster.converge(1);
    assert!(
        recreated
            .plan
            .ops
            .iter()
            .any(|op| matches!(op, Op::DeleteLink { name } if name == "flannel.1")),
        "{}",
        recreated.plan
    );
    for i in [0, 2] {
        let converged = cluster.converge(i);
        assert!(!converged.plan.is_empty());
        let fdb = cluster.nodes[i]
            .ns
            .exec(&["bridge", "fdb", "show", "dev", "flannel.1"])
            .unwrap();
        assert!(fdb.contains(&new.to_string()), "{fdb}");
        assert!(!fdb.contains(&old.to_string()), "{fdb}");
        let neigh = cluster.nodes[i]
            .ns
            .ip(&["neigh", "show", "10.42.2.0", "dev", "flannel.1"])
            .unwrap();
        assert!(neigh.contains(&new.to_string()), "{neigh}");
    }
    ping_all(&cluster);

    // Node 3 leaves: node 1 removes its route, neighbour and FDB entry.
    let remaining: Vec<_> = cluster.leases().into_iter().take(2).collect();
    let removed = cluster.converge_with(0, &remaining);
    assert_eq!(removed.plan.len(), 3, "{}", removed.plan);
    let node1 = &cluster.nodes[0];
    let routes = node1.ns.ip(&["route", "show", "proto", "87"]).unwrap();
    assert!(!routes.contains("10.42.3.0"), "{routes}");
    assert!(
        routes.contains("10.42.2.0/24 via 10.42.2.0 dev flannel.1"),
        "{routes}"
    );
    let neigh = node1.ns.ip(&["neigh", "show", "dev", "flannel.1"]).unwrap();
    assert!(!neigh.contains("10.42.3.0"), "{neigh}");
    let fdb = node1
        .ns
        .exec(&["bridge", "fdb", "show", "dev", "flannel.1"])
        .unwrap();
    assert!(
        !fdb.contains(&vtep_mac(3, Family::Ipv4, 0).to_string()),
        "{fdb}"
    );
    assert!(!pings(&node1.pod, cluster.nodes[2].pod_ip(Family::Ipv4)));
    ping(&node1.pod, cluster.nodes[1].pod_ip(Family::Ipv4));

    // Cleanup removes everything weft made.
    let (done, left) = cluster.cleanup(0);
    assert!(!done.is_empty());
    assert!(left.links.is_empty() && left.routes.is_empty() && left.firewall.is_empty());
    assert!(cluster.nodes[0].link_index("flannel.1").is_none());
    let tables = cluster.nodes[0]
        .ns
        .exec(&["nft", "list", "tables"])
        .unwrap();
    assert!(!tables.contains("weft"), "{tables}");
}

#[test]
fn vxlan_ipv6() {
    let cluster = Cluster::new(Kind::Vxlan, Stack::V6, MasqMode::Nftables, &[0, 0]);
    ping_all(&cluster);
    check_sources(&cluster, Family::Ipv6);
    let again = cluster.converge(1);
    assert!(again.plan.is_empty(), "{}", again.plan);
}

#[test]
fn vxlan_dual_stack() {
    let cluster = Cluster::new(Kind::Vxlan, Stack::Dual, MasqMode::Nftables, &[0, 0]);
    ping_all(&cluster);
    check_sources(&cluster, Family::Ipv4);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    assert_eq!(
        tcp(&b.pod, &a.pod, a.pod_ip(Family::Ipv6)),
        b.pod_ip(Family::Ipv6)
    );
    let mtu = |dev: &str| a.ns.ip(&["link", "show", dev]).unwrap();
    assert!(mtu("flannel.1").contains("mtu 1450"));
    assert!(mtu("flannel-v6.1").contains("mtu 1430"));
}

#[test]
fn host_gw_dual_stack() {
    let cluster = Cluster::new(Kind::HostGw, Stack::Dual, MasqMode::Nftables, &[0, 0]);
    ping_all(&cluster);
    check_sources(&cluster, Family::Ipv4);
    check_sources(&cluster, Family::Ipv6);
    let routes = cluster.nodes[0]
        .ns
        .ip(&["route", "show", "proto", "87"])
        .unwrap();
    assert!(
        routes.contains("10.42.2.0/24 via 192.0.2.2 dev eth0"),
        "{routes}"
    );
    assert!(cluster.nodes[0].link_index("flannel.1").is_none());
}

#[test]
fn host_gw_reports_a_peer_on_another_segment() {
    // Nodes 1 and 2 share segment 0; node 3 is alone on segment 1.
    let cluster = Cluster::new(Kind::HostGw, Stack::V4, MasqMode::Nftables, &[0, 0, 1]);
    let converged = cluster.converge(0);
    assert!(converged.plan.is_empty(), "{}", converged.plan);
    let node3_ip = node_ip(3, 1, Family::Ipv4);
    assert!(
        converged.problems.iter().any(|p| p.node == "node-3"
            && p.reason
                == PeerProblemReason::NotAdjacent {
                    ip: node3_ip,
                    interface: "eth0".to_owned()
                }),
        "{:?}",
        converged.problems
    );
    assert!(
        converged.problems[0]
            .to_string()
            .contains("host-gw requires every node on one layer-2 network")
    );
    let routes: Vec<_> = converged
        .after
        .routes
        .keys()
        .map(ToString::to_string)
        .collect();
    assert_eq!(routes, ["10.42.2.0/24"]);
    ping(&cluster.nodes[0].pod, cluster.nodes[1].pod_ip(Family::Ipv4));
}

#[test]
fn iptables_mode_and_switching_modes() {
    let mut cluster = Cluster::new(Kind::Vxlan, Stack::V4, MasqMode::Iptables, &[0, 0]);
    let node = &cluster.nodes[0];
    let nat = node.ns.exec(&["iptables", "-t", "nat", "-S"]).unwrap();
    assert!(
        nat.contains("-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG"),
        "{nat}"
    );
    assert!(
        nat.contains("-A FLANNEL-POSTRTG -s 10.42.1.0/24 -d 10.42.0.0/16"),
        "{nat}"
    );
    let filter = node.ns.exec(&["iptables", "-t", "filter", "-S"]).unwrap();
    assert!(
        filter.contains("-A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD"),
        "{filter}"
    );
    // A second apply is a no-op.
    assert!(cluster.pending(0).is_empty());
    ping_all(&cluster);
    check_sources(&cluster, Family::Ipv4);

    // A missing jump is noticed and put back.
    node.ns
        .exec(&[
            "iptables",
            "-t",
            "nat",
            "-D",
            "POSTROUTING",
            "-m",
            "comment",
            "--comment",
            "flanneld masq",
            "-j",
            "FLANNEL-POSTRTG",
        ])
        .unwrap();
    let repaired = cluster.converge(0);
    assert!(
        matches!(repaired.plan.ops.as_slice(), [Op::ReplaceFirewall { .. }]),
        "{}",
        repaired.plan
    );
    assert!(cluster.pending(0).is_empty());

    // Switching to nftables removes flannel's chains and their jumps.
    cluster.masq_mode = MasqMode::Nftables;
    let switched = cluster.converge(0);
    assert!(
        switched.plan.ops.iter().any(|op| matches!(
            op,
            Op::DeleteFirewall {
                mode: MasqMode::Iptables,
                ..
            }
        )),
        "{}",
        switched.plan
    );
    let node = &cluster.nodes[0];
    let nat = node.ns.exec(&["iptables", "-t", "nat", "-S"]).unwrap();
    assert!(!nat.contains("FLANNEL"), "{nat}");
    let filter = node.ns.exec(&["iptables", "-t", "filter", "-S"]).unwrap();
    assert!(!filter.contains("FLANNEL"), "{filter}");
    assert_eq!(
        tcp(&node.pod, &cluster.outside, outside_ip(Family::Ipv4)),
        node_ip(1, 0, Family::Ipv4)
    );

    // And back to iptables, then cleanup removes the chains too.
    cluster.masq_mode = MasqMode::Iptables;
    cluster.converge(0);
    let (_, left) = cluster.cleanup(0);
    assert!(left.firewall.is_empty(), "{:?}", left.firewall);
    let nat = cluster.nodes[0]
        .ns
        .exec(&["iptables", "-t", "nat", "-S"])
        .unwrap();
    assert!(!nat.contains("FLANNEL"), "{nat}");
}

#[test]
fn drift_is_repaired() {
    let cluster = Cluster::new(Kind::Vxlan, Stack::V4, MasqMode::Nftables, &[0, 0]);
    let node = &cluster.nodes[0];
    let peer_pod: IpAddr = cluster.nodes[1].pod_ip(Family::Ipv4);

    // A removed route, a changed rule set and a leftover route of a node that is gone.
    node.ns.ip(&["route", "del", "10.42.2.0/24"]).unwrap();
    node.ns
        .exec(&["nft", "flush", "chain", "ip", "weft", "postrouting"])
        .unwrap();
    node.ns
        .ip(&[
            "route",
            "add",
            "10.42.9.0/24",
            "via",
            "10.42.9.0",
            "dev",
            "flannel.1",
            "onlink",
            "proto",
            "87",
        ])
        .unwrap();
    assert!(!pings(&node.pod, peer_pod));
    let repaired = cluster.converge(0);
    let ops: Vec<String> = repaired.plan.ops.iter().map(ToString::to_string).collect();
    assert_eq!(ops.len(), 3, "{ops:?}");
    assert!(ops[0].starts_with("ip route del 10.42.9.0/24"), "{ops:?}");
    assert!(
        ops[1].starts_with("ip route replace 10.42.2.0/24"),
        "{ops:?}"
    );
    assert!(ops[2].starts_with("nft "), "{ops:?}");
    ping(&node.pod, peer_pod);

    // A device of another type under weft's name is replaced by weft's.
    node.ns.ip(&["link", "del", "flannel.1"]).unwrap();
    node.ns
        .ip(&["link", "add", "flannel.1", "type", "bridge"])
        .unwrap();
    let replaced = cluster.converge(0);
    assert!(
        matches!(&replaced.plan.ops[0], Op::DeleteLink { name } if name == "flannel.1"),
        "{}",
        replaced.plan
    );
    ping(&node.pod, peer_pod);
    assert!(cluster.pending(0).is_empty());
}

#[test]
fn interfaces_are_described_from_the_kernel() {
    use weft_kernel::netns::{Namespace, veth};
    use weft_kernel::{DefaultInterface, KernelError};

    let node = Namespace::new("if").unwrap();
    let other = Namespace::new("ifo").unwrap();
    veth(&node, "eth0", &other, "eth0").unwrap();
    node.ip(&["link", "set", "eth0", "mtu", "1400"]).unwrap();
    node.ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"])
        .unwrap();
    node.ip(&["addr", "add", "2001:db8::1/64", "dev", "eth0"])
        .unwrap();
    node.ip(&[
        "route",
        "add",
        "198.51.100.0/24",
        "dev",
        "eth0",
        "scope",
        "link",
    ])
    .unwrap();

    let missing = node
        .run(|k| async move { k.default_interface(Family::Ipv4).await })
        .unwrap();
    assert_eq!(
        missing,
        Err(KernelError::NoDefaultRoute {
            family: Family::Ipv4
        })
    );

    node.ip(&["route", "add", "default", "via", "192.0.2.254"])
        .unwrap();
    node.ip(&["-6", "route", "add", "default", "via", "2001:db8::fe"])
        .unwrap();
    let (ext, v4, v6) = node
        .run(|k| async move {
            (
                k.external_interface("eth0").await,
                k.default_interface(Family::Ipv4).await,
                k.default_interface(Family::Ipv6).await,
            )
        })
        .unwrap();
    let ext = ext.unwrap();
    assert_eq!(ext.mtu, 1400);
    let addresses: Vec<String> = ext.addresses.iter().map(ToString::to_string).collect();
    assert_eq!(addresses, ["192.0.2.1", "2001:db8::1"]);
    let onlink: Vec<String> = ext.onlink.iter().map(ToString::to_string).collect();
    for net in ["192.0.2.0/24", "198.51.100.0/24", "2001:db8::/64"] {
        assert!(onlink.iter().any(|n| n == net), "{onlink:?}");
    }
    assert!(
        !onlink.iter().any(|n| n.starts_with("0.0.0.0")),
        "{onlink:?}"
    );
    assert_eq!(
        v4.unwrap(),
        DefaultInterface {
            name: "eth0".to_owned(),
            gateway: Some("192.0.2.254".parse().unwrap()),
            addresses: vec!["192.0.2.1".parse().unwrap()],
        }
    );
    let v6 = v6.unwrap();
    assert_eq!(v6.name, "eth0");
    assert_eq!(v6.addresses, ["2001:db8::1".parse::<IpAddr>().unwrap()]);
    assert!(matches!(
        node.run(|k| async move { k.external_interface("nope0").await })
            .unwrap(),
        Err(KernelError::NoSuchInterface { .. })
    ));
}

/// flannel-conf's vxlan options on a real kernel: `flannel.4096` with VNI 4096, UDP port 4789
/// and GBP read back as made (a second converge changes nothing), pods reach each other over
/// it; with DirectRouting the peer on the same segment gets a route via its address on eth0,
/// the one on another segment the tunnel.
#[test]
fn vxlan_options_vni_port_gbp_and_direct_routing() {
    let settings = weft_fabric::VxlanSettings {
        vni: 4096,
        port: 4789,
        gbp: true,
        direct_routing: false,
    };
    let cluster = Cluster::with_vxlan(
        Kind::Vxlan,
        Stack::V4,
        MasqMode::Nftables,
        &[0, 0],
        settings,
    );
    ping_all(&cluster);
    let details = cluster.nodes[0]
        .ns
        .exec(&["ip", "-d", "link", "show", "flannel.4096"])
        .unwrap();
    for want in ["vxlan id 4096", "dstport 4789", "gbp"] {
        assert!(details.contains(want), "{want} in {details}");
    }
    assert_eq!(cluster.nodes[0].link_index("flannel.1"), None);
    let again = cluster.converge(0);
    assert!(again.plan.is_empty(), "{}", again.plan);

    let settings = weft_fabric::VxlanSettings {
        direct_routing: true,
        ..weft_fabric::VxlanSettings::default()
    };
    // Nodes 1 and 2 share segment 0; node 3 is on segment 1.
    let cluster = Cluster::with_vxlan(
        Kind::Vxlan,
        Stack::V4,
        MasqMode::Nftables,
        &[0, 0, 1],
        settings,
    );
    let routes = cluster.nodes[0]
        .ns
        .exec(&["ip", "route", "show", "proto", "87"])
        .unwrap();
    assert!(
        routes.contains("10.42.2.0/24 via 192.0.2.2 dev eth0"),
        "{routes}"
    );
    assert!(
        routes.contains("10.42.3.0/24 via 10.42.3.0 dev flannel.1 onlink"),
        "{routes}"
    );
    ping(&cluster.nodes[0].pod, cluster.nodes[1].pod_ip(Family::Ipv4));
    ping(&cluster.nodes[1].pod, cluster.nodes[0].pod_ip(Family::Ipv4));
}
