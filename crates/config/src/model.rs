//! Validated values: the newtypes and enums a loaded configuration is made of.
//!
//! Each type can only be built by parsing, so holding one means the value passed its rule.

use std::fmt;
use std::str::FromStr;

use crate::ConfigError;

#[cfg(test)]
mod tests;

/// A node name: lower-cased, an RFC 1123 subdomain, not `localhost`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

/// The 8 lowercase hex digits `--with-node-id` appends to the node name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeId(String);

/// A DNS name for the cluster domain, such as `cluster.local`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterDomain(String);

/// The cluster join token. `Debug` and `Display` show `********`; [`Token::expose`] gives it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

/// The URL of a server to join: `https://HOST[:PORT][/]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerUrl(String);

/// etcd endpoints shared by several servers: `http://` or `https://` URLs, comma-separated,
/// all with the same scheme.
#[derive(Clone, PartialEq, Eq)]
pub struct DatastoreEndpoint(String);

/// A network interface name, as `ip link` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InterfaceName(String);

/// The pod network backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FlannelBackend {
    /// No backend: a custom CNI provides the pod network.
    None,
    /// VXLAN encapsulation (the default).
    #[default]
    Vxlan,
    /// Routes to peers' pod CIDRs via their node IPs; needs layer 2 between nodes.
    HostGw,
    /// WireGuard encapsulation and encryption.
    WireguardNative,
}

/// How the control plane reaches nodes and cluster endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EgressSelectorMode {
    /// Through agent tunnels, to kubelets only (the default).
    #[default]
    Agent,
    /// Through agent tunnels to kubelets and endpoints, routed by pod CIDR.
    Pod,
    /// Through agent tunnels to kubelets and endpoints, routed by pod.
    Cluster,
    /// Directly, without tunnels.
    Disabled,
}

/// How the masquerade and forward rules are installed (`masq-mode`).
///
/// The same two modes as `weft_fabric::MasqMode`, which weft-config does not depend on: the
/// binaries map one onto the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MasqMode {
    /// weft's own nftables tables (the default).
    #[default]
    Nftables,
    /// flannel's iptables chains (`FLANNEL-POSTRTG`, `FLANNEL-FWD`), for hosts without nftables.
    Iptables,
}

/// Which WireGuard the `wireguard-native` backend uses (`wireguard-implementation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WireguardImplementation {
    /// The kernel module if a `wireguard` link can be created, else userspace (the default).
    #[default]
    Auto,
    /// The kernel module only; the agent fails if it is missing.
    Kernel,
    /// A userspace implementation on a TUN device, even if the kernel module is there.
    Userspace,
}

/// The log format of the daemons (`log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Whether `s` is an RFC 1123 subdomain as Kubernetes checks it (`IsDNS1123Subdomain`):
/// at most 253 characters of dot-separated labels of `[a-z0-9-]`, each starting and ending
/// with a letter or digit.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    !s.is_empty() && s.len() <= 253 && s.split('.').all(label_ok)
}

// === impl NodeName ===

