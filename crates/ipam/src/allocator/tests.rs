//! Tests of the node CIDR allocators.

use std::collections::HashSet;

use proptest::prelude::*;

use crate::{
    CidrList, DualStackAllocator, IpamError, Ipv4Cidr, Ipv6Cidr, NodeCidrAllocator, NodeCidrs,
};

fn v4(s: &str) -> Ipv4Cidr {
    s.parse().unwrap()
}

fn v6(s: &str) -> Ipv6Cidr {
    s.parse().unwrap()
}

#[test]
fn allocates_in_order_then_exhausts() {
    let mut a = NodeCidrAllocator::new(v4("10.42.0.0/22"), 24).unwrap();
    assert_eq!(a.capacity(), 4);
    let got: Vec<String> = (0..4).map(|_| a.allocate().unwrap().to_string()).collect();
    assert_eq!(
        got,
        [
            "10.42.0.0/24",
            "10.42.1.0/24",
            "10.42.2.0/24",
            "10.42.3.0/24"
        ]
    );
    assert_eq!(
        a.allocate().unwrap_err().to_string(),
        "cluster-cidr 10.42.0.0/22 is exhausted: all 4 node CIDRs of size /24 are allocated; use a larger cluster-cidr or a longer node CIDR mask size"
    );
}

#[test]
fn released_cidr_is_not_reused_at_once() {
    let mut a = NodeCidrAllocator::new(v4("10.42.0.0/16"), 24).unwrap();
    let first = a.allocate().unwrap();
    let second = a.allocate().unwrap();
    a.release(first).unwrap();
    let third = a.allocate().unwrap();
    assert_eq!(third, v4("10.42.2.0/24"));
    assert_ne!(third, first);
    assert!(a.is_allocated(second));
    assert!(!a.is_allocated(first));
    assert_eq!(a.allocated(), 2);
}

#[test]
fn wraps_around_to_freed_cidrs() {
    let mut a = NodeCidrAllocator::new(v4("10.42.0.0/16"), 24).unwrap();
    let all: Vec<_> = (0..256).map(|_| a.allocate().unwrap()).collect();
    a.release(all[3]).unwrap();
    a.release(all[200]).unwrap();
    // The candidate wrapped to 0 after the last allocation; the lowest free one comes first.
    assert_eq!(a.allocate().unwrap(), all[3]);
    assert_eq!(a.allocate().unwrap(), all[200]);
    assert!(a.allocate().is_err());
}

#[test]
fn occupy_and_release_errors() {
    let mut a = NodeCidrAllocator::new(v4("10.42.0.0/16"), 24).unwrap();
    a.occupy(v4("10.42.7.0/24")).unwrap();
    let msg = |r: Result<(), IpamError>| r.unwrap_err().to_string();
    assert_eq!(
        msg(a.occupy(v4("10.42.7.0/24"))),
        "node CIDR 10.42.7.0/24 is already allocated"
    );
    assert_eq!(
        msg(a.occupy(v4("10.43.0.0/24"))),
        "node CIDR 10.43.0.0/24 is outside cluster-cidr 10.42.0.0/16"
    );
    assert_eq!(
        msg(a.occupy(v4("10.0.0.0/8"))),
        "node CIDR 10.0.0.0/8 is outside cluster-cidr 10.42.0.0/16"
    );
    assert_eq!(
        msg(a.occupy(v4("10.42.8.0/25"))),
        "node CIDR 10.42.8.0/25 has the wrong size: node CIDRs of cluster-cidr 10.42.0.0/16 are /24"
    );
    assert_eq!(
        msg(a.release(v4("10.43.0.0/24"))),
        "node CIDR 10.43.0.0/24 is outside cluster-cidr 10.42.0.0/16"
    );
    // Releasing a free CIDR is harmless.
    a.release(v4("10.42.9.0/24")).unwrap();
    assert_eq!(a.allocated(), 1);
    // The allocator skips the occupied CIDR.
    let got: HashSet<_> = (0..255).map(|_| a.allocate().unwrap()).collect();
    assert!(!got.contains(&v4("10.42.7.0/24")));
}

