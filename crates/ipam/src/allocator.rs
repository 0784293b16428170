//! Node CIDR allocation: a bitmap over the node CIDRs of one cluster CIDR, handed out
//! round-robin like kube-controller-manager's `cidrset`.

use crate::{
    Cidr, CidrList, Family, FamilyCidr, IpamError, Ipv4Cidr, Ipv6Cidr, validate_node_mask_size,
};

#[cfg(test)]
mod tests;

/// Allocates node CIDRs of one family from a cluster CIDR.
///
/// Memory is one bit per node CIDR (at most 2^16 of them, 8 KiB). The search for a free node
/// CIDR starts after the last one handed out and wraps around, so a CIDR that was just released
/// is not handed out again at once (a stale route to it on some node has time to go away).
#[derive(Debug, Clone)]
pub struct NodeCidrAllocator<C: FamilyCidr> {
    cluster: C,
    node_prefix_len: u8,
    /// Bit `i` set = node CIDR `i` is allocated.
    used: Vec<u64>,
    capacity: u64,
    allocated: u64,
    next_candidate: u64,
    /// The first and last index handed out ([`NodeCidrAllocator::bounded`]).
    first: u64,
    last: u64,
    /// How many of the indexes from `first` to `last` are allocated.
    allocated_in_bounds: u64,
}

/// The lowest and highest node CIDR of each family an allocator hands out (flannel's
/// `SubnetMin`/`SubnetMax` and their IPv6 pair); `None` for no bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NodeCidrBounds {
    /// The IPv4 bounds.
    pub ipv4: (Option<Ipv4Cidr>, Option<Ipv4Cidr>),
    /// The IPv6 bounds.
    pub ipv6: (Option<Ipv6Cidr>, Option<Ipv6Cidr>),
}

/// The node CIDRs of one node: one per family the cluster uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NodeCidrs {
    /// The IPv4 node CIDR, when the cluster has IPv4.
    pub ipv4: Option<Ipv4Cidr>,
    /// The IPv6 node CIDR, when the cluster has IPv6.
    pub ipv6: Option<Ipv6Cidr>,
}

/// Allocates node CIDRs for every family of a cluster: one of each, or none at all.
#[derive(Debug, Clone)]
pub struct DualStackAllocator {
    ipv4: Option<NodeCidrAllocator<Ipv4Cidr>>,
    ipv6: Option<NodeCidrAllocator<Ipv6Cidr>>,
}

// === impl NodeCidrAllocator ===

impl<C: FamilyCidr> NodeCidrAllocator<C> {
    /// An allocator of `/node_prefix_len` node CIDRs over `cluster`, all free.
    ///
    /// Fails when the node prefix is shorter than the cluster prefix or more than 16 bits longer.
    pub fn new(cluster: C, node_prefix_len: u8) -> Result<Self, IpamError> {
        let flag = match C::FAMILY {
            Family::Ipv4 => "node-cidr-mask-size-ipv4",
            Family::Ipv6 => "node-cidr-mask-size-ipv6",
        };
        validate_node_mask_size(flag, cluster.into_cidr(), node_prefix_len)?;
        let capacity = 1u64 << (node_prefix_len - cluster.prefix_len());
        Ok(NodeCidrAllocator {
            cluster,
            node_prefix_len,
            used: vec![0; capacity.div_ceil(64) as usize],
            capacity,
            allocated: 0,
            next_candidate: 0,
            first: 0,
            last: capacity - 1,
            allocated_in_bounds: 0,
        })
    }

