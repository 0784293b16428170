//! Tests of incremental planning: the desired state kept per peer equals the one built from
//! scratch after any sequence of lease changes, and the plan of one change's keys is the full
//! plan's difference; notifications are recorded the way the kernel reports them.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use weft_ipam::Cidr;

use super::{Change, DesiredPeers, ObjectKeys, plan_objects};
use crate::state::{Address, KernelState, Route};
use crate::vxlan::tests::config;
use crate::{
    Backend, BackendData, HostGw, Lease, MacAddr, Op, PeerProblem, Vxlan, WgImplementation,
    WgPublicKey, WireguardNative, desired_state, plan,
};

/// A lease from a tiny universe of values, so that peers often claim one another's.
#[derive(Debug, Clone)]
struct Spec {
    name: u8,
    cidr: u8,
    wide: bool,
    public: u8,
    mac: u8,
    revision: u8,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u8..6,
        0u8..6,
        prop::bool::weighted(0.1),
        0u8..6,
        0u8..6,
        0u8..3,
    )
        .prop_map(|(name, cidr, wide, public, mac, revision)| Spec {
            name,
            cidr,
            wide,
            public,
            mac,
            revision,
        })
}

/// Peer `name` (never `node-0`, this node), of the kind of backend `kind` publishes for.
fn peer(spec: &Spec, kind: u8) -> Lease {
    // A /23 overlaps the /24s around it.
    let cidr = if spec.wide {
        format!("10.42.{}.0/23", spec.cidr & !1)
    } else {
        format!("10.42.{}.0/24", spec.cidr)
    };
    let backend = match kind {
        0 => BackendData::Vxlan {
            vtep_mac_ipv4: Some(MacAddr([2, 0, 0, 0, 0, spec.mac])),
            vtep_mac_ipv6: None,
        },
        1 => BackendData::HostGw,
        _ => BackendData::Wireguard {
            public_key: WgPublicKey([spec.mac; 32]),
            port_ipv4: 51820,
            port_ipv6: 51821,
        },
    };
    Lease {
        node_name: format!("node-{}", spec.name + 1),
        ipv4_cidr: cidr.parse().ok(),
        ipv6_cidr: None,
        public_ipv4: Some(Ipv4Addr::new(192, 0, 2, 10 + spec.public)),
        public_ipv6: None,
        backend,
        created_revision: u64::from(spec.revision),
    }
}

/// This node: 10.42.200.0/24 at 192.0.2.1, with a VTEP MAC or key no peer has, unless the
/// universe picks it (MAC 5, key 5).
fn local() -> Lease {
    Lease {
        node_name: "node-0".to_owned(),
        ipv4_cidr: "10.42.200.0/24".parse().ok(),
        ipv6_cidr: None,
        public_ipv4: Some(Ipv4Addr::new(192, 0, 2, 1)),
        public_ipv6: None,
        backend: BackendData::None,
        created_revision: 0,
    }
}

fn backend(kind: u8) -> Box<dyn Backend> {
    match kind {
        0 => Box::new(Vxlan {
            mac_v4: MacAddr([2, 0, 0, 0, 0, 5]),
            mac_v6: MacAddr([2, 0, 0, 0, 1, 5]),
            settings: crate::VxlanSettings::default(),
        }),
        1 => Box::new(HostGw),
        _ => Box::new(WireguardNative {
            public_key: WgPublicKey([5; 32]),
            implementation: WgImplementation::Kernel,
            keepalive: 25,
            listen_ports: (crate::wireguard::PORT_V4, crate::wireguard::PORT_V6),
            preshared_key: false,
            mode: crate::wireguard::WgMode::Separate,
        }),
    }
}

/// What the fabric wants from scratch, and its problems as sorted text.
fn full(kind: u8, peers: &[Lease]) -> (KernelState, Vec<String>) {
    let desired = desired_state(&*backend(kind), &local(), peers, &config("10.42.0.0/16")).unwrap();
    (desired.state, sorted(&desired.problems))
}

fn sorted(problems: &[PeerProblem]) -> Vec<String> {
    let mut text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    text.sort();
    text
}

