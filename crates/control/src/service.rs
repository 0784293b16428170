//! The server's HTTPS API: what agents, joining servers and the admin CLI call.
//!
//! Paths and messages are weft-api's [`protocol`](weft_api::protocol); this module decides who
//! may call what: `/cacerts` is public (agents check it against their token), `/v1-weft/config`
//! and `/v1-weft/register` need the token's secret, lease and server lists and pod reports need
//! a node certificate (a node reports only its own pods), and node management needs the admin
//! certificate (`CN=system:admin`; the kube-apiserver's may not). The tunnel endpoint and
//! CONNECT are weft-tunnel's, behind [`Front`](crate::egress::Front), and check the same
//! identities: a node certificate for the tunnel, the kube-apiserver's for CONNECT.

// Checks return the refusal response itself as their error: it is built once per refused
// request, and boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use bytes::Bytes;
use futures::Future;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use weft_api::http::{Body, Handler, Peer, error_response, full, json_response, read_body};
use weft_api::pki::{ClientIdentity, ClusterCa, pem_fingerprint};
use weft_api::protocol::{
    CACERTS_PATH, CONFIG_PATH, LEASES_PATH, LeaseEvent, NODE_PASSWORD_HEADER, NODES_PATH, NodeInfo,
    PODS_PATH, REGISTER_PATH, RegisterRequest, RegisterResponse, SERVERS_PATH,
};
use weft_api::token::{hash_node_password, secrets_equal, verify_node_password};
use weft_config::{ClusterNetwork, is_dns1123_subdomain};
use weft_ipam::{Family, Ipv4Cidr, Ipv6Cidr, NodeCidrBounds};
use weft_store::{
    Claim, LeaseAttrs, MAX_ATTEMPTS, NodeMaskSizes, NodeRecord, Store, StoreError, UnixTime,
};

use crate::credentials::{Held, NodeCredentials};
use crate::hub::{HubEvent, LeaseHub, Subscription, event_line};
use crate::metrics::{ControlMetrics, Registration};
use crate::servers::list_servers;

pub use weft_api::protocol::BOOKMARK_INTERVAL;
/// The largest request body the API reads.
const MAX_REQUEST: usize = 64 << 10;

/// The control plane's request handler.
pub struct ControlPlane {
    store: Store,
    hub: LeaseHub,
    ca: Arc<ClusterCa>,
    secrets: JoinSecrets,
    credentials: NodeCredentials,
    network: ClusterNetwork,
    bookmark_interval: Duration,
}

/// The secrets that let a node register: the server token's (which agents of clusters made
/// before the agent token still hold) and the agent token's.
#[derive(Clone)]
pub struct JoinSecrets {
    /// The server token's secret.
    pub server: String,
    /// The agent token's secret.
    pub agent: String,
}

// === impl ControlPlane ===

impl ControlPlane {
    /// A handler over `store` and `hub`, signing node certificates with `ca`, accepting agents
    /// that know one of `secrets` and node certificates that `credentials` says are current,
    /// and handing out `network`.
    pub fn new(
        store: Store,
        hub: LeaseHub,
        ca: Arc<ClusterCa>,
        secrets: JoinSecrets,
        credentials: NodeCredentials,
        network: ClusterNetwork,
    ) -> ControlPlane {
        ControlPlane {
            store,
            hub,
            ca,
            secrets,
            credentials,
            network,
            bookmark_interval: BOOKMARK_INTERVAL,
        }
    }

    /// Sets how often an idle lease watch gets a bookmark (default [`BOOKMARK_INTERVAL`], which
    /// agents expect: they reconnect after three silent intervals).
    pub fn with_bookmark_interval(mut self, interval: Duration) -> ControlPlane {
        self.bookmark_interval = interval;
        self
    }

    /// The lease hub.
    pub fn hub(&self) -> &LeaseHub {
        &self.hub
    }

    /// Which node certificates are current.
    pub fn credentials(&self) -> &NodeCredentials {
        &self.credentials
    }

