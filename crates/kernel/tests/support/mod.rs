//! A small cluster in network namespaces for the privileged tests: an underlay namespace with
//! one bridge per layer-2 segment, node namespaces wired to it (`eth0`), one pod per node wired
//! by the real CNI plugins (`bridge` + `host-local` from `/usr/lib/cni`, configured by
//! `weft_fabric::files::cni_conflist`), and an "outside" namespace on the first segment.
//!
//! Nodes converge with the real code: `Kernel::external_interface`, `weft_fabric::desired_state`,
//! `Kernel::observe`, `weft_fabric::plan` and `Kernel::apply`. Everything is removed on drop
//! (CNI DEL, then the namespaces, which take their links along), also when a test fails.
//!
//! Each node keeps its own `weft_kernel::Wireguard` (its keys and userspace WireGuard devices)
//! across convergences, as an agent process does; [`Cluster::restart`] drops it and starts a new
//! one with the same key, as an agent restart does.
//!
//! Addresses: segment 0 is 192.0.2.0/24 and 2001:db8::/64, segment 1 198.51.100.0/24 and
//! 2001:db8:1::/64; node `n` (from 1) takes host number `n` on its segment and pod CIDRs
//! 10.42.n.0/24 and fd42:0:0:n::/64; the outside namespace is 192.0.2.200 and 2001:db8::200.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses a different part"
)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use weft_fabric::{
    Backend, Desired, FabricConfig, HostGw, Lease, MacAddr, MasqMode, PeerProblem, Plan, Vxlan,
    WgImplementation, WireguardNative, desired_state, plan,
};
use weft_ipam::{CidrList, Family};
use weft_kernel::netns::{Namespace, veth};
use weft_kernel::{Kernel, KernelError, Scope, WgPrivateKey, Wireguard};

/// The address families a cluster uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
    /// Both.
    Dual,
}

/// The backend every node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// vxlan.
    Vxlan,
    /// host-gw.
    HostGw,
    /// wireguard-native, on the userspace implementation (this kernel has no WireGuard).
    Wireguard,
}

/// What one convergence of a node did.
#[derive(Debug)]
pub struct Converged {
    /// The plan that was applied.
    pub plan: Plan,
    /// Peers the fabric left out.
    pub problems: Vec<PeerProblem>,
    /// The state observed afterwards.
    pub after: weft_fabric::KernelState,
}

/// A node: its namespace, its pod and its lease.
pub struct Node {
    /// The agent's WireGuard state: its key and the userspace devices it runs. First, so the
    /// devices stop before the namespace goes.
    pub wg: Wireguard,
    /// The agent's WireGuard key (what the data dir keeps).
    pub wg_key: WgPrivateKey,
    /// The backend the node's agent runs.
    pub kind: Kind,
    /// 1-based node number.
    pub n: u8,
    /// The node's network namespace.
    pub ns: Namespace,
    /// The pod's network namespace.
    pub pod: Namespace,
    /// The node's lease as peers see it.
    pub lease: Lease,
    /// The VTEP MACs (vxlan).
    pub vxlan: Vxlan,
    /// The wireguard-native options (flannel-conf's).
    pub wg_options: WgOptions,
    /// The pod's addresses, from the CNI result.
    pub pod_ips: Vec<IpAddr>,
    cni_config: String,
}

/// flannel-conf's wireguard options for every node of a test cluster.
#[derive(Debug, Clone, Copy)]
pub struct WgOptions {
    /// `PersistentKeepaliveInterval`.
    pub keepalive: u16,
    /// `ListenPort`, `ListenPortV6`.
    pub listen_ports: (u16, u16),
    /// `PSK`.
    pub psk: Option<[u8; 32]>,
    /// `Mode`.
    pub mode: weft_fabric::WgMode,
    /// Who runs the devices: userspace here (this kernel has no WireGuard), the kernel in the
    /// VM lane.
    pub implementation: WgImplementation,
}

