//! Criterion benches of weft-ipam's node CIDR allocator: every /24 of a /8 and every /64 of a /48
//! (65,536 allocations each), reported per allocation through `Throughput::Elements`.
//!
//! Target (issue 2): at most 100 ns per allocation amortized, a whole /8 in at most 10 ms.

use criterion::measurement::WallTime;
use criterion::{
    BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main,
};
use std::fmt::Debug;
use std::str::FromStr;
use weft_benches::{Allocation, IPV4_SLASH8, IPV6_SLASH48, allocate_all};
use weft_ipam::{FamilyCidr, Ipv4Cidr, Ipv6Cidr};

fn node_cidr_allocator(c: &mut Criterion) {
    let mut group = c.benchmark_group("node_cidr_allocator");
    allocate_every_node_cidr::<Ipv4Cidr>(&mut group, IPV4_SLASH8);
    allocate_every_node_cidr::<Ipv6Cidr>(&mut group, IPV6_SLASH48);
    group.finish();
}

/// Times allocating every node CIDR of a fresh allocator; building and dropping it are not timed.
fn allocate_every_node_cidr<C>(group: &mut BenchmarkGroup<'_, WallTime>, workload: Allocation)
where
    C: FamilyCidr + FromStr,
    C::Err: Debug,
{
    let fresh = workload.allocator::<C>();
    group.throughput(Throughput::Elements(fresh.free()));
    group.bench_function(workload.name, |b| {
        b.iter_batched_ref(
            || fresh.clone(),
            |allocator| allocate_all(allocator),
            BatchSize::LargeInput,
        );
    });
}

criterion_group!(benches, node_cidr_allocator);
criterion_main!(benches);
