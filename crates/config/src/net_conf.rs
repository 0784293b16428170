//! flannel's `net-conf.json`: the file `flannel-conf` names, parsed into [`NetConf`].
//!
//! Keys are matched without regard to case, as flannel's Go decoding matches them (`vni`, `VNI`
//! and `Vni` are one key); two spellings of one key in the same object are an error, since Go
//! would silently keep the last. Every unknown key, value of the wrong type or out of range is a
//! [`NetConfProblem`] naming the key (`Backend.VNI`), the value and the fix, and all of them are
//! reported together.
//!
//! Parsing checks each value on its own. Whether the file agrees with the other settings
//! (`Network` with `cluster-cidr`, `SubnetLen` with the node mask sizes, `Backend.Type` with
//! `flannel-backend`) is checked where the cluster network is built (`network.rs`).
//!
//! The WireGuard pre-shared key is a secret: [`Psk`] prints as `<redacted>`, and
//! [`NetConf::to_json`] reveals it only when asked to ([`Secrets::Reveal`]), for the cluster
//! record the agents need and the file an agent writes with mode 0600.
//!
//! Read [`NetConf`], then [`NetConfBackend`], [`VxlanOptions`] and [`WireguardOptions`].

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};
use weft_ipam::{Ipv4Cidr, Ipv6Cidr};

use crate::error::NetConfProblem;
use crate::setting::edit_distance;

#[cfg(test)]
mod tests;

/// What a redacted secret prints as.
pub const REDACTED: &str = "<redacted>";

/// The largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// flannel's `net-conf.json`, as given: each top-level key is `None` when the file leaves it
/// out. The backend's options are complete, with flannel's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct NetConf {
    /// `Network`: the IPv4 cluster CIDR (`0.0.0.0/0` when IPv4 is off).
    pub network: Option<Ipv4Cidr>,
    /// `IPv6Network`: the IPv6 cluster CIDR (`::/0` when IPv6 is off).
    pub ipv6_network: Option<Ipv6Cidr>,
    /// `EnableIPv4`.
    pub enable_ipv4: Option<bool>,
    /// `EnableIPv6`.
    pub enable_ipv6: Option<bool>,
    /// `EnableNFTables`: masquerade with nftables (`true`) or iptables (`false`).
    pub enable_nftables: Option<bool>,
    /// `SubnetLen`: the prefix length of each node's IPv4 pod CIDR.
    pub subnet_len: Option<u8>,
    /// `IPv6SubnetLen`: the prefix length of each node's IPv6 pod CIDR.
    pub ipv6_subnet_len: Option<u8>,
    /// `SubnetMin`: the lowest IPv4 node CIDR handed out.
    pub subnet_min: Option<Ipv4Addr>,
    /// `SubnetMax`: the highest IPv4 node CIDR handed out.
    pub subnet_max: Option<Ipv4Addr>,
    /// `IPv6SubnetMin`.
    pub ipv6_subnet_min: Option<Ipv6Addr>,
    /// `IPv6SubnetMax`.
    pub ipv6_subnet_max: Option<Ipv6Addr>,
    /// `Backend`.
    pub backend: Option<NetConfBackend>,
}

/// `Backend`: the type and its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetConfBackend {
    /// `"Type": "vxlan"`.
    Vxlan(VxlanOptions),
    /// `"Type": "host-gw"`.
    HostGw,
    /// `"Type": "wireguard"`: weft's `wireguard-native`.
    Wireguard(WireguardOptions),
}

/// The vxlan backend's options, flannel's defaults when not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct VxlanOptions {
    /// `VNI`: the VXLAN network identifier (default 1); the devices are `flannel.VNI` and
    /// `flannel-v6.VNI`.
    pub vni: u32,
    /// `Port`: the UDP port; 0 (the default) leaves the kernel's, 8472.
    pub port: u16,
    /// `MTU`: the MTU of the path between nodes (default: the external interface's); the
    /// devices get it minus the encapsulation overhead.
    pub mtu: Option<u32>,
    /// `GBP`: VXLAN group policy extension.
    pub gbp: bool,
    /// `DirectRouting`: peers on a network the external interface reaches directly get a
    /// host-gw route instead of the tunnel.
    pub direct_routing: bool,
    /// `MacPrefix`: the first two bytes of the VTEP MACs.
    pub mac_prefix: Option<[u8; 2]>,
}