#[test]
fn mask_size_errors() {
    assert_eq!(
        NodeCidrAllocator::new(v4("10.42.0.0/16"), 8)
            .unwrap_err()
            .to_string(),
        "node-cidr-mask-size-ipv4 8 does not fit cluster-cidr 10.42.0.0/16: it must be between 16 and 32 (at least the cluster prefix and at most 16 bits longer)"
    );
    assert_eq!(
        NodeCidrAllocator::new(v6("fd00:42::/48"), 96)
            .unwrap_err()
            .to_string(),
        "node-cidr-mask-size-ipv6 96 does not fit cluster-cidr fd00:42::/48: it must be between 48 and 64 (at least the cluster prefix and at most 16 bits longer)"
    );
}

#[test]
fn edge_sizes() {
    // A whole family as one node CIDR, and host routes as node CIDRs.
    let mut all = NodeCidrAllocator::new(v6("::/0"), 0).unwrap();
    assert_eq!(all.allocate().unwrap(), v6("::/0"));
    assert!(all.allocate().is_err());
    let mut hosts = NodeCidrAllocator::new(v6("fd00::/112"), 128).unwrap();
    assert_eq!(hosts.capacity(), 65_536);
    assert_eq!(hosts.allocate().unwrap(), v6("fd00::/128"));
    assert_eq!(hosts.allocate().unwrap(), v6("fd00::1/128"));
    let mut tail = NodeCidrAllocator::new(v4("255.255.255.0/24"), 32).unwrap();
    let last = (0..256).map(|_| tail.allocate().unwrap()).last().unwrap();
    assert_eq!(last, v4("255.255.255.255/32"));
}

#[test]
fn dual_stack_is_all_or_nothing() {
    let cluster = CidrList::parse("cluster-cidr", &["10.42.0.0/23,fd00:42::/63"]).unwrap();
    let mut a = DualStackAllocator::new(&cluster, 24, 64).unwrap();
    let first = a.allocate().unwrap();
    assert_eq!(
        first.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        ["10.42.0.0/24", "fd00:42::/64"]
    );
    // Exhaust IPv6 only, through occupy of the last IPv6 CIDR with a fresh IPv4 one.
    a.occupy(NodeCidrs {
        ipv4: None,
        ipv6: Some(v6("fd00:42:0:1::/64")),
    })
    .unwrap();
    let before = (a.ipv4().unwrap().allocated(), a.ipv6().unwrap().allocated());
    assert!(matches!(a.allocate(), Err(IpamError::Exhausted { .. })));
    assert_eq!(
        (a.ipv4().unwrap().allocated(), a.ipv6().unwrap().allocated()),
        before
    );
    // A lease with one bad half takes nothing.
    let bad = NodeCidrs {
        ipv4: Some(v4("10.42.1.0/24")),
        ipv6: Some(v6("fd00:99::/64")),
    };
    assert!(a.occupy(bad).is_err());
    assert!(!a.ipv4().unwrap().is_allocated(v4("10.42.1.0/24")));
    a.release(first).unwrap();
    assert_eq!(a.ipv4().unwrap().allocated(), 0);
}

#[test]
fn single_family_cluster_refuses_other_family() {
    let cluster = CidrList::parse("cluster-cidr", &["10.42.0.0/16"]).unwrap();
    let mut a = DualStackAllocator::new(&cluster, 24, 64).unwrap();
    let lease = a.allocate().unwrap();
    assert_eq!(lease.ipv6, None);
    assert_eq!(
        a.occupy(NodeCidrs {
            ipv4: None,
            ipv6: Some(v6("fd00::/64"))
        })
        .unwrap_err()
        .to_string(),
        "node CIDR fd00::/64 is IPv6, but the cluster has no IPv6 cluster-cidr"
    );
}

/// One step of a random allocator workload.
#[derive(Debug, Clone)]
enum Op {
    Allocate,
    /// Release the n-th live allocation (modulo the count).
    Release(usize),
    /// Occupy the node CIDR at this index (modulo capacity).
    Occupy(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Allocate),
        1 => any::<usize>().prop_map(Op::Release),
        1 => any::<u64>().prop_map(Op::Occupy),
    ]
}

