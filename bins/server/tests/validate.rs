//! Runs the built `weft-server validate` with a clean environment and temporary config files:
//! JSON on stdout and exit 0 when valid, `error: ` lines and exit 1 when not, `warning: ` lines
//! in both cases. Every config names the node and its IPs, so the host does not matter.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Runs `weft-server <args>` with only `env` in its environment.
#[allow(
    clippy::disallowed_methods,
    reason = "the test runs the binary under test; there is no wrapper to go through"
)]
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft-server"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("weft-server runs")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8(out.stderr.clone())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

const NODE: &str = "node-name: server-1\nnode-ip: 192.168.1.10\n";

#[test]
fn valid_config_prints_json_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.yaml",
        &format!(
            "{NODE}cluster-cidr: 10.42.0.0/16,2001:cafe:42::/56\nservice-cidr: 10.43.0.0/16,2001:cafe:43::/112\nnode-ip+: [2001:db8::10]\ntoken: secret\n"
        ),
    );
    write(
        dir.path(),
        "config.yaml.d/10-backend.yaml",
        "flannel-backend: host-gw\n",
    );
    let out = run(
        &[
            "validate",
            "--config",
            &config,
            "--kube-controller-manager-arg=node-cidr-mask-size-ipv4=25",
        ],
        &[("WEFT_CLUSTER_DOMAIN", "example.local")],
    );
    assert_eq!(stderr_lines(&out), Vec::<String>::new());
    assert_eq!(out.status.code(), Some(0));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["config"], config.as_str());
    assert_eq!(json["token"], "********");
    assert_eq!(json["node-name"], "server-1");
    assert_eq!(
        json["node-ip"],
        serde_json::json!(["192.168.1.10", "2001:db8::10"])
    );
    assert_eq!(
        json["cluster-cidr"],
        serde_json::json!(["10.42.0.0/16", "2001:cafe:42::/56"])
    );
    assert_eq!(json["node-external-ip"], serde_json::json!([]));
    assert_eq!(json["cluster-domain"], "example.local");
    assert_eq!(json["flannel-backend"], "host-gw");
    assert_eq!(json["node-cidr-mask-size-ipv4"], 25);
    assert_eq!(json["supervisor-port"], 9345);
    assert_eq!(json["max-connections"], 20000);
    assert_eq!(json["max-connections-per-address"], 1000);
    assert_eq!(json["derived"]["primary-family"], "ipv4");
    assert_eq!(json["derived"]["ipv6"], true);
    assert_eq!(
        json["derived"]["kubernetes-service-ips"],
        serde_json::json!(["10.43.0.1", "2001:cafe:43::1"])
    );
    assert_eq!(
        json["derived"]["cluster-dns"],
        serde_json::json!(["10.43.0.10", "2001:cafe:43::a"])
    );
    assert_eq!(json["derived"]["net-conf"]["Backend"]["Type"], "host-gw");
    assert_eq!(
        json["derived"]["net-conf"]["IPv6Network"],
        "2001:cafe:42::/56"
    );
}

#[test]
fn invalid_config_lists_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.yaml",
        &format!(
            "{NODE}cluster-cidr: 10.42.0.1/16\nflannel-backend: ipsec\nclustr-dns: 10.43.0.10\n"
        ),
    );
    let out = run(
        &["validate", "-c", &config, "--egress-selector-mode=tunnel"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        stderr_lines(&out),
        [
            format!("error: unknown key clustr-dns in {config}: the closest known key is cluster-dns"),
            "error: invalid cluster-cidr 10.42.0.1/16: host bits are set; use 10.42.0.0/16".to_owned(),
            "error: flannel-backend ipsec was removed in K3s v1.27: wireguard-native replaces it; to migrate, 1. set flannel-backend: wireguard-native on every server, 2. restart the nodes, servers first".to_owned(),
            "error: invalid egress-selector-mode \"tunnel\": valid values are agent, pod, cluster, disabled".to_owned(),
        ]
    );
}

#[test]
fn warnings_go_to_stderr_with_a_valid_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.toml",
        "node-name = \"s\"\nnode-ip = [\"192.168.1.10\"]\nflannel-backend = \"none\"\n",
    );
    let out = run(&["validate", "--config", &config, "--disable-agent"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stderr_lines(&out),
        [
            "warning: flannel-backend is none, so a custom CNI will run, and most bring their own network policy engine: set disable-network-policy to avoid conflicts",
            "warning: webhooks and apiserver aggregation may not work without an agent: egress-selector-mode is agent; set egress-selector-mode to cluster or pod",
        ]
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["derived"]["net-conf"], Value::Null);
}

