//! Lease watches: changes and deletions reach every watcher within a second, a watch resumes
//! after a reconnect without missing or repeating an event, and a silent watch is abandoned.

use std::time::{Duration, Instant};

use weft_api::ApiError;
use weft_node::LeaseUpdate;

use crate::harness::{
    PATIENCE, Proxy, ServerOptions, TestNode, TestServer, Watcher, eventually, mac, mac_of, within,
};

/// A server with `n` joined nodes (`node-1`..) and a watcher for each, every one past its
/// first snapshot.
async fn cluster(n: u8) -> (tempfile::TempDir, TestServer, Vec<TestNode>, Vec<Watcher>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = TestServer::start(ServerOptions::embedded(dir.path()))
        .await
        .expect("the server starts");
    let nodes: Vec<TestNode> = (1..=n)
        .map(|i| TestNode::new(&format!("node-{i}"), i))
        .collect();
    let mut watchers = Vec::new();
    for node in &nodes {
        let (_, source) = node
            .join(&[&server.url], &server.token)
            .await
            .expect("joins");
        watchers.push(Watcher::spawn(source));
    }
    for watcher in &mut watchers {
        watcher
            .until("every lease", PATIENCE, |l| l.len() == usize::from(n))
            .await;
    }
    (dir, server, nodes, watchers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_change_reaches_every_watcher_within_a_second() {
    let (_dir, server, nodes, mut watchers) = cluster(5).await;
    // node-1's own agent would register again, with its own MAC, once its certificate is
    // revoked: these changes come from another process of node-1, so its agent is stopped.
    drop(watchers.remove(0));
    for round in 1..=3u8 {
        let sent = Instant::now();
        let changed = nodes[0]
            .register(
                &server.url,
                &server.token,
                &nodes[0].request_with_mac(mac(round)),
            )
            .await
            .expect("node-1 re-registers with a new MAC");
        assert_eq!(mac_of(&changed.lease), Some(mac(round)));
        for watcher in &mut watchers {
            let (at, update) = watcher.next(PATIENCE).await;
            assert_eq!(update, LeaseUpdate::Put(changed.lease.clone()));
            let took = at.duration_since(sent);
            assert!(
                took < Duration::from_secs(1),
                "round {round}: took {took:?}"
            );
        }
    }
}

/// Agents keep the peer that claimed a value first, by its lease's creation revision: every
/// watcher learns it, from the snapshot and from the watch, and a re-registration keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_watcher_learns_when_each_lease_was_created() {
    let (_dir, server, nodes, mut watchers) = cluster(2).await;
    // node-1's watcher learnt node-2's lease from its watch, node-2's from its snapshot.
    let created = |watcher: &Watcher, node: &str| watcher.leases[node].created_revision;
    let (first, second) = (
        created(&watchers[0], "node-1"),
        created(&watchers[0], "node-2"),
    );
    assert!(
        0 < first && first < second,
        "node-1 {first}, node-2 {second}"
    );
    assert_eq!(created(&watchers[1], "node-1"), first);
    assert_eq!(created(&watchers[1], "node-2"), second);

    // node-1's own agent is stopped before another process of it registers (see above).
    drop(watchers.remove(0));
    let changed = nodes[0]
        .register(
            &server.url,
            &server.token,
            &nodes[0].request_with_mac(mac(7)),
        )
        .await
        .expect("node-1 re-registers with a new MAC");
    assert_eq!(changed.lease.created_revision, first);
    for watcher in &mut watchers {
        let (_, update) = watcher.next(PATIENCE).await;
        assert_eq!(update, LeaseUpdate::Put(changed.lease.clone()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_node_is_removed_from_every_watcher() {
    let (_dir, server, nodes, mut watchers) = cluster(3).await;
    let admin = server.admin();
    // node-2 is taken out of service first: a running agent would register again.
    drop(watchers.remove(1));
    let sent = Instant::now();
    admin
        .delete_node(&server.url, "node-2")
        .await
        .expect("the admin deletes node-2");
    for watcher in &mut watchers {
        let (at, update) = watcher.next(PATIENCE).await;
        assert_eq!(update, LeaseUpdate::Delete("node-2".to_owned()));
        assert!(at.duration_since(sent) < Duration::from_secs(1));
        assert!(!watcher.leases.contains_key("node-2"));
    }
    let listed: Vec<String> = admin
        .list_nodes(&server.url)
        .await
        .expect("nodes")
        .iter()
        .map(|n| n.name.clone())
        .collect();
    assert_eq!(listed, ["node-1", "node-3"]);

    let missing = admin
        .delete_node(&server.url, "node-2")
        .await
        .expect_err("node-2 is gone");
    assert!(
        matches!(missing, ApiError::Rejected { status: 404, .. }),
        "{missing}"
    );

    // Deletion forgot the node password: the name can be registered again (by any machine),
    // and watchers see the new lease.
    let (lease, _) = TestNode::new("node-2", 9)
        .join(&[&server.url], &server.token)
        .await
        .expect("node-2 joins again");
    for watcher in &mut watchers {
        let (_, update) = watcher.next(PATIENCE).await;
        assert_eq!(update, LeaseUpdate::Put(lease.clone()));
    }
    drop(nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_after_a_reconnect_without_missing_or_repeating() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let port = crate::harness::free_port();
    let proxy = Proxy::start(port).await;
    let server = TestServer::start(ServerOptions {
        port,
        advertise_port: Some(proxy.port),
        ..ServerOptions::embedded(dir.path())
    })
    .await
    .expect("the server starts");
    let direct = format!("https://127.0.0.1:{port}");
    let mover = TestNode::new("mover", 1);
    mover
        .join(&[&direct], &server.token)
        .await
        .expect("mover joins");
    let watching = TestNode::new("watching", 2);
    let (_, source) = watching
        .join(&[&server.url], &server.token)
        .await
        .expect("the watcher joins through the proxy");
    assert_eq!(source.servers(), std::slice::from_ref(&server.url));
    let mut watcher = Watcher::spawn(source);
    watcher
        .until("both leases", PATIENCE, |l| l.len() == 2)
        .await;
    let snapshots = watcher.log.len();

    let mut expected = Vec::new();
    let before = proxy.accepted();
    for i in 1..=6u8 {
        let changed = mover
            .register(&direct, &server.token, &mover.request_with_mac(mac(i)))
            .await
            .expect("mover changes its MAC");
        expected.push(LeaseUpdate::Put(changed.lease));
        if i % 2 == 1 {
            // Drop the watch mid-stream; the change may or may not have gone out. The next
            // change happens while the agent is not connected.
            let cut_at = proxy.accepted();
            proxy.cut();
            if i == 3 {
                // Once, let it reconnect before the next change.
                within(PATIENCE, "the watch to reconnect", async {
                    while proxy.accepted() == cut_at {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
                .await;
            }
        }
    }
    watcher
        .until("mover's last MAC", PATIENCE, |l| {
            l.get("mover").and_then(mac_of) == Some(mac(6))
        })
        .await;
    let extra = watcher.drain(Duration::from_millis(300)).await;
    assert_eq!(extra, [], "events after the last change");
    assert_eq!(
        watcher.log[snapshots..],
        expected,
        "after the first snapshot, exactly the six changes in order (no relist)"
    );
    // The first cut may come while the agent is still connecting after an earlier one.
    assert!(
        proxy.accepted() >= before + 2,
        "the watch reconnected through the proxy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_watch_is_abandoned_after_three_bookmark_intervals() {
    // Short enough for a quick test, long enough that a busy machine does not stall a
    // healthy watch for three of them.
    let bookmarks = Duration::from_millis(250);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let port = crate::harness::free_port();
    let proxy = Proxy::start(port).await;
    let server = TestServer::start(ServerOptions {
        port,
        advertise_port: Some(proxy.port),
        bookmark_interval: bookmarks,
        ..ServerOptions::embedded(dir.path())
    })
    .await
    .expect("the server starts");
    let direct = format!("https://127.0.0.1:{port}");
    let mover = TestNode::new("mover", 1);
    mover
        .join(&[&direct], &server.token)
        .await
        .expect("mover joins");
    let watching = TestNode::new("watching", 2);
    let source = watching
        .source(&[&server.url], &server.token)
        .with_idle_timeout(bookmarks * 3);
    let (_, source) = watching.join_with(source).await.expect("joins");
    let mut watcher = Watcher::spawn(source);
    watcher
        .until("both leases", PATIENCE, |l| l.len() == 2)
        .await;

    // Bookmarks keep an idle watch alive: no reconnect in eight bookmark intervals.
    let watches = || {
        server
            .seen()
            .iter()
            .filter(|s| s.request.starts_with("GET /v1-weft/leases?watch="))
            .count()
    };
    eventually("the watch request", || watches() == 1).await;
    let connections = proxy.accepted();
    tokio::time::sleep(bookmarks * 8).await;
    assert_eq!(proxy.accepted(), connections, "an idle watch reconnected");
    assert_eq!(watches(), 1);

    // The path dies without closing the connection; a change happens meanwhile.
    proxy.blackhole();
    let changed = mover
        .register(&direct, &server.token, &mover.request_with_mac(mac(1)))
        .await
        .expect("mover changes its MAC");
    let (_, update) = watcher.next(PATIENCE).await;
    assert_eq!(update, LeaseUpdate::Put(changed.lease));
    assert!(proxy.accepted() > connections, "the watch reconnected");
    assert_eq!(watches(), 2, "one new watch, from the last revision");
    assert_eq!(watcher.drain(Duration::from_millis(300)).await, []);
}
