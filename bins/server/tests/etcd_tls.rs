//! Runs the built `weft-server --disable-agent` against a real etcd on loopback: over `https://`
//! with `--client-cert-auth`, the `--datastore-cafile`, `--datastore-certfile` and
//! `--datastore-keyfile` flags reach the store, a server without a client certificate is
//! refused with a line that says what to set, and a plain `http://` etcd still works, with a
//! warning.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use weft_store::EtcdTlsFiles;
use weft_store::testing::{EtcdServer, free_ports};

/// How long the server may take to start serving.
const STARTUP: Duration = Duration::from_secs(30);

/// `weft-server --disable-agent` on loopback ports with its state in `data_dir`, on `etcd`
/// with the TLS files of `tls`.
#[allow(
    clippy::disallowed_methods,
    reason = "the test runs the binary under test; there is no wrapper to go through"
)]
fn spawn_server(data_dir: &Path, etcd: &EtcdServer, tls: &EtcdTlsFiles) -> Child {
    let [supervisor, metrics] = free_ports();
    let mut args = vec![
        "--disable-agent".to_owned(),
        "--egress-selector-mode=cluster".to_owned(),
        format!("--data-dir={}", data_dir.display()),
        "--node-name=s1".to_owned(),
        "--node-ip=127.0.0.1".to_owned(),
        "--bind-address=127.0.0.1".to_owned(),
        format!("--supervisor-port={supervisor}"),
        format!("--metrics-address=127.0.0.1:{metrics}"),
        format!("--datastore-endpoint={}", etcd.client_url),
    ];
    if let Some(ca_file) = &tls.ca_file {
        args.push(format!("--datastore-cafile={}", ca_file.display()));
    }
    if let Some(client) = &tls.client {
        args.push(format!(
            "--datastore-certfile={}",
            client.cert_file.display()
        ));
        args.push(format!("--datastore-keyfile={}", client.key_file.display()));
    }
    Command::new(env!("CARGO_BIN_EXE_weft-server"))
        .args(&args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weft-server starts")
}

/// Reads the server's stderr until a line contains `until` or the server exits; returns every
/// line read. Kills the server when it is still running.
fn stderr_until(mut server: Child, until: &str) -> Vec<String> {
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
        let done = line.contains(until);
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    seen
}

#[tokio::test]
async fn server_starts_on_etcd_with_client_certificates() {
    let etcd = EtcdServer::start_tls().await;
    let dir = tempfile::tempdir().unwrap();
    let lines = stderr_until(
        spawn_server(dir.path(), &etcd, &etcd.client_tls()),
        "serving",
    );
    assert!(
        lines.last().is_some_and(|l| l.contains("serving")),
        "the server did not start serving:\n{}",
        lines.join("\n")
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("warning: datastore-endpoint")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn server_without_a_client_certificate_is_refused() {
    let etcd = EtcdServer::start_tls().await;
    let dir = tempfile::tempdir().unwrap();
    let tls = EtcdTlsFiles {
        client: None,
        ..etcd.client_tls()
    };
    let mut server = spawn_server(dir.path(), &etcd, &tls);
    let status = server.wait().expect("the server exits");
    let lines = stderr_until(server, "never printed");
    assert_eq!(status.code(), Some(1), "{lines:?}");
    let want = format!(
        "error: TLS to etcd at {} failed: received fatal alert: BadCertificate; etcd requires a client certificate (it runs with --client-cert-auth): set --datastore-certfile and --datastore-keyfile to a certificate signed by etcd's --trusted-ca-file and its key",
        etcd.client_url
    );
    assert!(lines.contains(&want), "{want:?} missing from {lines:#?}");
}

#[tokio::test]
async fn server_on_plain_http_etcd_starts_with_a_warning() {
    let etcd = EtcdServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let lines = stderr_until(
        spawn_server(dir.path(), &etcd, &EtcdTlsFiles::default()),
        "serving",
    );
    assert!(
        lines.last().is_some_and(|l| l.contains("serving")),
        "the server did not start serving:\n{}",
        lines.join("\n")
    );
    let warning = format!(
        "warning: datastore-endpoint {} is plain http://: whoever reaches etcd can read and change the whole cluster",
        etcd.client_url
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&warning)),
        "{warning:?} missing from {lines:#?}"
    );
}
