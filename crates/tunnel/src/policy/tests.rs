//! Table tests of routing by mode and of the agent's authorizer.

use std::net::IpAddr;

use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().expect("a valid IP in the test")
}

fn table(mode: EgressSelectorMode) -> RoutingTable {
    RoutingTable {
        mode,
        local_node: Some("server-0".to_owned()),
        nodes: vec![
            NodeRoute {
                name: "server-0".to_owned(),
                addresses: vec![ip("10.0.0.1")],
                kubelet_port: KUBELET_PORT,
                pod_cidrs: vec!["10.42.0.0/24".parse().expect("cidr")],
                pods: vec![ip("10.99.0.1")],
            },
            NodeRoute {
                name: "agent-1".to_owned(),
                addresses: vec![ip("10.0.0.2"), ip("fd00::2")],
                kubelet_port: 11250,
                pod_cidrs: vec!["10.42.1.0/24".parse().expect("cidr")],
                pods: vec![ip("10.99.1.7")],
            },
        ],
    }
}

fn tunnel(node: &str, host: &str, port: u16) -> Route {
    Route::Tunnel {
        node: node.to_owned(),
        target: Target::new(host, port).expect("a valid target"),
    }
}

fn direct(host: &str, port: u16) -> Route {
    Route::Direct {
        host: host.to_owned(),
        port,
    }
}

/// Routes each `(host, port)` in `mode` and expects the matching route.
fn check(mode: EgressSelectorMode, cases: &[(&str, u16, Route)]) {
    let table = table(mode);
    for (host, port, expected) in cases {
        assert_eq!(
            &table.route(host, *port),
            expected,
            "{mode:?} {host}:{port}"
        );
    }
}

#[test]
fn agent_mode_tunnels_only_kubelets() {
    use EgressSelectorMode::Agent;
    check(
        Agent,
        &[
            ("10.0.0.2", 11250, tunnel("agent-1", "10.0.0.2", 11250)),
            ("fd00::2", 11250, tunnel("agent-1", "fd00::2", 11250)),
            ("[fd00::2]", 10010, tunnel("agent-1", "fd00::2", 10010)),
            ("agent-1", 11250, tunnel("agent-1", "127.0.0.1", 11250)),
            // The default kubelet port is not this node's.
            ("10.0.0.2", 10250, direct("10.0.0.2", 10250)),
            ("10.42.1.5", 8080, direct("10.42.1.5", 8080)),
            ("10.99.1.7", 8080, direct("10.99.1.7", 8080)),
            ("192.0.2.1", 443, direct("192.0.2.1", 443)),
            // The server's own node is dialed locally.
            ("10.0.0.1", 10250, direct("10.0.0.1", 10250)),
            ("server-0", 10250, direct("127.0.0.1", 10250)),
            (
                "agent-9",
                10250,
                Route::UnknownNode {
                    name: "agent-9".to_owned(),
                },
            ),
        ],
    );
}

#[test]
fn pod_mode_adds_pod_cidrs() {
    use EgressSelectorMode::Pod;
    check(
        Pod,
        &[
            ("10.0.0.2", 11250, tunnel("agent-1", "10.0.0.2", 11250)),
            ("10.42.1.5", 8080, tunnel("agent-1", "10.42.1.5", 8080)),
            ("10.42.0.5", 8080, direct("10.42.0.5", 8080)),
            ("10.0.0.2", 22, direct("10.0.0.2", 22)),
            ("10.99.1.7", 8080, direct("10.99.1.7", 8080)),
        ],
    );
}

#[test]
fn cluster_mode_adds_node_ips_and_reported_pods() {
    use EgressSelectorMode::Cluster;
    check(
        Cluster,
        &[
            ("10.0.0.2", 22, tunnel("agent-1", "10.0.0.2", 22)),
            ("10.99.1.7", 8080, tunnel("agent-1", "10.99.1.7", 8080)),
            ("10.99.0.1", 8080, direct("10.99.0.1", 8080)),
            ("10.42.1.5", 8080, direct("10.42.1.5", 8080)),
        ],
    );
}

