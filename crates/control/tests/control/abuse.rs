//! Hostile clients against the real server: slow clients that never finish their headers are
//! closed within the header deadline, and a connection flood from one address stops at the
//! per-address cap, while an agent from another address joins and watches as usual; an agent
//! whose first server accepts and never answers moves on to the next within 15 s.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use weft_api::http::ServeLimits;

use crate::harness::{PATIENCE, ServerOptions, TestNode, TestServer, Watcher, mac, within};

/// Where the hostile clients come from; the agent comes from 127.0.0.1.
const HOSTILE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// `per_address` connections from one address; handshakes and headers within `deadline`.
fn limits(per_address: usize, deadline: Duration) -> ServeLimits {
    ServeLimits {
        max_connections: 1_000,
        max_connections_per_address: per_address,
        handshake_timeout: deadline,
        header_read_timeout: deadline,
        idle_timeout: Duration::from_secs(6),
    }
}

async fn server(dir: &std::path::Path, limits: ServeLimits) -> TestServer {
    TestServer::start(ServerOptions {
        limits,
        // Watches stay busier than the idle deadline, as with the real 10 s and 90 s.
        bookmark_interval: Duration::from_secs(1),
        ..ServerOptions::embedded(dir)
    })
    .await
    .expect("the server starts")
}

/// A TCP connection to the server from [`HOSTILE`].
async fn hostile_tcp(server: &TestServer) -> TcpStream {
    let port: u16 = server
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port in the URL");
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from((HOSTILE, 0)))
        .expect("bind 127.0.0.2");
    socket
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .expect("connect")
}

/// A slow client: a TLS connection that sends half a request's headers and waits.
async fn slow_client(server: &TestServer) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = hostile_tcp(server).await;
    let config = weft_api::tls::client_config(&server.ca_pem, None).expect("client TLS");
    let mut tls = TlsConnector::from(config)
        .connect(ServerName::try_from("127.0.0.1").expect("a name"), tcp)
        .await
        .expect("a TLS handshake");
    tls.write_all(b"GET /cacerts HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("half a request");
    tls
}

/// Resolves when the server closed `stream`.
async fn closed<S: AsyncRead + Unpin>(mut stream: S) {
    let mut buf = [0u8; 256];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

/// The control plane's metrics as `/metrics` prints them.
fn scrape(server: &TestServer) -> String {
    let mut registry = Registry::default();
    server.metrics.register(&mut registry);
    let mut text = String::new();
    encode(&mut text, &registry).expect("encode the metrics");
    text
}

/// A node joins from 127.0.0.1 and watches; another node's registration reaches the watch.
async fn an_agent_joins_and_watches(server: &TestServer) {
    let node = TestNode::new("node-a", 1);
    let (_, source) = within(
        PATIENCE,
        "node-a's join",
        node.join(&[&server.url], &server.token),
    )
    .await
    .expect("node-a joins");
    let mut watcher = Watcher::spawn(source);
    watcher
        .until("node-a's lease", PATIENCE, |l| l.contains_key("node-a"))
        .await;
    let other = TestNode::new("node-b", 2);
    other
        .register(&server.url, &server.token, &other.request_with_mac(mac(7)))
        .await
        .expect("node-b registers");
    watcher
        .until("node-b's lease", PATIENCE, |l| l.contains_key("node-b"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_closed_within_the_header_deadline_while_an_agent_joins() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = server(dir.path(), limits(1_000, Duration::from_secs(2))).await;
    let mut slow = Vec::new();
    for _ in 0..60 {
        slow.push(slow_client(&server).await);
    }
    let sent = Instant::now();
    let all_closed = tokio::spawn(futures::future::join_all(slow.into_iter().map(closed)));
    an_agent_joins_and_watches(&server).await;
    // The header deadline (2 s) from the handshake, with room for a loaded machine.
    let waited = tokio::time::timeout(Duration::from_secs(6), all_closed).await;
    assert!(
        waited.is_ok(),
        "60 slow clients were still connected {:?} after their half requests",
        sent.elapsed()
    );
    let metrics = scrape(&server);
    assert!(
        metrics.contains("weft_server_connections_timed_out_total{deadline=\"header\"} 60"),
        "/metrics counts the 60 slow clients: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_stops_at_its_cap_and_others_are_served() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // Deadlines longer than the test: the flood is held while the agent joins.
    let server = server(dir.path(), limits(20, PATIENCE)).await;
    let mut flood = Vec::new();
    for _ in 0..100 {
        flood.push(hostile_tcp(&server).await);
    }
    // 80 are closed at once; 20 are held.
    let outcomes = futures::future::join_all(flood.into_iter().map(|mut tcp| async move {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => None,
            Ok(Ok(_)) => panic!("the server sent bytes before a TLS ClientHello"),
            Err(_) => Some(tcp),
        }
    }))
    .await;
    let held: Vec<TcpStream> = outcomes.into_iter().flatten().collect();
    assert_eq!(held.len(), 20, "connections held from one address");
    an_agent_joins_and_watches(&server).await;
    let metrics = scrape(&server);
    assert!(
        metrics.contains(
            "weft_server_connections_refused_total{reason=\"max_connections_per_address\"} 80"
        ),
        "/metrics counts the 80 refused connections: {metrics}"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_fails_over_from_a_server_that_accepts_and_never_answers_within_15_s() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = TestServer::start(ServerOptions::embedded(dir.path()))
        .await
        .expect("the server starts");
    let black_hole = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let dead = format!(
        "https://127.0.0.1:{}",
        black_hole.local_addr().expect("an address").port()
    );
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = black_hole.accept().await {
            held.push(tcp);
        }
    });
    let node = TestNode::new("node-a", 1);
    let started = Instant::now();
    let joined = tokio::time::timeout(
        Duration::from_secs(15),
        node.join(&[&dead, &server.url], &server.token),
    )
    .await;
    let Ok(joined) = joined else {
        panic!("the agent was still waiting on the silent server after 15 s");
    };
    let (_, source) = joined.expect("node-a joins through the second server");
    assert_eq!(source.server(), server.url, "the agent moved on");
    assert!(started.elapsed() < Duration::from_secs(15));
    holding.abort();
}
