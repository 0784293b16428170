//! Tests of a server's certificate files across restarts: kept while still good, issued again
//! when near their end, from before certificates had lifetimes, for other names, or for another
//! identity.

use std::time::Duration;

use weft_api::pki::{LEAF_VALIDITY, certificate_info};
use weft_store::Datastore;

use super::*;

const DAY: Duration = Duration::from_secs(86_400);

/// A server's state dir and its embedded store, in a temp dir.
struct Server {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    store: Store,
}

impl Server {
    async fn new() -> Server {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let store = Datastore::Embedded {
            data_dir: tmp.path().to_owned(),
        }
        .open()
        .await
        .expect("the store");
        Server {
            dir: tmp.path().join("server"),
            _tmp: tmp,
            store,
        }
    }

    /// Starts (bootstraps) with the serving certificate for `ips`.
    async fn start(&self, ips: &[&str]) -> Bootstrap {
        let ips: Vec<IpAddr> = ips.iter().map(|ip| ip.parse().expect("an IP")).collect();
        bootstrap(
            &self.store,
            &self.dir,
            GivenTokens::default(),
            &["n1".to_owned()],
            &ips,
        )
        .await
        .expect("bootstrapped")
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join("tls").join(file)).expect("readable")
    }

    fn write(&self, file: &str, pair: &CertifiedKey) {
        let base = self.dir.join("tls").join(file);
        std::fs::write(base.with_extension("crt"), &pair.cert_pem).expect("written");
        std::fs::write(base.with_extension("key"), &pair.key_pem).expect("written");
    }
}

/// Whether `pem` is good for about a leaf's lifetime from now.
fn fresh(pem: &str) -> bool {
    let info = &certificate_info(pem).expect("parses");
    let left = info
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    left > LEAF_VALIDITY - DAY && left <= LEAF_VALIDITY
}

#[tokio::test]
async fn a_restart_keeps_the_certificates_that_are_still_good() {
    let server = Server::new().await;
    let first = server.start(&["192.0.2.1"]).await;
    for pair in [&first.serving, &first.admin, &first.kube_apiserver] {
        assert!(fresh(&pair.cert_pem), "{pair:?}");
    }
    let again = server.start(&["192.0.2.1"]).await;
    assert_eq!(again.serving, first.serving);
    assert_eq!(again.admin, first.admin);
    assert_eq!(again.kube_apiserver, first.kube_apiserver);
    assert_eq!(server.read("serving.crt"), first.serving.cert_pem);
    assert_eq!(server.read("client-admin.crt"), first.admin.cert_pem);
    assert_eq!(
        server.read("client-kube-apiserver.crt"),
        first.kube_apiserver.cert_pem
    );
    let identity =
        |pair: &CertifiedKey| certificate_info(&pair.cert_pem).expect("parses").identity();
    assert_eq!(identity(&again.admin), ClientIdentity::Admin);
    assert_eq!(
        identity(&again.kube_apiserver),
        ClientIdentity::KubeApiserver
    );
}

#[tokio::test]
async fn the_serving_certificate_follows_the_servers_addresses() {
    let server = Server::new().await;
    let first = server.start(&["192.0.2.1"]).await;
    let moved = server.start(&["192.0.2.1", "2001:db8::1"]).await;
    assert_ne!(moved.serving, first.serving);
    let names = &certificate_info(&moved.serving.cert_pem)
        .expect("parses")
        .names;
    assert!(
        names
            .ips
            .contains(&"2001:db8::1".parse::<IpAddr>().expect("an IP"))
    );
    assert_eq!(server.read("serving.crt"), moved.serving.cert_pem);
    // The client certificates do not depend on the addresses.
    assert_eq!(moved.admin, first.admin);
    assert_eq!(moved.kube_apiserver, first.kube_apiserver);
}

#[tokio::test]
async fn certificates_that_are_no_longer_good_are_issued_again() {
    let now = SystemTime::now();
    let server = Server::new().await;
    let first = server.start(&["192.0.2.1"]).await;
    let ca = |not_after: SystemTime| {
        ClusterCa::from_pem(first.ca.cert_pem(), &first.ca.key_pem())
            .expect("the CA")
            .with_leaf_expiry(not_after)
    };
    let ips = ["192.0.2.1".parse().expect("an IP")];
    let names = ["n1".to_owned()];
    // (what, file, the pair found there at start)
    let cases = [
        (
            "a serving certificate with 30 days left",
            "serving",
            ca(now + 30 * DAY)
                .issue_server(&names, &ips)
                .expect("issued"),
        ),
        (
            "an admin certificate with 30 days left",
            "client-admin",
            ca(now + 30 * DAY).issue_admin().expect("issued"),
        ),
        (
            "an expired kube-apiserver certificate",
            "client-kube-apiserver",
            ca(now - DAY).issue_kube_apiserver().expect("issued"),
        ),
        // What weft wrote before: CN=system:apiserver in client-admin.crt, valid for a century.
        (
            "the kube-apiserver's certificate as the admin's",
            "client-admin",
            first.kube_apiserver.clone(),
        ),
        (
            "a certificate from before lifetimes",
            "client-kube-apiserver",
            ca(now + 100 * 365 * DAY)
                .issue_kube_apiserver()
                .expect("issued"),
        ),
    ];
    for (what, file, found) in cases {
        server.write(file, &found);
        let started = server.start(&["192.0.2.1"]).await;
        let now_in_file = server.read(&format!("{file}.crt"));
        assert_ne!(now_in_file, found.cert_pem, "{what}: kept");
        assert!(fresh(&now_in_file), "{what}: {now_in_file}");
        let expected = [
            (&started.serving, "serving"),
            (&started.admin, "client-admin"),
            (&started.kube_apiserver, "client-kube-apiserver"),
        ];
        for (pair, name) in expected {
            assert_eq!(pair.cert_pem, server.read(&format!("{name}.crt")), "{what}");
            assert_eq!(pair.key_pem, server.read(&format!("{name}.key")), "{what}");
        }
    }
    let identity = |file: &str| {
        certificate_info(&server.read(file))
            .expect("parses")
            .identity()
    };
    assert_eq!(identity("client-admin.crt"), ClientIdentity::Admin);
    assert_eq!(
        identity("client-kube-apiserver.crt"),
        ClientIdentity::KubeApiserver
    );
}

#[test]
fn a_damaged_record_names_its_key_and_keeps_the_decoder_s_error() {
    use std::error::Error as _;
    let sealed = seal(&serde_json::json!({"a": 1}), "secret").unwrap();
    let opened: serde_json::Value = unseal("/weft/bootstrap", &sealed, "secret").unwrap();
    assert_eq!(opened, serde_json::json!({"a": 1}));

    let err = unseal::<serde_json::Value>("/weft/bootstrap", b"{not json", "secret").unwrap_err();
    assert_eq!(
        err.to_string(),
        "the bootstrap record at /weft/bootstrap is damaged (the envelope); restore the store from a backup"
    );
    assert!(
        err.source().is_some(),
        "the JSON error is kept as the source"
    );
    let wrong = unseal::<serde_json::Value>("/weft/bootstrap", &sealed, "other").unwrap_err();
    assert!(matches!(wrong, ControlError::WrongToken), "{wrong}");
}
