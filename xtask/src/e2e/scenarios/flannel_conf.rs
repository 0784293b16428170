//! Issue 15: `--flannel-conf` applied on every node.
//!
//! vxlan: the servers' net-conf sets VNI 4096, port 4789, MTU 1400, DirectRouting and
//! SubnetMin/SubnetMax. n1 (server) and n2 share segment 0; n3 sits on segment 1 behind a
//! router. Checked: `flannel.4096` has id 4096, dstport 4789 and MTU 1350 in its netlink
//! attributes; every lease lies between SubnetMin and SubnetMax; n1 reaches n2's pods by a
//! route via n2's address on eth0 (direct routing) and n3's by the tunnel; pods ping across
//! both, and the underlay carries UDP 4789 and never 8472 (nftables counters on n1); every
//! agent wrote the normalised net-conf.json in its data dir.
//!
//! wireguard: a dual-stack cluster whose net-conf sets a PSK, ListenPort 51000, a keepalive of
//! 7 seconds and Mode auto. Checked: on every node the one device `flannel-wg` (no
//! `flannel-wg-v6`) listens on 51000 and has the PSK and the keepalive on every peer (read back
//! from the userspace device, this kernel having no WireGuard module); pods ping each other
//! over both families; the agent's net-conf.json holding the key is mode 0600.

use std::os::unix::fs::PermissionsExt as _;

use anyhow::{Context as _, ensure};

use crate::e2e::cluster::{self, CLUSTER_V4, Node, Settings, row};
use crate::e2e::cni::Pod;
use crate::e2e::inspect;
use crate::e2e::lab::{Families, Lab};
use crate::e2e::probe::ping;

/// 32 bytes of 7, in base64 as `wg genpsk` prints a key, and as UAPI reports it.
const PSK: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
const PSK_HEX: &str = "0707070707070707070707070707070707070707070707070707070707070707";

pub(crate) fn run(lab: &Lab<'_>) -> anyhow::Result<()> {
    vxlan(lab)?;
    wireguard(lab)
}

/// Writes `conf` where the server reads it and returns the path.
fn write_conf(lab: &Lab<'_>, name: &str, conf: &serde_json::Value) -> anyhow::Result<String> {
    let path = lab.config_file().with_file_name(name);
    std::fs::write(&path, serde_json::to_string_pretty(conf)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path.display().to_string())
}