#[test]
fn disabled_mode_dials_everything_directly() {
    check(
        EgressSelectorMode::Disabled,
        &[
            ("10.0.0.2", 11250, direct("10.0.0.2", 11250)),
            ("agent-1", 11250, direct("agent-1", 11250)),
            ("agent-9", 1, direct("agent-9", 1)),
        ],
    );
}

fn cidr(text: &str) -> IpNetwork {
    text.parse().expect("a valid CIDR in the test")
}

fn authorizer(mode: EgressSelectorMode) -> Authorizer {
    Authorizer {
        mode,
        kubelet_port: 11250,
        node_ips: vec![ip("10.0.0.2"), ip("fd00::2")],
        cluster_cidrs: vec![cidr("10.42.0.0/16"), cidr("fd42::/56")],
        pod_cidrs: vec![cidr("10.42.1.0/24"), cidr("fd42:0:0:1::/64")],
        pods: vec![ip("10.42.1.7"), ip("fd42:0:0:1::7")],
    }
}

/// Checks `allows` of `authorizer` (made for each mode) for each `(host, port)`, against the
/// modes that allow it.
fn check_allows_of(
    authorizer: impl Fn(EgressSelectorMode) -> Authorizer,
    cases: &[(&str, u16, &[EgressSelectorMode])],
) {
    use EgressSelectorMode::{Agent, Cluster, Disabled, Pod};
    for (host, port, allowed_in) in cases {
        let target = Target::new(*host, *port).expect("a valid target");
        for mode in [Agent, Pod, Cluster, Disabled] {
            assert_eq!(
                authorizer(mode).allows(&target),
                allowed_in.contains(&mode),
                "{mode:?} {target}"
            );
        }
    }
}

/// Checks `allows` for each `(host, port)` in every mode, against the modes that allow it.
fn check_allows(cases: &[(&str, u16, &[EgressSelectorMode])]) {
    check_allows_of(authorizer, cases);
}

#[test]
fn the_authorizer_allows_only_its_own_node() {
    use EgressSelectorMode::{Agent, Cluster, Disabled, Pod};
    let all: &[EgressSelectorMode] = &[Agent, Pod, Cluster, Disabled];
    check_allows(&[
        ("127.0.0.1", 11250, all),
        ("::1", 11250, all),
        ("127.0.0.1", 10010, all),
        ("10.0.0.2", 11250, all),
        ("fd00::2", 10010, all),
        // Not the kubelet: only cluster mode opens the node's other ports.
        ("127.0.0.1", 22, &[]),
        ("127.0.0.2", 11250, &[]),
        ("10.0.0.2", 22, &[Cluster]),
        ("10.0.0.2", 10250, &[Cluster]),
        ("10.42.1.9", 8080, &[Pod]),
        ("fd42:0:0:1::9", 8080, &[Pod]),
        ("10.42.1.7", 8080, &[Pod, Cluster]),
        ("fd42:0:0:1::7", 8080, &[Pod, Cluster]),
        // Another node's pods, the outside world, and names are never dialed.
        ("10.42.2.9", 8080, &[]),
        ("10.0.0.3", 11250, &[]),
        ("192.0.2.1", 443, &[]),
        ("localhost", 11250, &[]),
        ("agent-1", 11250, &[]),
    ]);
    // Until the node's IPs are known, only loopback.
    let fresh = Authorizer::new(EgressSelectorMode::Cluster, KUBELET_PORT);
    assert!(fresh.allows(&Target::new("127.0.0.1", KUBELET_PORT).expect("valid")));
    assert!(!fresh.allows(&Target::new("10.0.0.2", KUBELET_PORT).expect("valid")));
}

