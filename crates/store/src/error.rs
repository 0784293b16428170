//! The one error type of weft-store.

use std::path::PathBuf;
use std::sync::Arc;

use weft_ipam::IpamError;

use crate::Revision;

/// Everything that can go wrong reading or writing cluster state.
///
/// Callers tell these cases apart:
///
/// - [`StoreError::Compacted`]: a watch can't resume; list again and watch from the listed
///   revision.
/// - [`StoreError::Corrupt`]: a stored record does not parse; the message names the key.
/// - [`StoreError::Ipam`]: the cluster CIDR is exhausted (or a CIDR does not fit it).
/// - [`StoreError::RetriesExhausted`]: other writers kept winning; try again later.
/// - The backend variants ([`StoreError::Embedded`], [`StoreError::Etcd`] and friends): I/O.
///
/// It is neither `Clone` nor `PartialEq`, because it carries redb's and etcd-client's errors as
/// sources and those are neither; tests match on variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The embedded store file could not be opened, read or written.
    #[error("embedded store {path}: {source}")]
    Embedded {
        /// The store file.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: Arc<redb::Error>,
    },
    /// The embedded store file is open in another process.
    #[error(
        "embedded store {path} is in use by another process: stop the other weft-server using this data dir, or give this one another --data-dir"
    )]
    InUse {
        /// The store file.
        path: PathBuf,
    },
    /// The directory of the embedded store could not be created.
    #[error("can't create the store directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// The embedded store stopped: its writer thread panicked, or the runtime is shutting down.
    #[error(
        "the embedded store stopped (its writer thread ended, or the runtime is shutting down); restart the server"
    )]
    Stopped,
    /// `--datastore-endpoint` is not a list of etcd URLs.
    #[error(
        "invalid datastore-endpoint {value:?}: {reason}; give comma-separated etcd URLs like https://127.0.0.1:2379"
    )]
    InvalidEndpoint {
        /// The whole flag value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS files were given for a store that does not use TLS: the embedded store, or etcd at
    /// `http://` endpoints.
    #[error(
        "{} {} only to an https:// etcd endpoint, but {store}: set --datastore-endpoint to https:// URLs, or unset them",
        flags.join(", "),
        if flags.len() == 1 { "applies" } else { "apply" }
    )]
    TlsNeedsHttps {
        /// The TLS flags given.
        flags: Vec<&'static str>,
        /// What the store is instead, e.g. `--datastore-endpoint is http://10.0.0.1:2379`.
        store: String,
    },
    /// A TLS file can't be read, or does not hold what its flag needs.
    #[error("{flag} {path} can't be used: {reason}; point it at a readable PEM file", path = path.display())]
    TlsFile {
        /// The flag, e.g. `--datastore-cafile`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An `https://` endpoint without `--datastore-cafile`, and the host trusts no CA.
    #[error(
        "an https:// --datastore-endpoint without --datastore-cafile trusts the system's CAs, and this host has none ({reason}): set --datastore-cafile to the CA that signed etcd's certificate, or install the ca-certificates package"
    )]
    NoSystemCas {
        /// Why none were found.
        reason: String,
    },
    /// The TLS files can't make a client configuration: most often a key that does not go
    /// with the certificate.
    #[error("can't set up TLS to etcd: {reason}")]
    TlsSetup {
        /// What is wrong, naming the files.
        reason: String,
    },
    /// A TLS connection to etcd failed over a certificate: etcd's, or the client's.
    #[error("TLS to etcd at {endpoint} failed: {failure}; {advice}")]
    EtcdTls {
        /// The endpoint.
        endpoint: String,
        /// What failed, in rustls's words.
        failure: String,
        /// What to change.
        advice: String,
    },
    /// An etcd request failed.
    #[error("etcd {op} failed: {source}; check that --datastore-endpoint reaches a healthy etcd")]
    Etcd {
        /// The request, e.g. `txn` or `watch`.
        op: &'static str,
        /// What etcd-client reported.
        #[source]
        source: Arc<etcd_client::Error>,
    },
    /// An etcd request got no answer in time.
    #[error(
        "etcd {op} got no answer within {seconds} s; check that --datastore-endpoint reaches a healthy etcd"
    )]
    EtcdTimeout {
        /// The request.
        op: &'static str,
        /// How long it waited.
        seconds: u64,
    },
    /// etcd cancelled or closed a watch without saying it was compacted.
    #[error("etcd ended the watch on {prefix}: {reason}; watch again from the last revision seen")]
    WatchEnded {
        /// The watched prefix.
        prefix: String,
        /// What etcd said, if anything.
        reason: String,
    },
    /// The history a watch needs was compacted away.
    #[error(
        "the store's history before revision {oldest} was compacted; list again and watch from the listed revision"
    )]
    Compacted {
        /// The oldest revision whose events are still kept: a watch can resume from
        /// `oldest - 1` or later.
        oldest: Revision,
    },
    /// Compaction was asked for a revision the store has not reached.
    #[error("can't compact to revision {revision}: the store is at revision {current}")]
    FutureRevision {
        /// The revision asked for.
        revision: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// A stored record does not parse, or does not match its key.
    #[error("corrupt {what} at key {key}: {reason}; delete the key or the node it belongs to")]
    Corrupt {
        /// The key.
        key: String,
        /// What the record should be, e.g. `lease`.
        what: &'static str,
        /// What failed.
        reason: String,
    },
    /// A value could not be encoded as JSON.
    #[error("can't encode the {what} as JSON: {reason}")]
    Encode {
        /// What was being encoded, e.g. `cluster config`.
        what: &'static str,
        /// What serde_json reported.
        reason: String,
    },
    /// A name can't be used in a key.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// What the name is for, e.g. `node name`.
        what: &'static str,
        /// The name.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A transaction changes one key twice (etcd refuses that, so both back ends do).
    #[error("a transaction changes key {key} twice; change each key at most once per transaction")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// Other writers kept changing the same keys.
    #[error(
        "gave up trying to {what} after {attempts} attempts that conflicted with other writers; try again"
    )]
    RetriesExhausted {
        /// What was being done, e.g. `allocate a lease for node n1`.
        what: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// A lease update tried to change the node's CIDRs (only allocation picks CIDRs).
    #[error(
        "the lease of node {node} can't change its CIDRs from {stored} to {given}; release the lease and allocate a new one"
    )]
    LeaseCidrsChanged {
        /// The node.
        node: String,
        /// The stored CIDRs.
        stored: String,
        /// The CIDRs given.
        given: String,
    },
    /// A node claims an address, VTEP MAC or WireGuard key another live node holds.
    #[error("{}", claim.conflict(owner))]
    Claimed {
        /// What was claimed.
        claim: crate::Claim,
        /// The node that holds it.
        owner: String,
    },
    /// A lease update for a node that has no lease.
    #[error("node {node} has no lease; allocate one first")]
    NoLease {
        /// The node.
        node: String,
    },
    /// A stored subnet index key overlaps the cluster CIDR without being one of its node CIDRs.
    #[error("stored subnet {key} does not fit the cluster network: {source}")]
    SubnetDoesNotFit {
        /// The subnet index key.
        key: String,
        /// Why it does not fit.
        #[source]
        source: IpamError,
    },
    /// An IPAM error: the cluster CIDR is exhausted, or a mask size does not fit it.
    #[error(transparent)]
    Ipam(#[from] IpamError),
}
