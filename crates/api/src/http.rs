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
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
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
    /// How long a request's headers may take to arrive: the first request's from the end of the
    /// handshake, a later one's from its first byte (Go's `ReadHeaderTimeout`). Bytes that came
    /// after the previous request's headers (a body, a pipelined request) start the next
    /// request's deadline when its headers are read.
    pub header_read_timeout: Duration,
    /// How long a connection may move no byte either way before it is closed: a keep-alive
    /// connection waiting for its next request (Go's `IdleTimeout`), a stalled body, a client
    /// that stopped reading; upgraded connections are exempt.
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
    /// Closed: nothing moved for [`ServeLimits::idle_timeout`], or a keep-alive connection got
    /// no next request within it.
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
        // The task is the connection's future itself: a block around it would keep a second
        // copy of its arguments for the connection's whole life.
        tokio::spawn(serve_connection(
            tcp,
            addr,
            held,
            tls.clone(),
            handler.clone(),
            limits,
            observer.clone(),
        ));
    }
}

/// Serves one connection, telling `observer` of the deadline it missed, if any (a first
/// request's header deadline before the connection closes, so a client that saw the close finds
/// it counted).
///
/// The handshake and the first head are read in [`accept_first_head`], its own future: a stream
/// borrowed across an await stays in the future's state after it was moved on (rustc keeps
/// borrowed locals until their scope ends), so read here it would have taken its 1.2 KiB twice
/// in every connection's task for the connection's whole life, beside its copy inside hyper's
/// connection.
async fn serve_connection(
    tcp: TcpStream,
    addr: SocketAddr,
    held: Held,
    tls: Arc<ServerConfig>,
    handler: Arc<dyn Handler>,
    limits: ServeLimits,
    observer: Arc<dyn ConnectionObserver>,
) {
    // Counted until the connection closes or is upgraded.
    let _held = held;
    let dropped = |why: Dropped| {
        tracing::debug!(%addr, ?why, "connection closed");
        observer.dropped(why);
    };
    let Some((tls, head, peer)) = accept_first_head(tcp, addr, tls, &limits, &dropped).await else {
        return;
    };
    let (io, activity) = Watched::new(Prefixed { head, inner: tls });
    let heads = activity.clone();
    let service = hyper::service::service_fn(move |req| {
        heads.head_received();
        let handler = handler.clone();
        let peer = peer.clone();
        async move { Ok::<_, Infallible>(handler.handle(req, peer).await) }
    });
    let timer = HeadTimer {
        activity: activity.clone(),
        idle_timeout: limits.idle_timeout,
        header_read_timeout: limits.header_read_timeout,
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(timer)
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let missed = tokio::select! {
        served = connection => match served {
            Ok(()) => None,
            // The head's sleep ends waiting for a first byte at the idle deadline.
            Err(e) if e.is_timeout() && activity.head_began().is_none() => {
                Some(Dropped::IdleTimeout)
            }
            Err(e) if e.is_timeout() => Some(Dropped::HeaderTimeout),
            Err(e) => {
                tracing::debug!(%addr, error = %e, "connection ended with an error");
                None
            }
        },
        // Boxed (176 bytes): it keeps the connection's task within 2.5 KiB, the allocator's
        // size class below the next at 3 KiB, which every connection would pay in full.
        () = Box::pin(activity.idle_for(limits.idle_timeout)) => Some(Dropped::IdleTimeout),
    };
    if let Some(why) = missed {
        dropped(why);
    }
}

/// Accepts `tcp`'s TLS handshake and reads its first request's head, each within its deadline:
/// the stream, the head and who sent it, or `None` once the connection failed or missed a
/// deadline (told to `dropped` before the connection closes).
async fn accept_first_head(
    tcp: TcpStream,
    addr: SocketAddr,
    tls: Arc<ServerConfig>,
    limits: &ServeLimits,
    dropped: &impl Fn(Dropped),
) -> Option<(tls_server::TlsServerStream<TcpStream>, Vec<u8>, Peer)> {
    let _ = tcp.set_nodelay(true);
    // An idle connection holds no TLS buffer (see `tls_server`).
    let mut tls =
        match tokio::time::timeout(limits.handshake_timeout, tls_server::accept(tls, tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%addr, error = %e, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                dropped(Dropped::HandshakeTimeout);
                return None;
            }
        };
    // A client that has not finished its first request's head holds no hyper connection yet
    // (hyper allocates two 8 KiB buffers per connection): the head is read here first, within
    // the header deadline, and handed to hyper with the stream.
    let head = match tokio::time::timeout(limits.header_read_timeout, read_head(&mut tls)).await {
        Ok(Ok(head)) if head.is_empty() => return None,
        Ok(Ok(head)) => head,
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "reading the first request failed");
            return None;
        }
        Err(_) => {
            dropped(Dropped::HeaderTimeout);
            drop(tls);
            return None;
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
    Some((tls, head, peer))
}

/// The most of a first request [`read_head`] reads before it hands the rest to hyper, whose
/// own limits then apply (a longer head gets the header deadline again for its rest).
const HEAD_READ_LIMIT: usize = 8 * 1024;

/// Reads from `stream` until the end of a request's head (an empty line), the client's close
/// or [`HEAD_READ_LIMIT`] bytes; returns what it read (nothing: closed before a byte came).
async fn read_head<IO: AsyncRead + Unpin>(stream: &mut IO) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    while head.len() < HEAD_READ_LIMIT {
        // Grows with what comes: a client that sent half a line holds a few dozen bytes.
        head.reserve(256);
        if stream.read_buf(&mut head).await? == 0 {
            break;
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    Ok(head)
}

/// A stream that yields `head` (bytes read from `inner` already) before `inner`'s own.
struct Prefixed<IO> {
    head: Vec<u8>,
    inner: IO,
}

// === impl Prefixed ===

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.head.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.head.len().min(buf.remaining());
        buf.put_slice(&self.head[..n]);
        self.head.drain(..n);
        if self.head.is_empty() {
            // Frees it.
            self.head = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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

/// When a [`Watched`] stream last moved a byte, and when the request head hyper reads began, in
/// milliseconds since the stream was made (at the end of the TLS handshake).
#[derive(Debug)]
struct Activity {
    since: tokio::time::Instant,
    last_ms: AtomicU64,
    /// When the first byte after the previous request's head came ([`NO_HEAD`]: none yet); the
    /// first request's head begins with the stream.
    head_began_ms: AtomicU64,
}

/// [`Activity::head_began_ms`] while no byte came since the previous request's head.
const NO_HEAD: u64 = u64::MAX;

/// hyper's timer for a connection [`serve_connection`] serves. hyper's HTTP/1 server asks it only
/// for the header read deadline, and asks as soon as the previous response is written, so a
/// keep-alive connection waiting for its next request would be held to that deadline; this timer
/// makes hyper's sleep a [`HeadDeadline`] instead.
#[derive(Debug, Clone)]
struct HeadTimer {
    activity: Arc<Activity>,
    idle_timeout: Duration,
    header_read_timeout: Duration,
}

/// The deadline of one request's head: while no byte came since the previous request's head,
/// the idle deadline from when hyper began waiting; from the first byte on, the header deadline
/// from that byte. The connection's own task reads the bytes and polls this sleep, so a read
/// that moves the deadline also polls it.
#[derive(Debug)]
struct HeadDeadline {
    activity: Arc<Activity>,
    header_read_timeout: Duration,
    awaiting_first_byte: bool,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

// === impl Watched ===

impl<IO> Watched<IO> {
    fn new(inner: IO) -> (Watched<IO>, Arc<Activity>) {
        let activity = Arc::new(Activity {
            since: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            head_began_ms: AtomicU64::new(0),
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
            self.activity.read();
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
            self.activity.wrote();
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
    /// Milliseconds since the stream was made.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_millis()).unwrap_or(NO_HEAD - 1)
    }

    /// A byte went out.
    fn wrote(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A byte came in: the first after a request's head begins the next head, as far as anyone
    /// can tell below HTTP.
    fn read(&self) {
        let ms = self.now_ms();
        self.last_ms.store(ms, Ordering::Relaxed);
        let _ =
            self.head_began_ms
                .compare_exchange(NO_HEAD, ms, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// hyper has read a request's head: the next one begins with the next byte.
    fn head_received(&self) {
        self.head_began_ms.store(NO_HEAD, Ordering::Relaxed);
    }

    /// When the request head being read began: `None` while no byte came since the previous
    /// request's head.
    fn head_began(&self) -> Option<tokio::time::Instant> {
        match self.head_began_ms.load(Ordering::Relaxed) {
            NO_HEAD => None,
            ms => Some(self.since + Duration::from_millis(ms)),
        }
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

// === impl HeadTimer ===

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        TokioTimer::new().sleep(duration)
    }

    /// hyper's header read deadline, `header_read_timeout` from now: kept as it is when bytes
    /// came since the previous head (the first request, a body, a pipelined request), otherwise
    /// the idle deadline until the first byte comes.
    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let (awaiting_first_byte, until) = match self.activity.head_began() {
            Some(_) => (false, tokio::time::Instant::from_std(deadline)),
            None => (true, tokio::time::Instant::now() + self.idle_timeout),
        };
        Box::pin(HeadDeadline {
            activity: self.activity.clone(),
            header_read_timeout: self.header_read_timeout,
            awaiting_first_byte,
            sleep: Box::pin(tokio::time::sleep_until(until)),
        })
    }
}

// === impl HeadDeadline ===

impl Future for HeadDeadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.awaiting_first_byte
            && let Some(began) = this.activity.head_began()
        {
            this.awaiting_first_byte = false;
            this.sleep.as_mut().reset(began + this.header_read_timeout);
        }
        this.sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for HeadDeadline {}

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
        .map_err(|e| ApiError::tls(format!("TLS to {url} failed"), e))?;
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
        .map_err(|e| ApiError::protocol("reading a body failed", e))
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
