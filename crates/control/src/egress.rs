//! The egress selector on a server: the tunnel endpoint and HTTP CONNECT front door of
//! weft-tunnel, kept routing by the cluster's state, and the kube-apiserver's
//! EgressSelectorConfiguration that points at it.
//!
//! [`start`] writes `<data-dir>/server/etc/egress-selector-config.yaml` (naming the cluster CA
//! and the kube-apiserver's client certificate, `client-kube-apiserver.crt`, that bootstrap
//! already wrote, so a kube-apiserver or `curl --proxy-cert` can use it), makes a
//! [`TunnelServer`] and follows the store to keep its routes current: every node's addresses
//! (node records), its pod CIDRs (the lease hub) and, in `cluster` mode, the pods its agent
//! reported, each IP only inside that node's lease (a record from an older server, or edited by
//! hand, that lies outside is ignored with a warning, so no store record draws another address
//! into a node's tunnel). [`Front`] is the server's one HTTPS handler:
//! tunnel requests (the WebSocket endpoint and CONNECT) go to the tunnel server, everything
//! else to the [`ControlPlane`].
//!
//! The kubelet port is cluster-wide: the server routes every node's kubelet on its own
//! `--kubelet-port`. K3s learns each node's port from its Node object; weft has no Node objects,
//! and every node of a cluster runs its kubelet on the same port unless told otherwise. An agent
//! whose `--kubelet-port` differs still allows only its own port, so a mismatch fails closed
//! (`502`), never open.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::task::JoinHandle;
use weft_api::http::{Body, Handler, Peer};
use weft_api::pki::ClientIdentity;
use weft_config::{ClusterNetwork, EgressSelectorMode};
use weft_fabric::Lease;
use weft_ipam::Family;
use weft_store::{Event, NodeRecord, PodRecord, Revision, Store, StoreError};
use weft_tunnel::egress::{EgressFiles, write_config};
use weft_tunnel::policy::{NodeRoute, RoutingTable};
use weft_tunnel::server::TunnelServer;

use crate::ControlError;
use crate::bootstrap::BootstrapPaths;
use crate::hub::LeaseHub;
use crate::metrics::{ControlMetrics, count};
use crate::service::ControlPlane;

/// How long route changes gather before the routing table is rebuilt once for all of them.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// How long the route follower waits after a store error before it lists again.
const RETRY: Duration = Duration::from_secs(1);

/// How often the tunnel gauges are read.
const METRICS_INTERVAL: Duration = Duration::from_secs(5);

/// What the egress selector needs besides the store.
#[derive(Debug, Clone)]
pub struct EgressSettings {
    /// The cluster's `egress-selector-mode`.
    pub mode: EgressSelectorMode,
    /// The node of this server's embedded agent (dialed locally), if it runs one.
    pub local_node: Option<String>,
    /// The kubelet port of every node (`--kubelet-port`, default 10250).
    pub kubelet_port: u16,
    /// Where the kube-apiserver reaches this server: `https://<bind-address or loopback>:<port>`.
    pub url: String,
    /// Where the EgressSelectorConfiguration goes.
    pub config_path: PathBuf,
    /// The files it names.
    pub files: EgressFiles,
    /// The tunnel sessions' bounds and timers.
    pub tunnel: weft_tunnel::proto::Config,
}

/// A running egress selector: the tunnel server and the task that keeps its routes current.
pub struct Egress {
    tunnel: TunnelServer,
    follower: Option<JoinHandle<()>>,
    metrics: Option<JoinHandle<()>>,
}

/// The server's HTTPS handler: tunnel requests to the tunnel server, the rest to the API.
///
/// A node opens a tunnel only with its current certificate, and its tunnels close as soon as
/// that certificate is revoked (the node was deleted or issued a newer one).
pub struct Front {
    plane: Arc<ControlPlane>,
    tunnel: TunnelServer,
    revoker: JoinHandle<()>,
}

// === impl EgressSettings ===

