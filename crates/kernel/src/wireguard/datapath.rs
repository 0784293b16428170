//! weft's userspace WireGuard data path: a thin I/O shell around boringtun's sans-IO protocol
//! core (`noise::Tunn`, one per peer), moving packets in batches.
//!
//! - The TUN is opened with a virtio-net header and TSO/USO offloads (tun-rs), so one read
//!   hands over a TCP or UDP segment of up to 64 KiB, which tun-rs splits into packets of the
//!   TUN's MTU; one write takes a batch that tun-rs first coalesces per flow (GRO).
//! - The underlay is one UDP socket (quinn-udp): the encrypted packets of a batch that go to
//!   the same peer leave in one `sendmsg` with `UDP_SEGMENT` (GSO), and `recvmmsg` with
//!   `UDP_GRO` brings up to 64 datagrams per buffer. Its buffers are large (`SO_RCVBUFFORCE`
//!   where root), so a burst from a kernel peer does not overflow it.
//! - Two threads: one reads the TUN and encrypts (and runs the timers), one reads the socket
//!   and decrypts. A peer's packets stay in order because one thread handles each direction.
//!   On two cores (the norm for an agent) both directions then run in parallel with the kernel
//!   work of the packets; more threads would only contend for the same cores.
//!
//! The configuration is [`State`]: replaced whole under a lock by `set` (rare), read once per
//! batch by the threads. A peer's session (`Tunn`) and endpoint outlive a change of its
//! configuration.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::fd::AsFd as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use defguard_boringtun::noise::handshake::parse_handshake_anon;
use defguard_boringtun::noise::{Packet, Tunn, TunnResult};
use defguard_boringtun::x25519::{PublicKey, StaticSecret};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use tun_rs::{DeviceBuilder, GROTable, IDEAL_BATCH_SIZE, SyncDevice, VIRTIO_NET_HDR_LEN};

/// The largest IP packet the device carries (a jumbo underlay's WireGuard MTU fits).
pub(crate) const MAX_PACKET: usize = 9216;
/// What WireGuard adds to a packet at most: 16 bytes of header, 16 of tag, 15 of padding.
const OVERHEAD: usize = 16 + 16 + 15;
/// The most bytes one GSO send carries (a UDP datagram's payload over IPv6 is at most 65,487).
pub(crate) const GSO_MAX_BYTES: usize = 65_000;
/// The most segments one GSO send carries (the kernel's `UDP_MAX_SEGMENTS`).
pub(crate) const GSO_MAX_SEGMENTS: usize = 64;
/// How long a thread waits for its descriptor before it looks at the stop flag and timers.
const POLL_INTERVAL: u16 = 100;
/// How often every peer's timers run (handshakes, keepalives, expiry).
const TIMER_INTERVAL: Duration = Duration::from_millis(250);
/// The underlay socket's buffers.
const SOCKET_BUFFER: usize = 8 << 20;
/// Buffers per `recvmmsg` (each takes up to 64 coalesced datagrams).
const RECV_BUFFERS: usize = 8;
/// The size of one receive buffer.
const RECV_BUFFER: usize = 1 << 16;

/// A running device: its TUN, its socket and the two threads between them. Dropping it stops
/// the threads and closes the TUN, which removes it.
pub(crate) struct Datapath {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    stop: AtomicBool,
    tun: SyncDevice,
    underlay: RwLock<Arc<Underlay>>,
    state: RwLock<Arc<State>>,
}

/// The underlay UDP socket.
pub(crate) struct Underlay {
    socket: UdpSocket,
    udp: UdpSocketState,
    /// An IPv6 socket that also carries IPv4 (as mapped addresses).
    dual_stack: bool,
    port: u16,
}

/// The device's configuration: its key and peers.
#[derive(Default)]
pub(crate) struct State {
    /// The private key and its public key.
    pub(crate) key: Option<(StaticSecret, PublicKey)>,
    /// The peers, in the order they were added.
    pub(crate) peers: Vec<Arc<Peer>>,
}

/// One peer.
pub(crate) struct Peer {
    pub(crate) public_key: [u8; 32],
    /// The index part of the receiver indexes of its sessions (`index << 8` and up).
    pub(crate) index: u32,
    pub(crate) allowed_ips: Vec<Prefix>,
    pub(crate) keepalive: u16,
    pub(crate) preshared_key: Option<[u8; 32]>,
    pub(crate) tunnel: Arc<Mutex<Tunn>>,
    pub(crate) endpoint: Arc<Mutex<Option<SocketAddr>>>,
}

