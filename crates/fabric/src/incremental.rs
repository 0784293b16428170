//! Incremental planning: the desired state kept per peer, so that one lease change is planned
//! against the kernel objects it touches instead of rebuilding and diffing the whole state.
//!
//! [`DesiredPeers`] holds the node's complete desired state (what [`crate::desired_state`]
//! returns) and keeps it current one lease at a time: [`DesiredPeers::put`] and
//! [`DesiredPeers::remove`] compute the objects of the changed peer only and return the
//! [`ObjectKeys`] whose desired value may have changed. [`plan_objects`] is [`crate::plan`]
//! restricted to such keys: against an observed state that agreed with the old desired state,
//! it returns exactly the operations the full plan would.
//!
//! The observed side changes by [`Change`]s: the kernel's notifications, as weft-kernel reads
//! them, recorded into a [`KernelState`] with [`KernelState::record`].
//!
//! Who keeps a claimed value (a pod CIDR, a public IP, a VTEP MAC, a WireGuard key; see
//! [`crate::claims`]) depends on every lease, so a change can drop or restore other peers. The
//! common case, a lease whose old and new values no other peer claims, is decided from an index
//! of every peer's claims; otherwise the claims are settled again over every lease and each peer
//! whose fate changed is planned too.
//!
//! Read [`DesiredPeers`] and [`plan_objects`] first.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use weft_ipam::{Cidr, Family, Ipv4Cidr, Ipv6Cidr};

use crate::backend::{Backend, BackendKind, FabricConfig, PeerProblem, desired_state, lease_cidr};
use crate::claims::{Claim, claims_of, first_claims, local_holders};
use crate::plan::{Plan, plan};
use crate::state::{Address, KernelState, Route};
use crate::{FabricError, Lease, MacAddr, MasqMode, WgPublicKey};

#[cfg(test)]
mod tests;

/// Keys of per-object kernel state: what one change may have touched.
///
/// Links and sysctls are node-wide and are not keyed here: a lease change never touches them,
/// and a change to them is reconciled in full. Firewall tables are keyed by (family, mode) for
/// their change notifications; a lease change never touches them either.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectKeys {
    /// Addresses.
    pub addresses: BTreeSet<Address>,
    /// Routes by destination.
    pub routes: BTreeSet<Cidr>,
    /// Neighbours by (device, IP).
    pub neighbours: BTreeSet<(String, IpAddr)>,
    /// FDB entries by (device, MAC).
    pub fdb: BTreeSet<(String, MacAddr)>,
    /// WireGuard peers by (device, public key).
    pub wg_peers: BTreeSet<(String, WgPublicKey)>,
    /// Firewall tables by (family, mode).
    pub firewall: BTreeSet<(Family, MasqMode)>,
}

/// One kernel object that changed, as a kernel notification reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An address appeared (`present`) or went away.
    Address {
        /// The address.
        address: Address,
        /// Whether the kernel holds it now.
        present: bool,
    },
    /// weft's route to `dst` is now `route`, or is gone (deleted, or replaced by a route that
    /// is not weft's).
    Route {
        /// The destination.
        dst: Cidr,
        /// The route weft's scope holds now.
        route: Option<Route>,
    },
    /// The permanent neighbour (`dev`, `ip`) now has `mac`, or is gone (deleted, or no longer
    /// permanent).
    Neighbour {
        /// The device.
        dev: String,
        /// The neighbour's IP.
        ip: IpAddr,
        /// Its MAC now.
        mac: Option<MacAddr>,
    },
    /// The permanent FDB entry (`dev`, `mac`) now sends to `dst` (`present`), or its
    /// destination `dst` was removed.
    Fdb {
        /// The device.
        dev: String,
        /// The entry's MAC.
        mac: MacAddr,
        /// The underlay destination the notification names.
        dst: IpAddr,
        /// Whether the entry is there now.
        present: bool,
    },
}