/// Expects `Forbidden::of` to put each `(address, port)` in its class, for a kubelet on 11250.
fn check_floor(cases: &[(&str, u16, Option<Forbidden>)]) {
    for (address, port, expected) in cases {
        assert_eq!(
            Forbidden::of(ip(address), *port, 11250),
            *expected,
            "{address} port {port}"
        );
    }
}

#[test]
fn the_floor_classifies_addresses() {
    use Forbidden::{LinkLocal, Loopback, Multicast, Unspecified};
    check_floor(&[
        // Unspecified ("this host").
        ("0.0.0.0", 80, Some(Unspecified)),
        ("0.1.2.3", 80, Some(Unspecified)),
        ("::", 80, Some(Unspecified)),
        ("0.0.0.0", 11250, Some(Unspecified)),
        // Link-local, metadata services included.
        ("169.254.169.254", 80, Some(LinkLocal)),
        ("169.254.0.1", 11250, Some(LinkLocal)),
        ("fe80::1", 80, Some(LinkLocal)),
        ("febf::1", 80, Some(LinkLocal)),
        // Multicast.
        ("224.0.0.1", 80, Some(Multicast)),
        ("239.255.255.250", 1900, Some(Multicast)),
        ("ff02::1", 80, Some(Multicast)),
        ("ff0e::1", 11250, Some(Multicast)),
        // Loopback: the kubelet and streaming ports only.
        ("127.0.0.1", 11250, None),
        ("127.0.0.1", 10010, None),
        ("::1", 11250, None),
        ("127.0.0.1", 22, Some(Loopback)),
        ("127.0.0.1", 10250, Some(Loopback)),
        ("127.42.1.5", 8080, Some(Loopback)),
        ("::1", 2379, Some(Loopback)),
        // IPv4-mapped addresses are judged as their IPv4 address.
        ("::ffff:169.254.169.254", 80, Some(LinkLocal)),
        ("::ffff:127.0.0.1", 22, Some(Loopback)),
        ("::ffff:127.0.0.1", 11250, None),
        ("::ffff:0.0.0.0", 80, Some(Unspecified)),
        ("::ffff:224.0.0.1", 80, Some(Multicast)),
        ("::ffff:10.42.1.5", 80, None),
        // Above the floor.
        ("10.42.1.5", 8080, None),
        ("192.0.2.1", 443, None),
        ("169.253.255.255", 80, None),
        ("fec0::1", 80, None),
        ("fd42::5", 80, None),
        ("2001:db8::1", 443, None),
    ]);
}

/// An authorizer whose rules name every class below the floor: the floor still refuses them.
fn reckless(mode: EgressSelectorMode) -> Authorizer {
    let everything = vec![cidr("0.0.0.0/0"), cidr("::/0")];
    Authorizer {
        mode,
        kubelet_port: 11250,
        node_ips: [
            "0.0.0.0",
            "::",
            "169.254.169.254",
            "fe80::1",
            "224.0.0.1",
            "ff02::1",
            "127.0.0.1",
            "::1",
        ]
        .iter()
        .map(|text| ip(text))
        .collect(),
        cluster_cidrs: everything.clone(),
        pod_cidrs: everything,
        pods: vec![ip("169.254.169.254"), ip("127.0.0.5")],
    }
}

