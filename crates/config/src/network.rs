//! The cluster network: the settings every server must share, their rules, and what follows
//! from them (service IPs, DNS, families, node mask sizes, flannel's `net-conf.json`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value, json};
use weft_ipam::{
    Cidr, CidrList, DEFAULT_NODE_CIDR_MASK_SIZE_IPV4, DEFAULT_NODE_CIDR_MASK_SIZE_IPV6, Family,
    FamilyCidr, check_same_families, default_cidrs, default_cluster_dns, kubernetes_service_ips,
    parse_ip_list, validate_node_mask_size, validate_service_cidrs,
};

use crate::error::NetConfProblem;
use crate::resolve::{Raw, Resolved};
use crate::{
    ClusterDomain, ConfigError, EgressSelectorMode, FlannelBackend, Key, Kind, NetConf,
    NetConfBackend, Origin, REDACTED, RecordProblem, Secrets, VxlanOptions, Warning, WireguardMode,
    WireguardOptions,
};

#[cfg(test)]
mod tests;

/// The cluster network settings: exactly the critical settings, which every server must share
/// and every agent takes from the servers.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ClusterNetwork {
    /// `cluster-cidr`: pod networks, primary family first.
    pub cluster_cidr: CidrList,
    /// `service-cidr`: service networks, primary family first.
    pub service_cidr: CidrList,
    /// `cluster-dns`: the DNS service IPs, each inside the service CIDR of its family.
    pub cluster_dns: Vec<IpAddr>,
    /// `cluster-domain`.
    pub cluster_domain: ClusterDomain,
    /// `node-cidr-mask-size-ipv4`: the prefix length of each node's IPv4 pod CIDR.
    pub node_cidr_mask_size_ipv4: u8,
    /// `node-cidr-mask-size-ipv6`: the prefix length of each node's IPv6 pod CIDR.
    pub node_cidr_mask_size_ipv6: u8,
    /// `flannel-backend`.
    pub flannel_backend: FlannelBackend,
    /// `flannel-ipv6-masq`.
    pub flannel_ipv6_masq: bool,
    /// `flannel-external-ip`.
    pub flannel_external_ip: bool,
    /// `egress-selector-mode`.
    pub egress_selector_mode: EgressSelectorMode,
    /// `disable-network-policy`.
    pub disable_network_policy: bool,
    /// The `net-conf.json` named by `flannel-conf`, checked against the settings above; `None`
    /// without `flannel-conf`.
    pub net_conf: Option<NetConf>,
}

/// The record key of the `net-conf.json` content (not a setting: the setting's value is a path,
/// and agents need what the file holds).
const NET_CONF_RECORD_KEY: &str = "net-conf";

/// Values that follow from the cluster network.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Derived {
    /// The `kubernetes` service IP of each service CIDR (index 1), primary first.
    pub kubernetes_service_ips: Vec<IpAddr>,
    /// The cluster DNS IPs in effect.
    pub cluster_dns: Vec<IpAddr>,
    /// The primary family: that of the first cluster CIDR.
    pub primary_family: Family,
    /// Whether IPv4 is enabled.
    pub ipv4: bool,
    /// Whether IPv6 is enabled.
    pub ipv6: bool,
    /// The IPv4 node CIDR mask size.
    pub node_cidr_mask_size_ipv4: u8,
    /// The IPv6 node CIDR mask size.
    pub node_cidr_mask_size_ipv6: u8,
    /// Flannel's `net-conf.json`, any pre-shared key redacted; `None` with `flannel-backend:
    /// none`.
    pub net_conf: Option<Value>,
}

// === impl ClusterNetwork ===

impl ClusterNetwork {
    /// The settings of the cluster network, in table order: the keys of its JSON record.
    pub const KEYS: [Key; 11] = [
        Key::ClusterCidr,
        Key::ServiceCidr,
        Key::ClusterDns,
        Key::ClusterDomain,
        Key::NodeCidrMaskSizeIpv4,
        Key::NodeCidrMaskSizeIpv6,
        Key::FlannelBackend,
        Key::FlannelIpv6Masq,
        Key::FlannelExternalIp,
        Key::EgressSelectorMode,
        Key::DisableNetworkPolicy,
    ];

