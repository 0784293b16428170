//! The egress selector composed as `weft-server` and `weft-agent` compose it, on loopback: the
//! control plane with weft-control's egress selector and [`Front`] handler, agents that register
//! through weft-node's lease source and keep their tunnels with weft-node's egress side, and
//! targets on loopback addresses (every `127.0.0.0/8` address is local on Linux, so no root).
//! An agent dials loopback only on the kubelet ports (its floor), so the tunnelled targets
//! listen on the kubelet port unless a test shows that floor.
//!
//! One test per mode (`agent`, `pod`, `cluster`, `disabled`), one for the agent's authorizer
//! (nothing but what it allows is dialed, whatever the server asks), one for its floor and the
//! cluster CIDR (whatever lease the server sends), one for pod reports and routes staying inside
//! the node's lease, one for authentication (no node certificate, no tunnel; only the
//! kube-apiserver's certificate opens a CONNECT, and it manages no nodes; pod reports only from
//! nodes), one for an agent reconnecting after its server restarts, one for tunnels
//! reconnecting with a renewed node certificate, and one for a deleted node's tunnel. Each
//! server runs in a runtime of its own, so stopping it ends every task and connection of it at
//! once.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use weft_api::client::{AdminClient, NodeClient};
use weft_api::pki::{CertifiedKey, ClusterCa};
use weft_api::protocol::{PodReport, RegisterRequest, ReportedPod};
use weft_api::{ApiError, JoinToken};
use weft_config::{ClusterNetwork, EgressSelectorMode};
use weft_control::egress::{self as server_egress, EgressSettings as ServerEgress};
use weft_control::metrics::ControlMetrics;
use weft_control::{ControlError, ServerSettings};
use weft_fabric::Lease;
use weft_ipam::CidrList;
use weft_node::egress::{self, EgressAgent, EgressSettings};
use weft_node::identity::NodeIdentity;
use weft_node::metrics::AgentMetrics;
use weft_node::{ApiSource, LeaseSource};
use weft_store::{Datastore, LeaseAttrs, NodeMaskSizes, PodRecord, Store};
use weft_tunnel::OpenError;
use weft_tunnel::agent::Backoff;
use weft_tunnel::policy::Route;
use weft_tunnel::proto::{DialError, Target};
use weft_tunnel::server::{CONNECT_PATH, TunnelServer};
use weft_tunnel::transport::websocket;

/// How long a test waits for something that should take milliseconds.
const PATIENCE: Duration = Duration::from_secs(20);

/// The address of agent `n`'s node (`127.0.0.1n`).
fn node_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + n))
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an IP")
}

/// A cluster network in `mode` whose pod CIDRs are on loopback (`127.42.0.0/16`).
fn network(mode: &str) -> ClusterNetwork {
    let record = serde_json::json!({
        "cluster-cidr": ["127.42.0.0/16"],
        "service-cidr": ["10.43.0.0/16"],
        "cluster-dns": ["10.43.0.10"],
        "cluster-domain": "cluster.local",
        "node-cidr-mask-size-ipv4": 24,
        "node-cidr-mask-size-ipv6": 64,
        "flannel-backend": "none",
        "flannel-ipv6-masq": false,
        "flannel-external-ip": false,
        "egress-selector-mode": mode,
        "disable-network-policy": false,
    });
    ClusterNetwork::from_json(&record).expect("a valid network")
}

/// Polls `check` every 20 ms until it holds; panics naming `what` after [`PATIENCE`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// As [`eventually`], for an async check.
async fn eventually_async<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === Servers ===

/// A server (control plane, egress selector, the [`Front`](server_egress::Front) handler) in a
/// runtime of its own.
struct Server {
    runtime: Option<Runtime>,
    dir: PathBuf,
    port: u16,
    network: ClusterNetwork,
    kubelet_port: u16,
    ca_pem: String,
    admin: CertifiedKey,
    apiserver: CertifiedKey,
    token: JoinToken,
    tunnel: TunnelServer,
    store: Store,
    config_path: PathBuf,
    metrics: ControlMetrics,
}

