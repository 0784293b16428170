//! The typed layer over any [`Kv`]: the cluster config, nodes, leases and pods, and lease
//! allocation with transactions.

use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use weft_fabric::Lease;
use weft_ipam::{Cidr, CidrList, DualStackAllocator, IpamError, NodeCidrBounds, NodeCidrs};

use crate::records::Claim;
use crate::records::{Record, decode, decode_json, encode, name_of};
use crate::{
    Compare, CorruptRecord, Created, EmbeddedStore, EtcdStore, EtcdTlsFiles, Event, KeyValue, Kv,
    LeaseAllocation, LeaseAttrs, Listed, NodeMaskSizes, NodeRecord, PodRecord, Revision,
    StoreError, Txn, TypedBatch, TypedWatch, Versioned, WatchEvent, keys, parse_endpoints,
};

#[cfg(test)]
mod tests;

/// How many times an operation re-reads and retries after losing a compare-and-swap race.
pub const MAX_ATTEMPTS: u32 = 64;

/// Where cluster state lives: the embedded file, or etcd (`--datastore-endpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datastore {
    /// `<data_dir>/server/state.redb`.
    Embedded {
        /// The server's `--data-dir`.
        data_dir: PathBuf,
    },
    /// etcd at these `http://HOST:PORT` or `https://HOST:PORT` endpoints.
    Etcd {
        /// The endpoints.
        endpoints: Vec<String>,
        /// The CA and client certificate for `https://` endpoints; empty for `http://`.
        tls: EtcdTlsFiles,
    },
}

/// Cluster state: the cluster network config, nodes, leases and pods, on any [`Kv`] back end.
///
/// It holds an `Arc<dyn Kv>`, so the daemons pick the back end at run time
/// ([`Datastore::open`]) and the rest of their code is the same for both.
///
/// Cheap to clone; clones share the back end and the allocation cache. Two `Store`s on one
/// etcd (two servers) never hand out the same CIDR: every allocation is one transaction that
/// requires the CIDRs' index keys to be absent.
///
/// Reading a corrupt record fails with [`StoreError::Corrupt`] naming the key; lists return
/// corrupt records apart ([`Listed::corrupt`]) and typed watches report each as an error item
/// and go on, so one damaged record never hides the others. Deleting the node
/// ([`Store::delete_node`]) or releasing its lease removes a corrupt record.
#[derive(Debug, Clone)]
pub struct Store {
    kv: Arc<dyn Kv>,
    /// The allocator as this handle last saw the subnet index; refreshed after a lost race.
    cache: Arc<Mutex<Option<AllocatorCache>>>,
}

// === impl Datastore ===

impl Datastore {
    /// The datastore of `--data-dir`, `--datastore-endpoint` (empty or absent: embedded) and
    /// the TLS files (`--datastore-cafile`, `--datastore-certfile`, `--datastore-keyfile`),
    /// which only `https://` endpoints take.
    pub fn from_flags(
        data_dir: &Path,
        datastore_endpoint: Option<&str>,
        tls: EtcdTlsFiles,
    ) -> Result<Datastore, StoreError> {
        let datastore = match datastore_endpoint.map(str::trim) {
            None | Some("") => Datastore::Embedded {
                data_dir: data_dir.to_owned(),
            },
            Some(value) => Datastore::Etcd {
                endpoints: parse_endpoints(value)?,
                tls: EtcdTlsFiles::default(),
            },
        };
        if tls.is_empty() {
            return Ok(datastore);
        }
        match datastore {
            Datastore::Etcd { endpoints, .. } if endpoints[0].starts_with("https://") => {
                Ok(Datastore::Etcd { endpoints, tls })
            }
            Datastore::Etcd { endpoints, .. } => Err(StoreError::TlsNeedsHttps {
                flags: tls.flags(),
                store: format!("--datastore-endpoint is {}", endpoints.join(",")),
            }),
            Datastore::Embedded { .. } => Err(StoreError::TlsNeedsHttps {
                flags: tls.flags(),
                store: "--datastore-endpoint is not set, so the store is the embedded one"
                    .to_owned(),
            }),
        }
    }