/// One lease change.
#[derive(Debug, Clone)]
enum Step {
    Put(Spec),
    Remove(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => spec().prop_map(Step::Put),
        1 => (0u8..6).prop_map(Step::Remove),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// After each change the kept state equals the state from scratch, and the plan of the
    /// returned keys against the old state equals the full plan.
    #[test]
    fn incremental_equals_full(
        kind in 0u8..3,
        start in prop::collection::vec(spec(), 0..6),
        steps in prop::collection::vec(step(), 1..8),
    ) {
        let backend = backend(kind);
        let config = config("10.42.0.0/16");
        let mut leases: std::collections::BTreeMap<String, Lease> = start
            .iter()
            .map(|s| (peer(s, kind).node_name.clone(), peer(s, kind)))
            .collect();
        let mut desired =
            DesiredPeers::new(&*backend, &local(), leases.values().cloned(), &config).unwrap();
        let peers: Vec<Lease> = leases.values().cloned().collect();
        let (mut before, problems) = full(kind, &peers);
        prop_assert_eq!(desired.state(), &before);
        prop_assert_eq!(sorted(&desired.problems()), problems);
        for step in steps {
            let keys = match step {
                Step::Put(spec) => {
                    let lease = peer(&spec, kind);
                    leases.insert(lease.node_name.clone(), lease.clone());
                    desired.put(&*backend, &config, lease).unwrap()
                }
                Step::Remove(name) => {
                    let name = format!("node-{}", name + 1);
                    leases.remove(&name);
                    desired.remove(&*backend, &config, &name).unwrap()
                }
            };
            let peers: Vec<Lease> = leases.values().cloned().collect();
            let (after, problems) = full(kind, &peers);
            prop_assert_eq!(desired.state(), &after);
            prop_assert_eq!(sorted(&desired.problems()), problems);
            prop_assert_eq!(plan_objects(&before, &after, &keys), plan(&before, &after));
            before = after;
        }
    }
}

fn vxlan_peer(n: u8, mac: u8, public: u8) -> Lease {
    peer(
        &Spec {
            name: n,
            cidr: n,
            wide: false,
            public,
            mac,
            revision: 0,
        },
        0,
    )
}

#[test]
fn one_changed_peer_is_planned_alone() {
    let backend = backend(0);
    let config = config("10.42.0.0/16");
    let peers: Vec<Lease> = (0..4).map(|n| vxlan_peer(n, n, n)).collect();
    let mut desired = DesiredPeers::new(&*backend, &local(), peers.clone(), &config).unwrap();
    let observed = desired.state().clone();
    // Cases: (the change, the plan of its keys against the kernel as it was).
    let cases: Vec<(Step, &str)> = vec![
        (
            Step::Put(Spec {
                name: 1,
                cidr: 1,
                wide: false,
                public: 1,
                mac: 4,
                revision: 0,
            }),
            "bridge fdb del 02:00:00:00:00:01 dev flannel.1 dst 192.0.2.11 self\n\
             ip neigh replace 10.42.1.0 lladdr 02:00:00:00:00:04 dev flannel.1 nud permanent\n\
             bridge fdb replace 02:00:00:00:00:04 dev flannel.1 dst 192.0.2.11 self permanent\n",
        ),
        (
            Step::Put(Spec {
                name: 2,
                cidr: 2,
                wide: false,
                public: 9,
                mac: 2,
                revision: 0,
            }),
            "bridge fdb replace 02:00:00:00:00:02 dev flannel.1 dst 192.0.2.19 self permanent\n",
        ),
        (
            Step::Remove(3),
            "ip route del 10.42.3.0/24 via 10.42.3.0 dev flannel.1 proto 87\n\
             ip neigh del 10.42.3.0 dev flannel.1\n\
             bridge fdb del 02:00:00:00:00:03 dev flannel.1 dst 192.0.2.13 self\n",
        ),
    ];
    for (step, want) in cases {
        let keys = match &step {
            Step::Put(spec) => desired.put(&*backend, &config, peer(spec, 0)).unwrap(),
            Step::Remove(n) => desired
                .remove(&*backend, &config, &format!("node-{}", n + 1))
                .unwrap(),
        };
        // Only the peer's own objects are looked at.
        assert!(keys.len() <= 5, "{step:?}: {keys:?}");
        assert_eq!(
            plan_objects(&observed, desired.state(), &keys).to_string(),
            want,
            "{step:?}"
        );
    }
}

#[test]
fn a_change_that_frees_a_claim_restores_the_peer_that_lost_it() {
    let backend = backend(0);
    let config = config("10.42.0.0/16");
    // node-2 was created after node-1 and has its VTEP MAC: it is dropped.
    let mut second = vxlan_peer(1, 0, 1);
    second.created_revision = 5;
    let mut desired =
        DesiredPeers::new(&*backend, &local(), [vxlan_peer(0, 0, 0), second], &config).unwrap();
    assert_eq!(desired.problems().len(), 1, "{:?}", desired.problems());
    let observed = desired.state().clone();
    let keys = desired
        .put(&*backend, &config, vxlan_peer(0, 3, 0))
        .unwrap();
    assert!(desired.problems().is_empty(), "{:?}", desired.problems());
    let ops = plan_objects(&observed, desired.state(), &keys).ops;
    assert!(
        ops.iter()
            .any(|op| matches!(op, Op::ReplaceRoute(r) if r.dst.to_string() == "10.42.1.0/24")),
        "{ops:?}"
    );
}

fn route(dst: &str, gateway: &str) -> Route {
    Route {
        dst: dst.parse().unwrap(),
        gateway: Some(gateway.parse().unwrap()),
        dev: "flannel.1".to_owned(),
        onlink: true,
    }
}

#[test]
fn record_follows_notifications() {
    let dst: Cidr = "10.42.1.0/24".parse().unwrap();
    let ip: IpAddr = "10.42.1.0".parse().unwrap();
    let (a, b): (IpAddr, IpAddr) = ("192.0.2.11".parse().unwrap(), "192.0.2.12".parse().unwrap());
    let mac = MacAddr([2, 0, 0, 0, 0, 1]);
    let mut start = KernelState::default();
    start.add_route(route("10.42.1.0/24", "10.42.1.0"));
    start.neighbours.insert(("flannel.1".to_owned(), ip), mac);
    start.fdb.insert(("flannel.1".to_owned(), mac), a);
    let address = Address {
        link: "flannel.1".to_owned(),
        addr: "10.42.200.0".parse().unwrap(),
        prefix_len: 32,
    };
    start.addresses.insert(address.clone());
    // Cases: (the change, what the state holds after it).
    type Check = fn(&KernelState) -> bool;
    let cases: Vec<(Change, Check)> = vec![
        (Change::Route { dst, route: None }, |s| s.routes.is_empty()),
        (
            Change::Route {
                dst,
                route: Some(route("10.42.1.0/24", "10.42.1.1")),
            },
            |s| {
                s.routes
                    .values()
                    .any(|r| r.gateway.unwrap().to_string() == "10.42.1.1")
            },
        ),
        (
            Change::Neighbour {
                dev: "flannel.1".to_owned(),
                ip,
                mac: None,
            },
            |s| s.neighbours.is_empty(),
        ),
        (
            Change::Fdb {
                dev: "flannel.1".to_owned(),
                mac,
                dst: b,
                present: false,
            },
            |s| s.fdb.len() == 1,
        ),
        (
            Change::Fdb {
                dev: "flannel.1".to_owned(),
                mac,
                dst: a,
                present: false,
            },
            |s| s.fdb.is_empty(),
        ),
        (
            Change::Fdb {
                dev: "flannel.1".to_owned(),
                mac,
                dst: b,
                present: true,
            },
            |s| s.fdb.values().all(|d| d.to_string() == "192.0.2.12"),
        ),
        (
            Change::Address {
                address: address.clone(),
                present: false,
            },
            |s| s.addresses.is_empty(),
        ),
    ];
    for (change, check) in cases {
        let mut state = start.clone();
        state.record(&change);
        assert!(check(&state), "{change:?}: {state:?}");
        let mut keys = ObjectKeys::default();
        keys.insert_change(&change);
        assert_eq!(keys.len(), 1, "{change:?}");
        // The repair of that key is the full plan back to the start.
        assert_eq!(
            plan_objects(&state, &start, &keys),
            plan(&state, &start),
            "{change:?}"
        );
    }
}