/// The node's desired state, kept per peer: see the module docs.
#[derive(Debug, Clone)]
pub struct DesiredPeers {
    /// This node's lease.
    local: Lease,
    /// The desired state with no peers: links, addresses, node-wide routes, sysctls, firewall.
    base: KernelState,
    /// The complete desired state.
    state: KernelState,
    /// Every peer's lease by node name.
    leases: BTreeMap<String, Lease>,
    /// The peers that keep all their claims.
    kept: BTreeSet<String>,
    /// Each peer's problems: a claim it lost, or what its backend could not program.
    problems: BTreeMap<String, Vec<PeerProblem>>,
    /// How many peers claim each value other than a pod CIDR.
    claimed: HashMap<Claim, u32>,
    /// How many peers claim each pod CIDR.
    cidrs: BTreeMap<Cidr, u32>,
    /// Whether the backend programs nothing (`none`).
    inert: bool,
}

/// [`crate::plan`] restricted to the objects `keys` names: the operations on those objects
/// that take `observed` to `desired`. Links, sysctls and firewall tables are left alone.
pub fn plan_objects(observed: &KernelState, desired: &KernelState, keys: &ObjectKeys) -> Plan {
    plan(&observed.only(keys), &desired.only(keys))
}

// === impl ObjectKeys ===

impl ObjectKeys {
    /// Whether no object is named.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
            && self.routes.is_empty()
            && self.neighbours.is_empty()
            && self.fdb.is_empty()
            && self.wg_peers.is_empty()
            && self.firewall.is_empty()
    }

    /// How many objects are named.
    pub fn len(&self) -> usize {
        self.addresses.len()
            + self.routes.len()
            + self.neighbours.len()
            + self.fdb.len()
            + self.wg_peers.len()
            + self.firewall.len()
    }

    /// Adds the keys of every per-object entry of `state`.
    pub fn insert_state(&mut self, state: &KernelState) {
        self.addresses.extend(state.addresses.iter().cloned());
        self.routes.extend(state.routes.keys().copied());
        self.neighbours.extend(state.neighbours.keys().cloned());
        self.fdb.extend(state.fdb.keys().cloned());
        self.wg_peers.extend(state.wg_peers.keys().cloned());
        self.firewall.extend(state.firewall.keys().copied());
    }

    /// Adds the key `change` is about.
    pub fn insert_change(&mut self, change: &Change) {
        match change {
            Change::Address { address, .. } => {
                self.addresses.insert(address.clone());
            }
            Change::Route { dst, .. } => {
                self.routes.insert(*dst);
            }
            Change::Neighbour { dev, ip, .. } => {
                self.neighbours.insert((dev.clone(), *ip));
            }
            Change::Fdb { dev, mac, .. } => {
                self.fdb.insert((dev.clone(), *mac));
            }
        }
    }

    /// Adds every key of `other`.
    pub fn append(&mut self, other: ObjectKeys) {
        self.addresses.extend(other.addresses);
        self.routes.extend(other.routes);
        self.neighbours.extend(other.neighbours);
        self.fdb.extend(other.fdb);
        self.wg_peers.extend(other.wg_peers);
        self.firewall.extend(other.firewall);
    }
}

// === impl KernelState (objects) ===

impl KernelState {
    /// Records what a kernel notification reports (the observed side of incremental planning).
    pub fn record(&mut self, change: &Change) {
        match change {
            Change::Address { address, present } => {
                if *present {
                    self.addresses.insert(address.clone());
                } else {
                    self.addresses.remove(address);
                }
            }
            Change::Route { dst, route } => match route {
                Some(route) => self.add_route(route.clone()),
                None => {
                    self.routes.remove(dst);
                }
            },
            Change::Neighbour { dev, ip, mac } => {
                let key = (dev.clone(), *ip);
                match mac {
                    Some(mac) => self.neighbours.insert(key, *mac),
                    None => self.neighbours.remove(&key),
                };
            }
            Change::Fdb {
                dev,
                mac,
                dst,
                present,
            } => {
                let key = (dev.clone(), *mac);
                if *present {
                    self.fdb.insert(key, *dst);
                } else if self.fdb.get(&key) == Some(dst) {
                    // Another destination of the same MAC going away leaves this one.
                    self.fdb.remove(&key);
                }
            }
        }
    }

