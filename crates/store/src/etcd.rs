//! The etcd back end: cluster state shared by several servers, from `--datastore-endpoint`.
//!
//! Each [`Kv`] call is one etcd request (a list may take several pages, all read at the
//! revision of the first): transactions are etcd transactions comparing `mod_revision`, or
//! `create_revision == 0` for absence; a watch is an etcd watch on the prefix from
//! `start_revision = from + 1`; compaction is etcd's. Talks `http://`, or `https://` with the
//! TLS files of [`EtcdTlsFiles`] (the `tls` module).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, CompactionOptions, CompareOp, ConnectOptions, EventType, GetOptions, TxnOp,
    WatchOptions,
};
use futures::StreamExt;
use futures::future::BoxFuture;

use crate::{
    Compare, KeyValue, Kv, Listing, Op, Revision, StoreError, Txn, TxnOutcome, WatchBatch,
    WatchEvent, WatchStream, keys,
};
use tls::EtcdTls;

#[cfg(test)]
mod tests;
mod tls;

pub use tls::{ClientCertFiles, EtcdTlsFiles};

/// Cluster state in etcd (3.4 or later): for several servers sharing one cluster.
///
/// Handles are cheap to clone and share one connection (etcd-client's channel balances over
/// every endpoint). Several servers each open their own handle; their transactions are
/// serialized by etcd, so compare-and-swap holds across them.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    endpoints: Arc<[String]>,
}

/// How long one etcd request may take before it fails with [`StoreError::EtcdTimeout`].
pub const ETCD_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses `--datastore-endpoint`: comma-separated `http://HOST:PORT` or `https://HOST:PORT`
/// URLs of etcd, all with the same scheme.
pub fn parse_endpoints(value: &str) -> Result<Vec<String>, StoreError> {
    let invalid = |reason: String| StoreError::InvalidEndpoint {
        value: value.to_owned(),
        reason,
    };
    let mut endpoints: Vec<String> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((scheme, authority)) = ["https://", "http://"]
            .into_iter()
            .find_map(|scheme| Some((scheme, entry.strip_prefix(scheme)?)))
        else {
            return Err(invalid(format!(
                "{entry} does not start with http:// or https://"
            )));
        };
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        match authority.rsplit_once(':') {
            Some((host, port))
                if !host.is_empty() && !authority.contains('/') && port.parse::<u16>().is_ok() => {}
            _ => {
                return Err(invalid(format!(
                    "{entry} is not {scheme}HOST:PORT (etcd's client port is usually 2379)"
                )));
            }
        }
        if let Some(first) = endpoints.first()
            && !first.starts_with(scheme)
        {
            return Err(invalid(format!(
                "{first} and {entry} mix http:// and https://; use https:// for every endpoint"
            )));
        }
        endpoints.push(format!("{scheme}{authority}"));
    }
    if endpoints.is_empty() {
        return Err(invalid("no endpoint given".to_owned()));
    }
    Ok(endpoints)
}

// === impl EtcdStore ===

impl EtcdStore {
    /// Connects to etcd at `endpoints` (`http://HOST:PORT` each) and checks that it answers;
    /// an `https://` endpoint trusts the system's CAs and sends no client certificate.
    pub async fn connect(endpoints: &[String]) -> Result<EtcdStore, StoreError> {
        EtcdStore::connect_tls(endpoints, &EtcdTlsFiles::default()).await
    }

    /// Connects to etcd at `endpoints` (as [`parse_endpoints`] gives them) and checks that it
    /// answers; `https://` endpoints with the CA and client certificate of `tls`.
    ///
    /// TLS files for `http://` endpoints are refused ([`StoreError::TlsNeedsHttps`]), and a
    /// handshake that fails over a certificate is [`StoreError::EtcdTls`], saying which
    /// certificate and what to set.
    pub async fn connect_tls(
        endpoints: &[String],
        tls: &EtcdTlsFiles,
    ) -> Result<EtcdStore, StoreError> {
        let https = endpoints.iter().any(|e| e.starts_with("https://"));
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let tls = match https {
            true => Some(EtcdTls::load(tls)?),
            false if tls.is_empty() => None,
            false => {
                return Err(StoreError::TlsNeedsHttps {
                    flags: tls.flags(),
                    store: format!("--datastore-endpoint is {}", endpoints.join(",")),
                });
            }
        };
        if let Some(tls) = &tls {
            options = options.with_tls(tls.options());
        }
        let client = call("connect", || {
            Client::connect(endpoints, Some(options.clone()))
        })
        .await?;
        // The client connects lazily: ask etcd something so a wrong endpoint fails here.
        let probe = call("connect", || {
            let mut kv = client.kv_client();
            async move {
                let options = GetOptions::new().with_count_only();
                kv.get(keys::ROOT, Some(options)).await
            }
        })
        .await;
        if let Err(e) = probe {
            // etcd-client's error hides why TLS failed: find out with a handshake of our own.
            for endpoint in endpoints {
                if let Some(tls) = &tls
                    && let Some(failure) = tls.diagnose(endpoint).await
                    && let Some(advice) = tls.advice(&failure)
                {
                    return Err(StoreError::EtcdTls {
                        endpoint: endpoint.clone(),
                        failure,
                        advice,
                    });
                }
            }
            return Err(e);
        }
        Ok(EtcdStore {
            client,
            endpoints: endpoints.into(),
        })
    }

