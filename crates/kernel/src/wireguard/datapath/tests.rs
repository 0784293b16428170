//! The hot path without I/O: a TUN segment split (tun-rs), encrypted into GSO runs, decrypted
//! by the peer and coalesced again (tun-rs's GRO), between two in-memory devices.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tun_rs::{GROTable, VIRTIO_NET_HDR_LEN, VirtioNetHdr, gso_split};

use super::{
    GSO_MAX_BYTES, GSO_MAX_SEGMENTS, Inbound, MAX_PACKET, Send, State, decrypt_datagram,
    encrypt_batch,
};
use crate::wireguard::hotpath::{
    A_AT, B_AT, HotPath, MSS, device, handshake, pod_v4, pod_v6, tcp_segment,
};

const C_AT: &str = "192.0.2.3:51820";

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], port))
}

/// Splits a TCP segment into packets as the TUN read does.
fn split(segment: (Vec<u8>, VirtioNetHdr)) -> Vec<Vec<u8>> {
    let (mut packet, header) = segment;
    let is_v6 = packet[0] >> 4 == 6;
    let mut bufs = vec![vec![0u8; MAX_PACKET]; 128];
    let mut sizes = vec![0usize; 128];
    let n = gso_split(&mut packet, header, &mut bufs, &mut sizes, 0, is_v6).unwrap_or(0);
    bufs.into_iter()
        .zip(sizes)
        .take(n)
        .map(|(mut b, len)| {
            b.truncate(len);
            b
        })
        .collect()
}

/// Encrypts `packets` at `state` into GSO sends.
fn encrypt(state: &State, packets: &[Vec<u8>], max_segments: usize) -> (Vec<u8>, Vec<Send>) {
    let mut out = vec![0u8; 512 * 1024];
    let mut sends = Vec::new();
    encrypt_batch(
        state,
        packets.iter().map(Vec::as_slice),
        &mut out,
        &mut sends,
        max_segments,
    );
    (out, sends)
}

/// Decrypts `sends` at `state`, as the kernel's GRO hands them over (each send's segments),
/// and coalesces the packets as the TUN write does. Returns the TUN's batch.
fn decrypt(state: &State, from: &str, out: &[u8], sends: &[Send]) -> Vec<Vec<u8>> {
    let mut inbound = Inbound::new();
    let from = from.parse().unwrap_or(addr(3));
    for send in sends {
        for datagram in out[send.bytes.clone()].chunks(send.segment) {
            decrypt_datagram(state, from, datagram, &mut inbound);
        }
    }
    let mut gro = GROTable::new();
    let coalesced = gro.apply_gro(inbound.batch(), VIRTIO_NET_HDR_LEN, true);
    assert!(coalesced.is_ok(), "GRO: {coalesced:?}");
    inbound.batch().to_vec()
}

/// The payload a coalesced TCP packet carries (after its virtio-net, IP and TCP headers).
fn tcp_payload(packet: &[u8]) -> &[u8] {
    let ip = &packet[VIRTIO_NET_HDR_LEN..];
    let ip_len = if ip[0] >> 4 == 4 { 20 } else { 40 };
    &ip[ip_len + 20..]
}