/// An address prefix (an allowed IP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prefix {
    pub(crate) addr: IpAddr,
    pub(crate) len: u8,
}

/// Encrypted packets bound for one address, back to back in a buffer: one GSO send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Send {
    pub(crate) to: SocketAddr,
    pub(crate) bytes: Range<usize>,
    /// The size of every packet but the last, which may be shorter.
    pub(crate) segment: usize,
}

// === impl Datapath ===

impl Datapath {
    /// Creates the TUN `name` (down) and the socket on `port` in the calling thread's network
    /// namespace, and starts the threads.
    pub(crate) fn start(name: &str, port: u16) -> io::Result<Datapath> {
        let tun = DeviceBuilder::new()
            .name(name)
            .enable(false)
            .with(|b| {
                b.offload(true);
            })
            .build_sync()?;
        tun.set_nonblocking(true)?;
        let underlay = Underlay::bind(port)?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            tun,
            underlay: RwLock::new(Arc::new(underlay)),
            state: RwLock::new(Arc::new(State::default())),
        });
        let mut threads = Vec::new();
        let outbound = Arc::clone(&shared);
        threads.push(
            std::thread::Builder::new()
                .name(format!("{name}-tx"))
                .spawn(move || outbound_loop(&outbound))?,
        );
        let inbound = Arc::clone(&shared);
        threads.push(
            std::thread::Builder::new()
                .name(format!("{name}-rx"))
                .spawn(move || inbound_loop(&inbound))?,
        );
        Ok(Datapath { shared, threads })
    }

    /// The configuration now.
    pub(crate) fn state(&self) -> Arc<State> {
        read(&self.shared.state)
    }

    /// Replaces the configuration.
    pub(crate) fn set_state(&self, state: State) {
        *self
            .shared
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(state);
    }

    /// The port the socket listens on.
    pub(crate) fn port(&self) -> u16 {
        read(&self.shared.underlay).port
    }

    /// Moves the socket to `port` (a no-op when it is there).
    pub(crate) fn set_port(&self, port: u16) -> io::Result<()> {
        if self.port() == port {
            return Ok(());
        }
        let underlay = Underlay::bind(port)?;
        *self
            .shared
            .underlay
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(underlay);
        Ok(())
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

// === impl Underlay ===

impl Underlay {
    /// A socket on `port` for IPv6 and IPv4 (IPv4 alone where the host has no IPv6), with
    /// large buffers.
    pub(crate) fn bind(port: u16) -> io::Result<Underlay> {
        let (socket, dual_stack) = match dual_stack_socket(port) {
            Ok(socket) => (socket, true),
            Err(_) => (
                UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, port))?,
                false,
            ),
        };
        let udp = UdpSocketState::new(UdpSockRef::from(&socket))?;
        // Where root, past net.core.rmem_max; elsewhere as much as that allows.
        let fd = socket.as_fd();
        if nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::RcvBufForce, &SOCKET_BUFFER)
            .is_err()
        {
            let _ = udp.set_recv_buffer_size(UdpSockRef::from(&socket), SOCKET_BUFFER);
        }
        if nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::SndBufForce, &SOCKET_BUFFER)
            .is_err()
        {
            let _ = udp.set_send_buffer_size(UdpSockRef::from(&socket), SOCKET_BUFFER);
        }
        let port = socket.local_addr()?.port();
        Ok(Underlay {
            socket,
            udp,
            dual_stack,
            port,
        })
    }

    /// The most segments one send may carry.
    fn max_segments(&self) -> usize {
        self.udp.max_gso_segments().clamp(1, GSO_MAX_SEGMENTS)
    }

    /// Sends `bytes` (segments of `segment` bytes) to `to`, waiting while the socket is full.
    /// A send the kernel refuses is dropped, as a lost packet.
    fn send(&self, to: SocketAddr, bytes: &[u8], segment: usize) {
        let destination = match (to, self.dual_stack) {
            (SocketAddr::V4(v4), true) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => to,
        };
        let transmit = Transmit {
            destination,
            ecn: None,
            contents: bytes,
            segment_size: (bytes.len() > segment).then_some(segment),
            src_ip: None,
        };
        for _ in 0..50 {
            match self.udp.try_send(UdpSockRef::from(&self.socket), &transmit) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLOUT)];
                    let _ = poll(&mut fds, PollTimeout::from(POLL_INTERVAL));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => return,
            }
        }
    }
}

