//! Tests of the validated value types.

use std::fmt::Debug;
use std::str::FromStr;

use crate::{
    ConfigError, DatastoreEndpoint, EgressSelectorMode, FlannelBackend, InterfaceName, LogFormat,
    MasqMode, NodeId, ServerUrl, Token, WireguardImplementation, is_dns1123_subdomain,
};

#[test]
fn flannel_backend() {
    let migrate = "wireguard-native replaces it; to migrate, 1. set flannel-backend: wireguard-native on every server, 2. restart the nodes, servers first";
    let cases: &[(&str, Result<FlannelBackend, String>)] = &[
        ("none", Ok(FlannelBackend::None)),
        ("vxlan", Ok(FlannelBackend::Vxlan)),
        ("host-gw", Ok(FlannelBackend::HostGw)),
        ("wireguard-native", Ok(FlannelBackend::WireguardNative)),
        ("ipsec", Err(format!("flannel-backend ipsec was removed in K3s v1.27: {migrate}"))),
        ("wireguard", Err(format!("flannel-backend wireguard was removed in K3s v1.26: {migrate}"))),
        (
            "wireguard-native=PersistentKeepaliveInterval=30",
            Err("flannel-backend \"wireguard-native=PersistentKeepaliveInterval=30\" carries options, which K3s removed in v1.27: set flannel-backend to the backend name alone and put the options in the file named by flannel-conf".to_owned()),
        ),
        (
            "VXLAN",
            Err("invalid flannel-backend \"VXLAN\": valid values are none, vxlan, host-gw, wireguard-native".to_owned()),
        ),
        (
            "tailscale",
            Err("invalid flannel-backend \"tailscale\": valid values are none, vxlan, host-gw, wireguard-native".to_owned()),
        ),
    ];
    for (input, want) in cases {
        let got = input.parse::<FlannelBackend>().map_err(|e| e.to_string());
        assert_eq!(&got, want, "{input}");
        if let Ok(backend) = got {
            assert_eq!(backend.as_str(), *input);
        }
    }
}

#[test]
fn egress_selector_mode() {
    for mode in ["agent", "pod", "cluster", "disabled"] {
        assert_eq!(mode.parse::<EgressSelectorMode>().unwrap().as_str(), mode);
    }
    assert_eq!(
        "tunnel"
            .parse::<EgressSelectorMode>()
            .unwrap_err()
            .to_string(),
        "invalid egress-selector-mode \"tunnel\": valid values are agent, pod, cluster, disabled"
    );
}

/// Checks that each of `valid` parses to its value and prints back as its name, that the
/// default is `default`, and that `bad` values get `error` (with the value in place of `{}`).
fn check_mode<T>(valid: &[(&str, T)], default: T, bad: &[&str], error: &str)
where
    T: FromStr<Err = ConfigError> + ToString + Default + PartialEq + Debug,
{
    for (name, value) in valid {
        assert_eq!(name.parse::<T>().as_ref(), Ok(value), "{name}");
        assert_eq!(value.to_string(), *name);
    }
    assert_eq!(T::default(), default);
    for value in bad {
        assert_eq!(
            value.parse::<T>().map_err(|e| e.to_string()),
            Err(error.replace("{}", &format!("{value:?}"))),
            "{value}"
        );
    }
}

#[test]
fn masq_mode() {
    check_mode(
        &[
            ("nftables", MasqMode::Nftables),
            ("iptables", MasqMode::Iptables),
        ],
        MasqMode::Nftables,
        &["nft", "NFTABLES", "ipvs", ""],
        "invalid masq-mode {}: valid values are nftables, iptables",
    );
}

#[test]
fn wireguard_implementation() {
    check_mode(
        &[
            ("auto", WireguardImplementation::Auto),
            ("kernel", WireguardImplementation::Kernel),
            ("userspace", WireguardImplementation::Userspace),
        ],
        WireguardImplementation::Auto,
        &["boringtun", "Kernel", "wireguard-go"],
        "invalid wireguard-implementation {}: valid values are auto, kernel, userspace",
    );
}

#[test]
fn log_format() {
    check_mode(
        &[("text", LogFormat::Text), ("json", LogFormat::Json)],
        LogFormat::Text,
        &["JSON", "logfmt", "pretty"],
        "invalid log-format {}: valid values are text, json",
    );
}