impl Default for WgOptions {
    /// K3s's: keepalive 25, flannel's ports, no pre-shared key.
    fn default() -> WgOptions {
        WgOptions {
            keepalive: weft_fabric::wireguard::KEEPALIVE,
            listen_ports: (
                weft_fabric::wireguard::PORT_V4,
                weft_fabric::wireguard::PORT_V6,
            ),
            psk: None,
            mode: weft_fabric::WgMode::Separate,
            implementation: WgImplementation::Userspace,
        }
    }
}

/// The whole test cluster.
pub struct Cluster {
    /// The backend.
    pub kind: Kind,
    /// The families.
    pub stack: Stack,
    /// Where masquerade rules go.
    pub masq_mode: MasqMode,
    // Field order is drop order: pods and nodes first, the underlay last.
    /// The nodes.
    pub nodes: Vec<Node>,
    /// A namespace outside the cluster, on segment 0.
    pub outside: Namespace,
    /// The underlay: bridges `br0`, `br1`.
    pub underlay: Namespace,
    /// The nodes' data dirs and CNI state.
    pub dir: TempDir,
}

/// Where node `n`'s agent serves its userspace devices' read-only sockets (its data dir).
fn socket_dir(dir: &TempDir, n: u8) -> PathBuf {
    dir.path.join(format!("agent-{n}")).join("wireguard")
}

/// The cluster CIDRs of a stack.
pub fn cluster_cidrs(stack: Stack) -> CidrList {
    let v4 = "10.42.0.0/16";
    let v6 = "fd42::/56";
    let list: &[&str] = match stack {
        Stack::V4 => &[v4],
        Stack::V6 => &[v6],
        Stack::Dual => &[v4, v6],
    };
    CidrList::parse("cluster-cidr", list).unwrap()
}

/// Node `n`'s address on `segment`.
pub fn node_ip(n: u8, segment: u8, family: Family) -> IpAddr {
    match (family, segment) {
        (Family::Ipv4, 0) => format!("192.0.2.{n}"),
        (Family::Ipv4, _) => format!("198.51.100.{n}"),
        (Family::Ipv6, 0) => format!("2001:db8::{n}"),
        (Family::Ipv6, _) => format!("2001:db8:1::{n}"),
    }
    .parse()
    .unwrap()
}

/// The outside namespace's address.
pub fn outside_ip(family: Family) -> IpAddr {
    match family {
        Family::Ipv4 => "192.0.2.200".parse().unwrap(),
        Family::Ipv6 => "2001:db8::200".parse().unwrap(),
    }
}

/// A VTEP MAC: `02:00:00:<generation>:<n>:<4|6>`.
pub fn vtep_mac(n: u8, family: Family, generation: u8) -> MacAddr {
    let last = if family == Family::Ipv4 { 4 } else { 6 };
    MacAddr([0x02, 0, 0, generation, n, last])
}

// === impl Stack ===

impl Stack {
    /// The families of the stack.
    pub fn families(self) -> Vec<Family> {
        match self {
            Stack::V4 => vec![Family::Ipv4],
            Stack::V6 => vec![Family::Ipv6],
            Stack::Dual => vec![Family::Ipv4, Family::Ipv6],
        }
    }

    fn has(self, family: Family) -> bool {
        self.families().contains(&family)
    }
}

// === impl Cluster ===

impl Cluster {
    /// Builds the namespaces, wires one pod per node through CNI and converges every node.
    /// `segments[i]` is the layer-2 segment of node `i + 1`.
    pub fn new(kind: Kind, stack: Stack, masq_mode: MasqMode, segments: &[u8]) -> Cluster {
        Cluster::with_options(
            kind,
            stack,
            masq_mode,
            segments,
            weft_fabric::VxlanSettings::default(),
            WgOptions::default(),
        )
    }

