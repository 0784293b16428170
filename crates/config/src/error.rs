//! The one error type of weft-config, [`ConfigError`], and the typed [`Warning`]s.
//!
//! Every message names the setting, the bad value and the fix, is lowercase and has no trailing
//! period. Loading collects every error before it fails, so one run shows all of them.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use weft_cause::Cause;

use weft_ipam::{Cidr, CidrList, Family, IpFamilies, IpamError};

use crate::node::NodeIpSource;
use crate::{Key, Origin};

/// Everything that can be wrong with a configuration, from reading files to cross-setting rules.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    // --- Reading files.
    /// A config file named by `--config`, `WEFT_CONFIG_FILE` or `K3S_CONFIG_FILE` does not exist.
    ///
    /// K3s silently ignores a missing file; weft refuses it, because a typo in the path would
    /// otherwise start the node with defaults.
    #[error("config file {} does not exist (named by {named_by}): create it or name an existing file", path.display())]
    ConfigFileMissing {
        /// The path named.
        path: PathBuf,
        /// What named it: `--config`, `WEFT_CONFIG_FILE` or `K3S_CONFIG_FILE`.
        named_by: &'static str,
    },
    /// A config file or drop-in directory exists but cannot be read.
    #[error("can't read {}: {source}; check that it is a readable file", path.display())]
    ReadFile {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: Cause,
    },
    /// A config file is not valid YAML or TOML.
    #[error("config file {} is not valid {format}: {reason}", path.display())]
    FileSyntax {
        /// The file.
        path: PathBuf,
        /// `YAML` or `TOML`.
        format: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// A config file's top level is not a map of setting names to values.
    #[error("config file {} must be a map of setting names to values, e.g. `cluster-cidr: 10.42.0.0/16`", path.display())]
    FileNotAMap {
        /// The file.
        path: PathBuf,
    },
    /// A key in a config file is not text.
    #[error("config file {} has the key {key}, which is not a setting name: keys are names such as cluster-cidr", path.display())]
    KeyNotText {
        /// The file.
        path: PathBuf,
        /// The key, as the parser shows it.
        key: String,
    },
    /// A value in a config file is a map, or a list holding lists or maps.
    #[error("{key} in {} must be a plain value or a list of plain values, not a map or a nested list", path.display())]
    NestedValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A key in a config file is no setting weft or K3s knows.
    ///
    /// K3s drops unknown keys on servers and crashes agents on them; weft refuses them on both,
    /// and skips only the K3s settings it does not act on ([`Warning::IgnoredK3sKey`]).
    #[error("unknown key {key} in {}: the closest known key is {closest}", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key as written (without a trailing `+`).
        key: String,
        /// The known key closest to it.
        closest: &'static str,
    },
    /// A K3s server setting in an agent's config file: `k3s agent` refuses it too.
    #[error("{key} in {} is a k3s server setting, which an agent does not take (k3s agent refuses it too): remove it from the agent's config file", path.display())]
    K3sServerKeyOnAgent {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
    },
    /// A K3s setting that changes the pod network in a way weft can't honour.
    #[error("{key} in {} is a k3s setting weft can't honour: {fix}", path.display())]
    K3sUnsupported {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// Why, and how to fix the file.
        fix: &'static str,
    },
    /// A config file sets `config`, which only the command line and environment can set.
    #[error("key config in {} has no effect: a config file can't name another one; use --config, WEFT_CONFIG_FILE or K3S_CONFIG_FILE", path.display())]
    ConfigKeyInFile {
        /// The file.
        path: PathBuf,
    },

    // --- Settings given to the wrong role or with the wrong shape.
    /// The file named by `flannel-conf` (or the `net-conf` of a cluster record) breaks a rule
    /// of flannel's `net-conf.json`, or contradicts another setting.
    #[error("flannel-conf: {0}")]
    NetConf(NetConfProblem),
    /// A flannel option was given to an agent.
    #[error("{key} can't be set on an agent: flannel options are set on servers only, because every node takes them from the servers; {}", origin.removal(key))]
    FlannelOptionOnAgent {
        /// The setting.
        key: &'static str,
        /// Where it was given.
        origin: Origin,
    },
    /// Another server-only setting was given to an agent.
    #[error("{key} is a server setting and has no effect on an agent; {}", origin.removal(key))]
    ServerSettingOnAgent {
        /// The setting.
        key: &'static str,
        /// Where it was given.
        origin: Origin,
    },
    /// A single-value setting was given a list.
    #[error("{key} takes one value, but {origin} gives {count}: keep one")]
    NotOneValue {
        /// The setting.
        key: &'static str,
        /// Where the list came from.
        origin: Origin,
        /// How many values it holds.
        count: usize,
    },

    // --- Single values.
    /// A boolean setting is not `true` or `false`.
    #[error("invalid {key} {value:?}: use true or false")]
    InvalidBool {
        /// The setting.
        key: &'static str,
        /// The value as given.
        value: String,
    },
    /// A port setting is not a number from 1 to 65535.
    #[error("invalid {key} {value:?}: use a port number from 1 to 65535")]
    InvalidPort {
        /// The setting.
        key: &'static str,
        /// The value as given.
        value: String,
    },
    /// `max-connections` or `max-connections-per-address` is not a whole number from 1 to
    /// 1000000.
    #[error(
        "invalid {key} {value:?}: use a whole number of connections from 1 to 1000000, e.g. {example}"
    )]
    InvalidConnectionLimit {
        /// The setting.
        key: &'static str,
        /// The value as given.
        value: String,
        /// The setting's default, as an example.
        example: usize,
    },
    /// A node CIDR mask size is not a prefix length.
    #[error("invalid {key} {value:?}: use a prefix length such as 24 for IPv4 or 64 for IPv6")]
    InvalidMaskSize {
        /// The setting.
        key: &'static str,
        /// The value as given.
        value: String,
    },
    /// A single-address setting holds several addresses.
    #[error("{key} takes one IP address, but {value} has {count}: keep one")]
    NotOneAddress {
        /// The setting.
        key: &'static str,
        /// The value as given.
        value: String,
        /// How many addresses it holds.
        count: usize,
    },
    /// A path setting is not absolute.
    #[error("invalid {key} {value:?}: use an absolute path, starting with /")]
    RelativePath {
        /// The setting.
        key: &'static str,
        /// The value as given.
        value: String,
    },
    /// A file named by `flannel-conf` or `flannel-cni-conf` does not exist.
    #[error("{key} names {}, which does not exist: create it, or unset {key} to let weft generate it", path.display())]
    NamedFileMissing {
        /// The setting.
        key: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// `flannel-iface` is no valid interface name.
    #[error(
        "invalid flannel-iface {value:?}: an interface name has 1 to 15 characters and no '/', ':' or whitespace"
    )]
    InvalidInterfaceName {
        /// The value as given.
        value: String,
    },
    /// `cluster-domain` is no DNS name.
    #[error(
        "invalid cluster-domain {value:?}: use a DNS name of lowercase letters, digits, '-' and '.', such as cluster.local"
    )]
    InvalidClusterDomain {
        /// The value as given.
        value: String,
    },
    /// `server` is no `https://HOST[:PORT]` URL.
    #[error(
        "invalid server {value:?}: {reason}; write https://HOST:PORT, e.g. https://10.0.0.1:9345"
    )]
    InvalidServerUrl {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `datastore-endpoint` names a datastore weft does not support.
    #[error(
        "invalid datastore-endpoint {value:?}: weft supports etcd (http:// or https:// endpoints, comma-separated) or the embedded store (leave it unset)"
    )]
    InvalidDatastoreEndpoint {
        /// The value, with any password replaced by `********`.
        value: String,
    },
    /// `datastore-endpoint` mixes `http://` and `https://` URLs.
    #[error(
        "datastore-endpoint {value} mixes http:// and https:// URLs: use https:// for every etcd endpoint"
    )]
    DatastoreMixedSchemes {
        /// The value, with any password replaced by `********`.
        value: String,
    },
    /// `datastore-certfile` without `datastore-keyfile`, or the reverse.
    #[error(
        "{given} is set without {missing}: set both, the client certificate and its key, or neither"
    )]
    DatastoreCertWithoutKey {
        /// The setting given.
        given: &'static str,
        /// The setting missing.
        missing: &'static str,
    },
    /// A file named by `datastore-cafile`, `datastore-certfile` or `datastore-keyfile` can't
    /// be read, or does not hold what the setting needs.
    #[error("{key} {} can't be used: {reason}; {}", path.display(), datastore_file_fix(*key))]
    DatastoreTlsFile {
        /// The setting.
        key: Key,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// TLS files are given, but the store is not an `https://` etcd.
    #[error(
        "{} {} only to an https:// etcd endpoint, but {}: set datastore-endpoint to https:// URLs, or unset them",
        keys.join(", "),
        if keys.len() == 1 { "applies" } else { "apply" },
        match endpoint {
            Some(endpoint) => format!("datastore-endpoint is {endpoint}"),
            None => "datastore-endpoint is not set, so the store is the embedded one".to_owned(),
        }
    )]
    DatastoreTlsWithoutHttps {
        /// The TLS settings given.
        keys: Vec<&'static str>,
        /// The `http://` endpoints, with any password replaced by `********`; `None` for the
        /// embedded store.
        endpoint: Option<String>,
    },
    /// A `kube-controller-manager-arg` entry is not `NAME=VALUE`.
    #[error(
        "invalid kube-controller-manager-arg {value:?}: write NAME=VALUE, e.g. node-cidr-mask-size-ipv4=24"
    )]
    InvalidControllerManagerArg {
        /// The entry as given.
        value: String,
    },

    /// `masq-mode` is no known mode.
    #[error("invalid masq-mode {value:?}: valid values are nftables, iptables")]
    InvalidMasqMode {
        /// The value as given.
        value: String,
    },
    /// `wireguard-implementation` is no known implementation.
    #[error("invalid wireguard-implementation {value:?}: valid values are auto, kernel, userspace")]
    InvalidWireguardImplementation {
        /// The value as given.
        value: String,
    },
    /// `log-format` is no known format.
    #[error("invalid log-format {value:?}: valid values are text, json")]
    InvalidLogFormat {
        /// The value as given.
        value: String,
    },
    /// `reconcile-interval` is not a whole number of seconds from 1 to 3600.
    #[error(
        "invalid reconcile-interval {value:?}: use a whole number of seconds from 1 to 3600, e.g. 10"
    )]
    InvalidReconcileInterval {
        /// The value as given.
        value: String,
    },
    /// `metrics-address` is not `IP:PORT` with a port from 1 to 65535.
    #[error(
        "invalid metrics-address {value:?}: write IP:PORT with a port from 1 to 65535, e.g. 127.0.0.1:9346, or [ADDRESS]:PORT for IPv6, e.g. [::1]:9346"
    )]
    InvalidMetricsAddress {
        /// The value as given.
        value: String,
    },
    /// `metrics-address` takes a port another listener of the node already uses.
    #[error(
        "metrics-address {address} uses port {port}, which {key} uses too: pick another port for metrics-address, e.g. {suggestion}"
    )]
    MetricsPortInUse {
        /// The metrics address.
        address: SocketAddr,
        /// The other setting: `supervisor-port` (bound on `bind-address`) or `kubelet-port`.
        key: &'static str,
        /// The port both use.
        port: u16,
        /// The address with a free port.
        suggestion: SocketAddr,
    },

    // --- Network rules.
    /// A CIDR list, address list or service-CIDR rule of weft-ipam failed.
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// `flannel-backend` names a backend K3s removed.
    #[error(
        "flannel-backend {backend} was removed in K3s {removed_in}: wireguard-native replaces it; to migrate, 1. set flannel-backend: wireguard-native on every server, 2. restart the nodes, servers first"
    )]
    FlannelBackendRemoved {
        /// `ipsec` or `wireguard`.
        backend: &'static str,
        /// The K3s release that removed it.
        removed_in: &'static str,
    },
    /// `flannel-backend` carries options (`name=options`), which K3s removed.
    #[error(
        "flannel-backend {value:?} carries options, which K3s removed in v1.27: set flannel-backend to the backend name alone and put the options in the file named by flannel-conf"
    )]
    FlannelBackendOptions {
        /// The value as given.
        value: String,
    },
    /// `flannel-backend` is no known backend.
    #[error(
        "invalid flannel-backend {value:?}: valid values are none, vxlan, host-gw, wireguard-native"
    )]
    InvalidFlannelBackend {
        /// The value as given.
        value: String,
    },
    /// `egress-selector-mode` is no known mode.
    #[error(
        "invalid egress-selector-mode {value:?}: valid values are agent, pod, cluster, disabled"
    )]
    InvalidEgressSelectorMode {
        /// The value as given.
        value: String,
    },
    /// `flannel-ipv6-masq` is set on a cluster without IPv6.
    #[error(
        "flannel-ipv6-masq is set, but cluster-cidr {cluster} has no IPv6 network: add an IPv6 cluster-cidr (dual-stack) or unset flannel-ipv6-masq"
    )]
    Ipv6MasqWithoutIpv6 {
        /// The cluster CIDRs.
        cluster: CidrList,
    },
    /// The node IPs do not cover every family of the cluster CIDRs.
    #[error(
        "cluster-cidr and node-ip must share the same IP version (IPv4, IPv6 or dual-stack): cluster-cidr is {cluster}, node-ip is {node} ({node_ip_source}); give node-ip an address of each family of cluster-cidr"
    )]
    NodeIpFamilies {
        /// The families of cluster-cidr.
        cluster: IpFamilies,
        /// The families of the node IPs.
        node: IpFamilies,
        /// Where the node IPs came from.
        node_ip_source: NodeIpSource,
    },
    /// IPv6 is the primary family, but node-ip was not set explicitly.
    #[error(
        "cluster-cidr {cluster} makes IPv6 the primary family, which needs node-ip set explicitly with the node's IPv6 address first (the kubelet prefers IPv4 otherwise): set node-ip, e.g. --node-ip=<IPv6 address>[,<IPv4 address>]"
    )]
    Ipv6PrimaryNeedsNodeIp {
        /// The cluster CIDRs.
        cluster: CidrList,
    },
    /// node-ip lists the primary family's address second.
    #[error(
        "node-ip {} starts with an {first} address, but cluster-cidr {cluster} makes {primary} the primary family: put the node's {primary} address first",
        join(node_ips)
    )]
    NodeIpOrder {
        /// The node IPs as given.
        node_ips: Vec<IpAddr>,
        /// The family of the first node IP.
        first: Family,
        /// The primary family of the cluster.
        primary: Family,
        /// The cluster CIDRs.
        cluster: CidrList,
    },
    /// A cluster DNS address lies outside the service CIDR of its family.
    #[error(
        "cluster-dns {dns} is not in service-cidr {service}: use an address inside it, e.g. {suggestion}"
    )]
    ClusterDnsOutsideService {
        /// The DNS address.
        dns: IpAddr,
        /// The service CIDR of its family.
        service: Cidr,
        /// The default DNS address of that service CIDR (index 10).
        suggestion: IpAddr,
    },
    /// A cluster DNS address has a family the service CIDRs lack.
    #[error(
        "cluster-dns {dns} is {family}, but service-cidr {service} has no {family} network: remove it or add an {family} service-cidr"
    )]
    ClusterDnsFamily {
        /// The DNS address.
        dns: IpAddr,
        /// Its family.
        family: Family,
        /// The service CIDRs.
        service: CidrList,
    },
    /// A node mask size is set both directly and through `kube-controller-manager-arg`, differently.
    #[error(
        "{key} is set twice with different values: {direct} by {key} and {from_arg} by kube-controller-manager-arg; keep one"
    )]
    MaskSizeConflict {
        /// The setting.
        key: &'static str,
        /// The value of the setting itself.
        direct: u8,
        /// The value from `kube-controller-manager-arg`.
        from_arg: u8,
    },
    /// `kube-controller-manager-arg node-cidr-mask-size=N` on a dual-stack cluster.
    #[error(
        "kube-controller-manager-arg node-cidr-mask-size={size} can't be used with the dual-stack cluster-cidr {cluster}: use node-cidr-mask-size-ipv4 and node-cidr-mask-size-ipv6"
    )]
    MaskSizeNeedsFamily {
        /// The size given.
        size: u8,
        /// The cluster CIDRs.
        cluster: CidrList,
    },
    /// The advertise address has another family than the primary service CIDR.
    #[error("advertise-address {address} is {family}, but the primary service-cidr {service} is {}: kube-apiserver needs them to match; set advertise-address to an {} address", service.family(), service.family())]
    AdvertiseAddressFamily {
        /// The advertise address in effect.
        address: IpAddr,
        /// Its family.
        family: Family,
        /// The primary service CIDR.
        service: Cidr,
    },
    /// `token-file` names a file that can't be read or is empty.
    #[error(
        "token-file {path} can't be used: {reason}; point it at a file holding the token from the server's <data-dir>/server/token"
    )]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Both `token` and `token-file` are set.
    #[error("token and token-file are both set: keep one")]
    TokenAndTokenFile,
    /// `agent-token-file` names a file that can't be read or is empty.
    #[error(
        "agent-token-file {path} can't be used: {reason}; point it at a file holding the agent token, e.g. a server's <data-dir>/server/agent-token"
    )]
    AgentTokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Both `agent-token` and `agent-token-file` are set.
    #[error("agent-token and agent-token-file are both set: keep one")]
    AgentTokenAndAgentTokenFile,
    /// An agent has no server to join.
    #[error(
        "server is required for an agent: set --server, WEFT_SERVER or K3S_URL to a server's URL, e.g. https://10.0.0.1:9345"
    )]
    AgentNeedsServer,
    /// A node that joins a server has no token.
    #[error(
        "token is required to join a server: set --token, --token-file, K3S_TOKEN or K3S_TOKEN_FILE"
    )]
    JoinNeedsToken,

    // --- The node.
    /// The hostname could not be read.
    #[error(
        "can't read the hostname to name this node: {source}; set --node-name or K3S_NODE_NAME"
    )]
    Hostname {
        /// The I/O error.
        #[source]
        source: Cause,
    },
    /// The node name is empty.
    #[error("the node name is empty ({name_source}): set --node-name or K3S_NODE_NAME")]
    EmptyNodeName {
        /// Where the name came from.
        name_source: NameSource,
    },
    /// The node name is `localhost`.
    #[error(
        "the node name {name:?} ({name_source}) does not identify this node: set --node-name or K3S_NODE_NAME to a unique name"
    )]
    LocalhostNodeName {
        /// The name.
        name: String,
        /// Where the name came from.
        name_source: NameSource,
    },
    /// The node name is no RFC 1123 subdomain.
    #[error(
        "invalid node name {name:?} ({name_source}): it must be an RFC 1123 subdomain, at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit; set --node-name or K3S_NODE_NAME"
    )]
    InvalidNodeName {
        /// The name, lower-cased.
        name: String,
        /// Where the name came from.
        name_source: NameSource,
    },
    /// The node id file does not hold 8 hex digits.
    #[error("node id file {} holds {content:?}, not 8 lowercase hex digits: delete it to get a new id on the next start", path.display())]
    InvalidNodeId {
        /// The id file.
        path: PathBuf,
        /// Its content, trimmed.
        content: String,
    },
    /// The node id file exists but cannot be read.
    #[error("can't read node id file {}: {source}; check its permissions or delete it", path.display())]
    ReadNodeId {
        /// The id file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: Cause,
    },
    /// `flannel-iface` names an interface this host lacks.
    #[error(
        "flannel-iface {iface} does not exist on this host: name an existing interface, or set node-ip"
    )]
    InterfaceMissing {
        /// The interface name.
        iface: String,
    },
    /// The interface to take node IPs from is down.
    #[error(
        "interface {iface} is down, so no node IP can be taken from it: bring it up, or set node-ip"
    )]
    InterfaceDown {
        /// The interface name.
        iface: String,
    },
    /// The interface to take node IPs from has no global unicast address.
    #[error("interface {iface} has no global unicast address to use as node IP: set node-ip")]
    InterfaceNoAddress {
        /// The interface name.
        iface: String,
    },
    /// The interface has several global unicast IPv4 addresses.
    #[error(
        "interface {iface} has several global unicast IPv4 addresses ({}): set node-ip to one of them",
        join(addrs)
    )]
    InterfaceManyIpv4 {
        /// The interface name.
        iface: String,
        /// Its IPv4 addresses.
        addrs: Vec<IpAddr>,
    },
    /// No default route, so no interface to take node IPs from.
    #[error(
        "can't pick a node IP: this host has no default route through an interface with a global unicast address; set node-ip or flannel-iface"
    )]
    NoDefaultRoute,
    /// Reading the host's interfaces or routes failed.
    #[error("can't pick a node IP: reading {what} failed: {source}; set node-ip")]
    HostQuery {
        /// What was read.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: Cause,
    },

    // --- Between servers.
    /// A server's CIDRs cover other IP families than the cluster's: dual-stack (or a family
    /// switch) can only be chosen when the cluster is first created.
    #[error(
        "{setting} of this server is {this}, but the cluster was created as {cluster}: dual-stack must be configured when the cluster is first created and can't be enabled (or removed) on an existing cluster; keep the cluster's {setting}, or create a new cluster"
    )]
    FamiliesChanged {
        /// The setting (`cluster-cidr` or `service-cidr`).
        setting: Key,
        /// This server's families.
        this: weft_ipam::IpFamilies,
        /// The cluster's families.
        cluster: weft_ipam::IpFamilies,
    },
    /// A critical setting differs between this server and the cluster.
    #[error(
        "critical configuration value mismatch between servers: {setting} (this server: {this}, cluster: {cluster})"
    )]
    CriticalMismatch {
        /// The setting.
        setting: Key,
        /// This server's value.
        this: String,
        /// The cluster's value.
        cluster: String,
    },
    /// A cluster network record, stored by a server or sent to an agent at registration, lacks
    /// keys or holds bad values ([`crate::ClusterNetwork::from_json`]).
    #[error(
        "invalid cluster network record: {}; weft servers write it, so check that every server and agent runs the same weft version",
        problems.iter().map(|p| format!("[{p}]")).collect::<Vec<_>>().join(" ")
    )]
    ClusterRecord {
        /// Every problem found, in key order.
        problems: Vec<RecordProblem>,
    },
}