fn dual_stack_socket(port: u16) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV6,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_only_v6(false)?;
    socket.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)).into())?;
    Ok(socket.into())
}

// === impl State ===

impl State {
    /// The peer whose allowed IPs hold `addr` most specifically.
    pub(crate) fn route(&self, addr: IpAddr) -> Option<&Arc<Peer>> {
        self.peers
            .iter()
            .filter_map(|peer| {
                peer.allowed_ips
                    .iter()
                    .filter(|p| p.contains(addr))
                    .map(|p| p.len)
                    .max()
                    .map(|len| (len, peer))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, peer)| peer)
    }

    /// The peer whose sessions have receiver index `receiver` (`index << 8 | session`).
    fn by_receiver(&self, receiver: u32) -> Option<&Arc<Peer>> {
        self.peers.iter().find(|p| p.index == receiver >> 8)
    }

    /// The peer that sent `datagram`, by its receiver index or, for a handshake initiation,
    /// by the static key inside it.
    fn sender(&self, datagram: &[u8]) -> Option<&Arc<Peer>> {
        match Tunn::parse_incoming_packet(datagram).ok()? {
            Packet::HandshakeInit(init) => {
                let (private, public) = self.key.as_ref()?;
                let half = parse_handshake_anon(private, public, &init).ok()?;
                self.peers
                    .iter()
                    .find(|p| p.public_key == half.peer_static_public)
            }
            Packet::HandshakeResponse(p) => self.by_receiver(p.receiver_idx),
            Packet::PacketCookieReply(p) => self.by_receiver(p.receiver_idx),
            Packet::PacketData(p) => self.by_receiver(p.receiver_idx),
        }
    }
}

// === impl Peer ===

impl Peer {
    /// Whether `addr` is one of the peer's allowed IPs.
    pub(crate) fn allows(&self, addr: IpAddr) -> bool {
        self.allowed_ips.iter().any(|p| p.contains(addr))
    }

    /// The peer's session state.
    pub(crate) fn tunnel(&self) -> MutexGuard<'_, Tunn> {
        lock(&self.tunnel)
    }

    /// Where the peer was last heard from, or was configured to be.
    pub(crate) fn endpoint(&self) -> Option<SocketAddr> {
        *lock(&self.endpoint)
    }
}

// === impl Prefix ===

impl Prefix {
    /// Whether `addr` is inside the prefix.
    pub(crate) fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let len = u32::from(self.len.min(32));
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let len = u32::from(self.len.min(128));
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

// === the outbound direction: TUN -> encrypt -> UDP ===

/// What the outbound thread keeps between batches.
pub(crate) struct Outbound {
    /// The raw read (virtio-net header and a segment of up to 64 KiB).
    read: Vec<u8>,
    /// The packets a read splits into.
    packets: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    /// Encrypted packets, back to back.
    pub(crate) out: Vec<u8>,
    pub(crate) sends: Vec<Send>,
}

impl Outbound {
    pub(crate) fn new() -> Outbound {
        Outbound {
            read: vec![0; VIRTIO_NET_HDR_LEN + 65_535],
            packets: vec![vec![0; MAX_PACKET]; IDEAL_BATCH_SIZE],
            sizes: vec![0; IDEAL_BATCH_SIZE],
            out: vec![0; IDEAL_BATCH_SIZE * (MAX_PACKET + OVERHEAD) + 2 * MAX_PACKET],
            sends: Vec::new(),
        }
    }
}

fn outbound_loop(shared: &Shared) {
    let mut batch = Outbound::new();
    let mut last_timers = Instant::now();
    while !shared.stop.load(Ordering::Acquire) {
        let mut fds = [PollFd::new(shared.tun.as_fd(), PollFlags::POLLIN)];
        let readable = poll(&mut fds, PollTimeout::from(POLL_INTERVAL)).unwrap_or(0) > 0;
        if last_timers.elapsed() >= TIMER_INTERVAL {
            last_timers = Instant::now();
            run_timers(shared, &mut batch.out);
        }
        if !readable {
            continue;
        }
        // Drain what is there, a bounded number of reads before looking at the timers again.
        for _ in 0..64 {
            let n = match shared.tun.recv_multiple(
                &mut batch.read,
                &mut batch.packets,
                &mut batch.sizes,
                0,
            ) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // A malformed segment: drop it.
                Err(_) => continue,
            };
            let state = read(&shared.state);
            let underlay = read(&shared.underlay);
            let packets = batch.packets[..n]
                .iter()
                .zip(&batch.sizes[..n])
                .map(|(p, &len)| &p[..len]);
            encrypt_batch(
                &state,
                packets,
                &mut batch.out,
                &mut batch.sends,
                underlay.max_segments(),
            );
            for send in &batch.sends {
                underlay.send(send.to, &batch.out[send.bytes.clone()], send.segment);
            }
        }
    }
}

