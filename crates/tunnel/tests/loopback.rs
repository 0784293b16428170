//! Real servers and agents on loopback, over TLS with the cluster CA: a CONNECT client reaches a
//! target through an agent's tunnel; dials the agent refuses, unknown nodes and nodes without a
//! tunnel are `502`s that say why; no node certificate means no tunnel and only the
//! kube-apiserver's certificate opens a CONNECT; an agent reconnects after its server restarts,
//! with the certificate it holds by then; a node holds one session, the newest.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use weft_api::pki::{CertifiedKey, ClusterCa};
use weft_api::tls;
use weft_tunnel::agent::{AgentDialer, AgentTunnels, Backoff};
use weft_tunnel::policy::{Authorizer, EgressSelectorMode, NodeRoute, RoutingTable};
use weft_tunnel::proto::Config;
use weft_tunnel::server::TunnelServer;
use weft_tunnel::transport::websocket;

const NODE: &str = "agent-1";

struct Cluster {
    ca: ClusterCa,
    server_cert: CertifiedKey,
    server: TunnelServer,
    addr: SocketAddr,
    serve: JoinHandle<()>,
}

impl Cluster {
    /// A server on a free loopback port, routing `target_port` on 127.0.0.1 to `agent-1`'s kubelet.
    async fn start(target_port: u16) -> Cluster {
        Cluster::start_with(target_port, Config::default()).await
    }

    /// [`Cluster::start`] with the server's sessions on `config`.
    async fn start_with(target_port: u16, config: Config) -> Cluster {
        let ca = ClusterCa::generate().expect("a CA");
        let server_cert = ca.issue_server(&[], &[]).expect("a server certificate");
        let routes = RoutingTable {
            mode: EgressSelectorMode::Agent,
            local_node: Some("server-0".to_owned()),
            nodes: vec![NodeRoute {
                name: NODE.to_owned(),
                addresses: vec!["127.0.0.1".parse().expect("ip")],
                kubelet_port: target_port,
                pod_cidrs: Vec::new(),
                pods: Vec::new(),
            }],
        };
        let server = TunnelServer::new(config, routes);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let serve = serve(&ca, &server_cert, &server, listener);
        Cluster {
            ca,
            server_cert,
            server,
            addr,
            serve,
        }
    }

    /// Tunnels for `agent-1`, allowing the kubelet port `allowed_port` on loopback.
    fn agent(&self, allowed_port: u16) -> AgentTunnels {
        self.agent_with(allowed_port, Config::default())
    }

