//! The control-plane scale bench: a swarm of simulated agents ([`weft_benches::control_plane`])
//! against one `weft-server --disable-agent` process on the embedded store.
//!
//! `cargo xtask bench control-plane` builds the release `weft-server` and runs this as
//! `control_plane [AGENTS [ROUNDS]]` (default 5,000 agents, 5 lease changes). Before the swarm
//! starts, 1,000 slow clients ([`SlowClients`]) connect from the same address and hold half a
//! request each, connecting again whenever the server's header deadline closes them, so the
//! server carries them the whole time. It prints the time to register every agent, the
//! propagation of each lease change to every watcher (p50, p99, max), the server's resident set
//! with the slow clients still connected (`VmRSS`) and its peak RSS (`VmHWM` of
//! `/proc/<pid>/status`), each beside its target, and exits 1 when a target is missed.
//! `--slow-clients COUNT` changes the 1,000 slow clients (0: none); `--server-bin PATH` picks
//! another server binary (default: `weft-server` beside this example's directory, as cargo
//! lays them out).
//!
//! It raises its own `RLIMIT_NOFILE` soft limit to the hard limit, since every agent holds a
//! TLS connection; the server raises its own at start.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a bench prints its report

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::time::{Duration, Instant};

use weft_api::JoinToken;
use weft_benches::control_plane::{Report, SlowClients, Swarm};

/// All agents registered within this.
const TARGET_REGISTERED: Duration = Duration::from_secs(10);
/// A lease change reaches 99% of the watchers within this.
const TARGET_P99: Duration = Duration::from_millis(500);
/// The server's peak resident memory.
const TARGET_RSS_MIB: f64 = 150.0;
/// Slow clients connected beside the swarm, unless `--slow-clients` says otherwise.
const SLOW_CLIENTS: usize = 1_000;

struct Args {
    agents: usize,
    rounds: usize,
    slow_clients: usize,
    server_bin: PathBuf,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("control_plane: {e}");
            eprintln!(
                "usage: control_plane [AGENTS [ROUNDS]] [--slow-clients COUNT] [--server-bin PATH]"
            );
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("control_plane: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> Result<Args, String> {
    let mut numbers = Vec::new();
    let mut server_bin = None;
    let mut slow_clients = SLOW_CLIENTS;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--slow-clients" {
            let count = args.next().ok_or("--slow-clients needs a count")?;
            slow_clients = count
                .parse()
                .map_err(|_| format!("--slow-clients: `{count}` is not a number"))?;
        } else if arg == "--server-bin" {
            server_bin = Some(PathBuf::from(
                args.next().ok_or("--server-bin needs a path")?,
            ));
        } else {
            numbers.push(
                arg.parse::<usize>()
                    .map_err(|_| format!("`{arg}` is not a number"))?,
            );
        }
    }
    let server_bin = match server_bin {
        Some(path) => path,
        // target/release/examples/control_plane → target/release/weft-server
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .parent()
            .and_then(Path::parent)
            .ok_or("can't find the target directory")?
            .join("weft-server"),
    };
    Ok(Args {
        agents: numbers.first().copied().unwrap_or(5_000).max(1),
        rounds: numbers.get(1).copied().unwrap_or(5).max(1),
        slow_clients,
        server_bin,
    })
}