    /// The node a request speaks for: its client certificate must be a node's, and that node's
    /// current one (not one issued before it, nor one of a deleted node).
    pub async fn node_only(&self, peer: &Peer) -> Result<String, Response<Body>> {
        let (Some(ClientIdentity::Node(name)), Some(fingerprint)) =
            (&peer.identity, &peer.fingerprint)
        else {
            return Err(error_response(
                StatusCode::UNAUTHORIZED,
                "this endpoint needs a node certificate: register first",
            ));
        };
        if !self.credentials.is_current(name, fingerprint).await {
            return Err(error_response(
                StatusCode::UNAUTHORIZED,
                format!(
                    "this certificate is no longer node {name}'s: the node was deleted or was issued a newer one; register again"
                ),
            ));
        }
        Ok(name.clone())
    }

    async fn route(&self, req: Request<Incoming>, peer: Peer) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        match (method, path.as_str()) {
            (Method::GET, CACERTS_PATH) => Response::new(full(self.ca.cert_pem().to_owned())),
            (Method::GET, CONFIG_PATH) => match self.check_token(&req) {
                Ok(()) => json_response(StatusCode::OK, &self.network.to_json()),
                Err(r) => r,
            },
            (Method::POST, REGISTER_PATH) => {
                let response = match self.check_token(&req) {
                    Ok(()) => self.register(req).await,
                    Err(r) => r,
                };
                self.hub.metrics().registration(match response.status() {
                    StatusCode::OK => Registration::Ok,
                    StatusCode::BAD_REQUEST => Registration::BadRequest,
                    StatusCode::UNAUTHORIZED => Registration::Unauthorized,
                    StatusCode::FORBIDDEN => Registration::PasswordRejected,
                    StatusCode::CONFLICT => Registration::Conflict,
                    _ => Registration::Error,
                });
                response
            }
            (Method::GET, LEASES_PATH) => match self.node_only(&peer).await {
                Ok(node) => {
                    let fingerprint = peer.fingerprint.unwrap_or_default();
                    self.leases(req.uri().query(), node, fingerprint).await
                }
                Err(r) => r,
            },
            (Method::GET, SERVERS_PATH) => match self.node_only(&peer).await {
                Ok(_) => match list_servers(&self.store).await {
                    Ok(servers) => json_response(StatusCode::OK, &servers),
                    Err(e) => store_error(&e),
                },
                Err(r) => r,
            },
            (Method::PUT, PODS_PATH) => match self.node_only(&peer).await {
                Ok(node) => crate::pods::report(&self.store, &node, req.into_body()).await,
                Err(r) => r,
            },
            (Method::GET, NODES_PATH) => match admin_only(&peer) {
                Ok(()) => self.list_nodes().await,
                Err(r) => r,
            },
            (Method::DELETE, p) if p.starts_with(NODES_PATH) && p.len() > NODES_PATH.len() + 1 => {
                match admin_only(&peer) {
                    Ok(()) => self.delete_node(&p[NODES_PATH.len() + 1..]).await,
                    Err(r) => r,
                }
            }
            _ => error_response(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
        }
    }