impl NodeName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name with `-<id>` appended, as `--with-node-id` makes it.
    pub fn with_id(&self, id: &NodeId) -> NodeName {
        NodeName(format!("{}-{}", self.0, id.0))
    }

    /// Builds a name that is already known to be valid.
    pub(crate) fn new_unchecked(name: String) -> NodeName {
        NodeName(name)
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl NodeId ===

impl NodeId {
    /// Parses an id file's content: 8 lowercase hex digits, surrounding whitespace ignored.
    pub fn parse(content: &str) -> Option<NodeId> {
        let id = content.trim();
        (id.len() == 8
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| NodeId(id.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// === impl ClusterDomain ===

impl ClusterDomain {
    /// The domain as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ClusterDomain {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<ClusterDomain, ConfigError> {
        if is_dns1123_subdomain(s) {
            Ok(ClusterDomain(s.to_owned()))
        } else {
            Err(ConfigError::InvalidClusterDomain {
                value: s.to_owned(),
            })
        }
    }
}

impl Default for ClusterDomain {
    fn default() -> ClusterDomain {
        ClusterDomain(crate::DEFAULT_CLUSTER_DOMAIN.to_owned())
    }
}

impl fmt::Display for ClusterDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl Token ===

impl Token {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Token {
        Token(token.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(********)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::SECRET_MASK)
    }
}

// === impl ServerUrl ===

impl ServerUrl {
    /// The URL as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ServerUrl {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<ServerUrl, ConfigError> {
        let err = |reason| ConfigError::InvalidServerUrl {
            value: s.to_owned(),
            reason,
        };
        let rest = s
            .strip_prefix("https://")
            .ok_or_else(|| err("it must start with https://"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) || authority.chars().any(char::is_whitespace) {
            return Err(err("it must hold only a host and a port"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| err("an IPv6 host needs a closing ]"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(err("the host in [] is not an IPv6 address"));
            }
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(
                        p.strip_prefix(':')
                            .ok_or_else(|| err("a port must follow a :"))?,
                    ),
                ),
            }
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(err("the host is missing"));
        }
        if let Some(port) = port
            && !matches!(port.parse::<u16>(), Ok(p) if p != 0)
        {
            return Err(err("the port must be a number from 1 to 65535"));
        }
        Ok(ServerUrl(s.to_owned()))
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl DatastoreEndpoint ===

impl DatastoreEndpoint {
    /// The endpoints, with passwords.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The endpoints with every `user:password@` password replaced by `********`.
    pub fn masked(&self) -> String {
        mask_passwords(&self.0)
    }

    /// Whether the endpoints are `https://` (all are, or none).
    pub fn is_https(&self) -> bool {
        self.0.trim_start().starts_with("https://")
    }
}

impl FromStr for DatastoreEndpoint {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<DatastoreEndpoint, ConfigError> {
        let ok = s.split(',').map(str::trim).all(|url| {
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        });
        if !ok {
            return Err(ConfigError::InvalidDatastoreEndpoint {
                value: mask_passwords(s),
            });
        }
        let https = s
            .split(',')
            .filter(|url| url.trim().starts_with("https://"))
            .count();
        if https != 0 && https != s.split(',').count() {
            return Err(ConfigError::DatastoreMixedSchemes {
                value: mask_passwords(s),
            });
        }
        Ok(DatastoreEndpoint(s.to_owned()))
    }
}

impl fmt::Debug for DatastoreEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatastoreEndpoint({})", self.masked())
    }
}

/// Replaces the password of every `scheme://user:password@host` in a comma-separated list.
fn mask_passwords(s: &str) -> String {
    s.split(',')
        .map(|url| {
            let Some((scheme, rest)) = url.split_once("://") else {
                return url.to_owned();
            };
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rsplit_once('@') {
                Some((userinfo, _)) => {
                    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                    let masked = if userinfo.contains(':') {
                        format!("{user}:{}", crate::SECRET_MASK)
                    } else {
                        user.to_owned()
                    };
                    format!("{scheme}://{masked}{}", &rest[userinfo.len()..])
                }
                None => url.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

// === impl InterfaceName ===

impl InterfaceName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for InterfaceName {
    type Err = ConfigError;

    /// Linux's rule (`dev_valid_name`): 1 to 15 bytes, not `.` or `..`, no `/`, `:` or space.
    fn from_str(s: &str) -> Result<InterfaceName, ConfigError> {
        let ok = (1..=15).contains(&s.len())
            && s != "."
            && s != ".."
            && !s.contains(['/', ':'])
            && !s.chars().any(char::is_whitespace);
        if ok {
            Ok(InterfaceName(s.to_owned()))
        } else {
            Err(ConfigError::InvalidInterfaceName {
                value: s.to_owned(),
            })
        }
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl FlannelBackend ===

impl FlannelBackend {
    /// The name as `flannel-backend` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            FlannelBackend::None => "none",
            FlannelBackend::Vxlan => "vxlan",
            FlannelBackend::HostGw => "host-gw",
            FlannelBackend::WireguardNative => "wireguard-native",
        }
    }
}

impl FromStr for FlannelBackend {
    type Err = ConfigError;

    /// Parses a backend name; the legacy `ipsec` and `wireguard` backends and the legacy
    /// `name=options` form get the migration advice of K3s's docs.
    fn from_str(s: &str) -> Result<FlannelBackend, ConfigError> {
        Ok(match s {
            "none" => FlannelBackend::None,
            "vxlan" => FlannelBackend::Vxlan,
            "host-gw" => FlannelBackend::HostGw,
            "wireguard-native" => FlannelBackend::WireguardNative,
            "ipsec" => {
                return Err(ConfigError::FlannelBackendRemoved {
                    backend: "ipsec",
                    removed_in: "v1.27",
                });
            }
            "wireguard" => {
                return Err(ConfigError::FlannelBackendRemoved {
                    backend: "wireguard",
                    removed_in: "v1.26",
                });
            }
            s if s.contains('=') => {
                return Err(ConfigError::FlannelBackendOptions {
                    value: s.to_owned(),
                });
            }
            s => {
                return Err(ConfigError::InvalidFlannelBackend {
                    value: s.to_owned(),
                });
            }
        })
    }
}

impl fmt::Display for FlannelBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl EgressSelectorMode ===

impl EgressSelectorMode {
    /// The name as `egress-selector-mode` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            EgressSelectorMode::Agent => "agent",
            EgressSelectorMode::Pod => "pod",
            EgressSelectorMode::Cluster => "cluster",
            EgressSelectorMode::Disabled => "disabled",
        }
    }
}

impl FromStr for EgressSelectorMode {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<EgressSelectorMode, ConfigError> {
        match s {
            "agent" => Ok(EgressSelectorMode::Agent),
            "pod" => Ok(EgressSelectorMode::Pod),
            "cluster" => Ok(EgressSelectorMode::Cluster),
            "disabled" => Ok(EgressSelectorMode::Disabled),
            _ => Err(ConfigError::InvalidEgressSelectorMode {
                value: s.to_owned(),
            }),
        }
    }
}

impl fmt::Display for EgressSelectorMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl MasqMode ===

impl MasqMode {
    /// The name as `masq-mode` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            MasqMode::Nftables => "nftables",
            MasqMode::Iptables => "iptables",
        }
    }
}

impl FromStr for MasqMode {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<MasqMode, ConfigError> {
        match s {
            "nftables" => Ok(MasqMode::Nftables),
            "iptables" => Ok(MasqMode::Iptables),
            _ => Err(ConfigError::InvalidMasqMode {
                value: s.to_owned(),
            }),
        }
    }
}

impl fmt::Display for MasqMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl WireguardImplementation ===

impl WireguardImplementation {
    /// The name as `wireguard-implementation` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            WireguardImplementation::Auto => "auto",
            WireguardImplementation::Kernel => "kernel",
            WireguardImplementation::Userspace => "userspace",
        }
    }
}

impl FromStr for WireguardImplementation {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<WireguardImplementation, ConfigError> {
        match s {
            "auto" => Ok(WireguardImplementation::Auto),
            "kernel" => Ok(WireguardImplementation::Kernel),
            "userspace" => Ok(WireguardImplementation::Userspace),
            _ => Err(ConfigError::InvalidWireguardImplementation {
                value: s.to_owned(),
            }),
        }
    }
}

impl fmt::Display for WireguardImplementation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl LogFormat ===

impl LogFormat {
    /// The name as `log-format` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl FromStr for LogFormat {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<LogFormat, ConfigError> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(ConfigError::InvalidLogFormat {
                value: s.to_owned(),
            }),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
