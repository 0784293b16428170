//! The settings table: every setting's one documented home.
//!
//! Each [`Key`] has one [`Setting`] row that gives its flag, short flag, aliases, config-file key,
//! environment variables, default and help text. The flags (`--help`), the config-file key check,
//! the environment lookup and the effective-config JSON are all generated from this table, so they
//! cannot drift apart.

use std::fmt;
use std::path::PathBuf;

#[cfg(test)]
mod tests;

/// A setting, by name. The order of [`Key::ALL`] is the order of `--help` and of the JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// `config`: the config file.
    Config,
    /// `data-dir`.
    DataDir,
    /// `token`.
    Token,
    /// `token-file`.
    TokenFile,
    /// `agent-token`.
    AgentToken,
    /// `agent-token-file`.
    AgentTokenFile,
    /// `server`.
    Server,
    /// `node-name`.
    NodeName,
    /// `with-node-id`.
    WithNodeId,
    /// `node-ip`.
    NodeIp,
    /// `node-external-ip`.
    NodeExternalIp,
    /// `bind-address`.
    BindAddress,
    /// `advertise-address`.
    AdvertiseAddress,
    /// `supervisor-port`.
    SupervisorPort,
    /// `max-connections`.
    MaxConnections,
    /// `max-connections-per-address`.
    MaxConnectionsPerAddress,
    /// `kubelet-port`.
    KubeletPort,
    /// `cluster-cidr`.
    ClusterCidr,
    /// `service-cidr`.
    ServiceCidr,
    /// `cluster-dns`.
    ClusterDns,
    /// `cluster-domain`.
    ClusterDomain,
    /// `node-cidr-mask-size-ipv4`.
    NodeCidrMaskSizeIpv4,
    /// `node-cidr-mask-size-ipv6`.
    NodeCidrMaskSizeIpv6,
    /// `kube-controller-manager-arg`.
    KubeControllerManagerArg,
    /// `flannel-backend`.
    FlannelBackend,
    /// `flannel-ipv6-masq`.
    FlannelIpv6Masq,
    /// `flannel-external-ip`.
    FlannelExternalIp,
    /// `flannel-iface`.
    FlannelIface,
    /// `flannel-conf`.
    FlannelConf,
    /// `flannel-cni-conf`.
    FlannelCniConf,
    /// `subnet-file`: flannel's `subnet.env`.
    SubnetFile,
    /// `cni-conf-dir`.
    CniConfDir,
    /// `masq-mode`.
    MasqMode,
    /// `wireguard-implementation`.
    WireguardImplementation,
    /// `egress-selector-mode`.
    EgressSelectorMode,
    /// `disable-network-policy`.
    DisableNetworkPolicy,
    /// `disable-agent`.
    DisableAgent,
    /// `datastore-endpoint`.
    DatastoreEndpoint,
    /// `datastore-cafile`.
    DatastoreCafile,
    /// `datastore-certfile`.
    DatastoreCertfile,
    /// `datastore-keyfile`.
    DatastoreKeyfile,
    /// `reconcile-interval`.
    ReconcileInterval,
    /// `metrics-address`.
    MetricsAddress,
    /// `log-format`.
    LogFormat,
}

/// The shape of a setting's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One value of text (paths, names, URLs, addresses).
    Text,
    /// `true` or `false`; a bare flag means `true`.
    Bool,
    /// One number.
    Number,
    /// A list: repeated flags, YAML/TOML lists and commas all add entries.
    List,
}

/// Which daemons take a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Servers only; an agent refuses it.
    Server,
    /// Servers (for their embedded agent) and agents.
    Both,
}

/// The daemon a configuration is loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `weft-server`.
    Server,
    /// `weft-agent`.
    Agent,
}

/// One row of the settings table.
#[derive(Debug)]
#[non_exhaustive]
pub struct Setting {
    /// The key this row describes.
    pub key: Key,
    /// The flag and config-file key, kebab-case.
    pub name: &'static str,
    /// The short flag, if any.
    pub short: Option<char>,
    /// Other names accepted as flags and config-file keys (K3s's hidden aliases).
    pub aliases: &'static [&'static str],
    /// The shape of the value.
    pub kind: Kind,
    /// Which daemons take it.
    pub scope: Scope,
    /// Environment variables, in precedence order: the `WEFT_*` name first, then K3s's.
    pub env: &'static [&'static str],
    /// The default, as `--help` shows it.
    pub default: &'static str,
    /// The placeholder for the value in `--help`.
    pub value_name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// Whether the value is a secret, shown as `********`.
    pub secret: bool,
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag.
    Flag,
    /// A config file or drop-in.
    File(PathBuf),
    /// An environment variable.
    Env(&'static str),
    /// The built-in default.
    Default,
}

