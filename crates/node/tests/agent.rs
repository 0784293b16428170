//! Privileged tests of the agent's loop on a real kernel (feature `netns-tests`, root): lease
//! changes reach the kernel through the agent's cached path, a route and firewall rules deleted
//! by hand come back on their notifications (the reconcile interval is an hour), and an agent
//! started afterwards finds nothing to do; and periodic checks slower than their interval
//! leave room for lease updates.
//!
//! Run with `cargo test -p weft-node --features netns-tests --test agent`.

#![cfg(feature = "netns-tests")]

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use weft_api::protocol::RegisterRequest;
use weft_config::ClusterNetwork;
use weft_fabric::{BackendData, Lease, MacAddr, MasqMode};
use weft_kernel::Kernel;
use weft_kernel::netns::{Namespace, veth, vxlan_peer};
use weft_node::agent::{self, AgentSettings};
use weft_node::{LeaseSource, LeaseUpdate, NodeError};

/// Peers at the start.
const PEERS: u8 = 10;

/// Leases from a snapshot, then whatever the test sends.
struct Channel {
    cluster: ClusterNetwork,
    leases: Vec<Lease>,
    snapshot_sent: bool,
    updates: mpsc::UnboundedReceiver<LeaseUpdate>,
    /// Whether `next` pauses once before it looks, as a lease watch does while its
    /// connection's task delivers the next event.
    pauses: bool,
}

impl LeaseSource for Channel {
    async fn cluster(&mut self) -> Result<ClusterNetwork, NodeError> {
        Ok(self.cluster.clone())
    }

    async fn register(&mut self, request: &RegisterRequest) -> Result<Lease, NodeError> {
        Ok(self
            .leases
            .iter()
            .find(|l| l.node_name == request.node_name)
            .cloned()
            .expect("the node's lease"))
    }

    async fn next(&mut self) -> Result<LeaseUpdate, NodeError> {
        if !self.snapshot_sent {
            self.snapshot_sent = true;
            return Ok(LeaseUpdate::Snapshot(self.leases.clone()));
        }
        if self.pauses {
            tokio::task::yield_now().await;
        }
        match self.updates.recv().await {
            Some(update) => Ok(update),
            None => std::future::pending().await,
        }
    }
}

/// The cluster of the static example: 10.42.0.0/16, vxlan.
fn cluster() -> ClusterNetwork {
    let file: serde_json::Value =
        serde_json::from_str(include_str!("../examples/static-leases.json")).unwrap();
    ClusterNetwork::from_json(&file["cluster"]).unwrap()
}

fn local() -> Lease {
    Lease {
        node_name: "node-a".to_owned(),
        ipv4_cidr: "10.42.0.0/24".parse().ok(),
        ipv6_cidr: None,
        public_ipv4: Some(Ipv4Addr::new(192, 0, 2, 1)),
        public_ipv6: None,
        backend: BackendData::None,
        created_revision: 0,
    }
}

fn leases() -> Vec<Lease> {
    std::iter::once(local())
        .chain((1..=PEERS).map(vxlan_peer))
        .collect()
}

fn settings(dir: &Path) -> AgentSettings {
    AgentSettings {
        dir: dir.join("agent"),
        node_name: "node-a".to_owned(),
        node_ips: vec!["192.0.2.1".parse().unwrap()],
        external_ips: Vec::new(),
        flannel_iface: Some("ul0".to_owned()),
        subnet_file: dir.join("subnet.env"),
        cni_conf_dir: dir.join("net.d"),
        flannel_cni_conf: None,
        masq_mode: MasqMode::Nftables,
        reconcile_interval: Duration::from_secs(3600),
        wireguard_implementation: None,
    }
}

