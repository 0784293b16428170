//! The throughput benchmark of the wireguard-native backend (feature `test-util`, root):
//! pod-to-pod TCP throughput (iperf3) over vxlan, over WireGuard on weft's userspace
//! implementation, and over Debian's wireguard-go (`/usr/bin/wireguard-go`, configured with
//! `wg`), in the same run and the same network namespaces: one stream, then four parallel
//! streams, each with the CPU time the whole machine spent per GB received.
//!
//! Two node namespaces share an underlay veth (192.0.2.1 and 192.0.2.2, MTU 1500); each has a
//! pod namespace behind a veth pair (pod `10.42.N.2/24`, gateway `10.42.N.1`, MTU 1420 so
//! neither backend fragments). Both nodes converge to vxlan with weft (observe, plan, apply);
//! iperf3 runs from pod 1 to pod 2; then both agents switch to wireguard-native (the plan
//! replaces vxlan's objects) and iperf3 runs again; then the agents' devices stop, each node
//! runs a wireguard-go device `wggoN` with the same keys, ports and peers, routes the other
//! pod CIDR through it, and iperf3 runs a third time.
//!
//! `cargo xtask bench wireguard` runs the example `wireguard_bench`, which calls [`run`].

use std::fmt;
use std::time::Duration;

use weft_fabric::{
    Backend, FabricConfig, Lease, MacAddr, MasqMode, Vxlan, WgImplementation, WireguardNative,
    desired_state, plan,
};
use weft_ipam::CidrList;

use crate::netns::{Namespace, veth};
use crate::{KernelError, Scope, WgPrivateKey, Wireguard};

/// The figures of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// How long each iperf3 run lasted.
    pub seconds: u32,
    /// vxlan, bits per second received (one stream).
    pub vxlan: f64,
    /// wireguard-native on the userspace implementation, bits per second received (one stream).
    pub wireguard: f64,
    /// Every path's figures: vxlan, weft's userspace WireGuard, wireguard-go.
    pub paths: Vec<PathFigures>,
}

/// One path's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct PathFigures {
    /// What carried the traffic.
    pub name: &'static str,
    /// One stream.
    pub one: Transfer,
    /// Four parallel streams.
    pub four: Transfer,
}

/// One iperf3 run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transfer {
    /// Bits per second received.
    pub bits_per_second: f64,
    /// CPU seconds the whole machine was busy (all cores) per GB (10^9 bytes) received.
    pub cpu_seconds_per_gb: f64,
}

struct Node {
    wg: Wireguard,
    key: WgPrivateKey,
    ns: Namespace,
    pod: Namespace,
    lease: Lease,
    vxlan: Vxlan,
}

/// Runs iperf3 for `seconds` over each backend.
pub fn run(seconds: u32) -> Result<Report, KernelError> {
    let underlay_a = Namespace::new("tp1")?;
    let underlay_b = Namespace::new("tp2")?;
    veth(&underlay_a, "eth0", &underlay_b, "eth0")?;
    let mut nodes = Vec::new();
    for (n, ns) in [(1u8, underlay_a), (2u8, underlay_b)] {
        ns.ip(&["addr", "add", &format!("192.0.2.{n}/24"), "dev", "eth0"])?;
        let pod = Namespace::new(&format!("tpp{n}"))?;
        veth(&pod, "eth0", &ns, "vethpod")?;
        pod.ip(&["link", "set", "eth0", "mtu", "1420"])?;
        ns.ip(&["link", "set", "vethpod", "mtu", "1420"])?;
        pod.ip(&["addr", "add", &format!("10.42.{n}.2/24"), "dev", "eth0"])?;
        ns.ip(&["addr", "add", &format!("10.42.{n}.1/24"), "dev", "vethpod"])?;
        pod.ip(&["route", "add", "default", "via", &format!("10.42.{n}.1")])?;
        let key = WgPrivateKey::generate();
        let wg = Wireguard::new();
        wg.add_key(key.clone());
        let vxlan = Vxlan {
            mac_v4: MacAddr([2, 0, 0, 0, n, 4]),
            mac_v6: MacAddr([2, 0, 0, 0, n, 6]),
            settings: weft_fabric::VxlanSettings::default(),
        };
        let lease = Lease {
            node_name: format!("node-{n}"),
            ipv4_cidr: format!("10.42.{n}.0/24").parse().ok(),
            ipv6_cidr: None,
            public_ipv4: format!("192.0.2.{n}").parse().ok(),
            public_ipv6: None,
            backend: vxlan.backend_data(),
            created_revision: 0,
        };
        nodes.push(Node {
            wg,
            key,
            ns,
            pod,
            lease,
            vxlan,
        });
    }

    converge_all(&mut nodes, false)?;
    let vxlan = path("vxlan", &nodes, seconds)?;
    converge_all(&mut nodes, true)?;
    let wireguard = path("wireguard-native (userspace)", &nodes, seconds)?;
    for node in &nodes {
        node.wg.stop();
    }
    let _daemons = wireguard_go(&nodes)?;
    let wireguard_go = path("wireguard-go (Debian)", &nodes, seconds)?;
    Ok(Report {
        seconds,
        vxlan: vxlan.one.bits_per_second,
        wireguard: wireguard.one.bits_per_second,
        paths: vec![vxlan, wireguard, wireguard_go],
    })
}

