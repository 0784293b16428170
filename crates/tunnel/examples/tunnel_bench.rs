//! `cargo xtask bench tunnel`: the tunnel on loopback, each figure beside a baseline measured
//! in the same run (issues 7's and 19's targets in brackets):
//!
//! - one stream's throughput, `curl -p`-style CONNECT over TLS -> server -> TLS WebSocket tunnel
//!   -> agent -> target, against a direct TCP connection to the target [>= 0.5x direct];
//! - 1,000 concurrent streams' aggregate throughput, against 1,000 direct connections [>= 0.2x
//!   direct];
//! - 64-byte request/response round trips, p50 and p99, tunnel against direct [p50 overhead
//!   <= 150 us];
//! - memory per idle stream: the growth of the server's and the agent's resident memory over
//!   10,000 idle streams (each a CONNECT client's TLS connection on the server, a tunnel stream
//!   on both ends, and a TCP connection to the target on the agent) [<= 8 KiB], and the server's
//!   resident memory once they closed, against its start [<= 2x];
//! - streams sharing a tunnel with one whose reader stopped, against the same streams alone
//!   [>= 90% of their throughput].
//!
//! The server and the agent are child processes of this program (`tunnel_bench server DIR` and
//! `tunnel_bench agent DIR PORT KUBELET_PORT`), as they are separate daemons in a cluster, so
//! their memory is measured apart from the clients and targets. The targets run in a child of
//! their own (`tunnel_bench targets`), so no client waits on a target's runtime: the echo that
//! answers round trips is a blocking thread per connection, and the round-trip clients (direct
//! and CONNECT alike) are a blocking thread with std sockets, so the direct round trip is the
//! kernel's. The tunnelled targets listen on the agent's kubelet port, on its node IPs
//! `127.0.0.1` (the sink), `127.0.0.3` (an echo for idle and stalled streams) and `127.0.0.4`
//! (the round-trip echo): an agent dials no other port on loopback. The server's and the agent's
//! resident sets are printed for every phase (the peak while it ran, and after it). Every figure
//! is measured several times, tunnel and baseline interleaved, and the median is printed: the
//! machine is shared, so only ratios from one run compare.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_api::pki::{CertifiedKey, ClusterCa};
use weft_api::tls;
use weft_kernel::throughput::machine_busy;
use weft_tunnel::agent::{AgentDialer, AgentTunnels, Backoff};
use weft_tunnel::policy::{Authorizer, EgressSelectorMode, NodeRoute, RoutingTable};
use weft_tunnel::proto::Config;
use weft_tunnel::server::TunnelServer;

/// Bytes through one stream, per run.
const ONE_STREAM: usize = 512 << 20;
/// Concurrent streams, and bytes through each.
const MANY_STREAMS: usize = 1000;
const PER_STREAM: usize = 512 << 10;
/// Round trips per run.
const ROUND_TRIPS: usize = 5000;
/// Idle streams to measure memory over (fewer if the open-files limit is too low).
const IDLE_STREAMS: usize = 10_000;
/// Streams sharing the tunnel with a stalled one, and how long each run moves data.
const NEIGHBOURS: usize = 4;
const STALL_RUN: Duration = Duration::from_secs(3);
/// How long the server may take to give back what its closed idle streams held.
const SHRINK_WAIT: Duration = Duration::from_secs(20);
/// Runs per figure.
const RUNS: usize = 5;
/// The agent's node IPs; the targets listen on them.
const AGENT_NODE_IPS: [[u8; 4]; 3] = [[127, 0, 0, 1], [127, 0, 0, 3], [127, 0, 0, 4]];
/// The address no node has, which a server dials itself.
const OUTSIDE_IP: [u8; 4] = [127, 0, 0, 2];

/// The daemons' allocator, as weft-server's and weft-agent's: jemalloc, whose background threads
/// give freed pages back to the kernel.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    match args.get(1).map(String::as_str) {
        Some("server") => runtime.block_on(server(Path::new(&args[2]))),
        Some("agent") => runtime.block_on(agent(Path::new(&args[2]), &args[3], &args[4])),
        Some("relay") => runtime.block_on(relay(&args[2])),
        Some("targets") => runtime.block_on(targets()),
        _ => runtime.block_on(bench(&args[1..])),
    }
}

