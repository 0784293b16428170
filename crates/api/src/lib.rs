//! The protocol between weft agents and servers, and the trust it rests on.
//!
//! - [`pki`]: the cluster CA and the certificates it issues (server, `system:node:<name>`, the
//!   admin's and the kube-apiserver's), their lifetimes and what each says about itself.
//! - [`token`]: K3s-shaped join tokens (`K10<ca-hash>::server:<secret>`) and node passwords.
//! - [`protocol`]: the JSON messages and paths (register, lease list and watch, servers).
//! - [`client`]: the agent's side: [`client::fetch_ca`] checks the server's CA against the
//!   token before anything secret is sent, [`client::register`], then [`client::NodeClient`]
//!   lists and watches leases with the node's own certificate.
//! - [`files`]: atomic writes of small state files, for both daemons' data dirs.
//! - [`http`] and [`tls`]: HTTPS plumbing (hyper 1, rustls with ring) both sides share;
//!   [`http::serve`] hands each request its peer's verified [`pki::ClientIdentity`].
//! - [`io`]: long-lived connections that cost little while idle: [`io::tls_server`], the
//!   server's TLS connections on rustls's unbuffered API, and [`io::ReadAhead`], large socket
//!   reads under a TLS client; both borrow buffers from one pool (shared with weft-tunnel) only
//!   while bytes are in flight.
//!
//! It deliberately holds no cluster state and makes no policy: the server binary decides what to
//! answer (with weft-store), the agent what to do with leases (with weft-fabric).
//!
//! Read [`protocol`] first, then [`client`].

#![forbid(unsafe_code)]

pub mod client;
mod error;
pub mod files;
pub mod http;
pub mod io;
pub mod pki;
pub mod protocol;
pub mod tls;
pub mod token;

pub use error::ApiError;
pub use token::JoinToken;
