//! Tests of node naming, the node id and node-IP selection, through the fake host.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{NodeIdState, NodeIpSource, detect_node_ips};
use crate::fake::FakeHost;
use crate::test_support::{agent, errors, ok, server, system, warnings};
use crate::{Interface, InterfaceName, LogFormat, MasqMode, WireguardImplementation};

const JOIN: [&str; 4] = ["--server", "https://10.0.0.1:9345", "--token", "t"];

fn agent_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    JOIN.iter().copied().chain(extra.iter().copied()).collect()
}

#[test]
fn node_name_sources_and_rules() {
    let fix = "set --node-name or K3S_NODE_NAME";
    let rfc = "it must be an RFC 1123 subdomain, at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit";
    let long = "a".repeat(254);
    let almost = "a".repeat(245);
    type Case<'a> = (
        &'a [&'a str],
        &'a [(&'a str, &'a str)],
        Option<&'a str>,
        Result<String, String>,
    );
    let cases: Vec<Case<'_>> = vec![
        (&[], &[], Some("node1"), Ok("node1".into())),
        (
            &[],
            &[],
            Some("Node1.Example.COM"),
            Ok("node1.example.com".into()),
        ),
        (
            &["--node-name", "Worker-1"],
            &[("K3S_NODE_NAME", "env")],
            Some("host"),
            Ok("worker-1".into()),
        ),
        (
            &[],
            &[("K3S_NODE_NAME", "k3s")],
            Some("host"),
            Ok("k3s".into()),
        ),
        (
            &[],
            &[("K3S_NODE_NAME", "k3s"), ("WEFT_NODE_NAME", "weft")],
            Some("host"),
            Ok("weft".into()),
        ),
        (&["--node-name="], &[], Some("host"), Ok("host".into())),
        (
            &[],
            &[],
            Some(""),
            Err(format!("the node name is empty (the hostname): {fix}")),
        ),
        (
            &[],
            &[],
            Some("localhost"),
            Err(format!(
                "the node name \"localhost\" (the hostname) does not identify this node: {fix} to a unique name"
            )),
        ),
        (
            &[],
            &[],
            Some("localhost.localdomain"),
            Err(format!(
                "the node name \"localhost.localdomain\" (the hostname) does not identify this node: {fix} to a unique name"
            )),
        ),
        (
            &["--node-name=LocalHost"],
            &[],
            Some("h"),
            Err(format!(
                "the node name \"localhost\" (node-name from the command line) does not identify this node: {fix} to a unique name"
            )),
        ),
        (
            &[],
            &[("K3S_NODE_NAME", "my_node")],
            Some("h"),
            Err(format!(
                "invalid node name \"my_node\" (node-name from K3S_NODE_NAME): {rfc}; {fix}"
            )),
        ),
        (
            &[],
            &[],
            Some(&long),
            Err(format!(
                "invalid node name \"{long}\" (the hostname): {rfc}; {fix}"
            )),
        ),
        (
            &["--with-node-id"],
            &[],
            Some(&almost),
            Err(format!(
                "invalid node name \"{almost}\" (the hostname): {rfc}; {fix}"
            )),
        ),
        (
            &[],
            &[],
            None,
            Err(format!(
                "can't read the hostname to name this node: permission denied; {fix}"
            )),
        ),
    ];
    for (flags, env, hostname, want) in cases {
        let mut sys = system(&[], env);
        sys.host.hostname = hostname.map(str::to_owned);
        let loaded = agent(&agent_args(flags), &sys);
        let got = match &loaded.result {
            Ok(config) => Ok(config.node.node_name.to_string()),
            Err(_) => Err(errors(&loaded).join("\n")),
        };
        assert_eq!(got, want, "{flags:?} {env:?} {hostname:?}");
    }
}

