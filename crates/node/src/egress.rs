//! The agent's side of the egress selector: a tunnel to every server, authenticated with the
//! node's certificate, through which the servers reach this node's kubelet and, by mode, its
//! pods; and, in `cluster` mode, the report of this node's pods.
//!
//! [`start`] takes the credentials registration gave (and every renewal gives after them: each
//! tunnel that reconnects, and each request to a server, uses the newest), opens weft-tunnel's
//! [`AgentTunnels`] to every server the cluster lists (asking again every
//! [`EgressSettings::servers_interval`], so tunnels follow servers joining and leaving), and
//! dials only what its [`Authorizer`] allows:
//! the kubelet (and streaming) port on loopback and on this node's IPs; in `pod` mode also the
//! node's pod CIDRs (from its lease, which [`Tracked`] follows); in `cluster` mode also the node's
//! IPs on any port and the pods it reported. Whatever a server sends, weft-tunnel's floor holds
//! (no link-local, unspecified or multicast address, no loopback but the kubelet ports), and a
//! lease widens the rules only inside the cluster CIDR the agent was told at join: a pod CIDR
//! outside it is ignored with a warning.
//!
//! Pods in `cluster` mode come from the CNI: weft's conflist gives host-local IPAM the data dir
//! `<data-dir>/agent/cni/networks`, and host-local records each IP it hands out as a file named
//! by the IP, holding the container id, under `<data dir>/<network name>/`. [`scan_pods`] reads
//! that directory every [`EgressSettings::scan_interval`]; when the set changes the agent allows
//! the new pods first, then reports them to a server (`PUT /v1-weft/pods`), so the servers never
//! route a pod the agent would refuse. Only IPs inside the node's lease are allowed and reported
//! (the servers refuse a report with any other); an IP outside it is skipped with one warning.
//! A conflist of one's own (`flannel-cni-conf`) must keep host-local with that data dir for
//! `cluster` mode to find its pods.
//!
//! In `disabled` mode there are no tunnels: [`start`] returns an agent that does nothing, so
//! the daemons wire every mode the same way.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_api::client::NodeClient;
use weft_api::protocol::{MAX_REPORTED_PODS, PodReport, RegisterRequest, ReportedPod};
use weft_cause::Chain;
use weft_config::{ClusterNetwork, EgressSelectorMode};
use weft_fabric::Lease;
use weft_fabric::files::CNI_NETWORK;
use weft_tunnel::agent::{AgentDialer, AgentTunnels, Backoff};
use weft_tunnel::policy::Authorizer;

use crate::NodeError;
use crate::agent::AgentSettings;
use crate::identity::Credentials;
use crate::metrics::AgentMetrics;
use crate::source::{LeaseSource, LeaseUpdate};

/// How often an unchanged pod report is sent again, in case a server lost it (the node was
/// deleted and joined again, say).
const REPORT_AGAIN: Duration = Duration::from_secs(60);

/// How often the tunnel gauges are read.
const METRICS_INTERVAL: Duration = Duration::from_secs(5);

/// The largest host-local state file read; it holds a container id and an interface name.
const MAX_STATE_FILE: u64 = 4096;

/// What the agent's egress side needs.
#[derive(Debug, Clone)]
pub struct EgressSettings {
    /// The node's name.
    pub node_name: String,
    /// The node's IPs, internal and external: the kubelet is allowed on them.
    pub node_ips: Vec<IpAddr>,
    /// The node's kubelet port (`--kubelet-port`).
    pub kubelet_port: u16,
    /// host-local's state dir of weft's network: `<data-dir>/agent/cni/networks/weft`.
    pub ipam_dir: PathBuf,
    /// How often the pods are scanned in `cluster` mode.
    pub scan_interval: Duration,
    /// How often the cluster's servers are asked for again.
    pub servers_interval: Duration,
    /// The tunnel sessions' bounds and timers.
    pub tunnel: weft_tunnel::proto::Config,
    /// The waits between reconnects.
    pub backoff: Backoff,
    /// A server URL the cluster knows (its advertise URL) that this agent reaches at another
    /// (the server's embedded agent reaches its own server over loopback): `(known, local)`.
    pub alias: Option<(String, String)>,
}

