//! The harness of the control-plane tests: servers, agents, a TCP proxy and a real etcd, all on
//! loopback with free ports and temporary directories, and no root.
//!
//! - [`TestServer`] runs weft-control's `start` and weft-api's `serve_limited` (with the
//!   control plane's metrics) in a tokio runtime of its own. Stopping it drops that runtime, so every task and connection of the server goes at
//!   once, as when the process dies; its requests are recorded ([`Seen`]).
//! - [`TestNode`] is one machine: a data dir with its node password and VTEP MACs. It joins
//!   through weft-node's [`ApiSource`] (the agent's real lease source) or registers with
//!   weft-api's client directly.
//! - [`Watcher`] runs an `ApiSource` in a task and folds every update into a lease map.
//! - [`Proxy`] forwards TCP to a server and can cut or blackhole the connections it carries.
//! - [`Etcd`] is weft-store's test etcd (a real single-member etcd, killed on drop).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Request, Response};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use weft_api::client::{self, AdminClient};
use weft_api::http::{Body, Handler, Peer, ServeLimits};
use weft_api::pki::CertifiedKey;
use weft_api::protocol::{NODE_PASSWORD_HEADER, RegisterRequest, RegisterResponse};
use weft_api::{ApiError, JoinToken};
use weft_config::ClusterNetwork;
use weft_control::hub::LeaseHub;
use weft_control::metrics::ControlMetrics;
use weft_control::service::ControlPlane;
use weft_control::{ControlError, ServerSettings};
use weft_fabric::{BackendData, Lease, MacAddr};
use weft_node::identity::NodeIdentity;
use weft_node::{ApiSource, LeaseSource, LeaseUpdate};
pub(crate) use weft_store::testing::EtcdServer as Etcd;
use weft_store::{Datastore, EtcdTlsFiles};

/// How long a test waits for something that should take milliseconds.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// A dual-stack cluster network: `10.42.0.0/16` and `fd00:42::/56`, one CIDR per node and family.
pub(crate) fn dual_stack() -> ClusterNetwork {
    network(
        &["10.42.0.0/16", "fd00:42::/56"],
        &["10.43.0.0/16", "fd00:43::/112"],
        &["10.43.0.10", "fd00:43::a"],
    )
}

/// A cluster network from its CIDRs, with K3s's defaults for the rest.
pub(crate) fn network(cluster: &[&str], service: &[&str], dns: &[&str]) -> ClusterNetwork {
    network_with(cluster, service, dns, &[])
}

/// [`dual_stack`] with some settings changed: `(setting, JSON value)`.
pub(crate) fn dual_stack_with(changes: &[(&str, serde_json::Value)]) -> ClusterNetwork {
    network_with(
        &["10.42.0.0/16", "fd00:42::/56"],
        &["10.43.0.0/16", "fd00:43::/112"],
        &["10.43.0.10", "fd00:43::a"],
        changes,
    )
}

fn network_with(
    cluster: &[&str],
    service: &[&str],
    dns: &[&str],
    changes: &[(&str, serde_json::Value)],
) -> ClusterNetwork {
    let mut record = serde_json::json!({
        "cluster-cidr": cluster,
        "service-cidr": service,
        "cluster-dns": dns,
        "cluster-domain": "cluster.local",
        "node-cidr-mask-size-ipv4": 24,
        "node-cidr-mask-size-ipv6": 64,
        "flannel-backend": "vxlan",
        "flannel-ipv6-masq": false,
        "flannel-external-ip": false,
        "egress-selector-mode": "agent",
        "disable-network-policy": false,
    });
    for (setting, value) in changes {
        record[*setting] = value.clone();
    }
    ClusterNetwork::from_json(&record)
        .unwrap_or_else(|e| panic!("the test network does not validate: {e}"))
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// `fut`'s output, or a panic naming `what` after `limit`.
pub(crate) async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Polls `check` every 20 ms until it holds; panics naming `what` after [`PATIENCE`].
pub(crate) async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === Servers ===

/// How to start a [`TestServer`].
#[derive(Clone)]
pub(crate) struct ServerOptions {
    /// The server's `--data-dir`.
    pub(crate) data_dir: PathBuf,
    /// etcd's endpoint; the embedded store in `data_dir` when `None`.
    pub(crate) etcd: Option<String>,
    /// The CA and client certificate for an `https://` etcd.
    pub(crate) etcd_tls: EtcdTlsFiles,
    /// The server's cluster network.
    pub(crate) network: ClusterNetwork,
    /// `--token`.
    pub(crate) token: Option<JoinToken>,
    /// `--agent-token`.
    pub(crate) agent_token: Option<JoinToken>,
    /// The API port on 127.0.0.1.
    pub(crate) port: u16,
    /// The port the server advertises (a [`Proxy`] in front of it); `port` when `None`.
    pub(crate) advertise_port: Option<u16>,
    /// How often idle lease watches get a bookmark.
    pub(crate) bookmark_interval: Duration,
    /// The API's deadlines and connection caps.
    pub(crate) limits: ServeLimits,
}

/// One request a server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    /// `GET /cacerts`, `GET /v1-weft/leases?watch=12` and so on.
    pub(crate) request: String,
    /// Whether it carried an `Authorization` header (the token's secret).
    pub(crate) authorization: bool,
    /// Whether it carried the node password header.
    pub(crate) node_password: bool,
}

