//! CIDR and IPAM math for weft: the pod and service networks of a cluster, and the node CIDRs
//! carved out of them.
//!
//! This crate answers every "which addresses" question weft has, with no I/O at all:
//!
//! - [`CidrList`] parses `--cluster-cidr` and `--service-cidr` (one entry, or two of different
//!   families for dual-stack; the first is the primary family) and [`parse_ip_list`] parses
//!   `--node-ip`-style address lists.
//! - [`validate_service_cidrs`], [`indexed_ip`], [`kubernetes_service_ips`] and
//!   [`default_cluster_dns`] cover the service network (the kubernetes service IP is index 1, the
//!   default cluster DNS IP index 10 of each service CIDR).
//! - [`default_cidrs`] and [`validate_node_mask_size`] give K3s's defaults and limits.
//! - [`NodeCidrAllocator`] hands out node CIDRs of one family from a cluster CIDR, round-robin
//!   like kube-controller-manager's `cidrset`, with one bit of memory per node CIDR;
//!   [`DualStackAllocator`] takes one node CIDR of each enabled family, or none.
//!
//! It deliberately does not store anything, talk to the kernel or read configuration: callers
//! (weft-config, weft-server) own persistence and flags. Every error is an [`IpamError`] that
//! names the flag and the bad value.
//!
//! Read [`Cidr`], [`CidrList`] and [`NodeCidrAllocator`] first.

#![forbid(unsafe_code)]

mod allocator;
mod cidr;
mod error;
mod service;

#[cfg(any(test, fuzzing))]
pub mod fuzzing;

pub use allocator::{DualStackAllocator, NodeCidrAllocator, NodeCidrBounds, NodeCidrs};
pub use cidr::{
    Cidr, CidrList, Family, FamilyCidr, IpFamilies, Ipv4Cidr, Ipv6Cidr, check_same_families,
    ip_families, parse_ip_list,
};
pub use error::IpamError;
pub use service::{
    DEFAULT_NODE_CIDR_MASK_SIZE_IPV4, DEFAULT_NODE_CIDR_MASK_SIZE_IPV6, DefaultCidrs,
    MAX_NODE_CIDR_EXTRA_BITS, default_cidrs, default_cluster_dns, indexed_ip,
    kubernetes_service_ips, validate_node_mask_size, validate_service_cidrs,
};