/// The wireguard backend's options, flannel's defaults when not given.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WireguardOptions {
    /// `PSK`: a pre-shared key on every peer.
    pub psk: Option<Psk>,
    /// `ListenPort` (default 51820).
    pub listen_port: u16,
    /// `ListenPortV6`: the IPv6 device's port in `separate` mode (default 51821).
    pub listen_port_v6: u16,
    /// `PersistentKeepaliveInterval`, in seconds; 0 (flannel's default) is off.
    pub persistent_keepalive: u16,
    /// `MTU`: the MTU of the path between nodes (default: the external interface's).
    pub mtu: Option<u32>,
    /// `Mode`.
    pub mode: WireguardMode,
}

/// `Mode` of the wireguard backend: which devices carry which family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WireguardMode {
    /// One device per family, `flannel-wg` and `flannel-wg-v6` (the default).
    #[default]
    Separate,
    /// One device for both families; each peer's endpoint is picked by its addresses.
    Auto,
    /// One device for both families; endpoints are peers' IPv4 addresses.
    Ipv4,
    /// One device for both families; endpoints are peers' IPv6 addresses.
    Ipv6,
}

/// A WireGuard pre-shared key (32 bytes, base64 as `wg genpsk` prints it). It prints as
/// `<redacted>`; [`Psk::reveal`] gives the base64 text.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Psk(pub [u8; 32]);

/// Whether JSON output shows secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// Secrets print as `<redacted>`: `validate`, plans, logs.
    Redact,
    /// Secrets print as they are: the cluster record and the agent's `net-conf.json`.
    Reveal,
}

/// The keys of the top-level object, in flannel's spelling.
const TOP_KEYS: [&str; 12] = [
    "Network",
    "IPv6Network",
    "EnableIPv4",
    "EnableIPv6",
    "EnableNFTables",
    "SubnetLen",
    "IPv6SubnetLen",
    "SubnetMin",
    "SubnetMax",
    "IPv6SubnetMin",
    "IPv6SubnetMax",
    "Backend",
];
/// The keys of a vxlan `Backend`.
const VXLAN_KEYS: [&str; 8] = [
    "Type",
    "VNI",
    "Port",
    "MTU",
    "GBP",
    "DirectRouting",
    "MacPrefix",
    "Learning",
];
/// The keys of a wireguard `Backend`.
const WIREGUARD_KEYS: [&str; 7] = [
    "Type",
    "PSK",
    "ListenPort",
    "ListenPortV6",
    "PersistentKeepaliveInterval",
    "MTU",
    "Mode",
];
/// The keys of a host-gw `Backend`.
const HOST_GW_KEYS: [&str; 1] = ["Type"];

// === impl NetConf ===

impl NetConf {
    /// Parses the text of a `net-conf.json`, reporting every problem.
    pub fn parse(text: &str) -> Result<NetConf, Vec<NetConfProblem>> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            vec![NetConfProblem::NotJson {
                reason: e.to_string(),
            }]
        })?;
        NetConf::from_value(&value)
    }

    /// Reads a parsed `net-conf.json`, reporting every problem.
    pub fn from_value(value: &Value) -> Result<NetConf, Vec<NetConfProblem>> {
        let mut problems = Vec::new();
        let Some(top) = object("", value, &mut problems) else {
            return Err(problems);
        };
        let fields = Fields::match_keys("", top, &TOP_KEYS, &mut problems);
        let mut conf = NetConf {
            network: fields.parsed("Network", &mut problems, |s| s.parse::<Ipv4Cidr>().ok()),
            ipv6_network: fields
                .parsed("IPv6Network", &mut problems, |s| s.parse::<Ipv6Cidr>().ok()),
            enable_ipv4: fields.boolean("EnableIPv4", &mut problems),
            enable_ipv6: fields.boolean("EnableIPv6", &mut problems),
            enable_nftables: fields.boolean("EnableNFTables", &mut problems),
            subnet_len: fields.number("SubnetLen", 0, 32, &mut problems),
            ipv6_subnet_len: fields.number("IPv6SubnetLen", 0, 128, &mut problems),
            subnet_min: fields.parsed("SubnetMin", &mut problems, |s| s.parse().ok()),
            subnet_max: fields.parsed("SubnetMax", &mut problems, |s| s.parse().ok()),
            ipv6_subnet_min: fields.parsed("IPv6SubnetMin", &mut problems, |s| s.parse().ok()),
            ipv6_subnet_max: fields.parsed("IPv6SubnetMax", &mut problems, |s| s.parse().ok()),
            backend: None,
        };
        if let Some(backend) = fields.get("Backend") {
            conf.backend = parse_backend(backend, &mut problems);
        }
        if problems.is_empty() {
            Ok(conf)
        } else {
            Err(problems)
        }
    }

    /// The file in flannel's spelling of every key: the keys given, and the backend's options
    /// in full. [`NetConf::from_value`] reads it back exactly.
    pub fn to_json(&self, secrets: Secrets) -> Value {
        let mut map = Map::new();
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                map.insert(key.to_owned(), value);
            }
        };
        put("Network", self.network.map(|c| json!(c.to_string())));
        put(
            "IPv6Network",
            self.ipv6_network.map(|c| json!(c.to_string())),
        );
        put("EnableIPv4", self.enable_ipv4.map(|b| json!(b)));
        put("EnableIPv6", self.enable_ipv6.map(|b| json!(b)));
        put("EnableNFTables", self.enable_nftables.map(|b| json!(b)));
        put("SubnetLen", self.subnet_len.map(|n| json!(n)));
        put("IPv6SubnetLen", self.ipv6_subnet_len.map(|n| json!(n)));
        put("SubnetMin", self.subnet_min.map(|a| json!(a.to_string())));
        put("SubnetMax", self.subnet_max.map(|a| json!(a.to_string())));
        put(
            "IPv6SubnetMin",
            self.ipv6_subnet_min.map(|a| json!(a.to_string())),
        );
        put(
            "IPv6SubnetMax",
            self.ipv6_subnet_max.map(|a| json!(a.to_string())),
        );
        put("Backend", self.backend.as_ref().map(|b| b.to_json(secrets)));
        Value::Object(map)
    }
}