#[test]
fn precedence_flag_file_env() {
    let dir = tempfile::tempdir().unwrap();
    let named = write(
        dir.path(),
        "named.yaml",
        &format!("{NODE}cluster-domain: named.local\n"),
    );
    let from_env = write(
        dir.path(),
        "env.yaml",
        &format!("{NODE}cluster-domain: file.local\nflannel-backend: host-gw\n"),
    );
    // K3S_CONFIG_FILE wins over --config; the file beats the environment; a flag beats the file.
    let out = run(
        &[
            "validate",
            "--config",
            &named,
            "--flannel-backend",
            "wireguard-native",
        ],
        &[
            ("K3S_CONFIG_FILE", &from_env),
            ("WEFT_CLUSTER_DOMAIN", "env.local"),
            ("K3S_TOKEN", "from-env"),
            ("WEFT_EGRESS_SELECTOR_MODE", "pod"),
        ],
    );
    assert_eq!(stderr_lines(&out), Vec::<String>::new());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["config"], from_env.as_str());
    assert_eq!(json["cluster-domain"], "file.local");
    assert_eq!(json["flannel-backend"], "wireguard-native");
    assert_eq!(json["egress-selector-mode"], "pod");
    assert_eq!(json["token"], "********");
}

#[test]
fn missing_named_config_file_is_an_error() {
    let out = run(
        &[
            "validate",
            "--config",
            "/nonexistent/weft.yaml",
            "--node-name=s",
            "--node-ip=192.168.1.10",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_lines(&out),
        [
            "error: config file /nonexistent/weft.yaml does not exist (named by --config): create it or name an existing file"
        ]
    );
}

#[test]
fn help_shows_every_flag_with_default_and_env() {
    let out = run(&["validate", "--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--cluster-cidr <CIDR>",
        "--service-cidr <CIDR>",
        "--cluster-dns <IP>",
        "--cluster-domain <DOMAIN>",
        "--node-cidr-mask-size-ipv4 <BITS>",
        "--node-cidr-mask-size-ipv6 <BITS>",
        "--kube-controller-manager-arg <NAME=VALUE>",
        "--flannel-backend <BACKEND>",
        "--flannel-ipv6-masq[=<BOOL>]",
        "--flannel-external-ip[=<BOOL>]",
        "--flannel-iface <IFACE>",
        "--flannel-conf <FILE>",
        "--flannel-cni-conf <FILE>",
        "--egress-selector-mode <MODE>",
        "--disable-network-policy[=<BOOL>]",
        "--node-name <NAME>",
        "--with-node-id[=<BOOL>]",
        "-i, --node-ip <IP>",
        "--node-external-ip <IP>",
        "-d, --data-dir <DIR>",
        "-t, --token <TOKEN>",
        "--token-file <FILE>",
        "-s, --server <URL>",
        "--supervisor-port <PORT>",
        "--max-connections <COUNT>",
        "--max-connections-per-address <COUNT>",
        "--bind-address <IP>",
        "--advertise-address <IP>",
        "--disable-agent[=<BOOL>]",
        "--datastore-endpoint <URLS>",
        "--datastore-cafile <FILE>",
        "--datastore-certfile <FILE>",
        "--datastore-keyfile <FILE>",
        "--kubelet-port <PORT>",
        "-c, --config <FILE>",
        "--subnet-file <FILE>",
        "--cni-conf-dir <DIR>",
        "--masq-mode <MODE>",
        "--wireguard-implementation <IMPL>",
        "--reconcile-interval <SECONDS>",
        "--metrics-address <IP:PORT>",
        "--log-format <FORMAT>",
    ] {
        assert!(help.contains(flag), "{flag} missing from\n{help}");
    }
    for tail in [
        "[default: /var/lib/weft] [env: WEFT_DATA_DIR, K3S_DATA_DIR]",
        "[default: 9345] [env: WEFT_SUPERVISOR_PORT, K3S_SUPERVISOR_PORT]",
        "[default: 10250] [env: WEFT_KUBELET_PORT]",
        "[default: vxlan] [env: WEFT_FLANNEL_BACKEND]",
        "[default: /etc/weft/config.yaml] [env: WEFT_CONFIG_FILE, K3S_CONFIG_FILE]",
        "[env: WEFT_SERVER, K3S_URL]",
        "[default: /run/flannel/subnet.env] [env: WEFT_SUBNET_FILE]",
        "[default: <data-dir>/agent/etc/cni/net.d] [env: WEFT_CNI_CONF_DIR]",
        "[default: nftables] [env: WEFT_MASQ_MODE]",
        "[default: auto] [env: WEFT_WIREGUARD_IMPLEMENTATION]",
        "[default: 10] [env: WEFT_RECONCILE_INTERVAL]",
        "[default: 127.0.0.1:9346] [env: WEFT_METRICS_ADDRESS]",
        "[default: text] [env: WEFT_LOG_FORMAT]",
        "[default: the embedded store in <data-dir>] [env: WEFT_DATASTORE_ENDPOINT, K3S_DATASTORE_ENDPOINT]",
        "[default: the system's CAs] [env: WEFT_DATASTORE_CAFILE, K3S_DATASTORE_CAFILE]",
        "[default: none] [env: WEFT_DATASTORE_CERTFILE, K3S_DATASTORE_CERTFILE]",
        "[default: none] [env: WEFT_DATASTORE_KEYFILE, K3S_DATASTORE_KEYFILE]",
    ] {
        assert!(help.contains(tail), "{tail} missing from\n{help}");
    }
    let out = run(&["--version"], &[]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "weft-server 0.0.0"
    );
}

#[test]
fn daemon_settings_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.yaml",
        &format!("{NODE}masq-mode: iptables\nmetrics-address: \"[::1]:9100\"\n"),
    );
    let out = run(&["validate", "-c", &config, "--log-format=json"], &[]);
    assert_eq!(stderr_lines(&out), Vec::<String>::new());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["subnet-file"], "/run/flannel/subnet.env");
    assert_eq!(json["cni-conf-dir"], "/var/lib/weft/agent/etc/cni/net.d");
    assert_eq!(json["masq-mode"], "iptables");
    assert_eq!(json["wireguard-implementation"], "auto");
    assert_eq!(json["reconcile-interval"], 10);
    assert_eq!(json["metrics-address"], "[::1]:9100");
    assert_eq!(json["log-format"], "json");

    let out = run(
        &[
            "validate",
            "-c",
            &config,
            "--data-dir=/srv/weft",
            "--wireguard-implementation=kernel",
        ],
        &[("WEFT_RECONCILE_INTERVAL", "60")],
    );
    assert_eq!(
        stderr_lines(&out),
        [
            "warning: wireguard-implementation is kernel, but flannel-backend is vxlan, which does not use WireGuard: unset wireguard-implementation"
        ]
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["cni-conf-dir"], "/srv/weft/agent/etc/cni/net.d");
    assert_eq!(json["reconcile-interval"], 60);
    assert_eq!(json["wireguard-implementation"], "kernel");
}

