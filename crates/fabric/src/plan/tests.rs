//! Tests of the planner: it reaches the desired state from any observed one, does nothing when
//! they agree, and orders its operations safely.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use weft_ipam::{Cidr, Family};

use crate::state::{Address, FirewallTable, KernelState, Link, LinkKind, MasqMode, Route};
use crate::{MacAddr, Op, WgImplementation, WgPeer, WgPublicKey, plan};

const LINKS: [&str; 5] = [
    "flannel.1",
    "flannel-v6.1",
    "flannel-wg",
    "flannel-wg-v6",
    "eth0",
];
const WG_LINKS: [&str; 2] = ["flannel-wg", "flannel-wg-v6"];

fn link_name() -> impl Strategy<Value = String> {
    prop::sample::select(&LINKS[..]).prop_map(str::to_owned)
}

/// Addresses from a tiny universe, so observed and desired states overlap often.
fn ip() -> impl Strategy<Value = IpAddr> {
    (0u8..4).prop_map(|n| IpAddr::V4(Ipv4Addr::new(10, 42, n, 0)))
}

fn mac() -> impl Strategy<Value = MacAddr> {
    (0u8..3).prop_map(|n| MacAddr([2, 0, 0, 0, 0, n]))
}

fn cidr() -> impl Strategy<Value = Cidr> {
    (0u8..4).prop_map(|n| format!("10.42.{n}.0/24").parse().unwrap())
}

fn wg_key() -> impl Strategy<Value = WgPublicKey> {
    (0u8..3).prop_map(|n| WgPublicKey([n; 32]))
}

fn wg_peer() -> impl Strategy<Value = WgPeer> {
    (
        0u8..2,
        prop::collection::btree_set(cidr(), 0..2),
        prop::sample::select(vec![0u16, 25]),
    )
        .prop_map(|(host, allowed_ips, keepalive)| WgPeer {
            endpoint: std::net::SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, host)), 51820),
            allowed_ips,
            keepalive,
            preshared_key: host == 1,
        })
}

/// vxlan and WireGuard links under any of weft's names (a wireguard kind under a vxlan name is
/// as good a test of the planner as any).
fn link() -> impl Strategy<Value = Link> {
    prop_oneof![vxlan_link_strategy(), wg_link_strategy()]
}

fn wg_link_strategy() -> impl Strategy<Value = Link> {
    (
        link_name(),
        prop::sample::select(vec![1420u32, 1500]),
        any::<bool>(),
        any::<bool>(),
        wg_key(),
    )
        .prop_map(|(name, mtu, up, kernel, public_key)| Link {
            name,
            mtu,
            up,
            kind: LinkKind::Wireguard {
                implementation: if kernel {
                    WgImplementation::Kernel
                } else {
                    WgImplementation::Userspace
                },
                listen_port: 51820,
                public_key,
            },
        })
}

fn vxlan_link_strategy() -> impl Strategy<Value = Link> {
    (
        link_name(),
        prop::sample::select(vec![1450u32, 1500]),
        any::<bool>(),
        mac(),
        0u8..2,
    )
        .prop_map(|(name, mtu, up, mac, local)| Link {
            name,
            mtu,
            up,
            kind: LinkKind::Vxlan {
                vni: 1,
                port: 8472,
                gbp: false,
                local: IpAddr::V4(Ipv4Addr::new(192, 0, 2, local)),
                underlay: "eth0".into(),
                mac,
            },
        })
}

fn state() -> impl Strategy<Value = KernelState> {
    (
        prop::collection::vec(link(), 0..3),
        prop::collection::vec((link_name(), ip()), 0..3),
        prop::collection::vec(
            (cidr(), prop::option::of(ip()), link_name(), any::<bool>()),
            0..4,
        ),
        prop::collection::vec((link_name(), ip(), mac()), 0..4),
        prop::collection::vec((link_name(), mac(), ip()), 0..4),
        prop::collection::vec((0u8..2, prop::sample::select(vec!["0", "1"])), 0..2),
        prop::collection::vec((any::<bool>(), any::<bool>(), 0u8..2), 0..3),
        prop::collection::vec(
            (prop::sample::select(&WG_LINKS[..]), wg_key(), wg_peer()),
            0..4,
        ),
    )
        .prop_map(|(links, addrs, routes, neighs, fdb, sysctls, fw, peers)| {
            let mut s = KernelState::default();
            for l in links {
                s.links.insert(l.name.clone(), l);
            }
            for (link, addr) in addrs {
                s.addresses.insert(Address {
                    link,
                    addr,
                    prefix_len: 32,
                });
            }
            for (dst, gateway, dev, onlink) in routes {
                s.add_route(Route {
                    dst,
                    gateway,
                    dev,
                    onlink,
                });
            }
            for (dev, ip, mac) in neighs {
                s.neighbours.insert((dev, ip), mac);
            }
            for (dev, mac, ip) in fdb {
                s.fdb.insert((dev, mac), ip);
            }
            for (k, v) in sysctls {
                s.sysctls.insert(format!("net/k{k}"), v.to_owned());
            }
            for (v6, ipt, digest) in fw {
                let family = if v6 { Family::Ipv6 } else { Family::Ipv4 };
                let mode = if ipt {
                    MasqMode::Iptables
                } else {
                    MasqMode::Nftables
                };
                let table = FirewallTable {
                    digest: format!("d{digest}"),
                    script: String::new(),
                };
                s.firewall.insert((family, mode), table);
            }
            for (dev, key, peer) in peers {
                s.wg_peers.insert((dev.to_owned(), key), peer);
            }
            s
        })
}