/// Polls `cmd` in `node` until `found` says yes, for at most 1 s.
fn within_a_second(node: &Namespace, cmd: &[&str], found: impl Fn(&str) -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        if found(&node.exec(cmd).unwrap_or_default()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A node namespace with underlay `ul0` 192.0.2.1/24 to a second namespace (kept alive by the
/// caller).
fn topology(node: &str, other: &str) -> (Namespace, Namespace) {
    let node = Namespace::new(node).unwrap();
    let other = Namespace::new(other).unwrap();
    veth(&node, "ul0", &other, "ul0").unwrap();
    node.ip(&["addr", "add", "192.0.2.1/24", "dev", "ul0"])
        .unwrap();
    (node, other)
}

/// Runs the agent in `node` on `source` with `settings`, until `stopped` fires.
fn run_agent(
    node: &Namespace,
    mut source: Channel,
    settings: AgentSettings,
    stopped: oneshot::Receiver<()>,
) {
    node.run(move |kernel: Kernel| async move {
        let (fabric, _) = agent::join(&mut source, settings, kernel).await.unwrap();
        agent::run(&mut source, fabric, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    })
    .unwrap();
}

/// The snapshot of [`leases`], then what `updates` sends.
fn channel(updates: mpsc::UnboundedReceiver<LeaseUpdate>, pauses: bool) -> Channel {
    Channel {
        cluster: cluster(),
        leases: leases(),
        snapshot_sent: false,
        updates,
        pauses,
    }
}

#[test]
fn the_agent_follows_lease_changes_and_repairs_on_notifications() {
    let (node, _other) = topology("an", "ao");
    let dir = tempfile::tempdir().unwrap();
    let routes = ["ip", "route", "show", "dev", "flannel.1"];
    let fdb = ["bridge", "fdb", "show", "dev", "flannel.1"];

    std::thread::scope(|s| {
        let (updates, receiver) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let settings = settings(dir.path());
        let agent = s.spawn(|| run_agent(&node, channel(receiver, false), settings, stopped));
        assert!(
            within_a_second(&node, &routes, |out| out.lines().count()
                == usize::from(PEERS)),
            "the snapshot was not applied"
        );

        // A new VTEP MAC, a new public IP, a new peer and a removed one, each in the kernel
        // within a second of its event.
        let mut moved = vxlan_peer(3);
        moved.backend = BackendData::Vxlan {
            vtep_mac_ipv4: Some(MacAddr([2, 0, 0, 0, 1, 3])),
            vtep_mac_ipv6: None,
        };
        updates.send(LeaseUpdate::Put(moved)).unwrap();
        assert!(within_a_second(&node, &fdb, |out| out
            .contains("02:00:00:00:01:03 dst 100.64.0.3")
            && !out.contains("02:00:00:00:00:03")));
        let mut renumbered = vxlan_peer(4);
        renumbered.public_ipv4 = Some(Ipv4Addr::new(100, 64, 1, 4));
        updates.send(LeaseUpdate::Put(renumbered)).unwrap();
        assert!(within_a_second(&node, &fdb, |out| out
            .contains("02:00:00:00:00:04 dst 100.64.1.4")));
        updates
            .send(LeaseUpdate::Put(vxlan_peer(PEERS + 1)))
            .unwrap();
        assert!(within_a_second(&node, &routes, |out| out.contains("10.42.11.0/24")));
        updates
            .send(LeaseUpdate::Delete("peer-5".to_owned()))
            .unwrap();
        assert!(within_a_second(&node, &routes, |out| !out.contains("10.42.5.0/24")));

        // Deleted by hand: back on its notification, an hour before the next check.
        node.ip(&["route", "del", "10.42.7.0/24", "dev", "flannel.1"])
            .unwrap();
        assert!(within_a_second(&node, &routes, |out| out.contains("10.42.7.0/24")));

        // The firewall, on nftables' notifications: a chain emptied by hand gets its rules
        // back, and so does the whole table deleted by hand.
        let postrouting = ["nft", "list", "chain", "ip", "weft", "postrouting"];
        let rules = node.exec(&postrouting).unwrap();
        assert!(rules.contains("masquerade"), "{rules}");
        node.exec(&["nft", "flush", "chain", "ip", "weft", "postrouting"])
            .unwrap();
        assert!(within_a_second(&node, &postrouting, |out| out == rules));
        // Deleted again and again, as soon as it is back: each deletion can land while the
        // agent is still reading the echo of its own repair (a table that vanishes between
        // two listings), which must not cost the notifications.
        for _ in 0..5 {
            node.exec(&["nft", "delete", "table", "ip", "weft"])
                .unwrap();
            assert!(within_a_second(&node, &postrouting, |out| out == rules));
        }

        stop.send(()).unwrap();
        agent.join().unwrap();
    });

    // An agent that starts now with the same leases finds the kernel as it wants it.
    let mut now: Vec<Lease> = leases()
        .into_iter()
        .filter(|l| l.node_name != "peer-5")
        .collect();
    for lease in &mut now {
        if lease.node_name == "peer-3" {
            lease.backend = BackendData::Vxlan {
                vtep_mac_ipv4: Some(MacAddr([2, 0, 0, 0, 1, 3])),
                vtep_mac_ipv6: None,
            };
        }
        if lease.node_name == "peer-4" {
            lease.public_ipv4 = Some(Ipv4Addr::new(100, 64, 1, 4));
        }
    }
    now.push(vxlan_peer(PEERS + 1));
    let path = dir.path().to_owned();
    let (plan, problems) = node
        .run(move |kernel: Kernel| async move {
            let (_, receiver) = mpsc::unbounded_channel();
            let mut source = Channel {
                cluster: cluster(),
                leases: now,
                snapshot_sent: false,
                updates: receiver,
                pauses: false,
            };
            let (mut fabric, _) = agent::join(&mut source, settings(&path), kernel)
                .await
                .unwrap();
            fabric.update(source.next().await.unwrap());
            fabric.plan().await.unwrap()
        })
        .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert!(plan.is_empty(), "{plan}");
}

/// A periodic check that takes longer than the reconcile interval (a loaded machine, a VM under
/// software emulation) must not starve lease events: the next check waits a whole interval
/// after the last one ended, so the lease update is applied in between.
#[test]
fn checks_slower_than_the_interval_leave_room_for_lease_updates() {
    let (node, _other) = topology("as", "at");
    let dir = tempfile::tempdir().unwrap();
    let routes = ["ip", "route", "show", "dev", "flannel.1"];

    std::thread::scope(|s| {
        let (updates, receiver) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        // A full check observes the whole kernel: far longer than a millisecond.
        let mut settings = settings(dir.path());
        settings.reconcile_interval = Duration::from_millis(1);
        let agent = s.spawn(|| run_agent(&node, channel(receiver, true), settings, stopped));
        assert!(
            within_a_second(&node, &routes, |out| out.lines().count()
                == usize::from(PEERS)),
            "the snapshot was not applied"
        );
        updates
            .send(LeaseUpdate::Put(vxlan_peer(PEERS + 1)))
            .unwrap();
        let applied = within_a_second(&node, &routes, |out| out.contains("10.42.11.0/24"));
        stop.send(()).unwrap();
        agent.join().unwrap();
        assert!(
            applied,
            "the lease update waited behind the periodic checks"
        );
    });
}
