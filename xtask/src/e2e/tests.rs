//! Tests of the e2e harness's pure parts: the parsers of what `ip`, `bridge`, `ping`, `socat`,
//! cargo and `weft-server node list` print, CNI config chaining, names and tables.

use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::json;

use super::cluster::{NodeRow, Role, Settings, parse_node_list};
use super::cni::{empty_result, plugin_config, result_ips};
use super::demo::{columns, node_table, render_matrix};
use super::front::{Front, parse_egress_config};
use super::inspect::{
    WgPeer, parse_fdb_dsts, parse_link_kind, parse_uapi_peers, parse_wg_dump, route_via,
};
use super::lab::{Families, Ns, Segment};
use super::log::render_log_line;
use super::metrics::Scrape;
use super::probe::{accepted_peer, ping_counts, pseudo_random, received_bits_per_second};
use super::reaper::run_pid;
use super::scenarios;
use super::{executables, select};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn node_list_rows() {
    let text = "\
NAME                           NODE-IPS                         IPV4-CIDR            IPV6-CIDR
n1                             192.0.2.1,2001:db8:1::1          198.18.0.0/24        2001:db8:42::/64
n2                             192.0.2.2                        198.18.1.0/24        -
";
    let rows = parse_node_list(text).unwrap();
    assert_eq!(
        rows,
        vec![
            NodeRow {
                name: "n1".to_owned(),
                node_ips: vec![ip("192.0.2.1"), ip("2001:db8:1::1")],
                ipv4_cidr: Some("198.18.0.0/24".to_owned()),
                ipv6_cidr: Some("2001:db8:42::/64".to_owned()),
            },
            NodeRow {
                name: "n2".to_owned(),
                node_ips: vec![ip("192.0.2.2")],
                ipv4_cidr: Some("198.18.1.0/24".to_owned()),
                ipv6_cidr: None,
            },
        ]
    );
    assert_eq!(rows[0].cidrs(), vec!["198.18.0.0/24", "2001:db8:42::/64"]);
    assert!(parse_node_list("").is_err());
    assert!(parse_node_list("NAME NODE-IPS IPV4-CIDR IPV6-CIDR\nn1 192.0.2.1\n").is_err());
}

#[test]
fn socat_peers() {
    let check = |log: &str, expect: Option<&str>| {
        assert_eq!(accepted_peer(log), expect.map(ip), "log: {log}");
    };
    check(
        "2026/11/27 13:09:32 socat[3363] N accepting connection from AF=2 192.0.2.1:3430 on AF=2 192.0.2.100:5000",
        Some("192.0.2.1"),
    );
    check(
        "socat[1] N accepting connection from AF=10 [2001:db8:1::1]:40000 on AF=10 [2001:db8:1::64]:5001",
        Some("2001:db8:1::1"),
    );
    check("socat[1] N listening on AF=2 0.0.0.0:5000", None);
}

#[test]
fn ping_summaries() {
    let check = |text: &str, expect| assert_eq!(ping_counts(text), expect, "text: {text}");
    check(
        "--- 198.18.1.2 ping statistics ---\n3 packets transmitted, 3 received, 0% packet loss, time 413ms\n",
        Some((3, 3)),
    );
    check(
        "100 packets transmitted, 97 received, +3 errors, 3% packet loss, time 9.9s",
        Some((100, 97)),
    );
    check("ping: connect: Network is unreachable", None);
}

#[test]
fn fdb_and_routes() {
    let fdb = "\
4e:1c:00:00:00:01 dst 192.0.2.2 self permanent
33:33:00:00:00:01 self permanent
4e:1c:00:00:00:02 dst 2001:db8:1::3 self permanent
";
    assert_eq!(
        parse_fdb_dsts(fdb),
        vec![ip("192.0.2.2"), ip("2001:db8:1::3")]
    );
    assert_eq!(
        route_via("198.18.1.0/24 via 198.18.1.0 dev flannel.1 proto 87 onlink"),
        Some(ip("198.18.1.0"))
    );
    assert_eq!(
        route_via("198.18.1.0/24 via inet6 fe80::1 dev eth0"),
        Some(ip("fe80::1"))
    );
    assert_eq!(
        route_via("198.18.0.0/24 dev cni0 proto kernel scope link"),
        None
    );
}

