//! TLS to etcd: the files of `--datastore-cafile`, `--datastore-certfile` and
//! `--datastore-keyfile` (K3s's names), read and checked into etcd-client's TLS options, and
//! advice for a connection etcd or weft refused.
//!
//! As in K3s, whose kube-apiserver hands the same three files to etcd's Go client, an
//! `https://` endpoint without `--datastore-cafile` trusts the system's CAs (the PEM bundle
//! rustls-native-certs finds, e.g. `/etc/ssl/certs/ca-certificates.crt`), and without
//! `--datastore-certfile` sends no client certificate, which an etcd started with
//! `--client-cert-auth` refuses. TLS is rustls with ring, as everywhere in weft: no OpenSSL.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Identity, TlsOptions};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, TrustAnchor};
use tokio::io::AsyncReadExt;
use tokio_rustls::TlsConnector;

use crate::StoreError;

#[cfg(test)]
mod tests;

/// The CA file's flag.
pub(crate) const CA_FLAG: &str = "--datastore-cafile";
/// The client certificate's flag.
pub(crate) const CERT_FLAG: &str = "--datastore-certfile";
/// The client key's flag.
pub(crate) const KEY_FLAG: &str = "--datastore-keyfile";

/// The TLS files for an `https://` etcd: `--datastore-cafile`, `--datastore-certfile` and
/// `--datastore-keyfile`. The default (no file) is what a plain `http://` etcd takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdTlsFiles {
    /// The CA that signed etcd's serving certificate, PEM (`--datastore-cafile`); `None`
    /// trusts the system's CAs, as K3s does.
    pub ca_file: Option<PathBuf>,
    /// The client certificate and its key, for an etcd that checks client certificates
    /// (`--client-cert-auth`); `None` sends no client certificate.
    pub client: Option<ClientCertFiles>,
}

/// A client certificate and its key, PEM: `--datastore-certfile` and `--datastore-keyfile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertFiles {
    /// The certificate (`--datastore-certfile`), optionally followed by its intermediates.
    pub cert_file: PathBuf,
    /// Its private key (`--datastore-keyfile`): PKCS#8, PKCS#1 or SEC1.
    pub key_file: PathBuf,
}

// === impl EtcdTlsFiles ===

impl EtcdTlsFiles {
    /// Whether no file is set.
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.client.is_none()
    }

    /// The flags that are set, for messages.
    pub(crate) fn flags(&self) -> Vec<&'static str> {
        let mut flags = Vec::new();
        if self.ca_file.is_some() {
            flags.push(CA_FLAG);
        }
        if self.client.is_some() {
            flags.extend([CERT_FLAG, KEY_FLAG]);
        }
        flags
    }
}

/// How long [`EtcdTls::diagnose`] waits for etcd's verdict on one connection.
const DIAGNOSIS_TIMEOUT: Duration = Duration::from_secs(3);

/// The TLS files, read and checked: the trust anchors and client identity that both
/// etcd-client and [`EtcdTls::diagnose`] connect with.
pub(crate) struct EtcdTls {
    files: EtcdTlsFiles,
    anchors: Vec<TrustAnchor<'static>>,
    /// The client certificate (chain) and key, PEM, for etcd-client.
    identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// The same trust and identity as a rustls configuration.
    config: Arc<ClientConfig>,
}

// === impl EtcdTls ===

