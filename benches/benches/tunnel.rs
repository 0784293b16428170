//! Criterion benches of weft-tunnel's protocol with no sockets: frame encode and decode,
//! reported in bytes per second through `Throughput::Bytes`; 64 MiB through one stream of an
//! in-memory `Pair`; a 64-byte request/response through it. The whole tunnel on loopback (real
//! server and agent processes, TLS, beside direct TCP) is weft-tunnel's `tunnel_bench` example;
//! `cargo xtask bench tunnel` runs both.
//!
//! Targets (issue 7): frame encode and decode in GB/s; the in-memory stream far above what
//! loopback TCP gives, so the protocol is never the bottleneck.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use weft_tunnel::pair::Pair;
use weft_tunnel::proto::{Frame, StreamId, Target};

fn frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("tunnel_frame");
    for payload in [64usize, 32 * 1024] {
        let frame = Frame::Data {
            stream: StreamId(2),
            payload: Bytes::from(vec![0x5a; payload]),
        };
        let mut encoded = Vec::new();
        frame.encode(&mut encoded);
        group.throughput(Throughput::Bytes(encoded.len() as u64));

        let mut buf = Vec::with_capacity(encoded.len());
        group.bench_function(format!("encode data {payload} B"), |b| {
            b.iter(|| {
                buf.clear();
                black_box(&frame).encode(&mut buf);
                black_box(buf.len())
            });
        });
        let message = Bytes::from(encoded);
        group.bench_function(format!("decode data {payload} B"), |b| {
            b.iter(|| Frame::decode(black_box(&message)));
        });
    }
    let dial = Frame::Dial {
        stream: StreamId(2),
        window: 256 * 1024,
        target: Target::new("10.42.3.17", 10250).expect("a valid target"),
    };
    let mut encoded = Vec::new();
    dial.encode(&mut encoded);
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    let mut buf = Vec::new();
    group.bench_function("encode dial", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&dial).encode(&mut buf);
            black_box(buf.len())
        });
    });
    let message = Bytes::from(encoded);
    group.bench_function("decode dial", |b| {
        b.iter(|| Frame::decode(black_box(&message)));
    });
    group.finish();
}

fn streams(c: &mut Criterion) {
    const TOTAL: u64 = 64 * 1024 * 1024;
    let mut group = c.benchmark_group("tunnel_pair");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(TOTAL));
    group.bench_function("one stream 64 MiB", |b| {
        b.iter_batched_ref(
            || {
                let mut pair = Pair::default();
                let stream = pair.open("10.0.0.1", 10250);
                (pair, stream)
            },
            |(pair, stream)| assert_eq!(pair.transfer(*stream, TOTAL), TOTAL),
            BatchSize::LargeInput,
        );
    });

    group.sample_size(50);
    group.throughput(Throughput::Elements(1));
    let mut pair = Pair::default();
    let stream = pair.open("10.0.0.1", 10250);
    let request = [0x42u8; 64];
    group.bench_function("64 B request and response", |b| {
        b.iter(|| {
            pair.server.write_available(stream, &request);
            pair.drive();
            let (got, _) = pair.agent.read_available(stream);
            pair.agent.write_available(stream, &got);
            pair.drive();
            let (answer, _) = pair.server.read_available(stream);
            pair.server.events.clear();
            pair.agent.events.clear();
            black_box(answer.len())
        });
    });
    group.finish();
}

criterion_group!(benches, frames, streams);
criterion_main!(benches);
