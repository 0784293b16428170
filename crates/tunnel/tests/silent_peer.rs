//! A tunnel peer that never reads, against a real server on loopback: for 30 s it sends pings and
//! dials each followed by a reset, as fast as a loop of small writes goes, reconnecting whenever
//! the server closes its session, and never reads a byte. The server keeps reading while it
//! can't write, so everything the peer's frames make it queue (dial requests, resets, pongs,
//! refusals) must stay bounded: the test process, which holds the server and the peer and
//! nothing else, must keep its resident set within [`GROWTH_BOUND`] of what it was before.
//!
//! This file holds one test, so its process measures that test alone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use weft_api::pki::ClusterCa;
use weft_api::tls;
use weft_tunnel::policy::{EgressSelectorMode, RoutingTable};
use weft_tunnel::proto::{Config, Frame, ResetCode, StreamId, Target};
use weft_tunnel::server::{CONNECT_PATH, TunnelServer};

/// How long the peer keeps at it.
const ATTACK: Duration = Duration::from_secs(30);

/// How much the process may grow over the attack: the server's bounds hold a session's queued
/// events to 17,408 (16 per allowed stream and 1,024 more), under 2 MiB, and close it past
/// them; the socket buffers are the kernel's. Without the events bound one session takes
/// every round until its write stall ends it, and the process grew by 86 MiB.
const GROWTH_BOUND: u64 = 16 * 1024 * 1024;

/// Rounds of ping, dial and reset in one write.
const ROUNDS_PER_WRITE: u32 = 256;

/// The node the peer claims to be (its certificate's).
const NODE: &str = "agent-1";

/// The process's resident set, in bytes (`/proc/self/statm`).
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("a resident page count");
    pages * 4096
}

/// `frame` as one masked WebSocket binary message from a client (the mask key is zero, which
/// leaves the payload as it is).
fn message(frame: &Frame, out: &mut Vec<u8>) {
    let mut payload = Vec::new();
    frame.encode(&mut payload);
    out.push(0x82);
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len => {
            out.push(0x80 | 126);
            out.extend_from_slice(&u16::try_from(len).expect("a short frame").to_be_bytes());
        }
    }
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&payload);
}

/// Opens a tunnel session with `tls` (`NODE`'s certificate) and returns the connection past the `101`, with a receive
/// buffer of a few kilobytes so that the server's writes stall soon after the peer stops
/// reading.
async fn open_session(
    tls: Arc<ClientConfig>,
    server: SocketAddr,
) -> TlsStream<tokio::net::TcpStream> {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("a small buffer");
    let tcp = socket.connect(server).await.expect("connect");
    let mut stream = TlsConnector::from(tls)
        .connect(ServerName::try_from("localhost").expect("a name"), tcp)
        .await
        .expect("a TLS handshake");
    let upgrade = format!(
        "GET {CONNECT_PATH} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    stream
        .write_all(upgrade.as_bytes())
        .await
        .expect("the upgrade request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.expect("the answer");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "the server did not open the tunnel: {}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Pings, dials and resets on sessions, never reading, until `until`; returns how many sessions
/// it opened and how many rounds it sent.
async fn attack(tls: Arc<ClientConfig>, server: SocketAddr, until: Instant) -> (u32, u64) {
    let target = Target::new("10.0.0.1", 10250).expect("a target");
    let (mut sessions, mut rounds) = (0, 0);
    while Instant::now() < until {
        let mut stream = open_session(tls.clone(), server).await;
        sessions += 1;
        let mut next = 1u32;
        let mut batch = Vec::new();
        while Instant::now() < until {
            batch.clear();
            for _ in 0..ROUNDS_PER_WRITE {
                let stream_id = StreamId(next);
                next += 2;
                message(
                    &Frame::Ping {
                        payload: u64::from(next),
                    },
                    &mut batch,
                );
                message(
                    &Frame::Dial {
                        stream: stream_id,
                        window: 256 * 1024,
                        target: target.clone(),
                    },
                    &mut batch,
                );
                message(
                    &Frame::Reset {
                        stream: stream_id,
                        code: ResetCode::Cancelled,
                    },
                    &mut batch,
                );
            }
            // The server reads on while it can't write, so only its closing the session (or
            // a reader stopped for good) ends a write.
            let written = tokio::time::timeout(Duration::from_secs(10), stream.write_all(&batch));
            if !matches!(written.await, Ok(Ok(()))) {
                break;
            }
            rounds += u64::from(ROUNDS_PER_WRITE);
            tokio::task::yield_now().await;
        }
    }
    (sessions, rounds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_keeps_the_servers_memory_flat() {
    let ca = ClusterCa::generate().expect("a CA");
    let cert = ca.issue_server(&[], &[]).expect("a server certificate");
    let routes = RoutingTable {
        mode: EgressSelectorMode::Agent,
        local_node: Some("server-0".to_owned()),
        nodes: Vec::new(),
    };
    let server = TunnelServer::new(Config::default(), routes);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("an address");
    let config = tls::server_config(ca.cert_pem(), &cert).expect("server TLS");
    let serving = tokio::spawn(weft_api::http::serve(
        listener,
        config,
        Arc::new(server.clone()),
    ));

    // A first session and a second of the attack warm the allocator and the pools up.
    let node = ca.issue_node(NODE).expect("a node certificate");
    let peer = tls::client_config(ca.cert_pem(), Some(&node)).expect("client TLS");
    let warm = attack(peer.clone(), addr, Instant::now() + Duration::from_secs(1)).await;
    assert!(warm.1 > 0, "the warm-up sent nothing");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = resident();

    let attacking = tokio::spawn(attack(peer, addr, Instant::now() + ATTACK));
    let mut peak = before;
    while !attacking.is_finished() {
        peak = peak.max(resident());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (sessions, rounds) = attacking.await.expect("the attack ran");
    let after = resident();
    peak = peak.max(after);
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    assert!(
        rounds > 100_000,
        "the peer sent only {rounds} rounds: too few to test anything"
    );
    assert!(
        peak.saturating_sub(before) <= GROWTH_BOUND,
        "the process grew by {:.1} MiB (bound {:.0} MiB: {:.1} MiB before, {:.1} MiB at most, \
         {:.1} MiB after) while a peer that never reads sent {rounds} rounds over {sessions} \
         session(s)",
        mib(peak.saturating_sub(before)),
        mib(GROWTH_BOUND),
        mib(before),
        mib(peak),
        mib(after)
    );
    serving.abort();
}