/// The sessions' config on both ends: the default, with room for the idle streams.
fn config() -> Config {
    Config {
        max_streams: 2 * IDLE_STREAMS,
        ..Config::default()
    }
}

// === The daemons ===

/// The server child: a tunnel server on loopback that routes every port of the node IPs of
/// `agent-1` (cluster mode), printing `ready PORT`.
async fn server(dir: &Path) {
    raise_open_files();
    let ca = read_ca(dir);
    let cert = ca.issue_server(&[], &[]).expect("a server certificate");
    let routes = RoutingTable {
        mode: EgressSelectorMode::Cluster,
        local_node: None,
        nodes: vec![NodeRoute {
            name: "agent-1".to_owned(),
            addresses: AGENT_NODE_IPS.iter().map(|ip| IpAddr::from(*ip)).collect(),
            kubelet_port: 10250,
            pod_cidrs: Vec::new(),
            pods: Vec::new(),
        }],
    };
    let tunnel = TunnelServer::new(config(), routes);
    let listener = listen();
    let port = listener.local_addr().expect("an address").port();
    let tls = tls::server_config(ca.cert_pem(), &cert).expect("server TLS");
    tokio::spawn(weft_api::http::serve(
        listener,
        tls,
        Arc::new(tunnel.clone()),
    ));
    println_flush(&format!("ready {port}"));
    std::future::pending::<()>().await;
}

/// The agent child: a tunnel to the server at 127.0.0.1:`port` that dials its kubelet port
/// `kubelet_port` on its node IPs, printing `ready` once connected.
async fn agent(dir: &Path, port: &str, kubelet_port: &str) {
    raise_open_files();
    let ca = read_ca(dir);
    let node = ca.issue_node("agent-1").expect("a node certificate");
    let tls = tls::client_config(ca.cert_pem(), Some(&node)).expect("client TLS");
    let kubelet_port = kubelet_port.parse().expect("a kubelet port");
    let authorizer = Authorizer {
        node_ips: AGENT_NODE_IPS.iter().map(|ip| IpAddr::from(*ip)).collect(),
        ..Authorizer::new(EgressSelectorMode::Cluster, kubelet_port)
    };
    let tunnels = AgentTunnels::new(
        tls,
        Arc::new(AgentDialer::new(authorizer)),
        config(),
        Backoff::default(),
    );
    tunnels.set_servers(&[format!("127.0.0.1:{port}")]);
    while tunnels.connected().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println_flush("ready");
    std::future::pending::<()>().await;
}

/// A listener on a free loopback port with a deep accept queue, as weft-server's, so a
/// thousand connections at once do not overflow it.
fn listen() -> TcpListener {
    listen_on([127, 0, 0, 1], 0)
}

/// [`listen`] on loopback address `ip` and `port` (a free one when 0).
fn listen_on(ip: [u8; 4], port: u16) -> TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.bind(SocketAddr::from((ip, port))).expect("bind");
    socket.listen(4096).expect("listen")
}

/// The targets child: the sink on the agent's first node IP, an echo on its second one (idle
/// and stalled streams), a blocking echo on its third (round trips), all on the sink's port, and
/// an echo on [`OUTSIDE_IP`]; prints `ready SINK_PORT OUTSIDE_PORT`.
async fn targets() {
    raise_open_files();
    let sink = listen_on(AGENT_NODE_IPS[0], 0);
    let port = sink.local_addr().expect("an address").port();
    tokio::spawn(serve_sink(sink));
    tokio::spawn(serve_echo(listen_on(AGENT_NODE_IPS[1], port)));
    let round_trips = listen_on(AGENT_NODE_IPS[2], port)
        .into_std()
        .expect("a std listener");
    std::thread::spawn(move || blocking_echo(round_trips));
    let outside = listen_on(OUTSIDE_IP, 0);
    let outside_port = outside.local_addr().expect("an address").port();
    tokio::spawn(serve_echo(outside));
    println_flush(&format!("ready {port} {outside_port}"));
    std::future::pending::<()>().await;
}