#[test]
fn no_rule_lowers_the_floor() {
    use EgressSelectorMode::{Agent, Cluster, Disabled, Pod};
    let all: &[EgressSelectorMode] = &[Agent, Pod, Cluster, Disabled];
    check_allows_of(
        reckless,
        &[
            ("0.0.0.0", 11250, &[]),
            ("::", 80, &[]),
            ("169.254.169.254", 80, &[]),
            ("169.254.169.254", 11250, &[]),
            ("::ffff:169.254.169.254", 80, &[]),
            ("fe80::1", 11250, &[]),
            ("224.0.0.1", 11250, &[]),
            ("ff02::1", 80, &[]),
            ("127.0.0.1", 22, &[]),
            ("127.0.0.5", 8080, &[]),
            ("::ffff:127.0.0.1", 22, &[]),
            ("::1", 2379, &[]),
            // The kubelet on loopback stays allowed, mapped or not.
            ("127.0.0.1", 11250, all),
            ("::ffff:127.0.0.1", 11250, all),
            ("::1", 10010, all),
        ],
    );
    let authorizer = reckless(Cluster);
    let refusal = |host: &str, port| {
        authorizer.below_floor(&Target::new(host, port).expect("a valid target"))
    };
    assert_eq!(
        refusal("::ffff:169.254.169.254", 80),
        Some(Forbidden::LinkLocal)
    );
    assert_eq!(refusal("127.0.0.1", 11250), None);
    assert_eq!(refusal("agent-1", 80), None);
}

#[test]
fn pod_cidrs_and_pods_count_only_inside_the_cluster_cidrs() {
    let mut authorizer = authorizer(EgressSelectorMode::Pod);
    // A lease from the server names CIDRs outside the cluster CIDR, one overlapping it.
    let ignored = authorizer.set_pod_cidrs(vec![
        cidr("10.42.3.0/24"),
        cidr("192.168.0.0/24"),
        cidr("169.254.0.0/16"),
        cidr("10.0.0.0/8"),
        cidr("fd42:0:0:3::/64"),
        cidr("fd43::/64"),
    ]);
    assert_eq!(
        ignored,
        [
            cidr("192.168.0.0/24"),
            cidr("169.254.0.0/16"),
            cidr("10.0.0.0/8"),
            cidr("fd43::/64"),
        ]
    );
    assert_eq!(
        authorizer.pod_cidrs,
        [cidr("10.42.3.0/24"), cidr("fd42:0:0:3::/64")]
    );
    let allows = |authorizer: &Authorizer, host: &str| {
        authorizer.allows(&Target::new(host, 8080).expect("a valid target"))
    };
    assert!(allows(&authorizer, "10.42.3.9"));
    assert!(allows(&authorizer, "fd42:0:0:3::9"));
    for outside in ["192.168.0.9", "10.1.0.9", "fd43::9", "10.42.1.9"] {
        assert!(!allows(&authorizer, outside), "{outside}");
    }
    // Set directly, pod CIDRs and pods outside the cluster CIDRs still count for nothing.
    authorizer.pod_cidrs = vec![cidr("192.168.0.0/24")];
    assert!(!allows(&authorizer, "192.168.0.9"));
    let mut cluster = self::authorizer(EgressSelectorMode::Cluster);
    cluster.pods = vec![ip("192.168.0.9"), ip("10.42.1.7")];
    assert!(!allows(&cluster, "192.168.0.9"));
    assert!(allows(&cluster, "10.42.1.7"));
    // No cluster CIDR known: no pod CIDR counts.
    let mut fresh = Authorizer::new(EgressSelectorMode::Pod, KUBELET_PORT);
    assert_eq!(
        fresh.set_pod_cidrs(vec![cidr("10.42.1.0/24")]),
        [cidr("10.42.1.0/24")]
    );
    assert!(!allows(&fresh, "10.42.1.9"));
}

#[test]
fn the_first_node_listed_wins_an_address_claimed_twice() {
    let mut table = table(EgressSelectorMode::Cluster);
    let mut twin = table.nodes[1].clone();
    twin.name = "agent-2".to_owned();
    table.nodes.push(twin);
    let routes = Routes::new(table);
    assert_eq!(
        routes.route("10.0.0.2", 22),
        tunnel("agent-1", "10.0.0.2", 22)
    );
    assert_eq!(
        routes.route("10.99.1.7", 80),
        tunnel("agent-1", "10.99.1.7", 80)
    );
    assert_eq!(
        routes.route("agent-2", 11250),
        tunnel("agent-2", "127.0.0.1", 11250)
    );
    assert_eq!(routes.table().nodes.len(), 3);
}