impl Server {
    /// Starts a server with its data in `dir` on 127.0.0.1:`port` (a free port when `None`),
    /// routing kubelets on `kubelet_port`. Its own node is `server-0`, which runs no agent here.
    /// A port someone took since it was free is tried again: another free one for a new server,
    /// the same one (a moment later) for a restart.
    async fn start(
        dir: &Path,
        port: Option<u16>,
        network: ClusterNetwork,
        kubelet_port: u16,
    ) -> Server {
        for _ in 0..20 {
            let try_port = port.unwrap_or_else(free_port);
            match Server::try_start(dir, try_port, network.clone(), kubelet_port).await {
                Ok(server) => return server,
                // Taken since it was free: try again.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        panic!("no port to start a server on");
    }

    async fn try_start(
        dir: &Path,
        port: u16,
        network: ClusterNetwork,
        kubelet_port: u16,
    ) -> Result<Server, ControlError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-server")
            .enable_all()
            .build()
            .expect("a server runtime");
        let bind = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let settings = ServerSettings {
            dir: dir.join("server"),
            datastore: Datastore::Embedded {
                data_dir: dir.to_owned(),
            },
            network: network.clone(),
            token: None,
            agent_token: None,
            bind,
            url: format!("https://{bind}"),
            names: vec!["localhost".to_owned()],
            ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            bookmark_interval: weft_api::protocol::BOOKMARK_INTERVAL,
        };
        let dir_owned = dir.to_owned();
        let network_owned = network.clone();
        let started = runtime
            .spawn(async move {
                let started = match weft_control::start(settings).await {
                    Ok(started) => started,
                    Err(error @ ControlError::Listen { .. }) => return Err(error),
                    Err(error) => panic!("the server did not start: {error}"),
                };
                let egress = ServerEgress::for_server(
                    &dir_owned.join("server"),
                    &started.bootstrap.paths,
                    bind,
                    &network_owned,
                    Some("server-0".to_owned()),
                    kubelet_port,
                );
                let config_path = egress.config_path.clone();
                let mut egress = server_egress::start(
                    started.store.clone(),
                    started.plane.hub().clone(),
                    egress,
                )
                .await
                .expect("the egress selector");
                egress.export_metrics(started.metrics.clone());
                let tls = weft_api::tls::server_config(
                    started.bootstrap.ca.cert_pem(),
                    &started.bootstrap.serving,
                )
                .expect("TLS");
                let front = egress.front(started.plane.clone());
                let tunnel = egress.tunnel().clone();
                tokio::spawn(weft_api::http::serve(started.listener, tls, front));
                // The egress selector lives as long as the runtime.
                tokio::spawn(async move {
                    let _egress = egress;
                    std::future::pending::<()>().await;
                });
                Ok((
                    started.bootstrap.ca.cert_pem().to_owned(),
                    (
                        started.bootstrap.admin.clone(),
                        started.bootstrap.kube_apiserver.clone(),
                    ),
                    started.bootstrap.token.clone(),
                    tunnel,
                    started.store.clone(),
                    config_path,
                    started.metrics.clone(),
                ))
            })
            .await
            .expect("the server's start did not panic");
        let (ca_pem, (admin, apiserver), token, tunnel, store, config_path, metrics) = match started
        {
            Ok(started) => started,
            Err(error) => {
                // Everything of the failed start goes with its runtime (the store's file too).
                tokio::task::spawn_blocking(move || drop(runtime))
                    .await
                    .expect("the runtime dropped");
                return Err(error);
            }
        };
        Ok(Server {
            runtime: Some(runtime),
            dir: dir.to_owned(),
            port,
            network,
            kubelet_port,
            ca_pem,
            admin,
            apiserver,
            token,
            tunnel,
            store,
            config_path,
            metrics,
        })
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Stops the server: every task and connection of it is gone when this returns.
    async fn stop(mut self) -> (PathBuf, u16, ClusterNetwork, u16) {
        if let Some(runtime) = self.runtime.take() {
            tokio::task::spawn_blocking(move || drop(runtime))
                .await
                .expect("the server runtime dropped");
        }
        (
            self.dir.clone(),
            self.port,
            self.network.clone(),
            self.kubelet_port,
        )
    }

    /// Waits until `node` has a tunnel to this server.
    async fn wait_for_tunnel(&self, node: &str) {
        eventually(&format!("{node}'s tunnel"), || {
            self.tunnel.connected_nodes().iter().any(|n| n == node)
        })
        .await;
    }

    /// Waits until the server routes `host:port` as `expect` says.
    async fn wait_for_route(&self, host: &str, port: u16, expect: impl Fn(&Route) -> bool) {
        eventually(&format!("the route of {host}:{port}"), || {
            expect(&self.tunnel.routes().route(host, port))
        })
        .await;
    }

    /// Sends `CONNECT target` with `identity`'s certificate; returns the status, the body of
    /// an error, and the connection past the response head.
    async fn connect(
        &self,
        target: &str,
        identity: Option<&CertifiedKey>,
    ) -> (u16, String, impl AsyncRead + AsyncWrite + Unpin + use<>) {
        connect_with(&self.ca_pem, self.port, target, identity).await
    }

    /// A CONNECT with the kube-apiserver's certificate that must answer `200`; the target's
    /// greeting.
    async fn connect_ok(
        &self,
        target: &str,
    ) -> (String, impl AsyncRead + AsyncWrite + Unpin + use<>) {
        let (status, body, mut conn) = self.connect(target, Some(&self.apiserver)).await;
        assert_eq!(status, 200, "CONNECT {target}: {body}");
        let greeting = read_greeting(&mut conn).await;
        (greeting, conn)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A CONNECT through the server on 127.0.0.1:`port`, as `curl -p -x https://...` sends it.
async fn connect_with(
    ca_pem: &str,
    port: u16,
    target: &str,
    identity: Option<&CertifiedKey>,
) -> (u16, String, impl AsyncRead + AsyncWrite + Unpin + use<>) {
    let tls = weft_api::tls::client_config(ca_pem, identity).expect("client TLS");
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let answer = weft_tunnel::testing::connect(server, "127.0.0.1", tls, target).await;
    (answer.status, answer.body, answer.conn)
}

// === Targets ===

/// A TCP service on loopback that greets each connection with its tag and a newline, then
/// echoes; it counts the connections it accepted.
struct Service {
    accepted: Arc<AtomicUsize>,
}

impl Service {
    async fn start(ip: IpAddr, port: u16, tag: &'static str) -> Service {
        let listener = TcpListener::bind((ip, port)).await.expect("bind a target");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if conn.write_all(format!("{tag}\n").as_bytes()).await.is_err() {
                        return;
                    }
                    let (mut reader, mut writer) = conn.split();
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                });
            }
        });
        Service { accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A port free on 127.0.0.1 a moment ago (and, in practice, on the other loopback addresses).
fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn read_greeting(conn: &mut (impl AsyncRead + Unpin)) -> String {
    let mut line = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(PATIENCE, conn.read(&mut byte))
            .await
            .expect("a greeting in time")
            .expect("read a greeting");
        if read == 0 || byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// Checks that `conn` echoes.
async fn echoes(conn: &mut (impl AsyncRead + AsyncWrite + Unpin)) {
    conn.write_all(b"ping").await.expect("write");
    let mut back = [0u8; 4];
    tokio::time::timeout(PATIENCE, conn.read_exact(&mut back))
        .await
        .expect("an echo in time")
        .expect("read the echo");
    assert_eq!(&back, b"ping");
}

// === Agents ===

/// An agent joined as the daemons join: registered through the lease source, tunnels kept by
/// weft-node's egress side.
struct Agent {
    egress: EgressAgent,
    metrics: AgentMetrics,
    lease: Lease,
    ipam_dir: PathBuf,
    dir: PathBuf,
}

impl Agent {
    async fn join(server: &Server, dir: &Path, name: &str, n: u8) -> Agent {
        let identity = NodeIdentity::load_or_create(dir).expect("an identity");
        let mut source = ApiSource::new(dir, vec![server.url()], server.token.clone(), identity);
        let cluster = source.cluster().await.expect("the cluster");
        let lease = source
            .register(&Agent::request(name, n))
            .await
            .expect("registered");
        let settings = Agent::settings(server, dir, name, n);
        let ipam_dir = settings.ipam_dir.clone();
        let mut egress = egress::start(settings, &cluster, &lease, source.credentials())
            .expect("the egress side");
        let metrics = AgentMetrics::new();
        egress.export_metrics(metrics.clone());
        Agent {
            egress,
            metrics,
            lease,
            ipam_dir,
            dir: dir.to_owned(),
        }
    }

    /// Agent `n`'s registration as `name`.
    fn request(name: &str, n: u8) -> RegisterRequest {
        RegisterRequest {
            node_name: name.to_owned(),
            node_ips: vec![node_ip(n)],
            external_ips: Vec::new(),
            backend: Default::default(),
        }
    }

    /// Agent `n`'s egress settings, with its data in `dir`: quick scans and reconnects.
    fn settings(server: &Server, dir: &Path, name: &str, n: u8) -> EgressSettings {
        EgressSettings {
            node_name: name.to_owned(),
            node_ips: vec![node_ip(n)],
            kubelet_port: server.kubelet_port,
            ipam_dir: dir.join("cni/networks/weft"),
            scan_interval: Duration::from_millis(50),
            servers_interval: Duration::from_millis(500),
            tunnel: weft_tunnel::proto::Config::default(),
            backoff: Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(300),
            },
            alias: None,
        }
    }

    /// The node certificate registration saved.
    fn certificate(&self) -> CertifiedKey {
        weft_node::identity::Credentials::load(&self.dir)
            .expect("readable")
            .expect("saved")
            .identity()
    }

    /// The `n`th address of the node's IPv4 pod CIDR.
    fn pod_ip(&self, n: u8) -> IpAddr {
        let octets = self
            .lease
            .ipv4_cidr
            .expect("an IPv4 pod CIDR")
            .network()
            .octets();
        IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], n))
    }

    /// Records a pod as host-local does: a file named by its IP holding its container id.
    fn add_pod(&self, ip: &str, id: &str) {
        std::fs::create_dir_all(&self.ipam_dir).expect("the IPAM dir");
        std::fs::write(self.ipam_dir.join(ip), format!("{id}\r\neth0")).expect("written");
    }

    fn remove_pod(&self, ip: &str) {
        std::fs::remove_file(self.ipam_dir.join(ip)).expect("removed");
    }
}

