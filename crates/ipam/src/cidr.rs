//! CIDRs, address families and the flag-level lists built from them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use crate::IpamError;

#[cfg(test)]
mod tests;

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

/// The families a setting covers: one, or both with one of them primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpFamilies {
    /// IPv4 only.
    Ipv4,
    /// IPv6 only.
    Ipv6,
    /// Both families; `primary` comes first.
    DualStack {
        /// The family of the first entry.
        primary: Family,
    },
}

/// An IPv4 network with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr(Ipv4Network);

/// An IPv6 network with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6Cidr(Ipv6Network);

/// A network of either family with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cidr {
    /// An IPv4 network.
    V4(Ipv4Cidr),
    /// An IPv6 network.
    V6(Ipv6Cidr),
}

/// A `--cluster-cidr` or `--service-cidr` value: one CIDR, or two of different families.
///
/// The first entry is the primary family, as in Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CidrList {
    primary: Cidr,
    secondary: Option<Cidr>,
}

/// What the node CIDR allocator needs from a family's CIDR type.
///
/// Implemented by [`Ipv4Cidr`] and [`Ipv6Cidr`] only, so an allocator can never mix families.
pub trait FamilyCidr: Copy + Eq + fmt::Display + fmt::Debug + private::Sealed {
    /// The family of this CIDR type.
    const FAMILY: Family;
    /// The address width in bits (32 or 128).
    const BITS: u8;
    /// The network address as an integer.
    fn network_bits(self) -> u128;
    /// The prefix length.
    fn prefix_len(self) -> u8;
    /// Builds a CIDR from a network address integer whose host bits are zero.
    ///
    /// Callers guarantee `prefix_len <= BITS` and no host bits; the allocator only builds
    /// node CIDRs inside a valid cluster CIDR.
    fn from_bits(network: u128, prefix_len: u8) -> Self;
    /// Wraps this CIDR into the family-agnostic [`Cidr`].
    fn into_cidr(self) -> Cidr;
}

mod private {
    pub trait Sealed {}
    impl Sealed for super::Ipv4Cidr {}
    impl Sealed for super::Ipv6Cidr {}
}

/// Parses an address list such as `--node-ip`: comma-separated or repeated, each entry an IP.
///
/// Empty entries (from a trailing comma or an empty value) are skipped.
pub fn parse_ip_list<S: AsRef<str>>(flag: &str, values: &[S]) -> Result<Vec<IpAddr>, IpamError> {
    split_list(values)
        .map(|entry| {
            entry.parse::<IpAddr>().map_err(|_| IpamError::InvalidIp {
                flag: flag.to_owned(),
                value: entry.to_owned(),
            })
        })
        .collect()
}

/// The families of an address list; the first address is the primary family.
///
/// Returns `None` for an empty list.
pub fn ip_families(addrs: &[IpAddr]) -> Option<IpFamilies> {
    let primary = Family::of(*addrs.first()?);
    let dual = addrs.iter().any(|a| Family::of(*a) != primary);
    Some(if dual {
        IpFamilies::DualStack { primary }
    } else {
        IpFamilies::single(primary)
    })
}

/// Checks that two settings cover the same set of families.
///
/// Only the set is compared, not which family is primary: Kubernetes allows a service network
/// whose primary family differs from the pod network's, and node IP order is the caller's rule.
pub fn check_same_families(
    a_flag: &str,
    a: IpFamilies,
    b_flag: &str,
    b: IpFamilies,
) -> Result<(), IpamError> {
    if a.has_ipv4() == b.has_ipv4() && a.has_ipv6() == b.has_ipv6() {
        Ok(())
    } else {
        Err(IpamError::FamilyMismatch {
            a_flag: a_flag.to_owned(),
            a,
            b_flag: b_flag.to_owned(),
            b,
        })
    }
}

/// Splits repeated, comma-separated values into trimmed, non-empty entries.
fn split_list<S: AsRef<str>>(values: &[S]) -> impl Iterator<Item = &str> {
    values
        .iter()
        .flat_map(|v| v.as_ref().split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
}

// === impl Family ===

impl Family {
    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// The other family.
    pub fn other(self) -> Family {
        match self {
            Family::Ipv4 => Family::Ipv6,
            Family::Ipv6 => Family::Ipv4,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        })
    }
}

// === impl IpFamilies ===

impl IpFamilies {
    /// A single-family value.
    pub fn single(family: Family) -> IpFamilies {
        match family {
            Family::Ipv4 => IpFamilies::Ipv4,
            Family::Ipv6 => IpFamilies::Ipv6,
        }
    }

