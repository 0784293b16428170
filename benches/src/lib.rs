//! The workloads that weft's criterion benches time, kept in a library so that ordinary unit
//! tests check them: a bench that panics or measures the wrong thing fails `cargo xtask ci`, not
//! only the next person who runs `cargo xtask bench`.
//!
//! It holds no timing code; `benches/*.rs` do that with criterion. The exception is
//! [`control_plane`], a swarm of simulated agents whose figures (per-watcher propagation times)
//! are no criterion measurement; `cargo xtask bench control-plane` runs it through
//! `examples/control_plane.rs`. Read [`Allocation`] first.

#![forbid(unsafe_code)]

pub mod control_plane;
pub mod fabric;
#[cfg(test)]
mod tests;

use std::fmt::Debug;
use std::hint::black_box;
use std::str::FromStr;

use weft_ipam::{FamilyCidr, NodeCidrAllocator};

/// Every /24 of a /8: 65,536 node CIDRs, the largest IPv4 cluster kube-controller-manager allows
/// at the default node mask size.
pub const IPV4_SLASH8: Allocation = Allocation {
    name: "ipv4 /8 into /24",
    cluster: "10.0.0.0/8",
    node_prefix_len: 24,
};

/// Every /64 of a /48: 65,536 node CIDRs at the default IPv6 node mask size.
pub const IPV6_SLASH48: Allocation = Allocation {
    name: "ipv6 /48 into /64",
    cluster: "fd00:42::/48",
    node_prefix_len: 64,
};

/// Allocating every node CIDR of one cluster CIDR, one after another.
#[derive(Debug, Clone, Copy)]
pub struct Allocation {
    /// The bench's name in criterion's report.
    pub name: &'static str,
    /// The cluster CIDR.
    pub cluster: &'static str,
    /// The node CIDR prefix length.
    pub node_prefix_len: u8,
}

// === impl Allocation ===

impl Allocation {
    /// A fresh allocator with every node CIDR free.
    pub fn allocator<C>(&self) -> NodeCidrAllocator<C>
    where
        C: FamilyCidr + FromStr,
        C::Err: Debug,
    {
        let cluster = self
            .cluster
            .parse()
            .expect("the workload's cluster CIDR parses");
        NodeCidrAllocator::new(cluster, self.node_prefix_len)
            .expect("the workload's sizes are valid")
    }
}

/// Allocates every free node CIDR of `allocator`, returning the last one handed out.
///
/// Panics if an allocation fails before the allocator reports none free: that is a bug in
/// weft-ipam, and a bench must not time a failure path.
pub fn allocate_all<C: FamilyCidr>(allocator: &mut NodeCidrAllocator<C>) -> Option<C> {
    let mut last = None;
    for _ in 0..allocator.free() {
        last = Some(black_box(
            allocator.allocate().expect("a free node CIDR is left"),
        ));
    }
    last
}
