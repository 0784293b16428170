//! The agent's side of the protocol: bootstrap trust from a join token, register, then list
//! and watch leases with the node's own certificate.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use rustls::ClientConfig;
use serde::de::DeserializeOwned;

use crate::http::{read_body, send};
use crate::pki::{CertifiedKey, ca_hash};
use crate::protocol::{
    CACERTS_PATH, CONFIG_PATH, ErrorBody, LEASES_PATH, LeaseEvent, LeaseSnapshot,
    NODE_PASSWORD_HEADER, NODES_PATH, NodeInfo, PODS_PATH, PodReport, REGISTER_PATH,
    RegisterRequest, RegisterResponse, SERVERS_PATH,
};
use crate::tls::{bootstrap_client_config, client_config};
use crate::{ApiError, JoinToken};

/// The largest JSON message weft reads (a lease list of 5,000 nodes is about 1.5 MB).
const MAX_MESSAGE: usize = 64 << 20;
/// The longest line of a lease watch.
const MAX_EVENT_LINE: usize = 1 << 20;
/// How long a request (everything but a lease watch) may take from connecting to the last byte
/// of its answer, beside [`send`]'s deadlines for each step: a server that stops halfway is
/// abandoned as unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The CA an agent trusts after bootstrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedCa {
    /// The CA bundle, PEM.
    pub ca_pem: String,
    /// Whether the token pinned it (`K10` token); `false` means trusted on first use.
    pub pinned: bool,
}

/// Fetches the server's CA bundle and checks it against the token's hash, before anything
/// secret is sent. A bare-secret token trusts the bundle as fetched (`pinned: false`).
pub async fn fetch_ca(server: &str, token: &JoinToken) -> Result<TrustedCa, ApiError> {
    let body = exchange(
        server,
        bootstrap_client_config()?,
        &url(server, CACERTS_PATH),
        get(),
    )
    .await?;
    let ca_pem = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::Protocol(format!("{server}{CACERTS_PATH} is not PEM text")))?;
    let got = ca_hash(ca_pem.as_bytes());
    match &token.ca_hash {
        Some(expected) if *expected != got => Err(ApiError::CaMismatch {
            server: server.to_owned(),
            expected: expected.clone(),
            got,
        }),
        Some(_) => Ok(TrustedCa {
            ca_pem,
            pinned: true,
        }),
        None => Ok(TrustedCa {
            ca_pem,
            pinned: false,
        }),
    }
}

/// Reads the cluster network settings (weft-config's JSON) with the token, so the agent can
/// set up its backend before it registers.
pub async fn cluster_config(
    server: &str,
    ca: &TrustedCa,
    token: &JoinToken,
) -> Result<serde_json::Value, ApiError> {
    let req = Request::builder()
        .uri(CONFIG_PATH)
        .header(hyper::header::HOST, host_header(server))
        .header(
            hyper::header::AUTHORIZATION,
            format!("Bearer {}", token.secret),
        )
        .body(Full::new(Bytes::new()))
        .map_err(|e| ApiError::Protocol(e.to_string()))?;
    let body = exchange(
        server,
        client_config(&ca.ca_pem, None)?,
        &url(server, CONFIG_PATH),
        req,
    )
    .await?;
    parse(server, &body)
}

/// Registers this node with `server`, proving knowledge of the token and the node password.
pub async fn register(
    server: &str,
    ca: &TrustedCa,
    token: &JoinToken,
    node_password: &str,
    request: &RegisterRequest,
) -> Result<RegisterResponse, ApiError> {
    let body = serde_json::to_vec(request).map_err(|e| ApiError::Protocol(e.to_string()))?;
    let req = Request::builder()
        .method(Method::POST)
        .uri(REGISTER_PATH)
        .header(hyper::header::HOST, host_header(server))
        .header(
            hyper::header::AUTHORIZATION,
            format!("Bearer {}", token.secret),
        )
        .header(NODE_PASSWORD_HEADER, node_password)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| ApiError::Protocol(e.to_string()))?;
    let body = exchange(
        server,
        client_config(&ca.ca_pem, None)?,
        &url(server, REGISTER_PATH),
        req,
    )
    .await?;
    parse(server, &body)
}

/// A registered node's connection settings: the pinned CA and the node's certificate.
#[derive(Clone)]
pub struct NodeClient {
    tls: Arc<ClientConfig>,
}

/// A lease watch: events from one server, in revision order.
pub struct LeaseWatch {
    body: Incoming,
    buffer: BytesMut,
    server: String,
}

// === impl NodeClient ===

impl NodeClient {
    /// A client that trusts `ca_pem` and presents `identity`.
    pub fn new(ca_pem: &str, identity: &CertifiedKey) -> Result<NodeClient, ApiError> {
        Ok(NodeClient {
            tls: client_config(ca_pem, Some(identity))?,
        })
    }

    /// Every lease, with the revision to watch from.
    pub async fn list_leases(&self, server: &str) -> Result<LeaseSnapshot, ApiError> {
        let body = exchange(
            server,
            self.tls.clone(),
            &url(server, LEASES_PATH),
            get_path(server, LEASES_PATH),
        )
        .await?;
        parse(server, &body)
    }

    /// Every server's URL, as the cluster knows them.
    pub async fn servers(&self, server: &str) -> Result<Vec<String>, ApiError> {
        let body = exchange(
            server,
            self.tls.clone(),
            &url(server, SERVERS_PATH),
            get_path(server, SERVERS_PATH),
        )
        .await?;
        parse(server, &body)
    }

