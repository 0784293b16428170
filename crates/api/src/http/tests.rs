//! Tests of [`serve`]: a request over TLS reaches the handler with the client's identity; a
//! client that never finishes its handshake, never finishes its headers or lets nothing move is
//! hung up on; a keep-alive connection waits for its next request up to the idle deadline, and
//! that request's headers are held to the header deadline from their first byte; the caps refuse
//! connections at once and leave other addresses served.

use std::time::Duration;

use std::sync::atomic::AtomicUsize;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio_rustls::client::TlsStream;

use super::*;
use crate::pki::{ClientIdentity, ClusterCa};
use crate::tls;

/// Answers every request with the identity of its client.
struct Echo;

impl Handler for Echo {
    fn handle(
        &self,
        _request: Request<Incoming>,
        peer: Peer,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send + '_>> {
        Box::pin(async move {
            let who = match peer.identity {
                Some(ClientIdentity::Node(name)) => format!("node {name}"),
                other => format!("{other:?}"),
            };
            Response::new(full(who))
        })
    }
}

/// Answers `/stall` with a body that never sends a byte, never answers `/never`, and answers
/// the rest with nothing.
struct Staller;

impl Handler for Staller {
    fn handle(
        &self,
        request: Request<Incoming>,
        _peer: Peer,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send + '_>> {
        Box::pin(async move {
            if request.uri().path() == "/never" {
                std::future::pending::<()>().await;
            }
            if request.uri().path() == "/stall" {
                let never = futures::stream::pending::<Result<hyper::body::Frame<Bytes>, _>>();
                Response::new(BodyExt::boxed(http_body_util::StreamBody::new(never)))
            } else {
                Response::new(full(""))
            }
        })
    }
}

/// Counts what [`serve_limited`] reports, by kind.
#[derive(Default)]
struct Tally {
    counts: [AtomicUsize; 5],
}

impl Tally {
    fn index(why: Dropped) -> usize {
        match why {
            Dropped::MaxConnections => 0,
            Dropped::MaxConnectionsPerAddress => 1,
            Dropped::HandshakeTimeout => 2,
            Dropped::HeaderTimeout => 3,
            Dropped::IdleTimeout => 4,
        }
    }

    fn get(&self, why: Dropped) -> usize {
        self.counts[Tally::index(why)].load(Ordering::SeqCst)
    }
}

impl ConnectionObserver for Tally {
    fn dropped(&self, why: Dropped) {
        self.counts[Tally::index(why)].fetch_add(1, Ordering::SeqCst);
    }
}

/// Short deadlines and the given caps.
fn limits(max_connections: usize, per_address: usize) -> ServeLimits {
    ServeLimits {
        max_connections,
        max_connections_per_address: per_address,
        handshake_timeout: Duration::from_millis(300),
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
    }
}

async fn server(limits: ServeLimits) -> (ClusterCa, SocketAddr, Arc<Tally>) {
    server_with(limits, Arc::new(Echo)).await
}

async fn server_with(
    limits: ServeLimits,
    handler: Arc<dyn Handler>,
) -> (ClusterCa, SocketAddr, Arc<Tally>) {
    let ca = ClusterCa::generate().expect("a CA");
    let cert = ca
        .issue_server(&[], &["127.0.0.1".parse().expect("an IP")])
        .expect("a server certificate");
    let config = tls::server_config(ca.cert_pem(), &cert).expect("server TLS");
    let listener = TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let port = listener.local_addr().expect("an address").port();
    let tally = Arc::new(Tally::default());
    tokio::spawn(serve_limited(
        listener,
        config,
        handler,
        limits,
        tally.clone(),
    ));
    (ca, SocketAddr::from(([127, 0, 0, 1], port)), tally)
}

/// A TLS connection to `addr` from the loopback address `from`.
async fn connect_from(ca: &ClusterCa, from: [u8; 4], addr: SocketAddr) -> TlsStream<TcpStream> {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback address");
    let tcp = socket.connect(addr).await.expect("connect");
    let config = tls::client_config(ca.cert_pem(), None).expect("client TLS");
    TlsConnector::from(config)
        .connect(ServerName::try_from("127.0.0.1").expect("a name"), tcp)
        .await
        .expect("a TLS handshake")
}

/// Whether the server closed `stream` within `limit`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read).await.is_ok()
}

/// Sends `GET /` on `stream` and whether a response came back.
async fn answered(stream: &mut TlsStream<TcpStream>) -> bool {
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf)).await,
        Ok(Ok(_)) if buf.starts_with(b"HTTP/1.1 200")
    )
}

#[tokio::test]
async fn a_request_reaches_the_handler_with_its_client() {
    let (ca, addr, _) = server(ServeLimits::default()).await;
    let node = ca.issue_node("node-a").expect("a node certificate");
    let config = tls::client_config(ca.cert_pem(), Some(&node)).expect("client TLS");
    let request = Request::get(format!("https://{addr}/whoami"))
        .body(Full::new(Bytes::new()))
        .expect("a request");
    let response = send(config, &format!("https://{addr}/whoami"), request)
        .await
        .expect("an answer");
    let body = read_body(response.into_body(), 1024).await.expect("a body");
    assert_eq!(&body[..], b"node node-a");
}