proptest! {
    /// Allocations never overlap, lie inside the cluster CIDR, and occupy + allocate never hand
    /// out a CIDR twice; the allocator's count matches the live set.
    #[test]
    fn never_hands_out_twice(
        cluster_len in 16u8..=28, extra in 0u8..=6, base in any::<u32>(), ops in prop::collection::vec(op(), 1..300)
    ) {
        let node_len = (cluster_len + extra).min(32);
        let net = base >> (32 - cluster_len) << (32 - cluster_len);
        let cluster = Ipv4Cidr::new(net.into(), cluster_len).unwrap();
        let mut a = NodeCidrAllocator::new(cluster, node_len).unwrap();
        let mut live: Vec<Ipv4Cidr> = Vec::new();
        for op in ops {
            match op {
                Op::Allocate => match a.allocate() {
                    Ok(c) => {
                        prop_assert!(cluster.contains_cidr(c));
                        prop_assert_eq!(crate::FamilyCidr::prefix_len(c), node_len);
                        prop_assert!(!live.contains(&c));
                        live.push(c);
                    }
                    Err(IpamError::Exhausted { .. }) => prop_assert_eq!(live.len() as u64, a.capacity()),
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                },
                Op::Release(n) if !live.is_empty() => {
                    let c = live.swap_remove(n % live.len());
                    a.release(c).unwrap();
                }
                Op::Release(_) => {}
                Op::Occupy(i) => {
                    let offset = (i % a.capacity()) << (32 - node_len);
                    let c = Ipv4Cidr::new((net + offset as u32).into(), node_len).unwrap();
                    match a.occupy(c) {
                        Ok(()) => { prop_assert!(!live.contains(&c)); live.push(c); }
                        Err(IpamError::AlreadyAllocated { .. }) => prop_assert!(live.contains(&c)),
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                }
            }
            prop_assert_eq!(a.allocated(), live.len() as u64);
        }
        // After releasing everything, allocating until exhaustion yields every node CIDR once.
        for c in live.drain(..) {
            a.release(c).unwrap();
        }
        let mut seen = HashSet::new();
        while let Ok(c) = a.allocate() {
            prop_assert!(seen.insert(c));
        }
        prop_assert_eq!(seen.len() as u64, a.capacity());
    }

    /// IPv6 allocation over random /48../60 clusters stays inside and never repeats.
    #[test]
    fn ipv6_allocations_are_distinct(base in any::<u128>(), cluster_len in 48u8..=60, count in 1usize..500) {
        let net = base >> (128 - cluster_len) << (128 - cluster_len);
        let cluster = Ipv6Cidr::new(net.into(), cluster_len).unwrap();
        let mut a = NodeCidrAllocator::new(cluster, 64).unwrap();
        let mut seen = HashSet::new();
        for _ in 0..count.min(a.capacity() as usize) {
            let c = a.allocate().unwrap();
            prop_assert!(cluster.contains_cidr(c));
            prop_assert!(seen.insert(c));
        }
    }

    /// Dual-stack allocation takes one CIDR of each family or none, whatever the sizes.
    #[test]
    fn dual_stack_all_or_nothing(v4_extra in 0u8..=4, v6_extra in 0u8..=4, rounds in 1usize..40) {
        let cluster = CidrList::parse("cluster-cidr", &["10.42.0.0/24,fd00:42::/64"]).unwrap();
        let mut a = DualStackAllocator::new(&cluster, 24 + v4_extra, 64 + v6_extra).unwrap();
        for _ in 0..rounds {
            let before = (a.ipv4().unwrap().allocated(), a.ipv6().unwrap().allocated());
            match a.allocate() {
                Ok(l) => prop_assert!(l.ipv4.is_some() && l.ipv6.is_some()),
                Err(_) => prop_assert_eq!(
                    (a.ipv4().unwrap().allocated(), a.ipv6().unwrap().allocated()), before
                ),
            }
            prop_assert_eq!(a.ipv4().unwrap().allocated(), a.ipv6().unwrap().allocated());
        }
    }
}

/// Bounds (flannel's SubnetMin/SubnetMax): only node CIDRs between them are handed out, and
/// the allocator is exhausted when those are.
#[test]
fn bounded_allocation() {
    let a = NodeCidrAllocator::new(v4("10.42.0.0/16"), 24).unwrap();
    let mut a = a
        .bounded(Some(v4("10.42.8.0/24")), Some(v4("10.42.10.0/24")))
        .unwrap();
    assert_eq!(a.free(), 3);
    let got: Vec<String> = (0..3).map(|_| a.allocate().unwrap().to_string()).collect();
    assert_eq!(got, ["10.42.8.0/24", "10.42.9.0/24", "10.42.10.0/24"]);
    assert!(matches!(a.allocate(), Err(IpamError::Exhausted { .. })));
    // A lease from before the bounds still occupies its CIDR.
    a.occupy(v4("10.42.0.0/24")).unwrap();
    a.release(v4("10.42.9.0/24")).unwrap();
    assert_eq!(a.allocate().unwrap(), v4("10.42.9.0/24"));

    let a = NodeCidrAllocator::new(v4("10.42.0.0/16"), 24).unwrap();
    assert_eq!(
        a.clone()
            .bounded(Some(v4("10.42.9.0/24")), Some(v4("10.42.8.0/24")))
            .unwrap_err()
            .to_string(),
        "the lowest node CIDR to hand out, 10.42.9.0/24, comes after the highest, 10.42.8.0/24: swap them"
    );
    assert!(matches!(
        a.bounded(Some(v4("10.43.0.0/24")), None),
        Err(IpamError::OutsideCluster { .. })
    ));

    let cluster = CidrList::parse("cluster-cidr", &["10.42.0.0/16,fd00:42::/56"]).unwrap();
    let mut dual = DualStackAllocator::new(&cluster, 24, 64)
        .unwrap()
        .bounded(crate::NodeCidrBounds {
            ipv4: (Some(v4("10.42.200.0/24")), None),
            ipv6: (None, Some(v6("fd00:42:0:1::/64"))),
        })
        .unwrap();
    let first = dual.allocate().unwrap();
    assert_eq!(first.ipv4, Some(v4("10.42.200.0/24")));
    assert_eq!(first.ipv6, Some(v6("fd00:42::/64")));
    dual.allocate().unwrap();
    // The IPv6 bound allows two: the third lease gets nothing of either family.
    assert!(matches!(dual.allocate(), Err(IpamError::Exhausted { .. })));
    assert_eq!(dual.ipv4().unwrap().allocated(), 2);
}

proptest! {
    /// With any bounds, every allocation lies inside them, none repeats, and exactly the free
    /// node CIDRs inside them are handed out before the allocator is exhausted.
    #[test]
    fn bounded_allocations_stay_inside(
        extra in 0u8..=8, lo in any::<u64>(), span in any::<u64>(), occupied in prop::collection::vec(any::<u64>(), 0..20), start in 0u64..300
    ) {
        let cluster = v4("10.0.0.0/16");
        let node_len = 16 + extra;
        let capacity = 1u64 << extra;
        let first = lo % capacity;
        let last = first + span % (capacity - first);
        let at = |i: u64| Ipv4Cidr::new(u32::from(cluster.network()).wrapping_add((i << (32 - node_len)) as u32).into(), node_len).unwrap();
        let mut a = NodeCidrAllocator::new(cluster, node_len).unwrap();
        // Leases from before: some inside the bounds, some outside.
        let mut taken = HashSet::new();
        for i in occupied {
            let c = at(i % capacity);
            if taken.insert(c) {
                a.occupy(c).unwrap();
            }
        }
        // Move the round-robin start anywhere.
        let mut a = {
            let mut b = a.clone();
            for _ in 0..start % capacity { let _ = b.allocate().map(|c| b.release(c)); }
            b
        }.bounded(Some(at(first)), Some(at(last))).unwrap();
        let free_inside = (first..=last).filter(|i| !taken.contains(&at(*i))).count() as u64;
        prop_assert_eq!(a.free(), free_inside);
        let mut seen = HashSet::new();
        while let Ok(c) = a.allocate() {
            let index = (u32::from(c.network()) - u32::from(cluster.network())) as u64 >> (32 - node_len);
            prop_assert!((first..=last).contains(&index), "{} outside {}..={}", c, first, last);
            prop_assert!(!taken.contains(&c));
            prop_assert!(seen.insert(c));
        }
        prop_assert_eq!(seen.len() as u64, free_inside);
    }
}