/// The running egress side of an agent (none in `disabled` mode); dropping it closes the
/// tunnels.
pub struct EgressAgent {
    shared: Option<Arc<Shared>>,
    tasks: Vec<JoinHandle<()>>,
}

/// A [`LeaseSource`] that tells the egress side about this node's lease (its pod CIDRs) as it
/// passes: hand it to [`agent::run`](crate::agent::run) in place of the source itself.
pub struct Tracked<'a, S> {
    source: &'a mut S,
    shared: Option<Arc<Shared>>,
}

struct Shared {
    node_name: String,
    tunnels: AgentTunnels,
    /// The API client with the node's current certificate.
    client: Mutex<NodeClient>,
    dialer: Arc<AgentDialer>,
    authorizer: Mutex<Authorizer>,
    alias: Option<(String, String)>,
    /// The URLs this agent reaches the cluster's servers at, as last listed.
    servers: Mutex<Vec<String>>,
}

// === impl EgressSettings ===

impl EgressSettings {
    /// The settings of an agent with `settings` whose kubelet listens on `kubelet_port`: pods
    /// scanned every second, servers asked for every 15 s, default tunnel bounds.
    pub fn for_agent(settings: &AgentSettings, kubelet_port: u16) -> EgressSettings {
        let mut node_ips = settings.node_ips.clone();
        node_ips.extend(settings.external_ips.iter().copied());
        EgressSettings {
            node_name: settings.node_name.clone(),
            node_ips,
            kubelet_port,
            ipam_dir: settings.dir.join("cni").join("networks").join(CNI_NETWORK),
            scan_interval: Duration::from_secs(1),
            servers_interval: Duration::from_secs(15),
            tunnel: weft_tunnel::proto::Config::default(),
            backoff: Backoff::default(),
            alias: None,
        }
    }

    /// Reaches the server the cluster knows as `known` at `local` instead.
    pub fn with_alias(mut self, known: String, local: String) -> EgressSettings {
        self.alias = Some((known, local));
        self
    }
}

// === impl EgressAgent ===

/// Starts the egress side of a registered node in the cluster's mode, with `local` its lease and
/// `credentials` its credentials ([`ApiSource::credentials`](crate::ApiSource::credentials)):
/// tunnels to every server, and in `cluster` mode the pod scan; nothing in `disabled` mode.
/// Must run inside a tokio runtime.
pub fn start(
    settings: EgressSettings,
    cluster: &ClusterNetwork,
    local: &Lease,
    mut credentials: watch::Receiver<Option<Credentials>>,
) -> Result<EgressAgent, NodeError> {
    let mode = cluster.egress_selector_mode;
    if mode == EgressSelectorMode::Disabled {
        tracing::info!("egress-selector-mode is disabled: no tunnels to the servers");
        return Ok(EgressAgent {
            shared: None,
            tasks: Vec::new(),
        });
    }
    let creds = credentials
        .borrow_and_update()
        .clone()
        .ok_or(NodeError::NotRegistered)?;
    let identity = creds.identity();
    let tls = weft_api::tls::client_config(&creds.ca_pem, Some(&identity))?;
    let client = NodeClient::new(&creds.ca_pem, &identity)?;
    let mut authorizer = Authorizer {
        node_ips: settings.node_ips.clone(),
        cluster_cidrs: cluster
            .cluster_cidr
            .iter()
            .map(|c| c.as_ipnetwork())
            .collect(),
        ..Authorizer::new(mode, settings.kubelet_port)
    };
    take_pod_cidrs(&mut authorizer, local);
    let dialer = Arc::new(AgentDialer::new(authorizer.clone()));
    let tunnels = AgentTunnels::new(
        tls,
        dialer.clone(),
        settings.tunnel.clone(),
        settings.backoff,
    );
    let alias = settings.alias.clone();
    tunnels.set_servers(&addresses(&creds.servers, alias.as_ref()));
    tracing::info!(%mode, servers = ?creds.servers, "tunnels to the servers started");
    let shared = Arc::new(Shared {
        node_name: settings.node_name.clone(),
        tunnels,
        client: Mutex::new(client),
        dialer,
        servers: Mutex::new(
            creds
                .servers
                .iter()
                .map(|url| reach(url, alias.as_ref()))
                .collect(),
        ),
        authorizer: Mutex::new(authorizer),
        alias,
    });
    let mut tasks = vec![
        tokio::spawn(follow_credentials(shared.clone(), credentials)),
        tokio::spawn(follow_servers(
            shared.clone(),
            creds.servers.clone(),
            settings.servers_interval,
        )),
    ];
    if mode == EgressSelectorMode::Cluster {
        tasks.push(tokio::spawn(report_pods(
            shared.clone(),
            settings.ipam_dir.clone(),
            settings.scan_interval,
        )));
    }
    Ok(EgressAgent {
        shared: Some(shared),
        tasks,
    })
}

