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

fn authorizer(mode: EgressSelectorMode) -> Authorizer {
    Authorizer {
        mode,
        kubelet_port: 11250,
        node_ips: vec![ip("10.0.0.2"), ip("fd00::2")],
        pod_cidrs: vec!["10.42.1.0/24".parse().expect("cidr")],
        pods: vec![ip("10.99.1.7")],
    }
}

/// Checks `allows` for each `(host, port)` in every mode, against the modes that allow it.
fn check_allows(cases: &[(&str, u16, &[EgressSelectorMode])]) {
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
        ("10.99.1.7", 8080, &[Cluster]),
        // Another node, the outside world, and names are never dialed.
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
