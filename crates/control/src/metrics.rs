//! The control plane's Prometheus metrics, registered by the daemon into the registry that
//! weft-node serves on `metrics-address` (`/metrics`).
//!
//! | metric | type | what |
//! |---|---|---|
//! | `weft_server_nodes` | gauge | nodes in the cluster store (counted as this server adds and deletes them, and read again every [`REFRESH_INTERVAL`] for the other servers' changes) |
//! | `weft_server_leases` | gauge | leases this server's lease hub holds |
//! | `weft_server_lease_watchers` | gauge | agents' lease watches open on this server |
//! | `weft_server_lease_hub_revision` | gauge | the store revision the lease hub is current at |
//! | `weft_server_store_revision` | gauge | the store's revision (refreshed every [`REFRESH_INTERVAL`]); far ahead of the hub's means the hub's watch is stuck |
//! | `weft_server_lease_event_delivery_seconds` | histogram | from the hub receiving a lease change from the store to handing it to one agent's watch: the watch lag |
//! | `weft_server_lease_watch_lagged_total` | counter | watches ended because the agent read too slowly (it resumes or lists again) |
//! | `weft_server_registrations_total{result}` | counter | registrations: `ok`, `bad_request`, `unauthorized` (wrong token), `password_rejected` (another machine's name), `error` |
//! | `weft_server_node_deletions_total` | counter | nodes deleted through this server |
//! | `weft_server_tunnel_sessions` | gauge | agents' egress tunnel sessions to this server |
//! | `weft_server_tunnel_streams` | gauge | streams across them: CONNECTs relayed through a node |
//! | `weft_server_connections_refused_total{reason}` | counter | API connections closed at accept: `max_connections`, `max_connections_per_address` |
//! | `weft_server_connections_timed_out_total{deadline}` | counter | API connections closed for a missed deadline: `handshake` (10 s), `header` (a request's headers, 10 s), `idle` (nothing moved for 90 s) |

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use weft_api::http::{ConnectionObserver, Dropped};
use weft_store::Store;

/// How often the gauges read from the store are refreshed.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(15);

/// A label set of one label.
type Label = [(&'static str, &'static str); 1];

/// Handles to the control plane's metrics; clones share them.
#[derive(Debug, Clone)]
pub struct ControlMetrics {
    pub(crate) nodes: Gauge,
    pub(crate) leases: Gauge,
    pub(crate) lease_watchers: Gauge,
    pub(crate) hub_revision: Gauge,
    pub(crate) store_revision: Gauge,
    pub(crate) event_delivery: Histogram,
    pub(crate) watch_lagged: Counter,
    pub(crate) registrations: Family<Label, Counter>,
    pub(crate) node_deletions: Counter,
    tunnel_sessions: Gauge,
    tunnel_streams: Gauge,
    connections_refused: Family<Label, Counter>,
    connections_timed_out: Family<Label, Counter>,
}

/// How a registration ended, the `result` label of `weft_server_registrations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Registration {
    Ok,
    BadRequest,
    Unauthorized,
    PasswordRejected,
    /// The node claimed another node's address, VTEP MAC or WireGuard key.
    Conflict,
    Error,
}

// === impl Registration ===

impl Registration {
    fn label(self) -> &'static str {
        match self {
            Registration::Ok => "ok",
            Registration::BadRequest => "bad_request",
            Registration::Unauthorized => "unauthorized",
            Registration::PasswordRejected => "password_rejected",
            Registration::Conflict => "conflict",
            Registration::Error => "error",
        }
    }
}

// === impl ControlMetrics ===

impl ControlMetrics {
    /// Fresh metrics, not yet registered anywhere.
    pub fn new() -> ControlMetrics {
        let metrics = ControlMetrics {
            nodes: Gauge::default(),
            leases: Gauge::default(),
            lease_watchers: Gauge::default(),
            hub_revision: Gauge::default(),
            store_revision: Gauge::default(),
            // 0.5 ms to about 16 s.
            event_delivery: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            watch_lagged: Counter::default(),
            registrations: Family::default(),
            node_deletions: Counter::default(),
            tunnel_sessions: Gauge::default(),
            tunnel_streams: Gauge::default(),
            connections_refused: Family::default(),
            connections_timed_out: Family::default(),
        };
        for why in [
            Dropped::MaxConnections,
            Dropped::MaxConnectionsPerAddress,
            Dropped::HandshakeTimeout,
            Dropped::HeaderTimeout,
            Dropped::IdleTimeout,
        ] {
            drop(metrics.dropped_counter(why));
        }
        // Every result starts at zero, so rates work from the first scrape.
        for result in [
            Registration::Ok,
            Registration::BadRequest,
            Registration::Unauthorized,
            Registration::PasswordRejected,
            Registration::Error,
        ] {
            drop(
                metrics
                    .registrations
                    .get_or_create(&[("result", result.label())]),
            );
        }
        metrics
    }

