//! The cluster CA and the certificates it issues: the server's serving certificate, each node's
//! client certificate (`system:node:<name>`) and the egress client certificate
//! (`system:masters`, for HTTP CONNECT clients).

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};

use crate::ApiError;

#[cfg(test)]
mod tests;

/// The organization of node client certificates (Kubernetes' node group).
pub const NODE_ORGANIZATION: &str = "system:nodes";
/// The common-name prefix of node client certificates.
pub const NODE_CN_PREFIX: &str = "system:node:";
/// The organization of the egress client certificate (Kubernetes' admin group).
pub const EGRESS_ORGANIZATION: &str = "system:masters";
/// The common name of the egress client certificate (what K3s gives its apiserver).
pub const EGRESS_COMMON_NAME: &str = "system:apiserver";

/// A certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CertifiedKey {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM.
    pub key_pem: String,
}

/// The cluster CA: signs every certificate of the cluster.
pub struct ClusterCa {
    cert_pem: String,
    key: KeyPair,
}

/// Who a verified client certificate belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIdentity {
    /// A node: `CN=system:node:<name>, O=system:nodes`.
    Node(String),
    /// The egress client: `O=system:masters`.
    Egress,
    /// A certificate of this CA with another subject.
    Other(String),
}

// === impl ClusterCa ===

impl ClusterCa {
    /// A new CA with a fresh ECDSA P-256 key.
    pub fn generate() -> Result<ClusterCa, ApiError> {
        let key = KeyPair::generate().map_err(pki_error)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name("weft-server-ca", None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let cert = params.self_signed(&key).map_err(pki_error)?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            key,
        })
    }

    /// A CA read back from its PEM certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, ApiError> {
        let key = KeyPair::from_pem(key_pem).map_err(pki_error)?;
        // Parse once so a damaged file is reported when loaded, not at the first signature.
        Issuer::from_ca_cert_pem(cert_pem, &key).map_err(pki_error)?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_owned(),
            key,
        })
    }

    /// The CA certificate, PEM: what `/cacerts` serves and agents pin.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The hash a `K10` token pins: SHA-256 of the CA certificate PEM, lowercase hex.
    pub fn hash(&self) -> String {
        ca_hash(self.cert_pem.as_bytes())
    }

    /// A serving certificate for the server, valid for `names` and `ips` (plus `localhost`
    /// and the loopback addresses).
    pub fn issue_server(&self, names: &[String], ips: &[IpAddr]) -> Result<CertifiedKey, ApiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name("weft-server", None);
        let mut sans: Vec<SanType> =
            vec![SanType::DnsName("localhost".try_into().map_err(pki_error)?)];
        for n in names {
            sans.push(SanType::DnsName(n.clone().try_into().map_err(pki_error)?));
        }
        for ip in ips.iter().copied().chain(
            ["127.0.0.1".parse().ok(), "::1".parse().ok()]
                .into_iter()
                .flatten(),
        ) {
            if !sans.contains(&SanType::IpAddress(ip)) {
                sans.push(SanType::IpAddress(ip));
            }
        }
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate for node `node_name` (`CN=system:node:<name>, O=system:nodes`).
    pub fn issue_node(&self, node_name: &str) -> Result<CertifiedKey, ApiError> {
        self.issue_client(&format!("{NODE_CN_PREFIX}{node_name}"), NODE_ORGANIZATION)
    }

    /// The egress client certificate (`O=system:masters`) that HTTP CONNECT clients present.
    pub fn issue_egress(&self) -> Result<CertifiedKey, ApiError> {
        self.issue_client(EGRESS_COMMON_NAME, EGRESS_ORGANIZATION)
    }

    fn issue_client(
        &self,
        common_name: &str,
        organization: &str,
    ) -> Result<CertifiedKey, ApiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name, Some(organization));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, mut params: CertificateParams) -> Result<CertifiedKey, ApiError> {
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
        let mut serial = [0u8; 16];
        rand::Rng::fill(&mut rand::rng(), &mut serial[..]);
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let key = KeyPair::generate().map_err(pki_error)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(pki_error)?;
        let cert = params.signed_by(&key, &issuer).map_err(pki_error)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// SHA-256 of a CA bundle, lowercase hex (K3s's token CA hash).
pub fn ca_hash(ca_pem: &[u8]) -> String {
    hex::encode(Sha256::digest(ca_pem))
}

/// The SHA-256 fingerprint of a certificate (DER), lowercase hex: what a node record keeps of
/// the certificate its server issued, so an older one is known for what it is.
pub fn cert_fingerprint(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

/// The fingerprint ([`cert_fingerprint`]) of the first certificate in a PEM text.
pub fn pem_fingerprint(cert_pem: &str) -> Result<String, ApiError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| ApiError::Pki(format!("the certificate PEM does not parse: {e}")))?;
    Ok(cert_fingerprint(&der))
}

/// Who a client certificate (DER, already verified against the CA by TLS) belongs to.
pub fn client_identity(cert_der: &[u8]) -> Result<ClientIdentity, ApiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| ApiError::Pki(format!("client certificate does not parse: {e}")))?;
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let orgs: Vec<&str> = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .collect();
    Ok(if orgs.contains(&EGRESS_ORGANIZATION) {
        ClientIdentity::Egress
    } else if let (Some(node), true) = (
        cn.strip_prefix(NODE_CN_PREFIX),
        orgs.contains(&NODE_ORGANIZATION),
    ) {
        ClientIdentity::Node(node.to_owned())
    } else {
        ClientIdentity::Other(cn)
    })
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

fn pki_error(e: rcgen::Error) -> ApiError {
    ApiError::Pki(e.to_string())
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"********")
            .finish()
    }
}
