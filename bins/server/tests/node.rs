//! Runs the built `weft-server` (`--disable-agent`, the embedded store, loopback ports) and
//! manages its nodes the way an operator on the host does: `node list` with nothing but
//! `--data-dir`, in an environment where node-IP detection fails, finds the server through the
//! address it recorded in the data dir and says which server it asked. The server answers
//! `/healthz` and `/readyz` on its metrics address.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// An interface no host has: node-IP detection from it fails.
const NO_SUCH_IFACE: (&str, &str) = ("WEFT_FLANNEL_IFACE", "weft-nosuch0");

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The server, killed and reaped when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "the test runs the binary under test; there is no wrapper to go through"
)]
fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weft-server"));
    command.env_clear();
    command
}

fn spawn_server(data_dir: &Path, supervisor: u16, metrics: u16) -> Server {
    let child = command()
        .args([
            "--disable-agent",
            &format!("--data-dir={}", data_dir.display()),
            "--node-name=s1",
            "--node-ip=127.0.0.1",
            "--bind-address=127.0.0.1",
            &format!("--supervisor-port={supervisor}"),
            &format!("--metrics-address=127.0.0.1:{metrics}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("weft-server starts");
    Server(child)
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    command()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("weft-server runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

/// `GET path` on `addr` over plain HTTP/1.1: the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).expect("connected");
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("sent");
    let mut response = String::new();
    tcp.read_to_string(&mut response).expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn node_list_needs_only_the_data_dir_and_says_which_server_it_asked() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let data_dir = dir.path().join("data");
    let data_flag = format!("--data-dir={}", data_dir.display());

    // Before any server ran there is nothing to ask, and the error says what to do.
    let out = run(&["node", "list", &data_flag], &[NO_SUCH_IFACE]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("api-address does not exist: start weft-server with this data dir first"),
        "{}",
        text(&out.stderr)
    );

    let (supervisor, metrics) = (free_port(), free_port());
    let _server = spawn_server(&data_dir, supervisor, metrics);
    let recorded = data_dir.join("server/api-address");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !recorded.exists() {
        assert!(
            Instant::now() < deadline,
            "the server never recorded its address"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("https://127.0.0.1:{supervisor}");
    assert_eq!(
        std::fs::read_to_string(&recorded).expect("read"),
        format!("{url}\n")
    );

    // Here, the server's full configuration does not resolve: node-IP detection fails.
    let validate = run(&["validate", &data_flag], &[NO_SUCH_IFACE]);
    assert_eq!(
        validate.status.code(),
        Some(1),
        "{}",
        text(&validate.stderr)
    );

    let out = run(&["node", "list", &data_flag], &[NO_SUCH_IFACE]);
    assert_eq!(
        (out.status.code(), text(&out.stderr)),
        (Some(0), format!("node list: asked {url}\n"))
    );
    assert!(
        text(&out.stdout).starts_with("NAME "),
        "{}",
        text(&out.stdout)
    );

    // The data dir from the environment, as K3s reads it, works the same.
    let data_env = data_dir.display().to_string();
    let out = run(
        &["node", "delete", "no-such-node"],
        &[NO_SUCH_IFACE, ("K3S_DATA_DIR", &data_env)],
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("node delete: asked {url}\n")),
        "{stderr}"
    );
    assert!(stderr.contains("no node named no-such-node"), "{stderr}");

    // The server is healthy and, without an agent, ready once it serves.
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, metrics));
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(metrics).is_err() {
        assert!(
            Instant::now() < deadline,
            "the metrics endpoint never came up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(metrics, "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(get(metrics, "/readyz"), (200, "ok\n".to_owned()));
}