    /// The cluster network as a JSON record, for a server to persist in its store and to send
    /// agents in its registration answer; [`ClusterNetwork::from_json`] reads it back exactly.
    ///
    /// An object of exactly the [`ClusterNetwork::KEYS`], each with the value and shape
    /// `validate` prints for it: lists as arrays of strings (`"cluster-cidr": ["10.42.0.0/16"]`),
    /// mask sizes as numbers, flags as booleans, the rest as strings; and `"net-conf"`, the
    /// `flannel-conf` file's content as [`NetConf::to_json`] writes it with its secrets (agents
    /// need the pre-shared key), or `null`.
    pub fn to_json(&self) -> Value {
        let mut map: Map<String, Value> = ClusterNetwork::KEYS
            .into_iter()
            .filter_map(|key| Some((key.name().to_owned(), self.value_json(key)?)))
            .collect();
        map.insert(
            NET_CONF_RECORD_KEY.to_owned(),
            json!(self.net_conf.as_ref().map(|c| c.to_json(Secrets::Reveal))),
        );
        Value::Object(map)
    }

    /// Reads a record written by [`ClusterNetwork::to_json`]: `from_json(&n.to_json()) == Ok(n)`.
    ///
    /// A server reads its stored record with this and compares its own settings with it
    /// ([`ClusterNetwork::compare_critical`]); an agent reads the registration answer's record
    /// and checks itself against it ([`crate::NodeConfig::check_cluster`]).
    ///
    /// The record passes the same rules as a server's settings, so a damaged one can't get
    /// through. Every key must be present with its JSON type, except `"net-conf"`, which
    /// records written before it existed lack; keys this version does not know are ignored, so
    /// that a newer server can add some. All problems are reported together in
    /// one [`ConfigError::ClusterRecord`], each naming its key.
    pub fn from_json(record: &Value) -> Result<ClusterNetwork, ConfigError> {
        let fail = |problems| ConfigError::ClusterRecord { problems };
        let Value::Object(map) = record else {
            return Err(fail(vec![RecordProblem::NotAnObject {
                found: json_type(record),
            }]));
        };
        let mut problems = Vec::new();
        let mut resolved = Resolved::default();
        for key in ClusterNetwork::KEYS {
            let Some(value) = map.get(key.name()) else {
                problems.push(RecordProblem::Missing { key: key.name() });
                continue;
            };
            match record_raw(key, value) {
                Ok(raw) => resolved.insert(key, raw, Origin::Default),
                Err(expected) => problems.push(RecordProblem::WrongType {
                    key: key.name(),
                    expected,
                    found: json_type(value),
                }),
            }
        }
        let net_conf = match map.get(NET_CONF_RECORD_KEY) {
            None | Some(Value::Null) => None,
            Some(value) => match NetConf::from_value(value) {
                Ok(conf) => Some(conf),
                Err(found) => {
                    problems.extend(
                        found
                            .into_iter()
                            .map(|p| RecordProblem::Invalid(Box::new(ConfigError::NetConf(p)))),
                    );
                    None
                }
            },
        };
        if !problems.is_empty() {
            return Err(fail(problems));
        }
        let mut errors = Vec::new();
        let network = build(
            &resolved,
            None,
            false,
            net_conf,
            &mut errors,
            &mut Vec::new(),
        );
        match network {
            Some(network) if errors.is_empty() => Ok(network),
            _ => Err(fail(
                errors
                    .into_iter()
                    .map(|e| RecordProblem::Invalid(Box::new(e)))
                    .collect(),
            )),
        }
    }

    /// The value of one of the [`ClusterNetwork::KEYS`] as JSON; `None` for other keys.
    pub(crate) fn value_json(&self, key: Key) -> Option<Value> {
        let strings = |items: &mut dyn Iterator<Item = String>| json!(items.collect::<Vec<_>>());
        Some(match key {
            Key::ClusterCidr => strings(&mut self.cluster_cidr.iter().map(|c| c.to_string())),
            Key::ServiceCidr => strings(&mut self.service_cidr.iter().map(|c| c.to_string())),
            Key::ClusterDns => strings(&mut self.cluster_dns.iter().map(ToString::to_string)),
            Key::ClusterDomain => json!(self.cluster_domain.as_str()),
            Key::NodeCidrMaskSizeIpv4 => json!(self.node_cidr_mask_size_ipv4),
            Key::NodeCidrMaskSizeIpv6 => json!(self.node_cidr_mask_size_ipv6),
            Key::FlannelBackend => json!(self.flannel_backend.as_str()),
            Key::FlannelIpv6Masq => json!(self.flannel_ipv6_masq),
            Key::FlannelExternalIp => json!(self.flannel_external_ip),
            Key::EgressSelectorMode => json!(self.egress_selector_mode.as_str()),
            Key::DisableNetworkPolicy => json!(self.disable_network_policy),
            _ => return None,
        })
    }