/// A server in a runtime of its own; see the module docs.
pub(crate) struct TestServer {
    runtime: Option<Runtime>,
    /// What it was started with.
    pub(crate) options: ServerOptions,
    /// The URL it advertises.
    pub(crate) url: String,
    /// The server token (`K10...`).
    pub(crate) token: JoinToken,
    /// The token file.
    pub(crate) token_file: PathBuf,
    /// The agent token (`K10...::node:...`).
    pub(crate) agent_token: JoinToken,
    /// The agent token file.
    pub(crate) agent_token_file: PathBuf,
    /// The cluster CA.
    pub(crate) ca_pem: String,
    /// The admin client certificate.
    pub(crate) admin: CertifiedKey,
    /// The lease fan-out (its state outlives a stop; it holds no store).
    pub(crate) hub: LeaseHub,
    /// The control plane's metrics.
    pub(crate) metrics: ControlMetrics,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl ServerOptions {
    /// A server on the embedded store in `data_dir`, dual-stack, on a free port.
    pub(crate) fn embedded(data_dir: &Path) -> ServerOptions {
        ServerOptions {
            data_dir: data_dir.to_owned(),
            etcd: None,
            etcd_tls: EtcdTlsFiles::default(),
            network: dual_stack(),
            token: None,
            agent_token: None,
            port: free_port(),
            advertise_port: None,
            bookmark_interval: weft_api::protocol::BOOKMARK_INTERVAL,
            limits: ServeLimits::default(),
        }
    }

    /// A server on etcd at `endpoint`, keeping its files in `data_dir`.
    pub(crate) fn etcd(data_dir: &Path, endpoint: &str, token: Option<JoinToken>) -> ServerOptions {
        ServerOptions {
            etcd: Some(endpoint.to_owned()),
            token,
            ..ServerOptions::embedded(data_dir)
        }
    }
}

/// A server on the embedded store in a temporary data dir (kept as long as the dir is).
pub(crate) async fn embedded() -> (TempDir, TestServer) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = TestServer::start(ServerOptions::embedded(dir.path()))
        .await
        .expect("the server starts");
    (dir, server)
}

/// Two servers on `etcd`, the second joined with the first's token.
pub(crate) async fn two_on(etcd: &Etcd, dirs: &[TempDir; 2]) -> (TestServer, TestServer) {
    let first = TestServer::start(ServerOptions::etcd(dirs[0].path(), &etcd.client_url, None))
        .await
        .expect("the first server starts");
    let second = TestServer::start(ServerOptions::etcd(
        dirs[1].path(),
        &etcd.client_url,
        Some(first.token.clone()),
    ))
    .await
    .expect("the second server starts");
    (first, second)
}

