//! Tests of the egress selector's settings and of the routing table built from the store's
//! records.

use std::net::IpAddr;

use weft_store::UnixTime;

use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an IP")
}

fn paths() -> BootstrapPaths {
    let dir = Path::new("/var/lib/weft/server");
    BootstrapPaths {
        token: dir.join("token"),
        agent_token: dir.join("agent-token"),
        ca_cert: dir.join("tls/server-ca.crt"),
        admin_cert: dir.join("tls/client-admin.crt"),
        admin_key: dir.join("tls/client-admin.key"),
        kube_apiserver_cert: dir.join("tls/client-kube-apiserver.crt"),
        kube_apiserver_key: dir.join("tls/client-kube-apiserver.key"),
    }
}

/// A cluster network whose primary service CIDR is IPv6 when `ipv6`, in `mode`.
fn network(ipv6: bool, mode: &str) -> ClusterNetwork {
    let (cluster, service, dns) = if ipv6 {
        ("fd00:42::/56", "fd00:43::/112", "fd00:43::a")
    } else {
        ("10.42.0.0/16", "10.43.0.0/16", "10.43.0.10")
    };
    let record = serde_json::json!({
        "cluster-cidr": [cluster],
        "service-cidr": [service],
        "cluster-dns": [dns],
        "cluster-domain": "cluster.local",
        "node-cidr-mask-size-ipv4": 24,
        "node-cidr-mask-size-ipv6": 64,
        "flannel-backend": "vxlan",
        "flannel-ipv6-masq": false,
        "flannel-external-ip": false,
        "egress-selector-mode": mode,
        "disable-network-policy": false,
    });
    ClusterNetwork::from_json(&record).expect("a valid network")
}

#[test]
fn the_url_is_the_bind_address_or_loopback() {
    let dir = Path::new("/var/lib/weft/server");
    let check = |bind: &str, ipv6: bool, url: &str| {
        let settings = EgressSettings::for_server(
            dir,
            &paths(),
            bind.parse().expect("a socket address"),
            &network(ipv6, "pod"),
            Some("server-0".to_owned()),
            10250,
        );
        assert_eq!(settings.mode, EgressSelectorMode::Pod);
        assert_eq!(settings.url, url, "{bind} ipv6={ipv6}");
        assert_eq!(
            settings.config_path,
            dir.join("etc/egress-selector-config.yaml")
        );
        assert_eq!(settings.files.client_cert, paths().kube_apiserver_cert);
        assert_eq!(settings.files.client_key, paths().kube_apiserver_key);
        assert_eq!(settings.files.ca_bundle, paths().ca_cert);
    };
    check("0.0.0.0:9345", false, "https://127.0.0.1:9345");
    check("0.0.0.0:9345", true, "https://[::1]:9345");
    check("[::]:9345", true, "https://[::1]:9345");
    check("10.0.0.1:9345", false, "https://10.0.0.1:9345");
    check("[fd00::1]:6443", true, "https://[fd00::1]:6443");
}

fn node(name: &str, ips: &[&str], external: &[&str]) -> NodeRecord {
    NodeRecord {
        name: name.to_owned(),
        password_hash: String::new(),
        node_ips: ips.iter().map(|i| ip(i)).collect(),
        external_ips: external.iter().map(|i| ip(i)).collect(),
        created_at: UnixTime(0),
        cert_fingerprint: None,
        claims: Vec::new(),
    }
}

fn lease(name: &str, v4: &str, v6: Option<&str>) -> Lease {
    let mut json = serde_json::json!({ "node-name": name, "ipv4-cidr": v4 });
    if let Some(v6) = v6 {
        json["ipv6-cidr"] = serde_json::json!(v6);
    }
    serde_json::from_value(json).expect("a lease")
}

fn pod(node: &str, name: &str, ips: &[&str]) -> PodRecord {
    PodRecord {
        namespace: node.to_owned(),
        name: name.to_owned(),
        node: node.to_owned(),
        ips: ips.iter().map(|i| ip(i)).collect(),
    }
}