    /// The critical settings as `(setting, value)` text, in a fixed order.
    ///
    /// Lists are comma-joined, as their flags take them.
    pub fn critical_fields(&self) -> Vec<(Key, String)> {
        let join = |ips: &[IpAddr]| {
            ips.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        vec![
            (Key::ClusterCidr, self.cluster_cidr.to_string()),
            (Key::ServiceCidr, self.service_cidr.to_string()),
            (Key::ClusterDns, join(&self.cluster_dns)),
            (Key::ClusterDomain, self.cluster_domain.to_string()),
            (
                Key::DisableNetworkPolicy,
                self.disable_network_policy.to_string(),
            ),
            (Key::FlannelBackend, self.flannel_backend.to_string()),
            (Key::FlannelIpv6Masq, self.flannel_ipv6_masq.to_string()),
            (Key::FlannelExternalIp, self.flannel_external_ip.to_string()),
            (
                Key::EgressSelectorMode,
                self.egress_selector_mode.to_string(),
            ),
            (
                Key::NodeCidrMaskSizeIpv4,
                self.node_cidr_mask_size_ipv4.to_string(),
            ),
            (
                Key::NodeCidrMaskSizeIpv6,
                self.node_cidr_mask_size_ipv6.to_string(),
            ),
            (
                Key::FlannelConf,
                self.net_conf.as_ref().map_or("none".to_owned(), |c| {
                    c.to_json(Secrets::Redact).to_string()
                }),
            ),
        ]
    }

    /// Compares this server's network with the cluster's and returns one
    /// [`ConfigError::CriticalMismatch`] per differing setting; empty when they agree.
    ///
    /// When the CIDRs cover other families (IPv4-only to dual-stack, say), a
    /// [`ConfigError::FamiliesChanged`] follows the mismatch and says why that can't be done.
    pub fn compare_critical(&self, cluster: &ClusterNetwork) -> Vec<ConfigError> {
        let mut errors: Vec<ConfigError> = self
            .critical_fields()
            .into_iter()
            .zip(cluster.critical_fields())
            .filter(|((_, this), (_, theirs))| this != theirs)
            .map(
                |((setting, this), (_, cluster))| ConfigError::CriticalMismatch {
                    setting,
                    this,
                    cluster,
                },
            )
            .collect();
        // The pre-shared keys print redacted, so a difference in them alone needs its own line.
        let psk = |n: &ClusterNetwork| match n.backend_options() {
            Some(NetConfBackend::Wireguard(w)) => w.psk,
            _ => None,
        };
        if psk(self) != psk(cluster) {
            let shown = |p: Option<crate::Psk>| {
                p.map_or("no Backend.PSK".to_owned(), |_| {
                    format!("Backend.PSK {REDACTED}")
                })
            };
            let (this, theirs) = (shown(psk(self)), shown(psk(cluster)));
            errors.push(ConfigError::CriticalMismatch {
                setting: Key::FlannelConf,
                cluster: if this == theirs {
                    format!("another {theirs}")
                } else {
                    theirs
                },
                this,
            });
        }
        for (setting, this, theirs) in [
            (Key::ClusterCidr, &self.cluster_cidr, &cluster.cluster_cidr),
            (Key::ServiceCidr, &self.service_cidr, &cluster.service_cidr),
        ] {
            let (a, b) = (this.families(), theirs.families());
            if a.has_ipv4() != b.has_ipv4() || a.has_ipv6() != b.has_ipv6() {
                errors.push(ConfigError::FamiliesChanged {
                    setting,
                    this: a,
                    cluster: b,
                });
            }
        }
        errors
    }

    /// What follows from these settings.
    pub fn derived(&self) -> Derived {
        let families = self.cluster_cidr.families();
        Derived {
            // Validation made sure every service CIDR has room for indexes 1 and 10.
            kubernetes_service_ips: kubernetes_service_ips(&self.service_cidr).unwrap_or_default(),
            cluster_dns: self.cluster_dns.clone(),
            primary_family: families.primary(),
            ipv4: families.has_ipv4(),
            ipv6: families.has_ipv6(),
            node_cidr_mask_size_ipv4: self.node_cidr_mask_size_ipv4,
            node_cidr_mask_size_ipv6: self.node_cidr_mask_size_ipv6,
            net_conf: self.net_conf_json(Secrets::Redact),
        }
    }

    /// The `net-conf.json` in effect; `None` with `flannel-backend: none`.
    ///
    /// With `flannel-conf`, its content normalised (every key in flannel's spelling, the
    /// backend's options in full). Without, the file K3s derives: a disabled family's network
    /// is `0.0.0.0/0` or `::/0`, and wireguard-native is flannel's `wireguard` type with a
    /// keepalive of 25 seconds.
    pub fn net_conf_json(&self, secrets: Secrets) -> Option<Value> {
        if let Some(conf) = &self.net_conf {
            return Some(conf.to_json(secrets));
        }
        let backend = match self.flannel_backend {
            FlannelBackend::None => return None,
            FlannelBackend::Vxlan => json!({"Type": "vxlan"}),
            FlannelBackend::HostGw => json!({"Type": "host-gw"}),
            FlannelBackend::WireguardNative => {
                json!({"Type": "wireguard", "PersistentKeepaliveInterval": 25})
            }
        };
        let v4 = self.cluster_cidr.ipv4();
        let v6 = self.cluster_cidr.ipv6();
        Some(json!({
            "Network": v4.map_or("0.0.0.0/0".to_owned(), |c| c.to_string()),
            "EnableIPv4": v4.is_some(),
            "EnableIPv6": v6.is_some(),
            "IPv6Network": v6.map_or("::/0".to_owned(), |c| c.to_string()),
            "Backend": backend,
        }))
    }

    /// The vxlan backend's options: `flannel-conf`'s, else flannel's defaults.
    pub fn vxlan_options(&self) -> VxlanOptions {
        match self.backend_options() {
            Some(NetConfBackend::Vxlan(options)) => *options,
            _ => VxlanOptions::default(),
        }
    }

    /// The wireguard backend's options: `flannel-conf`'s, else K3s's (flannel's defaults with
    /// a persistent keepalive of 25 seconds).
    pub fn wireguard_options(&self) -> WireguardOptions {
        match self.backend_options() {
            Some(NetConfBackend::Wireguard(options)) => options.clone(),
            _ => WireguardOptions {
                persistent_keepalive: 25,
                ..WireguardOptions::default()
            },
        }
    }

    /// `EnableNFTables` of `flannel-conf`, when given.
    pub fn enable_nftables(&self) -> Option<bool> {
        self.net_conf.as_ref().and_then(|c| c.enable_nftables)
    }

    /// The bounds of the IPv4 node CIDRs handed out (`SubnetMin`, `SubnetMax`); `None` for no
    /// bound.
    pub fn subnet_bounds_ipv4(&self) -> (Option<Ipv4Addr>, Option<Ipv4Addr>) {
        self.net_conf
            .as_ref()
            .map_or((None, None), |c| (c.subnet_min, c.subnet_max))
    }

    /// The bounds of the IPv6 node CIDRs handed out (`IPv6SubnetMin`, `IPv6SubnetMax`).
    pub fn subnet_bounds_ipv6(&self) -> (Option<Ipv6Addr>, Option<Ipv6Addr>) {
        self.net_conf
            .as_ref()
            .map_or((None, None), |c| (c.ipv6_subnet_min, c.ipv6_subnet_max))
    }

    fn backend_options(&self) -> Option<&NetConfBackend> {
        self.net_conf.as_ref().and_then(|c| c.backend.as_ref())
    }
}

// === impl Derived ===

impl Derived {
    /// The JSON object `validate` prints under `"derived"`.
    pub fn to_json(&self) -> Value {
        let ips = |ips: &[IpAddr]| ips.iter().map(ToString::to_string).collect::<Vec<_>>();
        json!({
            "kubernetes-service-ips": ips(&self.kubernetes_service_ips),
            "cluster-dns": ips(&self.cluster_dns),
            "primary-family": match self.primary_family {
                Family::Ipv4 => "ipv4",
                Family::Ipv6 => "ipv6",
            },
            "ipv4": self.ipv4,
            "ipv6": self.ipv6,
            "node-cidr-mask-size-ipv4": self.node_cidr_mask_size_ipv4,
            "node-cidr-mask-size-ipv6": self.node_cidr_mask_size_ipv6,
            "net-conf": self.net_conf,
        })
    }
}

/// Builds and checks the cluster network from resolved values, recording every error and
/// warning. `first_node_ip` picks the default CIDRs' family, as in K3s.
pub(crate) fn build(
    r: &Resolved,
    first_node_ip: Option<IpAddr>,
    disable_agent: bool,
    net_conf: Option<NetConf>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<Warning>,
) -> Option<ClusterNetwork> {
    let defaults = default_cidrs(first_node_ip);
    let cidrs = |key: Key, default: CidrList, errors: &mut Vec<ConfigError>| match r.list(key).0 {
        [] => Some(default),
        given => CidrList::parse(key.name(), given)
            .map_err(|e| errors.push(e.into()))
            .ok(),
    };
    let cluster_cidr = cidrs(Key::ClusterCidr, defaults.cluster, errors);
    let service_cidr = cidrs(Key::ServiceCidr, defaults.service, errors).filter(|service| {
        let problems = validate_service_cidrs(Key::ServiceCidr.name(), service);
        let ok = problems.is_empty();
        errors.extend(problems.into_iter().map(ConfigError::from));
        ok
    });
    if let (Some(cluster), Some(service)) = (&cluster_cidr, &service_cidr)
        && let Err(e) = check_same_families(
            Key::ClusterCidr.name(),
            cluster.families(),
            Key::ServiceCidr.name(),
            service.families(),
        )
    {
        errors.push(e.into());
    }

    let cluster_dns = match (r.list(Key::ClusterDns).0, &service_cidr) {
        ([], Some(service)) => default_cluster_dns(service)
            .map_err(|e| errors.push(e.into()))
            .ok(),
        ([], None) => None,
        (given, service) => {
            let dns = parse_ip_list(Key::ClusterDns.name(), given)
                .map_err(|e| errors.push(e.into()))
                .ok();
            if let (Some(dns), Some(service)) = (&dns, service) {
                check_cluster_dns(dns, service, errors);
            }
            dns
        }
    };

    let cluster_domain = match r.text(Key::ClusterDomain) {
        None => Some(ClusterDomain::default()),
        Some(v) => v.parse().map_err(|e| errors.push(e)).ok(),
    };
    let conf_backend = net_conf.as_ref().and_then(|c| c.backend.as_ref());
    let flannel_backend = match r.text(Key::FlannelBackend) {
        None => Some(conf_backend.map_or_else(FlannelBackend::default, backend_of)),
        Some(v) => v.parse().map_err(|e| errors.push(e)).ok(),
    };
    if let (Some(flag), Some(conf)) = (flannel_backend, conf_backend)
        && backend_of(conf) != flag
    {
        errors.push(ConfigError::NetConf(NetConfProblem::Contradicts {
            key: "Backend.Type",
            value: conf.type_name().to_owned(),
            setting: Key::FlannelBackend.name(),
            setting_value: flag.as_str().to_owned(),
        }));
    }
    if let (Some(FlannelBackend::None), Some(_), None) = (flannel_backend, &net_conf, conf_backend)
    {
        errors.push(ConfigError::NetConf(NetConfProblem::Contradicts {
            key: "Backend",
            value: "(none given)".to_owned(),
            setting: Key::FlannelBackend.name(),
            setting_value: "none".to_owned(),
        }));
    }
    let egress_selector_mode = match r.text(Key::EgressSelectorMode) {
        None => Some(EgressSelectorMode::default()),
        Some(v) => v.parse().map_err(|e| errors.push(e)).ok(),
    };
    let flannel_ipv6_masq = r.bool(Key::FlannelIpv6Masq, errors);
    let flannel_external_ip = r.bool(Key::FlannelExternalIp, errors);
    let disable_network_policy = r.bool(Key::DisableNetworkPolicy, errors);

    let masks = cluster_cidr.as_ref().and_then(|cluster| {
        let from_conf = net_conf
            .as_ref()
            .map_or((None, None), |c| (c.subnet_len, c.ipv6_subnet_len));
        node_mask_sizes(r, cluster, from_conf, errors, warnings)
    });
    if let (Some(conf), Some(cluster), Some((v4, v6))) = (&net_conf, &cluster_cidr, masks) {
        check_net_conf(conf, cluster, (v4, v6), errors);
    }

    if let Some(cluster) = &cluster_cidr
        && flannel_ipv6_masq
        && !cluster.families().has_ipv6()
    {
        errors.push(ConfigError::Ipv6MasqWithoutIpv6 { cluster: *cluster });
    }
    match flannel_backend {
        Some(FlannelBackend::None) => {
            if flannel_ipv6_masq && cluster_cidr.is_some_and(|c| c.families().has_ipv6()) {
                warnings.push(Warning::NoEffectWithoutFlannel {
                    key: Key::FlannelIpv6Masq.name(),
                });
            }
            if flannel_external_ip {
                warnings.push(Warning::NoEffectWithoutFlannel {
                    key: Key::FlannelExternalIp.name(),
                });
            }
            if !disable_network_policy {
                warnings.push(Warning::CustomCniWithNetworkPolicy);
            }
        }
        Some(FlannelBackend::WireguardNative) | None => {}
        Some(backend) => {
            if flannel_external_ip {
                warnings.push(Warning::UnencryptedExternalIp {
                    backend: backend.as_str(),
                });
            }
        }
    }
    if let (true, Some(mode @ (EgressSelectorMode::Agent | EgressSelectorMode::Disabled))) =
        (disable_agent, egress_selector_mode)
    {
        warnings.push(Warning::EgressWithoutAgent {
            mode: mode.as_str(),
        });
    }

    let (node_cidr_mask_size_ipv4, node_cidr_mask_size_ipv6) = masks?;
    Some(ClusterNetwork {
        cluster_cidr: cluster_cidr?,
        service_cidr: service_cidr?,
        cluster_dns: cluster_dns?,
        cluster_domain: cluster_domain?,
        node_cidr_mask_size_ipv4,
        node_cidr_mask_size_ipv6,
        flannel_backend: flannel_backend?,
        flannel_ipv6_masq,
        flannel_external_ip,
        egress_selector_mode: egress_selector_mode?,
        disable_network_policy,
        net_conf,
    })
}

/// The `flannel-backend` a `Backend.Type` means.
fn backend_of(backend: &NetConfBackend) -> FlannelBackend {
    match backend {
        NetConfBackend::Vxlan(_) => FlannelBackend::Vxlan,
        NetConfBackend::HostGw => FlannelBackend::HostGw,
        NetConfBackend::Wireguard(_) => FlannelBackend::WireguardNative,
    }
}

/// Checks a `net-conf.json` against the cluster CIDRs and node mask sizes in effect.
fn check_net_conf(
    conf: &NetConf,
    cluster: &CidrList,
    (mask_v4, mask_v6): (u8, u8),
    errors: &mut Vec<ConfigError>,
) {
    let mut problem = |p| errors.push(ConfigError::NetConf(p));
    let cluster_text = || cluster.to_string();
    let v4 = cluster.ipv4();
    let v6 = cluster.ipv6();
    // A network must be the cluster CIDR of its family, or the sentinel of a family that is
    // off (`0.0.0.0/0`, `::/0`, as K3s writes them).
    if let Some(network) = conf.network
        && v4 != Some(network)
        && !(v4.is_none() && FamilyCidr::prefix_len(network) == 0)
    {
        problem(NetConfProblem::Contradicts {
            key: "Network",
            value: network.to_string(),
            setting: Key::ClusterCidr.name(),
            setting_value: cluster_text(),
        });
    }
    if let Some(network) = conf.ipv6_network
        && v6 != Some(network)
        && !(v6.is_none() && FamilyCidr::prefix_len(network) == 0)
    {
        problem(NetConfProblem::Contradicts {
            key: "IPv6Network",
            value: network.to_string(),
            setting: Key::ClusterCidr.name(),
            setting_value: cluster_text(),
        });
    }
    for (key, enabled, has) in [
        ("EnableIPv4", conf.enable_ipv4, v4.is_some()),
        ("EnableIPv6", conf.enable_ipv6, v6.is_some()),
    ] {
        if let Some(enabled) = enabled
            && enabled != has
        {
            problem(NetConfProblem::Contradicts {
                key,
                value: enabled.to_string(),
                setting: Key::ClusterCidr.name(),
                setting_value: cluster_text(),
            });
        }
    }
    let v4_bounds = [
        ("SubnetMin", conf.subnet_min),
        ("SubnetMax", conf.subnet_max),
    ];
    let v6_bounds = [
        ("IPv6SubnetMin", conf.ipv6_subnet_min),
        ("IPv6SubnetMax", conf.ipv6_subnet_max),
    ];
    let mut checked =
        |network: Option<Cidr>, prefix_len: u8, bounds: [(&'static str, Option<IpAddr>); 2]| {
            let mut ok = [None, None];
            for (slot, (key, value)) in bounds.into_iter().enumerate() {
                let Some(value) = value else { continue };
                let Some(network) = network else {
                    problem(NetConfProblem::Contradicts {
                        key,
                        value: value.to_string(),
                        setting: Key::ClusterCidr.name(),
                        setting_value: cluster_text(),
                    });
                    continue;
                };
                if !network.contains(value) {
                    problem(NetConfProblem::BoundOutsideNetwork {
                        key,
                        value,
                        network,
                    });
                    continue;
                }
                let start = node_cidr_start(value, prefix_len);
                if start != value {
                    problem(NetConfProblem::BoundNotOnBoundary {
                        key,
                        value,
                        prefix_len,
                        suggestion: start,
                    });
                    continue;
                }
                ok[slot] = Some((key, value));
            }
            if let [Some((min_key, min)), Some((max_key, max))] = ok
                && min > max
            {
                problem(NetConfProblem::MinAboveMax {
                    min_key,
                    min,
                    max_key,
                    max,
                });
            }
        };
    checked(
        v4.map(Cidr::V4),
        mask_v4,
        v4_bounds.map(|(k, v)| (k, v.map(IpAddr::V4))),
    );
    checked(
        v6.map(Cidr::V6),
        mask_v6,
        v6_bounds.map(|(k, v)| (k, v.map(IpAddr::V6))),
    );

    let (needed, family) = if v6.is_some() {
        (1280, Family::Ipv6)
    } else {
        (68, Family::Ipv4)
    };
    match &conf.backend {
        Some(NetConfBackend::Vxlan(options)) => {
            // flannel's overhead for IPv4; weft's IPv6 devices take 70, the true overhead.
            let overhead = if v6.is_some() { 70 } else { 50 };
            if let Some(mtu) = options.mtu
                && mtu < needed + overhead
            {
                problem(NetConfProblem::MtuTooSmall {
                    key: "Backend.MTU",
                    value: mtu,
                    overhead,
                    family,
                    needed,
                });
            }
        }
        Some(NetConfBackend::Wireguard(options)) => {
            if let Some(mtu) = options.mtu
                && mtu < needed + 80
            {
                problem(NetConfProblem::MtuTooSmall {
                    key: "Backend.MTU",
                    value: mtu,
                    overhead: 80,
                    family,
                    needed,
                });
            }
            let dual = v4.is_some() && v6.is_some();
            if options.mode == WireguardMode::Separate
                && dual
                && options.listen_port == options.listen_port_v6
            {
                problem(NetConfProblem::SamePorts {
                    port: options.listen_port,
                });
            }
            let needs = match options.mode {
                WireguardMode::Ipv4 => Some(Family::Ipv4),
                WireguardMode::Ipv6 => Some(Family::Ipv6),
                WireguardMode::Separate | WireguardMode::Auto => None,
            };
            if let Some(family) = needs
                && !cluster.families().has(family)
            {
                problem(NetConfProblem::ModeWithoutFamily {
                    mode: options.mode.as_str(),
                    family,
                    cluster: *cluster,
                });
            }
        }
        Some(NetConfBackend::HostGw) | None => {}
    }
}

/// The network address of the `/prefix_len` node CIDR holding `ip`.
fn node_cidr_start(ip: IpAddr, prefix_len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

/// A record value as the text a setting takes, or what its JSON type must be.
fn record_raw(key: Key, value: &Value) -> Result<Raw, &'static str> {
    match key.setting().kind {
        Kind::List => {
            let items: Option<Vec<String>> = match value {
                Value::Array(items) if !items.is_empty() => items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect(),
                _ => None,
            };
            items.map(Raw::Many).ok_or("a non-empty array of strings")
        }
        Kind::Bool => value
            .as_bool()
            .map(|b| Raw::One(b.to_string()))
            .ok_or("true or false"),
        Kind::Number => value
            .as_u64()
            .map(|n| Raw::One(n.to_string()))
            .ok_or("a whole number"),
        Kind::Text => match value {
            Value::String(s) if !s.is_empty() => Ok(Raw::One(s.clone())),
            _ => Err("a non-empty string"),
        },
    }
}

/// A JSON value's type, for messages.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(s) if s.is_empty() => "an empty string",
        Value::String(_) => "a string",
        Value::Array(items) if items.is_empty() => "an empty array",
        Value::Array(items) => match items.iter().find(|item| !item.is_string()) {
            Some(Value::Null) => "an array holding null",
            Some(Value::Bool(_)) => "an array holding a boolean",
            Some(Value::Number(_)) => "an array holding a number",
            Some(Value::Array(_)) => "an array holding an array",
            Some(Value::Object(_)) => "an array holding an object",
            Some(Value::String(_)) | None => "an array of strings",
        },
        Value::Object(_) => "an object",
    }
}