#[tokio::test]
async fn a_client_that_never_shakes_hands_is_hung_up_on() {
    let (_ca, addr, tally) = server(limits(100, 100)).await;
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut [0u8; 16])).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the server hung up: {closed:?}"
    );
    assert_eq!(tally.get(Dropped::HandshakeTimeout), 1);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_hung_up_on() {
    let (ca, addr, tally) = server(limits(100, 100)).await;
    let mut slow = connect_from(&ca, [127, 0, 0, 1], addr).await;
    slow.write_all(b"GET /cacerts HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("half a request");
    assert!(
        closed_within(&mut slow, Duration::from_secs(3)).await,
        "a client with half its headers was still connected after 3 s"
    );
    assert_eq!(tally.get(Dropped::HeaderTimeout), 1);
}

#[tokio::test]
async fn a_head_that_comes_in_pieces_or_past_the_read_ahead_is_served() {
    let (ca, addr, tally) = keep_alive_server().await;
    // Byte by byte, within the header deadline.
    let mut slow = connect_from(&ca, [127, 0, 0, 1], addr).await;
    for byte in b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" {
        slow.write_all(&[*byte]).await.expect("a byte");
        slow.flush().await.expect("sent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut status = [0u8; 12];
    slow.read_exact(&mut status).await.expect("an answer");
    assert_eq!(&status, b"HTTP/1.1 200", "a head sent byte by byte");
    // A head longer than what is read ahead of hyper.
    let mut long = connect_from(&ca, [127, 0, 0, 1], addr).await;
    let filler = "a".repeat(2 * HEAD_READ_LIMIT);
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Filler: {filler}\r\n\r\n");
    long.write_all(request.as_bytes())
        .await
        .expect("a long head");
    long.read_exact(&mut status).await.expect("an answer");
    assert_eq!(
        &status,
        b"HTTP/1.1 200",
        "a head of {} bytes",
        request.len()
    );
    assert_eq!(tally.get(Dropped::HeaderTimeout), 0);
}

/// A server ([`Staller`]: empty answers) with a header deadline of 1 s and an idle deadline of
/// 4 s, as Go's 10 s and 90 s.
async fn keep_alive_server() -> (ClusterCa, SocketAddr, Arc<Tally>) {
    let limits = ServeLimits {
        header_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(4),
        ..limits(100, 100)
    };
    server_with(limits, Arc::new(Staller)).await
}

/// Sends `GET /` on `stream` and whether a whole empty response came back, leaving the stream
/// ready for the next request.
async fn answered_whole(stream: &mut TlsStream<TcpStream>) -> bool {
    if stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut response = Vec::new();
    let read = async {
        let mut byte = [0u8; 1];
        while !response.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => response.push(byte[0]),
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    response.starts_with(b"HTTP/1.1 200") && response.ends_with(b"\r\n\r\n")
}

#[tokio::test]
async fn a_keep_alive_connection_idle_past_the_header_deadline_serves_its_next_request() {
    let (ca, addr, tally) = keep_alive_server().await;
    let mut client = connect_from(&ca, [127, 0, 0, 1], addr).await;
    assert!(
        answered_whole(&mut client).await,
        "the first request was served"
    );
    // Idle between requests for twice the header deadline, well within the idle deadline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        answered_whole(&mut client).await,
        "a keep-alive connection idle for 2 s (header deadline 1 s, idle 4 s) was not served"
    );
    // Idle past the idle deadline, it is closed.
    assert!(
        closed_within(&mut client, Duration::from_secs(6)).await,
        "an idle keep-alive connection outlived its idle deadline"
    );
    assert_eq!(tally.get(Dropped::IdleTimeout), 1);
    assert_eq!(tally.get(Dropped::HeaderTimeout), 0);
}

#[tokio::test]
async fn a_later_requests_headers_are_held_to_the_deadline_from_their_first_byte() {
    let (ca, addr, tally) = keep_alive_server().await;
    let mut slow = connect_from(&ca, [127, 0, 0, 1], addr).await;
    assert!(
        answered_whole(&mut slow).await,
        "the first request was served"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    slow.write_all(b"GET /cacerts HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("half of a second request");
    let first_byte = std::time::Instant::now();
    assert!(
        !closed_within(&mut slow, Duration::from_millis(500)).await,
        "the connection closed before its second request's header deadline"
    );
    assert!(
        closed_within(&mut slow, Duration::from_secs(2)).await,
        "half a second request's headers were still held 2.5 s after their first byte"
    );
    let held = first_byte.elapsed();
    assert!(
        held >= Duration::from_millis(900) && held < Duration::from_millis(2_000),
        "the header deadline (1 s) ran from the first byte: closed after {held:?}"
    );
    assert_eq!(tally.get(Dropped::HeaderTimeout), 1);
    assert_eq!(tally.get(Dropped::IdleTimeout), 0);
}

#[tokio::test]
async fn a_connection_where_nothing_moves_is_hung_up_on() {
    let (ca, addr, tally) = server_with(limits(100, 100), Arc::new(Staller)).await;
    let mut stalled = connect_from(&ca, [127, 0, 0, 1], addr).await;
    stalled
        .write_all(b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("a request");
    assert!(
        closed_within(&mut stalled, Duration::from_secs(3)).await,
        "a response that sent nothing kept its connection for 3 s"
    );
    assert_eq!(tally.get(Dropped::IdleTimeout), 1);
}

#[tokio::test]
async fn a_flood_from_one_address_stops_at_its_cap_and_others_are_served() {
    let (ca, addr, tally) = server(ServeLimits::with_caps(8, 3)).await;
    let mut flood = Vec::new();
    for _ in 0..3 {
        flood.push(connect_from(&ca, [127, 0, 0, 2], addr).await);
    }
    // The fourth from the same address is closed at once, before any handshake.
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 2], 0)))
        .expect("bind");
    let mut refused = socket
        .connect(addr)
        .await
        .expect("the TCP connect itself succeeds");
    assert!(
        closed_within(&mut refused, Duration::from_secs(2)).await,
        "a connection past the per-address cap was not closed at once"
    );
    assert_eq!(tally.get(Dropped::MaxConnectionsPerAddress), 1);
    // Other addresses are still served, and so is the flood's own.
    let mut other = connect_from(&ca, [127, 0, 0, 3], addr).await;
    assert!(answered(&mut other).await, "another address was not served");
    assert!(
        answered(&mut flood[0]).await,
        "a held connection was not served"
    );
    // Past the total cap, every address is refused.
    let mut more = Vec::new();
    for from in 4..8 {
        more.push(connect_from(&ca, [127, 0, 0, from], addr).await);
    }
    let mut past_total = TcpStream::connect(addr).await.expect("connect");
    assert!(closed_within(&mut past_total, Duration::from_secs(2)).await);
    assert_eq!(tally.get(Dropped::MaxConnections), 1);
    // A closed connection frees its place.
    drop(flood);
    eventually_served(&ca, [127, 0, 0, 2], addr).await;
}

/// Waits until a connection from `from` is served (a closed connection's place is freed once
/// the server noticed).
async fn eventually_served(ca: &ClusterCa, from: [u8; 4], addr: SocketAddr) {
    for _ in 0..50 {
        let socket = TcpSocket::new_v4().expect("a socket");
        socket.bind(SocketAddr::from((from, 0))).expect("bind");
        let tcp = socket.connect(addr).await.expect("connect");
        let config = tls::client_config(ca.cert_pem(), None).expect("client TLS");
        let name = ServerName::try_from("127.0.0.1").expect("a name");
        if let Ok(mut stream) = TlsConnector::from(config).connect(name, tcp).await
            && answered(&mut stream).await
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{from:?} was never served again after its connections closed");
}

/// A listener that accepts connections, holds them and never sends a byte.
async fn black_hole() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("an address");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_server_that_accepts_and_never_answers_fails_the_request_in_time() {
    let (addr, _task) = black_hole().await;
    let ca = ClusterCa::generate().expect("a CA");
    let config = tls::client_config(ca.cert_pem(), None).expect("client TLS");
    let url = format!("https://{addr}/cacerts");
    let request = Request::get(&url)
        .body(Full::new(Bytes::new()))
        .expect("a request");
    let deadlines = [
        Duration::from_secs(5),
        Duration::from_millis(300),
        Duration::from_secs(5),
    ];
    let sent = tokio::time::timeout(
        Duration::from_secs(3),
        send_within(config, &url, request, deadlines),
    )
    .await
    .expect("the request gave up on its own");
    assert_eq!(
        sent.map(|_| ()),
        Err(ApiError::Unreachable {
            url,
            reason: "no TLS handshake within 0.3 s".to_owned()
        })
    );
}

#[tokio::test]
async fn a_server_that_never_answers_the_request_fails_it_in_time() {
    // Handshakes, takes the request, and never answers it.
    let (ca, addr, _) = server_with(ServeLimits::default(), Arc::new(Staller)).await;
    let config = tls::client_config(ca.cert_pem(), None).expect("client TLS");
    let url = format!("https://{addr}/never");
    let request = Request::get(&url)
        .body(Full::new(Bytes::new()))
        .expect("a request");
    let deadlines = [
        Duration::from_secs(5),
        Duration::from_secs(5),
        Duration::from_millis(300),
    ];
    let sent = tokio::time::timeout(
        Duration::from_secs(3),
        send_within(config, &url, request, deadlines),
    )
    .await
    .expect("the request gave up on its own");
    assert_eq!(
        sent.map(|_| ()),
        Err(ApiError::Unreachable {
            url,
            reason: "no response within 0.3 s".to_owned()
        })
    );
}