    /// [`Cluster::new`] with every node's wireguard-native backend on `options`.
    pub fn with_wireguard(stack: Stack, segments: &[u8], options: WgOptions) -> Cluster {
        Cluster::with_options(
            Kind::Wireguard,
            stack,
            MasqMode::Nftables,
            segments,
            weft_fabric::VxlanSettings::default(),
            options,
        )
    }

    /// [`Cluster::new`] with every node's vxlan backend on `settings` (flannel-conf's VNI,
    /// Port, GBP, DirectRouting).
    pub fn with_vxlan(
        kind: Kind,
        stack: Stack,
        masq_mode: MasqMode,
        segments: &[u8],
        settings: weft_fabric::VxlanSettings,
    ) -> Cluster {
        Cluster::with_options(
            kind,
            stack,
            masq_mode,
            segments,
            settings,
            WgOptions::default(),
        )
    }

    fn with_options(
        kind: Kind,
        stack: Stack,
        masq_mode: MasqMode,
        segments: &[u8],
        settings: weft_fabric::VxlanSettings,
        wg_options: WgOptions,
    ) -> Cluster {
        let underlay = Namespace::new("ul").unwrap();
        let dir = TempDir::new(&format!("/tmp/{}", underlay.name()));
        for bridge in ["br0", "br1"] {
            underlay
                .ip(&["link", "add", bridge, "type", "bridge"])
                .unwrap();
            underlay.ip(&["link", "set", bridge, "up"]).unwrap();
        }

        let outside = Namespace::new("out").unwrap();
        veth(&outside, "eth0", &underlay, "out").unwrap();
        underlay
            .ip(&["link", "set", "out", "master", "br0"])
            .unwrap();
        outside
            .ip(&["addr", "add", "192.0.2.200/24", "dev", "eth0"])
            .unwrap();
        outside
            .ip(&["addr", "add", "2001:db8::200/64", "dev", "eth0"])
            .unwrap();

        let mut nodes = Vec::new();
        for (i, &segment) in segments.iter().enumerate() {
            let n = u8::try_from(i + 1).unwrap();
            let ns = Namespace::new(&format!("n{n}")).unwrap();
            let port = format!("n{n}");
            veth(&ns, "eth0", &underlay, &port).unwrap();
            underlay
                .ip(&["link", "set", &port, "master", &format!("br{segment}")])
                .unwrap();
            for family in [Family::Ipv4, Family::Ipv6] {
                let prefix = if family == Family::Ipv4 { 24 } else { 64 };
                let addr = format!("{}/{prefix}", node_ip(n, segment, family));
                ns.ip(&["addr", "add", &addr, "dev", "eth0"]).unwrap();
            }
            let vxlan = Vxlan {
                mac_v4: vtep_mac(n, Family::Ipv4, 0),
                mac_v6: vtep_mac(n, Family::Ipv6, 0),
                settings,
            };
            let wg_key = WgPrivateKey::generate();
            let wg = Wireguard::new();
            wg.add_key(wg_key.clone());
            wg.set_preshared_key(wg_options.psk);
            wg.set_socket_dir(socket_dir(&dir, n));
            let lease = Lease {
                node_name: format!("node-{n}"),
                ipv4_cidr: stack
                    .has(Family::Ipv4)
                    .then(|| format!("10.42.{n}.0/24").parse().unwrap()),
                ipv6_cidr: stack
                    .has(Family::Ipv6)
                    .then(|| format!("fd42:0:0:{n}::/64").parse().unwrap()),
                public_ipv4: stack.has(Family::Ipv4).then(|| {
                    match node_ip(n, segment, Family::Ipv4) {
                        IpAddr::V4(ip) => ip,
                        IpAddr::V6(_) => unreachable!(),
                    }
                }),
                public_ipv6: stack.has(Family::Ipv6).then(|| {
                    match node_ip(n, segment, Family::Ipv6) {
                        IpAddr::V6(ip) => ip,
                        IpAddr::V4(_) => unreachable!(),
                    }
                }),
                backend: backend(kind, &vxlan, &wg_key, &wg_options).backend_data(),
                created_revision: 0,
            };
            let pod = Namespace::new(&format!("p{n}")).unwrap();
            let mtu = stack
                .families()
                .into_iter()
                .map(|f| backend(kind, &vxlan, &wg_key, &wg_options).mtu(1500, f))
                .min()
                .unwrap();
            let ipam_dir = dir.path.join(format!("ipam-{n}"));
            let conflist =
                weft_fabric::files::cni_conflist(&lease, mtu, &ipam_dir.to_string_lossy());
            let cni_config = plugin_config(&conflist);
            nodes.push(Node {
                wg,
                wg_key,
                kind,
                n,
                ns,
                pod,
                lease,
                vxlan,
                wg_options,
                pod_ips: Vec::new(),
                cni_config,
            });
        }

        let mut cluster = Cluster {
            kind,
            stack,
            masq_mode,
            nodes,
            outside,
            underlay,
            dir,
        };
        for node in &mut cluster.nodes {
            node.pod_ips = node.cni("ADD");
        }
        for i in 0..cluster.nodes.len() {
            cluster.converge(i);
            let again = cluster.converge(i);
            assert!(
                again.plan.is_empty(),
                "node {} needs more after converging: {}",
                i + 1,
                again.plan
            );
        }
        cluster
    }

