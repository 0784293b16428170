//! Prometheus metrics: the agent's own, the process's, and the `/metrics` endpoint that both
//! daemons serve on `metrics-address` (plain HTTP/1.1; the default address is loopback),
//! beside `/healthz` and `/readyz` (see [`crate::health`]).
//!
//! A daemon builds one [`Registry`], registers [`AgentMetrics`] (and, in `weft-server`,
//! weft-control's metrics, so the embedded agent shares the server's endpoint) and
//! [`register_process`], then [`spawn`]s the endpoint with its [`Readiness`].
//!
//! | metric | type | what |
//! |---|---|---|
//! | `weft_agent_reconcile_duration_seconds` | histogram | one reconcile: a lease change or a repair (plan and apply its objects), or a full one (observe the kernel, plan, apply, write the files) |
//! | `weft_agent_reconciles_total{result}` | counter | reconciles, `ok` or `error` |
//! | `weft_agent_reconcile_operations_total{op}` | counter | kernel operations applied, by kind (`replace_route`, `delete_fdb`, ...) |
//! | `weft_agent_peers` | gauge | peers' leases the agent programs |
//! | `weft_agent_lease_updates_total{kind}` | counter | lease updates received: `snapshot`, `put`, `delete` |
//! | `weft_agent_lease_watch_reconnects_total{server}` | counter | times the lease source lost a server (the one it left) and moved to the next |
//! | `weft_agent_tunnel_sessions` | gauge | egress tunnel sessions to servers (none in `disabled` mode) |
//! | `weft_agent_tunnel_streams` | gauge | streams across them: connections the servers relay through this node |
//! | `process_resident_memory_bytes` | gauge | the daemon's resident memory |
//! | `process_open_fds` | gauge | the daemon's open file descriptors |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Unit;
use tokio::net::TcpListener;
use weft_fabric::{Op, Plan};

use crate::NodeError;
use crate::health::Readiness;
use crate::source::LeaseUpdate;

pub use prometheus_client::registry::Registry;

/// The content type of the OpenMetrics text format, which Prometheus scrapes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A label set of one label.
type Label = [(&'static str, &'static str); 1];

/// A label whose value is only known at run time (a server's URL).
type OwnedLabel = [(&'static str, String); 1];

/// Handles to the agent's metrics; clones share them. Unregistered handles cost next to
/// nothing, so the runtime always keeps them.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    reconcile_duration: Histogram,
    reconciles: Family<Label, Counter>,
    operations: Family<Label, Counter>,
    peers: Gauge,
    lease_updates: Family<Label, Counter>,
    watch_reconnects: Family<OwnedLabel, Counter>,
    tunnel_sessions: Gauge,
    tunnel_streams: Gauge,
}

// === impl AgentMetrics ===

impl AgentMetrics {
    /// Fresh metrics, not yet registered anywhere.
    pub fn new() -> AgentMetrics {
        let metrics = AgentMetrics {
            // 1 ms to about 33 s.
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            reconciles: Family::default(),
            operations: Family::default(),
            peers: Gauge::default(),
            lease_updates: Family::default(),
            watch_reconnects: Family::default(),
            tunnel_sessions: Gauge::default(),
            tunnel_streams: Gauge::default(),
        };
        // Known label values start at zero, so rates work from the first scrape.
        for result in ["ok", "error"] {
            drop(metrics.reconciles.get_or_create(&[("result", result)]));
        }
        for kind in ["snapshot", "put", "delete"] {
            drop(metrics.lease_updates.get_or_create(&[("kind", kind)]));
        }
        metrics
    }

    /// Registers every metric (named `weft_agent_*`) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let agent = registry.sub_registry_with_prefix("weft_agent");
        agent.register_with_unit(
            "reconcile_duration",
            "One reconcile: a lease change or repair (plan and apply its objects), or a full one (observe the kernel, plan, apply, write the files)",
            Unit::Seconds,
            self.reconcile_duration.clone(),
        );
        agent.register(
            "reconciles",
            "Reconciles by result",
            self.reconciles.clone(),
        );
        agent.register(
            "reconcile_operations",
            "Kernel operations applied, by kind",
            self.operations.clone(),
        );
        agent.register(
            "peers",
            "Peers' leases the agent programs",
            self.peers.clone(),
        );
        agent.register(
            "lease_updates",
            "Lease updates received, by kind",
            self.lease_updates.clone(),
        );
        agent.register(
            "lease_watch_reconnects",
            "Times the lease source lost a server (the one it left) and moved to the next",
            self.watch_reconnects.clone(),
        );
        agent.register(
            "tunnel_sessions",
            "Tunnel sessions to servers",
            self.tunnel_sessions.clone(),
        );
        agent.register(
            "tunnel_streams",
            "Streams across the tunnel sessions",
            self.tunnel_streams.clone(),
        );
    }

    /// The gauge of tunnel sessions, for the tunnel client to keep.
    pub fn tunnel_sessions(&self) -> &Gauge {
        &self.tunnel_sessions
    }

    /// The gauge of streams across the tunnel sessions.
    pub fn tunnel_streams(&self) -> &Gauge {
        &self.tunnel_streams
    }

    /// Counts a reconcile that applied `plan` in `took`.
    pub(crate) fn reconciled(&self, took: Duration, plan: &Plan) {
        self.reconcile_duration.observe(took.as_secs_f64());
        self.reconciles.get_or_create(&[("result", "ok")]).inc();
        for op in &plan.ops {
            self.operations.get_or_create(&[("op", op_kind(op))]).inc();
        }
    }

    /// Counts a reconcile that failed.
    pub(crate) fn reconcile_failed(&self) {
        self.reconciles.get_or_create(&[("result", "error")]).inc();
    }

    /// Counts a lease update.
    pub(crate) fn lease_update(&self, update: &LeaseUpdate) {
        let kind = match update {
            LeaseUpdate::Snapshot(_) => "snapshot",
            LeaseUpdate::Put(_) => "put",
            LeaseUpdate::Delete(_) => "delete",
        };
        self.lease_updates.get_or_create(&[("kind", kind)]).inc();
    }

    /// Sets how many peers the agent programs.
    pub(crate) fn set_peers(&self, peers: usize) {
        self.peers.set(i64::try_from(peers).unwrap_or(i64::MAX));
    }

    /// Counts a lost connection to `server`, which the agent leaves for the next server.
    pub(crate) fn reconnect(&self, server: &str) {
        self.watch_reconnects
            .get_or_create(&[("server", server.to_owned())])
            .inc();
    }
}