impl TestServer {
    /// Starts a server and serves its API.
    ///
    /// [`free_port`] can race with other tests (etcd's ports among them): when the port was
    /// taken meanwhile, the server starts on another free port, unless the test pinned the
    /// advertised port.
    pub(crate) async fn start(mut options: ServerOptions) -> Result<TestServer, ControlError> {
        let mut attempts = 0;
        loop {
            match TestServer::start_once(options.clone()).await {
                Err(ControlError::Listen { reason, .. })
                    if reason.contains("in use")
                        && options.advertise_port.is_none()
                        && attempts < 5 =>
                {
                    attempts += 1;
                    options.port = free_port();
                }
                other => return other,
            }
        }
    }

    async fn start_once(options: ServerOptions) -> Result<TestServer, ControlError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-server")
            .enable_all()
            .build()
            .expect("build a server runtime");
        let advertised = options.advertise_port.unwrap_or(options.port);
        let url = format!("https://127.0.0.1:{advertised}");
        let datastore = match &options.etcd {
            None => Datastore::Embedded {
                data_dir: options.data_dir.clone(),
            },
            Some(endpoint) => Datastore::Etcd {
                endpoints: vec![endpoint.clone()],
                tls: options.etcd_tls.clone(),
            },
        };
        let settings = ServerSettings {
            dir: options.data_dir.join("server"),
            datastore,
            network: options.network.clone(),
            token: options.token.clone(),
            agent_token: options.agent_token.clone(),
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, options.port)),
            url: url.clone(),
            names: vec!["localhost".to_owned()],
            ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            bookmark_interval: options.bookmark_interval,
        };
        let started = match runtime.spawn(weft_control::start(settings)).await {
            Ok(Ok(started)) => started,
            Ok(Err(e)) => {
                drop_runtime(runtime).await;
                return Err(e);
            }
            Err(e) => panic!("weft_control::start panicked: {e}"),
        };
        let tls = weft_api::tls::server_config(
            started.bootstrap.ca.cert_pem(),
            &started.bootstrap.serving,
        )
        .expect("the server's TLS config");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(Recorder {
            plane: started.plane.clone(),
            seen: seen.clone(),
        });
        runtime.spawn(weft_api::http::serve_limited(
            started.listener,
            tls,
            handler,
            options.limits,
            Arc::new(started.metrics.clone()),
        ));
        Ok(TestServer {
            url,
            token: started.bootstrap.token.clone(),
            token_file: started.bootstrap.paths.token.clone(),
            agent_token: started.bootstrap.agent_token.clone(),
            agent_token_file: started.bootstrap.paths.agent_token.clone(),
            ca_pem: started.bootstrap.ca.cert_pem().to_owned(),
            admin: started.bootstrap.admin.clone(),
            hub: started.plane.hub().clone(),
            metrics: started.metrics.clone(),
            seen,
            options,
            runtime: Some(runtime),
        })
    }

    /// Stops the server: every task and connection of it is gone when this returns.
    pub(crate) async fn stop(mut self) -> ServerOptions {
        if let Some(runtime) = self.runtime.take() {
            drop_runtime(runtime).await;
        }
        self.options.clone()
    }

    /// Stops the server and starts it again with the same options.
    pub(crate) async fn restart(self) -> Result<TestServer, ControlError> {
        let options = self.stop().await;
        TestServer::start(options).await
    }

    /// The admin client of this server's cluster.
    pub(crate) fn admin(&self) -> AdminClient {
        AdminClient::new(&self.ca_pem, &self.admin).expect("the admin client")
    }

    /// Every request the server received so far.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("the request log").clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Drops a runtime off the async context and waits until its tasks are gone.
async fn drop_runtime(runtime: Runtime) {
    tokio::task::spawn_blocking(move || drop(runtime))
        .await
        .expect("drop a server runtime");
}