/// The default config file, read when it exists and no other is named.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/weft/config.yaml";
/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/weft";
/// The default supervisor (API and tunnel) port.
pub const DEFAULT_SUPERVISOR_PORT: u16 = 9345;
/// The default `max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// The default `max-connections-per-address`.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 1_000;
/// The default kubelet port.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;
/// The default cluster domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// The default `subnet-file`, where K3s writes flannel's `subnet.env`.
pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
/// The default `reconcile-interval`, in seconds.
pub const DEFAULT_RECONCILE_INTERVAL_SECS: u64 = 10;
/// The default `metrics-address`.
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9346";
/// The port of the default `metrics-address`.
pub const DEFAULT_METRICS_PORT: u16 = 9346;

/// The rows of the settings table, in [`Key::ALL`] order.
static SETTINGS: [Setting; Key::ALL.len()] = [
    Setting {
        key: Key::Config,
        name: "config",
        short: Some('c'),
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Both,
        env: &["WEFT_CONFIG_FILE", "K3S_CONFIG_FILE"],
        default: DEFAULT_CONFIG_FILE,
        value_name: "FILE",
        help: "Config file (YAML, or TOML if it ends in .toml), then drop-ins <FILE>.d/*.yaml|*.yml; the environment variables win over this flag",
        secret: false,
    },
    Setting {
        key: Key::DataDir,
        name: "data-dir",
        short: Some('d'),
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Both,
        env: &["WEFT_DATA_DIR", "K3S_DATA_DIR"],
        default: DEFAULT_DATA_DIR,
        value_name: "DIR",
        help: "Directory for state: the node id file, generated flannel and CNI config",
        secret: false,
    },
    Setting {
        key: Key::Token,
        name: "token",
        short: Some('t'),
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Both,
        env: &["WEFT_TOKEN", "K3S_TOKEN"],
        default: "none; the first server generates one",
        value_name: "TOKEN",
        help: "Shared secret to join servers and agents to the cluster",
        secret: true,
    },
    Setting {
        key: Key::TokenFile,
        name: "token-file",
        short: None,
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Both,
        env: &["WEFT_TOKEN_FILE", "K3S_TOKEN_FILE"],
        default: "none",
        value_name: "FILE",
        help: "File holding the token",
        secret: false,
    },
    Setting {
        key: Key::AgentToken,
        name: "agent-token",
        short: None,
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Server,
        env: &["WEFT_AGENT_TOKEN", "K3S_AGENT_TOKEN"],
        default: "none; the first server generates one",
        value_name: "TOKEN",
        help: "Shared secret that joins agents, and only agents, to the cluster",
        secret: true,
    },
    Setting {
        key: Key::AgentTokenFile,
        name: "agent-token-file",
        short: None,
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Server,
        env: &["WEFT_AGENT_TOKEN_FILE", "K3S_AGENT_TOKEN_FILE"],
        default: "none",
        value_name: "FILE",
        help: "File holding the agent token",
        secret: false,
    },
    Setting {
        key: Key::Server,
        name: "server",
        short: Some('s'),
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Both,
        env: &["WEFT_SERVER", "K3S_URL"],
        default: "none; required for agents",
        value_name: "URL",
        help: "Server to join, as https://HOST:PORT",
        secret: false,
    },
    Setting {
        key: Key::NodeName,
        name: "node-name",
        short: None,
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Both,
        env: &["WEFT_NODE_NAME", "K3S_NODE_NAME"],
        default: "the hostname, lower-cased",
        value_name: "NAME",
        help: "Node name, an RFC 1123 subdomain",
        secret: false,
    },
    Setting {
        key: Key::WithNodeId,
        name: "with-node-id",
        short: None,
        aliases: &[],
        kind: Kind::Bool,
        scope: Scope::Both,
        env: &["WEFT_WITH_NODE_ID"],
        default: "false",
        value_name: "BOOL",
        help: "Append -<8 hex digits> from <data-dir>/node/id to the node name",
        secret: false,
    },
    Setting {
        key: Key::NodeIp,
        name: "node-ip",
        short: Some('i'),
        aliases: &[],
        kind: Kind::List,
        scope: Scope::Both,
        env: &["WEFT_NODE_IP"],
        default: "the addresses of flannel-iface, else of the default-route interface",
        value_name: "IP",
        help: "IPv4/IPv6 addresses to advertise for the node, primary family first",
        secret: false,
    },
    Setting {
        key: Key::NodeExternalIp,
        name: "node-external-ip",
        short: None,
        aliases: &[],
        kind: Kind::List,
        scope: Scope::Both,
        env: &["WEFT_NODE_EXTERNAL_IP"],
        default: "none",
        value_name: "IP",
        help: "IPv4/IPv6 external addresses to advertise for the node",
        secret: false,
    },
    Setting {
        key: Key::BindAddress,
        name: "bind-address",
        short: None,
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Both,
        env: &["WEFT_BIND_ADDRESS"],
        default: "0.0.0.0, or :: when the first node IP is IPv6",
        value_name: "IP",
        help: "Address the listeners bind to",
        secret: false,
    },
    Setting {
        key: Key::AdvertiseAddress,
        name: "advertise-address",
        short: None,
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Server,
        env: &["WEFT_ADVERTISE_ADDRESS"],
        default: "the first node-external-ip, else the first node-ip",
        value_name: "IP",
        help: "Address other nodes use to reach this server",
        secret: false,
    },
    Setting {
        key: Key::SupervisorPort,
        name: "supervisor-port",
        short: None,
        aliases: &[],
        kind: Kind::Number,
        scope: Scope::Server,
        env: &["WEFT_SUPERVISOR_PORT", "K3S_SUPERVISOR_PORT"],
        default: "9345",
        value_name: "PORT",
        help: "Port of the server's API, tunnel endpoint and HTTP CONNECT proxy",
        secret: false,
    },
    Setting {
        key: Key::MaxConnections,
        name: "max-connections",
        short: None,
        aliases: &[],
        kind: Kind::Number,
        scope: Scope::Server,
        env: &["WEFT_MAX_CONNECTIONS"],
        default: "20000",
        value_name: "COUNT",
        help: "Most connections the server's API holds at once before upgrades to tunnels or CONNECT streams; past it new ones are closed at once (20000 fits 5,000 nodes)",
        secret: false,
    },
    Setting {
        key: Key::MaxConnectionsPerAddress,
        name: "max-connections-per-address",
        short: None,
        aliases: &[],
        kind: Kind::Number,
        scope: Scope::Server,
        env: &["WEFT_MAX_CONNECTIONS_PER_ADDRESS"],
        default: "1000",
        value_name: "COUNT",
        help: "Most of those connections from one source address; raise it when many nodes share one address (a NAT)",
        secret: false,
    },
    Setting {
        key: Key::KubeletPort,
        name: "kubelet-port",
        short: None,
        aliases: &[],
        kind: Kind::Number,
        scope: Scope::Both,
        env: &["WEFT_KUBELET_PORT"],
        default: "10250",
        value_name: "PORT",
        help: "Port of the node's kubelet, reached through the egress tunnel",
        secret: false,
    },
    Setting {
        key: Key::ClusterCidr,
        name: "cluster-cidr",
        short: None,
        aliases: &[],
        kind: Kind::List,
        scope: Scope::Server,
        env: &["WEFT_CLUSTER_CIDR"],
        default: "10.42.0.0/16, or fd00:42::/56 when the first node IP is IPv6",
        value_name: "CIDR",
        help: "IPv4/IPv6 networks for pod IPs, primary family first",
        secret: false,
    },
    Setting {
        key: Key::ServiceCidr,
        name: "service-cidr",
        short: None,
        aliases: &[],
        kind: Kind::List,
        scope: Scope::Server,
        env: &["WEFT_SERVICE_CIDR"],
        default: "10.43.0.0/16, or fd00:43::/112 when the first node IP is IPv6",
        value_name: "CIDR",
        help: "IPv4/IPv6 networks for service IPs, primary family first (at most /12 IPv4, /112 IPv6)",
        secret: false,
    },
    Setting {
        key: Key::ClusterDns,
        name: "cluster-dns",
        short: None,
        aliases: &[],
        kind: Kind::List,
        scope: Scope::Server,
        env: &["WEFT_CLUSTER_DNS"],
        default: "address 10 of each service-cidr, e.g. 10.43.0.10",
        value_name: "IP",
        help: "IPv4/IPv6 cluster IPs of the DNS service, each inside the service-cidr of its family",
        secret: false,
    },
    Setting {
        key: Key::ClusterDomain,
        name: "cluster-domain",
        short: None,
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Server,
        env: &["WEFT_CLUSTER_DOMAIN"],
        default: DEFAULT_CLUSTER_DOMAIN,
        value_name: "DOMAIN",
        help: "Cluster domain",
        secret: false,
    },
    Setting {
        key: Key::NodeCidrMaskSizeIpv4,
        name: "node-cidr-mask-size-ipv4",
        short: None,
        aliases: &[],
        kind: Kind::Number,
        scope: Scope::Server,
        env: &["WEFT_NODE_CIDR_MASK_SIZE_IPV4"],
        default: "24",
        value_name: "BITS",
        help: "Prefix length of each node's IPv4 pod CIDR (also read from kube-controller-manager-arg)",
        secret: false,
    },
    Setting {
        key: Key::NodeCidrMaskSizeIpv6,
        name: "node-cidr-mask-size-ipv6",
        short: None,
        aliases: &[],
        kind: Kind::Number,
        scope: Scope::Server,
        env: &["WEFT_NODE_CIDR_MASK_SIZE_IPV6"],
        default: "64",
        value_name: "BITS",
        help: "Prefix length of each node's IPv6 pod CIDR (also read from kube-controller-manager-arg)",
        secret: false,
    },
    Setting {
        key: Key::KubeControllerManagerArg,
        name: "kube-controller-manager-arg",
        short: None,
        aliases: &["kube-controller-arg"],
        kind: Kind::List,
        scope: Scope::Server,
        env: &["WEFT_KUBE_CONTROLLER_MANAGER_ARG"],
        default: "none",
        value_name: "NAME=VALUE",
        help: "kube-controller-manager flags as K3s takes them; weft reads node-cidr-mask-size, -ipv4 and -ipv6 and passes the rest on",
        secret: false,
    },
    Setting {
        key: Key::FlannelBackend,
        name: "flannel-backend",
        short: None,
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Server,
        env: &["WEFT_FLANNEL_BACKEND"],
        default: "vxlan",
        value_name: "BACKEND",
        help: "Pod network backend: none, vxlan, host-gw or wireguard-native",
        secret: false,
    },
    Setting {
        key: Key::FlannelIpv6Masq,
        name: "flannel-ipv6-masq",
        short: None,
        aliases: &[],
        kind: Kind::Bool,
        scope: Scope::Server,
        env: &["WEFT_FLANNEL_IPV6_MASQ"],
        default: "false",
        value_name: "BOOL",
        help: "Masquerade IPv6 pod traffic leaving the cluster (needs an IPv6 cluster-cidr)",
        secret: false,
    },
    Setting {
        key: Key::FlannelExternalIp,
        name: "flannel-external-ip",
        short: None,
        aliases: &[],
        kind: Kind::Bool,
        scope: Scope::Server,
        env: &["WEFT_FLANNEL_EXTERNAL_IP"],
        default: "false",
        value_name: "BOOL",
        help: "Send flannel traffic to the nodes' external IPs instead of their internal ones",
        secret: false,
    },
    Setting {
        key: Key::FlannelIface,
        name: "flannel-iface",
        short: None,
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Both,
        env: &["WEFT_FLANNEL_IFACE"],
        default: "the default-route interface",
        value_name: "IFACE",
        help: "Interface flannel traffic uses; node-ip defaults to its addresses",
        secret: false,
    },
    Setting {
        key: Key::FlannelConf,
        name: "flannel-conf",
        short: None,
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Server,
        env: &["WEFT_FLANNEL_CONF"],
        default: "derived from the settings, written to <data-dir>/agent/etc/flannel/net-conf.json",
        value_name: "FILE",
        help: "Flannel net-conf.json applied on every node (backend options, SubnetMin/Max); must agree with the other settings",
        secret: false,
    },
    Setting {
        key: Key::FlannelCniConf,
        name: "flannel-cni-conf",
        short: None,
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Both,
        env: &["WEFT_FLANNEL_CNI_CONF"],
        default: "generated at <cni-conf-dir>/10-flannel.conflist",
        value_name: "FILE",
        help: "CNI config list to use instead of the generated one",
        secret: false,
    },
    Setting {
        key: Key::SubnetFile,
        name: "subnet-file",
        short: None,
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Both,
        env: &["WEFT_SUBNET_FILE"],
        default: DEFAULT_SUBNET_FILE,
        value_name: "FILE",
        help: "Where to write flannel's subnet.env for the flannel CNI plugin (flannel's --subnet-file)",
        secret: false,
    },
    Setting {
        key: Key::CniConfDir,
        name: "cni-conf-dir",
        short: None,
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Both,
        env: &["WEFT_CNI_CONF_DIR"],
        default: "<data-dir>/agent/etc/cni/net.d",
        value_name: "DIR",
        help: "Directory the CNI config list is written to, where the container runtime reads it",
        secret: false,
    },
    Setting {
        key: Key::MasqMode,
        name: "masq-mode",
        short: None,
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Both,
        env: &["WEFT_MASQ_MODE"],
        default: "nftables",
        value_name: "MODE",
        help: "How pod traffic leaving the cluster is masqueraded: nftables or iptables",
        secret: false,
    },
    Setting {
        key: Key::WireguardImplementation,
        name: "wireguard-implementation",
        short: None,
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Both,
        env: &["WEFT_WIREGUARD_IMPLEMENTATION"],
        default: "auto",
        value_name: "IMPL",
        help: "WireGuard for flannel-backend wireguard-native: auto (the kernel module if it loads, else userspace), kernel or userspace",
        secret: false,
    },
    Setting {
        key: Key::EgressSelectorMode,
        name: "egress-selector-mode",
        short: None,
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Server,
        env: &["WEFT_EGRESS_SELECTOR_MODE"],
        default: "agent",
        value_name: "MODE",
        help: "How the control plane reaches nodes: agent, pod, cluster or disabled",
        secret: false,
    },
    Setting {
        key: Key::DisableNetworkPolicy,
        name: "disable-network-policy",
        short: None,
        aliases: &[],
        kind: Kind::Bool,
        scope: Scope::Server,
        env: &["WEFT_DISABLE_NETWORK_POLICY"],
        default: "false",
        value_name: "BOOL",
        help: "Disable the network policy controller",
        secret: false,
    },
    Setting {
        key: Key::DisableAgent,
        name: "disable-agent",
        short: None,
        aliases: &[],
        kind: Kind::Bool,
        scope: Scope::Server,
        env: &["WEFT_DISABLE_AGENT"],
        default: "false",
        value_name: "BOOL",
        help: "Run the server without its embedded agent",
        secret: false,
    },
    Setting {
        key: Key::DatastoreEndpoint,
        name: "datastore-endpoint",
        short: None,
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Server,
        env: &["WEFT_DATASTORE_ENDPOINT", "K3S_DATASTORE_ENDPOINT"],
        default: "the embedded store in <data-dir>",
        value_name: "URLS",
        help: "etcd endpoints (https://, or http:// with a warning; comma-separated) shared by several servers",
        secret: false,
    },
    Setting {
        key: Key::DatastoreCafile,
        name: "datastore-cafile",
        short: None,
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Server,
        env: &["WEFT_DATASTORE_CAFILE", "K3S_DATASTORE_CAFILE"],
        default: "the system's CAs",
        value_name: "FILE",
        help: "CA certificate (PEM) that signed the https:// etcd's certificate",
        secret: false,
    },
    Setting {
        key: Key::DatastoreCertfile,
        name: "datastore-certfile",
        short: None,
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Server,
        env: &["WEFT_DATASTORE_CERTFILE", "K3S_DATASTORE_CERTFILE"],
        default: "none",
        value_name: "FILE",
        help: "Client certificate (PEM) for an https:// etcd that checks clients (--client-cert-auth); needs datastore-keyfile",
        secret: false,
    },
    Setting {
        key: Key::DatastoreKeyfile,
        name: "datastore-keyfile",
        short: None,
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Server,
        env: &["WEFT_DATASTORE_KEYFILE", "K3S_DATASTORE_KEYFILE"],
        default: "none",
        value_name: "FILE",
        help: "Private key (PEM) of datastore-certfile",
        secret: false,
    },
    Setting {
        key: Key::ReconcileInterval,
        name: "reconcile-interval",
        short: None,
        aliases: &[],
        kind: Kind::Number,
        scope: Scope::Both,
        env: &["WEFT_RECONCILE_INTERVAL"],
        default: "10",
        value_name: "SECONDS",
        help: "Seconds between full reconciliations of routes, links and rules with the cluster (1 to 3600)",
        secret: false,
    },
    Setting {
        key: Key::MetricsAddress,
        name: "metrics-address",
        short: None,
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Both,
        env: &["WEFT_METRICS_ADDRESS"],
        default: DEFAULT_METRICS_ADDRESS,
        value_name: "IP:PORT",
        help: "Address to serve Prometheus metrics on, at /metrics; write an IPv6 address as [ADDRESS]:PORT",
        secret: false,
    },
    Setting {
        key: Key::LogFormat,
        name: "log-format",
        short: None,
        aliases: &[],
        kind: Kind::Text,
        scope: Scope::Both,
        env: &["WEFT_LOG_FORMAT"],
        default: "text",
        value_name: "FORMAT",
        help: "Log format: text, or json for one JSON object per line",
        secret: false,
    },
];