#[test]
fn bad_daemon_settings_are_all_reported() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.yaml", NODE);
    let out = run(
        &[
            "validate",
            "-c",
            &config,
            "--masq-mode=ipvs",
            "--reconcile-interval=0",
            "--metrics-address=0.0.0.0:9345",
        ],
        &[("WEFT_LOG_FORMAT", "logfmt")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        stderr_lines(&out),
        [
            "error: invalid masq-mode \"ipvs\": valid values are nftables, iptables",
            "error: invalid log-format \"logfmt\": valid values are text, json",
            "error: invalid reconcile-interval \"0\": use a whole number of seconds from 1 to 3600, e.g. 10",
            "error: metrics-address 0.0.0.0:9345 uses port 9345, which supervisor-port uses too: pick another port for metrics-address, e.g. 0.0.0.0:9346",
        ]
    );
}

#[test]
fn etcd_tls_files_in_json_from_k3s_variables() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.yaml", NODE);
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let ca = write(dir.path(), "ca.crt", pem);
    let cert = write(dir.path(), "client.crt", pem);
    let key = write(
        dir.path(),
        "client.key",
        "-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----\n",
    );
    let out = run(
        &["validate", "-c", &config],
        &[
            ("K3S_DATASTORE_ENDPOINT", "https://10.0.0.1:2379"),
            ("K3S_DATASTORE_CAFILE", &ca),
            ("K3S_DATASTORE_CERTFILE", &cert),
            ("K3S_DATASTORE_KEYFILE", &key),
        ],
    );
    assert_eq!(stderr_lines(&out), Vec::<String>::new());
    assert_eq!(out.status.code(), Some(0));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["datastore-endpoint"], "https://10.0.0.1:2379");
    assert_eq!(json["datastore-cafile"], ca.as_str());
    assert_eq!(json["datastore-certfile"], cert.as_str());
    assert_eq!(json["datastore-keyfile"], key.as_str());
}

