//! The transport's errors, by phase: [`ConnectError`] (reaching a server's tunnel endpoint),
//! [`ConnectionError`] (why a connection ended), [`WebSocketError`] (a peer that broke the
//! WebSocket framing) and [`OpenError`] (why a stream did not open). The protocol's own errors
//! are in [`proto`](crate::proto).

use std::io;
use std::sync::Arc;

use crate::proto::{DialError, ResetCode, SessionError, StreamError};

/// An agent could not set up its tunnel to a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The server URL is not `wss://host:port/path`.
    #[error("invalid tunnel URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// TCP or TLS to the server failed.
    #[error("connecting to {url} failed: {source}")]
    Io {
        /// The URL.
        url: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The server refused the WebSocket upgrade: `401` without a node certificate, `403` for
    /// a certificate that is not a node's (or in `disabled` mode, which takes no tunnels).
    #[error("{url} refused the tunnel: {status} {message}")]
    Rejected {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The server's reason.
        message: String,
    },
    /// A step of opening the tunnel got no answer in time: the server accepted and went
    /// silent, or a path drops its packets.
    #[error(
        "connecting to {url} timed out: no {step} within {after:?}; the server may be overloaded or unreachable"
    )]
    TimedOut {
        /// The URL.
        url: String,
        /// The step: `TCP connection`, `TLS handshake` or `answer to the upgrade`.
        step: &'static str,
        /// Its deadline.
        after: std::time::Duration,
    },
    /// The WebSocket handshake failed otherwise (the HTTP exchange broke, or the server's
    /// answer was no WebSocket's).
    #[error("tunnel handshake with {url} failed: {reason}")]
    Handshake {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// Why a tunnel connection ended. An agent reconnects after any of them.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The session ended: the peer broke the protocol, went silent, or closed it.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The WebSocket closed (or its TCP connection did) without a go-away.
    #[error("the tunnel's WebSocket closed")]
    Lost,
    /// Reading or writing the connection failed.
    #[error("the tunnel's connection failed: {0}")]
    Io(#[source] Arc<io::Error>),
    /// The peer broke the WebSocket framing.
    #[error(transparent)]
    WebSocket(#[from] WebSocketError),
    /// What this side had to send made no progress for the write stall timeout: the peer reads
    /// nothing, so it is taken for dead.
    #[error("the peer read nothing for {after:?} while this side had data for it")]
    Stalled {
        /// The write stall timeout.
        after: std::time::Duration,
    },
}

/// A peer that broke the WebSocket framing the tunnel speaks (RFC 6455, binary messages only).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebSocketError {
    /// A text message; the tunnel takes binary frames only.
    #[error("the peer sent a text message on the tunnel, which takes binary frames only")]
    Text,
    /// A fragmented message; every tunnel frame is one unfragmented message.
    #[error("the peer sent a fragmented WebSocket message; tunnel frames are never fragmented")]
    Fragmented,
    /// A reserved header bit was set (no extension is negotiated).
    #[error("the peer set a reserved WebSocket header bit")]
    ReservedBits,
    /// An opcode RFC 6455 does not define.
    #[error("the peer sent WebSocket opcode {opcode:#x}, which does not exist")]
    UnknownOpcode {
        /// The opcode.
        opcode: u8,
    },
    /// Masking the wrong way: a client must mask every frame, a server none.
    #[error("a frame {} arrived at the WebSocket {side}", if *.masked { "masked" } else { "unmasked" })]
    Masking {
        /// Whether the frame was masked.
        masked: bool,
        /// The receiving end, `server` or `client`.
        side: &'static str,
    },
    /// A message longer than one tunnel frame.
    #[error("a WebSocket message of {len} bytes exceeds the tunnel's {max}-byte frames")]
    TooLong {
        /// Its announced length.
        len: usize,
        /// The most a frame may have.
        max: usize,
    },
    /// A control frame (close, ping, pong) that was fragmented or longer than 125 bytes.
    #[error("the peer sent a fragmented or oversized WebSocket control frame")]
    BadControlFrame,
}

/// Why a stream did not open.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The peer could not or would not dial the target.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The peer reset the stream before answering.
    #[error("the peer reset the stream: {0}")]
    Reset(ResetCode),
    /// The session refused to open a stream (too many, ids exhausted).
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The connection ended.
    #[error("the tunnel closed: {0}")]
    Closed(ConnectionError),
}
