//! The node: its name (and `--with-node-id` suffix), its IPs, and how it joins.
//!
//! The name is `node-name` (flag, file, `WEFT_NODE_NAME`/`K3S_NODE_NAME`), else the hostname,
//! lower-cased. Node IPs are `node-ip`, else the addresses of `flannel-iface`, else those of the
//! default-route interfaces, as K3s picks them. Both read the host only through [`Host`].

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use weft_cause::Cause;
use weft_ipam::{Family, ip_families, parse_ip_list};

use crate::error::{NameSource, NetConfProblem};
use crate::model::is_dns1123_subdomain;
use crate::resolve::Resolved;
use crate::{
    ClusterNetwork, ConfigError, Files, FlannelBackend, Host, InterfaceName, Key, LogFormat,
    MasqMode, NodeId, NodeName, Role, ServerUrl, System, Token, Warning, WireguardImplementation,
};

#[cfg(test)]
mod tests;

/// The settings every node has, server or agent.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NodeConfig {
    /// `data-dir`.
    pub data_dir: PathBuf,
    /// `token`.
    pub token: Option<Token>,
    /// `token-file`.
    pub token_file: Option<PathBuf>,
    /// `server`: the server to join.
    pub server: Option<ServerUrl>,
    /// `node-name`, or the hostname: the name without any `--with-node-id` suffix.
    pub node_name: NodeName,
    /// `with-node-id`, and the id when it is known.
    pub node_id: NodeIdState,
    /// `node-ip`, or the detected addresses.
    pub node_ips: NodeIps,
    /// `node-external-ip`.
    pub node_external_ips: Vec<IpAddr>,
    /// `bind-address`, or `0.0.0.0`/`::` by the family of the first node IP.
    pub bind_address: IpAddr,
    /// `kubelet-port`.
    pub kubelet_port: u16,
    /// `flannel-iface`.
    pub flannel_iface: Option<InterfaceName>,
    /// `flannel-cni-conf`.
    pub flannel_cni_conf: Option<PathBuf>,
    /// `subnet-file`: where flannel's `subnet.env` is written for the flannel CNI plugin.
    pub subnet_file: PathBuf,
    /// `cni-conf-dir`, or [`default_cni_conf_dir`] of the data dir: where the CNI config list
    /// is written.
    pub cni_conf_dir: PathBuf,
    /// `masq-mode`.
    pub masq_mode: MasqMode,
    /// Whether `masq-mode` was given (not the default): then a `flannel-conf` whose
    /// `EnableNFTables` says otherwise is an error.
    pub masq_mode_given: bool,
    /// `wireguard-implementation`, used by the `wireguard-native` backend.
    pub wireguard_implementation: WireguardImplementation,
    /// `log-format`, for the whole daemon (a server's too, even with `disable-agent`).
    pub log_format: LogFormat,
    /// `reconcile-interval`: the time between full reconciliations, 1 to 3600 whole seconds.
    pub reconcile_interval: Duration,
    /// `metrics-address`: where the daemon serves Prometheus `/metrics`. Its port is neither
    /// the kubelet's nor, on a server, the supervisor's.
    pub metrics_address: SocketAddr,
}

/// The `--with-node-id` state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeIdState {
    /// `with-node-id` is off: the node name is used as is.
    Off,
    /// The id file holds this id.
    Known(NodeId),
    /// The id file does not exist yet.
    ///
    /// Loading never writes: `validate` must change nothing on the host. A random id cannot be
    /// predicted, and a deterministic one (say, from the hostname) would defeat the point of the
    /// flag, which is to tell apart machines cloned with the same name. So the name is reported
    /// without the id, with a [`Warning::NodeIdPending`], and the daemon creates the file on its
    /// first start. The suffix is always `-` and 8 hex digits, so the full name's validity is
    /// already checked with a stand-in id.
    Pending {
        /// Where the daemon will create it.
        path: PathBuf,
    },
}

/// The node's IPs and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeIps {
    /// The addresses, primary family first.
    pub addrs: Vec<IpAddr>,
    /// Where they came from.
    pub source: NodeIpSource,
}

/// Where the node IPs came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeIpSource {
    /// The `node-ip` setting.
    Setting,
    /// The addresses of `flannel-iface`.
    FlannelIface(String),
    /// The addresses of the default-route interfaces (IPv4's, then IPv6's).
    DefaultRoute(Vec<String>),
}

