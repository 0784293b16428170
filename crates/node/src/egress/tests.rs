//! Tests of the agent's egress side: reading host-local's state as the reference plugin writes
//! it, and following this node's lease into the authorizer.

use std::path::Path;

use weft_api::pki::ClusterCa;
use weft_tunnel::proto::Target;

use super::*;
use crate::StaticSource;

/// Writes a host-local state file exactly as the reference plugin (v1.x) does.
fn reserve(dir: &Path, ip: &str, id: &str) {
    std::fs::write(dir.join(ip), format!("{id}\r\neth0")).expect("written");
}

#[test]
fn pods_come_from_host_locals_state() {
    let dir = tempfile::tempdir().expect("a temp dir");
    assert_eq!(
        scan_pods(&dir.path().join("weft")).expect("scanned"),
        Vec::new(),
        "no directory yet: no pods"
    );
    let dir = dir.path();
    reserve(dir, "10.42.7.2", "abc123");
    reserve(dir, "fd42:7::2", "abc123");
    reserve(dir, "10.42.7.3", "def456");
    // What else host-local keeps there, and things that are no pod.
    std::fs::write(dir.join("last_reserved_ip.0"), "10.42.7.3").expect("written");
    std::fs::write(dir.join("last_reserved_ip.1"), "fd42:7::2").expect("written");
    std::fs::write(dir.join("lock"), "").expect("written");
    std::fs::write(dir.join("10.42.7.9"), "\r\neth0").expect("written");
    std::fs::write(dir.join("10.42.7.10"), "a/b\r\neth0").expect("written");
    std::fs::create_dir(dir.join("10.42.7.11")).ok();

    let pods = scan_pods(dir).expect("scanned");
    let ip = |text: &str| text.parse::<IpAddr>().expect("an IP");
    assert_eq!(
        pods,
        vec![
            ReportedPod {
                id: "abc123".to_owned(),
                ips: vec![ip("10.42.7.2"), ip("fd42:7::2")],
            },
            ReportedPod {
                id: "def456".to_owned(),
                ips: vec![ip("10.42.7.3")],
            },
        ]
    );
    // A pod going away removes its files.
    std::fs::remove_file(dir.join("10.42.7.3")).expect("removed");
    assert_eq!(scan_pods(dir).expect("scanned").len(), 1);
}

#[test]
fn only_pod_ips_inside_the_lease_are_kept() {
    let ip = |text: &str| text.parse::<IpAddr>().expect("an IP");
    let pod = |id: &str, ips: &[&str]| ReportedPod {
        id: id.to_owned(),
        ips: ips.iter().map(|text| ip(text)).collect(),
    };
    let lease: Vec<weft_ipam::Cidr> = ["10.42.1.0/24", "fd42:0:0:1::/64"]
        .iter()
        .map(|text| weft_ipam::Cidr::parse("cidr", text).expect("a CIDR"))
        .collect();
    let in_lease = |address: IpAddr| lease.iter().any(|cidr| cidr.contains(address));
    // (scanned pods, kept pods, skipped (id, IP) pairs)
    type Case<'a> = (Vec<ReportedPod>, Vec<ReportedPod>, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case<'_>> = vec![
        (Vec::new(), Vec::new(), Vec::new()),
        (
            vec![pod("a", &["10.42.1.5", "fd42:0:0:1::5"])],
            vec![pod("a", &["10.42.1.5", "fd42:0:0:1::5"])],
            Vec::new(),
        ),
        // The server's own node IP, another node's pod, link-local: skipped.
        (
            vec![
                pod("a", &["10.42.1.5"]),
                pod("b", &["192.0.2.1"]),
                pod("c", &["10.42.2.5", "fd42:0:0:2::5"]),
                pod("d", &["169.254.169.254"]),
            ],
            vec![pod("a", &["10.42.1.5"])],
            vec![
                ("b", "192.0.2.1"),
                ("c", "10.42.2.5"),
                ("c", "fd42:0:0:2::5"),
                ("d", "169.254.169.254"),
            ],
        ),
        // Partly inside: the pod keeps the IPs inside.
        (
            vec![pod("a", &["10.42.1.5", "fd42:0:0:9::5"])],
            vec![pod("a", &["10.42.1.5"])],
            vec![("a", "fd42:0:0:9::5")],
        ),
    ];
    for (scanned, kept, skipped) in cases {
        let (inside, outside) = inside_lease(scanned.clone(), in_lease);
        assert_eq!(inside, kept, "{scanned:?}");
        let skipped: BTreeSet<(String, IpAddr)> = skipped
            .iter()
            .map(|(id, address)| ((*id).to_owned(), ip(address)))
            .collect();
        assert_eq!(outside, skipped, "{scanned:?}");
    }
}