// === impl NetConfBackend ===

impl NetConfBackend {
    /// flannel's name of the type (`vxlan`, `host-gw`, `wireguard`).
    pub fn type_name(&self) -> &'static str {
        match self {
            NetConfBackend::Vxlan(_) => "vxlan",
            NetConfBackend::HostGw => "host-gw",
            NetConfBackend::Wireguard(_) => "wireguard",
        }
    }

    /// The `Backend` object, every option in flannel's spelling.
    pub fn to_json(&self, secrets: Secrets) -> Value {
        match self {
            NetConfBackend::Vxlan(v) => {
                let mut map = Map::new();
                map.insert("Type".into(), json!("vxlan"));
                map.insert("VNI".into(), json!(v.vni));
                map.insert("Port".into(), json!(v.port));
                if let Some(mtu) = v.mtu {
                    map.insert("MTU".into(), json!(mtu));
                }
                map.insert("GBP".into(), json!(v.gbp));
                map.insert("DirectRouting".into(), json!(v.direct_routing));
                if let Some([a, b]) = v.mac_prefix {
                    map.insert("MacPrefix".into(), json!(format!("{a:02X}-{b:02X}")));
                }
                Value::Object(map)
            }
            NetConfBackend::HostGw => json!({"Type": "host-gw"}),
            NetConfBackend::Wireguard(w) => {
                let mut map = Map::new();
                map.insert("Type".into(), json!("wireguard"));
                if let Some(psk) = &w.psk {
                    let shown = match secrets {
                        Secrets::Redact => REDACTED.to_owned(),
                        Secrets::Reveal => psk.reveal(),
                    };
                    map.insert("PSK".into(), json!(shown));
                }
                map.insert("ListenPort".into(), json!(w.listen_port));
                map.insert("ListenPortV6".into(), json!(w.listen_port_v6));
                map.insert(
                    "PersistentKeepaliveInterval".into(),
                    json!(w.persistent_keepalive),
                );
                if let Some(mtu) = w.mtu {
                    map.insert("MTU".into(), json!(mtu));
                }
                map.insert("Mode".into(), json!(w.mode.as_str()));
                Value::Object(map)
            }
        }
    }
}

// === impl VxlanOptions ===

impl Default for VxlanOptions {
    fn default() -> VxlanOptions {
        VxlanOptions {
            vni: 1,
            port: 0,
            mtu: None,
            gbp: false,
            direct_routing: false,
            mac_prefix: None,
        }
    }
}

// === impl WireguardOptions ===

impl Default for WireguardOptions {
    /// flannel's defaults; K3s's own net-conf adds a keepalive of 25 seconds.
    fn default() -> WireguardOptions {
        WireguardOptions {
            psk: None,
            listen_port: 51820,
            listen_port_v6: 51821,
            persistent_keepalive: 0,
            mtu: None,
            mode: WireguardMode::Separate,
        }
    }
}

// === impl WireguardMode ===

