//! Runs the built `weft-server certificate check` with a clean environment on data dirs made
//! here: one line per certificate on stdout in K3s's words, exit 0 while every certificate is
//! valid (expiring ones too) and 1 once one has expired or none is found. The data dir comes
//! from the flag, the config file or the environment; nothing else is resolved, and no server
//! runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use weft_api::pki::{ClusterCa, rfc3339};
use weft_node::identity::Credentials;

const DAY: Duration = Duration::from_secs(86_400);

/// Runs `weft-server <args>` with only `env` in its environment.
#[allow(
    clippy::disallowed_methods,
    reason = "the test runs the binary under test; there is no wrapper to go through"
)]
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft-server"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("weft-server runs")
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8(bytes.to_vec())
        .expect("UTF-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// When each certificate of a data dir ends (a fresh one's when `None`).
#[derive(Default, Clone, Copy)]
struct Ends {
    serving: Option<SystemTime>,
    node: Option<SystemTime>,
}

/// A server's data dir as a server and its embedded agent leave it: the CA, the serving, admin
/// and kube-apiserver certificates, and the agent's credentials.
fn data_dir(dir: &Path, ends: Ends) {
    let ca = ClusterCa::generate().expect("a CA");
    let ending = |end: Option<SystemTime>| {
        let ca = ClusterCa::from_pem(ca.cert_pem(), &ca.key_pem()).expect("the CA");
        match end {
            Some(end) => ca.with_leaf_expiry(end),
            None => ca,
        }
    };
    let tls = dir.join("server/tls");
    std::fs::create_dir_all(&tls).expect("made");
    let write = |name: &str, text: &str| std::fs::write(tls.join(name), text).expect("written");
    write("server-ca.crt", ca.cert_pem());
    write("server-ca.key", &ca.key_pem());
    let serving = ending(ends.serving)
        .issue_server(&["n1".to_owned()], &[])
        .expect("issued");
    write("serving.crt", &serving.cert_pem);
    write("serving.key", &serving.key_pem);
    for (file, pair) in [
        ("client-admin", ca.issue_admin().expect("issued")),
        (
            "client-kube-apiserver",
            ca.issue_kube_apiserver().expect("issued"),
        ),
    ] {
        write(&format!("{file}.crt"), &pair.cert_pem);
        write(&format!("{file}.key"), &pair.key_pem);
    }
    let node = ending(ends.node).issue_node("n1").expect("issued");
    let agent = dir.join("agent");
    std::fs::create_dir_all(&agent).expect("made");
    Credentials {
        ca_pem: ca.cert_pem().to_owned(),
        cert_pem: node.cert_pem,
        key_pem: node.key_pem,
        servers: vec!["https://192.0.2.1:9345".to_owned()],
    }
    .save(&agent)
    .expect("saved");
}

/// `(file, what follows the subject and usages)` of every line.
fn expected(ends: Ends) -> Vec<(&'static str, &'static str, String)> {
    let fresh = rfc3339(SystemTime::now() + 365 * DAY);
    let status = |end: Option<SystemTime>| match end {
        None => format!("is ok, expires at {}", &fresh[..10]),
        Some(end) if end > SystemTime::now() => {
            format!("will expire within 90 days at {}", rfc3339(end))
        }
        Some(end) => format!("expired at {}", rfc3339(end)),
    };
    vec![
        (
            "server/tls/client-admin.crt",
            "CN=system:admin, O=system:masters (ClientAuth)",
            status(None),
        ),
        (
            "server/tls/client-kube-apiserver.crt",
            "CN=system:apiserver, O=system:masters (ClientAuth)",
            status(None),
        ),
        (
            "server/tls/server-ca.crt",
            "CN=weft-server-ca (CertSign)",
            format!(
                "is ok, expires at {}",
                &rfc3339(SystemTime::now() + 3650 * DAY)[..10]
            ),
        ),
        (
            "server/tls/serving.crt",
            "CN=weft-server (ServerAuth)",
            status(ends.serving),
        ),
        (
            "agent/credentials.json",
            "CN=system:node:n1, O=system:nodes (ClientAuth)",
            status(ends.node),
        ),
    ]
}

#[test]
fn every_certificate_is_listed_with_its_end() {
    let now = SystemTime::now();
    let expiring = Ends {
        serving: Some(now + 30 * DAY),
        node: None,
    };
    let expired = Ends {
        serving: None,
        node: Some(now - DAY),
    };
    // (what, the data dir's ends, how the data dir is given, exit code)
    let cases: [(&str, Ends, &str, i32); 3] = [
        ("fresh", Ends::default(), "flag", 0),
        ("a serving certificate near its end", expiring, "config", 0),
        ("an expired node certificate", expired, "environment", 1),
    ];
    for (what, ends, given, code) in cases {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let dir: PathBuf = tmp.path().join("data");
        data_dir(&dir, ends);
        let config = tmp.path().join("config.yaml");
        let data = dir.display().to_string();
        let text = match given {
            "config" => format!("data-dir: {data}\n"),
            _ => String::new(),
        };
        std::fs::write(&config, text).expect("written");
        let config = config.display().to_string();
        let out = match given {
            "flag" => run(
                &["certificate", "check", "--config", &config, "-d", &data],
                &[],
            ),
            "config" => run(&["certificate", "check", "--config", &config], &[]),
            _ => run(
                &["certificate", "check", "--config", &config],
                &[("K3S_DATA_DIR", &data)],
            ),
        };
        assert_eq!(lines(&out.stderr), Vec::<String>::new(), "{what}");
        assert_eq!(out.status.code(), Some(code), "{what}");
        let stdout = lines(&out.stdout);
        let want = expected(ends);
        assert_eq!(stdout.len(), want.len(), "{what}: {stdout:#?}");
        for (line, (file, subject, status)) in stdout.iter().zip(want) {
            let head = format!("{file}: certificate {subject} {status}");
            assert!(line.starts_with(&head), "{what}:\n{line}\nwanted\n{head}");
            assert!(line.ends_with(')'), "{what}: {line} has no days");
        }
    }
}

#[test]
fn a_data_dir_without_certificates_is_an_error() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let config = tmp.path().join("config.yaml");
    std::fs::write(&config, "").expect("written");
    let data = tmp.path().display().to_string();
    let out = run(
        &[
            "certificate",
            "check",
            "--config",
            &config.display().to_string(),
            "--data-dir",
            &data,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        lines(&out.stderr),
        [format!(
            "error: no certificates under {data}: give the server's --data-dir"
        )]
    );
}
