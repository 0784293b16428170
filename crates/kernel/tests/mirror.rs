//! Privileged tests of the incremental path (feature `netns-tests`, root): lease changes planned
//! per peer against a [`Mirror`] leave exactly the kernel a full observe-plan-apply would, and
//! a restart changes nothing;
//! objects deleted by hand in weft's scope come back on their notification, well before any
//! periodic check; objects outside the scope are never touched; and lost notifications (a tiny
//! receive buffer) fall back to observing the whole scope.
//!
//! Run with `cargo test -p weft-kernel --features netns-tests --test mirror`.

#![cfg(feature = "netns-tests")]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use weft_fabric::{
    BackendData, DesiredPeers, ExternalInterface, FabricConfig, KernelState, Lease, MacAddr,
    MasqMode, Op, Plan, Vxlan, plan,
};
use weft_ipam::CidrList;
use weft_kernel::netns::{Namespace, veth, vxlan_peer};
use weft_kernel::{Kernel, Mirror, Notice, Resync, Scope};

/// Peers at the start of each test.
const PEERS: usize = 20;

fn local() -> Lease {
    Lease {
        node_name: "node".to_owned(),
        ipv4_cidr: "10.42.200.0/24".parse().ok(),
        ipv6_cidr: None,
        public_ipv4: Some(Ipv4Addr::new(192, 0, 2, 1)),
        public_ipv6: None,
        backend: BackendData::None,
        created_revision: 0,
    }
}

fn backend() -> Vxlan {
    Vxlan {
        mac_v4: MacAddr([2, 0, 0, 0xff, 0, 1]),
        mac_v6: MacAddr([2, 0, 0, 0xff, 0, 2]),
        settings: weft_fabric::VxlanSettings::default(),
    }
}