impl EtcdTls {
    /// Reads and checks the files: the CA file's certificates (or the system's CAs) become
    /// the trust anchors; the client certificate must come with its own key.
    pub(crate) fn load(files: &EtcdTlsFiles) -> Result<EtcdTls, StoreError> {
        let anchors = match &files.ca_file {
            Some(path) => ca_file_anchors(path)?,
            None => system_anchors()?,
        };
        let setup = |reason: String| StoreError::TlsSetup { reason };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(e.to_string()))?
            .with_root_certificates(RootCertStore {
                roots: anchors.clone(),
            });
        let (mut config, identity_pem) = match &files.client {
            None => (builder.with_no_client_auth(), None),
            Some(client) => {
                let cert_pem = read(CERT_FLAG, &client.cert_file)?;
                let chain = certificates(CERT_FLAG, &client.cert_file, &cert_pem)?;
                let key_pem = read(KEY_FLAG, &client.key_file)?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                    file_error(
                        KEY_FLAG,
                        &client.key_file,
                        format!("it holds no PEM private key ({e})"),
                    )
                })?;
                let config = builder.with_client_auth_cert(chain, key).map_err(|e| {
                    setup(format!(
                        "{KEY_FLAG} {} does not go with {CERT_FLAG} {} ({e}); give the certificate's own key",
                        client.key_file.display(),
                        client.cert_file.display()
                    ))
                })?;
                (config, Some((cert_pem, key_pem)))
            }
        };
        // As etcd-client (tonic) offers it.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(EtcdTls {
            files: files.clone(),
            anchors,
            identity_pem,
            config: Arc::new(config),
        })
    }

    /// etcd-client's TLS options: the same anchors and identity.
    pub(crate) fn options(&self) -> TlsOptions {
        let options = TlsOptions::new().trust_anchors(self.anchors.clone());
        match &self.identity_pem {
            Some((cert, key)) => options.identity(Identity::from_pem(cert, key)),
            None => options,
        }
    }

    /// Why a TLS connection to etcd at `endpoint` fails, when it does: one handshake with the
    /// client's configuration, then one read, which is when a TLS 1.3 server's refusal of the
    /// client certificate arrives (etcd-client only sees the connection close). `None` when
    /// the connection can't be made or neither side complains in time.
    pub(crate) async fn diagnose(&self, endpoint: &str) -> Option<String> {
        let authority = endpoint.strip_prefix("https://")?;
        let (host, _) = authority.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned()).ok()?;
        let connector = TlsConnector::from(self.config.clone());
        let attempt = async {
            let tcp = tokio::net::TcpStream::connect(authority).await.ok()?;
            let mut stream = match connector.connect(name, tcp).await {
                Ok(stream) => stream,
                Err(e) => return Some(e.to_string()),
            };
            let mut byte = [0u8; 1];
            stream.read(&mut byte).await.err().map(|e| e.to_string())
        };
        tokio::time::timeout(DIAGNOSIS_TIMEOUT, attempt)
            .await
            .ok()
            .flatten()
    }

    /// What to change for a failure [`EtcdTls::diagnose`] found (rustls's words), or `None`
    /// when it is not about certificates.
    pub(crate) fn advice(&self, failure: &str) -> Option<String> {
        let ca = match &self.files.ca_file {
            Some(path) => format!("{CA_FLAG} {}", path.display()),
            None => format!("the system's CAs, as {CA_FLAG} is not set"),
        };
        if failure.contains("invalid peer certificate") {
            Some(format!(
                "weft does not trust etcd's certificate (checked against {ca}): set {CA_FLAG} to the CA that signed etcd's --cert-file, and make sure that certificate names the endpoint's host"
            ))
        } else if failure.contains("received fatal alert") {
            Some(match &self.files.client {
                None => format!(
                    "etcd requires a client certificate (it runs with --client-cert-auth): set {CERT_FLAG} and {KEY_FLAG} to a certificate signed by etcd's --trusted-ca-file and its key"
                ),
                Some(client) => format!(
                    "etcd refused the client certificate {CERT_FLAG} {}: use one signed by etcd's --trusted-ca-file, for client authentication",
                    client.cert_file.display()
                ),
            })
        } else {
            None
        }
    }
}

/// The trust anchors of the CA file: every certificate in it.
fn ca_file_anchors(path: &Path) -> Result<Vec<TrustAnchor<'static>>, StoreError> {
    let pem = read(CA_FLAG, path)?;
    certificates(CA_FLAG, path, &pem)?
        .iter()
        .map(|cert| {
            webpki::anchor_from_trusted_cert(cert)
                .map(|anchor| anchor.to_owned())
                .map_err(|e| {
                    file_error(
                        CA_FLAG,
                        path,
                        format!("a certificate in it can't be a CA ({e})"),
                    )
                })
        })
        .collect()
}

/// The system's trusted CAs, for an `https://` endpoint without `--datastore-cafile`.
fn system_anchors() -> Result<Vec<TrustAnchor<'static>>, StoreError> {
    let found = rustls_native_certs::load_native_certs();
    let anchors: Vec<TrustAnchor<'static>> = found
        .certs
        .iter()
        .filter_map(|cert| webpki::anchor_from_trusted_cert(cert).ok())
        .map(|anchor| anchor.to_owned())
        .collect();
    if anchors.is_empty() {
        let reason = match found.errors.first() {
            Some(e) => e.to_string(),
            None => "none found".to_owned(),
        };
        return Err(StoreError::NoSystemCas { reason });
    }
    Ok(anchors)
}

/// Every PEM certificate in `pem`; at least one.
fn certificates(
    flag: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(flag, path, format!("it is not valid PEM ({e})")))?;
    if certs.is_empty() {
        return Err(file_error(
            flag,
            path,
            "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    Ok(certs)
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|e| file_error(flag, path, e.to_string()))
}

fn file_error(flag: &'static str, path: &Path, reason: String) -> StoreError {
    StoreError::TlsFile {
        flag,
        path: path.to_owned(),
        reason,
    }
}
