//! Loading: the whole pipeline from flags, files and environment to a checked
//! [`ServerConfig`] or [`AgentConfig`], and the effective configuration as JSON.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde_json::{Map, Value, json};
use weft_ipam::Family;

use crate::datastore::{self, DatastoreTls};
use crate::file::{self, ConfigLocation};
use crate::node::{self, NodeConfig, NodeIdState, single_ip};
use crate::resolve::{self, FlagValues, Resolved};
use crate::{
    ClusterNetwork, ConfigError, DatastoreEndpoint, Key, NetConf, Role, SECRET_MASK, System, Token,
    Warning, network,
};

#[cfg(test)]
mod tests;

/// The result of a load: the config or every error, and the warnings in both cases.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Loaded<T> {
    /// The checked config, or every error found.
    pub result: Result<T, Vec<ConfigError>>,
    /// Everything legal but probably not meant.
    pub warnings: Vec<Warning>,
}

/// A checked `weft-server` configuration.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The main config file (read if it exists).
    pub config_file: PathBuf,
    /// The node settings of the server's embedded agent (its name and IPs also name the server).
    pub node: NodeConfig,
    /// The cluster network, which every server must share.
    pub network: ClusterNetwork,
    /// `flannel-conf`: the file the network's `net-conf.json` was read from.
    pub flannel_conf: Option<PathBuf>,
    /// `supervisor-port`.
    pub supervisor_port: u16,
    /// `max-connections`.
    pub max_connections: usize,
    /// `max-connections-per-address`.
    pub max_connections_per_address: usize,
    /// `advertise-address`, or the first node external IP, or the first node IP.
    pub advertise_address: IpAddr,
    /// `disable-agent`.
    pub disable_agent: bool,
    /// `datastore-endpoint`; `None` for the embedded store.
    pub datastore_endpoint: Option<DatastoreEndpoint>,
    /// `agent-token`: the secret that registers agents and nothing else.
    pub agent_token: Option<Token>,
    /// `agent-token-file`.
    pub agent_token_file: Option<PathBuf>,
    /// `datastore-cafile`, `datastore-certfile` and `datastore-keyfile`, for an `https://`
    /// etcd.
    pub datastore_tls: DatastoreTls,
    /// `kube-controller-manager-arg`, as given.
    pub kube_controller_manager_args: Vec<String>,
}

/// A checked `weft-agent` configuration.
///
/// The cluster network comes from the servers later; [`NodeConfig::check_cluster`] checks the
/// node against it then.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AgentConfig {
    /// The main config file (read if it exists).
    pub config_file: PathBuf,
    /// The node settings.
    pub node: NodeConfig,
}

/// Loads and checks a server's configuration: files, then flags, environment and defaults,
/// then every rule. Reads the host only through `sys`, and writes nothing.
pub fn load_server(flags: &FlagValues, sys: System<'_>) -> Loaded<ServerConfig> {
    let (r, location, mut errors, mut warnings) = gather(Role::Server, flags, sys);
    let node = node::build(&r, Role::Server, sys, &mut errors, &mut warnings);
    let disable_agent = r.bool(Key::DisableAgent, &mut errors);
    let first_ip = node
        .as_ref()
        .and_then(|n| n.node_ips.addrs.first().copied());
    let (flannel_conf, net_conf) = read_flannel_conf(&r, sys, &mut errors);
    let network = network::build(
        &r,
        first_ip,
        disable_agent,
        net_conf,
        &mut errors,
        &mut warnings,
    );
    let supervisor_port = r.port(
        Key::SupervisorPort,
        crate::DEFAULT_SUPERVISOR_PORT,
        &mut errors,
    );
    let max_connections = r.connection_limit(
        Key::MaxConnections,
        crate::DEFAULT_MAX_CONNECTIONS,
        &mut errors,
    );
    let max_connections_per_address = r.connection_limit(
        Key::MaxConnectionsPerAddress,
        crate::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
        &mut errors,
    );
    let (datastore_endpoint, datastore_tls) =
        datastore::build(&r, sys.files, &mut errors, &mut warnings);
    let agent_token = r.text(Key::AgentToken).map(Token::new);
    let agent_token_file = r.text(Key::AgentTokenFile).map(PathBuf::from);
    if agent_token.is_some() && agent_token_file.is_some() {
        errors.push(ConfigError::AgentTokenAndAgentTokenFile);
    }
    if let Some(path) = &agent_token_file
        && let Some(reason) = node::unusable_token_file(path, sys.files)
    {
        errors.push(ConfigError::AgentTokenFile {
            path: path.clone(),
            reason,
        });
    }
    let explicit_advertise = single_ip(&r, Key::AdvertiseAddress, &mut errors);
    let advertise_ok = r.text(Key::AdvertiseAddress).is_none() || explicit_advertise.is_some();

    let mut config = None;
    if let (Some(node), Some(network)) = (node, network) {
        let mut node_ok = true;
        if !disable_agent {
            let (errs, warns) = node.check_cluster(&network);
            node_ok = errs.is_empty();
            errors.extend(errs);
            warnings.extend(warns);
        }
        node::check_metrics_port(
            &node,
            !disable_agent,
            Some(SocketAddr::new(node.bind_address, supervisor_port)),
            &mut errors,
        );
        let advertise_address = explicit_advertise
            .or_else(|| node.node_external_ips.first().copied())
            .unwrap_or(node.node_ips.addrs[0]);
        let service = network.service_cidr.primary();
        // A derived advertise address follows the node IPs: once they are wrong, the fix for
        // them fixes it too, so it is not reported twice.
        let check_advertise = explicit_advertise.is_some() || (advertise_ok && node_ok);
        if check_advertise && Family::of(advertise_address) != service.family() {
            errors.push(ConfigError::AdvertiseAddressFamily {
                address: advertise_address,
                family: Family::of(advertise_address),
                service,
            });
        }
        config = Some(ServerConfig {
            config_file: location.path,
            node,
            network,
            flannel_conf,
            supervisor_port,
            max_connections,
            max_connections_per_address,
            advertise_address,
            disable_agent,
            datastore_endpoint,
            agent_token,
            agent_token_file,
            datastore_tls,
            kube_controller_manager_args: r.list(Key::KubeControllerManagerArg).0.to_vec(),
        });
    }
    finish(config, errors, warnings)
}

