//! The service network and K3s's defaults: indexed service IPs, service CIDR limits, default
//! CIDRs and node CIDR mask sizes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{Cidr, CidrList, Family, IpamError, Ipv4Cidr, Ipv6Cidr};

#[cfg(test)]
mod tests;

/// The default `node-cidr-mask-size-ipv4`.
pub const DEFAULT_NODE_CIDR_MASK_SIZE_IPV4: u8 = 24;
/// The default `node-cidr-mask-size-ipv6`.
pub const DEFAULT_NODE_CIDR_MASK_SIZE_IPV6: u8 = 64;
/// How many bits longer than the cluster prefix a node prefix may be (Kubernetes' cidrset limit).
pub const MAX_NODE_CIDR_EXTRA_BITS: u8 = 16;

/// The shortest service CIDR prefix Kubernetes accepts for IPv4 (`/12`).
const MAX_SERVICE_PREFIX_V4: u8 = 12;
/// The shortest service CIDR prefix weft accepts for IPv6 (`/112`, as K3s documents).
const MAX_SERVICE_PREFIX_V6: u8 = 112;
/// The index of the kubernetes service IP in each service CIDR.
const KUBERNETES_SERVICE_INDEX: u128 = 1;
/// The index of the default cluster DNS IP in each service CIDR.
const CLUSTER_DNS_INDEX: u128 = 10;

/// The cluster and service CIDRs used when none are configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultCidrs {
    /// The default `cluster-cidr`.
    pub cluster: CidrList,
    /// The default `service-cidr`.
    pub service: CidrList,
}

/// K3s's defaults, picked by the family of the first node IP: `10.42.0.0/16` and
/// `10.43.0.0/16` for IPv4 (and when no node IP is known), `fd00:42::/56` and `fd00:43::/112`
/// for IPv6.
pub fn default_cidrs(first_node_ip: Option<IpAddr>) -> DefaultCidrs {
    let v4 = |a, b, len| {
        CidrList::single(Cidr::V4(
            Ipv4Cidr::new(Ipv4Addr::new(10, a, b, 0), len).unwrap_or_else(|| unreachable!()),
        ))
    };
    let v6 = |seg, len| {
        CidrList::single(Cidr::V6(
            Ipv6Cidr::new(Ipv6Addr::new(0xfd00, seg, 0, 0, 0, 0, 0, 0), len)
                .unwrap_or_else(|| unreachable!()),
        ))
    };
    match first_node_ip {
        Some(IpAddr::V6(_)) => DefaultCidrs {
            cluster: v6(0x42, 56),
            service: v6(0x43, 112),
        },
        Some(IpAddr::V4(_)) | None => DefaultCidrs {
            cluster: v4(42, 0, 16),
            service: v4(43, 0, 16),
        },
    }
}

/// The address at `index` of `cidr` (index 0 is the network address).
pub fn indexed_ip(cidr: Cidr, index: u128) -> Result<IpAddr, IpamError> {
    let host_bits = u32::from(cidr.host_bits());
    let size = 1u128.checked_shl(host_bits).unwrap_or(u128::MAX);
    // A /0 IPv6 network holds 2^128 addresses, more than `size` can say; every index fits.
    if host_bits < 128 && index >= size {
        return Err(IpamError::IndexOutOfRange { cidr, index, size });
    }
    Ok(match cidr {
        Cidr::V4(c) => IpAddr::V4(Ipv4Addr::from(u32::from(c.network()) + index as u32)),
        Cidr::V6(c) => IpAddr::V6(Ipv6Addr::from(u128::from(c.network()) + index)),
    })
}

/// The kubernetes service IP of each service CIDR (index 1), primary first.
pub fn kubernetes_service_ips(service: &CidrList) -> Result<Vec<IpAddr>, IpamError> {
    service
        .iter()
        .map(|c| indexed_ip(c, KUBERNETES_SERVICE_INDEX))
        .collect()
}

/// The default cluster DNS IP of each service CIDR (index 10), primary first.
pub fn default_cluster_dns(service: &CidrList) -> Result<Vec<IpAddr>, IpamError> {
    service
        .iter()
        .map(|c| indexed_ip(c, CLUSTER_DNS_INDEX))
        .collect()
}

/// Checks every service CIDR of `list`: at most /12 (IPv4) or /112 (IPv6) large, and large
/// enough to hold the cluster DNS address at index 10. Returns every problem found.
pub fn validate_service_cidrs(flag: &str, list: &CidrList) -> Vec<IpamError> {
    list.iter()
        .filter_map(|cidr| {
            let (max_prefix, width) = match cidr.family() {
                Family::Ipv4 => (MAX_SERVICE_PREFIX_V4, 32),
                Family::Ipv6 => (MAX_SERVICE_PREFIX_V6, 128),
            };
            // Index 10 needs 4 host bits.
            let min_prefix = width - 4;
            if cidr.prefix_len() < max_prefix {
                Some(IpamError::ServiceCidrTooLarge {
                    flag: flag.to_owned(),
                    cidr,
                    max_prefix,
                })
            } else if cidr.prefix_len() > min_prefix {
                Some(IpamError::ServiceCidrTooSmall {
                    flag: flag.to_owned(),
                    cidr,
                    min_prefix,
                })
            } else {
                None
            }
        })
        .collect()
}

/// Checks a node CIDR mask size against the cluster CIDR of its family: at least the cluster
/// prefix and at most [`MAX_NODE_CIDR_EXTRA_BITS`] longer (and never longer than the address).
pub fn validate_node_mask_size(flag: &str, cluster: Cidr, size: u8) -> Result<u8, IpamError> {
    let width = match cluster.family() {
        Family::Ipv4 => 32,
        Family::Ipv6 => 128,
    };
    let min = cluster.prefix_len();
    let max = min.saturating_add(MAX_NODE_CIDR_EXTRA_BITS).min(width);
    if (min..=max).contains(&size) {
        Ok(size)
    } else {
        Err(IpamError::NodeMaskSize {
            flag: flag.to_owned(),
            size,
            cluster,
            min,
            max,
        })
    }
}