#[test]
fn plain_http_etcd_is_valid_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.yaml", NODE);
    let out = run(
        &[
            "validate",
            "-c",
            &config,
            "--datastore-endpoint=http://10.0.0.1:2379",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stderr_lines(&out),
        [
            "warning: datastore-endpoint http://10.0.0.1:2379 is plain http://: whoever reaches etcd can read and change the whole cluster, the bootstrap data sealed with the token included; use https:// endpoints with datastore-cafile, datastore-certfile and datastore-keyfile, and run etcd with --client-cert-auth"
        ]
    );
}

#[test]
fn bad_etcd_tls_settings_are_all_reported() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.yaml", NODE);
    let missing = dir.path().join("missing.crt").display().to_string();
    let out = run(
        &[
            "validate",
            "-c",
            &config,
            &format!("--datastore-cafile={missing}"),
            &format!("--datastore-certfile={config}"),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        stderr_lines(&out),
        [
            format!("error: datastore-cafile {missing} can't be used: No such file or directory (os error 2); point it at the PEM certificate of the CA that signed etcd's certificate"),
            format!("error: datastore-certfile {config} can't be used: it holds no PEM certificate; point it at a PEM client certificate signed by etcd's --trusted-ca-file"),
            "error: datastore-certfile is set without datastore-keyfile: set both, the client certificate and its key, or neither".to_owned(),
            "error: datastore-cafile, datastore-certfile apply only to an https:// etcd endpoint, but datastore-endpoint is not set, so the store is the embedded one: set datastore-endpoint to https:// URLs, or unset them".to_owned(),
        ]
    );
}

#[test]
fn k3s_config_file_validates_with_a_warning_per_ignored_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.yaml",
        &format!(
            "{NODE}tls-san:\n  - k3s.example.com\nwrite-kubeconfig-mode: \"0644\"\nnode-label:\n  - zone=a\nkubelet-arg:\n  - max-pods=200\ncluster-cidr: 10.42.0.0/16\nflannel-backend: host-gw\n"
        ),
    );
    let out = run(&["validate"], &[("K3S_CONFIG_FILE", &config)]);
    assert_eq!(
        stderr_lines(&out),
        [
            "warning: ignoring tls-san: not a network setting weft uses",
            "warning: ignoring write-kubeconfig-mode: not a network setting weft uses",
            "warning: ignoring node-label: not a network setting weft uses",
            "warning: ignoring kubelet-arg: not a network setting weft uses",
        ]
    );
    assert!(out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["flannel-backend"], "host-gw");
    assert_eq!(json["cluster-cidr"], serde_json::json!(["10.42.0.0/16"]));

    // A typo still fails, naming the key meant.
    let typo = write(
        dir.path(),
        "typo.yaml",
        &format!("{NODE}tls-san: [k3s.example.com]\ncluster-cdir: 10.42.0.0/16\n"),
    );
    let out = run(&["validate"], &[("K3S_CONFIG_FILE", &typo)]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_lines(&out),
        [
            "warning: ignoring tls-san: not a network setting weft uses".to_owned(),
            format!(
                "error: unknown key cluster-cdir in {typo}: the closest known key is cluster-cidr"
            ),
        ]
    );
}

#[test]
fn the_connection_caps_default_as_the_api_does() {
    use weft_api::http::ServeLimits;
    assert_eq!(
        (
            weft_config::DEFAULT_MAX_CONNECTIONS,
            weft_config::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
        ),
        (
            ServeLimits::DEFAULT_MAX_CONNECTIONS,
            ServeLimits::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
        )
    );
}
