//! Tests of first claims: a peer that copies a value of this node or of a peer created before it
//! is dropped whole and reported with both names, whatever the names and the order of leases.

use std::collections::BTreeSet;

use proptest::prelude::*;
use weft_ipam::Family;

use crate::vxlan::tests::{config, lease as vxlan_lease};
use crate::{
    Backend, BackendData, Claim, Desired, HostGw, KernelState, Lease, MacAddr, PeerProblem,
    PeerProblemReason, Vxlan, WgImplementation, WgPublicKey, WireguardNative, desired_state, plan,
};

/// The backends whose objects carry a peer's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Vxlan,
    HostGw,
    Wireguard,
}

fn key(n: u8) -> WgPublicKey {
    WgPublicKey([n; 32])
}

/// Node `n` of the vxlan tests (pod CIDR 10.42.n.0/24, public IP 192.0.2.n, VTEP MAC n), named
/// `name`, created at `created`, publishing what `kind` publishes (WireGuard key `n`).
fn node(kind: Kind, n: u8, name: &str, created: u64, dual: bool) -> Lease {
    let base = vxlan_lease(n, dual);
    let backend = match kind {
        Kind::Vxlan => base.backend.clone(),
        Kind::HostGw => BackendData::HostGw,
        Kind::Wireguard => BackendData::Wireguard {
            public_key: key(n),
            port_ipv4: 51820,
            port_ipv6: 51821,
        },
    };
    Lease {
        node_name: name.to_owned(),
        created_revision: created,
        backend,
        ..base
    }
}

/// The backend of this node, matching its lease.
fn backend(kind: Kind, local: &Lease) -> Box<dyn Backend> {
    match (kind, &local.backend) {
        (
            Kind::Vxlan,
            BackendData::Vxlan {
                vtep_mac_ipv4,
                vtep_mac_ipv6,
            },
        ) => Box::new(Vxlan {
            mac_v4: vtep_mac_ipv4.unwrap_or(MacAddr([2, 0, 0, 0, 0xff, 4])),
            mac_v6: vtep_mac_ipv6.unwrap_or(MacAddr([2, 0, 0, 0, 0xff, 6])),
            settings: crate::VxlanSettings::default(),
        }),
        (Kind::Wireguard, BackendData::Wireguard { public_key, .. }) => Box::new(WireguardNative {
            public_key: *public_key,
            implementation: WgImplementation::Kernel,
            keepalive: 25,
            listen_ports: (crate::wireguard::PORT_V4, crate::wireguard::PORT_V6),
            preshared_key: false,
            mode: crate::wireguard::WgMode::Separate,
        }),
        (Kind::HostGw, _) => Box::new(HostGw),
        (kind, data) => panic!("a {kind:?} node does not publish {data:?}"),
    }
}

fn desired(kind: Kind, cluster: &str, local: &Lease, peers: &[Lease]) -> Desired {
    desired_state(&*backend(kind, local), local, peers, &config(cluster))
        .expect("this node's lease is good")
}