/// The id file of `--with-node-id` in a data dir.
pub fn node_id_file(data_dir: &Path) -> PathBuf {
    data_dir.join("node").join("id")
}

/// The `cni-conf-dir` of a data dir when the setting is not given: `<data-dir>/agent/etc/cni/net.d`.
pub fn default_cni_conf_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("agent").join("etc").join("cni").join("net.d")
}

// === impl NodeConfig ===

impl NodeConfig {
    /// The full node name, with the `--with-node-id` suffix; `None` while the id file does not
    /// exist yet.
    pub fn full_node_name(&self) -> Option<NodeName> {
        match &self.node_id {
            NodeIdState::Off => Some(self.node_name.clone()),
            NodeIdState::Known(id) => Some(self.node_name.with_id(id)),
            NodeIdState::Pending { .. } => None,
        }
    }

    /// Checks this node against the cluster network the servers hand out, and returns every
    /// error and warning.
    ///
    /// An agent takes the cluster network from the servers, as K3s agents do: the flannel
    /// backend, `flannel-ipv6-masq`, `flannel-external-ip`, the egress selector mode, the CIDRs
    /// and the node mask sizes are never its own settings. So an agent's effective network is
    /// the servers' [`ClusterNetwork`] plus this `NodeConfig`, and this is the check that they
    /// fit. An agent reads the servers' record with [`ClusterNetwork::from_json`], calls this,
    /// logs the warnings and refuses to start when there is any error; then
    /// [`ClusterNetwork::derived`] and [`NodeConfig::masq_mode_in`] give the values it runs with.
    /// A server calls this for its embedded agent while loading ([`crate::load_server`]).
    ///
    /// The rules: the node IPs must cover every family of `cluster-cidr`; when IPv6 is primary
    /// they must be set explicitly with IPv6 first; the primary family's address must not come
    /// second; a `masq-mode` given must agree with the cluster's `flannel-conf` `EnableNFTables`.
    /// Warnings: `flannel-external-ip` without `node-external-ip`, and a
    /// `wireguard-implementation` other than `auto` with a backend other than `wireguard-native`.
    pub fn check_cluster(&self, cluster: &ClusterNetwork) -> (Vec<ConfigError>, Vec<Warning>) {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let ips = &self.node_ips;
        let cluster_families = cluster.cluster_cidr.families();
        let primary = cluster_families.primary();
        if let Some(node) = ip_families(&ips.addrs) {
            let covers = (!cluster_families.has_ipv4() || node.has_ipv4())
                && (!cluster_families.has_ipv6() || node.has_ipv6());
            if !covers {
                errors.push(ConfigError::NodeIpFamilies {
                    cluster: cluster_families,
                    node,
                    node_ip_source: ips.source.clone(),
                });
            }
            let first = Family::of(ips.addrs[0]);
            if primary == Family::Ipv6 && ips.source != NodeIpSource::Setting {
                errors.push(ConfigError::Ipv6PrimaryNeedsNodeIp {
                    cluster: cluster.cluster_cidr,
                });
            } else if first != primary && node.has(primary) {
                errors.push(ConfigError::NodeIpOrder {
                    node_ips: ips.addrs.clone(),
                    first,
                    primary,
                    cluster: cluster.cluster_cidr,
                });
            }
        }
        if cluster.flannel_external_ip && self.node_external_ips.is_empty() {
            warnings.push(Warning::NoNodeExternalIp);
        }
        if self.wireguard_implementation != WireguardImplementation::Auto
            && cluster.flannel_backend != FlannelBackend::WireguardNative
        {
            warnings.push(Warning::WireguardImplementationUnused {
                implementation: self.wireguard_implementation.as_str(),
                backend: cluster.flannel_backend.as_str(),
            });
        }
        if self.masq_mode_given && self.masq_mode_in(cluster) != self.masq_mode {
            errors.push(ConfigError::NetConf(NetConfProblem::Contradicts {
                key: "EnableNFTables",
                value: (self.masq_mode_in(cluster) == MasqMode::Nftables).to_string(),
                setting: Key::MasqMode.name(),
                setting_value: self.masq_mode.as_str().to_owned(),
            }));
        }
        (errors, warnings)
    }

