//! Tests of whole loads: the effective JSON of a server and an agent, and the `validate` report.

use serde_json::json;

use crate::test_support::{
    agent, errors, ok, server, server_flags, system, system_with_ips, warnings,
};
use crate::{Key, Role};

const CONFIG: &str = "/etc/weft/config.yaml";

#[test]
fn server_json_has_every_setting_and_derived() {
    let sys = system(
        &[
            (
                CONFIG,
                "cluster-cidr: 10.42.0.0/16,2001:cafe:42::/56\nservice-cidr: [10.43.0.0/16, 2001:cafe:43::/112]\nnode-ip: 192.168.1.10,2001:db8::10\nflannel-backend: wireguard-native\nflannel-ipv6-masq: true\ntoken: K10secret::server:abc\ndatastore-endpoint: https://root:pw@10.0.0.9:2379\n",
            ),
            (
                "/etc/weft/config.yaml.d/10-node.yaml",
                "node-name: Server-1\nwith-node-id: true\n",
            ),
            ("/var/lib/weft/node/id", "0a1b2c3d\n"),
        ],
        &[("K3S_NODE_NAME", "ignored"), ("WEFT_KUBELET_PORT", "10251")],
    );
    let loaded = server(
        &[
            "--kube-controller-manager-arg=node-cidr-mask-size-ipv6=72",
            "--supervisor-port=6443",
        ],
        &sys,
    );
    assert_eq!(warnings(&loaded), Vec::<String>::new());
    let config = ok(loaded);
    let want: serde_json::Value = serde_json::from_str(
        r#"{
            "config": "/etc/weft/config.yaml",
            "data-dir": "/var/lib/weft",
            "token": "********",
            "token-file": null,
            "agent-token": null,
            "agent-token-file": null,
            "server": null,
            "node-name": "server-1",
            "with-node-id": true,
            "node-ip": ["192.168.1.10", "2001:db8::10"],
            "node-external-ip": [],
            "bind-address": "0.0.0.0",
            "advertise-address": "192.168.1.10",
            "supervisor-port": 6443,
            "max-connections": 20000,
            "max-connections-per-address": 1000,
            "kubelet-port": 10251,
            "cluster-cidr": ["10.42.0.0/16", "2001:cafe:42::/56"],
            "service-cidr": ["10.43.0.0/16", "2001:cafe:43::/112"],
            "cluster-dns": ["10.43.0.10", "2001:cafe:43::a"],
            "cluster-domain": "cluster.local",
            "node-cidr-mask-size-ipv4": 24,
            "node-cidr-mask-size-ipv6": 72,
            "kube-controller-manager-arg": ["node-cidr-mask-size-ipv6=72"],
            "flannel-backend": "wireguard-native",
            "flannel-ipv6-masq": true,
            "flannel-external-ip": false,
            "flannel-iface": null,
            "flannel-conf": null,
            "flannel-cni-conf": null,
            "subnet-file": "/run/flannel/subnet.env",
            "cni-conf-dir": "/var/lib/weft/agent/etc/cni/net.d",
            "masq-mode": "nftables",
            "wireguard-implementation": "auto",
            "egress-selector-mode": "agent",
            "disable-network-policy": false,
            "disable-agent": false,
            "datastore-endpoint": "https://root:********@10.0.0.9:2379",
            "datastore-cafile": null,
            "datastore-certfile": null,
            "datastore-keyfile": null,
            "reconcile-interval": 10,
            "metrics-address": "127.0.0.1:9346",
            "log-format": "text",
            "derived": {
                "kubernetes-service-ips": ["10.43.0.1", "2001:cafe:43::1"],
                "cluster-dns": ["10.43.0.10", "2001:cafe:43::a"],
                "primary-family": "ipv4",
                "ipv4": true,
                "ipv6": true,
                "node-cidr-mask-size-ipv4": 24,
                "node-cidr-mask-size-ipv6": 72,
                "net-conf": {
                    "Network": "10.42.0.0/16",
                    "EnableIPv4": true,
                    "EnableIPv6": true,
                    "IPv6Network": "2001:cafe:42::/56",
                    "Backend": {"Type": "wireguard", "PersistentKeepaliveInterval": 25}
                },
                "node-name": "server-1-0a1b2c3d"
            }
        }"#,
    )
    .unwrap();
    assert_eq!(config.to_json(), want);
    let json = config.to_json();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let want: Vec<&str> = Role::Server
        .keys()
        .map(Key::name)
        .chain(["derived"])
        .collect();
    assert_eq!(keys, want);
}