/// The relay child: a plain TCP relay on loopback to `target` (`host:port`), printing
/// `ready PORT`: two of them in a row are the floor for any path through two processes.
async fn relay(target: &str) {
    raise_open_files();
    let listener = listen();
    let port = listener.local_addr().expect("an address").port();
    let target: SocketAddr = target.parse().expect("a target address");
    println_flush(&format!("ready {port}"));
    while let Ok((mut client, _)) = listener.accept().await {
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let Ok(mut next) = TcpStream::connect(target).await else {
                return;
            };
            let _ = next.set_nodelay(true);
            let _ = weft_tunnel::transport::splice_io(&mut client, &mut next).await;
        });
    }
}

fn read_ca(dir: &Path) -> ClusterCa {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect("the CA files");
    ClusterCa::from_pem(&read("ca.crt"), &read("ca.key")).expect("the CA")
}

fn println_flush(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Raises the soft open-files limit to the hard one (and the hard one, as root, to 65,536).
fn raise_open_files() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
    let want = hard.max(65_536);
    if setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return want;
    }
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft)
}

/// The port a child prints in its `ready PORT` line.
fn ready_port(daemon: &mut Daemon) -> u16 {
    ready_ports(daemon)[0]
}

/// The ports a child prints in its `ready PORT...` line.
fn ready_ports(daemon: &mut Daemon) -> Vec<u16> {
    let line = daemon.line();
    let ports: Vec<u16> = line
        .strip_prefix("ready ")
        .map(|ports| ports.split(' ').filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default();
    assert!(!ports.is_empty(), "a daemon's ports in {line:?}");
    ports
}

/// A child process of this program in `role`.
struct Daemon {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Daemon {
    // The bench's one command: this program again, as the server or the agent.
    #[allow(clippy::disallowed_methods)]
    fn spawn(args: &[&str]) -> Daemon {
        let exe = std::env::current_exe().expect("this program");
        let mut child = std::process::Command::new(exe)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a daemon");
        let stdout = BufReader::new(child.stdout.take().expect("its stdout"));
        Daemon { child, stdout }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("a line from a daemon");
        line.trim().to_owned()
    }

    /// Resident memory in bytes.
    fn rss(&self) -> u64 {
        resident(self.child.id())
    }

    /// How many files (sockets, mostly) it has open.
    fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map_or(0, Iterator::count)
    }

    /// CPU time used so far (user + system), from `/proc/PID/stat`.
    fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15; the slice starts at field 3.
        Duration::from_millis((ticks(11) + ticks(12)) * 10)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of process `pid` in bytes (`VmRSS` of `/proc/PID/status`), 0 once it is gone.
fn resident(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The peak resident sets of the server and the agent, sampled every 20 ms by a thread of its
/// own, so a phase's peak is seen however short it is.
struct ResidentWatch {
    pids: [u32; 2],
    peaks: Arc<[AtomicU64; 2]>,
}

impl ResidentWatch {
    fn new(server: &Daemon, agent: &Daemon) -> ResidentWatch {
        let pids = [server.child.id(), agent.child.id()];
        let peaks = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let sampled = Arc::downgrade(&peaks);
        std::thread::spawn(move || {
            while let Some(peaks) = sampled.upgrade() {
                for (pid, peak) in pids.iter().zip(peaks.iter()) {
                    peak.fetch_max(resident(*pid), Ordering::Relaxed);
                }
                drop(peaks);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        ResidentWatch { pids, peaks }
    }

    /// Prints the peaks since the last call and the resident sets now, for `phase`; starts the
    /// next phase's peaks from now.
    fn print(&self, phase: &str) {
        let now = self.pids.map(resident);
        let peaks = [0, 1].map(|i| self.peaks[i].swap(now[i], Ordering::Relaxed).max(now[i]));
        println_flush(&format!(
            "  resident during {phase}: server {} MiB peak, {} MiB after; agent {} MiB peak, {} MiB after",
            peaks[0] >> 20,
            now[0] >> 20,
            peaks[1] >> 20,
            now[1] >> 20
        ));
    }
}

// === The bench ===

/// The parent's view of a running tunnel.
struct Setup {
    server: Daemon,
    agent: Daemon,
    server_addr: SocketAddr,
    client_tls: Arc<rustls::ClientConfig>,
    dir: TempDir,
    watch: ResidentWatch,
}

/// Runs the figures named in `only` (`memory`, `one`, `many`, `rtt`, `stall`), or all.
async fn bench(only: &[String]) {
    let wanted = |figure: &str| only.is_empty() || only.iter().any(|o| o == figure);
    let open_files = raise_open_files();
    let dir = TempDir::new();
    let ca = ClusterCa::generate().expect("a CA");
    std::fs::write(dir.0.join("ca.crt"), ca.cert_pem()).expect("write the CA");
    std::fs::write(dir.0.join("ca.key"), ca.key_pem()).expect("write the CA key");
    // The tunnelled targets, on the agent's kubelet port of each of its node IPs.
    let mut targets = Daemon::spawn(&["targets"]);
    let ports = ready_ports(&mut targets);
    let sink = SocketAddr::from((AGENT_NODE_IPS[0], ports[0]));
    let echo = SocketAddr::from((AGENT_NODE_IPS[1], ports[0]));
    let round_trip_echo = SocketAddr::from((AGENT_NODE_IPS[2], ports[0]));
    let outside = SocketAddr::from((OUTSIDE_IP, ports[1]));
    let mut server = Daemon::spawn(&["server", &dir.0.display().to_string()]);
    let port = ready_port(&mut server);
    let mut agent = Daemon::spawn(&[
        "agent",
        &dir.0.display().to_string(),
        &port.to_string(),
        &sink.port().to_string(),
    ]);
    assert_eq!(agent.line(), "ready", "the agent connected");
    // The kube-apiserver's certificate: the only one the CONNECT front door takes.
    let apiserver: CertifiedKey = ca
        .issue_kube_apiserver()
        .expect("a kube-apiserver certificate");
    let watch = ResidentWatch::new(&server, &agent);
    let setup = Setup {
        server,
        agent,
        server_addr: SocketAddr::from(([127, 0, 0, 1], port)),
        client_tls: tls::client_config(ca.cert_pem(), Some(&apiserver)).expect("client TLS"),
        dir,
        watch,
    };

    println_flush(
        "tunnel bench: CONNECT over TLS -> server -> TLS WebSocket -> agent -> target, on loopback",
    );
    println_flush(&format!(
        "(server, agent and targets are child processes; every figure is the median of {RUNS} runs, tunnel and baseline interleaved)"
    ));
    setup.watch.print("start-up");

    // Memory per idle stream, first, while the daemons' heaps hold only their start-up.
    if wanted("memory") {
        let idle = IDLE_STREAMS.min((open_files.saturating_sub(1000) / 2) as usize);
        let (server_before, agent_before) = (setup.server.rss(), setup.agent.rss());
        let mut held = Vec::with_capacity(idle);
        for _ in 0..idle {
            held.push(open_tunnel(&setup, echo).await);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (server_after, agent_after) = (setup.server.rss(), setup.agent.rss());
        let per =
            |before: u64, after: u64| after.saturating_sub(before) as f64 / idle as f64 / 1024.0;
        let (s, g) = (
            per(server_before, server_after),
            per(agent_before, agent_after),
        );
        println_flush(&format!(
            "memory per idle stream over {idle} streams: server {s:.1} KiB, agent {g:.1} KiB [target <= 8 KiB] (resident: server {} -> {} MiB, agent {} -> {} MiB)",
            server_before >> 20,
            server_after >> 20,
            agent_before >> 20,
            agent_after >> 20
        ));
        drop(held);
        // The streams close (the server sees each CONNECT end, the agent each reset), and the
        // allocator's background threads give the freed pages back (jemalloc's decay takes
        // about 10 s); then what the server kept.
        let closing = Instant::now();
        let mut server_closed = setup.server.rss();
        while closing.elapsed() < SHRINK_WAIT && server_closed > 2 * server_before {
            tokio::time::sleep(Duration::from_millis(250)).await;
            server_closed = setup.server.rss();
        }
        println_flush(&format!(
            "  after the {idle} idle streams closed: server {} MiB after {:.1} s, started at {} MiB: {:.1}x [target <= 2x]; agent {} MiB ({} and {} files open)",
            server_closed >> 20,
            closing.elapsed().as_secs_f64(),
            server_before >> 20,
            server_closed as f64 / server_before as f64,
            setup.agent.rss() >> 20,
            setup.server.open_files(),
            setup.agent.open_files()
        ));
        setup.watch.print("the idle streams");

        // The same CONNECTs to an address no node has, which a fresh server dials itself: what
        // the client's TLS connection and the relay cost without a tunnel stream.
        let mut fresh = Daemon::spawn(&["server", &setup.dir.0.display().to_string()]);
        let fresh_addr = SocketAddr::from(([127, 0, 0, 1], ready_port(&mut fresh)));
        let before = fresh.rss();
        let mut held = Vec::with_capacity(idle);
        for _ in 0..idle {
            let tls = setup.client_tls.clone();
            held.push(connect_tunnel(fresh_addr, tls, outside).await);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        println_flush(&format!(
            "  of which the CONNECT's own TLS connection and relay (the same CONNECTs to a fresh server, which dials them itself): {:.1} KiB",
            per(before, fresh.rss())
        ));
        drop(held);
        drop(fresh);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // One stream.
    if wanted("one") {
        // Two plain relays in a row: the same three TCP hops, no TLS, no multiplexing.
        let mut second = Daemon::spawn(&["relay", &sink.to_string()]);
        let second_port = ready_port(&mut second);
        let mut first = Daemon::spawn(&["relay", &format!("127.0.0.1:{second_port}")]);
        let relayed = SocketAddr::from(([127, 0, 0, 1], ready_port(&mut first)));
        let mut relays = Vec::new();
        let mut tunnel = Vec::new();
        let mut direct = Vec::new();
        // The whole machine's busy CPU time during each path's runs: every process and the
        // kernel's share (loopback TCP, wakeups), which is what the paths compete for.
        let mut machine = [Duration::ZERO; 3];
        let (server_cpu, agent_cpu) = (setup.server.cpu(), setup.agent.cpu());
        for _ in 0..RUNS {
            let (took, busy) = busy_while(send_direct(sink, ONE_STREAM)).await;
            direct.push(rate(ONE_STREAM, took));
            machine[0] += busy;
            let (took, busy) = busy_while(send_direct(relayed, ONE_STREAM)).await;
            relays.push(rate(ONE_STREAM, took));
            machine[1] += busy;
            let (took, busy) = busy_while(send_tunnel(&setup, sink, ONE_STREAM)).await;
            tunnel.push(rate(ONE_STREAM, took));
            machine[2] += busy;
        }
        let gb = (RUNS * ONE_STREAM) as f64 / 1e9;
        let per_gb = |cpu: Duration| cpu.as_secs_f64() / gb;
        let (server_cpu, agent_cpu) = (
            per_gb(setup.server.cpu() - server_cpu),
            per_gb(setup.agent.cpu() - agent_cpu),
        );
        let [direct_cpu, relays_cpu, tunnel_cpu] = machine.map(per_gb);
        let (t, d) = (median(&mut tunnel), median(&mut direct));
        println_flush(&format!(
            "one stream, {} MiB: tunnel {:.0} MB/s, direct TCP {:.0} MB/s: {:.2}x direct [target >= 0.5x] (CPU per GB: server {server_cpu:.2} s, agent {agent_cpu:.2} s)",
            ONE_STREAM >> 20,
            t / 1e6,
            d / 1e6,
            t / d
        ));
        let r = median(&mut relays);
        println_flush(&format!(
            "  the same three TCP hops through two plain relays (no TLS, no tunnel): {:.0} MB/s, {:.2}x direct: what any path through two processes gets on this machine",
            r / 1e6,
            r / d
        ));
        // What any design pays here: the relays' three TCP hops, plus four AES-GCM passes
        // (the client seals, the server opens and seals again, the agent opens).
        let aes = aes_gcm_rate();
        let floor_cpu = relays_cpu + 4.0 / (aes / 1e9);
        let floor = (cores() as f64 / floor_cpu * 1e9).min(d);
        println_flush(&format!(
            "  whole-machine CPU per GB ({} cores): direct {direct_cpu:.2} s, relays {relays_cpu:.2} s ({:.1}x direct), tunnel {tunnel_cpu:.2} s ({:.1}x direct)",
            cores(),
            relays_cpu / direct_cpu,
            tunnel_cpu / direct_cpu
        ));
        println_flush(&format!(
            "  AES-128-GCM (ring, 16 KiB records) on one core: {:.1} GB/s, so four passes need {:.2} s per GB; with the relays' hops that is {floor_cpu:.2} s per GB, and with every core busy no design moves more than {:.0} MB/s = {:.2}x direct here",
            aes / 1e9,
            4.0 / (aes / 1e9),
            floor / 1e6,
            floor / d
        ));
        setup.watch.print("one stream");
        drop((first, second));
    }

    // 1,000 streams at once: every connection is opened first (its set-up timed apart), then
    // all of them send at once.
    if wanted("many") {
        let mut tunnel = Vec::new();
        let mut direct = Vec::new();
        let mut setups = Vec::new();
        let total = MANY_STREAMS * PER_STREAM;
        for _ in 0..RUNS.min(3) {
            let opened: Vec<TcpStream> = futures::future::join_all((0..MANY_STREAMS).map(|_| {
                tokio::spawn(async move {
                    let tcp = TcpStream::connect(sink).await.expect("connect");
                    let _ = tcp.set_nodelay(true);
                    tcp
                })
            }))
            .await
            .into_iter()
            .map(|conn| conn.expect("a direct connection"))
            .collect();
            direct.push(rate(total, send_all(opened).await));

            let start = Instant::now();
            let opened: Vec<_> = futures::future::join_all((0..MANY_STREAMS).map(|_| {
                let (server, tls) = (setup.server_addr, setup.client_tls.clone());
                tokio::spawn(connect_tunnel(server, tls, sink))
            }))
            .await
            .into_iter()
            .map(|conn| conn.expect("a CONNECT"))
            .collect();
            setups.push(start.elapsed().as_secs_f64());
            tunnel.push(rate(total, send_all(opened).await));
        }
        let (t, d) = (median(&mut tunnel), median(&mut direct));
        println_flush(&format!(
            "{MANY_STREAMS} concurrent streams x {} KiB: tunnel {:.0} MB/s aggregate, direct TCP {:.0} MB/s: {:.2}x direct [target >= 0.2x] (opening the {MANY_STREAMS} CONNECTs, TLS and dials included, took {:.2} s before)",
            PER_STREAM >> 10,
            t / 1e6,
            d / 1e6,
            t / d,
            median(&mut setups)
        ));
        setup.watch.print("1000 streams");
    }

    // 64-byte round trips.
    // 64-byte round trips, from a blocking thread with std sockets (and rustls over them for
    // the CONNECT), to the blocking echo.
    if wanted("rtt") {
        let (server, tls) = (setup.server_addr, setup.client_tls.clone());
        let measured = tokio::task::spawn_blocking(move || {
            let mut tunnel_rtt = Vec::new();
            let mut direct_rtt = Vec::new();
            for _ in 0..RUNS {
                let mut tcp = std::net::TcpStream::connect(round_trip_echo).expect("connect");
                let _ = tcp.set_nodelay(true);
                direct_rtt.extend(round_trips(&mut tcp, ROUND_TRIPS));
                let mut conn = blocking_connect(server, tls.clone(), round_trip_echo);
                tunnel_rtt.extend(round_trips(&mut conn, ROUND_TRIPS));
            }
            (tunnel_rtt, direct_rtt)
        });
        let (mut tunnel_rtt, mut direct_rtt) = measured.await.expect("the round trips");
        let (t50, t99) = percentiles(&mut tunnel_rtt);
        let (d50, d99) = percentiles(&mut direct_rtt);
        println_flush(&format!(
            "64-byte round trip: tunnel p50 {t50:.0} us, p99 {t99:.0} us; direct TCP p50 {d50:.0} us, p99 {d99:.0} us; p50 overhead {:.0} us [target <= 150 us]",
            t50 - d50
        ));
        setup.watch.print("round trips");
    }

    // A stalled stream beside busy ones.
    if wanted("stall") {
        let mut alone = Vec::new();
        let mut beside = Vec::new();
        for _ in 0..RUNS.min(3) {
            alone.push(neighbours(&setup, sink, None).await);
            let stalled = stall(&setup, echo).await;
            beside.push(neighbours(&setup, sink, Some(&stalled)).await);
            drop(stalled);
        }
        let (a, b) = (median(&mut alone), median(&mut beside));
        println_flush(&format!(
            "{NEIGHBOURS} streams beside one whose reader stopped: {:.0} MB/s, alone {:.0} MB/s: {:.0}% [target >= 90%]",
            b / 1e6,
            a / 1e6,
            100.0 * b / a
        ));
        setup.watch.print("the stalled stream");
    }
    drop(targets);
}

fn rate(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64()
}

/// How long `work` took, and how much CPU time the whole machine was busy meanwhile.
async fn busy_while(work: impl Future<Output = ()>) -> (Duration, Duration) {
    let before = machine_busy();
    let took = timed(work).await;
    (took, machine_busy().saturating_sub(before))
}

/// AES-128-GCM throughput on one core, bytes per second: sealing and opening 16 KiB records
/// (a TLS record's payload) with ring, which rustls uses here.
fn aes_gcm_rate() -> f64 {
    use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[7u8; 16]).expect("a key"));
    let mut record = vec![0x5au8; 16 * 1024];
    let passes = 16 * 1024;
    let start = Instant::now();
    for _ in 0..passes / 2 {
        let nonce = || Nonce::assume_unique_for_key([1u8; 12]);
        let tag = key
            .seal_in_place_separate_tag(nonce(), Aad::empty(), &mut record)
            .expect("seal");
        record.extend_from_slice(tag.as_ref());
        let opened = key
            .open_in_place(nonce(), Aad::empty(), &mut record)
            .expect("open")
            .len();
        record.truncate(opened);
    }
    (passes * record.len()) as f64 / start.elapsed().as_secs_f64()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

async fn timed(work: impl Future<Output = ()>) -> Duration {
    let start = Instant::now();
    work.await;
    start.elapsed()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// p50 and p99 in microseconds.
fn percentiles(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() as f64 * q) as usize).min(values.len() - 1)];
    (at(0.5), at(0.99))
}

/// A target that reads everything, then answers `done`, on every connection to `listener`.
async fn serve_sink(listener: TcpListener) {
    while let Ok((mut conn, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            while conn.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            let _ = conn.write_all(b"done").await;
        });
    }
}

/// A target that echoes every connection to `listener`.
async fn serve_echo(listener: TcpListener) {
    while let Ok((mut conn, _)) = listener.accept().await {
        let _ = conn.set_nodelay(true);
        tokio::spawn(async move {
            let (mut reader, mut writer) = conn.split();
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
        });
    }
}

/// An echo with a blocking thread per connection: answers as soon as the kernel hands it the
/// bytes, with no runtime in between.
fn blocking_echo(listener: std::net::TcpListener) {
    use std::io::Read;
    let _ = listener.set_nonblocking(false);
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else {
            continue;
        };
        std::thread::spawn(move || {
            let _ = conn.set_nonblocking(false);
            let _ = conn.set_nodelay(true);
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n @ 1..) = conn.read(&mut buf) {
                if conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
}

/// A CONNECT to `target` over TLS through `server` from blocking std sockets, as
/// [`weft_tunnel::testing::connect`] opens it: the connection past the `200`.
fn blocking_connect(
    server: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    target: SocketAddr,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use std::io::Read;
    let tcp = std::net::TcpStream::connect(server).expect("connect");
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a server name");
    let session = rustls::ClientConnection::new(tls, name).expect("a TLS session");
    let mut conn = rustls::StreamOwned::new(session, tcp);
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    conn.write_all(request.as_bytes()).expect("write");
    conn.flush().expect("flush");
    // Byte by byte, so nothing past the head is read.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if conn.read(&mut byte).expect("read") == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "CONNECT answered 200: {head}"
    );
    conn
}

/// A CONNECT to `target` through the tunnel, as `curl -p` opens it.
async fn open_tunnel(
    setup: &Setup,
    target: SocketAddr,
) -> impl AsyncRead + AsyncWrite + Unpin + use<> {
    connect_tunnel(setup.server_addr, setup.client_tls.clone(), target).await
}

async fn connect_tunnel(
    server: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    target: SocketAddr,
) -> impl AsyncRead + AsyncWrite + Unpin + use<> {
    let answer = weft_tunnel::testing::connect(server, "localhost", tls, &target.to_string()).await;
    assert_eq!(answer.status, 200, "CONNECT answered 200: {}", answer.body);
    answer.conn
}

async fn send_tunnel(setup: &Setup, sink: SocketAddr, total: usize) {
    let conn = open_tunnel(setup, sink).await;
    send_and_wait(conn, total).await;
}

async fn send_direct(sink: SocketAddr, total: usize) {
    let tcp = TcpStream::connect(sink).await.expect("connect");
    let _ = tcp.set_nodelay(true);
    send_and_wait(tcp, total).await;
}

/// Sends [`PER_STREAM`] bytes on every connection at once; how long until the last finished.
async fn send_all<C>(conns: Vec<C>) -> Duration
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let start = Instant::now();
    let sends = conns
        .into_iter()
        .map(|conn| tokio::spawn(send_and_wait(conn, PER_STREAM)));
    for sent in futures::future::join_all(sends).await {
        sent.expect("a stream");
    }
    start.elapsed()
}

/// Writes `total` bytes in 64 KiB writes, half-closes, and waits for the sink's `done`.
async fn send_and_wait(conn: impl AsyncRead + AsyncWrite + Unpin, total: usize) {
    let (mut reader, mut writer) = tokio::io::split(conn);
    let chunk = vec![0x5au8; 64 * 1024];
    let mut sent = 0;
    while sent < total {
        let len = chunk.len().min(total - sent);
        writer.write_all(&chunk[..len]).await.expect("write");
        sent += len;
    }
    writer.shutdown().await.expect("shutdown");
    let mut done = [0u8; 4];
    reader
        .read_exact(&mut done)
        .await
        .expect("the sink's answer");
}

/// `count` 64-byte request/response round trips on `conn`, in microseconds each.
fn round_trips(conn: &mut (impl std::io::Read + Write), count: usize) -> Vec<f64> {
    let request = [0x42u8; 64];
    let mut response = [0u8; 64];
    // Warm up.
    for _ in 0..100 {
        conn.write_all(&request).expect("write");
        conn.read_exact(&mut response).expect("read");
    }
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        conn.write_all(&request).expect("write");
        conn.read_exact(&mut response).expect("read");
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    times
}

/// A stream to the echo target whose client writes until it blocks and never reads.
async fn stall(setup: &Setup, echo: SocketAddr) -> tokio::task::JoinHandle<()> {
    let conn = open_tunnel(setup, echo).await;
    let task = tokio::spawn(async move {
        let (_reader, mut writer) = tokio::io::split(conn);
        let chunk = vec![7u8; 64 * 1024];
        loop {
            if writer.write_all(&chunk).await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await;
    });
    // Let it fill every buffer and window on its way.
    tokio::time::sleep(Duration::from_millis(500)).await;
    task
}

/// The aggregate throughput of [`NEIGHBOURS`] streams to the sink through the tunnel over
/// [`STALL_RUN`], while `stalled` (if any) sits on the same tunnel.
async fn neighbours(
    setup: &Setup,
    sink: SocketAddr,
    stalled: Option<&tokio::task::JoinHandle<()>>,
) -> f64 {
    if let Some(stalled) = stalled {
        assert!(!stalled.is_finished(), "the stalled stream is still open");
    }
    let deadline = Instant::now() + STALL_RUN;
    let runs = (0..NEIGHBOURS).map(|_| async move {
        let conn = open_tunnel(setup, sink).await;
        let (mut reader, mut writer) = tokio::io::split(conn);
        let chunk = vec![0x5au8; 64 * 1024];
        let mut sent = 0usize;
        while Instant::now() < deadline {
            writer.write_all(&chunk).await.expect("write");
            sent += chunk.len();
        }
        writer.shutdown().await.expect("shutdown");
        let mut done = [0u8; 4];
        reader
            .read_exact(&mut done)
            .await
            .expect("the sink's answer");
        sent
    });
    let start = Instant::now();
    let sent: usize = futures::future::join_all(runs).await.into_iter().sum();
    rate(sent, start.elapsed())
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("weft-tunnel-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
