//! Runs the built `weft-server --disable-agent` on a real etcd reached through a proxy that
//! can freeze: once the store stops answering, SIGTERM still ends the server within 5 s, under
//! load (connections held mid-handshake, registrations waiting on the frozen store).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use weft_api::JoinToken;
use weft_api::protocol::RegisterRequest;
use weft_store::testing::{EtcdServer, free_ports};

/// How long the server may take to start serving.
const STARTUP: Duration = Duration::from_secs(30);

/// A TCP proxy to `target` that forwards until frozen, then holds every connection silent.
fn freezing_proxy(target: String) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    let port = listener.local_addr().expect("an address").port();
    let frozen = Arc::new(AtomicBool::new(false));
    let frozen_flag = frozen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let Ok(upstream) = TcpStream::connect(&target) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone(), upstream.try_clone()),
                (upstream.try_clone(), client.try_clone()),
            ]
            .into_iter()
            .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
            {
                let frozen = frozen_flag.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        while frozen.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Write);
                });
            }
        }
    });
    (port, frozen)
}

/// `weft-server --disable-agent` on loopback ports with its state in `data_dir`, on the etcd
/// at `endpoint`.
#[allow(
    clippy::disallowed_methods,
    reason = "the test runs the binary under test; there is no wrapper to go through"
)]
fn spawn_server(data_dir: &Path, endpoint: &str, metrics: u16, supervisor: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_weft-server"))
        .args([
            "--disable-agent".to_owned(),
            format!("--data-dir={}", data_dir.display()),
            "--node-name=s1".to_owned(),
            "--node-ip=127.0.0.1".to_owned(),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--supervisor-port={supervisor}"),
            format!("--metrics-address=127.0.0.1:{metrics}"),
            format!("--datastore-endpoint={endpoint}"),
        ])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weft-server starts")
}

/// Registrations in flight while the server stops.
const REGISTRATIONS: usize = 20;
/// Connections held in their TLS handshake while the server stops.
const HELD: usize = 200;

/// Registers [`REGISTRATIONS`] nodes at `url` on a thread and runtime of their own, once `go`
/// says the store is frozen; `ready` is told when the CA is fetched. Returns how many were
/// answered (any answer) so far.
fn register_when_frozen(
    url: String,
    token: JoinToken,
    ready: mpsc::Sender<()>,
    go: mpsc::Receiver<()>,
) -> Arc<std::sync::atomic::AtomicUsize> {
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = answered.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let ca = weft_api::client::fetch_ca(&url, &token)
                .await
                .expect("the CA");
            let _ = ready.send(());
            if go.recv().is_err() {
                return;
            }
            let mut registering = tokio::task::JoinSet::new();
            for i in 0..REGISTRATIONS {
                let (url, token, ca, counted) =
                    (url.clone(), token.clone(), ca.clone(), counted.clone());
                let last = u8::try_from(i + 1).expect("a small index");
                registering.spawn(async move {
                    let request = RegisterRequest {
                        node_name: format!("loaded-{i}"),
                        node_ips: vec![std::net::IpAddr::from([100, 64, 0, last])],
                        external_ips: Vec::new(),
                        backend: Default::default(),
                    };
                    let password = format!("password-{i}");
                    let _ =
                        weft_api::client::register(&url, &ca, &token, &password, &request).await;
                    counted.fetch_add(1, Ordering::SeqCst);
                });
            }
            registering.join_all().await;
        });
    });
    answered
}

#[tokio::test]
async fn sigterm_ends_the_server_within_5_s_under_load_though_the_store_is_frozen() {
    let etcd = EtcdServer::start().await;
    let target = etcd
        .client_url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let (port, frozen) = freezing_proxy(target);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let [metrics, supervisor] = free_ports();
    let mut server = spawn_server(
        dir.path(),
        &format!("http://127.0.0.1:{port}"),
        metrics,
        supervisor,
    );
    let stderr = server.stderr.take().expect("stderr is piped");
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(STARTUP) {
        let serving = line.contains("serving");
        seen.push(line);
        if serving {
            break;
        }
    }
    assert!(
        seen.last().is_some_and(|l| l.contains("serving")),
        "the server did not start serving:\n{}",
        seen.join("\n")
    );

    // `/metrics` answers once the server is up and about to wait for the signal (a signal
    // before that would kill it the default way).
    let up = Instant::now();
    while TcpStream::connect(("127.0.0.1", metrics)).is_err() {
        assert!(up.elapsed() < STARTUP, "/metrics never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));

    // Load: connections that never finish their handshake, and registrations stuck on the
    // store the server writes them to.
    let held: Vec<TcpStream> = (0..HELD)
        .map(|_| TcpStream::connect(("127.0.0.1", supervisor)).expect("connect"))
        .collect();
    let token = std::fs::read_to_string(dir.path().join("server").join("token"))
        .expect("the server's token");
    let token = JoinToken::parse(token.trim()).expect("a join token");
    let (ready, fetched) = mpsc::channel();
    let (go, frozen_now) = mpsc::channel();
    let answered = register_when_frozen(
        format!("https://127.0.0.1:{supervisor}"),
        token,
        ready,
        frozen_now,
    );
    fetched
        .recv_timeout(STARTUP)
        .expect("the registering clients fetched the CA");
    frozen.store(true, Ordering::SeqCst);
    go.send(()).expect("the registering thread waits");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        answered.load(Ordering::SeqCst),
        0,
        "a registration was answered although the store is frozen"
    );

    let pid = Pid::from_raw(i32::try_from(server.id()).expect("a pid"));
    kill(pid, Signal::SIGTERM).expect("SIGTERM the server");
    let signalled = Instant::now();
    let exited = loop {
        if let Some(status) = server.try_wait().expect("the server's status") {
            break Some(status);
        }
        if signalled.elapsed() > Duration::from_secs(5) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if exited.is_none() {
        let _ = server.kill();
        let _ = server.wait();
    }
    frozen.store(false, Ordering::SeqCst);
    let Some(status) = exited else {
        panic!("weft-server was still running 5 s after SIGTERM");
    };
    assert_eq!(status.code(), Some(0), "weft-server stopped by itself");
    drop(held);
}