#[test]
fn server_url() {
    let hint = "; write https://HOST:PORT, e.g. https://10.0.0.1:9345";
    let cases: &[(&str, Option<&str>)] = &[
        ("https://10.0.0.1:9345", None),
        ("https://server.example", None),
        ("https://[fd00::1]:9345/", None),
        ("http://10.0.0.1:9345", Some("it must start with https://")),
        ("https://", Some("the host is missing")),
        ("https://:9345", Some("the host is missing")),
        (
            "https://h:0",
            Some("the port must be a number from 1 to 65535"),
        ),
        (
            "https://h:x",
            Some("the port must be a number from 1 to 65535"),
        ),
        (
            "https://h/path",
            Some("it must hold only a host and a port"),
        ),
        ("https://u@h", Some("it must hold only a host and a port")),
        ("https://[fd00::1", Some("an IPv6 host needs a closing ]")),
        (
            "https://[nope]:1",
            Some("the host in [] is not an IPv6 address"),
        ),
        ("https://[fd00::1]9345", Some("a port must follow a :")),
    ];
    for (input, reason) in cases {
        let got = input.parse::<ServerUrl>().map_err(|e| e.to_string()).err();
        let want = reason.map(|r| format!("invalid server {input:?}: {r}{hint}"));
        assert_eq!(got, want, "{input}");
    }
}

#[test]
fn datastore_endpoint() {
    let ok = "https://u:pw@10.0.0.1:2379,https://10.0.0.2:2379"
        .parse::<DatastoreEndpoint>()
        .unwrap();
    assert_eq!(
        ok.masked(),
        "https://u:********@10.0.0.1:2379,https://10.0.0.2:2379"
    );
    assert_eq!(
        ok.expose(),
        "https://u:pw@10.0.0.1:2379,https://10.0.0.2:2379"
    );
    assert_eq!(
        format!("{ok:?}"),
        "DatastoreEndpoint(https://u:********@10.0.0.1:2379,https://10.0.0.2:2379)"
    );
    assert!(ok.is_https());
    let plain = "http://10.0.0.1:2379, http://10.0.0.2:2379"
        .parse::<DatastoreEndpoint>()
        .unwrap();
    assert!(!plain.is_https());
    assert_eq!(
        "http://u:pw@10.0.0.1:2379,https://10.0.0.2:2379"
            .parse::<DatastoreEndpoint>()
            .unwrap_err()
            .to_string(),
        "datastore-endpoint http://u:********@10.0.0.1:2379,https://10.0.0.2:2379 mixes http:// and https:// URLs: use https:// for every etcd endpoint"
    );
    assert_eq!(
        "mysql://root:secret@tcp(10.0.0.1:3306)/k3s"
            .parse::<DatastoreEndpoint>()
            .unwrap_err()
            .to_string(),
        "invalid datastore-endpoint \"mysql://root:********@tcp(10.0.0.1:3306)/k3s\": weft supports etcd (http:// or https:// endpoints, comma-separated) or the embedded store (leave it unset)"
    );
}

#[test]
fn interface_name() {
    for ok in ["eth0", "enp0s31f6", "a", "123456789012345"] {
        assert!(ok.parse::<InterfaceName>().is_ok(), "{ok}");
    }
    for bad in ["", "1234567890123456", "eth0:1", "a/b", "a b", ".", ".."] {
        assert_eq!(
            bad.parse::<InterfaceName>().unwrap_err().to_string(),
            format!(
                "invalid flannel-iface {bad:?}: an interface name has 1 to 15 characters and no '/', ':' or whitespace"
            )
        );
    }
}

#[test]
fn node_id() {
    assert_eq!(NodeId::parse("0a1b2c3d\n").unwrap().as_str(), "0a1b2c3d");
    for bad in ["", "0a1b2c3", "0A1B2C3D", "0a1b2c3g", "0a1b2c3d4"] {
        assert_eq!(NodeId::parse(bad), None, "{bad}");
    }
}

#[test]
fn dns1123_subdomain() {
    for ok in [
        "a",
        "node-1",
        "node1.example.com",
        "1node",
        &"a".repeat(253),
    ] {
        assert!(is_dns1123_subdomain(ok), "{ok}");
    }
    for bad in [
        "",
        "-a",
        "a-",
        "a..b",
        ".a",
        "a.",
        "Node",
        "a_b",
        &"a".repeat(254),
    ] {
        assert!(!is_dns1123_subdomain(bad), "{bad}");
    }
}

#[test]
fn token_never_shows() {
    let token = Token::new("K10abc::server:secret");
    assert_eq!(token.to_string(), "********");
    assert_eq!(format!("{token:?}"), "Token(********)");
    assert_eq!(token.expose(), "K10abc::server:secret");
}
