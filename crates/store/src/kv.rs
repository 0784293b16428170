//! The revisioned key-value trait both back ends implement, modelled on etcd's v3 API.
//!
//! Every write that changes something gets the next store revision; every key remembers the
//! revision that created it and the one that last changed it. Transactions compare those
//! revisions (compare-and-swap), and a watch replays the changes after any revision that has not
//! been compacted away.

use std::fmt;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::StoreError;

#[cfg(test)]
mod tests;

/// The revisioned key-value store that holds cluster state: the one trait for it.
///
/// Both back ends ([`EmbeddedStore`](crate::EmbeddedStore), [`EtcdStore`](crate::EtcdStore))
/// behave alike, as etcd does:
///
/// - One store-wide revision counts every write that changed something. A transaction whose
///   operations change nothing (a delete of a missing key) does not advance it.
/// - [`Kv::txn`] checks every [`Compare`] and, when all hold, applies every [`Op`] atomically
///   at one new revision. A transaction may change each key at most once.
/// - [`Kv::watch`] yields every change with a revision greater than `from`, each revision's
///   changes together in one [`WatchBatch`], with no gaps and no repeats. Resuming from the last
///   batch's revision continues exactly. When the history after `from` was compacted, it yields
///   [`StoreError::Compacted`] and the caller lists again.
///
/// The methods return boxed futures so the trait is dyn-compatible: the daemons hold an
/// `Arc<dyn Kv>` (inside [`Store`](crate::Store)) and pick the back end at run time. A box per
/// call costs nothing next to the I/O behind it.
///
/// Keys are UTF-8 strings; weft's live under `/weft/` (see [`keys`](crate::keys)).
pub trait Kv: Send + Sync + fmt::Debug + 'static {
    /// The key's current value and revisions, or `None` when it does not exist.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>>;

    /// Every key starting with `prefix`, in key order, from one consistent snapshot, and the
    /// store revision of that snapshot (watch from it to follow changes).
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Listing, StoreError>>;

    /// Applies `txn`'s operations if all of its comparisons hold, atomically.
    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnOutcome, StoreError>>;

    /// The changes to keys starting with `prefix` with a revision greater than `from`, then
    /// every later change as it is committed.
    ///
    /// The stream is lazy: it connects (etcd) or reads history (embedded) when first polled.
    /// An embedded watch keeps the store file open until the stream is dropped.
    /// It ends after yielding an error. [`StoreError::Compacted`] means `from` is too old: list
    /// again and watch from the listed revision. Other errors mean the connection or the file
    /// failed: watch again from the last batch's revision.
    fn watch(&self, prefix: &str, from: Revision) -> WatchStream;

    /// Drops the history before `revision`: watches from a revision below `revision - 1` get
    /// [`StoreError::Compacted`]. Compacting to a revision already compacted does nothing.
    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The store's current revision.
    fn revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>>;
}

/// A stream of committed changes, one [`WatchBatch`] per revision; see [`Kv::watch`].
pub type WatchStream = BoxStream<'static, Result<WatchBatch, StoreError>>;

/// A store revision: 0 before the first write, then one more for each write that changed
/// something.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Revision(pub u64);

/// A key, its value and its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// The revision that created the key (since it last did not exist).
    pub create_revision: Revision,
    /// The revision that last changed the key.
    pub mod_revision: Revision,
}

/// The keys under a prefix and the revision they were read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The keys, in key order.
    pub items: Vec<KeyValue>,
    /// The store revision of the snapshot: watch from it to see every later change.
    pub revision: Revision,
}

/// A condition a transaction checks before it applies its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key was last changed at `revision`. Revision 0 means the key does not exist, as in
    /// etcd.
    ModRevision {
        /// The key.
        key: String,
        /// The expected mod revision.
        revision: Revision,
    },
    /// The key does not exist (etcd: `create_revision == 0`).
    Absent {
        /// The key.
        key: String,
    },
}

