//! Criterion benches of the userspace WireGuard data path's hot path, without I/O: one TCP
//! segment of 47 full packets (64 KiB as a TUN with TSO hands it over) split, encrypted and
//! framed into GSO runs; and the same packets decrypted and coalesced again (GRO), for IPv4 and
//! IPv6, reported in bytes of TCP payload.
//!
//! Issue 18's figure is end to end (`cargo xtask bench wireguard`); this one shows what the
//! cipher and framing cost on one core, the ceiling of each direction's thread.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use weft_kernel::hotpath::{HotPath, MSS};

/// Packets in a 64 KiB segment at a 1420-byte MTU.
const PACKETS: usize = 47;

fn hot_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("wireguard_hot_path");
    group.throughput(Throughput::Bytes((PACKETS * MSS) as u64));
    for (family, ipv6) in [("ipv4", false), ("ipv6", true)] {
        let hot = HotPath::new(PACKETS * MSS, ipv6);
        let mut buffers = hot.buffers();
        group.bench_function(format!("encrypt_and_frame_{family}"), |b| {
            b.iter(|| hot.encrypt(&mut buffers));
        });
        group.bench_function(format!("decrypt_and_coalesce_{family}"), |b| {
            b.iter_batched_ref(
                || {
                    let mut buffers = hot.buffers();
                    hot.encrypt(&mut buffers);
                    buffers
                },
                |buffers| hot.decrypt(buffers),
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
