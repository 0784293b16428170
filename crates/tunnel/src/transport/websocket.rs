//! The WebSocket under a tunnel: the server's upgrade of an HTTPS request (through hyper, so it
//! shares weft's HTTPS port and client-certificate check) and the agent's client handshake over
//! tokio-rustls. Messages are capped at one frame, so tungstenite refuses anything larger before
//! it buffers it.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role as WsRole, WebSocketConfig};
use weft_api::http::{Body, error_response, full};

use crate::error::ConnectError;
use crate::proto::MAX_FRAME_LEN;

/// The WebSocket of an upgraded server connection.
pub type ServerSocket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// The WebSocket of an agent's connection.
pub type ClientSocket = WebSocketStream<TlsStream<TcpStream>>;

/// The WebSocket limits: one message is one frame of at most [`MAX_FRAME_LEN`] bytes.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_LEN))
        .max_frame_size(Some(MAX_FRAME_LEN))
}

/// Answers a WebSocket upgrade request: the `101` response to return now, and the future of the
/// WebSocket once hyper hands the connection over. A request that is no WebSocket upgrade gets
/// a `400` response instead.
#[allow(clippy::result_large_err)]
pub fn accept(
    request: &mut Request<Incoming>,
) -> Result<
    (
        Response<Body>,
        impl Future<Output = Option<ServerSocket>> + Send + use<>,
    ),
    Response<Body>,
> {
    let headers = request.headers();
    let has = |name, value: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case(value))
            })
        })
    };
    if !(has(UPGRADE, "websocket") && has(CONNECTION, "upgrade")) {
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            "the tunnel endpoint takes a WebSocket upgrade",
        ));
    }
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY) else {
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            "the WebSocket upgrade lacks Sec-WebSocket-Key",
        ));
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(request);
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    let socket = async move {
        match upgrade.await {
            Ok(upgraded) => Some(
                WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    WsRole::Server,
                    Some(config()),
                )
                .await,
            ),
            Err(error) => {
                tracing::debug!(%error, "tunnel upgrade failed");
                None
            }
        }
    };
    Ok((response, socket))
}

/// Connects to a server's tunnel endpoint `url` (`wss://host:port/path`) over TLS with `tls`
/// (the cluster CA and the node's certificate) and completes the WebSocket handshake.
pub async fn connect(url: &str, tls: Arc<ClientConfig>) -> Result<ClientSocket, ConnectError> {
    let invalid = |reason| ConnectError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let rest = url
        .strip_prefix("wss://")
        .ok_or_else(|| invalid("the scheme must be wss"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            let port = port.parse().map_err(|_| invalid("the port is no number"))?;
            (host, port)
        }
        _ => (authority, 443),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid("the host is empty"));
    }
    let io = |source| ConnectError::Io {
        url: url.to_owned(),
        source,
    };
    let tcp = TcpStream::connect((host, port)).await.map_err(io)?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host.to_owned()).map_err(|_| invalid("bad host name"))?;
    let tls = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(io)?;
    let (socket, _) = tokio_tungstenite::client_async_with_config(url, tls, Some(config()))
        .await
        .map_err(|source| ConnectError::Handshake {
            url: url.to_owned(),
            source: Box::new(source),
        })?;
    Ok(socket)
}