#[test]
fn with_node_id() {
    let id_file = "/var/lib/weft/node/id";
    // Known id.
    let sys = system(&[(id_file, "0a1b2c3d\n")], &[]);
    let config = ok(agent(&agent_args(&["--with-node-id"]), &sys));
    assert_eq!(
        config.node.full_node_name().unwrap().as_str(),
        "node1-0a1b2c3d"
    );
    assert_eq!(config.node.node_name.as_str(), "node1");

    // In another data dir.
    let sys = system(
        &[("/data/node/id", "ffffffff")],
        &[("K3S_DATA_DIR", "/data")],
    );
    let config = ok(agent(&agent_args(&["--with-node-id"]), &sys));
    assert_eq!(
        config.node.full_node_name().unwrap().as_str(),
        "node1-ffffffff"
    );

    // No id file yet: nothing is written, the name is reported without the id, with a warning.
    let sys = system(&[], &[]);
    let loaded = agent(&agent_args(&["--with-node-id"]), &sys);
    assert_eq!(
        warnings(&loaded),
        [
            "node id file /var/lib/weft/node/id does not exist yet: the first start creates it with a random id, naming this node node1-<8 hex digits>"
        ]
    );
    let config = ok(loaded);
    assert_eq!(
        config.node.node_id,
        NodeIdState::Pending {
            path: id_file.into()
        }
    );
    assert_eq!(config.node.full_node_name(), None);

    // A broken id file.
    let sys = system(&[(id_file, "XYZ\n")], &[]);
    assert_eq!(
        errors(&agent(&agent_args(&["--with-node-id"]), &sys)),
        [
            "node id file /var/lib/weft/node/id holds \"XYZ\", not 8 lowercase hex digits: delete it to get a new id on the next start"
        ]
    );

    // Off: the id file is not read at all.
    let config = ok(agent(&agent_args(&[]), &sys));
    assert_eq!(config.node.node_id, NodeIdState::Off);
    assert_eq!(config.node.full_node_name().unwrap().as_str(), "node1");
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

fn host(ifaces: &[(&str, bool, &[&str])], v4: Option<&str>, v6: Option<&str>) -> FakeHost {
    FakeHost {
        hostname: Some("node1".into()),
        default_ipv4: v4.map(str::to_owned),
        default_ipv6: v6.map(str::to_owned),
        interfaces: ifaces
            .iter()
            .map(|(name, up, addrs)| {
                (
                    (*name).to_owned(),
                    Interface {
                        up: *up,
                        addrs: ips(addrs),
                    },
                )
            })
            .collect::<BTreeMap<_, _>>(),
    }
}

#[test]
fn node_ips_from_flannel_iface() {
    let h = host(
        &[
            (
                "eth1",
                true,
                &[
                    "fe80::1",
                    "10.1.0.5",
                    "2001:db8::5",
                    "2001:db8::6",
                    "127.0.0.2",
                ],
            ),
            ("two", true, &["10.1.0.5", "10.1.0.6"]),
            ("v6", true, &["fe80::1", "fd00::7"]),
            ("down", false, &["10.1.0.5"]),
            ("ll", true, &["fe80::1", "169.254.0.1"]),
        ],
        Some("eth0"),
        None,
    );
    type Case<'a> = (&'a str, Result<(&'a [&'a str], &'a str), &'a str>);
    let cases: &[Case<'_>] = &[
        (
            "eth1",
            Ok((
                &["10.1.0.5", "2001:db8::5"],
                "taken from flannel-iface eth1",
            )),
        ),
        ("v6", Ok((&["fd00::7"], "taken from flannel-iface v6"))),
        (
            "two",
            Err(
                "interface two has several global unicast IPv4 addresses (10.1.0.5,10.1.0.6): set node-ip to one of them",
            ),
        ),
        (
            "down",
            Err(
                "interface down is down, so no node IP can be taken from it: bring it up, or set node-ip",
            ),
        ),
        (
            "ll",
            Err("interface ll has no global unicast address to use as node IP: set node-ip"),
        ),
        (
            "nope",
            Err(
                "flannel-iface nope does not exist on this host: name an existing interface, or set node-ip",
            ),
        ),
    ];
    for (iface, want) in cases {
        let name: InterfaceName = iface.parse().unwrap();
        let got = detect_node_ips(Some(&name), &h)
            .map(|n| (n.addrs, n.source.to_string()))
            .map_err(|e| e.to_string());
        let want = want
            .map(|(addrs, source)| (ips(addrs), source.to_owned()))
            .map_err(str::to_owned);
        assert_eq!(got, want, "{iface}");
    }
}