/// No firewall or sysctls: the scope is `flannel.1` alone, so the tests are about its objects.
fn config() -> FabricConfig {
    FabricConfig {
        cluster: CidrList::parse("cluster-cidr", &["10.42.0.0/16"]).unwrap(),
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

fn scope() -> Scope {
    Scope {
        links: vec![weft_fabric::vxlan::DEVICE_V4.to_owned()],
        sysctls: Vec::new(),
        masq_modes: Vec::new(),
    }
}

fn desired() -> DesiredPeers {
    let peers = (1..=PEERS as u8).map(vxlan_peer);
    DesiredPeers::new(&backend(), &local(), peers, &config()).unwrap()
}

/// The desired state of the scope (the firewall and sysctls are outside it).
fn in_scope(state: &KernelState) -> KernelState {
    let mut state = state.clone();
    state.firewall.clear();
    state.sysctls.clear();
    state
}

/// The node, with underlay `ul0` 192.0.2.1/24 to a second namespace.
fn topology() -> (Namespace, Namespace) {
    let node = Namespace::new("mn").unwrap();
    let other = Namespace::new("mo").unwrap();
    veth(&node, "ul0", &other, "ul0").unwrap();
    node.ip(&["addr", "add", "192.0.2.1/24", "dev", "ul0"])
        .unwrap();
    (node, other)
}

/// A mirror of the scope with every peer applied in full.
async fn started(kernel: Kernel, desired: &DesiredPeers, buffer: usize) -> Mirror {
    let mut mirror = Mirror::with_receive_buffer(kernel, scope(), buffer).unwrap();
    let wanted = in_scope(desired.state());
    let first = mirror
        .converge(&wanted, &Notice::Resync(Resync::Requested))
        .await
        .unwrap();
    assert!(!first.plan.is_empty());
    mirror
}

#[test]
fn lease_changes_through_the_mirror_leave_the_kernel_a_full_reconcile_would() {
    let (node, _other) = topology();
    node.run(|kernel: Kernel| async move {
        let (backend, config) = (backend(), config());
        let mut desired = desired();
        let mut mirror = started(kernel.clone(), &desired, weft_kernel::RECEIVE_BUFFER).await;
        let observations = mirror.observations();

        let mut changed_mac = vxlan_peer(3);
        changed_mac.backend = BackendData::Vxlan {
            vtep_mac_ipv4: Some(MacAddr([2, 0, 0, 0, 1, 3])),
            vtep_mac_ipv6: None,
        };
        let mut changed_ip = vxlan_peer(4);
        changed_ip.public_ipv4 = Some(Ipv4Addr::new(100, 64, 1, 4));
        enum Step {
            Put(Lease),
            Remove(&'static str),
        }
        let steps = [
            ("a peer added", Step::Put(vxlan_peer(PEERS as u8 + 1))),
            ("a new VTEP MAC", Step::Put(changed_mac)),
            ("a new public IP", Step::Put(changed_ip)),
            ("a peer removed", Step::Remove("peer-5")),
        ];
        for (what, step) in steps {
            let keys = match step {
                Step::Put(lease) => desired.put(&backend, &config, lease).unwrap(),
                Step::Remove(name) => desired.remove(&backend, &config, name).unwrap(),
            };
            let wanted = in_scope(desired.state());
            let done = mirror
                .converge(&wanted, &Notice::Objects(keys))
                .await
                .unwrap();
            assert!(!done.plan.is_empty(), "{what}: nothing applied");
            assert!(!done.observed, "{what}: the kernel was observed");
            // The kernel holds exactly what a full observe-plan-apply leaves...
            let kernel_now = kernel.observe(&scope()).await.unwrap();
            assert_eq!(kernel_now, wanted, "{what}");
            assert_eq!(plan(&kernel_now, &wanted), Plan::default(), "{what}");
            // ...and the mirror knows it.
            assert_eq!(mirror.state(), &kernel_now, "{what}");
        }
        assert_eq!(mirror.observations(), observations);

        // A restart: a new mirror observes the kernel and changes nothing.
        let mut restarted = Mirror::new(kernel, scope()).unwrap();
        let again = restarted
            .converge(
                &in_scope(desired.state()),
                &Notice::Resync(Resync::Requested),
            )
            .await
            .unwrap();
        assert!(again.observed);
        assert!(again.plan.is_empty(), "{}", again.plan);
        assert_eq!(restarted.state(), mirror.state());
    })
    .unwrap();
}

/// Polls `ip ARGS` until `found` says yes, for at most `limit`; returns how long it took.
fn wait_for(
    node: &Namespace,
    args: &[&str],
    limit: Duration,
    found: impl Fn(&str) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if found(&node.exec(args).unwrap_or_default()) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn objects_deleted_by_hand_come_back_on_their_notification_and_others_are_left_alone() {
    let (node, _other) = topology();
    // The agent side: apply every peer, then repair on every notification for 6 s. There is no
    // periodic reconcile, so only notifications can bring anything back.
    let (repairs, observations) = std::thread::scope(|s| {
        let agent = s.spawn(|| {
            node.run(|kernel: Kernel| async move {
                let desired = desired();
                let wanted = in_scope(desired.state());
                let mut mirror = started(kernel, &desired, weft_kernel::RECEIVE_BUFFER).await;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
                let mut plans = Vec::new();
                while let Ok(notice) = tokio::time::timeout_at(deadline, mirror.changed()).await {
                    let notice = notice.unwrap();
                    let done = mirror.converge(&wanted, &notice).await.unwrap();
                    if !done.plan.is_empty() {
                        plans.push((done.plan, done.observed));
                    }
                }
                (plans, mirror.observations())
            })
            .unwrap()
        });
        let routes = ["ip", "route", "show", "dev", "flannel.1"];
        let all_routes = |out: &str| out.lines().count() == PEERS;
        wait_for(&node, &routes, Duration::from_secs(5), all_routes).expect("every peer applied");
        // Let the notifications of the first apply (the link's among them) settle.
        std::thread::sleep(Duration::from_millis(500));

        node.ip(&["route", "del", "10.42.7.0/24", "dev", "flannel.1"])
            .unwrap();
        let back = wait_for(&node, &routes, Duration::from_secs(1), |out| {
            out.contains("10.42.7.0/24")
        });
        assert!(back.is_some(), "the deleted route is not back within 1 s");

        let fdb = ["bridge", "fdb", "show", "dev", "flannel.1"];
        node.exec(&[
            "bridge",
            "fdb",
            "del",
            "02:00:00:00:00:08",
            "dev",
            "flannel.1",
            "dst",
            "100.64.0.8",
            "self",
        ])
        .unwrap();
        let back = wait_for(&node, &fdb, Duration::from_secs(1), |out| {
            out.contains("02:00:00:00:00:08 dst 100.64.0.8")
        });
        assert!(
            back.is_some(),
            "the deleted FDB entry is not back within 1 s"
        );

        // Replaced by objects that are not weft's: a route of another protocol, a neighbour
        // that is not permanent.
        node.ip(&[
            "route",
            "replace",
            "10.42.9.0/24",
            "dev",
            "flannel.1",
            "proto",
            "static",
        ])
        .unwrap();
        let back = wait_for(&node, &routes, Duration::from_secs(1), |out| {
            out.contains("10.42.9.0/24 via 10.42.9.0")
        });
        assert!(back.is_some(), "the replaced route is not back within 1 s");
        let neighbours = ["ip", "neigh", "show", "dev", "flannel.1"];
        node.ip(&[
            "neigh",
            "replace",
            "10.42.10.0",
            "lladdr",
            "02:00:00:00:10:10",
            "dev",
            "flannel.1",
            "nud",
            "reachable",
        ])
        .unwrap();
        let back = wait_for(&node, &neighbours, Duration::from_secs(1), |out| {
            out.contains("10.42.10.0 lladdr 02:00:00:00:00:0a PERMANENT")
        });
        assert!(
            back.is_some(),
            "the replaced neighbour is not back within 1 s"
        );

        // Outside the scope: a route of another protocol through flannel.1, a permanent
        // neighbour on the underlay, a route on the underlay.
        node.ip(&["route", "add", "10.99.0.0/24", "dev", "flannel.1"])
            .unwrap();
        node.ip(&[
            "neigh",
            "add",
            "192.0.2.99",
            "lladdr",
            "02:00:00:00:09:09",
            "dev",
            "ul0",
            "nud",
            "permanent",
        ])
        .unwrap();
        node.ip(&["route", "add", "198.51.100.0/24", "via", "192.0.2.2"])
            .unwrap();
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            node.ip(&["route", "show", "10.99.0.0/24"])
                .unwrap()
                .contains("dev flannel.1")
        );
        assert!(
            node.ip(&["neigh", "show", "dev", "ul0"])
                .unwrap()
                .contains("192.0.2.99")
        );
        assert!(
            node.ip(&["route", "show", "198.51.100.0/24"])
                .unwrap()
                .contains("via 192.0.2.2")
        );
        agent.join().unwrap()
    });
    // The kernel was observed twice: at the start, and once more for the link's creation,
    // reported while it was still down. Its later echoes (set up, carrier) are the link the
    // mirror holds and need no observation.
    assert_eq!(observations, 2);
    // Each repair was one object, planned without observing the kernel.
    let repaired: Vec<String> = repairs
        .iter()
        .flat_map(|(plan, _)| plan.ops.iter().map(ToString::to_string))
        .collect();
    assert!(
        repairs
            .iter()
            .all(|(plan, observed)| !observed && plan.len() == 1),
        "{repaired:?}"
    );
    assert_eq!(
        repaired,
        [
            "ip route replace 10.42.7.0/24 via 10.42.7.0 dev flannel.1 onlink proto 87",
            "bridge fdb replace 02:00:00:00:00:08 dev flannel.1 dst 100.64.0.8 self permanent",
            "ip route replace 10.42.9.0/24 via 10.42.9.0 dev flannel.1 onlink proto 87",
            "ip neigh replace 10.42.10.0 lladdr 02:00:00:00:00:0a dev flannel.1 nud permanent",
        ]
    );
}

#[test]
fn lost_notifications_fall_back_to_observing_the_whole_scope() {
    let (node, _other) = topology();
    node.run(|kernel: Kernel| async move {
        let desired = desired();
        let wanted = in_scope(desired.state());
        // The smallest receive buffer the kernel allows: a burst overflows it.
        let mut mirror = started(kernel.clone(), &desired, 1).await;
        // Drain what the first apply left, so only the burst below is queued.
        while let Ok(notice) =
            tokio::time::timeout(Duration::from_millis(200), mirror.changed()).await
        {
            let notice = notice.unwrap();
            mirror.converge(&wanted, &notice).await.unwrap();
        }
        let observations = mirror.observations();

        // Behind the mirror's back: one of weft's routes deleted, then 300 neighbours on the
        // underlay (outside the scope), all before the mirror reads anything.
        let route = wanted.routes.values().next().unwrap().clone();
        let mut burst = vec![Op::DeleteRoute(route.clone())];
        burst.extend((0..300u16).map(|i| {
            let [hi, lo] = i.to_be_bytes();
            Op::ReplaceNeighbour {
                dev: "ul0".to_owned(),
                ip: Ipv4Addr::new(192, 0, 3 + hi, lo).into(),
                mac: MacAddr([2, 0, 0, 1, hi, lo]),
            }
        }));
        kernel.apply(&Plan { ops: burst }).await.unwrap();

        let mut overflowed = false;
        for _ in 0..1000 {
            let notice = tokio::time::timeout(Duration::from_secs(2), mirror.changed())
                .await
                .expect("a notice")
                .unwrap();
            let done = mirror.converge(&wanted, &notice).await.unwrap();
            if notice == Notice::Resync(Resync::Overflow) {
                assert!(done.observed);
                assert_eq!(
                    done.plan.ops,
                    [Op::ReplaceRoute(route.clone())],
                    "{}",
                    done.plan
                );
                overflowed = true;
                break;
            }
        }
        assert!(overflowed, "the burst did not overflow the receive buffer");
        assert_eq!(mirror.observations(), observations + 1);
        assert_eq!(kernel.observe(&scope()).await.unwrap(), wanted);
    })
    .unwrap();
}