/// The control plane's handler, recording each request first.
struct Recorder {
    plane: Arc<ControlPlane>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Handler for Recorder {
    fn handle(
        &self,
        request: Request<Incoming>,
        peer: Peer,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send + '_>> {
        let seen = Seen {
            request: format!("{} {}", request.method(), request.uri()),
            authorization: request.headers().contains_key(hyper::header::AUTHORIZATION),
            node_password: request.headers().contains_key(NODE_PASSWORD_HEADER),
        };
        self.seen.lock().expect("the request log").push(seen);
        self.plane.handle(request, peer)
    }
}

// === Nodes ===

/// One machine: a data dir holding its node password and VTEP MACs, and a name.
pub(crate) struct TestNode {
    /// The node name.
    pub(crate) name: String,
    /// The agent's data dir.
    pub(crate) dir: TempDir,
    /// Its identity (made on first use, as the agent does).
    pub(crate) identity: NodeIdentity,
    /// Its node IPs.
    pub(crate) ips: Vec<IpAddr>,
}

impl TestNode {
    /// A new machine called `name`, with node IPs `192.0.2.<index>` and `2001:db8::<index>`.
    pub(crate) fn new(name: &str, index: u8) -> TestNode {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let identity = NodeIdentity::load_or_create(dir.path()).expect("the node identity");
        TestNode {
            name: name.to_owned(),
            dir,
            identity,
            ips: vec![
                IpAddr::from([192, 0, 2, index]),
                IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(index)]),
            ],
        }
    }

    /// The registration the agent sends: its IPs and VTEP MACs.
    pub(crate) fn request(&self) -> RegisterRequest {
        self.request_with_mac(self.identity.vtep_mac_v4)
    }

    /// The registration with `mac` as the IPv4 VTEP's MAC (a lease change peers see).
    pub(crate) fn request_with_mac(&self, mac: MacAddr) -> RegisterRequest {
        RegisterRequest {
            node_name: self.name.clone(),
            node_ips: self.ips.clone(),
            external_ips: Vec::new(),
            backend: BackendData::Vxlan {
                vtep_mac_ipv4: Some(mac),
                vtep_mac_ipv6: Some(self.identity.vtep_mac_v6),
            },
        }
    }

    /// The agent's lease source for `servers`.
    pub(crate) fn source(&self, servers: &[&str], token: &JoinToken) -> ApiSource {
        ApiSource::new(
            self.dir.path(),
            servers.iter().map(|s| (*s).to_owned()).collect(),
            token.clone(),
            self.identity.clone(),
        )
    }

    /// Joins as the agent does (cluster config, then registration) and returns the lease and
    /// the source, ready to watch.
    pub(crate) async fn join(
        &self,
        servers: &[&str],
        token: &JoinToken,
    ) -> Result<(Lease, ApiSource), weft_node::NodeError> {
        self.join_with(self.source(servers, token)).await
    }

    /// Joins through `source`, as [`TestNode::join`].
    pub(crate) async fn join_with(
        &self,
        mut source: ApiSource,
    ) -> Result<(Lease, ApiSource), weft_node::NodeError> {
        source.cluster().await?;
        let lease = source.register(&self.request()).await?;
        Ok((lease, source))
    }

    /// Registers `request` with weft-api's client, as this machine (its node password).
    pub(crate) async fn register(
        &self,
        server: &str,
        token: &JoinToken,
        request: &RegisterRequest,
    ) -> Result<RegisterResponse, ApiError> {
        let ca = client::fetch_ca(server, token).await?;
        client::register(server, &ca, token, &self.identity.password, request).await
    }
}

/// A MAC that differs with `n`, for lease changes.
pub(crate) fn mac(n: u8) -> MacAddr {
    MacAddr::local_from([0, 0x5e, 0, 0, 0, n])
}

/// The IPv4 VTEP MAC a lease publishes.
pub(crate) fn mac_of(lease: &Lease) -> Option<MacAddr> {
    match &lease.backend {
        BackendData::Vxlan { vtep_mac_ipv4, .. } => *vtep_mac_ipv4,
        _ => None,
    }
}

// === Watchers ===

/// An agent's lease source running in a task: every update, and the leases they add up to.
pub(crate) struct Watcher {
    updates: mpsc::UnboundedReceiver<(Instant, Result<LeaseUpdate, String>)>,
    /// Every lease as the updates so far say.
    pub(crate) leases: BTreeMap<String, Lease>,
    /// Every update so far, in order.
    pub(crate) log: Vec<LeaseUpdate>,
    task: JoinHandle<()>,
}