/// Loads and checks an agent's configuration. Server settings (the flannel options among
/// them) given to an agent are errors. Reads the host only through `sys`, and writes nothing.
pub fn load_agent(flags: &FlagValues, sys: System<'_>) -> Loaded<AgentConfig> {
    let (r, location, mut errors, mut warnings) = gather(Role::Agent, flags, sys);
    let node = node::build(&r, Role::Agent, sys, &mut errors, &mut warnings);
    if let Some(node) = &node {
        node::check_metrics_port(node, true, None, &mut errors);
    }
    let config = node.map(|node| AgentConfig {
        config_file: location.path,
        node,
    });
    finish(config, errors, warnings)
}

/// Resolves only `data-dir` for `role` (flag, config file, environment, default), for commands
/// that read a node's files and need nothing else: no token, no node name or IP detection, so
/// it works on a host whose other settings could not be resolved now. Errors in the config
/// files still count.
pub fn load_data_dir(role: Role, flags: &FlagValues, sys: System<'_>) -> Loaded<PathBuf> {
    let (r, _, mut errors, warnings) = gather(role, flags, sys);
    let data_dir = node::absolute_path(&r, Key::DataDir, &mut errors)
        .unwrap_or_else(|| PathBuf::from(crate::DEFAULT_DATA_DIR));
    finish(Some(data_dir), errors, warnings)
}

// === impl ServerConfig ===

impl ServerConfig {
    /// The effective configuration as `validate` prints it: every setting by name, lists as
    /// arrays, secrets as `********`, and `"derived"`.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        for key in Role::Server.keys() {
            let value = match key {
                Key::SupervisorPort => json!(self.supervisor_port),
                Key::MaxConnections => json!(self.max_connections),
                Key::MaxConnectionsPerAddress => json!(self.max_connections_per_address),
                Key::AdvertiseAddress => json!(self.advertise_address.to_string()),
                Key::DisableAgent => json!(self.disable_agent),
                Key::DatastoreEndpoint => json!(
                    self.datastore_endpoint
                        .as_ref()
                        .map(DatastoreEndpoint::masked)
                ),
                Key::DatastoreCafile => path_json(self.datastore_tls.ca_file.as_ref()),
                Key::DatastoreCertfile => path_json(
                    self.datastore_tls
                        .client_cert
                        .as_ref()
                        .map(|c| &c.cert_file),
                ),
                Key::DatastoreKeyfile => {
                    path_json(self.datastore_tls.client_cert.as_ref().map(|c| &c.key_file))
                }
                Key::KubeControllerManagerArg => json!(self.kube_controller_manager_args),
                Key::AgentToken => json!(self.agent_token.as_ref().map(|_| SECRET_MASK)),
                Key::FlannelConf => path_json(self.flannel_conf.as_ref()),
                Key::AgentTokenFile => json!(
                    self.agent_token_file
                        .as_ref()
                        .map(|p| p.display().to_string())
                ),
                key => match self.network.value_json(key) {
                    Some(value) => value,
                    None => node_json(&self.config_file, &self.node, key),
                },
            };
            map.insert(key.name().to_owned(), value);
        }
        let mut derived = self.network.derived().to_json();
        if let Value::Object(derived) = &mut derived {
            derived.insert("node-name".to_owned(), full_name_json(&self.node));
        }
        map.insert("derived".to_owned(), derived);
        Value::Object(map)
    }
}

// === impl AgentConfig ===

impl AgentConfig {
    /// The effective configuration as `validate` prints it. The agent's `"derived"` holds only
    /// what it knows before it has the servers' cluster network: the full node name.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        for key in Role::Agent.keys() {
            map.insert(
                key.name().to_owned(),
                node_json(&self.config_file, &self.node, key),
            );
        }
        map.insert(
            "derived".to_owned(),
            json!({ "node-name": full_name_json(&self.node) }),
        );
        Value::Object(map)
    }
}

