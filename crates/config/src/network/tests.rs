//! Tests of the cluster network rules (each with its exact message), the derived values, the
//! net-conf shape and the critical-settings comparison. Servers are loaded through the fakes.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use serde_json::json;
use weft_ipam::{Cidr, CidrList, Family, Ipv4Cidr, Ipv6Cidr, indexed_ip};

use crate::test_support::{errors, ok, server, system, system_with_ips, warnings};
use crate::{ClusterNetwork, ConfigError, EgressSelectorMode, FlannelBackend, RecordProblem};

/// Loads a server on the default fake host (eth0 192.168.1.10) and returns its messages.
fn check(args: &[&str], want_errors: &[&str], want_warnings: &[&str]) {
    check_on(&["192.168.1.10"], args, want_errors, want_warnings);
}

fn check_on(addrs: &[&str], args: &[&str], want_errors: &[&str], want_warnings: &[&str]) {
    let loaded = server(args, &system_with_ips(&[], &[], addrs));
    assert_eq!(errors(&loaded), want_errors, "errors of {args:?}");
    assert_eq!(warnings(&loaded), want_warnings, "warnings of {args:?}");
}

const SAME_VERSION: &str = "must share the same IP version (IPv4, IPv6 or dual-stack)";

#[test]
fn cidr_lists() {
    let table: &[(&[&str], &[&str])] = &[
        (
            &[
                "--cluster-cidr=10.42.0.0/16,2001:cafe:42::/56",
                "--service-cidr=10.43.0.0/16,2001:cafe:43::/112",
                "--node-ip=192.168.1.10,2001:db8::10",
            ],
            &[],
        ),
        (
            &["--cluster-cidr=10.42.0.1/16"],
            &["invalid cluster-cidr 10.42.0.1/16: host bits are set; use 10.42.0.0/16"],
        ),
        (
            &[
                "--cluster-cidr=10.42.0.0/16,10.44.0.0/16",
                "--service-cidr=10.43.0.0/16,fd00::/112,fd01::/112",
            ],
            &[
                "cluster-cidr 10.42.0.0/16,10.44.0.0/16 has two IPv4 entries: a dual-stack list needs one IPv4 and one IPv6 entry",
                "service-cidr 10.43.0.0/16,fd00::/112,fd01::/112 has 3 entries: give one, or two (one IPv4 and one IPv6) for dual-stack",
            ],
        ),
        (
            &["--service-cidr=10.0.0.0/8"],
            &[
                "service-cidr 10.0.0.0/8 is too large: the largest allowed IPv4 service CIDR is /12; use a prefix of /12 or longer",
            ],
        ),
        (
            &["--service-cidr=10.43.0.0/29"],
            &[
                "service-cidr 10.43.0.0/29 is too small: it needs room for the cluster DNS address at index 10; use a prefix of /28 or shorter",
            ],
        ),
        (
            &["--cluster-cidr=10.42.0.0/16,fd00:42::/56"],
            &[&format!(
                "cluster-cidr and service-cidr {SAME_VERSION}: cluster-cidr is dual-stack, service-cidr is IPv4"
            )],
        ),
    ];
    for (args, want) in table {
        let loaded = server(
            args,
            &system_with_ips(&[], &[], &["192.168.1.10", "2001:db8::10"]),
        );
        let got = errors(&loaded);
        let got: Vec<&str> = got
            .iter()
            .map(String::as_str)
            .filter(|e| !e.starts_with("cluster-cidr and node-ip"))
            .collect();
        assert_eq!(got, *want, "{args:?}");
    }
}