/// Drops objects that the kernel would not hold: anything on a weft link that does not exist.
/// (eth0 is the external interface and always exists.)
fn consistent(mut s: KernelState) -> KernelState {
    let exists = |dev: &String| dev == "eth0" || s.links.contains_key(dev);
    let keep_addr: Vec<_> = s
        .addresses
        .iter()
        .filter(|a| exists(&a.link))
        .cloned()
        .collect();
    let keep_routes: Vec<_> = s
        .routes
        .values()
        .filter(|r| exists(&r.dev))
        .cloned()
        .collect();
    let keep_neigh: Vec<_> = s
        .neighbours
        .iter()
        .filter(|((d, _), _)| exists(d))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let keep_fdb: Vec<_> = s
        .fdb
        .iter()
        .filter(|((d, _), _)| exists(d))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    // Peers live only on WireGuard devices.
    let keep_peers: Vec<_> = s
        .wg_peers
        .iter()
        .filter(|((d, _), _)| {
            s.links
                .get(d)
                .is_some_and(|l| matches!(l.kind, LinkKind::Wireguard { .. }))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    s.links.remove("eth0");
    s.addresses = keep_addr.into_iter().collect();
    s.routes = keep_routes.into_iter().map(|r| (r.dst, r)).collect();
    s.neighbours = keep_neigh.into_iter().collect();
    s.fdb = keep_fdb.into_iter().collect();
    s.wg_peers = keep_peers.into_iter().collect();
    s
}

/// The phase of an operation; plans must never go back to an earlier phase.
fn phase(op: &Op) -> u8 {
    match op {
        Op::DeleteRoute(_) => 0,
        Op::DeleteNeighbour { .. } | Op::DeleteFdb { .. } | Op::DeleteWgPeer { .. } => 1,
        Op::DeleteAddress(_) => 2,
        Op::DeleteLink { .. } => 3,
        Op::DeleteFirewall { .. } => 4,
        Op::SetSysctl { .. } => 5,
        Op::AddLink(_) | Op::SetLink { .. } => 6,
        Op::AddAddress(_) => 7,
        Op::ReplaceNeighbour { .. } | Op::ReplaceFdb { .. } | Op::ReplaceWgPeer { .. } => 8,
        Op::ReplaceRoute(_) => 9,
        Op::ReplaceFirewall { .. } => 10,
    }
}

proptest! {
    /// Applying `plan(observed, desired)` to `observed` yields `desired` (sysctls that only the
    /// observed state has are kept: weft never resets a sysctl).
    #[test]
    fn plan_reaches_desired(observed in state(), desired in state()) {
        let (observed, desired) = (consistent(observed), consistent(desired));
        let p = plan(&observed, &desired);
        let mut reached = observed.clone();
        reached.apply_plan(&p);
        let mut expected = desired.clone();
        for (k, v) in &observed.sysctls {
            expected.sysctls.entry(k.clone()).or_insert_with(|| v.clone());
        }
        prop_assert_eq!(&reached, &expected);
        // And the plan from there is empty.
        prop_assert!(plan(&reached, &desired).is_empty());
    }

    /// A state that already matches needs no operations.
    #[test]
    fn plan_of_equal_states_is_empty(s in state()) {
        let s = consistent(s);
        prop_assert!(plan(&s, &s).is_empty());
    }

    /// Operations come in phase order: a route is removed before the neighbour it used and
    /// added after the neighbour and FDB entry it needs.
    #[test]
    fn plan_is_ordered(observed in state(), desired in state()) {
        let p = plan(&consistent(observed), &consistent(desired));
        let phases: Vec<u8> = p.ops.iter().map(phase).collect();
        prop_assert!(phases.windows(2).all(|w| w[0] <= w[1]), "{phases:?}");
    }

    /// Changing, adding or removing one WireGuard peer is one operation on that peer alone.
    #[test]
    fn one_peer_change_is_one_op(s in state(), key in wg_key(), peer in wg_peer(), remove in any::<bool>()) {
        let s = consistent(s);
        let Some(dev) = s
            .links
            .iter()
            .find(|(_, l)| matches!(l.kind, LinkKind::Wireguard { .. }))
            .map(|(name, _)| name.clone())
        else {
            return Ok(());
        };
        let mut changed = s.clone();
        let k = (dev.clone(), key);
        if remove {
            changed.wg_peers.remove(&k);
        } else {
            changed.wg_peers.insert(k.clone(), peer.clone());
        }
        let p = plan(&s, &changed);
        let expected: Vec<Op> = match (s.wg_peers.get(&k), remove) {
            (None, true) => vec![],
            (Some(_), true) => vec![Op::DeleteWgPeer { dev, public_key: key }],
            (Some(old), false) if *old == peer => vec![],
            _ => vec![Op::ReplaceWgPeer { dev, public_key: key, peer }],
        };
        prop_assert_eq!(p.ops, expected);
    }
}

fn vxlan_link(mac_last: u8) -> Link {
    Link {
        name: "flannel.1".into(),
        mtu: 1450,
        up: true,
        kind: LinkKind::Vxlan {
            vni: 1,
            port: 8472,
            gbp: false,
            local: "192.0.2.1".parse().unwrap(),
            underlay: "eth0".into(),
            mac: MacAddr([2, 0, 0, 0, 0, mac_last]),
        },
    }
}

#[test]
fn incompatible_link_is_recreated_with_its_objects() {
    let mut observed = KernelState::default();
    observed.links.insert("flannel.1".into(), vxlan_link(1));
    observed.neighbours.insert(
        ("flannel.1".into(), "10.42.1.0".parse().unwrap()),
        MacAddr([2, 0, 0, 0, 1, 1]),
    );
    let mut desired = observed.clone();
    desired.links.insert("flannel.1".into(), vxlan_link(2));
    let p = plan(&observed, &desired);
    let text = p.to_string();
    assert_eq!(
        text,
        "ip link del flannel.1\n\
         ip link add flannel.1 mtu 1450 up type vxlan id 1 local 192.0.2.1 dev eth0 dstport 8472 nolearning address 02:00:00:00:00:02\n\
         ip neigh replace 10.42.1.0 lladdr 02:00:00:00:01:01 dev flannel.1 nud permanent\n"
    );
}

#[test]
fn mtu_change_and_down_link_are_fixed_in_place() {
    let mut observed = KernelState::default();
    let mut down = vxlan_link(1);
    down.up = false;
    observed.links.insert("flannel.1".into(), down);
    let mut desired = KernelState::default();
    let mut smaller = vxlan_link(1);
    smaller.mtu = 1400;
    desired.links.insert("flannel.1".into(), smaller);
    assert_eq!(
        plan(&observed, &desired).to_string(),
        "ip link set flannel.1 mtu 1400 up\n"
    );
}

#[test]
fn plan_prints_removals_as_commands() {
    let mut observed = KernelState::default();
    observed.links.insert("flannel.1".into(), vxlan_link(1));
    let gone: Cidr = "10.42.9.0/24".parse().unwrap();
    observed.add_route(Route {
        dst: gone,
        gateway: Some("10.42.9.0".parse().unwrap()),
        dev: "flannel.1".into(),
        onlink: true,
    });
    observed.neighbours.insert(
        ("flannel.1".into(), "10.42.9.0".parse().unwrap()),
        MacAddr([2, 0, 0, 0, 0, 9]),
    );
    observed.fdb.insert(
        ("flannel.1".into(), MacAddr([2, 0, 0, 0, 0, 9])),
        "192.0.2.9".parse().unwrap(),
    );
    let mut desired = KernelState::default();
    desired.links.insert("flannel.1".into(), vxlan_link(1));
    assert_eq!(
        plan(&observed, &desired).to_string(),
        "ip route del 10.42.9.0/24 via 10.42.9.0 dev flannel.1 proto 87\n\
         ip neigh del 10.42.9.0 dev flannel.1\n\
         bridge fdb del 02:00:00:00:00:09 dev flannel.1 dst 192.0.2.9 self\n"
    );
}
