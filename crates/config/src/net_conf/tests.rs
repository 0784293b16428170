//! Tests of `net-conf.json` parsing: every key, the case-insensitive match, every problem, and
//! the secret's redaction.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::json;

use crate::{NetConf, NetConfBackend, Psk, Secrets, VxlanOptions, WireguardMode, WireguardOptions};

const PSK: &str = "GDzWJCDrrtmOi6Wq7Cf0fMnRxkUNn/D/WvO2HuHQWV8=";

/// Parses `text` and returns the problems as messages.
fn problems(text: &str) -> Vec<String> {
    match NetConf::parse(text) {
        Ok(conf) => panic!("{text} parsed as {conf:?}"),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn every_top_level_key() {
    let conf = NetConf::parse(
        r#"{
            "Network": "10.42.0.0/16", "IPv6Network": "fd00:42::/56",
            "EnableIPv4": true, "EnableIPv6": true, "EnableNFTables": false,
            "SubnetLen": 25, "IPv6SubnetLen": 72,
            "SubnetMin": "10.42.8.0", "SubnetMax": "10.42.9.128",
            "IPv6SubnetMin": "fd00:42:0:1::", "IPv6SubnetMax": "fd00:42:0:2::",
            "Backend": {"Type": "host-gw"}
        }"#,
    )
    .unwrap();
    assert_eq!(
        conf,
        NetConf {
            network: Some("10.42.0.0/16".parse().unwrap()),
            ipv6_network: Some("fd00:42::/56".parse().unwrap()),
            enable_ipv4: Some(true),
            enable_ipv6: Some(true),
            enable_nftables: Some(false),
            subnet_len: Some(25),
            ipv6_subnet_len: Some(72),
            subnet_min: Some(Ipv4Addr::new(10, 42, 8, 0)),
            subnet_max: Some(Ipv4Addr::new(10, 42, 9, 128)),
            ipv6_subnet_min: Some("fd00:42:0:1::".parse::<Ipv6Addr>().unwrap()),
            ipv6_subnet_max: Some("fd00:42:0:2::".parse::<Ipv6Addr>().unwrap()),
            backend: Some(NetConfBackend::HostGw),
        }
    );
    assert_eq!(NetConf::parse("{}").unwrap(), NetConf::default());
}

#[test]
fn every_vxlan_key() {
    let conf = NetConf::parse(
        r#"{"Backend": {"Type": "vxlan", "VNI": 4096, "Port": 4789, "MTU": 1400, "GBP": true,
            "DirectRouting": true, "MacPrefix": "0E-2A", "Learning": false}}"#,
    )
    .unwrap();
    assert_eq!(
        conf.backend,
        Some(NetConfBackend::Vxlan(VxlanOptions {
            vni: 4096,
            port: 4789,
            mtu: Some(1400),
            gbp: true,
            direct_routing: true,
            mac_prefix: Some([0x0e, 0x2a]),
        }))
    );
    let defaults = NetConf::parse(r#"{"Backend": {"Type": "vxlan"}}"#).unwrap();
    assert_eq!(
        defaults.backend,
        Some(NetConfBackend::Vxlan(VxlanOptions::default()))
    );
    assert_eq!(VxlanOptions::default().vni, 1);
    assert_eq!(VxlanOptions::default().port, 0);
}

#[test]
fn every_wireguard_key() {
    let conf = NetConf::parse(&format!(
        r#"{{"Backend": {{"Type": "wireguard", "PSK": "{PSK}", "ListenPort": 51000,
            "ListenPortV6": 51001, "PersistentKeepaliveInterval": 15, "MTU": 1400, "Mode": "auto"}}}}"#
    ))
    .unwrap();
    let Some(NetConfBackend::Wireguard(options)) = conf.backend else {
        panic!("not wireguard: {conf:?}");
    };
    assert_eq!(options.psk.map(|p| p.reveal()), Some(PSK.to_owned()));
    assert_eq!(
        (
            options.listen_port,
            options.listen_port_v6,
            options.persistent_keepalive,
            options.mtu,
            options.mode
        ),
        (51000, 51001, 15, Some(1400), WireguardMode::Auto)
    );
    for (mode, want) in [
        ("separate", WireguardMode::Separate),
        ("auto", WireguardMode::Auto),
        ("ipv4", WireguardMode::Ipv4),
        ("ipv6", WireguardMode::Ipv6),
    ] {
        let conf = NetConf::parse(&format!(
            r#"{{"Backend": {{"Type": "wireguard", "Mode": "{mode}"}}}}"#
        ))
        .unwrap();
        let Some(NetConfBackend::Wireguard(options)) = conf.backend else {
            panic!("not wireguard");
        };
        assert_eq!(options.mode, want);
    }
    let defaults = WireguardOptions::default();
    assert_eq!(
        (
            defaults.listen_port,
            defaults.listen_port_v6,
            defaults.persistent_keepalive
        ),
        (51820, 51821, 0)
    );
}