/// Which K3s commands take a [`K3sSetting`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum K3sRoles {
    /// `k3s server` only.
    Server,
    /// `k3s agent` only.
    Agent,
    /// Both.
    Both,
}

/// A setting K3s takes that weft does not act on (K3s's `pkg/cli/cmds` flag lists, minus the
/// settings weft has): a K3s config file holding it loads, with a warning.
#[derive(Debug)]
pub(crate) struct K3sSetting {
    /// The config-file key.
    pub(crate) name: &'static str,
    /// K3s's other names for it.
    pub(crate) aliases: &'static [&'static str],
    /// Which K3s commands take it.
    pub(crate) roles: K3sRoles,
}

/// K3s settings that change the pod network and that weft can't honour, with the fix: ignoring
/// them would start a node on a network other than the one asked for, so they are errors.
pub(crate) const K3S_UNSUPPORTED: &[(&str, &str)] = &[
    (
        "vpn-auth",
        "weft has no VPN integration (K3s's tailscale backend); remove it and pick a flannel-backend, e.g. wireguard-native to encrypt traffic between nodes",
    ),
    (
        "vpn-auth-file",
        "weft has no VPN integration (K3s's tailscale backend); remove it and pick a flannel-backend, e.g. wireguard-native to encrypt traffic between nodes",
    ),
];