/// Each cluster DNS IP must lie in the service CIDR of its family.
fn check_cluster_dns(dns: &[IpAddr], service: &CidrList, errors: &mut Vec<ConfigError>) {
    for ip in dns {
        let family = Family::of(*ip);
        match service.get(family) {
            None => errors.push(ConfigError::ClusterDnsFamily {
                dns: *ip,
                family,
                service: *service,
            }),
            Some(cidr) if !cidr.contains(*ip) => {
                errors.push(ConfigError::ClusterDnsOutsideService {
                    dns: *ip,
                    service: cidr,
                    suggestion: weft_ipam::indexed_ip(cidr, 10).unwrap_or(cidr.network()),
                });
            }
            Some(_) => {}
        }
    }
}

/// The node CIDR mask sizes: the settings, else `kube-controller-manager-arg`'s
/// `node-cidr-mask-size-ipv4`/`-ipv6` (or `node-cidr-mask-size` on a single-stack cluster),
/// else /24 and /64; each checked against its cluster CIDR.
fn node_mask_sizes(
    r: &Resolved,
    cluster: &CidrList,
    (conf_v4, conf_v6): (Option<u8>, Option<u8>),
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<Warning>,
) -> Option<(u8, u8)> {
    let before = errors.len();
    let direct = |key: Key, errors: &mut Vec<ConfigError>| {
        let (value, _) = r.one(key)?;
        value
            .trim()
            .parse::<u8>()
            .map_err(|_| {
                errors.push(ConfigError::InvalidMaskSize {
                    key: key.name(),
                    value: value.to_owned(),
                });
            })
            .ok()
    };
    let direct_v4 = direct(Key::NodeCidrMaskSizeIpv4, errors);
    let direct_v6 = direct(Key::NodeCidrMaskSizeIpv6, errors);

    let (mut arg_v4, mut arg_v6, mut arg_any) = (None, None, None);
    for arg in r.list(Key::KubeControllerManagerArg).0 {
        let entry = arg.trim_start_matches('-');
        let Some((name, value)) = entry.split_once('=') else {
            errors.push(ConfigError::InvalidControllerManagerArg { value: arg.clone() });
            continue;
        };
        let slot = match name {
            "node-cidr-mask-size-ipv4" => &mut arg_v4,
            "node-cidr-mask-size-ipv6" => &mut arg_v6,
            "node-cidr-mask-size" => &mut arg_any,
            _ => continue,
        };
        match value.trim().parse::<u8>() {
            // As with repeated flags, the last one counts.
            Ok(size) => *slot = Some(size),
            Err(_) => errors.push(ConfigError::InvalidMaskSize {
                key: Key::KubeControllerManagerArg.name(),
                value: arg.clone(),
            }),
        }
    }
    if let Some(size) = arg_any {
        match cluster.families().is_dual_stack() {
            true => errors.push(ConfigError::MaskSizeNeedsFamily {
                size,
                cluster: *cluster,
            }),
            false => match cluster.primary().family() {
                Family::Ipv4 => arg_v4 = arg_v4.or(Some(size)),
                Family::Ipv6 => arg_v6 = arg_v6.or(Some(size)),
            },
        }
    }

    let mut pick = |key: Key,
                    family: Family,
                    direct: Option<u8>,
                    from_arg: Option<u8>,
                    (conf_key, from_conf): (&'static str, Option<u8>),
                    default: u8| {
        if let (Some(direct), Some(from_arg)) = (direct, from_arg)
            && direct != from_arg
        {
            errors.push(ConfigError::MaskSizeConflict {
                key: key.name(),
                direct,
                from_arg,
            });
        }
        let given = direct.or(from_arg);
        if let (Some(given), Some(from_conf)) = (given, from_conf)
            && given != from_conf
        {
            errors.push(ConfigError::NetConf(NetConfProblem::Contradicts {
                key: conf_key,
                value: from_conf.to_string(),
                setting: key.name(),
                setting_value: given.to_string(),
            }));
        }
        let given = given.or(from_conf);
        let size = given.unwrap_or(default);
        match cluster.get(family) {
            Some(cidr) => {
                if let Err(e) = validate_node_mask_size(key.name(), cidr, size) {
                    errors.push(e.into());
                }
            }
            None if given.is_some() => {
                warnings.push(Warning::MaskSizeWithoutFamily {
                    key: key.name(),
                    family,
                });
            }
            None => {}
        }
        size
    };
    let v4 = pick(
        Key::NodeCidrMaskSizeIpv4,
        Family::Ipv4,
        direct_v4,
        arg_v4,
        ("SubnetLen", conf_v4),
        DEFAULT_NODE_CIDR_MASK_SIZE_IPV4,
    );
    let v6 = pick(
        Key::NodeCidrMaskSizeIpv6,
        Family::Ipv6,
        direct_v6,
        arg_v6,
        ("IPv6SubnetLen", conf_v6),
        DEFAULT_NODE_CIDR_MASK_SIZE_IPV6,
    );
    (errors.len() == before).then_some((v4, v6))
}