fn example() -> StaticSource {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/static-leases.json");
    StaticSource::read(&path).expect("the example file")
}

fn settings(dir: &Path, node: &str) -> EgressSettings {
    EgressSettings {
        node_name: node.to_owned(),
        node_ips: vec!["10.0.0.2".parse().expect("an IP")],
        kubelet_port: 10250,
        ipam_dir: dir.join("cni/networks/weft"),
        scan_interval: Duration::from_millis(50),
        servers_interval: Duration::from_secs(60),
        tunnel: weft_tunnel::proto::Config::default(),
        backoff: Backoff::default(),
        alias: None,
    }
}

/// Credentials as registration gives them, naming a server nobody listens on.
fn registered(node: &str) -> watch::Receiver<Option<Credentials>> {
    let ca = ClusterCa::generate().expect("a CA");
    let cert = ca.issue_node(node).expect("a node certificate");
    let creds = Credentials {
        ca_pem: ca.cert_pem().to_owned(),
        cert_pem: cert.cert_pem,
        key_pem: cert.key_pem,
        servers: vec!["https://127.0.0.1:9".to_owned()],
    };
    watch::channel(Some(creds)).1
}

#[tokio::test]
async fn the_authorizer_follows_this_nodes_lease() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut source = example();
    let mut cluster = source.cluster().await.expect("the cluster");
    cluster.egress_selector_mode = EgressSelectorMode::Pod;
    let before = Lease {
        node_name: "node-b".to_owned(),
        ipv4_cidr: None,
        ipv6_cidr: None,
        public_ipv4: None,
        public_ipv6: None,
        backend: Default::default(),
        created_revision: 0,
    };
    let egress = start(
        settings(dir.path(), "node-b"),
        &cluster,
        &before,
        registered("node-b"),
    )
    .expect("started");
    let authorizer = || egress.authorizer().expect("not disabled");
    assert!(authorizer().pod_cidrs.is_empty());
    let pod = Target::new("10.42.1.9", 8080).expect("a target");
    assert!(!authorizer().allows(&pod));

    let mut tracked = egress.track(&mut source);
    let request = RegisterRequest {
        node_name: "node-b".to_owned(),
        node_ips: Vec::new(),
        external_ips: Vec::new(),
        backend: Default::default(),
    };
    let lease = tracked.register(&request).await.expect("registered");
    assert_eq!(lease.ipv4_cidr.expect("a CIDR").to_string(), "10.42.1.0/24");
    let after = authorizer();
    assert_eq!(after.pod_cidrs.len(), 1);
    assert!(after.allows(&pod));
    // Other nodes' leases go by without changing it.
    let _ = tracked.next().await.expect("a snapshot");
    assert_eq!(authorizer(), after);
    assert!(!after.allows(&Target::new("10.42.0.9", 8080).expect("a target")));
}

/// A lease of `node` with the given CIDRs, as a server sends it.
fn lease_of(node: &str, ipv4: &str, ipv6: Option<&str>) -> Lease {
    let mut json = serde_json::json!({ "node-name": node, "ipv4-cidr": ipv4 });
    if let Some(ipv6) = ipv6 {
        json["ipv6-cidr"] = serde_json::json!(ipv6);
    }
    serde_json::from_value(json).expect("a lease")
}