#[test]
fn cni_chaining_adds_name_version_and_prev_result() {
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": "weft",
        "plugins": [{ "type": "bridge", "bridge": "cni0" }, { "type": "portmap" }],
    });
    let plugins = conflist["plugins"].as_array().unwrap();
    assert_eq!(
        plugin_config(&conflist, &plugins[0], None).unwrap(),
        json!({ "type": "bridge", "bridge": "cni0", "name": "weft", "cniVersion": "1.0.0" })
    );
    let prev = empty_result();
    assert_eq!(
        plugin_config(&conflist, &plugins[1], Some(&prev)).unwrap(),
        json!({ "type": "portmap", "name": "weft", "cniVersion": "1.0.0", "prevResult": prev })
    );
    assert!(plugin_config(&json!({ "plugins": [] }), &plugins[0], None).is_err());
}

#[test]
fn cni_result_addresses() {
    let result = json!({
        "cniVersion": "1.0.0",
        "ips": [
            { "interface": 2, "address": "198.18.0.2/24", "gateway": "198.18.0.1" },
            { "interface": 2, "address": "2001:db8:42::2/64", "gateway": "2001:db8:42::1" },
        ],
    });
    assert_eq!(
        result_ips(&result).unwrap(),
        vec![ip("198.18.0.2"), ip("2001:db8:42::2")]
    );
    assert!(result_ips(&json!({})).is_err());
}

#[test]
fn log_lines() {
    let line = r#"{"timestamp":"2026-11-27T13:12:14.216469Z","level":"INFO","fields":{"message":"serving","url":"https://192.0.2.9:9345"},"target":"weft_server::run"}"#;
    assert_eq!(
        render_log_line(line),
        "2026-11-27T13:12:14.216469Z INFO  weft_server::run: serving url=https://192.0.2.9:9345"
    );
    assert_eq!(render_log_line("warning: plain"), "warning: plain");
}

#[test]
fn names() {
    assert_eq!(run_pid("wfe-4242-7-n1"), Some(4242));
    assert_eq!(run_pid("wfe-4242"), Some(4242));
    assert_eq!(run_pid("wk-4242-7-n1"), None);
    assert_eq!(run_pid("wfe-x-1-n1"), None);
}

#[test]
fn segments_use_documentation_ranges() {
    let segment = |index| Segment {
        ns: Ns {
            name: "wfe-1-0-seg".to_owned(),
        },
        index,
        families: Families::Dual,
    };
    assert_eq!(
        segment(0).addrs(7),
        vec![ip("192.0.2.7"), ip("2001:db8:1::7")]
    );
    assert_eq!(
        segment(1).v4(1),
        "198.51.100.1".parse::<std::net::Ipv4Addr>().unwrap()
    );
    assert_eq!(segment(2).v4(254).to_string(), "203.0.113.254");
    assert_eq!(Families::V6.each(), vec![true]);
    assert_eq!(Families::Dual.each(), vec![false, true]);
}

#[test]
fn cluster_flags() {
    assert_eq!(
        Settings::new("host-gw", Families::Dual).flags(),
        [
            "--cluster-cidr",
            "198.18.0.0/16,2001:db8:42::/56",
            "--service-cidr",
            "198.19.0.0/16,2001:db8:43::/112",
            "--flannel-backend",
            "host-gw",
            "--flannel-ipv6-masq",
        ]
    );
    assert_eq!(
        Settings::new("vxlan", Families::V4).flags()[..2],
        ["--cluster-cidr", "198.18.0.0/16"]
    );
}