fn vxlan(lab: &Lab<'_>) -> anyhow::Result<()> {
    let families = Families::V4;
    let near = lab.segment(0, families)?;
    let far = lab.segment(1, families)?;
    let router = lab.host("rt", &[(&near, 254), (&far, 254)])?;
    router.ns.sysctl("net.ipv4.ip_forward", "1")?;
    let conf = serde_json::json!({
        "Network": CLUSTER_V4,
        "SubnetMin": "198.18.8.0",
        "SubnetMax": "198.18.10.0",
        "Backend": {"Type": "vxlan", "VNI": 4096, "Port": 4789, "MTU": 1400, "DirectRouting": true}
    });
    let path = write_conf(lab, "vxlan-net-conf.json", &conf)?;
    let mut settings = Settings::new("vxlan", families);
    settings.extra.extend(["--flannel-conf".to_owned(), path]);

    let mut nodes: Vec<Node> = Vec::new();
    for (n, segment) in [(1u8, &near), (2, &near), (3, &far)] {
        let name = format!("n{n}");
        let host = lab.host(&name, &[(segment, n)])?;
        host.ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &segment.v4(254).to_string(),
        ])?;
        // Count the vxlan packets each node sends, by destination port.
        host.ns.run(
            "nft",
            &[
                "add table ip e2e { chain out { type filter hook output priority 0; \
               udp dport 4789 counter; udp dport 8472 counter; }; }",
            ],
        )?;
        let mut node = match nodes.first() {
            None => Node::server(lab, &name, host, &settings, &[]),
            Some(server) => Node::agent(lab, &name, host, &server.url(), &server.token()?),
        };
        node.start(lab)?;
        nodes.push(node);
    }
    lab.step("n1 (server), n2 on segment 0; n3 on segment 1 behind a router; VNI 4096, port 4789, MTU 1400, DirectRouting");

    let refs: Vec<&Node> = nodes.iter().collect();
    let rows = cluster::wait_converged(lab, &nodes[0], &refs)?;
    for r in &rows {
        let cidr = r.ipv4_cidr.as_deref().unwrap_or("none");
        let third: u8 = cidr
            .strip_prefix("198.18.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{}'s lease {cidr} is not in {CLUSTER_V4}", r.name))?;
        ensure!(
            (8..=10).contains(&third),
            "{}'s lease {cidr} lies outside SubnetMin 198.18.8.0 .. SubnetMax 198.18.10.0",
            r.name
        );
    }
    lab.step("every lease lies between SubnetMin and SubnetMax");

    for node in &nodes {
        let link = node.host.ns.ip(&["-d", "link", "show", "flannel.4096"])?;
        for want in ["mtu 1350", "vxlan id 4096", "dstport 4789"] {
            ensure!(link.contains(want), "{}: no {want} in {link}", node.name);
        }
        ensure!(
            node.host.ns.ip(&["link", "show", "flannel.1"]).is_err(),
            "{} has flannel.1 beside flannel.4096",
            node.name
        );
        let written = std::fs::read_to_string(node.dir.join("agent/etc/flannel/net-conf.json"))
            .with_context(|| format!("{}'s net-conf.json", node.name))?;
        let written: serde_json::Value = serde_json::from_str(&written)?;
        ensure!(
            written["Backend"]["VNI"] == 4096 && written["SubnetMin"] == "198.18.8.0",
            "{}'s net-conf.json is {written}",
            node.name
        );
    }
    lab.step(
        "flannel.4096: vxlan id 4096, dstport 4789, mtu 1350 on every node; net-conf.json written",
    );

    let n2 = row(&rows, "n2")?.ipv4_cidr.clone().context("n2's lease")?;
    let n3 = row(&rows, "n3")?.ipv4_cidr.clone().context("n3's lease")?;
    let direct = nodes[0].host.ns.ip(&["route", "show", "exact", &n2])?;
    ensure!(
        direct.contains(&format!("via {} dev eth0", near.v4(2))),
        "n1's route to n2 is not direct: {direct}"
    );
    let tunnel = nodes[0].host.ns.ip(&["route", "show", "exact", &n3])?;
    ensure!(
        tunnel.contains("dev flannel.4096") && tunnel.contains("onlink"),
        "n1's route to n3 is not the tunnel: {tunnel}"
    );
    lab.step(format!(
        "n1: {n2} via n2's address on eth0 (same segment), {n3} over flannel.4096 (routed)"
    ));

    let pods: Vec<Pod> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| Pod::add(lab, node, &format!("p{}", i + 1)))
        .collect::<anyhow::Result<_>>()?;
    for (a, b) in [(0, 1), (1, 0), (0, 2), (2, 0)] {
        ping(&pods[a].ns, pods[b].ip(false)?, 3)?;
    }
    let counters = nodes[0]
        .host
        .ns
        .run("nft", &["list", "table", "ip", "e2e"])?;
    let packets = |port: &str| -> anyhow::Result<u64> {
        let line = counters
            .lines()
            .find(|l| l.contains(&format!("udp dport {port} ")))
            .with_context(|| format!("no counter for {port} in {counters}"))?;
        let count = line
            .split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no packet count in {line}"))?;
        Ok(count)
    };
    let (on_4789, on_8472) = (packets("4789")?, packets("8472")?);
    ensure!(
        on_4789 > 0 && on_8472 == 0,
        "n1 sent {on_4789} packets to UDP 4789 and {on_8472} to 8472"
    );
    lab.step(format!(
        "pods ping across both paths; n1 sent {on_4789} packets to UDP 4789, none to 8472"
    ));
    for pod in pods {
        pod.delete()?;
    }
    for node in nodes.iter_mut().rev() {
        node.stop()?;
    }
    Ok(())
}

