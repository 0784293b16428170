//! Where an agent's leases come from: the [`LeaseSource`] trait, the weft servers' API
//! ([`ApiSource`]), and a static JSON file ([`StaticSource`]) for distributions that already
//! have node pod CIDRs from their own control plane.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;
use weft_api::client::{self, LeaseWatch, NodeClient, TrustedCa};
use weft_api::pki::{RENEW_BEFORE, certificate_info};
use weft_api::protocol::{LeaseEvent, RegisterRequest, WATCH_IDLE_TIMEOUT};
use weft_api::{ApiError, JoinToken};
use weft_cause::Chain;
use weft_config::ClusterNetwork;
use weft_fabric::Lease;

use crate::NodeError;
use crate::identity::{Credentials, NodeIdentity};
use crate::metrics::AgentMetrics;

/// A change to the set of leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseUpdate {
    /// Every lease, replacing what was known (the first update, and after a resync).
    Snapshot(Vec<Lease>),
    /// A lease was added or changed.
    Put(Lease),
    /// A node's lease went away.
    Delete(String),
}

// === impl LeaseUpdate ===

impl LeaseUpdate {
    /// What kind of update it is, for logs: `snapshot`, `put` or `delete`.
    pub fn kind(&self) -> &'static str {
        match self {
            LeaseUpdate::Snapshot(_) => "snapshot",
            LeaseUpdate::Put(_) => "put",
            LeaseUpdate::Delete(_) => "delete",
        }
    }
}

/// A source of leases: the cluster network, this node's lease, and every change to the others.
///
/// The agent calls [`LeaseSource::cluster`], then [`LeaseSource::register`], then
/// [`LeaseSource::next`] in a loop. `next` deals with reconnects itself and returns only
/// updates, or an error the agent can't go on after.
pub trait LeaseSource: Send {
    /// The cluster network settings every node takes from the servers.
    fn cluster(&mut self) -> impl Future<Output = Result<ClusterNetwork, NodeError>> + Send;

    /// Registers this node (idempotent) and returns its lease.
    fn register(
        &mut self,
        request: &RegisterRequest,
    ) -> impl Future<Output = Result<Lease, NodeError>> + Send;

    /// The next change to the leases; the first call returns a snapshot.
    fn next(&mut self) -> impl Future<Output = Result<LeaseUpdate, NodeError>> + Send;
}

/// Leases from the weft servers, over their HTTPS API.
///
/// Trust: the first contact fetches the CA and checks it against the `K10` token's hash (a bare
/// token trusts it on first use, with a warning); registration returns a node certificate, kept
/// in the data dir, that authenticates every later request. The watch resumes from the last
/// revision after a reconnect, on whichever server answers, so no event is missed or repeated.
///
/// Renewal: every registration (so every start) gets a fresh certificate, valid for a year.
/// While [`LeaseSource::next`] runs, the source checks the certificate's end as its
/// [`CertificateRenewal`] says and registers again, with the token and the node password, when
/// little is left; every later connection (a reconnecting watch, and through
/// [`ApiSource::credentials`] the egress tunnels) uses the new certificate, since a server may
/// end the old one's connections as soon as it issues the new one.
///
/// Liveness: servers send a bookmark on an idle watch every
/// [`BOOKMARK_INTERVAL`](weft_api::protocol::BOOKMARK_INTERVAL); a watch that yields no byte for
/// [`WATCH_IDLE_TIMEOUT`] (three intervals) is taken for dead (a server or path that vanished
/// without closing the connection) and the source reconnects.
pub struct ApiSource {
    dir: PathBuf,
    token: JoinToken,
    identity: NodeIdentity,
    servers: Vec<String>,
    current: usize,
    ca: Option<TrustedCa>,
    client: Option<NodeClient>,
    revision: Option<u64>,
    watch: Option<LeaseWatch>,
    failures: u32,
    /// A server URL this source reaches by another URL: (the URL the cluster knows, the URL to use).
    alias: Option<(String, String)>,
    idle_timeout: Duration,
    metrics: AgentMetrics,
    renewal: CertificateRenewal,
    /// What the last registration asked for, and when the certificate it gave ends.
    registered: Option<Registered>,
    /// When the certificate is checked next.
    next_check: Instant,
    /// The credentials of the last registration, for everything else that connects as the node.
    credentials: watch::Sender<Option<Credentials>>,
    /// Reads with the node's saved certificate and never registers ([`ApiSource::read_only`]).
    read_only: bool,
}

