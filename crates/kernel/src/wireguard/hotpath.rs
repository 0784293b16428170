//! The userspace data path's hot path without I/O (feature `test-util`), for its criterion
//! bench and its unit tests: two in-memory devices with a session between them; a TCP segment
//! as a TUN with TSO hands it over, split, encrypted and framed into GSO runs at one end;
//! decrypted and coalesced (GRO) at the other.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use defguard_boringtun::noise::{Tunn, TunnResult};
use defguard_boringtun::x25519::{PublicKey, StaticSecret};
use tun_rs::{
    GROTable, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_LEN, VirtioNetHdr,
    gso_split,
};

use super::datapath::{
    GSO_MAX_SEGMENTS, Inbound, MAX_PACKET, Peer, Prefix, Send, State, decrypt_datagram,
    encrypt_batch,
};

/// Payload per packet: a 1420-byte pod MTU less 40 bytes of IPv4 and TCP headers.
pub const MSS: usize = 1380;
/// Where node 1's device listens.
pub(crate) const A_AT: &str = "192.0.2.1:51820";
/// Where node 2's device listens.
pub(crate) const B_AT: &str = "192.0.2.2:51820";

/// Two devices (nodes 1 and 2) with a session, and one TCP segment from node 1's pod to
/// node 2's.
pub struct HotPath {
    a: State,
    b: State,
    segment: Vec<u8>,
    header: VirtioNetHdr,
}

/// The buffers of one trip through the hot path.
pub struct Buffers {
    packets: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    segment: Vec<u8>,
    out: Vec<u8>,
    sends: Vec<Send>,
    inbound: Inbound,
    gro: GROTable,
}

// === impl HotPath ===

impl HotPath {
    /// A segment of `payload` bytes over IPv4 or IPv6.
    pub fn new(payload: usize, ipv6: bool) -> HotPath {
        let nodes = [(1, A_AT), (2, B_AT)];
        let (a, b) = (device(1, &nodes), device(2, &nodes));
        handshake(&a, A_AT, 0, &b, B_AT);
        let (src, dst) = if ipv6 {
            (IpAddr::V6(pod_v6(1)), IpAddr::V6(pod_v6(2)))
        } else {
            (IpAddr::V4(pod_v4(1)), IpAddr::V4(pod_v4(2)))
        };
        let (segment, header) = tcp_segment(src, dst, 40_000, 0, payload);
        HotPath {
            a,
            b,
            segment,
            header,
        }
    }

    /// Buffers for [`HotPath::encrypt`] and [`HotPath::decrypt`].
    pub fn buffers(&self) -> Buffers {
        Buffers {
            packets: vec![vec![0; MAX_PACKET]; 128],
            sizes: vec![0; 128],
            segment: self.segment.clone(),
            out: vec![0; 128 * (MAX_PACKET + 64)],
            sends: Vec::new(),
            inbound: Inbound::new(),
            gro: GROTable::new(),
        }
    }

    /// Splits the segment into packets and encrypts them into GSO runs at node 1; the
    /// number of sends.
    pub fn encrypt(&self, buffers: &mut Buffers) -> usize {
        buffers.segment.copy_from_slice(&self.segment);
        let is_v6 = self.segment[0] >> 4 == 6;
        let n = gso_split(
            &mut buffers.segment,
            self.header,
            &mut buffers.packets,
            &mut buffers.sizes,
            0,
            is_v6,
        )
        .unwrap_or(0);
        let packets = buffers.packets[..n]
            .iter()
            .zip(&buffers.sizes[..n])
            .map(|(p, &len)| &p[..len]);
        encrypt_batch(
            &self.a,
            packets,
            &mut buffers.out,
            &mut buffers.sends,
            GSO_MAX_SEGMENTS,
        );
        buffers.sends.len()
    }

    /// Decrypts what [`HotPath::encrypt`] left in `buffers` at node 2 and coalesces it; the
    /// packets the TUN would be written.
    pub fn decrypt(&self, buffers: &mut Buffers) -> usize {
        buffers.inbound = Inbound::new();
        let from = A_AT.parse().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        for send in &buffers.sends {
            for datagram in buffers.out[send.bytes.clone()].chunks(send.segment) {
                decrypt_datagram(&self.b, from, datagram, &mut buffers.inbound);
            }
        }
        match buffers
            .gro
            .apply_gro(buffers.inbound.batch(), VIRTIO_NET_HDR_LEN, true)
        {
            Ok(()) => buffers.inbound.count,
            Err(_) => 0,
        }
    }
}

/// Node `node`'s pod address.
pub(crate) fn pod_v4(node: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 42, node, 2)
}

/// Node `node`'s IPv6 pod address.
pub(crate) fn pod_v6(node: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, u16::from(node), 0, 0, 0, 0, 0, 2)
}

