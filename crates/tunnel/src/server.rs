//! The server's side: [`TunnelServer`] accepts agents' tunnels on [`CONNECT_PATH`] (only with a
//! node certificate, and bound to that node's name) and serves the HTTP CONNECT front door (only
//! with the kube-apiserver's client certificate, `CN=system:apiserver`), routing each target by
//! [`RoutingTable`].
//!
//! A CONNECT through a tunnel is answered `200` only after the agent's dial succeeded; a refused
//! or failed dial, an unknown node or a node without a tunnel is a `502` that says why.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use weft_api::http::{Body, Handler, Peer, error_response, full};
use weft_api::pki::ClientIdentity;

use crate::policy::{EgressSelectorMode, Route, Routes, RoutingTable};
use crate::proto::{Config, Role};
use crate::transport::{Connection, TunnelStream, splice, splice_io, websocket};

/// The path agents open their tunnel WebSocket on.
pub const CONNECT_PATH: &str = "/v1-weft/connect";

/// How long the server waits for a direct dial.
const DIRECT_DIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Live tunnel sessions and the streams they carry, of a [`TunnelServer`] or an
/// [`AgentTunnels`](crate::agent::AgentTunnels).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelStats {
    /// Live tunnels (agents' on a server, to servers on an agent).
    pub sessions: usize,
    /// Streams across them (open, dialing, or closing).
    pub streams: usize,
}

/// The tunnel endpoint and the CONNECT front door of one server; clones share it.
#[derive(Clone)]
pub struct TunnelServer {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    routes: RwLock<Arc<Routes>>,
    /// Each node's sessions, oldest first: the live one last, older ones only while they close.
    sessions: Mutex<HashMap<String, Vec<Session>>>,
    next: AtomicU64,
}

/// One node's tunnel session.
struct Session {
    /// A number to remove it by.
    id: u64,
    /// The fingerprint of the client certificate it was opened with.
    fingerprint: Option<String>,
    connection: Connection,
}

// === impl TunnelServer ===

impl TunnelServer {
    /// A server whose sessions use `config`, routing by `routes`.
    pub fn new(config: Config, routes: RoutingTable) -> TunnelServer {
        TunnelServer {
            inner: Arc::new(Inner {
                config,
                routes: RwLock::new(Arc::new(Routes::new(routes))),
                sessions: Mutex::new(HashMap::new()),
                next: AtomicU64::new(0),
            }),
        }
    }

    /// Replaces the routing state (nodes joined, left, got pods).
    pub fn set_routes(&self, routes: RoutingTable) {
        let routes = Arc::new(Routes::new(routes));
        *self
            .inner
            .routes
            .write()
            .unwrap_or_else(PoisonError::into_inner) = routes;
    }

    /// The routing state in use.
    pub fn routes(&self) -> Arc<Routes> {
        self.inner
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many tunnel sessions are live, and how many streams they carry, for metrics.
    pub fn stats(&self) -> TunnelStats {
        let sessions = self.sessions();
        let mut stats = TunnelStats::default();
        for connection in sessions.values().flatten().map(|s| &s.connection) {
            if !connection.is_closed() {
                stats.sessions += 1;
                stats.streams += connection.stats().streams;
            }
        }
        stats
    }

    /// Whether `request` is this server's: a CONNECT, or the tunnel endpoint.
    pub fn is_tunnel_request<B>(request: &Request<B>) -> bool {
        request.method() == Method::CONNECT || request.uri().path() == CONNECT_PATH
    }

    /// The newest live tunnel of `node`.
    pub fn connection(&self, node: &str) -> Option<Connection> {
        let sessions = self.sessions();
        sessions
            .get(node)?
            .iter()
            .rev()
            .map(|session| &session.connection)
            .find(|connection| !connection.is_closed())
            .cloned()
    }

    /// The nodes with a live tunnel, sorted.
    pub fn connected_nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .sessions()
            .iter()
            .filter(|(_, list)| list.iter().any(|s| !s.connection.is_closed()))
            .map(|(node, _)| node.clone())
            .collect();
        nodes.sort();
        nodes
    }

    /// Closes every tunnel (the server is shutting down); agents reconnect elsewhere.
    pub fn close_all(&self, reason: &str) {
        for list in self.sessions().values() {
            for session in list {
                session.connection.close(reason);
            }
        }
    }

    /// Closes `node`'s tunnels but those opened with the certificate whose fingerprint is
    /// `keep` (its certificate was replaced, or the node deleted: `keep` is `None`).
    pub fn close_node(&self, node: &str, keep: Option<&str>, reason: &str) {
        if let Some(list) = self.sessions().get(node) {
            for session in list {
                if keep.is_none() || session.fingerprint.as_deref() != keep {
                    tracing::info!(%node, %reason, "closing a tunnel");
                    session.connection.close(reason);
                }
            }
        }
    }