#[test]
fn a_segment_crosses_as_gso_runs_and_coalesces_back() {
    struct Case {
        name: &'static str,
        src: IpAddr,
        dst: IpAddr,
        payload: usize,
        packets: usize,
    }
    let cases = [
        Case {
            name: "IPv4, the last packet not full",
            src: IpAddr::V4(pod_v4(1)),
            dst: IpAddr::V4(pod_v4(2)),
            payload: 10 * MSS + 500,
            packets: 11,
        },
        Case {
            name: "IPv4, every packet full",
            src: IpAddr::V4(pod_v4(1)),
            dst: IpAddr::V4(pod_v4(2)),
            payload: 20 * MSS,
            packets: 20,
        },
        Case {
            name: "IPv6, the last packet not full",
            src: IpAddr::V6(pod_v6(1)),
            dst: IpAddr::V6(pod_v6(2)),
            payload: 7 * MSS + 1,
            packets: 8,
        },
    ];
    for case in cases {
        let nodes = [(1, A_AT), (2, B_AT)];
        let (a, b) = (device(1, &nodes), device(2, &nodes));
        handshake(&a, A_AT, 0, &b, B_AT);
        let segment = tcp_segment(case.src, case.dst, 40_000, 1000, case.payload);
        let original = segment.0[segment.1.hdr_len as usize..].to_vec();
        let packets = split(segment);
        assert_eq!(packets.len(), case.packets, "{}: split", case.name);

        let (out, sends) = encrypt(&a, &packets, GSO_MAX_SEGMENTS);
        assert_eq!(sends.len(), 1, "{}: one GSO send: {sends:?}", case.name);
        let send = &sends[0];
        assert_eq!(send.to, B_AT.parse().unwrap_or(addr(0)), "{}", case.name);
        let full = packets[0].len() + 32;
        assert_eq!(send.segment, full, "{}: segment size", case.name);
        assert_eq!(
            send.bytes.len().div_ceil(send.segment),
            case.packets,
            "{}: every packet in the send",
            case.name
        );

        let batch = decrypt(&b, A_AT, &out, &sends);
        let header = VirtioNetHdr::decode(&batch[0][..VIRTIO_NET_HDR_LEN]).unwrap_or_default();
        assert_eq!(
            tcp_payload(&batch[0]).len(),
            original.len(),
            "{}: the first buffer holds the whole segment again",
            case.name
        );
        assert!(
            tcp_payload(&batch[0]) == &original[..],
            "{}: payload",
            case.name
        );
        assert_eq!(usize::from(header.gso_size), MSS, "{}: GRO", case.name);
    }
}

#[test]
fn mixed_flows_in_one_batch_keep_their_peers_and_flows() {
    let nodes = [(1, A_AT), (2, B_AT), (3, C_AT)];
    let (a, b, c) = (device(1, &nodes), device(2, &nodes), device(3, &nodes));
    handshake(&a, A_AT, 0, &b, B_AT);
    handshake(&a, A_AT, 1, &c, C_AT);
    let src = IpAddr::V4(pod_v4(1));
    let to_b1 = split(tcp_segment(src, IpAddr::V4(pod_v4(2)), 40_001, 0, 3 * MSS));
    let to_b2 = split(tcp_segment(src, IpAddr::V4(pod_v4(2)), 40_002, 0, 3 * MSS));
    let to_c = split(tcp_segment(src, IpAddr::V4(pod_v4(3)), 40_003, 0, 2 * MSS));
    let nowhere = split(tcp_segment(
        src,
        IpAddr::V4(Ipv4Addr::new(10, 99, 0, 2)),
        40_004,
        0,
        MSS,
    ));
    // Two flows to b interleaved, then c, then nobody's, then b again.
    let batch: Vec<Vec<u8>> = [
        &to_b1[0],
        &to_b2[0],
        &to_b1[1],
        &to_b2[1],
        &to_c[0],
        &to_c[1],
        &nowhere[0],
        &to_b1[2],
        &to_b2[2],
    ]
    .into_iter()
    .cloned()
    .collect();
    let (out, sends) = encrypt(&a, &batch, GSO_MAX_SEGMENTS);
    let runs: Vec<(SocketAddr, usize)> = sends
        .iter()
        .map(|s| (s.to, s.bytes.len().div_ceil(s.segment)))
        .collect();
    let (b_at, c_at) = (
        B_AT.parse().unwrap_or(addr(0)),
        C_AT.parse().unwrap_or(addr(0)),
    );
    assert_eq!(
        runs,
        vec![(b_at, 4), (c_at, 2), (b_at, 2)],
        "runs per peer, in order"
    );

    let to_b: Vec<Send> = sends.iter().filter(|s| s.to == b_at).cloned().collect();
    let at_b = decrypt(&b, A_AT, &out, &to_b);
    let expected = split(tcp_segment(src, IpAddr::V4(pod_v4(2)), 40_001, 0, 3 * MSS));
    let whole: Vec<u8> = expected.iter().flat_map(|p| p[40..].to_vec()).collect();
    let flows: Vec<&[u8]> = at_b
        .iter()
        .map(|p| tcp_payload(p))
        .filter(|p| p.len() == 3 * MSS)
        .collect();
    assert_eq!(flows.len(), 2, "each flow to b coalesced into one packet");
    assert!(flows.iter().all(|p| *p == &whole[..]), "payloads intact");

    let to_c_sends: Vec<Send> = sends.iter().filter(|s| s.to == c_at).cloned().collect();
    let at_c = decrypt(&c, A_AT, &out, &to_c_sends);
    assert_eq!(tcp_payload(&at_c[0]).len(), 2 * MSS, "c gets its flow only");
}