impl EgressAgent {
    /// Whether the agent keeps tunnels (the mode is not `disabled`).
    pub fn is_enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// The servers (`host:port`) with a live tunnel, sorted.
    pub fn connected(&self) -> Vec<String> {
        self.shared
            .as_ref()
            .map(|shared| shared.tunnels.connected())
            .unwrap_or_default()
    }

    /// The rules the agent dials by now; `None` in `disabled` mode.
    pub fn authorizer(&self) -> Option<Authorizer> {
        self.shared.as_ref().map(|shared| shared.authorizer())
    }

    /// Keeps `metrics`' tunnel gauges (sessions, streams) current, read every few seconds; they
    /// stay zero in `disabled` mode.
    pub fn export_metrics(&mut self, metrics: AgentMetrics) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        self.tasks.push(tokio::spawn(async move {
            let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            let mut interval = tokio::time::interval(METRICS_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let stats = shared.tunnels.stats();
                metrics.tunnel_sessions().set(gauge(stats.sessions));
                metrics.tunnel_streams().set(gauge(stats.streams));
            }
        }));
    }

    /// Takes this node's pod CIDRs from `lease` (its own lease changed).
    pub fn set_lease(&self, lease: &Lease) {
        if let Some(shared) = &self.shared {
            shared.set_lease(lease);
        }
    }

    /// Wraps `source` so that this node's lease updates reach the authorizer.
    pub fn track<'a, S: LeaseSource>(&self, source: &'a mut S) -> Tracked<'a, S> {
        Tracked {
            source,
            shared: self.shared.clone(),
        }
    }
}

impl Drop for EgressAgent {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(shared) = &self.shared {
            shared.tunnels.set_servers(&[]);
        }
    }
}

impl std::fmt::Debug for EgressAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressAgent")
            .field("connected", &self.connected())
            .finish_non_exhaustive()
    }
}

// === impl Shared ===

