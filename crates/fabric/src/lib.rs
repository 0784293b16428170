//! The pod network planner: turns leases into the kernel state a node needs, and diffs that
//! against what the kernel holds.
//!
//! A [`Backend`] (vxlan, host-gw, wireguard-native, none) says what this node publishes for peers
//! ([`BackendData`]) and which links, addresses, neighbours, FDB entries, WireGuard peers and
//! routes it wants.
//! [`desired_state`] adds the node-wide parts (forwarding sysctls, flannel's masquerade and
//! forward rules) and returns the complete [`DesiredState`]. [`plan`] computes the ordered
//! [`Op`]s that take an observed [`KernelState`] there; [`files`] renders `subnet.env` and the
//! CNI conflist. A peer whose lease claims a value another node holds (a VTEP MAC, a public IP,
//! a WireGuard key, an overlapping pod CIDR) is left out and reported: the node whose lease was
//! created first keeps it ([`claims`]).
//!
//! This crate deliberately makes no syscalls and runs no commands: weft-kernel observes the
//! kernel and applies plans, and `weft-agent plan` prints them. That keeps every backend
//! testable without root, and a restart that finds everything in place a no-op.
//!
//! [`incremental`] keeps the desired state per peer ([`DesiredPeers`]), so an agent plans one
//! lease change against only the objects it touches ([`plan_objects`]).
//!
//! Read [`Backend`], [`KernelState`] and [`plan`] first.

#![forbid(unsafe_code)]

mod backend;
pub mod claims;
mod error;
pub mod files;
pub mod firewall;
mod host_gw;
pub mod incremental;
mod lease;
mod plan;
mod state;
pub mod vxlan;
pub mod wireguard;

pub use backend::{
    Backend, BackendKind, Desired, ExternalInterface, FabricConfig, PeerProblem, PeerProblemReason,
    desired_state,
};
pub use claims::Claim;
pub use error::FabricError;
pub use host_gw::HostGw;
pub use incremental::{Change, DesiredPeers, ObjectKeys, plan_objects};
pub use lease::{BackendData, Lease, MacAddr, opt_display};
pub use plan::{Op, Plan, ROUTE_PROTOCOL, plan};
pub use state::{
    Address, DesiredState, FirewallTable, KernelState, Link, LinkKind, MasqMode, Route,
};
pub use vxlan::{Vxlan, VxlanSettings};
pub use wireguard::{WgImplementation, WgMode, WgPeer, WgPublicKey, WireguardNative};

/// The `none` backend: no pod network. Nothing is programmed and no CNI config is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NoBackend;

impl Backend for NoBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::None
    }

    fn backend_data(&self) -> BackendData {
        BackendData::None
    }

    fn mtu(&self, external_mtu: u32, _family: weft_ipam::Family) -> u32 {
        external_mtu
    }

    fn program(
        &self,
        _local: &Lease,
        _peers: &[Lease],
        _config: &FabricConfig,
        _state: &mut KernelState,
        _problems: &mut Vec<PeerProblem>,
    ) -> Result<(), FabricError> {
        Ok(())
    }
}