fn run(args: &Args) -> Result<bool, String> {
    let limit = raise_nofile_limit();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = free_port()?;
    let mut server = Server::spawn(&args.server_bin, dir.path(), port)?;
    println!(
        "control-plane bench: {} agents, {} lease changes, server {} (pid {}), RLIMIT_NOFILE {limit}",
        args.agents,
        args.rounds,
        args.server_bin.display(),
        server.child.id()
    );
    let token = server.wait_ready(dir.path(), port)?;
    let swarm = Swarm {
        server: format!("https://127.0.0.1:{port}"),
        token,
        agents: args.agents,
        rounds: args.rounds,
        concurrency: 256,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let measured = runtime.block_on(async {
        let ca = weft_api::client::fetch_ca(&swarm.server, &swarm.token).await?;
        let address = std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let slow = SlowClients::start(address, &ca.ca_pem, args.slow_clients)?;
        slow.all_held().await?;
        let report = swarm.run().await?;
        let rss = server.rss_mib("VmRSS");
        Ok::<_, weft_benches::control_plane::SwarmError>((report, slow.held(), slow.closed(), rss))
    });
    let peak = server.rss_mib("VmHWM");
    drop(server);
    let (report, held, closed, rss) = measured.map_err(|e| {
        let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        format!("{e}\nthe server's last log lines:\n{}", tail.join("\n"))
    })?;
    let slow = Slow {
        held,
        closed,
        rss_mib: rss?,
    };
    Ok(print_report(&report, args.slow_clients, &slow, peak?))
}

/// The slow clients as the swarm ended.
struct Slow {
    /// How many held a connection.
    held: usize,
    /// How many connections the server had closed at the header deadline.
    closed: usize,
    /// The server's resident set then, in MiB.
    rss_mib: f64,
}

/// Prints the figures beside the targets; returns whether every target was met.
fn print_report(report: &Report, slow_clients: usize, slow: &Slow, peak_mib: f64) -> bool {
    let mut met = true;
    let mut line = |what: String, ok: bool| {
        met &= ok;
        println!("  {what:<64} {}", if ok { "ok" } else { "MISSED" });
    };
    line(
        format!(
            "registered {} agents in {:.2} s (target {} s)",
            report.agents,
            report.registered.as_secs_f64(),
            TARGET_REGISTERED.as_secs()
        ),
        report.registered <= TARGET_REGISTERED,
    );
    println!(
        "  opened {} lease watches in {:.2} s",
        report.agents,
        report.watching.as_secs_f64()
    );
    let mut all = Vec::new();
    for (i, round) in report.rounds.iter().enumerate() {
        println!(
            "  change {}: request {:.1} ms, to every watcher p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            i + 1,
            ms(round.request),
            ms(round.percentile(50.0)),
            ms(round.percentile(99.0)),
            ms(round.percentile(100.0)),
        );
        all.extend(round.latencies.iter().copied());
    }
    all.sort();
    let overall = weft_benches::control_plane::Round {
        request: Duration::ZERO,
        latencies: all,
    };
    line(
        format!(
            "propagation over every change: p50 {:.1} ms, p99 {:.1} ms (target {} ms)",
            ms(overall.percentile(50.0)),
            ms(overall.percentile(99.0)),
            TARGET_P99.as_millis()
        ),
        overall.percentile(99.0) <= TARGET_P99,
    );
    println!(
        "  {slow_clients} slow clients held half requests throughout ({} closed at the header \
         deadline and connected again)",
        slow.closed
    );
    line(
        format!(
            "server RSS with {} slow clients connected {:.1} MiB (target {TARGET_RSS_MIB} MiB)",
            slow.held, slow.rss_mib
        ),
        slow.rss_mib <= TARGET_RSS_MIB,
    );
    line(
        format!("server peak RSS {peak_mib:.1} MiB (target {TARGET_RSS_MIB} MiB)"),
        peak_mib <= TARGET_RSS_MIB,
    );
    met
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit in effect.
fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// The server process, killed on drop.
struct Server {
    child: Child,
}

impl Server {
    /// Starts `weft-server --disable-agent` with its state in `dir`, serving on `port`.
    #[allow(clippy::disallowed_methods)] // the server under test is this bench's one command
    fn spawn(bin: &Path, dir: &Path, port: u16) -> Result<Server, String> {
        let log = File::create(dir.join("server.log")).map_err(|e| e.to_string())?;
        let metrics = format!("127.0.0.1:{}", free_port()?);
        let child = std::process::Command::new(bin)
            .arg("--disable-agent")
            .arg("--data-dir")
            .arg(dir)
            .args(["--bind-address", "127.0.0.1"])
            .args(["--advertise-address", "127.0.0.1"])
            .args(["--node-ip", "127.0.0.1"])
            .args(["--supervisor-port", &port.to_string()])
            .args(["--metrics-address", &metrics])
            // 32,768 node CIDRs, room for the swarm.
            .args(["--cluster-cidr", "10.128.0.0/9"])
            .args(["--service-cidr", "10.43.0.0/16"])
            // Every simulated agent connects from 127.0.0.1: lift the per-address cap (a
            // cluster's agents come from an address each).
            .args(["--max-connections-per-address", "20000"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("can't start {}: {e}", bin.display()))?;
        Ok(Server { child })
    }

    /// Waits until the server serves and has written its token, and returns the token.
    fn wait_ready(&mut self, dir: &Path, port: u16) -> Result<JoinToken, String> {
        let token_file = dir.join("server").join("token");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                return Err(format!("the server exited with {status}:\n{log}"));
            }
            if let Ok(text) = std::fs::read_to_string(&token_file)
                && TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
            {
                return JoinToken::parse(&text).map_err(|e| e.to_string());
            }
            if Instant::now() > deadline {
                return Err("the server did not serve within 30 s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's resident memory, in MiB: `VmRSS` now, `VmHWM` its peak so far.
    fn rss_mib(&self, field: &str) -> Result<f64, String> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .ok_or_else(|| format!("{path} has no {field} line"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