impl Shared {
    /// The API client with the node's current certificate.
    fn client(&self) -> NodeClient {
        self.client
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes renewed credentials: the tunnels use them from their next connection (live ones
    /// go on until they end), the API client from its next request.
    fn use_credentials(&self, creds: &Credentials) -> Result<(), NodeError> {
        let identity = creds.identity();
        let tls = weft_api::tls::client_config(&creds.ca_pem, Some(&identity))?;
        let client = NodeClient::new(&creds.ca_pem, &identity)?;
        self.tunnels.set_tls(tls);
        *self.client.lock().unwrap_or_else(PoisonError::into_inner) = client;
        Ok(())
    }

    fn authorizer(&self) -> Authorizer {
        self.authorizer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes the rules with `change` and hands them to the dialer if they changed.
    fn update(&self, change: impl FnOnce(&mut Authorizer)) {
        let mut authorizer = self
            .authorizer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let before = authorizer.clone();
        change(&mut authorizer);
        if *authorizer != before {
            self.dialer.set_authorizer(authorizer.clone());
        }
    }

    fn set_lease(&self, lease: &Lease) {
        if lease.node_name == self.node_name {
            self.update(|authorizer| take_pod_cidrs(authorizer, lease));
        }
    }
}

/// Gives `authorizer` the pod CIDRs of `lease`, this node's, warning about each it ignores for
/// lying outside the cluster CIDR.
fn take_pod_cidrs(authorizer: &mut Authorizer, lease: &Lease) {
    let ignored = authorizer.set_pod_cidrs(lease.pod_cidrs());
    let cluster: Vec<String> = authorizer
        .cluster_cidrs
        .iter()
        .map(ToString::to_string)
        .collect();
    for cidr in ignored {
        tracing::warn!(
            node = %lease.node_name,
            "ignored pod CIDR {cidr} of this node's lease: it lies outside the cluster CIDR {} this agent joined with, so nothing in it is dialed; check the servers' --cluster-cidr and this node's lease in their store",
            cluster.join(", ")
        );
    }
}

// === impl Tracked ===

impl<S: LeaseSource> LeaseSource for Tracked<'_, S> {
    async fn cluster(&mut self) -> Result<ClusterNetwork, NodeError> {
        self.source.cluster().await
    }

    async fn register(&mut self, request: &RegisterRequest) -> Result<Lease, NodeError> {
        let lease = self.source.register(request).await?;
        if let Some(shared) = &self.shared {
            shared.set_lease(&lease);
        }
        Ok(lease)
    }

    async fn next(&mut self) -> Result<LeaseUpdate, NodeError> {
        let update = self.source.next().await?;
        if let Some(shared) = &self.shared {
            match &update {
                LeaseUpdate::Snapshot(leases) => {
                    for lease in leases {
                        shared.set_lease(lease);
                    }
                }
                LeaseUpdate::Put(lease) => shared.set_lease(lease),
                LeaseUpdate::Delete(_) => {}
            }
        }
        Ok(update)
    }
}

/// The URL this agent reaches the server known as `url` at.
fn reach(url: &str, alias: Option<&(String, String)>) -> String {
    match alias {
        Some((known, local)) if known == url => local.clone(),
        _ => url.to_owned(),
    }
}

/// `host:port` of each server URL (`https://host:port`), as the tunnels take them, the aliased
/// one replaced by its local URL.
fn addresses(urls: &[String], alias: Option<&(String, String)>) -> Vec<String> {
    urls.iter()
        .map(|url| {
            reach(url, alias)
                .trim_start_matches("https://")
                .trim_end_matches('/')
                .to_owned()
        })
        .collect()
}

/// Hands every renewed certificate to the tunnels and the API client, until the lease source
/// is gone.
async fn follow_credentials(
    shared: Arc<Shared>,
    mut credentials: watch::Receiver<Option<Credentials>>,
) {
    while credentials.changed().await.is_ok() {
        let Some(creds) = credentials.borrow_and_update().clone() else {
            continue;
        };
        match shared.use_credentials(&creds) {
            Ok(()) => tracing::info!("tunnels and pod reports use the renewed node certificate"),
            Err(error) => {
                tracing::warn!(error = %Chain(&error), "the renewed node certificate can't be used; keeping the old one");
            }
        }
    }
}

/// Asks a server for the cluster's servers every `interval` and keeps a tunnel to each.
async fn follow_servers(shared: Arc<Shared>, mut known: Vec<String>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let client = shared.client();
        for server in known.clone() {
            let server = reach(&server, shared.alias.as_ref());
            match client.servers(&server).await {
                Ok(servers) if !servers.is_empty() => {
                    if servers != known {
                        tracing::info!(?servers, "the cluster's servers changed");
                        let tunnels = addresses(&servers, shared.alias.as_ref());
                        shared.tunnels.set_servers(&tunnels);
                        *shared
                            .servers
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) = servers
                            .iter()
                            .map(|url| reach(url, shared.alias.as_ref()))
                            .collect();
                        known = servers;
                    }
                    break;
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!(%server, error = %Chain(&e), "asking for the servers failed")
                }
            }
        }
    }
}

