//! Joining: registration hands out one pod CIDR per family and keeps it, node passwords stop a
//! second machine from taking a name, and the token's CA pin and secret are checked.

use weft_api::ApiError;
use weft_api::JoinToken;
use weft_api::client::NodeClient;
use weft_fabric::Lease;
use weft_node::{LeaseSource, LeaseUpdate, NodeError};

use crate::harness::{
    PATIENCE, ServerOptions, TestNode, TestServer, embedded as server, mac, mac_of, network,
};

fn cidrs(lease: &Lease) -> (String, String) {
    (
        lease.ipv4_cidr.map(|c| c.to_string()).unwrap_or_default(),
        lease.ipv6_cidr.map(|c| c.to_string()).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_gives_each_node_one_cidr_per_family() {
    let (_dir, server) = server().await;
    let a = TestNode::new("node-a", 1);
    let b = TestNode::new("node-b", 2);
    let (lease_a, mut source) = a
        .join(&[&server.url], &server.token)
        .await
        .expect("a joins");
    let (lease_b, _) = b
        .join(&[&server.url], &server.token)
        .await
        .expect("b joins");

    for (lease, node) in [(&lease_a, &a), (&lease_b, &b)] {
        let (v4, v6) = cidrs(lease);
        assert!(v4.starts_with("10.42.") && v4.ends_with("/24"), "{v4}");
        assert!(v6.starts_with("fd00:42:") && v6.ends_with("/64"), "{v6}");
        assert_eq!(lease.public_ipv4.map(Into::into), Some(node.ips[0]));
        assert_eq!(lease.public_ipv6.map(Into::into), Some(node.ips[1]));
        assert_eq!(mac_of(lease), Some(node.identity.vtep_mac_v4));
    }
    assert_ne!(cidrs(&lease_a).0, cidrs(&lease_b).0);
    assert_ne!(cidrs(&lease_a).1, cidrs(&lease_b).1);

    // The first update of the agent's source is every lease.
    let first = tokio::time::timeout(PATIENCE, source.next())
        .await
        .expect("a snapshot in time")
        .expect("a snapshot");
    let LeaseUpdate::Snapshot(mut leases) = first else {
        panic!("the first update is not a snapshot: {first:?}");
    };
    leases.sort_by(|x, y| x.node_name.cmp(&y.node_name));
    assert_eq!(leases, vec![lease_a, lease_b]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_stack_cluster_gives_one_cidr() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let options = ServerOptions {
        network: network(&["fd00:42::/56"], &["fd00:43::/112"], &["fd00:43::a"]),
        ..ServerOptions::embedded(dir.path())
    };
    let server = TestServer::start(options).await.expect("the server starts");
    let (lease, _) = TestNode::new("v6-only", 1)
        .join(&[&server.url], &server.token)
        .await
        .expect("the node joins");
    assert_eq!(lease.ipv4_cidr, None);
    assert_eq!(
        lease.public_ipv4, None,
        "no IPv4 fabric address without IPv4"
    );
    assert!(cidrs(&lease).1.ends_with("/64"), "{lease:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_again_returns_the_same_lease() {
    let (_dir, server) = server().await;
    let node = TestNode::new("node-a", 1);
    let (first, _) = node
        .join(&[&server.url], &server.token)
        .await
        .expect("joins");
    // The agent restarts: a new source on the same data dir (saved credentials and password).
    let (again, _) = node
        .join(&[&server.url], &server.token)
        .await
        .expect("rejoins");
    assert_eq!(again, first);
    // A registration that changes what the node publishes keeps the CIDRs.
    let changed = node
        .register(&server.url, &server.token, &node.request_with_mac(mac(7)))
        .await
        .expect("re-registers");
    assert_eq!(cidrs(&changed.lease), cidrs(&first));
    assert_eq!(mac_of(&changed.lease), Some(mac(7)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_machine_claiming_a_name_is_refused() {
    let (_dir, server) = server().await;
    let first = TestNode::new("node-a", 1);
    let (lease, _) = first
        .join(&[&server.url], &server.token)
        .await
        .expect("joins");

    // Another machine (another node password) with the same name.
    let impostor = TestNode::new("node-a", 2);
    let refused = impostor
        .register(&server.url, &server.token, &impostor.request())
        .await
        .expect_err("the impostor is refused");
    let ApiError::Rejected {
        status, message, ..
    } = &refused
    else {
        panic!("not a refusal: {refused}");
    };
    assert_eq!(*status, 403);
    assert_eq!(
        message,
        "Node password rejected, duplicate hostname or contents of '<data-dir>/agent/node-password' may not match server node-passwd entry, try enabling a unique node name with the --with-node-id flag"
    );
    // Through the agent's source, the same refusal.
    let through_agent = impostor
        .join(&[&server.url], &server.token)
        .await
        .err()
        .expect("the impostor's agent is refused");
    assert!(
        through_agent.to_string().contains("--with-node-id"),
        "{through_agent}"
    );
    // The real node still registers, and keeps its lease.
    let (again, _) = first
        .join(&[&server.url], &server.token)
        .await
        .expect("rejoins");
    assert_eq!(again, lease);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_pinning_another_ca_is_refused_before_any_secret_is_sent() {
    let (_dir, server) = server().await;
    let wrong_hash = "0".repeat(64);
    let token = JoinToken::server(&wrong_hash, &server.token.secret);
    let node = TestNode::new("node-a", 1);
    let mut source = node.source(&[&server.url], &token);

    let refused = source.cluster().await.expect_err("the CA does not match");
    let NodeError::Api(ApiError::CaMismatch { expected, got, .. }) = &refused else {
        panic!("not a CA mismatch: {refused}");
    };
    assert_eq!(*expected, wrong_hash);
    assert_eq!(Some(got), server.token.ca_hash.as_ref());
    assert!(
        refused.to_string().contains("refusing to talk to it"),
        "{refused}"
    );
    let refused = source
        .register(&node.request())
        .await
        .expect_err("registration is refused too");
    assert!(
        matches!(refused, NodeError::Api(ApiError::CaMismatch { .. })),
        "{refused}"
    );

    // The server saw only requests for its CA, without the secret or the node password.
    let seen = server.seen();
    assert!(!seen.is_empty());
    for request in seen {
        assert_eq!(request.request, "GET /cacerts");
        assert!(
            !request.authorization && !request.node_password,
            "{request:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_secret_is_refused() {
    let (_dir, server) = server().await;
    let hash = server.token.ca_hash.clone().expect("a K10 token");
    let token = JoinToken::server(&hash, "not-the-secret");
    let node = TestNode::new("node-a", 1);

    for refused in [
        node.source(&[&server.url], &token)
            .cluster()
            .await
            .expect_err("the config needs the secret"),
        node.join(&[&server.url], &token)
            .await
            .err()
            .expect("registration needs the secret"),
    ] {
        let NodeError::Api(ApiError::Rejected {
            status, message, ..
        }) = &refused
        else {
            panic!("not a refusal: {refused}");
        };
        assert_eq!(*status, 401);
        assert!(message.starts_with("the token is wrong"), "{message}");
    }
    let refused = node
        .register(&server.url, &token, &node.request())
        .await
        .expect_err("registration needs the secret");
    assert!(
        matches!(refused, ApiError::Rejected { status: 401, .. }),
        "{refused}"
    );
    // Nothing was stored.
    let nodes = server.admin().list_nodes(&server.url).await.expect("nodes");
    assert!(nodes.is_empty(), "{nodes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_secret_joins_without_a_pin() {
    let (_dir, server) = server().await;
    let token = JoinToken::parse(&server.token.secret).expect("a bare secret parses");
    assert_eq!(token.ca_hash, None);
    let (lease, _) = TestNode::new("node-a", 1)
        .join(&[&server.url], &token)
        .await
        .expect("a bare secret joins");
    assert_eq!(lease.node_name, "node-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_need_a_node_certificate() {
    let (_dir, server) = server().await;
    let (_, source) = TestNode::new("node-a", 1)
        .join(&[&server.url], &server.token)
        .await
        .expect("joins");
    let node_client = source.client().expect("registered").clone();
    let listed = node_client
        .list_leases(&server.url)
        .await
        .expect("a node lists");
    assert_eq!(listed.leases.len(), 1);
    // The admin certificate is not a node's.
    let admin = NodeClient::new(&server.ca_pem, &server.admin).expect("a client");
    let refused = admin
        .list_leases(&server.url)
        .await
        .expect_err("only nodes list leases");
    assert!(
        matches!(refused, ApiError::Rejected { status: 401, .. }),
        "{refused}"
    );
}