    /// Every node's lease.
    pub fn leases(&self) -> Vec<Lease> {
        self.nodes.iter().map(|n| n.lease.clone()).collect()
    }

    /// Converges node `i` (0-based) to every other node's lease.
    pub fn converge(&self, i: usize) -> Converged {
        let peers = self.leases();
        self.converge_with(i, &peers)
    }

    /// Converges node `i` to `peers` (the node's own lease among them is skipped): observe, plan,
    /// apply, observe again.
    pub fn converge_with(&self, i: usize, peers: &[Lease]) -> Converged {
        let (desired, scope) = self.desired_with(i, peers);
        let wg = self.nodes[i].wg.clone();
        self.nodes[i]
            .ns
            .run(move |kernel| async move {
                let kernel = kernel.with_wireguard(wg);
                let observed = kernel.observe(&scope).await?;
                let plan = plan(&observed, &desired.state);
                kernel.apply(&plan).await?;
                let after = kernel.observe(&scope).await?;
                Ok::<_, KernelError>(Converged {
                    plan,
                    problems: desired.problems,
                    after,
                })
            })
            .unwrap()
            .unwrap()
    }

    /// Node `i`'s desired kernel state for every other node's lease, and the scope it is in.
    pub fn desired(&self, i: usize) -> (weft_fabric::KernelState, Scope) {
        let (desired, scope) = self.desired_with(i, &self.leases());
        (desired.state, scope)
    }

    /// Node `i`'s desired state for `peers`, built in its namespace (the fabric reads the
    /// external interface there), and the scope of its objects.
    fn desired_with(&self, i: usize, peers: &[Lease]) -> (Desired, Scope) {
        let node = &self.nodes[i];
        let local = node.lease.clone();
        let peers = peers.to_vec();
        let (kind, stack, masq_mode, vxlan) =
            (node.kind, self.stack, self.masq_mode, node.vxlan.clone());
        let (wg, wg_key, wg_options) = (node.wg.clone(), node.wg_key.clone(), node.wg_options);
        node.ns
            .run(move |kernel| async move {
                let kernel = kernel.with_wireguard(wg);
                let config = fabric_config(&kernel, stack, masq_mode).await?;
                let desired = desired_state(
                    backend(kind, &vxlan, &wg_key, &wg_options).as_ref(),
                    &local,
                    &peers,
                    &config,
                )
                .expect("desired state");
                Ok::<_, KernelError>((desired, Scope::weft_with_vxlan_vni(vxlan.settings.vni)))
            })
            .unwrap()
            .unwrap()
    }