    /// Answers a request that [`is_tunnel_request`](Self::is_tunnel_request) accepted; anything
    /// else gets `404`.
    pub async fn handle(&self, request: Request<Incoming>, peer: Peer) -> Response<Body> {
        if request.method() == Method::CONNECT {
            return self.front_door(request, peer).await;
        }
        if request.uri().path() == CONNECT_PATH {
            return self.accept_agent(request, peer);
        }
        error_response(StatusCode::NOT_FOUND, "no such tunnel endpoint")
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Session>>> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The tunnel endpoint: a node's WebSocket becomes a session bound to its name.
    fn accept_agent(&self, mut request: Request<Incoming>, peer: Peer) -> Response<Body> {
        let node = match peer.identity {
            Some(ClientIdentity::Node(node)) => node,
            None => {
                return error_response(
                    StatusCode::UNAUTHORIZED,
                    "the tunnel needs the node's client certificate",
                );
            }
            Some(_) => {
                return error_response(
                    StatusCode::FORBIDDEN,
                    "only nodes may open a tunnel: present a system:node certificate",
                );
            }
        };
        if self.routes().table().mode == EgressSelectorMode::Disabled {
            return error_response(
                StatusCode::FORBIDDEN,
                "egress-selector-mode is disabled: the servers dial nodes directly and take no tunnels",
            );
        }
        let (response, socket) = match websocket::accept(&mut request) {
            Ok(accepted) => accepted,
            Err(response) => return response,
        };
        let server = self.clone();
        let fingerprint = peer.fingerprint.clone();
        tokio::spawn(async move {
            let Some(socket) = socket.await else {
                return;
            };
            let config = server.inner.config.clone();
            let (connection, driver) = match Connection::new(socket, Role::Server, config, None) {
                Ok(made) => made,
                Err(error) => {
                    tracing::error!(%error, "invalid tunnel config");
                    return;
                }
            };
            let id = server.inner.next.fetch_add(1, Ordering::Relaxed);
            {
                let mut sessions = server.sessions();
                let list = sessions.entry(node.clone()).or_default();
                // One session per node: the newest replaces the older (an agent keeps one
                // tunnel per server, so an older one is dead or not the agent's).
                for older in list.iter() {
                    older
                        .connection
                        .close("replaced by a newer tunnel of the same node");
                }
                list.push(Session {
                    id,
                    fingerprint,
                    connection,
                });
            }
            tracing::info!(%node, addr = %peer.addr, "tunnel connected");
            let reason = driver.await;
            tracing::info!(%node, %reason, "tunnel closed");
            let mut sessions = server.sessions();
            if let Some(list) = sessions.get_mut(&node) {
                list.retain(|session| session.id != id);
                if list.is_empty() {
                    sessions.remove(&node);
                }
            }
        });
        response
    }

    /// The HTTP CONNECT front door.
    async fn front_door(&self, mut request: Request<Incoming>, peer: Peer) -> Response<Body> {
        match peer.identity {
            Some(ClientIdentity::KubeApiserver) => {}
            None => {
                return error_response(
                    StatusCode::UNAUTHORIZED,
                    "CONNECT needs the kube-apiserver's client certificate (<data-dir>/server/tls/client-kube-apiserver.crt)",
                );
            }
            Some(_) => {
                return error_response(
                    StatusCode::FORBIDDEN,
                    "only the kube-apiserver's client certificate (CN=system:apiserver) may CONNECT: use <data-dir>/server/tls/client-kube-apiserver.crt",
                );
            }
        }
        let Some((host, port)) = request
            .uri()
            .authority()
            .and_then(|authority| Some((authority.host().to_owned(), authority.port_u16()?)))
        else {
            return error_response(StatusCode::BAD_REQUEST, "CONNECT needs a host:port target");
        };
        let route = self.routes().route(&host, port);
        let upgrade = hyper::upgrade::on(&mut request);
        match route {
            Route::Tunnel { node, target } => {
                let Some(connection) = self.connection(&node) else {
                    return bad_gateway(format!("no tunnel to node {node}"));
                };
                match connection.open(target.clone()).await {
                    Ok(stream) => answer_and_splice(upgrade, Relay::Tunnel(stream)),
                    Err(error) => {
                        bad_gateway(format!("dial {target} through node {node}: {error}"))
                    }
                }
            }
            Route::Direct { host, port } => {
                let dialed = tokio::time::timeout(
                    DIRECT_DIAL_TIMEOUT,
                    TcpStream::connect((host.as_str(), port)),
                )
                .await;
                match dialed {
                    Ok(Ok(tcp)) => {
                        let _ = tcp.set_nodelay(true);
                        answer_and_splice(upgrade, Relay::Direct(tcp))
                    }
                    Ok(Err(error)) => bad_gateway(format!("dial {host}:{port}: {error}")),
                    Err(_) => bad_gateway(format!("dial {host}:{port}: timed out")),
                }
            }
            Route::UnknownNode { name } => bad_gateway(format!("unknown node {name}")),
        }
    }
}

impl Handler for TunnelServer {
    fn handle(
        &self,
        request: Request<Incoming>,
        peer: Peer,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send + '_>> {
        Box::pin(TunnelServer::handle(self, request, peer))
    }
}

impl std::fmt::Debug for TunnelServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelServer")
            .field("nodes", &self.connected_nodes())
            .finish()
    }
}

/// Where a CONNECT goes once answered.
enum Relay {
    /// A stream through a node's tunnel.
    Tunnel(TunnelStream),
    /// A connection the server dialed itself.
    Direct(TcpStream),
}

/// `200`, then the client's connection and `relay` are joined once hyper hands it over.
fn answer_and_splice(upgrade: hyper::upgrade::OnUpgrade, relay: Relay) -> Response<Body> {
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let relayed = match relay {
                    Relay::Tunnel(mut stream) => splice(&mut client, &mut stream).await,
                    Relay::Direct(mut tcp) => splice_io(&mut client, &mut tcp).await,
                };
                if let Err(error) = relayed {
                    tracing::debug!(%error, "CONNECT relay ended with an error");
                }
            }
            Err(error) => tracing::debug!(%error, "CONNECT upgrade failed"),
        }
    });
    Response::new(full(""))
}

fn bad_gateway(reason: String) -> Response<Body> {
    tracing::debug!(%reason, "CONNECT refused");
    error_response(StatusCode::BAD_GATEWAY, reason)
}
