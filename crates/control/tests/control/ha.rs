//! High availability: several servers on one real etcd. Agents learn every server, keep their
//! watch going when the server they watch stops, new nodes join through a survivor, two
//! servers allocating at once never hand out the same CIDR, and servers share an etcd that
//! takes only TLS with client certificates.

use std::collections::BTreeSet;

use weft_control::ControlError;
use weft_fabric::Lease;

use crate::harness::{
    Etcd, PATIENCE, ServerOptions, TestNode, TestServer, Watcher, dual_stack_with, mac, mac_of,
};

/// Three servers on one etcd; the second and third join with the first's token.
async fn three_servers(etcd: &Etcd, dirs: &[tempfile::TempDir; 3]) -> Vec<TestServer> {
    let first = TestServer::start(ServerOptions::etcd(dirs[0].path(), &etcd.client_url, None))
        .await
        .expect("the first server starts");
    let token = first.token.clone();
    let mut servers = vec![first];
    for dir in &dirs[1..] {
        let server = TestServer::start(ServerOptions::etcd(
            dir.path(),
            &etcd.client_url,
            Some(token.clone()),
        ))
        .await
        .expect("a server joins");
        assert_eq!(server.token, token, "every server has the cluster's token");
        servers.push(server);
    }
    servers
}

fn dirs<const N: usize>() -> [tempfile::TempDir; N] {
    std::array::from_fn(|_| tempfile::tempdir().expect("a temporary directory"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_fail_over_and_nodes_join_through_a_survivor() {
    let etcd = Etcd::start().await;
    let dirs = dirs::<3>();
    let mut servers = three_servers(&etcd, &dirs).await;
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let token = servers[0].token.clone();

    // Agents are told only the first server; registration teaches them the others.
    let nodes: Vec<TestNode> = (1..=3)
        .map(|i| TestNode::new(&format!("node-{i}"), i))
        .collect();
    let mut watchers = Vec::new();
    for node in &nodes {
        let (_, source) = node.join(&[&urls[0]], &token).await.expect("joins");
        let learned: BTreeSet<&String> = source.servers().iter().collect();
        assert_eq!(
            learned,
            urls.iter().collect(),
            "the agent knows every server"
        );
        watchers.push(Watcher::spawn(source));
    }
    for watcher in &mut watchers {
        watcher
            .until("three leases", PATIENCE, |l| l.len() == 3)
            .await;
    }

    // The first server stops (as a crash: no goodbye); a lease changes through the second.
    servers.remove(0).stop().await;
    // node-1's agent is stopped before another process of it registers (its agent would
    // register again with its own MAC once its certificate is revoked).
    drop(watchers.remove(0));
    let changed = nodes[0]
        .register(&urls[1], &token, &nodes[0].request_with_mac(mac(1)))
        .await
        .expect("node-1 re-registers through the second server")
        .lease;
    for watcher in &mut watchers {
        watcher
            .until("node-1's new MAC after fail-over", PATIENCE, |l| {
                l.get("node-1") == Some(&changed)
            })
            .await;
        assert_eq!(watcher.leases.get("node-1").and_then(mac_of), Some(mac(1)));
    }

    // A new node that knows the stopped server first joins through a survivor.
    let late = TestNode::new("node-4", 4);
    let (late_lease, _) = late
        .join(&[&urls[0], &urls[1]], &token)
        .await
        .expect("node-4 joins through the second server");
    for watcher in &mut watchers {
        watcher
            .until("node-4", PATIENCE, |l| l.get("node-4") == Some(&late_lease))
            .await;
    }

    // The second server stops too; the third carries on.
    servers.remove(0).stop().await;
    let admin = servers[0].admin();
    // node-2 is taken out of service before it is deleted.
    drop(watchers.remove(0));
    admin
        .delete_node(&urls[2], "node-2")
        .await
        .expect("the admin deletes node-2 through the third server");
    for watcher in &mut watchers {
        watcher
            .until("node-2 to go", PATIENCE, |l| !l.contains_key("node-2"))
            .await;
    }

    // Every agent ends with exactly the cluster's leases.
    let expected = servers[0].hub.snapshot().leases;
    for watcher in &watchers {
        let seen: Vec<Lease> = watcher.leases.values().cloned().collect();
        assert_eq!(seen, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_allocating_at_once_never_share_a_cidr() {
    let etcd = Etcd::start().await;
    let dirs = dirs::<2>();
    let (first, second) = crate::harness::two_on(&etcd, &dirs).await;
    let token = first.token.clone();
    let urls = [first.url.clone(), second.url.clone()];

    let nodes: Vec<TestNode> = (0..200u8)
        .map(|i| TestNode::new(&format!("node-{i}"), i))
        .collect();
    let registrations = nodes.iter().enumerate().map(|(i, node)| {
        let url = &urls[i % 2];
        let token = &token;
        async move { node.register(url, token, &node.request()).await }
    });
    let leases: Vec<Lease> = futures::future::join_all(registrations)
        .await
        .into_iter()
        .map(|r| r.expect("a node registers").lease)
        .collect();

    let v4: BTreeSet<String> = leases
        .iter()
        .map(|l| l.ipv4_cidr.expect("an IPv4 CIDR").to_string())
        .collect();
    let v6: BTreeSet<String> = leases
        .iter()
        .map(|l| l.ipv6_cidr.expect("an IPv6 CIDR").to_string())
        .collect();
    assert_eq!(v4.len(), 200, "duplicate IPv4 CIDRs");
    assert_eq!(v6.len(), 200, "duplicate IPv6 CIDRs");

    // Both servers' views agree with what was handed out.
    let mut handed: Vec<Lease> = leases;
    handed.sort_by(|a, b| a.node_name.cmp(&b.node_name));
    for server in [&first, &second] {
        crate::harness::eventually("the server's view to hold 200 leases", || {
            server.hub.len() == 200
        })
        .await;
        let mut view = server.hub.snapshot().leases;
        view.sort_by(|a, b| a.node_name.cmp(&b.node_name));
        assert_eq!(view, handed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_share_an_etcd_that_requires_client_certificates() {
    let etcd = Etcd::start_tls().await;
    let dirs = dirs::<3>();
    let on_tls_etcd = |dir: &tempfile::TempDir, token: Option<weft_api::JoinToken>| {
        let mut options = ServerOptions::etcd(dir.path(), &etcd.client_url, token);
        options.etcd_tls = etcd.client_tls();
        options
    };
    let first = TestServer::start(on_tls_etcd(&dirs[0], None))
        .await
        .expect("the first server starts on etcd over TLS");
    let second = TestServer::start(on_tls_etcd(&dirs[1], Some(first.token.clone())))
        .await
        .expect("a second server joins over TLS");
    let node = TestNode::new("node-1", 1);
    let lease = node
        .register(&first.url, &first.token, &node.request())
        .await
        .expect("a node registers through the first server")
        .lease;
    crate::harness::eventually("the second server to see the lease", || {
        second.hub.snapshot().leases == [lease.clone()]
    })
    .await;

    // Without a client certificate, etcd refuses the server, and the error says what to set.
    let mut without_certificate = on_tls_etcd(&dirs[2], Some(first.token.clone()));
    without_certificate.etcd_tls.client = None;
    let refused = TestServer::start(without_certificate)
        .await
        .err()
        .expect("etcd refuses a server without a client certificate");
    let message = refused.to_string();
    assert!(
        message.contains("etcd requires a client certificate")
            && message.contains("set --datastore-certfile and --datastore-keyfile"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_server_must_match_the_cluster() {
    let etcd = Etcd::start().await;
    let dirs = dirs::<3>();
    let first = TestServer::start(ServerOptions::etcd(dirs[0].path(), &etcd.client_url, None))
        .await
        .expect("the first server starts");

    let mut options =
        ServerOptions::etcd(dirs[1].path(), &etcd.client_url, Some(first.token.clone()));
    options.network = dual_stack_with(&[
        (
            "service-cidr",
            serde_json::json!(["10.45.0.0/16", "fd00:43::/112"]),
        ),
        (
            "cluster-dns",
            serde_json::json!(["10.45.0.10", "fd00:43::a"]),
        ),
        ("egress-selector-mode", serde_json::json!("cluster")),
    ]);
    let refused = TestServer::start(options)
        .await
        .err()
        .expect("a server with other settings is refused");
    assert!(
        matches!(refused, ControlError::CriticalMismatch { .. }),
        "{refused}"
    );
    let lines: Vec<String> = refused.to_string().lines().map(str::to_owned).collect();
    assert_eq!(
        lines,
        [
            "critical configuration value mismatch between servers: service-cidr (this server: 10.45.0.0/16,fd00:43::/112, cluster: 10.43.0.0/16,fd00:43::/112)",
            "critical configuration value mismatch between servers: cluster-dns (this server: 10.45.0.10,fd00:43::a, cluster: 10.43.0.10,fd00:43::a)",
            "critical configuration value mismatch between servers: egress-selector-mode (this server: cluster, cluster: agent)",
        ]
    );

    let wrong = weft_api::JoinToken::parse("not-the-cluster-secret").expect("a bare secret");
    let refused = TestServer::start(ServerOptions::etcd(
        dirs[2].path(),
        &etcd.client_url,
        Some(wrong),
    ))
    .await
    .err()
    .expect("a server with another token is refused");
    assert!(matches!(refused, ControlError::WrongToken), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_fails_over_to_a_server_behind_it_without_listing_again() {
    let etcd = Etcd::start().await;
    let dirs = dirs::<3>();
    let first = TestServer::start(ServerOptions::etcd(dirs[0].path(), &etcd.client_url, None))
        .await
        .expect("the first server starts");
    let token = first.token.clone();
    let node = TestNode::new("node-1", 1);
    node.join(&[&first.url], &token).await.expect("joins");
    // Another node's lease changes while node-1 watches (a node re-registering revokes its
    // own earlier certificate, and the watch on it).
    let mover = TestNode::new("node-2", 2);
    mover.join(&[&first.url], &token).await.expect("joins");
    // Two more servers start after the last lease change: the last one's lease view is at a
    // revision the first server's is not (the second server's record came in between).
    let mut servers = vec![first];
    for dir in &dirs[1..] {
        servers.push(
            TestServer::start(ServerOptions::etcd(
                dir.path(),
                &etcd.client_url,
                Some(token.clone()),
            ))
            .await
            .expect("a server joins"),
        );
    }
    assert!(servers[2].hub.revision() > servers[0].hub.revision());

    // The agent (restarted) watches the last server, which stops.
    let (_, source) = node
        .join(&[&servers[2].url], &token)
        .await
        .expect("rejoins through the last server");
    let mut watcher = Watcher::spawn(source);
    watcher
        .until("the leases", PATIENCE, |l| l.len() == 2)
        .await;
    crate::harness::eventually("the watch on the last server", || {
        servers[2]
            .seen()
            .iter()
            .any(|s| s.request.starts_with("GET /v1-weft/leases?watch="))
    })
    .await;
    servers.pop().expect("three servers").stop().await;

    // The agent goes on with the first or second server, from its revision: the next change
    // arrives as itself, not as a new list.
    let changed = mover
        .register(&servers[0].url, &token, &mover.request_with_mac(mac(2)))
        .await
        .expect("re-registers")
        .lease;
    let (_, update) = watcher.next(PATIENCE).await;
    assert_eq!(update, weft_node::LeaseUpdate::Put(changed));
    assert_eq!(watcher.log.len(), 2, "one snapshot, then the change");
}

/// The compactor keeps etcd's history one round deep: a watch from before the last round's
/// revision is told to relist, one from after it resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compactor_keeps_one_round_of_etcd_history() {
    use futures::StreamExt;
    use weft_control::compactor;
    use weft_store::{EtcdStore, Kv, StoreError, Txn};

    let etcd = Etcd::start().await;
    let kv = EtcdStore::connect(std::slice::from_ref(&etcd.client_url))
        .await
        .expect("connect to etcd");
    let write = |n: u32| Txn::new().put(format!("/weft/test/{n}"), n.to_string());
    for n in 0..5 {
        kv.txn(write(n)).await.expect("a write");
    }
    let first = compactor::compact_to(&kv, None)
        .await
        .expect("a first round");
    for n in 5..10 {
        kv.txn(write(n)).await.expect("a write");
    }
    let second = compactor::compact_to(&kv, Some(first))
        .await
        .expect("a second round");
    assert!(second.0 > first.0);

    let too_old = kv
        .watch("/weft/test/", weft_store::Revision(first.0 - 2))
        .next()
        .await;
    assert!(
        matches!(too_old, Some(Err(StoreError::Compacted { .. }))),
        "history before the last round's revision is gone: {too_old:?}"
    );
    let recent = kv.watch("/weft/test/", first).next().await;
    let batch = recent
        .expect("an answer")
        .expect("history after it is kept");
    assert_eq!(
        batch.revision.0,
        first.0 + 1,
        "the first write after the first round"
    );

    // Another server compacting to the same revision changes nothing.
    compactor::compact_to(&kv, Some(first))
        .await
        .expect("compacting again is harmless");
}
