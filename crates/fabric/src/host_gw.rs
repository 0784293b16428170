//! The host-gw backend: a route to each peer's pod CIDR via the peer's node IP on the external
//! interface. It needs every node on one layer-2 network; a peer that is not is reported by name
//! instead of getting a route the kernel would refuse or black-hole.

use weft_ipam::Family;

use crate::backend::{PeerProblem, PeerProblemReason, lease_cidr, peer_public_ip};
use crate::state::{KernelState, Route};
use crate::{Backend, BackendData, BackendKind, FabricConfig, FabricError, Lease};

#[cfg(test)]
mod tests;

/// The host-gw backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostGw;

impl Backend for HostGw {
    fn kind(&self) -> BackendKind {
        BackendKind::HostGw
    }

    fn backend_data(&self) -> BackendData {
        BackendData::HostGw
    }

    fn mtu(&self, external_mtu: u32, _family: Family) -> u32 {
        external_mtu
    }

    fn program(
        &self,
        local: &Lease,
        peers: &[Lease],
        config: &FabricConfig,
        state: &mut KernelState,
        problems: &mut Vec<PeerProblem>,
    ) -> Result<(), FabricError> {
        let ext = &config.external;
        for family in [Family::Ipv4, Family::Ipv6] {
            if lease_cidr(local, family).is_none() {
                continue;
            }
            for peer in peers {
                let Some(cidr) = lease_cidr(peer, family) else {
                    continue;
                };
                let gateway = match peer_public_ip(peer, family) {
                    Ok(ip) => ip,
                    Err(problem) => {
                        problems.push(problem);
                        continue;
                    }
                };
                if !ext.onlink.iter().any(|net| net.contains(gateway)) {
                    problems.push(PeerProblem {
                        node: peer.node_name.clone(),
                        reason: PeerProblemReason::NotAdjacent {
                            ip: gateway,
                            interface: ext.name.clone(),
                        },
                    });
                    continue;
                }
                state.add_route(Route {
                    dst: cidr,
                    gateway: Some(gateway),
                    dev: ext.name.clone(),
                    onlink: false,
                });
            }
        }
        Ok(())
    }
}