    /// Opens the store.
    pub async fn open(&self) -> Result<Store, StoreError> {
        let kv: Arc<dyn Kv> = match self {
            Datastore::Embedded { data_dir } => Arc::new(EmbeddedStore::open(data_dir).await?),
            Datastore::Etcd { endpoints, tls } => {
                Arc::new(EtcdStore::connect_tls(endpoints, tls).await?)
            }
        };
        Ok(Store::new(kv))
    }
}

// === impl Store ===

impl Store {
    /// The typed layer over `kv`.
    pub fn new(kv: Arc<dyn Kv>) -> Store {
        Store {
            kv,
            cache: Arc::new(Mutex::new(None)),
        }
    }

    /// The key-value store underneath.
    pub fn kv(&self) -> &Arc<dyn Kv> {
        &self.kv
    }

    // --- Cluster config ---

    /// The cluster network config, if one was stored.
    pub async fn cluster_config<T: DeserializeOwned>(
        &self,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        let Some(kv) = self.kv.get(keys::CLUSTER_CONFIG).await? else {
            return Ok(None);
        };
        Ok(Some(Versioned {
            value: decode_json(CLUSTER_CONFIG, &kv.key, &kv.value)?,
            revision: kv.mod_revision,
        }))
    }

    /// Stores `config` as the cluster network config unless one exists; returns the stored one
    /// either way, so the caller compares its critical settings (weft-config does that).
    pub async fn create_cluster_config_if_absent<T>(
        &self,
        config: &T,
    ) -> Result<Created<T>, StoreError>
    where
        T: Serialize + DeserializeOwned + Clone,
    {
        let bytes = encode(CLUSTER_CONFIG, config)?;
        self.create(keys::CLUSTER_CONFIG, bytes, config, |kv| {
            Ok(Versioned {
                value: decode_json(CLUSTER_CONFIG, &kv.key, &kv.value)?,
                revision: kv.mod_revision,
            })
        })
        .await
    }

    /// Replaces the cluster network config if it is still at `expected`; `None` when it changed
    /// meanwhile.
    pub async fn update_cluster_config<T: Serialize>(
        &self,
        config: &T,
        expected: Revision,
    ) -> Result<Option<Revision>, StoreError> {
        let bytes = encode(CLUSTER_CONFIG, config)?;
        self.update(keys::CLUSTER_CONFIG, bytes, expected).await
    }

    // --- Nodes ---

    /// A node's record.
    pub async fn get_node(&self, name: &str) -> Result<Option<Versioned<NodeRecord>>, StoreError> {
        keys::check_name("node name", name)?;
        self.get(&keys::node(name)).await
    }

    /// Every node record.
    pub async fn list_nodes(&self) -> Result<Listed<NodeRecord>, StoreError> {
        self.list().await
    }

    /// Writes a node record, whatever was there.
    pub async fn put_node(&self, node: &NodeRecord) -> Result<Revision, StoreError> {
        self.put(node).await
    }

    /// Writes a node record unless the node exists; returns the stored record either way (to
    /// compare password hashes).
    pub async fn create_node(&self, node: &NodeRecord) -> Result<Created<NodeRecord>, StoreError> {
        node.check_names()?;
        let bytes = encode(NodeRecord::WHAT, node)?;
        self.create(&node.key(), bytes, node, decode).await
    }

    /// Replaces a node record if it is still at `expected`; `None` when it changed meanwhile.
    pub async fn update_node(
        &self,
        node: &NodeRecord,
        expected: Revision,
    ) -> Result<Option<Revision>, StoreError> {
        node.check_names()?;
        let bytes = encode(NodeRecord::WHAT, node)?;
        self.update(&node.key(), bytes, expected).await
    }