    /// The plan node `i` would apply now, without applying it.
    pub fn pending(&self, i: usize) -> Plan {
        let (desired, _) = self.desired_with(i, &self.leases());
        let wg = self.nodes[i].wg.clone();
        self.nodes[i]
            .ns
            .run(move |kernel| async move {
                let observed = kernel.with_wireguard(wg).observe(&Scope::weft()).await?;
                Ok::<_, KernelError>(plan(&observed, &desired.state))
            })
            .unwrap()
            .unwrap()
    }

    /// Removes everything weft made on node `i`; returns what it removed and what is left.
    pub fn cleanup(&self, i: usize) -> (Plan, weft_fabric::KernelState) {
        let wg = self.nodes[i].wg.clone();
        self.nodes[i]
            .ns
            .run(|kernel| async move {
                let kernel = kernel.with_wireguard(wg);
                let plan = kernel.cleanup(&Scope::weft()).await?;
                let left = kernel.observe(&Scope::weft()).await?;
                Ok::<_, KernelError>((plan, left))
            })
            .unwrap()
            .unwrap()
    }

    /// Restarts node `i`'s agent without converging: its userspace WireGuard devices stop
    /// (their TUNs go, as when the agent process exits) and a new agent state with the same
    /// key takes over.
    pub fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.wg.stop();
        node.wg = Wireguard::new();
        node.wg.add_key(node.wg_key.clone());
        node.wg.set_preshared_key(node.wg_options.psk);
        node.wg.set_socket_dir(socket_dir(&self.dir, node.n));
    }

    /// Restarts node `i`'s agent with backend `kind`: its lease publishes the new backend's
    /// data, and it converges.
    pub fn switch(&mut self, i: usize, kind: Kind) -> Converged {
        self.restart(i);
        let node = &mut self.nodes[i];
        node.kind = kind;
        node.lease.backend =
            backend(kind, &node.vxlan, &node.wg_key, &node.wg_options).backend_data();
        self.converge(i)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            if !node.pod_ips.is_empty() {
                let _ = node.try_cni("DEL");
            }
        }
    }
}

/// The fabric config of a node: cluster CIDRs, the firewall mode, and eth0 as the kernel
/// describes it.
async fn fabric_config(
    kernel: &Kernel,
    stack: Stack,
    masq_mode: MasqMode,
) -> Result<FabricConfig, KernelError> {
    Ok(FabricConfig {
        cluster: cluster_cidrs(stack),
        ipv6_masq: true,
        masq_mode,
        fully_random: true,
        external: kernel.external_interface("eth0").await?,
    })
}

fn backend(
    kind: Kind,
    vxlan: &Vxlan,
    wg_key: &WgPrivateKey,
    wg_options: &WgOptions,
) -> Box<dyn Backend + Send> {
    match kind {
        Kind::Vxlan => Box::new(vxlan.clone()),
        Kind::HostGw => Box::new(HostGw),
        Kind::Wireguard => Box::new(WireguardNative {
            public_key: wg_key.public_key(),
            implementation: wg_options.implementation,
            keepalive: wg_options.keepalive,
            listen_ports: wg_options.listen_ports,
            preshared_key: wg_options.psk.is_some(),
            mode: wg_options.mode,
        }),
    }
}

/// The conflist's first plugin (bridge + host-local) with the network's name and version, as a
/// CNI runtime passes it.
fn plugin_config(conflist: &str) -> String {
    let list: serde_json::Value = serde_json::from_str(conflist).unwrap();
    let mut plugin = list["plugins"][0].clone();
    plugin["name"] = list["name"].clone();
    plugin["cniVersion"] = list["cniVersion"].clone();
    plugin.to_string()
}

// === impl Node ===

impl Node {
    /// Runs the bridge plugin with `command` in the node's namespace for the pod; returns the
    /// pod's addresses (ADD).
    fn cni(&self, command: &str) -> Vec<IpAddr> {
        self.try_cni(command).unwrap()
    }

