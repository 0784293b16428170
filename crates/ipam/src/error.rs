//! The one error type of weft-ipam.

use crate::{Cidr, Family, IpFamilies};

/// Everything that can be wrong with CIDRs, addresses and node CIDR allocation.
///
/// Each message names the flag (or the cluster CIDR) and the bad value, and says what to use
/// instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpamError {
    /// A value is not a network in CIDR notation.
    #[error(
        "invalid {flag} {value:?}: {reason}; write a network as ADDRESS/PREFIX, e.g. 10.42.0.0/16 or fd00:42::/56"
    )]
    InvalidCidr {
        /// The flag or setting the value came from.
        flag: String,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A CIDR has bits set after its prefix.
    #[error("invalid {flag} {value}: host bits are set; use {network}")]
    HostBitsSet {
        /// The flag or setting the value came from.
        flag: String,
        /// The value as given.
        value: String,
        /// The network address the user most likely meant.
        network: Cidr,
    },
    /// A CIDR list has no entries.
    #[error("{flag} is empty: give one CIDR, or two (one IPv4 and one IPv6) for dual-stack")]
    EmptyList {
        /// The flag or setting.
        flag: String,
    },
    /// A list has more than two entries.
    #[error(
        "{flag} {value} has {count} entries: give one, or two (one IPv4 and one IPv6) for dual-stack"
    )]
    TooManyEntries {
        /// The flag or setting.
        flag: String,
        /// The whole list, comma-joined.
        value: String,
        /// How many entries it has.
        count: usize,
    },
    /// A two-entry list has both entries in the same family.
    #[error(
        "{flag} {value} has two {family} entries: a dual-stack list needs one IPv4 and one IPv6 entry"
    )]
    SameFamilyTwice {
        /// The flag or setting.
        flag: String,
        /// The whole list, comma-joined.
        value: String,
        /// The family both entries are in.
        family: Family,
    },
    /// A value is not an IP address.
    #[error("invalid {flag} {value:?}: not an IP address; write e.g. 192.168.1.10 or 2001:db8::10")]
    InvalidIp {
        /// The flag or setting.
        flag: String,
        /// The value as given.
        value: String,
    },
    /// Two settings cover different IP families.
    #[error(
        "{a_flag} and {b_flag} must share the same IP version (IPv4, IPv6 or dual-stack): {a_flag} is {a}, {b_flag} is {b}"
    )]
    FamilyMismatch {
        /// The first setting.
        a_flag: String,
        /// The families of the first setting.
        a: IpFamilies,
        /// The second setting.
        b_flag: String,
        /// The families of the second setting.
        b: IpFamilies,
    },
    /// A service CIDR is larger than Kubernetes allows.
    #[error("{flag} {cidr} is too large: the largest allowed {family} service CIDR is /{max_prefix}; use a prefix of /{max_prefix} or longer", family = cidr.family())]
    ServiceCidrTooLarge {
        /// The flag or setting.
        flag: String,
        /// The offending CIDR.
        cidr: Cidr,
        /// The shortest prefix allowed for its family.
        max_prefix: u8,
    },
    /// A service CIDR has no room for the cluster DNS address (index 10).
    #[error(
        "{flag} {cidr} is too small: it needs room for the cluster DNS address at index 10; use a prefix of /{min_prefix} or shorter"
    )]
    ServiceCidrTooSmall {
        /// The flag or setting.
        flag: String,
        /// The offending CIDR.
        cidr: Cidr,
        /// The longest prefix with room for index 10.
        min_prefix: u8,
    },
    /// An address index lies outside a CIDR.
    #[error("can't take the address at index {index} of {cidr}: it holds only {size} addresses")]
    IndexOutOfRange {
        /// The CIDR.
        cidr: Cidr,
        /// The index asked for.
        index: u128,
        /// How many addresses the CIDR holds (saturated at `u128::MAX`).
        size: u128,
    },
    /// A node CIDR mask size does not fit the cluster CIDR.
    #[error(
        "{flag} {size} does not fit cluster-cidr {cluster}: it must be between {min} and {max} (at least the cluster prefix and at most 16 bits longer)"
    )]
    NodeMaskSize {
        /// The flag or setting.
        flag: String,
        /// The size given.
        size: u8,
        /// The cluster CIDR of that family.
        cluster: Cidr,
        /// The smallest allowed size.
        min: u8,
        /// The largest allowed size.
        max: u8,
    },
    /// Every node CIDR of a cluster CIDR is in use.
    #[error(
        "cluster-cidr {cluster} is exhausted: all {capacity} node CIDRs of size /{node_prefix_len} are allocated; use a larger cluster-cidr or a longer node CIDR mask size"
    )]
    Exhausted {
        /// The cluster CIDR.
        cluster: Cidr,
        /// The node CIDR prefix length.
        node_prefix_len: u8,
        /// How many node CIDRs the cluster CIDR holds.
        capacity: u64,
    },
    /// A lower node CIDR bound above the upper one.
    #[error("the lowest node CIDR to hand out, {min}, comes after the highest, {max}: swap them")]
    BoundsReversed {
        /// The lower bound.
        min: Cidr,
        /// The upper bound.
        max: Cidr,
    },
    /// A node CIDR lies outside the cluster CIDR.
    #[error("node CIDR {cidr} is outside cluster-cidr {cluster}")]
    OutsideCluster {
        /// The node CIDR.
        cidr: Cidr,
        /// The cluster CIDR.
        cluster: Cidr,
    },
    /// A node CIDR has another size than the allocator hands out.
    #[error(
        "node CIDR {cidr} has the wrong size: node CIDRs of cluster-cidr {cluster} are /{node_prefix_len}"
    )]
    WrongNodeCidrSize {
        /// The node CIDR.
        cidr: Cidr,
        /// The cluster CIDR.
        cluster: Cidr,
        /// The node CIDR prefix length in use.
        node_prefix_len: u8,
    },
    /// A node CIDR is already allocated.
    #[error("node CIDR {cidr} is already allocated")]
    AlreadyAllocated {
        /// The node CIDR.
        cidr: Cidr,
    },
    /// A node CIDR of a family the cluster does not use.
    #[error("node CIDR {cidr} is {family}, but the cluster has no {family} cluster-cidr", family = cidr.family())]
    FamilyNotEnabled {
        /// The node CIDR.
        cidr: Cidr,
    },
}
