//! The tunnel over a real network: a [`Connection`] drives one [`Session`](crate::proto::Session)
//! over a WebSocket, [`TunnelStream`] is one stream as `AsyncRead + AsyncWrite`, and
//! [`websocket`] makes the WebSocket on either side.
//!
//! This is the thin I/O shell around the protocol: it owns the socket, the clock and the timer,
//! and decides nothing the protocol does not. Routing and authorization live in
//! [`server`](crate::server) and [`agent`](crate::agent).

mod connection;
mod pool;
mod splice;
mod stream;
pub mod websocket;

pub use connection::{Connection, Dialer};
pub use splice::{splice, splice_io};
pub use stream::TunnelStream;
