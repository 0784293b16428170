//! Runs the built `weft-agent validate` with a clean environment and temporary config files:
//! JSON and exit 0 when valid, `error: ` lines and exit 1 when not. Every config names the node
//! and its IPs, so the host does not matter.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Runs `weft-agent <args>` with only `env` in its environment.
#[allow(
    clippy::disallowed_methods,
    reason = "the test runs the binary under test; there is no wrapper to go through"
)]
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft-agent"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("weft-agent runs")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
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

#[test]
fn valid_agent_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "agent.yaml",
        "node-ip: [10.0.0.2, fd00::2]\nnode-external-ip: 203.0.113.2\n",
    );
    let out = run(
        &["validate", "--config", &config, "--node-name", "Worker-1"],
        &[
            ("K3S_URL", "https://10.0.0.1:9345"),
            ("K3S_TOKEN", "secret"),
            ("K3S_NODE_NAME", "ignored"),
        ],
    );
    assert_eq!(stderr_lines(&out), Vec::<String>::new());
    assert_eq!(out.status.code(), Some(0));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["server"], "https://10.0.0.1:9345");
    assert_eq!(json["token"], "********");
    assert_eq!(json["node-name"], "worker-1");
    assert_eq!(json["node-ip"], serde_json::json!(["10.0.0.2", "fd00::2"]));
    assert_eq!(json["node-external-ip"], serde_json::json!(["203.0.113.2"]));
    assert_eq!(json["derived"]["node-name"], "worker-1");
    assert_eq!(json.get("cluster-cidr"), None);
}

#[test]
fn flannel_options_are_refused_on_agents() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "agent.yaml",
        "node-name: w\nnode-ip: 10.0.0.2\nflannel-backend: wireguard-native\n",
    );
    let out = run(
        &["validate", "--config", &config, "--flannel-ipv6-masq"],
        &[
            ("K3S_URL", "https://10.0.0.1:9345"),
            ("K3S_TOKEN", "secret"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        stderr_lines(&out),
        [
            format!("error: flannel-backend can't be set on an agent: flannel options are set on servers only, because every node takes them from the servers; remove flannel-backend from {config}"),
            "error: flannel-ipv6-masq can't be set on an agent: flannel options are set on servers only, because every node takes them from the servers; remove the --flannel-ipv6-masq flag".to_owned(),
        ]
    );
}

#[test]
fn agent_needs_a_server_and_a_token() {
    let out = run(&["validate", "--node-name=w", "--node-ip=10.0.0.2"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_lines(&out),
        [
            "error: server is required for an agent: set --server, WEFT_SERVER or K3S_URL to a server's URL, e.g. https://10.0.0.1:9345",
            "error: token is required to join a server: set --token, --token-file, K3S_TOKEN or K3S_TOKEN_FILE",
        ]
    );
}

#[test]
fn help_lists_agent_flags_only() {
    let out = run(&["validate", "--help"], &[]);
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("--node-name <NAME>"), "{help}");
    assert!(
        help.contains("[env: WEFT_NODE_NAME, K3S_NODE_NAME]"),
        "{help}"
    );
    assert!(!help.contains("--flannel-backend"), "{help}");
    assert!(!help.contains("--cluster-cidr"), "{help}");
    for line in [
        "--subnet-file <FILE>",
        "[default: /run/flannel/subnet.env] [env: WEFT_SUBNET_FILE]",
        "--cni-conf-dir <DIR>",
        "[default: <data-dir>/agent/etc/cni/net.d] [env: WEFT_CNI_CONF_DIR]",
        "--masq-mode <MODE>",
        "[default: nftables] [env: WEFT_MASQ_MODE]",
        "--wireguard-implementation <IMPL>",
        "[default: auto] [env: WEFT_WIREGUARD_IMPLEMENTATION]",
        "--reconcile-interval <SECONDS>",
        "[default: 10] [env: WEFT_RECONCILE_INTERVAL]",
        "--metrics-address <IP:PORT>",
        "[default: 127.0.0.1:9346] [env: WEFT_METRICS_ADDRESS]",
        "--log-format <FORMAT>",
        "[default: text] [env: WEFT_LOG_FORMAT]",
    ] {
        assert!(help.contains(line), "{line} missing from\n{help}");
    }
}

#[test]
fn agent_daemon_settings() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "agent.toml",
        "node-name = \"w\"\nnode-ip = [\"10.0.0.2\"]\nsubnet-file = \"/run/weft/subnet.env\"\ncni-conf-dir = \"/etc/cni/net.d\"\nwireguard-implementation = \"userspace\"\n",
    );
    let join = [
        ("K3S_URL", "https://10.0.0.1:9345"),
        ("K3S_TOKEN", "secret"),
    ];
    let out = run(
        &[
            "validate",
            "--config",
            &config,
            "--metrics-address=[fd00::2]:9346",
            "--reconcile-interval=5",
        ],
        &[join[0], join[1], ("WEFT_MASQ_MODE", "iptables")],
    );
    assert_eq!(stderr_lines(&out), Vec::<String>::new());
    assert_eq!(out.status.code(), Some(0));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["subnet-file"], "/run/weft/subnet.env");
    assert_eq!(json["cni-conf-dir"], "/etc/cni/net.d");
    assert_eq!(json["masq-mode"], "iptables");
    assert_eq!(json["wireguard-implementation"], "userspace");
    assert_eq!(json["reconcile-interval"], 5);
    assert_eq!(json["metrics-address"], "[fd00::2]:9346");
    assert_eq!(json["log-format"], "text");

    let out = run(
        &[
            "validate",
            "--config",
            &config,
            "--subnet-file=subnet.env",
            "--metrics-address=localhost:9346",
            "--kubelet-port=9346",
        ],
        &join,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_lines(&out),
        [
            "error: invalid subnet-file \"subnet.env\": use an absolute path, starting with /",
            "error: invalid metrics-address \"localhost:9346\": write IP:PORT with a port from 1 to 65535, e.g. 127.0.0.1:9346, or [ADDRESS]:PORT for IPv6, e.g. [::1]:9346",
        ]
    );
}