impl EgressSettings {
    /// K3s's settings for a server of `network` whose state dir is `dir` (`<data-dir>/server`),
    /// listening on `bind`: the cluster's mode; the URL is `bind`'s address, or loopback when it
    /// binds every address (`[::1]` when the primary service CIDR is IPv6); the configuration
    /// goes to `<dir>/etc/egress-selector-config.yaml` and names bootstrap's CA and
    /// kube-apiserver client certificate. `local_node` is the embedded agent's node, if any.
    pub fn for_server(
        dir: &Path,
        paths: &BootstrapPaths,
        bind: SocketAddr,
        network: &ClusterNetwork,
        local_node: Option<String>,
        kubelet_port: u16,
    ) -> EgressSettings {
        let ipv6_primary = network.service_cidr.primary().family() == Family::Ipv6;
        let host = match bind.ip() {
            ip if !ip.is_unspecified() => ip,
            _ if ipv6_primary => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            _ => IpAddr::from(std::net::Ipv4Addr::LOCALHOST),
        };
        EgressSettings {
            mode: network.egress_selector_mode,
            local_node,
            kubelet_port,
            url: format!("https://{}", SocketAddr::new(host, bind.port())),
            config_path: dir.join("etc").join("egress-selector-config.yaml"),
            files: EgressFiles {
                ca_bundle: paths.ca_cert.clone(),
                client_cert: paths.kube_apiserver_cert.clone(),
                client_key: paths.kube_apiserver_key.clone(),
            },
            tunnel: weft_tunnel::proto::Config::default(),
        }
    }
}

// === impl Egress ===

/// Writes the EgressSelectorConfiguration, makes the tunnel server and, unless the mode is
/// `disabled`, starts following `store` and `hub` for its routes.
pub async fn start(
    store: Store,
    hub: LeaseHub,
    settings: EgressSettings,
) -> Result<Egress, ControlError> {
    write_config(
        &settings.config_path,
        &settings.files,
        settings.mode,
        &settings.url,
    )
    .map_err(|e| ControlError::File {
        path: settings.config_path.clone(),
        reason: e.to_string(),
    })?;
    tracing::info!(path = %settings.config_path.display(), mode = %settings.mode, "wrote the egress selector configuration");
    let base = RoutingTable {
        mode: settings.mode,
        local_node: settings.local_node.clone(),
        nodes: Vec::new(),
    };
    let tunnel = TunnelServer::new(settings.tunnel.clone(), base.clone());
    let follower = (settings.mode != EgressSelectorMode::Disabled).then(|| {
        let follower = Follower {
            store,
            hub,
            tunnel: tunnel.clone(),
            base,
            kubelet_port: settings.kubelet_port,
        };
        tokio::spawn(follower.run())
    });
    Ok(Egress {
        tunnel,
        follower,
        metrics: None,
    })
}

impl Egress {
    /// The tunnel server.
    pub fn tunnel(&self) -> &TunnelServer {
        &self.tunnel
    }