fn key(seed: u8) -> StaticSecret {
    StaticSecret::from([seed; 32])
}

/// Device `me` with a peer for every other node of `nodes` (node number, endpoint); node N
/// has the pod CIDRs 10.42.N.0/24 and fd00:N::/64.
pub(crate) fn device(me: u8, nodes: &[(u8, &str)]) -> State {
    let private = key(me);
    let public = PublicKey::from(&private);
    let peers = nodes
        .iter()
        .filter(|(n, _)| *n != me)
        .map(|&(n, at)| {
            let index = u32::from(n) * 16;
            Arc::new(Peer {
                public_key: PublicKey::from(&key(n)).to_bytes(),
                index,
                allowed_ips: vec![
                    Prefix {
                        addr: IpAddr::V4(Ipv4Addr::new(10, 42, n, 0)),
                        len: 24,
                    },
                    Prefix {
                        addr: IpAddr::V6(Ipv6Addr::new(0xfd00, u16::from(n), 0, 0, 0, 0, 0, 0)),
                        len: 64,
                    },
                ],
                keepalive: 0,
                preshared_key: None,
                tunnel: Arc::new(Mutex::new(Tunn::new(
                    private.clone(),
                    PublicKey::from(&key(n)),
                    None,
                    None,
                    index,
                    None,
                ))),
                endpoint: Arc::new(Mutex::new(at.parse().ok())),
            })
        })
        .collect();
    State {
        key: Some((private, public)),
        peers,
    }
}

/// Completes a handshake from `a` (at `a_at`, whose peer number `peer` is `b`) to `b`.
pub(crate) fn handshake(a: &State, a_at: &str, peer: usize, b: &State, b_at: &str) {
    let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
    let (a_at, b_at) = (
        a_at.parse().unwrap_or(unknown),
        b_at.parse().unwrap_or(unknown),
    );
    let mut buf = vec![0u8; 256];
    let TunnResult::WriteToNetwork(init) = a.peers[peer]
        .tunnel()
        .format_handshake_initiation(&mut buf, false)
    else {
        return;
    };
    let init = init.to_vec();
    let mut at_b = Inbound::new();
    decrypt_datagram(b, a_at, &init, &mut at_b);
    let mut at_a = Inbound::new();
    for (_, response) in &at_b.replies {
        decrypt_datagram(a, b_at, response, &mut at_a);
    }
    // The initiator's keepalive confirms the session to the responder.
    for (_, keepalive) in &at_a.replies {
        decrypt_datagram(b, a_at, keepalive, &mut Inbound::new());
    }
}

/// A TCP segment of `payload` bytes from `src` port `port` to `dst` port 5201 starting at
/// `seq` (as a TUN with TSO hands it over: one IP and TCP header, then the whole payload), and
/// its virtio-net header, segment size [`MSS`].
pub(crate) fn tcp_segment(
    src: IpAddr,
    dst: IpAddr,
    port: u16,
    seq: u32,
    payload: usize,
) -> (Vec<u8>, VirtioNetHdr) {
    let mut packet = Vec::new();
    let ip_len: u16 = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = u16::try_from(20 + 20 + payload).unwrap_or(u16::MAX);
            packet.extend_from_slice(&[0x45, 0]);
            packet.extend_from_slice(&total.to_be_bytes());
            packet.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]);
            packet.extend_from_slice(&s.octets());
            packet.extend_from_slice(&d.octets());
            20
        }
        (s, d) => {
            let (s, d) = (v6(s), v6(d));
            let len = u16::try_from(20 + payload).unwrap_or(u16::MAX);
            packet.extend_from_slice(&[0x60, 0, 0, 0]);
            packet.extend_from_slice(&len.to_be_bytes());
            packet.extend_from_slice(&[6, 64]);
            packet.extend_from_slice(&s.octets());
            packet.extend_from_slice(&d.octets());
            40
        }
    };
    packet.extend_from_slice(&port.to_be_bytes());
    packet.extend_from_slice(&5201u16.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&1u32.to_be_bytes());
    packet.extend_from_slice(&[0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    packet.extend((0..payload).map(|i| (i % 251) as u8));
    let header = VirtioNetHdr {
        // VIRTIO_NET_HDR_F_NEEDS_CSUM
        flags: 1,
        gso_type: if ip_len == 20 {
            VIRTIO_NET_HDR_GSO_TCPV4
        } else {
            VIRTIO_NET_HDR_GSO_TCPV6
        },
        hdr_len: ip_len + 20,
        gso_size: MSS as u16,
        csum_start: ip_len,
        csum_offset: 16,
    };
    (packet, header)
}

fn v6(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}
