//! Tests of the EgressSelectorConfiguration against K3s's shape.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::*;

fn files(dir: &Path) -> EgressFiles {
    EgressFiles {
        ca_bundle: dir.join("tls/server-ca.crt"),
        client_cert: dir.join("tls/client-kube-apiserver.crt"),
        client_key: dir.join("tls/client-kube-apiserver.key"),
    }
}

#[test]
fn http_connect_names_the_server_and_the_files() {
    let config = selector_config(
        EgressSelectorMode::Agent,
        "https://127.0.0.1:9345",
        &files(Path::new("/var/lib/weft/server")),
    );
    let expected = serde_json::json!({
        "kind": "EgressSelectorConfiguration",
        "apiVersion": "apiserver.k8s.io/v1beta1",
        "egressSelections": [{"name": "cluster", "connection": {
            "proxyProtocol": "HTTPConnect",
            "transport": {"tcp": {
                "url": "https://127.0.0.1:9345",
                "tlsConfig": {
                    "caBundle": "/var/lib/weft/server/tls/server-ca.crt",
                    "clientKey": "/var/lib/weft/server/tls/client-kube-apiserver.key",
                    "clientCert": "/var/lib/weft/server/tls/client-kube-apiserver.crt",
                },
            }},
        }}],
    });
    let parsed: serde_json::Value = serde_json::from_str(&config).expect("JSON");
    assert_eq!(parsed, expected);
}

#[test]
fn disabled_mode_is_direct() {
    let config = selector_config(
        EgressSelectorMode::Disabled,
        "https://127.0.0.1:9345",
        &files(Path::new("/x")),
    );
    let parsed: serde_json::Value = serde_json::from_str(&config).expect("JSON");
    assert_eq!(
        parsed["egressSelections"][0]["connection"],
        serde_json::json!({"proxyProtocol": "Direct"})
    );
}

#[test]
fn write_creates_private_files() {
    let dir = std::env::temp_dir().join(format!("weft-egress-{}", std::process::id()));
    let files = files(&dir);
    let config: PathBuf = dir.join("etc/egress-selector-config.yaml");
    let kube_apiserver = CertifiedKey {
        cert_pem: "CERT".to_owned(),
        key_pem: "KEY".to_owned(),
    };
    let written = write(
        &config,
        &files,
        EgressSelectorMode::Pod,
        "https://[::1]:9345",
        "CA",
        &kube_apiserver,
    )
    .expect("written");
    assert_eq!(written, config);
    for (path, content) in [
        (&files.ca_bundle, "CA"),
        (&files.client_cert, "CERT"),
        (&files.client_key, "KEY"),
    ] {
        assert_eq!(std::fs::read_to_string(path).expect("read"), content);
        let mode = std::fs::metadata(path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    }
    assert!(
        std::fs::read_to_string(&config)
            .expect("read")
            .contains("https://[::1]:9345")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn write_config_writes_only_the_configuration() {
    let dir = std::env::temp_dir().join(format!("weft-egress-config-{}", std::process::id()));
    let files = files(&dir);
    let config = dir.join("etc/egress-selector-config.yaml");
    write_config(
        &config,
        &files,
        EgressSelectorMode::Agent,
        "https://127.0.0.1:9345",
    )
    .expect("written");
    let text = std::fs::read_to_string(&config).expect("read");
    assert!(text.contains("client-kube-apiserver.crt"), "{text}");
    let mode = std::fs::metadata(&config)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!files.ca_bundle.exists(), "the CA was not written");
    let _ = std::fs::remove_dir_all(&dir);
}