    /// The masquerade mode this node runs: `flannel-conf`'s `EnableNFTables` when the cluster
    /// gives one, else `masq-mode`.
    pub fn masq_mode_in(&self, cluster: &ClusterNetwork) -> MasqMode {
        match cluster.enable_nftables() {
            Some(true) => MasqMode::Nftables,
            Some(false) => MasqMode::Iptables,
            None => self.masq_mode,
        }
    }
}

impl fmt::Display for NodeIpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeIpSource::Setting => f.write_str("set by node-ip"),
            NodeIpSource::FlannelIface(iface) => write!(f, "taken from flannel-iface {iface}"),
            NodeIpSource::DefaultRoute(ifaces) => {
                write!(
                    f,
                    "detected on default-route interface {}",
                    ifaces.join(" and ")
                )
            }
        }
    }
}

/// Why a token file can't be used (it can't be read, or is empty), if it can't.
pub(crate) fn unusable_token_file(path: &Path, files: &dyn Files) -> Option<String> {
    match files.read(path) {
        Ok(text) if text.trim().is_empty() => Some("it is empty".into()),
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

/// Builds the node settings of `role` from resolved values, recording every error.
///
/// Returns `None` when a value the config needs (name, IPs) could not be had.
pub(crate) fn build(
    r: &Resolved,
    role: Role,
    sys: System<'_>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<Warning>,
) -> Option<NodeConfig> {
    let data_dir = absolute_path(r, Key::DataDir, errors)
        .unwrap_or_else(|| PathBuf::from(crate::DEFAULT_DATA_DIR));
    let token = r.text(Key::Token).map(Token::new);
    let token_file = r.text(Key::TokenFile).map(PathBuf::from);
    if token.is_some() && token_file.is_some() {
        errors.push(ConfigError::TokenAndTokenFile);
    }
    if let Some(path) = &token_file
        && let Some(reason) = unusable_token_file(path, sys.files)
    {
        errors.push(ConfigError::TokenFile {
            path: path.clone(),
            reason,
        });
    }
    let server = r
        .text(Key::Server)
        .and_then(|s| s.parse::<ServerUrl>().map_err(|e| errors.push(e)).ok());
    let joins = role == Role::Agent || r.text(Key::Server).is_some();
    if role == Role::Agent && r.text(Key::Server).is_none() {
        errors.push(ConfigError::AgentNeedsServer);
    }
    if joins && token.is_none() && token_file.is_none() {
        errors.push(ConfigError::JoinNeedsToken);
    }

    let with_node_id = r.bool(Key::WithNodeId, errors);
    let node_name = node_name(r, sys.host, with_node_id)
        .map_err(|e| errors.push(e))
        .ok();
    let node_id = if with_node_id {
        match read_node_id(&node_id_file(&data_dir), sys.files) {
            Ok(state) => state,
            Err(e) => {
                errors.push(e);
                NodeIdState::Off
            }
        }
    } else {
        NodeIdState::Off
    };
    if let (NodeIdState::Pending { path }, Some(name)) = (&node_id, &node_name) {
        warnings.push(Warning::NodeIdPending {
            path: path.clone(),
            base: name.to_string(),
        });
    }

    let flannel_iface = r
        .text(Key::FlannelIface)
        .and_then(|s| s.parse::<InterfaceName>().map_err(|e| errors.push(e)).ok());
    let flannel_iface_ok = r.text(Key::FlannelIface).is_none() || flannel_iface.is_some();
    let node_ips = match r.list(Key::NodeIp).0 {
        [] if flannel_iface_ok => detect_node_ips(flannel_iface.as_ref(), sys.host)
            .map_err(|e| errors.push(e))
            .ok(),
        [] => None,
        given => parse_ip_list(Key::NodeIp.name(), given)
            .map(|addrs| NodeIps {
                addrs,
                source: NodeIpSource::Setting,
            })
            .map_err(|e| errors.push(e.into()))
            .ok(),
    };
    let node_external_ips =
        parse_ip_list(Key::NodeExternalIp.name(), r.list(Key::NodeExternalIp).0)
            .map_err(|e| errors.push(e.into()))
            .unwrap_or_default();
    let bind_address = single_ip(r, Key::BindAddress, errors).unwrap_or_else(|| {
        match node_ips.as_ref().and_then(|ips| ips.addrs.first()) {
            Some(IpAddr::V6(_)) => IpAddr::from([0u16; 8]),
            _ => IpAddr::from([0u8; 4]),
        }
    });
    let kubelet_port = r.port(Key::KubeletPort, crate::DEFAULT_KUBELET_PORT, errors);

    let flannel_cni_conf = r.text(Key::FlannelCniConf).map(PathBuf::from);
    if let Some(path) = &flannel_cni_conf {
        match sys.files.exists(path) {
            Ok(true) => {}
            Ok(false) => errors.push(ConfigError::NamedFileMissing {
                key: Key::FlannelCniConf.name(),
                path: path.clone(),
            }),
            Err(e) => errors.push(named_file_error(Key::FlannelCniConf, path.clone(), e)),
        }
    }

    let subnet_file = absolute_path(r, Key::SubnetFile, errors)
        .unwrap_or_else(|| PathBuf::from(crate::DEFAULT_SUBNET_FILE));
    let cni_conf_dir = absolute_path(r, Key::CniConfDir, errors)
        .unwrap_or_else(|| default_cni_conf_dir(&data_dir));
    let masq_mode = parsed(r, Key::MasqMode, errors);
    let wireguard_implementation = parsed(r, Key::WireguardImplementation, errors);
    let log_format = parsed(r, Key::LogFormat, errors);
    let reconcile_interval = reconcile_interval(r, errors);
    let metrics_address = metrics_address(r, errors);

    Some(NodeConfig {
        data_dir,
        token,
        token_file,
        server,
        node_name: node_name?,
        node_id,
        node_ips: node_ips?,
        node_external_ips,
        bind_address,
        kubelet_port,
        flannel_iface,
        flannel_cni_conf,
        subnet_file,
        cni_conf_dir,
        masq_mode,
        masq_mode_given: r.text(Key::MasqMode).is_some(),
        wireguard_implementation,
        log_format,
        reconcile_interval,
        metrics_address,
    })
}

/// Checks that `metrics-address` shares its port with no other listener of the node: the
/// kubelet's when the node runs one (it listens on every address of both families), and the
/// supervisor's at `supervisor` on a server. Skipped when `metrics-address` itself is invalid.
pub(crate) fn check_metrics_port(
    node: &NodeConfig,
    runs_kubelet: bool,
    supervisor: Option<SocketAddr>,
    errors: &mut Vec<ConfigError>,
) {
    if errors
        .iter()
        .any(|e| matches!(e, ConfigError::InvalidMetricsAddress { .. }))
    {
        return;
    }
    let metrics = node.metrics_address;
    let taken: Vec<u16> = supervisor
        .map(|s| s.port())
        .into_iter()
        .chain(runs_kubelet.then_some(node.kubelet_port))
        .collect();
    let mut conflict = |key: Key, port: u16| {
        errors.push(ConfigError::MetricsPortInUse {
            address: metrics,
            key: key.name(),
            port,
            suggestion: free_metrics_port(metrics, &taken),
        });
    };
    if let Some(supervisor) = supervisor
        && supervisor.port() == metrics.port()
        && addresses_collide(metrics.ip(), supervisor.ip())
    {
        conflict(Key::SupervisorPort, supervisor.port());
    } else if runs_kubelet && node.kubelet_port == metrics.port() {
        conflict(Key::KubeletPort, node.kubelet_port);
    }
}

/// The default `metrics-address`, [`crate::DEFAULT_METRICS_ADDRESS`].
fn default_metrics_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], crate::DEFAULT_METRICS_PORT))
}

