//! [`EtcdServer`]: a real single-member etcd on loopback for tests (this crate's suite and the
//! control plane's HA tests), with the `test-util` feature.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::EtcdStore;

/// How long etcd may take to answer after it was started.
const STARTUP: Duration = Duration::from_secs(20);

/// A single-member etcd on free loopback ports with its data in a temporary directory, killed
/// when dropped (also when the test fails).
pub struct EtcdServer {
    child: Option<Child>,
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    /// `http://127.0.0.1:<client port>`.
    pub client_url: String,
}

impl EtcdServer {
    /// Starts etcd on free ports and waits until it answers.
    ///
    /// Panics (failing the test, never skipping it) when the `etcd` binary is missing or etcd
    /// does not start in three attempts (a port taken meanwhile is tried again with others).
    pub async fn start() -> EtcdServer {
        let mut last_log = String::new();
        for _ in 0..3 {
            let [client_port, peer_port] = free_ports();
            let mut server = EtcdServer {
                child: None,
                dir: tempfile::tempdir().expect("create a temporary directory"),
                client_port,
                peer_port,
                client_url: format!("http://127.0.0.1:{client_port}"),
            };
            match server.spawn_and_wait().await {
                Ok(()) => return server,
                // Dropping `server` kills etcd; try other ports.
                Err(log) => last_log = log,
            }
        }
        panic!("etcd did not start in 3 attempts; its last log:\n{last_log}")
    }

    /// Kills etcd and starts it again on the same data dir and ports.
    pub async fn restart(&mut self) {
        self.kill();
        if let Err(log) = self.spawn_and_wait().await {
            panic!("etcd did not restart:\n{log}");
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd and waits until a client gets an answer; on failure, returns its log.
    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log_path = self.dir.path().join("etcd.log");
        self.child = Some(spawn_etcd(
            &self.dir.path().join("data"),
            self.client_port,
            self.peer_port,
            &log_path,
        ));
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("etcd exited with {status}\n{}", log()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd did not answer within {} s\n{}",
                    STARTUP.as_secs(),
                    log()
                ));
            }
            let listening = TcpStream::connect((Ipv4Addr::LOCALHOST, self.client_port)).is_ok();
            if listening
                && EtcdStore::connect(std::slice::from_ref(&self.client_url))
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::fmt::Debug for EtcdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdServer")
            .field("client_url", &self.client_url)
            .finish()
    }
}

/// The one external command of weft's tests of etcd.
#[allow(clippy::disallowed_methods)] // the test etcd is the only command these tests run
fn spawn_etcd(data_dir: &Path, client_port: u16, peer_port: u16, log: &Path) -> Child {
    let Some(etcd) = find_in_path("etcd") else {
        panic!(
            "the etcd tests need the `etcd` binary, which is not on PATH: install Debian's etcd-server (apt-get install etcd-server)"
        );
    };
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let log = File::create(log).expect("create the etcd log file");
    std::process::Command::new(etcd)
        .args(["--name", "t", "--data-dir"])
        .arg(data_dir)
        .args(["--listen-client-urls", &client])
        .args(["--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("t={peer}")])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the etcd log file"))
        .stderr(log)
        .spawn()
        .expect("start etcd")
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Two distinct loopback ports that were free a moment ago.
pub fn free_ports() -> [u16; 2] {
    let bind = || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port");
    let (a, b) = (bind(), bind());
    let port = |l: &TcpListener| l.local_addr().expect("a bound address").port();
    [port(&a), port(&b)]
}