    fn try_cni(&self, command: &str) -> Result<Vec<IpAddr>, KernelError> {
        let netns = self.pod.path();
        let out = self.ns.exec_with(
            &["/usr/lib/cni/bridge"],
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", self.pod.name()),
                ("CNI_NETNS", &netns),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/usr/lib/cni"),
            ],
            &self.cni_config,
        )?;
        if command != "ADD" {
            return Ok(Vec::new());
        }
        let result: serde_json::Value = serde_json::from_str(&out).unwrap();
        Ok(result["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ip| {
                let addr = ip["address"].as_str().unwrap();
                addr.split('/').next().unwrap().parse().unwrap()
            })
            .collect())
    }

    /// The pod's address of `family`.
    pub fn pod_ip(&self, family: Family) -> IpAddr {
        *self
            .pod_ips
            .iter()
            .find(|ip| Family::of(**ip) == family)
            .unwrap()
    }

    /// The index of a link in the node (`ip link show NAME`).
    pub fn link_index(&self, name: &str) -> Option<u32> {
        let out = self.ns.ip(&["-o", "link", "show", name]).ok()?;
        out.split(':').next()?.trim().parse().ok()
    }
}

/// `ping` from `from` to `to`; panics with the output when no reply came.
pub fn ping(from: &Namespace, to: IpAddr) {
    let target = to.to_string();
    let out = from
        .exec_output(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "-q", &target])
        .unwrap();
    assert!(
        out.status.success(),
        "ping {to} from {} failed: {}{}",
        from.name(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether a single ping from `from` to `to` gets an answer within a second.
pub fn pings(from: &Namespace, to: IpAddr) -> bool {
    let target = to.to_string();
    from.exec_output(&["ping", "-c", "1", "-W", "1", "-q", &target])
        .unwrap()
        .status
        .success()
}

/// Sends a line over TCP from `from` to `to` in `to_ns`; returns the source address the
/// receiver saw. Panics unless the line arrived intact.
pub fn tcp(from: &Namespace, to_ns: &Namespace, to: IpAddr) -> IpAddr {
    let (listen, connect) = match to {
        IpAddr::V4(ip) => (
            "TCP4-LISTEN:7000,reuseaddr".to_owned(),
            format!("TCP4:{ip}:7000"),
        ),
        IpAddr::V6(ip) => (
            "TCP6-LISTEN:7000,reuseaddr".to_owned(),
            format!("TCP6:[{ip}]:7000"),
        ),
    };
    let receiver = to_ns
        .spawn(&["socat", "-d", "-d", "-u", &listen, "STDOUT"])
        .unwrap();
    let payload = format!("hello from {}\n", from.name());
    let mut sent = false;
    for _ in 0..50 {
        let out = from.exec_with(&["socat", "-u", "STDIN", &connect], &[], &payload);
        if out.is_ok() {
            sent = true;
            break;
        }
        // The receiver may not listen yet.
        std::thread::sleep(Duration::from_millis(40));
    }
    let out = receiver.finish(Duration::from_secs(5)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        sent,
        "could not connect from {} to {to}: {stderr}",
        from.name()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), payload, "{stderr}");
    peer_address(&stderr).unwrap_or_else(|| panic!("no peer address in socat's log: {stderr}"))
}

/// The peer of `socat -d -d`'s "accepting connection from AF=2 10.42.1.2:41234 on ..." line.
fn peer_address(log: &str) -> Option<IpAddr> {
    let rest = log.split("accepting connection from AF=").nth(1)?;
    let addr = rest.split_whitespace().nth(1)?;
    let host = if let Some(v6) = addr.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        addr.rsplit_once(':')?.0
    };
    host.parse().ok()
}

/// A directory removed on drop.
pub struct TempDir {
    /// The directory.
    pub path: PathBuf,
}

impl TempDir {
    fn new(path: &str) -> TempDir {
        let path = PathBuf::from(path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