/// `metrics` with the first port from the default metrics port on that `taken` lacks.
fn free_metrics_port(metrics: SocketAddr, taken: &[u16]) -> SocketAddr {
    let port = (crate::DEFAULT_METRICS_PORT..=u16::MAX)
        .find(|p| !taken.contains(p))
        .unwrap_or(crate::DEFAULT_METRICS_PORT);
    SocketAddr::new(metrics.ip(), port)
}

/// Whether listeners on `a` and `b` with the same port collide: the same address, or a
/// wildcard that covers the other. An IPv6 wildcard covers IPv4 too (dual-stack sockets).
fn addresses_collide(a: IpAddr, b: IpAddr) -> bool {
    let covers = |w: IpAddr, other: IpAddr| w.is_unspecified() && (w.is_ipv6() || other.is_ipv4());
    a == b || covers(a, b) || covers(b, a)
}

/// The node name: `node-name`, else the hostname; lower-cased and checked. With
/// `--with-node-id`, the name plus a stand-in suffix must be valid too.
pub(crate) fn node_name(
    r: &Resolved,
    host: &dyn Host,
    with_node_id: bool,
) -> Result<NodeName, ConfigError> {
    let (raw, name_source) = match r.text(Key::NodeName) {
        Some(name) => (
            name.to_owned(),
            NameSource::Setting(r.origin(Key::NodeName)),
        ),
        None => {
            let hostname = host.hostname().map_err(|e| ConfigError::Hostname {
                source: Cause::new(e),
            })?;
            (hostname, NameSource::Hostname)
        }
    };
    let name = raw.to_lowercase();
    if name.is_empty() {
        return Err(ConfigError::EmptyNodeName { name_source });
    }
    if name.split('.').next() == Some("localhost") {
        return Err(ConfigError::LocalhostNodeName { name, name_source });
    }
    let full_ok = !with_node_id || is_dns1123_subdomain(&format!("{name}-00000000"));
    if !is_dns1123_subdomain(&name) || !full_ok {
        return Err(ConfigError::InvalidNodeName { name, name_source });
    }
    Ok(NodeName::new_unchecked(name))
}