    /// Hands out only the node CIDRs from `min` to `max` (each `None` for no bound); node
    /// CIDRs outside them can still be occupied (leases made before the bounds).
    ///
    /// Fails when a bound is not a node CIDR of this cluster, or `min` comes after `max`.
    pub fn bounded(mut self, min: Option<C>, max: Option<C>) -> Result<Self, IpamError> {
        let first = min.map(|c| self.index_of(c)).transpose()?.unwrap_or(0);
        let last = max
            .map(|c| self.index_of(c))
            .transpose()?
            .unwrap_or(self.capacity - 1);
        if let (Some(min), Some(max), true) = (min, max, first > last) {
            return Err(IpamError::BoundsReversed {
                min: min.into_cidr(),
                max: max.into_cidr(),
            });
        }
        self.first = first;
        self.last = last;
        self.allocated_in_bounds = (first..=last).filter(|i| self.get(*i)).count() as u64;
        if !(first..=last).contains(&self.next_candidate) {
            self.next_candidate = first;
        }
        Ok(self)
    }

    /// The cluster CIDR.
    pub fn cluster(&self) -> C {
        self.cluster
    }

    /// The prefix length of the node CIDRs.
    pub fn node_prefix_len(&self) -> u8 {
        self.node_prefix_len
    }

    /// How many node CIDRs the cluster CIDR holds.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// How many node CIDRs are allocated.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    /// How many node CIDRs are free to hand out (inside the bounds).
    pub fn free(&self) -> u64 {
        (self.last - self.first + 1) - self.allocated_in_bounds
    }

    /// Whether `cidr` is allocated (false for one that is not a node CIDR of this cluster).
    pub fn is_allocated(&self, cidr: C) -> bool {
        self.index_of(cidr).is_ok_and(|i| self.get(i))
    }

    /// Hands out the next free node CIDR after the last one handed out.
    pub fn allocate(&mut self) -> Result<C, IpamError> {
        let index = self.find_free().ok_or_else(|| IpamError::Exhausted {
            cluster: self.cluster.into_cidr(),
            node_prefix_len: self.node_prefix_len,
            capacity: self.capacity,
        })?;
        self.set(index);
        self.next_candidate = if index >= self.last {
            self.first
        } else {
            index + 1
        };
        Ok(self.cidr_at(index))
    }

    /// Marks an existing node CIDR as allocated (leases read back at start-up).
    ///
    /// Fails for a CIDR outside the cluster CIDR, of another size, or already allocated.
    pub fn occupy(&mut self, cidr: C) -> Result<(), IpamError> {
        let index = self.index_of(cidr)?;
        if self.get(index) {
            return Err(IpamError::AlreadyAllocated {
                cidr: cidr.into_cidr(),
            });
        }
        self.set(index);
        Ok(())
    }

    /// Frees a node CIDR. Freeing one that is not allocated does nothing.
    ///
    /// Fails for a CIDR outside the cluster CIDR or of another size.
    pub fn release(&mut self, cidr: C) -> Result<(), IpamError> {
        let index = self.index_of(cidr)?;
        if self.get(index) {
            self.used[(index / 64) as usize] &= !(1 << (index % 64));
            self.allocated -= 1;
            if self.in_bounds(index) {
                self.allocated_in_bounds -= 1;
            }
        }
        Ok(())
    }

    /// The index of `cidr` among the node CIDRs, or why it is not one.
    fn index_of(&self, cidr: C) -> Result<u64, IpamError> {
        if cidr.prefix_len() != self.node_prefix_len {
            if cidr.prefix_len() >= self.cluster.prefix_len() && self.contains(cidr) {
                return Err(IpamError::WrongNodeCidrSize {
                    cidr: cidr.into_cidr(),
                    cluster: self.cluster.into_cidr(),
                    node_prefix_len: self.node_prefix_len,
                });
            }
            return Err(self.outside(cidr));
        }
        if !self.contains(cidr) {
            return Err(self.outside(cidr));
        }
        let offset = cidr.network_bits() - self.cluster.network_bits();
        let host_bits = u32::from(C::BITS - self.node_prefix_len);
        Ok(offset.checked_shr(host_bits).unwrap_or(0) as u64)
    }