    /// The endpoints this handle talks to.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    async fn list_at_one_revision(&self, prefix: &str) -> Result<Listing, StoreError> {
        /// Keys per page: bounds each response far below gRPC's 4 MiB message limit.
        const PAGE: i64 = 500;
        let end = keys::prefix_end(prefix);
        let mut start = if prefix.is_empty() {
            vec![0]
        } else {
            prefix.as_bytes().to_vec()
        };
        let mut at: Option<i64> = None;
        let mut items = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if let Some(revision) = at {
                options = options.with_revision(revision);
            }
            let response = call("list", || {
                let (mut kv, start, options) =
                    (self.client.kv_client(), start.clone(), options.clone());
                async move { kv.get(start, Some(options)).await }
            })
            .await?;
            let revision = *at.get_or_insert(header_revision(response.header()));
            for kv in response.kvs() {
                items.push(key_value(kv)?);
            }
            match response.kvs().last() {
                Some(last) if response.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => {
                    return Ok(Listing {
                        items,
                        revision: revision_from(revision),
                    });
                }
            }
        }
    }
}

impl Kv for EtcdStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        Box::pin(async move {
            let response = call("get", || {
                let mut kv = self.client.kv_client();
                async move { kv.get(key, None).await }
            })
            .await?;
            response.kvs().first().map(key_value).transpose()
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Listing, StoreError>> {
        Box::pin(async move {
            // A compaction between two pages invalidates the first page's revision: start over.
            let mut attempt = 0;
            loop {
                match self.list_at_one_revision(prefix).await {
                    Err(StoreError::Etcd { source, .. })
                        if attempt < 3 && is_compacted(&source) =>
                    {
                        attempt += 1;
                    }
                    result => return result,
                }
            }
        })
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnOutcome, StoreError>> {
        Box::pin(async move {
            txn.check()?;
            let compares: Vec<etcd_client::Compare> = txn
                .compares
                .into_iter()
                .map(|c| match c {
                    Compare::ModRevision { key, revision } => etcd_client::Compare::mod_revision(
                        key,
                        CompareOp::Equal,
                        revision_to_etcd(revision),
                    ),
                    Compare::Absent { key } => {
                        etcd_client::Compare::create_revision(key, CompareOp::Equal, 0)
                    }
                })
                .collect();
            let ops: Vec<TxnOp> = txn
                .ops
                .into_iter()
                .map(|op| match op {
                    Op::Put { key, value } => TxnOp::put(key, value, None),
                    Op::Delete { key } => TxnOp::delete(key, None),
                })
                .collect();
            let request = etcd_client::Txn::new().when(compares).and_then(ops);
            let response = call("txn", || {
                let (mut kv, request) = (self.client.kv_client(), request.clone());
                async move { kv.txn(request).await }
            })
            .await?;
            Ok(TxnOutcome {
                succeeded: response.succeeded(),
                revision: revision_from(header_revision(response.header())),
            })
        })
    }

    fn watch(&self, prefix: &str, from: Revision) -> WatchStream {
        let watch = EtcdWatch {
            client: self.client.clone(),
            prefix: prefix.to_owned(),
            last: from,
            stream: None,
            pending: VecDeque::new(),
            done: false,
        };
        futures::stream::unfold(watch, |mut watch| async move {
            let item = watch.next().await?;
            Some((item, watch))
        })
        .boxed()
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if revision == Revision::ZERO {
                return Ok(());
            }
            let compacted = call("compact", || {
                let mut kv = self.client.kv_client();
                let options = CompactionOptions::new().with_physical();
                async move { kv.compact(revision_to_etcd(revision), Some(options)).await }
            })
            .await;
            match compacted {
                Ok(_) => Ok(()),
                Err(StoreError::Etcd { source, .. }) if is_compacted(&source) => Ok(()),
                Err(StoreError::Etcd { source, .. }) if is_future_revision(&source) => {
                    Err(StoreError::FutureRevision {
                        revision,
                        current: self.revision().await?,
                    })
                }
                Err(e) => Err(e),
            }
        })
    }

    fn revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>> {
        Box::pin(async move {
            let response = call("get", || {
                let mut kv = self.client.kv_client();
                let options = GetOptions::new().with_count_only();
                async move { kv.get(keys::ROOT, Some(options)).await }
            })
            .await?;
            Ok(revision_from(header_revision(response.header())))
        })
    }
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

// --- Internals ---

struct EtcdWatch {
    client: Client,
    prefix: String,
    /// Every change up to this revision has been yielded or queued in `pending`.
    last: Revision,
    stream: Option<etcd_client::WatchStream>,
    pending: VecDeque<WatchBatch>,
    done: bool,
}

// === impl EtcdWatch ===

impl EtcdWatch {
    async fn next(&mut self) -> Option<Result<WatchBatch, StoreError>> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                return Some(Ok(batch));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.step().await {
                self.done = true;
                return Some(Err(e));
            }
        }
    }

    /// Starts the etcd watch, or reads one response of it into `pending`.
    async fn step(&mut self) -> Result<(), StoreError> {
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => {
                let options = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision_to_etcd(self.last.next()));
                let stream = call("watch", || {
                    let (mut client, prefix) = (self.client.watch_client(), self.prefix.clone());
                    let options = options.clone();
                    async move { client.watch(prefix, Some(options)).await }
                })
                .await?;
                self.stream.insert(stream)
            }
        };
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => {
                return Err(StoreError::WatchEnded {
                    prefix: self.prefix.clone(),
                    reason: "the stream closed".to_owned(),
                });
            }
            Err(e) => {
                return Err(StoreError::Etcd {
                    op: "watch",
                    source: Arc::new(e),
                });
            }
        };
        if response.compact_revision() > 0 {
            return Err(StoreError::Compacted {
                oldest: revision_from(response.compact_revision()),
            });
        }
        if response.canceled() {
            return Err(StoreError::WatchEnded {
                prefix: self.prefix.clone(),
                reason: response.cancel_reason().to_owned(),
            });
        }
        let mut events = Vec::with_capacity(response.events().len());
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let revision = revision_from(kv.mod_revision());
            // etcd never repeats a revision; this guards the "no repeats" promise anyway.
            if revision <= self.last {
                continue;
            }
            events.push(match event.event_type() {
                EventType::Put => WatchEvent::Put(key_value(kv)?),
                EventType::Delete => WatchEvent::Delete {
                    key: utf8_key(kv)?,
                    revision,
                },
            });
        }
        // etcd sends all of one revision's events in one response, so the last revision of a
        // response is complete.
        if let Some(last) = events.last() {
            self.last = last.revision();
        }
        self.pending.extend(crate::kv::batches(events));
        Ok(())
    }
}

