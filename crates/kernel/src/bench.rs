//! The convergence benchmark of issue 4 (feature `test-util`, root): apply N vxlan peers
//! (3N kernel objects) with weft-kernel, and the same objects with `bridge -batch` + `ip -batch`,
//! in fresh network namespaces; then one more peer with N present.
//!
//! The setup follows `kernel-anchors.md` §1: `flannel.1` on a veth underlay (192.0.2.1/24);
//! peer `i` has pod CIDR `10.a.b.0/24` (`a = 1 + i / 256`, `b = i % 256`), VTEP MAC
//! `02:00:00:00:hh:ll` and underlay address `100.64.0.0 + i`, which is never sent a packet. The
//! batch files use `replace` verbs, as flannel does. Times are wall clock; the batch times
//! include starting the two processes, like the anchors.
//!
//! `cargo xtask bench fabric` calls [`run`]; `cargo run --release -p weft-kernel --features
//! test-util --example apply_bench` prints the same report. [`agent`] measures the agent's path
//! (lease event to kernel, memory, a steady stream of changes) on the same setup.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use weft_fabric::{
    BackendData, ExternalInterface, FabricConfig, KernelState, Lease, MacAddr, MasqMode, Vxlan,
    desired_state, plan,
};
use weft_ipam::CidrList;

use crate::cmd::Cmd;

pub mod agent;
use crate::netns::{Namespace, veth};
use crate::{Kernel, KernelError, Scope};

/// The figures of one benchmark run (medians over the repetitions).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Peers applied.
    pub peers: usize,
    /// Repetitions.
    pub repetitions: usize,
    /// weft-kernel: applying the plan that adds every peer's neighbour, FDB entry and route.
    pub weft_apply: Duration,
    /// weft-kernel: observing the kernel with every peer present (3N objects dumped).
    pub weft_observe: Duration,
    /// weft-kernel: applying the plan that adds one more peer with N present.
    pub weft_one_more: Duration,
    /// weft-kernel: observe, plan and apply for that one more peer.
    pub weft_one_more_total: Duration,
    /// weft-kernel: applying the plan that removes every peer.
    pub weft_delete: Duration,
    /// `bridge -batch` (FDB) plus `ip -batch` (neighbours, routes) for the same objects.
    pub batch_apply: Duration,
}

/// Runs the benchmark with `peers` peers, `repetitions` times; each repetition uses fresh
/// namespaces.
pub fn run(peers: usize, repetitions: usize) -> Result<Report, KernelError> {
    let mut samples: Vec<Sample> = Vec::new();
    for _ in 0..repetitions.max(1) {
        samples.push(weft_sample(peers)?);
        let batch = batch_sample(peers)?;
        if let Some(last) = samples.last_mut() {
            last.batch_apply = batch;
        }
    }
    let median = |f: fn(&Sample) -> Duration| {
        let mut v: Vec<Duration> = samples.iter().map(f).collect();
        v.sort();
        v[v.len() / 2]
    };
    Ok(Report {
        peers,
        repetitions: samples.len(),
        weft_apply: median(|s| s.apply),
        weft_observe: median(|s| s.observe),
        weft_one_more: median(|s| s.one_more),
        weft_one_more_total: median(|s| s.one_more_total),
        weft_delete: median(|s| s.delete),
        batch_apply: median(|s| s.batch_apply),
    })
}

// === impl Report ===

impl Report {
    /// weft's apply time over the batch commands' time (the target is at most 1.0).
    pub fn ratio(&self) -> f64 {
        self.weft_apply.as_secs_f64() / self.batch_apply.as_secs_f64()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let n = self.peers;
        writeln!(
            f,
            "vxlan apply, {n} peers ({} objects), median of {}:",
            3 * n,
            self.repetitions
        )?;
        writeln!(
            f,
            "  weft-kernel apply            {:9.1} ms",
            ms(self.weft_apply)
        )?;
        writeln!(
            f,
            "  bridge -batch + ip -batch    {:9.1} ms",
            ms(self.batch_apply)
        )?;
        writeln!(f, "  ratio (target <= 1.0)        {:9.2}", self.ratio())?;
        writeln!(
            f,
            "  weft-kernel observe          {:9.1} ms",
            ms(self.weft_observe)
        )?;
        writeln!(
            f,
            "  one more peer, apply         {:9.2} ms (target <= 5 ms)",
            ms(self.weft_one_more)
        )?;
        writeln!(
            f,
            "  one more peer, observe+plan+apply {:4.1} ms",
            ms(self.weft_one_more_total)
        )?;
        write!(
            f,
            "  delete every peer            {:9.1} ms",
            ms(self.weft_delete)
        )
    }
}