    fn contains(&self, cidr: C) -> bool {
        let host_bits = u32::from(C::BITS - self.cluster.prefix_len());
        let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
        cidr.network_bits() & mask == self.cluster.network_bits()
    }

    fn outside(&self, cidr: C) -> IpamError {
        IpamError::OutsideCluster {
            cidr: cidr.into_cidr(),
            cluster: self.cluster.into_cidr(),
        }
    }

    fn cidr_at(&self, index: u64) -> C {
        let host_bits = u32::from(C::BITS - self.node_prefix_len);
        let offset = u128::from(index).checked_shl(host_bits).unwrap_or(0);
        C::from_bits(self.cluster.network_bits() + offset, self.node_prefix_len)
    }

    fn get(&self, index: u64) -> bool {
        self.used[(index / 64) as usize] & (1 << (index % 64)) != 0
    }

    fn set(&mut self, index: u64) {
        self.used[(index / 64) as usize] |= 1 << (index % 64);
        self.allocated += 1;
        if self.in_bounds(index) {
            self.allocated_in_bounds += 1;
        }
    }

    fn in_bounds(&self, index: u64) -> bool {
        (self.first..=self.last).contains(&index)
    }

    /// The first free index in the bounds at or after `next_candidate`, wrapping; a word at a
    /// time.
    fn find_free(&self) -> Option<u64> {
        if self.free() == 0 {
            return None;
        }
        let words = self.used.len() as u64;
        let start_word = self.next_candidate / 64;
        // The bits of word `w` inside the bounds.
        let bounds_mask = |w: u64| {
            let (lo, hi) = (w * 64, w * 64 + 63);
            let from = self.first.max(lo) - lo;
            let to = self.last.min(hi).saturating_sub(lo);
            if self.first > hi || self.last < lo {
                0
            } else {
                (u64::MAX << from) & (u64::MAX >> (63 - to))
            }
        };
        // Bits below the candidate in its first word are skipped on the first pass and
        // searched again when the scan wraps around to that word.
        for step in 0..=words {
            let word_index = (start_word + step) % words;
            let mut free = !self.used[word_index as usize] & bounds_mask(word_index);
            if step == 0 {
                free &= u64::MAX << (self.next_candidate % 64);
            }
            if free != 0 {
                let index = word_index * 64 + u64::from(free.trailing_zeros());
                if index < self.capacity {
                    return Some(index);
                }
            }
        }
        None
    }
}

// === impl DualStackAllocator ===

impl DualStackAllocator {
    /// An allocator for every family of `cluster`, with the node mask size of each family.
    ///
    /// A mask size is checked only when the cluster has its family.
    pub fn new(cluster: &CidrList, mask_ipv4: u8, mask_ipv6: u8) -> Result<Self, IpamError> {
        Ok(DualStackAllocator {
            ipv4: cluster
                .ipv4()
                .map(|c| NodeCidrAllocator::new(c, mask_ipv4))
                .transpose()?,
            ipv6: cluster
                .ipv6()
                .map(|c| NodeCidrAllocator::new(c, mask_ipv6))
                .transpose()?,
        })
    }

    /// Hands out only node CIDRs inside `bounds` ([`NodeCidrAllocator::bounded`]).
    pub fn bounded(mut self, bounds: NodeCidrBounds) -> Result<Self, IpamError> {
        self.ipv4 = self
            .ipv4
            .map(|a| a.bounded(bounds.ipv4.0, bounds.ipv4.1))
            .transpose()?;
        self.ipv6 = self
            .ipv6
            .map(|a| a.bounded(bounds.ipv6.0, bounds.ipv6.1))
            .transpose()?;
        Ok(self)
    }

    /// The IPv4 allocator, when the cluster has IPv4.
    pub fn ipv4(&self) -> Option<&NodeCidrAllocator<Ipv4Cidr>> {
        self.ipv4.as_ref()
    }

    /// The IPv6 allocator, when the cluster has IPv6.
    pub fn ipv6(&self) -> Option<&NodeCidrAllocator<Ipv6Cidr>> {
        self.ipv6.as_ref()
    }