#[test]
fn node_ips_from_default_routes() {
    type Case<'a> = (FakeHost, Result<(&'a [&'a str], NodeIpSource), &'a str>);
    let cases: Vec<Case<'_>> = vec![
        (
            host(
                &[(
                    "eth0",
                    true,
                    &["fe80::1", "192.168.1.10", "192.168.1.11", "2001:db8::10"],
                )],
                Some("eth0"),
                Some("eth0"),
            ),
            Ok((
                &["192.168.1.10", "2001:db8::10"],
                NodeIpSource::DefaultRoute(vec!["eth0".into()]),
            )),
        ),
        (
            host(
                &[
                    ("eth0", true, &["192.168.1.10"]),
                    ("eth1", true, &["2001:db8::10"]),
                ],
                Some("eth0"),
                Some("eth1"),
            ),
            Ok((
                &["192.168.1.10", "2001:db8::10"],
                NodeIpSource::DefaultRoute(vec!["eth0".into(), "eth1".into()]),
            )),
        ),
        (
            host(&[("eth0", true, &["2001:db8::10"])], None, Some("eth0")),
            Ok((
                &["2001:db8::10"],
                NodeIpSource::DefaultRoute(vec!["eth0".into()]),
            )),
        ),
        (
            host(
                &[
                    ("eth0", true, &["192.168.1.10"]),
                    ("eth1", false, &["2001:db8::10"]),
                ],
                Some("eth0"),
                Some("eth1"),
            ),
            Ok((
                &["192.168.1.10"],
                NodeIpSource::DefaultRoute(vec!["eth0".into()]),
            )),
        ),
        (
            host(&[], None, None),
            Err(
                "can't pick a node IP: this host has no default route through an interface with a global unicast address; set node-ip or flannel-iface",
            ),
        ),
        (
            host(&[("eth0", true, &["fe80::1"])], Some("eth0"), None),
            Err(
                "can't pick a node IP: this host has no default route through an interface with a global unicast address; set node-ip or flannel-iface",
            ),
        ),
    ];
    for (h, want) in cases {
        let got = detect_node_ips(None, &h)
            .map(|n| (n.addrs, n.source))
            .map_err(|e| e.to_string());
        let want = want.map(|(a, s)| (ips(a), s)).map_err(str::to_owned);
        assert_eq!(got, want, "{h:?}");
    }
}

#[test]
fn explicit_node_ips_skip_detection() {
    let mut sys = system(&[], &[]);
    sys.host = host(&[], None, None);
    let config = ok(agent(
        &agent_args(&[
            "--node-ip",
            "10.0.0.2,fd00::2",
            "--node-external-ip=203.0.113.2",
        ]),
        &sys,
    ));
    assert_eq!(config.node.node_ips.addrs, ips(&["10.0.0.2", "fd00::2"]));
    assert_eq!(config.node.node_ips.source, NodeIpSource::Setting);
    assert_eq!(config.node.node_external_ips, ips(&["203.0.113.2"]));
    assert_eq!(
        errors(&agent(
            &agent_args(&["--node-ip", "10.0.0.300", "--node-external-ip=x"]),
            &sys
        )),
        [
            "invalid node-ip \"10.0.0.300\": not an IP address; write e.g. 192.168.1.10 or 2001:db8::10",
            "invalid node-external-ip \"x\": not an IP address; write e.g. 192.168.1.10 or 2001:db8::10",
        ]
    );
}

#[test]
fn agent_join_and_file_rules() {
    let sys = system(
        &[
            ("/etc/flannel.json", "{\"Network\": \"10.42.0.0/16\"}"),
            ("/etc/bad.json", "{"),
            ("/t", "K10secret\n"),
            ("/empty-token", "\n"),
        ],
        &[],
    );
    assert_eq!(
        errors(&agent(&[], &sys)),
        [
            "server is required for an agent: set --server, WEFT_SERVER or K3S_URL to a server's URL, e.g. https://10.0.0.1:9345",
            "token is required to join a server: set --token, --token-file, K3S_TOKEN or K3S_TOKEN_FILE",
        ]
    );
    assert_eq!(
        errors(&agent(
            &[
                "--server=10.0.0.1:9345",
                "--token=t",
                "--token-file=/t",
                "--data-dir=var/lib/weft",
                "--kubelet-port=70000",
                "--bind-address=10.0.0.1,10.0.0.2",
                "--flannel-cni-conf=/etc/cni.conflist",
                "--flannel-iface=eth0:1",
            ],
            &sys
        )),
        [
            "invalid data-dir \"var/lib/weft\": use an absolute path, starting with /",
            "token and token-file are both set: keep one",
            "invalid server \"10.0.0.1:9345\": it must start with https://; write https://HOST:PORT, e.g. https://10.0.0.1:9345",
            "invalid flannel-iface \"eth0:1\": an interface name has 1 to 15 characters and no '/', ':' or whitespace",
            "bind-address takes one IP address, but 10.0.0.1,10.0.0.2 has 2: keep one",
            "invalid kubelet-port \"70000\": use a port number from 1 to 65535",
            "flannel-cni-conf names /etc/cni.conflist, which does not exist: create it, or unset flannel-cni-conf to let weft generate it",
        ]
    );
    let config = ok(agent(&agent_args(&["--token-file=/t", "--token="]), &sys));
    assert_eq!(config.node.token, None);
}

