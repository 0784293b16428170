//! The node agent runtime that `weft-agent` (and `weft-server`'s embedded agent) run: the
//! node's identity in its data dir, joining the cluster through a [`LeaseSource`], and the
//! loop that keeps the kernel equal to what every lease asks for.
//!
//! - [`identity`]: node password and VTEP MACs, made once and kept, and the credentials
//!   registration returns.
//! - [`source`]: [`LeaseSource`], with [`ApiSource`] (the weft servers, with CA pinning,
//!   fail-over and watch resume) and [`StaticSource`] (a JSON file, for distributions that
//!   allocate pod CIDRs themselves).
//! - [`agent`]: [`agent::join`], then [`agent::run`]: on every lease change, plan the changed
//!   peer's objects (weft-fabric) against the kernel as last seen (weft-kernel's mirror, kept
//!   current by netlink notifications) and apply only the difference; repair what a
//!   notification reports; on every `reconcile-interval`, observe the whole kernel, reconcile
//!   and write `subnet.env` and the CNI config atomically.
//! - [`egress`]: the egress selector's agent side: a tunnel to every server, the dial
//!   authorizer, and in `cluster` mode the report of this node's pods from the CNI's IPAM state.
//! - [`metrics`]: the agent's Prometheus metrics and the `/metrics` endpoint both daemons
//!   serve, with [`health`]'s `/healthz` and `/readyz` beside it.
//!
//! It deliberately holds no flags and reads no environment: the bins resolve configuration
//! with weft-config and hand over [`agent::AgentSettings`].
//!
//! Read [`agent`] first.

#![forbid(unsafe_code)]

pub mod agent;
pub mod daemon;
pub mod egress;
mod error;
pub mod files;
pub mod health;
pub mod identity;
pub mod metrics;
pub mod preflight;
pub mod settings;
pub mod source;
pub mod start;

pub use error::NodeError;
pub use source::{ApiSource, LeaseSource, LeaseUpdate, StaticSource};
