//! Tests of [`TlsServerStream`] against tokio-rustls clients on loopback: the handshake and the
//! client's identity, data both ways at once, small reads, half-close, idle connections
//! holding no buffer, and clients that fail the handshake in each way.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

use super::*;
use crate::pki::{ClusterCa, client_identity};
use crate::tls;

struct Pki {
    ca_pem: String,
    server: Arc<ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

fn pki() -> Pki {
    let ca = ClusterCa::generate().expect("a CA");
    let server = ca.issue_server(&[], &[]).expect("a server certificate");
    let node = ca.issue_node("node-a").expect("a node certificate");
    Pki {
        ca_pem: ca.cert_pem().to_owned(),
        server: tls::server_config(ca.cert_pem(), &server).expect("server TLS"),
        client: tls::client_config(ca.cert_pem(), Some(&node)).expect("client TLS"),
    }
}

/// A TCP connection pair on loopback: (client side, server side).
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("an address");
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.expect("connect"), accepted.expect("accept").0)
}

async fn connected(
    pki: &Pki,
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    TlsServerStream<TcpStream>,
) {
    let (client, server) = tcp_pair().await;
    let name = ServerName::try_from("localhost").expect("a name");
    let connector = TlsConnector::from(pki.client.clone());
    let (client, server) = tokio::join!(
        connector.connect(name, client),
        accept(pki.server.clone(), server)
    );
    (
        client.expect("client handshake"),
        server.expect("server handshake"),
    )
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

#[tokio::test]
async fn handshake_verifies_the_client_and_data_flows_both_ways_at_once() {
    let pki = pki();
    let (client, mut server) = connected(&pki).await;
    let certs = server
        .peer_certificates()
        .expect("the client's certificate");
    let identity = client_identity(&certs[0]).expect("an identity");
    assert_eq!(
        identity,
        crate::pki::ClientIdentity::Node("node-a".to_owned())
    );

    // Five MiB each way, both directions at once, through one stream on each side.
    let up = pattern(5 << 20, 0x11);
    let down = pattern(5 << 20, 0x22);
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let send_up = {
        let up = up.clone();
        async move {
            client_write.write_all(&up).await.expect("client write");
            client_write.shutdown().await.expect("client shutdown");
            client_write
        }
    };
    let receive_down = async move {
        let mut got = Vec::new();
        client_read
            .read_to_end(&mut got)
            .await
            .expect("client read");
        got
    };
    let serve = async {
        let (mut read, mut write) = tokio::io::split(&mut server);
        let receive = async {
            let mut got = Vec::new();
            read.read_to_end(&mut got).await.expect("server read");
            got
        };
        let send = async {
            write.write_all(&down).await.expect("server write");
            write.shutdown().await.expect("server shutdown");
        };
        tokio::join!(receive, send).0
    };
    let (_, got_down, got_up) = tokio::join!(send_up, receive_down, serve);
    assert!(got_up == up, "every byte up, in order");
    assert!(got_down == down, "every byte down, in order");
}

#[tokio::test]
async fn small_reads_see_every_byte_and_an_idle_stream_holds_no_buffer() {
    let pki = pki();
    let (mut client, mut server) = connected(&pki).await;
    let data = pattern(300_000, 0x33);
    client.write_all(&data).await.expect("write");
    client.flush().await.expect("flush");
    let mut got = Vec::new();
    let mut small = [0u8; 100];
    while got.len() < data.len() {
        let n = server.read(&mut small).await.expect("read");
        assert!(n > 0, "no early end");
        got.extend_from_slice(&small[..n]);
    }
    assert!(got == data, "every byte, in order");
    assert!(!server.holds_buffers(), "drained: no buffer held");

    // A read that finds nothing holds nothing while it waits.
    let waiting = tokio::time::timeout(Duration::from_millis(50), server.read(&mut small));
    assert!(waiting.await.is_err(), "nothing to read yet");
    assert!(!server.holds_buffers(), "waiting: no buffer held");

    // A write leaves nothing behind once the socket took it.
    server.write_all(b"answer").await.expect("write");
    server.flush().await.expect("flush");
    assert!(!server.holds_buffers(), "written: no buffer held");
    let mut answer = [0u8; 6];
    client.read_exact(&mut answer).await.expect("read");
    assert_eq!(&answer, b"answer");
}

/// A writer blocked on a full socket is woken when the socket drains, even while a reader on
/// the other half keeps reading: reads must not take the socket's write wakeup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_writer_is_woken_while_the_other_half_reads() {
    let pki = pki();
    let (client, server) = connected(&pki).await;
    let (mut server_read, mut server_write) = tokio::io::split(server);
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let total = 16 << 20;
    let writer = tokio::spawn(async move {
        server_write
            .write_all(&vec![9u8; total])
            .await
            .expect("write");
        server_write.flush().await.expect("flush");
        server_write
    });
    let reader = tokio::spawn(async move {
        let mut got = 0;
        let mut buf = [0u8; 64];
        while let Ok(n) = server_read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got += n;
        }
        got
    });
    // While the writer is stuck on a full socket, the reader wakes again and again.
    for _ in 0..20 {
        client_write.write_all(b"ping").await.expect("ping");
        client_write.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut received = 0;
    let mut buf = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while received < total {
            let n = client_read.read(&mut buf).await.expect("read");
            assert!(n > 0, "no early end");
            received += n;
        }
    });
    drained
        .await
        .expect("the writer finished: it was woken as the socket drained");
    let server_write = writer.await.expect("the writer");
    drop(server_write);
    client_write.shutdown().await.expect("shutdown");
    assert_eq!(reader.await.expect("the reader"), 80, "every ping arrived");
}

