//! The kube-apiserver's `EgressSelectorConfiguration`: where the apiserver sends its traffic to
//! nodes (HTTP CONNECT to this server over TLS, or directly when the mode is `disabled`), in
//! K3s's shape, and the files it names.

#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};

use weft_api::pki::CertifiedKey;

use crate::policy::EgressSelectorMode;

/// The files an `HTTPConnect` egress selection names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressFiles {
    /// The cluster CA, which signs the server's serving certificate.
    pub ca_bundle: PathBuf,
    /// The kube-apiserver's client certificate (`CN=system:apiserver, O=system:masters`), the one
    /// the CONNECT front door takes.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

/// The configuration file's content (JSON, which is also YAML): one selection, `cluster`,
/// through `HTTPConnect` to `url` (`https://host:port` of the server's supervisor port), or
/// `Direct` when `mode` is `disabled`.
pub fn selector_config(mode: EgressSelectorMode, url: &str, files: &EgressFiles) -> String {
    let connection = if mode == EgressSelectorMode::Disabled {
        serde_json::json!({ "proxyProtocol": "Direct" })
    } else {
        serde_json::json!({
            "proxyProtocol": "HTTPConnect",
            "transport": { "tcp": {
                "url": url,
                "tlsConfig": {
                    "caBundle": files.ca_bundle,
                    "clientKey": files.client_key,
                    "clientCert": files.client_cert,
                },
            }},
        })
    };
    serde_json::json!({
        "kind": "EgressSelectorConfiguration",
        "apiVersion": "apiserver.k8s.io/v1beta1",
        "egressSelections": [{ "name": "cluster", "connection": connection }],
    })
    .to_string()
}

/// Writes the configuration to `config` (mode 0600) and nothing else: for a server whose CA and
/// kube-apiserver certificate files exist already. Directories are created.
pub fn write_config(
    config: &Path,
    files: &EgressFiles,
    mode: EgressSelectorMode,
    url: &str,
) -> io::Result<()> {
    write_private(config, &selector_config(mode, url, files))
}

/// Writes the CA, the kube-apiserver's certificate and key into `files`' paths, and the
/// configuration to `config`, every file mode 0600; returns `config`. Directories are created.
pub fn write(
    config: &Path,
    files: &EgressFiles,
    mode: EgressSelectorMode,
    url: &str,
    ca_pem: &str,
    kube_apiserver: &CertifiedKey,
) -> io::Result<PathBuf> {
    write_private(&files.ca_bundle, ca_pem)?;
    write_private(&files.client_cert, &kube_apiserver.cert_pem)?;
    write_private(&files.client_key, &kube_apiserver.key_pem)?;
    write_private(config, &selector_config(mode, url, files))?;
    Ok(config.to_owned())
}

fn write_private(path: &Path, content: &str) -> io::Result<()> {
    weft_api::files::write_atomic(path, content.as_bytes(), 0o600).map(|_| ())
}