impl WireguardMode {
    /// flannel's name.
    pub fn as_str(self) -> &'static str {
        match self {
            WireguardMode::Separate => "separate",
            WireguardMode::Auto => "auto",
            WireguardMode::Ipv4 => "ipv4",
            WireguardMode::Ipv6 => "ipv6",
        }
    }

    fn parse(s: &str) -> Option<WireguardMode> {
        [
            WireguardMode::Separate,
            WireguardMode::Auto,
            WireguardMode::Ipv4,
            WireguardMode::Ipv6,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

impl fmt::Display for WireguardMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Psk ===

impl Psk {
    /// The key from base64 (44 characters), or `None`.
    pub fn parse(s: &str) -> Option<Psk> {
        base64_decode_key(s).map(Psk)
    }

    /// The key in base64, as `wg genpsk` prints it: for the cluster record and the agent's
    /// `net-conf.json` (mode 0600) only.
    pub fn reveal(&self) -> String {
        base64_encode(&self.0)
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Psk({REDACTED})")
    }
}

impl fmt::Display for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// The `Backend` object.
fn parse_backend(value: &Value, problems: &mut Vec<NetConfProblem>) -> Option<NetConfBackend> {
    let map = object("Backend", value, problems)?;
    let Some((_, type_value)) = map.iter().find(|(k, _)| k.eq_ignore_ascii_case("Type")) else {
        problems.push(NetConfProblem::BackendTypeMissing);
        return None;
    };
    let Some(type_name) = type_value.as_str() else {
        problems.push(wrong_type("Backend.Type", type_value, "a string"));
        return None;
    };
    // flannel lower-cases the type.
    match type_name.to_ascii_lowercase().as_str() {
        "vxlan" => {
            let fields = Fields::match_keys("Backend", map, &VXLAN_KEYS, problems);
            let defaults = VxlanOptions::default();
            if fields.boolean("Learning", problems) == Some(true) {
                problems.push(NetConfProblem::LearningUnsupported);
            }
            Some(NetConfBackend::Vxlan(VxlanOptions {
                vni: fields
                    .number("VNI", 0, u64::from(MAX_VNI), problems)
                    .unwrap_or(defaults.vni),
                port: fields
                    .number("Port", 0, u64::from(u16::MAX), problems)
                    .unwrap_or(defaults.port),
                mtu: fields.number("MTU", 68, u64::from(u16::MAX), problems),
                gbp: fields.boolean("GBP", problems).unwrap_or(defaults.gbp),
                direct_routing: fields
                    .boolean("DirectRouting", problems)
                    .unwrap_or(defaults.direct_routing),
                mac_prefix: fields.parsed("MacPrefix", problems, parse_mac_prefix),
            }))
        }
        "host-gw" => {
            Fields::match_keys("Backend", map, &HOST_GW_KEYS, problems);
            Some(NetConfBackend::HostGw)
        }
        "wireguard" => {
            let fields = Fields::match_keys("Backend", map, &WIREGUARD_KEYS, problems);
            let defaults = WireguardOptions::default();
            Some(NetConfBackend::Wireguard(WireguardOptions {
                psk: fields.psk(problems),
                listen_port: fields
                    .number("ListenPort", 1, u64::from(u16::MAX), problems)
                    .unwrap_or(defaults.listen_port),
                listen_port_v6: fields
                    .number("ListenPortV6", 1, u64::from(u16::MAX), problems)
                    .unwrap_or(defaults.listen_port_v6),
                persistent_keepalive: fields
                    .number(
                        "PersistentKeepaliveInterval",
                        0,
                        u64::from(u16::MAX),
                        problems,
                    )
                    .unwrap_or(defaults.persistent_keepalive),
                mtu: fields.number("MTU", 68, u64::from(u16::MAX), problems),
                mode: fields
                    .parsed("Mode", problems, WireguardMode::parse)
                    .unwrap_or_default(),
            }))
        }
        _ => {
            problems.push(NetConfProblem::UnknownBackendType {
                value: type_name.to_owned(),
            });
            None
        }
    }
}

/// `value` as an object, or a problem naming `key` (empty for the top level).
fn object<'a>(
    key: &str,
    value: &'a Value,
    problems: &mut Vec<NetConfProblem>,
) -> Option<&'a Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        other => {
            let key = if key.is_empty() { "the file" } else { key };
            problems.push(wrong_type(key, other, "a JSON object"));
            None
        }
    }
}

fn wrong_type(key: &str, value: &Value, expected: &'static str) -> NetConfProblem {
    NetConfProblem::WrongType {
        key: key.to_owned(),
        value: value.to_string(),
        expected,
    }
}