    /// The primary family.
    pub fn primary(self) -> Family {
        match self {
            IpFamilies::Ipv4 => Family::Ipv4,
            IpFamilies::Ipv6 => Family::Ipv6,
            IpFamilies::DualStack { primary } => primary,
        }
    }

    /// Whether IPv4 is covered.
    pub fn has_ipv4(self) -> bool {
        !matches!(self, IpFamilies::Ipv6)
    }

    /// Whether IPv6 is covered.
    pub fn has_ipv6(self) -> bool {
        !matches!(self, IpFamilies::Ipv4)
    }

    /// Whether `family` is covered.
    pub fn has(self, family: Family) -> bool {
        match family {
            Family::Ipv4 => self.has_ipv4(),
            Family::Ipv6 => self.has_ipv6(),
        }
    }

    /// Whether both families are covered.
    pub fn is_dual_stack(self) -> bool {
        matches!(self, IpFamilies::DualStack { .. })
    }
}

impl fmt::Display for IpFamilies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpFamilies::Ipv4 => f.write_str("IPv4"),
            IpFamilies::Ipv6 => f.write_str("IPv6"),
            IpFamilies::DualStack { .. } => f.write_str("dual-stack"),
        }
    }
}

// === impl Ipv4Cidr ===

impl Ipv4Cidr {
    /// The network `addr/prefix_len`, or `None` when the prefix is over 32 or host bits are set.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Ipv4Cidr> {
        let net = Ipv4Network::new(addr, prefix_len).ok()?;
        (net.network() == addr).then_some(Ipv4Cidr(net))
    }

    /// The network address.
    pub fn network(self) -> Ipv4Addr {
        self.0.network()
    }

    /// Whether `addr` lies inside this network.
    pub fn contains(self, addr: Ipv4Addr) -> bool {
        self.0.contains(addr)
    }

    /// Whether `other` lies entirely inside this network.
    pub fn contains_cidr(self, other: Ipv4Cidr) -> bool {
        other.0.prefix() >= self.0.prefix() && self.0.contains(other.network())
    }

    /// The underlying `ipnetwork` value.
    pub fn as_ipnetwork(self) -> Ipv4Network {
        self.0
    }
}

impl FamilyCidr for Ipv4Cidr {
    const FAMILY: Family = Family::Ipv4;
    const BITS: u8 = 32;

    fn network_bits(self) -> u128 {
        u128::from(u32::from(self.network()))
    }

    fn prefix_len(self) -> u8 {
        self.0.prefix()
    }

    fn from_bits(network: u128, prefix_len: u8) -> Ipv4Cidr {
        // Callers pass values inside a valid IPv4 cluster CIDR, so the truncation is exact.
        let addr = Ipv4Addr::from(network as u32);
        Ipv4Cidr(Ipv4Network::new(addr, prefix_len).unwrap_or_else(|_| {
            unreachable!("node prefix {prefix_len} was checked against the cluster CIDR")
        }))
    }

    fn into_cidr(self) -> Cidr {
        Cidr::V4(self)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.network(), self.0.prefix())
    }
}

impl FromStr for Ipv4Cidr {
    type Err = IpamError;

    fn from_str(s: &str) -> Result<Ipv4Cidr, IpamError> {
        match Cidr::parse("cidr", s)? {
            Cidr::V4(c) => Ok(c),
            Cidr::V6(_) => Err(invalid("cidr", s, "an IPv6 network where IPv4 is required")),
        }
    }
}

// === impl Ipv6Cidr ===

impl Ipv6Cidr {
    /// The network `addr/prefix_len`, or `None` when the prefix is over 128 or host bits are set.
    pub fn new(addr: Ipv6Addr, prefix_len: u8) -> Option<Ipv6Cidr> {
        let net = Ipv6Network::new(addr, prefix_len).ok()?;
        (net.network() == addr).then_some(Ipv6Cidr(net))
    }

    /// The network address.
    pub fn network(self) -> Ipv6Addr {
        self.0.network()
    }

    /// Whether `addr` lies inside this network.
    pub fn contains(self, addr: Ipv6Addr) -> bool {
        self.0.contains(addr)
    }

    /// Whether `other` lies entirely inside this network.
    pub fn contains_cidr(self, other: Ipv6Cidr) -> bool {
        other.0.prefix() >= self.0.prefix() && self.0.contains(other.network())
    }