/// Reads the `--with-node-id` id file, without creating it.
pub(crate) fn read_node_id(path: &Path, files: &dyn Files) -> Result<NodeIdState, ConfigError> {
    match files.read(path) {
        Ok(content) => NodeId::parse(&content)
            .map(NodeIdState::Known)
            .ok_or_else(|| ConfigError::InvalidNodeId {
                path: path.to_owned(),
                content: content.trim().to_owned(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(NodeIdState::Pending {
            path: path.to_owned(),
        }),
        Err(e) => Err(ConfigError::ReadNodeId {
            path: path.to_owned(),
            source: Cause::new(e),
        }),
    }
}

/// Picks node IPs as K3s does when `node-ip` is not set.
///
/// With `flannel-iface`: its global unicast addresses, which must be at most one IPv4 (and the
/// first IPv6 joins it). Otherwise the first global unicast IPv4 of the IPv4 default-route
/// interface, then the first global unicast IPv6 of the IPv6 default-route interface.
pub(crate) fn detect_node_ips(
    flannel_iface: Option<&InterfaceName>,
    host: &dyn Host,
) -> Result<NodeIps, ConfigError> {
    let query = |what| {
        move |e: io::Error| ConfigError::HostQuery {
            what,
            source: Cause::new(e),
        }
    };
    if let Some(iface) = flannel_iface {
        let name = iface.as_str();
        let found = host
            .interface(name)
            .map_err(query("the interfaces"))?
            .ok_or_else(|| ConfigError::InterfaceMissing {
                iface: name.to_owned(),
            })?;
        if !found.up {
            return Err(ConfigError::InterfaceDown {
                iface: name.to_owned(),
            });
        }
        let global: Vec<IpAddr> = found.addrs.into_iter().filter(is_global_unicast).collect();
        let v4: Vec<IpAddr> = global.iter().copied().filter(IpAddr::is_ipv4).collect();
        let v6 = global.iter().copied().find(IpAddr::is_ipv6);
        if v4.len() > 1 {
            return Err(ConfigError::InterfaceManyIpv4 {
                iface: name.to_owned(),
                addrs: v4,
            });
        }
        let addrs: Vec<IpAddr> = v4.into_iter().chain(v6).collect();
        if addrs.is_empty() {
            return Err(ConfigError::InterfaceNoAddress {
                iface: name.to_owned(),
            });
        }
        return Ok(NodeIps {
            addrs,
            source: NodeIpSource::FlannelIface(name.to_owned()),
        });
    }

    let mut addrs = Vec::new();
    let mut ifaces = Vec::new();
    for family in [Family::Ipv4, Family::Ipv6] {
        let what = match family {
            Family::Ipv4 => "the IPv4 routes",
            Family::Ipv6 => "the IPv6 routes",
        };
        let Some(name) = host.default_route_interface(family).map_err(query(what))? else {
            continue;
        };
        let Some(found) = host.interface(&name).map_err(query("the interfaces"))? else {
            continue;
        };
        let addr = found
            .addrs
            .into_iter()
            .filter(is_global_unicast)
            .find(|a| Family::of(*a) == family);
        if let (true, Some(addr)) = (found.up, addr) {
            addrs.push(addr);
            if !ifaces.contains(&name) {
                ifaces.push(name);
            }
        }
    }
    if addrs.is_empty() {
        return Err(ConfigError::NoDefaultRoute);
    }
    Ok(NodeIps {
        addrs,
        source: NodeIpSource::DefaultRoute(ifaces),
    })
}

/// Go's `IP.IsGlobalUnicast`: not loopback, unspecified, multicast, broadcast or link-local.
/// Private and unique-local addresses count.
pub(crate) fn is_global_unicast(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_link_local())
        }
        IpAddr::V6(a) => {
            let link_local = a.segments()[0] & 0xffc0 == 0xfe80;
            !(a.is_loopback() || a.is_unspecified() || a.is_multicast() || link_local)
        }
    }
}