/// Encrypts `packets` (one TUN read's, in order) for their peers into `out`, and lists in
/// `sends` the GSO sends that carry them: each a run of packets to one address, all the same
/// size but the last, at most `max_segments` and [`GSO_MAX_BYTES`] long. A packet no peer
/// takes is dropped; one whose peer has no session yet is queued in its `Tunn`, which then
/// starts a handshake (a send of its own).
pub(crate) fn encrypt_batch<'a>(
    state: &State,
    packets: impl Iterator<Item = &'a [u8]>,
    out: &mut [u8],
    sends: &mut Vec<Send>,
    max_segments: usize,
) {
    sends.clear();
    let mut cursor = 0;
    // The peer of the previous packet, its lock and endpoint, so a run costs one lookup.
    let mut current: Option<(IpAddr, Arc<Peer>)> = None;
    let mut open: Option<Send> = None;
    for packet in packets {
        let Some(dst) = Tunn::dst_address(packet) else {
            continue;
        };
        let peer = match &current {
            Some((addr, peer)) if *addr == dst => Arc::clone(peer),
            _ => {
                let Some(peer) = state.route(dst) else {
                    continue;
                };
                current = Some((dst, Arc::clone(peer)));
                Arc::clone(peer)
            }
        };
        let Some(to) = peer.endpoint() else {
            continue;
        };
        if out.len() - cursor < packet.len() + OVERHEAD + 148 {
            break;
        }
        let (len, data) = match peer.tunnel().encapsulate(packet, &mut out[cursor..]) {
            TunnResult::WriteToNetwork(p) => {
                let data = p.first() == Some(&4);
                (p.len(), data)
            }
            _ => continue,
        };
        let start = cursor;
        cursor += len;
        // A run goes on with a packet of its size, or ends with a shorter one.
        let extends = open.as_ref().is_some_and(|s| {
            data && s.to == to
                && s.bytes.end == start
                && len <= s.segment
                && s.bytes.len() % s.segment == 0
                && s.bytes.len() / s.segment < max_segments
                && s.bytes.len() + len <= GSO_MAX_BYTES
        });
        match &mut open {
            Some(send) if extends => send.bytes.end = cursor,
            _ => {
                sends.extend(open.take());
                let send = Send {
                    to,
                    bytes: start..cursor,
                    segment: len,
                };
                if data {
                    open = Some(send);
                } else {
                    sends.push(send);
                }
            }
        }
    }
    sends.extend(open);
}

/// Runs every peer's timers, sending the handshakes and keepalives they ask for.
fn run_timers(shared: &Shared, buf: &mut [u8]) {
    let state = read(&shared.state);
    let underlay = read(&shared.underlay);
    for peer in &state.peers {
        let result = peer.tunnel().update_timers(buf);
        if let TunnResult::WriteToNetwork(packet) = result
            && let Some(to) = peer.endpoint()
        {
            let len = packet.len();
            underlay.send(to, &buf[..len], len);
        }
    }
}

// === the inbound direction: UDP -> decrypt -> TUN ===

/// What the inbound thread keeps between batches.
pub(crate) struct Inbound {
    /// Decrypted packets, each behind room for a virtio-net header; `count` are in use.
    pub(crate) packets: Vec<Vec<u8>>,
    pub(crate) count: usize,
    /// Answers to send (handshake responses, cookies, packets a new session releases).
    pub(crate) replies: Vec<(SocketAddr, Vec<u8>)>,
}

impl Inbound {
    pub(crate) fn new() -> Inbound {
        Inbound {
            packets: Vec::new(),
            count: 0,
            replies: Vec::new(),
        }
    }

