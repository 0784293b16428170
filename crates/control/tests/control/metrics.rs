//! `/metrics`: the endpoint a daemon serves (weft-node's) with the control plane's metrics
//! (weft-control's) and an agent's, scraped over plain HTTP as Prometheus does.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_api::JoinToken;
use weft_node::metrics::{self, AgentMetrics, Registry};

use crate::harness::{
    PATIENCE, Proxy, ServerOptions, TestNode, TestServer, Watcher, eventually, free_port, within,
};

/// `GET path` on the metrics endpoint: the status line, the headers and the body.
async fn scrape(addr: SocketAddr, path: &str) -> (String, String) {
    within(PATIENCE, "a scrape", async {
        let mut tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to /metrics");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.expect("send");
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.expect("read");
        let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
        (head.to_owned(), body.to_owned())
    })
    .await
}

/// The value of the sample `name` (with its labels, as printed), if present.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// The sum of every sample of the labelled metric `name`, whatever its labels; 0 without any.
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|rest| rest.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_serves_the_control_planes_and_agents_metrics() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = TestServer::start(ServerOptions::embedded(dir.path()))
        .await
        .expect("the server starts");
    let agent = AgentMetrics::new();
    let mut registry = Registry::default();
    server.metrics.register(&mut registry);
    agent.register(&mut registry);
    metrics::register_process(&mut registry);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let listener = metrics::bind(addr).await.expect("bind /metrics");
    let serving = tokio::spawn(metrics::serve(
        listener,
        Arc::new(registry),
        weft_node::health::Readiness::default(),
    ));

    // Two nodes join, one machine is refused its name, a wrong token is refused, one node
    // watches, and the other is deleted.
    let a = TestNode::new("node-a", 1);
    let b = TestNode::new("node-b", 2);
    let (_, source) = a
        .join(&[&server.url], &server.token)
        .await
        .expect("a joins");
    b.join(&[&server.url], &server.token)
        .await
        .expect("b joins");
    let impostor = TestNode::new("node-a", 3);
    impostor
        .register(&server.url, &server.token, &impostor.request())
        .await
        .expect_err("refused");
    let hash = server.token.ca_hash.clone().expect("a K10 token");
    b.register(
        &server.url,
        &JoinToken::server(&hash, "wrong"),
        &b.request(),
    )
    .await
    .expect_err("refused");
    let mut watcher = Watcher::spawn(source);
    watcher
        .until("both leases", PATIENCE, |l| l.len() == 2)
        .await;
    eventually("the watch", || {
        server
            .seen()
            .iter()
            .any(|s| s.request.starts_with("GET /v1-weft/leases?watch="))
    })
    .await;
    server
        .admin()
        .delete_node(&server.url, "node-b")
        .await
        .expect("deleted");
    watcher
        .until("node-b to go", PATIENCE, |l| l.len() == 1)
        .await;

    let (head, text) = scrape(addr, "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-type: {}", metrics::CONTENT_TYPE)),
        "{head}"
    );
    for (name, value) in [
        ("weft_server_nodes", 1.0),
        ("weft_server_leases", 1.0),
        ("weft_server_lease_watchers", 1.0),
        (
            "weft_server_registrations_total{result=\"unauthorized\"}",
            1.0,
        ),
        (
            "weft_server_registrations_total{result=\"password_rejected\"}",
            1.0,
        ),
        ("weft_server_node_deletions_total", 1.0),
        ("weft_server_tunnel_sessions", 0.0),
        ("weft_server_lease_watch_lagged_total", 0.0),
        (
            "weft_server_registrations_total{result=\"bad_request\"}",
            0.0,
        ),
        ("weft_server_registrations_total{result=\"error\"}", 0.0),
        ("weft_agent_peers", 0.0),
        ("weft_agent_reconciles_total{result=\"ok\"}", 0.0),
        ("weft_agent_reconciles_total{result=\"error\"}", 0.0),
        ("weft_agent_lease_updates_total{kind=\"snapshot\"}", 0.0),
        ("weft_agent_tunnel_sessions", 0.0),
    ] {
        assert_eq!(sample(&text, name), Some(value), "{name} in:\n{text}");
    }
    assert_eq!(sum(&text, "weft_agent_lease_watch_reconnects_total"), 0.0);
    let ok = sample(&text, "weft_server_registrations_total{result=\"ok\"}").unwrap_or(0.0);
    assert!(ok >= 2.0, "ok registrations: {ok}");
    let revision = sample(&text, "weft_server_lease_hub_revision").unwrap_or(0.0);
    assert!(revision > 0.0, "the hub's revision: {revision}");
    assert!(sample(&text, "weft_server_store_revision").is_some());
    // Every event the watcher read (two joins and a deletion) was timed on its way out.
    let delivered = sample(&text, "weft_server_lease_event_delivery_seconds_count").unwrap_or(0.0);
    assert!(delivered >= 1.0, "delivered events: {delivered}");
    for declared in [
        "# TYPE weft_server_lease_event_delivery_seconds histogram",
        "# UNIT weft_server_lease_event_delivery_seconds seconds",
        "# TYPE weft_server_registrations counter",
        "# TYPE weft_agent_reconcile_duration_seconds histogram",
        "# TYPE weft_agent_reconciles counter",
        "# TYPE weft_agent_lease_updates counter",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_open_fds gauge",
    ] {
        assert!(
            text.lines().any(|l| l == declared),
            "{declared} in:\n{text}"
        );
    }
    assert!(sample(&text, "process_resident_memory_bytes").unwrap_or(0.0) > 0.0);
    assert_eq!(text.lines().last(), Some("# EOF"));

    let (head, _) = scrape(addr, "/other").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    serving.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_source_counts_its_reconnects() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let port = free_port();
    let proxy = Proxy::start(port).await;
    let server = TestServer::start(ServerOptions {
        port,
        advertise_port: Some(proxy.port),
        ..ServerOptions::embedded(dir.path())
    })
    .await
    .expect("the server starts");
    let agent = AgentMetrics::new();
    let mut registry = Registry::default();
    agent.register(&mut registry);
    let node = TestNode::new("node-a", 1);
    let source = node
        .source(&[&server.url], &server.token)
        .with_metrics(agent.clone());
    let (_, source) = node.join_with(source).await.expect("joins");
    let mut watcher = Watcher::spawn(source);
    watcher.until("the lease", PATIENCE, |l| l.len() == 1).await;
    assert_eq!(
        sum(
            &metrics::encode(&registry),
            "weft_agent_lease_watch_reconnects_total"
        ),
        0.0
    );
    // Cut until the agent has noticed at least once (it may be between requests).
    within(PATIENCE, "a counted reconnect", async {
        loop {
            proxy.cut();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let text = metrics::encode(&registry);
            if sum(&text, "weft_agent_lease_watch_reconnects_total") >= 1.0 {
                return;
            }
        }
    })
    .await;
}
