//! A server's restart on the embedded store: leases, the CA and the token survive it, agents
//! carry on, and a restart with other critical settings or another token is refused.

use weft_api::JoinToken;
use weft_control::ControlError;

use crate::harness::{
    PATIENCE, ServerOptions, TestNode, TestServer, Watcher, dual_stack_with, network,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_leases_the_ca_and_the_token() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = TestServer::start(ServerOptions::embedded(dir.path()))
        .await
        .expect("the server starts");
    let token_text = std::fs::read_to_string(&server.token_file).expect("the token file");
    let nodes: Vec<TestNode> = (1..=3)
        .map(|i| TestNode::new(&format!("node-{i}"), i))
        .collect();
    let mut leases = Vec::new();
    for node in &nodes {
        leases.push(
            node.join(&[&server.url], &server.token)
                .await
                .expect("joins")
                .0,
        );
    }
    // A node that watches, and does not register again (that would revoke its certificate).
    let watching = TestNode::new("watching", 9);
    let (watching_lease, source) = watching
        .join(&[&server.url], &server.token)
        .await
        .expect("joins");
    let mut watcher = Watcher::spawn(source);
    watcher
        .until("the four leases", PATIENCE, |l| l.len() == 4)
        .await;
    let (token, ca_pem) = (server.token.clone(), server.ca_pem.clone());

    let server = server.restart().await.expect("the server starts again");
    assert_eq!(server.token, token);
    assert_eq!(server.ca_pem, ca_pem);
    assert_eq!(
        std::fs::read_to_string(&server.token_file).expect("the token file"),
        token_text
    );
    // Every node registers again and gets its lease back.
    for (node, lease) in nodes.iter().zip(&leases) {
        let (again, _) = node.join(&[&server.url], &token).await.expect("rejoins");
        assert_eq!(&again, lease);
    }
    // A new node joins with the old token, and the agent that watched before the restart sees it.
    TestNode::new("node-4", 4)
        .join(&[&server.url], &token)
        .await
        .expect("a new node joins with the old token");
    watcher
        .until("node-4's lease", PATIENCE, |l| l.contains_key("node-4"))
        .await;
    assert_eq!(watcher.leases.len(), 5);
    assert_eq!(watcher.leases.get("watching"), Some(&watching_lease));
    for lease in &leases {
        assert_eq!(watcher.leases.get(&lease.node_name), Some(lease));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_the_same_secret_works_and_with_another_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = TestServer::start(ServerOptions::embedded(dir.path()))
        .await
        .expect("the server starts");
    let token = server.token.clone();
    let mut options = server.stop().await;

    options.token = Some(JoinToken::parse(&token.secret).expect("a bare secret"));
    let server = TestServer::start(options.clone())
        .await
        .expect("the same secret opens the cluster");
    assert_eq!(server.token, token);
    server.stop().await;

    options.token = Some(JoinToken::parse(&token.to_string()).expect("the K10 token"));
    let server = TestServer::start(options.clone())
        .await
        .expect("the K10 token opens the cluster");
    server.stop().await;

    options.token = Some(JoinToken::parse("another-secret").expect("a bare secret"));
    let refused = TestServer::start(options.clone())
        .await
        .err()
        .expect("another secret is refused");
    assert!(matches!(refused, ControlError::WrongToken), "{refused}");

    let other_hash = "f".repeat(64);
    options.token = Some(JoinToken::server(&other_hash, &token.secret));
    let refused = TestServer::start(options)
        .await
        .err()
        .expect("a token pinning another CA is refused");
    assert!(
        matches!(&refused, ControlError::TokenCaMismatch { pinned, .. } if *pinned == other_hash),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_critical_settings_are_refused_naming_each() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = TestServer::start(ServerOptions::embedded(dir.path()))
        .await
        .expect("the server starts");
    let mut options = server.stop().await;

    options.network = dual_stack_with(&[
        (
            "cluster-cidr",
            serde_json::json!(["10.44.0.0/16", "fd00:42::/56"]),
        ),
        ("flannel-backend", serde_json::json!("host-gw")),
        ("node-cidr-mask-size-ipv4", serde_json::json!(25)),
    ]);
    let refused = TestServer::start(options.clone())
        .await
        .err()
        .expect("the changed settings are refused");
    assert!(
        matches!(refused, ControlError::CriticalMismatch { .. }),
        "{refused}"
    );
    let lines: Vec<String> = refused.to_string().lines().map(str::to_owned).collect();
    assert_eq!(
        lines,
        [
            "critical configuration value mismatch between servers: cluster-cidr (this server: 10.44.0.0/16,fd00:42::/56, cluster: 10.42.0.0/16,fd00:42::/56)",
            "critical configuration value mismatch between servers: flannel-backend (this server: host-gw, cluster: vxlan)",
            "critical configuration value mismatch between servers: node-cidr-mask-size-ipv4 (this server: 25, cluster: 24)",
        ]
    );

    // The stored settings were not changed by the refused start.
    options.network = dual_stack_with(&[]);
    TestServer::start(options)
        .await
        .expect("the original settings still start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_cannot_be_added_to_a_single_stack_cluster() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let options = ServerOptions {
        network: network(&["10.42.0.0/16"], &["10.43.0.0/16"], &["10.43.0.10"]),
        ..ServerOptions::embedded(dir.path())
    };
    let server = TestServer::start(options).await.expect("the server starts");
    let mut options = server.stop().await;
    options.network = dual_stack_with(&[]);
    let refused = TestServer::start(options)
        .await
        .err()
        .expect("adding IPv6 is refused");
    let text = refused.to_string();
    for setting in ["cluster-cidr", "service-cidr", "cluster-dns"] {
        assert!(
            text.contains(&format!("between servers: {setting} (this server:")),
            "{setting} is not named in:\n{text}"
        );
    }
    assert!(
        text.contains("cluster-cidr of this server is dual-stack, but the cluster was created as IPv4: dual-stack must be configured when the cluster is first created"),
        "the reason is missing from:\n{text}"
    );
}

/// K3s's migration to wireguard-native: change `flannel-backend` on the servers and restart
/// them. A restart that changes only migratable settings updates the cluster's record, and the
/// next start with the new value is an ordinary one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_may_switch_the_backend() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = TestServer::start(ServerOptions::embedded(dir.path()))
        .await
        .expect("the server starts");
    let mut options = server.stop().await;
    options.network =
        dual_stack_with(&[("flannel-backend", serde_json::json!("wireguard-native"))]);
    let server = TestServer::start(options.clone())
        .await
        .expect("switching the backend is accepted");
    let mut options = server.stop().await;
    // The record now says wireguard-native: the old backend is the change now.
    options.network = dual_stack_with(&[]);
    let server = TestServer::start(options.clone())
        .await
        .expect("and switching back is accepted too");
    let mut options = server.stop().await;
    options.network = dual_stack_with(&[
        ("flannel-backend", serde_json::json!("host-gw")),
        (
            "cluster-dns",
            serde_json::json!(["10.43.0.53", "fd00:43::a"]),
        ),
    ]);
    let refused = TestServer::start(options)
        .await
        .err()
        .expect("a backend switch mixed with another change is refused");
    assert!(
        refused
            .to_string()
            .contains("flannel-backend (this server: host-gw, cluster: vxlan)"),
        "{refused}"
    );
}
