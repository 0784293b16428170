//! Planning for 5,000 vxlan peers: from scratch, and after one peer changed, in full and the
//! agent's incremental way (`cargo xtask bench plan`; `cargo xtask bench fabric` applies them
//! to a real kernel).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weft_benches::fabric::FabricWorkload;

const PEERS: usize = 5_000;

fn plan_from_scratch(c: &mut Criterion) {
    let workload = FabricWorkload::new(PEERS);
    let mut group = c.benchmark_group("fabric plan");
    group.throughput(Throughput::Elements(PEERS as u64));
    group.bench_function("5000 peers from scratch", |b| {
        b.iter(|| black_box(workload.plan_from_scratch()))
    });
    group.finish();
}

fn plan_one_changed(c: &mut Criterion) {
    let mut workload = FabricWorkload::new(PEERS);
    let before = workload.desired();
    let mut i = 0;
    c.bench_function("fabric plan/one changed peer among 5000", |b| {
        b.iter(|| {
            i = (i + 1) % PEERS;
            black_box(workload.plan_one_changed(&before, i))
        })
    });
}

fn plan_one_changed_incremental(c: &mut Criterion) {
    let mut workload = FabricWorkload::new(PEERS);
    let before = workload.desired();
    let mut desired = workload.desired_peers();
    let mut i = 0;
    c.bench_function(
        "fabric plan/one changed peer among 5000, incremental",
        |b| {
            b.iter(|| {
                i = (i + 1) % PEERS;
                black_box(workload.plan_one_changed_incremental(&mut desired, &before, i))
            })
        },
    );
}

criterion_group!(
    benches,
    plan_from_scratch,
    plan_one_changed,
    plan_one_changed_incremental
);
criterion_main!(benches);
