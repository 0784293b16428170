//! HTTPS plumbing on hyper 1 and tokio-rustls: a one-connection-per-request client and a
//! server loop that hands each request its peer's verified identity.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

use crate::ApiError;
use crate::io::tls_server;
use crate::pki::{ClientIdentity, cert_fingerprint, client_identity};
use crate::protocol::ErrorBody;

/// How long a client may take over its TLS handshake before the server hangs up.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A response body: whole or streamed.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The TCP peer address.
    pub addr: SocketAddr,
    /// The identity of its client certificate, when it presented one the CA signed.
    pub identity: Option<ClientIdentity>,
    /// That certificate's SHA-256 fingerprint ([`cert_fingerprint`]), to tell a node's current
    /// certificate from one it was issued before.
    pub fingerprint: Option<String>,
}

/// Handles requests for [`serve`].
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(
        &self,
        request: Request<Incoming>,
        peer: Peer,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send + '_>>;
}

/// Accepts TLS connections on `listener` and serves HTTP/1.1 on each (with upgrades, so
/// handlers can take over a connection for CONNECT or WebSocket) until the future is dropped.
pub async fn serve(listener: TcpListener, tls: Arc<ServerConfig>, handler: Arc<dyn Handler>) {
    serve_with(listener, tls, handler, HANDSHAKE_TIMEOUT).await;
}

/// [`serve`] with the handshake timeout given.
async fn serve_with(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    handler: Arc<dyn Handler>,
    handshake_timeout: std::time::Duration,
) {
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let tls = tls.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            // An idle connection holds no TLS buffer (see `tls_server`).
            let tls =
                match tokio::time::timeout(handshake_timeout, tls_server::accept(tls, tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%addr, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%addr, "TLS handshake timed out");
                        return;
                    }
                };
            let leaf = tls.peer_certificates().and_then(|certs| certs.first());
            let identity = leaf.and_then(|cert| client_identity(cert).ok());
            let fingerprint = leaf.map(|cert| cert_fingerprint(cert));
            let peer = Peer {
                addr,
                identity,
                fingerprint,
            };
            let service = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                let peer = peer.clone();
                async move { Ok::<_, Infallible>(handler.handle(req, peer).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%addr, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Sends one request to `url` on a new TLS connection and returns the response head with its
/// body still streaming.
pub async fn send(
    tls: Arc<ClientConfig>,
    url: &str,
    request: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, ApiError> {
    let uri: Uri = url.parse().map_err(|e| ApiError::InvalidServerUrl {
        url: url.to_owned(),
        reason: format!("{e}"),
    })?;
    let host = uri.host().ok_or_else(|| ApiError::InvalidServerUrl {
        url: url.to_owned(),
        reason: "no host".into(),
    })?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let unreachable = |e: &dyn std::fmt::Display| ApiError::Unreachable {
        url: url.to_owned(),
        reason: e.to_string(),
    };
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| unreachable(&e))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host.clone()).map_err(|e| ApiError::InvalidServerUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    let stream = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| ApiError::Tls(format!("TLS to {url} failed: {e}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(&e))
}

/// Reads a whole body, refusing one over `limit` bytes.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, limit);
    limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ApiError::Protocol(format!("reading a body failed: {e}")))
}

/// A whole response body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A JSON response.
pub fn json_response<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A JSON error response.
pub fn error_response(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json_response(
        status,
        &ErrorBody {
            error: message.into(),
        },
    )
}

#[cfg(test)]
mod tests;
