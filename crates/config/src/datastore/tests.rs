//! Tests of the datastore settings: TLS files for an `https://` etcd, every error they can
//! make, the warning for plain `http://`, and where the values come from.

use std::path::PathBuf;

use crate::test_support::{agent, errors, ok, server, system, warnings};
use crate::{DatastoreClientCert, DatastoreTls};

const CA: &str = "/etc/etcd/ca.crt";
const CERT: &str = "/etc/etcd/client.crt";
const KEY: &str = "/etc/etcd/client.key";
const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n";

/// The three files, readable and holding PEM of the right kind.
const FILES: [(&str, &str); 3] = [(CA, CA_PEM), (CERT, CA_PEM), (KEY, KEY_PEM)];

const TLS_FLAGS: [&str; 3] = [
    "--datastore-cafile=/etc/etcd/ca.crt",
    "--datastore-certfile=/etc/etcd/client.crt",
    "--datastore-keyfile=/etc/etcd/client.key",
];

const PLAIN_WARNING: &str = "is plain http://: whoever reaches etcd can read and change the whole cluster, the bootstrap data sealed with the token included; use https:// endpoints with datastore-cafile, datastore-certfile and datastore-keyfile, and run etcd with --client-cert-auth";

fn all_files() -> DatastoreTls {
    DatastoreTls {
        ca_file: Some(PathBuf::from(CA)),
        client_cert: Some(DatastoreClientCert {
            cert_file: PathBuf::from(CERT),
            key_file: PathBuf::from(KEY),
        }),
    }
}

/// Loads a server with `args`, `files` and `env`; its errors and warnings.
fn check(
    args: &[&str],
    files: &[(&str, &str)],
    env: &[(&str, &str)],
) -> (Vec<String>, Vec<String>) {
    let loaded = server(args, &system(files, env));
    (errors(&loaded), warnings(&loaded))
}

#[test]
fn https_etcd_with_every_file() {
    let mut args = vec!["--datastore-endpoint=https://10.0.0.1:2379,https://10.0.0.2:2379"];
    args.extend(TLS_FLAGS);
    let loaded = server(&args, &system(&FILES, &[]));
    assert_eq!(warnings(&loaded), Vec::<String>::new());
    let config = ok(loaded);
    assert_eq!(config.datastore_tls, all_files());
    let json = config.to_json();
    assert_eq!(json["datastore-cafile"], CA);
    assert_eq!(json["datastore-certfile"], CERT);
    assert_eq!(json["datastore-keyfile"], KEY);
}

#[test]
fn https_etcd_needs_no_file() {
    // No CA file: the system's CAs; no client certificate: etcd decides whether it needs one.
    let config = ok(server(
        &["--datastore-endpoint=https://10.0.0.1:2379"],
        &system(&[], &[]),
    ));
    assert_eq!(config.datastore_tls, DatastoreTls::default());
    let json = config.to_json();
    assert_eq!(json["datastore-cafile"], serde_json::Value::Null);
    assert_eq!(json["datastore-certfile"], serde_json::Value::Null);
    assert_eq!(json["datastore-keyfile"], serde_json::Value::Null);
}

#[test]
fn plain_http_etcd_works_with_a_warning() {
    let loaded = server(
        &["--datastore-endpoint=http://root:pw@10.0.0.1:2379"],
        &system(&[], &[]),
    );
    assert_eq!(
        warnings(&loaded),
        [format!(
            "datastore-endpoint http://root:********@10.0.0.1:2379 {PLAIN_WARNING}"
        )]
    );
    assert!(ok(loaded).datastore_endpoint.is_some());
    // The embedded store is no etcd: no warning.
    assert_eq!(check(&[], &[], &[]), (Vec::new(), Vec::new()));
}

#[test]
fn settings_come_from_k3s_and_weft_environment_variables() {
    for prefix in ["K3S", "WEFT"] {
        let vars = [
            format!("{prefix}_DATASTORE_ENDPOINT"),
            format!("{prefix}_DATASTORE_CAFILE"),
            format!("{prefix}_DATASTORE_CERTFILE"),
            format!("{prefix}_DATASTORE_KEYFILE"),
        ];
        let values = ["https://10.0.0.1:2379", CA, CERT, KEY];
        let env: Vec<(&str, &str)> = vars.iter().map(String::as_str).zip(values).collect();
        let config = ok(server(&[], &system(&FILES, &env)));
        assert_eq!(
            config.datastore_endpoint.as_ref().map(|e| e.expose()),
            Some("https://10.0.0.1:2379"),
            "{prefix}"
        );
        assert_eq!(config.datastore_tls, all_files(), "{prefix}");
    }
}