    /// Writes `node` (a registering node's record, its addresses as the node gives them now)
    /// together with its `claims`, in one transaction: each claim key is taken for the node on
    /// the condition that no other node holds it, the claims the node held before and gives no
    /// more are released, and the record is written only if it is still at `expected` (absent
    /// for `None`: a new node). Two servers racing for one claim can't both win; the loser gets
    /// [`StoreError::Claimed`], naming the value and its owner, and nothing of its request is
    /// written. A claim whose owner has no record any more (a store edited by hand) is taken
    /// over.
    ///
    /// Returns the record's new revision, or `None` when the record is no longer at `expected`
    /// (read it again, check the node's password again, and retry).
    pub async fn claim_node(
        &self,
        node: &NodeRecord,
        claims: &[Claim],
        expected: Option<Revision>,
    ) -> Result<Option<Revision>, StoreError> {
        node.check_names()?;
        let node_key = node.key();
        let mut wanted: Vec<(String, &Claim)> = Vec::new();
        for claim in claims {
            let key = claim.key();
            if !wanted.iter().any(|(k, _)| *k == key) {
                wanted.push((key, claim));
            }
        }
        for _ in 0..MAX_ATTEMPTS {
            let current = self.kv.get(&node_key).await?;
            let (held, mut txn) = match (&current, expected) {
                (None, None) => (Vec::new(), Txn::new().when(Compare::absent(&node_key))),
                (Some(kv), Some(expected)) if kv.mod_revision == expected => {
                    let held: Versioned<NodeRecord> = decode(kv)?;
                    let same_claims = held.value.claims.len() == wanted.len()
                        && wanted.iter().all(|(k, _)| held.value.claims.contains(k));
                    let record = NodeRecord {
                        claims: held.value.claims.clone(),
                        ..node.clone()
                    };
                    if same_claims && held.value == record {
                        // Claims are released only with the node: the ones it holds are its.
                        return Ok(Some(expected));
                    }
                    let txn = Txn::new().when(Compare::mod_revision(&node_key, expected));
                    (held.value.claims, txn)
                }
                _ => return Ok(None),
            };
            for (key, claim) in &wanted {
                txn = match self.kv.get(key).await? {
                    None => txn.when(Compare::absent(key)).put(key, node.name.as_str()),
                    Some(kv) if kv.value == node.name.as_bytes() => {
                        txn.when(Compare::mod_revision(key, kv.mod_revision))
                    }
                    Some(kv) => {
                        let owner = String::from_utf8_lossy(&kv.value).into_owned();
                        let owner_key = keys::node(&owner);
                        if keys::check_name("node name", &owner).is_ok()
                            && self.kv.get(&owner_key).await?.is_some()
                        {
                            return Err(StoreError::Claimed {
                                claim: (*claim).clone(),
                                owner,
                            });
                        }
                        txn.when(Compare::mod_revision(key, kv.mod_revision))
                            .when(Compare::absent(owner_key))
                            .put(key, node.name.as_str())
                    }
                };
            }
            for old in &held {
                if wanted.iter().any(|(k, _)| k == old) || !old.starts_with(keys::CLAIMS) {
                    continue;
                }
                if let Some(kv) = self.kv.get(old).await?
                    && kv.value == node.name.as_bytes()
                {
                    txn = txn
                        .when(Compare::mod_revision(old, kv.mod_revision))
                        .delete(old);
                }
            }
            let record = NodeRecord {
                claims: wanted.iter().map(|(k, _)| k.clone()).collect(),
                ..node.clone()
            };
            let txn = txn.put(&node_key, encode(NodeRecord::WHAT, &record)?);
            let outcome = self.kv.txn(txn).await?;
            if outcome.succeeded {
                return Ok(Some(outcome.revision));
            }
            // A claim or the record changed meanwhile: look again.
        }
        Err(exhausted(format!(
            "claim the identity of node {}",
            node.name
        )))
    }

    /// Deletes a node: its record, its claims, its lease and the lease's subnet index keys, in
    /// one transaction, then the pod records its agent reported (the namespace named after the
    /// node), so nothing routes to a node that is gone. Works on corrupt records too. Returns
    /// whether anything was deleted.
    pub async fn delete_node(&self, name: &str) -> Result<bool, StoreError> {
        keys::check_name("node name", name)?;
        let node_and_lease = self.delete_node_and_lease(name).await?;
        let mut pods = false;
        for pod in self.kv.list(&keys::pod(name, "")).await?.items {
            pods |= self.delete(&pod.key).await?;
        }
        Ok(node_and_lease || pods)
    }

