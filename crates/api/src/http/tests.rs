//! Tests of [`serve`]: a request over TLS reaches the handler with the client's identity, and a
//! client that never finishes its handshake is hung up on.

use std::time::Duration;

use tokio::io::AsyncReadExt;

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

async fn server(handshake_timeout: Duration) -> (ClusterCa, SocketAddr) {
    let ca = ClusterCa::generate().expect("a CA");
    let cert = ca
        .issue_server(&[], &["127.0.0.1".parse().expect("an IP")])
        .expect("a server certificate");
    let config = tls::server_config(ca.cert_pem(), &cert).expect("server TLS");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(serve_with(
        listener,
        config,
        Arc::new(Echo),
        handshake_timeout,
    ));
    (ca, addr)
}

#[tokio::test]
async fn a_request_reaches_the_handler_with_its_client() {
    let (ca, addr) = server(Duration::from_secs(10)).await;
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
    let (_ca, addr) = server(Duration::from_millis(200)).await;
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut [0u8; 16])).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the server hung up: {closed:?}"
    );
}
