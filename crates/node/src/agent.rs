//! The agent loop: join the cluster through a [`LeaseSource`], then keep the kernel equal to
//! the desired state of every lease, and write `subnet.env` and the CNI config.
//!
//! The agent keeps both sides in memory: the desired state per peer ([`DesiredPeers`]) and the
//! kernel as last seen ([`Mirror`], kept current from the agent's own applies and the kernel's
//! netlink notifications). A lease change plans only the changed peer's objects against the
//! mirror and applies the difference; a notification about an object in weft's scope (someone
//! deleted a route, say) plans and repairs that object. The whole kernel is observed only at
//! start-up, on the reconcile interval, when a weft link changes and when notifications were
//! lost; a new snapshot of leases or a change to this node's own lease rebuilds the desired
//! state and reconciles in full.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use weft_api::protocol::RegisterRequest;
use weft_config::{ClusterNetwork, FlannelBackend, Secrets, WireguardMode};
use weft_fabric::files::{CNI_CONFLIST_NAME, cni_conflist, subnet_env};
use weft_fabric::{
    Backend, BackendKind, Desired, DesiredPeers, ExternalInterface, FabricConfig, HostGw, Lease,
    MacAddr, MasqMode, NoBackend, ObjectKeys, PeerProblem, Plan, Vxlan, VxlanSettings,
    WgImplementation, WgMode, WireguardNative, desired_state, plan,
};
use weft_ipam::Family;
use weft_kernel::{Kernel, Mirror, Notice, Resync, Scope};

use crate::NodeError;
use crate::files::{install_cni_conflist, write_atomic};
use crate::health::Condition;
use crate::identity::NodeIdentity;
use crate::metrics::AgentMetrics;
use crate::source::{LeaseSource, LeaseUpdate};

#[cfg(test)]
mod tests;

/// What the agent needs besides the cluster network it gets from the servers.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// The agent's data dir (`<data-dir>/agent`).
    pub dir: PathBuf,
    /// The node name.
    pub node_name: String,
    /// The node IPs, primary family first.
    pub node_ips: Vec<IpAddr>,
    /// The node's external IPs.
    pub external_ips: Vec<IpAddr>,
    /// `flannel-iface`; the default-route interface when `None`.
    pub flannel_iface: Option<String>,
    /// Where `subnet.env` goes.
    pub subnet_file: PathBuf,
    /// Where the CNI conflist goes.
    pub cni_conf_dir: PathBuf,
    /// `flannel-cni-conf`: a conflist to install instead of weft's own.
    pub flannel_cni_conf: Option<PathBuf>,
    /// Where masquerade rules go.
    pub masq_mode: MasqMode,
    /// How often the kernel is checked even when nothing changed.
    pub reconcile_interval: Duration,
    /// `wireguard-implementation`: who runs wireguard-native's devices; `None` is auto (the
    /// kernel module when there is one, else the userspace implementation inside the agent).
    pub wireguard_implementation: Option<WgImplementation>,
}

/// A joined node: its backend, lease and peers, and the kernel to program.
pub struct Fabric {
    kernel: Kernel,
    scope: Scope,
    backend: Box<dyn Backend + Send + Sync>,
    config: FabricConfig,
    settings: AgentSettings,
    local: Lease,
    peers: BTreeMap<String, Lease>,
    reported: Vec<PeerProblem>,
    wireguard: Option<WgImplementation>,
    metrics: AgentMetrics,
    reconciled: Condition,
    /// The desired state per peer; `None` until built, and after a change that needs it built
    /// again (a snapshot, this node's own lease).
    desired: Option<DesiredPeers>,
    /// The objects lease changes touched since the last reconcile.
    pending: ObjectKeys,
    /// The kernel as last seen; `None` until the first reconcile.
    mirror: Option<Mirror>,
    /// The `net-conf.json` in effect, pre-shared key included, and whether it holds one; `None`
    /// with the `none` backend.
    net_conf: Option<(String, bool)>,
}

/// What one reconcile did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// The operations applied (empty when the kernel was already right).
    pub plan: Plan,
    /// Peers that could not be programmed.
    pub problems: Vec<PeerProblem>,
    /// How long observing, planning and applying took.
    pub took: Duration,
}