/// Keys match without regard to case, as Go's encoding/json matches them; so does the type.
#[test]
fn keys_match_without_case() {
    let conf = NetConf::parse(
        r#"{"network": "10.42.0.0/16", "ENABLEIPV6": false, "subnetlen": 26,
            "backend": {"type": "VXLAN", "vni": 7, "PORT": 4789, "directrouting": true}}"#,
    )
    .unwrap();
    assert_eq!(conf.network, Some("10.42.0.0/16".parse().unwrap()));
    assert_eq!(conf.enable_ipv6, Some(false));
    assert_eq!(conf.subnet_len, Some(26));
    assert_eq!(
        conf.backend,
        Some(NetConfBackend::Vxlan(VxlanOptions {
            vni: 7,
            port: 4789,
            direct_routing: true,
            ..VxlanOptions::default()
        }))
    );
}

/// Every problem, each with its message, all reported in one run.
#[test]
fn every_problem() {
    let table: &[(&str, &[&str])] = &[
        ("[1]", &["the file is [1], but must be a JSON object"]),
        (
            "{",
            &[
                "the file is not valid JSON: EOF while parsing an object at line 1 column 1; write a flannel net-conf.json object",
            ],
        ),
        (
            r#"{"Netwrk": "10.42.0.0/16", "Backend": {"Type": "vxlan", "VNII": 2}}"#,
            &[
                "unknown key Netwrk: did you mean Network? remove it or fix its spelling",
                "unknown key Backend.VNII: did you mean Backend.VNI? remove it or fix its spelling",
            ],
        ),
        (
            r#"{"Network": "10.42.0.0/16", "network": "10.42.0.0/16"}"#,
            &["Network is given twice, as \"Network\" and \"network\": keep one"],
        ),
        (
            r#"{"EnableIPv4": "yes", "SubnetLen": 24.5, "Network": 10, "Backend": {"Type": "vxlan", "GBP": 1}}"#,
            &[
                "Network is 10, but must be a string",
                "EnableIPv4 is \"yes\", but must be true or false",
                "SubnetLen is 24.5, but must be a whole number",
                "Backend.GBP is 1, but must be true or false",
            ],
        ),
        (
            r#"{"SubnetLen": 33, "IPv6SubnetLen": -1, "Backend": {"Type": "vxlan", "VNI": 16777216, "Port": 65536, "MTU": 67}}"#,
            &[
                "SubnetLen 33 is out of range: use a whole number from 0 to 32",
                "IPv6SubnetLen -1 is out of range: use a whole number from 0 to 128",
                "Backend.VNI 16777216 is out of range: use a whole number from 0 to 16777215",
                "Backend.Port 65536 is out of range: use a whole number from 0 to 65535",
                "Backend.MTU 67 is out of range: use a whole number from 68 to 65535",
            ],
        ),
        (
            r#"{"Backend": {"Type": "wireguard", "ListenPort": 0, "ListenPortV6": 70000, "PersistentKeepaliveInterval": 65536}}"#,
            &[
                "Backend.ListenPort 0 is out of range: use a whole number from 1 to 65535",
                "Backend.ListenPortV6 70000 is out of range: use a whole number from 1 to 65535",
                "Backend.PersistentKeepaliveInterval 65536 is out of range: use a whole number from 0 to 65535",
            ],
        ),
        (
            r#"{"Network": "10.42.0.1/16", "IPv6Network": "10.42.0.0/16", "SubnetMin": "x", "IPv6SubnetMax": "10.0.0.1"}"#,
            &[
                "Network \"10.42.0.1/16\" is not valid: write an IPv4 network as ADDRESS/PREFIX, e.g. 10.42.0.0/16",
                "IPv6Network \"10.42.0.0/16\" is not valid: write an IPv6 network as ADDRESS/PREFIX, e.g. fd00:42::/56",
                "SubnetMin \"x\" is not valid: write the IPv4 network address of a node CIDR, e.g. 10.42.8.0",
                "IPv6SubnetMax \"10.0.0.1\" is not valid: write the IPv6 network address of a node CIDR, e.g. fd00:42:0:8::",
            ],
        ),
        (
            r#"{"Backend": {"Type": "vxlan", "MacPrefix": "0F-2A", "Learning": true}}"#,
            &[
                "Backend.Learning true is not supported: weft programs every peer's VTEP; remove it or set it to false",
                "Backend.MacPrefix \"0F-2A\" is not valid: write two hex bytes, e.g. 0E-2A, whose first byte is unicast (its lowest bit clear)",
            ],
        ),
        (
            r#"{"Backend": {"Type": "wireguard", "PSK": "not-a-key", "Mode": "both"}}"#,
            &[
                "Backend.PSK is not a WireGuard pre-shared key: use 32 bytes in base64 (44 characters), as `wg genpsk` prints them",
                "Backend.Mode \"both\" is not valid: use separate, auto, ipv4 or ipv6",
            ],
        ),
        (
            r#"{"Backend": {"VNI": 1}}"#,
            &["Backend has no Type: set it to vxlan, host-gw or wireguard"],
        ),
        (
            r#"{"Backend": {"Type": "udp"}}"#,
            &[
                "Backend.Type \"udp\" is not a backend weft runs: use vxlan, host-gw or wireguard (flannel-backend none needs no net-conf)",
            ],
        ),
        (
            r#"{"Backend": {"Type": "host-gw", "VNI": 1}}"#,
            &["unknown key Backend.VNI: did you mean Backend.Type? remove it or fix its spelling"],
        ),
        (
            r#"{"Backend": "vxlan"}"#,
            &["Backend is \"vxlan\", but must be a JSON object"],
        ),
    ];
    for (text, want) in table {
        assert_eq!(problems(text), *want, "{text}");
    }
}

