//! Integration tests of the control plane: servers (weft-control's `start` and weft-api's
//! `serve`) and agents (weft-node's `ApiSource`, weft-api's client) on loopback, with the
//! embedded store and with a real etcd. Nothing here needs root or the kernel.
//!
//! - `abuse`: slow clients and a connection flood are cut off while agents join and watch.
//! - `join`: registration and leases, identity and trust (node passwords, tokens, the CA pin).
//! - `identity`: no node takes another's address, VTEP MAC or WireGuard key, on one server or racing on etcd.
//! - `restart`: a server's restart keeps leases, the CA and the token; critical settings.
//! - `watch`: lease changes and deletions reach watchers, resume after a reconnect, liveness.
//! - `metrics`: `/metrics` serves the control plane's and the agent's metrics.
//! - `renewal`: node certificates are renewed at start and by a running agent.
//! - `revocation`: a deleted node's certificate, or one issued before the current one, is refused.
//! - `tokens`: the agent token, and a first start that fails before its token is kept.
//! - `ha`: three servers on one etcd: fail-over, joining through a survivor, and concurrent
//!   allocation without duplicates.

mod abuse;
mod ha;
mod harness;
mod identity;
mod join;
mod metrics;
mod renewal;
mod restart;
mod revocation;
mod tokens;
mod watch;