    /// [`Cluster::agent`] with the agent's session on `config`.
    fn agent_with(&self, allowed_port: u16, config: Config) -> AgentTunnels {
        let node = self.ca.issue_node(NODE).expect("a node certificate");
        let tls = tls::client_config(self.ca.cert_pem(), Some(&node)).expect("client tls");
        let dialer = AgentDialer::new(Authorizer::new(EgressSelectorMode::Agent, allowed_port));
        let backoff = Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
        };
        let tunnels = AgentTunnels::new(tls, Arc::new(dialer), config, backoff);
        tunnels.set_servers(&[self.addr.to_string()]);
        tunnels
    }

    /// Waits until the server has a tunnel from `agent-1`.
    async fn wait_for_tunnel(&self) {
        for _ in 0..500 {
            if self.server.connected_nodes() == [NODE] {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("agent-1's tunnel never came up");
    }

    /// Waits until the server has no tunnel.
    async fn wait_for_no_tunnel(&self) {
        for _ in 0..500 {
            if self.server.connected_nodes().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("agent-1's tunnel never went down");
    }

    /// Sends `CONNECT target` with `identity`'s certificate; returns the status line's code and
    /// the connection, past the response head.
    async fn connect(
        &self,
        target: &str,
        identity: Option<&CertifiedKey>,
    ) -> (u16, String, impl AsyncRead + AsyncWrite + Unpin + use<>) {
        let tls = tls::client_config(self.ca.cert_pem(), identity).expect("client tls");
        let answer = weft_tunnel::testing::connect(self.addr, "localhost", tls, target).await;
        (answer.status, answer.body, answer.conn)
    }

    /// The kube-apiserver's client certificate, the one CONNECT takes.
    fn apiserver(&self) -> CertifiedKey {
        self.ca
            .issue_kube_apiserver()
            .expect("a kube-apiserver certificate")
    }
}

fn serve(
    ca: &ClusterCa,
    cert: &CertifiedKey,
    server: &TunnelServer,
    listener: TcpListener,
) -> JoinHandle<()> {
    let config = tls::server_config(ca.cert_pem(), cert).expect("server tls");
    tokio::spawn(weft_api::http::serve(
        listener,
        config,
        Arc::new(server.clone()),
    ))
}

/// An echo server on loopback; returns its port.
async fn echo() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut reader, mut writer) = conn.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
                let _ = writer.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_reaches_the_target_through_the_agents_tunnel() {
    let port = echo().await;
    let cluster = Cluster::start(port).await;
    let _agent = cluster.agent(port);
    cluster.wait_for_tunnel().await;

    let (status, body, mut conn) = cluster
        .connect(&format!("127.0.0.1:{port}"), Some(&cluster.apiserver()))
        .await;
    assert_eq!(status, 200, "{body}");
    // 4 MiB there and back, written and read concurrently.
    let data: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (mut reader, mut writer) = tokio::io::split(&mut conn);
    let sent = data.clone();
    let write = async move {
        writer.write_all(&sent).await.expect("write");
        writer.shutdown().await.expect("shutdown");
    };
    let read = async {
        let mut back = Vec::new();
        reader.read_to_end(&mut back).await.expect("read");
        back
    };
    let ((), back) = tokio::join!(write, read);
    assert!(back == data, "the echo came back whole and in order");

    // Also by node name: the agent dials its kubelet on loopback.
    let (status, body, mut conn) = cluster
        .connect(&format!("{NODE}:{port}"), Some(&cluster.apiserver()))
        .await;
    assert_eq!(status, 200, "{body}");
    conn.write_all(b"ping").await.expect("write");
    let mut pong = [0u8; 4];
    conn.read_exact(&mut pong).await.expect("read");
    assert_eq!(&pong, b"ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_502s_that_say_why() {
    let port = echo().await;
    let cluster = Cluster::start(port).await;
    let apiserver = cluster.apiserver();

    // No tunnel from agent-1 yet.
    let (status, body, _) = cluster
        .connect(&format!("127.0.0.1:{port}"), Some(&apiserver))
        .await;
    assert_eq!(status, 502);
    assert!(body.contains("no tunnel to node agent-1"), "{body}");
    let (status, body, _) = cluster.connect("agent-9:10250", Some(&apiserver)).await;
    assert_eq!(status, 502);
    assert!(body.contains("unknown node agent-9"), "{body}");

    // The agent allows another port than the one the server routes: it refuses the dial, and
    // only that stream fails.
    let _agent = cluster.agent(port + 1);
    cluster.wait_for_tunnel().await;
    let (status, body, _) = cluster
        .connect(&format!("127.0.0.1:{port}"), Some(&apiserver))
        .await;
    assert_eq!(status, 502);
    assert!(body.contains("does not allow"), "{body}");
    assert_eq!(cluster.server.connected_nodes(), [NODE]);

    // Direct dials to a closed port fail with the OS's reason.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let (status, body, _) = cluster
        .connect(&format!("127.0.0.1:{closed_port}"), Some(&apiserver))
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("refused"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_certificate_is_required() {
    let port = echo().await;
    let cluster = Cluster::start(port).await;
    let url = format!(
        "wss://{}{}",
        cluster.addr,
        weft_tunnel::server::CONNECT_PATH
    );

    // No client certificate, the kube-apiserver's or the admin's: no tunnel.
    let admin = cluster.ca.issue_admin().expect("an admin certificate");
    for identity in [None, Some(cluster.apiserver()), Some(admin.clone())] {
        let tls = tls::client_config(cluster.ca.cert_pem(), identity.as_ref()).expect("tls");
        let error = websocket::connect(&url, tls)
            .await
            .expect_err("no tunnel without a node certificate");
        assert!(
            error.to_string().contains("401") || error.to_string().contains("403"),
            "{error}"
        );
    }
    // No certificate, a node's or the admin's: no CONNECT; the kube-apiserver's: CONNECT.
    let _agent = cluster.agent(port);
    cluster.wait_for_tunnel().await;
    let node = cluster.ca.issue_node(NODE).expect("node cert");
    let target = format!("127.0.0.1:{port}");
    let (status, _, _) = cluster.connect(&target, None).await;
    assert_eq!(status, 401);
    for refused in [&node, &admin] {
        let (status, body, _) = cluster.connect(&target, Some(refused)).await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("client-kube-apiserver.crt"), "{body}");
    }
    let (status, body, _) = cluster.connect(&target, Some(&cluster.apiserver())).await;
    assert_eq!(status, 200, "{body}");
    // A certificate of another CA is no identity at all.
    let other = ClusterCa::generate().expect("CA");
    let tls = tls::client_config(
        cluster.ca.cert_pem(),
        Some(&other.issue_node(NODE).expect("cert")),
    )
    .expect("tls");
    assert!(websocket::connect(&url, tls).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_tunnel_uses_the_certificate_set_last() {
    let port = echo().await;
    let cluster = Cluster::start(port).await;
    let agent = cluster.agent(port);
    cluster.wait_for_tunnel().await;
    // A certificate the server refuses (another CA's) is set; the live tunnel goes on.
    let stranger = ClusterCa::generate()
        .expect("a CA")
        .issue_node(NODE)
        .expect("a certificate");
    let refused = tls::client_config(cluster.ca.cert_pem(), Some(&stranger)).expect("tls");
    agent.set_tls(refused);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cluster.server.connected_nodes(), [NODE]);

    // Once the server ends it, the tunnel reconnects with that certificate: refused.
    cluster.server.close_all("the old certificate was revoked");
    cluster.wait_for_no_tunnel().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(cluster.server.connected_nodes().is_empty());

    // A renewed certificate of the cluster: the next attempt connects.
    let renewed = cluster.ca.issue_node(NODE).expect("a node certificate");
    agent.set_tls(tls::client_config(cluster.ca.cert_pem(), Some(&renewed)).expect("tls"));
    cluster.wait_for_tunnel().await;
    let (status, body, _) = cluster
        .connect(&format!("127.0.0.1:{port}"), Some(&cluster.apiserver()))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reconnects_after_its_server_restarts() {
    let port = echo().await;
    let cluster = Cluster::start(port).await;
    let agent = cluster.agent(port);
    cluster.wait_for_tunnel().await;
    // The server sees the session before the agent's side has recorded it.
    for _ in 0..500 {
        if !agent.connected().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(agent.connected(), [cluster.addr.to_string()]);

    // The server goes away, tunnels and all.
    cluster.serve.abort();
    cluster.server.close_all("restarting");
    for _ in 0..500 {
        if agent.connected().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        agent.connected().is_empty(),
        "the agent saw its tunnel close"
    );

    // A new server process on the same address.
    let listener = TcpListener::bind(cluster.addr).await.expect("rebind");
    let server = TunnelServer::new(Config::default(), RoutingTable::default());
    let restarted = Cluster {
        serve: serve(&cluster.ca, &cluster.server_cert, &server, listener),
        server,
        ..cluster
    };
    restarted.server.set_routes(RoutingTable {
        mode: EgressSelectorMode::Agent,
        local_node: None,
        nodes: vec![NodeRoute {
            name: NODE.to_owned(),
            addresses: vec!["127.0.0.1".parse().expect("ip")],
            kubelet_port: port,
            pod_cidrs: Vec::new(),
            pods: Vec::new(),
        }],
    });
    restarted.wait_for_tunnel().await;
    let (status, body, mut conn) = restarted
        .connect(&format!("127.0.0.1:{port}"), Some(&restarted.apiserver()))
        .await;
    assert_eq!(status, 200, "{body}");
    conn.write_all(b"again").await.expect("write");
    let mut back = [0u8; 5];
    conn.read_exact(&mut back).await.expect("read");
    assert_eq!(&back, b"again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_stalls_only_its_own_stream() {
    let port = echo().await;
    let cluster = Cluster::start(port).await;
    let _agent = cluster.agent(port);
    cluster.wait_for_tunnel().await;
    let apiserver = cluster.apiserver();
    let target = format!("127.0.0.1:{port}");

    // One client sends 128 MiB to the echo target and never reads the echo: once the socket
    // buffers and its stream's windows are full, it stalls.
    let (status, _, stalled) = cluster.connect(&target, Some(&apiserver)).await;
    assert_eq!(status, 200);
    let (_stalled_reader, mut stalled_writer) = tokio::io::split(stalled);
    let stuck = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..2048 {
            if stalled_writer.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!stuck.is_finished(), "the stalled client's writes block");

    // Meanwhile another stream on the same tunnel moves 8 MiB both ways.
    let (status, body, conn) = cluster.connect(&target, Some(&apiserver)).await;
    assert_eq!(status, 200, "{body}");
    let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let (mut reader, mut writer) = tokio::io::split(conn);
    let sent = data.clone();
    let write = async move {
        writer.write_all(&sent).await.expect("write");
        writer.shutdown().await.expect("shutdown");
    };
    let read = async {
        let mut back = Vec::new();
        reader.read_to_end(&mut back).await.expect("read");
        back
    };
    let ((), back) =
        tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(write, read) })
            .await
            .expect("the other stream is not blocked");
    assert!(back == data, "the other stream's bytes came back whole");
    assert_eq!(cluster.server.connected_nodes(), [NODE]);
    stuck.abort();
}

/// A sink on loopback: reads everything, then answers `done`; returns its port.
async fn sink() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while conn.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                let _ = conn.write_all(b"done").await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_share_a_small_session_buffer_and_all_finish() {
    let port = sink().await;
    // Room for four streams' windows on each side: the others wait for credit.
    let config = Config {
        max_session_buffer: 4 * 256 * 1024,
        ..Config::default()
    };
    let cluster = Cluster::start_with(port, config.clone()).await;
    let _agent = cluster.agent_with(port, config);
    cluster.wait_for_tunnel().await;
    let apiserver = cluster.apiserver();
    let target = format!("127.0.0.1:{port}");
    let (cluster, target, apiserver) = (&cluster, &target, &apiserver);
    let streams = (0..200).map(|_| async move {
        let (status, body, conn) = cluster.connect(target, Some(apiserver)).await;
        assert_eq!(status, 200, "{body}");
        let (mut reader, mut writer) = tokio::io::split(conn);
        let chunk = vec![1u8; 64 * 1024];
        for _ in 0..4 {
            writer.write_all(&chunk).await.expect("write");
        }
        writer.shutdown().await.expect("shutdown");
        let mut done = [0u8; 4];
        reader
            .read_exact(&mut done)
            .await
            .expect("the sink's answer");
        assert_eq!(&done, b"done");
    });
    tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(streams))
        .await
        .expect("every stream finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_holds_one_session_the_newest() {
    let port = echo().await;
    let cluster = Cluster::start(port).await;
    let node = cluster.ca.issue_node(NODE).expect("a node certificate");
    let tls = tls::client_config(cluster.ca.cert_pem(), Some(&node)).expect("client tls");
    let url = format!(
        "wss://{}{}",
        cluster.addr,
        weft_tunnel::server::CONNECT_PATH
    );
    // The same node opens session after session, keeping each.
    let mut connections = Vec::new();
    for _ in 0..5 {
        let socket = websocket::connect(&url, tls.clone())
            .await
            .expect("the tunnel opens");
        let (connection, driver) = weft_tunnel::transport::Connection::new(
            socket,
            weft_tunnel::proto::Role::Agent,
            Config::default(),
            None,
        )
        .expect("a valid config");
        tokio::spawn(driver);
        connections.push(connection);
        // The server registers each before the next arrives.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..500 {
        if cluster.server.stats().sessions == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        cluster.server.stats().sessions,
        1,
        "sessions the node holds"
    );
    let newest = connections.pop().expect("five connections");
    assert!(!newest.is_closed(), "the newest session lives");
    for older in &connections {
        for _ in 0..500 {
            if older.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(older.is_closed(), "an older session was replaced");
    }
}
