//! weft's egress-selector tunnel: how a server reaches kubelets and pods on nodes that accept no
//! incoming connections. Every agent keeps a WebSocket to every server; the server opens a stream
//! per HTTP CONNECT through the right node's tunnel, and the agent dials the target.
//!
//! - [`proto`]: the multiplexing protocol as a pure state machine in the quinn-proto shape:
//!   dials with a real reply, data with per-stream credit flow control, half-close, reset,
//!   keepalive. No sockets, no runtime, no clock.
//! - [`pair`]: a deterministic in-memory pair of sessions with a virtual clock, latency and
//!   stall/sever knobs, for tests and benches.
//!
//! It deliberately does not (yet) hold the transport: the WebSocket driver, the HTTP CONNECT
//! front door, routing by egress-selector mode and the agent's dial authorizer come next, as
//! thin shells around [`proto::Session`]. It makes no routing or policy decision itself: which
//! node to open a stream to, and whether to accept a dial, are the caller's.
//!
//! Read [`proto::Session`] first, then [`proto::Frame`] and [`pair::Pair`].

#![forbid(unsafe_code)]

#[cfg(any(test, fuzzing))]
pub mod fuzzing;
pub mod pair;
pub mod proto;