#[derive(Debug, Default)]
struct Sample {
    apply: Duration,
    observe: Duration,
    one_more: Duration,
    one_more_total: Duration,
    delete: Duration,
    batch_apply: Duration,
}

/// The node and its underlay peer namespace, `ul0` 192.0.2.1/24.
fn topology() -> Result<(Namespace, Namespace), KernelError> {
    let node = Namespace::new("bn")?;
    let peer = Namespace::new("bp")?;
    veth(&node, "ul0", &peer, "ul0")?;
    node.ip(&["addr", "add", "192.0.2.1/24", "dev", "ul0"])?;
    peer.ip(&["addr", "add", "192.0.2.2/24", "dev", "ul0"])?;
    Ok((node, peer))
}

fn lease(i: usize) -> Lease {
    let (a, b) = (1 + i / 256, i % 256);
    let mac = mac(i);
    Lease {
        node_name: format!("peer-{i}"),
        ipv4_cidr: format!("10.{a}.{b}.0/24").parse().ok(),
        ipv6_cidr: None,
        public_ipv4: Some(underlay_ip(i)),
        public_ipv6: None,
        backend: BackendData::Vxlan {
            vtep_mac_ipv4: Some(mac),
            vtep_mac_ipv6: None,
        },
        created_revision: 0,
    }
}

fn mac(i: usize) -> MacAddr {
    let [_, _, hh, ll] = u32::try_from(i).unwrap_or(0).to_be_bytes();
    MacAddr([0x02, 0, 0, 0, hh, ll])
}

fn underlay_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + u32::try_from(i).unwrap_or(0))
}

fn local() -> Lease {
    Lease {
        node_name: "bench".to_owned(),
        ipv4_cidr: "10.0.0.0/24".parse().ok(),
        ipv6_cidr: None,
        public_ipv4: Some(Ipv4Addr::new(192, 0, 2, 1)),
        public_ipv6: None,
        backend: BackendData::None,
        created_revision: 0,
    }
}

fn backend() -> Vxlan {
    Vxlan {
        mac_v4: MacAddr([0x02, 0, 0, 0xff, 0, 1]),
        mac_v6: MacAddr([0x02, 0, 0, 0xff, 0, 2]),
        settings: weft_fabric::VxlanSettings::default(),
    }
}

fn config() -> FabricConfig {
    FabricConfig {
        cluster: CidrList::parse("cluster-cidr", &["10.0.0.0/8"]).expect("a valid CIDR"),
        ipv6_masq: false,
        masq_mode: MasqMode::Nftables,
        fully_random: true,
        external: ExternalInterface {
            name: "ul0".to_owned(),
            mtu: 1500,
            onlink: Vec::new(),
            addresses: Vec::new(),
        },
    }
}

/// The desired state with the first `peers` peers, without firewall rules and sysctls (the
/// comparison is about per-peer objects).
fn desired(peers: usize) -> KernelState {
    let leases: Vec<Lease> = (0..peers).map(lease).collect();
    let mut state = desired_state(&backend(), &local(), &leases, &config())
        .map(|d| d.state)
        .unwrap_or_default();
    state.firewall.clear();
    state.sysctls.clear();
    state
}

/// A scope of `flannel.1` only.
fn scope() -> Scope {
    Scope {
        links: vec![weft_fabric::vxlan::DEVICE_V4.to_owned()],
        sysctls: Vec::new(),
        masq_modes: Vec::new(),
    }
}

