//! A CONNECT client as `curl -p -x https://SERVER ...` is one, for tests and benches of the
//! front door (this crate's, weft-control's, the tunnel bench), with the `test-util` feature.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The front door's answer to a CONNECT.
#[derive(Debug)]
pub struct ConnectAnswer {
    /// The status code (0 when the server closed before answering).
    pub status: u16,
    /// The body of an error answer (a `502`'s reason, say); empty after `200`.
    pub body: String,
    /// The connection past the response head and body: the tunnelled bytes after `200`.
    pub conn: TlsStream<TcpStream>,
}

/// Sends `CONNECT target` over TLS (`tls`, naming the server `server_name`) to `server`, and
/// reads the answer. Panics on I/O errors: it is for tests.
pub async fn connect(
    server: SocketAddr,
    server_name: &str,
    tls: Arc<ClientConfig>,
    target: &str,
) -> ConnectAnswer {
    let tcp = TcpStream::connect(server).await.expect("connect");
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(server_name.to_owned()).expect("a server name");
    let mut conn = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .expect("TLS");
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    conn.write_all(request.as_bytes()).await.expect("write");
    // TLS may hold the request until flushed.
    conn.flush().await.expect("flush");
    // Byte by byte, so nothing past the head is read (the target's first bytes follow it).
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if conn.read(&mut byte).await.expect("read") == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let length = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(str::to_owned)
        })
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).await.expect("the body");
    ConnectAnswer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        conn,
    }
}
