//! [`EtcdServer`]: a real single-member etcd on loopback for tests (this crate's suite and the
//! control plane's HA tests), with the `test-util` feature: plain `http://`, or `https://` with
//! `--client-cert-auth` and certificates made by [`TestCa`].

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use tempfile::TempDir;

use crate::{ClientCertFiles, EtcdStore, EtcdTlsFiles};

/// How long etcd may take to answer after it was started.
const STARTUP: Duration = Duration::from_secs(20);

/// A single-member etcd on free loopback ports with its data in a temporary directory, killed
/// when dropped (also when the test fails).
pub struct EtcdServer {
    child: Option<Child>,
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    /// The TLS etcd serves with, when it does.
    tls: Option<ServerTls>,
    /// `http://127.0.0.1:<client port>`, or `https://` when etcd serves TLS.
    pub client_url: String,
}

/// A CA made with rcgen for a test, which writes what it signs as PEM files into a directory.
pub struct TestCa {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate, PEM.
    pub ca_file: PathBuf,
}

/// The files etcd serves TLS with and checks clients against.
struct ServerTls {
    /// The CA of etcd's certificate and of the clients it accepts (`--trusted-ca-file`).
    ca_file: PathBuf,
    /// etcd's serving certificate (`--cert-file`), for 127.0.0.1.
    cert_file: PathBuf,
    /// Its key (`--key-file`).
    key_file: PathBuf,
    /// A client certificate the CA signed, for [`EtcdServer::client_tls`].
    client: ClientCertFiles,
}

impl EtcdServer {
    /// Starts etcd on free ports, plain `http://`, and waits until it answers.
    ///
    /// Panics (failing the test, never skipping it) when the `etcd` binary is missing or etcd
    /// does not start in three attempts (a port taken meanwhile is tried again with others).
    pub async fn start() -> EtcdServer {
        EtcdServer::start_with(false).await
    }

    /// Starts etcd on `https://` with `--client-cert-auth`: it serves a certificate for
    /// 127.0.0.1 and accepts only clients with a certificate, both signed by a CA made for it
    /// (in its directory). [`EtcdServer::client_tls`] gives a client's files.
    pub async fn start_tls() -> EtcdServer {
        EtcdServer::start_with(true).await
    }

    /// The TLS files of a client etcd accepts: its CA and a client certificate; empty for a
    /// plain etcd.
    pub fn client_tls(&self) -> EtcdTlsFiles {
        match &self.tls {
            None => EtcdTlsFiles::default(),
            Some(tls) => EtcdTlsFiles {
                ca_file: Some(tls.ca_file.clone()),
                client: Some(tls.client.clone()),
            },
        }
    }

    async fn start_with(tls: bool) -> EtcdServer {
        let mut last_log = String::new();
        for _ in 0..3 {
            let [client_port, peer_port] = free_ports();
            let dir = tempfile::tempdir().expect("create a temporary directory");
            let tls = tls.then(|| {
                let ca = TestCa::new(&dir.path().join("pki"), "etcd-ca");
                let (cert_file, key_file) = ca.issue("etcd-server", Usage::Server);
                ServerTls {
                    ca_file: ca.ca_file.clone(),
                    cert_file,
                    key_file,
                    client: ca.issue_client("weft-client"),
                }
            });
            let scheme = if tls.is_some() { "https" } else { "http" };
            let mut server = EtcdServer {
                child: None,
                dir,
                client_port,
                peer_port,
                tls,
                client_url: format!("{scheme}://127.0.0.1:{client_port}"),
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
            &self.client_url,
            self.peer_port,
            self.tls.as_ref(),
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
                && EtcdStore::connect_tls(
                    std::slice::from_ref(&self.client_url),
                    &self.client_tls(),
                )
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

// === impl TestCa ===

/// What a certificate [`TestCa`] signs is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Usage {
    /// A serving certificate for 127.0.0.1 and `localhost`.
    Server,
    /// A client certificate.
    Client,
}

impl TestCa {
    /// A new CA named `name`, its certificate written to `<dir>/<name>.crt`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        std::fs::create_dir_all(dir).expect("create the certificate directory");
        let key = KeyPair::generate().expect("generate a CA key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-sign the CA");
        let ca_file = dir.join(format!("{name}.crt"));
        std::fs::write(&ca_file, cert.pem()).expect("write the CA certificate");
        TestCa {
            dir: dir.to_owned(),
            issuer: Issuer::new(params, key),
            ca_file,
        }
    }

    /// Signs a client certificate named `name`, written to `<dir>/<name>.crt` and its key to
    /// `<dir>/<name>.key`.
    pub fn issue_client(&self, name: &str) -> ClientCertFiles {
        let (cert_file, key_file) = self.issue(name, Usage::Client);
        ClientCertFiles {
            cert_file,
            key_file,
        }
    }

    /// Signs a certificate named `name` for `usage`; returns the certificate and key files.
    fn issue(&self, name: &str, usage: Usage) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("generate a key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        match usage {
            Usage::Server => {
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                params.subject_alt_names = vec![
                    SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    SanType::DnsName("localhost".try_into().expect("a DNS name")),
                ];
            }
            Usage::Client => {
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign a certificate");
        let (cert_file, key_file) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_file, cert.pem()).expect("write a certificate");
        std::fs::write(&key_file, key.serialize_pem()).expect("write a key");
        (cert_file, key_file)
    }
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// The one external command of weft's tests of etcd.
#[allow(clippy::disallowed_methods)] // the test etcd is the only command these tests run
fn spawn_etcd(
    data_dir: &Path,
    client: &str,
    peer_port: u16,
    tls: Option<&ServerTls>,
    log: &Path,
) -> Child {
    let Some(etcd) = find_in_path("etcd") else {
        panic!(
            "the etcd tests need the `etcd` binary, which is not on PATH: install Debian's etcd-server (apt-get install etcd-server)"
        );
    };
    let peer = format!("http://127.0.0.1:{peer_port}");
    let log = File::create(log).expect("create the etcd log file");
    let mut command = std::process::Command::new(etcd);
    command
        .args(["--name", "t", "--data-dir"])
        .arg(data_dir)
        .args(["--listen-client-urls", client])
        .args(["--advertise-client-urls", client])
        .args(["--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("t={peer}")]);
    if let Some(tls) = tls {
        command
            .arg("--client-cert-auth")
            .arg("--trusted-ca-file")
            .arg(&tls.ca_file)
            .arg("--cert-file")
            .arg(&tls.cert_file)
            .arg("--key-file")
            .arg(&tls.key_file);
    }
    command
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