/// The settings the daemons run with: subnet-file, cni-conf-dir, masq-mode,
/// wireguard-implementation, log-format, reconcile-interval and metrics-address.
#[test]
fn daemon_settings_defaults() {
    let config = ok(agent(&agent_args(&[]), &system(&[], &[])));
    let node = &config.node;
    assert_eq!(node.subnet_file, PathBuf::from("/run/flannel/subnet.env"));
    assert_eq!(
        node.cni_conf_dir,
        PathBuf::from("/var/lib/weft/agent/etc/cni/net.d")
    );
    assert_eq!(node.masq_mode, MasqMode::Nftables);
    assert_eq!(node.wireguard_implementation, WireguardImplementation::Auto);
    assert_eq!(node.log_format, LogFormat::Text);
    assert_eq!(node.reconcile_interval, Duration::from_secs(10));
    assert_eq!(node.metrics_address, "127.0.0.1:9346".parse().unwrap());

    let server = ok(server(&[], &system(&[], &[])));
    assert_eq!(server.node.subnet_file, node.subnet_file);
    assert_eq!(server.node.metrics_address, node.metrics_address);
}

#[test]
fn daemon_settings_from_flags_file_and_env() {
    let sys = system(
        &[(
            "/etc/weft/config.yaml",
            "masq-mode: iptables\nreconcile-interval: 30\nmetrics-address: \"[::1]:9100\"\nlog-format: text\n",
        )],
        &[
            ("WEFT_LOG_FORMAT", "json"),
            ("WEFT_SUBNET_FILE", "/run/weft/subnet.env"),
            ("WEFT_WIREGUARD_IMPLEMENTATION", "userspace"),
            ("WEFT_MASQ_MODE", "nftables"),
            ("K3S_DATA_DIR", "/data"),
        ],
    );
    // The file beats the environment; a flag beats the file.
    let config = ok(agent(&agent_args(&["--reconcile-interval=3600"]), &sys));
    let node = &config.node;
    assert_eq!(node.masq_mode, MasqMode::Iptables);
    assert_eq!(node.reconcile_interval, Duration::from_secs(3600));
    assert_eq!(node.metrics_address, "[::1]:9100".parse().unwrap());
    assert_eq!(node.log_format, LogFormat::Text);
    assert_eq!(node.subnet_file, PathBuf::from("/run/weft/subnet.env"));
    assert_eq!(
        node.wireguard_implementation,
        WireguardImplementation::Userspace
    );
    // cni-conf-dir follows the effective data-dir unless it is given.
    assert_eq!(
        node.cni_conf_dir,
        PathBuf::from("/data/agent/etc/cni/net.d")
    );
    assert_eq!(
        node.cni_conf_dir,
        crate::default_cni_conf_dir(&node.data_dir)
    );
    let config = ok(agent(
        &agent_args(&["--data-dir=/d", "--cni-conf-dir=/etc/cni/net.d"]),
        &sys,
    ));
    assert_eq!(config.node.cni_conf_dir, PathBuf::from("/etc/cni/net.d"));
    let config = ok(agent(&agent_args(&["-d", "/d"]), &sys));
    assert_eq!(
        config.node.cni_conf_dir,
        PathBuf::from("/d/agent/etc/cni/net.d")
    );
    let config = ok(server(&["--log-format=json", "--masq-mode=iptables"], &sys));
    assert_eq!(
        (config.node.log_format, config.node.masq_mode),
        (LogFormat::Json, MasqMode::Iptables)
    );
}

