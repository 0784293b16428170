//! Cluster state for weft's servers: the cluster network config, nodes, leases and pods, each
//! with a revision, watchable from any revision, and changed with compare-and-swap.
//!
//! Two back ends implement one trait, [`Kv`], with etcd's semantics (a store-wide revision,
//! transactions that compare mod revisions, watches that resume exactly from a revision and
//! report compaction as [`StoreError::Compacted`]):
//!
//! - [`EmbeddedStore`], the default: one redb file, `<data-dir>/server/state.redb`, with
//!   nothing to set up. redb, not SQLite: pure Rust, no C build, and a key-value table is all
//!   this needs (the module doc of `embedded` says more).
//! - [`EtcdStore`], for HA: several servers on one etcd (`--datastore-endpoint`), over
//!   `https://` with etcd's CA and a client certificate ([`EtcdTlsFiles`], K3s's
//!   `--datastore-cafile`, `--datastore-certfile` and `--datastore-keyfile`) or plain `http://`.
//!
//! [`Store`] is the typed layer on top, shared by both: records ([`NodeRecord`],
//! [`weft_fabric::Lease`], [`PodRecord`], the cluster config as opaque JSON), watches per kind,
//! and [`Store::allocate_lease`], which picks free node CIDRs with weft-ipam's allocator and
//! commits the lease with one uniqueness key per CIDR in one transaction, so two servers never
//! hand out the same CIDR. [`keys`] documents the key layout under `/weft/`.
//!
//! This crate deliberately does not decide policy: it does not compare cluster configs
//! (weft-config does), hash or check node passwords (weft-api does), serve anything over the
//! network, or start etcd (outside [`testing`], the `test-util` feature's real etcd for tests,
//! plain or with TLS and client certificates).
//!
//! Read [`Kv`], [`Store`] and [`keys`] first.

#![forbid(unsafe_code)]

mod embedded;
mod error;
mod etcd;
pub mod keys;
mod kv;
mod records;
mod store;
#[cfg(feature = "test-util")]
pub mod testing;

pub use embedded::{DEFAULT_MAX_EVENTS, EMBEDDED_FILE, EmbeddedOptions, EmbeddedStore};
pub use error::StoreError;
pub use etcd::{ClientCertFiles, ETCD_REQUEST_TIMEOUT, EtcdStore, EtcdTlsFiles, parse_endpoints};
pub use kv::{
    Compare, KeyValue, Kv, Listing, Op, Revision, Txn, TxnOutcome, WatchBatch, WatchEvent,
    WatchStream,
};
pub use records::{
    Claim, CorruptRecord, Created, Event, LeaseAllocation, LeaseAttrs, Listed, NodeMaskSizes,
    NodeRecord, PodRecord, TypedBatch, TypedWatch, UnixTime, Versioned,
};
pub use store::{Datastore, MAX_ATTEMPTS, Store};