/// Joins the cluster through `source` and returns the node's fabric, with the first snapshot
/// of peers applied to it (but not yet to the kernel).
pub async fn join<S: LeaseSource>(
    source: &mut S,
    settings: AgentSettings,
    kernel: Kernel,
) -> Result<(Fabric, ClusterNetwork), NodeError> {
    let identity = NodeIdentity::load_or_create(&settings.dir)?;
    let cluster = source.cluster().await?;
    let (backend, wireguard) = backend(&cluster, &identity, &kernel, &settings).await?;
    let config = fabric_config(&kernel, &settings, &cluster).await?;
    let request = RegisterRequest {
        node_name: settings.node_name.clone(),
        node_ips: settings.node_ips.clone(),
        external_ips: settings.external_ips.clone(),
        backend: backend.backend_data(),
    };
    let local = source.register(&request).await?;
    tracing::info!(
        node = %local.node_name,
        ipv4 = ?local.ipv4_cidr.map(|c| c.to_string()),
        ipv6 = ?local.ipv6_cidr.map(|c| c.to_string()),
        backend = %backend.kind(),
        "registered"
    );
    let fabric = Fabric {
        kernel,
        scope: Scope::weft_with_vxlan_vni(cluster.vxlan_options().vni),
        backend,
        config,
        settings,
        local,
        peers: BTreeMap::new(),
        reported: Vec::new(),
        wireguard,
        metrics: AgentMetrics::default(),
        reconciled: Condition::default(),
        desired: None,
        pending: ObjectKeys::default(),
        mirror: None,
        net_conf: net_conf_file(&cluster),
    };
    Ok((fabric, cluster))
}