    /// The objects of `self` that `keys` names, and nothing else.
    fn only(&self, keys: &ObjectKeys) -> KernelState {
        let mut out = KernelState {
            addresses: keys
                .addresses
                .iter()
                .filter(|a| self.addresses.contains(*a))
                .cloned()
                .collect(),
            ..KernelState::default()
        };
        for dst in &keys.routes {
            if let Some(route) = self.routes.get(dst) {
                out.add_route(route.clone());
            }
        }
        for key in &keys.neighbours {
            if let Some(mac) = self.neighbours.get(key) {
                out.neighbours.insert(key.clone(), *mac);
            }
        }
        for key in &keys.fdb {
            if let Some(dst) = self.fdb.get(key) {
                out.fdb.insert(key.clone(), *dst);
            }
        }
        for key in &keys.wg_peers {
            if let Some(peer) = self.wg_peers.get(key) {
                out.wg_peers.insert(key.clone(), peer.clone());
            }
        }
        for key in &keys.firewall {
            if let Some(table) = self.firewall.get(key) {
                out.firewall.insert(*key, table.clone());
            }
        }
        out
    }

    /// Removes the per-object entries of `objects` (links, sysctls and firewall tables stay).
    fn remove_objects(&mut self, objects: &KernelState) {
        for address in &objects.addresses {
            self.addresses.remove(address);
        }
        for dst in objects.routes.keys() {
            self.routes.remove(dst);
        }
        for key in objects.neighbours.keys() {
            self.neighbours.remove(key);
        }
        for key in objects.fdb.keys() {
            self.fdb.remove(key);
        }
        for key in objects.wg_peers.keys() {
            self.wg_peers.remove(key);
        }
    }

    /// Adds the per-object entries of `objects`.
    fn insert_objects(&mut self, objects: KernelState) {
        self.addresses.extend(objects.addresses);
        self.routes.extend(objects.routes);
        self.neighbours.extend(objects.neighbours);
        self.fdb.extend(objects.fdb);
        self.wg_peers.extend(objects.wg_peers);
    }
}

// === impl DesiredPeers ===

impl DesiredPeers {
    /// The desired state of `local` with `peers` (this node's own lease among them is
    /// ignored), equal to [`crate::desired_state`]'s.
    pub fn new(
        backend: &dyn Backend,
        local: &Lease,
        peers: impl IntoIterator<Item = Lease>,
        config: &FabricConfig,
    ) -> Result<DesiredPeers, FabricError> {
        let base = desired_state(backend, local, &[], config)?.state;
        let mut desired = DesiredPeers {
            local: local.clone(),
            state: base.clone(),
            base,
            leases: BTreeMap::new(),
            kept: BTreeSet::new(),
            problems: BTreeMap::new(),
            claimed: HashMap::new(),
            cidrs: BTreeMap::new(),
            inert: backend.kind() == BackendKind::None,
        };
        for lease in peers {
            if lease.node_name != local.node_name {
                desired.index(&lease, 1);
                desired.leases.insert(lease.node_name.clone(), lease);
            }
        }
        desired.settle(backend, config, &BTreeSet::new())?;
        Ok(desired)
    }

    /// The complete desired state.
    pub fn state(&self) -> &KernelState {
        &self.state
    }

    /// The peers that could not be programmed, by node name.
    pub fn problems(&self) -> Vec<PeerProblem> {
        self.problems.values().flatten().cloned().collect()
    }

    /// Adds or changes a peer's lease; returns the objects whose desired value may have
    /// changed. This node's own lease is not a peer: it is ignored (build anew instead).
    pub fn put(
        &mut self,
        backend: &dyn Backend,
        config: &FabricConfig,
        lease: Lease,
    ) -> Result<ObjectKeys, FabricError> {
        if lease.node_name == self.local.node_name {
            return Ok(ObjectKeys::default());
        }
        let name = lease.node_name.clone();
        let old = self.leases.remove(&name);
        self.change(backend, config, &name, old, Some(lease))
    }