    /// One node CIDR of each family, or an error and nothing allocated when any family is
    /// exhausted.
    pub fn allocate(&mut self) -> Result<NodeCidrs, IpamError> {
        fn exhausted<C: FamilyCidr>(a: &NodeCidrAllocator<C>) -> Result<(), IpamError> {
            if a.free() == 0 {
                return Err(IpamError::Exhausted {
                    cluster: a.cluster.into_cidr(),
                    node_prefix_len: a.node_prefix_len,
                    capacity: a.capacity,
                });
            }
            Ok(())
        }
        // Check every family before taking anything, so there is never a half lease.
        self.ipv4.as_ref().map(exhausted).transpose()?;
        self.ipv6.as_ref().map(exhausted).transpose()?;
        Ok(NodeCidrs {
            ipv4: self.ipv4.as_mut().map(|a| a.allocate()).transpose()?,
            ipv6: self.ipv6.as_mut().map(|a| a.allocate()).transpose()?,
        })
    }

    /// Marks an existing lease as allocated: all of its CIDRs, or none when any is invalid.
    pub fn occupy(&mut self, cidrs: NodeCidrs) -> Result<(), IpamError> {
        let v4 = self.check(cidrs.ipv4, |s| s.ipv4.as_ref())?;
        let v6 = self.check(cidrs.ipv6, |s| s.ipv6.as_ref())?;
        if let (Some(a), Some(c)) = (self.ipv4.as_mut(), v4) {
            a.occupy(c)?;
        }
        if let (Some(a), Some(c)) = (self.ipv6.as_mut(), v6) {
            a.occupy(c)?;
        }
        Ok(())
    }

    /// Frees a lease's CIDRs.
    pub fn release(&mut self, cidrs: NodeCidrs) -> Result<(), IpamError> {
        let v4 = self.check_family(cidrs.ipv4, |s| s.ipv4.as_ref())?;
        let v6 = self.check_family(cidrs.ipv6, |s| s.ipv6.as_ref())?;
        if let (Some(a), Some(c)) = (self.ipv4.as_mut(), v4) {
            a.release(c)?;
        }
        if let (Some(a), Some(c)) = (self.ipv6.as_mut(), v6) {
            a.release(c)?;
        }
        Ok(())
    }

    /// Checks that `cidr` can be occupied, without changing anything.
    fn check<C: FamilyCidr>(
        &self,
        cidr: Option<C>,
        allocator: impl Fn(&Self) -> Option<&NodeCidrAllocator<C>>,
    ) -> Result<Option<C>, IpamError> {
        let Some(cidr) = self.check_family(cidr, &allocator)? else {
            return Ok(None);
        };
        if allocator(self).is_some_and(|a| a.is_allocated(cidr)) {
            return Err(IpamError::AlreadyAllocated {
                cidr: cidr.into_cidr(),
            });
        }
        Ok(Some(cidr))
    }

    /// Checks that the cluster has the family of `cidr`.
    fn check_family<C: FamilyCidr>(
        &self,
        cidr: Option<C>,
        allocator: impl Fn(&Self) -> Option<&NodeCidrAllocator<C>>,
    ) -> Result<Option<C>, IpamError> {
        match (cidr, allocator(self)) {
            (Some(c), None) => Err(IpamError::FamilyNotEnabled {
                cidr: c.into_cidr(),
            }),
            (Some(c), Some(a)) => {
                a.index_of(c)?;
                Ok(Some(c))
            }
            (None, _) => Ok(None),
        }
    }
}

impl NodeCidrs {
    /// The CIDRs in order, IPv4 first.
    pub fn iter(&self) -> impl Iterator<Item = Cidr> + '_ {
        self.ipv4
            .map(Cidr::V4)
            .into_iter()
            .chain(self.ipv6.map(Cidr::V6))
    }
}
