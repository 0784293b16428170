//! HTTPS plumbing on hyper 1 and tokio-rustls: a one-connection-per-request client and a
//! server loop that hands each request its peer's verified identity, holding every connection
//! to deadlines and caps ([`ServeLimits`]) so slow or hostile clients can't pile up.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

use crate::ApiError;
use crate::io::tls_server;
use crate::pki::{ClientIdentity, cert_fingerprint, client_identity};
use crate::protocol::ErrorBody;

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

/// The deadlines and caps [`serve`] holds every connection to, as Go's `http.Server` holds
/// kube-apiserver's (`ReadHeaderTimeout`, `IdleTimeout`).
///
/// The caps count the connections the HTTP server holds: from accept until they close or are
/// upgraded (a tunnel or a CONNECT stream, which only a certificate of the cluster opens and
/// which the tunnel bounds on its own). Long-lived responses (lease watches) count while they
/// last and are kept moving by their bookmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// The most connections held at once; past it a new connection is closed at once.
    pub max_connections: usize,
    /// The most connections held at once from one source address (IPv4-mapped addresses count
    /// as IPv4).
    pub max_connections_per_address: usize,
    /// How long a client may take over its TLS handshake.
    pub handshake_timeout: Duration,
    /// How long a request's headers may take to arrive, from the end of the handshake or of the
    /// previous response.
    pub header_read_timeout: Duration,
    /// How long a connection may move no byte either way before it is closed (a stalled body, a
    /// client that stopped reading); upgraded connections are exempt.
    pub idle_timeout: Duration,
}

/// Why a connection was closed at once or early, for [`ConnectionObserver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Refused at accept: [`ServeLimits::max_connections`] connections were open.
    MaxConnections,
    /// Refused at accept: its address held [`ServeLimits::max_connections_per_address`].
    MaxConnectionsPerAddress,
    /// Closed: the TLS handshake took longer than [`ServeLimits::handshake_timeout`].
    HandshakeTimeout,
    /// Closed: a request's headers took longer than [`ServeLimits::header_read_timeout`].
    HeaderTimeout,
    /// Closed: nothing moved for [`ServeLimits::idle_timeout`].
    IdleTimeout,
}

/// Told of every connection [`serve`] refuses or times out (the server's metrics).
pub trait ConnectionObserver: Send + Sync + 'static {
    /// One connection was refused or closed for `why`.
    fn dropped(&self, why: Dropped);
}

/// Observes nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unobserved;

// === impl ServeLimits ===

impl ServeLimits {
    /// The default of [`ServeLimits::max_connections`]: 5,000 nodes each holding a lease watch
    /// and a request or two at a time, with room to spare (weft-config's `max-connections`).
    pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
    /// The default of [`ServeLimits::max_connections_per_address`] (weft-config's
    /// `max-connections-per-address`): well above what one node holds, well below the total.
    pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 1_000;
    /// The default [`ServeLimits::handshake_timeout`].
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default [`ServeLimits::header_read_timeout`].
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default [`ServeLimits::idle_timeout`].
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

    /// The default deadlines with these caps.
    pub fn with_caps(max_connections: usize, max_connections_per_address: usize) -> ServeLimits {
        ServeLimits {
            max_connections,
            max_connections_per_address,
            ..ServeLimits::default()
        }
    }
}

impl Default for ServeLimits {
    fn default() -> ServeLimits {
        ServeLimits {
            max_connections: ServeLimits::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: ServeLimits::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            handshake_timeout: ServeLimits::DEFAULT_HANDSHAKE_TIMEOUT,
            header_read_timeout: ServeLimits::DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: ServeLimits::DEFAULT_IDLE_TIMEOUT,
        }
    }
}

// === impl Unobserved ===

impl ConnectionObserver for Unobserved {
    fn dropped(&self, _why: Dropped) {}
}

/// Accepts TLS connections on `listener` and serves HTTP/1.1 on each (with upgrades, so
/// handlers can take over a connection for CONNECT or WebSocket) until the future is dropped,
/// with the default [`ServeLimits`].
pub async fn serve(listener: TcpListener, tls: Arc<ServerConfig>, handler: Arc<dyn Handler>) {
    serve_limited(
        listener,
        tls,
        handler,
        ServeLimits::default(),
        Arc::new(Unobserved),
    )
    .await;
}

/// [`serve`] with the limits given, telling `observer` of each connection refused or timed out.
pub async fn serve_limited(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    handler: Arc<dyn Handler>,
    limits: ServeLimits,
    observer: Arc<dyn ConnectionObserver>,
) {
    let open = Arc::new(OpenConnections::default());
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let held = match open.admit(addr.ip(), &limits) {
            Ok(held) => held,
            Err(why) => {
                tracing::debug!(%addr, ?why, "connection refused");
                observer.dropped(why);
                drop(tcp);
                continue;
            }
        };
        let tls = tls.clone();
        let handler = handler.clone();
        let observer = observer.clone();
        tokio::spawn(async move {
            // Counted until the connection closes or is upgraded.
            let _held = held;
            if let Some(why) = serve_connection(tcp, addr, tls, handler, limits).await {
                tracing::debug!(%addr, ?why, "connection closed");
                observer.dropped(why);
            }
        });
    }
}