    /// Removes a peer; returns the objects whose desired value may have changed.
    pub fn remove(
        &mut self,
        backend: &dyn Backend,
        config: &FabricConfig,
        name: &str,
    ) -> Result<ObjectKeys, FabricError> {
        let old = self.leases.remove(name);
        self.change(backend, config, name, old, None)
    }

    fn change(
        &mut self,
        backend: &dyn Backend,
        config: &FabricConfig,
        name: &str,
        old: Option<Lease>,
        new: Option<Lease>,
    ) -> Result<ObjectKeys, FabricError> {
        let mut keys = ObjectKeys::default();
        if self.inert {
            if let Some(lease) = new {
                self.leases.insert(name.to_owned(), lease);
            }
            return Ok(keys);
        }
        if let Some(old) = &old {
            self.index(old, -1);
        }
        let families = self.families();
        let claims: Vec<Claim> = old
            .iter()
            .chain(new.iter())
            .flat_map(|lease| claims_of(lease, &families))
            .collect();
        let alone = claims.iter().all(|claim| !self.claimed_by_others(claim));
        if let Some(new) = &new {
            self.index(new, 1);
        }
        if self.kept.remove(name) {
            let objects = self.objects_of(backend, config, old.as_ref())?.0;
            keys.insert_state(&objects);
            self.state.remove_objects(&objects);
        }
        self.problems.remove(name);
        if let Some(lease) = new {
            self.leases.insert(name.to_owned(), lease);
        }
        if alone {
            // No other peer claims any of these values: only this peer's fate can change, and
            // only this node can hold what it claims.
            self.place(backend, config, name, &mut keys)?;
        } else {
            let changed = BTreeSet::from([name.to_owned()]);
            keys.append(self.settle(backend, config, &changed)?);
        }
        Ok(keys)
    }

    /// Decides whether the (indexed, unplaced) peer `name` keeps its claims, against this
    /// node's alone, and adds its objects.
    fn place(
        &mut self,
        backend: &dyn Backend,
        config: &FabricConfig,
        name: &str,
        keys: &mut ObjectKeys,
    ) -> Result<(), FabricError> {
        let Some(lease) = self.leases.get(name) else {
            return Ok(());
        };
        let families = self.families();
        let holders = local_holders(&self.local, &backend.backend_data(), &families);
        let taken = claims_of(lease, &families)
            .into_iter()
            .find_map(|claim| holders.problem(lease, &claim));
        if let Some(problem) = taken {
            self.problems.insert(name.to_owned(), vec![problem]);
            return Ok(());
        }
        let (objects, problems) = self.objects_of(backend, config, Some(lease))?;
        keys.insert_state(&objects);
        self.state.insert_objects(objects);
        if !problems.is_empty() {
            self.problems.insert(name.to_owned(), problems);
        }
        self.kept.insert(name.to_owned());
        Ok(())
    }

    /// Settles every claim again over every lease, and replans each peer whose fate changed
    /// and each peer in `changed` (already unplaced). Returns the keys that may have changed.
    fn settle(
        &mut self,
        backend: &dyn Backend,
        config: &FabricConfig,
        changed: &BTreeSet<String>,
    ) -> Result<ObjectKeys, FabricError> {
        let mut keys = ObjectKeys::default();
        if self.inert {
            return Ok(keys);
        }
        let leases: Vec<Lease> = self.leases.values().cloned().collect();
        let mut lost = Vec::new();
        let kept: BTreeSet<String> =
            first_claims(&self.local, &backend.backend_data(), &leases, &mut lost)
                .into_iter()
                .map(|lease| lease.node_name)
                .collect();
        for name in self.kept.difference(&kept).cloned().collect::<Vec<_>>() {
            let objects = self.objects_of(backend, config, self.leases.get(&name))?.0;
            keys.insert_state(&objects);
            self.state.remove_objects(&objects);
            self.kept.remove(&name);
            self.problems.remove(&name);
        }
        for problem in lost {
            self.problems.insert(problem.node.clone(), vec![problem]);
        }
        for name in &kept {
            if self.kept.contains(name) && !changed.contains(name) {
                continue;
            }
            let Some(lease) = self.leases.get(name) else {
                continue;
            };
            let (objects, problems) = self.objects_of(backend, config, Some(lease))?;
            keys.insert_state(&objects);
            self.state.insert_objects(objects);
            self.problems.remove(name);
            if !problems.is_empty() {
                self.problems.insert(name.clone(), problems);
            }
            self.kept.insert(name.clone());
        }
        Ok(keys)
    }

