//! Certificates are revocable: only the certificate a node's server issued it last speaks for
//! the node. A deleted node's certificate, and one issued before the node's current one, are
//! refused, and the lease watches they hold end at once.

use std::time::Duration;

use weft_api::ApiError;
use weft_api::client::NodeClient;
use weft_api::pki::CertifiedKey;
use weft_node::{LeaseSource, LeaseUpdate};

use crate::harness::{PATIENCE, TestNode, TestServer, Watcher, embedded as server, within};

/// Registers `node` and returns a client with the certificate it was issued.
async fn registered(server: &TestServer, node: &TestNode) -> NodeClient {
    let response = node
        .register(&server.url, &server.token, &node.request())
        .await
        .expect("the node registers");
    let identity = CertifiedKey {
        cert_pem: response.node_cert_pem,
        key_pem: response.node_key_pem,
    };
    NodeClient::new(&server.ca_pem, &identity).expect("a node client")
}

fn refused_401(result: Result<impl std::fmt::Debug, ApiError>) -> String {
    match result {
        Err(ApiError::Rejected {
            status: 401,
            message,
            ..
        }) => message,
        other => panic!("not a 401: {other:?}"),
    }
}

/// Reads a watch until it ends; events (bookmarks) before the end are fine.
async fn ends(watch: &mut weft_api::client::LeaseWatch) {
    within(Duration::from_secs(5), "the watch to end", async {
        loop {
            match watch.next().await {
                // Bookmarks, and the node's own lease going with it, may come first.
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_nodes_certificate_is_refused_and_its_watch_ends() {
    let (_dir, server) = server().await;
    let n3 = TestNode::new("n3", 3);
    let client = registered(&server, &n3).await;
    let snapshot = client
        .list_leases(&server.url)
        .await
        .expect("n3 reads leases");
    let mut watch = client
        .watch_leases(&server.url, snapshot.revision)
        .await
        .expect("n3 watches");

    server
        .admin()
        .delete_node(&server.url, "n3")
        .await
        .expect("n3 is deleted");
    ends(&mut watch).await;
    let message = refused_401(client.list_leases(&server.url).await);
    assert_eq!(
        message,
        "this certificate is no longer node n3's: the node was deleted or was issued a newer one; register again"
    );
    refused_401(client.servers(&server.url).await);
    refused_401(
        client
            .watch_leases(&server.url, snapshot.revision)
            .await
            .map(|_| ()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_revokes_the_one_before() {
    let (_dir, server) = server().await;
    let node = TestNode::new("n2", 2);
    let old = registered(&server, &node).await;
    let snapshot = old.list_leases(&server.url).await.expect("n2 reads leases");
    let mut watch = old
        .watch_leases(&server.url, snapshot.revision)
        .await
        .expect("n2 watches");

    // n2 registers again (a restart, or a renewal) and is issued a new certificate.
    let new = registered(&server, &node).await;
    ends(&mut watch).await;
    refused_401(old.list_leases(&server.url).await);
    new.list_leases(&server.url)
        .await
        .expect("the new certificate reads leases");
    // The restart of a server does not bring the old one back.
    let server = server.restart().await.expect("the server restarts");
    refused_401(old.list_leases(&server.url).await);
    new.list_leases(&server.url)
        .await
        .expect("the new certificate still reads leases");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_agent_whose_certificate_was_replaced_registers_again() {
    let (_dir, server) = server().await;
    let node = TestNode::new("n1", 1);
    let (_, source) = node
        .join(&[&server.url], &server.token)
        .await
        .expect("n1 joins");
    let mut watcher = Watcher::spawn(source);
    watcher
        .until("n1's lease", PATIENCE, |l| l.len() == 1)
        .await;

    // Another process of the same node registers (as `weft-agent plan` does): the running
    // agent's certificate is revoked, and it registers again rather than stop.
    registered(&server, &node).await;
    let other = TestNode::new("n2", 2);
    let (lease, _) = other
        .join(&[&server.url], &server.token)
        .await
        .expect("n2 joins");
    watcher
        .until("n2's lease", PATIENCE, |l| l.get("n2") == Some(&lease))
        .await;
    let saved = weft_node::identity::Credentials::load(node.dir.path())
        .expect("readable")
        .expect("saved");
    let client = NodeClient::new(&server.ca_pem, &saved.identity()).expect("a client");
    client
        .list_leases(&server.url)
        .await
        .expect("the certificate the agent registered for last is current");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_source_uses_the_saved_certificate_and_revokes_nothing() {
    let (_dir, server) = server().await;
    let node = TestNode::new("n1", 1);
    // Before the node ever registered, there is nothing to read with.
    let refused = node
        .source(&[&server.url], &server.token)
        .read_only()
        .register(&node.request())
        .await
        .expect_err("no saved registration");
    assert!(
        matches!(refused, weft_node::NodeError::NotRegistered),
        "{refused}"
    );

    let (lease, source) = node
        .join(&[&server.url], &server.token)
        .await
        .expect("n1 joins");
    let mut watcher = Watcher::spawn(source);
    watcher
        .until("n1's lease", PATIENCE, |l| l.len() == 1)
        .await;
    let saved = weft_node::identity::Credentials::load(node.dir.path())
        .expect("readable")
        .expect("saved");

    // What `weft-agent plan` does beside the running agent.
    let mut reader = node.source(&[&server.url], &server.token).read_only();
    assert_eq!(
        reader.register(&node.request()).await.expect("the lease"),
        lease
    );
    let LeaseUpdate::Snapshot(leases) = reader.next().await.expect("a snapshot") else {
        panic!("the first update is not a snapshot");
    };
    assert_eq!(leases, [lease]);
    // The running agent's certificate is still the current one.
    let client = NodeClient::new(&server.ca_pem, &saved.identity()).expect("a client");
    client
        .list_leases(&server.url)
        .await
        .expect("the agent's certificate was not revoked");
}
