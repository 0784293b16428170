//! The datastore settings of a server: `datastore-endpoint` and the TLS files of an `https://`
//! etcd, `datastore-cafile`, `datastore-certfile` and `datastore-keyfile` (K3s's names).
//!
//! The files are checked the way the rest of the configuration is: each must be readable and
//! hold PEM of the right kind, the certificate and key come together, and they apply only to an
//! `https://` etcd. A plain `http://` etcd still works, with [`Warning::PlainHttpDatastore`]:
//! whoever reaches it can read and change the cluster. Connecting (and parsing the
//! certificates for real) is weft-store's job.

use std::path::PathBuf;

use crate::resolve::Resolved;
use crate::{ConfigError, DatastoreEndpoint, Files, Key, Warning};

#[cfg(test)]
mod tests;

/// TLS to an `https://` etcd; empty for the embedded store or a plain `http://` etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatastoreTls {
    /// `datastore-cafile`: the CA of etcd's certificate; `None` trusts the system's CAs, as
    /// K3s does.
    pub ca_file: Option<PathBuf>,
    /// `datastore-certfile` and `datastore-keyfile`, which come together.
    pub client_cert: Option<DatastoreClientCert>,
}

/// The client certificate an etcd with `--client-cert-auth` checks, and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatastoreClientCert {
    /// `datastore-certfile`.
    pub cert_file: PathBuf,
    /// `datastore-keyfile`.
    pub key_file: PathBuf,
}

/// The PEM label each file must hold.
const CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";
/// The end of a private key's PEM label: `PRIVATE KEY`, `RSA PRIVATE KEY`, `EC PRIVATE KEY`.
const PRIVATE_KEY: &str = "PRIVATE KEY-----";

/// Reads the datastore settings; records every error, and the warning for plain `http://`.
pub(crate) fn build(
    r: &Resolved,
    files: &dyn Files,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<Warning>,
) -> (Option<DatastoreEndpoint>, DatastoreTls) {
    let endpoint_text = r.text(Key::DatastoreEndpoint);
    let endpoint: Option<DatastoreEndpoint> =
        endpoint_text.and_then(|v| v.parse().map_err(|e| errors.push(e)).ok());

    let mut file = |key: Key, label: &str, what: &str| {
        let path = PathBuf::from(r.text(key)?);
        let reason = match files.read(&path) {
            Ok(text) if text.contains(label) => return Some(path),
            Ok(_) => format!("it holds no PEM {what}"),
            Err(e) => e.to_string(),
        };
        errors.push(ConfigError::DatastoreTlsFile { key, path, reason });
        None
    };
    let ca_file = file(Key::DatastoreCafile, CERTIFICATE, "certificate");
    let cert_file = file(Key::DatastoreCertfile, CERTIFICATE, "certificate");
    let key_file = file(Key::DatastoreKeyfile, PRIVATE_KEY, "private key");

    let (cert, key) = (Key::DatastoreCertfile, Key::DatastoreKeyfile);
    match (r.text(cert), r.text(key)) {
        (Some(_), None) => errors.push(ConfigError::DatastoreCertWithoutKey {
            given: cert.name(),
            missing: key.name(),
        }),
        (None, Some(_)) => errors.push(ConfigError::DatastoreCertWithoutKey {
            given: key.name(),
            missing: cert.name(),
        }),
        _ => {}
    }
    let tls_keys: Vec<&'static str> = [Key::DatastoreCafile, cert, key]
        .into_iter()
        .filter(|k| r.text(*k).is_some())
        .map(Key::name)
        .collect();

    match (&endpoint, endpoint_text) {
        (Some(endpoint), _) if !endpoint.is_https() => {
            if !tls_keys.is_empty() {
                errors.push(ConfigError::DatastoreTlsWithoutHttps {
                    keys: tls_keys,
                    endpoint: Some(endpoint.masked()),
                });
            }
            warnings.push(Warning::PlainHttpDatastore {
                endpoint: endpoint.masked(),
            });
        }
        (None, None) if !tls_keys.is_empty() => {
            errors.push(ConfigError::DatastoreTlsWithoutHttps {
                keys: tls_keys,
                endpoint: None,
            });
        }
        _ => {}
    }

    let client_cert = cert_file
        .zip(key_file)
        .map(|(cert_file, key_file)| DatastoreClientCert {
            cert_file,
            key_file,
        });
    (
        endpoint,
        DatastoreTls {
            ca_file,
            client_cert,
        },
    )
}