/// Serves one connection; returns the deadline it missed, if any.
async fn serve_connection(
    tcp: TcpStream,
    addr: SocketAddr,
    tls: Arc<ServerConfig>,
    handler: Arc<dyn Handler>,
    limits: ServeLimits,
) -> Option<Dropped> {
    let _ = tcp.set_nodelay(true);
    // An idle connection holds no TLS buffer (see `tls_server`).
    let tls =
        match tokio::time::timeout(limits.handshake_timeout, tls_server::accept(tls, tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%addr, error = %e, "TLS handshake failed");
                return None;
            }
            Err(_) => return Some(Dropped::HandshakeTimeout),
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
    let (io, activity) = Watched::new(tls);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::select! {
        served = connection => match served {
            Ok(()) => None,
            Err(e) if e.is_timeout() => Some(Dropped::HeaderTimeout),
            Err(e) => {
                tracing::debug!(%addr, error = %e, "connection ended with an error");
                None
            }
        },
        () = activity.idle_for(limits.idle_timeout) => Some(Dropped::IdleTimeout),
    }
}

/// The connections [`serve_limited`] holds: in all and per source address.
#[derive(Debug, Default)]
struct OpenConnections {
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// One admitted connection; counted until dropped.
#[derive(Debug)]
struct Held {
    open: Arc<OpenConnections>,
    ip: IpAddr,
}

// === impl OpenConnections ===

impl OpenConnections {
    /// Counts a new connection from `ip`, or says which cap refuses it.
    fn admit(self: &Arc<Self>, ip: IpAddr, limits: &ServeLimits) -> Result<Held, Dropped> {
        let ip = ip.to_canonical();
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= limits.max_connections {
            return Err(Dropped::MaxConnections);
        }
        let from_ip = counts.per_address.entry(ip).or_default();
        if *from_ip >= limits.max_connections_per_address {
            return Err(Dropped::MaxConnectionsPerAddress);
        }
        *from_ip += 1;
        counts.total += 1;
        Ok(Held {
            open: self.clone(),
            ip,
        })
    }
}

// === impl Held ===

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self
            .open
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.total -= 1;
        if let Some(from_ip) = counts.per_address.get_mut(&self.ip) {
            *from_ip -= 1;
            if *from_ip == 0 {
                counts.per_address.remove(&self.ip);
            }
        }
    }
}

/// A stream that notes when a byte last moved either way, for the idle deadline.
struct Watched<IO> {
    inner: IO,
    activity: Arc<Activity>,
}

/// When a [`Watched`] stream last moved a byte, in milliseconds since it was made.
#[derive(Debug)]
struct Activity {
    since: tokio::time::Instant,
    last_ms: AtomicU64,
}

// === impl Watched ===

impl<IO> Watched<IO> {
    fn new(inner: IO) -> (Watched<IO>, Arc<Activity>) {
        let activity = Arc::new(Activity {
            since: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
        });
        let watched = Watched {
            inner,
            activity: activity.clone(),
        };
        (watched, activity)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.moved();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// === impl Activity ===

impl Activity {
    fn moved(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once no byte moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.since + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + limit;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// How long [`send`] waits for the TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`send`] waits for the TLS handshake once connected.
pub const TLS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`send`] waits for the response's head once the request is sent.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one request to `url` on a new TLS connection and returns the response head with its
/// body still streaming. Each step has its deadline ([`CONNECT_TIMEOUT`], [`TLS_TIMEOUT`],
/// [`RESPONSE_TIMEOUT`]), so a server that accepts and never answers fails the request as
/// [`ApiError::Unreachable`]; reading the body is the caller's to bound.
pub async fn send(
    tls: Arc<ClientConfig>,
    url: &str,
    request: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, ApiError> {
    send_within(
        tls,
        url,
        request,
        [CONNECT_TIMEOUT, TLS_TIMEOUT, RESPONSE_TIMEOUT],
    )
    .await
}

/// [`send`] with the connect, TLS and response deadlines given.
async fn send_within(
    tls: Arc<ClientConfig>,
    url: &str,
    request: Request<Full<Bytes>>,
    [connect_timeout, tls_timeout, response_timeout]: [Duration; 3],
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
    let late = |what: &str, limit: Duration| ApiError::Unreachable {
        url: url.to_owned(),
        reason: format!("{what} within {} s", limit.as_secs_f64()),
    };
    let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| late("no TCP connection", connect_timeout))?
        .map_err(|e| unreachable(&e))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host.clone()).map_err(|e| ApiError::InvalidServerUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    let stream = tokio::time::timeout(tls_timeout, TlsConnector::from(tls).connect(name, tcp))
        .await
        .map_err(|_| late("no TLS handshake", tls_timeout))?
        .map_err(|e| ApiError::Tls(format!("TLS to {url} failed: {e}")))?;
    let answered = async {
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
    };
    tokio::time::timeout(response_timeout, answered)
        .await
        .map_err(|_| late("no response", response_timeout))?
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