/// What is wrong with a cluster network record, key by key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordProblem {
    /// The record is not a JSON object.
    #[error("the record is {found}, not a JSON object of setting names to values")]
    NotAnObject {
        /// What it is instead, e.g. `an array`.
        found: &'static str,
    },
    /// A key is missing.
    #[error("{key} is missing")]
    Missing {
        /// The setting.
        key: &'static str,
    },
    /// A key's value has the wrong JSON type.
    #[error("{key} must be {expected}, not {found}")]
    WrongType {
        /// The setting.
        key: &'static str,
        /// What it must be, e.g. `a non-empty array of strings`.
        expected: &'static str,
        /// What it is, e.g. `a number`.
        found: &'static str,
    },
    /// A value breaks the rules of its setting, or the settings break a rule together; the
    /// error names the setting.
    #[error(transparent)]
    Invalid(Box<ConfigError>),
}

/// What is wrong with a `net-conf.json` ([`crate::NetConf`]), key by key. Keys are named
/// as flannel spells them, nested ones with their object (`Backend.VNI`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetConfProblem {
    /// The file is not JSON.
    #[error("the file is not valid JSON: {reason}; write a flannel net-conf.json object")]
    NotJson {
        /// The parser's message.
        reason: String,
    },
    /// A key flannel's `net-conf.json` does not have (for this backend type).
    #[error("unknown key {key}: did you mean {closest}? remove it or fix its spelling")]
    UnknownKey {
        /// The key as written, with its object.
        key: String,
        /// The known key closest to it.
        closest: String,
    },
    /// One key given twice in different case (flannel would silently keep the last).
    #[error("{key} is given twice, as {first:?} and {second:?}: keep one")]
    DuplicateKey {
        /// The key in flannel's spelling.
        key: String,
        /// The first spelling.
        first: String,
        /// The second spelling.
        second: String,
    },
    /// A value of the wrong JSON type.
    #[error("{key} is {value}, but must be {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// The value as JSON.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
    /// A number out of its range.
    #[error("{key} {value} is out of range: use a whole number from {min} to {max}")]
    OutOfRange {
        /// The key.
        key: String,
        /// The value as JSON.
        value: String,
        /// The smallest value allowed.
        min: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// A string that is not a value of its key.
    #[error("{key} {value:?} is not valid: {}", net_conf_value_help(key))]
    InvalidValue {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// `Backend.PSK` is not a WireGuard key. The value is a secret and is not repeated.
    #[error(
        "Backend.PSK is not a WireGuard pre-shared key: use 32 bytes in base64 (44 characters), as `wg genpsk` prints them"
    )]
    InvalidPsk,
    /// `Backend` has no `Type`.
    #[error("Backend has no Type: set it to vxlan, host-gw or wireguard")]
    BackendTypeMissing,
    /// `Backend.Type` is no backend weft runs.
    #[error(
        "Backend.Type {value:?} is not a backend weft runs: use vxlan, host-gw or wireguard (flannel-backend none needs no net-conf)"
    )]
    UnknownBackendType {
        /// The type.
        value: String,
    },
    /// `Backend.Learning` is `true`: weft's VTEPs learn nothing, they are told every peer.
    #[error(
        "Backend.Learning true is not supported: weft programs every peer's VTEP; remove it or set it to false"
    )]
    LearningUnsupported,
    /// A key contradicts a setting.
    #[error(
        "{key} {value} contradicts {setting} {setting_value}: make them agree, or leave {key} out of the file"
    )]
    Contradicts {
        /// The key.
        key: &'static str,
        /// Its value.
        value: String,
        /// The setting it contradicts.
        setting: &'static str,
        /// The setting's value.
        setting_value: String,
    },
    /// A node CIDR bound outside the cluster network.
    #[error("{key} {value} is outside the cluster network {network}: pick an address inside it")]
    BoundOutsideNetwork {
        /// `SubnetMin`, `SubnetMax` or their IPv6 pair.
        key: &'static str,
        /// The address.
        value: std::net::IpAddr,
        /// The cluster CIDR of its family.
        network: weft_ipam::Cidr,
    },
    /// A node CIDR bound that does not start a node CIDR.
    #[error(
        "{key} {value} is not on a /{prefix_len} boundary (the node CIDR size): use {suggestion}"
    )]
    BoundNotOnBoundary {
        /// The key.
        key: &'static str,
        /// The address.
        value: std::net::IpAddr,
        /// The node CIDR prefix length.
        prefix_len: u8,
        /// The node CIDR's network address it lies in.
        suggestion: std::net::IpAddr,
    },
    /// A minimum above its maximum.
    #[error("{min_key} {min} is above {max_key} {max}: swap them")]
    MinAboveMax {
        /// `SubnetMin` or `IPv6SubnetMin`.
        min_key: &'static str,
        /// Its value.
        min: std::net::IpAddr,
        /// `SubnetMax` or `IPv6SubnetMax`.
        max_key: &'static str,
        /// Its value.
        max: std::net::IpAddr,
    },
    /// An MTU that leaves the devices less than the family's minimum.
    #[error("{key} {value} is too small: the devices get {value} minus {overhead} bytes of encapsulation, and {family} needs {needed}; use at least {}", needed + overhead)]
    MtuTooSmall {
        /// The key.
        key: &'static str,
        /// The MTU.
        value: u32,
        /// The backend's encapsulation overhead.
        overhead: u32,
        /// The family with the largest minimum MTU.
        family: weft_ipam::Family,
        /// That minimum (68 for IPv4, 1280 for IPv6).
        needed: u32,
    },
    /// `separate` mode on a dual-stack cluster with one port for both devices.
    #[error(
        "Backend.ListenPort and Backend.ListenPortV6 are both {port}, but Mode separate on a dual-stack cluster runs two devices, which can't share a port: give them different ports"
    )]
    SamePorts {
        /// The port.
        port: u16,
    },
    /// A single-device `Mode` whose endpoint family the cluster lacks.
    #[error(
        "Backend.Mode {mode} sends to {family} endpoints, but cluster-cidr {cluster} has no {family}: use Mode auto or separate"
    )]
    ModeWithoutFamily {
        /// The mode.
        mode: &'static str,
        /// The family it needs.
        family: weft_ipam::Family,
        /// The cluster CIDRs.
        cluster: weft_ipam::CidrList,
    },
}