/// Scans the node's pods every `interval`; allows and reports them when they change (and every
/// [`REPORT_AGAIN`] anyway).
async fn report_pods(shared: Arc<Shared>, ipam_dir: PathBuf, interval: Duration) {
    let mut reported: Option<(Vec<ReportedPod>, tokio::time::Instant)> = None;
    let mut strays = BTreeSet::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let scanned = match scan_pods(&ipam_dir) {
            Ok(pods) => pods,
            Err(e) => {
                tracing::warn!(dir = %ipam_dir.display(), error = %e, "reading the CNI's pod IPs failed");
                continue;
            }
        };
        let lease = shared.authorizer().pod_cidrs;
        let (pods, outside) = inside_lease(scanned, |ip| lease.iter().any(|c| c.contains(ip)));
        let cidrs: Vec<String> = lease.iter().map(ToString::to_string).collect();
        for (id, ip) in outside.difference(&strays) {
            tracing::warn!(
                pod = %id,
                "skipped pod IP {ip}: it lies outside this node's pod CIDRs {}, so it is neither allowed nor reported; check the CNI configuration's IPAM ranges",
                cidrs.join(", ")
            );
        }
        strays = outside;
        let fresh = reported
            .as_ref()
            .is_some_and(|(last, at)| *last == pods && at.elapsed() < REPORT_AGAIN);
        if fresh {
            continue;
        }
        // Allow first, then report: the servers never route a pod this agent would refuse.
        let ips: Vec<IpAddr> = pods.iter().flat_map(|pod| pod.ips.clone()).collect();
        shared.update(|authorizer| authorizer.pods = ips);
        let report = PodReport { pods: pods.clone() };
        let mut servers = shared
            .servers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(at) = send_report(&shared.client(), &mut servers, &report).await {
            reported = Some((pods, at));
        }
    }
}

/// Sends `report` to the first server that takes it, trying each in turn; the time it went
/// out, or `None` if none took it.
async fn send_report(
    client: &NodeClient,
    servers: &mut [String],
    report: &PodReport,
) -> Option<tokio::time::Instant> {
    for _ in 0..servers.len() {
        let server = servers[0].clone();
        match client.report_pods(&server, report).await {
            Ok(()) => {
                tracing::debug!(%server, pods = report.pods.len(), "reported the node's pods");
                return Some(tokio::time::Instant::now());
            }
            Err(e) => {
                tracing::warn!(%server, error = %Chain(&e), "reporting the node's pods failed; trying the next server");
                servers.rotate_left(1);
            }
        }
    }
    None
}

/// The pods host-local recorded in `dir`: one file per IP, named by the IP, whose first line is
/// the container id. Other files (`lock`, `last_reserved_ip.0`) are skipped, and so is a file
/// that vanishes while it is read (a pod going away). A missing directory means no pods yet.
/// Sorted by id, each pod's IPs sorted; at most [`MAX_REPORTED_PODS`].
pub fn scan_pods(dir: &Path) -> std::io::Result<Vec<ReportedPod>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut pods: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for entry in entries {
        let entry = entry?;
        let Some(ip) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let Some(id) = container_id(&entry.path())? else {
            continue;
        };
        pods.entry(id).or_default().push(ip);
    }
    let mut report: Vec<ReportedPod> = pods
        .into_iter()
        .map(|(id, mut ips)| {
            ips.sort();
            ReportedPod { id, ips }
        })
        .collect();
    if report.len() > MAX_REPORTED_PODS {
        tracing::warn!(
            pods = report.len(),
            max = MAX_REPORTED_PODS,
            "more pods than one report holds; reporting the first"
        );
        report.truncate(MAX_REPORTED_PODS);
    }
    Ok(report)
}

/// The pods of `pods` with only their IPs that `in_lease` accepts (a pod left with none is
/// dropped), and the `(pod id, IP)` pairs it refused.
fn inside_lease(
    pods: Vec<ReportedPod>,
    in_lease: impl Fn(IpAddr) -> bool,
) -> (Vec<ReportedPod>, BTreeSet<(String, IpAddr)>) {
    let mut outside = BTreeSet::new();
    let inside = pods
        .into_iter()
        .filter_map(|mut pod| {
            pod.ips.retain(|ip| {
                let keep = in_lease(*ip);
                if !keep {
                    outside.insert((pod.id.clone(), *ip));
                }
                keep
            });
            (!pod.ips.is_empty()).then_some(pod)
        })
        .collect();
    (inside, outside)
}

/// The container id in a host-local state file: its first line, trimmed; `None` if the file
/// went away or holds no usable id.
fn container_id(path: &Path) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    if file.take(MAX_STATE_FILE).read_to_string(&mut text).is_err() {
        return Ok(None);
    }
    let id = text.lines().next().unwrap_or_default().trim();
    let usable = !id.is_empty()
        && id.len() <= 253
        && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
        && id != "."
        && id != "..";
    Ok(usable.then(|| id.to_owned()))
}