fn weft_sample(peers: usize) -> Result<Sample, KernelError> {
    let (node, _peer) = topology()?;
    node.run(move |kernel: Kernel| async move {
        let scope = scope();
        // flannel.1 and its address, untimed.
        let base = desired(0);
        kernel.apply(&plan(&KernelState::default(), &base)).await?;
        let empty = kernel.observe(&scope).await?;

        let full = desired(peers);
        let add = plan(&empty, &full);
        let t = Instant::now();
        kernel.apply(&add).await?;
        let apply = t.elapsed();

        let t = Instant::now();
        let observed = kernel.observe(&scope).await?;
        let observe = t.elapsed();
        if observed != full {
            return Err(KernelError::Apply {
                total: add.len(),
                failed: vec![KernelError::NotFound {
                    object: format!(
                        "{} of {} objects after applying",
                        observed.object_count(),
                        full.object_count()
                    ),
                }],
            });
        }

        let more = desired(peers + 1);
        let one = plan(&observed, &more);
        let t = Instant::now();
        kernel.apply(&one).await?;
        let one_more = t.elapsed();

        // The same once more from scratch, for peer N+1 removed and re-added by an agent.
        kernel.apply(&plan(&more, &full)).await?;
        let t = Instant::now();
        let now = kernel.observe(&scope).await?;
        kernel.apply(&plan(&now, &more)).await?;
        let one_more_total = t.elapsed();

        let t = Instant::now();
        kernel.apply(&plan(&more, &base)).await?;
        let delete = t.elapsed();
        Ok(Sample {
            apply,
            observe,
            one_more,
            one_more_total,
            delete,
            batch_apply: Duration::ZERO,
        })
    })?
}

/// `bridge -batch` then `ip -batch` with the same objects onto a `flannel.1` made by `ip`.
fn batch_sample(peers: usize) -> Result<Duration, KernelError> {
    let (node, _peer) = topology()?;
    node.ip(&[
        "link",
        "add",
        "flannel.1",
        "type",
        "vxlan",
        "id",
        "1",
        "local",
        "192.0.2.1",
        "dev",
        "ul0",
        "dstport",
        "8472",
        "nolearning",
    ])?;
    node.ip(&["link", "set", "flannel.1", "mtu", "1450", "up"])?;
    node.ip(&["addr", "add", "10.0.0.0/32", "dev", "flannel.1"])?;
    let mut fdb = String::new();
    let mut ip = String::new();
    for i in 0..peers {
        let l = lease(i);
        let (Some(cidr), Some(dst)) = (l.ipv4_cidr, l.public_ipv4) else {
            continue;
        };
        let gw = cidr.network();
        let m = mac(i);
        fdb.push_str(&format!(
            "fdb replace {m} dev flannel.1 dst {dst} self permanent\n"
        ));
        ip.push_str(&format!(
            "neigh replace {gw} lladdr {m} dev flannel.1 nud permanent\n"
        ));
        ip.push_str(&format!(
            "route replace {cidr} via {gw} dev flannel.1 onlink\n"
        ));
    }
    let dir = std::env::temp_dir().join(format!("{}-batch", node.name()));
    let io = |e: std::io::Error| KernelError::Spawn {
        program: "bench batch files".to_owned(),
        kind: e.kind(),
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let (fdb_file, ip_file) = (dir.join("fdb"), dir.join("ip"));
    std::fs::write(&fdb_file, fdb).map_err(io)?;
    std::fs::write(&ip_file, ip).map_err(io)?;
    let t = Instant::now();
    let result = Cmd::new("bridge")
        .args(["-n", node.name(), "-batch"])
        .arg(fdb_file.to_string_lossy())
        .run()
        .and_then(|_| {
            Cmd::new("ip")
                .args(["-n", node.name(), "-batch"])
                .arg(ip_file.to_string_lossy())
                .run()
        });
    let elapsed = t.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    let routes = node.ip(&["route", "show", "dev", "flannel.1"])?;
    if routes.lines().count() != peers {
        return Err(KernelError::NotFound {
            object: format!("{peers} routes after ip -batch"),
        });
    }
    Ok(elapsed)
}