    /// Reports every pod on this node (egress `cluster` mode); the server replaces the node's
    /// earlier report with it.
    pub async fn report_pods(&self, server: &str, report: &PodReport) -> Result<(), ApiError> {
        let body = serde_json::to_vec(report).map_err(|e| ApiError::Protocol(e.to_string()))?;
        let request = Request::builder()
            .method(Method::PUT)
            .uri(PODS_PATH)
            .header(hyper::header::HOST, host_header(server))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ApiError::Protocol(e.to_string()))?;
        exchange(server, self.tls.clone(), &url(server, PODS_PATH), request)
            .await
            .map(|_| ())
    }

    /// Watches leases from after `revision`.
    pub async fn watch_leases(&self, server: &str, revision: u64) -> Result<LeaseWatch, ApiError> {
        let path = format!("{LEASES_PATH}?watch={revision}");
        // The head within `send`'s deadlines; the events as long as they come (the agent's
        // idle timeout ends a silent watch).
        let response = send(
            self.tls.clone(),
            &url(server, &path),
            get_path(server, &path),
        )
        .await?;
        if response.status() != StatusCode::OK {
            return Err(rejected(server, response).await);
        }
        Ok(LeaseWatch {
            body: response.into_body(),
            buffer: BytesMut::new(),
            server: server.to_owned(),
        })
    }
}

// === impl LeaseWatch ===

impl LeaseWatch {
    /// The next event, or `None` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<LeaseEvent>, ApiError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line = self.buffer.split_to(end + 1);
                let event = serde_json::from_slice(&line[..end]).map_err(|e| {
                    ApiError::Protocol(format!("bad lease event from {}: {e}", self.server))
                })?;
                return Ok(Some(event));
            }
            if self.buffer.len() > MAX_EVENT_LINE {
                return Err(ApiError::Protocol(format!(
                    "a lease event from {} is longer than {MAX_EVENT_LINE} bytes",
                    self.server
                )));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(ApiError::Unreachable {
                        url: self.server.clone(),
                        reason: e.to_string(),
                    });
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

fn url(server: &str, path: &str) -> String {
    format!("{}{path}", server.trim_end_matches('/'))
}

fn host_header(server: &str) -> String {
    server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned()
}

fn get() -> Request<Full<Bytes>> {
    Request::builder()
        .uri(CACERTS_PATH)
        .body(Full::new(Bytes::new()))
        .unwrap_or_default()
}

fn get_path(server: &str, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(path)
        .header(hyper::header::HOST, host_header(server))
        .body(Full::new(Bytes::new()))
        .unwrap_or_default()
}

async fn checked(server: &str, response: Response<Incoming>) -> Result<Bytes, ApiError> {
    if response.status() != StatusCode::OK {
        return Err(rejected(server, response).await);
    }
    read_body(response.into_body(), MAX_MESSAGE).await
}

/// Sends `request` to `url` and reads the whole answer within [`REQUEST_TIMEOUT`]: the body
/// of a `200`, else the server's refusal.
async fn exchange(
    server: &str,
    tls: Arc<ClientConfig>,
    url: &str,
    request: Request<Full<Bytes>>,
) -> Result<Bytes, ApiError> {
    let answer = async {
        let response = send(tls, url, request).await?;
        checked(server, response).await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, answer)
        .await
        .map_err(|_| ApiError::Unreachable {
            url: url.to_owned(),
            reason: format!("no whole answer within {} s", REQUEST_TIMEOUT.as_secs_f64()),
        })?
}

fn parse<T: DeserializeOwned>(server: &str, body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::Protocol(format!("unexpected answer from {server}: {e}")))
}

async fn rejected(server: &str, response: Response<Incoming>) -> ApiError {
    let status = response.status().as_u16();
    let body = read_body(response.into_body(), 64 << 10)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<ErrorBody>(&body)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
    ApiError::Rejected {
        server: server.to_owned(),
        status,
        message,
    }
}

/// The admin's client (the `CN=system:admin, O=system:masters` certificate): node management on
/// a server.
#[derive(Clone)]
pub struct AdminClient {
    tls: Arc<ClientConfig>,
}

// === impl AdminClient ===

impl AdminClient {
    /// A client that trusts `ca_pem` and presents the admin certificate `identity`.
    pub fn new(ca_pem: &str, identity: &CertifiedKey) -> Result<AdminClient, ApiError> {
        Ok(AdminClient {
            tls: client_config(ca_pem, Some(identity))?,
        })
    }

    /// Every node with its addresses and pod CIDRs.
    pub async fn list_nodes(&self, server: &str) -> Result<Vec<NodeInfo>, ApiError> {
        let body = exchange(
            server,
            self.tls.clone(),
            &url(server, NODES_PATH),
            get_path(server, NODES_PATH),
        )
        .await?;
        parse(server, &body)
    }

    /// Deletes node `name`: its record and lease go, and every agent removes its routes.
    pub async fn delete_node(&self, server: &str, name: &str) -> Result<(), ApiError> {
        let path = format!("{NODES_PATH}/{name}");
        let req = Request::builder()
            .method(Method::DELETE)
            .uri(&path)
            .header(hyper::header::HOST, host_header(server))
            .body(Full::new(Bytes::new()))
            .map_err(|e| ApiError::Protocol(e.to_string()))?;
        exchange(server, self.tls.clone(), &url(server, &path), req)
            .await
            .map(|_| ())
    }
}