#[tokio::test]
async fn a_lease_widens_the_authorizer_only_inside_the_cluster_cidr() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut cluster = example().cluster().await.expect("the cluster");
    cluster.egress_selector_mode = EgressSelectorMode::Pod;
    assert_eq!(cluster.cluster_cidr.to_string(), "10.42.0.0/16");
    // The lease at start lies outside the cluster CIDR: ignored.
    let outside = lease_of("node-b", "10.99.1.0/24", None);
    let egress = start(
        settings(dir.path(), "node-b"),
        &cluster,
        &outside,
        registered("node-b"),
    )
    .expect("started");
    let allows = |host: &str| {
        let target = Target::new(host, 8080).expect("a target");
        egress.authorizer().expect("not disabled").allows(&target)
    };
    assert!(egress.authorizer().expect("enabled").pod_cidrs.is_empty());
    assert!(!allows("10.99.1.5"));
    // A lease inside it widens the rules; one outside it, later, narrows them again.
    egress.set_lease(&lease_of("node-b", "10.42.1.0/24", None));
    assert!(allows("10.42.1.5"));
    for (ipv4, ipv6, target) in [
        ("169.254.0.0/16", None, "169.254.169.254"),
        ("10.0.0.0/8", None, "10.0.0.5"),
        ("169.254.169.0/24", Some("fe80::/64"), "fe80::5"),
        (
            "10.99.1.0/24",
            Some("::ffff:0.0.0.0/96"),
            "::ffff:10.99.1.5",
        ),
    ] {
        egress.set_lease(&lease_of("node-b", ipv4, ipv6));
        let authorizer = egress.authorizer().expect("enabled");
        assert!(authorizer.pod_cidrs.is_empty(), "{ipv4} {ipv6:?}");
        assert!(!allows(target), "{target} of {ipv4} {ipv6:?}");
        assert!(!allows("10.42.1.5"), "the lease before is gone");
    }
}

#[tokio::test]
async fn disabled_mode_has_no_tunnels_and_unregistered_nodes_none_either() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut cluster = example().cluster().await.expect("the cluster");
    let lease = example().leases()[0].clone();
    cluster.egress_selector_mode = EgressSelectorMode::Disabled;
    let unregistered = || watch::channel(None).1;
    let egress = start(
        settings(dir.path(), "node-a"),
        &cluster,
        &lease,
        unregistered(),
    )
    .expect("nothing");
    assert!(!egress.is_enabled());
    assert_eq!(egress.authorizer(), None);
    assert!(egress.connected().is_empty());
    cluster.egress_selector_mode = EgressSelectorMode::Agent;
    assert!(matches!(
        start(
            settings(dir.path(), "node-a"),
            &cluster,
            &lease,
            unregistered()
        ),
        Err(NodeError::NotRegistered)
    ));
}

#[tokio::test]
async fn cluster_mode_allows_the_pods_it_finds() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut cluster = example().cluster().await.expect("the cluster");
    cluster.egress_selector_mode = EgressSelectorMode::Cluster;
    let lease = example().leases()[0].clone();
    let settings = settings(dir.path(), "node-a");
    std::fs::create_dir_all(&settings.ipam_dir).expect("made");
    reserve(&settings.ipam_dir, "10.42.0.7", "c0ffee");
    // Outside node-a's lease (10.42.0.0/24): another node's pod, the server's node IP.
    reserve(&settings.ipam_dir, "10.42.1.7", "stray");
    reserve(&settings.ipam_dir, "192.0.2.1", "forged");
    let egress = start(settings, &cluster, &lease, registered("node-a")).expect("started");
    let allows = |target: &Target| egress.authorizer().expect("enabled").allows(target);
    let pod = Target::new("10.42.0.7", 8080).expect("a target");
    for _ in 0..100 {
        if allows(&pod) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(allows(&pod), "the scanned pod is allowed");
    assert_eq!(
        egress.authorizer().expect("enabled").pods,
        [pod.host().parse::<IpAddr>().expect("an IP")],
        "only the pod inside the lease"
    );
    for other in ["10.42.0.8", "10.42.1.7", "192.0.2.1"] {
        assert!(
            !allows(&Target::new(other, 8080).expect("a target")),
            "{other}"
        );
    }
}

#[test]
fn server_urls_become_tunnel_addresses_with_the_alias_applied() {
    let urls = [
        "https://203.0.113.1:9345".to_owned(),
        "https://10.0.0.2:9345/".to_owned(),
        "https://[fd00::3]:9345".to_owned(),
    ];
    let alias = (
        "https://203.0.113.1:9345".to_owned(),
        "https://127.0.0.1:9345".to_owned(),
    );
    assert_eq!(
        addresses(&urls, Some(&alias)),
        ["127.0.0.1:9345", "10.0.0.2:9345", "[fd00::3]:9345"]
    );
    assert_eq!(addresses(&urls, None)[0], "203.0.113.1:9345");
    assert_eq!(
        reach("https://10.0.0.2:9345", Some(&alias)),
        "https://10.0.0.2:9345"
    );
}