#[test]
fn a_batch_past_one_send_splits_at_the_gso_limits() {
    // (packets of MSS, the socket's segment limit, the sends expected)
    let cases = [
        // 64 segments of 1452 bytes would pass 65,000 bytes: 44 per send.
        (100, GSO_MAX_SEGMENTS, vec![44, 44, 12]),
        // A socket that takes 8 segments per send.
        (20, 8, vec![8, 8, 4]),
        // No GSO at all.
        (3, 1, vec![1, 1, 1]),
    ];
    for (count, max_segments, expected) in cases {
        let nodes = [(1, A_AT), (2, B_AT)];
        let (a, b) = (device(1, &nodes), device(2, &nodes));
        handshake(&a, A_AT, 0, &b, B_AT);
        let payload = count * MSS;
        let mut packets = Vec::new();
        // gso_split takes at most 128 packets a segment; build the batch from 50-packet ones.
        let mut seq = 0u32;
        let mut left = payload;
        while left > 0 {
            let take = left.min(50 * MSS);
            packets.extend(split(tcp_segment(
                IpAddr::V4(pod_v4(1)),
                IpAddr::V4(pod_v4(2)),
                40_000,
                seq,
                take,
            )));
            seq += take as u32;
            left -= take;
        }
        let (out, sends) = encrypt(&a, &packets, max_segments);
        let sizes: Vec<usize> = sends
            .iter()
            .map(|s| s.bytes.len().div_ceil(s.segment))
            .collect();
        assert_eq!(sizes, expected, "{count} packets, {max_segments} a send");
        assert!(sends.iter().all(|s| s.bytes.len() <= GSO_MAX_BYTES));
        let at_b = decrypt(&b, A_AT, &out, &sends);
        let received: usize = at_b.iter().map(|p| tcp_payload(p).len()).sum::<usize>();
        assert!(
            received >= payload,
            "every byte arrives ({received} of {payload})"
        );
    }
}

#[test]
fn a_packet_from_outside_the_peers_allowed_ips_is_dropped() {
    let nodes = [(1, A_AT), (2, B_AT)];
    let (a, b) = (device(1, &nodes), device(2, &nodes));
    handshake(&a, A_AT, 0, &b, B_AT);
    // From a source a is not allowed to use at b (b takes 10.42.1.0/24 from a).
    let spoofed = split(tcp_segment(
        IpAddr::V4(Ipv4Addr::new(10, 42, 7, 2)),
        IpAddr::V4(pod_v4(2)),
        40_000,
        0,
        MSS,
    ));
    let honest = split(tcp_segment(
        IpAddr::V4(pod_v4(1)),
        IpAddr::V4(pod_v4(2)),
        40_000,
        0,
        MSS,
    ));
    let (out, sends) = encrypt(&a, &[spoofed[0].clone(), honest[0].clone()], 1);
    assert_eq!(sends.len(), 2);
    let at_b = decrypt(&b, A_AT, &out, &sends);
    assert_eq!(at_b.len(), 1, "only the honest packet reaches the TUN");
    assert_eq!(&at_b[0][VIRTIO_NET_HDR_LEN..], &honest[0][..]);
}

#[test]
fn the_bench_workload_crosses_a_64_kib_segment() {
    for ipv6 in [false, true] {
        let hot = HotPath::new(47 * MSS, ipv6);
        let mut buffers = hot.buffers();
        // 47 packets of 1452 bytes: 44 fill one send's 65,000 bytes, 3 more go in a second.
        assert_eq!(hot.encrypt(&mut buffers), 2, "ipv6 {ipv6}");
        assert_eq!(
            hot.decrypt(&mut buffers),
            47,
            "ipv6 {ipv6}: every packet decrypted"
        );
    }
}