    /// The per-peer objects of `lease` (nothing for `None`), and what its backend could not
    /// program.
    fn objects_of(
        &self,
        backend: &dyn Backend,
        config: &FabricConfig,
        lease: Option<&Lease>,
    ) -> Result<(KernelState, Vec<PeerProblem>), FabricError> {
        let mut objects = KernelState::default();
        let mut problems = Vec::new();
        let Some(lease) = lease else {
            return Ok((objects, problems));
        };
        backend.program(
            &self.local,
            std::slice::from_ref(lease),
            config,
            &mut objects,
            &mut problems,
        )?;
        objects.links.clear();
        objects
            .addresses
            .retain(|a| !self.base.addresses.contains(a));
        objects
            .routes
            .retain(|dst, _| !self.base.routes.contains_key(dst));
        objects
            .neighbours
            .retain(|key, _| !self.base.neighbours.contains_key(key));
        objects
            .fdb
            .retain(|key, _| !self.base.fdb.contains_key(key));
        objects
            .wg_peers
            .retain(|key, _| !self.base.wg_peers.contains_key(key));
        Ok((objects, problems))
    }

    /// The families this node has a pod CIDR of: the only ones programmed and claimed.
    fn families(&self) -> Vec<Family> {
        [Family::Ipv4, Family::Ipv6]
            .into_iter()
            .filter(|family| lease_cidr(&self.local, *family).is_some())
            .collect()
    }

    /// Counts `lease`'s claims in (`by` = 1) or out (-1) of the index.
    fn index(&mut self, lease: &Lease, by: i32) {
        for claim in claims_of(lease, &self.families()) {
            let count = match claim {
                Claim::PodCidr(cidr) => self.cidrs.entry(cidr).or_default(),
                _ => self.claimed.entry(claim).or_default(),
            };
            *count = count.saturating_add_signed(by);
            if *count == 0 {
                match claim {
                    Claim::PodCidr(cidr) => self.cidrs.remove(&cidr),
                    _ => self.claimed.remove(&claim),
                };
            }
        }
    }

    /// Whether an indexed peer claims `claim` (for a pod CIDR: one overlapping it).
    fn claimed_by_others(&self, claim: &Claim) -> bool {
        let Claim::PodCidr(cidr) = *claim else {
            return self.claimed.contains_key(claim);
        };
        // A CIDR containing this one's start: one lookup per shorter prefix...
        let start = cidr.network();
        let containing = (0..=cidr.prefix_len())
            .any(|len| truncate(start, len).is_some_and(|outer| self.cidrs.contains_key(&outer)));
        // ...or one starting inside it.
        containing
            || self
                .cidrs
                .range(cidr..)
                .next()
                .is_some_and(|(held, _)| cidr.contains(held.network()))
    }
}

/// The CIDR of prefix `len` that contains `ip`.
fn truncate(ip: IpAddr, len: u8) -> Option<Cidr> {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            Ipv4Cidr::new(Ipv4Addr::from(u32::from(v4) & mask), len).map(Cidr::V4)
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            Ipv6Cidr::new(Ipv6Addr::from(u128::from(v6) & mask), len).map(Cidr::V6)
        }
    }
}