    async fn delete_node_and_lease(&self, name: &str) -> Result<bool, StoreError> {
        let node_key = keys::node(name);
        for _ in 0..MAX_ATTEMPTS {
            let node = self.kv.get(&node_key).await?;
            let lease = self.lease_teardown(name).await?;
            if node.is_none() && lease.is_none() {
                return Ok(false);
            }
            let mut txn = lease.as_ref().map_or_else(Txn::new, |t| t.txn.clone());
            // Every claim the node holds, found by owner, so a corrupt record loses them too.
            for claim in self.kv.list(keys::CLAIMS).await?.items {
                if claim.value == name.as_bytes() {
                    txn = txn
                        .when(Compare::mod_revision(&claim.key, claim.mod_revision))
                        .delete(&claim.key);
                }
            }
            txn = match &node {
                Some(kv) => txn
                    .when(Compare::mod_revision(&node_key, kv.mod_revision))
                    .delete(&node_key),
                None => txn.when(Compare::absent(&node_key)),
            };
            if lease.is_none() {
                txn = txn.when(Compare::absent(keys::lease(name)));
            }
            if self.kv.txn(txn).await?.succeeded {
                if let Some(cidrs) = lease.and_then(|t| t.cidrs) {
                    self.forget(cidrs);
                }
                return Ok(true);
            }
        }
        Err(exhausted(format!("delete node {name}")))
    }

    /// Watches node records from `from` (see [`Kv::watch`]).
    pub fn watch_nodes(&self, from: Revision) -> TypedWatch<NodeRecord> {
        self.watch(from)
    }

    // --- Leases ---

    /// A node's lease.
    pub async fn get_lease(&self, node: &str) -> Result<Option<Versioned<Lease>>, StoreError> {
        keys::check_name("node name", node)?;
        self.get(&keys::lease(node)).await
    }

    /// Every lease.
    pub async fn list_leases(&self) -> Result<Listed<Lease>, StoreError> {
        self.list().await
    }

    /// The node's lease: its existing one (with `attrs` written into it if they changed), or a
    /// new one with one free node CIDR of each family of `cluster`.
    ///
    /// A node that registers again keeps its CIDRs: the existing lease is returned as stored,
    /// even if `cluster` no longer matches it (weft-config refuses such changes before this).
    ///
    /// A new lease is written in one transaction with the subnet index key of each of its CIDRs,
    /// on the condition that none of them, nor the lease, exists; on a lost race it re-reads
    /// and tries again, at most [`MAX_ATTEMPTS`] times. A dual-stack lease gets both CIDRs or
    /// neither: when either family is exhausted this fails with [`IpamError::Exhausted`].
    ///
    /// Free CIDRs come from weft-ipam's allocator, filled from the subnet index. A handle keeps
    /// that allocator between calls (so one server does not read the whole index per node) and
    /// rebuilds it after a lost race or when it looks exhausted.
    pub async fn allocate_lease(
        &self,
        node: &str,
        cluster: &CidrList,
        masks: NodeMaskSizes,
        attrs: &LeaseAttrs,
    ) -> Result<LeaseAllocation, StoreError> {
        self.allocate_lease_within(node, cluster, masks, NodeCidrBounds::default(), attrs)
            .await
    }

