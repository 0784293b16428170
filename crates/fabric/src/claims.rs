//! Values only one node may hold, and which node keeps each when leases disagree.
//!
//! Peers send a node's traffic by its pod CIDRs, its public IPs, its VTEP MACs and its WireGuard
//! key. The server keeps those unique, but an old server or a store edited by hand may not, and
//! a lease that copies another node's value would take that node's traffic: an FDB entry, a
//! route or a WireGuard peer holds one destination per value. So the fabric decides on its own:
//! this node's values are its own, and among peers the lease created first (the lower
//! [`Lease::created_revision`], then the name) keeps a value. A peer that claims a value already
//! held is dropped whole and reported with both node names ([`PeerProblemReason::Claimed`]);
//! a later lease can never move an earlier one's traffic.
//!
//! Read [`Claim`] and [`first_claims`] first.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

use weft_ipam::{Cidr, Family};

use crate::backend::{PeerProblem, PeerProblemReason, lease_cidr};
use crate::{BackendData, Lease, MacAddr, WgPublicKey};

#[cfg(test)]
mod tests;

/// A value only one node may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Claim {
    /// A pod CIDR: the routes to it. Two collide when they overlap.
    PodCidr(Cidr),
    /// The address peers send fabric traffic to: vxlan's FDB destination, host-gw's next hop,
    /// wireguard's endpoint.
    PublicIp(IpAddr),
    /// The VTEP MAC of a family: vxlan's neighbour and FDB entries.
    VtepMac {
        /// The family of the VTEP.
        family: Family,
        /// The MAC.
        mac: MacAddr,
    },
    /// A WireGuard public key: the peer entry of both devices.
    WireguardKey(WgPublicKey),
}

/// The peers that may be programmed, in the order given: every peer but this node and those
/// that claim a value this node or an earlier-created peer holds. Each dropped peer is reported
/// in `problems`, naming the value and the node that holds it.
///
/// This node's values are those of its lease and `local_data` (what its backend uses now, in
/// case the lease lags behind). Only the families this node has a pod CIDR of count, since only
/// those are programmed.
pub(crate) fn first_claims(
    local: &Lease,
    local_data: &BackendData,
    peers: &[Lease],
    problems: &mut Vec<PeerProblem>,
) -> Vec<Lease> {
    let families: Vec<Family> = [Family::Ipv4, Family::Ipv6]
        .into_iter()
        .filter(|family| lease_cidr(local, *family).is_some())
        .collect();
    let mut holders = local_holders(local, local_data, &families);

    let mut order: Vec<usize> = (0..peers.len())
        .filter(|&i| peers[i].node_name != local.node_name)
        .collect();
    // Stable, so leases alike in both keep the order given.
    order.sort_by(|&a, &b| {
        let (a, b) = (&peers[a], &peers[b]);
        (a.created_revision, &a.node_name).cmp(&(b.created_revision, &b.node_name))
    });
    let mut kept = vec![false; peers.len()];
    for i in order {
        let peer = &peers[i];
        let claims = claims_of(peer, &families);
        let taken = claims.iter().find_map(|claim| holders.problem(peer, claim));
        if let Some(problem) = taken {
            problems.push(problem);
            continue;
        }
        for claim in claims {
            holders.take(claim, &peer.node_name);
        }
        kept[i] = true;
    }
    peers
        .iter()
        .zip(kept)
        .filter(|(_, kept)| *kept)
        .map(|(peer, _)| peer.clone())
        .collect()
}

/// The holders of this node's values: those of its lease and `local_data` (what its backend
/// uses now, in case the lease lags behind), in `families`.
pub(crate) fn local_holders<'a>(
    local: &'a Lease,
    local_data: &BackendData,
    families: &[Family],
) -> Holders<'a> {
    let mut holders = Holders::default();
    let own = claims_of(local, families)
        .into_iter()
        .chain(data_claims(local_data, families));
    for claim in own {
        holders.take(claim, &local.node_name);
    }
    holders
}