/// When an agent renews its node certificate: [`ApiSource`] checks it every `check_interval`
/// (and registering at start always gets a fresh one), and renews it when less than
/// `renew_before` is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertificateRenewal {
    /// How often the certificate's end is checked.
    pub check_interval: Duration,
    /// How much of its life must be left; with less, it is renewed.
    pub renew_before: Duration,
}

/// A registration, remembered for renewing its certificate.
struct Registered {
    request: RegisterRequest,
    not_after: SystemTime,
}

/// How soon a renewal that failed is tried again (or at the next check, if that is sooner).
const RENEWAL_RETRY: Duration = Duration::from_secs(60);

/// The static file [`StaticSource`] reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StaticFile {
    /// The cluster network, as `weft-server validate` prints its settings.
    pub cluster: serde_json::Value,
    /// Every node's lease, this node's among them.
    pub leases: Vec<Lease>,
}

/// Leases from a static JSON file: the embedding case, where something else allocates pod
/// CIDRs. It never changes after the first snapshot.
pub struct StaticSource {
    path: PathBuf,
    file: StaticFile,
    sent: bool,
}

// === impl ApiSource ===

impl ApiSource {
    /// A source that joins through `servers` (tried in turn) with `token`, keeping its state in
    /// `dir` (the agent's data dir).
    pub fn new(
        dir: &Path,
        servers: Vec<String>,
        token: JoinToken,
        identity: NodeIdentity,
    ) -> ApiSource {
        ApiSource {
            dir: dir.to_owned(),
            token,
            identity,
            servers,
            current: 0,
            ca: None,
            client: None,
            revision: None,
            watch: None,
            failures: 0,
            alias: None,
            idle_timeout: WATCH_IDLE_TIMEOUT,
            metrics: AgentMetrics::default(),
            renewal: CertificateRenewal::default(),
            registered: None,
            next_check: Instant::now(),
            credentials: watch::Sender::new(None),
            read_only: false,
        }
    }

    /// A source that only reads, with the certificate the node's agent saved, and never
    /// registers: a registration issues a new certificate, which would revoke the running
    /// agent's (`weft-agent plan` looks without disturbing it). Registering returns the
    /// node's lease as the servers list it; a node that never registered gets
    /// [`NodeError::NotRegistered`].
    pub fn read_only(mut self) -> ApiSource {
        self.read_only = true;
        self
    }

    /// Renews the node certificate as `renewal` says (default: checked every 12 hours, renewed
    /// with less than 90 days left).
    pub fn with_renewal(mut self, renewal: CertificateRenewal) -> ApiSource {
        self.renewal = renewal;
        self
    }

    /// The node's credentials as the last registration gave them (`None` before the first);
    /// each renewal sends the new ones.
    pub fn credentials(&self) -> watch::Receiver<Option<Credentials>> {
        self.credentials.subscribe()
    }

    /// Reaches the server the cluster knows as `known` through `local` instead: a server's
    /// embedded agent talks to its own server over loopback, whatever its advertise address
    /// (which may be a NAT's address that does not route back to the host).
    pub fn with_alias(mut self, known: String, local: String) -> ApiSource {
        self.alias = Some((known, local));
        self
    }

    /// Adds a server the cluster told about, unless it is known already (or aliased).
    fn learn_server(&mut self, server: String) {
        let server = match &self.alias {
            Some((known, local)) if *known == server => local.clone(),
            _ => server,
        };
        if !self.servers.contains(&server) {
            tracing::info!(server = %server, "learned a server");
            self.servers.push(server);
        }
    }

    /// Counts reconnects in `metrics` from now on.
    pub fn with_metrics(mut self, metrics: AgentMetrics) -> ApiSource {
        self.metrics = metrics;
        self
    }

