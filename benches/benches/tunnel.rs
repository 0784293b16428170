//! Criterion benches of weft-tunnel: the protocol with no sockets (frame encode and decode,
//! reported in bytes per second through `Throughput::Bytes`; 64 MiB through one stream of an
//! in-memory `Pair`; a 64-byte request/response through it), and the whole tunnel on loopback
//! (64 MiB through HTTP CONNECT -> server -> TLS WebSocket -> agent -> a sink, beside the same
//! 64 MiB over a direct TCP connection to the sink, in the same run).
//!
//! Targets (issue 7): frame encode and decode in GB/s; the in-memory stream far above what
//! loopback TCP gives, so the protocol is never the bottleneck; the loopback tunnel at least
//! half of direct.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio_rustls::TlsConnector;
use weft_api::pki::ClusterCa;
use weft_api::tls;
use weft_tunnel::agent::{AgentDialer, AgentTunnels, Backoff};
use weft_tunnel::pair::Pair;
use weft_tunnel::policy::{Authorizer, EgressSelectorMode, NodeRoute, RoutingTable};
use weft_tunnel::proto::{Config, Frame, StreamId, Target};
use weft_tunnel::server::TunnelServer;

fn frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("tunnel_frame");
    for payload in [64usize, 32 * 1024] {
        let frame = Frame::Data {
            stream: StreamId(2),
            payload: Bytes::from(vec![0x5a; payload]),
        };
        let mut encoded = Vec::new();
        frame.encode(&mut encoded);
        group.throughput(Throughput::Bytes(encoded.len() as u64));

        let mut buf = Vec::with_capacity(encoded.len());
        group.bench_function(format!("encode data {payload} B"), |b| {
            b.iter(|| {
                buf.clear();
                black_box(&frame).encode(&mut buf);
                black_box(buf.len())
            });
        });
        let message = Bytes::from(encoded);
        group.bench_function(format!("decode data {payload} B"), |b| {
            b.iter(|| Frame::decode(black_box(&message)));
        });
    }
    let dial = Frame::Dial {
        stream: StreamId(2),
        window: 256 * 1024,
        target: Target::new("10.42.3.17", 10250).expect("a valid target"),
    };
    let mut encoded = Vec::new();
    dial.encode(&mut encoded);
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    let mut buf = Vec::new();
    group.bench_function("encode dial", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&dial).encode(&mut buf);
            black_box(buf.len())
        });
    });
    let message = Bytes::from(encoded);
    group.bench_function("decode dial", |b| {
        b.iter(|| Frame::decode(black_box(&message)));
    });
    group.finish();
}

fn streams(c: &mut Criterion) {
    const TOTAL: u64 = 64 * 1024 * 1024;
    let mut group = c.benchmark_group("tunnel_pair");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(TOTAL));
    group.bench_function("one stream 64 MiB", |b| {
        b.iter_batched_ref(
            || {
                let mut pair = Pair::default();
                let stream = pair.open("10.0.0.1", 10250);
                (pair, stream)
            },
            |(pair, stream)| assert_eq!(pair.transfer(*stream, TOTAL), TOTAL),
            BatchSize::LargeInput,
        );
    });

    group.sample_size(50);
    group.throughput(Throughput::Elements(1));
    let mut pair = Pair::default();
    let stream = pair.open("10.0.0.1", 10250);
    let request = [0x42u8; 64];
    group.bench_function("64 B request and response", |b| {
        b.iter(|| {
            pair.server.write_available(stream, &request);
            pair.drive();
            let (got, _) = pair.agent.read_available(stream);
            pair.agent.write_available(stream, &got);
            pair.drive();
            let (answer, _) = pair.server.read_available(stream);
            pair.server.events.clear();
            pair.agent.events.clear();
            black_box(answer.len())
        });
    });
    group.finish();
}

/// A server and an agent on loopback with a sink behind the agent.
struct Loopback {
    runtime: Runtime,
    server: SocketAddr,
    sink: u16,
    client_tls: Arc<rustls::ClientConfig>,
    _agent: AgentTunnels,
}

