//! Unique identities: a node can't register with another live node's address, VTEP MAC or
//! WireGuard key (HTTP 409 naming the value and its owner, nothing stored), a node that changes
//! its address or is deleted frees what it held, and two servers on one etcd racing for one
//! value hand it to exactly one node.

use std::net::IpAddr;

use weft_api::ApiError;
use weft_api::protocol::RegisterRequest;
use weft_fabric::{BackendData, WgPublicKey};

use crate::harness::{Etcd, TestNode, TestServer, embedded as server};

/// The refusal's status and message.
fn refusal(result: Result<impl std::fmt::Debug, ApiError>) -> (u16, String) {
    match result {
        Err(ApiError::Rejected {
            status, message, ..
        }) => (status, message),
        other => panic!("not a refusal: {other:?}"),
    }
}

fn wireguard(key: u8) -> BackendData {
    BackendData::Wireguard {
        public_key: WgPublicKey([key; 32]),
        port_ipv4: 0,
        port_ipv6: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_take_another_nodes_address_mac_or_key() {
    let (_dir, server) = server().await;
    let token = &server.token;
    let victim = TestNode::new("n2", 2);
    victim
        .register(&server.url, token, &victim.request())
        .await
        .expect("n2 registers");
    let rogue = TestNode::new("a-rogue", 9);

    // n2's address as the rogue's node IP.
    let mut request = rogue.request();
    request.node_ips = vec![victim.ips[0]];
    assert_eq!(
        refusal(rogue.register(&server.url, token, &request).await),
        (
            409,
            "192.0.2.2 is already node n2's address; give this node its own --node-ip, or delete n2 first".to_owned()
        )
    );
    // ... or as its external IP.
    let mut request = rogue.request();
    request.external_ips = vec![victim.ips[1]];
    let (status, message) = refusal(rogue.register(&server.url, token, &request).await);
    assert_eq!(status, 409);
    assert_eq!(
        message,
        "2001:db8::2 is already node n2's address; give this node its own --node-external-ip, or delete n2 first"
    );
    // A copy of n2's vtep-macs.json.
    let request = RegisterRequest {
        node_name: "z-rogue".to_owned(),
        ..rogue.request_with_mac(victim.identity.vtep_mac_v4)
    };
    let (status, message) = refusal(rogue.register(&server.url, token, &request).await);
    assert_eq!(status, 409);
    assert_eq!(
        message,
        format!(
            "VTEP MAC {} is already node n2's; delete this node's <data-dir>/agent/vtep-macs.json so it makes its own, or delete n2 first",
            victim.identity.vtep_mac_v4
        )
    );

    // Nothing of the refused registrations was stored.
    let nodes = server.admin().list_nodes(&server.url).await.expect("nodes");
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["n2"]);
    assert_eq!(server.hub.len(), 1, "no lease for a refused node");
    // The rogue, with its own identity, registers.
    rogue
        .register(&server.url, token, &rogue.request())
        .await
        .expect("a node with its own identity registers");

    // WireGuard keys are as much a node's own.
    let wg_victim = TestNode::new("wg-a", 20);
    let mut request = wg_victim.request();
    request.backend = wireguard(7);
    wg_victim
        .register(&server.url, token, &request)
        .await
        .expect("wg-a registers");
    let wg_rogue = TestNode::new("wg-b", 21);
    let mut request = wg_rogue.request();
    request.backend = wireguard(7);
    let (status, message) = refusal(wg_rogue.register(&server.url, token, &request).await);
    assert_eq!(status, 409);
    assert!(
        message.starts_with(&format!(
            "WireGuard public key {} is already node wg-a's;",
            WgPublicKey([7; 32])
        )),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_or_deleted_node_frees_what_it_held() {
    let (_dir, server) = server().await;
    let token = &server.token;
    let first = TestNode::new("first", 1);
    first
        .register(&server.url, token, &first.request())
        .await
        .expect("first registers");
    // The same node registering again, unchanged, is fine.
    first
        .register(&server.url, token, &first.request())
        .await
        .expect("first registers again");

    // first moves to a new address: its old one is free.
    let moved: IpAddr = "192.0.2.101".parse().expect("an IP");
    let mut request = first.request();
    request.node_ips[0] = moved;
    first
        .register(&server.url, token, &request)
        .await
        .expect("first changes its address");
    let second = TestNode::new("second", 2);
    let mut request = second.request();
    request.node_ips[0] = first.ips[0];
    second
        .register(&server.url, token, &request)
        .await
        .expect("second takes first's old address");

    // first is deleted: its address, MACs and name are free.
    server
        .admin()
        .delete_node(&server.url, "first")
        .await
        .expect("first is deleted");
    let third = TestNode::new("third", 3);
    let mut request = third.request_with_mac(first.identity.vtep_mac_v4);
    request.node_ips[0] = moved;
    third
        .register(&server.url, token, &request)
        .await
        .expect("third takes what first held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_racing_for_one_address_give_it_to_one_node() {
    let etcd = Etcd::start().await;
    let dirs: [tempfile::TempDir; 2] =
        std::array::from_fn(|_| tempfile::tempdir().expect("a temporary directory"));
    let (first, second) = crate::harness::two_on(&etcd, &dirs).await;
    let token = first.token.clone();
    let urls = [first.url.clone(), second.url.clone()];

    // 40 pairs of nodes; both nodes of a pair claim one address, each through its own server.
    let nodes: Vec<TestNode> = (0..80u8)
        .map(|i| TestNode::new(&format!("node-{i}"), i))
        .collect();
    let registrations = nodes.iter().enumerate().map(|(i, node)| {
        let url = &urls[i % 2];
        let token = &token;
        let mut request = node.request();
        request.node_ips[0] = IpAddr::from([198, 51, 100, (i / 2) as u8]);
        async move { node.register(url, token, &request).await }
    });
    let results = futures::future::join_all(registrations).await;
    for (pair, outcome) in results.chunks(2).enumerate() {
        let won = outcome.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "pair {pair}: {outcome:?}");
        let lost = outcome
            .iter()
            .find_map(|r| r.as_ref().err())
            .expect("a loser");
        assert!(
            matches!(lost, ApiError::Rejected { status: 409, message, .. }
                if message.starts_with(&format!("198.51.100.{pair} is already node node-"))),
            "{lost}"
        );
    }
    let nodes = first.admin().list_nodes(&first.url).await.expect("nodes");
    assert_eq!(nodes.len(), 40, "only the winners are stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_from_before_claims_are_claimed_when_a_server_starts() {
    let (dir, server) = server().await;
    let victim = TestNode::new("n2", 2);
    victim
        .register(&server.url, &server.token, &victim.request())
        .await
        .expect("n2 registers");
    let options = server.stop().await;

    // The store as a server from before claims left it: the record holds none, the index is
    // empty.
    {
        let store = weft_store::Datastore::Embedded {
            data_dir: dir.path().to_owned(),
        }
        .open()
        .await
        .expect("the store opens");
        let mut record = store.get_node("n2").await.expect("read").expect("n2").value;
        let mut txn = weft_store::Txn::new();
        for key in std::mem::take(&mut record.claims) {
            txn = txn.delete(key);
        }
        txn = txn.put(
            weft_store::keys::node("n2"),
            serde_json::to_vec(&record).expect("json"),
        );
        store.kv().txn(txn).await.expect("written");
    }

    let server = TestServer::start(options).await.expect("the server starts");
    let rogue = TestNode::new("a-rogue", 9);
    let mut request = rogue.request();
    request.node_ips = vec![victim.ips[0]];
    let (status, message) = refusal(rogue.register(&server.url, &server.token, &request).await);
    assert_eq!(status, 409, "{message}");
    assert!(
        message.starts_with("192.0.2.2 is already node n2's"),
        "{message}"
    );
}
