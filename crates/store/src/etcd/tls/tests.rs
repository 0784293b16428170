//! Unit tests of TLS to etcd without etcd: reading and checking the files, and the advice for
//! each kind of refused connection.

use std::path::Path;

use super::*;
use crate::testing::TestCa;

/// A CA and a client certificate it signed, in `dir`.
fn good_files(dir: &Path) -> EtcdTlsFiles {
    let ca = TestCa::new(dir, "ca");
    EtcdTlsFiles {
        ca_file: Some(ca.ca_file.clone()),
        client: Some(ca.issue_client("client")),
    }
}

fn load_error(files: &EtcdTlsFiles) -> String {
    match EtcdTls::load(files) {
        Ok(_) => panic!("{files:?} loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn good_files_load() {
    let dir = tempfile::tempdir().unwrap();
    let files = good_files(dir.path());
    let tls = EtcdTls::load(&files).unwrap();
    assert_eq!(tls.anchors.len(), 1);
    assert!(tls.identity_pem.is_some());
    let server_only = EtcdTlsFiles {
        client: None,
        ..files
    };
    assert!(EtcdTls::load(&server_only).unwrap().identity_pem.is_none());
}

#[test]
fn bad_files_name_the_flag_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_files(dir.path());
    let client = good.client.clone().unwrap();
    let missing = dir.path().join("missing.pem");
    let not_pem = dir.path().join("not-pem.txt");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let with_ca = |ca_file: &Path| EtcdTlsFiles {
        ca_file: Some(ca_file.to_owned()),
        ..good.clone()
    };
    let with_client = |cert_file: &Path, key_file: &Path| EtcdTlsFiles {
        client: Some(ClientCertFiles {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
        }),
        ..good.clone()
    };
    let no_cert = "it holds no PEM certificate (-----BEGIN CERTIFICATE-----); point it at a readable PEM file";
    let cases = [
        (
            with_ca(&missing),
            format!(
                "--datastore-cafile {} can't be used: No such file",
                missing.display()
            ),
        ),
        (
            with_ca(&not_pem),
            format!(
                "--datastore-cafile {} can't be used: {no_cert}",
                not_pem.display()
            ),
        ),
        // A key is no CA certificate.
        (
            with_ca(&client.key_file),
            format!(
                "--datastore-cafile {} can't be used: {no_cert}",
                client.key_file.display()
            ),
        ),
        (
            with_client(&missing, &client.key_file),
            format!(
                "--datastore-certfile {} can't be used: No such file",
                missing.display()
            ),
        ),
        (
            with_client(&client.key_file, &client.key_file),
            format!(
                "--datastore-certfile {} can't be used: {no_cert}",
                client.key_file.display()
            ),
        ),
        (
            with_client(&client.cert_file, &missing),
            format!(
                "--datastore-keyfile {} can't be used: No such file",
                missing.display()
            ),
        ),
        (
            with_client(&client.cert_file, &client.cert_file),
            format!(
                "--datastore-keyfile {} can't be used: it holds no PEM private key",
                client.cert_file.display()
            ),
        ),
    ];
    for (files, want) in cases {
        let message = load_error(&files);
        assert!(message.starts_with(&want), "want {want:?}, got {message:?}");
    }
}

#[test]
fn a_key_that_does_not_go_with_the_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_files(dir.path());
    let other = TestCa::new(&dir.path().join("other"), "other-ca").issue_client("other");
    let cert_file = good.client.clone().unwrap().cert_file;
    let files = EtcdTlsFiles {
        client: Some(ClientCertFiles {
            cert_file: cert_file.clone(),
            key_file: other.key_file.clone(),
        }),
        ..good
    };
    let message = load_error(&files);
    let want = format!(
        "can't set up TLS to etcd: --datastore-keyfile {} does not go with --datastore-certfile {} (",
        other.key_file.display(),
        cert_file.display()
    );
    assert!(message.starts_with(&want), "{message}");
    assert!(
        message.ends_with("; give the certificate's own key"),
        "{message}"
    );
}

#[test]
fn advice_says_which_certificate_and_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_files(dir.path());
    let with_client = EtcdTls::load(&good).unwrap();
    let without_client = EtcdTls::load(&EtcdTlsFiles {
        client: None,
        ..good.clone()
    })
    .unwrap();
    let ca = good.ca_file.unwrap();
    let cert = good.client.unwrap().cert_file;
    let untrusted = format!(
        "weft does not trust etcd's certificate (checked against --datastore-cafile {}): set --datastore-cafile to the CA that signed etcd's --cert-file, and make sure that certificate names the endpoint's host",
        ca.display()
    );
    let cases: [(&EtcdTls, &str, Option<String>); 5] = [
        (
            &with_client,
            "invalid peer certificate: UnknownIssuer",
            Some(untrusted.clone()),
        ),
        (
            &without_client,
            "invalid peer certificate: NotValidForName",
            Some(untrusted),
        ),
        (
            &without_client,
            "received fatal alert: BadCertificate",
            Some("etcd requires a client certificate (it runs with --client-cert-auth): set --datastore-certfile and --datastore-keyfile to a certificate signed by etcd's --trusted-ca-file and its key".to_owned()),
        ),
        (
            &with_client,
            "received fatal alert: BadCertificate",
            Some(format!(
                "etcd refused the client certificate --datastore-certfile {}: use one signed by etcd's --trusted-ca-file, for client authentication",
                cert.display()
            )),
        ),
        (&with_client, "Connection reset by peer (os error 104)", None),
    ];
    for (tls, failure, want) in cases {
        assert_eq!(tls.advice(failure), want, "{failure}");
    }
}

#[test]
fn flags_name_what_is_set() {
    assert!(EtcdTlsFiles::default().is_empty());
    assert_eq!(EtcdTlsFiles::default().flags(), Vec::<&str>::new());
    let ca_only = EtcdTlsFiles {
        ca_file: Some("/ca.crt".into()),
        client: None,
    };
    assert!(!ca_only.is_empty());
    assert_eq!(ca_only.flags(), ["--datastore-cafile"]);
    let client_only = EtcdTlsFiles {
        ca_file: None,
        client: Some(ClientCertFiles {
            cert_file: "/c.crt".into(),
            key_file: "/c.key".into(),
        }),
    };
    assert_eq!(
        client_only.flags(),
        ["--datastore-certfile", "--datastore-keyfile"]
    );
}