/// A cluster: a server and its kubelet port, in a temp dir.
async fn cluster(mode: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let kubelet_port = free_port();
    let server = Server::start(
        &dir.path().join("server-0"),
        None,
        network(mode),
        kubelet_port,
    )
    .await;
    (dir, server)
}

// === Tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_mode_tunnels_kubelets_by_ip_and_name_and_dials_the_rest_directly() {
    let (dir, server) = cluster("agent").await;
    let k = server.kubelet_port;
    let _kubelet_lo = Service::start(ip("127.0.0.1"), k, "kubelet on loopback").await;
    let _kubelet = Service::start(node_ip(1), k, "kubelet on agent-1").await;
    let other_port = free_port();
    let _other = Service::start(node_ip(1), other_port, "a service on agent-1").await;

    let agent = Agent::join(&server, &dir.path().join("agent-1"), "agent-1", 1).await;
    server.wait_for_tunnel("agent-1").await;
    eventually("the agent's view of its tunnel", || {
        agent.egress.connected() == [format!("127.0.0.1:{}", server.port)]
    })
    .await;
    server
        .wait_for_route(&node_ip(1).to_string(), k, |r| {
            matches!(r, Route::Tunnel { .. })
        })
        .await;

    // By node IP: through agent-1's tunnel (one stream while the connection lasts).
    let (greeting, mut conn) = server.connect_ok(&format!("{}:{k}", node_ip(1))).await;
    assert_eq!(greeting, "kubelet on agent-1");
    echoes(&mut conn).await;
    assert_eq!(server.tunnel.stats().streams, 1);
    drop(conn);

    // By node name: the agent dials its kubelet on loopback.
    let (greeting, mut conn) = server.connect_ok(&format!("agent-1:{k}")).await;
    assert_eq!(greeting, "kubelet on loopback");
    echoes(&mut conn).await;
    drop(conn);

    // Another port of the node is no kubelet: the server dials it itself.
    eventually("the tunnel's streams to end", || {
        server.tunnel.stats().streams == 0
    })
    .await;
    let (greeting, mut conn) = server
        .connect_ok(&format!("{}:{other_port}", node_ip(1)))
        .await;
    assert_eq!(greeting, "a service on agent-1");
    assert_eq!(server.tunnel.stats().streams, 0, "dialed directly");
    echoes(&mut conn).await;

    // An unknown node is a 502 naming it.
    let (status, body, _) = server
        .connect(&format!("agent-9:{k}"), Some(&server.apiserver))
        .await;
    assert_eq!(status, 502);
    assert!(body.contains("unknown node agent-9"), "{body}");

    // The apiserver's configuration names this server and files that work for CONNECT.
    let text = std::fs::read_to_string(&server.config_path).expect("the egress config");
    let config: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let connection = &config["egressSelections"][0]["connection"];
    assert_eq!(config["kind"], "EgressSelectorConfiguration");
    assert_eq!(connection["proxyProtocol"], "HTTPConnect");
    let tcp = &connection["transport"]["tcp"];
    assert_eq!(tcp["url"], server.url());
    let file = |key: &str| {
        let path = tcp["tlsConfig"][key].as_str().expect("a path").to_owned();
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    assert!(
        tcp["tlsConfig"]["clientCert"]
            .as_str()
            .is_some_and(|path| path.ends_with("/server/tls/client-kube-apiserver.crt")),
        "{tcp}"
    );
    let identity = CertifiedKey {
        cert_pem: file("clientCert"),
        key_pem: file("clientKey"),
    };
    let (status, body, mut conn) = connect_with(
        &file("caBundle"),
        server.port,
        &format!("{}:{k}", node_ip(1)),
        Some(&identity),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(read_greeting(&mut conn).await, "kubelet on agent-1");

    // Both ends count their tunnel and its streams (this CONNECT's) for /metrics.
    eventually("the tunnel gauges", || {
        let server_side = &server.metrics;
        (
            server_side.tunnel_sessions().get(),
            server_side.tunnel_streams().get(),
        ) == (1, 1)
            && agent.metrics.tunnel_sessions().get() == 1
            && agent.metrics.tunnel_streams().get() == 1
    })
    .await;
    drop(conn);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_mode_tunnels_addresses_in_a_nodes_pod_cidr() {
    let (dir, server) = cluster("pod").await;
    let agent = Agent::join(&server, &dir.path().join("agent-1"), "agent-1", 1).await;
    server.wait_for_tunnel("agent-1").await;
    let cidr = agent.lease.ipv4_cidr.expect("an IPv4 pod CIDR");
    let octets = cidr.network().octets();
    let pod = IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], 5));
    let empty = IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], 6));
    // The pod CIDRs here are loopback, which an agent dials only on the kubelet ports.
    let port = server.kubelet_port;
    let _pod = Service::start(pod, port, "a pod on agent-1").await;
    server
        .wait_for_route(
            &pod.to_string(),
            port,
            |r| matches!(r, Route::Tunnel { node, .. } if node == "agent-1"),
        )
        .await;

    let (greeting, mut conn) = server.connect_ok(&format!("{pod}:{port}")).await;
    assert_eq!(greeting, "a pod on agent-1");
    assert_eq!(server.tunnel.stats().streams, 1, "through the tunnel");
    echoes(&mut conn).await;
    drop(conn);

    // Nothing listens there: the agent's dial fails, and only that stream.
    let (status, body, _) = server
        .connect(&format!("{empty}:{port}"), Some(&server.apiserver))
        .await;
    assert_eq!(status, 502);
    assert!(body.contains("refused"), "{body}");
    assert_eq!(server.tunnel.connected_nodes(), ["agent-1"]);
    // Outside every pod CIDR: direct.
    assert!(matches!(
        server.tunnel.routes().route("127.43.0.5", port),
        Route::Direct { .. }
    ));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_tunnels_the_pods_agents_report_and_their_node_ips() {
    let (dir, server) = cluster("cluster").await;
    let k = server.kubelet_port;
    let agent = Agent::join(&server, &dir.path().join("agent-1"), "agent-1", 1).await;
    let other = Agent::join(&server, &dir.path().join("agent-2"), "agent-2", 2).await;
    server.wait_for_tunnel("agent-1").await;
    // Pod IPs here are loopback, which an agent dials only on the kubelet ports.
    let pod_ip = agent.pod_ip(9);
    let _pod = Service::start(pod_ip, k, "pod c0ffee").await;
    let port = free_port();
    let node_service = Service::start(node_ip(1), port, "a service on agent-1").await;

    // The CNI gives a pod an IP; the agent finds it, allows it and reports it.
    agent.add_pod(&pod_ip.to_string(), "c0ffee");
    server
        .wait_for_route(
            &pod_ip.to_string(),
            k,
            |r| matches!(r, Route::Tunnel { node, .. } if node == "agent-1"),
        )
        .await;
    let pods = server.store.list_pods().await.expect("listed");
    assert_eq!(
        pods.items
            .iter()
            .map(|p| (
                p.value.namespace.as_str(),
                p.value.name.as_str(),
                p.value.node.as_str()
            ))
            .collect::<Vec<_>>(),
        [("agent-1", "c0ffee", "agent-1")]
    );
    let (greeting, mut conn) = server.connect_ok(&format!("{pod_ip}:{k}")).await;
    assert_eq!(greeting, "pod c0ffee");
    assert_eq!(server.tunnel.stats().streams, 1, "through the tunnel");
    echoes(&mut conn).await;
    drop(conn);

    // The node's IPs on any port go through its tunnel too; here they are loopback, which the
    // agent refuses off the kubelet ports, failing only that stream.
    server
        .wait_for_route(
            &node_ip(1).to_string(),
            port,
            |r| matches!(r, Route::Tunnel { node, .. } if node == "agent-1"),
        )
        .await;
    let (status, body, _) = server
        .connect(&format!("{}:{port}", node_ip(1)), Some(&server.apiserver))
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("does not allow"), "{body}");
    assert_eq!(node_service.accepted(), 0);
    assert_eq!(server.tunnel.connected_nodes(), ["agent-1", "agent-2"]);

    // A node reports only its own pods: agent-2's report can't touch agent-1's.
    let client = NodeClient::new(&server.ca_pem, &other.certificate()).expect("a client");
    let report = PodReport {
        pods: vec![ReportedPod {
            id: "c0ffee".to_owned(),
            ips: vec![other.pod_ip(77)],
        }],
    };
    client
        .report_pods(&server.url(), &report)
        .await
        .expect("reported");
    let pods = server.store.list_pods_in("agent-1").await.expect("listed");
    assert_eq!(pods.items.len(), 1);
    assert_eq!(pods.items[0].value.ips, [pod_ip]);

    // The pod goes away: so does its route.
    agent.remove_pod(&pod_ip.to_string());
    server
        .wait_for_route(&pod_ip.to_string(), k, |r| {
            matches!(r, Route::Direct { .. })
        })
        .await;
    eventually_async("agent-1's pods gone from the store", || async {
        server
            .store
            .list_pods_in("agent-1")
            .await
            .is_ok_and(|p| p.items.is_empty())
    })
    .await;
    drop(other);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_reports_and_pod_routes_stay_inside_the_nodes_lease() {
    let (dir, server) = cluster("cluster").await;
    let port = free_port();
    let agent = Agent::join(&server, &dir.path().join("agent-1"), "agent-1", 1).await;
    let other = Agent::join(&server, &dir.path().join("agent-2"), "agent-2", 2).await;
    server.wait_for_tunnel("agent-2").await;

    // agent-1's CNI records a pod outside its lease (agent-2's pod CIDR) and one inside: the
    // agent reports only the one inside.
    agent.add_pod(&other.pod_ip(5).to_string(), "stray");
    agent.add_pod(&agent.pod_ip(5).to_string(), "inside");
    server
        .wait_for_route(
            &agent.pod_ip(5).to_string(),
            port,
            |r| matches!(r, Route::Tunnel { node, .. } if node == "agent-1"),
        )
        .await;
    let pods = server.store.list_pods_in("agent-1").await.expect("listed");
    assert_eq!(
        pods.items
            .iter()
            .map(|p| (p.value.name.as_str(), p.value.ips.clone()))
            .collect::<Vec<_>>(),
        [("inside", vec![agent.pod_ip(5)])]
    );

    // agent-2 has a pod of its own; then its certificate reports the server's address as a
    // pod, and its own pod beside agent-1's: both are refused whole, and nothing is stored.
    other.add_pod(&other.pod_ip(6).to_string(), "own");
    server
        .wait_for_route(
            &other.pod_ip(6).to_string(),
            port,
            |r| matches!(r, Route::Tunnel { node, .. } if node == "agent-2"),
        )
        .await;
    let client = NodeClient::new(&server.ca_pem, &other.certificate()).expect("a client");
    let report = |pods: &[(&str, IpAddr)]| PodReport {
        pods: pods
            .iter()
            .map(|(id, ip)| ReportedPod {
                id: (*id).to_owned(),
                ips: vec![*ip],
            })
            .collect(),
    };
    for (pods, outside, id) in [
        (vec![("web", ip("127.0.0.1"))], ip("127.0.0.1"), "web"),
        (
            vec![("own", other.pod_ip(6)), ("theft", agent.pod_ip(5))],
            agent.pod_ip(5),
            "theft",
        ),
    ] {
        let error = client
            .report_pods(&server.url(), &report(&pods))
            .await
            .expect_err("a pod outside the lease is refused");
        let expected = format!(
            "pod ip {outside} of pod {id} is outside node agent-2's pod CIDRs {}; a node reports only pods of its own lease",
            cidr_text(&other)
        );
        match error {
            weft_api::ApiError::Rejected {
                status, message, ..
            } => {
                assert_eq!(status, 422, "{message}");
                assert_eq!(message, expected);
            }
            other => panic!("refused for the wrong reason: {other}"),
        }
    }
    let pods = server.store.list_pods_in("agent-2").await.expect("listed");
    assert_eq!(
        pods.items
            .iter()
            .map(|p| (p.value.name.as_str(), p.value.ips.clone()))
            .collect::<Vec<_>>(),
        [("own", vec![other.pod_ip(6)])],
        "the refused reports changed nothing"
    );

    // A record outside agent-2's lease written straight into the store (an older server's, or
    // edited by hand) draws nothing into agent-2's tunnel: the server dials that IP itself.
    let _host = Service::start(ip("127.0.0.1"), port, "the server's host").await;
    for (name, address) in [("forged", ip("127.0.0.1")), ("marker", other.pod_ip(8))] {
        let record = PodRecord {
            namespace: "agent-2".to_owned(),
            name: name.to_owned(),
            node: "agent-2".to_owned(),
            ips: vec![address],
        };
        server.store.put_pod(&record).await.expect("stored");
    }
    // The record written after it routes through agent-2: the routes have seen both.
    server
        .wait_for_route(
            &other.pod_ip(8).to_string(),
            port,
            |r| matches!(r, Route::Tunnel { node, .. } if node == "agent-2"),
        )
        .await;
    assert!(matches!(
        server.tunnel.routes().route("127.0.0.1", port),
        Route::Direct { .. }
    ));
    let (greeting, _conn) = server.connect_ok(&format!("127.0.0.1:{port}")).await;
    assert_eq!(greeting, "the server's host");
    assert_eq!(server.tunnel.stats().streams, 0, "dialed directly");
    drop(agent);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_dials_only_what_it_allows_whatever_the_server_asks() {
    let (dir, server) = cluster("cluster").await;
    let k = server.kubelet_port;
    let agent = Agent::join(&server, &dir.path().join("agent-1"), "agent-1", 1).await;
    server.wait_for_tunnel("agent-1").await;
    let port = free_port();
    // Things on this host that agent-1 must never dial for the server. The forged pod lies in
    // agent-1's lease and listens on the kubelet port, so only the list of the pods agent-1
    // found keeps it from being dialed.
    let forged_ip = agent.pod_ip(99);
    let forged_pod = Service::start(forged_ip, k, "not agent-1's pod").await;
    let loopback = Service::start(ip("127.0.0.1"), port, "not the kubelet").await;
    let neighbour = Service::start(node_ip(2), k, "agent-2's kubelet").await;

    // The store says agent-1 runs a pod it never reported (a server gone wrong, or forged
    // state): the server routes it to agent-1, and agent-1 refuses.
    let forged = PodRecord {
        namespace: "agent-1".to_owned(),
        name: "forged".to_owned(),
        node: "agent-1".to_owned(),
        ips: vec![forged_ip],
    };
    server.store.put_pod(&forged).await.expect("stored");
    server
        .wait_for_route(
            &forged_ip.to_string(),
            k,
            |r| matches!(r, Route::Tunnel { node, .. } if node == "agent-1"),
        )
        .await;
    let (status, body, _) = server
        .connect(&format!("{forged_ip}:{k}"), Some(&server.apiserver))
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("does not allow"), "{body}");

    // Whatever the server asks through the tunnel itself.
    let connection = server
        .tunnel
        .connection("agent-1")
        .expect("agent-1's tunnel");
    for (host, port) in [
        (&*forged_ip.to_string(), k),
        ("127.0.0.1", port),
        (&*node_ip(2).to_string(), k),
        ("localhost", k),
        ("agent-1", k),
        ("10.0.0.1", k),
        ("127.42.200.1", 80),
    ] {
        let target = Target::new(host, port).expect("a target");
        match connection.open(target.clone()).await {
            Err(OpenError::Dial(DialError::NotAllowed)) => {}
            Err(other) => panic!("{target}: refused for the wrong reason: {other}"),
            Ok(_) => panic!("{target}: the agent dialed it"),
        }
    }
    // Only those streams failed: the tunnel is up, and a kubelet dial still works.
    assert_eq!(server.tunnel.connected_nodes(), ["agent-1"]);
    let _kubelet = Service::start(node_ip(1), k, "kubelet on agent-1").await;
    let (greeting, _conn) = server.connect_ok(&format!("{}:{k}", node_ip(1))).await;
    assert_eq!(greeting, "kubelet on agent-1");
    for (service, what) in [
        (&forged_pod, "the forged pod"),
        (&loopback, "loopback off the kubelet port"),
        (&neighbour, "another node's kubelet"),
    ] {
        assert_eq!(service.accepted(), 0, "{what} was dialed");
    }
    drop(agent);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_never_dials_below_its_floor_nor_outside_the_cluster_cidr() {
    let (dir, server) = cluster("pod").await;
    let k = server.kubelet_port;
    // agent-2's lease lies outside the cluster CIDR (127.42.0.0/16), as an older server or a
    // store edited by hand might hand it out.
    let elsewhere = CidrList::parse("cluster-cidr", &["127.99.0.0/16"]).expect("a CIDR");
    let masks = NodeMaskSizes { ipv4: 24, ipv6: 64 };
    let attrs = LeaseAttrs {
        public_ipv4: None,
        public_ipv6: None,
        backend: Default::default(),
    };
    server
        .store
        .allocate_lease("agent-2", &elsewhere, masks, &attrs)
        .await
        .expect("a lease");
    let agent = Agent::join(&server, &dir.path().join("agent-1"), "agent-1", 1).await;
    let other = Agent::join(&server, &dir.path().join("agent-2"), "agent-2", 2).await;
    assert!(
        cidr_text(&other).starts_with("127.99."),
        "{}",
        cidr_text(&other)
    );
    server.wait_for_tunnel("agent-1").await;
    server.wait_for_tunnel("agent-2").await;
    let port = free_port();

    // A pod in agent-1's lease: dialed on the kubelet port, but on any other port it is
    // loopback, below the floor, whatever the pod CIDR allows.
    let pod = agent.pod_ip(5);
    let _pod = Service::start(pod, k, "a pod on agent-1").await;
    let off_port = Service::start(pod, port, "loopback off the kubelet port").await;
    server
        .wait_for_route(
            &pod.to_string(),
            port,
            |r| matches!(r, Route::Tunnel { node, .. } if node == "agent-1"),
        )
        .await;
    let (status, body, _) = server
        .connect(&format!("{pod}:{port}"), Some(&server.apiserver))
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("does not allow"), "{body}");
    let (greeting, _conn) = server.connect_ok(&format!("{pod}:{k}")).await;
    assert_eq!(greeting, "a pod on agent-1");

    // The server routes agent-2's pod CIDR through agent-2, which ignored it: refused.
    let beyond = other.pod_ip(5);
    let beyond_service = Service::start(beyond, k, "beyond the cluster CIDR").await;
    server
        .wait_for_route(
            &beyond.to_string(),
            k,
            |r| matches!(r, Route::Tunnel { node, .. } if node == "agent-2"),
        )
        .await;
    let (status, body, _) = server
        .connect(&format!("{beyond}:{k}"), Some(&server.apiserver))
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("does not allow"), "{body}");
    let rules = other.egress.authorizer().expect("enabled");
    assert!(rules.pod_cidrs.is_empty(), "{:?}", rules.pod_cidrs);

    // Only those streams failed: both tunnels are up, and agent-2's kubelet is dialed.
    assert_eq!(server.tunnel.connected_nodes(), ["agent-1", "agent-2"]);
    let _kubelet = Service::start(node_ip(2), k, "kubelet on agent-2").await;
    let (greeting, _conn) = server.connect_ok(&format!("{}:{k}", node_ip(2))).await;
    assert_eq!(greeting, "kubelet on agent-2");
    for (service, what) in [
        (&off_port, "loopback off the kubelet port"),
        (&beyond_service, "a pod CIDR outside the cluster CIDR"),
    ] {
        assert_eq!(service.accepted(), 0, "{what} was dialed");
    }
    server.stop().await;
}