fn wireguard(lab: &Lab<'_>) -> anyhow::Result<()> {
    let families = Families::Dual;
    let segment = lab.segment(2, families)?;
    let conf = serde_json::json!({
        "Backend": {"Type": "wireguard", "PSK": PSK, "ListenPort": 51000,
            "PersistentKeepaliveInterval": 7, "Mode": "auto"}
    });
    let path = write_conf(lab, "wireguard-net-conf.json", &conf)?;
    let mut settings = Settings::new("wireguard-native", families);
    settings.extra.extend(["--flannel-conf".to_owned(), path]);
    let mut nodes: Vec<Node> = Vec::new();
    for n in [1u8, 2, 3] {
        let name = format!("w{n}");
        let host = lab.host(&name, &[(&segment, n)])?;
        let ips: Vec<String> = segment.addrs(n).iter().map(ToString::to_string).collect();
        let node_ip = ["--node-ip", &ips.join(",")];
        let mut node = match nodes.first() {
            None => Node::server(lab, &name, host, &settings, &node_ip),
            Some(server) => {
                Node::agent(lab, &name, host, &server.url(), &server.token()?).with_args(&node_ip)
            }
        };
        node.start(lab)?;
        nodes.push(node);
    }
    lab.step("w1 (server), w2, w3: dual-stack wireguard-native with a PSK, ListenPort 51000, keepalive 7, Mode auto");

    let refs: Vec<&Node> = nodes.iter().collect();
    cluster::wait_converged(lab, &nodes[0], &refs)?;
    for node in &nodes {
        ensure!(
            node.host.ns.ip(&["link", "show", "flannel-wg-v6"]).is_err(),
            "{} has flannel-wg-v6 in Mode auto",
            node.name
        );
        let text = inspect::uapi_get(node, "flannel-wg")?;
        ensure!(
            text.contains("listen_port=51000\n"),
            "{}: flannel-wg does not listen on 51000: {}",
            node.name,
            redact(&text)
        );
        let peers = text.matches("public_key=").count();
        ensure!(peers == 2, "{} has {peers} peers", node.name);
        for want in [
            format!("preshared_key={PSK_HEX}\n"),
            "persistent_keepalive_interval=7\n".to_owned(),
        ] {
            ensure!(
                text.matches(&want).count() == peers,
                "{}: not every peer has {}: {}",
                node.name,
                want.split('=').next().unwrap_or_default(),
                redact(&text)
            );
        }
        let file = node.dir.join("agent/etc/flannel/net-conf.json");
        let mode = std::fs::metadata(&file)
            .with_context(|| format!("{}", file.display()))?
            .permissions()
            .mode()
            & 0o777;
        ensure!(
            mode == 0o600,
            "{} holds the PSK with mode {mode:o}",
            file.display()
        );
    }
    lab.step("every peer of every node: the PSK and keepalive 7, on flannel-wg listening on 51000; net-conf.json 0600");

    let pods: Vec<Pod> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| Pod::add(lab, node, &format!("q{}", i + 1)))
        .collect::<anyhow::Result<_>>()?;
    for v6 in [false, true] {
        for (a, b) in [(0, 1), (1, 2), (2, 0)] {
            ping(&pods[a].ns, pods[b].ip(v6)?, 3)?;
        }
    }
    lab.step("pods ping each other over IPv4 and IPv6 through the one device");
    for pod in pods {
        pod.delete()?;
    }
    for node in nodes.iter_mut().rev() {
        node.stop()?;
    }
    Ok(())
}

/// A UAPI answer without its keys, for messages.
fn redact(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("private_key=") && !l.starts_with("preshared_key="))
        .collect::<Vec<_>>()
        .join(" ")
}