    fn check_token(&self, req: &Request<Incoming>) -> Result<(), Response<Body>> {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(secret)
                if secrets_equal(secret, &self.secrets.agent)
                    | secrets_equal(secret, &self.secrets.server) =>
            {
                Ok(())
            }
            _ => Err(error_response(
                StatusCode::UNAUTHORIZED,
                "the token is wrong: use the agent token from a server's <data-dir>/server/agent-token",
            )),
        }
    }

    async fn register(&self, req: Request<Incoming>) -> Response<Body> {
        let password = req
            .headers()
            .get(NODE_PASSWORD_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = match read_body(req.into_body(), MAX_REQUEST).await {
            Ok(b) => b,
            Err(e) => return error_response(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let request: RegisterRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return error_response(StatusCode::BAD_REQUEST, format!("bad registration: {e}"));
            }
        };
        let Some(password) = password.filter(|p| !p.is_empty() && p.len() <= 256) else {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("the {NODE_PASSWORD_HEADER} header is missing"),
            );
        };
        match self.admit(&request, &password).await {
            Ok(response) => json_response(StatusCode::OK, &response),
            Err(response) => response,
        }
    }

    async fn admit(
        &self,
        request: &RegisterRequest,
        password: &str,
    ) -> Result<RegisterResponse, Response<Body>> {
        let name = &request.node_name;
        if !is_dns1123_subdomain(name) {
            return Err(error_response(
                StatusCode::BAD_REQUEST,
                format!("node name {name:?} is not a valid RFC 1123 subdomain; set --node-name"),
            ));
        }
        // What identifies the node to its peers and to the egress selector is its own: the
        // claims and the record are one transaction, so two servers can't both hand one out,
        // and a refused node leaves nothing behind.
        let claims = Claim::of_node(&request.node_ips, &request.external_ips, &request.backend);
        // The certificate is issued first, so its fingerprint is written with the record: from
        // that write on it is the only one that speaks for the node.
        let cert = self
            .ca
            .issue_node(name)
            .map_err(|e| error_response(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let fingerprint = pem_fingerprint(&cert.cert_pem)
            .map_err(|e| error_response(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let mut attempts = 0;
        loop {
            let existing = self
                .store
                .get_node(name)
                .await
                .map_err(|e| store_error(&e))?;
            let node = match &existing {
                Some(v) if !verify_node_password(&v.value.password_hash, password) => {
                    tracing::warn!(node = %name, "refused a node whose password does not match");
                    return Err(error_response(
                        StatusCode::FORBIDDEN,
                        "Node password rejected, duplicate hostname or contents of '<data-dir>/agent/node-password' may not match server node-passwd entry, try enabling a unique node name with the --with-node-id flag",
                    ));
                }
                Some(v) => NodeRecord {
                    node_ips: request.node_ips.clone(),
                    external_ips: request.external_ips.clone(),
                    cert_fingerprint: Some(fingerprint.clone()),
                    ..v.value.clone()
                },
                None => NodeRecord {
                    name: name.clone(),
                    password_hash: hash_node_password(password),
                    node_ips: request.node_ips.clone(),
                    external_ips: request.external_ips.clone(),
                    created_at: UnixTime::now(),
                    cert_fingerprint: Some(fingerprint.clone()),
                    claims: Vec::new(),
                },
            };
            let expected = existing.as_ref().map(|v| v.revision);
            match self.store.claim_node(&node, &claims, expected).await {
                Ok(Some(_)) => {
                    if existing.is_none() {
                        self.hub.metrics().nodes.inc();
                        tracing::info!(node = %name, "node joined");
                    }
                    break;
                }
                // Registered or changed meanwhile (by another server): check again.
                Ok(None) if attempts < MAX_ATTEMPTS => attempts += 1,
                Ok(None) => {
                    return Err(error_response(
                        StatusCode::CONFLICT,
                        format!("node {name} kept changing while it registered; try again"),
                    ));
                }
                Err(e) => {
                    if let StoreError::Claimed { .. } = e {
                        tracing::warn!(node = %name, error = %e, "refused a node that claims another's identity");
                    }
                    return Err(store_error(&e));
                }
            }
        }
        // Only the enabled families get a fabric address, as flannel's lease attributes.
        let cluster = &self.network.cluster_cidr;
        let attrs = LeaseAttrs {
            public_ipv4: public_ip(request, self.network.flannel_external_ip, true)
                .filter(|_| cluster.get(Family::Ipv4).is_some())
                .and_then(|ip| match ip {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                }),
            public_ipv6: public_ip(request, self.network.flannel_external_ip, false)
                .filter(|_| cluster.get(Family::Ipv6).is_some())
                .and_then(|ip| match ip {
                    IpAddr::V6(v6) => Some(v6),
                    IpAddr::V4(_) => None,
                }),
            backend: request.backend.clone(),
        };
        let masks = NodeMaskSizes {
            ipv4: self.network.node_cidr_mask_size_ipv4,
            ipv6: self.network.node_cidr_mask_size_ipv6,
        };
        let allocation = self
            .store
            .allocate_lease_within(
                name,
                &self.network.cluster_cidr,
                masks,
                node_cidr_bounds(&self.network),
                &attrs,
            )
            .await
            .map_err(|e| store_error(&e))?;
        if allocation.created {
            tracing::info!(node = %name, ipv4 = ?allocation.lease.ipv4_cidr.map(|c| c.to_string()), ipv6 = ?allocation.lease.ipv6_cidr.map(|c| c.to_string()), "allocated a lease");
        }
        let servers = list_servers(&self.store)
            .await
            .map_err(|e| store_error(&e))?;
        Ok(RegisterResponse {
            lease: allocation.lease,
            cluster: self.network.to_json(),
            node_cert_pem: cert.cert_pem,
            node_key_pem: cert.key_pem,
            servers,
        })
    }

    async fn leases(
        &self,
        query: Option<&str>,
        node: String,
        fingerprint: String,
    ) -> Response<Body> {
        let watch = query
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("watch=")))
            .map(str::parse::<u64>);
        match watch {
            None => json_response(StatusCode::OK, &self.hub.snapshot()),
            Some(Err(_)) => {
                error_response(StatusCode::BAD_REQUEST, "watch= must be a revision number")
            }
            Some(Ok(from)) => self.watch(from, node, fingerprint).await,
        }
    }

    /// A streaming response of JSON lines: the backlog, then live events, with bookmarks.
    ///
    /// The body is a stream over the hub's feed that hyper polls when the connection can take
    /// more: no task and no queue per watcher, and every event's line is the hub's, shared.
    /// It ends as soon as `node`'s certificate with `fingerprint` is revoked.
    async fn watch(&self, from: u64, node: String, fingerprint: String) -> Response<Body> {
        let subscribed = match self.hub.subscribe(from) {
            // A revision ahead of this server's: an agent failing over from a server that is
            // further along. It is good if the store has reached it.
            Err(_) if from > self.hub.revision() => {
                let store = self.store.kv().revision().await.map_or(0, |r| r.get());
                self.hub.subscribe_within(from, store)
            }
            other => other,
        };
        let sub = match subscribed {
            Ok(sub) => sub,
            Err(oldest) => {
                let line = event_line(&LeaseEvent::Compacted { oldest });
                return Response::new(full(line));
            }
        };
        let watching = Watching::new(
            sub,
            self.bookmark_interval,
            self.hub.metrics().clone(),
            Holder {
                held: self.credentials.watch(&node),
                node,
                fingerprint,
            },
        );
        let stream = futures::stream::unfold(watching, |mut watching| async move {
            let line = watching.next_line().await?;
            Some((Ok::<_, std::io::Error>(Frame::data(line)), watching))
        });
        let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/x-ndjson"),
        );
        response
    }

    async fn list_nodes(&self) -> Response<Body> {
        match self.store.list_nodes().await {
            Ok(nodes) => {
                let leases = self.hub.snapshot();
                let rows: Vec<NodeInfo> = nodes
                    .items
                    .into_iter()
                    .map(|n| {
                        let lease = leases.leases.iter().find(|l| l.node_name == n.value.name);
                        NodeInfo {
                            ipv4_cidr: lease.and_then(|l| l.ipv4_cidr),
                            ipv6_cidr: lease.and_then(|l| l.ipv6_cidr),
                            name: n.value.name,
                            node_ips: n.value.node_ips,
                            external_ips: n.value.external_ips,
                            created_at: n.value.created_at.0,
                        }
                    })
                    .collect();
                json_response(StatusCode::OK, &rows)
            }
            Err(e) => store_error(&e),
        }
    }

    async fn delete_node(&self, name: &str) -> Response<Body> {
        match self.store.delete_node(name).await {
            Ok(true) => {
                self.hub.metrics().node_deletions.inc();
                self.hub.metrics().nodes.dec();
                tracing::info!(node = %name, "node deleted; its lease is released");
                json_response(StatusCode::OK, &serde_json::json!({ "deleted": name }))
            }
            Ok(false) => error_response(StatusCode::NOT_FOUND, format!("no node named {name}")),
            Err(e) => store_error(&e),
        }
    }
}

