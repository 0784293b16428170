//! Checks that the control-plane swarm registers every agent, opens every watch and times each
//! change at every watcher, against a server in this process.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use weft_config::ClusterNetwork;
use weft_control::ServerSettings;
use weft_fabric::BackendData;
use weft_store::Datastore;

use super::*;

fn network() -> ClusterNetwork {
    ClusterNetwork::from_json(&serde_json::json!({
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
    }))
    .expect("the test network validates")
}

/// A weft-control server in this process on a free loopback port, held to `limits`: its URL,
/// its token, its CA and its lease hub.
async fn server(
    dir: &std::path::Path,
    limits: weft_api::http::ServeLimits,
) -> (String, JoinToken, String, weft_control::hub::LeaseHub) {
    let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("https://127.0.0.1:{port}");
    let started = weft_control::start(ServerSettings {
        dir: dir.join("server"),
        datastore: Datastore::Embedded {
            data_dir: dir.to_owned(),
        },
        network: network(),
        token: None,
        agent_token: None,
        bind: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        url: url.clone(),
        names: vec!["localhost".to_owned()],
        ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        bookmark_interval: weft_api::protocol::BOOKMARK_INTERVAL,
    })
    .await
    .expect("the server starts");
    let tls =
        weft_api::tls::server_config(started.bootstrap.ca.cert_pem(), &started.bootstrap.serving)
            .expect("TLS");
    let hub = started.plane.hub().clone();
    tokio::spawn(weft_api::http::serve_limited(
        started.listener,
        tls,
        started.plane.clone(),
        limits,
        Arc::new(weft_api::http::Unobserved),
    ));
    let ca = started.bootstrap.ca.cert_pem().to_owned();
    (url, started.bootstrap.token.clone(), ca, hub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_swarm_registers_watches_and_times_every_change() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (url, token, _, hub) = server(dir.path(), weft_api::http::ServeLimits::default()).await;

    let swarm = Swarm {
        server: url,
        token,
        agents: 20,
        rounds: 3,
        concurrency: 8,
    };
    let report = swarm.run().await.expect("the swarm runs");

    assert_eq!(report.agents, 20);
    assert_eq!(report.rounds.len(), 3);
    for round in &report.rounds {
        assert_eq!(round.latencies.len(), 20, "every watcher read the change");
        assert!(round.latencies.is_sorted());
        assert!(round.percentile(50.0) <= round.percentile(99.0));
    }
    // The 20 watchers, and the one more node whose lease changed.
    let leases = hub.snapshot().leases;
    assert_eq!(leases.len(), 21);
    let changed = leases
        .iter()
        .find(|l| l.node_name == "agent-00020")
        .expect("the changing node's lease");
    assert_eq!(
        changed.backend,
        BackendData::Vxlan {
            vtep_mac_ipv4: Some(vtep_mac(20, 3)),
            vtep_mac_ipv6: None,
        },
        "the last round's MAC"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_connect_again_when_the_header_deadline_closes_them() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let limits = weft_api::http::ServeLimits {
        header_read_timeout: Duration::from_millis(300),
        ..weft_api::http::ServeLimits::default()
    };
    let (url, _, ca, _) = server(dir.path(), limits).await;
    let addr: SocketAddr = url
        .trim_start_matches("https://")
        .parse()
        .expect("an address");
    let slow = SlowClients::start(addr, &ca, 5).expect("slow clients");
    slow.all_held().await.expect("all five hold a connection");
    // Two header deadlines later, every first connection was closed, and each client is back.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        slow.closed() >= 5,
        "the server closed {} slow connections, not every first one",
        slow.closed()
    );
    slow.all_held().await.expect("all five connected again");
}

#[test]
fn percentiles_are_nearest_rank() {
    let round = Round {
        request: Duration::ZERO,
        latencies: (1..=100).map(Duration::from_millis).collect(),
    };
    assert_eq!(round.percentile(50.0), Duration::from_millis(50));
    assert_eq!(round.percentile(99.0), Duration::from_millis(99));
    assert_eq!(round.percentile(100.0), Duration::from_millis(100));
    assert_eq!(round.percentile(0.0), Duration::from_millis(1));
    let empty = Round {
        request: Duration::ZERO,
        latencies: Vec::new(),
    };
    assert_eq!(empty.percentile(99.0), Duration::ZERO);
}

#[test]
fn five_thousand_agents_have_distinct_addresses_and_macs() {
    let ips: HashSet<IpAddr> = (0..5_000).map(agent_ip).collect();
    assert_eq!(ips.len(), 5_000);
    let macs: HashSet<MacAddr> = (0..5_000)
        .map(|i| vtep_mac(i, 0))
        .chain((1..=10).map(|r| vtep_mac(0, r)))
        .collect();
    assert_eq!(macs.len(), 5_010);
}
