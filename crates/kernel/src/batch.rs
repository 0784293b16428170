//! Pipelined netlink requests: many requests per datagram, replies only for failures.
//!
//! The kernel handles the requests of one datagram in order, each under the rtnl lock, and
//! answers a request only when it fails (NLMSG_ERROR with the request's sequence number) or asks
//! for an acknowledgement. So a phase of N requests goes out as datagrams of [`CHUNK`] requests
//! whose last one asks for an acknowledgement: two system calls per datagram instead of two per
//! request (what `ip -batch` does), and no acknowledgement built, queued and read for each
//! success. The acknowledgement of a datagram's last request means every request before it was
//! handled, and any failure among them has been reported already.
//!
//! The socket is a plain blocking route netlink socket, used from tokio's blocking pool;
//! `NETLINK_CAP_ACK` keeps error replies small so a datagram's worth of them always fits the
//! receive buffer.

use std::io;
use std::num::NonZeroI32;

use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// Requests per datagram: their error replies, if all fail, still fit the receive buffer.
pub(crate) const CHUNK: usize = 64;

/// A route netlink socket for batches.
#[derive(Debug)]
pub(crate) struct Batcher {
    socket: Socket,
    sequence: u32,
    send: Vec<u8>,
    recv: Vec<u8>,
}

/// One request: the message and its netlink flags (`NLM_F_REQUEST` is added).
pub(crate) type Request = (RouteNetlinkMessage, u16);

// === impl Batcher ===

impl Batcher {
    /// Opens the socket in the calling thread's network namespace.
    pub(crate) fn open() -> io::Result<Batcher> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        socket.set_cap_ack(true)?;
        Ok(Batcher {
            socket,
            sequence: 0,
            send: Vec::new(),
            recv: Vec::with_capacity(1 << 16),
        })
    }

    /// Sends `requests` in order and returns, for each, `None` on success or the kernel's
    /// (negative) error code.
    pub(crate) fn run(&mut self, requests: Vec<Request>) -> io::Result<Vec<Option<NonZeroI32>>> {
        let mut results = vec![None; requests.len()];
        let mut requests = requests.into_iter();
        let mut start = 0;
        while start < results.len() {
            let chunk: Vec<Request> = requests.by_ref().take(CHUNK).collect();
            let first = self.sequence.wrapping_add(1);
            let count = chunk.len();
            self.send.clear();
            for (i, (payload, flags)) in chunk.into_iter().enumerate() {
                self.sequence = self.sequence.wrapping_add(1);
                let mut header = NetlinkHeader::default();
                header.flags = NLM_F_REQUEST | flags;
                if i + 1 == count {
                    header.flags |= NLM_F_ACK;
                }
                header.sequence_number = self.sequence;
                let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
                msg.finalize();
                let at = self.send.len();
                self.send.resize(at + msg.buffer_len(), 0);
                msg.serialize(&mut self.send[at..]);
            }
            self.socket.send(&self.send, 0)?;
            let replies = &mut results[start..start + count];
            self.collect(first, self.sequence, replies)?;
            start += count;
        }
        Ok(results)
    }

    /// Reads replies until the acknowledgement of sequence number `last`, recording the
    /// failures of the requests numbered from `first` in `replies`.
    fn collect(
        &mut self,
        first: u32,
        last: u32,
        replies: &mut [Option<NonZeroI32>],
    ) -> io::Result<()> {
        loop {
            self.recv.clear();
            self.recv.reserve(1 << 16);
            let n = self.socket.recv(&mut self.recv, 0)?.min(self.recv.len());
            let mut at = 0;
            while at + 16 <= n {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.recv[at..n])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = msg.header.length as usize;
                let seq = msg.header.sequence_number;
                if let NetlinkPayload::Error(err) = msg.payload {
                    let index = seq.wrapping_sub(first) as usize;
                    if let (Some(code), Some(slot)) = (err.code, replies.get_mut(index)) {
                        *slot = Some(code);
                    }
                    if seq == last {
                        return Ok(());
                    }
                }
                if len == 0 {
                    break;
                }
                at += (len + 3) & !3;
            }
        }
    }
}