    /// [`Store::allocate_lease`], with a new lease's CIDRs taken only from inside `bounds`
    /// (flannel's `SubnetMin`/`SubnetMax`); an existing lease is kept wherever it lies.
    pub async fn allocate_lease_within(
        &self,
        node: &str,
        cluster: &CidrList,
        masks: NodeMaskSizes,
        bounds: NodeCidrBounds,
        attrs: &LeaseAttrs,
    ) -> Result<LeaseAllocation, StoreError> {
        keys::check_name("node name", node)?;
        let lease_key = keys::lease(node);
        for attempt in 0..MAX_ATTEMPTS {
            if let Some(kv) = self.kv.get(&lease_key).await? {
                let existing: Versioned<Lease> = decode(&kv)?;
                if LeaseAttrs::of(&existing.value) == *attrs {
                    return Ok(LeaseAllocation {
                        lease: existing.value,
                        revision: existing.revision,
                        created: false,
                    });
                }
                let cidrs = cidrs_of(&existing.value);
                let mut lease = attrs.lease(node, cidrs);
                lease.created_revision = existing.value.created_revision;
                let bytes = lease.encode_stored()?;
                if let Some(revision) = self.update(&lease_key, bytes, existing.revision).await? {
                    return Ok(LeaseAllocation {
                        lease,
                        revision,
                        created: false,
                    });
                }
                continue;
            }
            let cidrs = self.pick_cidrs(cluster, masks, bounds, attempt).await?;
            let mut lease = attrs.lease(node, cidrs);
            let mut txn = Txn::new().when(Compare::absent(&lease_key));
            for cidr in cidrs.iter() {
                let key = keys::subnet(cidr);
                txn = txn.when(Compare::absent(&key)).put(key, node);
            }
            let txn = txn.put(&lease_key, lease.encode_stored()?);
            let outcome = self.kv.txn(txn).await?;
            if outcome.succeeded {
                lease.created_revision = outcome.revision.get();
                return Ok(LeaseAllocation {
                    lease,
                    revision: outcome.revision,
                    created: true,
                });
            }
            // Another writer took a CIDR or this node's lease: read the index afresh.
            self.invalidate();
        }
        Err(exhausted(format!("allocate a lease for node {node}")))
    }

    /// Writes what a node publishes (public IPs, backend data) into its existing lease.
    ///
    /// The CIDRs must stay as allocated ([`StoreError::LeaseCidrsChanged`] otherwise), and the
    /// node must have a lease ([`StoreError::NoLease`]). The lease's `created_revision` is
    /// ignored: it is the key's, filled on every read.
    pub async fn update_lease(&self, lease: &Lease) -> Result<Revision, StoreError> {
        lease.check_names()?;
        let key = lease.key();
        for _ in 0..MAX_ATTEMPTS {
            let Some(kv) = self.kv.get(&key).await? else {
                return Err(StoreError::NoLease {
                    node: lease.node_name.clone(),
                });
            };
            let stored: Versioned<Lease> = decode(&kv)?;
            let (old, new) = (cidrs_of(&stored.value), cidrs_of(lease));
            if old != new {
                return Err(StoreError::LeaseCidrsChanged {
                    node: lease.node_name.clone(),
                    stored: cidrs_text(old),
                    given: cidrs_text(new),
                });
            }
            // The node, the CIDRs and the creation revision are the store's, not the writer's.
            if LeaseAttrs::of(&stored.value) == LeaseAttrs::of(lease) {
                return Ok(stored.revision);
            }
            let bytes = lease.encode_stored()?;
            if let Some(revision) = self.update(&key, bytes, stored.revision).await? {
                return Ok(revision);
            }
        }
        Err(exhausted(format!(
            "update the lease of node {}",
            lease.node_name
        )))
    }

    /// Deletes a node's lease and its subnet index keys in one transaction, freeing its CIDRs.
    /// Works on a corrupt lease too. Returns whether the node had a lease.
    pub async fn release_lease(&self, node: &str) -> Result<bool, StoreError> {
        keys::check_name("node name", node)?;
        for _ in 0..MAX_ATTEMPTS {
            let Some(teardown) = self.lease_teardown(node).await? else {
                return Ok(false);
            };
            if self.kv.txn(teardown.txn).await?.succeeded {
                if let Some(cidrs) = teardown.cidrs {
                    self.forget(cidrs);
                }
                return Ok(true);
            }
        }
        Err(exhausted(format!("release the lease of node {node}")))
    }