/// The port of wireguard-go's devices (not the agents', so nothing of theirs answers).
const WIREGUARD_GO_PORT: u16 = 51_900;

/// Starts `wireguard-go -f wggoN` in every node with the node's key and the other nodes as
/// peers (`wg set`), and routes their pod CIDRs through it. The daemons stop when the returned
/// handles drop.
fn wireguard_go(nodes: &[Node]) -> Result<Vec<crate::netns::Background>, KernelError> {
    let mut daemons = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        let dev = format!("wggo{}", n + 1);
        daemons.push(node.ns.spawn(&["wireguard-go", "-f", &dev])?);
        let mut up = false;
        for _ in 0..50 {
            if node.ns.ip(&["link", "show", &dev]).is_ok() {
                up = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !up {
            return Err(KernelError::Command {
                command: format!("wireguard-go -f {dev}"),
                status: "running".into(),
                stderr: "no link after 5 s".into(),
            });
        }
        let port = WIREGUARD_GO_PORT.to_string();
        let mut args = vec![
            "wg".to_owned(),
            "set".to_owned(),
            dev.clone(),
            "private-key".to_owned(),
            "/dev/stdin".to_owned(),
            "listen-port".to_owned(),
            port.clone(),
        ];
        for (m, other) in nodes.iter().enumerate() {
            if m == n {
                continue;
            }
            args.extend([
                "peer".to_owned(),
                other.key.public_key().to_string(),
                "endpoint".to_owned(),
                format!("192.0.2.{}:{port}", m + 1),
                "allowed-ips".to_owned(),
                format!("10.42.{}.0/24", m + 1),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        node.ns.exec_with(&args, &[], &node.key.to_base64())?;
        node.ns.ip(&["link", "set", &dev, "mtu", "1420", "up"])?;
        for m in (0..nodes.len()).filter(|&m| m != n) {
            node.ns.ip(&[
                "route",
                "replace",
                &format!("10.42.{}.0/24", m + 1),
                "dev",
                &dev,
            ])?;
        }
    }
    Ok(daemons)
}

/// One stream, then four, over whatever carries pod traffic now.
fn path(name: &'static str, nodes: &[Node], seconds: u32) -> Result<PathFigures, KernelError> {
    Ok(PathFigures {
        name,
        one: iperf(nodes, seconds, 1)?,
        four: iperf(nodes, seconds, 4)?,
    })
}

/// Switches every node to vxlan or wireguard-native and converges it, twice (the second pass
/// must find nothing to do).
fn converge_all(nodes: &mut [Node], wireguard: bool) -> Result<(), KernelError> {
    for node in nodes.iter_mut() {
        node.lease.backend = backend(node, wireguard).backend_data();
    }
    let leases: Vec<Lease> = nodes.iter().map(|n| n.lease.clone()).collect();
    for _ in 0..2 {
        for node in nodes.iter() {
            let backend = backend(node, wireguard);
            let (local, peers, wg) = (node.lease.clone(), leases.clone(), node.wg.clone());
            node.ns.run(move |kernel| async move {
                let kernel = kernel.with_wireguard(wg);
                let config = FabricConfig {
                    cluster: CidrList::parse("cluster-cidr", &["10.42.0.0/16"])
                        .expect("a valid CIDR"),
                    ipv6_masq: false,
                    masq_mode: MasqMode::Nftables,
                    fully_random: true,
                    external: kernel.external_interface("eth0").await?,
                };
                let desired = desired_state(backend.as_ref(), &local, &peers, &config)?;
                let observed = kernel.observe(&Scope::weft()).await?;
                kernel.apply(&plan(&observed, &desired.state)).await
            })??;
        }
    }
    Ok(())
}

fn backend(node: &Node, wireguard: bool) -> Box<dyn Backend + Send> {
    if wireguard {
        Box::new(WireguardNative {
            public_key: node.key.public_key(),
            implementation: WgImplementation::Userspace,
            keepalive: weft_fabric::wireguard::KEEPALIVE,
            listen_ports: (
                weft_fabric::wireguard::PORT_V4,
                weft_fabric::wireguard::PORT_V6,
            ),
            preshared_key: false,
            mode: weft_fabric::wireguard::WgMode::Separate,
        })
    } else {
        Box::new(node.vxlan.clone())
    }
}

/// iperf3 from pod 1 to pod 2 for `seconds` with `streams` parallel streams: the receiver's
/// bits per second, and the machine's CPU time per GB received.
fn iperf(nodes: &[Node], seconds: u32, streams: u32) -> Result<Transfer, KernelError> {
    let server = nodes[1]
        .pod
        .spawn(&["iperf3", "-s", "-1", "-B", "10.42.2.2"])?;
    let mut last = None;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let busy_before = machine_busy();
        let out = nodes[0].pod.exec_output(&[
            "iperf3",
            "-c",
            "10.42.2.2",
            "-t",
            &seconds.to_string(),
            "-P",
            &streams.to_string(),
            "-J",
        ])?;
        let busy = machine_busy().saturating_sub(busy_before);
        if out.status.success() {
            let report: serde_json::Value =
                serde_json::from_slice(&out.stdout).map_err(|e| KernelError::Command {
                    command: "iperf3 -J".into(),
                    status: "0".into(),
                    stderr: e.to_string(),
                })?;
            drop(server);
            let received = &report["end"]["sum_received"];
            let (Some(bits_per_second), Some(bytes)) = (
                received["bits_per_second"].as_f64(),
                received["bytes"].as_f64(),
            ) else {
                return Err(KernelError::Command {
                    command: "iperf3 -J".into(),
                    status: "0".into(),
                    stderr: "no end.sum_received.bits_per_second or bytes".into(),
                });
            };
            return Ok(Transfer {
                bits_per_second,
                cpu_seconds_per_gb: busy.as_secs_f64() / (bytes / 1e9).max(f64::MIN_POSITIVE),
            });
        }
        last = Some(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(KernelError::Command {
        command: "iperf3 -c 10.42.2.2".into(),
        status: "failed".into(),
        stderr: last.unwrap_or_default(),
    })
}

/// CPU time the machine spent busy since boot, all cores (`/proc/stat`'s first line: user,
/// nice, system, irq, softirq and steal, in USER_HZ ticks of 10 ms). Benches of other crates
/// read it too.
pub fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    Duration::from_millis(busy * 10)
}

// === impl Report ===

impl Report {
    /// WireGuard's throughput over vxlan's.
    pub fn ratio(&self) -> f64 {
        self.wireguard / self.vxlan
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pod-to-pod TCP, iperf3 {} s, one stream, same namespaces:",
            self.seconds
        )?;
        writeln!(
            f,
            "  vxlan:                          {:8.1} Mbit/s",
            self.vxlan / 1e6
        )?;
        writeln!(
            f,
            "  wireguard-native (userspace):   {:8.1} Mbit/s",
            self.wireguard / 1e6
        )?;
        if let Some(go) = self.paths.get(2) {
            writeln!(
                f,
                "  {:<30}  {:8.1} Mbit/s",
                format!("{}:", go.name),
                go.one.bits_per_second / 1e6
            )?;
        }
        writeln!(f, "  ratio wireguard/vxlan:          {:8.3}", self.ratio())?;
        if let Some(go) = self.paths.get(2) {
            writeln!(
                f,
                "  ratio wireguard-go/vxlan:       {:8.3}",
                go.one.bits_per_second / self.vxlan
            )?;
        }
        writeln!(
            f,
            "every path, one stream and four parallel streams, with the whole machine's CPU \
             seconds per GB received:"
        )?;
        writeln!(
            f,
            "  {:<30}  {:>12} {:>9}  {:>12} {:>9}  {:>9}",
            "path", "1 stream", "CPU s/GB", "4 streams", "CPU s/GB", "4/vxlan"
        )?;
        let vxlan_four = self
            .paths
            .first()
            .map_or(f64::NAN, |p| p.four.bits_per_second);
        for p in &self.paths {
            writeln!(
                f,
                "  {:<30}  {:>7.1} Mb/s {:>9.2}  {:>7.1} Mb/s {:>9.2}  {:>9.3}",
                p.name,
                p.one.bits_per_second / 1e6,
                p.one.cpu_seconds_per_gb,
                p.four.bits_per_second / 1e6,
                p.four.cpu_seconds_per_gb,
                p.four.bits_per_second / vxlan_four
            )?;
        }
        Ok(())
    }
}