#[test]
fn node_ip_families_and_order() {
    let dual = [
        "--cluster-cidr=10.42.0.0/16,fd00:42::/56",
        "--service-cidr=10.43.0.0/16,fd00:43::/112",
    ];
    let dual6 = [
        "--cluster-cidr=fd00:42::/56,10.42.0.0/16",
        "--service-cidr=fd00:43::/112,10.43.0.0/16",
    ];
    let with = |base: &[&'static str], extra: &'static str| -> Vec<&'static str> {
        base.iter().copied().chain([extra]).collect()
    };
    // Dual-stack cluster, node with IPv4 only (detected).
    check(
        &dual,
        &[&format!(
            "cluster-cidr and node-ip {SAME_VERSION}: cluster-cidr is dual-stack, node-ip is IPv4 (detected on default-route interface eth0); give node-ip an address of each family of cluster-cidr"
        )],
        &[],
    );
    // ...and set explicitly.
    check(
        &with(&dual, "--node-ip=192.168.1.10"),
        &[&format!(
            "cluster-cidr and node-ip {SAME_VERSION}: cluster-cidr is dual-stack, node-ip is IPv4 (set by node-ip); give node-ip an address of each family of cluster-cidr"
        )],
        &[],
    );
    // Single-stack IPv4 cluster on a dual-stack node is fine.
    check_on(&["192.168.1.10", "2001:db8::10"], &[], &[], &[]);
    // IPv6 primary with detected node IPs.
    check_on(
        &["192.168.1.10", "2001:db8::10"],
        &dual6,
        &[
            "cluster-cidr fd00:42::/56,10.42.0.0/16 makes IPv6 the primary family, which needs node-ip set explicitly with the node's IPv6 address first (the kubelet prefers IPv4 otherwise): set node-ip, e.g. --node-ip=<IPv6 address>[,<IPv4 address>]",
        ],
        &[],
    );
    // IPv6 primary, node-ip with IPv4 first.
    check(
        &with(&dual6, "--node-ip=192.168.1.10,2001:db8::10"),
        &[
            "node-ip 192.168.1.10,2001:db8::10 starts with an IPv4 address, but cluster-cidr fd00:42::/56,10.42.0.0/16 makes IPv6 the primary family: put the node's IPv6 address first",
        ],
        &[],
    );
    // IPv4 primary, node-ip with IPv6 first.
    check(
        &with(&dual, "--node-ip=2001:db8::10,192.168.1.10"),
        &[
            "node-ip 2001:db8::10,192.168.1.10 starts with an IPv6 address, but cluster-cidr 10.42.0.0/16,fd00:42::/56 makes IPv4 the primary family: put the node's IPv4 address first",
        ],
        &[],
    );
    // IPv6 primary done right.
    check(
        &with(&dual6, "--node-ip=2001:db8::10,192.168.1.10"),
        &[],
        &[],
    );
    // An explicit IPv6 node IP makes the defaults IPv6 single-stack, as in K3s.
    let config = ok(server(&["--node-ip=2001:db8::10"], &system(&[], &[])));
    assert_eq!(config.network.cluster_cidr.to_string(), "fd00:42::/56");
    assert_eq!(config.network.service_cidr.to_string(), "fd00:43::/112");
    assert_eq!(
        config.network.cluster_dns,
        ["fd00:43::a".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(config.node.bind_address.to_string(), "::");
    // Node checks are skipped without an embedded agent, and so is node-ip's role in them.
    check(
        &with(&dual, "--disable-agent"),
        &[],
        &[
            "webhooks and apiserver aggregation may not work without an agent: egress-selector-mode is agent; set egress-selector-mode to cluster or pod",
        ],
    );
}

#[test]
fn cluster_dns() {
    let dual = [
        "--cluster-cidr=10.42.0.0/16,fd00:42::/56",
        "--service-cidr=10.43.0.0/16,fd00:43::/112",
        "--node-ip=192.168.1.10,2001:db8::10",
    ];
    let table: &[(&[&str], &[&str])] = &[
        (&["--cluster-dns=10.43.0.53"], &[]),
        (
            &["--cluster-dns=10.42.0.10"],
            &[
                "cluster-dns 10.42.0.10 is not in service-cidr 10.43.0.0/16: use an address inside it, e.g. 10.43.0.10",
            ],
        ),
        (
            &["--cluster-dns=fd00:43::a"],
            &[
                "cluster-dns fd00:43::a is IPv6, but service-cidr 10.43.0.0/16 has no IPv6 network: remove it or add an IPv6 service-cidr",
            ],
        ),
        (
            &["--cluster-dns=dns.local"],
            &[
                "invalid cluster-dns \"dns.local\": not an IP address; write e.g. 192.168.1.10 or 2001:db8::10",
            ],
        ),
    ];
    for (args, want) in table {
        check(args, want, &[]);
    }
    let mut args = dual.to_vec();
    args.push("--cluster-dns=10.43.0.10,fd00:44::a");
    check(
        &args,
        &[
            "cluster-dns fd00:44::a is not in service-cidr fd00:43::/112: use an address inside it, e.g. fd00:43::a",
        ],
        &[],
    );
    let config = ok(server(&dual, &system(&[], &[])));
    assert_eq!(
        config
            .network
            .cluster_dns
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["10.43.0.10", "fd00:43::a"]
    );
}

#[test]
fn node_mask_sizes() {
    type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str], (u8, u8));
    let table: &[Case<'_>] = &[
        (&[], &[], &[], (24, 64)),
        (&["--node-cidr-mask-size-ipv4=26"], &[], &[], (26, 64)),
        (
            &["--kube-controller-manager-arg=node-cidr-mask-size-ipv4=25"],
            &[],
            &[],
            (25, 64),
        ),
        (
            &[
                "--kube-controller-manager-arg=--node-cidr-mask-size=27",
                "--kube-controller-manager-arg=v=2",
            ],
            &[],
            &[],
            (27, 64),
        ),
        (
            &[
                "--node-cidr-mask-size-ipv4=26",
                "--kube-controller-manager-arg=node-cidr-mask-size-ipv4=26",
            ],
            &[],
            &[],
            (26, 64),
        ),
        (
            &["--node-cidr-mask-size-ipv6=80"],
            &[],
            &["node-cidr-mask-size-ipv6 has no effect: cluster-cidr has no IPv6 network"],
            (24, 80),
        ),
    ];
    for (args, want_errors, want_warnings, (v4, v6)) in table {
        let loaded = server(args, &system(&[], &[]));
        assert_eq!(errors(&loaded), *want_errors, "{args:?}");
        assert_eq!(warnings(&loaded), *want_warnings, "{args:?}");
        let config = ok(loaded);
        assert_eq!(
            (
                config.network.node_cidr_mask_size_ipv4,
                config.network.node_cidr_mask_size_ipv6
            ),
            (*v4, *v6),
            "{args:?}"
        );
    }
    let bad: &[(&[&str], &[&str])] = &[
        (
            &["--node-cidr-mask-size-ipv4=15"],
            &[
                "node-cidr-mask-size-ipv4 15 does not fit cluster-cidr 10.42.0.0/16: it must be between 16 and 32 (at least the cluster prefix and at most 16 bits longer)",
            ],
        ),
        (
            &["--cluster-cidr=10.42.0.0/25"],
            &[
                "node-cidr-mask-size-ipv4 24 does not fit cluster-cidr 10.42.0.0/25: it must be between 25 and 32 (at least the cluster prefix and at most 16 bits longer)",
            ],
        ),
        (
            &["--node-cidr-mask-size-ipv4=abc"],
            &[
                "invalid node-cidr-mask-size-ipv4 \"abc\": use a prefix length such as 24 for IPv4 or 64 for IPv6",
            ],
        ),
        (
            &["--kube-controller-manager-arg=node-cidr-mask-size-ipv4=x"],
            &[
                "invalid kube-controller-manager-arg \"node-cidr-mask-size-ipv4=x\": use a prefix length such as 24 for IPv4 or 64 for IPv6",
            ],
        ),
        (
            &["--kube-controller-manager-arg=allocate-node-cidrs"],
            &[
                "invalid kube-controller-manager-arg \"allocate-node-cidrs\": write NAME=VALUE, e.g. node-cidr-mask-size-ipv4=24",
            ],
        ),
        (
            &[
                "--node-cidr-mask-size-ipv4=26",
                "--kube-controller-manager-arg=node-cidr-mask-size-ipv4=25",
            ],
            &[
                "node-cidr-mask-size-ipv4 is set twice with different values: 26 by node-cidr-mask-size-ipv4 and 25 by kube-controller-manager-arg; keep one",
            ],
        ),
        (
            &[
                "--cluster-cidr=10.42.0.0/16,fd00:42::/56",
                "--service-cidr=10.43.0.0/16,fd00:43::/112",
                "--node-ip=192.168.1.10,fd00::10",
                "--kube-controller-manager-arg=node-cidr-mask-size=24",
            ],
            &[
                "kube-controller-manager-arg node-cidr-mask-size=24 can't be used with the dual-stack cluster-cidr 10.42.0.0/16,fd00:42::/56: use node-cidr-mask-size-ipv4 and node-cidr-mask-size-ipv6",
            ],
        ),
        (
            &[
                "--cluster-cidr=10.42.0.0/16,fd00:42::/56",
                "--service-cidr=10.43.0.0/16,fd00:43::/112",
                "--node-ip=192.168.1.10,fd00::10",
                "--node-cidr-mask-size-ipv6=48",
            ],
            &[
                "node-cidr-mask-size-ipv6 48 does not fit cluster-cidr fd00:42::/56: it must be between 56 and 72 (at least the cluster prefix and at most 16 bits longer)",
            ],
        ),
    ];
    for (args, want) in bad {
        check(args, want, &[]);
    }
}