    /// Watches leases from `from` (see [`Kv::watch`]).
    pub fn watch_leases(&self, from: Revision) -> TypedWatch<Lease> {
        self.watch(from)
    }

    // --- Pods ---

    /// A pod's record.
    pub async fn get_pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Versioned<PodRecord>>, StoreError> {
        keys::check_name("pod namespace", namespace)?;
        keys::check_name("pod name", name)?;
        self.get(&keys::pod(namespace, name)).await
    }

    /// Every pod record.
    pub async fn list_pods(&self) -> Result<Listed<PodRecord>, StoreError> {
        self.list().await
    }

    /// The pod records of one namespace (weft's agents report their pods under their node's
    /// name).
    pub async fn list_pods_in(&self, namespace: &str) -> Result<Listed<PodRecord>, StoreError> {
        keys::check_name("pod namespace", namespace)?;
        self.list_prefix(&format!("{}{namespace}/", keys::PODS))
            .await
    }

    /// Writes a pod record, whatever was there.
    pub async fn put_pod(&self, pod: &PodRecord) -> Result<Revision, StoreError> {
        self.put(pod).await
    }

    /// Deletes a pod record. Returns whether it existed.
    pub async fn delete_pod(&self, namespace: &str, name: &str) -> Result<bool, StoreError> {
        keys::check_name("pod namespace", namespace)?;
        keys::check_name("pod name", name)?;
        self.delete(&keys::pod(namespace, name)).await
    }

    /// Watches pod records from `from` (see [`Kv::watch`]). Event names are `namespace/name`.
    pub fn watch_pods(&self, from: Revision) -> TypedWatch<PodRecord> {
        self.watch(from)
    }

    // --- Generic record access ---

    async fn get<T: Record>(&self, key: &str) -> Result<Option<Versioned<T>>, StoreError> {
        self.kv.get(key).await?.as_ref().map(decode).transpose()
    }

    /// Every record of a kind; corrupt ones are listed apart.
    async fn list<T: Record>(&self) -> Result<Listed<T>, StoreError> {
        self.list_prefix(T::PREFIX).await
    }

    /// The records of a kind under `prefix` (which starts with the kind's prefix).
    async fn list_prefix<T: Record>(&self, prefix: &str) -> Result<Listed<T>, StoreError> {
        let listing = self.kv.list(prefix).await?;
        let mut listed = Listed {
            items: Vec::with_capacity(listing.items.len()),
            revision: listing.revision,
            corrupt: Vec::new(),
        };
        for kv in &listing.items {
            match decode(kv) {
                Ok(record) => listed.items.push(record),
                Err(StoreError::Corrupt { key, what, reason }) => {
                    listed.corrupt.push(CorruptRecord { key, what, reason });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(listed)
    }

    async fn put<T: Record>(&self, value: &T) -> Result<Revision, StoreError> {
        value.check_names()?;
        let txn = Txn::new().put(value.key(), value.encode_stored()?);
        Ok(self.kv.txn(txn).await?.revision)
    }

    /// Writes `bytes` at `key` unless it exists; returns what is stored either way.
    async fn create<T: Clone>(
        &self,
        key: &str,
        bytes: Vec<u8>,
        value: &T,
        decode: impl Fn(&KeyValue) -> Result<Versioned<T>, StoreError>,
    ) -> Result<Created<T>, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let txn = Txn::new()
                .when(Compare::absent(key))
                .put(key, bytes.clone());
            let outcome = self.kv.txn(txn).await?;
            if outcome.succeeded {
                return Ok(Created::Created(Versioned {
                    value: value.clone(),
                    revision: outcome.revision,
                }));
            }
            // It exists, unless it was deleted since: then try again.
            if let Some(kv) = self.kv.get(key).await? {
                return Ok(Created::Existing(decode(&kv)?));
            }
        }
        Err(exhausted(format!("create {key}")))
    }

    /// Writes `bytes` at `key` if the key is still at `expected`.
    async fn update(
        &self,
        key: &str,
        bytes: Vec<u8>,
        expected: Revision,
    ) -> Result<Option<Revision>, StoreError> {
        let txn = Txn::new()
            .when(Compare::mod_revision(key, expected))
            .put(key, bytes);
        let outcome = self.kv.txn(txn).await?;
        Ok(outcome.succeeded.then_some(outcome.revision))
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(kv) = self.kv.get(key).await? else {
                return Ok(false);
            };
            let txn = Txn::new()
                .when(Compare::mod_revision(key, kv.mod_revision))
                .delete(key);
            if self.kv.txn(txn).await?.succeeded {
                return Ok(true);
            }
        }
        Err(exhausted(format!("delete {key}")))
    }