#[test]
fn payloads_are_deterministic() {
    let a = pseudo_random(1000, 5);
    assert_eq!(a.len(), 1000);
    assert_eq!(a, pseudo_random(1000, 5));
    assert_ne!(a, pseudo_random(1000, 6));
}

#[test]
fn cargo_artifacts() {
    let messages = r#"{"reason":"compiler-artifact","target":{"name":"weft-server"},"executable":"/t/release/weft-server"}
{"reason":"compiler-artifact","target":{"name":"weft-api"},"executable":null}
{"reason":"build-finished","success":true}"#;
    assert_eq!(
        executables(messages),
        vec![(
            "weft-server".to_owned(),
            PathBuf::from("/t/release/weft-server")
        )]
    );
}

#[test]
fn scenario_names_are_unique_and_selectable() {
    let all = scenarios::all();
    let mut names: Vec<&str> = all.iter().map(|s| s.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all.len());
    assert_eq!(select(&all, &[], true).unwrap().len(), all.len());
    // On the host, the scenarios that need the kernel's WireGuard run only when named.
    let host = select(&all, &[], false).unwrap();
    assert_eq!(host.len(), all.len() - 1);
    assert!(!host.iter().any(|s| s.name == "wireguard-mixed"));
    let named = select(&all, &["wireguard-mixed".to_owned()], false).unwrap();
    assert_eq!(named.len(), 1);
    let one = select(&all, &["restart".to_owned()], false).unwrap();
    assert_eq!(one.iter().map(|s| s.name).collect::<Vec<_>>(), ["restart"]);
    let err = select(&all, &["nope".to_owned()], false)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("no scenario `nope`"), "{err}");
}

#[test]
fn demo_tables() {
    let rows = vec![NodeRow {
        name: "n1".to_owned(),
        node_ips: vec![ip("192.0.2.1")],
        ipv4_cidr: Some("198.18.0.0/24".to_owned()),
        ipv6_cidr: None,
    }];
    assert_eq!(
        node_table(&rows, &[("n1", Role::Server)]),
        "  NODE  ROLE    NODE-IPS   IPV4-LEASE     IPV6-LEASE\n  n1    server  192.0.2.1  198.18.0.0/24  -\n"
    );
    assert_eq!(
        render_matrix(
            &["a", "b"],
            &[
                vec![None, Some((true, false))],
                vec![Some((true, true)), None]
            ]
        ),
        "  FROM \\ TO  a    b\n  a          .    4 -\n  b          4 6  .\n"
    );
    assert_eq!(columns(&[]), "");
}

#[test]
fn wireguard_peers() {
    let uapi = "\
private_key=aa
listen_port=51820
public_key=bb
endpoint=192.0.2.2:51820
persistent_keepalive_interval=25
allowed_ip=198.18.1.0/24
public_key=cc
endpoint=[2001:db8:1::3]:51821
allowed_ip=2001:db8:42:2::/64
allowed_ip=198.18.2.0/24
errno=0
";
    assert_eq!(
        parse_uapi_peers(uapi),
        vec![
            WgPeer {
                endpoint: Some(ip("192.0.2.2")),
                allowed_ips: vec!["198.18.1.0/24".to_owned()],
            },
            WgPeer {
                endpoint: Some(ip("2001:db8:1::3")),
                allowed_ips: vec!["2001:db8:42:2::/64".to_owned(), "198.18.2.0/24".to_owned()],
            },
        ]
    );
    let dump = "priv\tpub\t51820\toff\n\
                bb\t(none)\t192.0.2.2:51820\t198.18.1.0/24\t0\t0\t0\t25\n\
                cc\t(none)\t(none)\t(none)\t0\t0\t0\toff\n";
    assert_eq!(
        parse_wg_dump(dump),
        vec![
            WgPeer {
                endpoint: Some(ip("192.0.2.2")),
                allowed_ips: vec!["198.18.1.0/24".to_owned()],
            },
            WgPeer {
                endpoint: None,
                allowed_ips: vec![],
            },
        ]
    );
}