    /// The underlying `ipnetwork` value.
    pub fn as_ipnetwork(self) -> Ipv6Network {
        self.0
    }
}

impl FamilyCidr for Ipv6Cidr {
    const FAMILY: Family = Family::Ipv6;
    const BITS: u8 = 128;

    fn network_bits(self) -> u128 {
        u128::from(self.network())
    }

    fn prefix_len(self) -> u8 {
        self.0.prefix()
    }

    fn from_bits(network: u128, prefix_len: u8) -> Ipv6Cidr {
        let addr = Ipv6Addr::from(network);
        Ipv6Cidr(Ipv6Network::new(addr, prefix_len).unwrap_or_else(|_| {
            unreachable!("node prefix {prefix_len} was checked against the cluster CIDR")
        }))
    }

    fn into_cidr(self) -> Cidr {
        Cidr::V6(self)
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.network(), self.0.prefix())
    }
}

impl FromStr for Ipv6Cidr {
    type Err = IpamError;

    fn from_str(s: &str) -> Result<Ipv6Cidr, IpamError> {
        match Cidr::parse("cidr", s)? {
            Cidr::V6(c) => Ok(c),
            Cidr::V4(_) => Err(invalid("cidr", s, "an IPv4 network where IPv6 is required")),
        }
    }
}

// === impl Cidr ===

impl Cidr {
    /// Parses one CIDR given for `flag`, strictly: `ADDRESS/PREFIX` with no host bits set.
    ///
    /// Unlike `ipnetwork`'s own parser this refuses a bare address (it would silently become a
    /// /32), shortened IPv4 forms such as `10.42/16`, zones and signs.
    pub fn parse(flag: &str, value: &str) -> Result<Cidr, IpamError> {
        let Some((addr, prefix)) = value.split_once('/') else {
            return Err(invalid(flag, value, "the /PREFIX is missing"));
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| invalid(flag, value, "the address part is not an IP address"))?;
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix =
            (!prefix.is_empty() && prefix.len() <= 3 && prefix.bytes().all(|b| b.is_ascii_digit()))
                .then(|| prefix.parse::<u8>().ok())
                .flatten()
                .filter(|p| *p <= max)
                .ok_or_else(|| {
                    invalid(
                        flag,
                        value,
                        &format!("the prefix must be a number from 0 to {max}"),
                    )
                })?;
        let (cidr, host_bits_set) = match addr {
            IpAddr::V4(a) => {
                let c = truncate::<Ipv4Cidr>(u128::from(u32::from(a)), prefix);
                (Cidr::V4(c), c.network() != a)
            }
            IpAddr::V6(a) => {
                let c = truncate::<Ipv6Cidr>(u128::from(a), prefix);
                (Cidr::V6(c), c.network() != a)
            }
        };
        if host_bits_set {
            return Err(IpamError::HostBitsSet {
                flag: flag.to_owned(),
                value: value.to_owned(),
                network: cidr,
            });
        }
        Ok(cidr)
    }

    /// The family of this network.
    pub fn family(self) -> Family {
        match self {
            Cidr::V4(_) => Family::Ipv4,
            Cidr::V6(_) => Family::Ipv6,
        }
    }

    /// The prefix length.
    pub fn prefix_len(self) -> u8 {
        match self {
            Cidr::V4(c) => c.prefix_len(),
            Cidr::V6(c) => c.prefix_len(),
        }
    }

    /// The network address.
    pub fn network(self) -> IpAddr {
        match self {
            Cidr::V4(c) => IpAddr::V4(c.network()),
            Cidr::V6(c) => IpAddr::V6(c.network()),
        }
    }

    /// Whether `addr` lies inside this network (always false across families).
    pub fn contains(self, addr: IpAddr) -> bool {
        match (self, addr) {
            (Cidr::V4(c), IpAddr::V4(a)) => c.contains(a),
            (Cidr::V6(c), IpAddr::V6(a)) => c.contains(a),
            _ => false,
        }
    }

    /// Whether `other` lies entirely inside this network (always false across families).
    pub fn contains_cidr(self, other: Cidr) -> bool {
        match (self, other) {
            (Cidr::V4(a), Cidr::V4(b)) => a.contains_cidr(b),
            (Cidr::V6(a), Cidr::V6(b)) => a.contains_cidr(b),
            _ => false,
        }
    }

    /// The underlying `ipnetwork` value.
    pub fn as_ipnetwork(self) -> IpNetwork {
        match self {
            Cidr::V4(c) => IpNetwork::V4(c.as_ipnetwork()),
            Cidr::V6(c) => IpNetwork::V6(c.as_ipnetwork()),
        }
    }

