//! rustls configurations for both ends, all on the `ring` provider and the cluster CA.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::ApiError;
use crate::pki::CertifiedKey;

#[cfg(test)]
mod tests;

/// The crypto provider weft uses everywhere: ring's, with AES-128-GCM preferred over
/// AES-256-GCM (as Go's TLS, and so K3s, prefers it on hardware with AES instructions). Both
/// are strong; AES-128 takes 10 rounds to AES-256's 14, which shows on the egress tunnel, where
/// every byte is encrypted twice on its way to a node.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|suite| {
        use rustls::CipherSuite::*;
        match suite.suite() {
            TLS13_AES_128_GCM_SHA256 | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => 0,
            TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
            _ => 1,
        }
    });
    Arc::new(provider)
}

/// The server side: serves `server`'s certificate, and asks for (but does not require) a client
/// certificate of the cluster CA. Handlers decide what an unauthenticated client may do.
pub fn server_config(ca_pem: &str, server: &CertifiedKey) -> Result<Arc<ServerConfig>, ApiError> {
    let roots = Arc::new(roots(ca_pem)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| ApiError::tls("building the client verifier", e))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::tls("choosing the protocol versions", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&server.cert_pem)?, key(&server.key_pem)?)
        .map_err(|e| ApiError::tls("the server certificate", e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client side: trusts only the cluster CA, and presents `identity` when given.
pub fn client_config(
    ca_pem: &str,
    identity: Option<&CertifiedKey>,
) -> Result<Arc<ClientConfig>, ApiError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::tls("choosing the protocol versions", e))?
        .with_root_certificates(roots(ca_pem)?);
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(certs(&id.cert_pem)?, key(&id.key_pem)?)
            .map_err(|e| ApiError::tls("the client certificate", e))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A client that accepts any server certificate: used only to fetch `/cacerts`, whose body the
/// agent then checks against the token's CA hash (K3s's bootstrap) before trusting it.
pub fn bootstrap_client_config() -> Result<Arc<ClientConfig>, ApiError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::tls("choosing the protocol versions", e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider())))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Parses every certificate of a PEM bundle.
pub fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, ApiError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::tls("reading the certificate PEM", e))?;
    if certs.is_empty() {
        return Err(ApiError::Tls {
            what: "the PEM holds no certificate".into(),
            source: None,
        });
    }
    Ok(certs)
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, ApiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| ApiError::tls("reading the private key PEM", e))
}

fn roots(ca_pem: &str) -> Result<RootCertStore, ApiError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca_pem)? {
        roots
            .add(cert)
            .map_err(|e| ApiError::tls("the CA certificate", e))?;
    }
    Ok(roots)
}

/// Accepts any server certificate, but still checks handshake signatures.
#[derive(Debug)]
struct AnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