impl Default for AgentMetrics {
    fn default() -> AgentMetrics {
        AgentMetrics::new()
    }
}

/// The `op` label of a kernel operation.
fn op_kind(op: &Op) -> &'static str {
    match op {
        Op::DeleteRoute(..) => "delete_route",
        Op::DeleteNeighbour { .. } => "delete_neighbour",
        Op::DeleteFdb { .. } => "delete_fdb",
        Op::DeleteWgPeer { .. } => "delete_wg_peer",
        Op::DeleteAddress(..) => "delete_address",
        Op::DeleteLink { .. } => "delete_link",
        Op::DeleteFirewall { .. } => "delete_firewall",
        Op::SetSysctl { .. } => "set_sysctl",
        Op::AddLink(..) => "add_link",
        Op::SetLink { .. } => "set_link",
        Op::AddAddress(..) => "add_address",
        Op::ReplaceNeighbour { .. } => "replace_neighbour",
        Op::ReplaceFdb { .. } => "replace_fdb",
        Op::ReplaceWgPeer { .. } => "replace_wg_peer",
        Op::ReplaceRoute(..) => "replace_route",
        Op::ReplaceFirewall { .. } => "replace_firewall",
    }
}

/// Registers the process metrics (`process_resident_memory_bytes`, `process_open_fds`), read
/// from `/proc/self` at each scrape.
pub fn register_process(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector));
}

#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let rss_kib = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            });
        if let Some(kib) = rss_kib {
            let gauge = ConstGauge::new(kib.saturating_mul(1024));
            let metric = encoder.encode_descriptor(
                "process_resident_memory",
                "Resident memory of the process",
                Some(&Unit::Bytes),
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            let gauge = ConstGauge::new(i64::try_from(fds.count()).unwrap_or(i64::MAX));
            let metric = encoder.encode_descriptor(
                "process_open_fds",
                "Open file descriptors of the process",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

/// The registry's metrics in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String can't fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

/// Binds the metrics endpoint at `addr` (`metrics-address`).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| NodeError::MetricsListen {
            addr,
            reason: e.to_string(),
        })
}

/// Serves `registry`, `/healthz` and `readiness` on `addr` in a task until the returned handle
/// is dropped.
///
/// When `addr` can't be bound, it logs why and serves nothing: a daemon's network matters
/// more than its metrics.
pub async fn spawn(addr: SocketAddr, registry: Registry, readiness: Readiness) -> Serving {
    match bind(addr).await {
        Ok(listener) => {
            tracing::debug!(%addr, "serving /metrics, /healthz and /readyz");
            Serving(Some(tokio::spawn(serve(
                listener,
                Arc::new(registry),
                readiness,
            ))))
        }
        Err(e) => {
            tracing::error!("{e}; running without /metrics");
            Serving(None)
        }
    }
}

/// The task serving `/metrics`, stopped when dropped.
#[derive(Debug)]
pub struct Serving(Option<tokio::task::JoinHandle<()>>);

impl Serving {
    /// Whether the endpoint is served (its address could be bound).
    pub fn is_serving(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Serves `GET /metrics`, `/healthz` and `/readyz` (plain HTTP/1.1) on `listener` until the
/// future is dropped.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>, readiness: Readiness) {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let registry = registry.clone();
                let readiness = readiness.clone();
                async move { Ok::<_, Infallible>(respond(&req, &registry, &readiness)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await
            {
                tracing::debug!(error = %e, "metrics: connection ended with an error");
            }
        });
    }
}

fn respond(
    req: &Request<hyper::body::Incoming>,
    registry: &Registry,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, CONTENT_TYPE, encode(registry)),
        (&Method::GET, "/healthz") => (StatusCode::OK, TEXT, "ok\n".to_owned()),
        (&Method::GET, "/readyz") => match readiness.check() {
            Ok(()) => (StatusCode::OK, TEXT, "ok\n".to_owned()),
            Err(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                format!("not ready: {reason}\n"),
            ),
        },
        (_, "/metrics" | "/healthz" | "/readyz") => {
            (StatusCode::METHOD_NOT_ALLOWED, TEXT, "use GET\n".to_owned())
        }
        _ => (
            StatusCode::NOT_FOUND,
            TEXT,
            "this endpoint serves /metrics, /healthz and /readyz\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}