#[test]
fn iperf3_reports() {
    let report = r#"{"start": {}, "end": {"sum_sent": {"bits_per_second": 2.5e9}, "sum_received": {"bits_per_second": 2.4e9}}}"#;
    assert_eq!(received_bits_per_second(report), Some(2.4e9));
    assert_eq!(
        received_bits_per_second(r#"{"error": "unable to connect"}"#),
        None
    );
    assert_eq!(received_bits_per_second("garbage"), None);
}

#[test]
fn egress_selector_configs() {
    let connect = r#"{"kind":"EgressSelectorConfiguration","apiVersion":"apiserver.k8s.io/v1beta1","egressSelections":[{"name":"cluster","connection":{"proxyProtocol":"HTTPConnect","transport":{"tcp":{"url":"https://127.0.0.1:9345","tlsConfig":{"caBundle":"/d/ca.crt","clientKey":"/d/a.key","clientCert":"/d/a.crt"}}}}}]}"#;
    assert_eq!(
        parse_egress_config(connect).unwrap(),
        Front {
            protocol: "HTTPConnect".to_owned(),
            url: Some("https://127.0.0.1:9345".to_owned()),
            tls: Some(["/d/ca.crt", "/d/a.crt", "/d/a.key"].map(str::to_owned)),
        }
    );
    let direct =
        r#"{"egressSelections":[{"name":"cluster","connection":{"proxyProtocol":"Direct"}}]}"#;
    assert_eq!(
        parse_egress_config(direct).unwrap(),
        Front {
            protocol: "Direct".to_owned(),
            url: None,
            tls: None,
        }
    );
    assert!(parse_egress_config(r#"{"egressSelections":[]}"#).is_err());
}

#[test]
fn responder_bodies() {
    assert_eq!(
        super::responder::body("kubelet-n2", ip("192.0.2.2")),
        "kubelet-n2 192.0.2.2\n"
    );
}

#[test]
fn link_kinds_from_ip_json() {
    let tun = r#"[{"ifindex":7,"ifname":"flannel-wg","linkinfo":{"info_kind":"tun","info_data":{"type":"tun"}}}]"#;
    assert_eq!(parse_link_kind(tun).as_deref(), Some("tun"));
    let wg = r#"[{"ifindex":8,"ifname":"flannel-wg","linkinfo":{"info_kind":"wireguard"}}]"#;
    assert_eq!(parse_link_kind(wg).as_deref(), Some("wireguard"));
    let lo = r#"[{"ifindex":1,"ifname":"lo","link_type":"loopback"}]"#;
    assert_eq!(parse_link_kind(lo), None);
    assert_eq!(parse_link_kind("not json"), None);
}

#[test]
fn metrics_are_summed_by_name_and_labels() {
    let text = "# HELP weft_agent_reconciles Reconciles by result\n\
                # TYPE weft_agent_reconciles counter\n\
                weft_agent_reconciles_total{result=\"ok\"} 3\n\
                weft_agent_reconciles_total{result=\"error\"} 1\n\
                weft_agent_reconcile_operations_total{op=\"route-add\"} 2\n\
                weft_agent_reconcile_operations_total{op=\"fdb-add\"} 5\n\
                weft_agent_tunnel_sessions 1\n\
                # EOF\n";
    let scrape = Scrape::parse(text);
    assert_eq!(
        scrape.sum("weft_agent_reconciles_total", &[("result", "ok")]),
        3.0
    );
    assert_eq!(scrape.sum("weft_agent_reconciles_total", &[]), 4.0);
    assert_eq!(
        scrape.sum("weft_agent_reconcile_operations_total", &[]),
        7.0
    );
    assert_eq!(scrape.sum("weft_agent_tunnel_sessions", &[]), 1.0);
    assert_eq!(scrape.sum("weft_agent_peers", &[]), 0.0);
}