impl Loopback {
    fn start() -> Loopback {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let ca = ClusterCa::generate().expect("a CA");
        let (server, sink, agent) = runtime.block_on(async {
            let sink = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let sink_port = sink.local_addr().expect("addr").port();
            tokio::spawn(async move {
                while let Ok((mut conn, _)) = sink.accept().await {
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        while conn.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                        let _ = conn.write_all(b"done").await;
                    });
                }
            });
            let routes = RoutingTable {
                mode: EgressSelectorMode::Agent,
                local_node: None,
                nodes: vec![NodeRoute {
                    name: "agent-1".to_owned(),
                    addresses: vec!["127.0.0.1".parse().expect("ip")],
                    kubelet_port: sink_port,
                    pod_cidrs: Vec::new(),
                    pods: Vec::new(),
                }],
            };
            let tunnel_server = TunnelServer::new(Config::default(), routes);
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let server = listener.local_addr().expect("addr");
            let cert = ca.issue_server(&[], &[]).expect("cert");
            let server_tls = tls::server_config(ca.cert_pem(), &cert).expect("tls");
            tokio::spawn(weft_api::http::serve(
                listener,
                server_tls,
                Arc::new(tunnel_server.clone()),
            ));
            let node = ca.issue_node("agent-1").expect("cert");
            let agent_tls = tls::client_config(ca.cert_pem(), Some(&node)).expect("tls");
            let dialer = AgentDialer::new(Authorizer::new(EgressSelectorMode::Agent, sink_port));
            let agent = AgentTunnels::new(
                agent_tls,
                Arc::new(dialer),
                Config::default(),
                Backoff::default(),
            );
            agent.set_servers(&[server.to_string()]);
            while tunnel_server.connected_nodes().is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (server, sink_port, agent)
        });
        let egress = ca.issue_egress().expect("cert");
        let client_tls = tls::client_config(ca.cert_pem(), Some(&egress)).expect("tls");
        Loopback {
            runtime,
            server,
            sink,
            client_tls,
            _agent: agent,
        }
    }

    /// Sends `total` bytes to the sink through the tunnel, and waits for its acknowledgement.
    async fn through_tunnel(&self, total: usize) {
        let tcp = TcpStream::connect(self.server).await.expect("connect");
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from("localhost").expect("name");
        let mut conn = TlsConnector::from(self.client_tls.clone())
            .connect(name, tcp)
            .await
            .expect("tls");
        let target = format!("127.0.0.1:{}", self.sink);
        let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
        conn.write_all(request.as_bytes()).await.expect("write");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            conn.read_exact(&mut byte).await.expect("a response");
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 200"), "CONNECT answered 200");
        send_and_wait(conn, total).await;
    }

    /// Sends `total` bytes straight to the sink.
    async fn direct(&self, total: usize) {
        let tcp = TcpStream::connect(("127.0.0.1", self.sink))
            .await
            .expect("connect");
        let _ = tcp.set_nodelay(true);
        send_and_wait(tcp, total).await;
    }
}

async fn send_and_wait(conn: impl AsyncRead + AsyncWrite + Unpin, total: usize) {
    let (mut reader, mut writer) = tokio::io::split(conn);
    let chunk = vec![0x5au8; 32 * 1024];
    let mut sent = 0;
    while sent < total {
        let len = chunk.len().min(total - sent);
        writer.write_all(&chunk[..len]).await.expect("write");
        sent += len;
    }
    writer.shutdown().await.expect("shutdown");
    let mut done = [0u8; 4];
    reader
        .read_exact(&mut done)
        .await
        .expect("the sink's answer");
}

fn loopback(c: &mut Criterion) {
    const TOTAL: usize = 64 * 1024 * 1024;
    let setup = Loopback::start();
    let mut group = c.benchmark_group("tunnel_loopback");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(TOTAL as u64));
    group.bench_function("direct TCP 64 MiB", |b| {
        b.iter(|| setup.runtime.block_on(setup.direct(TOTAL)));
    });
    group.bench_function("CONNECT through the tunnel 64 MiB", |b| {
        b.iter(|| setup.runtime.block_on(setup.through_tunnel(TOTAL)));
    });
    group.finish();
}

criterion_group!(benches, frames, streams, loopback);
criterion_main!(benches);
