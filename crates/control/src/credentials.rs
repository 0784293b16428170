//! Which node certificate is current: each node record holds the fingerprint of the certificate
//! its server issued last, and only that certificate speaks for the node. A deleted node's
//! certificate, and a certificate a node was issued before its current one, are refused by
//! every endpoint that takes node certificates, and the watches and tunnels they hold end as
//! soon as this server sees the change.
//!
//! [`NodeCredentials`] follows the store's node records with one watch and keeps every node's
//! current fingerprint in memory; a check that misses the cache (a node that registered on
//! another server a moment ago) asks the store, which is the authority.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;
use weft_store::{Event, Store, StoreError};

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
    /// fingerprints, which takes any certificate the CA issued to the node's name).
    current: RwLock<HashMap<String, Option<String>>>,
    revoked: broadcast::Sender<Revocation>,
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
        let cached = self.read().get(node).cloned();
        match cached {
            Some(None) => return true,
            Some(Some(current)) if current == fingerprint => return true,
            _ => {}
        }
        // Not what this server has seen: the node may have registered on another server a
        // moment ago. The store decides.
        match self.inner.store.get_node(node).await {
            Ok(Some(record)) => record
                .value
                .cert_fingerprint
                .as_deref()
                .is_none_or(|current| current == fingerprint),
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(%node, error = %e, "could not read the node record to check its certificate");
                false
            }
        }
    }

    /// Every revocation from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.inner.revoked.subscribe()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Option<String>>> {
        self.inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Option<String>>> {
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
        let old = std::mem::replace(&mut *self.write(), fresh.clone());
        for (node, fingerprint) in old {
            match fresh.get(&node) {
                Some(current) if *current == fingerprint => {}
                Some(current) => self.revoke(node, current.clone()),
                None => self.revoke(node, None),
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
                            let old = self.write().insert(name.clone(), current.clone());
                            if old.is_some_and(|old| old != current) {
                                self.revoke(name, current);
                            }
                        }
                        Event::Delete { name, .. } => {
                            self.write().remove(&name);
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