/// Every object of a state as the command that makes it: the links, addresses, neighbours, FDB
/// entries, WireGuard peers and routes, with their destinations.
fn objects(state: &KernelState) -> BTreeSet<String> {
    plan(&KernelState::default(), state)
        .ops
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn vxlan_mac(lease: &Lease, family: Family) -> MacAddr {
    match (&lease.backend, family) {
        (
            BackendData::Vxlan {
                vtep_mac_ipv4: Some(mac),
                ..
            },
            Family::Ipv4,
        )
        | (
            BackendData::Vxlan {
                vtep_mac_ipv6: Some(mac),
                ..
            },
            Family::Ipv6,
        ) => *mac,
        _ => panic!("{} publishes no {family} VTEP MAC", lease.node_name),
    }
}

/// One table row: this node and its peers, one of which copies a value of `kept`.
struct Case {
    what: &'static str,
    kind: Kind,
    cluster: &'static str,
    local: Lease,
    peers: Vec<Lease>,
    /// The node that keeps the value: this node or the peer created first.
    kept: &'static str,
    /// The peer that claims it too and is dropped.
    dropped: &'static str,
    claim: Claim,
    held: Claim,
}

fn cases() -> Vec<Case> {
    use Kind::{HostGw, Vxlan, Wireguard};
    let v4 = "10.42.0.0/16";
    let dual = "10.42.0.0/16,fd00:42::/56";
    let local = |kind| node(kind, 1, "n1", 5, false);
    let n2 = |kind| node(kind, 2, "n2", 10, false);
    let cidr = |text: &str| Claim::PodCidr(text.parse().unwrap());
    let ip = |text: &str| Claim::PublicIp(text.parse().unwrap());
    let mac_v4 = |lease: &Lease| Claim::VtepMac {
        family: Family::Ipv4,
        mac: vxlan_mac(lease, Family::Ipv4),
    };
    let with = |mut lease: Lease, change: &dyn Fn(&mut Lease)| {
        change(&mut lease);
        lease
    };
    let copy_mac = |from: &Lease| {
        let mac = vxlan_mac(from, Family::Ipv4);
        move |l: &mut Lease| {
            l.backend = BackendData::Vxlan {
                vtep_mac_ipv4: Some(mac),
                vtep_mac_ipv6: None,
            }
        }
    };
    let set_ip = |text: &'static str| move |l: &mut Lease| l.public_ipv4 = text.parse().ok();
    let set_cidr = |text: &'static str| move |l: &mut Lease| l.ipv4_cidr = text.parse().ok();
    let set_key = |n: u8| {
        move |l: &mut Lease| {
            l.backend = BackendData::Wireguard {
                public_key: key(n),
                port_ipv4: 51820,
                port_ipv6: 51821,
            }
        }
    };
    vec![
        Case {
            what: "vxlan: a later lease with n2's VTEP MAC, named to sort before n2",
            kind: Vxlan,
            cluster: v4,
            local: local(Vxlan),
            peers: vec![
                n2(Vxlan),
                with(node(Vxlan, 9, "a-rogue", 20, false), &copy_mac(&n2(Vxlan))),
            ],
            kept: "n2",
            dropped: "a-rogue",
            claim: mac_v4(&n2(Vxlan)),
            held: mac_v4(&n2(Vxlan)),
        },
        Case {
            what: "vxlan: a later lease with n2's IPv6 VTEP MAC",
            kind: Vxlan,
            cluster: dual,
            local: node(Vxlan, 1, "n1", 5, true),
            peers: vec![node(Vxlan, 2, "n2", 10, true), {
                let mut rogue = node(Vxlan, 9, "z-rogue", 20, true);
                rogue.backend = BackendData::Vxlan {
                    vtep_mac_ipv4: Some(MacAddr([2, 0, 0, 0, 9, 4])),
                    vtep_mac_ipv6: Some(vxlan_mac(&node(Vxlan, 2, "n2", 10, true), Family::Ipv6)),
                };
                rogue
            }],
            kept: "n2",
            dropped: "z-rogue",
            claim: Claim::VtepMac {
                family: Family::Ipv6,
                mac: MacAddr([2, 0, 0, 0, 2, 6]),
            },
            held: Claim::VtepMac {
                family: Family::Ipv6,
                mac: MacAddr([2, 0, 0, 0, 2, 6]),
            },
        },
        Case {
            what: "vxlan: a later lease with n2's public IP",
            kind: Vxlan,
            cluster: v4,
            local: local(Vxlan),
            peers: vec![
                with(node(Vxlan, 9, "z-rogue", 20, false), &set_ip("192.0.2.2")),
                n2(Vxlan),
            ],
            kept: "n2",
            dropped: "z-rogue",
            claim: ip("192.0.2.2"),
            held: ip("192.0.2.2"),
        },
        Case {
            what: "host-gw: a later lease with n2's public IP as its next hop",
            kind: HostGw,
            cluster: v4,
            local: local(HostGw),
            peers: vec![
                with(node(HostGw, 9, "a-rogue", 20, false), &set_ip("192.0.2.2")),
                n2(HostGw),
            ],
            kept: "n2",
            dropped: "a-rogue",
            claim: ip("192.0.2.2"),
            held: ip("192.0.2.2"),
        },
        Case {
            what: "wireguard: a later lease with n2's public key",
            kind: Wireguard,
            cluster: v4,
            local: local(Wireguard),
            peers: vec![
                n2(Wireguard),
                with(node(Wireguard, 9, "z-rogue", 20, false), &set_key(2)),
            ],
            kept: "n2",
            dropped: "z-rogue",
            claim: Claim::WireguardKey(key(2)),
            held: Claim::WireguardKey(key(2)),
        },
        Case {
            what: "wireguard: a later lease with n2's public IP as its endpoint",
            kind: Wireguard,
            cluster: v4,
            local: local(Wireguard),
            peers: vec![
                n2(Wireguard),
                with(
                    node(Wireguard, 9, "a-rogue", 20, false),
                    &set_ip("192.0.2.2"),
                ),
            ],
            kept: "n2",
            dropped: "a-rogue",
            claim: ip("192.0.2.2"),
            held: ip("192.0.2.2"),
        },
        Case {
            what: "a later lease with a pod CIDR inside n2's (more specific routes)",
            kind: Vxlan,
            cluster: v4,
            local: local(Vxlan),
            peers: vec![
                n2(Vxlan),
                with(
                    node(Vxlan, 9, "z-rogue", 20, false),
                    &set_cidr("10.42.2.128/25"),
                ),
            ],
            kept: "n2",
            dropped: "z-rogue",
            claim: cidr("10.42.2.128/25"),
            held: cidr("10.42.2.0/24"),
        },
        Case {
            what: "host-gw: a later lease with a pod CIDR around an earlier peer's, both named after it",
            kind: HostGw,
            cluster: v4,
            local: local(HostGw),
            peers: vec![
                with(
                    node(HostGw, 9, "a-rogue", 7, false),
                    &set_cidr("10.42.2.0/23"),
                ),
                node(HostGw, 2, "z-first", 3, false),
            ],
            kept: "z-first",
            dropped: "a-rogue",
            claim: cidr("10.42.2.0/23"),
            held: cidr("10.42.2.0/24"),
        },
        Case {
            what: "this node's VTEP MAC, from a lease created before this node's",
            kind: Vxlan,
            cluster: v4,
            local: local(Vxlan),
            peers: vec![
                n2(Vxlan),
                with(
                    node(Vxlan, 9, "a-rogue", 1, false),
                    &copy_mac(&local(Vxlan)),
                ),
            ],
            kept: "n1",
            dropped: "a-rogue",
            claim: mac_v4(&local(Vxlan)),
            held: mac_v4(&local(Vxlan)),
        },
        Case {
            what: "this node's pod CIDR, from a lease of unknown age",
            kind: Vxlan,
            cluster: v4,
            local: local(Vxlan),
            peers: vec![
                with(
                    node(Vxlan, 9, "a-rogue", 0, false),
                    &set_cidr("10.42.1.0/24"),
                ),
                n2(Vxlan),
            ],
            kept: "n1",
            dropped: "a-rogue",
            claim: cidr("10.42.1.0/24"),
            held: cidr("10.42.1.0/24"),
        },
        Case {
            what: "a pod CIDR around this node's and n2's",
            kind: Wireguard,
            cluster: v4,
            local: local(Wireguard),
            peers: vec![
                n2(Wireguard),
                with(
                    node(Wireguard, 9, "a-rogue", 1, false),
                    &set_cidr("10.42.0.0/16"),
                ),
            ],
            kept: "n1",
            dropped: "a-rogue",
            claim: cidr("10.42.0.0/16"),
            held: cidr("10.42.1.0/24"),
        },
        Case {
            what: "this node's public IP",
            kind: HostGw,
            cluster: v4,
            local: local(HostGw),
            peers: vec![
                n2(HostGw),
                with(node(HostGw, 9, "a-rogue", 1, false), &set_ip("192.0.2.1")),
            ],
            kept: "n1",
            dropped: "a-rogue",
            claim: ip("192.0.2.1"),
            held: ip("192.0.2.1"),
        },
        Case {
            what: "this node's WireGuard key",
            kind: Wireguard,
            cluster: v4,
            local: local(Wireguard),
            peers: vec![
                n2(Wireguard),
                with(node(Wireguard, 9, "z-rogue", 1, false), &set_key(1)),
            ],
            kept: "n1",
            dropped: "z-rogue",
            claim: Claim::WireguardKey(key(1)),
            held: Claim::WireguardKey(key(1)),
        },
        Case {
            what: "leases of unknown age (an old server): name order decides, the same on every node",
            kind: Vxlan,
            cluster: v4,
            local: local(Vxlan),
            peers: vec![
                node(Vxlan, 2, "n2", 0, false),
                with(node(Vxlan, 9, "a-twin", 0, false), &copy_mac(&n2(Vxlan))),
            ],
            kept: "a-twin",
            dropped: "n2",
            claim: mac_v4(&n2(Vxlan)),
            held: mac_v4(&n2(Vxlan)),
        },
    ]
}

#[test]
fn the_first_claimant_keeps_its_objects_and_the_later_one_has_none() {
    for case in cases() {
        let what = case.what;
        let all = desired(case.kind, case.cluster, &case.local, &case.peers);
        assert_eq!(
            all.problems,
            [PeerProblem {
                node: case.dropped.to_owned(),
                reason: PeerProblemReason::Claimed {
                    claim: case.claim,
                    owner: case.kept.to_owned(),
                    held: case.held,
                },
            }],
            "{what}"
        );
        // The dropped peer adds nothing: the state is the one without it.
        let others: Vec<Lease> = case
            .peers
            .iter()
            .filter(|p| p.node_name != case.dropped)
            .cloned()
            .collect();
        let without = desired(case.kind, case.cluster, &case.local, &others);
        assert_eq!(all.state, without.state, "{what}");
        assert!(
            without.problems.is_empty(),
            "{what}: {:?}",
            without.problems
        );
        // The node that keeps the value has every object it has alone.
        if case.kept != case.local.node_name {
            let kept: Vec<Lease> = others
                .iter()
                .filter(|p| p.node_name == case.kept)
                .cloned()
                .collect();
            let alone = objects(&desired(case.kind, case.cluster, &case.local, &kept).state);
            let planned = objects(&all.state);
            let missing: Vec<&String> = alone.difference(&planned).collect();
            assert!(missing.is_empty(), "{what}: {missing:?}");
        }
    }
}

#[test]
fn the_problem_names_both_nodes_and_the_value() {
    let shown = |case: &Case| {
        desired(case.kind, case.cluster, &case.local, &case.peers).problems[0].to_string()
    };
    let cases = cases();
    assert_eq!(
        shown(&cases[0]),
        "node a-rogue is skipped: its IPv4 VTEP MAC 02:00:00:00:02:04 is already held by node n2, and a node may not take another's traffic; give a-rogue its own or delete it (weft-server node delete a-rogue)"
    );
    assert_eq!(
        shown(&cases[6]),
        "node z-rogue is skipped: its pod CIDR 10.42.2.128/25 overlaps pod CIDR 10.42.2.0/24 of node n2, and a node may not take another's traffic; give z-rogue its own or delete it (weft-server node delete z-rogue)"
    );
    assert_eq!(
        shown(&cases[12]),
        format!(
            "node z-rogue is skipped: its WireGuard public key {} is already held by node n1, and a node may not take another's traffic; give z-rogue its own or delete it (weft-server node delete z-rogue)",
            key(1)
        )
    );
}

/// Which of the victim's values a later lease copies.
#[derive(Debug, Clone, Copy)]
struct Copied {
    mac: bool,
    public_ip: bool,
    key: bool,
    /// 0: its own CIDR; 1: the victim's; 2: a half of the victim's; 3: around the victim's.
    cidr: u8,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop::sample::select(vec![Kind::Vxlan, Kind::HostGw, Kind::Wireguard])
}

/// Names that sort before and after one another in every way: no rule by name can help.
fn names(count: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::btree_set("[a-z]{1,3}(-[a-z0-9]{1,2})?", count)
        .prop_map(|names| names.into_iter().collect())
        .prop_shuffle()
}

/// A copy that copies something the backend uses.
fn copied(kind: Kind) -> impl Strategy<Value = Copied> {
    (any::<bool>(), any::<bool>(), any::<bool>(), 0u8..4)
        .prop_map(|(mac, public_ip, key, cidr)| Copied {
            mac,
            public_ip,
            key,
            cidr,
        })
        .prop_filter("the copy must copy something", move |c| {
            c.public_ip
                || c.cidr != 0
                || (kind == Kind::Vxlan && c.mac)
                || (kind == Kind::Wireguard && c.key)
        })
}

/// Applies `copied` from `victim` (node number `v`) to `rogue`.
fn copy(kind: Kind, copied: Copied, victim: &Lease, v: u8, rogue: &mut Lease) {
    if copied.public_ip {
        rogue.public_ipv4 = victim.public_ipv4;
    }
    match copied.cidr {
        1 => rogue.ipv4_cidr = victim.ipv4_cidr,
        2 => rogue.ipv4_cidr = format!("10.42.{v}.128/25").parse().ok(),
        3 => rogue.ipv4_cidr = format!("10.42.{}.0/23", v & !1).parse().ok(),
        _ => {}
    }
    match kind {
        Kind::Vxlan if copied.mac => rogue.backend = victim.backend.clone(),
        Kind::Wireguard if copied.key => rogue.backend = victim.backend.clone(),
        _ => {}
    }
}

proptest! {
    /// A later lease that copies any of an earlier node's values (this node's, or a peer's),
    /// whatever its name and wherever it comes in the list, changes nothing this node plans:
    /// the earlier node's FDB entries, routes and WireGuard peers keep their destinations, and
    /// the later one gets no object at all.
    #[test]
    fn a_later_duplicate_never_moves_the_first_claimants_traffic(
        (kind, copied) in kind().prop_flat_map(|kind| (Just(kind), copied(kind))),
        (names, revisions, victim, order) in (1usize..7).prop_flat_map(|peers| (
            names(peers + 2),
            prop::collection::vec(1u64..1000, peers + 1),
            0..=peers,
            Just((0..=peers).collect::<Vec<usize>>()).prop_shuffle(),
        )),
        later in 1u64..1000,
    ) {
        // This node is node 1, the peers are nodes 10, 12, .. (so a /23 around one holds no
        // other), the rogue is node 200.
        let peers = revisions.len() - 1;
        let number = |i: usize| 10 + 2 * i as u8;
        let local = node(kind, 1, &names[0], revisions[0], false);
        let honest: Vec<Lease> = (0..peers)
            .map(|i| node(kind, number(i), &names[i + 1], revisions[i + 1], false))
            .collect();
        // Victim 0 is this node: a copy of its values loses whatever its age.
        let (victim_lease, v, created) = match victim {
            0 => (local.clone(), 1, later.saturating_sub(500)),
            i => (honest[i - 1].clone(), number(i - 1), revisions[i] + later),
        };
        let mut rogue = node(kind, 200, &names[peers + 1], created, false);
        copy(kind, copied, &victim_lease, v, &mut rogue);

        let mut all: Vec<Lease> = honest.iter().cloned().chain([rogue.clone()]).collect();
        all = order.iter().map(|&i| all[i].clone()).collect();
        let cluster = "10.42.0.0/16";
        let with_rogue = desired(kind, cluster, &local, &all);
        let without = desired(kind, cluster, &local, &honest);
        prop_assert!(without.problems.is_empty(), "{:?}", without.problems);
        prop_assert_eq!(&with_rogue.state, &without.state);
        let reported: Vec<(String, String)> = with_rogue
            .problems
            .iter()
            .map(|p| match &p.reason {
                PeerProblemReason::Claimed { owner, .. } => (p.node.clone(), owner.clone()),
                other => (p.node.clone(), format!("{other:?}")),
            })
            .collect();
        prop_assert_eq!(reported, vec![(rogue.node_name.clone(), victim_lease.node_name.clone())]);
    }
}