/// The values of one object, by their canonical key.
struct Fields<'a> {
    prefix: &'static str,
    values: Vec<(&'static str, &'a Value)>,
}

impl<'a> Fields<'a> {
    /// Matches each key of `map` to one of `known` without regard to case; an unknown key or
    /// two spellings of one key are problems.
    fn match_keys(
        prefix: &'static str,
        map: &'a Map<String, Value>,
        known: &[&'static str],
        problems: &mut Vec<NetConfProblem>,
    ) -> Fields<'a> {
        let mut values: Vec<(&'static str, &'a Value)> = Vec::new();
        let mut spellings: Vec<(&'static str, &'a str)> = Vec::new();
        for (key, value) in map {
            let Some(canonical) = known.iter().find(|k| k.eq_ignore_ascii_case(key)) else {
                let closest = known
                    .iter()
                    .min_by_key(|k| {
                        edit_distance(&key.to_ascii_lowercase(), &k.to_ascii_lowercase())
                    })
                    .copied()
                    .unwrap_or("Type");
                problems.push(NetConfProblem::UnknownKey {
                    key: qualified(prefix, key),
                    closest: qualified(prefix, closest),
                });
                continue;
            };
            if let Some((_, first)) = spellings.iter().find(|(k, _)| k == canonical) {
                problems.push(NetConfProblem::DuplicateKey {
                    key: qualified(prefix, canonical),
                    first: (*first).to_owned(),
                    second: key.clone(),
                });
                continue;
            }
            spellings.push((canonical, key));
            values.push((canonical, value));
        }
        Fields { prefix, values }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.values.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn name(&self, key: &str) -> String {
        qualified(self.prefix, key)
    }

    fn boolean(&self, key: &str, problems: &mut Vec<NetConfProblem>) -> Option<bool> {
        let value = self.get(key)?;
        value.as_bool().or_else(|| {
            problems.push(wrong_type(&self.name(key), value, "true or false"));
            None
        })
    }

    /// A whole number from `min` to `max`.
    fn number<T: TryFrom<u64>>(
        &self,
        key: &str,
        min: u64,
        max: u64,
        problems: &mut Vec<NetConfProblem>,
    ) -> Option<T> {
        let value = self.get(key)?;
        let Some(n) = value.as_u64().or_else(|| {
            // A negative whole number is out of range rather than of the wrong type.
            value.as_i64().map(|_| u64::MAX)
        }) else {
            problems.push(wrong_type(&self.name(key), value, "a whole number"));
            return None;
        };
        match T::try_from(n) {
            Ok(v) if (min..=max).contains(&n) => Some(v),
            _ => {
                problems.push(NetConfProblem::OutOfRange {
                    key: self.name(key),
                    value: value.to_string(),
                    min,
                    max,
                });
                None
            }
        }
    }

    /// A string turned into a value by `parse`; a string `parse` refuses is an invalid value.
    fn parsed<T>(
        &self,
        key: &str,
        problems: &mut Vec<NetConfProblem>,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Option<T> {
        let value = self.get(key)?;
        let Some(text) = value.as_str() else {
            problems.push(wrong_type(&self.name(key), value, "a string"));
            return None;
        };
        parse(text.trim()).or_else(|| {
            problems.push(NetConfProblem::InvalidValue {
                key: self.name(key),
                value: text.to_owned(),
            });
            None
        })
    }

    /// `PSK`, whose value is never repeated in a message.
    fn psk(&self, problems: &mut Vec<NetConfProblem>) -> Option<Psk> {
        let value = self.get("PSK")?;
        match value.as_str().and_then(Psk::parse) {
            Some(psk) => Some(psk),
            None => {
                problems.push(NetConfProblem::InvalidPsk);
                None
            }
        }
    }
}

fn qualified(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// `MacPrefix`: two hex bytes (`0E-2A`, `0e:2a`); the first must be unicast.
fn parse_mac_prefix(s: &str) -> Option<[u8; 2]> {
    let (a, b) = s.split_once(['-', ':'])?;
    let byte = |h: &str| (h.len() == 2).then(|| u8::from_str_radix(h, 16).ok())?;
    let prefix = [byte(a)?, byte(b)?];
    // A multicast bit in the first byte would make every VTEP MAC a group address.
    (prefix[0] & 1 == 0).then_some(prefix)
}

/// Standard base64 with padding, as `wg` writes keys.
fn base64_encode(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// A 32-byte key from standard base64 (44 characters with their `=`), or `None`.
fn base64_decode_key(s: &str) -> Option<[u8; 32]> {
    BASE64.decode(s.trim()).ok()?.try_into().ok()
}