/// The form a `net-conf.json` string key takes, for [`NetConfProblem::InvalidValue`].
fn net_conf_value_help(key: &str) -> &'static str {
    match key {
        "Network" => "write an IPv4 network as ADDRESS/PREFIX, e.g. 10.42.0.0/16",
        "IPv6Network" => "write an IPv6 network as ADDRESS/PREFIX, e.g. fd00:42::/56",
        "SubnetMin" | "SubnetMax" => {
            "write the IPv4 network address of a node CIDR, e.g. 10.42.8.0"
        }
        "IPv6SubnetMin" | "IPv6SubnetMax" => {
            "write the IPv6 network address of a node CIDR, e.g. fd00:42:0:8::"
        }
        "Backend.MacPrefix" => {
            "write two hex bytes, e.g. 0E-2A, whose first byte is unicast (its lowest bit clear)"
        }
        "Backend.Mode" => "use separate, auto, ipv4 or ipv6",
        _ => "see flannel's net-conf.json documentation",
    }
}

/// Something legal but probably not meant, returned as data: the library never logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Warning {
    /// `flannel-external-ip` with a backend that does not encrypt.
    #[error(
        "flannel-external-ip sends flannel traffic to external addresses, but flannel-backend {backend} does not encrypt it: consider flannel-backend wireguard-native"
    )]
    UnencryptedExternalIp {
        /// The backend in use.
        backend: &'static str,
    },
    /// The servers set `flannel-external-ip`, but this node has no `node-external-ip`.
    #[error(
        "the servers set flannel-external-ip, but this node sets no node-external-ip: flannel will use the internal address to reach this node; set node-external-ip"
    )]
    NoNodeExternalIp,
    /// An agentless server with egress mode `agent` or `disabled`.
    #[error(
        "webhooks and apiserver aggregation may not work without an agent: egress-selector-mode is {mode}; set egress-selector-mode to cluster or pod"
    )]
    EgressWithoutAgent {
        /// The mode in use.
        mode: &'static str,
    },
    /// `flannel-backend: none` with weft's network policy controller still enabled.
    #[error(
        "flannel-backend is none, so a custom CNI will run, and most bring their own network policy engine: set disable-network-policy to avoid conflicts"
    )]
    CustomCniWithNetworkPolicy,
    /// A flannel option that `flannel-backend: none` makes pointless.
    #[error("{key} has no effect with flannel-backend none: unset it")]
    NoEffectWithoutFlannel {
        /// The setting.
        key: &'static str,
    },
    /// A node mask size for a family the cluster does not have.
    #[error("{key} has no effect: cluster-cidr has no {family} network")]
    MaskSizeWithoutFamily {
        /// The setting.
        key: &'static str,
        /// Its family.
        family: Family,
    },
    /// `wireguard-implementation` is set, but the backend does not use WireGuard.
    #[error(
        "wireguard-implementation is {implementation}, but flannel-backend is {backend}, which does not use WireGuard: unset wireguard-implementation"
    )]
    WireguardImplementationUnused {
        /// The implementation set.
        implementation: &'static str,
        /// The backend in use.
        backend: &'static str,
    },
    /// `--with-node-id` is set and the id file does not exist yet.
    #[error("node id file {} does not exist yet: the first start creates it with a random id, naming this node {base}-<8 hex digits>", path.display())]
    NodeIdPending {
        /// The id file.
        path: PathBuf,
        /// The node name without the id.
        base: String,
    },
    /// etcd is reached over plain `http://`.
    #[error(
        "datastore-endpoint {endpoint} is plain http://: whoever reaches etcd can read and change the whole cluster, the bootstrap data sealed with the token included; use https:// endpoints with datastore-cafile, datastore-certfile and datastore-keyfile, and run etcd with --client-cert-auth"
    )]
    PlainHttpDatastore {
        /// The endpoints, with any password replaced by `********`.
        endpoint: String,
    },
    /// A config file sets a K3s setting weft does not act on (kubelet, container runtime,
    /// kube-apiserver, etcd, packaged components, logging); the file loads without it.
    #[error("ignoring {key}: not a network setting weft uses")]
    IgnoredK3sKey {
        /// The key, as K3s names it.
        key: &'static str,
    },
    /// A `WEFT_*` variable and its K3s twin are both set, to different values.
    #[error("{weft} and {k3s} are both set, to different values: using {weft}; unset one")]
    EnvConflict {
        /// The weft name, which wins.
        weft: &'static str,
        /// The K3s name.
        k3s: &'static str,
    },
}

/// Where the node name came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameSource {
    /// The `node-name` setting, from the given origin.
    Setting(Origin),
    /// The hostname of this host.
    Hostname,
}

impl fmt::Display for NameSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameSource::Setting(origin) => write!(f, "node-name from {origin}"),
            NameSource::Hostname => f.write_str("the hostname"),
        }
    }
}

/// How to fix a datastore TLS file, by setting.
fn datastore_file_fix(key: Key) -> &'static str {
    match key {
        Key::DatastoreCafile => {
            "point it at the PEM certificate of the CA that signed etcd's certificate"
        }
        Key::DatastoreCertfile => {
            "point it at a PEM client certificate signed by etcd's --trusted-ca-file"
        }
        _ => "point it at the PEM private key of datastore-certfile",
    }
}

/// Comma-joins addresses for messages.
fn join(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