impl Watcher {
    /// Runs `source` (registered) until the watcher is dropped.
    pub(crate) fn spawn(mut source: ApiSource) -> Watcher {
        let (tx, updates) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let update = source.next().await.map_err(|e| e.to_string());
                let failed = update.is_err();
                if tx.send((Instant::now(), update)).is_err() || failed {
                    return;
                }
            }
        });
        Watcher {
            updates,
            leases: BTreeMap::new(),
            log: Vec::new(),
            task,
        }
    }

    /// The next update and when it arrived; panics after `limit` or on a source error.
    pub(crate) async fn next(&mut self, limit: Duration) -> (Instant, LeaseUpdate) {
        let (at, update) = within(limit, "a lease update", self.updates.recv())
            .await
            .expect("the watcher task ended");
        let update = update.unwrap_or_else(|e| panic!("the lease source failed: {e}"));
        match &update {
            LeaseUpdate::Snapshot(leases) => {
                self.leases = leases
                    .iter()
                    .map(|l| (l.node_name.clone(), l.clone()))
                    .collect();
            }
            LeaseUpdate::Put(lease) => {
                self.leases.insert(lease.node_name.clone(), lease.clone());
            }
            LeaseUpdate::Delete(name) => {
                self.leases.remove(name);
            }
        }
        self.log.push(update.clone());
        (at, update)
    }

    /// Takes updates until the leases satisfy `done`; returns when the last one arrived.
    pub(crate) async fn until(
        &mut self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&BTreeMap<String, Lease>) -> bool,
    ) -> Instant {
        let deadline = tokio::time::Instant::now() + limit;
        let mut last = Instant::now();
        while !done(&self.leases) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                panic!(
                    "timed out after {limit:?} waiting for {what}; the leases are {:?}",
                    self.leases.keys().collect::<Vec<_>>()
                );
            }
            last = self.next(left).await.0;
        }
        last
    }

    /// Waits `quiet` and returns every update that arrived meanwhile (none, usually).
    pub(crate) async fn drain(&mut self, quiet: Duration) -> Vec<LeaseUpdate> {
        let mut extra = Vec::new();
        let deadline = tokio::time::Instant::now() + quiet;
        while let Ok(Some((_, update))) =
            tokio::time::timeout_at(deadline, self.updates.recv()).await
        {
            extra.push(update.unwrap_or_else(|e| panic!("the lease source failed: {e}")));
        }
        extra
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === Proxy ===

/// A TCP forwarder in front of a server that can cut or blackhole its connections.
pub(crate) struct Proxy {
    /// The port it listens on.
    pub(crate) port: u16,
    conns: Arc<Mutex<Vec<ProxiedConn>>>,
    accepted: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

struct ProxiedConn {
    task: tokio::task::AbortHandle,
    frozen: watch::Sender<bool>,
}

impl Proxy {
    /// Forwards a free port to `127.0.0.1:target`.
    pub(crate) async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("the proxy's address").port();
        let conns: Arc<Mutex<Vec<ProxiedConn>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn({
            let conns = conns.clone();
            let accepted = accepted.clone();
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (frozen, rx) = watch::channel(false);
                    let task = tokio::spawn(async move {
                        let Ok(outbound) =
                            tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, target)).await
                        else {
                            return;
                        };
                        let (ir, iw) = inbound.into_split();
                        let (or, ow) = outbound.into_split();
                        tokio::join!(pump(ir, ow, rx.clone()), pump(or, iw, rx));
                    });
                    conns
                        .lock()
                        .expect("the proxy's connections")
                        .push(ProxiedConn {
                            task: task.abort_handle(),
                            frozen,
                        });
                }
            }
        });
        Proxy {
            port,
            conns,
            accepted,
            accept,
        }
    }

    /// Closes every connection it carries now (both ends see the connection end).
    pub(crate) fn cut(&self) {
        for conn in self
            .conns
            .lock()
            .expect("the proxy's connections")
            .drain(..)
        {
            conn.task.abort();
        }
    }

    /// Stops forwarding on every connection it carries now, leaving them open: a path that
    /// died without a FIN. New connections work.
    pub(crate) fn blackhole(&self) {
        for conn in self.conns.lock().expect("the proxy's connections").iter() {
            let _ = conn.frozen.send(true);
        }
    }

    /// How many connections it accepted in all.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if *frozen.borrow() {
            // Blackholed: hold everything, forever.
            let _ = frozen.wait_for(|f| !*f).await;
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