/// Runs the agent loop until `stop` resolves. The kernel state is left in place when it stops,
/// so pods keep their network while the agent restarts.
pub async fn run<S: LeaseSource>(
    source: &mut S,
    mut fabric: Fabric,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let mut interval = tokio::time::interval(fabric.settings.reconcile_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    let mut synced = false;
    loop {
        let done = tokio::select! {
            () = &mut stop => return Ok(()),
            update = source.next() => {
                let update = update?;
                tracing::debug!(update = update.kind(), "lease update");
                if fabric.update(update) {
                    tracing::warn!("this node's lease was removed; registering again");
                    let request = fabric.register_request();
                    fabric.local = source.register(&request).await?;
                    fabric.desired = None;
                }
                synced = true;
                fabric.reconcile_changes().await
            }
            notice = fabric.changed(), if fabric.mirror.is_some() => match notice {
                Ok(notice) => fabric.repair(&notice).await,
                Err(e) => {
                    // The notification socket failed: observe on the next change or check.
                    fabric.mirror = None;
                    Err(e)
                }
            },
            _ = interval.tick(), if synced => {
                let done = fabric.reconcile().await;
                // The next check comes a whole interval after this one ended: a check that
                // takes longer than the interval (a loaded machine, a slow VM) must not leave
                // a tick always ready, which would win every select and starve lease events.
                interval.reset();
                done
            }
        };
        match done {
            Ok(done) if !done.plan.is_empty() => tracing::info!(
                operations = done.plan.len(),
                took_ms = done.took.as_secs_f64() * 1e3,
                "kernel reconciled"
            ),
            Ok(done) => tracing::debug!(
                took_ms = done.took.as_secs_f64() * 1e3,
                "kernel checked: nothing to change"
            ),
            Err(e) => {
                tracing::error!(
                    error = %weft_cause::Chain(&e),
                    "reconcile failed; retrying at the next change or check"
                )
            }
        }
    }
}

// === impl Fabric ===

impl Fabric {
    /// Keeps `metrics` (reconciles, operations, peers, lease updates) from now on.
    pub fn with_metrics(mut self, metrics: AgentMetrics) -> Fabric {
        self.metrics = metrics;
        self
    }

    /// Sets `reconciled` (`/readyz`) once a reconcile has brought the kernel to the desired
    /// state.
    pub fn with_readiness(mut self, reconciled: Condition) -> Fabric {
        self.reconciled = reconciled;
        self
    }

    /// This node's lease.
    pub fn local(&self) -> &Lease {
        &self.local
    }

    /// The peers' leases by node name.
    pub fn peers(&self) -> &BTreeMap<String, Lease> {
        &self.peers
    }

    /// The backend in use.
    pub fn backend_kind(&self) -> BackendKind {
        self.backend.kind()
    }

    /// Who runs the WireGuard devices, with the wireguard-native backend.
    pub fn wireguard_implementation(&self) -> Option<WgImplementation> {
        self.wireguard
    }

    /// Applies a lease update; returns whether this node's own lease was deleted.
    pub fn update(&mut self, update: LeaseUpdate) -> bool {
        self.metrics.lease_update(&update);
        let own_deleted = self.apply_update(update);
        self.metrics.set_peers(self.peers.len());
        own_deleted
    }

    fn apply_update(&mut self, update: LeaseUpdate) -> bool {
        let me = self.local.node_name.clone();
        match update {
            LeaseUpdate::Snapshot(leases) => {
                self.peers = leases
                    .into_iter()
                    .filter(|l| l.node_name != me)
                    .map(|l| (l.node_name.clone(), l))
                    .collect();
                self.desired = None;
                false
            }
            LeaseUpdate::Put(lease) if lease.node_name == me => {
                self.local = lease;
                self.desired = None;
                false
            }
            LeaseUpdate::Put(lease) => {
                self.peers.insert(lease.node_name.clone(), lease.clone());
                if let Some(desired) = &mut self.desired {
                    match desired.put(&*self.backend, &self.config, lease) {
                        Ok(keys) => self.pending.append(keys),
                        Err(_) => self.desired = None,
                    }
                }
                false
            }
            LeaseUpdate::Delete(node) if node == me => true,
            LeaseUpdate::Delete(node) => {
                self.peers.remove(&node);
                if let Some(desired) = &mut self.desired {
                    match desired.remove(&*self.backend, &self.config, &node) {
                        Ok(keys) => self.pending.append(keys),
                        Err(_) => self.desired = None,
                    }
                }
                false
            }
        }
    }

    /// The registration this node sends.
    pub fn register_request(&self) -> RegisterRequest {
        RegisterRequest {
            node_name: self.settings.node_name.clone(),
            node_ips: self.settings.node_ips.clone(),
            external_ips: self.settings.external_ips.clone(),
            backend: self.backend.backend_data(),
        }
    }

    /// The desired kernel state for the leases known now.
    pub fn desired(&self) -> Result<Desired, NodeError> {
        let peers: Vec<Lease> = self.peers.values().cloned().collect();
        desired_state(&*self.backend, &self.local, &peers, &self.config).map_err(NodeError::Fabric)
    }

    /// The operations that would bring the kernel to the desired state, without applying them
    /// (`weft-agent plan`).
    pub async fn plan(&self) -> Result<(Plan, Vec<PeerProblem>), NodeError> {
        let (desired, plan) = self.desired_and_plan().await?;
        Ok((plan, desired.problems))
    }

    /// The desired state, and the plan from the kernel as observed now to it.
    async fn desired_and_plan(&self) -> Result<(Desired, Plan), NodeError> {
        let desired = self.desired()?;
        let observed = self
            .kernel
            .observe(&self.scope)
            .await
            .map_err(NodeError::Kernel)?;
        let plan = plan(&observed, &desired.state);
        Ok((desired, plan))
    }

    /// Observes the kernel, applies what differs from the desired state, and writes the files
    /// (at start-up and on the reconcile interval).
    pub async fn reconcile(&mut self) -> Result<Reconciled, NodeError> {
        let started = Instant::now();
        // The full plan covers whatever lease changes were pending.
        self.pending = ObjectKeys::default();
        let reconciled = self
            .converge(&Notice::Resync(Resync::Requested), started)
            .await;
        let reconciled = match reconciled {
            Ok(done) => self.write_files().map(|()| done),
            Err(e) => Err(e),
        };
        self.count(reconciled)
    }

    /// Applies what the lease changes since the last reconcile want: only the changed peers'
    /// objects, planned against the kernel as last seen. A change that rebuilt the desired
    /// state (a snapshot, this node's own lease), or a first run, reconciles in full.
    pub async fn reconcile_changes(&mut self) -> Result<Reconciled, NodeError> {
        if self.desired.is_none() || self.mirror.is_none() {
            return self.reconcile().await;
        }
        let started = Instant::now();
        let keys = Notice::Objects(std::mem::take(&mut self.pending));
        let reconciled = self.converge(&keys, started).await;
        self.count(reconciled)
    }

    /// Waits for the kernel's next notification about weft's objects (cancel-safe); pending
    /// forever before the first reconcile.
    pub async fn changed(&mut self) -> Result<Notice, NodeError> {
        match &mut self.mirror {
            Some(mirror) => mirror.changed().await.map_err(NodeError::Kernel),
            None => std::future::pending().await,
        }
    }

    /// Repairs what a notification reports: the objects it names go back to the desired
    /// state; lost notifications or a changed weft link mean a full reconcile.
    pub async fn repair(&mut self, notice: &Notice) -> Result<Reconciled, NodeError> {
        if let Notice::Resync(reason) = notice {
            tracing::info!(%reason, "observing the kernel again");
        }
        let started = Instant::now();
        let reconciled = self.converge(notice, started).await;
        self.count(reconciled)
    }

    fn count(&self, reconciled: Result<Reconciled, NodeError>) -> Result<Reconciled, NodeError> {
        match &reconciled {
            Ok(done) => {
                self.metrics.reconciled(done.took, &done.plan);
                self.reconciled.set();
            }
            Err(_) => self.metrics.reconcile_failed(),
        }
        reconciled
    }

    /// Brings what `notice` names to the desired state, building what is missing first.
    async fn converge(
        &mut self,
        notice: &Notice,
        started: Instant,
    ) -> Result<Reconciled, NodeError> {
        let full = Notice::Resync(Resync::Requested);
        let (desired, notice) = match self.desired.take() {
            Some(desired) => (desired, notice),
            None => {
                // Built anew, it is planned in full, which covers whatever was pending.
                self.pending = ObjectKeys::default();
                let peers = self.peers.values().cloned();
                let desired = DesiredPeers::new(&*self.backend, &self.local, peers, &self.config)
                    .map_err(NodeError::Fabric)?;
                (desired, &full)
            }
        };
        let desired = &*self.desired.insert(desired);
        let mirror = match &mut self.mirror {
            Some(mirror) => mirror,
            None => {
                let mirror = Mirror::new(self.kernel.clone(), self.scope.clone())
                    .map_err(NodeError::Kernel)?;
                self.mirror.insert(mirror)
            }
        };
        let converged = mirror.converge(desired.state(), notice).await;
        let plan = converged.map_err(NodeError::Kernel)?.plan;
        for op in &plan.ops {
            tracing::debug!(%op, "applied");
        }
        let problems = desired.problems();
        if problems != self.reported {
            for problem in &problems {
                tracing::warn!("{problem}");
            }
            self.reported = problems.clone();
        }
        Ok(Reconciled {
            plan,
            problems,
            took: started.elapsed(),
        })
    }

    /// The pod MTU: the smallest of the enabled families'.
    pub fn pod_mtu(&self) -> u32 {
        [Family::Ipv4, Family::Ipv6]
            .into_iter()
            .filter(|f| self.config.cluster.get(*f).is_some())
            .map(|f| self.backend.mtu(self.config.external.mtu, f))
            .min()
            .unwrap_or(self.config.external.mtu)
    }

    /// Writes `subnet.env` and the CNI conflist (none for the `none` backend).
    fn write_files(&self) -> Result<(), NodeError> {
        if self.backend.kind() == BackendKind::None {
            return Ok(());
        }
        let mtu = self.pod_mtu();
        let env = subnet_env(&self.config.cluster, &self.local, mtu);
        if write_atomic(&self.settings.subnet_file, env.as_bytes(), 0o644)? {
            tracing::info!(path = %self.settings.subnet_file.display(), "wrote subnet.env");
        }
        if let Some((content, secret)) = &self.net_conf {
            // A file holding the pre-shared key is the owner's alone.
            let mode = if *secret { 0o600 } else { 0o644 };
            let path = net_conf_path(&self.settings);
            if write_atomic(&path, content.as_bytes(), mode)? {
                tracing::info!(path = %path.display(), "wrote net-conf.json");
            }
        }
        let ipam_dir = self.settings.dir.join("cni").join("networks");
        install_cni_conflist(
            &self.settings.cni_conf_dir,
            self.settings.flannel_cni_conf.as_deref(),
            || cni_conflist(&self.local, mtu, &ipam_dir.display().to_string()),
        )?;
        Ok(())
    }
}

/// The files the agent writes (`weft-agent cleanup` removes them).
pub fn written_files(settings: &AgentSettings) -> Vec<PathBuf> {
    vec![
        settings.subnet_file.clone(),
        settings.cni_conf_dir.join(CNI_CONFLIST_NAME),
        net_conf_path(settings),
    ]
}

/// The kernel objects `weft-agent cleanup` removes: weft's, and the vxlan devices of the VNI
/// in the `net-conf.json` the agent last wrote (a cluster whose flannel-conf sets another VNI).
pub fn cleanup_scope(settings: &AgentSettings) -> Scope {
    let vni = std::fs::read_to_string(net_conf_path(settings))
        .ok()
        .and_then(|text| weft_config::NetConf::parse(&text).ok())
        .and_then(|conf| match conf.backend {
            Some(weft_config::NetConfBackend::Vxlan(options)) => Some(options.vni),
            _ => None,
        });
    match vni {
        Some(vni) => Scope::weft_with_vxlan_vni(vni),
        None => Scope::weft(),
    }
}

/// Where the agent writes the `net-conf.json` in effect, as K3s does:
/// `<data-dir>/agent/etc/flannel/net-conf.json`.
pub fn net_conf_path(settings: &AgentSettings) -> PathBuf {
    settings
        .dir
        .join("etc")
        .join("flannel")
        .join("net-conf.json")
}

/// The `net-conf.json` the cluster runs with (`flannel-conf`'s, normalised, else the one K3s
/// derives), and whether it holds a pre-shared key.
fn net_conf_file(cluster: &ClusterNetwork) -> Option<(String, bool)> {
    let json = cluster.net_conf_json(Secrets::Reveal)?;
    let secret = cluster.net_conf_json(Secrets::Redact).as_ref() != Some(&json);
    let mut text = serde_json::to_string_pretty(&json).ok()?;
    text.push('\n');
    Some((text, secret))
}

/// The backend for the cluster's `flannel-backend`, and for wireguard-native the
/// implementation its devices run on.
///
/// wireguard-native hands the node's private key to `kernel`, which configures the devices
/// with it, and picks the implementation: the one `wireguard-implementation` names, or with
/// auto the kernel module when this kernel can make a WireGuard link, else the userspace one
/// inside the agent. One log line says which.
async fn backend(
    cluster: &ClusterNetwork,
    identity: &NodeIdentity,
    kernel: &Kernel,
    settings: &AgentSettings,
) -> Result<(Box<dyn Backend + Send + Sync>, Option<WgImplementation>), NodeError> {
    match cluster.flannel_backend {
        FlannelBackend::None => Ok((Box::new(NoBackend), None)),
        FlannelBackend::Vxlan => {
            let options = cluster.vxlan_options();
            Ok((
                Box::new(Vxlan {
                    mac_v4: with_mac_prefix(identity.vtep_mac_v4, options.mac_prefix),
                    mac_v6: with_mac_prefix(identity.vtep_mac_v6, options.mac_prefix),
                    settings: vxlan_settings(cluster),
                }),
                None,
            ))
        }
        FlannelBackend::HostGw => Ok((Box::new(HostGw), None)),
        FlannelBackend::WireguardNative => {
            let (implementation, missing) = kernel
                .wireguard_implementation(settings.wireguard_implementation)
                .await?;
            match (missing, settings.wireguard_implementation) {
                (Some(reason), _) => tracing::info!(
                    %reason,
                    "this kernel has no WireGuard; wireguard-native runs on the userspace implementation inside the agent"
                ),
                (None, Some(_)) => tracing::info!(
                    %implementation,
                    "wireguard-native runs on the implementation wireguard-implementation names"
                ),
                (None, None) => tracing::info!("wireguard-native runs on the kernel's WireGuard"),
            }
            kernel.wireguard().add_key(identity.wireguard_key.clone());
            let options = cluster.wireguard_options();
            kernel
                .wireguard()
                .set_preshared_key(options.psk.map(|psk| psk.0));
            // `weft-agent plan` beside the daemon reads the daemon's userspace devices here.
            kernel
                .wireguard()
                .set_socket_dir(settings.dir.join("wireguard"));
            Ok((
                Box::new(WireguardNative {
                    public_key: identity.wireguard_key.public_key(),
                    implementation,
                    keepalive: options.persistent_keepalive,
                    listen_ports: (options.listen_port, options.listen_port_v6),
                    preshared_key: options.psk.is_some(),
                    mode: match options.mode {
                        WireguardMode::Separate => WgMode::Separate,
                        WireguardMode::Auto => WgMode::Auto,
                        WireguardMode::Ipv4 => WgMode::Ipv4,
                        WireguardMode::Ipv6 => WgMode::Ipv6,
                    },
                }),
                Some(implementation),
            ))
        }
    }
}

/// flannel-conf's vxlan options as the fabric takes them: port 0 is the kernel's, 8472.
fn vxlan_settings(cluster: &ClusterNetwork) -> VxlanSettings {
    let options = cluster.vxlan_options();
    VxlanSettings {
        vni: options.vni,
        port: match options.port {
            0 => weft_fabric::vxlan::PORT,
            port => port,
        },
        gbp: options.gbp,
        direct_routing: options.direct_routing,
    }
}

/// A VTEP MAC with flannel-conf's `MacPrefix` as its first two bytes; the rest stays the
/// node's own, kept in its data dir.
fn with_mac_prefix(mac: MacAddr, prefix: Option<[u8; 2]>) -> MacAddr {
    match prefix {
        Some([a, b]) => MacAddr([a, b, mac.0[2], mac.0[3], mac.0[4], mac.0[5]]),
        None => mac,
    }
}

/// The fabric config: the cluster's settings and the external interface.
///
/// flannel-conf's backend `MTU`, when given, stands for the external interface's (it is the
/// MTU of the path between nodes), and its `EnableNFTables` picks the masquerade mode.
async fn fabric_config(
    kernel: &Kernel,
    settings: &AgentSettings,
    cluster: &ClusterNetwork,
) -> Result<FabricConfig, NodeError> {
    let mut external = external_interface(kernel, settings, cluster).await?;
    let path_mtu = match cluster.flannel_backend {
        FlannelBackend::Vxlan => cluster.vxlan_options().mtu,
        FlannelBackend::WireguardNative => cluster.wireguard_options().mtu,
        _ => None,
    };
    if let Some(mtu) = path_mtu {
        external.mtu = mtu;
    }
    Ok(FabricConfig {
        cluster: cluster.cluster_cidr,
        ipv6_masq: cluster.flannel_ipv6_masq,
        masq_mode: match cluster.enable_nftables() {
            Some(true) => MasqMode::Nftables,
            Some(false) => MasqMode::Iptables,
            None => settings.masq_mode,
        },
        fully_random: true,
        external,
    })
}

/// `flannel-iface`, else the interface holding the first node IP, else the interface of the
/// default route of the primary family.
async fn external_interface(
    kernel: &Kernel,
    settings: &AgentSettings,
    cluster: &ClusterNetwork,
) -> Result<ExternalInterface, NodeError> {
    let name = match &settings.flannel_iface {
        Some(name) => name.clone(),
        None => {
            let family = cluster.cluster_cidr.primary().family();
            // The interface holding the node IP comes first: with --node-ip on a second
            // network, that is where peers reach this node.
            let by_address = match settings.node_ips.first() {
                Some(ip) => kernel.interface_with_address(*ip).await?,
                None => None,
            };
            match by_address {
                Some(name) => name,
                None => kernel.default_interface(family).await?.name,
            }
        }
    };
    kernel
        .external_interface(&name)
        .await
        .map_err(NodeError::Kernel)
}
