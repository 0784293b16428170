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
    assert!(!allows(&Target::new("10.42.0.8", 8080).expect("a target")));
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