    /// The number of host bits (address width minus prefix length).
    pub fn host_bits(self) -> u8 {
        match self {
            Cidr::V4(c) => Ipv4Cidr::BITS - c.prefix_len(),
            Cidr::V6(c) => Ipv6Cidr::BITS - c.prefix_len(),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cidr::V4(c) => c.fmt(f),
            Cidr::V6(c) => c.fmt(f),
        }
    }
}

impl FromStr for Cidr {
    type Err = IpamError;

    fn from_str(s: &str) -> Result<Cidr, IpamError> {
        Cidr::parse("cidr", s)
    }
}

impl From<Ipv4Cidr> for Cidr {
    fn from(c: Ipv4Cidr) -> Cidr {
        Cidr::V4(c)
    }
}

impl From<Ipv6Cidr> for Cidr {
    fn from(c: Ipv6Cidr) -> Cidr {
        Cidr::V6(c)
    }
}

// === impl CidrList ===

impl CidrList {
    /// Parses a flag's values: each value may hold several comma-separated CIDRs, and the flag
    /// may be repeated. One or two entries; with two, one of each family.
    pub fn parse<S: AsRef<str>>(flag: &str, values: &[S]) -> Result<CidrList, IpamError> {
        let entries: Vec<&str> = split_list(values).collect();
        let joined = || entries.join(",");
        match entries.as_slice() {
            [] => Err(IpamError::EmptyList {
                flag: flag.to_owned(),
            }),
            [one] => Ok(CidrList::single(Cidr::parse(flag, one)?)),
            [first, second] => {
                let primary = Cidr::parse(flag, first)?;
                let secondary = Cidr::parse(flag, second)?;
                CidrList::dual(primary, secondary).ok_or_else(|| IpamError::SameFamilyTwice {
                    flag: flag.to_owned(),
                    value: joined(),
                    family: primary.family(),
                })
            }
            more => Err(IpamError::TooManyEntries {
                flag: flag.to_owned(),
                value: joined(),
                count: more.len(),
            }),
        }
    }

    /// A single-family list.
    pub fn single(cidr: Cidr) -> CidrList {
        CidrList {
            primary: cidr,
            secondary: None,
        }
    }

    /// A dual-stack list, or `None` when both entries are of one family.
    pub fn dual(primary: Cidr, secondary: Cidr) -> Option<CidrList> {
        (primary.family() != secondary.family()).then_some(CidrList {
            primary,
            secondary: Some(secondary),
        })
    }

    /// The first entry.
    pub fn primary(&self) -> Cidr {
        self.primary
    }

    /// The entries in order, primary first.
    pub fn iter(&self) -> impl Iterator<Item = Cidr> + '_ {
        std::iter::once(self.primary).chain(self.secondary)
    }

    /// The entry of `family`, if any.
    pub fn get(&self, family: Family) -> Option<Cidr> {
        self.iter().find(|c| c.family() == family)
    }

    /// The IPv4 entry, if any.
    pub fn ipv4(&self) -> Option<Ipv4Cidr> {
        self.iter().find_map(|c| match c {
            Cidr::V4(c) => Some(c),
            Cidr::V6(_) => None,
        })
    }

    /// The IPv6 entry, if any.
    pub fn ipv6(&self) -> Option<Ipv6Cidr> {
        self.iter().find_map(|c| match c {
            Cidr::V6(c) => Some(c),
            Cidr::V4(_) => None,
        })
    }

    /// The families covered.
    pub fn families(&self) -> IpFamilies {
        match self.secondary {
            Some(_) => IpFamilies::DualStack {
                primary: self.primary.family(),
            },
            None => IpFamilies::single(self.primary.family()),
        }
    }
}

impl fmt::Display for CidrList {
    /// The list as a flag value: entries comma-joined, primary first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.primary.fmt(f)?;
        if let Some(s) = self.secondary {
            write!(f, ",{s}")?;
        }
        Ok(())
    }
}

/// The network of `prefix_len` bits that holds the address `bits`.
fn truncate<C: FamilyCidr>(bits: u128, prefix_len: u8) -> C {
    let host_bits = u32::from(C::BITS - prefix_len);
    let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
    C::from_bits(bits & mask, prefix_len)
}

fn invalid(flag: &str, value: &str, reason: &str) -> IpamError {
    IpamError::InvalidCidr {
        flag: flag.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}