/// Reads and parses the file `flannel-conf` names; every problem is recorded.
fn read_flannel_conf(
    r: &Resolved,
    sys: System<'_>,
    errors: &mut Vec<ConfigError>,
) -> (Option<PathBuf>, Option<NetConf>) {
    let Some(path) = r.text(Key::FlannelConf).map(PathBuf::from) else {
        return (None, None);
    };
    let conf = match sys.files.read(&path) {
        Ok(text) => NetConf::parse(&text)
            .map_err(|problems| errors.extend(problems.into_iter().map(ConfigError::NetConf)))
            .ok(),
        Err(e) => {
            errors.push(node::named_file_error(Key::FlannelConf, path.clone(), e));
            None
        }
    };
    (Some(path), conf)
}

/// Locates and reads the config files, then applies precedence.
fn gather(
    role: Role,
    flags: &FlagValues,
    sys: System<'_>,
) -> (Resolved, ConfigLocation, Vec<ConfigError>, Vec<Warning>) {
    let location = file::locate(flags.get(Key::Config).last().map(String::as_str), sys.env);
    let (files, mut errors, mut warnings) = file::load(&location, role, sys.files);
    let (resolved, errs, warns) = resolve::resolve(role, flags, &files, sys.env);
    errors.extend(errs);
    warnings.extend(warns);
    (resolved, location, errors, warnings)
}

fn finish<T>(config: Option<T>, errors: Vec<ConfigError>, warnings: Vec<Warning>) -> Loaded<T> {
    let result = match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(errors),
    };
    Loaded { result, warnings }
}

/// A node setting's effective value.
fn node_json(config_file: &std::path::Path, node: &NodeConfig, key: Key) -> Value {
    let path = |p: &Option<PathBuf>| json!(p.as_ref().map(|p| p.display().to_string()));
    match key {
        Key::Config => json!(config_file.display().to_string()),
        Key::DataDir => json!(node.data_dir.display().to_string()),
        Key::Token => json!(node.token.as_ref().map(|_| SECRET_MASK)),
        Key::TokenFile => path(&node.token_file),
        Key::Server => json!(node.server.as_ref().map(|s| s.as_str())),
        Key::NodeName => json!(node.node_name.as_str()),
        Key::WithNodeId => json!(node.node_id != NodeIdState::Off),
        Key::NodeIp => json!(strings(node.node_ips.addrs.iter())),
        Key::NodeExternalIp => json!(strings(node.node_external_ips.iter())),
        Key::BindAddress => json!(node.bind_address.to_string()),
        Key::KubeletPort => json!(node.kubelet_port),
        Key::FlannelIface => json!(node.flannel_iface.as_ref().map(|i| i.as_str())),
        Key::FlannelCniConf => path(&node.flannel_cni_conf),
        Key::SubnetFile => json!(node.subnet_file.display().to_string()),
        Key::CniConfDir => json!(node.cni_conf_dir.display().to_string()),
        Key::MasqMode => json!(node.masq_mode.as_str()),
        Key::WireguardImplementation => json!(node.wireguard_implementation.as_str()),
        Key::ReconcileInterval => json!(node.reconcile_interval.as_secs()),
        Key::MetricsAddress => json!(node.metrics_address.to_string()),
        Key::LogFormat => json!(node.log_format.as_str()),
        _ => Value::Null,
    }
}

fn path_json(path: Option<&PathBuf>) -> Value {
    json!(path.map(|p| p.display().to_string()))
}

fn full_name_json(node: &NodeConfig) -> Value {
    json!(node.full_node_name().map(|n| n.to_string()))
}

fn strings<T: ToString>(items: impl Iterator<Item = T>) -> Vec<String> {
    items.map(|i| i.to_string()).collect()
}

/// What `validate` prints, ready for a binary to write out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// The effective configuration as pretty JSON, when valid.
    pub stdout: Option<String>,
    /// One line per warning (`warning: ...`), then one per error (`error: ...`).
    pub stderr: Vec<String>,
    /// Whether the configuration is valid: exit 0, else exit 1.
    pub valid: bool,
}

// === impl Loaded ===

impl<T> Loaded<T> {
    /// The `validate` report: JSON on stdout when valid; warnings and errors for stderr.
    pub fn report(&self, to_json: impl Fn(&T) -> Value) -> Report {
        let mut stderr: Vec<String> = self
            .warnings
            .iter()
            .map(|w| format!("warning: {w}"))
            .collect();
        match &self.result {
            Ok(config) => Report {
                stdout: Some(
                    serde_json::to_string_pretty(&to_json(config))
                        .unwrap_or_else(|e| unreachable!("a JSON value always serializes: {e}")),
                ),
                stderr,
                valid: true,
            },
            Err(errors) => {
                stderr.extend(errors.iter().map(|e| format!("error: {e}")));
                Report {
                    stdout: None,
                    stderr,
                    valid: false,
                }
            }
        }
    }
}