/// Runs one etcd request within [`ETCD_REQUEST_TIMEOUT`].
///
/// A request that could not connect (it never reached etcd) is sent again, a few times: the
/// client balances over every endpoint and may have picked one that is down.
async fn call<T, F>(op: &'static str, mut request: impl FnMut() -> F) -> Result<T, StoreError>
where
    F: Future<Output = Result<T, etcd_client::Error>>,
{
    /// How often a request that could not connect is sent again.
    const CONNECT_RETRIES: u64 = 8;
    let deadline = tokio::time::Instant::now() + ETCD_REQUEST_TIMEOUT;
    let mut attempt = 0;
    loop {
        match tokio::time::timeout_at(deadline, request()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) if attempt < CONNECT_RETRIES && is_connect_error(&e) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
            }
            Ok(Err(e)) => {
                return Err(StoreError::Etcd {
                    op,
                    source: Arc::new(e),
                });
            }
            Err(_) => {
                return Err(StoreError::EtcdTimeout {
                    op,
                    seconds: ETCD_REQUEST_TIMEOUT.as_secs(),
                });
            }
        }
    }
}

/// Whether a request failed to connect, so it never reached etcd and can be sent again.
fn is_connect_error(e: &etcd_client::Error) -> bool {
    grpc_message_contains(e, "connect error")
}

/// Whether etcd refused a request because its revision was compacted.
fn is_compacted(e: &etcd_client::Error) -> bool {
    grpc_message_contains(e, "required revision has been compacted")
}

/// Whether etcd refused a request because its revision is in the future.
fn is_future_revision(e: &etcd_client::Error) -> bool {
    grpc_message_contains(e, "required revision is a future revision")
}

fn grpc_message_contains(e: &etcd_client::Error, text: &str) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(status) if status.message().contains(text))
}

fn utf8_key(kv: &etcd_client::KeyValue) -> Result<String, StoreError> {
    String::from_utf8(kv.key().to_vec()).map_err(|_| StoreError::Corrupt {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        what: "etcd key",
        reason: "the key is not UTF-8".to_owned(),
    })
}

fn key_value(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: utf8_key(kv)?,
        value: kv.value().to_vec(),
        create_revision: revision_from(kv.create_revision()),
        mod_revision: revision_from(kv.mod_revision()),
    })
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, etcd_client::ResponseHeader::revision)
}

/// etcd's revisions are non-negative `i64`s.
fn revision_from(revision: i64) -> Revision {
    Revision(u64::try_from(revision).unwrap_or(0))
}

fn revision_to_etcd(revision: Revision) -> i64 {
    i64::try_from(revision.get()).unwrap_or(i64::MAX)
}