#[test]
fn flannel_rules() {
    let dual = [
        "--cluster-cidr=10.42.0.0/16,fd00:42::/56",
        "--service-cidr=10.43.0.0/16,fd00:43::/112",
        "--node-ip=192.168.1.10,fd00::10",
    ];
    check(
        &["--flannel-ipv6-masq"],
        &[
            "flannel-ipv6-masq is set, but cluster-cidr 10.42.0.0/16 has no IPv6 network: add an IPv6 cluster-cidr (dual-stack) or unset flannel-ipv6-masq",
        ],
        &[],
    );
    let mut args = dual.to_vec();
    args.push("--flannel-ipv6-masq");
    check(&args, &[], &[]);
    check(
        &["--flannel-external-ip", "--node-external-ip=203.0.113.10"],
        &[],
        &[
            "flannel-external-ip sends flannel traffic to external addresses, but flannel-backend vxlan does not encrypt it: consider flannel-backend wireguard-native",
        ],
    );
    check(
        &[
            "--flannel-external-ip",
            "--node-external-ip=203.0.113.10",
            "--flannel-backend=wireguard-native",
            "--advertise-address=192.168.1.10",
        ],
        &[],
        &[],
    );
    check(
        &[
            "--flannel-external-ip",
            "--flannel-backend=wireguard-native",
        ],
        &[],
        &[
            "the servers set flannel-external-ip, but this node sets no node-external-ip: flannel will use the internal address to reach this node; set node-external-ip",
        ],
    );
    check(
        &["--flannel-backend=none"],
        &[],
        &[
            "flannel-backend is none, so a custom CNI will run, and most bring their own network policy engine: set disable-network-policy to avoid conflicts",
        ],
    );
    check(
        &["--flannel-backend=none", "--disable-network-policy"],
        &[],
        &[],
    );
    check(
        &[
            "--flannel-backend=none",
            "--disable-network-policy",
            "--flannel-external-ip",
            "--node-external-ip=192.168.1.20",
        ],
        &[],
        &["flannel-external-ip has no effect with flannel-backend none: unset it"],
    );
    check(
        &[
            "--flannel-backend=wireguard",
            "--egress-selector-mode=konnectivity",
            "--cluster-domain=Cluster.Local",
        ],
        &[
            "invalid cluster-domain \"Cluster.Local\": use a DNS name of lowercase letters, digits, '-' and '.', such as cluster.local",
            "flannel-backend wireguard was removed in K3s v1.26: wireguard-native replaces it; to migrate, 1. set flannel-backend: wireguard-native on every server, 2. restart the nodes, servers first",
            "invalid egress-selector-mode \"konnectivity\": valid values are agent, pod, cluster, disabled",
        ],
        &[],
    );
}

#[test]
fn egress_without_agent() {
    let want = |mode: &str| {
        format!(
            "webhooks and apiserver aggregation may not work without an agent: egress-selector-mode is {mode}; set egress-selector-mode to cluster or pod"
        )
    };
    check(&["--disable-agent"], &[], &[&want("agent")]);
    check(
        &["--disable-agent", "--egress-selector-mode=disabled"],
        &[],
        &[&want("disabled")],
    );
    check(&["--disable-agent", "--egress-selector-mode=pod"], &[], &[]);
    check(
        &["--disable-agent", "--egress-selector-mode=cluster"],
        &[],
        &[],
    );
    check(&["--egress-selector-mode=disabled"], &[], &[]);
}

#[test]
fn server_only_rules() {
    check(
        &[
            "--advertise-address=2001:db8::1",
            "--supervisor-port=x",
            "--datastore-endpoint=postgres://u:p@db/k3s",
            "--server=https://10.0.0.1:9345",
        ],
        &[
            "token is required to join a server: set --token, --token-file, K3S_TOKEN or K3S_TOKEN_FILE",
            "invalid supervisor-port \"x\": use a port number from 1 to 65535",
            "invalid datastore-endpoint \"postgres://u:********@db/k3s\": weft supports etcd (http:// or https:// endpoints, comma-separated) or the embedded store (leave it unset)",
            "advertise-address 2001:db8::1 is IPv6, but the primary service-cidr 10.43.0.0/16 is IPv4: kube-apiserver needs them to match; set advertise-address to an IPv4 address",
        ],
        &[],
    );
    let config = ok(server(
        &["--node-external-ip=203.0.113.10"],
        &system(&[], &[]),
    ));
    assert_eq!(config.advertise_address.to_string(), "203.0.113.10");
    let config = ok(server(
        &[
            "--advertise-address=10.0.0.5",
            "--node-external-ip=203.0.113.10",
        ],
        &system(&[], &[]),
    ));
    assert_eq!(config.advertise_address.to_string(), "10.0.0.5");
}

#[test]
fn errors_are_all_reported_together() {
    let loaded = server(
        &[
            "--cluster-cidr=10.42.0.1/16",
            "--service-cidr=10.0.0.0/8",
            "--flannel-backend=ipsec",
            "--egress-selector-mode=x",
            "--node-name=a_b",
        ],
        &system(&[], &[]),
    );
    assert_eq!(errors(&loaded).len(), 5, "{:#?}", errors(&loaded));
}