/// The agent's IPv4 pod CIDR, as text.
fn cidr_text(agent: &Agent) -> String {
    agent.lease.ipv4_cidr.expect("an IPv4 pod CIDR").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_certificate_does_its_one_job() {
    let (dir, server) = cluster("agent").await;
    let k = server.kubelet_port;
    let _kubelet = Service::start(node_ip(1), k, "kubelet on agent-1").await;
    let agent = Agent::join(&server, &dir.path().join("agent-1"), "agent-1", 1).await;
    server.wait_for_tunnel("agent-1").await;
    let url = format!("wss://127.0.0.1:{}{CONNECT_PATH}", server.port);

    // No certificate, the kube-apiserver's, the admin's, or another CA's node certificate: no
    // tunnel.
    let stranger = ClusterCa::generate()
        .expect("a CA")
        .issue_node("agent-1")
        .expect("a certificate");
    for (identity, expect) in [
        (None, Some("401")),
        (Some(server.apiserver.clone()), Some("403")),
        (Some(server.admin.clone()), Some("403")),
        // The TLS handshake itself fails.
        (Some(stranger), None),
    ] {
        let tls =
            weft_api::tls::client_config(&server.ca_pem, identity.as_ref()).expect("client TLS");
        match websocket::connect(&url, tls).await {
            Ok(_) => panic!("a tunnel without a node certificate"),
            Err(error) => {
                let text = error.to_string();
                assert!(expect.is_none_or(|code| text.contains(code)), "{text}");
            }
        }
    }
    assert_eq!(server.tunnel.connected_nodes(), ["agent-1"]);

    // CONNECT takes the kube-apiserver's certificate only: not a node's, not the admin's.
    let target = format!("{}:{k}", node_ip(1));
    let (status, _, _) = server.connect(&target, None).await;
    assert_eq!(status, 401);
    for refused in [agent.certificate(), server.admin.clone()] {
        let (status, body, _) = server.connect(&target, Some(&refused)).await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("client-kube-apiserver.crt"), "{body}");
    }
    let (greeting, _) = server.connect_ok(&target).await;
    assert_eq!(greeting, "kubelet on agent-1");

    // Node management takes the admin's certificate only: not the kube-apiserver's.
    let apiserver = AdminClient::new(&server.ca_pem, &server.apiserver).expect("a client");
    for refused in [
        apiserver.list_nodes(&server.url()).await.map(|_| ()),
        apiserver.delete_node(&server.url(), "agent-1").await,
    ] {
        let error = refused.expect_err("the kube-apiserver manages no nodes");
        assert!(
            matches!(&error, ApiError::Rejected { status: 403, message, .. } if message.contains("client-admin.crt")),
            "{error}"
        );
    }
    let admin = AdminClient::new(&server.ca_pem, &server.admin).expect("a client");
    let nodes = admin
        .list_nodes(&server.url())
        .await
        .expect("the admin lists");
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(
        nodes[0].name, "agent-1",
        "not deleted by the kube-apiserver"
    );

    // Pod reports need a node certificate; the admin's and the kube-apiserver's are none.
    for not_a_node in [&server.admin, &server.apiserver] {
        let client = NodeClient::new(&server.ca_pem, not_a_node).expect("a client");
        let error = client
            .report_pods(&server.url(), &PodReport::default())
            .await
            .expect_err("only nodes report pods");
        assert!(error.to_string().contains("401"), "{error}");
    }
    // The rest of the API is served beside the tunnel.
    let node = NodeClient::new(&server.ca_pem, &agent.certificate()).expect("a client");
    assert_eq!(
        node.servers(&server.url()).await.expect("the servers"),
        [server.url()]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_nodes_tunnel_closes_and_its_certificate_opens_no_other() {
    let (dir, server) = cluster("agent").await;
    let agent = Agent::join(&server, &dir.path().join("agent-1"), "agent-1", 1).await;
    server.wait_for_tunnel("agent-1").await;
    let certificate = agent.certificate();

    weft_api::client::AdminClient::new(&server.ca_pem, &server.admin)
        .expect("an admin client")
        .delete_node(&server.url(), "agent-1")
        .await
        .expect("agent-1 is deleted");
    // The tunnel closes at once, and the agent's attempts to reconnect are refused.
    eventually("agent-1's tunnel to close", || {
        server.tunnel.connected_nodes().is_empty()
    })
    .await;
    let url = format!("wss://127.0.0.1:{}{CONNECT_PATH}", server.port);
    let tls = weft_api::tls::client_config(&server.ca_pem, Some(&certificate)).expect("client TLS");
    match websocket::connect(&url, tls).await {
        Ok(_) => panic!("a deleted node's certificate opened a tunnel"),
        Err(error) => assert!(error.to_string().contains("401"), "{error}"),
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(server.tunnel.connected_nodes().is_empty());
    drop(agent);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_reconnect_with_the_newest_node_certificate() {
    let (dir, server) = cluster("agent").await;
    let k = server.kubelet_port;
    let _kubelet = Service::start(node_ip(1), k, "kubelet on agent-1").await;
    let agent_dir = dir.path().join("agent-1");
    let identity = NodeIdentity::load_or_create(&agent_dir).expect("an identity");
    let mut source = ApiSource::new(
        &agent_dir,
        vec![server.url()],
        server.token.clone(),
        identity,
    );
    let cluster = source.cluster().await.expect("the cluster");
    let lease = source
        .register(&Agent::request("agent-1", 1))
        .await
        .expect("registered");
    let registered = source.credentials().borrow().clone().expect("credentials");
    // The credentials as a lease source hands them on: the first registration's, then renewals'.
    let (renewals, credentials) = tokio::sync::watch::channel(Some(registered.clone()));
    let settings = Agent::settings(&server, &agent_dir, "agent-1", 1);
    let egress = egress::start(settings, &cluster, &lease, credentials).expect("the egress side");
    server.wait_for_tunnel("agent-1").await;

    // A certificate the server does not take (another CA's): the live tunnel goes on, ...
    let stranger = ClusterCa::generate()
        .expect("a CA")
        .issue_node("agent-1")
        .expect("a certificate");
    renewals.send_replace(Some(weft_node::identity::Credentials {
        cert_pem: stranger.cert_pem,
        key_pem: stranger.key_pem,
        ..registered.clone()
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.tunnel.connected_nodes(), ["agent-1"]);
    // ... and once the server ends it (as it does when it revokes a certificate), the tunnel
    // reconnects with the newest certificate, which the server refuses.
    server
        .tunnel
        .close_all("the node's certificate was renewed");
    eventually("the tunnel to go", || {
        server.tunnel.connected_nodes().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        server.tunnel.connected_nodes().is_empty(),
        "reconnected with an old certificate"
    );

    // A real renewal: registering again gives a new certificate, and the tunnel comes back.
    source
        .register(&Agent::request("agent-1", 1))
        .await
        .expect("registered again");
    let renewed = source.credentials().borrow().clone().expect("credentials");
    assert_ne!(renewed.cert_pem, registered.cert_pem);
    renewals.send_replace(Some(renewed));
    server.wait_for_tunnel("agent-1").await;
    let (greeting, _) = server.connect_ok(&format!("{}:{k}", node_ip(1))).await;
    assert_eq!(greeting, "kubelet on agent-1");
    drop(egress);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_mode_has_no_tunnels_and_dials_directly() {
    let (dir, server) = cluster("disabled").await;
    let k = server.kubelet_port;
    let _kubelet = Service::start(node_ip(1), k, "kubelet on agent-1").await;
    let agent = Agent::join(&server, &dir.path().join("agent-1"), "agent-1", 1).await;
    assert!(!agent.egress.is_enabled());
    let (greeting, _conn) = server.connect_ok(&format!("{}:{k}", node_ip(1))).await;
    assert_eq!(greeting, "kubelet on agent-1");
    assert_eq!(server.tunnel.stats().sessions, 0);

    // A tunnel is refused outright.
    let tls = weft_api::tls::client_config(&server.ca_pem, Some(&agent.certificate()))
        .expect("client TLS");
    let url = format!("wss://127.0.0.1:{}{CONNECT_PATH}", server.port);
    let error = websocket::connect(&url, tls)
        .await
        .expect_err("no tunnels in disabled mode");
    assert!(error.to_string().contains("403"), "{error}");
    let text = std::fs::read_to_string(&server.config_path).expect("the egress config");
    let config: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        config["egressSelections"][0]["connection"],
        serde_json::json!({ "proxyProtocol": "Direct" })
    );
    assert_eq!(
        server.network.egress_selector_mode,
        EgressSelectorMode::Disabled
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reconnects_after_its_server_restarts() {
    let (dir, server) = cluster("agent").await;
    let k = server.kubelet_port;
    let _kubelet = Service::start(node_ip(1), k, "kubelet on agent-1").await;
    let agent = Agent::join(&server, &dir.path().join("agent-1"), "agent-1", 1).await;
    server.wait_for_tunnel("agent-1").await;
    let (greeting, _) = server.connect_ok(&format!("{}:{k}", node_ip(1))).await;
    assert_eq!(greeting, "kubelet on agent-1");

    let (server_dir, port, network, kubelet_port) = server.stop().await;
    eventually("the agent to see its tunnel go", || {
        agent.egress.connected().is_empty()
    })
    .await;

    let server = Server::start(&server_dir, Some(port), network, kubelet_port).await;
    server.wait_for_tunnel("agent-1").await;
    server
        .wait_for_route(&node_ip(1).to_string(), k, |r| {
            matches!(r, Route::Tunnel { .. })
        })
        .await;
    let (greeting, mut conn) = server.connect_ok(&format!("{}:{k}", node_ip(1))).await;
    assert_eq!(greeting, "kubelet on agent-1");
    echoes(&mut conn).await;
    server.stop().await;
}
