//! weft's egress-selector tunnel: how a server reaches kubelets and pods on nodes that accept no
//! incoming connections. Every agent keeps a WebSocket to every server; the server opens a stream
//! per HTTP CONNECT through the right node's tunnel, and the agent dials the target.
//!
//! - [`proto`]: the multiplexing protocol as a pure state machine in the quinn-proto shape:
//!   dials with a real reply, data with per-stream credit flow control, half-close, reset,
//!   keepalive. No sockets, no runtime, no clock.
//! - `pair` (feature `test-util`): a deterministic in-memory pair of sessions with a virtual
//!   clock, latency and stall/sever knobs, for tests and benches.
//! - [`transport`]: the thin tokio shell: a [`transport::Connection`] drives a session over a
//!   WebSocket (weft's own RFC 6455 framing, so frames go straight into the buffer TLS sends and
//!   received payloads reach the session uncopied), [`transport::TunnelStream`] is one stream as
//!   `AsyncRead + AsyncWrite`, and [`transport::splice`] joins it to a connection without copies
//!   and without a buffer while idle.
//! - [`server`]: the tunnel endpoint (node certificates only) and the HTTP CONNECT front door
//!   (the kube-apiserver's client certificate only), routing by [`policy::RoutingTable`].
//! - [`agent`]: one tunnel to every server with reconnects (each with the certificate set
//!   last), and a dialer that dials only what the [`policy::Authorizer`] allows.
//!
//! It deliberately knows nothing of the cluster's state: the server binary hands
//! [`server::TunnelServer`] the nodes to route by and the agent hands [`agent::AgentDialer`]
//! its node's addresses; where those come from (the store, the CNI) is theirs. [`egress`] renders
//! and writes the apiserver's EgressSelectorConfiguration; when to write it is the server's.
//!
//! With the `test-util` feature, `testing` has a CONNECT client as curl's, for tests.
//!
//! Read [`proto::Session`] first, then [`proto::Frame`], [`transport::Connection`] and
//! [`server::TunnelServer`].

#![forbid(unsafe_code)]

pub mod agent;
pub mod egress;
mod error;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
#[cfg(any(test, feature = "test-util"))]
pub mod pair;
pub mod policy;
pub mod proto;
pub mod server;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod transport;

pub use error::{ConnectError, ConnectionError, OpenError, WebSocketError};
