//! Checks that the bench workloads do what their names say.

use std::collections::HashSet;

use weft_ipam::{Ipv4Cidr, Ipv6Cidr};

use super::*;

#[test]
fn ipv4_workload_hands_out_every_slash24_of_the_slash8() {
    let mut allocator = IPV4_SLASH8.allocator::<Ipv4Cidr>();
    assert_eq!(allocator.free(), 65_536);
    let last = allocate_all(&mut allocator);
    assert_eq!(last, Some("10.255.255.0/24".parse().unwrap()));
    assert_eq!(allocator.free(), 0);
    assert!(allocator.allocate().is_err());
}

#[test]
fn ipv6_workload_hands_out_every_slash64_of_the_slash48() {
    let mut allocator = IPV6_SLASH48.allocator::<Ipv6Cidr>();
    assert_eq!(allocator.free(), 65_536);
    let last = allocate_all(&mut allocator);
    assert_eq!(last, Some("fd00:42:0:ffff::/64".parse().unwrap()));
    assert_eq!(allocator.free(), 0);
}

#[test]
fn every_node_cidr_is_handed_out_once() {
    let mut allocator = IPV4_SLASH8.allocator::<Ipv4Cidr>();
    let all: HashSet<Ipv4Cidr> = (0..65_536).map(|_| allocator.allocate().unwrap()).collect();
    assert_eq!(all.len(), 65_536);
}

/// The fabric workload plans 3 objects per peer from scratch, and 3 operations for one peer
/// whose MAC changed (FDB delete, neighbour replace, FDB replace).
#[test]
fn fabric_workload_plans_what_it_claims() {
    let mut w = crate::fabric::FabricWorkload::new(300);
    let scratch = w.plan_from_scratch();
    // 3 per peer, plus the link, its address, the sysctl and the firewall table.
    assert_eq!(scratch.len(), 3 * 300 + 4);
    let before = w.desired();
    let changed = w.plan_one_changed(&before, 7);
    assert_eq!(changed.len(), 3, "{changed}");
}

/// The incremental plan of one changed peer is the full plan's.
#[test]
fn fabric_workload_plans_one_change_incrementally_as_in_full() {
    let mut full = crate::fabric::FabricWorkload::new(300);
    let mut incremental = crate::fabric::FabricWorkload::new(300);
    let mut before = full.desired();
    let mut desired = incremental.desired_peers();
    for i in [7, 8, 299] {
        let want = full.plan_one_changed(&before, i);
        let got = incremental.plan_one_changed_incremental(&mut desired, &before, i);
        assert_eq!(got, want);
        assert_eq!(got.len(), 3, "{got}");
        before = full.desired();
    }
}