/// The normalised file reads back as the same value, keys in flannel's spelling; the PSK shows
/// only when revealed, and never in a debug print or a problem.
#[test]
fn normalised_round_trip_and_redaction() {
    let text = format!(
        r#"{{"network": "10.42.0.0/16", "subnetmax": "10.42.9.0",
            "backend": {{"type": "wireguard", "psk": "{PSK}", "mode": "ipv4"}}}}"#
    );
    let conf = NetConf::parse(&text).unwrap();
    let revealed = conf.to_json(Secrets::Reveal);
    assert_eq!(
        revealed,
        json!({
            "Network": "10.42.0.0/16",
            "SubnetMax": "10.42.9.0",
            "Backend": {
                "Type": "wireguard", "PSK": PSK, "ListenPort": 51820, "ListenPortV6": 51821,
                "PersistentKeepaliveInterval": 0, "Mode": "ipv4"
            }
        })
    );
    assert_eq!(NetConf::from_value(&revealed), Ok(conf.clone()));
    let redacted = conf.to_json(Secrets::Redact);
    assert_eq!(redacted["Backend"]["PSK"], "<redacted>");
    assert!(!redacted.to_string().contains(PSK));
    assert!(!format!("{conf:?}").contains(PSK));
    assert_eq!(Psk::parse(PSK).unwrap().to_string(), "<redacted>");

    let vxlan =
        NetConf::parse(r#"{"Backend": {"Type": "vxlan", "MacPrefix": "0e:2a", "MTU": 1400}}"#)
            .unwrap();
    let json = vxlan.to_json(Secrets::Redact);
    assert_eq!(
        json,
        json!({"Backend": {"Type": "vxlan", "VNI": 1, "Port": 0, "MTU": 1400, "GBP": false,
            "DirectRouting": false, "MacPrefix": "0E-2A"}})
    );
    assert_eq!(NetConf::from_value(&json), Ok(vxlan));
}
