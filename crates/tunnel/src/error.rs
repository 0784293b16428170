//! The transport's errors, by phase: [`ConnectError`] (reaching a server's tunnel endpoint),
//! [`ConnectionError`] (why a connection ended) and [`OpenError`] (why a stream did not open).
//! The protocol's own errors are in [`proto`](crate::proto).

use std::io;
use std::sync::Arc;

use tokio_tungstenite::tungstenite;

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
    /// The WebSocket handshake failed; a `401` or `403` means the node's certificate was
    /// missing or not a node's.
    #[error("tunnel handshake with {url} failed: {source}")]
    Handshake {
        /// The URL.
        url: String,
        /// The failure, with the server's status if it answered.
        #[source]
        source: Box<tungstenite::Error>,
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
    /// The WebSocket failed.
    #[error("the tunnel's WebSocket failed: {0}")]
    WebSocket(#[source] Arc<tungstenite::Error>),
    /// The peer sent a text message; the tunnel speaks only binary frames.
    #[error("the peer sent a text message on the tunnel, which takes binary frames only")]
    TextMessage,
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
