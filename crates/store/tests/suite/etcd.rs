//! What only the etcd back end has: its endpoints, a clear error when it is unreachable, and
//! TLS: an etcd with `--client-cert-auth` takes weft's client certificate, and every
//! certificate it or weft refuses is a clear error saying which and what to set.

use std::path::Path;
use std::time::{Duration, Instant};

use weft_store::{Datastore, EtcdStore, EtcdTlsFiles, PodRecord, Revision, StoreError};

use weft_store::testing::{EtcdServer, TestCa, free_ports};

#[tokio::test]
async fn unreachable_etcd_is_a_clear_error() {
    let [port, _] = free_ports();
    let started = Instant::now();
    let err = EtcdStore::connect(&[format!("http://127.0.0.1:{port}")])
        .await
        .expect_err("nothing listens there");
    let message = err.to_string();
    assert!(message.starts_with("etcd connect failed"), "{message}");
    assert!(message.contains("--datastore-endpoint"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(15), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datastore_endpoint_opens_etcd() {
    let etcd = EtcdServer::start().await;
    // Two endpoints, one of them down: the client balances to the live one.
    let [down, _] = free_ports();
    let flag = format!("{}, http://127.0.0.1:{down}", etcd.client_url);
    let datastore = Datastore::from_flags(
        std::path::Path::new("/unused"),
        Some(&flag),
        EtcdTlsFiles::default(),
    )
    .unwrap();
    put_and_list_a_pod(&datastore).await;
}

/// Opens `datastore`, stores a pod and lists it.
async fn put_and_list_a_pod(datastore: &Datastore) {
    let store = datastore.open().await.unwrap();
    let pod = PodRecord {
        namespace: "default".to_owned(),
        name: "p".to_owned(),
        node: "n1".to_owned(),
        ips: Vec::new(),
    };
    assert!(store.put_pod(&pod).await.unwrap() > Revision::ZERO);
    assert_eq!(store.list_pods().await.unwrap().items.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datastore_flags_open_etcd_over_tls() {
    let etcd = EtcdServer::start_tls().await;
    let datastore = Datastore::from_flags(
        Path::new("/unused"),
        Some(&etcd.client_url),
        etcd.client_tls(),
    )
    .unwrap();
    put_and_list_a_pod(&datastore).await;
}

/// Connects to `etcd` with `tls`; the error's message.
async fn refused(etcd: &EtcdServer, tls: &EtcdTlsFiles) -> String {
    let err = EtcdStore::connect_tls(std::slice::from_ref(&etcd.client_url), tls)
        .await
        .expect_err("etcd or weft refuses the connection");
    assert!(matches!(err, StoreError::EtcdTls { .. }), "{err:?}");
    err.to_string()
}

fn assert_contains(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_refuses_a_client_without_certificate() {
    let etcd = EtcdServer::start_tls().await;
    let tls = EtcdTlsFiles {
        client: None,
        ..etcd.client_tls()
    };
    let message = refused(&etcd, &tls).await;
    assert_contains(
        &message,
        &[
            &format!("TLS to etcd at {} failed", etcd.client_url),
            "etcd requires a client certificate (it runs with --client-cert-auth)",
            "set --datastore-certfile and --datastore-keyfile",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_refuses_a_client_certificate_from_another_ca() {
    let etcd = EtcdServer::start_tls().await;
    let dir = tempfile::tempdir().unwrap();
    let rogue = TestCa::new(dir.path(), "rogue-ca").issue_client("rogue");
    let tls = EtcdTlsFiles {
        client: Some(rogue.clone()),
        ..etcd.client_tls()
    };
    let message = refused(&etcd, &tls).await;
    assert_contains(
        &message,
        &[
            &format!(
                "etcd refused the client certificate --datastore-certfile {}",
                rogue.cert_file.display()
            ),
            "signed by etcd's --trusted-ca-file",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_refuses_an_etcd_certificate_from_another_ca() {
    let etcd = EtcdServer::start_tls().await;
    let dir = tempfile::tempdir().unwrap();
    let other = TestCa::new(dir.path(), "other-ca");
    // Another CA in --datastore-cafile, then none: the system's CAs don't know etcd's test CA.
    for (ca_file, checked_against) in [
        (
            Some(other.ca_file.clone()),
            format!("--datastore-cafile {}", other.ca_file.display()),
        ),
        (
            None,
            "the system's CAs, as --datastore-cafile is not set".to_owned(),
        ),
    ] {
        let tls = EtcdTlsFiles {
            ca_file,
            ..etcd.client_tls()
        };
        let err = EtcdStore::connect_tls(std::slice::from_ref(&etcd.client_url), &tls)
            .await
            .expect_err("weft does not trust etcd");
        let message = err.to_string();
        // A host without any system CA says so before it connects.
        if matches!(err, StoreError::NoSystemCas { .. }) {
            assert_contains(&message, &["set --datastore-cafile"]);
            continue;
        }
        assert_contains(
            &message,
            &[
                "invalid peer certificate",
                &format!(
                    "weft does not trust etcd's certificate (checked against {checked_against})"
                ),
                "set --datastore-cafile to the CA that signed etcd's --cert-file",
            ],
        );
    }
}

#[tokio::test]
async fn tls_files_for_plain_etcd_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tls = EtcdTlsFiles {
        ca_file: Some(TestCa::new(dir.path(), "ca").ca_file),
        client: None,
    };
    let err = EtcdStore::connect_tls(&["http://127.0.0.1:2379".to_owned()], &tls)
        .await
        .expect_err("TLS files need https://");
    assert_eq!(
        err.to_string(),
        "--datastore-cafile applies only to an https:// etcd endpoint, but --datastore-endpoint is http://127.0.0.1:2379: set --datastore-endpoint to https:// URLs, or unset them"
    );
}