#[test]
fn daemon_settings_values() {
    let interval = |v: &str| {
        "invalid reconcile-interval \"V\": use a whole number of seconds from 1 to 3600, e.g. 10"
            .replace('V', v)
    };
    let metrics = |v: &str| {
        format!(
            "invalid metrics-address {v:?}: write IP:PORT with a port from 1 to 65535, e.g. 127.0.0.1:9346, or [ADDRESS]:PORT for IPv6, e.g. [::1]:9346"
        )
    };
    type Case<'a> = (&'a str, Result<(Duration, &'a str), String>);
    let cases: Vec<Case<'_>> = vec![
        (
            "--reconcile-interval=1",
            Ok((Duration::from_secs(1), "127.0.0.1:9346")),
        ),
        (
            "--reconcile-interval= 60 ",
            Ok((Duration::from_secs(60), "127.0.0.1:9346")),
        ),
        (
            "--reconcile-interval=",
            Ok((Duration::from_secs(10), "127.0.0.1:9346")),
        ),
        ("--reconcile-interval=0", Err(interval("0"))),
        ("--reconcile-interval=3601", Err(interval("3601"))),
        ("--reconcile-interval=10s", Err(interval("10s"))),
        ("--reconcile-interval=-5", Err(interval("-5"))),
        ("--reconcile-interval=1.5", Err(interval("1.5"))),
        (
            "--metrics-address=0.0.0.0:9100",
            Ok((Duration::from_secs(10), "0.0.0.0:9100")),
        ),
        (
            "--metrics-address=[::]:9346",
            Ok((Duration::from_secs(10), "[::]:9346")),
        ),
        (
            "--metrics-address=[2001:db8::1]:80",
            Ok((Duration::from_secs(10), "[2001:db8::1]:80")),
        ),
        ("--metrics-address=127.0.0.1", Err(metrics("127.0.0.1"))),
        (
            "--metrics-address=localhost:9346",
            Err(metrics("localhost:9346")),
        ),
        ("--metrics-address=::1:9346", Err(metrics("::1:9346"))),
        ("--metrics-address=[::1]", Err(metrics("[::1]"))),
        ("--metrics-address=127.0.0.1:0", Err(metrics("127.0.0.1:0"))),
        (
            "--metrics-address=127.0.0.1:65536",
            Err(metrics("127.0.0.1:65536")),
        ),
        ("--metrics-address=:9346", Err(metrics(":9346"))),
    ];
    let sys = system(&[], &[]);
    for (flag, want) in cases {
        let loaded = agent(&agent_args(&[flag]), &sys);
        let got = match &loaded.result {
            Ok(c) => Ok((
                c.node.reconcile_interval,
                c.node.metrics_address.to_string(),
            )),
            Err(_) => Err(errors(&loaded).join("\n")),
        };
        let want = want.map(|(d, a)| (d, a.to_owned()));
        assert_eq!(got, want, "{flag}");
    }
}

#[test]
fn daemon_settings_errors_are_reported_together() {
    let sys = system(&[], &[("WEFT_LOG_FORMAT", "logfmt")]);
    assert_eq!(
        errors(&agent(
            &agent_args(&[
                "--subnet-file=run/flannel/subnet.env",
                "--cni-conf-dir=net.d",
                "--masq-mode=ipvs",
                "--wireguard-implementation=boringtun",
                "--reconcile-interval=0",
                "--metrics-address=localhost:9346",
            ]),
            &sys
        )),
        [
            "invalid subnet-file \"run/flannel/subnet.env\": use an absolute path, starting with /",
            "invalid cni-conf-dir \"net.d\": use an absolute path, starting with /",
            "invalid masq-mode \"ipvs\": valid values are nftables, iptables",
            "invalid wireguard-implementation \"boringtun\": valid values are auto, kernel, userspace",
            "invalid log-format \"logfmt\": valid values are text, json",
            "invalid reconcile-interval \"0\": use a whole number of seconds from 1 to 3600, e.g. 10",
            "invalid metrics-address \"localhost:9346\": write IP:PORT with a port from 1 to 65535, e.g. 127.0.0.1:9346, or [ADDRESS]:PORT for IPv6, e.g. [::1]:9346",
        ]
    );
}