/// A setting that takes one IP address.
pub(crate) fn single_ip(r: &Resolved, key: Key, errors: &mut Vec<ConfigError>) -> Option<IpAddr> {
    let value = r.text(key)?;
    match parse_ip_list(key.name(), &[value]) {
        Ok(addrs) if addrs.len() == 1 => Some(addrs[0]),
        Ok(addrs) => {
            errors.push(ConfigError::NotOneAddress {
                key: key.name(),
                value: value.to_owned(),
                count: addrs.len(),
            });
            None
        }
        Err(e) => {
            errors.push(e.into());
            None
        }
    }
}

/// A path setting that must be absolute.
pub(crate) fn absolute_path(
    r: &Resolved,
    key: Key,
    errors: &mut Vec<ConfigError>,
) -> Option<PathBuf> {
    let value = r.text(key)?;
    if Path::new(value).is_absolute() {
        Some(PathBuf::from(value))
    } else {
        errors.push(ConfigError::RelativePath {
            key: key.name(),
            value: value.to_owned(),
        });
        None
    }
}

pub(crate) fn named_file_error(key: Key, path: PathBuf, e: io::Error) -> ConfigError {
    if e.kind() == io::ErrorKind::NotFound {
        ConfigError::NamedFileMissing {
            key: key.name(),
            path,
        }
    } else {
        ConfigError::ReadFile {
            path,
            source: Cause::new(e),
        }
    }
}

/// A setting parsed by its type's [`FromStr`]; the type's default when unset or invalid (the
/// error is recorded).
fn parsed<T>(r: &Resolved, key: Key, errors: &mut Vec<ConfigError>) -> T
where
    T: FromStr<Err = ConfigError> + Default,
{
    r.text(key)
        .and_then(|v| v.parse().map_err(|e| errors.push(e)).ok())
        .unwrap_or_default()
}

/// `reconcile-interval`: whole seconds from 1 to 3600; the default when unset or invalid (the
/// error is recorded).
fn reconcile_interval(r: &Resolved, errors: &mut Vec<ConfigError>) -> Duration {
    let default = Duration::from_secs(crate::DEFAULT_RECONCILE_INTERVAL_SECS);
    let Some(value) = r.text(Key::ReconcileInterval) else {
        return default;
    };
    match value.trim().parse::<u64>() {
        Ok(secs) if (1..=3600).contains(&secs) => Duration::from_secs(secs),
        _ => {
            errors.push(ConfigError::InvalidReconcileInterval {
                value: value.to_owned(),
            });
            default
        }
    }
}

/// `metrics-address`: `IP:PORT` or `[IPv6]:PORT`, port not 0; the default when unset or
/// invalid (the error is recorded).
fn metrics_address(r: &Resolved, errors: &mut Vec<ConfigError>) -> SocketAddr {
    let Some(value) = r.text(Key::MetricsAddress) else {
        return default_metrics_address();
    };
    match value.trim().parse::<SocketAddr>() {
        Ok(addr) if addr.port() != 0 => addr,
        _ => {
            errors.push(ConfigError::InvalidMetricsAddress {
                value: value.to_owned(),
            });
            default_metrics_address()
        }
    }
}