/// Who holds which value so far.
#[derive(Debug, Default)]
pub(crate) struct Holders<'a> {
    /// Every value but pod CIDRs, and its holder.
    values: HashMap<Claim, &'a str>,
    /// Pod CIDRs by network address, and their holders. They never overlap one another, so
    /// only the neighbours of an address can overlap a CIDR starting there.
    cidrs: BTreeMap<IpAddr, (Cidr, &'a str)>,
}

// === impl Holders ===

impl<'a> Holders<'a> {
    /// The problem of `peer` claiming `claim`, when another node holds it.
    pub(crate) fn problem(&self, peer: &Lease, claim: &Claim) -> Option<PeerProblem> {
        let (owner, held) = self.holder(claim)?;
        Some(PeerProblem {
            node: peer.node_name.clone(),
            reason: PeerProblemReason::Claimed {
                claim: *claim,
                owner: owner.to_owned(),
                held,
            },
        })
    }

    /// The node holding `claim`, and what it holds: the same value, or a pod CIDR that
    /// overlaps it.
    fn holder(&self, claim: &Claim) -> Option<(&'a str, Claim)> {
        let Claim::PodCidr(cidr) = *claim else {
            return self.values.get(claim).map(|owner| (*owner, *claim));
        };
        let start = cidr.network();
        // A held CIDR that starts before this one and reaches into it...
        let before = self
            .cidrs
            .range(..=start)
            .next_back()
            .filter(|(_, (held, _))| held.contains(start));
        // ...or the first held CIDR that starts inside this one.
        let inside = || {
            self.cidrs
                .range(start..)
                .next()
                .filter(|(_, (held, _))| cidr.contains(held.network()))
        };
        before
            .or_else(inside)
            .map(|(_, (held, owner))| (*owner, Claim::PodCidr(*held)))
    }

    /// Records `owner` as the holder of `claim`, unless one is recorded.
    fn take(&mut self, claim: Claim, owner: &'a str) {
        if self.holder(&claim).is_some() {
            return;
        }
        match claim {
            Claim::PodCidr(cidr) => {
                self.cidrs.insert(cidr.network(), (cidr, owner));
            }
            _ => {
                self.values.insert(claim, owner);
            }
        }
    }
}

/// The values a lease claims in `families`, and its WireGuard key.
pub(crate) fn claims_of(lease: &Lease, families: &[Family]) -> Vec<Claim> {
    let mut claims = Vec::new();
    for &family in families {
        claims.extend(lease_cidr(lease, family).map(Claim::PodCidr));
        claims.extend(lease.public_ip(family == Family::Ipv6).map(Claim::PublicIp));
    }
    claims.extend(data_claims(&lease.backend, families));
    claims
}

/// The values backend data claims: the VTEP MACs of `families`, or the WireGuard key.
fn data_claims(data: &BackendData, families: &[Family]) -> Vec<Claim> {
    match data {
        BackendData::Vxlan {
            vtep_mac_ipv4,
            vtep_mac_ipv6,
        } => families
            .iter()
            .filter_map(|&family| {
                let mac = match family {
                    Family::Ipv4 => vtep_mac_ipv4,
                    Family::Ipv6 => vtep_mac_ipv6,
                };
                mac.map(|mac| Claim::VtepMac { family, mac })
            })
            .collect(),
        BackendData::Wireguard { public_key, .. } => vec![Claim::WireguardKey(*public_key)],
        BackendData::None | BackendData::HostGw => Vec::new(),
    }
}

// === impl Claim ===

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Claim::PodCidr(cidr) => write!(f, "pod CIDR {cidr}"),
            Claim::PublicIp(ip) => write!(f, "public IP {ip}"),
            Claim::VtepMac { family, mac } => write!(f, "{family} VTEP MAC {mac}"),
            Claim::WireguardKey(key) => write!(f, "WireGuard public key {key}"),
        }
    }
}