#[test]
fn derived_values_and_net_conf() {
    let config = ok(server(&[], &system(&[], &[])));
    let derived = config.network.derived().to_json();
    assert_eq!(
        derived,
        json!({
            "kubernetes-service-ips": ["10.43.0.1"],
            "cluster-dns": ["10.43.0.10"],
            "primary-family": "ipv4",
            "ipv4": true,
            "ipv6": false,
            "node-cidr-mask-size-ipv4": 24,
            "node-cidr-mask-size-ipv6": 64,
            "net-conf": {
                "Network": "10.42.0.0/16",
                "EnableIPv4": true,
                "EnableIPv6": false,
                "IPv6Network": "::/0",
                "Backend": {"Type": "vxlan"}
            }
        })
    );

    let config = ok(server(
        &[
            "--cluster-cidr=10.42.0.0/16,2001:cafe:22::/56",
            "--service-cidr=10.43.0.0/16,2001:cafe:43::/112",
            "--node-ip=192.168.1.10,2001:db8::10",
            "--flannel-backend=wireguard-native",
        ],
        &system(&[], &[]),
    ));
    let derived = config.network.derived();
    assert_eq!(
        derived
            .kubernetes_service_ips
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["10.43.0.1", "2001:cafe:43::1"]
    );
    assert_eq!(
        derived.net_conf,
        Some(json!({
            "Network": "10.42.0.0/16",
            "EnableIPv4": true,
            "EnableIPv6": true,
            "IPv6Network": "2001:cafe:22::/56",
            "Backend": {"Type": "wireguard", "PersistentKeepaliveInterval": 25}
        }))
    );

    let config = ok(server(
        &["--node-ip=2001:db8::10", "--flannel-backend=host-gw"],
        &system(&[], &[]),
    ));
    let derived = config.network.derived().to_json();
    assert_eq!(derived["primary-family"], "ipv6");
    assert_eq!(
        (derived["ipv4"].clone(), derived["ipv6"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(
        derived["net-conf"],
        json!({"Network": "0.0.0.0/0", "EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:42::/56", "Backend": {"Type": "host-gw"}})
    );

    let config = ok(server(
        &["--flannel-backend=none", "--disable-network-policy"],
        &system(&[], &[]),
    ));
    assert_eq!(config.network.derived().net_conf, None);
}

#[test]
fn critical_settings_mismatch() {
    let a = ok(server(&[], &system(&[], &[]))).network;
    assert_eq!(a.compare_critical(&a), []);
    let b = ok(server(
        &[
            "--cluster-cidr=10.44.0.0/16",
            "--flannel-backend=host-gw",
            "--node-cidr-mask-size-ipv4=25",
            "--flannel-ipv6-masq=false",
            "--disable-network-policy",
        ],
        &system(&[], &[]),
    ))
    .network;
    let got: Vec<String> = a
        .compare_critical(&b)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        got,
        [
            "critical configuration value mismatch between servers: cluster-cidr (this server: 10.42.0.0/16, cluster: 10.44.0.0/16)",
            "critical configuration value mismatch between servers: disable-network-policy (this server: false, cluster: true)",
            "critical configuration value mismatch between servers: flannel-backend (this server: vxlan, cluster: host-gw)",
            "critical configuration value mismatch between servers: node-cidr-mask-size-ipv4 (this server: 24, cluster: 25)",
        ]
    );
    let names: Vec<&str> = a.critical_fields().iter().map(|(n, _)| n.name()).collect();
    assert_eq!(
        names,
        [
            "cluster-cidr",
            "service-cidr",
            "cluster-dns",
            "cluster-domain",
            "disable-network-policy",
            "flannel-backend",
            "flannel-ipv6-masq",
            "flannel-external-ip",
            "egress-selector-mode",
            "node-cidr-mask-size-ipv4",
            "node-cidr-mask-size-ipv6",
            "flannel-conf",
        ]
    );
}

// --- The cluster network record: `ClusterNetwork::to_json` and `from_json`.

/// The record of the default network, in full: the shape servers store and send.
#[test]
fn record_shape() {
    let config = ok(server(&[], &system(&[], &[])));
    let record = config.network.to_json();
    assert_eq!(
        record,
        json!({
            "cluster-cidr": ["10.42.0.0/16"],
            "service-cidr": ["10.43.0.0/16"],
            "cluster-dns": ["10.43.0.10"],
            "cluster-domain": "cluster.local",
            "node-cidr-mask-size-ipv4": 24,
            "node-cidr-mask-size-ipv6": 64,
            "flannel-backend": "vxlan",
            "flannel-ipv6-masq": false,
            "flannel-external-ip": false,
            "egress-selector-mode": "agent",
            "disable-network-policy": false,
            "net-conf": null,
        })
    );
    let keys: Vec<&str> = record
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want: Vec<&str> = ClusterNetwork::KEYS.iter().map(|k| k.name()).collect();
    want.push("net-conf");
    assert_eq!(keys, want);
    // Each key holds what `validate` prints for it.
    let effective = config.to_json();
    for key in ClusterNetwork::KEYS {
        assert_eq!(record[key.name()], effective[key.name()], "{key}");
    }
}

/// Servers loaded with each variant of the settings round-trip through their record, also as
/// text, as a store keeps it.
#[test]
fn record_round_trips_table() {
    let dual = [
        "--cluster-cidr=10.42.0.0/16,2001:cafe:42::/56",
        "--service-cidr=10.43.0.0/16,2001:cafe:43::/112",
        "--node-ip=192.168.1.10,2001:db8::10",
    ];
    let table: Vec<Vec<&str>> = vec![
        vec![],
        vec!["--node-ip=2001:db8::10"],
        dual.to_vec(),
        [
            &dual[..],
            &[
                "--flannel-ipv6-masq",
                "--cluster-dns=10.43.0.53,2001:cafe:43::35",
            ],
        ]
        .concat(),
        vec![
            "--cluster-cidr=2001:cafe:42::/56,10.42.0.0/16",
            "--service-cidr=2001:cafe:43::/112,10.43.0.0/16",
            "--node-ip=2001:db8::10,192.168.1.10",
            "--kube-controller-manager-arg=node-cidr-mask-size-ipv6=72",
            "--node-cidr-mask-size-ipv4=26",
        ],
        vec!["--flannel-backend=none", "--disable-network-policy"],
        vec!["--flannel-backend=host-gw", "--egress-selector-mode=pod"],
        vec![
            "--flannel-backend=wireguard-native",
            "--flannel-external-ip",
            "--egress-selector-mode=cluster",
            "--cluster-domain=example.internal",
        ],
        vec![
            "--egress-selector-mode=disabled",
            "--cluster-cidr=10.0.0.0/8",
            "--node-cidr-mask-size-ipv4=16",
            "--service-cidr=172.16.0.0/12",
            "--cluster-dns=172.16.0.2",
        ],
    ];
    for args in table {
        let config = ok(server(&args, &system(&[], &[])));
        let record = config.network.to_json();
        assert_eq!(
            ClusterNetwork::from_json(&record).as_ref(),
            Ok(&config.network),
            "{args:?}"
        );
        let stored = serde_json::to_string(&record).unwrap();
        let read: serde_json::Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(
            ClusterNetwork::from_json(&read),
            Ok(config.network),
            "{args:?}"
        );
    }
}

/// A restarted or joining server compares its settings with the stored record.
#[test]
fn record_compares_with_a_later_start() {
    let first = ok(server(&[], &system(&[], &[]))).network;
    let stored = serde_json::to_string(&first.to_json()).unwrap();
    let later = ok(server(&["--flannel-backend=host-gw"], &system(&[], &[]))).network;
    let cluster = ClusterNetwork::from_json(&serde_json::from_str(&stored).unwrap()).unwrap();
    assert_eq!(first.compare_critical(&cluster), []);
    assert_eq!(
        later
            .compare_critical(&cluster)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [
            "critical configuration value mismatch between servers: flannel-backend (this server: host-gw, cluster: vxlan)"
        ]
    );
}

/// Checks the message of a damaged record: `problems` between the fixed start and end.
fn check_record(record: &serde_json::Value, problems: &[&str]) {
    let got = ClusterNetwork::from_json(record).map_err(|e| e.to_string());
    let want = format!(
        "invalid cluster network record: {}; weft servers write it, so check that every server and agent runs the same weft version",
        problems
            .iter()
            .map(|p| format!("[{p}]"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert_eq!(got, Err(want), "{record}");
}

fn default_record() -> serde_json::Value {
    ok(server(&[], &system(&[], &[]))).network.to_json()
}

/// The default record without the keys `remove`, and with the keys of `set` set.
fn edited(remove: &[&str], set: serde_json::Value) -> serde_json::Value {
    let mut record = default_record();
    let map = record.as_object_mut().unwrap();
    for key in remove {
        map.remove(*key);
    }
    for (key, value) in set.as_object().unwrap() {
        map.insert(key.clone(), value.clone());
    }
    record
}

#[test]
fn damaged_records_name_every_bad_key() {
    let not_object = |found: &str| {
        format!("the record is {found}, not a JSON object of setting names to values")
    };
    check_record(
        &json!(["10.42.0.0/16"]),
        &[&not_object("an array of strings")],
    );
    check_record(&json!(null), &[&not_object("null")]);
    check_record(&json!("{}"), &[&not_object("a string")]);
    check_record(
        &json!({}),
        &ClusterNetwork::KEYS
            .iter()
            .map(|k| format!("{k} is missing"))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    check_record(
        &edited(&["cluster-cidr", "egress-selector-mode"], json!({})),
        &["cluster-cidr is missing", "egress-selector-mode is missing"],
    );
    check_record(
        &edited(
            &["flannel-backend"],
            json!({
                "cluster-cidr": "10.42.0.0/16",
                "service-cidr": [],
                "cluster-dns": ["10.43.0.10", 7],
                "cluster-domain": "",
                "node-cidr-mask-size-ipv4": "24",
                "node-cidr-mask-size-ipv6": -1,
                "flannel-ipv6-masq": "false",
                "flannel-external-ip": null,
                "egress-selector-mode": {"mode": "agent"},
                "disable-network-policy": 0,
            }),
        ),
        &[
            "cluster-cidr must be a non-empty array of strings, not a string",
            "service-cidr must be a non-empty array of strings, not an empty array",
            "cluster-dns must be a non-empty array of strings, not an array holding a number",
            "cluster-domain must be a non-empty string, not an empty string",
            "node-cidr-mask-size-ipv4 must be a whole number, not a string",
            "node-cidr-mask-size-ipv6 must be a whole number, not a number",
            "flannel-backend is missing",
            "flannel-ipv6-masq must be true or false, not a string",
            "flannel-external-ip must be true or false, not null",
            "egress-selector-mode must be a non-empty string, not an object",
            "disable-network-policy must be true or false, not a number",
        ],
    );
}

#[test]
fn records_breaking_the_rules_are_refused() {
    check_record(
        &edited(&[], json!({"cluster-cidr": ["10.42.0.1/16"]})),
        &["invalid cluster-cidr 10.42.0.1/16: host bits are set; use 10.42.0.0/16"],
    );
    check_record(
        &edited(
            &[],
            json!({"flannel-backend": "ipsec", "egress-selector-mode": "tunnel"}),
        ),
        &[
            "flannel-backend ipsec was removed in K3s v1.27: wireguard-native replaces it; to migrate, 1. set flannel-backend: wireguard-native on every server, 2. restart the nodes, servers first",
            "invalid egress-selector-mode \"tunnel\": valid values are agent, pod, cluster, disabled",
        ],
    );
    check_record(
        &edited(
            &[],
            json!({"node-cidr-mask-size-ipv4": 300, "cluster-domain": "Cluster.Local"}),
        ),
        &[
            "invalid cluster-domain \"Cluster.Local\": use a DNS name of lowercase letters, digits, '-' and '.', such as cluster.local",
            "invalid node-cidr-mask-size-ipv4 \"300\": use a prefix length such as 24 for IPv4 or 64 for IPv6",
        ],
    );
    check_record(
        &edited(
            &[],
            json!({"flannel-ipv6-masq": true, "cluster-dns": ["10.0.0.10"]}),
        ),
        &[
            "cluster-dns 10.0.0.10 is not in service-cidr 10.43.0.0/16: use an address inside it, e.g. 10.43.0.10",
            "flannel-ipv6-masq is set, but cluster-cidr 10.42.0.0/16 has no IPv6 network: add an IPv6 cluster-cidr (dual-stack) or unset flannel-ipv6-masq",
        ],
    );
    check_record(
        &edited(&[], json!({"service-cidr": ["fd00:43::/112"]})),
        &[
            "cluster-cidr and service-cidr must share the same IP version (IPv4, IPv6 or dual-stack): cluster-cidr is IPv4, service-cidr is IPv6",
            "cluster-dns 10.43.0.10 is IPv4, but service-cidr fd00:43::/112 has no IPv4 network: remove it or add an IPv4 service-cidr",
        ],
    );
}

#[test]
fn record_errors_are_typed_and_unknown_keys_ignored() {
    let err = ClusterNetwork::from_json(&edited(
        &["cluster-dns"],
        json!({"flannel-backend": "vxlan2"}),
    ))
    .unwrap_err();
    assert_eq!(
        err,
        ConfigError::ClusterRecord {
            problems: vec![RecordProblem::Missing { key: "cluster-dns" }],
        }
    );
    let err =
        ClusterNetwork::from_json(&edited(&[], json!({"flannel-backend": "vxlan2"}))).unwrap_err();
    assert_eq!(
        err,
        ConfigError::ClusterRecord {
            problems: vec![RecordProblem::Invalid(Box::new(
                ConfigError::InvalidFlannelBackend {
                    value: "vxlan2".to_owned()
                }
            ))],
        }
    );
    // A newer server may add keys; this version reads the ones it knows.
    let record = edited(
        &[],
        json!({"flannel-mtu": 1400, "cluster-cidr": ["10.42.0.0/16"]}),
    );
    assert_eq!(
        ClusterNetwork::from_json(&record),
        ClusterNetwork::from_json(&default_record())
    );
    assert!(ClusterNetwork::from_json(&record).is_ok());
}

fn arb_v4(prefixes: std::ops::RangeInclusive<u8>) -> impl Strategy<Value = Cidr> {
    (any::<u32>(), prefixes).prop_map(|(bits, prefix)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        Cidr::V4(Ipv4Cidr::new(Ipv4Addr::from(bits & mask), prefix).unwrap())
    })
}

fn arb_v6(prefixes: std::ops::RangeInclusive<u8>) -> impl Strategy<Value = Cidr> {
    (any::<u128>(), prefixes).prop_map(|(bits, prefix)| {
        let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
        Cidr::V6(Ipv6Cidr::new(Ipv6Addr::from(bits & mask), prefix).unwrap())
    })
}

/// The list of `layout`: IPv4, IPv6, dual-stack IPv4 first, dual-stack IPv6 first.
fn list(layout: u8, v4: Cidr, v6: Cidr) -> CidrList {
    match layout {
        0 => CidrList::single(v4),
        1 => CidrList::single(v6),
        2 => CidrList::dual(v4, v6).unwrap(),
        _ => CidrList::dual(v6, v4).unwrap(),
    }
}

prop_compose! {
    /// Any valid cluster network: every family layout, CIDR size, DNS address, mask size,
    /// domain, backend and mode the rules allow.
    fn arb_network()(
        layout in 0u8..4,
        cluster in (arb_v4(8..=28), arb_v6(16..=120)),
        service in (arb_v4(12..=28), arb_v6(112..=124)),
        dns_index in (1u128..16, 1u128..16),
        second_dns in any::<bool>(),
        extra in (0u8..=16, 0u8..=16),
        unused_mask in any::<u8>(),
        domain in "[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?(\\.[a-z0-9]{1,8}){0,2}",
        backend in prop::sample::select(vec![
            FlannelBackend::None,
            FlannelBackend::Vxlan,
            FlannelBackend::HostGw,
            FlannelBackend::WireguardNative,
        ]),
        egress in prop::sample::select(vec![
            EgressSelectorMode::Agent,
            EgressSelectorMode::Pod,
            EgressSelectorMode::Cluster,
            EgressSelectorMode::Disabled,
        ]),
        flags in (any::<bool>(), any::<bool>(), any::<bool>()),
    ) -> ClusterNetwork {
        let cluster_cidr = list(layout, cluster.0, cluster.1);
        let service_cidr = list(layout, service.0, service.1);
        let mut cluster_dns = vec![indexed_ip(service_cidr.primary(), dns_index.0).unwrap()];
        if second_dns && let Some(other) = service_cidr.iter().nth(1) {
            cluster_dns.push(indexed_ip(other, dns_index.1).unwrap());
        }
        let mask = |family: Family, extra: u8| match cluster_cidr.get(family) {
            Some(c) => (c.prefix_len() + extra).min(c.prefix_len() + c.host_bits()),
            None => unused_mask,
        };
        ClusterNetwork {
            node_cidr_mask_size_ipv4: mask(Family::Ipv4, extra.0),
            node_cidr_mask_size_ipv6: mask(Family::Ipv6, extra.1),
            cluster_dns,
            cluster_domain: domain.parse().unwrap(),
            flannel_backend: backend,
            flannel_ipv6_masq: flags.0 && cluster_cidr.families().has_ipv6(),
            flannel_external_ip: flags.1,
            egress_selector_mode: egress,
            disable_network_policy: flags.2,
            cluster_cidr,
            service_cidr,
            net_conf: None,
        }
    }
}

proptest! {
    #[test]
    fn record_round_trips(network in arb_network()) {
        let record = network.to_json();
        prop_assert_eq!(ClusterNetwork::from_json(&record), Ok(network.clone()));
        let text = serde_json::to_string(&record).unwrap();
        let read: serde_json::Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(ClusterNetwork::from_json(&read), Ok(network.clone()));
        prop_assert_eq!(network.compare_critical(&ClusterNetwork::from_json(&read).unwrap()), vec![]);
    }

    /// Dropping any key is an error naming that key.
    #[test]
    fn record_without_a_key_names_it(network in arb_network(), index in 0..ClusterNetwork::KEYS.len()) {
        let key = ClusterNetwork::KEYS[index];
        let mut record = network.to_json();
        record.as_object_mut().unwrap().remove(key.name());
        prop_assert_eq!(
            ClusterNetwork::from_json(&record),
            Err(ConfigError::ClusterRecord {
                problems: vec![RecordProblem::Missing { key: key.name() }],
            })
        );
    }
}

#[test]
fn adding_a_family_to_a_cluster_says_why_it_cannot_be_done() {
    let v4 = ok(server(&[], &system(&[], &[]))).network;
    let dual = ok(server(
        &[
            "--cluster-cidr=10.42.0.0/16,fd00:42::/56",
            "--service-cidr=10.43.0.0/16,fd00:43::/112",
            "--disable-agent",
        ],
        &system(&[], &[]),
    ))
    .network;
    let got: Vec<String> = dual
        .compare_critical(&v4)
        .iter()
        .map(ToString::to_string)
        .filter(|e| !e.starts_with("critical configuration value mismatch"))
        .collect();
    assert_eq!(
        got,
        [
            "cluster-cidr of this server is dual-stack, but the cluster was created as IPv4: dual-stack must be configured when the cluster is first created and can't be enabled (or removed) on an existing cluster; keep the cluster's cluster-cidr, or create a new cluster",
            "service-cidr of this server is dual-stack, but the cluster was created as IPv4: dual-stack must be configured when the cluster is first created and can't be enabled (or removed) on an existing cluster; keep the cluster's service-cidr, or create a new cluster",
        ]
    );
}

// --- flannel-conf: the net-conf.json checked against the other settings.

const PSK: &str = "GDzWJCDrrtmOi6Wq7Cf0fMnRxkUNn/D/WvO2HuHQWV8=";

/// Loads a server whose `flannel-conf` file holds `conf`, with `args`.
fn with_conf(conf: &str, args: &[&str]) -> crate::Loaded<crate::ServerConfig> {
    let mut all = vec!["--flannel-conf=/etc/net-conf.json"];
    all.extend_from_slice(args);
    server(&all, &system(&[("/etc/net-conf.json", conf)], &[]))
}

/// A key that agrees with its setting passes; one that contradicts it is an error naming both.
#[test]
fn net_conf_contradictions() {
    let table: &[(&str, &[&str], &[&str])] = &[
        (
            r#"{"Network": "10.42.0.0/16", "IPv6Network": "::/0", "EnableIPv4": true, "EnableIPv6": false, "SubnetLen": 24, "Backend": {"Type": "vxlan"}}"#,
            &[],
            &[],
        ),
        (
            r#"{"Network": "10.99.0.0/16", "IPv6Network": "fd00::/56"}"#,
            &[],
            &[
                "flannel-conf: Network 10.99.0.0/16 contradicts cluster-cidr 10.42.0.0/16: make them agree, or leave Network out of the file",
                "flannel-conf: IPv6Network fd00::/56 contradicts cluster-cidr 10.42.0.0/16: make them agree, or leave IPv6Network out of the file",
            ],
        ),
        (
            r#"{"EnableIPv4": false, "EnableIPv6": true}"#,
            &[],
            &[
                "flannel-conf: EnableIPv4 false contradicts cluster-cidr 10.42.0.0/16: make them agree, or leave EnableIPv4 out of the file",
                "flannel-conf: EnableIPv6 true contradicts cluster-cidr 10.42.0.0/16: make them agree, or leave EnableIPv6 out of the file",
            ],
        ),
        (
            r#"{"SubnetLen": 26}"#,
            &["--node-cidr-mask-size-ipv4=25"],
            &[
                "flannel-conf: SubnetLen 26 contradicts node-cidr-mask-size-ipv4 25: make them agree, or leave SubnetLen out of the file",
            ],
        ),
        (
            r#"{"SubnetLen": 26}"#,
            &["--kube-controller-manager-arg=node-cidr-mask-size-ipv4=25"],
            &[
                "flannel-conf: SubnetLen 26 contradicts node-cidr-mask-size-ipv4 25: make them agree, or leave SubnetLen out of the file",
            ],
        ),
        (
            r#"{"Backend": {"Type": "host-gw"}}"#,
            &["--flannel-backend=vxlan"],
            &[
                "flannel-conf: Backend.Type host-gw contradicts flannel-backend vxlan: make them agree, or leave Backend.Type out of the file",
            ],
        ),
        (
            r#"{"Network": "10.42.0.0/16"}"#,
            &["--flannel-backend=none", "--disable-network-policy"],
            &[
                "flannel-conf: Backend (none given) contradicts flannel-backend none: make them agree, or leave Backend out of the file",
            ],
        ),
        (
            r#"{"SubnetMin": "10.43.0.0", "SubnetMax": "10.42.1.128", "IPv6SubnetMin": "fd00::"}"#,
            &[],
            &[
                "flannel-conf: SubnetMin 10.43.0.0 is outside the cluster network 10.42.0.0/16: pick an address inside it",
                "flannel-conf: SubnetMax 10.42.1.128 is not on a /24 boundary (the node CIDR size): use 10.42.1.0",
                "flannel-conf: IPv6SubnetMin fd00:: contradicts cluster-cidr 10.42.0.0/16: make them agree, or leave IPv6SubnetMin out of the file",
            ],
        ),
        (
            r#"{"SubnetMin": "10.42.9.0", "SubnetMax": "10.42.8.0"}"#,
            &[],
            &["flannel-conf: SubnetMin 10.42.9.0 is above SubnetMax 10.42.8.0: swap them"],
        ),
        (
            r#"{"Backend": {"Type": "vxlan", "MTU": 117}}"#,
            &[],
            &[
                "flannel-conf: Backend.MTU 117 is too small: the devices get 117 minus 50 bytes of encapsulation, and IPv4 needs 68; use at least 118",
            ],
        ),
        (
            r#"{"Backend": {"Type": "wireguard", "MTU": 1359, "Mode": "ipv6"}}"#,
            &["--cluster-cidr=10.42.0.0/16"],
            &[
                "flannel-conf: Backend.Mode ipv6 sends to IPv6 endpoints, but cluster-cidr 10.42.0.0/16 has no IPv6: use Mode auto or separate",
            ],
        ),
        (
            r#"{"Backend": {"Type": "wireguard", "MTU": 1359, "ListenPort": 5000, "ListenPortV6": 5000}}"#,
            &[
                "--cluster-cidr=10.42.0.0/16,fd00:42::/56",
                "--service-cidr=10.43.0.0/16,fd00:43::/112",
                "--node-ip=192.168.1.10,2001:db8::10",
            ],
            &[
                "flannel-conf: Backend.MTU 1359 is too small: the devices get 1359 minus 80 bytes of encapsulation, and IPv6 needs 1280; use at least 1360",
                "flannel-conf: Backend.ListenPort and Backend.ListenPortV6 are both 5000, but Mode separate on a dual-stack cluster runs two devices, which can't share a port: give them different ports",
            ],
        ),
        (
            "{\"Backend\": {\"Type\": \"vxlan\", \"VNI\": -1}}",
            &[],
            &[
                "flannel-conf: Backend.VNI -1 is out of range: use a whole number from 0 to 16777215",
            ],
        ),
        (
            r#"{"Backend": {"Type": "vxlan", "VNI": 4096, "Port": 4789, "GBP": true, "DirectRouting": true}}"#,
            &[],
            &[],
        ),
    ];
    for (conf, args, want) in table {
        assert_eq!(errors(&with_conf(conf, args)), *want, "{conf} {args:?}");
    }
    // An error beside a pre-shared key does not repeat the key.
    let psk = format!(
        r#"{{"Backend": {{"Type": "wireguard", "PSK": "{PSK}", "Mode": "ipv6", "MTU": 100}}}}"#
    );
    let got = errors(&with_conf(&psk, &[]));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(!got.concat().contains(PSK), "{got:?}");
    assert_eq!(
        errors(&server(
            &["--flannel-conf=/etc/missing.json"],
            &system(&[], &[])
        )),
        [
            "flannel-conf names /etc/missing.json, which does not exist: create it, or unset flannel-conf to let weft generate it"
        ]
    );
}

/// Keys of the file set the settings that were not given: the backend and the mask sizes.
#[test]
fn net_conf_sets_absent_settings() {
    let config = ok(with_conf(
        r#"{"SubnetLen": 26, "IPv6SubnetLen": 70, "Backend": {"Type": "wireguard"}}"#,
        &[
            "--cluster-cidr=10.42.0.0/16,fd00:42::/56",
            "--service-cidr=10.43.0.0/16,fd00:43::/112",
            "--node-ip=192.168.1.10,2001:db8::10",
        ],
    ));
    let network = &config.network;
    assert_eq!(network.flannel_backend, FlannelBackend::WireguardNative);
    assert_eq!(
        (
            network.node_cidr_mask_size_ipv4,
            network.node_cidr_mask_size_ipv6
        ),
        (26, 70)
    );
    // Without the file's Backend, the flag decides (and defaults to vxlan).
    let config = ok(with_conf(r#"{"SubnetLen": 26}"#, &[]));
    assert_eq!(config.network.flannel_backend, FlannelBackend::Vxlan);
    // Without flannel-conf, wireguard-native keeps K3s's keepalive of 25 seconds.
    let plain = ok(server(
        &["--flannel-backend=wireguard-native"],
        &system(&[], &[]),
    ));
    assert_eq!(plain.network.wireguard_options().persistent_keepalive, 25);
    assert_eq!(
        plain.network.vxlan_options(),
        crate::VxlanOptions::default()
    );
}

/// `validate` prints the path under flannel-conf and the normalised file under derived; the
/// record holds the same file and reads back equal.
#[test]
fn net_conf_in_validate_and_record() {
    let conf = r#"{"network": "10.42.0.0/16", "SubnetMin": "10.42.8.0", "SubnetMax": "10.42.9.0",
            "Backend": {"Type": "wireguard", "MTU": 1400, "PersistentKeepaliveInterval": 5}}"#;
    let config = ok(with_conf(conf, &[]));
    let printed = config.to_json();
    assert_eq!(printed["flannel-conf"], "/etc/net-conf.json");
    assert_eq!(printed["flannel-backend"], "wireguard-native");
    assert_eq!(
        printed["derived"]["net-conf"],
        json!({"Network": "10.42.0.0/16", "SubnetMin": "10.42.8.0", "SubnetMax": "10.42.9.0",
            "Backend": {"Type": "wireguard", "ListenPort": 51820, "ListenPortV6": 51821,
                "PersistentKeepaliveInterval": 5, "MTU": 1400, "Mode": "separate"}})
    );
    let record = config.network.to_json();
    assert_eq!(record["net-conf"], printed["derived"]["net-conf"]);
    assert_eq!(
        ClusterNetwork::from_json(&record),
        Ok(config.network.clone())
    );
    assert_eq!(
        config.network.subnet_bounds_ipv4(),
        (
            Some(Ipv4Addr::new(10, 42, 8, 0)),
            Some(Ipv4Addr::new(10, 42, 9, 0))
        )
    );
    assert_eq!(config.network.wireguard_options().persistent_keepalive, 5);
    // A record from before net-conf existed reads as no flannel-conf.
    let mut old = ok(server(&[], &system(&[], &[]))).network.to_json();
    old.as_object_mut().unwrap().remove("net-conf");
    assert_eq!(ClusterNetwork::from_json(&old).unwrap().net_conf, None);
    // A damaged net-conf in a record is named.
    let mut bad = record.clone();
    bad["net-conf"]["Backend"]["VNI"] = json!(1);
    assert_eq!(
        ClusterNetwork::from_json(&bad).unwrap_err().to_string(),
        "invalid cluster network record: [flannel-conf: unknown key Backend.VNI: did you mean Backend.PSK? remove it or fix its spelling]; weft servers write it, so check that every server and agent runs the same weft version"
    );
}

/// flannel-conf is critical: servers must share it.
#[test]
fn net_conf_is_critical() {
    let conf = |keepalive: u16| {
        with_conf(
            &format!(
                r#"{{"Backend": {{"Type": "wireguard", "PersistentKeepaliveInterval": {keepalive}}}}}"#
            ),
            &[],
        )
    };
    let a = ok(conf(25)).network;
    assert_eq!(a.compare_critical(&a), []);
    let c = ok(conf(5)).network;
    let got: Vec<String> = a
        .compare_critical(&c)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("flannel-conf (this server: {"), "{got:?}");
    assert!(
        got[0].contains("\"PersistentKeepaliveInterval\":5"),
        "{got:?}"
    );
    let plain = ok(server(
        &["--flannel-backend=wireguard-native"],
        &system(&[], &[]),
    ))
    .network;
    let got: Vec<String> = plain
        .compare_critical(&a)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(got.len(), 1);
    assert!(
        got[0].contains("flannel-conf (this server: none, cluster: {"),
        "{got:?}"
    );
}

/// EnableNFTables picks the masquerade mode; a masq-mode given that says otherwise is an error.
#[test]
fn net_conf_picks_the_masquerade_mode() {
    let config = ok(with_conf(r#"{"EnableNFTables": false}"#, &[]));
    assert_eq!(
        config.node.masq_mode_in(&config.network),
        crate::MasqMode::Iptables
    );
    assert_eq!(
        errors(&with_conf(
            r#"{"EnableNFTables": false}"#,
            &["--masq-mode=nftables"]
        )),
        [
            "flannel-conf: EnableNFTables false contradicts masq-mode nftables: make them agree, or leave EnableNFTables out of the file"
        ]
    );
    let config = ok(server(&["--masq-mode=iptables"], &system(&[], &[])));
    assert_eq!(
        config.node.masq_mode_in(&config.network),
        crate::MasqMode::Iptables
    );
}

/// The pre-shared key: redacted in `validate`, kept in the record for agents, and compared
/// across servers without being printed.
#[test]
fn net_conf_psk_is_a_secret() {
    let conf = |psk: &str| {
        with_conf(
            &format!(
                r#"{{"Backend": {{"Type": "wireguard", "PSK": "{psk}", "ListenPort": 51000, "ListenPortV6": 51001}}}}"#
            ),
            &[],
        )
    };
    let config = ok(conf(PSK));
    let printed = config.to_json();
    assert_eq!(
        printed["derived"]["net-conf"]["Backend"]["PSK"],
        "<redacted>"
    );
    assert!(!printed.to_string().contains(PSK));
    let record = config.network.to_json();
    assert_eq!(record["net-conf"]["Backend"]["PSK"], PSK);
    assert_eq!(
        ClusterNetwork::from_json(&record),
        Ok(config.network.clone())
    );
    let options = config.network.wireguard_options();
    assert_eq!(options.psk.map(|p| p.reveal()), Some(PSK.to_owned()));
    assert_eq!(
        (options.listen_port, options.listen_port_v6),
        (51000, 51001)
    );

    let other = ok(conf("aDzWJCDrrtmOi6Wq7Cf0fMnRxkUNn/D/WvO2HuHQWV8=")).network;
    let got: Vec<String> = config
        .network
        .compare_critical(&other)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        got,
        [
            "critical configuration value mismatch between servers: flannel-conf (this server: Backend.PSK <redacted>, cluster: another Backend.PSK <redacted>)"
        ]
    );
    let none = ok(with_conf(
        r#"{"Backend": {"Type": "wireguard", "ListenPort": 51000, "ListenPortV6": 51001}}"#,
        &[],
    ))
    .network;
    let got: Vec<String> = none
        .compare_critical(&config.network)
        .iter()
        .map(ToString::to_string)
        .collect();
    // The file differs too, and says so with the key redacted.
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].contains("\"PSK\":\"<redacted>\""), "{got:?}");
    assert_eq!(
        got[1],
        "critical configuration value mismatch between servers: flannel-conf (this server: no Backend.PSK, cluster: Backend.PSK <redacted>)"
    );
    assert!(!got.concat().contains(PSK));
}