#[test]
fn agent_json() {
    let sys = system(
        &[
            (
                "/w/agent.toml",
                "server = \"https://10.0.0.1:9345\"\ntoken-file = \"/etc/weft/token\"\n\"node-ip+\" = [\"10.0.0.2\"]\n",
            ),
            ("/etc/weft/token", "secret\n"),
        ],
        &[("K3S_CONFIG_FILE", "/w/agent.toml")],
    );
    let loaded = agent(&["--node-ip=fd00::2", "--with-node-id"], &sys);
    assert_eq!(
        warnings(&loaded),
        [
            "node id file /var/lib/weft/node/id does not exist yet: the first start creates it with a random id, naming this node node1-<8 hex digits>"
        ]
    );
    assert_eq!(
        ok(loaded).to_json(),
        json!({
            "config": "/w/agent.toml",
            "data-dir": "/var/lib/weft",
            "token": null,
            "token-file": "/etc/weft/token",
            "server": "https://10.0.0.1:9345",
            "node-name": "node1",
            "with-node-id": true,
            "node-ip": ["10.0.0.2", "fd00::2"],
            "node-external-ip": [],
            "bind-address": "0.0.0.0",
            "kubelet-port": 10250,
            "flannel-iface": null,
            "flannel-cni-conf": null,
            "subnet-file": "/run/flannel/subnet.env",
            "cni-conf-dir": "/var/lib/weft/agent/etc/cni/net.d",
            "masq-mode": "nftables",
            "wireguard-implementation": "auto",
            "reconcile-interval": 10,
            "metrics-address": "127.0.0.1:9346",
            "log-format": "text",
            "derived": {"node-name": null}
        })
    );
}

#[test]
fn reports() {
    let sys = system(&[], &[]);
    let loaded = server(&["--disable-agent"], &sys);
    let report = loaded.report(|c| c.to_json());
    assert!(report.valid);
    assert_eq!(
        report.stderr,
        [
            "warning: webhooks and apiserver aggregation may not work without an agent: egress-selector-mode is agent; set egress-selector-mode to cluster or pod"
        ]
    );
    let json: serde_json::Value = serde_json::from_str(report.stdout.as_deref().unwrap()).unwrap();
    assert_eq!(json["disable-agent"], true);

    let loaded = server(
        &[
            "--disable-agent",
            "--flannel-backend=ipsec",
            "--cluster-dns=10.0.0.10",
        ],
        &sys,
    );
    let report = loaded.report(|c| c.to_json());
    assert!(!report.valid);
    assert_eq!(report.stdout, None);
    assert_eq!(
        report.stderr,
        [
            "warning: webhooks and apiserver aggregation may not work without an agent: egress-selector-mode is agent; set egress-selector-mode to cluster or pod",
            "error: cluster-dns 10.0.0.10 is not in service-cidr 10.43.0.0/16: use an address inside it, e.g. 10.43.0.10",
            "error: flannel-backend ipsec was removed in K3s v1.27: wireguard-native replaces it; to migrate, 1. set flannel-backend: wireguard-native on every server, 2. restart the nodes, servers first",
        ]
    );
}

