//! Which node certificate is current: each node record holds the fingerprint of the certificate
//! its server issued last, and only that certificate speaks for the node. A deleted node's
//! certificate, and a certificate a node was issued before its current one, are refused by
//! every endpoint that takes node certificates, and the watches and tunnels they hold end as
//! soon as this server sees the change.
//!
//! [`NodeCredentials`] follows the store's node records with one watch and keeps every node's
//! current fingerprint in memory, each in a watch channel of its own, so a lease watch wakes
//! only when its own node's certificate changes, not at every other node's registration; a
//! check that misses the cache (a node that registered on another server a moment ago) asks
//! the store, which is the authority. Revocations are also broadcast, for the one listener
//! that needs them all (the tunnel server).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, watch};
use weft_store::{Event, Store, StoreError};

#[cfg(test)]
mod tests;

/// How many revocations a slow listener may fall behind before it is told it lagged.
const REVOCATIONS: usize = 1024;
/// How long to wait before listing again after the store's watch failed.
const RETRY: Duration = Duration::from_secs(1);

/// Every node's current certificate, followed from the store; clones share it.
#[derive(Clone)]
pub struct NodeCredentials {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// Node name to the fingerprint of its current certificate (`None`: a record from before
    /// fingerprints, which takes any certificate the CA issued to the node's name), in a channel
    /// its lease watches follow. A deleted node's channel says `Gone` and is dropped.
    current: RwLock<HashMap<String, watch::Sender<Held>>>,
    revoked: broadcast::Sender<Revocation>,
}

/// What a node holds now, as its channel says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// The node has a record; its current certificate's fingerprint (`None`: any of its name).
    Certificate(Option<String>),
    /// The node was deleted.
    Gone,
}

// === impl Held ===

impl Held {
    /// Whether the certificate with `fingerprint` is the node's current one.
    pub fn admits(&self, fingerprint: &str) -> bool {
        match self {
            Held::Certificate(current) => current.as_deref().is_none_or(|c| c == fingerprint),
            Held::Gone => false,
        }
    }
}

/// A node's earlier certificates stopped being valid: it was issued a new one, or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The node.
    pub node: String,
    /// The fingerprint of its certificate now; `None` when the node was deleted.
    pub current: Option<String>,
}

// === impl NodeCredentials ===

impl NodeCredentials {
    /// Lists the nodes, then follows them in a task of its own for as long as the runtime runs.
    pub async fn start(store: Store) -> Result<NodeCredentials, StoreError> {
        let (revoked, _) = broadcast::channel(REVOCATIONS);
        let credentials = NodeCredentials {
            inner: Arc::new(Inner {
                store,
                current: RwLock::new(HashMap::new()),
                revoked,
            }),
        };
        let revision = credentials.relist().await?;
        tokio::spawn(credentials.clone().follow(revision));
        Ok(credentials)
    }

    /// Whether the certificate with `fingerprint` is `node`'s current one.
    pub async fn is_current(&self, node: &str, fingerprint: &str) -> bool {
        if self.held(node).is_some_and(|held| held.admits(fingerprint)) {
            return true;
        }
        // Not what this server has seen: the node may have registered on another server a
        // moment ago. The store decides.
        match self.inner.store.get_node(node).await {
            Ok(Some(record)) => {
                let held = Held::Certificate(record.value.cert_fingerprint);
                let admits = held.admits(fingerprint);
                self.set(node, held);
                admits
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(%node, error = %e, "could not read the node record to check its certificate");
                false
            }
        }
    }

    /// `node`'s channel: what it holds now, and every change after. A lease watch on one of
    /// its certificates ends once the channel no longer admits that certificate (or closes).
    pub fn watch(&self, node: &str) -> watch::Receiver<Held> {
        if let Some(sender) = self.read().get(node) {
            return sender.subscribe();
        }
        self.write()
            .entry(node.to_owned())
            .or_insert_with(|| watch::Sender::new(Held::Gone))
            .subscribe()
    }

    /// Every revocation from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.inner.revoked.subscribe()
    }

    fn held(&self, node: &str) -> Option<Held> {
        self.read().get(node).map(|sender| sender.borrow().clone())
    }

    /// Records what `node` holds; returns what it held before (`None`: not known here).
    fn set(&self, node: &str, held: Held) -> Option<Held> {
        let mut map = self.write();
        match map.get(node) {
            Some(sender) => {
                let old = sender.send_replace(held.clone());
                if held == Held::Gone {
                    map.remove(node);
                }
                Some(old)
            }
            None => {
                if held != Held::Gone {
                    map.insert(node.to_owned(), watch::Sender::new(held));
                }
                None
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, watch::Sender<Held>>> {
        self.inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, watch::Sender<Held>>> {
        self.inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads every node record, revoking what changed since the last read; returns the
    /// revision to watch from.
    async fn relist(&self) -> Result<weft_store::Revision, StoreError> {
        let listed = self.inner.store.list_nodes().await?;
        let fresh: HashMap<String, Option<String>> = listed
            .items
            .into_iter()
            .map(|n| (n.value.name, n.value.cert_fingerprint))
            .collect();
        let known: Vec<String> = self.read().keys().cloned().collect();
        for node in known.into_iter().filter(|n| !fresh.contains_key(n)) {
            if self
                .set(&node, Held::Gone)
                .is_some_and(|old| old != Held::Gone)
            {
                self.revoke(node, None);
            }
        }
        for (node, fingerprint) in fresh {
            let held = Held::Certificate(fingerprint.clone());
            if self.set(&node, held.clone()).is_some_and(|old| old != held) {
                self.revoke(node, fingerprint);
            }
        }
        Ok(listed.revision)
    }

    fn revoke(&self, node: String, current: Option<String>) {
        tracing::info!(%node, "the node's earlier certificates are revoked");
        // Nobody listening is fine: nothing is open to end.
        let _ = self.inner.revoked.send(Revocation { node, current });
    }

    /// Follows the node records from `revision`, listing again after any error.
    async fn follow(self, mut revision: weft_store::Revision) {
        loop {
            let mut watch = self.inner.store.watch_nodes(revision);
            while let Some(batch) = watch.next().await {
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(e) => {
                        tracing::warn!(error = %e, "following node records for their certificates failed; listing again");
                        break;
                    }
                };
                for event in batch.events {
                    match event {
                        Event::Put { name, value, .. } => {
                            let current = value.cert_fingerprint;
                            let held = Held::Certificate(current.clone());
                            if self
                                .set(&name, held.clone())
                                .is_some_and(|old| old != held && old != Held::Gone)
                            {
                                self.revoke(name, current);
                            }
                        }
                        Event::Delete { name, .. } => {
                            self.set(&name, Held::Gone);
                            self.revoke(name, None);
                        }
                    }
                }
            }
            tokio::time::sleep(RETRY).await;
            match self.relist().await {
                Ok(listed) => revision = listed,
                Err(e) => tracing::warn!(error = %e, "listing node records failed"),
            }
        }
    }
}