    /// Sets how long a lease watch may stay silent before the source reconnects (default
    /// [`WATCH_IDLE_TIMEOUT`]). Keep it above the servers' bookmark interval.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> ApiSource {
        self.idle_timeout = timeout;
        self
    }

    /// The server currently in use.
    pub fn server(&self) -> &str {
        &self.servers[self.current % self.servers.len()]
    }

    /// Every server known.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// The node's client (certificate and pinned CA), once registered.
    pub fn client(&self) -> Option<&NodeClient> {
        self.client.as_ref()
    }

    /// Switches to the next server and waits a jittered, growing back-off.
    async fn fail_over(&mut self, error: &(dyn std::fmt::Display + Sync)) {
        tracing::warn!(server = %self.server(), %error, "server connection failed; trying the next server");
        self.metrics.reconnect(self.server());
        self.current = (self.current + 1) % self.servers.len().max(1);
        self.failures = self.failures.saturating_add(1);
        let base =
            Duration::from_millis(250u64 << self.failures.min(7)).min(Duration::from_secs(30));
        let jitter = base.mul_f64(rand::random::<f64>() * 0.5);
        tokio::time::sleep(base / 2 + jitter).await;
    }

    /// Fetches and checks the CA once (the pinned one from earlier runs is reused).
    async fn trusted_ca(&mut self) -> Result<TrustedCa, NodeError> {
        if let Some(ca) = &self.ca {
            return Ok(ca.clone());
        }
        if let Some(creds) = Credentials::load(&self.dir)? {
            let got = weft_api::pki::ca_hash(creds.ca_pem.as_bytes());
            // A token that pins another CA than the saved one wins: the cluster was rebuilt.
            if self.token.ca_hash.as_ref().is_none_or(|h| *h == got) {
                let ca = TrustedCa {
                    ca_pem: creds.ca_pem,
                    pinned: true,
                };
                self.ca = Some(ca.clone());
                return Ok(ca);
            }
        }
        let ca = client::fetch_ca(self.server(), &self.token)
            .await
            .map_err(NodeError::Api)?;
        if !ca.pinned {
            tracing::warn!(server = %self.server(), "the token is a bare secret, so the server's CA is trusted on first use; use the K10 token from <data-dir>/server/token to pin it");
        }
        self.ca = Some(ca.clone());
        Ok(ca)
    }

    /// Runs `f` against each server in turn until one answers; a refusal (a real answer) is
    /// returned at once, unreachable servers are skipped.
    async fn with_servers<T, F, Fut>(&mut self, mut f: F) -> Result<T, NodeError>
    where
        F: FnMut(String, TrustedCa) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        loop {
            let attempt = match self.trusted_ca().await {
                Ok(ca) => f(self.server().to_owned(), ca)
                    .await
                    .map_err(NodeError::Api),
                Err(e) => Err(e),
            };
            match attempt {
                Ok(v) => {
                    self.failures = 0;
                    return Ok(v);
                }
                Err(NodeError::Api(ApiError::Unreachable { .. } | ApiError::Tls { .. }))
                    if self.failures < 10 * self.servers.len() as u32 =>
                {
                    let e = attempt
                        .err()
                        .map(|e| Chain(&e).to_string())
                        .unwrap_or_default();
                    self.fail_over(&e).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl LeaseSource for ApiSource {
    async fn cluster(&mut self) -> Result<ClusterNetwork, NodeError> {
        let token = self.token.clone();
        let json = self
            .with_servers(|server, ca| {
                let token = token.clone();
                async move { client::cluster_config(&server, &ca, &token).await }
            })
            .await?;
        ClusterNetwork::from_json(&json).map_err(|e| NodeError::BadClusterConfig {
            reason: e.to_string(),
        })
    }

    async fn register(&mut self, request: &RegisterRequest) -> Result<Lease, NodeError> {
        if self.read_only {
            return self.saved_lease(&request.node_name).await;
        }
        let token = self.token.clone();
        let password = self.identity.password.clone();
        let request = request.clone();
        let response = self
            .with_servers(|server, ca| {
                let (token, password, request) = (token.clone(), password.clone(), request.clone());
                async move { client::register(&server, &ca, &token, &password, &request).await }
            })
            .await?;
        let ca = self.trusted_ca().await?;
        let creds = Credentials {
            ca_pem: ca.ca_pem.clone(),
            cert_pem: response.node_cert_pem,
            key_pem: response.node_key_pem,
            servers: response.servers.clone(),
        };
        let not_after = certificate_info(&creds.cert_pem)?.not_after;
        let client = NodeClient::new(&ca.ca_pem, &creds.identity()).map_err(NodeError::Api)?;
        creds.save(&self.dir)?;
        self.client = Some(client);
        self.registered = Some(Registered { request, not_after });
        self.next_check = Instant::now() + self.renewal.check_interval;
        self.credentials.send_replace(Some(creds));
        for server in response.servers {
            self.learn_server(server);
        }
        Ok(response.lease)
    }

    async fn next(&mut self) -> Result<LeaseUpdate, NodeError> {
        loop {
            if Instant::now() >= self.next_check {
                self.check_certificate().await;
            }
            // Read for every connection: a renewal replaces it.
            let Some(client) = self.client.clone() else {
                return Err(NodeError::NotRegistered);
            };
            let server = self.server().to_owned();
            let Some(revision) = self.revision else {
                match client.list_leases(&server).await {
                    Ok(snapshot) => {
                        self.failures = 0;
                        self.revision = Some(snapshot.revision);
                        self.refresh_servers(&client, &server).await;
                        return Ok(LeaseUpdate::Snapshot(snapshot.leases));
                    }
                    Err(e) if revoked(&e) => {
                        self.register_again(&e).await?;
                        continue;
                    }
                    Err(e) => {
                        self.fail_over(&Chain(&e)).await;
                        continue;
                    }
                }
            };
            let idle = self.idle_timeout;
            let watch = match self.watch.as_mut() {
                Some(w) => w,
                None => {
                    match tokio::time::timeout(idle, client.watch_leases(&server, revision)).await {
                        Ok(Ok(w)) => self.watch.insert(w),
                        Ok(Err(e)) if revoked(&e) => {
                            self.register_again(&e).await?;
                            continue;
                        }
                        Ok(Err(e)) => {
                            self.fail_over(&Chain(&e)).await;
                            continue;
                        }
                        Err(_) => {
                            self.fail_over(&"the lease watch request got no answer")
                                .await;
                            continue;
                        }
                    }
                }
            };
            let next_check = self.next_check;
            let next = tokio::select! {
                next = tokio::time::timeout(idle, watch.next()) => next,
                // Time to check the certificate; the watch stays as it is.
                () = tokio::time::sleep_until(next_check) => continue,
            };
            let Ok(next) = next else {
                self.watch = None;
                let silent = format!(
                    "the lease watch was silent for {:.1} s (no bookmark)",
                    idle.as_secs_f64()
                );
                self.fail_over(&silent).await;
                continue;
            };
            match next {
                Ok(Some(event)) => {
                    self.failures = 0;
                    match event {
                        LeaseEvent::Put { revision, lease } => {
                            self.revision = Some(revision);
                            return Ok(LeaseUpdate::Put(lease));
                        }
                        LeaseEvent::Delete {
                            revision,
                            node_name,
                        } => {
                            self.revision = Some(revision);
                            return Ok(LeaseUpdate::Delete(node_name));
                        }
                        LeaseEvent::Bookmark { revision } => {
                            self.revision = Some(revision.max(self.revision.unwrap_or(0)));
                        }
                        LeaseEvent::Compacted { oldest } => {
                            tracing::info!(oldest, "lease history compacted; listing again");
                            self.revision = None;
                            self.watch = None;
                        }
                    }
                }
                Ok(None) => {
                    self.watch = None;
                    self.fail_over(&"the lease watch ended").await;
                }
                Err(e) => {
                    self.watch = None;
                    self.fail_over(&Chain(&e)).await;
                }
            }
        }
    }
}

/// Whether the servers refused this node's certificate as no longer its current one: another
/// registration of the node was issued a newer one, or the node was deleted.
fn revoked(error: &ApiError) -> bool {
    matches!(error, ApiError::Rejected { status: 401, .. })
}

impl ApiSource {
    /// Registers again, as at start, after the servers refused the node's certificate
    /// (`error`): a running agent gets a new one, as a kubelet registers its Node again.
    /// A refusal of the registration itself (a password or identity another node holds) ends
    /// the source.
    async fn register_again(&mut self, error: &ApiError) -> Result<(), NodeError> {
        let Some(registered) = self.registered.as_ref().filter(|_| !self.read_only) else {
            return Err(NodeError::Api(error.clone()));
        };
        tracing::warn!(error = %Chain(error), "the servers no longer take this node's certificate; registering again");
        let request = registered.request.clone();
        self.watch = None;
        // Backs off as after any failure: two processes of one node don't spin.
        self.fail_over(error).await;
        self.register(&request).await.map(drop)
    }

    /// The lease of `node` as the servers list it, read with the certificate the node saved.
    async fn saved_lease(&mut self, node: &str) -> Result<Lease, NodeError> {
        let creds = Credentials::load(&self.dir)?.ok_or(NodeError::NotRegistered)?;
        let client = NodeClient::new(&creds.ca_pem, &creds.identity()).map_err(NodeError::Api)?;
        let snapshot = self
            .with_servers(|server, _| {
                let client = client.clone();
                async move { client.list_leases(&server).await }
            })
            .await?;
        let lease = snapshot
            .leases
            .into_iter()
            .find(|l| l.node_name == node)
            .ok_or(NodeError::NotRegistered)?;
        self.client = Some(client);
        Ok(lease)
    }

    /// Renews the node certificate when less than the renewal's `renew_before` is left, then
    /// sets the next check: a check interval on, or sooner after a failed renewal. A renewal
    /// cut short (this future dropped) leaves the check due, so the next call renews.
    async fn check_certificate(&mut self) {
        let Some(registered) = &self.registered else {
            return;
        };
        let left = registered
            .not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        if left >= self.renewal.renew_before {
            self.next_check = Instant::now() + self.renewal.check_interval;
            return;
        }
        tracing::info!(
            days_left = left.as_secs() / 86_400,
            "the node certificate ends soon; renewing it"
        );
        let request = registered.request.clone();
        match self.register(&request).await {
            Ok(_) => tracing::info!("renewed the node certificate"),
            Err(error) => {
                tracing::warn!(error = %Chain(&error), "renewing the node certificate failed; trying again soon");
                self.next_check = Instant::now() + self.renewal.check_interval.min(RENEWAL_RETRY);
            }
        }
    }

    async fn refresh_servers(&mut self, client: &NodeClient, server: &str) {
        if let Ok(servers) = client.servers(server).await {
            for s in servers {
                self.learn_server(s);
            }
        }
    }
}

// === impl CertificateRenewal ===

impl Default for CertificateRenewal {
    /// Checked every 12 hours, renewed with less than 90 days left (K3s's threshold).
    fn default() -> Self {
        CertificateRenewal {
            check_interval: Duration::from_secs(12 * 3600),
            renew_before: RENEW_BEFORE,
        }
    }
}

// === impl StaticSource ===

impl StaticSource {
    /// Reads `path`: `{"cluster": {...}, "leases": [...]}`.
    pub fn read(path: &Path) -> Result<StaticSource, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|source| NodeError::File {
            path: path.to_owned(),
            hint: String::new(),
            source,
        })?;
        let file: StaticFile = serde_json::from_str(&text).map_err(|e| NodeError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(StaticSource {
            path: path.to_owned(),
            file,
            sent: false,
        })
    }
}

impl StaticSource {
    /// Every lease in the file.
    pub fn leases(&self) -> &[Lease] {
        &self.file.leases
    }
}

impl LeaseSource for StaticSource {
    async fn cluster(&mut self) -> Result<ClusterNetwork, NodeError> {
        ClusterNetwork::from_json(&self.file.cluster).map_err(|e| NodeError::BadClusterConfig {
            reason: format!("{}: {e}", self.path.display()),
        })
    }

    async fn register(&mut self, request: &RegisterRequest) -> Result<Lease, NodeError> {
        self.file
            .leases
            .iter()
            .find(|l| l.node_name == request.node_name)
            .cloned()
            .ok_or_else(|| NodeError::NoLease {
                node: request.node_name.clone(),
                source_name: self.path.display().to_string(),
            })
    }

    async fn next(&mut self) -> Result<LeaseUpdate, NodeError> {
        if !self.sent {
            self.sent = true;
            return Ok(LeaseUpdate::Snapshot(self.file.leases.clone()));
        }
        std::future::pending().await
    }
}

#[cfg(test)]
mod tests;