#[test]
fn agent_token_is_a_server_setting_from_flags_files_and_k3s_variables() {
    let sys = system(
        &[("/etc/weft/agent-token", "K10abc::node:secret\n")],
        &[("K3S_AGENT_TOKEN_FILE", "/etc/weft/agent-token")],
    );
    let config = ok(server(&[], &sys));
    assert_eq!(config.agent_token, None);
    assert_eq!(
        config.agent_token_file.as_deref(),
        Some(std::path::Path::new("/etc/weft/agent-token"))
    );
    let json = config.to_json();
    assert_eq!(json["agent-token-file"], "/etc/weft/agent-token");

    let sys = system(&[], &[("K3S_AGENT_TOKEN", "secret")]);
    let config = ok(server(&[], &sys));
    assert_eq!(
        config.agent_token.map(|t| t.expose().to_owned()),
        Some("secret".to_owned())
    );
    assert_eq!(ok(server(&[], &sys)).to_json()["agent-token"], "********");

    let sys = system(&[("/etc/weft/empty", "\n")], &[]);
    assert_eq!(
        errors(&server(
            &["--agent-token=a", "--agent-token-file=/etc/weft/empty"],
            &sys
        )),
        [
            "agent-token and agent-token-file are both set: keep one",
            "agent-token-file /etc/weft/empty can't be used: it is empty; point it at a file holding the agent token, e.g. a server's <data-dir>/server/agent-token",
        ]
    );
    // An agent registers with --token; the agent token is the servers' to hand out.
    let refused = errors(&agent(
        &[
            "--server=https://10.0.0.1:9345",
            "--token=t",
            "--agent-token=a",
        ],
        &system(&[], &[]),
    ));
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("agent-token"), "{refused:?}");
}

#[test]
fn explicit_config_file_must_exist() {
    let sys = system(&[], &[("WEFT_CONFIG_FILE", "/nope.yaml")]);
    assert_eq!(
        errors(&server(&["-c", "/also-nope.yaml"], &sys)),
        [
            "config file /nope.yaml does not exist (named by WEFT_CONFIG_FILE): create it or name an existing file"
        ]
    );
    assert_eq!(
        errors(&server(&["--config", "/also-nope.yaml"], &system(&[], &[]))),
        [
            "config file /also-nope.yaml does not exist (named by --config): create it or name an existing file"
        ]
    );
}

/// Resolves the data dir of a server with `args`, `files` and `env` on a host with no address
/// to pick a node IP from (so the whole configuration fails): `Ok` with the dir, or an error
/// containing `Err`'s text.
fn check_data_dir(
    args: &[&str],
    files: &[(&str, &str)],
    env: &[(&str, &str)],
    expect: Result<&str, &str>,
) {
    let sys = system_with_ips(files, env, &[]);
    assert!(server(args, &sys).result.is_err(), "{args:?}: no node IP");
    let loaded = crate::load_data_dir(Role::Server, &server_flags(args), sys.system());
    match (&loaded.result, expect) {
        (Ok(dir), Ok(want)) => assert_eq!(dir, std::path::Path::new(want), "{args:?}"),
        (Err(errors), Err(part)) => assert!(
            errors.iter().any(|e| e.to_string().contains(part)),
            "{args:?}: {errors:?}"
        ),
        (got, want) => panic!("{args:?}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn the_data_dir_alone_needs_no_host_detection() {
    let file = (CONFIG, "data-dir: /from/file\n");
    let env = ("K3S_DATA_DIR", "/from/env");
    check_data_dir(&[], &[], &[], Ok("/var/lib/weft"));
    check_data_dir(
        &["--data-dir=/from/flag"],
        &[file],
        &[env],
        Ok("/from/flag"),
    );
    check_data_dir(&[], &[file], &[env], Ok("/from/file"));
    check_data_dir(&[], &[], &[env], Ok("/from/env"));
    check_data_dir(&["-d", "relative"], &[], &[], Err("data-dir"));
    check_data_dir(
        &[],
        &[(CONFIG, "no-such-key: 1\n")],
        &[],
        Err("no-such-key"),
    );
}