/// Shorthand for a row of [`K3S_IGNORED`].
const fn k3s(name: &'static str, roles: K3sRoles) -> K3sSetting {
    K3sSetting {
        name,
        aliases: &[],
        roles,
    }
}

/// Every K3s server and agent setting weft does not act on, by K3s's flag lists (k3s `master`
/// at f08deaf, `pkg/cli/cmds/server.go` and `agent.go`): kubelet, container runtime,
/// kube-apiserver, etcd, packaged components, logging.
pub(crate) static K3S_IGNORED: &[K3sSetting] = {
    use K3sRoles::{Agent, Both, Server};
    &[
        // Logging, both commands.
        k3s("debug", Both),
        k3s("v", Both),
        k3s("vmodule", Both),
        K3sSetting {
            name: "log",
            aliases: &["l"],
            roles: Both,
        },
        k3s("alsologtostderr", Both),
        // The node, kubelet and container runtime, both commands.
        k3s("node-label", Both),
        k3s("node-taint", Both),
        k3s("image-credential-provider-bin-dir", Both),
        k3s("image-credential-provider-config", Both),
        k3s("selinux", Both),
        k3s("lb-server-port", Both),
        k3s("protect-kernel-defaults", Both),
        k3s("container-runtime-endpoint", Both),
        k3s("default-runtime", Both),
        k3s("image-service-endpoint", Both),
        k3s("pause-image", Both),
        k3s("snapshotter", Both),
        k3s("private-registry", Both),
        k3s("disable-default-registry-endpoint", Both),
        k3s("nonroot-devices", Both),
        k3s("airgap-extra-registry", Both),
        k3s("node-internal-dns", Both),
        k3s("node-external-dns", Both),
        k3s("resolv-conf", Both),
        k3s("kubelet-arg", Both),
        k3s("kube-proxy-arg", Both),
        k3s("enable-pprof", Both),
        k3s("rootless", Both),
        k3s("prefer-bundled-bin", Both),
        k3s("docker", Both),
        // The agent's client-side load balancer.
        k3s("disable-apiserver-lb", Agent),
        // The kube-apiserver and its listener.
        k3s("https-listen-port", Server),
        k3s("apiserver-port", Server),
        k3s("apiserver-bind-address", Server),
        k3s("advertise-port", Server),
        k3s("tls-san", Server),
        k3s("tls-san-security", Server),
        k3s("service-node-port-range", Server),
        k3s("servicelb-namespace", Server),
        K3sSetting {
            name: "write-kubeconfig",
            aliases: &["o"],
            roles: Server,
        },
        k3s("write-kubeconfig-mode", Server),
        k3s("write-kubeconfig-group", Server),
        k3s("helm-job-image", Server),
        k3s("kube-apiserver-arg", Server),
        k3s("kube-scheduler-arg", Server),
        K3sSetting {
            name: "kube-cloud-controller-manager-arg",
            aliases: &["kube-cloud-controller-arg"],
            roles: Server,
        },
        // Embedded etcd, its snapshots and kine.
        k3s("cluster-init", Server),
        k3s("cluster-reset", Server),
        k3s("cluster-reset-restore-path", Server),
        k3s("etcd-arg", Server),
        k3s("kine-tls", Server),
        k3s("etcd-expose-metrics", Server),
        k3s("etcd-disable-snapshots", Server),
        k3s("etcd-snapshot-name", Server),
        k3s("etcd-snapshot-schedule-cron", Server),
        k3s("etcd-snapshot-reconcile-interval", Server),
        k3s("etcd-snapshot-retention", Server),
        k3s("etcd-snapshot-dir", Server),
        k3s("etcd-snapshot-compress", Server),
        k3s("etcd-s3", Server),
        k3s("etcd-s3-endpoint", Server),
        k3s("etcd-s3-endpoint-ca", Server),
        k3s("etcd-s3-skip-ssl-verify", Server),
        k3s("etcd-s3-access-key", Server),
        k3s("etcd-s3-secret-key", Server),
        k3s("etcd-s3-session-token", Server),
        k3s("etcd-s3-bucket", Server),
        k3s("etcd-s3-bucket-lookup-type", Server),
        k3s("etcd-s3-region", Server),
        k3s("etcd-s3-folder", Server),
        k3s("etcd-s3-retention", Server),
        k3s("etcd-s3-proxy", Server),
        k3s("etcd-s3-config-secret", Server),
        k3s("etcd-s3-insecure", Server),
        k3s("etcd-s3-timeout", Server),
        // Packaged components and cluster-wide Kubernetes settings.
        k3s("default-local-storage-path", Server),
        k3s("disable", Server),
        k3s("disable-scheduler", Server),
        k3s("disable-cloud-controller", Server),
        k3s("disable-kube-proxy", Server),
        k3s("disable-helm-controller", Server),
        k3s("disable-apiserver", Server),
        k3s("disable-controller-manager", Server),
        k3s("disable-etcd", Server),
        k3s("embedded-registry", Server),
        k3s("supervisor-metrics", Server),
        k3s("system-default-registry", Server),
        k3s("secrets-encryption", Server),
        k3s("secrets-encryption-provider", Server),
    ]
};