    /// The server's HTTPS handler over `plane` and this tunnel server.
    pub fn front(&self, plane: Arc<ControlPlane>) -> Arc<Front> {
        let mut revocations = plane.credentials().subscribe();
        let tunnel = self.tunnel.clone();
        let revoker = tokio::spawn(async move {
            loop {
                match revocations.recv().await {
                    Ok(r) => tunnel.close_node(
                        &r.node,
                        r.current.as_deref(),
                        "the node's certificate was revoked",
                    ),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "missed certificate revocations; tunnels with a revoked certificate stay open until they reconnect"
                        );
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Arc::new(Front {
            plane,
            tunnel: self.tunnel.clone(),
            revoker,
        })
    }

    /// Keeps `metrics`' tunnel gauges (sessions, streams) current, read every few seconds.
    pub fn export_metrics(&mut self, metrics: ControlMetrics) {
        let tunnel = self.tunnel.clone();
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(METRICS_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let stats = tunnel.stats();
                metrics.tunnel_sessions().set(count(stats.sessions));
                metrics.tunnel_streams().set(count(stats.streams));
            }
        });
        if let Some(old) = self.metrics.replace(task) {
            old.abort();
        }
    }

    /// Stops following the store and closes every tunnel (the server is stopping); agents
    /// reconnect to the other servers.
    pub fn stop(&mut self) {
        self.abort_tasks();
        self.tunnel.close_all("the server is stopping");
    }

    fn abort_tasks(&mut self) {
        for task in [self.follower.take(), self.metrics.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

impl Drop for Egress {
    fn drop(&mut self) {
        self.abort_tasks();
    }
}

// === impl Front ===

impl Handler for Front {
    fn handle(
        &self,
        request: Request<Incoming>,
        peer: Peer,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send + '_>> {
        if !TunnelServer::is_tunnel_request(&request) {
            return self.plane.handle(request, peer);
        }
        Box::pin(async move {
            // A node's tunnel: only with its current certificate.
            if request.method() != hyper::Method::CONNECT
                && matches!(peer.identity, Some(ClientIdentity::Node(_)))
                && let Err(refused) = self.plane.node_only(&peer).await
            {
                return refused;
            }
            self.tunnel.handle(request, peer).await
        })
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.revoker.abort();
    }
}

/// Keeps a tunnel server's routes equal to the store's nodes, leases and pods.
struct Follower {
    store: Store,
    hub: LeaseHub,
    tunnel: TunnelServer,
    base: RoutingTable,
    kubelet_port: u16,
}

/// A reported pod IP the routes leave out, because it lies outside its node's lease.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct StrayPod {
    /// The pod's record, `namespace/name`.
    pod: String,
    /// The node the record names.
    node: String,
    /// The IP outside the node's lease.
    ip: IpAddr,
}

/// What the routes are built from.
#[derive(Default)]
struct Known {
    nodes: BTreeMap<String, NodeRecord>,
    /// Reported pods by `namespace/name`.
    pods: BTreeMap<String, PodRecord>,
}

// === impl Follower ===

impl Follower {
    /// Follows the store forever, listing again after any error.
    async fn run(self) {
        loop {
            if let Err(e) = self.follow().await {
                tracing::warn!(error = %e, "following nodes for the tunnel routes failed; listing again");
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Lists, then applies every change until a watch fails or ends.
    async fn follow(&self) -> Result<(), StoreError> {
        let cluster = self.base.mode == EgressSelectorMode::Cluster;
        // Subscribe before reading the snapshot, so no lease change falls between them.
        let mut leases = self
            .hub
            .subscribe(self.hub.revision())
            .map(|sub| sub.feed)
            .map_err(|oldest| StoreError::Compacted {
                oldest: Revision(oldest),
            })?;
        let listed = self.store.list_nodes().await?;
        let mut known = Known::default();
        for node in listed.items {
            known.nodes.insert(node.value.name.clone(), node.value);
        }
        let mut nodes = self.store.watch_nodes(listed.revision);
        let mut pods = if cluster {
            let listed = self.store.list_pods().await?;
            for pod in listed.items {
                known.pods.insert(pod_key(&pod.value), pod.value);
            }
            Some(self.store.watch_pods(listed.revision))
        } else {
            None
        };
        let mut strays = BTreeSet::new();
        self.publish(&known, &mut strays);

        let mut dirty: Option<tokio::time::Instant> = None;
        loop {
            let deadline = dirty.unwrap_or_else(|| tokio::time::Instant::now() + RETRY);
            tokio::select! {
                batch = nodes.next() => {
                    let Some(batch) = batch else { return Ok(()) };
                    match batch {
                        Ok(batch) => apply(&mut known.nodes, batch.events, |n| n.name.clone()),
                        Err(StoreError::Corrupt { key, .. }) => {
                            tracing::warn!(%key, "a node record is damaged; its node is not routed");
                        }
                        Err(e) => return Err(e),
                    }
                }
                batch = next_pods(&mut pods) => {
                    let Some(batch) = batch else { return Ok(()) };
                    match batch {
                        Ok(batch) => apply(&mut known.pods, batch.events, pod_key),
                        Err(StoreError::Corrupt { key, .. }) => {
                            tracing::warn!(%key, "a pod record is damaged; its pod is not routed");
                        }
                        Err(e) => return Err(e),
                    }
                }
                event = leases.recv() => {
                    if let Err(tokio::sync::broadcast::error::RecvError::Closed) = event {
                        return Ok(());
                    }
                    // Lagged or not, the snapshot at publish time is current.
                }
                () = tokio::time::sleep_until(deadline), if dirty.is_some() => {
                    self.publish(&known, &mut strays);
                    dirty = None;
                    continue;
                }
            }
            dirty.get_or_insert_with(|| tokio::time::Instant::now() + DEBOUNCE);
        }
    }

    /// Builds the routing table from `known` and the hub's leases, and hands it over; warns
    /// once about each pod IP it leaves out, `strays` being those it already left out.
    fn publish(&self, known: &Known, strays: &mut BTreeSet<StrayPod>) {
        let leases: BTreeMap<String, Lease> = self
            .hub
            .snapshot()
            .leases
            .into_iter()
            .map(|lease| (lease.node_name.clone(), lease))
            .collect();
        let (table, left_out) = routing_table(&self.base, self.kubelet_port, known, &leases);
        for stray in left_out.difference(strays) {
            tracing::warn!(
                pod = %stray.pod,
                node = %stray.node,
                "ignored pod IP {} of the store: it is outside node {}'s lease, so CONNECTs to it do not go through that node's tunnel; a node reports only pods of its own lease, so delete the record",
                stray.ip,
                stray.node
            );
        }
        *strays = left_out;
        tracing::debug!(nodes = table.nodes.len(), "tunnel routes updated");
        self.tunnel.set_routes(table);
    }
}

/// The next batch of the pod watch, or never when there is none (not `cluster` mode).
async fn next_pods(
    pods: &mut Option<weft_store::TypedWatch<PodRecord>>,
) -> Option<Result<weft_store::TypedBatch<PodRecord>, StoreError>> {
    match pods {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

/// Applies watch events to `map`, keyed as `key` names a record.
fn apply<T>(map: &mut BTreeMap<String, T>, events: Vec<Event<T>>, key: impl Fn(&T) -> String) {
    for event in events {
        match event {
            Event::Put { value, .. } => {
                map.insert(key(&value), value);
            }
            Event::Delete { name, .. } => {
                map.remove(&name);
            }
        }
    }
}

fn pod_key(pod: &PodRecord) -> String {
    format!("{}/{}", pod.namespace, pod.name)
}

/// The routing table: `base`'s mode and local node, and one route per known node with its
/// addresses, the cluster-wide kubelet port, its lease's pod CIDRs and its reported pods that
/// lie in that lease; and the reported pod IPs it left out for lying outside their node's lease.
fn routing_table(
    base: &RoutingTable,
    kubelet_port: u16,
    known: &Known,
    leases: &BTreeMap<String, Lease>,
) -> (RoutingTable, BTreeSet<StrayPod>) {
    let mut pods: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
    let mut strays = BTreeSet::new();
    for (key, pod) in &known.pods {
        let cidrs = leases
            .get(&pod.node)
            .map(Lease::pod_cidrs)
            .unwrap_or_default();
        let (inside, outside): (Vec<IpAddr>, Vec<IpAddr>) = pod
            .ips
            .iter()
            .partition(|ip| cidrs.iter().any(|cidr| cidr.contains(**ip)));
        pods.entry(pod.node.as_str()).or_default().extend(inside);
        // The pods of a node that is gone are not routed anyway: nothing to warn about.
        if known.nodes.contains_key(&pod.node) {
            strays.extend(outside.into_iter().map(|ip| StrayPod {
                pod: key.clone(),
                node: pod.node.clone(),
                ip,
            }));
        }
    }
    let nodes = known
        .nodes
        .values()
        .map(|node| {
            let lease = leases.get(&node.name);
            let pod_cidrs = lease.map(Lease::pod_cidrs).unwrap_or_default();
            let mut addresses = node.node_ips.clone();
            addresses.extend(node.external_ips.iter().copied());
            NodeRoute {
                name: node.name.clone(),
                addresses,
                kubelet_port,
                pod_cidrs,
                pods: pods.remove(node.name.as_str()).unwrap_or_default(),
            }
        })
        .collect();
    let table = RoutingTable {
        mode: base.mode,
        local_node: base.local_node.clone(),
        nodes,
    };
    (table, strays)
}

#[cfg(test)]
mod tests;