#[tokio::test]
async fn a_client_that_finished_sending_still_gets_the_answer() {
    let pki = pki();
    let (mut client, mut server) = connected(&pki).await;
    client.write_all(b"request").await.expect("write");
    client.shutdown().await.expect("close_notify");
    let mut request = Vec::new();
    server
        .read_to_end(&mut request)
        .await
        .expect("read to the end");
    assert_eq!(request, b"request");
    assert_eq!(server.read(&mut [0u8; 8]).await.expect("still the end"), 0);

    server
        .write_all(b"response")
        .await
        .expect("write after the peer finished");
    server.shutdown().await.expect("shutdown");
    let mut response = Vec::new();
    client.read_to_end(&mut response).await.expect("read");
    assert_eq!(response, b"response");
}

#[tokio::test]
async fn plaintext_http_fails_the_handshake_and_gets_an_alert() {
    let pki = pki();
    let (mut client, server) = tcp_pair().await;
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let error = accept(pki.server.clone(), server)
        .await
        .expect_err("not TLS");
    assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    // A TLS alert record (content type 21) before the connection closes.
    let mut alert = Vec::new();
    let _ = client.read_to_end(&mut alert).await;
    assert_eq!(alert.first(), Some(&21), "an alert: {alert:?}");
}

#[tokio::test]
async fn a_certificate_of_another_ca_fails_the_handshake() {
    let pki = pki();
    let other = ClusterCa::generate().expect("another CA");
    let stranger = other.issue_node("node-x").expect("a certificate");
    // Trusts the real server, presents the stranger's certificate.
    let config = tls::client_config(&pki.ca_pem, Some(&stranger)).expect("client TLS");
    let name = ServerName::try_from("localhost").expect("a name");
    let (client, server) = tcp_pair().await;
    let connector = TlsConnector::from(config);
    let (client, server) = tokio::join!(
        async {
            // TLS 1.3 clients finish before the server checks their certificate: the failure
            // shows on the first read.
            let mut conn = connector.connect(name, client).await?;
            conn.write_all(b"hello").await?;
            conn.read(&mut [0u8; 8]).await
        },
        accept(pki.server.clone(), server)
    );
    let error = server.expect_err("an unknown CA");
    assert!(error.to_string().contains("certificate"), "{error}");
    // Told by rustls's alert (both CAs have the same name, so the signature is what fails).
    let client_error = client.expect_err("the client is told");
    assert!(
        client_error.to_string().contains("received fatal alert"),
        "{client_error}"
    );
}

#[tokio::test]
async fn a_client_that_leaves_mid_handshake_is_an_unexpected_end() {
    let pki = pki();
    let (mut client, server) = tcp_pair().await;
    // The first bytes of a ClientHello record, then nothing.
    client
        .write_all(&[22, 3, 1, 0, 200, 1])
        .await
        .expect("write");
    drop(client);
    let error = accept(pki.server.clone(), server)
        .await
        .expect_err("no handshake");
    assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{error}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    /// Whatever a client sends instead of a handshake (random bytes, or a handshake record
    /// header followed by random bytes), the server answers with an error, never a panic.
    #[test]
    fn bytes_that_are_no_handshake_fail_cleanly(
        hello_header in proptest::bool::ANY,
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..3000),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let config = pki_once().server.clone();
        let result = runtime.block_on(async move {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let mut sent = Vec::new();
            if hello_header {
                let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
                sent.extend_from_slice(&[22, 3, 1]);
                sent.extend_from_slice(&len.to_be_bytes());
            }
            sent.extend_from_slice(&body);
            client.write_all(&sent).await.expect("write");
            client.shutdown().await.expect("shutdown");
            let accepted = tokio::time::timeout(
                Duration::from_secs(5),
                accept(config, server),
            )
            .await
            .expect("an answer, not a hang");
            accepted.map(|_| ())
        });
        proptest::prop_assert!(result.is_err());
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Random bytes on the wire after a good handshake (an application-data record header or
    /// none, then anything): the server's read fails or ends, never panics or hangs.
    #[test]
    fn bytes_that_are_no_record_after_the_handshake_fail_cleanly(
        record_header in proptest::bool::ANY,
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..3000),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let outcome = runtime.block_on(async move {
            let (mut client, mut server) = connected(pki_once()).await;
            let raw = client.get_mut().0;
            let mut sent = Vec::new();
            if record_header {
                let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
                sent.extend_from_slice(&[23, 3, 3]);
                sent.extend_from_slice(&len.to_be_bytes());
            }
            sent.extend_from_slice(&body);
            raw.write_all(&sent).await.expect("write");
            raw.shutdown().await.expect("shutdown");
            let mut got = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut got))
                .await
                .expect("an answer, not a hang")
                .map(|_| got)
        });
        // Nothing the client did not encrypt comes out as data.
        proptest::prop_assert!(outcome.as_ref().map_or(true, Vec::is_empty), "{outcome:?}");
    }
}

/// One CA and its configs for the property tests' many cases.
fn pki_once() -> &'static Pki {
    static PKI: std::sync::OnceLock<Pki> = std::sync::OnceLock::new();
    PKI.get_or_init(pki)
}