    /// Registers every metric (named `weft_server_*`) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let server = registry.sub_registry_with_prefix("weft_server");
        server.register("nodes", "Nodes in the cluster store", self.nodes.clone());
        server.register(
            "leases",
            "Leases held by this server's lease hub",
            self.leases.clone(),
        );
        server.register(
            "lease_watchers",
            "Lease watches of agents open on this server",
            self.lease_watchers.clone(),
        );
        server.register(
            "lease_hub_revision",
            "The store revision this server's lease hub is current at",
            self.hub_revision.clone(),
        );
        server.register(
            "store_revision",
            "The store's revision, refreshed periodically",
            self.store_revision.clone(),
        );
        server.register_with_unit(
            "lease_event_delivery",
            "Time from the lease hub receiving a change to handing it to an agent's watch",
            Unit::Seconds,
            self.event_delivery.clone(),
        );
        server.register(
            "lease_watch_lagged",
            "Lease watches ended because the agent read too slowly",
            self.watch_lagged.clone(),
        );
        server.register(
            "registrations",
            "Node registrations by result",
            self.registrations.clone(),
        );
        server.register(
            "node_deletions",
            "Nodes deleted through this server",
            self.node_deletions.clone(),
        );
        server.register(
            "tunnel_sessions",
            "Agents' tunnel sessions to this server",
            self.tunnel_sessions.clone(),
        );
        server.register(
            "tunnel_streams",
            "Streams across the agents' tunnel sessions",
            self.tunnel_streams.clone(),
        );
        server.register(
            "connections_refused",
            "API connections closed at accept because a cap was reached",
            self.connections_refused.clone(),
        );
        server.register(
            "connections_timed_out",
            "API connections closed because they missed a deadline",
            self.connections_timed_out.clone(),
        );
    }

    /// The counter that counts connections dropped for `why`.
    fn dropped_counter(&self, why: Dropped) -> Counter {
        match why {
            Dropped::MaxConnections => self
                .connections_refused
                .get_or_create(&[("reason", "max_connections")])
                .clone(),
            Dropped::MaxConnectionsPerAddress => self
                .connections_refused
                .get_or_create(&[("reason", "max_connections_per_address")])
                .clone(),
            Dropped::HandshakeTimeout => self
                .connections_timed_out
                .get_or_create(&[("deadline", "handshake")])
                .clone(),
            Dropped::HeaderTimeout => self
                .connections_timed_out
                .get_or_create(&[("deadline", "header")])
                .clone(),
            Dropped::IdleTimeout => self
                .connections_timed_out
                .get_or_create(&[("deadline", "idle")])
                .clone(),
        }
    }

    /// The gauge of tunnel sessions, for the tunnel server to keep.
    pub fn tunnel_sessions(&self) -> &Gauge {
        &self.tunnel_sessions
    }

    /// The gauge of streams across the tunnel sessions.
    pub fn tunnel_streams(&self) -> &Gauge {
        &self.tunnel_streams
    }

    /// Counts one registration.
    pub(crate) fn registration(&self, result: Registration) {
        self.registrations
            .get_or_create(&[("result", result.label())])
            .inc();
    }

    /// Reads the node count and the store revision now.
    pub async fn refresh(&self, store: &Store) {
        match store.list_nodes().await {
            Ok(nodes) => {
                self.nodes
                    .set(count(nodes.items.len() + nodes.corrupt.len()));
            }
            Err(e) => tracing::debug!(error = %e, "metrics: listing nodes failed"),
        }
        match store.kv().revision().await {
            Ok(revision) => {
                self.store_revision
                    .set(i64::try_from(revision.get()).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::debug!(error = %e, "metrics: reading the store revision failed"),
        }
    }

    /// Refreshes the store gauges every [`REFRESH_INTERVAL`], forever.
    pub(crate) async fn refresh_forever(self, store: Store) {
        // `start` refreshed once already.
        let first = tokio::time::Instant::now() + REFRESH_INTERVAL;
        let mut interval = tokio::time::interval_at(first, REFRESH_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            self.refresh(&store).await;
        }
    }
}

impl ConnectionObserver for ControlMetrics {
    fn dropped(&self, why: Dropped) {
        self.dropped_counter(why).inc();
    }
}

impl Default for ControlMetrics {
    fn default() -> ControlMetrics {
        ControlMetrics::new()
    }
}

/// A count as a gauge value.
pub(crate) fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