    /// A typed watch: a corrupt record is reported as an error item and the watch goes on.
    fn watch<T: Record>(&self, from: Revision) -> TypedWatch<T> {
        self.kv
            .watch(T::PREFIX, from)
            .flat_map(|item| futures::stream::iter(typed_items::<T>(item)))
            .boxed()
    }

    // --- Leases and the subnet index ---

    /// The transaction that deletes a node's lease and its subnet index keys, if it has a
    /// lease, and the CIDRs it frees.
    async fn lease_teardown(&self, node: &str) -> Result<Option<Teardown>, StoreError> {
        let lease_key = keys::lease(node);
        let Some(lease) = self.kv.get(&lease_key).await? else {
            return Ok(None);
        };
        let decoded = decode::<Lease>(&lease).ok();
        // A readable lease names its index keys; for a corrupt one, find them by owner.
        let index: Vec<KeyValue> = match &decoded {
            Some(lease) => {
                let mut index = Vec::new();
                for cidr in cidrs_of(&lease.value).iter() {
                    if let Some(kv) = self.kv.get(&keys::subnet(cidr)).await? {
                        index.push(kv);
                    }
                }
                index
            }
            None => self.kv.list(keys::SUBNETS).await?.items,
        };
        let mut txn = Txn::new()
            .when(Compare::mod_revision(&lease_key, lease.mod_revision))
            .delete(&lease_key);
        for kv in index.iter().filter(|kv| kv.value == node.as_bytes()) {
            txn = txn
                .when(Compare::mod_revision(&kv.key, kv.mod_revision))
                .delete(&kv.key);
        }
        Ok(Some(Teardown {
            txn,
            cidrs: decoded.map(|l| cidrs_of(&l.value)),
        }))
    }