#[test]
fn routes_come_from_nodes_leases_and_pods() {
    let mut known = Known::default();
    for n in [
        node("agent-1", &["10.0.0.2"], &["203.0.113.2"]),
        node("agent-2", &["10.0.0.3", "fd00::3"], &[]),
    ] {
        known.nodes.insert(n.name.clone(), n);
    }
    for p in [
        pod("agent-1", "c1", &["10.42.1.5"]),
        pod("agent-1", "c2", &["10.42.1.6", "fd42:1::6"]),
        // A pod of a node that is gone is not routed.
        pod("agent-9", "c3", &["10.42.9.9"]),
        // Records outside their node's lease (an older server's, or edited by hand): the
        // server's own node IP, another node's pod, an IP of a family the lease lacks.
        pod("agent-2", "forged", &["10.0.0.1", "10.42.2.7"]),
        pod("agent-2", "theft", &["10.42.1.5"]),
        pod("agent-2", "v6", &["fd42:2::7"]),
    ] {
        known.pods.insert(pod_key(&p), p);
    }
    let leases: BTreeMap<String, Lease> = [
        lease("agent-1", "10.42.1.0/24", Some("fd42:1::/64")),
        lease("agent-2", "10.42.2.0/24", None),
    ]
    .into_iter()
    .map(|l| (l.node_name.clone(), l))
    .collect();
    let base = RoutingTable {
        mode: EgressSelectorMode::Cluster,
        local_node: Some("server-0".to_owned()),
        nodes: Vec::new(),
    };
    let (table, strays) = routing_table(&base, 11250, &known, &leases);
    assert_eq!(table.mode, EgressSelectorMode::Cluster);
    assert_eq!(table.local_node.as_deref(), Some("server-0"));
    assert_eq!(
        table.nodes,
        vec![
            NodeRoute {
                name: "agent-1".to_owned(),
                addresses: vec![ip("10.0.0.2"), ip("203.0.113.2")],
                kubelet_port: 11250,
                pod_cidrs: vec![
                    "10.42.1.0/24".parse().expect("cidr"),
                    "fd42:1::/64".parse().expect("cidr"),
                ],
                pods: vec![ip("10.42.1.5"), ip("10.42.1.6"), ip("fd42:1::6")],
            },
            NodeRoute {
                name: "agent-2".to_owned(),
                addresses: vec![ip("10.0.0.3"), ip("fd00::3")],
                kubelet_port: 11250,
                pod_cidrs: vec!["10.42.2.0/24".parse().expect("cidr")],
                pods: vec![ip("10.42.2.7")],
            },
        ]
    );
    let stray = |pod: &str, address: &str| StrayPod {
        pod: format!("agent-2/{pod}"),
        node: "agent-2".to_owned(),
        ip: ip(address),
    };
    assert_eq!(
        strays,
        BTreeSet::from([
            stray("forged", "10.0.0.1"),
            stray("theft", "10.42.1.5"),
            stray("v6", "fd42:2::7"),
        ])
    );
    // The CONNECT front door routes none of them through agent-2.
    let routes = weft_tunnel::policy::Routes::new(table);
    for (address, expect) in [
        ("10.0.0.1", None),
        ("10.42.1.5", Some("agent-1")),
        ("fd42:2::7", None),
        ("10.42.2.7", Some("agent-2")),
    ] {
        let node = match routes.route(address, 8080) {
            weft_tunnel::policy::Route::Tunnel { node, .. } => Some(node),
            _ => None,
        };
        assert_eq!(node.as_deref(), expect, "{address}");
    }
}

#[test]
fn watch_events_update_the_known_records() {
    let mut nodes = BTreeMap::new();
    apply(
        &mut nodes,
        vec![
            Event::Put {
                name: "a".to_owned(),
                value: node("a", &["10.0.0.2"], &[]),
                revision: Revision(2),
            },
            Event::Put {
                name: "b".to_owned(),
                value: node("b", &["10.0.0.3"], &[]),
                revision: Revision(3),
            },
            Event::Delete {
                name: "a".to_owned(),
                revision: Revision(4),
            },
        ],
        |n| n.name.clone(),
    );
    assert_eq!(nodes.keys().collect::<Vec<_>>(), ["b"]);
}