impl Handler for ControlPlane {
    fn handle(
        &self,
        request: Request<Incoming>,
        peer: Peer,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send + '_>> {
        Box::pin(self.route(request, peer))
    }
}

/// The address peers send a node's fabric traffic to: its external IP of the family with
/// `flannel-external-ip` (when it has one), else its node IP of the family.
fn public_ip(request: &RegisterRequest, external: bool, ipv4: bool) -> Option<IpAddr> {
    let of_family = |ips: &[IpAddr]| ips.iter().copied().find(|ip| ip.is_ipv4() == ipv4);
    external
        .then(|| of_family(&request.external_ips))
        .flatten()
        .or_else(|| of_family(&request.node_ips))
}

fn admin_only(peer: &Peer) -> Result<(), Response<Body>> {
    match &peer.identity {
        Some(ClientIdentity::Admin) => Ok(()),
        _ => Err(error_response(
            StatusCode::FORBIDDEN,
            "this endpoint needs the admin certificate (<data-dir>/server/tls/client-admin.crt)",
        )),
    }
}

fn store_error(e: &StoreError) -> Response<Body> {
    let status = match e {
        StoreError::Ipam(_) => StatusCode::SERVICE_UNAVAILABLE,
        StoreError::InvalidName { .. } => StatusCode::BAD_REQUEST,
        StoreError::Claimed { .. } => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    tracing::warn!(error = %e, "store request failed");
    error_response(status, e.to_string())
}

/// One agent's lease watch: the backlog, a bookmark where it ends, then the hub's feed with a
/// bookmark whenever it was quiet for a bookmark interval.
struct Watching {
    backlog: std::vec::IntoIter<Arc<HubEvent>>,
    bookmarked: bool,
    feed: broadcast::Receiver<Arc<HubEvent>>,
    /// The revision the agent has everything up to.
    revision: u64,
    bookmark_interval: Duration,
    metrics: ControlMetrics,
    holder: Holder,
}

/// Whose certificate a watch runs on, and the channel that ends it once the node holds
/// another (or none).
struct Holder {
    node: String,
    fingerprint: String,
    /// What the node holds now (its channel in [`NodeCredentials`]).
    held: watch::Receiver<Held>,
}

// === impl Watching ===

impl Watching {
    fn new(
        sub: Subscription,
        bookmark_interval: Duration,
        metrics: ControlMetrics,
        holder: Holder,
    ) -> Watching {
        metrics.lease_watchers.inc();
        Watching {
            backlog: sub.backlog.into_iter(),
            bookmarked: false,
            feed: sub.feed,
            revision: sub.revision,
            bookmark_interval,
            metrics,
            holder,
        }
    }

    /// The next line to send; `None` ends the watch.
    async fn next_line(&mut self) -> Option<Bytes> {
        if let Some(event) = self.backlog.next() {
            return Some(self.deliver(&event));
        }
        if !self.bookmarked {
            // Say where the backlog ended, so the agent can resume from there.
            self.bookmarked = true;
            return Some(self.bookmark());
        }
        loop {
            let received = tokio::select! {
                received = tokio::time::timeout(self.bookmark_interval, self.feed.recv()) => received,
                changed = self.holder.held.changed() => {
                    let admitted = changed.is_ok()
                        && self.holder.held.borrow_and_update().admits(&self.holder.fingerprint);
                    if admitted {
                        continue;
                    }
                    tracing::info!(node = %self.holder.node, "ended a lease watch whose certificate was revoked");
                    return None;
                }
            };
            match received {
                // Already in the backlog, or known to the agent.
                Ok(Ok(event)) if event.event.revision() <= self.revision => {}
                Ok(Ok(event)) => {
                    self.revision = event.event.revision();
                    return Some(self.deliver(&event));
                }
                // Too slow to keep up: end the stream; the agent resumes from its revision,
                // or lists again.
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                    self.metrics.watch_lagged.inc();
                    return None;
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => return None,
                Err(_) => return Some(self.bookmark()),
            }
        }
    }

    fn deliver(&self, event: &HubEvent) -> Bytes {
        self.metrics
            .event_delivery
            .observe(event.published.elapsed().as_secs_f64());
        event.line.clone()
    }

    fn bookmark(&self) -> Bytes {
        event_line(&LeaseEvent::Bookmark {
            revision: self.revision,
        })
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.metrics.lease_watchers.dec();
    }
}

/// flannel-conf's `SubnetMin`/`SubnetMax` (and the IPv6 pair) as node CIDR bounds for the
/// allocator; weft-config checked that each is a node CIDR's address inside the cluster CIDR.
fn node_cidr_bounds(network: &ClusterNetwork) -> NodeCidrBounds {
    let v4 = |a: Option<std::net::Ipv4Addr>| {
        a.and_then(|a| Ipv4Cidr::new(a, network.node_cidr_mask_size_ipv4))
    };
    let v6 = |a: Option<std::net::Ipv6Addr>| {
        a.and_then(|a| Ipv6Cidr::new(a, network.node_cidr_mask_size_ipv6))
    };
    let (min4, max4) = network.subnet_bounds_ipv4();
    let (min6, max6) = network.subnet_bounds_ipv6();
    NodeCidrBounds {
        ipv4: (v4(min4), v4(max4)),
        ipv6: (v6(min6), v6(max6)),
    }
}