    /// Free node CIDRs for a new lease, from the cached allocator when this handle has one.
    async fn pick_cidrs(
        &self,
        cluster: &CidrList,
        masks: NodeMaskSizes,
        bounds: NodeCidrBounds,
        attempt: u32,
    ) -> Result<NodeCidrs, StoreError> {
        if attempt == 0 {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = cache
                .as_mut()
                .filter(|c| c.cluster == *cluster && c.masks == masks && c.bounds == bounds)
            {
                match c.allocator.allocate() {
                    Ok(cidrs) => return Ok(cidrs),
                    // The cache may not know of CIDRs released by other servers: read the index.
                    Err(IpamError::Exhausted { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let index = self.kv.list(keys::SUBNETS).await?;
        let mut allocator = DualStackAllocator::new(cluster, masks.ipv4, masks.ipv6)?;
        for kv in &index.items {
            occupy(&mut allocator, &kv.key)?;
        }
        let mut allocator = allocator.bounded(bounds)?;
        let cidrs = pick(&mut allocator, attempt)?;
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = Some(AllocatorCache {
            cluster: *cluster,
            masks,
            bounds,
            allocator,
        });
        Ok(cidrs)
    }

    fn invalidate(&self) {
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Frees released CIDRs in the cached allocator.
    fn forget(&self, cidrs: NodeCidrs) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = cache.as_mut()
            && c.allocator.release(cidrs).is_err()
        {
            // The CIDRs are not this cluster's: the cache is of another config.
            *cache = None;
        }
    }
}

/// weft-ipam's allocator for one cluster network, filled from the subnet index.
#[derive(Debug)]
struct AllocatorCache {
    cluster: CidrList,
    masks: NodeMaskSizes,
    bounds: NodeCidrBounds,
    allocator: DualStackAllocator,
}

/// A delete of a lease and its index keys.
#[derive(Debug)]
struct Teardown {
    txn: Txn,
    /// The CIDRs freed, when the lease was readable.
    cidrs: Option<NodeCidrs>,
}

const CLUSTER_CONFIG: &str = "cluster config";

fn exhausted(what: String) -> StoreError {
    StoreError::RetriesExhausted {
        what,
        attempts: MAX_ATTEMPTS,
    }
}

/// The CIDRs of a lease.
fn cidrs_of(lease: &Lease) -> NodeCidrs {
    NodeCidrs {
        ipv4: lease.ipv4_cidr,
        ipv6: lease.ipv6_cidr,
    }
}

fn cidrs_text(cidrs: NodeCidrs) -> String {
    let text: Vec<String> = cidrs.iter().map(|c| c.to_string()).collect();
    if text.is_empty() {
        "none".to_owned()
    } else {
        text.join(",")
    }
}

/// Marks the CIDR of a subnet index key as taken.
///
/// A CIDR outside the cluster CIDRs, or of a family the cluster does not use, can't collide
/// with what the allocator hands out and is skipped; one that overlaps without being a node
/// CIDR of this cluster (another mask size) is an error naming the key.
fn occupy(allocator: &mut DualStackAllocator, key: &str) -> Result<(), StoreError> {
    let cidrs = match keys::parse_subnet(key)? {
        Cidr::V4(c) => NodeCidrs {
            ipv4: Some(c),
            ipv6: None,
        },
        Cidr::V6(c) => NodeCidrs {
            ipv4: None,
            ipv6: Some(c),
        },
    };
    match allocator.occupy(cidrs) {
        Ok(()) | Err(IpamError::OutsideCluster { .. } | IpamError::FamilyNotEnabled { .. }) => {
            Ok(())
        }
        Err(source) => Err(StoreError::SubnetDoesNotFit {
            key: key.to_owned(),
            source,
        }),
    }
}

/// Picks node CIDRs: the allocator's next on a first attempt; after lost races, a random one
/// of the next few, so servers racing for the same free CIDRs spread out (flannel picks at
/// random among the first free subnets for the same reason).
fn pick(allocator: &mut DualStackAllocator, attempt: u32) -> Result<NodeCidrs, IpamError> {
    let spread = spread(attempt);
    let mut candidates = vec![allocator.allocate()?];
    while candidates.len() < spread {
        match allocator.allocate() {
            Ok(cidrs) => candidates.push(cidrs),
            Err(_) => break,
        }
    }
    let chosen = RandomState::new().hash_one(attempt) as usize % candidates.len();
    let picked = candidates.swap_remove(chosen);
    for other in candidates {
        allocator.release(other)?;
    }
    Ok(picked)
}

/// How many candidates [`pick`] chooses among on an attempt.
fn spread(attempt: u32) -> usize {
    (attempt as usize * 8).clamp(1, 64)
}

/// A raw watch item as typed items: the batch, preceded by an error per corrupt record.
fn typed_items<T: Record>(
    item: Result<crate::WatchBatch, StoreError>,
) -> Vec<Result<TypedBatch<T>, StoreError>> {
    let batch = match item {
        Ok(batch) => batch,
        Err(e) => return vec![Err(e)],
    };
    let mut items = Vec::new();
    let mut events = Vec::with_capacity(batch.events.len());
    for event in batch.events {
        match event {
            WatchEvent::Put(kv) => match decode::<T>(&kv) {
                Ok(record) => events.push(Event::Put {
                    name: name_of::<T>(&kv.key),
                    value: record.value,
                    revision: record.revision,
                }),
                Err(e) => items.push(Err(e)),
            },
            WatchEvent::Delete { key, revision } => events.push(Event::Delete {
                name: name_of::<T>(&key),
                revision,
            }),
        }
    }
    items.push(Ok(TypedBatch {
        revision: batch.revision,
        events,
    }));
    items
}