/// What a config file's key is to K3s, when it is no weft setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum K3sKey {
    /// A setting K3s takes for this role and weft does not act on: warn and skip it.
    Ignored(&'static str),
    /// A K3s server setting in an agent's file: `k3s agent` refuses it too.
    ServerOnly(&'static str),
    /// A K3s network setting weft can't honour, and how to fix the file.
    Unsupported(&'static str, &'static str),
}

/// What `key` is to K3s for `role`, or `None` when K3s does not know it either.
///
/// `k3s server` skips every key it does not know, so a server's file may hold any K3s setting,
/// the agent-only ones too; `k3s agent` refuses keys it does not take, so an agent's file may
/// hold only the agent's.
pub(crate) fn k3s_key(key: &str, role: Role) -> Option<K3sKey> {
    if let Some((name, fix)) = K3S_UNSUPPORTED.iter().find(|(name, _)| *name == key) {
        return Some(K3sKey::Unsupported(name, fix));
    }
    let setting = K3S_IGNORED
        .iter()
        .find(|s| s.name == key || s.aliases.contains(&key))?;
    Some(match (role, setting.roles) {
        (Role::Agent, K3sRoles::Server) => K3sKey::ServerOnly(setting.name),
        _ => K3sKey::Ignored(setting.name),
    })
}

// === impl Key ===

impl Key {
    /// Every key, in table order.
    pub const ALL: [Key; 44] = [
        Key::Config,
        Key::DataDir,
        Key::Token,
        Key::TokenFile,
        Key::AgentToken,
        Key::AgentTokenFile,
        Key::Server,
        Key::NodeName,
        Key::WithNodeId,
        Key::NodeIp,
        Key::NodeExternalIp,
        Key::BindAddress,
        Key::AdvertiseAddress,
        Key::SupervisorPort,
        Key::MaxConnections,
        Key::MaxConnectionsPerAddress,
        Key::KubeletPort,
        Key::ClusterCidr,
        Key::ServiceCidr,
        Key::ClusterDns,
        Key::ClusterDomain,
        Key::NodeCidrMaskSizeIpv4,
        Key::NodeCidrMaskSizeIpv6,
        Key::KubeControllerManagerArg,
        Key::FlannelBackend,
        Key::FlannelIpv6Masq,
        Key::FlannelExternalIp,
        Key::FlannelIface,
        Key::FlannelConf,
        Key::FlannelCniConf,
        Key::SubnetFile,
        Key::CniConfDir,
        Key::MasqMode,
        Key::WireguardImplementation,
        Key::EgressSelectorMode,
        Key::DisableNetworkPolicy,
        Key::DisableAgent,
        Key::DatastoreEndpoint,
        Key::DatastoreCafile,
        Key::DatastoreCertfile,
        Key::DatastoreKeyfile,
        Key::ReconcileInterval,
        Key::MetricsAddress,
        Key::LogFormat,
    ];

    /// This key's row of the settings table.
    pub fn setting(self) -> &'static Setting {
        &SETTINGS[self as usize]
    }

    /// The flag and config-file name.
    pub fn name(self) -> &'static str {
        self.setting().name
    }

    /// Finds the key a flag or config-file key names: its name, an alias or its short letter.
    pub fn lookup(name: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| {
            let s = k.setting();
            s.name == name
                || s.aliases.contains(&name)
                || s.short
                    .is_some_and(|c| name.len() == c.len_utf8() && name.starts_with(c))
        })
    }

    /// The known config-file key closest to `key`, by edit distance: weft's settings, then
    /// the K3s settings weft skips, a weft setting winning a tie.
    ///
    /// Every role's keys count: a typo of a server setting in an agent's file is best answered
    /// with the setting meant, whose own error then says it belongs on servers.
    pub fn closest(key: &str) -> &'static str {
        Key::ALL
            .into_iter()
            .filter(|k| *k != Key::Config)
            .map(Key::name)
            .chain(K3S_IGNORED.iter().map(|s| s.name))
            .min_by_key(|name| edit_distance(key, name))
            .unwrap_or("cluster-cidr")
    }

    /// Whether this is one of the flannel options that only servers take.
    pub fn is_flannel_option(self) -> bool {
        matches!(
            self,
            Key::FlannelBackend | Key::FlannelIpv6Masq | Key::FlannelExternalIp | Key::FlannelConf
        )
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// === impl Role ===

impl Role {
    /// Whether this role takes `key`.
    pub fn takes(self, key: Key) -> bool {
        match self {
            Role::Server => true,
            Role::Agent => key.setting().scope == Scope::Both,
        }
    }

    /// The keys this role takes, in table order.
    pub fn keys(self) -> impl Iterator<Item = Key> {
        Key::ALL.into_iter().filter(move |k| self.takes(*k))
    }
}

// === impl Origin ===

impl Origin {
    /// Advice to remove `key` from where it was given.
    pub(crate) fn removal(&self, key: &str) -> String {
        match self {
            Origin::Flag => format!("remove the --{key} flag"),
            Origin::File(path) => format!("remove {key} from {}", path.display()),
            Origin::Env(var) => format!("unset {var}"),
            Origin::Default => format!("unset {key}"),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => f.write_str("the command line"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Env(var) => write!(f, "{var}"),
            Origin::Default => f.write_str("the default"),
        }
    }
}

/// Levenshtein distance, for suggesting the closest key.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
