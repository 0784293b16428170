//! [`Stream`]: the state of one stream inside a [`Session`](super::Session), with its send and
//! receive buffers and their credit. The session keeps the session-wide sums; this type only
//! holds one stream's part.

use std::collections::VecDeque;

use bytes::{Buf, Bytes};

use super::frame::Target;

/// Where a stream is in its dial handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// This side opened the stream and waits for the dial reply; `sent` once the dial frame went
    /// out (before that the peer knows nothing of the stream).
    Dialing { sent: bool },
    /// The peer opened the stream; the application has not answered yet.
    Accepting,
    /// The application accepted; the dial-ok frame is queued but not sent, so the peer may send
    /// nothing but a reset yet.
    Accepted,
    /// The dial reply was exchanged: data flows.
    Open,
}

/// Whether this side's half-close went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fin {
    /// The application may still write.
    Open,
    /// The application finished; the fin frame follows the queued data.
    Pending,
    /// The fin frame went out.
    Sent,
}

/// One stream's buffers and flow-control state.
#[derive(Debug)]
pub(super) struct Stream {
    pub(super) phase: Phase,
    /// The dial's target, kept until the dial frame goes out.
    pub(super) target: Option<Target>,

    /// Data the application wrote that is not yet framed, oldest first.
    pub(super) send_queue: VecDeque<Bytes>,
    /// The bytes in `send_queue`.
    pub(super) send_queued: u64,
    /// Credit from the peer that no queued byte has taken yet.
    pub(super) send_credit: u64,
    pub(super) fin: Fin,
    /// The stream's id is in the session's round-robin of streams with something to send.
    pub(super) in_ready: bool,
    /// A write was refused; a `Writable` event is owed once there is room.
    pub(super) want_writable: bool,

    /// Received data the application has not read, oldest first.
    pub(super) recv_queue: VecDeque<Bytes>,
    /// The bytes in `recv_queue`.
    pub(super) recv_buffered: u64,
    /// Credit granted to the peer that its data has not used yet.
    pub(super) recv_credit: u64,
    pub(super) fin_received: bool,
    /// The application read past the peer's fin.
    pub(super) fin_read: bool,
    /// The application closed the stream: received data is dropped and credited back at once.
    pub(super) discard: bool,
    /// A credit frame for this stream is in the session's control queue.
    pub(super) credit_queued: bool,
}

// === impl Stream ===

impl Stream {
    pub(super) fn new(phase: Phase, target: Option<Target>) -> Stream {
        Stream {
            phase,
            target,
            send_queue: VecDeque::new(),
            send_queued: 0,
            send_credit: 0,
            fin: Fin::Open,
            in_ready: false,
            want_writable: false,
            recv_queue: VecDeque::new(),
            recv_buffered: 0,
            recv_credit: 0,
            fin_received: false,
            fin_read: false,
            discard: false,
            credit_queued: false,
        }
    }

    /// The application may write: the dial succeeded or the application accepted it.
    pub(super) fn connected(&self) -> bool {
        matches!(self.phase, Phase::Accepted | Phase::Open)
    }

    /// Bytes of receive buffer plus granted credit: what the peer can make this stream hold.
    pub(super) fn recv_committed(&self) -> u64 {
        self.recv_buffered + self.recv_credit
    }

    /// Takes up to `max` bytes from the front of the receive queue, without copying.
    pub(super) fn take_recv(&mut self, max: usize) -> Option<Bytes> {
        let front = self.recv_queue.front_mut()?;
        let chunk = if front.len() <= max {
            self.recv_queue.pop_front()?
        } else {
            front.split_to(max)
        };
        self.recv_buffered -= chunk.len() as u64;
        Some(chunk)
    }

    /// Moves `len` queued bytes (at most `send_queued`) to the end of `buf`.
    pub(super) fn take_send(&mut self, len: usize, buf: &mut Vec<u8>) {
        let mut left = len;
        while left > 0 {
            let Some(front) = self.send_queue.front_mut() else {
                break;
            };
            let take = left.min(front.len());
            buf.extend_from_slice(&front[..take]);
            if take == front.len() {
                self.send_queue.pop_front();
            } else {
                front.advance(take);
            }
            left -= take;
        }
        self.send_queued -= (len - left) as u64;
    }

    /// Drops every received byte that the application has not read; returns how many.
    pub(super) fn drop_recv(&mut self) -> u64 {
        self.recv_queue.clear();
        std::mem::take(&mut self.recv_buffered)
    }
}