#[test]
fn a_certificate_needs_its_key_and_the_reverse() {
    let endpoint = "--datastore-endpoint=https://10.0.0.1:2379";
    assert_eq!(
        check(&[endpoint, TLS_FLAGS[1]], &FILES, &[]).0,
        [
            "datastore-certfile is set without datastore-keyfile: set both, the client certificate and its key, or neither"
        ]
    );
    assert_eq!(
        check(&[endpoint, TLS_FLAGS[2]], &FILES, &[]).0,
        [
            "datastore-keyfile is set without datastore-certfile: set both, the client certificate and its key, or neither"
        ]
    );
}

#[test]
fn files_that_cant_be_used_name_the_setting_and_path() {
    let mut args = vec!["--datastore-endpoint=https://10.0.0.1:2379"];
    args.extend(TLS_FLAGS);
    // None of the files exists.
    assert_eq!(
        check(&args, &[], &[]).0,
        [
            "datastore-cafile /etc/etcd/ca.crt can't be used: entity not found; point it at the PEM certificate of the CA that signed etcd's certificate",
            "datastore-certfile /etc/etcd/client.crt can't be used: entity not found; point it at a PEM client certificate signed by etcd's --trusted-ca-file",
            "datastore-keyfile /etc/etcd/client.key can't be used: entity not found; point it at the PEM private key of datastore-certfile",
        ]
    );
    // Each holds the other kind of PEM.
    assert_eq!(
        check(&args, &[(CA, KEY_PEM), (CERT, KEY_PEM), (KEY, CA_PEM)], &[]).0,
        [
            "datastore-cafile /etc/etcd/ca.crt can't be used: it holds no PEM certificate; point it at the PEM certificate of the CA that signed etcd's certificate",
            "datastore-certfile /etc/etcd/client.crt can't be used: it holds no PEM certificate; point it at a PEM client certificate signed by etcd's --trusted-ca-file",
            "datastore-keyfile /etc/etcd/client.key can't be used: it holds no PEM private key; point it at the PEM private key of datastore-certfile",
        ]
    );
}

#[test]
fn tls_files_need_an_https_etcd() {
    let (errs, warns) = check(&TLS_FLAGS, &FILES, &[]);
    assert_eq!(
        errs,
        [
            "datastore-cafile, datastore-certfile, datastore-keyfile apply only to an https:// etcd endpoint, but datastore-endpoint is not set, so the store is the embedded one: set datastore-endpoint to https:// URLs, or unset them"
        ]
    );
    assert_eq!(warns, Vec::<String>::new());

    let (errs, warns) = check(
        &["--datastore-endpoint=http://10.0.0.1:2379", TLS_FLAGS[0]],
        &FILES,
        &[],
    );
    assert_eq!(
        errs,
        [
            "datastore-cafile applies only to an https:// etcd endpoint, but datastore-endpoint is http://10.0.0.1:2379: set datastore-endpoint to https:// URLs, or unset them"
        ]
    );
    assert_eq!(
        warns,
        [format!(
            "datastore-endpoint http://10.0.0.1:2379 {PLAIN_WARNING}"
        )]
    );
}

#[test]
fn endpoints_do_not_mix_http_and_https() {
    assert_eq!(
        check(
            &["--datastore-endpoint=https://u:pw@10.0.0.1:2379, http://10.0.0.2:2379"],
            &[],
            &[]
        )
        .0,
        [
            "datastore-endpoint https://u:********@10.0.0.1:2379, http://10.0.0.2:2379 mixes http:// and https:// URLs: use https:// for every etcd endpoint"
        ]
    );
}

#[test]
fn an_agent_refuses_the_datastore_settings() {
    let sys = system(
        &[(
            "/etc/weft/config.yaml",
            "datastore-certfile: /etc/etcd/client.crt\n",
        )],
        &[
            ("K3S_TOKEN", "secret"),
            ("K3S_DATASTORE_CAFILE", CA),
            ("K3S_DATASTORE_ENDPOINT", "https://10.0.0.1:2379"),
        ],
    );
    let loaded = agent(&["--server=https://10.0.0.1:9345"], &sys);
    assert_eq!(
        errors(&loaded),
        [
            "datastore-certfile is a server setting and has no effect on an agent; remove datastore-certfile from /etc/weft/config.yaml",
            "datastore-endpoint is a server setting and has no effect on an agent; unset K3S_DATASTORE_ENDPOINT",
            "datastore-cafile is a server setting and has no effect on an agent; unset K3S_DATASTORE_CAFILE",
        ]
    );
}