/// A change a transaction makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets the key's value.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: Vec<u8>,
    },
    /// Removes the key; nothing happens when it does not exist.
    Delete {
        /// The key.
        key: String,
    },
}

/// A compare-and-swap transaction: comparisons, then the operations applied when all hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Txn {
    /// Conditions that must all hold.
    pub compares: Vec<Compare>,
    /// The changes, applied at one revision when every comparison holds.
    pub ops: Vec<Op>,
}

/// What a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether every comparison held (and the operations were applied).
    pub succeeded: bool,
    /// The store revision after the transaction: the revision of its changes when it succeeded
    /// and changed something, else the current revision.
    pub revision: Revision,
}

/// One committed change to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or changed; `mod_revision` is the change's revision.
    Put(KeyValue),
    /// The key was deleted at `revision`.
    Delete {
        /// The key.
        key: String,
        /// The revision of the deletion.
        revision: Revision,
    },
}

/// Every watched change of one revision. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    /// The revision of every event in the batch: resume a watch from here.
    pub revision: Revision,
    /// The changes, in the order the transaction made them.
    pub events: Vec<WatchEvent>,
}

// === impl Revision ===

impl Revision {
    /// The revision before the first write.
    pub const ZERO: Revision = Revision(0);

    /// The revision as a number.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The revision after this one.
    pub fn next(self) -> Revision {
        Revision(self.0 + 1)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

// === impl Compare ===

impl Compare {
    /// The key was last changed at `revision` (0: it does not exist).
    pub fn mod_revision(key: impl Into<String>, revision: Revision) -> Compare {
        Compare::ModRevision {
            key: key.into(),
            revision,
        }
    }

    /// The key does not exist.
    pub fn absent(key: impl Into<String>) -> Compare {
        Compare::Absent { key: key.into() }
    }

    /// The key compared.
    pub fn key(&self) -> &str {
        match self {
            Compare::ModRevision { key, .. } | Compare::Absent { key } => key,
        }
    }

    /// Whether the comparison holds for a key whose mod revision is `mod_revision` (`None`:
    /// the key does not exist).
    pub fn holds(&self, mod_revision: Option<Revision>) -> bool {
        match self {
            Compare::ModRevision { revision, .. } => {
                mod_revision.unwrap_or(Revision::ZERO) == *revision
            }
            Compare::Absent { .. } => mod_revision.is_none(),
        }
    }
}

// === impl Op ===

impl Op {
    /// The key changed.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

// === impl Txn ===

impl Txn {
    /// An empty transaction: no comparisons, no operations.
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Adds a comparison.
    pub fn when(mut self, compare: Compare) -> Txn {
        self.compares.push(compare);
        self
    }

    /// Adds a put.
    pub fn put(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Txn {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Adds a delete.
    pub fn delete(mut self, key: impl Into<String>) -> Txn {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    /// Refuses a transaction that changes one key twice, as etcd does.
    pub fn check(&self) -> Result<(), StoreError> {
        let mut keys: Vec<&str> = self.ops.iter().map(Op::key).collect();
        keys.sort_unstable();
        match keys.windows(2).find(|w| w[0] == w[1]) {
            Some(w) => Err(StoreError::DuplicateKey {
                key: w[0].to_owned(),
            }),
            None => Ok(()),
        }
    }
}

// === impl WatchEvent ===

impl WatchEvent {
    /// The key changed.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }

    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }
}

/// Groups events (in revision order) into one batch per revision.
pub(crate) fn batches(events: impl IntoIterator<Item = WatchEvent>) -> Vec<WatchBatch> {
    let mut out: Vec<WatchBatch> = Vec::new();
    for event in events {
        let revision = event.revision();
        match out.last_mut() {
            Some(batch) if batch.revision == revision => batch.events.push(event),
            _ => out.push(WatchBatch {
                revision,
                events: vec![event],
            }),
        }
    }
    out
}