    /// The decrypted packets of this batch, with their header room.
    pub(crate) fn batch(&mut self) -> &mut [Vec<u8>] {
        &mut self.packets[..self.count]
    }

    fn clear(&mut self) {
        self.count = 0;
        self.replies.clear();
    }

    /// A buffer for the next packet, `room` bytes after the header.
    fn next(&mut self, room: usize) -> &mut Vec<u8> {
        if self.packets.len() == self.count {
            // GRO coalesces a flow's packets into its first one, in place: only up to
            // that buffer's capacity (tun-rs never reallocates), so room for 64 KiB.
            self.packets
                .push(Vec::with_capacity(2 * VIRTIO_NET_HDR_LEN + 65_535));
        }
        let buf = &mut self.packets[self.count];
        buf.clear();
        buf.resize(VIRTIO_NET_HDR_LEN + room, 0);
        buf
    }
}

fn inbound_loop(shared: &Shared) {
    let mut recv = vec![vec![0u8; RECV_BUFFER]; RECV_BUFFERS];
    let mut meta = vec![RecvMeta::default(); RECV_BUFFERS];
    let mut inbound = Inbound::new();
    let mut gro = GROTable::new();
    while !shared.stop.load(Ordering::Acquire) {
        let underlay = read(&shared.underlay);
        let mut fds = [PollFd::new(underlay.socket.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(POLL_INTERVAL)).unwrap_or(0) == 0 {
            continue;
        }
        for _ in 0..64 {
            let mut slices: Vec<IoSliceMut<'_>> =
                recv.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let n =
                match underlay
                    .udp
                    .recv(UdpSockRef::from(&underlay.socket), &mut slices, &mut meta)
                {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => continue,
                };
            drop(slices);
            let state = read(&shared.state);
            inbound.clear();
            for (buf, meta) in recv.iter().zip(&meta).take(n) {
                let from = SocketAddr::new(meta.addr.ip().to_canonical(), meta.addr.port());
                let stride = meta.stride.max(1);
                for datagram in buf[..meta.len].chunks(stride) {
                    decrypt_datagram(&state, from, datagram, &mut inbound);
                }
            }
            for (to, reply) in &inbound.replies {
                underlay.send(*to, reply, reply.len());
            }
            if inbound.count > 0 {
                // A batch the TUN refuses is dropped, as lost packets.
                let _ = shared
                    .tun
                    .send_multiple(&mut gro, inbound.batch(), VIRTIO_NET_HDR_LEN);
            }
        }
    }
}

/// Decrypts one datagram from `from`: a data packet from an allowed source joins the batch;
/// handshake and cookie answers, and packets a new session releases, join the replies.
pub(crate) fn decrypt_datagram(
    state: &State,
    from: SocketAddr,
    datagram: &[u8],
    inbound: &mut Inbound,
) {
    let Some(peer) = state.sender(datagram) else {
        return;
    };
    let mut tunnel = peer.tunnel();
    let count = inbound.count;
    let buf = inbound.next(datagram.len().max(148));
    match tunnel.decapsulate(Some(from.ip()), datagram, &mut buf[VIRTIO_NET_HDR_LEN..]) {
        TunnResult::WriteToTunnelV4(packet, src) if peer.allows(IpAddr::V4(src)) => {
            let len = packet.len();
            buf.truncate(VIRTIO_NET_HDR_LEN + len);
            inbound.count = count + 1;
        }
        TunnResult::WriteToTunnelV6(packet, src) if peer.allows(IpAddr::V6(src)) => {
            let len = packet.len();
            buf.truncate(VIRTIO_NET_HDR_LEN + len);
            inbound.count = count + 1;
        }
        TunnResult::WriteToNetwork(packet) => {
            let reply = packet.to_vec();
            inbound.replies.push((from, reply));
            // A completed handshake releases the packets queued for it.
            let mut scratch = vec![0u8; MAX_PACKET + OVERHEAD + 148];
            while let TunnResult::WriteToNetwork(packet) =
                tunnel.decapsulate(None, &[], &mut scratch)
            {
                inbound.replies.push((from, packet.to_vec()));
            }
        }
        TunnResult::Err(_) => return,
        _ => {}
    }
    drop(tunnel);
    *lock(&peer.endpoint) = Some(from);
}

fn read<T: ?Sized>(lock: &RwLock<Arc<T>>) -> Arc<T> {
    Arc::clone(&lock.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests;
