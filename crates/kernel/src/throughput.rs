//! The throughput benchmark of the wireguard-native backend (feature `test-util`, root):
//! pod-to-pod TCP throughput (iperf3) over vxlan and over WireGuard on the userspace
//! implementation, in the same run and the same network namespaces.
//!
//! Two node namespaces share an underlay veth (192.0.2.1 and 192.0.2.2, MTU 1500); each has a
//! pod namespace behind a veth pair (pod `10.42.N.2/24`, gateway `10.42.N.1`, MTU 1420 so
//! neither backend fragments). Both nodes converge to vxlan with weft (observe, plan, apply);
//! iperf3 runs from pod 1 to pod 2; then both agents switch to wireguard-native (the plan
//! replaces vxlan's objects) and iperf3 runs again.
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
    /// vxlan, bits per second received.
    pub vxlan: f64,
    /// wireguard-native on the userspace implementation, bits per second received.
    pub wireguard: f64,
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
    let vxlan = iperf(&nodes, seconds)?;
    converge_all(&mut nodes, true)?;
    let wireguard = iperf(&nodes, seconds)?;
    for node in &nodes {
        node.wg.stop();
    }
    Ok(Report {
        seconds,
        vxlan,
        wireguard,
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
                    cluster: CidrList::parse("cluster-cidr", &["10.42.0.0/16"]).map_err(|_| {
                        KernelError::Unsupported {
                            op: "cluster-cidr".into(),
                        }
                    })?,
                    ipv6_masq: false,
                    masq_mode: MasqMode::Nftables,
                    fully_random: true,
                    external: kernel.external_interface("eth0").await?,
                };
                let desired = desired_state(backend.as_ref(), &local, &peers, &config)
                    .map_err(|e| KernelError::Unsupported { op: e.to_string() })?;
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

/// iperf3 from pod 1 to pod 2 for `seconds`; the receiver's bits per second.
fn iperf(nodes: &[Node], seconds: u32) -> Result<f64, KernelError> {
    let server = nodes[1]
        .pod
        .spawn(&["iperf3", "-s", "-1", "-B", "10.42.2.2"])?;
    let mut last = None;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let out = nodes[0].pod.exec_output(&[
            "iperf3",
            "-c",
            "10.42.2.2",
            "-t",
            &seconds.to_string(),
            "-J",
        ])?;
        if out.status.success() {
            let report: serde_json::Value =
                serde_json::from_slice(&out.stdout).map_err(|e| KernelError::Command {
                    command: "iperf3 -J".into(),
                    status: "0".into(),
                    stderr: e.to_string(),
                })?;
            drop(server);
            return report["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .ok_or_else(|| KernelError::Command {
                    command: "iperf3 -J".into(),
                    status: "0".into(),
                    stderr: "no end.sum_received.bits_per_second".into(),
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
        write!(f, "  ratio wireguard/vxlan:          {:8.3}", self.ratio())
    }
}