#[test]
fn metrics_port_must_be_free() {
    let sys = system(&[], &[]);
    let in_use = |addr: &str, key: &str, port: u16, suggestion: &str| {
        format!(
            "metrics-address {addr} uses port {port}, which {key} uses too: pick another port for metrics-address, e.g. {suggestion}"
        )
    };
    // The kubelet listens on every address, so any metrics address on its port collides.
    assert_eq!(
        errors(&agent(
            &agent_args(&["--metrics-address=[::1]:10250"]),
            &sys
        )),
        [in_use("[::1]:10250", "kubelet-port", 10250, "[::1]:9346")]
    );
    assert_eq!(
        errors(&agent(&agent_args(&["--kubelet-port=9346"]), &sys)),
        [in_use(
            "127.0.0.1:9346",
            "kubelet-port",
            9346,
            "127.0.0.1:9347"
        )]
    );
    // The supervisor listens on bind-address (0.0.0.0 by default).
    let cases: &[(&[&str], &[String])] = &[
        (
            &["--metrics-address=127.0.0.1:9345"],
            &[in_use("127.0.0.1:9345", "supervisor-port", 9345, "127.0.0.1:9346")],
        ),
        (
            &["--supervisor-port=9346", "--kubelet-port=9347"],
            &[in_use("127.0.0.1:9346", "supervisor-port", 9346, "127.0.0.1:9348")],
        ),
        (
            &["--metrics-address=[::]:9345", "--bind-address=192.168.1.10"],
            &[in_use("[::]:9345", "supervisor-port", 9345, "[::]:9346")],
        ),
        (&["--metrics-address=[::1]:9345"], &[]),
        (
            &["--metrics-address=127.0.0.1:9345", "--bind-address=192.168.1.10"],
            &[],
        ),
        (&["--metrics-address=0.0.0.0:10250", "--disable-agent", "--egress-selector-mode=pod"], &[]),
        (
            &["--metrics-address=0.0.0.0:10250"],
            &[in_use("0.0.0.0:10250", "kubelet-port", 10250, "0.0.0.0:9346")],
        ),
        (&["--metrics-address=127.0.0.1:0", "--supervisor-port=9346"], &[
            "invalid metrics-address \"127.0.0.1:0\": write IP:PORT with a port from 1 to 65535, e.g. 127.0.0.1:9346, or [ADDRESS]:PORT for IPv6, e.g. [::1]:9346".to_owned(),
        ]),
    ];
    for (args, want) in cases {
        assert_eq!(&errors(&server(args, &sys)), want, "{args:?}");
    }
}

#[test]
fn wireguard_implementation_without_wireguard_warns() {
    let sys = system(&[], &[]);
    let warn = |backend: &str| {
        format!(
            "wireguard-implementation is kernel, but flannel-backend is {backend}, which does not use WireGuard: unset wireguard-implementation"
        )
    };
    assert_eq!(
        warnings(&server(&["--wireguard-implementation=kernel"], &sys)),
        [warn("vxlan")]
    );
    assert_eq!(
        warnings(&server(
            &[
                "--wireguard-implementation=kernel",
                "--flannel-backend=wireguard-native"
            ],
            &sys
        )),
        Vec::<String>::new()
    );
    assert_eq!(
        warnings(&server(&["--wireguard-implementation=auto"], &sys)),
        Vec::<String>::new()
    );
    // An agent learns the backend from the servers.
    let node = ok(agent(
        &agent_args(&["--wireguard-implementation=kernel"]),
        &sys,
    ))
    .node;
    let cluster = ok(server(&["--flannel-backend=host-gw"], &sys)).network;
    let (errs, warns) = node.check_cluster(&cluster);
    assert_eq!(errs, []);
    assert_eq!(
        warns.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [warn("host-gw")]
    );
}

#[test]
fn token_file_must_hold_a_token() {
    let sys = system(&[("/empty-token", "\n"), ("/good-token", "K10abc\n")], &[]);
    let base = ["--server=https://10.0.0.1:9345", "--node-ip=10.0.0.2"];
    let with = |extra: &str| {
        let mut args: Vec<&str> = base.to_vec();
        args.push(extra);
        errors(&agent(&args, &sys))
    };
    assert_eq!(
        with("--token-file=/missing"),
        [
            "token-file /missing can't be used: entity not found; point it at a file holding the token from the server's <data-dir>/server/token"
        ]
    );
    assert_eq!(
        with("--token-file=/empty-token"),
        [
            "token-file /empty-token can't be used: it is empty; point it at a file holding the token from the server's <data-dir>/server/token"
        ]
    );
    assert!(with("--token-file=/good-token").is_empty());
}
